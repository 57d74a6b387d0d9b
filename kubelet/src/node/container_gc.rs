//! Node-wide container garbage collection, as upstream's container GC
//! (`pkg/kubelet/container/container_gc.go`, `pkg/kubelet/kuberuntime/kuberuntime_gc.go`):
//! every [`CONTAINER_GC_PERIOD`], once every pod source has listed its pods,
//!
//! - dead containers (exited) older than `MinAge` are grouped by pod and container name
//!   ("evict units"); every one of a pod that is gone goes; of the others each unit keeps its
//!   `MaxPerPodContainer` newest, and when `MaxContainers` is not negative the node keeps at
//!   most that many, first by an equal share per unit (at least one), then oldest first
//!   ([`select_containers`]). A container's log files go before it (upstream's
//!   `removeContainerLog`). Unlike upstream, the current instance of a container of a pod
//!   that still exists is never collected, even dead: the pod's worker reads its restart count
//!   and crash back-off from it (so a crash-looping container keeps its current and previous
//!   instance, as the worker's own pruning does);
//! - sandboxes of pods that are gone (a teardown that failed, or a pod removed while its
//!   teardown was interrupted) are torn down, with their network and volumes;
//! - of a pod that still exists, every sandbox but the newest that is not ready and has no
//!   container left is torn down (upstream's `evictSandboxes`: a sandbox whose teardown failed
//!   while the pod's worker went on with a new one), its network too, not the pod's volumes
//!   ([`select_old_sandboxes`]);
//! - log directories (`/var/log/pods/<namespace>_<name>_<uid>`) and pod directories of pods
//!   that are gone and have no sandbox are removed (upstream's `evictPodLogsDirectories` and
//!   orphaned pod directory cleanup).
//!
//! The policy is upstream's deprecated flags' defaults (`--minimum-container-ttl-duration` 0,
//! `--maximum-dead-containers-per-container` 1, `--maximum-dead-containers` -1: no node-wide
//! limit); kubenode has no flag for them. A pod's own worker also prunes its instances beyond
//! the current and the previous one at each pass (`worker/prune.rs`). Containers that are
//! created but not started, or whose state is unknown, are never collected here: such an
//! instance is one a worker is starting, and what an earlier agent run left half-made is
//! removed by the runtime's recovery.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use kubenode_runtime::{ContainerState, ContainerStatus, Sandbox, SandboxState};

/// Upstream's `ContainerGCPeriod`.
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);

/// Upstream's `GCPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerGcPolicy {
    /// Minimum age of a dead container before it may be collected (`MinAge`, default 0).
    pub min_age: Duration,
    /// Dead containers kept per pod container (`MaxPerPodContainer`, default 1; negative: no
    /// limit).
    pub max_per_pod_container: i32,
    /// Dead containers kept on the node (`MaxContainers`, default -1: no limit).
    pub max_containers: i32,
}

impl Default for ContainerGcPolicy {
    fn default() -> Self {
        ContainerGcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}

/// One container as the collector sees it: the pod UID its sandbox belongs to, and its status.
#[derive(Debug, Clone)]
pub struct GcContainer<'a> {
    /// The pod's UID.
    pub pod_uid: &'a str,
    /// The container's status.
    pub status: &'a ContainerStatus,
}

