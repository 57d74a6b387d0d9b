//! Image garbage collection, as upstream's kubelet image GC manager
//! (`pkg/kubelet/images/image_gc_manager.go`): every [`IMAGE_GC_PERIOD`] the collector notes
//! every stored image (first detected; last used: the last pass a container used it), and
//! when the image filesystem's usage is at or above `imageGCHighThresholdPercent` it frees
//! `capacity × (100 − low)/100 − available` bytes: unused, unpinned images at least
//! `imageMinimumGCAge` old since first detected, least recently used first
//! ([`select_for_gc`]). The store then removes the blobs and snapshots no remaining image or
//! container references.
//!
//! Events as upstream: `InvalidDiskCapacity` when the filesystem reports no capacity,
//! `FreeDiskSpaceFailed` when not enough was eligible, and `ImageGCFailed` when a pass fails
//! again right after a failed one. The records live in memory (as upstream's): after a restart
//! every image is first detected anew, so none is collected before the minimum age passes.
//! A high threshold of 100 disables collection, as upstream.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubenode_runtime::image::{select_for_gc, GcCandidate, ImageStore};

use crate::events::{ObjectRef, Recorder};

/// Upstream's `ImageGCPeriod`.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(5 * 60);
/// `imageGCHighThresholdPercent`'s default.
pub const DEFAULT_HIGH_THRESHOLD_PERCENT: i32 = 85;
/// `imageGCLowThresholdPercent`'s default.
pub const DEFAULT_LOW_THRESHOLD_PERCENT: i32 = 80;
/// `imageMinimumGCAge`'s default.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(120);

/// The policy (KubeletConfiguration keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// `imageGCHighThresholdPercent`: collect at or above this usage.
    pub high_threshold_percent: i32,
    /// `imageGCLowThresholdPercent`: collect down to this usage.
    pub low_threshold_percent: i32,
    /// `imageMinimumGCAge`: never collect an image detected more recently.
    pub min_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: DEFAULT_HIGH_THRESHOLD_PERCENT,
            low_threshold_percent: DEFAULT_LOW_THRESHOLD_PERCENT,
            min_age: DEFAULT_MIN_AGE,
        }
    }
}

impl ImageGcPolicy {
    /// Upstream's validation; an error names the key and says why, in upstream's words.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let (high, low) = (self.high_threshold_percent, self.low_threshold_percent);
        if !(0..=100).contains(&high) {
            return Err(("imageGCHighThresholdPercent", format!("invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) {high} must be between 0 and 100, inclusive")));
        }
        if !(0..=100).contains(&low) {
            return Err(("imageGCLowThresholdPercent", format!("invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {low} must be between 0 and 100, inclusive")));
        }
        if low >= high {
            return Err(("imageGCLowThresholdPercent", format!("invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {low} must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) {high}")));
        }
        Ok(())
    }

    /// Whether collection runs at all (upstream disables it at a high threshold of 100).
    pub fn enabled(&self) -> bool {
        self.high_threshold_percent < 100
    }

    /// Bytes to free on a filesystem of `capacity` bytes with `available` free, as upstream:
    /// `None` below the high threshold, else `capacity × (100 − low)/100 − available`.
    pub fn amount_to_free(&self, capacity: u64, available: u64) -> Option<u64> {
        if capacity == 0 {
            return None;
        }
        let available = available.min(capacity);
        let usage_percent = 100 - (available as u128 * 100 / capacity as u128) as i64;
        if usage_percent < i64::from(self.high_threshold_percent) {
            return None;
        }
        let target_free =
            capacity as u128 * (100 - self.low_threshold_percent.clamp(0, 100) as u128) / 100;
        Some(target_free.saturating_sub(available as u128) as u64)
    }
}

/// Capacity and available bytes of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Total bytes.
    pub capacity: u64,
    /// Bytes available to unprivileged users (statfs `f_bavail`, as cAdvisor's `Available`).
    pub available: u64,
}

/// statfs of `path`.
pub fn fs_stats(path: &Path) -> std::io::Result<FsStats> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = s.fragment_size() as u64;
    Ok(FsStats {
        capacity: s.blocks() as u64 * frsize,
        available: s.blocks_available() as u64 * frsize,
    })
}

#[derive(Debug, Clone, Copy)]
struct Record {
    first_detected: Instant,
    last_used: Option<Instant>,
}

/// The collector's memory of the images it saw.
#[derive(Debug, Default)]
pub struct ImageGcManager {
    records: HashMap<String, Record>,
    /// Images never collected (none configurable yet: kubenode's pause image is built in).
    pinned: HashSet<String>,
}

