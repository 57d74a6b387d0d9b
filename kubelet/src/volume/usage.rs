//! Enforcing a disk emptyDir's `sizeLimit`, as upstream's eviction manager does: the volume's
//! usage (allocated blocks, as `du`, not crossing into other filesystems, not following
//! symlinks) is measured every [`CHECK_INTERVAL`] per pod, and a volume over its limit gets the
//! pod evicted with upstream's message (`Usage of EmptyDir volume "X" exceeds the limit "Y". `).
//! Memory-medium volumes are bounded by their tmpfs size instead.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// How often a pod's emptyDir usage is measured: upstream's eviction manager monitoring period
/// (`evictionMonitoringPeriod`, 10 s).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Upstream's eviction message for an emptyDir over its limit (`emptyDirMessageFmt`).
pub fn exceeded_message(volume: &str, limit: &str) -> String {
    format!("Usage of EmptyDir volume {volume:?} exceeds the limit {limit:?}. ")
}

/// Bytes allocated under `dir` (512-byte blocks, as `du`), staying on `dir`'s filesystem.
pub fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(dir)?;
    let dev = meta.dev();
    let mut total = meta.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            // A bound on the walk: a volume with millions of files is measured partially.
            if visited > 1_000_000 {
                return Ok(total);
            }
            let Ok(m) = entry.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_upstreams() {
        assert_eq!(
            exceeded_message("cache", "1Mi"),
            "Usage of EmptyDir volume \"cache\" exceeds the limit \"1Mi\". "
        );
    }

    #[test]
    fn usage_counts_written_bytes_in_subdirectories() {
        let tmp = tempfile::tempdir().unwrap();
        let before = disk_usage(tmp.path()).unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/big"), vec![7u8; 256 * 1024]).unwrap();
        let after = disk_usage(tmp.path()).unwrap();
        assert!(after >= before + 256 * 1024, "{before} -> {after}");
    }
}
