//! The prober: liveness, readiness and startup probes of running containers, with upstream's
//! semantics (k/k `pkg/kubelet/prober`).
//!
//! [`Prober`] owns one tokio task per (pod, container, probe kind) and instance: the pod worker
//! calls [`Prober::sync_pod`] after each pass with the instances the runtime reports, which
//! starts a worker for each probed container whose current instance runs and stops workers
//! whose instance exited or was replaced; [`Prober::remove_pod`] stops all of a pod's workers
//! when it terminates ("quiet shutdown"). The status asks [`Prober::status`] for a container's
//! `ready` and `started`. A result change wakes the pod worker through the `wake` callback, so
//! the status and the proxy's endpoints follow promptly. A liveness or startup failure past
//! the threshold kills the instance (through [`ProbeHost::kill`]); the pod worker then restarts
//! it per `restartPolicy` with the crash back-off.
//!
//! Files: `worker` (the per-probe loop, thresholds and gating), `exec`, `http`, `tcp`, `grpc`
//! (the mechanisms), `tls` (HTTPS without certificate verification), `metrics` (probe durations).

mod exec;
pub use exec::MAX_EXEC_OUTPUT;
mod grpc;
pub(crate) mod http;
pub mod metrics;
mod port;
mod tcp;
pub mod tls;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::jiff::Timestamp;
use kubenode_fsutil::lock;
use kubenode_runtime::{ContainerState, ContainerStatus};
use tokio::sync::Semaphore;

use crate::backoff::Clock;
use crate::events::{ObjectRef, Recorder};
use crate::status::{is_restartable_init, RestartPolicy};

pub use http::user_agent;

/// Exec probes running at once: each holds a blocking thread while runc execs.
const MAX_CONCURRENT_EXEC: usize = 8;

/// The kind of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `livenessProbe`: failure kills the container.
    Liveness,
    /// `readinessProbe`: drives `ready`.
    Readiness,
    /// `startupProbe`: gates the other two; failure kills the container.
    Startup,
}

impl ProbeKind {
    const ALL: [ProbeKind; 3] = [
        ProbeKind::Liveness,
        ProbeKind::Readiness,
        ProbeKind::Startup,
    ];

    /// `Liveness`, `Readiness`, `Startup`: as event messages spell it.
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The result a new instance starts with: readiness Failure, liveness Success, startup
    /// Unknown.
    pub fn initial(self) -> ProbeResult {
        match self {
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }

    fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
            ProbeKind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// The state of one probe of one container instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Passed (past `successThreshold`).
    Success,
    /// Failed (past `failureThreshold`).
    Failure,
    /// Not known yet.
    Unknown,
}

/// What one probe attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed, with the output (body or command output).
    Success(String),
    /// Passed with a warning (an HTTP redirect that was not followed).
    Warning(String),
    /// Failed, with the detail for the event.
    Failure(String),
    /// The probe could not run (bad port, runtime error): discarded, no result.
    Error(String),
}

/// What an exec probe's command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Exit code.
    pub exit_code: i32,
    /// stdout followed by stderr.
    pub output: Vec<u8>,
    /// Killed at the timeout.
    pub timed_out: bool,
}

/// A container instance to stop after its liveness or startup probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name.
    pub container: String,
    /// The instance.
    pub container_id: String,
    /// The probe's `terminationGracePeriodSeconds`, else the pod's.
    pub grace: Duration,
}

