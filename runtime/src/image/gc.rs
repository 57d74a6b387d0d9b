//! Image garbage collection: which stored images no container uses, removing a set of them
//! in one pass (with the blobs and snapshots no remaining image or container references), and
//! the choice upstream's kubelet image GC manager (`pkg/kubelet/images/image_gc_manager.go`)
//! makes when the image filesystem is too full: unused, unpinned images old enough, least
//! recently used first, until enough bytes are freed ([`select_for_gc`]).
//!
//! An image is in use while any container record under the store's root (running or exited,
//! of any sandbox) was created from it, as upstream counts every container the runtime lists.
//! `kubenode image prune` removes every unused image; the agent's periodic collection uses
//! [`select_for_gc`] and [`ImageStore::remove_unused`].

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::Result;
use super::store::ImageStore;
use super::store_usage::ImageUser;

/// A stored image and the containers created from it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// Canonical reference.
    pub reference: String,
    /// The manifest digest (image ID).
    pub manifest_digest: String,
    /// Compressed size of config and layers, as the manifest declares (the size the CRI
    /// reports for an image, which upstream's GC counts as freed).
    pub size: u64,
    /// Containers created from it (running or exited); empty: unused.
    pub users: Vec<ImageUser>,
}

/// What one removal pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The images removed, with their [`StoredImage::size`], in removal order.
    pub removed: Vec<(String, u64)>,
    /// Images asked for but left because a container uses them (found under the lock).
    pub in_use: Vec<String>,
    /// Bytes the deleted blobs and snapshots occupied on disk.
    pub bytes_freed: u64,
}

impl ImageStore {
    /// Every complete image with its users, sorted by reference.
    pub fn images_with_users(&self) -> Result<Vec<StoredImage>> {
        let records = self.container_records();
        Ok(self
            .list()?
            .into_iter()
            .map(|i| StoredImage {
                users: ImageStore::users_of(&records, &i.reference),
                reference: i.reference,
                manifest_digest: i.manifest_digest,
                size: i.size,
            })
            .collect())
    }

    /// Removes every image no container uses (`kubenode image prune`), then the blobs and
    /// snapshots nothing references any more (also when no image was removed).
    pub async fn prune(&self) -> Result<PruneReport> {
        self.remove_unused_inner(None).await
    }

    /// Removes the images `references` (canonical) names that no container uses, in one pass
    /// under the store lock (a container created meanwhile keeps its image: the check is made
    /// under the lock), then the blobs and snapshots nothing references any more. Names no
    /// longer in the store are skipped.
    pub async fn remove_unused(&self, references: &[String]) -> Result<PruneReport> {
        self.remove_unused_inner(Some(references)).await
    }

    async fn remove_unused_inner(&self, references: Option<&[String]>) -> Result<PruneReport> {
        let _store = self.locks().store_exclusive().await?;
        let _index = self.locks().key("index").await?;
        let mut refs = self.index().load()?;
        let records = self.container_records();
        let wanted: Vec<String> = match references {
            Some(r) => r.to_vec(),
            None => refs.keys().cloned().collect(),
        };
        let mut report = PruneReport::default();
        for name in wanted {
            let Some(entry) = refs.get(&name) else {
                continue;
            };
            if !ImageStore::users_of(&records, &name).is_empty() {
                report.in_use.push(name);
                continue;
            }
            let size = match self.load_image(&name, entry) {
                Ok(Some(i)) => i.size,
                _ => 0,
            };
            refs.remove(&name);
            report.removed.push((name, size));
        }
        // A prune also sweeps what an interrupted pull or import left unreferenced.
        if report.removed.is_empty() && references.is_some() {
            return Ok(report);
        }
        if !report.removed.is_empty() {
            self.index().save(&refs)?;
        }
        for (name, size) in &report.removed {
            tracing::info!(image = %name, size, "removed unused image");
        }
        report.bytes_freed = self.collect_garbage(&refs);
        Ok(report)
    }
}

/// One image as the periodic collection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcCandidate {
    /// Canonical reference.
    pub reference: String,
    /// Its size ([`StoredImage::size`]).
    pub size: u64,
    /// When the collector first saw it.
    pub first_detected: Instant,
    /// The last time it was seen in use by a container; `None`: never.
    pub last_used: Option<Instant>,
    /// A container uses it now.
    pub in_use: bool,
    /// Never collected (pinned images).
    pub pinned: bool,
}

