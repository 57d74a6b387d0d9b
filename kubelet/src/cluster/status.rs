//! The status manager (upstream `pkg/kubelet/status`): the API pods' status as the pod workers
//! publish it, written to the API server, and the final DELETE of a gracefully deleted pod.
//!
//! The pod table's change notification (`Kubelet::proxy_input`, sent whenever a worker
//! publishes a different status or a pod comes or goes) wakes [`run`]; for each API pod whose
//! published status differs from the last one written (or, every 10 s, `syncPeriod`, from the
//! API's own view, so a lost write or an outage is caught up), it PATCHes `pods/<name>/status`
//! with a strategic merge patch of old -> new ([`status_patch`]) that carries `metadata.uid`
//! (a UID precondition: a pod recreated under the same name is never written). A failed write
//! is retried with back-off (200 ms doubling to 10 s). Conditions the kubelet does not own (a
//! readiness gate's, `DisruptionTarget`) are kept, as upstream's `mergePodStatus`. Rejected
//! pods are in the table with their `Failed` status, so they are written the same way.
//!
//! When a pod worker has terminated an API pod that has `deletionTimestamp` (containers
//! stopped, sandbox and volumes torn down; `Kubelet::terminated_pods`), its final status is
//! written and the pod is deleted with `gracePeriodSeconds: 0` and a UID precondition, which
//! removes it from the API. A pod force-deleted (gone from the API) needs nothing more.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::pods::ApiPods;
use crate::node::Kubelet;

/// How often every API pod's status is checked against the API's (upstream `syncPeriod`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(10);
/// The first retry of a failed write; doubled up to [`SYNC_PERIOD`].
const RETRY_FIRST: Duration = Duration::from_millis(200);

/// The pod conditions the kubelet owns (upstream `PodConditionsByKubelet`, with
/// `PodReadyToStartContainers`); others in the API's status are kept.
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
];

/// The status fields the kubelet writes: absent from the new status, they are removed from the
/// API's; other fields (`nominatedNodeName`, `resize`, ...) belong to others and are left.
const KUBELET_FIELDS: [&str; 12] = [
    "phase",
    "reason",
    "message",
    "podIP",
    "podIPs",
    "hostIP",
    "hostIPs",
    "startTime",
    "containerStatuses",
    "initContainerStatuses",
    "ephemeralContainerStatuses",
    "qosClass",
];

/// The merge key of the status list at `path` (upstream's `patchMergeKey` tags of
/// `PodStatus`); other lists are replaced whole.
fn merge_key(path: &str) -> Option<&'static str> {
    match path {
        "conditions" => Some("type"),
        "podIPs" | "hostIPs" => Some("ip"),
        "resourceClaimStatuses" => Some("name"),
        _ => None,
    }
}

/// `new` with the conditions of `old` the kubelet does not own (upstream `mergePodStatus`).
pub fn merge_status(old: Option<&PodStatus>, new: &PodStatus) -> PodStatus {
    let mut merged = new.clone();
    let Some(old_conditions) = old.and_then(|o| o.conditions.as_ref()) else {
        return merged;
    };
    let conditions = merged.conditions.get_or_insert_with(Vec::new);
    for c in old_conditions {
        if !KUBELET_CONDITIONS.contains(&c.type_.as_str())
            && !conditions.iter().any(|n| n.type_ == c.type_)
        {
            conditions.push(c.clone());
        }
    }
    merged
}

/// The strategic merge patch that turns status `old` (`None`: the API pod has none) into
/// `new`, with `metadata.uid` (the UID precondition), as upstream's `PatchPodStatus`
/// (`CreateTwoWayMergePatch` of `{uid, status}`); `None` when nothing changed.
pub fn status_patch(uid: &str, old: Option<&PodStatus>, new: &PodStatus) -> Option<Value> {
    let old = old
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or_else(|| json!({}));
    let new = serde_json::to_value(new).ok()?;
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return None;
    };
    let diff = diff_map(&old, &new, "", true);
    (!diff.is_empty()).then(|| json!({"metadata": {"uid": uid}, "status": diff}))
}

