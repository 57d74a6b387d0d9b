//! One pod worker per pod: a loop that reconciles the pod until it is told to terminate it.
//!
//! Each pass (`sync`) ensures the sandbox (netns, CNI ADD, pause), the pod's managed files, then
//! asks [`super::actions::compute`] what to start, starts it (pull, create, start, with events),
//! and publishes the status. The pass returns when to come back (`Requeue`), it never sleeps
//! inside. Termination stops containers within the grace period (preStop first), then removes
//! containers, the CNI attachment, the sandbox and the pod's directories, collecting errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubenode_cni::Attachment;
use kubenode_runtime::image::{Image, PullPolicy};
use kubenode_runtime::spec::{BindMount, PodInfo};
use kubenode_runtime::{
    ContainerConfig, ContainerState, ContainerStatus, ImageRef, Sandbox, SandboxConfig,
    SandboxOptions, SandboxState,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::actions::{self, Start};
use super::files;
use super::observe::{self, Blocked};
use super::Kubelet;
use crate::backoff::{
    container_backoff_key, crash_loop_message, image_backoff_key, image_pull_backoff_message,
};
use crate::events::ObjectRef;
use crate::status::{generate_pod_status, is_terminal, reason, ObservedPod};

/// How often a running pod is re-synced (container exits are noticed within this).
const RESYNC: Duration = Duration::from_secs(1);
/// Wait before retrying a sandbox that failed to come up.
const SANDBOX_RETRY: Duration = Duration::from_secs(5);
/// Wait before creating a container again after a create error (a config or runtime error
/// does not fix itself each second).
const CREATE_RETRY: Duration = Duration::from_secs(10);
/// Grace left to a container after its preStop hook overran (upstream's minimum).
const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);
/// The CNI interface name inside pods.
const POD_IFNAME: &str = "eth0";

/// What the worker remembers across passes; `sandbox.json` keeps the part that must survive an
/// agent restart.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PodRecord {
    sandbox_id: Option<String>,
    pod_ips: Vec<String>,
    start_time: Option<String>,
}

