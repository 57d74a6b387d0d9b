//! What kubenode does with every field of a pod's spec: implemented (and the tests that
//! prove it) or refused by validation with a field-path error (and the test that shows the
//! refusal). `fields_tests` walks `PodSpec` from the k8s-openapi types and fails on a field
//! this table does not cover, checks every refusal against `validate_pod`, checks every named
//! test exists, and generates `docs/pod-fields.md` from this table.
//!
//! A path names a field as `spec.volumes[*].emptyDir.sizeLimit`; an entry covers the field
//! and everything below it. `{c}` stands for both `spec.containers[*]` and
//! `spec.initContainers[*]`, `{probe}` for `livenessProbe`, `readinessProbe` and
//! `startupProbe`. A test is `<file from the workspace root>::<function>`.

/// What kubenode does with a field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Status {
    /// Applied as upstream's kubelet applies it; the tests that prove it.
    Implemented(&'static [&'static str]),
    /// Refused by validation with an error naming the field; the test that shows it. The
    /// sample (JSON) is the value that is refused, when not the one its type suggests.
    Refused {
        test: &'static str,
        sample: Option<&'static str>,
    },
    /// Accepted by validation, and a pod that uses it is rejected at admission (phase Failed,
    /// a reason and a message naming what this node lacks); the tests that show it.
    Rejected(&'static [&'static str]),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub path: &'static str,
    pub status: Status,
    /// What kubenode does, in a few words (the document's last column).
    pub note: &'static str,
}