/// The two-way diff of maps `old` -> `new` at `path` (`top`: the status itself, where only the
/// kubelet's fields are removed).
fn diff_map(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &str,
    top: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, nv) in new {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match (old.get(k), nv) {
            (Some(ov), nv) if ov == nv => {}
            (Some(Value::Object(om)), Value::Object(nm)) => {
                let d = diff_map(om, nm, &here, false);
                if !d.is_empty() {
                    out.insert(k.clone(), Value::Object(d));
                }
            }
            (Some(Value::Array(oa)), Value::Array(na)) if merge_key(&here).is_some() => {
                let key = merge_key(&here).unwrap_or_default();
                diff_list(k, key, oa, na, &here, &mut out);
            }
            _ => {
                out.insert(k.clone(), nv.clone());
            }
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) && (!top || KUBELET_FIELDS.contains(&k.as_str())) {
            out.insert(k.clone(), Value::Null);
        }
    }
    out
}

/// The patch of a list merged by `key`: changed items (their changed fields and the key), new
/// items whole, removed items as `$patch: delete`, and `$setElementOrder/<field>`.
fn diff_list(
    field: &str,
    key: &str,
    old: &[Value],
    new: &[Value],
    path: &str,
    out: &mut Map<String, Value>,
) {
    let key_of = |v: &Value| v.get(key).cloned().unwrap_or(Value::Null);
    let mut items = Vec::new();
    for n in new {
        let k = key_of(n);
        match old.iter().find(|o| key_of(o) == k) {
            Some(o) if o == n => {}
            Some(Value::Object(om)) => {
                let Value::Object(nm) = n else {
                    items.push(n.clone());
                    continue;
                };
                let mut d = diff_map(om, nm, path, false);
                d.insert(key.to_string(), k);
                items.push(Value::Object(d));
            }
            _ => items.push(n.clone()),
        }
    }
    for o in old {
        let k = key_of(o);
        if !new.iter().any(|n| key_of(n) == k) {
            items.push(json!({ key: k, "$patch": "delete" }));
        }
    }
    let order_changed = old.iter().map(key_of).ne(new.iter().map(key_of));
    if items.is_empty() && !order_changed {
        return;
    }
    if !items.is_empty() {
        out.insert(field.to_string(), Value::Array(items));
    }
    let order = new.iter().map(|n| json!({ key: key_of(n) })).collect();
    out.insert(format!("$setElementOrder/{field}"), Value::Array(order));
}

/// Runs the status manager until the table's channel closes.
pub async fn run(client: kube::Client, kubelet: Arc<Kubelet>, mut api: watch::Receiver<ApiPods>) {
    let mut table = kubelet.proxy_input();
    let mut terminated = kubelet.terminated_pods();
    let mut manager = Manager {
        client,
        written: HashMap::new(),
        deletes: BTreeMap::new(),
        failing: false,
        down: false,
    };
    let mut tick = tokio::time::interval(SYNC_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry: Option<Duration> = None;
    loop {
        let mut resync = false;
        tokio::select! {
            r = table.changed() => if r.is_err() { return },
            r = api.changed() => if r.is_err() { return },
            Some(pod) = terminated.recv() => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    manager.deletes.insert(uid, pod);
                }
            }
            _ = tick.tick() => resync = true,
            _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => resync = true,
        }
        let pods = table.borrow_and_update().pods.clone();
        let view = api.borrow_and_update().clone();
        let ok = manager.sync(&pods, &view, resync).await;
        retry = if ok {
            None
        } else {
            Some(retry.map_or(RETRY_FIRST, |r| (r * 2).min(SYNC_PERIOD)))
        };
    }
}

struct Manager {
    client: kube::Client,
    /// The status last written per UID, as the API server returned it.
    written: HashMap<String, PodStatus>,
    /// Terminated pods waiting for their final status and DELETE, by UID.
    deletes: BTreeMap<String, Pod>,
    /// The last write failed: further failures are logged at debug until one succeeds (an
    /// outage is said once, not once per pod and retry).
    failing: bool,
    /// The API server did not answer in this pass (a connection error, not an API error): the
    /// pass stops there rather than try every pod against a server that is away.
    down: bool,
}