struct WorkerState {
    record: PodRecord,
    blocked: HashMap<String, Blocked>,
    image_ids: HashMap<String, String>,
    status: Option<PodStatus>,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn pod_info(pod: &Pod) -> PodInfo {
    PodInfo {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: uid_of(pod),
        hostname: files::hostname(pod),
    }
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn cgroup_parent(pod: &Pod) -> String {
    let qos = pod
        .spec
        .as_ref()
        .map(crate::status::qos_class)
        .map(|q| q.as_str())
        .unwrap_or("BestEffort");
    let uid = uid_of(pod);
    match qos {
        "Guaranteed" => format!("/kubepods/pod{uid}"),
        "Burstable" => format!("/kubepods/burstable/pod{uid}"),
        _ => format!("/kubepods/besteffort/pod{uid}"),
    }
}

/// The worker task of the pod `uid`.
pub(super) async fn run(k: Arc<Kubelet>, uid: String, mut rx: watch::Receiver<Option<Pod>>) {
    let record_path = k.pods_dir().join(&uid).join("sandbox.json");
    let record: PodRecord = std::fs::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut state = WorkerState {
        record,
        blocked: HashMap::new(),
        image_ids: HashMap::new(),
        status: None,
    };
    loop {
        let desired = rx.borrow_and_update().clone();
        let Some(pod) = desired else {
            break;
        };
        let span = tracing::info_span!("pod", pod = %format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or("")), uid = %uid);
        let requeue = {
            let _g = span.enter();
            drop(_g);
            sync(&k, &pod, &mut state).await
        };
        tokio::select! {
            _ = tokio::time::sleep(requeue) => {}
            changed = rx.changed() => if changed.is_err() { break },
        }
    }
    let pod = k
        .pods
        .lock()
        .expect("pods lock")
        .get(&uid)
        .map(|e| e.pod.clone());
    if let Some(mut pod) = pod {
        pod.metadata.deletion_timestamp = Some(Time(k.parts.clock.now()));
        k.set_pod(&uid, pod.clone(), state.record.sandbox_id.clone());
        terminate(&k, &pod, &mut state).await;
    }
    k.forget(&uid);
}

fn save_record(k: &Kubelet, uid: &str, record: &PodRecord) {
    let dir = k.pods_dir().join(uid);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("sandbox.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(record)?)?;
        std::fs::rename(tmp, dir.join("sandbox.json"))
    };
    if let Err(e) = write() {
        tracing::warn!(pod_uid = uid, error = %e, "saving the pod record");
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

/// One reconcile pass. Returns when to run the next one.
async fn sync(k: &Arc<Kubelet>, pod: &Pod, state: &mut WorkerState) -> Duration {
    let uid = uid_of(pod);
    let sandbox = match ensure_sandbox(k, pod, state).await {
        Ok(s) => s,
        Err(message) => {
            k.events.warning(
                &ObjectRef::pod(pod),
                "FailedCreatePodSandBox",
                message.clone(),
            );
            publish(k, pod, state, false, &[]);
            return SANDBOX_RETRY;
        }
    };
    let runtime = k.parts.runtime.clone();
    let sid = sandbox.id.clone();
    let instances = blocking(move || runtime.list_containers(Some(&sid))).await;
    let terminal = state
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(is_terminal);
    let spec = pod.spec.clone().unwrap_or_default();
    let info = pod_info(pod);
    let mut requeue = RESYNC;
    let decided = {
        let mut crash = k.crash.lock().expect("crash lock");
        actions::compute(&spec, &instances, terminal, |name, finished| {
            crash.decide(
                &container_backoff_key(&info.namespace, &info.name, &uid, name),
                finished,
            )
        })
    };
    for id in &decided.prune {
        let runtime = k.parts.runtime.clone();
        let id = id.clone();
        if let Err(e) = blocking(move || runtime.remove_container(&id)).await {
            tracing::warn!(error = %e, "removing an old container instance");
        }
    }
    for w in &decided.backing_off {
        let message = crash_loop_message(w.delay, &w.name, &info.name, &info.namespace, &uid);
        if state
            .blocked
            .get(&w.name)
            .is_none_or(|b| b.reason != reason::CRASH_LOOP_BACK_OFF)
        {
            k.events.warning(
                &ObjectRef::container(pod, &w.name),
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}_{}({uid})",
                    w.name, info.name, info.namespace
                ),
            );
        }
        state.blocked.insert(
            w.name.clone(),
            Blocked {
                reason: reason::CRASH_LOOP_BACK_OFF.into(),
                message,
                retry_at: None,
            },
        );
        requeue = requeue.min(w.remaining.max(Duration::from_millis(100)));
    }
    let now = Instant::now();
    for start in &decided.start {
        if let Some(at) = state
            .blocked
            .get(&start.name)
            .and_then(|b| b.retry_at)
            .filter(|at| *at > now)
        {
            requeue = requeue.min(at - now);
            continue;
        }
        if let Some(wait) = start_container(k, pod, &sandbox, state, start).await {
            requeue = requeue.min(wait);
        }
    }
    let runtime = k.parts.runtime.clone();
    let sid = sandbox.id.clone();
    let instances = blocking(move || runtime.list_containers(Some(&sid))).await;
    publish(
        k,
        pod,
        state,
        sandbox.state == SandboxState::Ready,
        &instances,
    );
    requeue
}

/// Builds and publishes the pod's status from the instances.
fn publish(
    k: &Kubelet,
    pod: &Pod,
    state: &mut WorkerState,
    sandbox_ready: bool,
    instances: &[ContainerStatus],
) {
    let spec = pod.spec.clone().unwrap_or_default();
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let pods_dir = k.pods_dir().join(uid_of(pod));
    let containers = observe::observe(&all, instances, &state.blocked, &state.image_ids, |s| {
        termination_message(&pods_dir, s)
    });
    let node_ip = k.config.node_ip.to_string();
    let pod_ips = if host_network(pod) {
        vec![node_ip.clone()]
    } else {
        state.record.pod_ips.clone()
    };
    let observed = ObservedPod {
        sandbox_ready,
        pod_ips,
        host_ips: vec![node_ip],
        start_time: state
            .record
            .start_time
            .as_deref()
            .and_then(|t| t.parse().ok()),
        containers,
        terminal: pod.metadata.deletion_timestamp.is_some(),
    };
    let status = generate_pod_status(pod, &observed, state.status.as_ref(), k.parts.clock.now());
    state.status = Some(status.clone());
    let mut pod = pod.clone();
    pod.status = Some(status);
    k.set_pod(&uid_of(&pod), pod, state.record.sandbox_id.clone());
}

/// The file a container's `terminationMessagePath` is bound to.
fn termination_log(pods_dir: &std::path::Path, name: &str, restart: u32) -> PathBuf {
    pods_dir
        .join("containers")
        .join(name)
        .join(format!("{restart}-termination-log"))
}

fn termination_message(pods_dir: &std::path::Path, s: &ContainerStatus) -> Option<String> {
    let data = std::fs::read(termination_log(pods_dir, &s.name, s.restart_count)).ok()?;
    let data = &data[..data.len().min(4096)];
    let text = String::from_utf8_lossy(data).into_owned();
    (!text.is_empty()).then_some(text)
}

/// Finds (after a restart), or creates, the pod's ready sandbox.
async fn ensure_sandbox(
    k: &Arc<Kubelet>,
    pod: &Pod,
    state: &mut WorkerState,
) -> Result<Sandbox, String> {
    let uid = uid_of(pod);
    let runtime = k.parts.runtime.clone();
    let known = state.record.sandbox_id.clone();
    let wanted = uid.clone();
    // The recorded sandbox is checked alone; the whole list only when there is no record
    // (a new pod, or one whose record was lost).
    let existing = blocking(move || match known.map(|id| runtime.sandbox(&id)) {
        Some(Ok(s)) => Some(s),
        _ => runtime
            .list_sandboxes()
            .into_iter()
            .find(|s| s.pod.uid == wanted),
    })
    .await;
    match existing {
        Some(s) if s.state == SandboxState::Ready => {
            if state.record.sandbox_id.as_deref() != Some(&s.id) {
                state.record.sandbox_id = Some(s.id.clone());
                save_record(k, &uid, &state.record);
            }
            return Ok(s);
        }
        Some(s) => {
            tracing::warn!(sandbox = %s.id, "the pod's sandbox is not running; recreating it and its containers");
            teardown_sandbox(k, pod, &s.id, Duration::from_secs(2)).await;
            state.record = PodRecord {
                start_time: state.record.start_time.take(),
                ..Default::default()
            };
        }
        None => {}
    }
    if state.record.start_time.is_none() {
        state.record.start_time = Some(k.parts.clock.now().to_string());
    }
    let config = SandboxConfig {
        pod: pod_info(pod),
        cgroup_parent: cgroup_parent(pod),
    };
    let runtime = k.parts.runtime.clone();
    let options = SandboxOptions {
        host_network: host_network(pod),
        sysctls: pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|c| c.sysctls.as_ref())
            .map(|l| {
                l.iter()
                    .map(|s| (s.name.clone(), s.value.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let sandbox = blocking(move || runtime.create_sandbox_with(&config, &options))
        .await
        .map_err(|e| format!("Failed to create pod sandbox: {e}"))?;
    let mut pod_ips = Vec::new();
    if !host_network(pod) {
        match k.parts.cni.add(&attachment(pod, &sandbox)).await {
            Ok(result) => pod_ips = result.pod_ips().iter().map(|ip| ip.to_string()).collect(),
            Err(e) => {
                teardown_sandbox(k, pod, &sandbox.id, Duration::ZERO).await;
                return Err(format!(
                    "Failed to create pod sandbox: setting up the pod network: {e}"
                ));
            }
        }
    }
    let runtime = k.parts.runtime.clone();
    let id = sandbox.id.clone();
    let started = blocking(move || runtime.start_sandbox(&id)).await;
    let sandbox = match started {
        Ok(s) => s,
        Err(e) => {
            teardown_sandbox(k, pod, &sandbox.id, Duration::ZERO).await;
            return Err(format!(
                "Failed to create pod sandbox: starting the pause container: {e}"
            ));
        }
    };
    state.record.sandbox_id = Some(sandbox.id.clone());
    state.record.pod_ips = pod_ips;
    save_record(k, &uid_of(pod), &state.record);
    write_pod_files(k, pod, &state.record)
        .map_err(|e| format!("writing the pod's /etc files: {e}"))?;
    Ok(sandbox)
}

fn attachment(pod: &Pod, sandbox: &Sandbox) -> Attachment {
    let info = pod_info(pod);
    Attachment {
        container_id: sandbox.id.clone(),
        netns_path: sandbox.netns_path.clone(),
        ifname: POD_IFNAME.into(),
        pod_namespace: info.namespace,
        pod_name: info.name,
        pod_uid: info.uid,
        capability_args: Default::default(),
    }
}

fn write_pod_files(k: &Kubelet, pod: &Pod, record: &PodRecord) -> std::io::Result<()> {
    let dir = k.pods_dir().join(uid_of(pod));
    std::fs::create_dir_all(&dir)?;
    let dns: Vec<String> = k
        .config
        .cluster_dns
        .iter()
        .map(|ip| ip.to_string())
        .collect();
    let ips = if host_network(pod) {
        vec![k.config.node_ip.to_string()]
    } else {
        record.pod_ips.clone()
    };
    std::fs::write(
        dir.join("etc-hosts"),
        files::hosts_file(pod, &ips, &k.config.cluster_domain),
    )?;
    std::fs::write(
        dir.join("resolv.conf"),
        files::resolv_conf(pod, &dns, &k.config.cluster_domain, &k.host_resolv),
    )?;
    std::fs::write(dir.join("hostname"), format!("{}\n", files::hostname(pod)))
}

/// Pulls, creates and starts one container. Returns a shorter requeue when blocked.
async fn start_container(
    k: &Arc<Kubelet>,
    pod: &Pod,
    sandbox: &Sandbox,
    state: &mut WorkerState,
    start: &Start,
) -> Option<Duration> {
    let spec = pod.spec.clone().unwrap_or_default();
    let container = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == start.name)?
        .clone();
    let obj = ObjectRef::container(pod, &container.name);
    let image_name = container.image.clone().unwrap_or_default();
    let image = match pull(k, pod, &container, state).await {
        Ok(i) => i,
        Err(wait) => return Some(wait),
    };
    state
        .image_ids
        .insert(image_name.clone(), image.manifest_digest.clone());

    let pods_dir = k.pods_dir().join(uid_of(pod));
    let term_log = termination_log(&pods_dir, &container.name, start.restart_count);
    if let Err(e) = term_log
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|()| std::fs::write(&term_log, b""))
    {
        tracing::warn!(error = %e, "creating the termination log");
    }
    let mut mounts = vec![
        BindMount {
            container_path: "/etc/hosts".into(),
            host_path: pods_dir.join("etc-hosts"),
            readonly: false,
        },
        BindMount {
            container_path: "/etc/resolv.conf".into(),
            host_path: pods_dir.join("resolv.conf"),
            readonly: false,
        },
        BindMount {
            container_path: "/etc/hostname".into(),
            host_path: pods_dir.join("hostname"),
            readonly: false,
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
    });
    let pod_ip = state.record.pod_ips.first().cloned();
    let config = ContainerConfig {
        resolved_env: observe::field_ref_env(
            pod,
            &container,
            pod_ip.as_deref(),
            &k.config.node_ip.to_string(),
        ),
        container: container.clone(),
        pod_security: spec.security_context.clone(),
        image: ImageRef {
            name: image_name,
            layers: image.layers.clone(),
            config: Some(image.config.clone()),
        },
        restart_count: start.restart_count,
        mounts,
        service_env: k.service_env(pod),
        oom_score_adj: None,
    };
    let runtime = k.parts.runtime.clone();
    let sid = sandbox.id.clone();
    let created = blocking(move || runtime.create_container(&sid, &config)).await;
    let id = match created {
        Ok(id) => id,
        Err(e) => {
            let message = e.to_string();
            k.events
                .warning(&obj, "Failed", format!("Error: {message}"));
            state.blocked.insert(
                container.name.clone(),
                Blocked {
                    reason: reason::CREATE_CONTAINER_ERROR.into(),
                    message,
                    retry_at: Some(Instant::now() + CREATE_RETRY),
                },
            );
            return Some(CREATE_RETRY);
        }
    };
    k.events.normal(
        &obj,
        "Created",
        format!("Created container: {}", container.name),
    );
    let runtime = k.parts.runtime.clone();
    let started = {
        let id = id.clone();
        blocking(move || runtime.start_container(&id)).await
    };
    match started {
        Ok(()) => {
            state.blocked.remove(&container.name);
            k.events.normal(
                &obj,
                "Started",
                format!("Started container {}", container.name),
            );
            None
        }
        Err(e) => {
            // The runtime records the instance as exited (StartError, 128): the back-off and
            // the status take it from there.
            state.blocked.remove(&container.name);
            k.events.warning(&obj, "Failed", format!("Error: {e}"));
            None
        }
    }
}

/// Ensures the container's image per its pull policy, with pull back-off and events.
async fn pull(
    k: &Arc<Kubelet>,
    pod: &Pod,
    container: &Container,
    state: &mut WorkerState,
) -> Result<Image, Duration> {
    let obj = ObjectRef::container(pod, &container.name);
    let image = container.image.clone().unwrap_or_default();
    let key = image_backoff_key(&uid_of(pod), &image);
    if let Some(wait) = k
        .image_backoff
        .lock()
        .expect("image backoff lock")
        .wait(&key)
    {
        let message = image_pull_backoff_message(&image);
        k.events.normal(&obj, "BackOff", message.clone());
        state.blocked.insert(
            container.name.clone(),
            Blocked {
                reason: reason::IMAGE_PULL_BACK_OFF.into(),
                message,
                retry_at: None,
            },
        );
        return Err(wait.max(Duration::from_millis(100)));
    }
    let policy = match PullPolicy::resolve(container.image_pull_policy.as_deref(), &image) {
        Some(p) => p,
        None => {
            let message = format!("unknown imagePullPolicy {:?}", container.image_pull_policy);
            state.blocked.insert(
                container.name.clone(),
                Blocked {
                    reason: reason::CREATE_CONTAINER_CONFIG_ERROR.into(),
                    message,
                    retry_at: Some(Instant::now() + CREATE_RETRY),
                },
            );
            return Err(CREATE_RETRY);
        }
    };
    let present = matches!(k.parts.images.get(&image), Ok(Some(_)));
    if policy == PullPolicy::Always || !present {
        k.events
            .normal(&obj, "Pulling", format!("Pulling image \"{image}\""));
    }
    let started = Instant::now();
    match k.parts.images.ensure(&image, policy, &k.parts.pull).await {
        Ok(img) => {
            k.image_backoff
                .lock()
                .expect("image backoff lock")
                .forget(&key);
            if policy == PullPolicy::Always || !present {
                let took = started.elapsed().as_secs_f64();
                k.events.normal(
                    &obj,
                    "Pulled",
                    format!("Successfully pulled image \"{image}\" in {took:.3}s. Image size: {} bytes.", img.size),
                );
            } else {
                k.events.normal(
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
            k.events.warning(
                &obj,
                "Failed",
                format!("Failed to pull image \"{image}\": {message}"),
            );
            k.events.warning(&obj, "Failed", format!("Error: {reason}"));
            k.image_backoff
                .lock()
                .expect("image backoff lock")
                .failed(&key);
            state.blocked.insert(
                container.name.clone(),
                Blocked {
                    reason,
                    message,
                    retry_at: None,
                },
            );
            Err(RESYNC)
        }
    }
}

/// Stops and removes everything of the pod.
async fn terminate(k: &Arc<Kubelet>, pod: &Pod, state: &mut WorkerState) {
    let grace = Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    );
    if let Some(sid) = state.record.sandbox_id.clone() {
        stop_containers(k, pod, &sid, grace).await;
        let runtime = k.parts.runtime.clone();
        let sid2 = sid.clone();
        let instances = blocking(move || runtime.list_containers(Some(&sid2))).await;
        publish(k, pod, state, false, &instances);
        teardown_sandbox(k, pod, &sid, Duration::ZERO).await;
    } else {
        // A worker that never recorded its sandbox (or an adopted one): find it by UID.
        let uid = uid_of(pod);
        let runtime = k.parts.runtime.clone();
        if let Some(s) = blocking(move || runtime.list_sandboxes())
            .await
            .into_iter()
            .find(|s| s.pod.uid == uid)
        {
            teardown_sandbox(k, pod, &s.id, grace).await;
        }
    }
    let uid = uid_of(pod);
    let _ = std::fs::remove_dir_all(k.pods_dir().join(&uid));
    let info = pod_info(pod);
    let _ = std::fs::remove_dir_all(
        k.config
            .log_dir
            .join(format!("{}_{}_{}", info.namespace, info.name, uid)),
    );
    let mut crash = k.crash.lock().expect("crash lock");
    for c in pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    }) {
        crash.forget(&container_backoff_key(
            &info.namespace,
            &info.name,
            &uid,
            &c.name,
        ));
    }
}

/// Stops the running containers of a sandbox: preStop hooks first, then the stop signal and
/// SIGKILL when the grace runs out, all containers at once.
async fn stop_containers(k: &Arc<Kubelet>, pod: &Pod, sandbox_id: &str, grace: Duration) {
    let runtime = k.parts.runtime.clone();
    let sid = sandbox_id.to_string();
    let running: Vec<ContainerStatus> = blocking(move || runtime.list_containers(Some(&sid)))
        .await
        .into_iter()
        .filter(|s| matches!(s.state, ContainerState::Running | ContainerState::Created))
        .collect();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut tasks = Vec::new();
    for s in running {
        let container = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .find(|c| c.name == s.name)
            .cloned();
        k.events.normal(
            &ObjectRef::container(pod, &s.name),
            "Killing",
            format!("Stopping container {}", s.name),
        );
        let k = k.clone();
        let pod_obj = pod.clone();
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|st| st.pod_ip.clone())
            .unwrap_or_default();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let pre_stop = container
                .as_ref()
                .and_then(|c| c.lifecycle.as_ref())
                .and_then(|l| l.pre_stop.as_ref());
            if let (Some(hook), Some(c)) = (pre_stop, container.as_ref()) {
                let failed = if let Some(cmd) = hook.exec.as_ref().and_then(|e| e.command.clone()) {
                    let runtime = k.parts.runtime.clone();
                    let id = s.id.clone();
                    match blocking(move || runtime.exec(&id, &cmd, grace)).await {
                        Ok(out) if out.exit_code == 0 => None,
                        Ok(out) => Some(format!(
                            "command exited with {}: {}",
                            out.exit_code,
                            String::from_utf8_lossy(&out.stdout).trim()
                        )),
                        Err(e) => Some(e.to_string()),
                    }
                } else if let Some(action) = &hook.http_get {
                    super::hooks::http_get(action, c, &pod_ip, grace)
                        .await
                        .err()
                } else {
                    None
                };
                if let Some(why) = failed {
                    k.events.warning(
                        &ObjectRef::container(&pod_obj, &s.name),
                        "FailedPreStopHook",
                        format!("PreStopHook failed: {why}"),
                    );
                }
            }
            let left = grace
                .saturating_sub(started.elapsed())
                .max(if grace.is_zero() {
                    Duration::ZERO
                } else {
                    MIN_GRACE_AFTER_HOOK
                });
            let runtime = k.parts.runtime.clone();
            let id = s.id.clone();
            let signal = image_stop_signal(&k, &s.image);
            if let Err(e) = blocking(move || runtime.stop_container(&id, left, signal)).await {
                tracing::warn!(container = %s.name, error = %e, "stopping the container");
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The image's `STOPSIGNAL` as a signal number (`None`: SIGTERM).
fn image_stop_signal(k: &Kubelet, image: &str) -> Option<i32> {
    let img = k.parts.images.get(image).ok().flatten()?;
    let text = img.config.config().as_ref()?.stop_signal().clone()?;
    let signal = parse_signal(&text);
    if signal.is_none() {
        tracing::warn!(image, stop_signal = %text, "unknown STOPSIGNAL in the image; using SIGTERM");
    }
    signal
}

/// Parses a signal as images spell it: `SIGQUIT`, `QUIT` or `3`.
fn parse_signal(text: &str) -> Option<i32> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// Stops and removes a sandbox's containers, detaches its network, and removes it.
async fn teardown_sandbox(k: &Arc<Kubelet>, pod: &Pod, sandbox_id: &str, grace: Duration) {
    stop_containers(k, pod, sandbox_id, grace).await;
    let runtime = k.parts.runtime.clone();
    let sid = sandbox_id.to_string();
    let instances = blocking(move || runtime.list_containers(Some(&sid))).await;
    for s in instances {
        let runtime = k.parts.runtime.clone();
        if let Err(e) = blocking(move || runtime.remove_container(&s.id)).await {
            tracing::warn!(error = %e, "removing a container");
        }
    }
    if !host_network(pod) {
        let runtime = k.parts.runtime.clone();
        let sid = sandbox_id.to_string();
        if let Ok(sandbox) = blocking(move || runtime.sandbox(&sid)).await {
            if let Err(e) = k.parts.cni.del(&attachment(pod, &sandbox)).await {
                tracing::warn!(error = %e, "CNI DEL");
            }
        }
    }
    let runtime = k.parts.runtime.clone();
    let sid = sandbox_id.to_string();
    if let Err(e) = blocking(move || runtime.stop_and_remove_sandbox(&sid)).await {
        tracing::warn!(error = %e, "removing the sandbox");
    }
}

/// Removes a recovered sandbox that no desired pod owns.
pub(super) async fn remove_orphan(k: Arc<Kubelet>, sandbox: Sandbox) {
    tracing::info!(sandbox = %sandbox.id, pod = %sandbox.pod.full_name(), "removing a pod that is no longer wanted");
    let mut pod = Pod::default();
    pod.metadata.name = Some(sandbox.pod.name.clone());
    pod.metadata.namespace = Some(sandbox.pod.namespace.clone());
    pod.metadata.uid = Some(sandbox.pod.uid.clone());
    teardown_sandbox(&k, &pod, &sandbox.id, MIN_GRACE_AFTER_HOOK).await;
    let _ = std::fs::remove_dir_all(k.pods_dir().join(&sandbox.pod.uid));
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn stop_signals_as_images_spell_them() {
        assert_eq!(parse_signal("SIGQUIT"), Some(3));
        assert_eq!(parse_signal("quit"), Some(3));
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
