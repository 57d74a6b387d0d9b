//! Container statuses from what the runtime observed (upstream
//! `convertToAPIContainerStatuses`), with the exact reason strings.

use super::Time;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus,
};
use k8s_openapi::jiff::Timestamp;

/// Container state reasons (exact upstream strings).
#[allow(missing_docs, reason = "the names are the upstream strings")]
pub mod reason {
    pub const CONTAINER_CREATING: &str = "ContainerCreating";
    pub const POD_INITIALIZING: &str = "PodInitializing";
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
    pub const IMAGE_INSPECT_ERROR: &str = "ImageInspectError";
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
    pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";
    pub const PRE_START_HOOK_ERROR: &str = "PreStartHookError";
    pub const POST_START_HOOK_ERROR: &str = "PostStartHookError";
    pub const COMPLETED: &str = "Completed";
    pub const ERROR: &str = "Error";
    pub const OOM_KILLED: &str = "OOMKilled";
    pub const START_ERROR: &str = "StartError";
    pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";
}

/// Exit code reported for a container that could not start.
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// The terminated reason for an exit: `OOMKilled` when the cgroup OOM
/// killer hit it, `StartError` when it never started (exit 128 by
/// convention), `Completed` for 0, `Error` otherwise.
pub fn terminated_reason(exit_code: i32, oom_killed: bool, start_error: bool) -> &'static str {
    if oom_killed {
        reason::OOM_KILLED
    } else if start_error {
        reason::START_ERROR
    } else if exit_code == 0 {
        reason::COMPLETED
    } else {
        reason::ERROR
    }
}

/// A finished container instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Terminated {
    /// Exit code (128 + signal when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Reason; see [`terminated_reason`].
    pub reason: String,
    /// Termination message (from `terminationMessagePath` or the log tail).
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// The runtime ID of that instance (`<runtime>://<id>`).
    pub container_id: Option<String>,
}

/// The current state of a container as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    /// Not running; `reason` is one of [`reason`] (e.g. `CrashLoopBackOff`).
    Waiting {
        /// Why it waits.
        reason: String,
        /// Details (e.g. the back-off message).
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// When the process started.
        started_at: Timestamp,
    },
    /// Exited and not (yet) restarted.
    Terminated(Terminated),
}

/// What the runtime and prober know about one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// Container name from the spec.
    pub name: String,
    /// Runtime ID of the current instance (`<runtime>://<id>`).
    pub container_id: Option<String>,
    /// Resolved image reference, when it differs from the spec's.
    pub image: Option<String>,
    /// Image ID (`sha256:...` or `repo@sha256:...`).
    pub image_id: String,
    /// Restarts so far.
    pub restart_count: i32,
    /// Current state.
    pub state: ObservedState,
    /// The previous instance, if it terminated.
    pub last_terminated: Option<Terminated>,
    /// Readiness probe result (only counts while running).
    pub ready: bool,
    /// Startup probe result (`None` = no startup probe: started once running).
    pub started: Option<bool>,
}

fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(Time)
}

fn terminated(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(t.reason.clone()),
            message: t.message.clone().filter(|m| !m.is_empty()),
            started_at: time(t.started_at),
            finished_at: time(t.finished_at),
            container_id: t.container_id.clone(),
        }),
        ..ContainerState::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..ContainerState::default()
    }
}

/// Why an ephemeral container (`kubectl debug`) waits for good: kubenode does not run them
/// yet. Its pod runs on undisturbed.
pub const EPHEMERAL_NOT_RUN: &str = "kubenode does not run ephemeral containers yet \
     (spec.ephemeralContainers, kubectl debug); the pod runs on without it";

/// Statuses of a pod's ephemeral containers, in spec order: each waits with
/// `CreateContainerConfigError` and [`EPHEMERAL_NOT_RUN`] (kubectl debug prints the message
/// while it waits), never started, never ready.
pub fn ephemeral_statuses(
    specs: &[k8s_openapi::api::core::v1::EphemeralContainer],
) -> Vec<ContainerStatus> {
    specs
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: Some(waiting(
                reason::CREATE_CONTAINER_CONFIG_ERROR,
                Some(EPHEMERAL_NOT_RUN.into()),
            )),
            started: Some(false),
            ..ContainerStatus::default()
        })
        .collect()
}

/// Statuses for `specs` in spec order. A container the runtime has not
/// reported waits with `PodInitializing` when the pod has init containers,
/// else `ContainerCreating`. With `init`, a regular init container is ready
/// once it exited 0 (as upstream's prober manager reports it).
pub fn container_statuses(
    specs: &[Container],
    observed: &[ObservedContainer],
    has_init: bool,
    init: bool,
) -> Vec<ContainerStatus> {
    let default_reason = if has_init {
        reason::POD_INITIALIZING
    } else {
        reason::CONTAINER_CREATING
    };
    specs
        .iter()
        .map(|spec| {
            let image = spec.image.clone().unwrap_or_default();
            let Some(o) = observed.iter().find(|o| o.name == spec.name) else {
                return ContainerStatus {
                    name: spec.name.clone(),
                    image,
                    state: Some(waiting(default_reason, None)),
                    started: Some(false),
                    ..ContainerStatus::default()
                };
            };
            let (state, running) = match &o.state {
                ObservedState::Waiting { reason, message } => {
                    (waiting(reason, message.clone()), false)
                }
                ObservedState::Running { started_at } => (
                    ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(Time(*started_at)),
                        }),
                        ..ContainerState::default()
                    },
                    true,
                ),
                ObservedState::Terminated(t) => (terminated(t), false),
            };
            let ready = if init && !super::phase::is_restartable_init(spec) {
                matches!(&o.state, ObservedState::Terminated(t) if t.exit_code == 0)
            } else {
                running && o.ready
            };
            ContainerStatus {
                name: spec.name.clone(),
                image: o.image.clone().unwrap_or(image),
                image_id: o.image_id.clone(),
                container_id: o.container_id.clone(),
                restart_count: o.restart_count,
                state: Some(state),
                last_state: Some(
                    o.last_terminated
                        .as_ref()
                        .map(terminated)
                        .unwrap_or_default(),
                ),
                ready,
                started: Some(running && o.started.unwrap_or(true)),
                ..ContainerStatus::default()
            }
        })
        .collect()
}
