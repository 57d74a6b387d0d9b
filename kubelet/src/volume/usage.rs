//! Local ephemeral storage limits, enforced as upstream's eviction manager does
//! (`localStorageEviction`, pkg/kubelet/eviction/eviction_manager.go). Every [`CHECK_INTERVAL`]
//! a pod's usage is measured (allocated blocks, as `du`: hard links counted once, symlinks not
//! followed, never crossing into another filesystem), and the pod is evicted, checked in
//! upstream's order, when:
//!
//! 1. a disk emptyDir uses more than its `sizeLimit`
//!    (`Usage of EmptyDir volume "X" exceeds the limit "Y". `);
//! 2. the pod uses more than the total of its containers' `ephemeral-storage` limits (upstream
//!    `PodLimits`: regular containers and sidecars summed, the larger of that and any init
//!    container's, plus the overhead when not zero), counting its containers' writable layers and logs, its
//!    disk emptyDirs and its `/etc/hosts`
//!    (`Pod ephemeral local storage usage exceeds the total limit of containers X. `);
//! 3. a regular container's writable layer and logs use more than its own limit
//!    (`Container X exceeded its local ephemeral storage limit "Y". `).
//!
//! A container counts by its running instance, else its latest one (upstream's
//! `removeTerminatedContainers`). Memory-medium emptyDirs are bounded by their tmpfs size
//! and are not counted here. Upstream never evicts a static pod (`IsCriticalPod`); kubenode's
//! pods are all static and are evicted as upstream evicts API pods, so that a limit is never
//! accepted and ignored.

use std::collections::HashSet;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use kubenode_runtime::{ContainerState, ContainerStatus};

use crate::status::is_restartable_init;
use crate::validation::quantity::Quantity;

/// How often a pod's local storage is measured: upstream's eviction manager monitoring period
/// (`evictionMonitoringPeriod`, 10 s).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The resource name of local ephemeral storage.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// Upstream's eviction message for an emptyDir over its limit (`emptyDirMessageFmt`).
pub fn exceeded_message(volume: &str, limit: &str) -> String {
    format!("Usage of EmptyDir volume {volume:?} exceeds the limit {limit:?}. ")
}

/// Upstream's eviction message for a pod over its containers' total limit
/// (`podEphemeralStorageMessageFmt`).
pub fn pod_limit_message(limit: &StorageQuantity) -> String {
    format!("Pod ephemeral local storage usage exceeds the total limit of containers {limit}. ")
}

/// Upstream's eviction message for a container over its own limit
/// (`containerEphemeralStorageMessageFmt`).
pub fn container_limit_message(container: &str, limit: &StorageQuantity) -> String {
    format!(
        "Container {container} exceeded its local ephemeral storage limit {:?}. ",
        limit.to_string()
    )
}

/// Bytes allocated under `dir` (512-byte blocks, as `du`), staying on `dir`'s filesystem and
/// counting a file with several links once.
pub fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(dir)?;
    let dev = meta.dev();
    let mut total = meta.blocks() * 512;
    let mut linked = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            // A bound on the walk: a directory with millions of files is measured partially.
            if visited > 1_000_000 {
                return Ok(total);
            }
            let Ok(m) = entry.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.nlink() > 1 && !linked.insert(m.ino()) {
                continue;
            }
            total += m.blocks() * 512;
        }
    }
    Ok(total)
}

/// Where one container's local storage lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStorage {
    /// The container's name in the pod.
    pub name: String,
    /// Its writable layer (the overlay upper directory).
    pub writable_layer: PathBuf,
    /// The directory of its log files (every restart's, rotated ones included).
    pub log_dir: PathBuf,
}

impl ContainerStorage {
    /// Where `instance`'s storage lives, its writable layer being `writable_layer`.
    pub fn of(instance: &ContainerStatus, writable_layer: PathBuf) -> ContainerStorage {
        ContainerStorage {
            name: instance.name.clone(),
            writable_layer,
            log_dir: instance
                .log_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// Bytes used by the writable layer and the logs (a part that is gone counts zero).
    pub fn usage(&self) -> u64 {
        [&self.writable_layer, &self.log_dir]
            .into_iter()
            .map(|dir| disk_usage(dir).unwrap_or(0))
            .sum()
    }
}

/// The instances whose storage counts: for each container name the running ones, else the
/// latest (upstream's `removeTerminatedContainers`).
pub fn counted_instances(instances: &[ContainerStatus]) -> Vec<&ContainerStatus> {
    let mut names: Vec<&str> = instances.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let same: Vec<&ContainerStatus> = instances.iter().filter(|s| s.name == name).collect();
        let running: Vec<&ContainerStatus> = same
            .iter()
            .copied()
            .filter(|s| s.state == ContainerState::Running)
            .collect();
        if running.is_empty() {
            out.extend(
                same.into_iter()
                    .max_by_key(|s| (s.created_at, s.restart_count)),
            );
        } else {
            out.extend(running);
        }
    }
    out
}

/// What a pod's local storage measured, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// Each counted container's writable layer and logs, by container name.
    pub containers: Vec<(String, u64)>,
    /// The pod's disk emptyDirs and its `/etc/hosts`.
    pub other: u64,
}

