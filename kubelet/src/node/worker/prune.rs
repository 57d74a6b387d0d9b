//! Container GC within a pod: the instances beyond the current and the previous one of each
//! container go, and their log files and termination-message files go with them.
//!
//! Upstream's container GC keeps `MaxPerPodContainer` = 1 dead instance per container (the
//! previous one, for `kubectl logs -p`) next to the current one, and removes a pruned
//! instance's logs before the instance itself (`removeContainerLog`: the log path and every
//! rotated `<path>.*`), so that a failed log removal leaves the instance to retry on the next
//! pass. Without it a crash-looping container leaves one log set per restart forever.
//!
//! A pass also sweeps each container's log directory and termination-message directory for
//! files of instances that no longer exist (left by an agent that stopped between the two
//! removals, or by versions that never removed them), never touching the kept instances' files
//! nor any count at or above the current one (the restart count is recovered from the highest
//! `<n>.log` when the runtime's state is lost).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kubenode_fsutil::read_dir_if_present;
use kubenode_runtime::ContainerStatus;

use super::{pod_info, termination_log, WorkerDeps};

impl WorkerDeps {
    /// Removes the instances `prune` names, logs first; then sweeps leftovers of instances that
    /// are gone. `instances` is what the runtime listed for the pod's sandbox.
    pub(super) async fn prune_instances(
        self: &Arc<Self>,
        pod: &Pod,
        instances: &[ContainerStatus],
        prune: &[String],
    ) {
        let info = pod_info(pod);
        let pods_dir = self.pods_dir().join(&info.uid);
        for id in prune {
            let Some(s) = instances.iter().find(|s| &s.id == id) else {
                continue;
            };
            let log = self
                .runtime
                .inner()
                .log_path(&info, &s.name, s.restart_count);
            let term = termination_log(&pods_dir, &s.name, s.restart_count);
            if let Err(e) = remove_log_set(&log).and_then(|()| remove_file_if_present(&term)) {
                tracing::warn!(container = %s.name, restart = s.restart_count, error = %e, "removing the logs of an old container instance; keeping the instance to retry");
                continue;
            }
            if let Err(e) = self.runtime.remove_container(id).await {
                tracing::warn!(error = %e, "removing an old container instance");
            }
        }
        // What stays of each container: the restart counts of the instances not pruned.
        let mut kept: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
        for s in instances.iter().filter(|s| !prune.contains(&s.id)) {
            kept.entry(s.name.as_str())
                .or_default()
                .insert(s.restart_count);
        }
        for (name, counts) in kept {
            let log_dir = self
                .runtime
                .inner()
                .log_path(&info, name, 0)
                .parent()
                .map(Path::to_path_buf);
            let term_dir = termination_log(&pods_dir, name, 0)
                .parent()
                .map(Path::to_path_buf);
            for (dir, kind) in [(log_dir, FileKind::Log), (term_dir, FileKind::Termination)] {
                if let Some(dir) = dir {
                    if let Err(e) = sweep(&dir, kind, &counts) {
                        tracing::warn!(container = name, dir = %dir.display(), error = %e, "sweeping files of removed container instances");
                    }
                }
            }
        }
    }
}

/// The per-instance files of a container directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileKind {
    /// `<n>.log` and its rotated `<n>.log.<suffix>` (the runtime's log directory).
    Log,
    /// `<n>-termination-log` (the pod's `containers/<name>` directory).
    Termination,
}

/// The restart count a file name belongs to, if it is a file of `kind`.
pub(super) fn instance_of(name: &str, kind: FileKind) -> Option<u32> {
    let digits = &name[..name
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(name.len())];
    let rest = &name[digits.len()..];
    let matches = match kind {
        FileKind::Log => rest == ".log" || rest.starts_with(".log."),
        FileKind::Termination => rest == "-termination-log",
    };
    if digits.is_empty() || !matches {
        return None;
    }
    digits.parse().ok()
}

/// Removes the files of `kind` in `dir` that belong to no kept instance and to a count below
/// the highest kept one. A missing directory is fine.
pub(super) fn sweep(dir: &Path, kind: FileKind, kept: &BTreeSet<u32>) -> std::io::Result<()> {
    let Some(&newest) = kept.last() else {
        return Ok(());
    };
    for entry in read_dir_if_present(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = instance_of(&name.to_string_lossy(), kind) else {
            continue;
        };
        if n < newest && !kept.contains(&n) && !entry.file_type()?.is_dir() {
            remove_file_if_present(&entry.path())?;
            tracing::debug!(path = %entry.path().display(), "removed a file of a removed container instance");
        }
    }
    Ok(())
}

/// Removes the log file `log` and every rotated `<log>.*` beside it.
pub(super) fn remove_log_set(log: &Path) -> std::io::Result<()> {
    let (Some(dir), Some(file)) = (log.parent(), log.file_name()) else {
        return Ok(());
    };
    let file = file.to_string_lossy().into_owned();
    let rotated = format!("{file}.");
    for entry in read_dir_if_present(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name == file || name.starts_with(&rotated)) && !entry.file_type()?.is_dir() {
            remove_file_if_present(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_file_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn file_names_map_to_instances() {
        assert_eq!(instance_of("3.log", FileKind::Log), Some(3));
        assert_eq!(
            instance_of("12.log.20260101-000000", FileKind::Log),
            Some(12)
        );
        assert_eq!(instance_of("1.log.1", FileKind::Log), Some(1));
        assert_eq!(instance_of("1.logx", FileKind::Log), None);
        assert_eq!(instance_of("x.log", FileKind::Log), None);
        assert_eq!(
            instance_of("4-termination-log", FileKind::Termination),
            Some(4)
        );
        assert_eq!(instance_of("4.log", FileKind::Termination), None);
    }

    #[test]
    fn a_log_set_is_the_file_and_its_rotations_only() {
        let d = tempfile::tempdir().unwrap();
        for f in ["1.log", "1.log.1", "1.log.2", "10.log", "11.log", "2.log"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        remove_log_set(&d.path().join("1.log")).unwrap();
        assert_eq!(names(d.path()), ["10.log", "11.log", "2.log"]);
    }

    #[test]
    fn sweep_keeps_the_kept_instances_and_anything_newer() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "0.log", "1.log", "1.log.1", "5.log", "6.log", "6.log.1", "9.log", "notes",
        ] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        sweep(d.path(), FileKind::Log, &BTreeSet::from([5, 6])).unwrap();
        // 9.log is above the current instance: the restart count recovered from the log
        // directory must not go backwards.
        assert_eq!(
            names(d.path()),
            ["5.log", "6.log", "6.log.1", "9.log", "notes"]
        );
        sweep(
            &d.path().join("missing"),
            FileKind::Log,
            &BTreeSet::from([1]),
        )
        .unwrap();
    }

    #[test]
    fn sweep_of_termination_files() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "0-termination-log",
            "1-termination-log",
            "2-termination-log",
        ] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        sweep(d.path(), FileKind::Termination, &BTreeSet::from([1, 2])).unwrap();
        assert_eq!(names(d.path()), ["1-termination-log", "2-termination-log"]);
    }
}
