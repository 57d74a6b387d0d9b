//! One pod worker per pod: a loop that reconciles the pod until it is told to terminate it.
//!
//! A [`PodWorker`] owns what it remembers of its pod across passes (`WorkerState`) and shares
//! the node's dependencies ([`WorkerDeps`]: the runtime, images, CNI, volumes, back-offs,
//! events, the prober and the pod table) with the other workers. The operations that need no
//! pod state (stopping containers, tearing down a sandbox or volumes, removing orphans) are
//! methods of [`WorkerDeps`], so that the prober and the orphan collector use them too.
//!
//! A static pod's worker makes nothing of it until the start gate lets it through (no other pod
//! of its name and namespace running or terminating, see `super::start_gate`); until then the
//! pod stays Pending.
//!
//! Each pass (`sync`) ensures the sandbox (netns, CNI ADD, pause), the pod's managed files, then
//! asks [`super::actions::compute_pod_actions`] what to start, starts it (pull, create, start, with events),
//! and publishes the status. The pass returns when to come back (`Requeue`), it never sleeps
//! inside. Termination stops containers within the grace period (preStop first), then removes
//! containers, the CNI attachment, the sandbox and the pod's directories, collecting errors.
//!
//! Files: `sandbox` (find or create the sandbox, teardown), `pod_cgroup` (the pod cgroup's CPU
//! shares, quota and memory limit from the containers'), `start` (pull, create, start one
//! container), `stop` (termination, preStop hooks, stop signals), `volumes` (set-up before
//! containers, emptyDir eviction, teardown).

mod deadline;
mod gc;
pub(in crate::node) use gc::GcPass;
mod outcome;
pub(in crate::node) mod pod_cgroup;
mod prune;
mod pull_secrets;
mod sandbox;
mod start;
mod stop;
mod volumes;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kubenode_cni::CniClient;
use kubenode_runtime::image::{ImageStore, PullOptions};
use kubenode_runtime::spec::PodInfo;
use kubenode_runtime::ContainerStatus;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;

use super::actions;
use super::files;
use super::observe::{self, BlockCause, Blocked};
use super::runtime::AsyncRuntime;
use super::table::PodTable;
use crate::backoff::{
    container_backoff_key, crash_loop_message, Clock, CrashBackoff, ImageBackoff,
};
use crate::config::Config;
use crate::events::{ObjectRef, Recorder};
use crate::prober::Prober;
use crate::status::{generate_pod_status, is_terminal, reason, ObservedPod};
use crate::volume::VolumeManager;
use outcome::{StartOutcome, SyncError};

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
    /// When the pod's first sandbox was made; on disk as RFC 3339 text
    /// (`2026-01-02T03:04:05.123456789Z`), as it always was.
    start_time: Option<Timestamp>,
    /// CNI ADD of the sandbox has not finished: after an agent restart, such a sandbox is
    /// recreated rather than adopted.
    #[serde(default)]
    network_pending: bool,
    /// Set once the pod was killed for good (`Evicted`: emptyDir over its sizeLimit or over
    /// its ephemeral-storage limits; `DeadlineExceeded`: past `activeDeadlineSeconds`), and
    /// saved before its containers are killed: after an agent restart the pod stays `Failed`
    /// with the same reason and message, and no container of it starts again (upstream's
    /// status manager and API server hold a Failed phase the same way). Kept when the
    /// sandbox is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    terminal: Option<Terminal>,
}

/// Why the pod was killed for good: its status reason and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Terminal {
    reason: String,
    message: String,
    /// Evicted by the eviction manager (node pressure): the status carries the
    /// `DisruptionTarget` condition too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    disruption_target: bool,
}

/// An eviction the eviction manager asked for (`crate::eviction`): the grace period of the
/// containers' kill and the pod's status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::node) struct EvictionRequest {
    pub(in crate::node) grace: Duration,
    pub(in crate::node) message: String,
}

struct WorkerState {
    record: PodRecord,
    /// A new sandbox while its network and pause container come up; containers are created
    /// meanwhile and started only once it is up (see [`PodWorker::finish_sandbox`]).
    pending: Option<sandbox::Pending>,
    blocked: HashMap<String, Blocked>,
    image_ids: HashMap<String, String>,
    status: Option<PodStatus>,
    /// What the contents of the pod's configMap, secret, downwardAPI and projected volumes
    /// were last made from (`None` before they are first written by this agent run).
    contents: Option<volumes::ContentsSeen>,
}

