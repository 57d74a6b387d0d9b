//! What a pod needs next, computed from its spec and the container instances the runtime
//! reports: the kubelet's `computePodActions`, as a pure function.
//!
//! Init containers run one at a time, in order, each to exit 0, before any app container; a
//! failed one is retried per `restartPolicy` (never for `Never`). App containers start together
//! and restart per `restartPolicy` (`Always`; `OnFailure` for a non-zero exit; `Never`), each
//! restart passing through the crash back-off.
//!
//! An instance whose state the runtime cannot tell (`Unknown`) may still run: as upstream, it
//! is killed first ([`Kill`], the `Killing` event's message saying why) and then started again
//! whatever the restart policy (an init container under `restartPolicy: Never` is only killed:
//! upstream kills the pod, which then fails). A `Created` instance whose start never came (the
//! sandbox failed between create and start; one an earlier agent run left so is removed by the
//! runtime's recovery) is started again, as upstream's `ShouldContainerBeRestarted`. The crash back-off of such a restart counts from the newest
//! instance that exited, as upstream's `doBackOff` (none: no back-off).

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

/// One instance to kill before anything is started (upstream `ContainersToKill`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// The instance's id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// The `Killing` event's message.
    pub message: String,
}

/// What to do for a pod now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Instances to kill first; nothing is started when a kill fails (as upstream `SyncPod`).
    pub kill: Vec<Kill>,
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

/// The state as upstream's `kubecontainer.State` spells it (in the `Killing` message).
fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "unknown",
    }
}

