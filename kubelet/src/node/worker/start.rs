//! Starting one container: image pull (policy, back-off, events), create, start.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use kubenode_runtime::image::{Image, PullPolicy};
use kubenode_runtime::spec::{BindMount, SeccompProfile};
use kubenode_runtime::{ContainerConfig, ImageRef, Sandbox};

use super::outcome::{StartOutcome, SyncError};
use super::{termination_log, uid_of, PodWorker, CREATE_RETRY, RESYNC};
use crate::backoff::{image_backoff_key, image_pull_backoff_message};
use crate::events::ObjectRef;
use crate::node::actions::Start;
use crate::node::hooks;
use crate::node::observe::{self, BlockCause, Blocked};
use crate::status::reason;

/// The seccomp profile and the AppArmor profile name of a container, or the waiting reason and
/// message when they cannot be had: the kubelet's own (`CreateContainerConfigError`, a
/// `Localhost` seccomp type without a name) or the runtime's (`CreateContainerError`, an
/// AppArmor profile that is not loaded).
fn confinement(
    pod: &Pod,
    container: &Container,
    config: &crate::config::Config,
) -> Result<(SeccompProfile, Option<String>), (&'static str, String)> {
    let spec = pod.spec.as_ref();
    let seccomp = crate::security::seccomp_profile(
        spec.and_then(|s| s.security_context.as_ref()),
        container,
        &config.root_dir,
        config.seccomp_default,
    )
    .map_err(|m| (reason::CREATE_CONTAINER_CONFIG_ERROR, m))?;
    let privileged = container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        == Some(true);
    let profile = crate::security::apparmor::container_profile(pod, container);
    let apparmor = crate::security::apparmor::profile_name(
        profile.as_ref(),
        privileged,
        &crate::security::SystemAppArmor,
    )
    .map_err(|m| (reason::CREATE_CONTAINER_ERROR, m))?;
    Ok((seccomp, apparmor))
}

impl PodWorker {
    /// Pulls, creates and starts one container. Returns a shorter requeue when it is held, or
    /// the sandbox error when the sandbox, awaited before the start, did not come up (the
    /// sandbox and the container are then gone).
    pub(super) async fn start_container(
        &mut self,
        pod: &Pod,
        sandbox: &Sandbox,
        start: &Start,
    ) -> Result<StartOutcome, SyncError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let Some(container) = crate::pod_containers(&spec)
            .find(|c| c.name == start.name)
            .cloned()
        else {
            return Ok(StartOutcome::Done);
        };
        let obj = ObjectRef::container(pod, &container.name);
        let image_name = container.image.clone().unwrap_or_default();
        let image = match self.pull(pod, &container).await {
            Ok(i) => i,
            Err(wait) => return Ok(StartOutcome::Wait(wait)),
        };
        self.state
            .image_ids
            .insert(image_name.clone(), image.manifest_digest.clone());

