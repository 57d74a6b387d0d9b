//! Pod validation tables (after upstream `validation_test.go` cases).

use super::*;
use k8s_openapi::api::core::v1::Pod;

/// A pod using most of what validation checks (also used by the source's tests).
pub(crate) const BASE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  restartPolicy: Always
  volumes:
  - {name: data, emptyDir: {}}
  - {name: host, hostPath: {path: /srv/www, type: DirectoryOrCreate}}
  - {name: share, nfs: {server: 10.0.0.5, path: /exports}}
  initContainers:
  - {name: setup, image: busybox, command: [sh, -c, "true"]}
  containers:
  - name: app
    image: busybox:1.36
    ports: [{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP, name: dns}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: PLAIN, value: x}
    resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: "1", memory: 128Mi}}
    volumeMounts: [{name: data, mountPath: /data}, {name: host, mountPath: /www, readOnly: true, subPath: html}]
    livenessProbe: {httpGet: {path: /, port: http}, periodSeconds: 5}
    readinessProbe: {tcpSocket: {port: 80}, successThreshold: 2}
    startupProbe: {exec: {command: ["true"]}, failureThreshold: 30}
    lifecycle: {preStop: {exec: {command: [sleep, "1"]}}}
"#;

fn pod(patch: impl FnOnce(&mut serde_json::Value)) -> Pod {
    let mut v: serde_json::Value = serde_yaml_ng::from_str(BASE).unwrap();
    patch(&mut v);
    serde_json::from_value(v).unwrap()
}

