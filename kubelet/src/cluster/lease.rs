//! The node's heartbeat Lease (upstream `k8s.io/component-helpers/apimachinery/lease` as the
//! kubelet runs it): `coordination.k8s.io/v1` Lease `kube-node-lease/<node>`, holder the node,
//! [`LEASE_DURATION_SECONDS`], `renewTime` renewed every [`RENEW_INTERVAL`] with an update that
//! carries the last `resourceVersion`. A missing Lease is created (404 → POST); a conflict
//! (409: someone else wrote it) GETs it again and retries, at most [`MAX_UPDATE_RETRIES`] times
//! per renewal. The Lease gets an ownerReference to the Node as soon as the Node exists. While
//! the API server is unreachable the renewal fails and is tried again every interval; the node
//! lifecycle controller then marks the node Unknown, as for any silent kubelet.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

/// The namespace of the node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `leaseDurationSeconds` (upstream `nodeLeaseDurationSeconds` default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// The renewal period: a quarter of the duration (upstream `renewIntervalFraction` 0.25).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// Update attempts per renewal (upstream `maxUpdateRetries`).
pub const MAX_UPDATE_RETRIES: usize = 5;
/// The limit on one renewal or status update: upstream's heartbeat client's timeout, the lease
/// duration, so that a server that accepts and never answers does not stall the heartbeat.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(LEASE_DURATION_SECONDS as u64);

/// The Lease of node `node` renewed at `now`, owned by the Node `owner` when known.
pub fn new_lease(node: &str, owner: Option<&Node>, now: MicroTime) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            owner_references: owner.and_then(owner_reference).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    }
}

/// The ownerReference of a Lease to its Node (upstream `setNodeOwnerFunc`); `None` without a
/// UID.
fn owner_reference(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

/// `lease` renewed at `now`, with the ownerReference to `owner` added when it has none.
pub fn renewed(lease: &Lease, owner: Option<&Node>, now: MicroTime) -> Lease {
    let mut lease = lease.clone();
    let node = lease.metadata.name.clone().unwrap_or_default();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node);
    spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
    spec.renew_time = Some(now);
    if lease
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        if let Some(o) = owner.and_then(owner_reference) {
            lease.metadata.owner_references = Some(vec![o]);
        }
    }
    lease
}

/// Renews the Lease of `node` every [`RENEW_INTERVAL`] until the agent stops.
pub async fn run(client: kube::Client, node: String) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let mut latest: Option<Lease> = None;
    let mut tick = tokio::time::interval(RENEW_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let renewal = renew_once(&leases, &nodes, &node, latest.take());
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, renewal).await {
            Ok(Ok(lease)) => latest = Some(lease),
            Ok(Err(e)) => {
                tracing::warn!(node = %node, error = %e, "renewing the node lease (retried in {:?})", RENEW_INTERVAL);
            }
            Err(_) => {
                tracing::warn!(node = %node, "renewing the node lease: no answer within {:?} (retried in {:?})", HEARTBEAT_TIMEOUT, RENEW_INTERVAL);
            }
        }
    }
}

/// One renewal: ensure the Lease exists (GET, POST on 404), then update it, re-getting it on a
/// conflict.
async fn renew_once(
    leases: &Api<Lease>,
    nodes: &Api<Node>,
    node: &str,
    mut latest: Option<Lease>,
) -> Result<Lease, kube::Error> {
    let mut last_error = None;
    for _ in 0..MAX_UPDATE_RETRIES {
        let base = match latest.take() {
            Some(l) => l,
            None => match leases.get_opt(node).await? {
                Some(l) => l,
                None => {
                    let owner = nodes.get_opt(node).await?;
                    let lease = new_lease(node, owner.as_ref(), now());
                    return leases.create(&PostParams::default(), &lease).await;
                }
            },
        };
        // Look up the Node only while the Lease has no owner yet.
        let owner = if base
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty)
        {
            nodes.get_opt(node).await?
        } else {
            None
        };
        let lease = renewed(&base, owner.as_ref(), now());
        match leases.replace(node, &PostParams::default(), &lease).await {
            Ok(l) => return Ok(l),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!(node, "node lease conflict: getting it again");
                last_error = Some(kube::Error::Api(s));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| kube::Error::Service("node lease: no update attempt succeeded".into())))
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                uid: Some("uid-1".into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    fn at(secs: i64) -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn new_lease_as_upstream() {
        let l = new_lease("n1", Some(&node()), at(100));
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
        assert_eq!(l.metadata.name.as_deref(), Some("n1"));
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(at(100)));
        let o = &l.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
            ("v1", "Node", "n1")
        );
        assert_eq!(o.uid, "uid-1");
        assert_eq!(o.controller, None);
        // Before the Node exists: no owner.
        assert_eq!(
            new_lease("n1", None, at(100)).metadata.owner_references,
            None
        );
    }

    #[test]
    fn renewal_moves_renew_time_and_adds_the_owner_once() {
        let mut l = new_lease("n1", None, at(100));
        l.metadata.resource_version = Some("7".into());
        let r = renewed(&l, Some(&node()), at(110));
        assert_eq!(r.spec.as_ref().unwrap().renew_time, Some(at(110)));
        // The update carries the resourceVersion it was read at.
        assert_eq!(r.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(r.metadata.owner_references.as_ref().unwrap().len(), 1);
        let mut other = node();
        other.metadata.uid = Some("uid-2".into());
        let r2 = renewed(&r, Some(&other), at(120));
        assert_eq!(
            r2.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
    }

    /// The period is upstream's: a quarter of the lease's duration.
    #[test]
    fn renew_interval_is_a_quarter_of_the_duration() {
        assert_eq!(
            RENEW_INTERVAL,
            Duration::from_secs(LEASE_DURATION_SECONDS as u64) / 4
        );
    }
}