/// The IDs of the containers to remove, as upstream's `evictContainers`: `gone` says whether
/// the pod of a UID is gone (its content should be removed).
pub fn select_containers(
    policy: &ContainerGcPolicy,
    now: Timestamp,
    containers: &[GcContainer<'_>],
    gone: impl Fn(&str) -> bool,
) -> Vec<String> {
    let newest_gc_time = now
        .checked_sub(jiff::SignedDuration::try_from(policy.min_age).unwrap_or_default())
        .unwrap_or(now);
    // The current instance of each container of a pod that is not gone: its worker's (the
    // restart count and the crash back-off are read from it).
    let mut current: BTreeMap<(&str, &str), &ContainerStatus> = BTreeMap::new();
    for c in containers.iter().filter(|c| !gone(c.pod_uid)) {
        let slot = current
            .entry((c.pod_uid, c.status.name.as_str()))
            .or_insert(c.status);
        if (c.status.restart_count, c.status.created_at) > (slot.restart_count, slot.created_at) {
            *slot = c.status;
        }
    }
    // Evict units: (pod UID, container name) → dead containers, newest first.
    let mut units: BTreeMap<(&str, &str), Vec<&ContainerStatus>> = BTreeMap::new();
    for c in containers {
        if c.status.state != ContainerState::Exited || c.status.created_at > newest_gc_time {
            continue;
        }
        if current
            .get(&(c.pod_uid, c.status.name.as_str()))
            .is_some_and(|s| s.id == c.status.id)
        {
            continue;
        }
        units
            .entry((c.pod_uid, c.status.name.as_str()))
            .or_default()
            .push(c.status);
    }
    for unit in units.values_mut() {
        unit.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    }
    let mut remove: Vec<String> = Vec::new();
    units.retain(|(uid, _), unit| {
        if gone(uid) {
            remove.extend(unit.iter().map(|s| s.id.clone()));
            false
        } else {
            true
        }
    });
    let enforce_per_unit =
        |units: &mut BTreeMap<_, Vec<&ContainerStatus>>, remove: &mut Vec<String>, keep: usize| {
            for unit in units.values_mut() {
                if unit.len() > keep {
                    remove.extend(unit.drain(keep..).map(|s| s.id.clone()));
                }
            }
        };
    if let Ok(keep) = usize::try_from(policy.max_per_pod_container) {
        enforce_per_unit(&mut units, &mut remove, keep);
    }
    if let Ok(max) = usize::try_from(policy.max_containers) {
        let count = |units: &BTreeMap<_, Vec<&ContainerStatus>>| -> usize {
            units.values().map(Vec::len).sum()
        };
        if count(&units) > max {
            let per_unit = (max / units.len().max(1)).max(1);
            enforce_per_unit(&mut units, &mut remove, per_unit);
            let left = count(&units);
            if left > max {
                let mut flat: Vec<&ContainerStatus> = units.values().flatten().copied().collect();
                // Oldest first.
                flat.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
                remove.extend(flat.iter().take(left - max).map(|s| s.id.clone()));
            }
        }
    }
    remove
}

/// The pod UID of a log directory name `<namespace>_<name>_<uid>` (`None` for any other
/// name: not the kubelet's).
pub fn log_dir_pod_uid(name: &str) -> Option<&str> {
    let mut parts = name.splitn(3, '_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    // Namespaces and pod names are DNS labels/subdomains: no `_`; a UID has none either.
    (!ns.is_empty() && !pod.is_empty() && !uid.is_empty() && !uid.contains('_')).then_some(uid)
}

/// The UIDs in `uids` that are gone: neither in `keep` (a pod with a worker, or a sandbox).
pub fn gone_uids<'a>(
    uids: impl IntoIterator<Item = &'a str>,
    keep: &HashSet<String>,
) -> Vec<String> {
    uids.into_iter()
        .filter(|u| !keep.contains(*u))
        .map(str::to_string)
        .collect()
}

/// The IDs of the sandboxes of pods that still exist (`live`) to remove, as upstream's
/// `evictSandboxes` for a pod that is not removed: of each pod's sandboxes, newest first, all
/// but the first that are inactive, i.e. neither ready nor holding a container (the IDs in
/// `with_containers`). The newest stays whatever its state: it is the one the pod's worker
/// uses or is making.
pub fn select_old_sandboxes(
    sandboxes: &[Sandbox],
    with_containers: &HashSet<&str>,
    live: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut by_pod: BTreeMap<&str, Vec<&Sandbox>> = BTreeMap::new();
    for s in sandboxes.iter().filter(|s| live(&s.pod.uid)) {
        by_pod.entry(s.pod.uid.as_str()).or_default().push(s);
    }
    let mut remove = Vec::new();
    for mut of_pod in by_pod.into_values() {
        of_pod.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        remove.extend(
            of_pod
                .iter()
                .skip(1)
                .filter(|s| {
                    s.state != SandboxState::Ready && !with_containers.contains(s.id.as_str())
                })
                .map(|s| s.id.clone()),
        );
    }
    remove
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn c(id: &str, name: &str, created: i64, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            sandbox_id: "s".into(),
            name: name.into(),
            restart_count: 0,
            image: "busybox".into(),
            state,
            pid: None,
            exit_code: None,
            reason: None,
            message: None,
            created_at: at(created),
            started_at: None,
            finished_at: None,
            log_path: PathBuf::new(),
        }
    }

    /// `all` as the collector sees them, every one in the pod `uid`.
    fn in_pod<'a>(uid: &'a str, all: &'a [ContainerStatus]) -> Vec<GcContainer<'a>> {
        all.iter()
            .map(|status| GcContainer {
                pod_uid: uid,
                status,
            })
            .collect()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn defaults_keep_the_newest_dead_instance_per_container_and_never_a_live_one() {
        let p = ContainerGcPolicy::default();
        assert_eq!(p.min_age, Duration::ZERO);
        assert_eq!(p.max_per_pod_container, 1);
        assert_eq!(p.max_containers, -1);
        let all = [
            c("a3", "a", 30, ContainerState::Running),
            c("a2", "a", 20, ContainerState::Exited),
            c("a1", "a", 10, ContainerState::Exited),
            c("a0", "a", 0, ContainerState::Exited),
            c("b1", "b", 10, ContainerState::Created),
            c("b0", "b", 0, ContainerState::Unknown),
            c("c0", "c", 0, ContainerState::Exited),
        ];
        let list = in_pod("u1", &all);
        assert_eq!(
            sorted(select_containers(&p, at(100), &list, |_| false)),
            ["a0", "a1"]
        );
        // A pod that is gone loses every dead container (its running ones are its teardown's).
        assert_eq!(
            sorted(select_containers(&p, at(100), &list, |_| true)),
            ["a0", "a1", "a2", "c0"]
        );
    }

    #[test]
    fn minimum_age_protects_young_dead_containers() {
        let p = ContainerGcPolicy {
            min_age: Duration::from_secs(60),
            max_per_pod_container: 0,
            max_containers: -1,
        };
        let all = [
            c("old", "a", 0, ContainerState::Exited),
            c("young", "a", 50, ContainerState::Exited),
        ];
        let list = in_pod("u", &all);
        assert_eq!(select_containers(&p, at(100), &list, |_| false), ["old"]);
        assert_eq!(select_containers(&p, at(100), &list, |_| true), ["old"]);
    }

    #[test]
    fn the_node_wide_limit_shares_evenly_then_takes_the_oldest() {
        let p = ContainerGcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: -1,
            max_containers: 3,
        };
        // Two units of three dead containers: an equal share is 1 each, then nothing more.
        let all = [
            c("a2", "a", 22, ContainerState::Exited),
            c("a1", "a", 11, ContainerState::Exited),
            c("a0", "a", 1, ContainerState::Exited),
            c("b2", "b", 20, ContainerState::Exited),
            c("b1", "b", 10, ContainerState::Exited),
            c("b0", "b", 0, ContainerState::Exited),
        ];
        let list = in_pod("u", &all);
        // (a2 and b2 are their containers' current instances: never collected.)
        assert_eq!(
            sorted(select_containers(&p, at(100), &list, |_| false)),
            ["a0", "b0"]
        );
        // Four units of one for a limit of 3: the share is at least one, so the oldest goes.
        let p = ContainerGcPolicy {
            max_containers: 3,
            ..p
        };
        let all = [
            c("w", "w", 3, ContainerState::Exited),
            c("x", "x", 1, ContainerState::Exited),
            c("y", "y", 2, ContainerState::Exited),
            c("z", "z", 0, ContainerState::Exited),
            c("w+", "w", 13, ContainerState::Running),
            c("x+", "x", 11, ContainerState::Running),
            c("y+", "y", 12, ContainerState::Running),
            c("z+", "z", 10, ContainerState::Running),
        ];
        let list = in_pod("u", &all);
        assert_eq!(select_containers(&p, at(100), &list, |_| false), ["z"]);
        // A limit of 0 removes every dead container.
        let p = ContainerGcPolicy {
            max_containers: 0,
            ..p
        };
        assert_eq!(
            sorted(select_containers(&p, at(100), &list, |_| false)),
            ["w", "x", "y", "z"]
        );
    }

    fn sandbox(id: &str, uid: &str, created: i64, state: SandboxState) -> Sandbox {
        Sandbox {
            id: id.into(),
            pod: kubenode_runtime::spec::PodInfo {
                uid: uid.into(),
                ..Default::default()
            },
            netns_path: PathBuf::new(),
            host_network: false,
            state,
            created_at: at(created),
        }
    }

    /// Upstream's `evictSandboxes` for pods that exist: the newest sandbox of a pod stays
    /// whatever its state; older ones go when they are not ready and hold no container.
    #[test]
    fn a_live_pods_older_inactive_sandboxes_go_and_its_newest_stays() {
        use SandboxState::{NotReady, Ready};
        let all = vec![
            // Pod a: the newest is not ready (being made): it stays; the two older inactive
            // ones go, the one with a container stays.
            sandbox("a1", "a", 10, NotReady),
            sandbox("a2", "a", 20, NotReady),
            sandbox("a3", "a", 30, NotReady),
            sandbox("a4", "a", 40, NotReady),
            // Pod b: one sandbox, not ready: stays.
            sandbox("b1", "b", 10, NotReady),
            // Pod c: an older ready one stays (upstream's "active").
            sandbox("c1", "c", 10, Ready),
            sandbox("c2", "c", 20, Ready),
            // Pod gone: not this function's (the gone pods' pass removes all of them).
            sandbox("g1", "gone", 10, NotReady),
            sandbox("g2", "gone", 20, NotReady),
        ];
        let with_containers: HashSet<&str> = ["a2"].into_iter().collect();
        let remove = select_old_sandboxes(&all, &with_containers, |uid| uid != "gone");
        assert_eq!(sorted(remove), vec!["a1".to_string(), "a3".to_string()]);
    }

    #[test]
    fn log_directory_names() {
        assert_eq!(
            log_dir_pod_uid("default_web-0_0b5c2c7e-1d2a-4c1e-9a51-1b1e2f3a4b5c"),
            Some("0b5c2c7e-1d2a-4c1e-9a51-1b1e2f3a4b5c")
        );
        assert_eq!(log_dir_pod_uid("kube-system_static-node0_abc"), Some("abc"));
        for other in ["", "lost+found", "a_b", "_b_c", "a__c", "a_b_c_d"] {
            assert_eq!(log_dir_pod_uid(other), None, "{other}");
        }
        let keep: HashSet<String> = ["u1".to_string()].into();
        assert_eq!(gone_uids(["u1", "u2"], &keep), ["u2"]);
    }
}