/// An image as one pass sees it: reference, size, whether a container uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenImage {
    /// Canonical reference.
    pub reference: String,
    /// Its size (compressed, as the store reports).
    pub size: u64,
    /// A container (running or exited) was created from it.
    pub in_use: bool,
}

impl ImageGcManager {
    /// A collector that never removes the images `pinned` names.
    pub fn new(pinned: impl IntoIterator<Item = String>) -> Self {
        ImageGcManager {
            records: HashMap::new(),
            pinned: pinned.into_iter().collect(),
        }
    }

    /// Upstream's `detectImages`: notes `images` at `now` (new ones first detected now, used
    /// ones last used now; records of images gone are dropped) and returns the candidates.
    pub fn detect(&mut self, images: &[SeenImage], now: Instant) -> Vec<GcCandidate> {
        let present: HashSet<&str> = images.iter().map(|i| i.reference.as_str()).collect();
        self.records.retain(|r, _| present.contains(r.as_str()));
        images
            .iter()
            .map(|i| {
                let rec = self.records.entry(i.reference.clone()).or_insert(Record {
                    first_detected: now,
                    last_used: None,
                });
                if i.in_use {
                    rec.last_used = Some(now);
                }
                GcCandidate {
                    reference: i.reference.clone(),
                    size: i.size,
                    first_detected: rec.first_detected,
                    last_used: rec.last_used,
                    in_use: i.in_use,
                    pinned: self.pinned.contains(&i.reference),
                }
            })
            .collect()
    }

    /// One pass (upstream's `GarbageCollect`): detect, then free space if the filesystem is at
    /// or above the high threshold. The error is the event message of a failure.
    pub async fn garbage_collect(
        &mut self,
        store: &ImageStore,
        policy: &ImageGcPolicy,
        stats: FsStats,
        events: &Recorder,
        node: &ObjectRef,
    ) -> Result<(), String> {
        let now = Instant::now();
        let images: Vec<SeenImage> = store
            .images_with_users()
            .map_err(|e| format!("listing images: {e}"))?
            .into_iter()
            .map(|i| SeenImage {
                in_use: !i.users.is_empty(),
                reference: i.reference,
                size: i.size,
            })
            .collect();
        let candidates = self.detect(&images, now);
        if stats.capacity == 0 {
            let msg = "invalid capacity 0 on image filesystem".to_string();
            events.warning(node, "InvalidDiskCapacity", msg.clone());
            return Err(msg);
        }
        let Some(amount) = policy.amount_to_free(stats.capacity, stats.available) else {
            return Ok(());
        };
        let usage =
            100 - (stats.available.min(stats.capacity) as u128 * 100 / stats.capacity as u128);
        tracing::info!(
            usage,
            high_threshold = policy.high_threshold_percent,
            amount_to_free = amount,
            low_threshold = policy.low_threshold_percent,
            "Disk usage on image filesystem is over the high threshold, trying to free bytes down to the low threshold"
        );
        let (chosen, _) = select_for_gc(&candidates, now, policy.min_age, amount);
        let mut freed = 0u64;
        if !chosen.is_empty() {
            let report = store
                .remove_unused(&chosen)
                .await
                .map_err(|e| format!("removing images: {e}"))?;
            for (reference, size) in &report.removed {
                tracing::info!(image = %reference, size, "Removing image to free bytes");
                self.records.remove(reference);
                freed += size;
            }
            tracing::info!(
                images = report.removed.len(),
                bytes_on_disk = report.bytes_freed,
                "image garbage collection removed images"
            );
        }
        if freed < amount {
            let msg = format!("Failed to garbage collect required amount of images. Attempted to free {amount} bytes, but only found {freed} bytes eligible to free.");
            events.warning(node, "FreeDiskSpaceFailed", msg.clone());
            return Err(msg);
        }
        Ok(())
    }
}

