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

/// Creates the cgroup `cgroups_path` in the pids controller and sets its `pids.max` (a
/// number, or `max`): the kubelet's pod cgroup with `podPidsLimit`. On cgroup v1 the pids
/// hierarchy is `<root>/pids`; on v2 (`root` unified) the pids controller is enabled in the
/// `cgroup.subtree_control` of every ancestor below the root first.
pub(super) fn set_pids_max(root: &Path, cgroups_path: &str, max: &str) -> Result<(), HostError> {
    let rel = cgroups_path.trim_start_matches('/');
    let v2 = root.join("cgroup.controllers").exists();
    let base = if v2 {
        root.to_path_buf()
    } else {
        root.join("pids")
    };
    let dir = base.join(rel);
    let available = if v2 {
        std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
    } else {
        base.join("cgroup.procs").exists()
    };
    if !available {
        // Without a pids controller there is no limit to lift, and none to set.
        return match max {
            "max" => Ok(()),
            _ => Err(HostError::new(
                "setting a pids limit: no pids controller at",
                &base,
                std::io::Error::from(std::io::ErrorKind::Unsupported),
            )),
        };
    }
    if v2 {
        let mut at = base.clone();
        for part in Path::new(rel).components() {
            let control = at.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control)
                .map_err(|e| HostError::new("reading", &control, e))?;
            if !enabled.split_whitespace().any(|c| c == "pids") {
                std::fs::write(&control, "+pids")
                    .map_err(|e| HostError::new("enabling the pids controller in", &control, e))?;
            }
            at.push(part);
            std::fs::create_dir_all(&at).map_err(|e| HostError::new("creating cgroup", &at, e))?;
        }
    } else {
        std::fs::create_dir_all(&dir).map_err(|e| HostError::new("creating cgroup", &dir, e))?;
    }
    let file = dir.join("pids.max");
    std::fs::write(&file, max).map_err(|e| HostError::new("writing", &file, e))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_max_on_cgroup_v1() {
        let root = tempfile::tempdir().unwrap();
        // No pids hierarchy: no limit is fine, a limit is an error.
        set_pids_max(root.path(), "/kubepods/besteffort/podu1", "max").unwrap();
        assert!(set_pids_max(root.path(), "/kubepods/besteffort/podu1", "16").is_err());
        assert!(!root.path().join("pids").exists());
        std::fs::create_dir(root.path().join("pids")).unwrap();
        std::fs::write(root.path().join("pids/cgroup.procs"), "").unwrap();
        set_pids_max(root.path(), "/kubepods/besteffort/podu1", "16").unwrap();
        let file = root.path().join("pids/kubepods/besteffort/podu1/pids.max");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "16");
    }

    #[test]
    fn pids_max_on_cgroup_v2_enables_the_controller_on_the_way() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::write(r.join("cgroup.subtree_control"), "memory pids").unwrap();
        std::fs::create_dir(r.join("kubepods")).unwrap();
        // A real kernel creates this file with the directory; the fake starts it empty.
        std::fs::write(r.join("kubepods/cgroup.subtree_control"), "").unwrap();
        let e = set_pids_max(r, "/kubepods/burstable/podu2", "max").unwrap_err();
        assert!(
            e.to_string()
                .contains("kubepods/burstable/cgroup.subtree_control"),
            "{e}"
        );
        std::fs::write(r.join("kubepods/burstable/cgroup.subtree_control"), "").unwrap();
        set_pids_max(r, "/kubepods/burstable/podu2", "max").unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("cgroup.subtree_control")).unwrap(),
            "memory pids",
            "already enabled: left alone"
        );
        for d in ["kubepods", "kubepods/burstable"] {
            let c = std::fs::read_to_string(r.join(d).join("cgroup.subtree_control")).unwrap();
            assert_eq!(c, "+pids", "{d}");
        }
        let max = std::fs::read_to_string(r.join("kubepods/burstable/podu2/pids.max")).unwrap();
        assert_eq!(max, "max");
    }
}