/// Why a [`ProbeHost`] could not run an exec probe or kill a container.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The kubelet is going away.
    #[error("the kubelet is shutting down")]
    ShuttingDown,
    /// The container runtime failed (its message names the pod and container).
    #[error(transparent)]
    Runtime(#[from] kubenode_runtime::RuntimeError),
    /// A blocking task of the host failed.
    #[error("{what}: {source}")]
    Task {
        /// What the task did.
        what: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Anything else a host reports.
    #[error("{0}")]
    Other(String),
}

/// A boxed future, as [`ProbeHost::kill`] returns.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The prober's OS boundary: running commands in and stopping containers.
pub trait ProbeHost: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `cmd` in the container `container_id`, killed after `timeout` (blocking: called
    /// from the blocking pool).
    fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, HostError>;
    /// Stops the instance as the kubelet kills a container: its preStop hook, then the stop
    /// signal, SIGKILL when the grace period runs out.
    fn kill(&self, request: Kill) -> BoxFuture<Result<(), HostError>>;
}

/// The last result of a probe, for `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastProbe {
    /// The probe's state after its last attempt.
    pub result: ProbeResult,
    /// The last attempt's detail (output or failure message).
    pub detail: String,
    /// When the last attempt ran.
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WorkerKey {
    uid: String,
    container: String,
    kind: ProbeKind,
}

struct WorkerHandle {
    container_id: String,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
struct State {
    workers: HashMap<WorkerKey, WorkerHandle>,
    /// By (container instance ID, kind).
    results: HashMap<(String, ProbeKind), LastProbe>,
}

/// Called with a pod UID when one of its probe results changed or a container was killed.
pub type Wake = Box<dyn Fn(&str) + Send + Sync>;

pub(crate) struct Shared {
    host: Arc<dyn ProbeHost>,
    events: Recorder,
    clock: Arc<dyn Clock>,
    /// When the prober started (first probes are jittered within one period of it).
    start: tokio::time::Instant,
    exec_slots: Semaphore,
    durations: metrics::Durations,
    wake: Wake,
    state: Mutex<State>,
}

/// The probe manager of one kubelet; cheap to clone.
#[derive(Clone)]
pub struct Prober {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let workers = self.lock().workers.len();
        f.debug_struct("Prober")
            .field("workers", &workers)
            .finish_non_exhaustive()
    }
}

/// One probed container instance, as a worker sees it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub uid: String,
    pub object: ObjectRef,
    /// Shared by the container's probes.
    pub container: Arc<Container>,
    pub container_id: String,
    pub started_at: Option<Timestamp>,
    pub pod_ip: String,
    pub pod_grace: i64,
    pub restart_never: bool,
}

impl Prober {
    /// A prober running commands and kills through `host`, recording events in `events` and
    /// calling `wake` with the pod's UID when a result changes.
    pub fn new(
        host: Arc<dyn ProbeHost>,
        events: Recorder,
        clock: Arc<dyn Clock>,
        wake: Wake,
    ) -> Prober {
        Prober {
            shared: Arc::new(Shared {
                host,
                events,
                clock,
                start: tokio::time::Instant::now(),
                exec_slots: Semaphore::new(MAX_CONCURRENT_EXEC),
                durations: metrics::Durations::default(),
                wake,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.shared.state, "probe results")
    }

    /// Brings the pod's probe workers in line with its instances: a worker per probe of each
    /// container whose current instance runs (a new instance gets new workers and fresh
    /// results), none for the others. A pod being deleted loses all its workers. Must be
    /// called within a tokio runtime.
    pub fn sync_pod(&self, pod: &Pod, pod_ip: &str, instances: &[ContainerStatus]) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            self.remove_pod(&uid);
            return;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let restart_never = RestartPolicy::of(&spec) == RestartPolicy::Never;
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_restartable_init(c));
        let mut state = self.lock();
        for c in sidecars.chain(spec.containers.iter()) {
            let current = current_instance(instances, &c.name);
            let mut shared_spec: Option<Arc<Container>> = None;
            for kind in ProbeKind::ALL {
                if kind.of(c).is_none() {
                    continue;
                }
                let key = WorkerKey {
                    uid: uid.clone(),
                    container: c.name.clone(),
                    kind,
                };
                let running = current.filter(|s| s.state == ContainerState::Running);
                if let Some(h) = state.workers.get(&key) {
                    if running.is_some_and(|s| s.id == h.container_id) {
                        continue;
                    }
                    let h = state.workers.remove(&key).expect("present");
                    h.task.abort();
                    state.results.remove(&(h.container_id, kind));
                }
                let Some(s) = running else {
                    continue;
                };
                let target = Target {
                    uid: uid.clone(),
                    object: ObjectRef::container(pod, &c.name),
                    container: shared_spec
                        .get_or_insert_with(|| Arc::new(c.clone()))
                        .clone(),
                    container_id: s.id.clone(),
                    started_at: s.started_at.map(crate::status::api_time),
                    pod_ip: pod_ip.to_string(),
                    pod_grace: spec.termination_grace_period_seconds.unwrap_or(30),
                    restart_never,
                };
                let task = tokio::spawn(worker::run(self.shared.clone(), target, kind));
                state.workers.insert(
                    key,
                    WorkerHandle {
                        container_id: s.id.clone(),
                        task: task.abort_handle(),
                    },
                );
            }
        }
    }