pub(crate) fn errors(patch: impl FnOnce(&mut serde_json::Value)) -> Vec<String> {
    match validate_pod(&pod(patch)) {
        Ok(()) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn one(patch: impl FnOnce(&mut serde_json::Value), want: &str) {
    let errs = errors(patch);
    assert!(
        errs.iter().any(|e| e == want),
        "want {want:?}\n got {errs:#?}"
    );
}

#[test]
fn valid_pod_passes() {
    assert_eq!(errors(|_| {}), Vec::<String>::new());
}

#[test]
fn names() {
    one(
        |v| v["metadata"]["name"] = "Web_1".into(),
        &format!(
            "metadata.name: Invalid value: \"Web_1\": {}",
            names::DNS1123_SUBDOMAIN_MSG
        ),
    );
    one(
        |v| v["metadata"]["name"] = "".into(),
        "metadata.name: Required value: name or generateName is required",
    );
    one(
        |v| v["spec"]["containers"][0]["name"] = "App".into(),
        &format!(
            "spec.containers[0].name: Invalid value: \"App\": {}",
            names::DNS1123_LABEL_MSG
        ),
    );
    one(
        |v| v["spec"]["initContainers"][0]["name"] = "app".into(),
        "spec.containers[0].name: Duplicate value: \"app\"",
    );
    one(
        |v| v["spec"]["containers"] = serde_json::json!([]),
        "spec.containers: Required value",
    );
    one(|v| v["metadata"]["labels"]["bad key"] = "x".into(), "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
}

#[test]
fn host_pid_and_ipc_and_shared_process_namespace() {
    for k in ["hostPID", "hostIPC", "shareProcessNamespace"] {
        assert_eq!(
            errors(|p| p["spec"][k] = true.into()),
            Vec::<String>::new(),
            "{k}"
        );
    }
    assert_eq!(
        errors(|p| {
            p["spec"]["hostPID"] = true.into();
            p["spec"]["hostIPC"] = true.into();
        }),
        Vec::<String>::new()
    );
    // Both PID choices at once: upstream's path (its internal type keeps them in the
    // security context) and message.
    assert_eq!(
        errors(|p| {
            p["spec"]["hostPID"] = true.into();
            p["spec"]["shareProcessNamespace"] = true.into();
        }),
        ["spec.securityContext.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled"]
    );
}

#[test]
fn namespace_options_at_their_defaults_and_host_users_false_are_valid() {
    // `hostUsers: false` is a valid pod: admission decides whether this node can run it
    // (`security::userns`), as upstream's kubelet does.
    for (k, v) in [
        ("hostPID", false),
        ("hostIPC", false),
        ("shareProcessNamespace", false),
        ("hostUsers", true),
        ("hostUsers", false),
    ] {
        assert_eq!(
            errors(|p| p["spec"][k] = v.into()),
            Vec::<String>::new(),
            "{k}: {v}"
        );
    }
}

#[test]
fn ports_and_image() {
    one(|v| v["spec"]["containers"][0]["ports"][1]["containerPort"] = 70000.into(), "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive");
    one(
        |v| v["spec"]["containers"][0]["ports"][0]["containerPort"] = 0.into(),
        "spec.containers[0].ports[0].containerPort: Required value",
    );
    one(
        |v| v["spec"]["containers"][0]["ports"][1]["name"] = "http".into(),
        "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
    );
    one(|v| v["spec"]["containers"][0]["ports"][1]["protocol"] = "ICMP".into(), "spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"");
    one(|v| v["spec"]["containers"][0]["ports"][0]["hostPort"] = 65536.into(), "spec.containers[0].ports[0].hostPort: Invalid value: 65536: must be between 1 and 65535, inclusive");
    one(|v| v["spec"]["containers"][0]["ports"][0]["name"] = "123".into(), "spec.containers[0].ports[0].name: Invalid value: \"123\": must contain at least one letter (a-z)");
    one(
        |v| v["spec"]["containers"][0]["image"] = " ".into(),
        "spec.containers[0].image: Required value",
    );
    one(
        |v| v["spec"]["containers"][0]["terminationMessagePolicy"] = "Always".into(),
        "spec.containers[0].terminationMessagePolicy: Invalid value: \"Always\": must be 'File' or 'FallbackToLogsOnError'",
    );
    one(|v| v["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes".into(), "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"");
}

#[test]
fn spec_enums() {
    one(|v| v["spec"]["restartPolicy"] = "Sometimes".into(), "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"");
    one(|v| v["spec"]["dnsPolicy"] = "Google".into(), "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"");
    one(|v| v["spec"]["dnsPolicy"] = "None".into(), "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when DNS policy is None");
    one(
        |v| v["spec"]["terminationGracePeriodSeconds"] = (-1).into(),
        "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
    );
    one(|v| v["spec"]["hostAliases"] = serde_json::json!([{"ip": "nope", "hostnames": ["a"]}]), "spec.hostAliases[0].ip: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
}

#[test]
fn volumes_and_mounts() {
    one(
        |v| v["spec"]["volumes"][1]["name"] = "data".into(),
        "spec.volumes[1].name: Duplicate value: \"data\"",
    );
    one(
        |v| v["spec"]["containers"][0]["volumeMounts"][0]["name"] = "nope".into(),
        "spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
    );
    one(
        |v| v["spec"]["volumes"][1]["hostPath"]["path"] = "/srv/../etc".into(),
        "spec.volumes[1].hostPath.path: Invalid value: \"/srv/../etc\": must not contain '..'",
    );
    one(|v| v["spec"]["volumes"][1]["hostPath"]["type"] = "Pipe".into(), "spec.volumes[1].hostPath.type: Unsupported value: \"Pipe\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"");
    one(|v| v["spec"]["volumes"][0] = serde_json::json!({"name": "data", "csi": {"driver": "d"}}), "spec.volumes[0].csi: Forbidden: kubenode does not implement csi volumes (it mounts emptyDir, hostPath, nfs, configMap, secret, downwardAPI and projected)");
    one(
        |v| v["spec"]["volumes"][0]["hostPath"] = serde_json::json!({"path": "/x"}),
        "spec.volumes[0]: Forbidden: may not specify more than 1 volume type",
    );
    one(
        |v| v["spec"]["volumes"][2]["nfs"]["path"] = "exports".into(),
        "spec.volumes[2].nfs.path: Invalid value: \"exports\": must be an absolute path",
    );
    one(
        |v| v["spec"]["containers"][0]["volumeMounts"][1]["mountPath"] = "/data".into(),
        "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/data\": must be unique",
    );
    one(|v| v["spec"]["containers"][0]["volumeMounts"][1]["subPath"] = "../x".into(), "spec.containers[0].volumeMounts[1].subPath: Invalid value: \"../x\": must not contain '..'");
    one(|v| v["spec"]["containers"][0]["volumeMounts"][1]["subPath"] = "/x".into(), "spec.containers[0].volumeMounts[1].subPath: Invalid value: \"/x\": must be a relative path");
    one(|v| v["spec"]["containers"][0]["volumeMounts"][0]["mountPropagation"] = "Bidirectional".into(), "spec.containers[0].volumeMounts[0].mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers");
}

#[test]
fn probes_and_hooks() {
    one(
        |v| v["spec"]["containers"][0]["livenessProbe"] = serde_json::json!({"periodSeconds": 3}),
        "spec.containers[0].livenessProbe: Required value: must specify a handler type",
    );
    one(
        |v| {
            v["spec"]["containers"][0]["livenessProbe"]["tcpSocket"] =
                serde_json::json!({"port": 80})
        },
        "spec.containers[0].livenessProbe: Forbidden: may not specify more than 1 handler type",
    );
    one(
        |v| v["spec"]["containers"][0]["livenessProbe"]["successThreshold"] = 2.into(),
        "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
    );
    one(
        |v| v["spec"]["containers"][0]["startupProbe"]["successThreshold"] = 3.into(),
        "spec.containers[0].startupProbe.successThreshold: Invalid value: 3: must be 1",
    );
    one(|v| v["spec"]["containers"][0]["livenessProbe"]["periodSeconds"] = (-1).into(), "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0");
    one(|v| v["spec"]["containers"][0]["readinessProbe"]["terminationGracePeriodSeconds"] = 10.into(), "spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 10: must not be set for readinessProbes");
    one(|v| v["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = 0.into(), "spec.containers[0].livenessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive");
    one(|v| v["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = "Web-".into(), "spec.containers[0].livenessProbe.httpGet.port: Invalid value: \"Web-\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    one(
        |v| v["spec"]["containers"][0]["startupProbe"]["exec"]["command"] = serde_json::json!([]),
        "spec.containers[0].startupProbe.exec.command: Required value",
    );
    one(
        |v| v["spec"]["containers"][0]["lifecycle"]["preStop"] = serde_json::json!({}),
        "spec.containers[0].lifecycle.preStop: Required value: must specify a handler type",
    );
    one(|v| v["spec"]["initContainers"][0]["livenessProbe"] = serde_json::json!({"exec": {"command": ["true"]}}), "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always");
    // A sidecar may have probes.
    assert!(errors(|v| {
        v["spec"]["initContainers"][0]["restartPolicy"] = "Always".into();
        v["spec"]["initContainers"][0]["readinessProbe"] =
            serde_json::json!({"exec": {"command": ["true"]}});
    })
    .is_empty());
    one(
        |v| v["spec"]["containers"][0]["restartPolicy"] = "Always".into(),
        "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
    );
}

/// Lifecycle hooks as upstream's `validateHandler`: `postStart` and `preStop` take `exec`,
/// `httpGet` and `sleep`; a `sleep` must fit in the pod's grace period (`validateSleepAction`,
/// seconds in 0..=terminationGracePeriodSeconds, 30 when unset).
#[test]
fn lifecycle_hooks_as_upstream() {
    let hooks = |v: &mut serde_json::Value, hooks: serde_json::Value| {
        v["spec"]["containers"][0]["lifecycle"] = hooks;
    };
    for handler in [
        serde_json::json!({"exec": {"command": ["sh", "-c", "echo hi > /tmp/hi"]}}),
        serde_json::json!({"httpGet": {"path": "/started", "port": "http"}}),
        serde_json::json!({"sleep": {"seconds": 0}}),
        serde_json::json!({"sleep": {"seconds": 30}}),
    ] {
        let lifecycle = serde_json::json!({"postStart": handler.clone(), "preStop": handler});
        assert_eq!(
            errors(|v| hooks(v, lifecycle.clone())),
            Vec::<String>::new(),
            "{lifecycle}"
        );
    }
    let c = "spec.containers[0].lifecycle";
    assert_eq!(
        errors(|v| hooks(v, serde_json::json!({"preStop": {"sleep": {"seconds": 31}}}))),
        [format!("{c}.preStop.sleep: Invalid value: 31: must be non-negative and less than terminationGracePeriodSeconds (30)")]
    );
    assert_eq!(
        errors(|v| {
            v["spec"]["terminationGracePeriodSeconds"] = 5.into();
            hooks(v, serde_json::json!({"postStart": {"sleep": {"seconds": 6}}, "preStop": {"sleep": {"seconds": 5}}}));
        }),
        [format!("{c}.postStart.sleep: Invalid value: 6: must be non-negative and less than terminationGracePeriodSeconds (5)")]
    );
    assert_eq!(
        errors(|v| hooks(v, serde_json::json!({"postStart": {"sleep": {"seconds": -1}}}))),
        [format!("{c}.postStart.sleep: Invalid value: -1: must be non-negative and less than terminationGracePeriodSeconds (30)")]
    );
    assert_eq!(
        errors(|v| hooks(
            v,
            serde_json::json!({"postStart": {"exec": {"command": ["true"]}, "sleep": {"seconds": 1}}})
        )),
        [format!(
            "{c}.postStart: Forbidden: may not specify more than 1 handler type"
        )]
    );
}

#[test]
fn env_and_resources() {
    one(|v| v["spec"]["containers"][0]["env"][2]["name"] = "A=B".into(), "spec.containers[0].env[2].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='");
    one(|v| v["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] = "spec.nope".into(), "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.nope\": supported values: \"metadata.annotations\", \"metadata.labels\", \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\"");
    one(|v| v["spec"]["containers"][0]["env"][0]["value"] = "x".into(), "spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty");
    one(|v| v["spec"]["containers"][0]["env"][0]["valueFrom"] = serde_json::json!({"secretKeyRef": {"name": "s", "key": "a/b"}}), "spec.containers[0].env[0].valueFrom.secretKeyRef.key: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
    one(
        |v| {
            v["spec"]["containers"][0]["env"][0]["valueFrom"] =
                serde_json::json!({"configMapKeyRef": {"name": "Cfg", "key": "k"}})
        },
        format!(
            "spec.containers[0].env[0].valueFrom.configMapKeyRef.name: Invalid value: \"Cfg\": {}",
            super::names::DNS1123_SUBDOMAIN_MSG
        )
        .as_str(),
    );
    one(|v| v["spec"]["containers"][0]["env"][0]["valueFrom"] = serde_json::json!({"configMapKeyRef": {"name": "cfg", "key": ".."}}), "spec.containers[0].env[0].valueFrom.configMapKeyRef.key: Invalid value: \"..\": must not be '..'");
    one(|v| v["spec"]["containers"][0]["envFrom"] = serde_json::json!([{"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}]), "spec.containers[0].envFrom[0]: Forbidden: may not have more than one field specified at a time");
    one(|v| v["spec"]["containers"][0]["envFrom"] = serde_json::json!([{"prefix": "P_"}]), "spec.containers[0].envFrom: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`");
    one(|v| v["spec"]["containers"][0]["envFrom"] = serde_json::json!([{"prefix": "A=", "secretRef": {"name": "s"}}]), "spec.containers[0].envFrom[0].prefix: Invalid value: \"A=\": a valid environment variable name must consist only of printable ASCII characters other than '='");
    one(
        |v| {
            v["spec"]["containers"][0]["envFrom"] = serde_json::json!([{"secretRef": {"name": ""}}])
        },
        "spec.containers[0].envFrom[0].secretRef.name: Required value",
    );
    one(|v| v["spec"]["containers"][0]["resources"]["limits"]["memory"] = "lots".into(), "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'");
    one(|v| v["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "2".into(), "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1");
    one(|v| v["spec"]["containers"][0]["resources"]["requests"]["memory"] = "-1".into(), "spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0");
}

#[test]
fn all_problems_reported_together() {
    let errs = errors(|v| {
        v["spec"]["restartPolicy"] = "x".into();
        v["spec"]["containers"][0]["image"] = "".into();
        v["spec"]["containers"][0]["ports"][0]["containerPort"] = 0.into();
    });
    assert_eq!(errs.len(), 3, "{errs:#?}");
}

#[test]
fn no_privilege_escalation_contradicts_privileged_and_sys_admin() {
    let sc = |v: &mut serde_json::Value, body: serde_json::Value| {
        v["spec"]["containers"][0]["securityContext"] = body;
    };
    one(
        |v| sc(v, serde_json::json!({"allowPrivilegeEscalation": false, "privileged": true})),
        "spec.containers[0].securityContext: Invalid value: {\"allowPrivilegeEscalation\":false,\"privileged\":true}: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
    );
    one(
        |v| {
            v["spec"]["initContainers"][0]["securityContext"] = serde_json::json!({
                "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMIN", "CAP_SYS_ADMIN"]}
            })
        },
        "spec.initContainers[0].securityContext: Invalid value: {\"allowPrivilegeEscalation\":false,\"capabilities\":{\"add\":[\"NET_ADMIN\",\"CAP_SYS_ADMIN\"]}}: cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
    );
    // Either alone is fine, and so is escalation allowed with privileged.
    for ok in [
        serde_json::json!({"allowPrivilegeEscalation": false}),
        serde_json::json!({"privileged": true}),
        serde_json::json!({"allowPrivilegeEscalation": true, "privileged": true}),
        serde_json::json!({"allowPrivilegeEscalation": false, "capabilities": {"add": ["SYS_ADMIN"]}}),
    ] {
        let text = ok.to_string();
        assert_eq!(errors(|v| sc(v, ok)), Vec::<String>::new(), "{text}");
    }
}

/// Every volume type kubenode does not implement is refused by its own name, the cloud and
/// plugin types included (they were "must specify a volume type" once).
#[test]
fn unimplemented_volume_types_are_named() {
    for kind in [
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "csi",
        "ephemeral",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "image",
        "iscsi",
        "persistentVolumeClaim",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "rbd",
        "scaleIO",
        "storageos",
        "vsphereVolume",
    ] {
        let errs =
            errors(|v| v["spec"]["volumes"][0] = serde_json::json!({"name": "data", kind: {}}));
        assert_eq!(
            errs,
            [format!("spec.volumes[0].{kind}: Forbidden: kubenode does not implement {kind} volumes (it mounts emptyDir, hostPath, nfs, configMap, secret, downwardAPI and projected)")],
            "{kind}"
        );
    }
}

/// Pod-level `resources` (requests and limits for the whole pod) is refused, not dropped.
#[test]
fn pod_level_resources_refused() {
    assert_eq!(
        errors(|v| v["spec"]["resources"] = serde_json::json!({"limits": {"cpu": "1"}})),
        ["spec.resources: Forbidden: not supported by kubenode"]
    );
}

/// Fields kubenode does not apply (found by walking every field of `PodSpec`, see
/// `fields.rs`) are refused by name; their defaults pass.
#[test]
fn fields_kubenode_does_not_apply_are_refused() {
    let c = "spec.containers[0]";
    let why_se_linux = super::security::se_linux_refusal(super::security::se_linux_enabled());
    type Case = (fn(&mut serde_json::Value), String);
    let cases: Vec<Case> = vec![
        (|v| v["spec"]["hostnameOverride"] = "other".into(), "spec.hostnameOverride: Forbidden: not supported by kubenode".into()),
        (|v| v["spec"]["os"] = serde_json::json!({"name": "windows"}), "spec.os.name: Unsupported value: \"windows\": supported values: \"linux\"".into()),
        (|v| v["spec"]["resourceClaims"] = serde_json::json!([{"name": "gpu", "resourceClaimName": "gpu"}]), "spec.resourceClaims: Forbidden: not supported by kubenode: it does not implement dynamic resource allocation".into()),
        (|v| v["spec"]["runtimeClassName"] = "kata".into(), "spec.runtimeClassName: Forbidden: not supported by kubenode: every pod runs with the node's one OCI runtime".into()),
        (|v| v["spec"]["schedulingGates"] = serde_json::json!([{"name": "wait"}]), "spec.schedulingGates: Forbidden: a static pod is bound to its node, and a bound pod may not have scheduling gates".into()),
        (|v| v["spec"]["setHostnameAsFQDN"] = true.into(), "spec.setHostnameAsFQDN: Forbidden: not supported by kubenode: the pod's hostname is its short name".into()),
        (|v| v["spec"]["securityContext"] = serde_json::json!({"windowsOptions": {"runAsUserName": "x"}}), "spec.securityContext.windowsOptions: Forbidden: not supported by kubenode: it runs Linux containers only".into()),
        (|v| v["spec"]["securityContext"] = serde_json::json!({"seLinuxChangePolicy": "Recursive"}), format!("spec.securityContext.seLinuxChangePolicy: Forbidden: {why_se_linux}")),
        (|v| v["spec"]["securityContext"] = serde_json::json!({"supplementalGroupsPolicy": "Loose"}), "spec.securityContext.supplementalGroupsPolicy: Unsupported value: \"Loose\": supported values: \"Merge\", \"Strict\"".into()),
        (|v| v["spec"]["ephemeralContainers"] = serde_json::json!([{"name": "debug", "image": "busybox"}]), "spec.ephemeralContainers: Forbidden: static pods may not have ephemeral containers".into()),
        (|v| v["spec"]["containers"][0]["env"][2] = serde_json::json!({"name": "F", "valueFrom": {"fileKeyRef": {"volumeName": "data", "path": "env", "key": "F"}}}), format!("{c}.env[2].valueFrom.fileKeyRef: Forbidden: not supported by kubenode")),
        (|v| v["spec"]["containers"][0]["resources"]["claims"] = serde_json::json!([{"name": "gpu"}]), format!("{c}.resources.claims: Forbidden: not supported by kubenode: it does not implement dynamic resource allocation")),
        (|v| v["spec"]["containers"][0]["restartPolicyRules"] = serde_json::json!([{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]), format!("{c}.restartPolicyRules: Forbidden: not supported by kubenode")),
        (|v| v["spec"]["containers"][0]["volumeDevices"] = serde_json::json!([{"name": "data", "devicePath": "/dev/xvda"}]), format!("{c}.volumeDevices: Forbidden: not supported by kubenode: raw block devices need persistentVolumeClaim volumes")),
        (|v| v["spec"]["containers"][0]["volumeMounts"][0]["subPathExpr"] = "$(POD_NAME)".into(), format!("{c}.volumeMounts[0].subPathExpr: Forbidden: not supported by kubenode")),
        (|v| v["spec"]["containers"][0]["volumeMounts"][1]["recursiveReadOnly"] = "IfPossible".into(), format!("{c}.volumeMounts[1].recursiveReadOnly: Forbidden: not supported by kubenode: it does not make mounts recursively read-only")),
        (|v| v["spec"]["containers"][0]["securityContext"] = serde_json::json!({"windowsOptions": {}}), format!("{c}.securityContext.windowsOptions: Forbidden: not supported by kubenode: it runs Linux containers only")),
        (|v| v["spec"]["containers"][0]["lifecycle"]["postStart"] = serde_json::json!({"tcpSocket": {"port": 80}}), format!("{c}.lifecycle.postStart.tcpSocket: Forbidden: not supported as a lifecycle handler (upstream's kubelet fails such a hook)")),
        (|v| v["spec"]["containers"][0]["lifecycle"]["preStop"] = serde_json::json!({"tcpSocket": {"port": 80}}), format!("{c}.lifecycle.preStop.tcpSocket: Forbidden: not supported as a lifecycle handler (upstream's kubelet fails such a hook)")),
        (|v| v["spec"]["containers"][0]["lifecycle"]["stopSignal"] = "SIGUSR1".into(), format!("{c}.lifecycle.stopSignal: Forbidden: not supported by kubenode: the image's STOPSIGNAL (or SIGTERM) stops the container")),
    ];
    for (patch, want) in cases {
        assert_eq!(errors(patch), [want]);
    }
    // The defaults (and the empty lists) pass, said or not.
    assert_eq!(
        errors(|v| {
            let spec = &mut v["spec"];
            spec["nodeSelector"] = serde_json::json!({});
            spec["imagePullSecrets"] = serde_json::json!([]);
            spec["os"] = serde_json::json!({"name": "linux"});
            spec["setHostnameAsFQDN"] = false.into();
            spec["securityContext"] = serde_json::json!({"supplementalGroupsPolicy": "Strict"});
            let app = &mut spec["containers"][0];
            app["stdin"] = false.into();
            app["stdinOnce"] = false.into();
            app["tty"] = false.into();
            app["volumeMounts"][0]["recursiveReadOnly"] = "Disabled".into();
        }),
        Vec::<String>::new()
    );
    // A container kubectl attaches to (`kubectl run -it`): stdin, stdinOnce and a terminal.
    assert_eq!(
        errors(|v| {
            let app = &mut v["spec"]["containers"][0];
            app["stdin"] = true.into();
            app["stdinOnce"] = true.into();
            app["tty"] = true.into();
        }),
        Vec::<String>::new()
    );
}

/// `securityContext.procMount` as upstream's `ValidateSecurityContext`: `Default` anywhere,
/// `Unmasked` only with `hostUsers: false`, anything else not supported.
#[test]
fn proc_mount_as_upstream() {
    let set = |v: &mut serde_json::Value, which: &str, pm: &str| {
        v["spec"][which][0]["securityContext"] = serde_json::json!({"procMount": pm});
    };
    assert_eq!(
        errors(|v| set(v, "containers", "Default")),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(|v| set(v, "containers", "Unmasked")),
        ["spec.containers[0].securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"]
    );
    assert_eq!(
        errors(|v| {
            v["spec"]["hostUsers"] = true.into();
            set(v, "initContainers", "Unmasked");
        }),
        ["spec.initContainers[0].securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"]
    );
    assert_eq!(
        errors(|v| {
            v["spec"]["hostUsers"] = false.into();
            set(v, "containers", "Unmasked");
            set(v, "initContainers", "Unmasked");
        }),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(|v| set(v, "containers", "unmasked")),
        ["spec.containers[0].securityContext.procMount: Unsupported value: \"unmasked\": supported values: \"Default\", \"Unmasked\""]
    );
}

/// An API pod keeps its ephemeral containers (the API server adds them to running pods, after
/// validating them): they do not fail it, whereas a static pod's are refused; anything else
/// wrong with the API pod is still found.
#[test]
fn api_pods_keep_their_ephemeral_containers() {
    let debugged = pod(
        |v| v["spec"]["ephemeralContainers"] = serde_json::json!([{"name": "debugger-x1", "image": "busybox", "stdin": true, "tty": true, "targetContainerName": "c"}]),
    );
    assert!(super::validate_api_pod(&debugged).is_ok());
    assert!(validate_pod(&debugged).is_err());
    let also_bad = pod(|v| {
        v["spec"]["ephemeralContainers"] = serde_json::json!([{"name": "d", "image": "busybox"}]);
        v["spec"]["runtimeClassName"] = "kata".into();
    });
    let errs = super::validate_api_pod(&also_bad).unwrap_err().to_string();
    assert!(errs.contains("spec.runtimeClassName"), "{errs}");
    assert!(!errs.contains("ephemeralContainers"), "{errs}");
}
