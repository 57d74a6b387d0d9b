//! The host operations behind pods and containers, behind the [`Host`] trait:
//! pinned pod namespaces, overlay root filesystems and cgroup directories.
//! [`LinuxHost`] does them with syscalls; `testing::RecordingHost` records them.

mod cgroup;
mod devices;
mod namespaces;
mod overlay;
pub mod saferead;

use std::path::{Path, PathBuf};

pub use cgroup::{cgroup_roots, cpu_shares_to_weight, oom_files, PodCgroupResources};
pub use devices::host_devices;

/// A failed host operation.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct HostError {
    /// What was being done.
    pub what: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

impl HostError {
    pub(crate) fn new(
        what: &'static str,
        path: &Path,
        source: impl Into<std::io::Error>,
    ) -> HostError {
        HostError {
            what,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// The files to pin a pod's new namespaces on; `None` creates no namespace of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceFiles<'a> {
    /// The network namespace.
    pub net: Option<&'a Path>,
    /// The IPC namespace.
    pub ipc: Option<&'a Path>,
    /// The UTS namespace and the hostname set in it.
    pub uts: Option<(&'a Path, &'a str)>,
}

/// OS operations the runtime needs besides the OCI runtime.
pub trait Host: Send + Sync + std::fmt::Debug {
    /// Creates new namespaces and bind-mounts each on its file; on failure none is left.
    fn create_namespaces(&self, files: &NamespaceFiles<'_>) -> Result<(), HostError>;
    /// Unmounts and removes a namespace file made by `create_namespaces`; absent is fine.
    fn remove_namespace(&self, path: &Path) -> Result<(), HostError>;
    /// Mounts an overlay at `target`: `lowers` bottom layer first.
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), HostError>;
    /// Mounts a pod's `/dev/shm` tmpfs (mode 1777, 64 MiB, nosuid/nodev/noexec) at `target`.
    fn mount_shm(&self, target: &Path) -> Result<(), HostError>;
    /// Unmounts `target` if it is a mount point.
    fn unmount(&self, target: &Path) -> Result<(), HostError>;
    /// The mount points at or below `dir`, deepest first (what must be unmounted before `dir`
    /// may be deleted). By default read from `/proc/self/mountinfo`.
    fn mounts_under(&self, dir: &Path) -> Result<Vec<PathBuf>, HostError> {
        mounts_under(dir)
    }
    /// Removes the cgroup `cgroups_path` (and its empty children) in every hierarchy.
    fn remove_cgroup(&self, cgroups_path: &str) -> Result<(), HostError>;
    /// Creates the cgroup `cgroups_path` in the pids controller with `pids.max` = `max`
    /// (`None`: `max`, no limit).
    fn set_pids_limit(&self, cgroups_path: &str, max: Option<u64>) -> Result<(), HostError>;
    /// Creates the cgroup `cgroups_path` in the cpu and memory controllers with the pod's
    /// shares and limits (the kubelet's pod cgroup).
    fn set_pod_resources(
        &self,
        cgroups_path: &str,
        resources: &PodCgroupResources,
    ) -> Result<(), HostError>;
}

/// The real host.
#[derive(Debug, Clone, Default)]
pub struct LinuxHost {
    cgroup_root: PathBuf,
}

impl LinuxHost {
    /// A host whose cgroup hierarchies are mounted under `/sys/fs/cgroup`.
    pub fn new() -> LinuxHost {
        LinuxHost {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// Whether `path` is a mount point (listed in `/proc/self/mountinfo`).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m) == want))
}

/// The mount points at or below `dir` in `/proc/self/mountinfo`, deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, HostError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| HostError::new("reading", Path::new("/proc/self/mountinfo"), e))?;
    // The table holds canonical paths.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(&dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    Ok(found)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

impl Host for LinuxHost {
    fn create_namespaces(&self, files: &NamespaceFiles<'_>) -> Result<(), HostError> {
        namespaces::create(files)
    }

    fn remove_namespace(&self, path: &Path) -> Result<(), HostError> {
        namespaces::remove(path)
    }

    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), HostError> {
        overlay::mount(lowers, upper, work, target)
    }

    fn mount_shm(&self, target: &Path) -> Result<(), HostError> {
        overlay::mount_shm(target)
    }

    fn unmount(&self, target: &Path) -> Result<(), HostError> {
        overlay::unmount(target)
    }

    fn remove_cgroup(&self, cgroups_path: &str) -> Result<(), HostError> {
        cgroup::remove(&self.cgroup_root, cgroups_path)
    }

    fn set_pids_limit(&self, cgroups_path: &str, max: Option<u64>) -> Result<(), HostError> {
        let max = max.map_or_else(|| "max".to_string(), |n| n.to_string());
        cgroup::set_pids_max(&self.cgroup_root, cgroups_path, &max)
    }

    fn set_pod_resources(
        &self,
        cgroups_path: &str,
        resources: &PodCgroupResources,
    ) -> Result<(), HostError> {
        cgroup::set_resources(&self.cgroup_root, cgroups_path, resources)
    }
}