    /// Stops every worker of the pod `uid` and forgets its results.
    pub fn remove_pod(&self, uid: &str) {
        let mut state = self.lock();
        let keys: Vec<WorkerKey> = state
            .workers
            .keys()
            .filter(|k| k.uid == uid)
            .cloned()
            .collect();
        for key in keys {
            if let Some(h) = state.workers.remove(&key) {
                h.task.abort();
                state.results.remove(&(h.container_id, key.kind));
            }
        }
        crate::metrics::metrics().forget_pod_probes(uid);
    }

    /// The container's `(ready, started)` for its instance `container_id` (which the caller
    /// knows to be running). `started` is `None` without a startup probe (started once
    /// running); `ready` needs `started` and, with a readiness probe, its success.
    pub fn status(&self, container: &Container, container_id: &str) -> (bool, Option<bool>) {
        let state = self.lock();
        let result = |kind: ProbeKind| {
            state
                .results
                .get(&(container_id.to_string(), kind))
                .map_or(kind.initial(), |r| r.result)
        };
        let started = container
            .startup_probe
            .as_ref()
            .map(|_| result(ProbeKind::Startup) == ProbeResult::Success);
        let ready = started.unwrap_or(true)
            && (container.readiness_probe.is_none()
                || result(ProbeKind::Readiness) == ProbeResult::Success);
        (ready, started)
    }

    /// The last result of the container instance's probe of `kind`, if it ran.
    pub fn last(&self, container_id: &str, kind: ProbeKind) -> Option<LastProbe> {
        self.lock()
            .results
            .get(&(container_id.to_string(), kind))
            .cloned()
    }

    /// Probe durations per mechanism since start.
    pub fn durations(&self) -> &metrics::Durations {
        &self.shared.durations
    }

    /// How many probe workers exist (running or finished), for tests and metrics.
    pub fn worker_count(&self) -> usize {
        self.lock().workers.len()
    }
}

impl Shared {
    fn result(&self, container_id: &str, kind: ProbeKind) -> ProbeResult {
        let state = lock(&self.state, "probe results");
        state
            .results
            .get(&(container_id.to_string(), kind))
            .map_or(kind.initial(), |r| r.result)
    }

    /// Records an attempt; returns whether the result changed.
    fn record(
        &self,
        target: &Target,
        kind: ProbeKind,
        result: Option<ProbeResult>,
        detail: String,
    ) -> bool {
        let mut state = lock(&self.state, "probe results");
        let key = (target.container_id.clone(), kind);
        let before = state.results.get(&key).map_or(kind.initial(), |r| r.result);
        let after = result.unwrap_or(before);
        state.results.insert(
            key,
            LastProbe {
                result: after,
                detail,
                at: self.clock.now(),
            },
        );
        before != after
    }
}

/// The current (newest) instance of container `name`.
fn current_instance<'a>(
    instances: &'a [ContainerStatus],
    name: &str,
) -> Option<&'a ContainerStatus> {
    instances.iter().filter(|s| s.name == name).max_by(|a, b| {
        a.restart_count
            .cmp(&b.restart_count)
            .then(a.created_at.cmp(&b.created_at))
    })
}