/// What every pod worker uses, shared by all of them.
pub(in crate::node) struct WorkerDeps {
    pub(in crate::node) config: Config,
    pub(in crate::node) runtime: AsyncRuntime,
    pub(in crate::node) images: Arc<ImageStore>,
    pub(in crate::node) cni: Arc<CniClient>,
    pub(in crate::node) pull: PullOptions,
    pub(in crate::node) clock: Arc<dyn Clock>,
    /// The ConfigMaps, Secrets and tokens pods reference.
    pub(in crate::node) objects: Arc<crate::objects::Objects>,
    pub(in crate::node) events: Recorder,
    pub(in crate::node) crash: Mutex<CrashBackoff>,
    pub(in crate::node) image_backoff: Mutex<ImageBackoff>,
    /// Pod volumes.
    pub(in crate::node) volumes: Arc<VolumeManager>,
    /// The host's /etc/resolv.conf, the base of the pods' own.
    pub(in crate::node) host_resolv: String,
    pub(in crate::node) prober: Prober,
    /// Where workers publish their pod's state.
    pub(in crate::node) pods: PodTable,
    /// The node's taints as admission sees them: `registerWithTaints` until the Node in the
    /// API server is known, then its `spec.taints` ([`super::Kubelet::set_node_taints`]).
    pub(in crate::node) node_taints: std::sync::RwLock<Vec<k8s_openapi::api::core::v1::Taint>>,
    /// Evictions the eviction manager asked for, by pod UID, taken by the pod's worker.
    pub(in crate::node) evictions: Mutex<HashMap<String, EvictionRequest>>,
}

impl std::fmt::Debug for WorkerDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerDeps")
            .field("node", &self.config.node_name)
            .finish_non_exhaustive()
    }
}

impl WorkerDeps {
    fn pods_dir(&self) -> PathBuf {
        self.config.root_dir.join("pods")
    }

    /// The Services in the environment of `pod`'s containers.
    fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        super::service_env(&self.pods.known_services().0, ns, links)
    }

    /// Runs `call` with the volume manager on the blocking pool (it mounts, and walks and
    /// measures directories).
    async fn with_volumes<T: Send + 'static>(
        &self,
        call: impl FnOnce(&VolumeManager) -> T + Send + 'static,
    ) -> T {
        let volumes = self.volumes.clone();
        tokio::task::spawn_blocking(move || call(&volumes))
            .await
            .expect("blocking task panicked")
    }

    fn crash_backoff(&self) -> std::sync::MutexGuard<'_, CrashBackoff> {
        super::lock(&self.crash, "crash back-off")
    }

    fn image_backoff(&self) -> std::sync::MutexGuard<'_, ImageBackoff> {
        super::lock(&self.image_backoff, "image back-off")
    }
}

/// The worker of one pod: its state across passes and the shared dependencies.
pub(in crate::node) struct PodWorker {
    uid: String,
    state: WorkerState,
    deps: Arc<WorkerDeps>,
    /// The pod the worker is told to keep (`None`: terminate it), watched by what waits inside
    /// a pass on the pod's own program (a `postStart` hook) so that a deletion ends the wait.
    desired: Option<watch::Receiver<Option<Arc<Pod>>>>,
}