        let pods_dir = self.deps.pods_dir().join(uid_of(pod));
        let term_log = termination_log(&pods_dir, &container.name, start.restart_count);
        if let Err(e) = term_log
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|()| std::fs::write(&term_log, b""))
            // Any user the container runs as may write its message (upstream makes it 0666 too).
            .and_then(|()| {
                std::fs::set_permissions(
                    &term_log,
                    std::os::unix::fs::PermissionsExt::from_mode(0o666),
                )
            })
        {
            tracing::warn!(error = %e, "creating the termination log");
        }
        let mut mounts = vec![
            BindMount {
                container_path: "/etc/hosts".into(),
                host_path: pods_dir.join("etc-hosts"),
                readonly: false,
                propagation: Default::default(),
            },
            BindMount {
                container_path: "/etc/resolv.conf".into(),
                host_path: pods_dir.join("resolv.conf"),
                readonly: false,
                propagation: Default::default(),
            },
            BindMount {
                container_path: "/etc/hostname".into(),
                host_path: pods_dir.join("hostname"),
                readonly: false,
                propagation: Default::default(),
            },
        ];
        let term_path = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        mounts.push(BindMount {
            container_path: term_path,
            host_path: term_log,
            readonly: false,
            propagation: Default::default(),
        });
        // The environment's ConfigMaps and Secrets (upstream resolves them before the mounts).
        let objects_env =
            match crate::node::env::resolve(&*self.deps.objects, pod, &container).await {
                Ok(e) => e,
                Err(message) => {
                    return Ok(self.create_failed(
                        &obj,
                        &container.name,
                        reason::CREATE_CONTAINER_CONFIG_ERROR,
                        message,
                        BlockCause::Other,
                    ));
                }
            };
        match self.deps.container_mounts(pod, &container).await {
            Ok(volume_mounts) => mounts.extend(volume_mounts),
            Err(error) => {
                let cause = match error {
                    crate::volume::VolumeError::SetUp { .. } => BlockCause::VolumeSetUp,
                    _ => BlockCause::Other,
                };
                return Ok(self.create_failed(
                    &obj,
                    &container.name,
                    reason::CREATE_CONTAINER_CONFIG_ERROR,
                    error.to_string(),
                    cause,
                ));
            }
        }
        let joins_pause_pid =
            super::sandbox::pod_namespaces(pod).pid == kubenode_runtime::spec::NamespaceMode::Pod;
        if observe::needs_pod_ip(&container) || joins_pause_pid {
            // The environment names the pod IP: the network has to be up before the create. Or
            // the container joins pause's PID namespace (shareProcessNamespace), which exists
            // once pause runs.
            self.finish_sandbox(pod).await?;
        }
        let (seccomp, apparmor) = match confinement(pod, &container, &self.deps.config) {
            Ok(c) => c,
            Err((reason, message)) => {
                return Ok(self.create_failed(
                    &obj,
                    &container.name,
                    reason,
                    message,
                    BlockCause::Other,
                ));
            }
        };
        let pod_ip = self.state.record.pod_ips.first().map(ToString::to_string);
        let config = ContainerConfig {
            resolved_env: {
                let mut env = observe::field_ref_env(
                    pod,
                    &container,
                    pod_ip.as_deref(),
                    &self.deps.config.node_ip.to_string(),
                    crate::node::downward::host_capacity(&self.deps.config),
                );
                env.extend(objects_env.values);
                env
            },
            container: container.clone(),
            pod_security: spec.security_context.clone(),
            image: ImageRef {
                name: image_name,
                layers: image.layers.clone(),
                config: Some(image.config.clone()),
            },
            restart_count: start.restart_count,
            mounts,
            service_env: crate::node::env::before_env(
                self.deps.service_env(pod),
                objects_env.env_from,
            ),
            oom_score_adj: Some(container_oom_score_adj(pod, &container, node_memory())),
            seccomp,
            apparmor,
        };
        let created = self
            .deps
            .runtime
            .create_container(&sandbox.id, config)
            .await;
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                return Ok(self.create_failed(
                    &obj,
                    &container.name,
                    reason::CREATE_CONTAINER_ERROR,
                    e.to_string(),
                    BlockCause::Other,
                ));
            }
        };
        self.deps.events.normal(
            &obj,
            "Created",
            format!("Created container: {}", container.name),
        );
        // A new sandbox may still be coming up: containers run only in a sandbox with its
        // network and pause container up.
        self.finish_sandbox(pod).await?;
        match self.deps.runtime.start_container(&id).await {
            Ok(()) => {
                self.state.blocked.remove(&container.name);
                self.deps.events.normal(
                    &obj,
                    "Started",
                    format!("Started container {}", container.name),
                );
                let post_start = container
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.post_start.as_ref());
                if let Some(hook) = post_start {
                    self.post_start(pod, &sandbox.id, &container, &id, hook)
                        .await;
                }
                Ok(StartOutcome::Done)
            }
            Err(e) => {
                // The runtime records the instance as exited (StartError, 128): the back-off and
                // the status take it from there.
                self.state.blocked.remove(&container.name);
                self.deps
                    .events
                    .warning(&obj, "Failed", format!("Error: {e}"));
                Ok(StartOutcome::Done)
            }
        }
    }

    /// Runs the `postStart` hook of the instance `id` just started, as upstream's
    /// `startContainer`: the pass waits for it (the status keeps showing the container as
    /// being created meanwhile, and the pod's next containers wait), with no time limit but
    /// the pod's deletion. A hook that fails gives a `FailedPostStartHook` event (without
    /// detail, as upstream), the container is killed as any kill (`Killing` with message
    /// `FailedPostStartHook`, its preStop hook, the pod's grace period) and waits with reason
    /// `PostStartHookError` and the hook's message until its restart policy restarts it.
    async fn post_start(
        &mut self,
        pod: &Pod,
        sandbox_id: &str,
        container: &Container,
        id: &str,
        hook: &LifecycleHandler,
    ) {
        let pod_ip = self.pod_ip(pod);
        let target = hooks::Target {
            pod,
            container,
            container_id: id,
            pod_ip: &pod_ip,
        };
        let ran = tokio::select! {
            ran = hooks::run(&self.deps.runtime, &self.deps.events, target, hook, hooks::NO_TIMEOUT) => ran,
            () = super::termination_requested(self.desired.clone()) => {
                // The pod is being deleted: its termination stops the container.
                return;
            }
        };
        let Err(message) = ran else { return };
        tracing::warn!(container = %container.name, "{message}");
        let obj = ObjectRef::container(pod, &container.name);
        self.deps
            .events
            .warning(&obj, "FailedPostStartHook", "PostStartHook failed");
        self.deps
            .events
            .normal(&obj, "Killing", "FailedPostStartHook");
        let instance = self
            .deps
            .runtime
            .list_containers(Some(sandbox_id))
            .await
            .into_iter()
            .find(|s| s.id == id);
        if let Some(instance) = instance {
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64;
            self.deps
                .clone()
                .stop_one(
                    pod.clone(),
                    pod_ip,
                    instance,
                    Some(container.clone()),
                    Duration::from_secs(grace),
                )
                .await;
        }
        self.state.blocked.insert(
            container.name.clone(),
            Blocked {
                reason: reason::POST_START_HOOK_ERROR.into(),
                message,
                retry_at: None,
                cause: BlockCause::Other,
            },
        );
    }

    /// A container that could not be created: a `Failed` event, and the container waits with
    /// `reason` for [`CREATE_RETRY`].
    fn create_failed(
        &mut self,
        obj: &ObjectRef,
        name: &str,
        reason: &str,
        message: String,
        cause: BlockCause,
    ) -> StartOutcome {
        self.deps
            .events
            .warning(obj, "Failed", format!("Error: {message}"));
        self.state.blocked.insert(
            name.to_string(),
            Blocked {
                reason: reason.into(),
                message,
                retry_at: Some(Instant::now() + CREATE_RETRY),
                cause,
            },
        );
        StartOutcome::Wait(CREATE_RETRY)
    }

    /// Ensures the container's image per its pull policy, with pull back-off and events.
    pub(super) async fn pull(
        &mut self,
        pod: &Pod,
        container: &Container,
    ) -> Result<Image, Duration> {
        let obj = ObjectRef::container(pod, &container.name);
        let image = container.image.clone().unwrap_or_default();
        let key = image_backoff_key(&uid_of(pod), &image);
        if let Some(wait) = self.deps.image_backoff().wait(&key) {
            let message = image_pull_backoff_message(&image);
            self.deps.events.normal(&obj, "BackOff", message.clone());
            self.state.blocked.insert(
                container.name.clone(),
                Blocked {
                    reason: reason::IMAGE_PULL_BACK_OFF.into(),
                    message,
                    retry_at: None,
                    cause: BlockCause::Other,
                },
            );
            return Err(wait.max(Duration::from_millis(100)));
        }
        let policy = match PullPolicy::resolve(container.image_pull_policy.as_deref(), &image) {
            Some(p) => p,
            None => {
                let message = format!("unknown imagePullPolicy {:?}", container.image_pull_policy);
                self.state.blocked.insert(
                    container.name.clone(),
                    Blocked {
                        reason: reason::CREATE_CONTAINER_CONFIG_ERROR.into(),
                        message,
                        retry_at: Some(Instant::now() + CREATE_RETRY),
                        cause: BlockCause::Other,
                    },
                );
                return Err(CREATE_RETRY);
            }
        };
        let present = matches!(self.deps.images.get(&image), Ok(Some(_)));
        if policy == PullPolicy::Always || !present {
            self.deps
                .events
                .normal(&obj, "Pulling", format!("Pulling image \"{image}\""));
        }
        let started = Instant::now();
        // The pod's pull secrets first, then the node's own credentials.
        let mut options = self.deps.pull.clone();
        let pulled =
            match super::pull_secrets::keyring(&self.deps.objects, &self.deps.events, pod).await {
                Ok(keyring) => {
                    if !keyring.is_empty() {
                        options.keyrings.insert(0, keyring);
                    }
                    self.deps.images.ensure(&image, policy, &options).await
                }
                Err(reason) => Err(kubenode_runtime::image::ImageError::PullCredentials {
                    reference: image.clone(),
                    reason,
                }),
            };
        match pulled {
            Ok(img) => {
                self.deps.image_backoff().forget(&key);
                if policy == PullPolicy::Always || !present {
                    let took = started.elapsed().as_secs_f64();
                    self.deps.events.normal(
                    &obj,
                    "Pulled",
                    format!("Successfully pulled image \"{image}\" in {took:.3}s. Image size: {} bytes.", img.size),
                );
                } else {
                    self.deps.events.normal(
                        &obj,
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                    );
                }
                Ok(img)
            }
            Err(e) => {
                let reason = e.kubelet_reason().to_string();
                let message = e.to_string();
                self.deps.events.warning(
                    &obj,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {message}"),
                );
                self.deps
                    .events
                    .warning(&obj, "Failed", format!("Error: {reason}"));
                self.deps.image_backoff().failed(&key);
                self.state.blocked.insert(
                    container.name.clone(),
                    Blocked {
                        reason,
                        message,
                        retry_at: None,
                        cause: BlockCause::Other,
                    },
                );
                Err(RESYNC)
            }
        }
    }
}

