//! The leak guard: at the end of a privileged test, nothing carrying the test's tag survives.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use crate::cmd::run;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Checks that no network namespace, link, mount, iptables rule or chain, runc container, cgroup
/// or process whose name (or command line) contains the tag is left. Call [`LeakGuard::check`]
/// last, after dropping everything the test made.
#[derive(Debug)]
pub struct LeakGuard {
    tag: String,
    runc_roots: Vec<std::path::PathBuf>,
}

impl LeakGuard {
    /// A guard for resources named with `tag`.
    pub fn new(tag: &str) -> LeakGuard {
        LeakGuard {
            tag: tag.to_string(),
            runc_roots: vec!["/run/runc".into()],
        }
    }

    /// Also list runc containers under this `--root`.
    pub fn runc_root(mut self, root: impl Into<std::path::PathBuf>) -> LeakGuard {
        self.runc_roots.push(root.into());
        self
    }

    /// Every leftover, one line each (empty when clean).
    pub fn leftovers(&self) -> Vec<String> {
        let tag = &self.tag;
        let mut found = Vec::new();
        let mut lines_of = |what: &str, cmd: &mut Command| {
            if let Ok(out) = run(cmd, TIMEOUT) {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if line.contains(tag.as_str()) {
                        found.push(format!("{what}: {}", line.trim()));
                    }
                }
            }
        };
        lines_of("netns", Command::new("ip").args(["netns", "list"]));
        lines_of("link", Command::new("ip").args(["-o", "link", "show"]));
        lines_of("iptables", Command::new("iptables-save").arg("-c"));
        for root in &self.runc_roots {
            if root.exists() {
                lines_of(
                    "runc",
                    Command::new("runc").arg("--root").arg(root).arg("list"),
                );
            }
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            for line in mounts.lines().filter(|l| l.contains(tag.as_str())) {
                found.push(format!("mount: {line}"));
            }
        }
        for root in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/cpu,cpuacct",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/unified",
        ] {
            find_dirs(Path::new(root), tag, 4, &mut found);
        }
        let me = std::process::id().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let name = p.file_name().to_string_lossy().into_owned();
                if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                if let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) {
                    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    if cmdline.contains(tag.as_str()) {
                        found.push(format!("process {name}: {}", cmdline.trim()));
                    }
                }
            }
        }
        found
    }

    /// Fails, listing every leftover, when anything carrying the tag survives.
    pub fn check(&self) -> anyhow::Result<()> {
        let found = self.leftovers();
        if !found.is_empty() {
            bail!(
                "left behind by the test (tag {}):\n  {}",
                self.tag,
                found.join("\n  ")
            );
        }
        Ok(())
    }
}

fn find_dirs(dir: &Path, tag: &str, depth: u32, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        if e.file_name().to_string_lossy().contains(tag) {
            found.push(format!("cgroup: {}", path.display()));
        } else if depth > 1 {
            find_dirs(&path, tag, depth - 1, found);
        }
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first (test cleanup).
pub(crate) fn unmount_below(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = run(Command::new("umount").args(["-l", p]), TIMEOUT);
    }
}

/// SIGKILLs every process (but this one) whose command line contains `tag`.
pub(crate) fn kill_tagged(tag: &str) {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(tag) {
            if let Ok(pid) = name.parse::<i32>() {
                // SAFETY: kill(2) on a pid read from /proc; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}
