//! Comparing two snapshots: pods by UID, the way the pod workers consume them; Services and
//! Endpoints and EndpointSlices by `namespace/name`, the way the proxy consumes them.

use super::Snapshot;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};

/// What changed among the Services and Endpoints of two snapshots, by `(namespace, name)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceChanges {
    /// The complete set follows (the first snapshot): the consumer replaces what it has.
    pub full: bool,
    /// Services added or changed (with `full`, every Service).
    pub services: Vec<Service>,
    /// `(namespace, name)` of the Services gone.
    pub removed_services: Vec<(String, String)>,
    /// Endpoints added or changed (with `full`, every Endpoints object).
    pub endpoints: Vec<Endpoints>,
    /// `(namespace, name)` of the Endpoints gone.
    pub removed_endpoints: Vec<(String, String)>,
    /// EndpointSlices added or changed (with `full`, every EndpointSlice).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// `(namespace, name)` of the EndpointSlices gone.
    pub removed_endpoint_slices: Vec<(String, String)>,
}

impl ServiceChanges {
    /// Every Service and Endpoints of `snap`, as a full replacement.
    pub fn everything(snap: &Snapshot) -> ServiceChanges {
        ServiceChanges {
            full: true,
            services: snap.services.clone(),
            endpoints: snap.endpoints.clone(),
            endpoint_slices: snap.endpoint_slices.clone(),
            ..ServiceChanges::default()
        }
    }

    /// The objects of `new` that `old` lacks or has with other content, and those `old` has that
    /// `new` lacks. Order follows `new` (then `old` for removals).
    pub fn between(old: &Snapshot, new: &Snapshot) -> ServiceChanges {
        let (services, removed_services) = changed(&old.services, &new.services, |s| &s.metadata);
        let (endpoints, removed_endpoints) =
            changed(&old.endpoints, &new.endpoints, |e| &e.metadata);
        let (endpoint_slices, removed_endpoint_slices) =
            changed(&old.endpoint_slices, &new.endpoint_slices, |e| &e.metadata);
        ServiceChanges {
            full: false,
            services,
            removed_services,
            endpoints,
            removed_endpoints,
            endpoint_slices,
            removed_endpoint_slices,
        }
    }

    /// True when this is not a full set and nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.full
            && self.services.is_empty()
            && self.removed_services.is_empty()
            && self.endpoints.is_empty()
            && self.removed_endpoints.is_empty()
            && self.endpoint_slices.is_empty()
            && self.removed_endpoint_slices.is_empty()
    }
}

fn object_key(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

type Removed = Vec<(String, String)>;

fn changed<T: PartialEq + Clone>(
    old: &[T],
    new: &[T],
    meta: fn(&T) -> &ObjectMeta,
) -> (Vec<T>, Removed) {
    let before: HashMap<(&str, &str), &T> = old.iter().map(|o| (object_key(meta(o)), o)).collect();
    let now: HashSet<(&str, &str)> = new.iter().map(|o| object_key(meta(o))).collect();
    let upserts = new
        .iter()
        .filter(|o| before.get(&object_key(meta(o))).copied() != Some(*o))
        .cloned()
        .collect();
    let removed = old
        .iter()
        .map(|o| object_key(meta(o)))
        .filter(|k| !now.contains(k))
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .collect();
    (upserts, removed)
}

/// Pod changes between two snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodChanges {
    /// New UIDs whose `namespace/name` did not exist before.
    pub added: Vec<Pod>,
    /// Same `namespace/name`, new UID (the manifest changed): stop the old
    /// pod, then start the new one.
    pub replaced: Vec<(Pod, Pod)>,
    /// UIDs gone, whose `namespace/name` is gone too (the manifest was removed).
    pub removed: Vec<Pod>,
    /// UIDs present in both (an identical rewrite changes nothing).
    pub unchanged: Vec<String>,
}

impl PodChanges {
    /// True when nothing was added, replaced or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty()
    }
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or_default()
}

fn full_name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Diffs `old` against `new` by UID, pairing a removed and an added pod
/// with the same `namespace/name` as a replacement. Order follows `new`
/// (then `old` for removals).
pub fn diff_pods<P: Borrow<Pod>>(old: &[P], new: &[P]) -> PodChanges {
    let old: Vec<&Pod> = old.iter().map(Borrow::borrow).collect();
    let new: Vec<&Pod> = new.iter().map(Borrow::borrow).collect();
    let old_uids: HashSet<&str> = old.iter().map(|p| uid(p)).collect();
    let new_uids: HashSet<&str> = new.iter().map(|p| uid(p)).collect();
    let mut gone: HashMap<String, &Pod> = old
        .iter()
        .filter(|p| !new_uids.contains(uid(p)))
        .map(|p| (full_name(p), *p))
        .collect();
    let mut changes = PodChanges::default();
    for p in new {
        if old_uids.contains(uid(p)) {
            changes.unchanged.push(uid(p).to_owned());
        } else if let Some(prev) = gone.remove(&full_name(p)) {
            changes.replaced.push((prev.clone(), p.clone()));
        } else {
            changes.added.push(p.clone());
        }
    }
    changes.removed = old
        .iter()
        .filter(|p| gone.contains_key(&full_name(p)) && !new_uids.contains(uid(p)))
        .map(|p| Pod::clone(p))
        .collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn pod(name: &str, uid: &str) -> Pod {
        testing::pod()
            .name(name)
            .namespace("default")
            .uid(uid)
            .build()
    }

    #[test]
    fn add_replace_remove_keep() {
        let old = vec![pod("a", "1"), pod("b", "2"), pod("c", "3")];
        let new = vec![pod("a", "1"), pod("b", "22"), pod("d", "4")];
        let ch = diff_pods(&old, &new);
        assert_eq!(ch.unchanged, vec!["1".to_owned()]);
        assert_eq!(ch.replaced.len(), 1);
        assert_eq!(
            (uid(&ch.replaced[0].0), uid(&ch.replaced[0].1)),
            ("2", "22")
        );
        assert_eq!(ch.added.iter().map(uid).collect::<Vec<_>>(), vec!["4"]);
        assert_eq!(ch.removed.iter().map(uid).collect::<Vec<_>>(), vec!["3"]);
        assert!(!ch.is_empty());
        assert!(diff_pods(&new, &new).is_empty());
    }
}
