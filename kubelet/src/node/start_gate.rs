//! The static pod start gate: at most one pod of a full name (name and namespace) runs at a
//! time, as upstream's pod workers guarantee (`pod_workers.go`: `allowPodStart`,
//! `allowStaticPodStart`, `startedStaticPodsByFullname`, `waitingToStartStaticPodsByFullname`).
//!
//! A static pod's manifest replaced by one of other content is a new UID with the same full
//! name: the new pod waits until the old one's worker has finished terminating it (containers
//! stopped within their grace period, sandbox, network and volumes torn down), so that its host
//! ports, its name's hostname and whatever the pod holds on the host are never taken twice.
//! Of several pods of one full name waiting, the first to arrive starts first.
//!
//! Only static pods (any source but the API server, [`is_static`]) are gated, as upstream: the
//! API server gives each pod its own UID and never two pods of one name in a namespace.
//!
//! Beyond upstream: a sandbox recovered after an agent restart that no pod owns any longer (an
//! orphan, torn down with a short grace period once every source has listed its pods) holds
//! back a static pod of its full name until it is removed. Upstream's kubelet kills such
//! runtime pods without holding the new pod, and a new instance then runs beside the old one
//! for a moment.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use k8s_openapi::api::core::v1::Pod;

/// Why a static pod does not start yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wait {
    /// The pod of this UID started and has not finished terminating.
    Started(String),
    /// The pod of this UID came first and waits to start too.
    Queued(String),
    /// A sandbox of the full name that no pod owns (this ID) is being removed.
    Orphan(String),
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::Started(uid) => write!(
                f,
                "pod {uid} of the same name and namespace has not finished terminating"
            ),
            Wait::Queued(uid) => write!(
                f,
                "pod {uid} of the same name and namespace is waiting to start first"
            ),
            Wait::Orphan(sandbox) => write!(
                f,
                "sandbox {sandbox} of a former pod of the same name and namespace is being removed"
            ),
        }
    }
}

/// Which static pod of each full name started, which wait, and which orphaned sandboxes are
/// being removed.
#[derive(Debug, Default)]
pub(super) struct StartGate {
    /// Full name to the UID of the pod that started and has not finished terminating.
    started: BTreeMap<String, String>,
    /// Full name to the UIDs waiting to start, in the order their workers were created.
    waiting: BTreeMap<String, VecDeque<String>>,
    /// Full name to the IDs of its orphaned sandboxes being removed.
    orphans: BTreeMap<String, BTreeSet<String>>,
}

impl StartGate {
    /// A worker was created for static pod `uid`: it waits its turn.
    pub(super) fn enqueue(&mut self, full_name: &str, uid: &str) {
        let queue = self.waiting.entry(full_name.to_string()).or_default();
        if !queue.iter().any(|u| u == uid) {
            queue.push_back(uid.to_string());
        }
    }

    /// Whether static pod `uid` may start now; if it may, it is the started pod of its full
    /// name from now on (until [`StartGate::finished`]). `wants_start` tells whether the pod
    /// of a UID queued ahead still means to start (upstream passes over one whose termination
    /// was requested or that is gone).
    pub(super) fn try_start(
        &mut self,
        full_name: &str,
        uid: &str,
        wants_start: impl Fn(&str) -> bool,
    ) -> Result<(), Wait> {
        if let Some(started) = self.started.get(full_name) {
            if started == uid {
                return Ok(());
            }
            return Err(Wait::Started(started.clone()));
        }
        if let Some(sandbox) = self.orphans.get(full_name).and_then(|s| s.first()) {
            return Err(Wait::Orphan(sandbox.clone()));
        }
        if let Some(queue) = self.waiting.get_mut(full_name) {
            while let Some(first) = queue.front() {
                if first == uid {
                    queue.pop_front();
                    break;
                }
                if wants_start(first) {
                    return Err(Wait::Queued(first.clone()));
                }
                queue.pop_front();
            }
            if queue.is_empty() {
                self.waiting.remove(full_name);
            }
        }
        self.started.insert(full_name.to_string(), uid.to_string());
        Ok(())
    }

