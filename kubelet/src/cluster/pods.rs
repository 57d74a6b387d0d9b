//! The API pod source (upstream `pkg/kubelet/config/apiserver.go`) and its merge with the
//! static-pod file source.
//!
//! One list+watch of the pods bound to this node (`fieldSelector=spec.nodeName=<node>`) through
//! kube-rs's `watcher` (list, watch from its resourceVersion, relist on 410 Gone, re-watch with
//! back-off on a broken connection). `spec.nodeName` is checked again here, so a server that
//! ignores the selector cannot make the node run another node's pods; mirror pods (annotation
//! `kubernetes.io/config.mirror`) are the node's own reflections of its static pods and are
//! never run. A relist replaces the set only once complete (`InitDone`): the same pods relisted
//! are the same UIDs, and no pod restarts.
//!
//! [`start`] merges the last file [`Snapshot`] with the last API pod set and sends combined
//! snapshots to `Kubelet::run`, so the same pod workers run both. A combined snapshot is
//! [`Snapshot::incomplete`] until both sources have delivered once (upstream's "sources
//! ready"): the kubelet collects no orphans before, so a restarted agent whose API server is
//! unreachable starts its static pods but tears down none of the API pods it finds running.
//! API pods keep their API name and UID; they get the API defaults file pods get
//! (`source::apply_pod_defaults`) and `kubernetes.io/config.source: api`; the kubelet validates
//! them at admission as file pods are validated at read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::{mpsc, watch};

use super::mirror::{key as mirror_key, mirror_hash};
use crate::source::{
    apply_pod_defaults, Snapshot, CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION,
};

/// The source name of API pods (`kubernetes.io/config.source`), as upstream.
pub const API_SOURCE: &str = "api";

/// The rejection reason of an API pod that sets a field kubenode does not implement (or that
/// fails the checks file pods get); the message is the validation's, naming the field.
/// Upstream has no such reason: its kubelet runs whatever the API server accepted.
pub const UNSUPPORTED_POD_SPEC: &str = "UnsupportedPodSpec";

/// The pods bound to this node as the API server last listed and watched them, with their API
/// status, by UID.
#[derive(Debug, Clone, Default)]
pub struct ApiPods {
    /// The first list has completed.
    pub listed: bool,
    /// The node's pods (mirror pods excluded), by UID; shared, so that the status manager's
    /// copy of the view copies no pod.
    pub pods: BTreeMap<String, Arc<Pod>>,
    /// The node's mirror pods, by `namespace/name`.
    pub mirrors: BTreeMap<String, Pod>,
}

impl ApiPods {
    fn insert(&mut self, uid: String, pod: Pod) {
        if mirror_hash(&pod).is_some() {
            self.mirrors.insert(mirror_key(&pod), pod);
        } else {
            self.pods.insert(uid, Arc::new(pod));
        }
    }

    /// Removes the pod `pod` (by UID, or its mirror pod); whether it was there.
    fn remove(&mut self, pod: &Pod) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let k = mirror_key(pod);
        let mirror = self
            .mirrors
            .get(&k)
            .is_some_and(|m| m.metadata.uid.as_deref() == Some(uid));
        if mirror {
            self.mirrors.remove(&k);
        }
        self.pods.remove(uid).is_some() || mirror
    }
}

/// Starts the API pod source for node `node` and the merge with the file source: file
/// snapshots come in on `files`; the returned receivers give the combined snapshots for
/// `Kubelet::run` and the API's view of the node's pods (for the status manager).
pub fn start(
    client: kube::Client,
    node: String,
    files: mpsc::Receiver<Snapshot>,
) -> (mpsc::Receiver<Snapshot>, watch::Receiver<ApiPods>) {
    let (api_tx, api_rx) = watch::channel(ApiPods::default());
    let (out_tx, out_rx) = mpsc::channel(4);
    let (statics_tx, statics_rx) = watch::channel(Vec::new());
    tokio::spawn(watch_pods(client.clone(), node.clone(), api_tx));
    tokio::spawn(merge(files, api_rx.clone(), out_tx, statics_tx));
    tokio::spawn(super::mirror::run(client, node, statics_rx, api_rx.clone()));
    (out_rx, api_rx)
}

/// Whether the API pod `pod` is one this node runs: bound to `node` and not a mirror pod.
pub fn is_ours(pod: &Pod, node: &str) -> bool {
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_MIRROR_ANNOTATION));
    bound && !mirror && pod.metadata.uid.is_some()
}