/// `oom_score_adj` of Guaranteed containers and of node-critical pods (upstream
/// `guaranteedOOMScoreAdj`).
pub(crate) const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
/// `oom_score_adj` of BestEffort containers (upstream `besteffortOOMScoreAdj`).
pub(crate) const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;
/// The priority from which a pod is critical (upstream `scheduling.SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// The priority class of node-critical pods.
const SYSTEM_NODE_CRITICAL: &str = "system-node-critical";

/// The node's memory capacity for the Burstable formula (`MemTotal`, as cAdvisor's
/// `MemoryCapacity`), read once.
fn node_memory() -> u64 {
    static MEMORY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(crate::volume::node_memory)
}

fn memory_request(c: &Container) -> i64 {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("memory"))
        .and_then(|q| crate::validation::quantity::Quantity::parse(&q.0).ok())
        .map_or(0, |q| q.value())
}

/// The `oom_score_adj` of a container, as upstream's `GetContainerOOMScoreAdjust`
/// (pkg/kubelet/qos/policy.go): node-critical pods and Guaranteed pods -997, BestEffort 1000,
/// Burstable `1000 - 1000 * memoryRequest / memoryCapacity` kept within 3..=999 (above any
/// Guaranteed container using all the memory, below BestEffort). A sidecar (an init container
/// with `restartPolicy: Always`) gets at most the score of the regular container with the
/// smallest memory request, so it is not killed before the containers it serves. The runtime
/// clamps the value into what the host accepts.
pub(crate) fn container_oom_score_adj(
    pod: &Pod,
    container: &Container,
    memory_capacity: u64,
) -> i32 {
    let spec = pod.spec.clone().unwrap_or_default();
    if is_node_critical(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match crate::status::qos_class(&spec) {
        crate::status::QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        crate::status::QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        crate::status::QosClass::Burstable => {}
    }
    let capacity = i128::from(memory_capacity.max(1));
    let score = |request: i64| 1000 - (1000 * i128::from(request)) / capacity;
    let mut adj = score(memory_request(container));
    let sidecar = crate::status::is_restartable_init(container)
        && spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == container.name);
    if sidecar {
        if let Some(min) = spec.containers.iter().map(memory_request).min() {
            adj = adj.min(score(min));
        }
    }
    let floor = i128::from(1000 + GUARANTEED_OOM_SCORE_ADJ);
    if adj < floor {
        return floor as i32;
    }
    if adj == i128::from(BEST_EFFORT_OOM_SCORE_ADJ) {
        return BEST_EFFORT_OOM_SCORE_ADJ - 1;
    }
    adj as i32
}

