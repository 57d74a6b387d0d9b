//! What a pod needs next, computed from its spec and the container instances the runtime
//! reports: the kubelet's `computePodActions`, as a pure function.
//!
//! Init containers run one at a time, in order, each to exit 0, before any app container; a
//! failed one is retried per `restartPolicy` (never for `Never`). App containers start together
//! and restart per `restartPolicy` (`Always`; `OnFailure` for a non-zero exit; `Never`), each
//! restart passing through the crash back-off.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::jiff::Timestamp;
use kubenode_runtime::{ContainerState, ContainerStatus};

use crate::backoff::RestartDecision;
use crate::status::RestartPolicy;

/// The instances of one container name, newest first.
#[derive(Debug, Clone, Default)]
pub struct Instances<'a> {
    /// Newest first (by restart count).
    pub all: Vec<&'a ContainerStatus>,
}

impl<'a> Instances<'a> {
    /// The current instance.
    pub fn current(&self) -> Option<&'a ContainerStatus> {
        self.all.first().copied()
    }
    /// The one before it.
    pub fn previous(&self) -> Option<&'a ContainerStatus> {
        self.all.get(1).copied()
    }
}

/// Groups instances by container name, newest first.
pub fn group(instances: &[ContainerStatus]) -> BTreeMap<&str, Instances<'_>> {
    let mut map: BTreeMap<&str, Instances<'_>> = BTreeMap::new();
    for s in instances {
        map.entry(s.name.as_str()).or_default().all.push(s);
    }
    for v in map.values_mut() {
        v.all.sort_by(|a, b| {
            b.restart_count
                .cmp(&a.restart_count)
                .then(b.created_at.cmp(&a.created_at))
        });
    }
    map
}

/// One container to (re)start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Container name.
    pub name: String,
    /// An init container.
    pub init: bool,
    /// The restart count the new instance gets.
    pub restart_count: u32,
}

/// A container waiting out its crash back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Container name.
    pub name: String,
    /// The back-off delay (for the message).
    pub delay: Duration,
    /// Time left.
    pub remaining: Duration,
}

/// What to do for a pod now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Containers to start, in order.
    pub start: Vec<Start>,
    /// Containers in crash back-off.
    pub backing_off: Vec<Waiting>,
    /// Old instances to remove (all but the current and the previous one of each name).
    pub prune: Vec<String>,
}

fn finished_at(s: &ContainerStatus) -> Timestamp {
    crate::status::api_time(s.finished_at.unwrap_or(s.created_at))
}