/// Returns once the worker is told to terminate its pod (never without a `desired` channel).
async fn termination_requested(desired: Option<watch::Receiver<Option<Arc<Pod>>>>) {
    let Some(mut desired) = desired else {
        return std::future::pending().await;
    };
    loop {
        let deleted = desired
            .borrow_and_update()
            .as_ref()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        if deleted || desired.changed().await.is_err() {
            return;
        }
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// The span of a pod's passes: `pod=<namespace>/<name> uid=<uid>`.
fn pod_span(pod: &Pod) -> tracing::Span {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    tracing::info_span!("pod", pod = %format!("{namespace}/{name}"), uid = %uid_of(pod))
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

/// The pod's cgroup (cgroupfs path), by its QoS class.
pub(in crate::node) fn cgroup_parent(pod: &Pod) -> String {
    use crate::status::{qos_class, QosClass};
    let qos = pod.spec.as_ref().map_or(QosClass::BestEffort, qos_class);
    let uid = uid_of(pod);
    match qos {
        QosClass::Guaranteed => format!("/kubepods/pod{uid}"),
        QosClass::Burstable => format!("{}/pod{uid}", pod_cgroup::BURSTABLE_CGROUP),
        QosClass::BestEffort => format!("{}/pod{uid}", pod_cgroup::BEST_EFFORT_CGROUP),
    }
}

impl PodWorker {
    /// The address the node reaches the pod at for probes and hooks: the node's own with
    /// `hostNetwork`, else the pod's first IP (empty before the sandbox has one).
    fn pod_ip(&self, pod: &Pod) -> String {
        if host_network(pod) {
            self.deps.config.node_ip.to_string()
        } else {
            self.state
                .record
                .pod_ips
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        }
    }

    /// The worker of pod `uid`, with what `sandbox.json` kept of it.
    pub(in crate::node) fn new(deps: Arc<WorkerDeps>, uid: String) -> PodWorker {
        let record_path = deps.pods_dir().join(&uid).join("sandbox.json");
        let record: PodRecord = std::fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        PodWorker {
            uid,
            state: WorkerState {
                record,
                pending: None,
                blocked: HashMap::new(),
                image_ids: HashMap::new(),
                status: None,
                contents: None,
            },
            deps,
            desired: None,
        }
    }

    /// The worker task: a pass for each desired pod from `desired` (and each wake), until it
    /// is told to terminate the pod (`None`, the sender dropped, or a desired pod with
    /// `deletionTimestamp`: the API's graceful deletion, terminated with its
    /// `deletionGracePeriodSeconds`).
    pub(in crate::node) async fn run(mut self, mut desired: watch::Receiver<Option<Arc<Pod>>>) {
        self.desired = Some(desired.clone());
        // The API's deletion of the pod: its time and grace period.
        let mut deletion = None;
        // The pod as last registered with the objects it references (upstream's pod manager
        // registers each pod with the ConfigMap and Secret managers when it is added or
        // updated, and unregisters it when it is gone).
        let mut registered: Option<Arc<Pod>> = None;
        // Let through the start gate: nothing of the pod is made before (see `start_gate`).
        let mut started = false;
        // Why it last waited at the gate, logged when that changes.
        let mut waited: Option<super::start_gate::Wait> = None;
        loop {
            let wanted = desired.borrow_and_update().clone();
            let Some(pod) = wanted else {
                break;
            };
            if registered.as_ref().map(|p| &p.spec) != Some(&pod.spec) {
                self.deps.objects.register_pod(&pod);
                registered = Some(pod.clone());
            }
            if pod.metadata.deletion_timestamp.is_some() {
                deletion = Some((
                    pod.metadata.deletion_timestamp.clone(),
                    pod.metadata.deletion_grace_period_seconds,
                ));
                break;
            }
            // Every log line of the pass carries the pod.
            let span = pod_span(&pod);
            if !started {
                match self.deps.pods.allow_start(&self.uid, &pod) {
                    Ok(()) => started = true,
                    Err(wait) => {
                        // The pod stays Pending; its worker is woken when the other pod is
                        // gone, and looks again at each resync.
                        if waited.as_ref() != Some(&wait) {
                            span.in_scope(|| {
                                tracing::info!(reason = %wait, "static pod waits to start");
                            });
                            waited = Some(wait);
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(RESYNC) => {}
                            changed = desired.changed() => if changed.is_err() { break },
                        }
                        continue;
                    }
                }
                if waited.take().is_some() {
                    span.in_scope(|| tracing::info!("static pod may start now"));
                }
            }
            // Boxed: a pass's future is large (about 19 KB) and only alive during the pass; the
            // idle worker then keeps only its own small state.
            let requeue = Box::pin(self.sync(&pod)).instrument(span).await;
            tokio::select! {
                _ = tokio::time::sleep(requeue) => {}
                changed = desired.changed() => if changed.is_err() { break },
            }
        }
        let deps = self.deps.clone();
        if let Some((pod, _)) = deps.pods.get(&self.uid) {
            let mut pod = Arc::unwrap_or_clone(pod);
            let (at, grace) = deletion.unwrap_or((Some(Time(deps.clock.now())), None));
            pod.metadata.deletion_timestamp = at;
            pod.metadata.deletion_grace_period_seconds = grace;
            deps.pods
                .set_pod(&self.uid, pod.clone(), self.state.record.sandbox_id.clone());
            deps.prober.remove_pod(&self.uid);
            let span = pod_span(&pod);
            Box::pin(self.terminate(&pod)).instrument(span).await;
        }
        if let Some(pod) = registered {
            deps.objects.unregister_pod(&pod);
        }
        deps.pods.forget(&self.uid);
    }

    fn save_record(&self) {
        let dir = self.deps.pods_dir().join(&self.uid);
        let write = || -> std::io::Result<()> {
            kubenode_fsutil::ensure_dir(&dir, POD_DIR_MODE)?;
            kubenode_fsutil::write_atomic(
                &dir.join("sandbox.json"),
                &serde_json::to_vec(&self.state.record)?,
            )
        };
        if let Err(e) = write() {
            tracing::warn!(pod_uid = self.uid, error = %e, "saving the pod record");
        }
    }

    /// One reconcile pass. Returns when to run the next one.
    async fn sync(&mut self, pod: &Pod) -> Duration {
        let uid = uid_of(pod);
        let evict = super::lock(&self.deps.evictions, "evictions").remove(&uid);
        if let (None, Some(request)) = (&self.state.record.terminal, evict) {
            // Node-pressure eviction (the manager recorded the event): on disk before the kill,
            // as the other kills for good.
            tracing::warn!(message = %request.message, "evicting the pod (node pressure)");
            self.state.record.terminal = Some(Terminal {
                reason: crate::eviction::REASON.into(),
                message: request.message,
                disruption_target: true,
            });
            self.save_record();
            if let Some(sandbox_id) = self.state.record.sandbox_id.clone() {
                self.deps
                    .stop_containers(pod, &sandbox_id, request.grace)
                    .await;
            }
        }
        if self.state.record.terminal.is_some() {
            // Killed for good, maybe before an agent restart: no sandbox is made again and no
            // container started; the pod stays Failed.
            let sandbox_id = self.state.record.sandbox_id.clone().unwrap_or_default();
            self.evict_if_over_limit(pod, &sandbox_id).await;
            return RESYNC;
        }
        let sandbox = match self.ensure_sandbox(pod).await {
            Ok(s) => s,
            Err(error) => return self.sandbox_failed(pod, error),
        };
        if let Err(wait) = self.set_up_volumes(pod).await {
            return wait;
        }
        if self.evict_if_over_limit(pod, &sandbox.id).await {
            return RESYNC;
        }
        // Come back at the active deadline rather than up to a resync late.
        let deadline =
            deadline::time_left(pod, self.state.record.start_time, self.deps.clock.now());
        let instances = self.deps.runtime.list_containers(Some(&sandbox.id)).await;
        let terminal = self
            .state
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(is_terminal);
        let spec = pod.spec.clone().unwrap_or_default();
        let info = pod_info(pod);
        let mut requeue = deadline.map_or(RESYNC, |left| {
            RESYNC.min(left.max(Duration::from_millis(100)))
        });
        let decided = {
            let mut crash = self.deps.crash_backoff();
            actions::compute_pod_actions(&spec, &instances, terminal, |name, finished| {
                crash.decide(
                    &container_backoff_key(&info.namespace, &info.name, &uid, name),
                    finished,
                )
            })
        };
        self.deps
            .prune_instances(pod, &instances, &decided.prune)
            .await;
        for waiting in &decided.backing_off {
            let message = crash_loop_message(
                waiting.delay,
                &waiting.name,
                &info.name,
                &info.namespace,
                &uid,
            );
            if self
                .state
                .blocked
                .get(&waiting.name)
                .is_none_or(|b| b.reason != reason::CRASH_LOOP_BACK_OFF)
            {
                self.deps.events.warning(
                    &ObjectRef::container(pod, &waiting.name),
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}_{}({uid})",
                        waiting.name, info.name, info.namespace
                    ),
                );
            }
            self.state.blocked.insert(
                waiting.name.clone(),
                Blocked {
                    reason: reason::CRASH_LOOP_BACK_OFF.into(),
                    message,
                    retry_at: None,
                    cause: BlockCause::Other,
                },
            );
            requeue = requeue.min(waiting.remaining.max(Duration::from_millis(100)));
        }
        if !decided.kill.is_empty()
            && !self
                .deps
                .kill_instances(pod, &instances, &decided.kill)
                .await
        {
            // As upstream: a container that could not be killed is not started beside itself.
            let instances = self.deps.runtime.list_containers(Some(&sandbox.id)).await;
            self.publish(pod, true, &instances);
            return requeue;
        }
        let now = Instant::now();
        for start in &decided.start {
            if let Some(at) = self
                .state
                .blocked
                .get(&start.name)
                .and_then(|b| b.retry_at)
                .filter(|at| *at > now)
            {
                requeue = requeue.min(at - now);
                continue;
            }
            match self.start_container(pod, &sandbox, start).await {
                Ok(StartOutcome::Wait(wait)) => requeue = requeue.min(wait),
                Ok(StartOutcome::Done) => {}
                Err(error) => return self.sandbox_failed(pod, error),
            }
        }
        // Nothing started in this pass (all waiting): the sandbox still has to come up.
        if let Err(error) = self.finish_sandbox(pod).await {
            return self.sandbox_failed(pod, error);
        }
        let instances = self.deps.runtime.list_containers(Some(&sandbox.id)).await;
        self.publish(pod, true, &instances);
        requeue
    }

    /// The sandbox could not be made (or its pause container did not start): a
    /// `FailedCreatePodSandBox` event, the status, and a retry later.
    fn sandbox_failed(&mut self, pod: &Pod, error: SyncError) -> Duration {
        self.deps.events.warning(
            &ObjectRef::pod(pod),
            "FailedCreatePodSandBox",
            error.to_string(),
        );
        self.publish(pod, false, &[]);
        SANDBOX_RETRY
    }

    /// Builds and publishes the pod's status from the instances.
    fn publish(&mut self, pod: &Pod, sandbox_ready: bool, instances: &[ContainerStatus]) {
        let spec = pod.spec.clone().unwrap_or_default();
        let all: Vec<&Container> = crate::pod_containers(&spec).collect();
        let pods_dir = self.deps.pods_dir().join(uid_of(pod));
        let probe_ip = self.pod_ip(pod);
        self.deps.prober.sync_pod(pod, &probe_ip, instances);
        let containers = observe::observe_containers(
            &all,
            instances,
            &self.state.blocked,
            &self.state.image_ids,
            |s| termination_message(&pods_dir, &all, s),
            |c, s| self.deps.prober.status(c, &s.id),
        );
        let node_ip = self.deps.config.node_ip;
        let pod_ips = if host_network(pod) {
            vec![node_ip]
        } else {
            self.state.record.pod_ips.clone()
        };
        let observed = ObservedPod {
            sandbox_ready,
            pod_ips,
            host_ips: vec![node_ip],
            start_time: self.state.record.start_time,
            containers,
            terminal: pod.metadata.deletion_timestamp.is_some(),
        };
        let status = generate_pod_status(
            pod,
            &observed,
            self.state.status.as_ref(),
            self.deps.clock.now(),
        );
        self.state.status = Some(status.clone());
        let mut pod = pod.clone();
        pod.status = Some(status);
        self.deps
            .pods
            .set_pod(&uid_of(&pod), pod, self.state.record.sandbox_id.clone());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_with_the_start_time_as_text_loads_and_is_written_back_the_same() {
        // `sandbox.json` as the agent wrote it when the record kept the time as a string (and
        // before `network_pending` existed).
        let old = r#"{"sandbox_id":"0123abcd","pod_ips":["10.88.0.7"],"start_time":"2026-01-02T03:04:05.123456789Z"}"#;
        let record: PodRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.sandbox_id.as_deref(), Some("0123abcd"));
        assert_eq!(
            record.start_time,
            Some("2026-01-02T03:04:05.123456789Z".parse().unwrap())
        );
        assert!(!record.network_pending);
        assert_eq!(record.terminal, None);
        let written: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(written["start_time"], "2026-01-02T03:04:05.123456789Z");

        let whole_second =
            r#"{"sandbox_id":null,"pod_ips":[],"start_time":"2026-01-02T03:04:05Z"}"#;
        let record: PodRecord = serde_json::from_str(whole_second).unwrap();
        let written: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(written["start_time"], "2026-01-02T03:04:05Z");

        let none = r#"{"sandbox_id":null,"pod_ips":[],"start_time":null}"#;
        let record: PodRecord = serde_json::from_str(none).unwrap();
        assert_eq!(record.start_time, None);
    }

    #[test]
    fn a_pod_killed_for_good_is_remembered_by_its_record() {
        let record = PodRecord {
            sandbox_id: Some("0123abcd".into()),
            terminal: Some(Terminal {
                reason: deadline::DEADLINE_EXCEEDED.into(),
                message: deadline::DEADLINE_MESSAGE.into(),
                disruption_target: false,
            }),
            ..Default::default()
        };
        let written = serde_json::to_vec(&record).unwrap();
        let text: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(text["terminal"]["reason"], "DeadlineExceeded");
        let read: PodRecord = serde_json::from_slice(&written).unwrap();
        assert_eq!(read.terminal, record.terminal);
        assert_eq!(read.sandbox_id.as_deref(), Some("0123abcd"));

        // A live pod's record has no such field (as the records written before it existed).
        let live = serde_json::to_value(PodRecord::default()).unwrap();
        assert!(live.get("terminal").is_none(), "{live}");
        let old =
            r#"{"sandbox_id":"0123abcd","pod_ips":[],"start_time":null,"network_pending":false}"#;
        let read: PodRecord = serde_json::from_str(old).unwrap();
        assert_eq!(read.terminal, None);
    }
}
