//! The pod lifecycle event generator (upstream's generic PLEG): one relist of every sandbox and
//! container each second, waking the worker of each pod whose sandbox or containers changed
//! (a container exited, a pause container died, an instance appeared or went). Pod workers
//! then need no 1 s resync of their own: a quiet pod costs one status read per relist.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use kubenode_runtime::{ContainerState, ContainerStatus, Sandbox, SandboxState};

use super::Kubelet;

/// Upstream's relist period.
const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// What a relist sees of one pod: its sandboxes' states and its containers' states and exit
/// codes, in a fixed order.
type PodView = Vec<(String, State)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Sandbox(SandboxState),
    Container(ContainerState, Option<i32>),
}

/// Groups a relist by pod UID.
fn views(sandboxes: &[Sandbox], containers: &[ContainerStatus]) -> BTreeMap<String, PodView> {
    let mut out: BTreeMap<String, PodView> = BTreeMap::new();
    let mut owner = BTreeMap::new();
    for s in sandboxes {
        owner.insert(s.id.as_str(), s.pod.uid.as_str());
        out.entry(s.pod.uid.clone())
            .or_default()
            .push((s.id.clone(), State::Sandbox(s.state)));
    }
    for c in containers {
        if let Some(uid) = owner.get(c.sandbox_id.as_str()) {
            out.entry(uid.to_string())
                .or_default()
                .push((c.id.clone(), State::Container(c.state, c.exit_code)));
        }
    }
    for view in out.values_mut() {
        view.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// The UIDs of pods whose view differs between two relists (appeared, changed or gone).
fn changed(old: &BTreeMap<String, PodView>, new: &BTreeMap<String, PodView>) -> Vec<String> {
    let mut out: Vec<String> = new
        .iter()
        .filter(|(uid, view)| old.get(*uid) != Some(view))
        .map(|(uid, _)| uid.clone())
        .collect();
    out.extend(old.keys().filter(|uid| !new.contains_key(*uid)).cloned());
    out
}

/// Relists every [`RELIST_PERIOD`] until the kubelet is dropped.
pub(super) async fn run(kubelet: Weak<Kubelet>) {
    let mut last = BTreeMap::new();
    let mut ticker = tokio::time::interval(RELIST_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(runtime) = kubelet.upgrade().map(|k| k.deps.runtime.clone()) else {
            return;
        };
        let Ok(now) = runtime
            .try_run(|rt| views(&rt.list_sandboxes(), &rt.list_containers(None)))
            .await
        else {
            continue;
        };
        for uid in changed(&last, &now) {
            Kubelet::wake_weak(&kubelet, &uid);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubenode_runtime::spec::PodInfo;

    fn sandbox(id: &str, uid: &str, state: SandboxState) -> Sandbox {
        Sandbox {
            id: id.into(),
            pod: PodInfo {
                uid: uid.into(),
                ..Default::default()
            },
            netns_path: Default::default(),
            host_network: false,
            state,
        }
    }

    fn container(
        id: &str,
        sandbox: &str,
        state: ContainerState,
        code: Option<i32>,
    ) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            sandbox_id: sandbox.into(),
            name: "c".into(),
            restart_count: 0,
            image: "i".into(),
            state,
            pid: None,
            exit_code: code,
            reason: None,
            message: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            log_path: Default::default(),
        }
    }

    #[test]
    fn only_pods_that_changed_are_woken() {
        let sandboxes = [
            sandbox("s1", "u1", SandboxState::Ready),
            sandbox("s2", "u2", SandboxState::Ready),
            sandbox("s3", "u3", SandboxState::Ready),
        ];
        let before = views(
            &sandboxes,
            &[
                container("a", "s1", ContainerState::Running, None),
                container("b", "s2", ContainerState::Running, None),
                container("c", "s3", ContainerState::Running, None),
            ],
        );
        assert_eq!(changed(&BTreeMap::new(), &before), ["u1", "u2", "u3"]);
        assert!(changed(&before, &before).is_empty());
        // u1's container exited, u2's pause died, u3 unchanged, u4 is new.
        let mut later = sandboxes.to_vec();
        later[1].state = SandboxState::NotReady;
        later.push(sandbox("s4", "u4", SandboxState::NotReady));
        let after = views(
            &later,
            &[
                container("a", "s1", ContainerState::Exited, Some(1)),
                container("b", "s2", ContainerState::Running, None),
                container("c", "s3", ContainerState::Running, None),
            ],
        );
        assert_eq!(changed(&before, &after), ["u1", "u2", "u4"]);
        // A restart: a new instance next to the exited one; a pod gone entirely.
        let restarted = views(
            &sandboxes[..1],
            &[
                container("a", "s1", ContainerState::Exited, Some(1)),
                container("a2", "s1", ContainerState::Running, None),
            ],
        );
        assert_eq!(changed(&after, &restarted), ["u1", "u2", "u3", "u4"]);
    }
}
