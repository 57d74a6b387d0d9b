//! The node's pod table: each pod's latest state as its worker published it, the handle that
//! wakes or stops the worker, and what the proxy reads (the pods with the Services and
//! Endpoints).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use tokio::sync::{mpsc, watch};

use super::start_gate::{self, StartGate, Wait};
use super::{lock, ProxyInput};
use crate::api::ApiError;
use crate::source::Snapshot;

/// One pod of the table.
pub(super) struct PodEntry {
    /// The pod with its status as last published; shared with the proxy's input (and,
    /// until its worker first publishes, with the worker's desired pod).
    pub(super) pod: Arc<Pod>,
    pub(super) sandbox_id: Option<String>,
    /// Sends the worker its desired pod (`None`: terminate it); absent for a rejected pod.
    pub(super) worker: Option<watch::Sender<Option<Arc<Pod>>>>,
    /// The pod came back (the same UID desired again: a static pod's manifest restored to
    /// content it had before) after its worker was told to terminate it: once the worker has
    /// finished, the pod is admitted again (upstream's `restartRequested`).
    pub(super) restart_requested: bool,
}

impl PodEntry {
    /// Whether its worker runs it and it has not finished (upstream's active pods).
    pub(super) fn is_active(&self) -> bool {
        let phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        self.worker.is_some() && !phase.is_some_and(crate::status::is_terminal)
    }
}

/// The pods of the node by UID, and the proxy's input built from them.
pub(super) struct PodTable {
    entries: Mutex<BTreeMap<String, PodEntry>>,
    proxy_tx: watch::Sender<ProxyInput>,
    /// Services with allocated ClusterIPs and their endpoints, from the proxy (`None` without
    /// one).
    services: Mutex<Option<(Vec<Service>, Vec<Endpoints>)>>,
    /// Told each pod that is gone for good (its worker finished terminating it, or a rejected
    /// pod deleted): the status manager's cue for the final DELETE.
    terminated: Mutex<Vec<mpsc::UnboundedSender<Pod>>>,
    /// Notified when a worker whose pod has [`PodEntry::restart_requested`] finished: the
    /// kubelet applies its sources' last snapshot again, which starts the pod anew.
    pub(super) restart: tokio::sync::Notify,
    /// Which static pod of each full name may run (`start_gate`). Locked after `entries` when
    /// both are.
    gate: Mutex<StartGate>,
}