/// Upstream `IsNodeCriticalPod`: a critical pod (static, mirror, or priority at least
/// `SystemCriticalPriority`) whose priority class is `system-node-critical`.
fn is_node_critical(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.priority_class_name.as_deref()) != Some(SYSTEM_NODE_CRITICAL) {
        return false;
    }
    let annotations = pod.metadata.annotations.as_ref();
    let is_static = annotations
        .and_then(|a| a.get(crate::source::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s != "api");
    let is_mirror = annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let priority = spec.and_then(|s| s.priority).unwrap_or(0);
    is_static || is_mirror || priority >= SYSTEM_CRITICAL_PRIORITY
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    const GI: u64 = 1 << 30;

    fn container(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |l: &[(&str, &str)]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        Container {
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..testing::container(name)
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        let pod = testing::pod().containers(containers);
        if init.is_empty() {
            pod.build()
        } else {
            pod.init_containers(init).build()
        }
    }

    fn adj(p: &Pod, name: &str, capacity: u64) -> i32 {
        let spec = p.spec.as_ref().unwrap();
        let c = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .unwrap();
        container_oom_score_adj(p, c, capacity)
    }

    #[test]
    fn qos_classes_and_the_burstable_formula() {
        let be = pod(vec![container("a", &[], &[])], vec![]);
        assert_eq!(adj(&be, "a", 4 * GI), 1000);
        let gu = pod(
            vec![container(
                "a",
                &[("cpu", "1"), ("memory", "1Gi")],
                &[("cpu", "1"), ("memory", "1Gi")],
            )],
            vec![],
        );
        assert_eq!(adj(&gu, "a", 4 * GI), -997);
        // 10 % of the node's memory requested: 900.
        let bu = |req: &str| pod(vec![container("a", &[("memory", req)], &[])], vec![]);
        assert_eq!(adj(&bu("400Mi"), "a", 4000 << 20), 900);
        // 1000 - 1000*100Mi/4Gi = 1000 - 24.4 -> 976 (integer division as upstream).
        assert_eq!(adj(&bu("100Mi"), "a", 4 * GI), 976);
        // All the memory or more: the floor 3, above Guaranteed.
        assert_eq!(adj(&bu("4Gi"), "a", 4 * GI), 3);
        assert_eq!(adj(&bu("64Gi"), "a", 4 * GI), 3);
        // A tiny request rounds to 1000: 999, below BestEffort.
        assert_eq!(adj(&bu("1Ki"), "a", 4 * GI), 999);
        // Burstable by cpu only: no memory request, 999.
        let cpu_only = pod(vec![container("a", &[("cpu", "100m")], &[])], vec![]);
        assert_eq!(adj(&cpu_only, "a", 4 * GI), 999);
        // Each container of a Burstable pod by its own request.
        let two = pod(
            vec![
                container("big", &[("memory", "2Gi")], &[]),
                container("none", &[], &[]),
            ],
            vec![],
        );
        assert_eq!(adj(&two, "big", 4 * GI), 500);
        assert_eq!(adj(&two, "none", 4 * GI), 999);
    }

    #[test]
    fn sidecars_score_no_higher_than_the_smallest_regular_container() {
        let mut side = container("side", &[], &[]);
        side.restart_policy = Some("Always".into());
        let plain_init = container("init", &[], &[]);
        let p = pod(
            vec![
                container("a", &[("memory", "1Gi")], &[]),
                container("b", &[("memory", "2Gi")], &[]),
            ],
            vec![side, plain_init],
        );
        assert_eq!(adj(&p, "a", 4 * GI), 750);
        assert_eq!(
            adj(&p, "side", 4 * GI),
            750,
            "sidecar takes the smallest request's score"
        );
        assert_eq!(
            adj(&p, "init", 4 * GI),
            999,
            "an ordinary init container does not"
        );
    }

    #[test]
    fn node_critical_pods_score_as_guaranteed() {
        let mut p = pod(vec![container("a", &[], &[])], vec![]);
        p.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
        // Not static, no priority: not critical.
        assert_eq!(adj(&p, "a", 4 * GI), 1000);
        p.metadata.annotations = Some(
            [(
                crate::source::CONFIG_SOURCE_ANNOTATION.to_string(),
                "file".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            adj(&p, "a", 4 * GI),
            -997,
            "a static system-node-critical pod"
        );
        p.metadata.annotations = None;
        p.spec.as_mut().unwrap().priority = Some(2_000_001_000);
        assert_eq!(adj(&p, "a", 4 * GI), -997, "system-node-critical priority");
        p.spec.as_mut().unwrap().priority_class_name = Some("system-cluster-critical".into());
        assert_eq!(adj(&p, "a", 4 * GI), 1000, "only node-critical counts");
    }
}