/// Upstream's `freeSpace`: the images to remove to free `bytes_to_free` bytes at `now`:
/// unpinned ones no container uses, at least `min_age` since first detected, least recently
/// used first (never used counts as oldest; ties by first detection, then reference), stopping
/// once their sizes reach `bytes_to_free`. Returns the references and the sum of their sizes
/// (less than `bytes_to_free` when not enough is eligible).
pub fn select_for_gc(
    candidates: &[GcCandidate],
    now: Instant,
    min_age: Duration,
    bytes_to_free: u64,
) -> (Vec<String>, u64) {
    let mut eligible: Vec<&GcCandidate> = candidates
        .iter()
        .filter(|c| !c.pinned && !c.in_use)
        .filter(|c| now.saturating_duration_since(c.first_detected) >= min_age)
        .collect();
    eligible.sort_by(|a, b| {
        (a.last_used, a.first_detected, &a.reference).cmp(&(
            b.last_used,
            b.first_detected,
            &b.reference,
        ))
    });
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    for c in eligible {
        if freed >= bytes_to_free {
            break;
        }
        chosen.push(c.reference.clone());
        freed = freed.saturating_add(c.size);
    }
    (chosen, freed)
}

/// Bytes allocated under `path` (512-byte blocks, as `du`), a file with several links
/// counted once; unreadable parts count nothing.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if !meta.is_dir() {
        return total;
    }
    let mut linked = HashSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else { continue };
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.nlink() > 1 && !linked.insert(m.ino()) {
                continue;
            }
            total += m.blocks() * 512;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_AGE: Duration = Duration::from_secs(120);

    fn img(name: &str, size: u64, detected_ago: u64, used_ago: Option<u64>) -> GcCandidate {
        // One base for every candidate of a test process: only differences matter.
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let base = *BASE.get_or_init(Instant::now);
        GcCandidate {
            reference: name.into(),
            size,
            first_detected: base + Duration::from_secs(10_000 - detected_ago),
            last_used: used_ago.map(|a| base + Duration::from_secs(10_000 - a)),
            in_use: false,
            pinned: false,
        }
    }

    fn now(c: &GcCandidate, detected_ago: u64) -> Instant {
        c.first_detected + Duration::from_secs(detected_ago)
    }

    #[test]
    fn least_recently_used_first_never_used_before_used() {
        let a = img("a", 10, 1000, Some(100));
        let b = img("b", 10, 1000, Some(500));
        let c = img("c", 10, 1000, None);
        let t = now(&a, 1000);
        let (chosen, freed) = select_for_gc(&[a, b, c], t, MIN_AGE, 30);
        assert_eq!(chosen, ["c", "b", "a"]);
        assert_eq!(freed, 30);
    }

    #[test]
    fn stops_once_enough_is_freed() {
        let a = img("a", 100, 1000, Some(900));
        let b = img("b", 100, 1000, Some(800));
        let c = img("c", 100, 1000, Some(700));
        let t = now(&a, 1000);
        let (chosen, freed) = select_for_gc(&[c, b, a], t, MIN_AGE, 150);
        assert_eq!(chosen, ["a", "b"]);
        assert_eq!(freed, 200);
        let (chosen, freed) = select_for_gc(&[], t, MIN_AGE, 150);
        assert!(chosen.is_empty());
        assert_eq!(freed, 0);
    }

    #[test]
    fn nothing_to_free_selects_nothing() {
        let a = img("a", 100, 1000, None);
        let t = now(&a, 1000);
        assert!(select_for_gc(&[a], t, MIN_AGE, 0).0.is_empty());
    }

    #[test]
    fn younger_than_the_minimum_age_stays() {
        let old = img("old", 10, 1000, None);
        let young = img("young", 10, 60, None);
        let t = now(&old, 1000);
        let (chosen, freed) = select_for_gc(&[young.clone(), old.clone()], t, MIN_AGE, 100);
        assert_eq!(chosen, ["old"]);
        assert_eq!(freed, 10, "less than asked: the rest is not eligible");
        // Exactly the minimum age is old enough; zero minimum takes everything.
        let edge = img("edge", 10, 120, None);
        assert_eq!(select_for_gc(&[edge], t, MIN_AGE, 100).0, ["edge"]);
        assert_eq!(
            select_for_gc(&[young, old], t, Duration::ZERO, 100).0.len(),
            2
        );
    }

    #[test]
    fn in_use_and_pinned_never() {
        let mut used = img("used", 1000, 5000, None);
        used.in_use = true;
        let mut pinned = img("pinned", 1000, 5000, None);
        pinned.pinned = true;
        let free = img("free", 1, 5000, Some(10));
        let t = now(&free, 5000);
        let (chosen, freed) = select_for_gc(&[used, pinned, free], t, MIN_AGE, u64::MAX);
        assert_eq!(chosen, ["free"]);
        assert_eq!(freed, 1);
    }

    #[test]
    fn ties_break_by_first_detection() {
        let a = img("a", 1, 500, None);
        let b = img("b", 1, 900, None);
        let t = now(&b, 900);
        assert_eq!(select_for_gc(&[a, b], t, MIN_AGE, 2).0, ["b", "a"]);
    }
}
