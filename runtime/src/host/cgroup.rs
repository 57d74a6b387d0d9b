//! cgroup directories: where a cgroupfs `cgroupsPath` lives in each mounted
//! hierarchy (v1 controllers and the v2 unified mount), their removal, and
//! the files that count OOM kills.

use std::path::{Path, PathBuf};

use super::HostError;

/// The hierarchy roots under `root`: `root` itself for pure cgroup v2, else
/// every mounted v1 controller directory plus `unified`.
pub fn cgroup_roots(root: &Path) -> Vec<PathBuf> {
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Files whose `oom_kill` counters tell whether the cgroup saw an OOM kill.
pub fn oom_files(root: &Path, cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel).join("memory.events")];
    }
    vec![
        root.join("memory").join(rel).join("memory.oom_control"),
        root.join("unified").join(rel).join("memory.events"),
    ]
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub(super) fn remove(root: &Path, cgroups_path: &str) -> Result<(), HostError> {
    let rel = cgroups_path.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(());
    }
    let mut first_err = None;
    for h in cgroup_roots(root) {
        let dir = h.join(rel);
        if let Err(e) = remove_tree(&dir) {
            first_err.get_or_insert(HostError::new("removing cgroup", &dir, e));
        }
    }
    first_err.map_or(Ok(()), Err)
}
