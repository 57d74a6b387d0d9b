//! One pod worker per pod: a loop that reconciles the pod until it is told to terminate it.
//!
//! Each pass (`sync`) ensures the sandbox (netns, CNI ADD, pause), the pod's managed files, then
//! asks [`super::actions::compute`] what to start, starts it (pull, create, start, with events),
//! and publishes the status. The pass returns when to come back (`Requeue`), it never sleeps
//! inside. Termination stops containers within the grace period (preStop first), then removes
//! containers, the CNI attachment, the sandbox and the pod's directories, collecting errors.
//!
//! Files: `sandbox` (find or create the sandbox, teardown), `start` (pull, create, start one
//! container), `stop` (termination, preStop hooks, stop signals), `volumes` (set-up before
//! containers, emptyDir eviction, teardown).

mod prune;
mod sandbox;
mod start;
mod stop;
mod volumes;

pub(super) use sandbox::remove_orphan;
use sandbox::{ensure_sandbox, finish_sandbox, teardown_sandbox};
use start::start_container;
use stop::stop_containers;
pub(super) use stop::stop_one;
use stop::terminate;
pub(super) use volumes::remove_orphan_pod_dirs;

use std::collections::HashMap;
use std::net::IpAddr;
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

/// How often a pod is re-synced when nothing wakes its worker. Container exits and pause
/// deaths wake it within a second (the relist in `pleg`), probe results and manifest changes
/// at once, and every wait (back-offs, retries) sets its own requeue.
const RESYNC: Duration = Duration::from_secs(10);
/// Wait before retrying a sandbox that failed to come up.
const SANDBOX_RETRY: Duration = Duration::from_secs(5);
/// Wait before creating a container again after a create error (a config or runtime error
/// does not fix itself each second).
const CREATE_RETRY: Duration = Duration::from_secs(10);
/// Grace left to a container after its preStop hook overran (upstream's minimum).
const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);
/// Mode of `<root>/pods` and of each pod's directory: root only (the kubelet's own is 0750;
/// nothing a container runs reaches its files by the host path, runc binds them as root).
pub(crate) const POD_DIR_MODE: u32 = 0o700;
/// The CNI interface name inside pods.
const POD_IFNAME: &str = "eth0";

/// What the worker remembers across passes; `sandbox.json` keeps the part that must survive an
/// agent restart.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PodRecord {
    sandbox_id: Option<String>,
    pod_ips: Vec<IpAddr>,
    start_time: Option<String>,
    /// CNI ADD of the sandbox has not finished: after an agent restart, such a sandbox is
    /// recreated rather than adopted.
    #[serde(default)]
    network_pending: bool,
}

struct WorkerState {
    record: PodRecord,
    /// A new sandbox while its network and pause container come up; containers are created
    /// meanwhile and started only once it is up (see [`sandbox::finish_sandbox`]).
    pending: Option<sandbox::Pending>,
    blocked: HashMap<String, Blocked>,
    image_ids: HashMap<String, String>,
    status: Option<PodStatus>,
    /// The eviction message once the pod was evicted (emptyDir over its sizeLimit).
    evicted: Option<String>,
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
    use crate::status::{qos_class, QosClass};
    let qos = pod.spec.as_ref().map_or(QosClass::BestEffort, qos_class);
    let uid = uid_of(pod);
    match qos {
        QosClass::Guaranteed => format!("/kubepods/pod{uid}"),
        QosClass::Burstable => format!("/kubepods/burstable/pod{uid}"),
        QosClass::BestEffort => format!("/kubepods/besteffort/pod{uid}"),
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
        pending: None,
        blocked: HashMap::new(),
        image_ids: HashMap::new(),
        status: None,
        evicted: None,
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
            // Boxed: a pass's future is large (about 19 KB) and only alive during the pass; the
            // idle worker then keeps only its own small state.
            Box::pin(sync(&k, &pod, &mut state)).await
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
        k.prober.remove_pod(&uid);
        Box::pin(terminate(&k, &pod, &mut state)).await;
    }
    k.forget(&uid);
}

fn save_record(k: &Kubelet, uid: &str, record: &PodRecord) {
    let dir = k.pods_dir().join(uid);
    let write = || -> std::io::Result<()> {
        kubenode_fsutil::ensure_dir(&dir, POD_DIR_MODE)?;
        kubenode_fsutil::write_atomic(&dir.join("sandbox.json"), &serde_json::to_vec(record)?)
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
        Err(message) => return sandbox_failed(k, pod, state, message),
    };
    if let Err(wait) = volumes::set_up_volumes(k, pod, state).await {
        return wait;
    }
    if volumes::evict_if_over_limit(k, pod, &sandbox.id, state).await {
        return RESYNC;
    }
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
    prune::prune_instances(k, pod, &instances, &decided.prune).await;
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
        match start_container(k, pod, &sandbox, state, start).await {
            Ok(Some(wait)) => requeue = requeue.min(wait),
            Ok(None) => {}
            Err(message) => return sandbox_failed(k, pod, state, message),
        }
    }
    // Nothing started in this pass (all waiting): the sandbox still has to come up.
    if let Err(message) = finish_sandbox(k, pod, state).await {
        return sandbox_failed(k, pod, state, message);
    }
    let runtime = k.parts.runtime.clone();
    let sid = sandbox.id.clone();
    let instances = blocking(move || runtime.list_containers(Some(&sid))).await;
    publish(k, pod, state, true, &instances);
    requeue
}

/// The sandbox could not be made (or its pause container did not start): a
/// `FailedCreatePodSandBox` event, the status, and a retry later.
fn sandbox_failed(k: &Kubelet, pod: &Pod, state: &mut WorkerState, message: String) -> Duration {
    k.events
        .warning(&ObjectRef::pod(pod), "FailedCreatePodSandBox", message);
    publish(k, pod, state, false, &[]);
    SANDBOX_RETRY
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
    let probe_ip = if host_network(pod) {
        k.config.node_ip.to_string()
    } else {
        state
            .record
            .pod_ips
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    k.prober.sync_pod(pod, &probe_ip, instances);
    let containers = observe::observe(
        &all,
        instances,
        &state.blocked,
        &state.image_ids,
        |s| termination_message(&pods_dir, &all, s),
        |c, s| k.prober.status(c, &s.id),
    );
    let node_ip = k.config.node_ip;
    let pod_ips = if host_network(pod) {
        vec![node_ip]
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

/// The message of an exited instance (see `status::termination_message`): the last 4 KiB of
/// its termination log, or its log's tail under `FallbackToLogsOnError`.
fn termination_message(
    pods_dir: &std::path::Path,
    containers: &[&Container],
    s: &ContainerStatus,
) -> Option<String> {
    let file = termination_log(pods_dir, &s.name, s.restart_count);
    let policy = containers
        .iter()
        .find(|c| c.name == s.name)
        .and_then(|c| c.termination_message_policy.as_deref());
    crate::status::termination_message(&crate::status::MessageSource {
        file: &file,
        log: &s.log_path,
        fallback_to_logs: policy == Some("FallbackToLogsOnError"),
        exit_code: s.exit_code.unwrap_or(0),
        start_error: s.reason.as_deref() == Some(crate::status::reason::START_ERROR),
        containers_in_pod: containers.len(),
    })
}
