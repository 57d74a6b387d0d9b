//! The exit record a shim leaves on disk when its container exits, written
//! atomically (temporary file, fsync, rename) so a reader never sees half of it.

use std::path::Path;

/// How a container's process ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    /// Exit code; 128+signal when killed by a signal.
    pub exit_code: i32,
    /// The signal that killed it, if any.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the container.
    #[serde(default)]
    pub oom_killed: bool,
    /// When the shim saw the exit (RFC 3339 in the file).
    pub finished_at: jiff::Timestamp,
    /// Output lines the shim could not write to the log (a full disk) and dropped.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_lines_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ExitRecord {
    /// The record for a `waitpid` status.
    pub fn from_wait(status: nix::sys::wait::WaitStatus, oom_killed: bool) -> Option<ExitRecord> {
        use nix::sys::wait::WaitStatus;
        let (exit_code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, None),
            WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
            _ => return None,
        };
        Some(ExitRecord {
            exit_code,
            signal,
            oom_killed,
            finished_at: jiff::Timestamp::now(),
            log_lines_dropped: 0,
        })
    }

    /// Writes the record atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::fsutil::write_json(path, self)
    }

    /// Reads a record; `None` when there is none (yet).
    pub fn read(path: &Path) -> Option<ExitRecord> {
        crate::fsutil::read_json(path).ok()
    }
}

/// Sum of the `oom_kill N` counters in cgroup files (v1 `memory.oom_control`,
/// v2 `memory.events`); missing files count 0.
pub fn oom_kills(files: &[std::path::PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn exit_codes() {
        let p = Pid::from_raw(1);
        assert_eq!(
            ExitRecord::from_wait(WaitStatus::Exited(p, 7), false)
                .unwrap()
                .exit_code,
            7
        );
        let k =
            ExitRecord::from_wait(WaitStatus::Signaled(p, Signal::SIGKILL, false), true).unwrap();
        assert_eq!((k.exit_code, k.signal, k.oom_killed), (137, Some(9), true));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit");
        assert!(ExitRecord::read(&path).is_none());
        k.write(&path).unwrap();
        assert_eq!(ExitRecord::read(&path).unwrap(), k);
    }

    #[test]
    fn the_file_keeps_its_rfc3339_time() {
        // Written by an older agent (the time was a string); read and written back the same.
        let old = r#"{"exit_code":0,"signal":null,"oom_killed":false,"finished_at":"2026-12-04T17:10:00.123456789Z"}"#;
        let rec: ExitRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            rec.finished_at,
            "2026-12-04T17:10:00.123456789Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
        );
        assert_eq!(serde_json::to_string(&rec).unwrap(), old);
    }

    #[test]
    fn oom_counters() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory.oom_control");
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        let v2 = dir.path().join("memory.events");
        std::fs::write(&v2, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills(&[v1, v2, dir.path().join("missing")]), 3);
    }
}
