//! The kubelet-owned pod conditions (upstream `pkg/kubelet/status/generate.go`)
//! and their `lastTransitionTime` bookkeeping.

use super::phase::{has_any_regular_container_started, is_restartable_init, FAILED, SUCCEEDED};
use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition type `PodReadyToStartContainers`.
pub const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";
/// Condition type `Initialized`.
pub const INITIALIZED: &str = "Initialized";
/// Condition type `ContainersReady`.
pub const CONTAINERS_READY: &str = "ContainersReady";
/// Condition type `Ready`.
pub const READY: &str = "Ready";
/// Condition type `PodScheduled`.
pub const POD_SCHEDULED: &str = "PodScheduled";

/// Reason: all container statuses are unknown.
pub const UNKNOWN_CONTAINER_STATUSES: &str = "UnknownContainerStatuses";
/// Reason: every container succeeded.
pub const POD_COMPLETED: &str = "PodCompleted";
/// Reason: the pod failed.
pub const POD_FAILED: &str = "PodFailed";
/// Reason: some container is not ready.
pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
/// Reason: some init container has not succeeded.
pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";

fn cond(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(Into::into),
        message,
        ..PodCondition::default()
    }
}

/// Go's `%s` of a `[]string`: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

/// `ContainersReady`: true when every app container and sidecar is ready.
pub fn containers_ready(
    spec: &PodSpec,
    statuses: Option<&[ContainerStatus]>,
    phase: &str,
) -> PodCondition {
    let Some(statuses) = statuses else {
        return cond(
            CONTAINERS_READY,
            false,
            Some(UNKNOWN_CONTAINER_STATUSES),
            None,
        );
    };
    let (mut unknown, mut unready) = (vec![], vec![]);
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_restartable_init(c));
    for c in sidecars.chain(spec.containers.iter()) {
        match find(statuses, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.as_str()),
            Some(_) => {}
            None => unknown.push(c.name.as_str()),
        }
    }
    if (phase == SUCCEEDED && unknown.is_empty()) || phase == FAILED {
        let reason = if phase == FAILED {
            POD_FAILED
        } else {
            POD_COMPLETED
        };
        return cond(CONTAINERS_READY, false, Some(reason), None);
    }
    let mut msgs = vec![];
    if !unknown.is_empty() {
        msgs.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        msgs.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if msgs.is_empty() {
        cond(CONTAINERS_READY, true, None, None)
    } else {
        cond(
            CONTAINERS_READY,
            false,
            Some(CONTAINERS_NOT_READY),
            Some(msgs.join(", ")),
        )
    }
}

/// `Ready`: as `ContainersReady` (static pods have no readiness gates
/// that anything could satisfy, so a gate is reported as not ready).
pub fn pod_ready(
    spec: &PodSpec,
    statuses: Option<&[ContainerStatus]>,
    phase: &str,
) -> PodCondition {
    let cr = containers_ready(spec, statuses, phase);
    if cr.status != "True" {
        return PodCondition {
            type_: READY.into(),
            ..cr
        };
    }
    let gates: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .map(|g| {
            format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                g.condition_type
            )
        })
        .collect();
    if gates.is_empty() {
        cond(READY, true, None, None)
    } else {
        cond(
            READY,
            false,
            Some("ReadinessGatesNotReady"),
            Some(gates.join(", ")),
        )
    }
}

/// `Initialized`: true when every init container completed (sidecars:
/// started), or once any app container has started.
pub fn initialized(
    spec: &PodSpec,
    statuses: Option<&[ContainerStatus]>,
    phase: &str,
) -> PodCondition {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let Some(statuses) = statuses else {
        if inits.is_empty() {
            return cond(INITIALIZED, true, None, None);
        }
        return cond(INITIALIZED, false, Some(UNKNOWN_CONTAINER_STATUSES), None);
    };
    let (mut unknown, mut incomplete) = (vec![], vec![]);
    for c in inits {
        match find(statuses, &c.name) {
            None => unknown.push(c.name.as_str()),
            Some(s) => {
                let done = if is_restartable_init(c) {
                    s.started == Some(true)
                } else {
                    s.ready
                };
                if !done {
                    incomplete.push(c.name.as_str());
                }
            }
        }
    }
    if phase == SUCCEEDED && unknown.is_empty() {
        return cond(INITIALIZED, true, Some(POD_COMPLETED), None);
    }
    if has_any_regular_container_started(spec, statuses) {
        return cond(INITIALIZED, true, None, None);
    }
    let mut msgs = vec![];
    if !unknown.is_empty() {
        msgs.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        msgs.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if msgs.is_empty() {
        cond(INITIALIZED, true, None, None)
    } else {
        cond(
            INITIALIZED,
            false,
            Some(CONTAINERS_NOT_INITIALIZED),
            Some(msgs.join(", ")),
        )
    }
}

/// `PodReadyToStartContainers`: the sandbox exists with its network.
pub fn ready_to_start_containers(sandbox_ready: bool) -> PodCondition {
    cond(POD_READY_TO_START_CONTAINERS, sandbox_ready, None, None)
}

/// `PodScheduled`: always true on the node that runs the pod.
pub fn scheduled() -> PodCondition {
    cond(POD_SCHEDULED, true, None, None)
}

/// Sets `lastTransitionTime`: kept from the previous condition of the same
/// type when its status is unchanged, else `now` (upstream status manager
/// `updateLastTransitionTime`).
pub fn stamp_transitions(conditions: &mut [PodCondition], old: &[PodCondition], now: &Time) {
    for c in conditions {
        let prev = old.iter().find(|o| o.type_ == c.type_);
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => {
                p.last_transition_time.clone().or_else(|| Some(now.clone()))
            }
            _ => Some(now.clone()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodReadinessGate};

    /// Nothing sets a static pod's gate conditions, so a gate keeps it not ready, as
    /// upstream's kubelet reports a gate whose condition does not exist.
    #[test]
    fn readiness_gates_keep_the_pod_not_ready() {
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let statuses = [ContainerStatus {
            name: "app".into(),
            ready: true,
            ..Default::default()
        }];
        assert_eq!(pod_ready(&spec, Some(&statuses), "Running").status, "True");
        spec.readiness_gates = Some(vec![PodReadinessGate {
            condition_type: "example.com/lb".into(),
        }]);
        let c = pod_ready(&spec, Some(&statuses), "Running");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("ReadinessGatesNotReady"))
        );
        assert_eq!(
            c.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
            )
        );
    }
}