impl PodUsage {
    fn total(&self) -> u64 {
        self.containers
            .iter()
            .map(|(_, b)| *b)
            .fold(self.other, u64::saturating_add)
    }
}

/// Upstream's decision after the emptyDir check: the eviction message when the pod is over
/// its containers' total `ephemeral-storage` limit, else when a regular container is over
/// its own.
pub fn storage_limit_message(spec: &PodSpec, usage: &PodUsage) -> Option<String> {
    let limit = pod_storage_limit(spec)?;
    if i128::from(usage.total()) > i128::from(limit.bytes) {
        return Some(pod_limit_message(&limit));
    }
    for c in &spec.containers {
        let Some(own) = container_limit(c).filter(|l| l.bytes != 0) else {
            continue;
        };
        let used: u64 = usage
            .containers
            .iter()
            .filter(|(name, _)| *name == c.name)
            .map(|(_, b)| *b)
            .sum();
        if i128::from(used) > i128::from(own.bytes) {
            return Some(container_limit_message(&c.name, &own));
        }
    }
    None
}

/// Upstream `PodLimits` of `ephemeral-storage`; `None` when no container declares one (the
/// pod has no limit then).
pub fn pod_storage_limit(spec: &PodSpec) -> Option<StorageQuantity> {
    let mut limits: Option<StorageQuantity> = None;
    for c in &spec.containers {
        limits = add(limits, container_limit(c));
    }
    let mut sidecars = None;
    let mut init: Option<StorageQuantity> = None;
    for c in spec.init_containers.iter().flatten() {
        let running = if is_restartable_init(c) {
            limits = add(limits, container_limit(c));
            sidecars = add(sidecars, container_limit(c));
            sidecars
        } else {
            add(container_limit(c), sidecars)
        };
        init = larger(init, running);
    }
    let limits = larger(limits, init)?;
    // Upstream adds the overhead to a non-zero limit only.
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get(EPHEMERAL_STORAGE))
        .and_then(|q| StorageQuantity::parse(&q.0))
        .filter(|_| limits.bytes != 0);
    Some(overhead.map_or(limits, |o| limits.add(o)))
}

fn container_limit(c: &Container) -> Option<StorageQuantity> {
    c.resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(EPHEMERAL_STORAGE))
        .and_then(|q| StorageQuantity::parse(&q.0))
}

/// Upstream `addResourceList` of one resource: an absent side leaves the other.
fn add(a: Option<StorageQuantity>, b: Option<StorageQuantity>) -> Option<StorageQuantity> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.add(b)),
        (a, b) => a.or(b),
    }
}

/// Upstream `maxResourceList` of one resource: the second replaces the first when larger.
fn larger(a: Option<StorageQuantity>, b: Option<StorageQuantity>) -> Option<StorageQuantity> {
    match (a, b) {
        (Some(a), Some(b)) if b.bytes > a.bytes => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// How upstream prints a quantity, chosen by its suffix when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `Ki`, `Mi`, ...
    BinarySi,
    /// No suffix, `k`, `M`, ...
    DecimalSi,
    /// `e3`, `E6`, ...
    DecimalExponent,
}

/// A number of bytes with upstream's format, printed as upstream's `Quantity.String()` does
/// (canonical: `2048Ki` prints `2Mi`, a sum keeps the format of its first non-zero term).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageQuantity {
    bytes: i64,
    format: Format,
}

impl StorageQuantity {
    /// Parses a quantity (bytes, rounded up as upstream `Value()`); `None` when invalid.
    pub fn parse(text: &str) -> Option<StorageQuantity> {
        let bytes = Quantity::parse(text).ok()?.value();
        let body = text.trim_start_matches(['+', '-']);
        let suffix = body.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        let format = if suffix.ends_with('i') {
            Format::BinarySi
        } else if suffix.len() > 1 && suffix.starts_with(['e', 'E']) {
            Format::DecimalExponent
        } else {
            Format::DecimalSi
        };
        Some(StorageQuantity { bytes, format })
    }

    /// The number of bytes.
    pub fn bytes(&self) -> i64 {
        self.bytes
    }

    /// Upstream `Quantity.Add`: the format of a zero left side is the right side's.
    fn add(self, other: StorageQuantity) -> StorageQuantity {
        StorageQuantity {
            bytes: self.bytes.saturating_add(other.bytes),
            format: if self.bytes == 0 {
                other.format
            } else {
                self.format
            },
        }
    }
}

impl fmt::Display for StorageQuantity {
    /// Upstream `CanonicalizeBytes` for a whole number: a binary value under 1024 prints as
    /// decimal; the largest exact unit (1024ⁿ binary, 1000ⁿ otherwise) is the suffix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let binary = self.format == Format::BinarySi && self.bytes.unsigned_abs() >= 1024;
        let (base, suffixes): (i64, [&str; 7]) = if binary {
            (1024, ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
        } else if self.format == Format::DecimalExponent {
            (1000, ["", "e3", "e6", "e9", "e12", "e15", "e18"])
        } else {
            (1000, ["", "k", "M", "G", "T", "P", "E"])
        };
        let mut n = self.bytes;
        let mut unit = 0;
        while n != 0 && n % base == 0 && unit < suffixes.len() - 1 {
            n /= base;
            unit += 1;
        }
        write!(f, "{n}{}", suffixes[unit])
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