impl Manager {
    fn failed(&mut self, what: &str, pod: &str, e: &kube::Error) {
        self.down = !matches!(e, kube::Error::Api(_));
        if self.failing {
            tracing::debug!(pod, error = %e, "{what} (will retry)");
        } else {
            tracing::warn!(pod, error = %e, "{what} (will retry with back-off)");
            self.failing = true;
        }
    }

    fn succeeded(&mut self) {
        if self.failing {
            tracing::info!("writing to the API server again");
            self.failing = false;
        }
    }
}

impl Manager {
    /// Writes what changed; `false` when a write failed (retry).
    async fn sync(&mut self, pods: &[Arc<Pod>], view: &ApiPods, resync: bool) -> bool {
        // A static pod's status goes to its mirror pod.
        let mirrors: HashMap<&str, &Pod> = view
            .mirrors
            .values()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .filter_map(|m| Some((super::mirror::mirror_hash(m)?, m)))
            .collect();
        self.written.retain(|uid, _| {
            view.pods.contains_key(uid)
                || mirrors
                    .values()
                    .any(|m| m.metadata.uid.as_deref() == Some(uid))
        });
        let mut ok = true;
        self.down = false;
        for pod in pods {
            let Some(uid) = pod.metadata.uid.as_deref() else {
                continue;
            };
            let api_pod = view
                .pods
                .get(uid)
                .map(|p| &**p)
                .or_else(|| mirrors.get(uid).copied());
            let (Some(api_pod), Some(status)) = (api_pod, pod.status.as_ref()) else {
                continue;
            };
            ok &= self.write_status(api_pod, status, resync).await;
            if self.down {
                return false;
            }
        }
        let deletes = std::mem::take(&mut self.deletes);
        for (uid, pod) in deletes {
            if self.down {
                self.deletes.insert(uid, pod);
                continue;
            }
            let Some(api_pod) = view.pods.get(&uid) else {
                // Gone from the API already (force-deleted): nothing to do.
                continue;
            };
            if api_pod.metadata.deletion_timestamp.is_none() {
                continue;
            }
            if let Some(status) = &pod.status {
                self.write_status(api_pod, status, resync).await;
            }
            if !self.delete(api_pod).await {
                ok = false;
                self.deletes.insert(uid, pod);
            }
        }
        ok
    }

    /// PATCHes the status of `api_pod` to `status` when it differs from the last written
    /// one (with `resync`, from the API's); `false` on a failure worth retrying.
    async fn write_status(&mut self, api_pod: &Pod, status: &PodStatus, resync: bool) -> bool {
        let uid = api_pod.metadata.uid.clone().unwrap_or_default();
        let old = match self.written.get(&uid) {
            Some(written) if !resync => Some(written),
            _ => api_pod.status.as_ref(),
        };
        let new = merge_status(old, status);
        let Some(patch) = status_patch(&uid, old, &new) else {
            return true;
        };
        let name = api_pod.metadata.name.clone().unwrap_or_default();
        let namespace = api_pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(pod) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), "status written");
                self.written.insert(uid, pod.status.unwrap_or_default());
                self.succeeded();
                true
            }
            Err(e) if gone(&e) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), error = %e, "status not written: the pod is gone");
                true
            }
            Err(e) => {
                self.failed("writing the pod status", &format!("{namespace}/{name}"), &e);
                false
            }
        }
    }

    /// The final DELETE of a terminated pod (grace 0, UID precondition); `false` to retry.
    async fn delete(&mut self, api_pod: &Pod) -> bool {
        let name = api_pod.metadata.name.clone().unwrap_or_default();
        let namespace = api_pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: api_pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "pod terminated; deleted from the API");
                self.succeeded();
                true
            }
            Err(e) if gone(&e) => true,
            Err(e) => {
                self.failed(
                    "deleting the terminated pod",
                    &format!("{namespace}/{name}"),
                    &e,
                );
                false
            }
        }
    }
}