    /// The worker of pod `uid` is done (the pod terminated and torn down, or never started):
    /// it is no longer the started pod of its full name nor waiting. Returns the UIDs still
    /// waiting for that full name, to wake.
    pub(super) fn finished(&mut self, full_name: &str, uid: &str) -> Vec<String> {
        if self.started.get(full_name).is_some_and(|u| u == uid) {
            self.started.remove(full_name);
        }
        if let Some(queue) = self.waiting.get_mut(full_name) {
            queue.retain(|u| u != uid);
            if queue.is_empty() {
                self.waiting.remove(full_name);
            }
        }
        self.waiters(full_name)
    }

    /// Orphaned sandbox `sandbox` of `full_name` is being removed.
    pub(super) fn orphan_removing(&mut self, full_name: &str, sandbox: &str) {
        self.orphans
            .entry(full_name.to_string())
            .or_default()
            .insert(sandbox.to_string());
    }

    /// Orphaned sandbox `sandbox` of `full_name` is removed (or its removal gave up). Returns
    /// the UIDs waiting for that full name, to wake.
    pub(super) fn orphan_removed(&mut self, full_name: &str, sandbox: &str) -> Vec<String> {
        if let Some(set) = self.orphans.get_mut(full_name) {
            set.remove(sandbox);
            if set.is_empty() {
                self.orphans.remove(full_name);
            }
        }
        self.waiters(full_name)
    }