/// Runs the collector every [`IMAGE_GC_PERIOD`] (the first pass at once) on the filesystem
/// holding `root_dir`'s image store, until the task is dropped. A failure right after a failed
/// pass is a node `ImageGCFailed` warning, as upstream's `StartGarbageCollection`.
pub async fn run(
    store: Arc<ImageStore>,
    root_dir: PathBuf,
    policy: ImageGcPolicy,
    events: Recorder,
    node_name: String,
) {
    if !policy.enabled() {
        tracing::info!("ImageGCHighThresholdPercent is set 100, Disable image GC");
        return;
    }
    let node = ObjectRef::node(&node_name);
    let mut manager = ImageGcManager::default();
    let mut prev_failed = false;
    let mut tick = tokio::time::interval(IMAGE_GC_PERIOD);
    loop {
        tick.tick().await;
        let result = match fs_stats(&root_dir.join("images")) {
            Ok(stats) => {
                manager
                    .garbage_collect(&store, &policy, stats, &events, &node)
                    .await
            }
            Err(e) => Err(format!("statfs of the image filesystem: {e}")),
        };
        match result {
            Ok(()) => prev_failed = false,
            Err(msg) => {
                if prev_failed {
                    tracing::error!(error = %msg, "Image garbage collection failed multiple times in a row");
                    events.warning(&node, "ImageGCFailed", msg);
                } else {
                    tracing::error!(error = %msg, "Image garbage collection failed once. Stats initialization may not have completed yet");
                }
                prev_failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation_as_upstream() {
        let p = ImageGcPolicy::default();
        assert_eq!(
            (p.high_threshold_percent, p.low_threshold_percent),
            (85, 80)
        );
        assert_eq!(p.min_age, Duration::from_secs(120));
        assert!(p.validate().is_ok() && p.enabled());
        let with = |high, low| ImageGcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            ..p
        };
        assert_eq!(
            with(101, 80).validate().unwrap_err().0,
            "imageGCHighThresholdPercent"
        );
        assert_eq!(
            with(85, -1).validate().unwrap_err().0,
            "imageGCLowThresholdPercent"
        );
        let (key, msg) = with(80, 80).validate().unwrap_err();
        assert_eq!(key, "imageGCLowThresholdPercent");
        assert_eq!(msg, "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 80 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 80");
        assert!(with(100, 0).validate().is_ok());
        assert!(!with(100, 0).enabled());
    }

    #[test]
    fn amount_to_free_from_the_thresholds() {
        let p = ImageGcPolicy::default();
        // 84 % used: below the high threshold.
        assert_eq!(p.amount_to_free(1000, 160), None);
        // 85 % used: free down to 80 % (200 bytes available).
        assert_eq!(p.amount_to_free(1000, 150), Some(50));
        assert_eq!(p.amount_to_free(1000, 0), Some(200));
        // Available above capacity counts as capacity; no capacity, nothing to compute.
        assert_eq!(p.amount_to_free(1000, 5000), None);
        assert_eq!(p.amount_to_free(0, 0), None);
    }

    fn seen(name: &str, in_use: bool) -> SeenImage {
        SeenImage {
            reference: name.into(),
            size: 10,
            in_use,
        }
    }

    #[test]
    fn detection_tracks_first_seen_last_used_and_forgets_gone_images() {
        let mut m = ImageGcManager::new(["pinned:1".to_string()]);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(300);
        let c = m.detect(
            &[seen("a", false), seen("b", true), seen("pinned:1", false)],
            t0,
        );
        assert!(c.iter().all(|c| c.first_detected == t0));
        assert_eq!(c[0].last_used, None);
        assert_eq!(c[1].last_used, Some(t0));
        assert!(c[2].pinned);
        // b no longer used keeps its last use; a is not re-detected.
        let c = m.detect(&[seen("a", false), seen("b", false)], t1);
        assert_eq!(c[0].first_detected, t0);
        assert_eq!(c[1].last_used, Some(t0));
        assert!(!c[1].in_use);
        // Min age passed for both: never-used a goes first, then b.
        let (chosen, _) = select_for_gc(&c, t1, DEFAULT_MIN_AGE, 20);
        assert_eq!(chosen, ["a", "b"]);
        // pinned:1 went away and comes back: detected anew, too young.
        let c = m.detect(&[seen("pinned:1", false)], t1);
        assert_eq!(c[0].first_detected, t1);
    }

    #[tokio::test]
    async fn a_full_filesystem_with_nothing_eligible_is_a_free_disk_space_failed_event() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let events = Recorder::new("node1", Arc::new(crate::backoff::SystemClock));
        let node = ObjectRef::node("node1");
        let mut m = ImageGcManager::default();
        let p = ImageGcPolicy::default();
        let full = FsStats {
            capacity: 1000,
            available: 100,
        };
        let err = m
            .garbage_collect(&store, &p, full, &events, &node)
            .await
            .unwrap_err();
        assert_eq!(err, "Failed to garbage collect required amount of images. Attempted to free 100 bytes, but only found 0 bytes eligible to free.");
        let listed = events.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].reason.as_deref(), Some("FreeDiskSpaceFailed"));
        assert_eq!(listed[0].type_.as_deref(), Some("Warning"));
        assert_eq!(listed[0].message.as_deref(), Some(err.as_str()));
        let roomy = FsStats {
            capacity: 1000,
            available: 900,
        };
        assert!(m
            .garbage_collect(&store, &p, roomy, &events, &node)
            .await
            .is_ok());
        let zero = FsStats {
            capacity: 0,
            available: 0,
        };
        assert_eq!(
            m.garbage_collect(&store, &p, zero, &events, &node)
                .await
                .unwrap_err(),
            "invalid capacity 0 on image filesystem"
        );
    }
}