/// Computes the actions. `decide` is the crash back-off (called only for a container that
/// should restart, with its name and the time its last instance finished).
pub fn compute_pod_actions(
    spec: &PodSpec,
    instances: &[ContainerStatus],
    terminal: bool,
    mut decide: impl FnMut(&str, Timestamp) -> RestartDecision,
) -> PodActions {
    let groups = group(instances);
    let mut actions = PodActions::default();
    for g in groups.values() {
        actions
            .prune
            .extend(g.all.iter().skip(2).map(|s| s.id.clone()));
    }
    if terminal {
        return actions;
    }
    let policy = RestartPolicy::of(spec);
    let mut restart_or_wait =
        |actions: &mut PodActions, name: &str, init: bool, s: &ContainerStatus| match decide(
            name,
            finished_at(s),
        ) {
            RestartDecision::Restart => actions.start.push(Start {
                name: name.to_string(),
                init,
                restart_count: s.restart_count + 1,
            }),
            RestartDecision::BackOff { delay, remaining } => actions.backing_off.push(Waiting {
                name: name.to_string(),
                delay,
                remaining,
            }),
        };

    for c in spec.init_containers.iter().flatten() {
        let current = groups.get(c.name.as_str()).and_then(Instances::current);
        match current {
            None => {
                actions.start.push(Start {
                    name: c.name.clone(),
                    init: true,
                    restart_count: 0,
                });
                return actions;
            }
            Some(s) => match s.state {
                ContainerState::Exited if s.exit_code == Some(0) => continue,
                ContainerState::Exited if policy != RestartPolicy::Never => {
                    restart_or_wait(&mut actions, &c.name, true, s);
                    return actions;
                }
                // Running, being created, lost, or failed for good (restartPolicy Never).
                _ => return actions,
            },
        }
    }

    for c in &spec.containers {
        let current = groups.get(c.name.as_str()).and_then(Instances::current);
        match current {
            None => actions.start.push(Start {
                name: c.name.clone(),
                init: false,
                restart_count: 0,
            }),
            Some(s) if s.state == ContainerState::Exited => {
                if policy.restarts(s.exit_code != Some(0)) {
                    restart_or_wait(&mut actions, &c.name, false, s);
                }
            }
            Some(_) => {}
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use k8s_openapi::api::core::v1::Container;

    use super::*;

    fn spec(policy: &str, inits: &[&str], apps: &[&str]) -> PodSpec {
        let c = |n: &&str| Container {
            name: n.to_string(),
            ..Default::default()
        };
        PodSpec {
            restart_policy: Some(policy.into()),
            init_containers: (!inits.is_empty()).then(|| inits.iter().map(c).collect()),
            containers: apps.iter().map(c).collect(),
            ..Default::default()
        }
    }

    fn inst(name: &str, restart: u32, state: ContainerState, code: Option<i32>) -> ContainerStatus {
        ContainerStatus {
            id: format!("{name}-{restart}"),
            sandbox_id: "s".into(),
            name: name.into(),
            restart_count: restart,
            image: "busybox".into(),
            state,
            pid: None,
            exit_code: code,
            reason: None,
            message: None,
            created_at: format!("2026-11-28T00:00:{:02}Z", restart).parse().unwrap(),
            started_at: None,
            finished_at: Some("2026-11-28T01:00:00Z".parse().unwrap()),
            log_path: PathBuf::new(),
        }
    }

    fn always_restart(_: &str, _: Timestamp) -> RestartDecision {
        RestartDecision::Restart
    }

    fn names(a: &PodActions) -> Vec<(String, u32)> {
        a.start
            .iter()
            .map(|s| (s.name.clone(), s.restart_count))
            .collect()
    }

    #[test]
    fn fresh_pod_starts_every_app_container() {
        let a = compute_pod_actions(
            &spec("Always", &[], &["a", "b"]),
            &[],
            false,
            always_restart,
        );
        assert_eq!(names(&a), [("a".into(), 0), ("b".into(), 0)]);
    }

    #[test]
    fn init_containers_run_one_at_a_time_in_order() {
        let s = spec("Always", &["i1", "i2"], &["app"]);
        assert_eq!(
            names(&compute_pod_actions(&s, &[], false, always_restart)),
            [("i1".into(), 0)]
        );
        let running = [inst("i1", 0, ContainerState::Running, None)];
        assert!(compute_pod_actions(&s, &running, false, always_restart)
            .start
            .is_empty());
        let done = [inst("i1", 0, ContainerState::Exited, Some(0))];
        assert_eq!(
            names(&compute_pod_actions(&s, &done, false, always_restart)),
            [("i2".into(), 0)]
        );
        let both = [
            inst("i1", 0, ContainerState::Exited, Some(0)),
            inst("i2", 0, ContainerState::Exited, Some(0)),
        ];
        assert_eq!(
            names(&compute_pod_actions(&s, &both, false, always_restart)),
            [("app".into(), 0)]
        );
    }

    #[test]
    fn failed_init_container_retries_unless_never() {
        let failed = [inst("i1", 0, ContainerState::Exited, Some(1))];
        let s = spec("OnFailure", &["i1"], &["app"]);
        assert_eq!(
            names(&compute_pod_actions(&s, &failed, false, always_restart)),
            [("i1".into(), 1)]
        );
        let s = spec("Never", &["i1"], &["app"]);
        assert_eq!(
            compute_pod_actions(&s, &failed, false, always_restart),
            PodActions::default()
        );
    }

    #[test]
    fn restart_policy_matrix() {
        let ok = [inst("a", 0, ContainerState::Exited, Some(0))];
        let bad = [inst("a", 0, ContainerState::Exited, Some(7))];
        let run = |policy, inst: &[ContainerStatus]| {
            names(&compute_pod_actions(
                &spec(policy, &[], &["a"]),
                inst,
                false,
                always_restart,
            ))
        };
        assert_eq!(run("Always", &ok), [("a".into(), 1)]);
        assert_eq!(run("Always", &bad), [("a".into(), 1)]);
        assert!(run("OnFailure", &ok).is_empty());
        assert_eq!(run("OnFailure", &bad), [("a".into(), 1)]);
        assert!(run("Never", &ok).is_empty());
        assert!(run("Never", &bad).is_empty());
    }

    #[test]
    fn back_off_is_reported_not_started() {
        let bad = [inst("a", 3, ContainerState::Exited, Some(1))];
        let a = compute_pod_actions(&spec("Always", &[], &["a"]), &bad, false, |_, _| {
            RestartDecision::BackOff {
                delay: Duration::from_secs(40),
                remaining: Duration::from_secs(12),
            }
        });
        assert!(a.start.is_empty());
        assert_eq!(
            a.backing_off,
            [Waiting {
                name: "a".into(),
                delay: Duration::from_secs(40),
                remaining: Duration::from_secs(12)
            }]
        );
    }

    #[test]
    fn keeps_current_and_previous_instances_only() {
        let all = [
            inst("a", 0, ContainerState::Exited, Some(1)),
            inst("a", 1, ContainerState::Exited, Some(1)),
            inst("a", 2, ContainerState::Running, None),
        ];
        let a = compute_pod_actions(&spec("Always", &[], &["a"]), &all, false, always_restart);
        assert_eq!(a.prune, ["a-0"]);
        assert!(a.start.is_empty());
        let g = group(&all);
        assert_eq!(g["a"].current().unwrap().restart_count, 2);
        assert_eq!(g["a"].previous().unwrap().restart_count, 1);
    }

    #[test]
    fn terminal_pods_start_nothing() {
        let a = compute_pod_actions(&spec("Always", &[], &["a"]), &[], true, always_restart);
        assert!(a.start.is_empty());
    }
}