impl PodTable {
    pub(super) fn new() -> PodTable {
        PodTable {
            entries: Mutex::new(BTreeMap::new()),
            proxy_tx: watch::channel(ProxyInput::default()).0,
            services: Mutex::new(None),
            terminated: Mutex::new(Vec::new()),
            restart: tokio::sync::Notify::new(),
            gate: Mutex::new(StartGate::default()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PodEntry>> {
        lock(&self.entries, "pods")
    }

    pub(super) fn proxy_input(&self) -> watch::Receiver<ProxyInput> {
        self.proxy_tx.subscribe()
    }

    pub(super) fn set_services(&self, services: Vec<Service>, endpoints: Vec<Endpoints>) {
        *lock(&self.services, "services") = Some((services, endpoints));
    }

    /// The Services pods see and their endpoints: the proxy's (with the ClusterIPs it
    /// allocated, and in cluster mode the API server's), plus the manifests' own that the proxy
    /// has not taken in yet. The proxy's set lags behind the manifests by a sync: a Service
    /// the kubelet already listed must not vanish from a pod's environment meanwhile.
    pub(super) fn known_services(&self) -> (Vec<Service>, Vec<Endpoints>) {
        let allocated = lock(&self.services, "services").clone();
        let input = self.proxy_tx.borrow();
        let Some((mut services, mut endpoints)) = allocated else {
            return (input.services.clone(), input.endpoints.clone());
        };
        fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
            (
                m.namespace.as_deref().unwrap_or("default"),
                m.name.as_deref().unwrap_or_default(),
            )
        }
        let known: std::collections::BTreeSet<(String, String)> = services
            .iter()
            .map(|s| key(&s.metadata))
            .map(|(n, m)| (n.to_string(), m.to_string()))
            .collect();
        let missing = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            let (n, name) = key(m);
            !known.contains(&(n.to_string(), name.to_string()))
        };
        endpoints.extend(
            input
                .endpoints
                .iter()
                .filter(|e| missing(&e.metadata))
                .cloned(),
        );
        services.extend(
            input
                .services
                .iter()
                .filter(|s| missing(&s.metadata))
                .cloned(),
        );
        (services, endpoints)
    }

    /// Wakes the worker of pod `uid` (a no-op for a pod without one).
    pub(super) fn wake(&self, uid: &str) {
        let pods = self.lock();
        if let Some(worker) = pods.get(uid).and_then(|e| e.worker.as_ref()) {
            worker.send_modify(|_| {});
        }
    }

    /// The pod `uid` as last published, with its sandbox.
    pub(super) fn get(&self, uid: &str) -> Option<(Arc<Pod>, Option<String>)> {
        self.lock()
            .get(uid)
            .map(|e| (e.pod.clone(), e.sandbox_id.clone()))
    }

    /// Called by workers: the pod's latest state.
    /// Workers call this after every pass; most passes change nothing, and then nothing is
    /// cloned or sent on (the proxy would otherwise re-read every pod every second per pod).
    pub(super) fn set_pod(&self, uid: &str, pod: Pod, sandbox_id: Option<String>) {
        let mut pods = self.lock();
        let Some(e) = pods.get_mut(uid) else {
            return;
        };
        if *e.pod == pod && e.sandbox_id == sandbox_id {
            return;
        }
        if let Some(since) = started_now(&e.pod, &pod) {
            crate::metrics::metrics().pod_started(since);
        }
        e.pod = Arc::new(pod);
        e.sandbox_id = sandbox_id;
        drop(pods);
        self.publish_proxy(None);
    }

    /// Called by a worker when its pod is gone for good (and, when the pod was desired again
    /// meanwhile, the cue to start it anew).
    pub(super) fn forget(&self, uid: &str) {
        let removed = self.lock().remove(uid);
        self.publish_proxy(None);
        if let Some(e) = removed {
            // The pod's full name is free: the static pods waiting for it try again.
            let waiting =
                lock(&self.gate, "start gate").finished(&start_gate::pod_full_name(&e.pod), uid);
            for other in waiting {
                self.wake(&other);
            }
            self.notify_terminated(&e.pod);
            if e.restart_requested {
                tracing::info!(pod_uid = uid, "the pod is wanted again: admitting it anew");
                self.restart.notify_one();
            }
        }
    }

    /// A worker is being created for `pod`: a static pod takes its place in the start gate's
    /// queue of its full name.
    pub(super) fn enqueue_start(&self, pod: &Pod, uid: &str) {
        if start_gate::is_static(pod) {
            lock(&self.gate, "start gate").enqueue(&start_gate::pod_full_name(pod), uid);
        }
    }

    /// Whether the worker of `pod` may start it (make its sandbox, start containers): always
    /// for a pod from the API server; for a static pod, once no other pod of its full name runs
    /// or is terminating and none queued before it waits (see `start_gate`).
    pub(super) fn allow_start(&self, uid: &str, pod: &Pod) -> Result<(), Wait> {
        if !start_gate::is_static(pod) {
            return Ok(());
        }
        let entries = self.lock();
        // A pod queued ahead still means to start while its worker has not been told to
        // terminate it.
        let wants_start = |other: &str| {
            entries
                .get(other)
                .and_then(|e| e.worker.as_ref())
                .is_some_and(|w| {
                    w.borrow()
                        .as_ref()
                        .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
                })
        };
        lock(&self.gate, "start gate").try_start(&start_gate::pod_full_name(pod), uid, wants_start)
    }

    /// A sandbox of `namespace/name` that no pod owns any more is being removed: a static pod
    /// of that full name does not start meanwhile.
    pub(super) fn orphan_removing(&self, name: &str, namespace: &str, sandbox: &str) {
        lock(&self.gate, "start gate")
            .orphan_removing(&start_gate::full_name(name, namespace), sandbox);
    }

    /// The orphaned sandbox is removed: the pods waiting for it are woken.
    pub(super) fn orphan_removed(&self, name: &str, namespace: &str, sandbox: &str) {
        let waiting = lock(&self.gate, "start gate")
            .orphan_removed(&start_gate::full_name(name, namespace), sandbox);
        for uid in waiting {
            self.wake(&uid);
        }
    }

    /// A receiver of every pod gone for good from now on.
    pub(super) fn subscribe_terminated(&self) -> mpsc::UnboundedReceiver<Pod> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.terminated, "terminated").push(tx);
        rx
    }

    /// Tells the subscribers that `pod` is gone for good.
    pub(super) fn notify_terminated(&self, pod: &Pod) {
        lock(&self.terminated, "terminated").retain(|tx| tx.send(Pod::clone(pod)).is_ok());
    }

    /// Sends the proxy the pods, and the snapshot's Services and Endpoints when given.
    pub(super) fn publish_proxy(&self, snapshot: Option<&Snapshot>) {
        let pods = self.list();
        self.proxy_tx.send_modify(|input| {
            if let Some(s) = snapshot {
                input.services = s.services.clone();
                input.endpoints = s.endpoints.clone();
            }
            input.pods = pods;
        });
    }

    /// The pods whose workers run them and that have not finished (upstream's active pods),
    /// shared: each worker that makes a sandbox asks, and 100 pods starting at once must not
    /// hold 100 copies of every pod.
    pub(super) fn active_pods(&self) -> Vec<Arc<Pod>> {
        self.lock()
            .values()
            .filter(|e| e.is_active())
            .map(|e| e.pod.clone())
            .collect()
    }

    /// The pods as last published (shared, not copied).
    pub(super) fn list(&self) -> Vec<Arc<Pod>> {
        self.lock().values().map(|e| e.pod.clone()).collect()
    }

    /// The pod `namespace/name` with its sandbox.
    pub(super) fn find(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(Arc<Pod>, Option<String>), ApiError> {
        self.lock()
            .values()
            .find(|e| {
                e.pod.metadata.name.as_deref() == Some(name)
                    && e.pod.metadata.namespace.as_deref().unwrap_or("default") == namespace
            })
            .map(|e| (e.pod.clone(), e.sandbox_id.clone()))
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "pods \"{name}\" not found in namespace {namespace}"
                ))
            })
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// How long after the kubelet first saw it (`kubernetes.io/config.seen`, else the status's
/// `startTime`) a pod whose status goes from not running to `Running` started: upstream's
/// `kubelet_pod_start_duration_seconds`.
fn started_now(before: &Pod, after: &Pod) -> Option<std::time::Duration> {
    if phase(before) == Some("Running") || phase(after) != Some("Running") {
        return None;
    }
    let seen = after
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::source::CONFIG_SEEN_ANNOTATION))
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .or_else(|| after.status.as_ref()?.start_time.as_ref().map(|t| t.0))?;
    let since = k8s_openapi::jiff::Timestamp::now().duration_since(seen);
    std::time::Duration::try_from(since).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A static pod `name` of UID `uid`, as the manifest directory gives it.
    fn static_pod(name: &str, uid: &str) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some(uid.into());
        pod.metadata.annotations = Some(
            [(
                crate::source::CONFIG_SOURCE_ANNOTATION.to_string(),
                crate::source::FILE_SOURCE.to_string(),
            )]
            .into(),
        );
        Arc::new(pod)
    }

    /// Enters `pod` in the table as `start_worker` does; returns its worker's receiver.
    fn add(table: &PodTable, pod: &Arc<Pod>) -> watch::Receiver<Option<Arc<Pod>>> {
        let uid = pod.metadata.uid.clone().unwrap();
        let (tx, rx) = watch::channel(Some(pod.clone()));
        let mut entries = table.lock();
        table.enqueue_start(pod, &uid);
        entries.insert(
            uid,
            PodEntry {
                pod: pod.clone(),
                sandbox_id: None,
                worker: Some(tx),
                restart_requested: false,
            },
        );
        rx
    }

    #[test]
    fn a_static_pod_waits_for_the_old_pod_of_its_name_and_is_woken_when_it_is_forgotten() {
        let table = PodTable::new();
        let old = static_pod("web-n1", "old");
        let _old_rx = add(&table, &old);
        assert_eq!(table.allow_start("old", &old), Ok(()));
        // The manifest replaced: the old pod's worker is told to terminate it.
        if let Some(w) = &table.lock()["old"].worker {
            w.send_replace(None);
        }
        let new = static_pod("web-n1", "new");
        let mut new_rx = add(&table, &new);
        new_rx.borrow_and_update();
        assert_eq!(
            table.allow_start("new", &new),
            Err(Wait::Started("old".into()))
        );
        // Another name is not held.
        let other = static_pod("db-n1", "other");
        let _other_rx = add(&table, &other);
        assert_eq!(table.allow_start("other", &other), Ok(()));

        table.forget("old");
        assert!(new_rx.has_changed().unwrap(), "the waiting worker is woken");
        assert_eq!(table.allow_start("new", &new), Ok(()));
    }

    #[test]
    fn a_pod_queued_first_but_told_to_terminate_before_it_started_does_not_hold_the_next() {
        let table = PodTable::new();
        let first = static_pod("web-n1", "first");
        let _first_rx = add(&table, &first);
        let second = static_pod("web-n1", "second");
        let _second_rx = add(&table, &second);
        assert_eq!(
            table.allow_start("second", &second),
            Err(Wait::Queued("first".into()))
        );
        if let Some(w) = &table.lock()["first"].worker {
            w.send_replace(None);
        }
        assert_eq!(table.allow_start("second", &second), Ok(()));
    }

    #[test]
    fn an_api_pod_is_never_held() {
        let table = PodTable::new();
        let old = static_pod("web-n1", "old");
        let _old_rx = add(&table, &old);
        assert_eq!(table.allow_start("old", &old), Ok(()));
        let mut api = Pod::clone(&static_pod("web-n1", "api"));
        api.metadata.annotations = Some(
            [(
                crate::source::CONFIG_SOURCE_ANNOTATION.to_string(),
                crate::cluster::pods::API_SOURCE.to_string(),
            )]
            .into(),
        );
        let api = Arc::new(api);
        let _api_rx = add(&table, &api);
        assert_eq!(table.allow_start("api", &api), Ok(()));
    }

    #[test]
    fn an_orphaned_sandbox_holds_a_static_pod_of_its_name_until_removed() {
        let table = PodTable::new();
        table.orphan_removing("web-n1", "default", "sb1");
        let new = static_pod("web-n1", "new");
        let mut rx = add(&table, &new);
        rx.borrow_and_update();
        assert_eq!(
            table.allow_start("new", &new),
            Err(Wait::Orphan("sb1".into()))
        );
        table.orphan_removed("web-n1", "default", "sb1");
        assert!(rx.has_changed().unwrap(), "the waiting worker is woken");
        assert_eq!(table.allow_start("new", &new), Ok(()));
    }
}
