//! Comparing two snapshots by pod UID, the way the pod workers consume them.

use k8s_openapi::api::core::v1::Pod;
use std::collections::{HashMap, HashSet};

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
pub fn diff_pods(old: &[Pod], new: &[Pod]) -> PodChanges {
    let old_uids: HashSet<&str> = old.iter().map(uid).collect();
    let new_uids: HashSet<&str> = new.iter().map(uid).collect();
    let mut gone: HashMap<String, &Pod> = old
        .iter()
        .filter(|p| !new_uids.contains(uid(p)))
        .map(|p| (full_name(p), p))
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
        .cloned()
        .collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
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