/// The pod the kubelet is given for the API pod `pod`: without its API status and bookkeeping
/// (a status update must not look like a new desired pod), with the API defaults and the
/// `kubernetes.io/config.source: api` annotation.
pub fn desired_pod(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    pod.status = None;
    pod.metadata.resource_version = None;
    pod.metadata.managed_fields = None;
    apply_pod_defaults(&mut pod);
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CONFIG_SOURCE_ANNOTATION.into(), API_SOURCE.into());
    pod
}

/// The list+watch of the node's pods, for as long as the process runs.
async fn watch_pods(client: kube::Client, node: String, tx: watch::Sender<ApiPods>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut relist = ApiPods::default();
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // kube-rs retries with back-off; say it once per outage.
                if !failing {
                    tracing::warn!(error = %e, "watching the node's pods (retrying with back-off)");
                }
                failing = true;
                continue;
            }
        };
        if failing {
            tracing::info!("watching the node's pods again");
            failing = false;
        }
        match event {
            Event::Init => relist = ApiPods::default(),
            Event::InitApply(pod) => {
                if let Some(uid) = accepted(&pod, &node) {
                    relist.insert(uid, pod);
                }
            }
            Event::InitDone => {
                let mut listed = std::mem::take(&mut relist);
                listed.listed = true;
                tx.send_replace(listed);
            }
            Event::Apply(pod) => {
                if let Some(uid) = accepted(&pod, &node) {
                    tx.send_modify(|view| view.insert(uid, pod));
                } else {
                    tx.send_if_modified(|view| view.remove(&pod));
                }
            }
            Event::Delete(pod) => {
                tx.send_if_modified(|view| view.remove(&pod));
            }
        }
    }
}

/// The UID of `pod` when it is bound to this node (a pod to run, or a mirror pod); a pod
/// bound elsewhere is logged and left alone.
fn accepted(pod: &Pod, node: &str) -> Option<String> {
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if bound == Some(node) {
        return pod.metadata.uid.clone();
    }
    {
        tracing::warn!(
            pod = ?pod.metadata.name,
            namespace = ?pod.metadata.namespace,
            node_name = ?bound,
            "the API server sent a pod bound to another node; not running it"
        );
    }
    None
}

/// Sends a combined snapshot each time either source changes what it says (an API pod's
/// status alone is no change).
async fn merge(
    mut files: mpsc::Receiver<Snapshot>,
    mut api: watch::Receiver<ApiPods>,
    out: mpsc::Sender<Snapshot>,
    statics: watch::Sender<Vec<Arc<Pod>>>,
) {
    let mut file: Option<Snapshot> = None;
    // A file snapshot's errors are recorded once, with the snapshot that brought them.
    let mut errors = Vec::new();
    let mut api_open = true;
    let mut last: Option<Snapshot> = None;
    let mut desired = DesiredPods::default();
    loop {
        tokio::select! {
            s = files.recv() => match s {
                Some(s) => {
                    errors = s.errors.clone();
                    statics.send_replace(s.pods.clone()); // shared, not copied
                    file = Some(s);
                }
                None => return,
            },
            r = api.changed(), if api_open => {
                if r.is_err() {
                    api_open = false;
                    continue;
                }
            }
        }
        let snapshot = combine(
            file.as_ref(),
            &api.borrow_and_update(),
            &mut errors,
            &mut desired,
        );
        // Most API events only change a pod's status (the kubelet's own writes among them):
        // the desired pods are the same, and the kubelet is not bothered.
        if last.as_ref() == Some(&snapshot) {
            continue;
        }
        last = Some(snapshot.clone());
        if out.send(snapshot).await.is_err() {
            return;
        }
    }
}

/// The desired pods made of the API pods ([`desired_pod`]), by UID, with the
/// `resourceVersion` each was made from (the API server gives every write of an object a new
/// one; a pod without one is made again each time). Most watch events are status writes (the
/// kubelet's own among them): the pod's version changed, its desired pod did not. The cache makes each
/// desired pod once per version, and keeps the allocation while its content stays the same, so
/// that the snapshots the kubelet keeps and each worker's desired pod share one copy.
#[derive(Debug, Default)]
struct DesiredPods(HashMap<String, (Option<String>, Arc<Pod>)>);

impl DesiredPods {
    /// The desired pod of API pod `pod` (UID `uid`).
    fn of(&mut self, uid: &str, pod: &Pod) -> Arc<Pod> {
        let version = pod.metadata.resource_version.as_deref();
        match self.0.get_mut(uid) {
            Some((made_from, desired)) => {
                if version.is_none() || made_from.as_deref() != version {
                    let new = desired_pod(pod);
                    if **desired != new {
                        *desired = Arc::new(new);
                    }
                    *made_from = version.map(str::to_string);
                }
                Arc::clone(desired)
            }
            None => {
                let desired = Arc::new(desired_pod(pod));
                self.0.insert(
                    uid.to_string(),
                    (version.map(str::to_string), Arc::clone(&desired)),
                );
                desired
            }
        }
    }
}