/// A 404 (the pod is gone) or 409 (another pod under the name: the UID precondition failed).
fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodIP};

    fn cond(t: &str, s: &str) -> PodCondition {
        PodCondition {
            type_: t.into(),
            status: s.into(),
            ..Default::default()
        }
    }

    fn running() -> PodStatus {
        PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.5".into()),
            pod_ips: Some(vec![PodIP {
                ip: "10.0.0.5".into(),
            }]),
            conditions: Some(vec![cond("Initialized", "True"), cond("Ready", "True")]),
            container_statuses: Some(vec![ContainerStatus {
                name: "c".into(),
                ready: true,
                restart_count: 0,
                image: "busybox".into(),
                image_id: "sha256:1".into(),
                ..Default::default()
            }]),
            qos_class: Some("BestEffort".into()),
            ..Default::default()
        }
    }

    #[test]
    fn no_change_is_no_patch() {
        assert_eq!(status_patch("u", Some(&running()), &running()), None);
    }

    #[test]
    fn first_write_carries_the_whole_status_and_the_uid() {
        let p = status_patch("u1", None, &running()).unwrap();
        assert_eq!(p["metadata"]["uid"], "u1");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["status"]["podIPs"][0]["ip"], "10.0.0.5");
        assert_eq!(p["status"]["containerStatuses"][0]["name"], "c");
    }

    #[test]
    fn changed_condition_is_merged_by_type_with_the_order() {
        let old = running();
        let mut new = running();
        new.conditions = Some(vec![cond("Initialized", "True"), cond("Ready", "False")]);
        let p = status_patch("u", Some(&old), &new).unwrap();
        assert_eq!(
            p["status"],
            json!({
                "conditions": [{"type": "Ready", "status": "False"}],
                "$setElementOrder/conditions": [{"type": "Initialized"}, {"type": "Ready"}],
            })
        );
    }

    #[test]
    fn removed_condition_is_deleted_and_container_statuses_replaced_whole() {
        let old = running();
        let mut new = running();
        new.conditions = Some(vec![cond("Initialized", "True")]);
        new.container_statuses.as_mut().unwrap()[0].restart_count = 1;
        let p = status_patch("u", Some(&old), &new).unwrap();
        assert_eq!(
            p["status"]["conditions"],
            json!([{"type": "Ready", "$patch": "delete"}])
        );
        // containerStatuses has no patch strategy upstream: the whole list.
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 1);
        assert_eq!(p["status"]["containerStatuses"][0]["image"], "busybox");
    }

    #[test]
    fn kubelet_fields_are_removed_others_left() {
        let mut old = running();
        old.nominated_node_name = Some("n2".into());
        let mut new = running();
        new.pod_ip = None;
        new.pod_ips = None;
        let p = status_patch("u", Some(&old), &new).unwrap();
        assert_eq!(p["status"], json!({"podIP": null, "podIPs": null}));
    }

    #[test]
    fn rejected_status_patch_has_reason_and_message() {
        let pod = Pod::default();
        let status = crate::status::rejected_status(
            &pod,
            "OutOfcpu",
            "Node didn't have enough resource: cpu, requested: 64000, used: 0, capacity: 2000",
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        let pending = PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        };
        let p = status_patch("u", Some(&pending), &status).unwrap();
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(p["status"]["reason"], "OutOfcpu");
        assert_eq!(
            p["status"]["message"],
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 64000, used: 0, capacity: 2000"
        );
    }

    #[test]
    fn conditions_of_others_are_kept() {
        let mut old = running();
        old.conditions
            .as_mut()
            .unwrap()
            .push(cond("example.com/gate", "True"));
        let new = merge_status(Some(&old), &running());
        assert_eq!(status_patch("u", Some(&old), &new), None);
    }

    #[test]
    fn times_compare_at_the_api_precision() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut old = running();
        old.start_time = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(100).unwrap(),
        ));
        let mut new = running();
        new.start_time = Some(Time(
            k8s_openapi::jiff::Timestamp::from_nanosecond(100_500_000_000).unwrap(),
        ));
        assert_eq!(status_patch("u", Some(&old), &new), None);
    }
}