    fn waiters(&self, full_name: &str) -> Vec<String> {
        self.waiting
            .get(full_name)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Upstream's pod full name (`BuildPodFullName`): `<name>_<namespace>`.
pub(super) fn full_name(name: &str, namespace: &str) -> String {
    format!("{name}_{namespace}")
}

/// The full name of `pod` (namespace `default` when unset).
pub(super) fn pod_full_name(pod: &Pod) -> String {
    full_name(
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

/// Upstream's `IsStaticPod`: a pod from a source other than the API server (the manifest
/// directory). A pod without a source annotation is not.
pub(super) fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::source::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s != crate::cluster::pods::API_SOURCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "web-n1_default";

    fn all_want(_: &str) -> bool {
        true
    }

    #[test]
    fn a_replaced_static_pod_starts_once_the_old_one_has_finished_terminating() {
        let mut gate = StartGate::default();
        gate.enqueue(WEB, "old");
        assert_eq!(gate.try_start(WEB, "old", all_want), Ok(()));
        // The manifest is replaced: the new UID waits while the old one terminates.
        gate.enqueue(WEB, "new");
        assert_eq!(
            gate.try_start(WEB, "new", all_want),
            Err(Wait::Started("old".into()))
        );
        // The old pod, started, keeps passing (a later pass of its worker).
        assert_eq!(gate.try_start(WEB, "old", all_want), Ok(()));
        assert_eq!(
            gate.try_start(WEB, "new", all_want),
            Err(Wait::Started("old".into()))
        );
        // Its worker finished: the waiting pod is to be woken, and starts.
        assert_eq!(gate.finished(WEB, "old"), vec!["new".to_string()]);
        assert_eq!(gate.try_start(WEB, "new", all_want), Ok(()));
        assert_eq!(
            gate.try_start(WEB, "old", all_want),
            Err(Wait::Started("new".into()))
        );
    }

    #[test]
    fn of_several_waiting_pods_the_first_to_arrive_starts_and_one_that_is_terminating_is_passed_over(
    ) {
        let mut gate = StartGate::default();
        for uid in ["a", "b", "c"] {
            gate.enqueue(WEB, uid);
        }
        assert_eq!(
            gate.try_start(WEB, "c", all_want),
            Err(Wait::Queued("a".into()))
        );
        // `a` was told to terminate before it started: `b` is next in line.
        let wants = |uid: &str| uid != "a";
        assert_eq!(
            gate.try_start(WEB, "c", wants),
            Err(Wait::Queued("b".into()))
        );
        assert_eq!(gate.try_start(WEB, "b", wants), Ok(()));
        assert_eq!(
            gate.try_start(WEB, "c", wants),
            Err(Wait::Started("b".into()))
        );
        // `a`'s worker finishing wakes the one still waiting; `b` still holds the name.
        assert_eq!(gate.finished(WEB, "a"), vec!["c".to_string()]);
        assert_eq!(
            gate.try_start(WEB, "c", wants),
            Err(Wait::Started("b".into()))
        );
        assert_eq!(gate.finished(WEB, "b"), vec!["c".to_string()]);
        assert_eq!(gate.try_start(WEB, "c", wants), Ok(()));
        assert_eq!(gate.finished(WEB, "c"), Vec::<String>::new());
        assert_eq!(gate.try_start(WEB, "d", all_want), Ok(()));
    }

    #[test]
    fn pods_of_other_full_names_do_not_wait_for_each_other() {
        let mut gate = StartGate::default();
        gate.enqueue(WEB, "a");
        gate.enqueue(&full_name("web-n1", "kube-system"), "b");
        gate.enqueue(&full_name("db-n1", "default"), "c");
        assert_eq!(gate.try_start(WEB, "a", all_want), Ok(()));
        assert_eq!(
            gate.try_start(&full_name("web-n1", "kube-system"), "b", all_want),
            Ok(())
        );
        assert_eq!(
            gate.try_start(&full_name("db-n1", "default"), "c", all_want),
            Ok(())
        );
    }

    #[test]
    fn an_orphaned_sandbox_of_the_full_name_holds_the_pod_until_it_is_removed() {
        let mut gate = StartGate::default();
        gate.orphan_removing(WEB, "sb1");
        gate.orphan_removing(WEB, "sb2");
        gate.enqueue(WEB, "new");
        assert_eq!(
            gate.try_start(WEB, "new", all_want),
            Err(Wait::Orphan("sb1".into()))
        );
        assert_eq!(gate.orphan_removed(WEB, "sb1"), vec!["new".to_string()]);
        assert_eq!(
            gate.try_start(WEB, "new", all_want),
            Err(Wait::Orphan("sb2".into()))
        );
        gate.orphan_removed(WEB, "sb2");
        assert_eq!(gate.try_start(WEB, "new", all_want), Ok(()));
        // Once started, a later orphan does not stop it.
        gate.orphan_removing(WEB, "sb3");
        assert_eq!(gate.try_start(WEB, "new", all_want), Ok(()));
    }

    #[test]
    fn a_pod_that_never_started_leaves_no_trace() {
        let mut gate = StartGate::default();
        gate.enqueue(WEB, "a");
        gate.enqueue(WEB, "b");
        gate.finished(WEB, "a");
        assert_eq!(gate.try_start(WEB, "b", all_want), Ok(()));
        gate.finished(WEB, "b");
        assert!(gate.started.is_empty() && gate.waiting.is_empty());
    }

    #[test]
    fn only_pods_of_a_source_other_than_the_api_server_are_static() {
        let with_source = |source: Option<&str>| {
            let mut pod = Pod::default();
            if let Some(s) = source {
                pod.metadata.annotations = Some(
                    [(
                        crate::source::CONFIG_SOURCE_ANNOTATION.to_string(),
                        s.to_string(),
                    )]
                    .into(),
                );
            }
            pod
        };
        assert!(is_static(&with_source(Some(crate::source::FILE_SOURCE))));
        assert!(!is_static(&with_source(Some(
            crate::cluster::pods::API_SOURCE
        ))));
        assert!(!is_static(&with_source(None)));
        let mut pod = with_source(None);
        pod.metadata.name = Some("web-n1".into());
        assert_eq!(pod_full_name(&pod), WEB);
    }
}
