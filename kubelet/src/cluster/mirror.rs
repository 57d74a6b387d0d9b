//! Mirror pods (upstream `pkg/kubelet/pod/mirror_client.go` and the kubelet's
//! `syncPod` mirror handling): each static pod of the manifest directory gets a pod in the API
//! so that the cluster sees it.
//!
//! The mirror pod is the static pod as the file source made it (name `<name>-<node>`, its spec,
//! labels and annotations, `kubernetes.io/config.*` included) plus
//! `kubernetes.io/config.mirror: <config.hash>` and an ownerReference to the Node (controller),
//! without UID or status. [`run`] reconciles on each change of the static pods or of the API's
//! mirror pods, and every 10 s: a missing mirror pod is created; one whose hash is not the
//! static pod's (the manifest changed) or that is being deleted (`kubectl delete`) is deleted
//! (grace 0, UID precondition) and created again; one whose static pod is gone is deleted. A
//! mirror pod's deletion never stops the static pod: the API source never runs mirror pods.
//! Without the Node in the API (it is not registered yet) nothing is created; the next pass
//! tries again. Nothing is planned before both the API's first list and the file source's
//! first read (before it, every static pod would look gone).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::Api;
use tokio::sync::watch;

use super::pods::ApiPods;
use crate::source::{CONFIG_HASH_ANNOTATION, CONFIG_MIRROR_ANNOTATION};

/// How often the mirror pods are checked without a change (upstream's `syncPeriod`).
const RESYNC: Duration = Duration::from_secs(10);

/// The hash of the static pod a mirror pod reflects (its `kubernetes.io/config.mirror`).
pub fn mirror_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_MIRROR_ANNOTATION))
        .map(String::as_str)
}

/// `namespace/name` of a pod.
pub fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The mirror pod of static pod `pod` on node `node` (whose Node has UID `node_uid`).
pub fn mirror_pod(pod: &Pod, node: &str, node_uid: &str) -> Pod {
    let mut mirror = pod.clone();
    let hash = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
        .or_else(|| pod.metadata.uid.clone())
        .unwrap_or_default();
    let meta = &mut mirror.metadata;
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(CONFIG_MIRROR_ANNOTATION.into(), hash);
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: node_uid.into(),
        controller: Some(true),
        ..OwnerReference::default()
    }]);
    mirror.status = None;
    mirror
}

/// What to do about the mirror pods, given the static pods and the API's mirror pods (both by
/// `namespace/name`): the mirror pods to delete, then the static pods to mirror.
pub fn plan<'a>(
    statics: &'a BTreeMap<String, Pod>,
    mirrors: &'a BTreeMap<String, Pod>,
) -> (Vec<&'a Pod>, Vec<&'a Pod>) {
    let mut delete = Vec::new();
    let mut create = Vec::new();
    for (k, mirror) in mirrors {
        let current = statics.get(k).is_some_and(|s| {
            mirror.metadata.deletion_timestamp.is_none()
                && mirror_hash(mirror) == s.metadata.uid.as_deref()
        });
        if !current {
            delete.push(mirror);
        }
    }
    for (k, s) in statics {
        let current = mirrors.get(k).is_some_and(|m| {
            m.metadata.deletion_timestamp.is_none() && mirror_hash(m) == s.metadata.uid.as_deref()
        });
        if !current {
            create.push(s);
        }
    }
    (delete, create)
}

