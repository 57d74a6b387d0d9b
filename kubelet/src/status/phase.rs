//! The pod phase, ported from upstream `getPhase` (k/k
//! `pkg/kubelet/kubelet_pods.go`), init and sidecar containers included.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec};

/// `Pending`.
pub const PENDING: &str = "Pending";
/// `Running`.
pub const RUNNING: &str = "Running";
/// `Succeeded`.
pub const SUCCEEDED: &str = "Succeeded";
/// `Failed`.
pub const FAILED: &str = "Failed";
/// `Unknown`.
pub const UNKNOWN: &str = "Unknown";

/// True for `Succeeded` and `Failed`.
pub fn is_terminal(phase: &str) -> bool {
    phase == SUCCEEDED || phase == FAILED
}

/// A pod's `restartPolicy` (upstream `v1.RestartPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartPolicy {
    /// Restart every container that exits (the default).
    Always,
    /// Restart containers that exit non-zero.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The spec's policy; unset is `Always`, as the API server defaults it. Validation refuses
    /// any other text (`spec.restartPolicy: Unsupported value`), so none gets this far.
    pub fn of(spec: &PodSpec) -> Self {
        match spec.restart_policy.as_deref() {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    /// Whether a container that exited (`failed`: with a non-zero code) is started again.
    pub fn restarts(self, failed: bool) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => failed,
            Self::Never => false,
        }
    }
}

/// An init container with `restartPolicy: Always` (a sidecar).
pub fn is_restartable_init(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn last_terminated_exit(s: &ContainerStatus) -> Option<i32> {
    s.last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// Upstream `HasAnyRegularContainerStarted`.
pub fn has_any_regular_container_started(spec: &PodSpec, statuses: &[ContainerStatus]) -> bool {
    spec.containers.iter().any(|c| {
        find(statuses, &c.name)
            .and_then(|s| s.state.as_ref())
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    })
}

/// The phase of a pod from its spec and the statuses of all its containers
/// (init and regular). `terminal` is true when the pod is being ended for
/// good (its containers will not be restarted); `is_static` disables the
/// terminal override, as upstream does for static pods. `statuses` must be
/// those of the current sandbox: a regular init container that has not
/// completed keeps the pod Pending whatever the app containers did
/// (upstream `TestPodPhaseWithRestartAlwaysAndPodHasRun`).
pub fn get_phase(
    spec: &PodSpec,
    statuses: &[ContainerStatus],
    terminal: bool,
    is_static: bool,
) -> &'static str {
    let policy = RestartPolicy::of(spec);
    // Regular init containers not done yet keep the pod Pending even when
    // app containers of an earlier sandbox have run; pending sidecars only
    // while no app container has started.
    let mut pending_regular_init = 0;
    let mut pending_sidecars = 0;
    let mut failed_init = 0;
    let inits = spec.init_containers.as_deref().unwrap_or_default();

    for c in inits.iter().filter(|c| !is_restartable_init(c)) {
        let Some(st) = find(statuses, &c.name).and_then(|s| s.state.as_ref().map(|st| (s, st)))
        else {
            pending_regular_init += 1;
            continue;
        };
        let (s, st) = st;
        if st.running.is_some() {
            pending_regular_init += 1;
        } else if let Some(t) = &st.terminated {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if st.waiting.is_some() {
            match last_terminated_exit(s) {
                Some(code) if code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_regular_init += 1,
            }
        } else {
            pending_regular_init += 1;
        }
    }

    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in inits.iter().filter(|c| is_restartable_init(c)) {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        match s.state.as_ref() {
            Some(st) if st.running.is_some() => {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running += 1;
            }
            Some(st) if st.terminated.is_some() => {}
            Some(st) if st.waiting.is_some() => {
                if last_terminated_exit(s).is_none() {
                    pending_sidecars += 1;
                    waiting += 1;
                }
            }
            _ => {
                pending_sidecars += 1;
                unknown += 1;
            }
        }
    }

    for c in &spec.containers {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        match s.state.as_ref() {
            Some(st) if st.running.is_some() => running += 1,
            Some(st) if st.terminated.is_some() => {
                stopped += 1;
                if st.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
                    succeeded += 1;
                }
            }
            Some(st) if st.waiting.is_some() => {
                if last_terminated_exit(s).is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
            _ => unknown += 1,
        }
    }

    if failed_init > 0 && policy == RestartPolicy::Never {
        return FAILED;
    }
    if pending_regular_init > 0
        || (pending_sidecars > 0 && !has_any_regular_container_started(spec, statuses))
        || waiting > 0
    {
        return PENDING;
    }
    if running > 0 && unknown == 0 {
        return RUNNING;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if terminal && !is_static {
            return if stopped == succeeded {
                SUCCEEDED
            } else {
                FAILED
            };
        }
        if policy == RestartPolicy::Always {
            return RUNNING;
        }
        if stopped == succeeded {
            return SUCCEEDED;
        }
        if policy == RestartPolicy::Never {
            return FAILED;
        }
        return RUNNING;
    }
    PENDING
}