/// The kill before restart of an instance in `Unknown` state (upstream's messages).
fn kill_unknown(s: &ContainerStatus, init: bool) -> Kill {
    let what = if init { "Init container" } else { "Container" };
    Kill {
        id: s.id.clone(),
        name: s.name.clone(),
        message: format!(
            "{what} is in \"{}\" state, try killing it before restart",
            state_name(s.state)
        ),
    }
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
    // `s` is the current instance; the back-off counts from the newest one that exited (the
    // current one, or the previous when the current one is `Unknown` or `Created`).
    let mut restart_or_wait = |actions: &mut PodActions,
                               name: &str,
                               init: bool,
                               s: &ContainerStatus| {
        let exited = groups
            .get(name)
            .and_then(|g| g.all.iter().find(|i| i.state == ContainerState::Exited));
        let decision = match exited {
            Some(e) => decide(name, finished_at(e)),
            None => RestartDecision::Restart,
        };
        match decision {
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
        }
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
                ContainerState::Created => {
                    restart_or_wait(&mut actions, &c.name, true, s);
                    return actions;
                }
                // Unknown counts as failed: killed, then retried unless restartPolicy is Never
                // (upstream kills the pod then: its only live container is this one).
                ContainerState::Unknown => {
                    if policy == RestartPolicy::Never {
                        actions.kill.push(Kill {
                            id: s.id.clone(),
                            name: s.name.clone(),
                            message: format!("Stopping container {}", s.name),
                        });
                    } else {
                        actions.kill.push(kill_unknown(s, true));
                        restart_or_wait(&mut actions, &c.name, true, s);
                    }
                    return actions;
                }
                // Running, or failed for good (restartPolicy Never).
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
            Some(s) => match s.state {
                ContainerState::Running => {}
                ContainerState::Exited => {
                    if policy.restarts(s.exit_code != Some(0)) {
                        restart_or_wait(&mut actions, &c.name, false, s);
                    }
                }
                // Always restarted, whatever the policy (upstream `ShouldContainerBeRestarted`).
                ContainerState::Created => restart_or_wait(&mut actions, &c.name, false, s),
                ContainerState::Unknown => {
                    actions.kill.push(kill_unknown(s, false));
                    restart_or_wait(&mut actions, &c.name, false, s);
                }
            },
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

    fn kills(a: &PodActions) -> Vec<(String, String)> {
        a.kill
            .iter()
            .map(|k| (k.id.clone(), k.message.clone()))
            .collect()
    }

    #[test]
    fn an_unknown_app_container_is_killed_then_restarted_whatever_the_policy() {
        for policy in ["Always", "OnFailure", "Never"] {
            let lost = [inst("a", 2, ContainerState::Unknown, None)];
            let a = compute_pod_actions(&spec(policy, &[], &["a"]), &lost, false, |_, _| {
                panic!("no instance exited: no back-off")
            });
            assert_eq!(
                kills(&a),
                [(
                    "a-2".to_string(),
                    "Container is in \"unknown\" state, try killing it before restart".to_string()
                )],
                "{policy}"
            );
            assert_eq!(names(&a), [("a".into(), 3)], "{policy}");
        }
    }

    #[test]
    fn an_unknown_instance_backs_off_from_the_previous_exit_and_is_killed_anyway() {
        let mut previous = inst("a", 0, ContainerState::Exited, Some(1));
        previous.finished_at = Some("2026-11-28T00:30:00Z".parse().unwrap());
        let all = [previous, inst("a", 1, ContainerState::Unknown, None)];
        let mut asked = Vec::new();
        let a = compute_pod_actions(&spec("Always", &[], &["a"]), &all, false, |n, at| {
            asked.push((n.to_string(), at));
            RestartDecision::BackOff {
                delay: Duration::from_secs(10),
                remaining: Duration::from_secs(4),
            }
        });
        assert_eq!(
            asked,
            [("a".to_string(), "2026-11-28T00:30:00Z".parse().unwrap())]
        );
        assert_eq!(kills(&a).len(), 1);
        assert_eq!(a.kill[0].id, "a-1");
        assert!(a.start.is_empty());
        assert_eq!(a.backing_off.len(), 1);
    }

    #[test]
    fn an_unknown_init_container_is_killed_and_retried_unless_never() {
        let lost = [inst("i1", 0, ContainerState::Unknown, None)];
        let s = spec("Always", &["i1", "i2"], &["app"]);
        let a = compute_pod_actions(&s, &lost, false, always_restart);
        assert_eq!(
            kills(&a),
            [(
                "i1-0".to_string(),
                "Init container is in \"unknown\" state, try killing it before restart".to_string()
            )]
        );
        assert_eq!(names(&a), [("i1".into(), 1)]);
        assert!(a.start[0].init);

        // restartPolicy Never: upstream kills the pod; the init container is all that runs.
        let a = compute_pod_actions(
            &spec("Never", &["i1"], &["app"]),
            &lost,
            false,
            always_restart,
        );
        assert_eq!(
            kills(&a),
            [("i1-0".to_string(), "Stopping container i1".to_string())]
        );
        assert!(a.start.is_empty());
    }

    #[test]
    fn a_created_instance_never_started_is_started_again_without_a_kill() {
        let stuck = [inst("a", 0, ContainerState::Created, None)];
        let a = compute_pod_actions(&spec("Never", &[], &["a"]), &stuck, false, |_, _| {
            panic!("no instance exited: no back-off")
        });
        assert!(a.kill.is_empty());
        assert_eq!(names(&a), [("a".into(), 1)]);
        let init = [inst("i1", 0, ContainerState::Created, None)];
        let a = compute_pod_actions(
            &spec("Always", &["i1"], &["app"]),
            &init,
            false,
            always_restart,
        );
        assert!(a.kill.is_empty());
        assert_eq!(names(&a), [("i1".into(), 1)]);
    }

    #[test]
    fn running_containers_are_neither_killed_nor_started() {
        let up = [inst("a", 0, ContainerState::Running, None)];
        let a = compute_pod_actions(&spec("Always", &[], &["a"]), &up, false, always_restart);
        assert_eq!(a, PodActions::default());
    }

    #[test]
    fn terminal_pods_start_nothing() {
        let a = compute_pod_actions(&spec("Always", &[], &["a"]), &[], true, always_restart);
        assert!(a.start.is_empty());
    }
}