/// Keeps the mirror pods of `statics` (the file source's pods) as [`plan`] says, for as long
/// as the process runs; `api` has the API's view of the node's mirror pods.
pub async fn run(
    client: kube::Client,
    node: String,
    mut statics: watch::Receiver<Vec<Arc<Pod>>>,
    mut api: watch::Receiver<ApiPods>,
) {
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut node_uid: Option<String> = None;
    let mut warned = false;
    // Mirror pods created and not yet seen through the watch (by key, with their hash and
    // when): not created again meanwhile, for at most one resync period.
    let mut created: HashMap<String, (String, Instant)> = HashMap::new();
    // Until the file source delivered its first read, every static pod looks gone: a restarted
    // agent whose API list came first deleted the mirror pods it should have kept.
    let mut files_read = false;
    loop {
        tokio::select! {
            r = statics.changed() => if r.is_err() { return } else { files_read = true },
            r = api.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        if !files_read {
            continue;
        }
        // Until the first list, a missing mirror pod may just not be known yet.
        let existing = {
            let view = api.borrow_and_update();
            if !view.listed {
                continue;
            }
            view.mirrors.clone()
        };
        let wanted: BTreeMap<String, Pod> = statics
            .borrow_and_update()
            .iter()
            .map(|p| (key(p), Pod::clone(p)))
            .collect();
        created.retain(|k, (_, at)| !existing.contains_key(k) && at.elapsed() < RESYNC);
        let (delete, create) = plan(&wanted, &existing);
        for m in delete {
            let namespace = m.metadata.namespace.as_deref().unwrap_or("default");
            let name = m.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: m.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => tracing::info!(pod = %key(m), "deleted the mirror pod"),
                // Gone already, or another pod under the name (the UID precondition).
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    tracing::debug!(pod = %key(m), error = %e, "deleting the mirror pod");
                }
                Err(e) => tracing::warn!(pod = %key(m), error = %e, "deleting the mirror pod"),
            }
        }
        if create.is_empty() {
            continue;
        }
        if node_uid.is_none() {
            let nodes: Api<Node> = Api::all(client.clone());
            match nodes.get(&node).await {
                Ok(n) => node_uid = n.metadata.uid,
                Err(e) => {
                    if !warned {
                        tracing::warn!(node, error = %e, "no mirror pods until the Node is in the API");
                        warned = true;
                    }
                    continue;
                }
            }
        }
        let Some(uid) = node_uid.clone() else {
            continue;
        };
        for s in create {
            let hash = s.metadata.uid.clone().unwrap_or_default();
            if created.get(&key(s)).is_some_and(|(h, _)| *h == hash) {
                continue;
            }
            let namespace = s.metadata.namespace.as_deref().unwrap_or("default");
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            match api
                .create(&PostParams::default(), &mirror_pod(s, &node, &uid))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %key(s), "created the mirror pod");
                    created.insert(key(s), (hash, Instant::now()));
                }
                // A pod under the name already (one being deleted): the next pass.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    tracing::debug!(pod = %key(s), error = %e, "creating the mirror pod");
                }
                Err(e) => tracing::warn!(pod = %key(s), error = %e, "creating the mirror pod"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn static_pod(name: &str, hash: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(hash.into());
        p.metadata.annotations = Some(
            [(CONFIG_HASH_ANNOTATION.to_string(), hash.to_string())]
                .into_iter()
                .collect(),
        );
        p
    }

    fn by_key(pods: Vec<Pod>) -> BTreeMap<String, Pod> {
        pods.into_iter().map(|p| (key(&p), p)).collect()
    }

    #[test]
    fn mirror_pod_shape() {
        let m = mirror_pod(&static_pod("web-n1", "h1"), "n1", "node-uid");
        assert_eq!(m.metadata.name.as_deref(), Some("web-n1"));
        assert!(m.metadata.uid.is_none());
        let ann = m.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_MIRROR_ANNOTATION], "h1");
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], "h1");
        let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("Node", "n1", "node-uid", Some(true))
        );
    }

    #[test]
    fn plan_creates_replaces_and_removes() {
        let statics = by_key(vec![
            static_pod("a-n1", "h1"),
            static_pod("b-n1", "h2"),
            static_pod("c-n1", "h3"),
            static_pod("d-n1", "h4"),
        ]);
        let mut deleted = mirror_pod(&static_pod("d-n1", "h4"), "n1", "u");
        deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mirrors = by_key(vec![
            // current
            mirror_pod(&static_pod("a-n1", "h1"), "n1", "u"),
            // the manifest changed
            mirror_pod(&static_pod("b-n1", "old"), "n1", "u"),
            // deleted by a user
            deleted,
            // its static pod is gone
            mirror_pod(&static_pod("e-n1", "h5"), "n1", "u"),
        ]);
        let (delete, create) = plan(&statics, &mirrors);
        let names = |v: Vec<&Pod>| -> Vec<String> { v.into_iter().map(key).collect() };
        assert_eq!(
            names(delete),
            ["default/b-n1", "default/d-n1", "default/e-n1"]
        );
        assert_eq!(
            names(create),
            ["default/b-n1", "default/c-n1", "default/d-n1"]
        );
    }
}