/// The file snapshot (or an empty one) with the API pods added.
fn combine(
    file: Option<&Snapshot>,
    api: &ApiPods,
    errors: &mut Vec<crate::source::SourceError>,
    desired: &mut DesiredPods,
) -> Snapshot {
    let mut snapshot = file.cloned().unwrap_or_default();
    snapshot.errors = std::mem::take(errors);
    snapshot.incomplete = file.is_none() || !api.listed;
    desired.0.retain(|uid, _| api.pods.contains_key(uid));
    snapshot
        .pods
        .extend(api.pods.iter().map(|(uid, pod)| desired.of(uid, pod)));
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};

    fn api_pod(name: &str, uid: &str, node: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some(uid.into());
        pod.metadata.resource_version = Some("7".into());
        pod.spec = Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox:1.36".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        pod
    }

    #[test]
    fn only_pods_bound_here_and_not_mirrors_are_ours() {
        assert!(is_ours(&api_pod("a", "u1", "n1"), "n1"));
        assert!(!is_ours(&api_pod("a", "u1", "n2"), "n1"));
        let mut mirror = api_pod("a", "u1", "n1");
        mirror.metadata.annotations = Some(
            [(CONFIG_MIRROR_ANNOTATION.to_string(), "h".to_string())]
                .into_iter()
                .collect(),
        );
        assert!(!is_ours(&mirror, "n1"));
    }

    #[test]
    fn a_pod_bound_elsewhere_is_not_accepted_even_if_the_server_sends_it() {
        assert_eq!(
            accepted(&api_pod("a", "u1", "n1"), "n1").as_deref(),
            Some("u1")
        );
        assert_eq!(accepted(&api_pod("a", "u1", "n2"), "n1"), None);
        let mut unbound = api_pod("a", "u1", "n1");
        unbound.spec.as_mut().unwrap().node_name = None;
        assert_eq!(accepted(&unbound, "n1"), None);
    }

    #[test]
    fn mirror_pods_are_kept_apart_and_never_run() {
        let mut view = ApiPods::default();
        let mut mirror = api_pod("st-n1", "m1", "n1");
        mirror.metadata.annotations = Some(
            [(CONFIG_MIRROR_ANNOTATION.to_string(), "h".to_string())]
                .into_iter()
                .collect(),
        );
        view.insert("m1".into(), mirror.clone());
        view.insert("u1".into(), api_pod("web", "u1", "n1"));
        view.listed = true;
        assert_eq!(view.mirrors.len(), 1);
        let s = combine(
            Some(&Snapshot::default()),
            &view,
            &mut vec![],
            &mut DesiredPods::default(),
        );
        let uids: Vec<_> = s
            .pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        assert_eq!(uids, ["u1"]);
        // A deleted mirror leaves the view; one of another UID under the name does not remove it.
        let mut other = mirror.clone();
        other.metadata.uid = Some("m2".into());
        assert!(!view.remove(&other));
        assert!(view.remove(&mirror));
        assert!(view.mirrors.is_empty());
    }

    #[test]
    fn desired_pod_keeps_name_and_uid_drops_status_and_version() {
        let d = desired_pod(&api_pod("web", "u1", "n1"));
        assert_eq!(d.metadata.name.as_deref(), Some("web"));
        assert_eq!(d.metadata.uid.as_deref(), Some("u1"));
        assert!(d.status.is_none());
        assert!(d.metadata.resource_version.is_none());
        assert_eq!(
            d.metadata.annotations.unwrap()[CONFIG_SOURCE_ANNOTATION],
            API_SOURCE
        );
        assert_eq!(
            d.spec.unwrap().containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        // A status change of the API pod is no change of the desired pod.
        let mut changed = api_pod("web", "u1", "n1");
        changed.status.as_mut().unwrap().phase = Some("Running".into());
        changed.metadata.resource_version = Some("8".into());
        assert_eq!(
            desired_pod(&changed),
            desired_pod(&api_pod("web", "u1", "n1"))
        );
    }

    #[tokio::test]
    async fn a_status_change_in_the_api_sends_no_snapshot() {
        let (files_tx, files_rx) = mpsc::channel(4);
        let (api_tx, api_rx) = watch::channel(ApiPods::default());
        let (out_tx, mut out) = mpsc::channel(4);
        let (statics_tx, _statics) = watch::channel(Vec::new());
        tokio::spawn(merge(files_rx, api_rx, out_tx, statics_tx));
        files_tx.send(Snapshot::default()).await.unwrap();
        assert!(out.recv().await.unwrap().incomplete);
        api_tx.send_modify(|v| {
            v.listed = true;
            v.pods
                .insert("u1".into(), Arc::new(api_pod("web", "u1", "n1")));
        });
        let s = out.recv().await.unwrap();
        assert!(!s.incomplete);
        assert_eq!(s.pods.len(), 1);
        // The kubelet's own status write comes back through the watch: nothing to send.
        api_tx.send_modify(|v| {
            let p = Arc::make_mut(v.pods.get_mut("u1").unwrap());
            p.status.as_mut().unwrap().phase = Some("Running".into());
            p.metadata.resource_version = Some("9".into());
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(out.try_recv().is_err(), "a snapshot for a status change");
        // A label change is a change of the desired pod (a write: a new resourceVersion).
        api_tx.send_modify(|v| {
            let p = Arc::make_mut(v.pods.get_mut("u1").unwrap());
            p.metadata.labels = Some([("a".to_string(), "b".to_string())].into_iter().collect());
            p.metadata.resource_version = Some("10".into());
        });
        let s = out.recv().await.unwrap();
        assert!(s.pods[0]
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l["a"] == "b"));
        drop(files_tx);
        assert!(out.recv().await.is_none());
    }

    #[test]
    fn an_unchanged_desired_pod_is_one_shared_copy_across_snapshots() {
        let mut api = ApiPods {
            listed: true,
            ..Default::default()
        };
        api.pods
            .insert("u1".into(), Arc::new(api_pod("web", "u1", "n1")));
        api.pods
            .insert("u2".into(), Arc::new(api_pod("db", "u2", "n1")));
        let mut desired = DesiredPods::default();
        let file = Snapshot::default();
        let first = combine(Some(&file), &api, &mut vec![], &mut desired);
        // A status write (a new resourceVersion) of u1 and a label change of u2.
        let p = Arc::make_mut(api.pods.get_mut("u1").unwrap());
        p.status.as_mut().unwrap().phase = Some("Running".into());
        p.metadata.resource_version = Some("8".into());
        let p = Arc::make_mut(api.pods.get_mut("u2").unwrap());
        p.metadata.labels = Some([("a".to_string(), "b".to_string())].into_iter().collect());
        p.metadata.resource_version = Some("9".into());
        let second = combine(Some(&file), &api, &mut vec![], &mut desired);
        let by_uid = |s: &Snapshot, uid: &str| {
            s.pods
                .iter()
                .find(|p| p.metadata.uid.as_deref() == Some(uid))
                .cloned()
                .unwrap()
        };
        assert!(Arc::ptr_eq(&by_uid(&first, "u1"), &by_uid(&second, "u1")));
        assert!(!Arc::ptr_eq(&by_uid(&first, "u2"), &by_uid(&second, "u2")));
        assert!(by_uid(&second, "u2")
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l["a"] == "b"));
        // A pod gone from the API leaves the cache.
        api.pods.remove("u1");
        let third = combine(Some(&file), &api, &mut vec![], &mut desired);
        assert_eq!(third.pods.len(), 1);
        assert_eq!(desired.0.len(), 1);
    }

    #[test]
    fn combined_snapshot_is_incomplete_until_both_sources_delivered() {
        let mut api = ApiPods::default();
        api.pods
            .insert("u1".into(), Arc::new(api_pod("web", "u1", "n1")));
        let mut errors = vec![];
        let s = combine(None, &api, &mut errors, &mut DesiredPods::default());
        assert!(s.incomplete);
        assert_eq!(s.pods.len(), 1);
        // The file source's ConfigMaps and Secrets (the static pods') go through with it.
        let file = Snapshot {
            config_maps: std::sync::Arc::new(vec![Default::default()]),
            secrets: std::sync::Arc::new(vec![Default::default()]),
            ..Default::default()
        };
        assert!(combine(Some(&file), &api, &mut errors, &mut DesiredPods::default()).incomplete);
        api.listed = true;
        let s = combine(Some(&file), &api, &mut errors, &mut DesiredPods::default());
        assert!(!s.incomplete);
        assert_eq!(s.pods[0].metadata.uid.as_deref(), Some("u1"));
        assert_eq!((s.config_maps.len(), s.secrets.len()), (1, 1));
    }
}