const fn done(path: &'static str, tests: &'static [&'static str], note: &'static str) -> Field {
    Field {
        path,
        status: Status::Implemented(tests),
        note,
    }
}

const fn refused(path: &'static str, test: &'static str, note: &'static str) -> Field {
    Field {
        path,
        status: Status::Refused { test, sample: None },
        note,
    }
}

const fn refused_as(
    path: &'static str,
    sample: &'static str,
    test: &'static str,
    note: &'static str,
) -> Field {
    Field {
        path,
        status: Status::Refused {
            test,
            sample: Some(sample),
        },
        note,
    }
}

const fn rejected(path: &'static str, tests: &'static [&'static str], note: &'static str) -> Field {
    Field {
        path,
        status: Status::Rejected(tests),
        note,
    }
}

// Tests named more than once.
const NEW_REFUSALS: &str =
    "kubelet/src/validation/pod_tests.rs::fields_kubenode_does_not_apply_are_refused";
const NOT_READ: &str =
    "kubelet/src/validation/fields_tests.rs::fields_a_kubelet_does_not_read_are_accepted";
const VOLUME_TYPES: &str =
    "kubelet/src/validation/pod_tests.rs::unimplemented_volume_types_are_named";
const SE_LINUX: &str = "kubelet/src/validation/security.rs::se_linux_options_refused";
const GOLDEN: &str = "runtime/src/spec/golden.rs::golden_restricted_container";
const USER: &str = "runtime/src/spec/user.rs::security_context_wins_and_non_root_is_checked";
const PRIVATE_ROOT: &str = "integration/tests/store.rs::private_root";
const SECCOMP_E2E: &str = "integration/tests/seccomp.rs::profiles";
const PROBES_E2E: &[&str] = &[
    "integration/tests/probes.rs::exec_liveness",
    "integration/tests/probes.rs::http_liveness",
    "integration/tests/probes.rs::tcp_readiness",
    "integration/tests/probes.rs::startup_probe",
];
const HTTP_PROBE: &[&str] = &[
    "integration/tests/probes.rs::http_liveness",
    "integration/tests/probes.rs::http_edge_cases",
    "kubelet/src/prober/tests/mechanisms.rs::http_sends_headers_and_judges_status",
];
const NAMED_PORTS: &[&str] = &[
    "kubelet/src/prober/port.rs::named_and_numeric_ports",
    "kubelet/src/prober/tests/mechanisms.rs::named_ports_and_closed_ports",
];
const VOLUME_CHECKS: &str =
    "kubelet/src/validation/volumes.rs::object_volumes_are_validated_as_upstream";
const CM_E2E: &str = "integration/tests/volumes_objects.rs::config_map_file";
const SECRET_E2E: &str = "integration/tests/volumes_objects.rs::secret_mode_0400";
const DOWNWARD_E2E: &str = "integration/tests/volumes_objects.rs::downward_api_labels";
const OPTIONAL_E2E: &str = "integration/tests/volumes_objects.rs::optional_and_required_sources";
const UPDATE_E2E: &str = "integration/tests/volumes_objects.rs::update_seen_by_running_container";
const WEB_POD: &str = "integration/tests/kubelet.rs::web_pod";
const NODE_AFFINITY_TESTS: &[&str] = &[
    "integration/tests/node_labels.rs::node_selector_and_node_labels",
    "kubelet/src/node/predicates.rs::node_affinity_admission_against_the_nodes_labels",
    "kubelet/src/selector/node.rs::matches_as_upstream_nodeaffinity_tests",
    "kubelet/src/validation/affinity.rs::node_selector_and_affinity_validated_as_upstream",
];

/// The table, in the order of the document.
pub(crate) const FIELDS: &[Field] = &[
    // The pod.
    done("spec.activeDeadlineSeconds", &["integration/tests/kubelet.rs::active_deadline", "integration/tests/kubelet.rs::deadline_survives_restart"], "the pod fails with `DeadlineExceeded` when the deadline passes, and stays so across an agent restart"),
    done("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution", NODE_AFFINITY_TESTS, "matched against the node's name and labels at admission; a pod that does not match is rejected (reason `NodeAffinity`), as by upstream's kubelet"),
    done("spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution", &[NOT_READ, "kubelet/src/validation/affinity.rs::node_selector_and_affinity_validated_as_upstream"], "read by the scheduler only; validated (a weight of 1-100, terms as the required ones) and accepted as by upstream's kubelet"),
    done("spec.affinity.podAffinity", &[NOT_READ], "read by the scheduler only; accepted as by upstream's kubelet"),
    done("spec.affinity.podAntiAffinity", &[NOT_READ], "read by the scheduler only; accepted as by upstream's kubelet"),
    done("spec.automountServiceAccountToken", &[NOT_READ], "the token is added by the API server's ServiceAccount admission, not the kubelet; static pods get none, here as upstream"),
    done("spec.dnsConfig", &["kubelet/src/node/files.rs::dns_config_extends_the_policy_and_none_uses_only_it"], "merged into the pod's `/etc/resolv.conf`"),
    done("spec.dnsPolicy", &["kubelet/src/node/files.rs::cluster_first_resolv_conf", "kubelet/src/node/files.rs::without_cluster_dns_falls_back_to_the_host", "kubelet/src/node/files.rs::dns_config_extends_the_policy_and_none_uses_only_it"], "`ClusterFirst`, `ClusterFirstWithHostNet`, `Default`, `None`"),
    done("spec.enableServiceLinks", &["kubelet/src/node/envvars.rs::named_ports_other_namespaces_headless_and_links_off"], "service environment variables, off with `false`"),
    refused("spec.ephemeralContainers", NEW_REFUSALS, "static pods may not have ephemeral containers (upstream's rule); an API pod's, which the API server adds to a running pod (`kubectl debug`), are not run yet: each waits with `CreateContainerConfigError` and a message saying so, and the pod runs on"),
    done("spec.hostAliases", &["kubelet/src/node/files.rs::hosts_with_ip_subdomain_and_aliases"], "added to the managed `/etc/hosts`"),
    done("spec.hostIPC", &["integration/tests/hostns.rs::host_namespaces", "runtime/src/runtime_tests.rs::host_pid_and_host_ipc_get_no_namespace_and_the_hosts_dev_shm"], "the host's IPC namespace and `/dev/shm`"),
    done("spec.hostNetwork", &["integration/tests/kubelet.rs::env_and_host_network", "integration/tests/runtime.rs::host_network_and_sysctls"], "the host's network namespace, no CNI"),
    done("spec.hostPID", &["integration/tests/hostns.rs::host_namespaces"], "the host's PID namespace"),
    rejected("spec.hostUsers", &["kubelet/src/security/userns.rs::rejection_names_what_is_missing", "integration/tests/userns.rs::userns_and_proc_mount"], "`false` (a user namespace) is rejected at admission (reason `UserNamespacesNotSupported`) with what the node lacks: kubenode does not implement user namespaces yet, and needs an OCI runtime with idmapped mounts; `true` is the default"),
    done("spec.hostname", &["kubelet/src/node/files.rs::hosts_with_ip_subdomain_and_aliases"], "the pod's hostname and `/etc/hosts` entry"),
    refused("spec.hostnameOverride", NEW_REFUSALS, "alpha upstream (feature gate `HostnameOverride`)"),
    done("spec.imagePullSecrets", &["runtime/src/image/auth.rs::keyring_matches_as_upstreams", "kubelet/src/node/worker/pull_secrets.rs::both_docker_secret_types_and_nothing_else", "integration/tests/images.rs::pull_with_credentials_from_a_keyring"], "`kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` secrets of the pod's source, read at pull time and matched as upstream's credential keyring, tried before the node's `config.json`; an unreadable one: `FailedToRetrieveImagePullSecret`, the pull goes on"),
    done("spec.nodeName", &["kubelet/src/source/tests.rs::static_pod_shape"], "set to this node, as upstream does for static pods"),
    done("spec.nodeSelector", NODE_AFFINITY_TESTS, "matched against the node's labels (`kubernetes.io/hostname`, `os`, `arch`, and `--node-labels`) at admission; a pod that does not match is rejected (reason `NodeAffinity`), as by upstream's kubelet"),
    refused_as("spec.os.name", "\"windows\"", NEW_REFUSALS, "only `linux`: kubenode runs Linux containers"),
    done("spec.overhead", &["kubelet/src/node/worker/pod_cgroup.rs::overhead_adds_to_requests_and_to_the_limits_that_are_set", "integration/tests/limits.rs::pod_cgroup"], "added to the pod cgroup's requests and to the limits that are set, as upstream's `ResourceConfigForPod`"),
    done("spec.preemptionPolicy", &[NOT_READ], "read by the scheduler only; accepted as by upstream's kubelet"),
    done("spec.priority", &["kubelet/src/node/worker/start.rs::node_critical_pods_score_as_guaranteed"], "critical pods (priority at least `SystemCriticalPriority`) get the guaranteed OOM score"),
    done("spec.priorityClassName", &["kubelet/src/node/worker/start.rs::node_critical_pods_score_as_guaranteed"], "`system-node-critical` pods get the guaranteed OOM score"),
    done("spec.readinessGates", &["kubelet/src/status/conditions.rs::readiness_gates_keep_the_pod_not_ready"], "`Ready` stays `False` (`ReadinessGatesNotReady`): nothing sets a static pod's gate conditions"),
    refused("spec.resourceClaims", NEW_REFUSALS, "kubenode does not implement dynamic resource allocation"),
    refused("spec.resources", "kubelet/src/validation/pod_tests.rs::pod_level_resources_refused", "pod-level requests and limits"),
    done("spec.restartPolicy", &["integration/tests/kubelet.rs::restart_policies", "kubelet/src/node/actions.rs::restart_policy_matrix"], "`Always`, `OnFailure`, `Never`, with crash back-off"),
    refused("spec.runtimeClassName", NEW_REFUSALS, "every pod runs with the node's one OCI runtime"),
    done("spec.schedulerName", &[NOT_READ], "read by the scheduler only; accepted as by upstream's kubelet"),
    refused("spec.schedulingGates", NEW_REFUSALS, "a static pod is bound to its node, and a bound pod may not have scheduling gates"),
    done("spec.securityContext.appArmorProfile", &[SECCOMP_E2E, "kubelet/src/validation/security.rs::apparmor_fields_as_upstream"], "as upstream; refused at admission on a host without AppArmor"),
    done("spec.securityContext.fsGroup", &["integration/tests/volumes/fsgroup.rs::emptydir_given_to_fs_group", "integration/tests/volumes/fsgroup.rs::fs_group_not_reapplied_after_restart"], "a supplementary group of every container, and the group of a new `emptyDir` (setgid directories, group rw), as upstream's `SetVolumeOwnership`; `hostPath` and `nfs` untouched, as upstream"),
    done("spec.securityContext.fsGroupChangePolicy", &["kubelet/src/volume/ownership.rs::on_root_mismatch_skips_a_matching_root_and_walks_otherwise", "kubelet/src/volume/ownership.rs::fs_group_and_policy_from_the_pod"], "read for the ownership walk; `emptyDir`, the only kubenode volume it applies to, always walks a new volume, as upstream's emptyDir ignores the policy"),
    done("spec.securityContext.runAsGroup", &[GOLDEN, USER, PRIVATE_ROOT], "the containers' primary group unless they set their own"),
    done("spec.securityContext.runAsNonRoot", &[GOLDEN, USER], "a container that would run as uid 0 fails to be created"),
    done("spec.securityContext.runAsUser", &[GOLDEN, USER, PRIVATE_ROOT], "the containers' user unless they set their own"),
    refused("spec.securityContext.seLinuxChangePolicy", NEW_REFUSALS, "kubenode applies no SELinux labels"),
    refused("spec.securityContext.seLinuxOptions", SE_LINUX, "kubenode applies no SELinux labels"),
    done("spec.securityContext.seccompProfile", &[SECCOMP_E2E, "kubelet/src/validation/security.rs::seccomp_fields_as_upstream"], "the containers' seccomp profile unless they set their own"),
    done("spec.securityContext.supplementalGroups", &[GOLDEN, USER], "added to every container's groups"),
    done("spec.securityContext.supplementalGroupsPolicy", &["runtime/src/spec/user.rs::strict_groups_leave_out_the_images_group_file"], "`Merge` (the default) adds the groups the image's `/etc/group` lists the user in; `Strict` only the primary group, `supplementalGroups` and `fsGroup`, as upstream's runtimes"),
    done("spec.securityContext.sysctls", &["integration/tests/limits.rs::pids_and_sysctls", "integration/tests/runtime.rs::host_network_and_sysctls", "kubelet/src/validation/sysctl.rs::allowed_unsafe_sysctls_exact_and_by_prefix"], "set in the pod's namespaces; unsafe ones only when allowed (`SysctlForbidden`)"),
    refused("spec.securityContext.windowsOptions", NEW_REFUSALS, "kubenode runs Linux containers"),
    done("spec.serviceAccount", &["kubelet/src/source/defaults.rs::deprecated_service_account_fills_service_account_name"], "deprecated alias: fills an unset `serviceAccountName`, as upstream's conversion"),
    done("spec.serviceAccountName", &["kubelet/src/node/observe.rs::field_refs"], "the downward API's `spec.serviceAccountName`; no token (see `automountServiceAccountToken`)"),
    refused_as("spec.setHostnameAsFQDN", "true", NEW_REFUSALS, "`true` is refused: kubenode sets the short hostname"),
    done("spec.shareProcessNamespace", &["integration/tests/hostns.rs::shared_process_namespace"], "one PID namespace for the pod, pause is its PID 1"),
    done("spec.subdomain", &["kubelet/src/node/files.rs::hosts_with_ip_subdomain_and_aliases"], "the pod's FQDN in `/etc/hosts`"),
    done("spec.terminationGracePeriodSeconds", &["integration/tests/kubelet.rs::grace_period"], "the grace period of a stop"),
    done("spec.tolerations", &["kubelet/src/source/tests.rs::static_pod_shape", NOT_READ], "read by the scheduler; static pods get upstream's `NoExecute` toleration; a kubenode node has no taints"),
    done("spec.topologySpreadConstraints", &[NOT_READ], "read by the scheduler only; accepted as by upstream's kubelet"),
    // Volumes.
    done("spec.volumes[*].name", &["integration/tests/volumes/plugins.rs::subpaths", "kubelet/src/validation/pod_tests.rs::volumes_and_mounts"], "referenced by `volumeMounts[*].name`"),
    done("spec.volumes[*].emptyDir.medium", &["kubelet/src/volume/empty_dir.rs::memory_medium_mounts_a_sized_tmpfs_once", "kubelet/src/volume/empty_dir.rs::disk_medium_is_a_0777_directory_without_mounts"], "disk directory or `Memory` (tmpfs)"),
    done("spec.volumes[*].emptyDir.sizeLimit", &["integration/tests/volumes/plugins.rs::tmpfs_with_size", "integration/tests/volumes/lifecycle.rs::eviction"], "tmpfs size; on disk, the pod is evicted past it"),
    done("spec.volumes[*].hostPath", &["integration/tests/volumes/plugins.rs::host_path_types"], "all eight types"),
    done("spec.volumes[*].nfs", &["integration/tests/volumes/mounts.rs::nfs_fake_server", "integration/tests/vm.rs::nfs_volume"], "mounted with the system's `mount -t nfs`"),
    done("spec.volumes[*].configMap.name", &[CM_E2E, UPDATE_E2E, "kubelet/src/volume/projection_tests.rs::config_map_keys_items_modes_and_missing_keys"], "the ConfigMap of the pod's namespace (a static pod's from the manifest directory, an API pod's from the API server); missing: `FailedMount` (`configmap \"x\" not found`) and the pod waits"),
    done("spec.volumes[*].configMap.items", &["kubelet/src/volume/projection_tests.rs::config_map_keys_items_modes_and_missing_keys", VOLUME_CHECKS], "the keys written and their paths (relative, no `..`) and modes; a missing key is an error unless `optional`"),
    done("spec.volumes[*].configMap.defaultMode", &[SECRET_E2E, "kubelet/src/volume/projection_tests.rs::config_map_keys_items_modes_and_missing_keys", VOLUME_CHECKS], "the files' mode (0644 by default), 0 to 0777"),
    done("spec.volumes[*].configMap.optional", &[OPTIONAL_E2E, "kubelet/src/volume/projection_tests.rs::a_missing_source_fails_with_upstreams_message_and_creates_nothing"], "a missing ConfigMap or key is an empty volume or a skipped file"),
    done("spec.volumes[*].secret.secretName", &[SECRET_E2E, "kubelet/src/volume/projection_tests.rs::a_real_secret_tmpfs_is_torn_down_with_the_pod"], "written to a tmpfs (never the disk), removed with the pod; missing: `FailedMount` and the pod waits"),
    done("spec.volumes[*].secret.items", &["kubelet/src/volume/projection_tests.rs::secret_keys_modes_and_missing_keys", VOLUME_CHECKS], "the keys written and their paths and modes"),
    done("spec.volumes[*].secret.defaultMode", &[SECRET_E2E, "kubelet/src/volume/projection_tests.rs::fs_group_owns_the_contents_read_only"], "the files' mode (0644 by default); with `fsGroup`, group-readable as upstream"),
    done("spec.volumes[*].secret.optional", &[OPTIONAL_E2E, "kubelet/src/volume/projection_tests.rs::secret_keys_modes_and_missing_keys"], "a missing Secret or key is an empty volume or a skipped file"),
    done("spec.volumes[*].downwardAPI.items", &[DOWNWARD_E2E, "kubelet/src/volume/projection_tests.rs::downward_api_fields_and_resources", VOLUME_CHECKS], "`metadata.name`/`namespace`/`uid`/`labels`/`annotations` (and one label or annotation) and containers' limits and requests with a divisor; labels and annotations rewritten when they change"),
    done("spec.volumes[*].downwardAPI.defaultMode", &["kubelet/src/volume/projection_tests.rs::downward_api_fields_and_resources", VOLUME_CHECKS], "the files' mode (0644 by default)"),
    done("spec.volumes[*].projected.defaultMode", &["kubelet/src/volume/projection_tests.rs::projected_sources_errors_and_cluster_trust_bundles"], "the files' mode (0644 by default); a token is 0600 with `fsGroup` or a common `runAsUser`"),
    done("spec.volumes[*].projected.sources[*].configMap", &["kubelet/src/volume/projection_tests.rs::projected_sources_errors_and_cluster_trust_bundles", "kubelet/src/volume/projection_tests.rs::the_kube_api_access_volume_of_every_cluster_pod"], "as a configMap volume's, in one tmpfs with the other sources"),
    done("spec.volumes[*].projected.sources[*].secret", &["kubelet/src/volume/projection_tests.rs::projected_sources_errors_and_cluster_trust_bundles"], "as a secret volume's"),
    done("spec.volumes[*].projected.sources[*].downwardAPI", &["kubelet/src/volume/projection_tests.rs::projected_sources_errors_and_cluster_trust_bundles", "kubelet/src/volume/projection_tests.rs::the_kube_api_access_volume_of_every_cluster_pod"], "as a downwardAPI volume's"),
    done("spec.volumes[*].projected.sources[*].serviceAccountToken", &["kubelet/src/volume/projection_tests.rs::the_kube_api_access_volume_of_every_cluster_pod", VOLUME_CHECKS], "a token from the API server's TokenRequest (cluster mode; a static pod has none), `expirationSeconds` 3600 by default and at least 600, rewritten when a new one is issued"),
    refused_as("spec.volumes[*].projected.sources[*].clusterTrustBundle", "{\"path\": \"ca.pem\", \"name\": \"b\"}", VOLUME_CHECKS, "ClusterTrustBundle projections are not implemented (beta and off by default upstream)"),
    refused_as("spec.volumes[*].projected.sources[*].podCertificate", "{\"signerName\": \"example.com/s\", \"keyType\": \"ED25519\"}", VOLUME_CHECKS, "podCertificate projections are not implemented (alpha upstream)"),
    refused("spec.volumes[*].awsElasticBlockStore", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].azureDisk", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].azureFile", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].cephfs", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].cinder", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].csi", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].ephemeral", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].fc", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].flexVolume", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].flocker", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].gcePersistentDisk", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].gitRepo", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].glusterfs", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].image", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].iscsi", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].persistentVolumeClaim", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].photonPersistentDisk", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].portworxVolume", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].quobyte", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].rbd", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].scaleIO", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].storageos", VOLUME_TYPES, "volume type not implemented"),
    refused("spec.volumes[*].vsphereVolume", VOLUME_TYPES, "volume type not implemented"),
    // Containers and init containers.
    done("{c}.args", &["runtime/src/spec/golden.rs::golden_default_container", "integration/tests/probes.rs::exec_liveness"], "the image's `Cmd` replaced, `$(VAR)` expanded"),
    done("{c}.command", &["runtime/src/spec/golden.rs::golden_restricted_container", WEB_POD], "the image's `Entrypoint` replaced, `$(VAR)` expanded"),
    done("{c}.env[*].name", &["integration/tests/kubelet.rs::env_and_host_network"], "the variable's name"),
    done("{c}.env[*].value", &["integration/tests/kubelet.rs::env_and_host_network"], "the value, `$(VAR)` expanded"),
    done("{c}.env[*].valueFrom.configMapKeyRef", &["kubelet/src/node/env.rs::config_map_and_secret_references", "integration/tests/objects_env.rs::static_pod_env_from_manifest_objects"], "the key's value from the pod's source (the manifest directory's ConfigMaps for static pods); `optional` as upstream; a missing one is `CreateContainerConfigError`"),
    done("{c}.env[*].valueFrom.fieldRef", &["kubelet/src/node/observe.rs::field_refs", "integration/tests/kubelet.rs::env_and_host_network"], "the downward API fields upstream allows"),
    refused("{c}.env[*].valueFrom.fileKeyRef", NEW_REFUSALS, "alpha upstream (feature gate `EnvFiles`)"),
    done("{c}.env[*].valueFrom.resourceFieldRef", &["kubelet/src/node/observe.rs::resource_field_refs_are_resolved", "integration/tests/kubelet.rs::env_and_host_network", "integration/tests/resources.rs::out_of_resources"], "the limit or request; an unset limit is the node's allocatable, as upstream"),
    done("{c}.env[*].valueFrom.secretKeyRef", &["kubelet/src/node/env.rs::config_map_and_secret_references", "integration/tests/objects_env.rs::static_pod_env_from_manifest_objects"], "the key's value from the pod's source; `optional` as upstream; never logged"),
    done("{c}.envFrom", &["kubelet/src/node/env.rs::env_from_first_then_env", "integration/tests/objects_env.rs::static_pod_env_from_manifest_objects"], "every key of the ConfigMap or Secret, `prefix`ed, before `env` (which wins)"),
    done("{c}.image", &[WEB_POD, "integration/tests/images.rs::pull_busybox"], "pulled from its registry or the local store"),
    done("{c}.imagePullPolicy", &["runtime/src/image/tests.rs::ensure_follows_the_pull_policy_without_touching_the_network_when_present", "kubelet/src/source/defaults.rs::pull_policy_by_tag"], "`Always`, `IfNotPresent`, `Never` (`ErrImageNeverPull`), defaulted by tag"),
    done("{c}.lifecycle.postStart.exec", &["integration/tests/lifecycle.rs::post_start_exec", "integration/tests/lifecycle.rs::post_start_failure"], "run in the container right after its start; the pod waits for it; a failure kills and restarts the container (`FailedPostStartHook`, `PostStartHookError`)"),
    done("{c}.lifecycle.postStart.httpGet", &["integration/tests/lifecycle.rs::post_start_http", "kubelet/src/node/hooks.rs::get_reaches_the_server_with_path_and_headers"], "sent right after the container's start, as a preStop GET"),
    done("{c}.lifecycle.postStart.sleep", &["integration/tests/lifecycle.rs::post_start_sleep_then_delete", "kubelet/src/validation/pod_tests.rs::lifecycle_hooks_as_upstream", "kubelet/src/node/hooks.rs::sleep_hook_sleeps_and_an_unknown_handler_fails"], "the container's start waits its seconds (at most the grace period, as upstream)"),
    refused("{c}.lifecycle.postStart.tcpSocket", NEW_REFUSALS, "not a lifecycle handler: upstream keeps it for compatibility and fails the hook"),
    done("{c}.lifecycle.preStop.exec", &["integration/tests/kubelet.rs::grace_period"], "run before the stop signal, within the grace period"),
    done("{c}.lifecycle.preStop.httpGet", &["kubelet/src/node/hooks.rs::get_reaches_the_server_with_path_and_headers"], "sent before the stop signal, within the grace period"),
    done("{c}.lifecycle.preStop.sleep", &["integration/tests/lifecycle.rs::pre_stop_sleep", "kubelet/src/validation/pod_tests.rs::lifecycle_hooks_as_upstream"], "the stop signal waits its seconds, cut at the grace period"),
    refused("{c}.lifecycle.preStop.tcpSocket", NEW_REFUSALS, "not a lifecycle handler: upstream keeps it for compatibility and fails the hook"),
    refused("{c}.lifecycle.stopSignal", NEW_REFUSALS, "the image's `STOPSIGNAL` (or SIGTERM) is sent"),
    done("{c}.{probe}.exec", &["integration/tests/probes.rs::exec_liveness"], "run in the container"),
    done("{c}.{probe}.failureThreshold", PROBES_E2E, "as upstream, defaults included"),
    done("{c}.{probe}.grpc", &["kubelet/src/prober/tests/mechanisms.rs::grpc_health_checks"], "the gRPC health service, `service` included"),
    done("{c}.{probe}.httpGet", HTTP_PROBE, "host, path, port (named too), scheme, headers, redirects"),
    done("{c}.{probe}.initialDelaySeconds", &["integration/tests/probes.rs::exec_liveness", "integration/tests/probes.rs::tcp_readiness"], "as upstream"),
    done("{c}.{probe}.periodSeconds", PROBES_E2E, "as upstream"),
    done("{c}.{probe}.successThreshold", &["integration/tests/probes.rs::tcp_readiness", "kubelet/src/validation/pod_tests.rs::probes_and_hooks"], "as upstream (1 but for readiness)"),
    done("{c}.{probe}.tcpSocket", &["integration/tests/probes.rs::tcp_readiness"], "host and port (named too)"),
    done("{c}.{probe}.terminationGracePeriodSeconds", &["kubelet/src/prober/tests/mod.rs::liveness_kills_after_the_failure_threshold_with_the_probe_grace"], "the grace period of a kill by this probe"),
    done("{c}.{probe}.timeoutSeconds", &["integration/tests/probes.rs::http_edge_cases"], "as upstream"),
    done("{c}.name", &[WEB_POD], "the container's name"),
    done("{c}.ports[*].containerPort", &[WEB_POD], "informational, as upstream; named ports serve probes and Services"),
    done("{c}.ports[*].hostIP", &["kubelet/src/node/hostports.rs::mappings_follow_cri_and_containerd", "kubelet/src/node/hostports.rs::conflicts_as_host_port_info"], "passed to CNI with the port mapping when set; `0.0.0.0` or empty takes every address for conflicts"),
    done("{c}.ports[*].hostPort", &["integration/tests/hostport.rs::reachable_conflicts_rejected_rules_removed", "integration/tests/hostport.rs::without_portmap_fails_the_sandbox", "integration/tests/hostport.rs::crash_in_the_middle_of_add"], "on the pod network, the CNI `portMappings` capability (the `portmap` plugin; a network without it fails the sandbox); conflicts rejected at admission with `NodePorts`; on the host network it must equal `containerPort`, as upstream"),
    done("{c}.ports[*].name", NAMED_PORTS, "named probe ports"),
    done("{c}.ports[*].protocol", &["kubelet/src/validation/pod_tests.rs::ports_and_image"], "informational, as upstream"),
    done("{c}.resizePolicy", &[NOT_READ], "applies to an in-place resize; a static pod's changed manifest is a new pod, here as upstream"),
    refused("{c}.resources.claims", NEW_REFUSALS, "kubenode does not implement dynamic resource allocation"),
    done("{c}.resources.limits", &["integration/tests/limits.rs::oom_and_swap", "integration/tests/runtime.rs::oom_killed", "integration/tests/volumes/ephemeral.rs::ephemeral_storage_limits", "kubelet/src/volume/usage_tests.rs::a_container_over_its_own_limit_is_evicted_with_its_message", "kubelet/src/volume/usage_tests.rs::a_pod_over_the_sum_is_evicted_with_the_pod_message_first"], "the container's cgroup limits; `ephemeral-storage`: the pod is evicted when a container's writable layer and logs pass its limit, or the pod's containers, disk emptyDirs and `/etc/hosts` pass the sum of its containers' limits (measured every 10 s, as upstream's eviction manager)"),
    done("{c}.resources.requests", &["integration/tests/limits.rs::oom_and_swap", "runtime/src/spec/golden.rs::golden_default_container", "runtime/src/spec/resources.rs::cpu_formulas_match_kubelet", "kubelet/src/node/capacity_tests.rs::enough_requests_as_upstream", "integration/tests/resources.rs::out_of_resources"], "cpu shares (weight) and the OOM score; admission against the node's allocatable (cpu, memory, ephemeral-storage, huge pages) rejects with upstream's `OutOf<resource>`; an extended resource the node lacks is dropped before the check, as upstream's kubelet does"),
    done("{c}.restartPolicy", &["kubelet/src/status/phase_tests.rs::phase_with_sidecars", "kubelet/src/node/worker/start.rs::sidecars_score_no_higher_than_the_smallest_regular_container"], "`Always` on an init container: a sidecar"),
    refused("{c}.restartPolicyRules", NEW_REFUSALS, "alpha upstream (feature gate `ContainerRestartRules`)"),
    done("{c}.securityContext.allowPrivilegeEscalation", &[GOLDEN], "`no_new_privs`"),
    done("{c}.securityContext.appArmorProfile", &[SECCOMP_E2E, "kubelet/src/validation/security.rs::apparmor_fields_as_upstream"], "as upstream; refused at admission on a host without AppArmor"),
    done("{c}.securityContext.capabilities", &[GOLDEN, "runtime/src/spec/golden.rs::seccomp_follows_the_effective_capabilities_and_privileged_has_none"], "added to and dropped from the default set"),
    done("{c}.securityContext.privileged", &["runtime/src/spec/golden.rs::golden_privileged_container", "integration/tests/runtime.rs::host_network_and_sysctls"], "all capabilities and devices, no seccomp, no masked paths"),
    done("{c}.securityContext.procMount", &["kubelet/src/validation/pod_tests.rs::proc_mount_as_upstream", "runtime/src/spec/golden.rs::proc_mount_unmasked_has_no_masked_or_readonly_paths", "integration/tests/userns.rs::userns_and_proc_mount"], "`Default`: the masked and read-only `/proc` paths; `Unmasked` (none) only with `hostUsers: false`, as upstream, so never on a node without user namespaces"),
    done("{c}.securityContext.readOnlyRootFilesystem", &[GOLDEN], "a read-only root filesystem"),
    done("{c}.securityContext.runAsGroup", &[GOLDEN, USER], "the primary group"),
    done("{c}.securityContext.runAsNonRoot", &[GOLDEN, USER], "a container that would run as uid 0 fails to be created"),
    done("{c}.securityContext.runAsUser", &[GOLDEN, USER, PRIVATE_ROOT], "the user"),
    refused("{c}.securityContext.seLinuxOptions", SE_LINUX, "kubenode applies no SELinux labels"),
    done("{c}.securityContext.seccompProfile", &[SECCOMP_E2E, "kubelet/src/validation/security.rs::seccomp_fields_as_upstream"], "the container's seccomp profile"),
    refused("{c}.securityContext.windowsOptions", NEW_REFUSALS, "kubenode runs Linux containers"),
    done("{c}.stdin", &["integration/tests/kubelet_attach.rs::attach_stdin_and_tty", "runtime/src/shim/streams.rs::clients_get_output_and_their_input_reaches_stdin"], "a stdin pipe the shim holds open for `kubectl attach -i`"),
    done("{c}.stdinOnce", &["integration/tests/kubelet_attach.rs::attach_stdin_and_tty", "runtime/src/shim/streams.rs::clients_get_output_and_their_input_reaches_stdin"], "the stdin closes when the first attach session's input ends (no terminal)"),
    done("{c}.terminationMessagePath", &["integration/tests/secreads.rs::termination_messages"], "read into the terminated state's message"),
    done("{c}.terminationMessagePolicy", &["integration/tests/secreads.rs::termination_messages", "integration/tests/store.rs::crash_loop_logs"], "`File` or `FallbackToLogsOnError`"),
    done("{c}.tty", &["integration/tests/kubelet_attach.rs::attach_stdin_and_tty", "runtime/src/shim/streams.rs::clients_get_output_and_their_input_reaches_stdin"], "a terminal (`runc create --console-socket`), resized by `kubectl attach -t`"),
    refused("{c}.volumeDevices", NEW_REFUSALS, "raw block devices need persistentVolumeClaim volumes, which kubenode does not implement"),
    done("{c}.volumeMounts[*].mountPath", &["integration/tests/volumes/plugins.rs::subpaths"], "where the volume is bind-mounted"),
    done("{c}.volumeMounts[*].mountPropagation", &["integration/tests/volumes/mounts.rs::propagation"], "`None`, `HostToContainer`, `Bidirectional` (privileged only)"),
    done("{c}.volumeMounts[*].name", &["kubelet/src/validation/pod_tests.rs::volumes_and_mounts", "integration/tests/volumes/plugins.rs::subpaths"], "the volume"),
    done("{c}.volumeMounts[*].readOnly", &["integration/tests/volumes/mounts.rs::propagation", "integration/tests/volumes/plugins.rs::subpaths"], "a read-only bind mount"),
    refused_as("{c}.volumeMounts[*].recursiveReadOnly", "\"Enabled\"", NEW_REFUSALS, "`Enabled` and `IfPossible` are refused; `Disabled` is the default"),
    done("{c}.volumeMounts[*].subPath", &["integration/tests/volumes/plugins.rs::subpaths", "kubelet/src/volume/manager_tests.rs::subpath_symlink_escape_is_refused_with_upstreams_message"], "safe subPath, symlink escapes refused"),
    refused("{c}.volumeMounts[*].subPathExpr", NEW_REFUSALS, "not implemented"),
    done("{c}.workingDir", &[GOLDEN], "the process's working directory"),
];
