//! The leak guard: at the end of a privileged test, nothing carrying the test's tag survives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;

use crate::cmd::run;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The UIDs of the pods each agent (by its tag) ran: pod cgroups carry the pod's UID, not the
/// tag, so the guard needs to know which UIDs are the test's.
static POD_UIDS: Mutex<BTreeMap<String, BTreeSet<String>>> = Mutex::new(BTreeMap::new());

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Checks that no network namespace, link, mount, iptables rule or chain, runc container, cgroup
/// or process whose name (or command line) contains the tag is left, and no cgroup of a pod an
/// agent with the tag ran (see [`LeakGuard::track_pod`]). Call [`LeakGuard::check`] last, after
/// dropping everything the test made.
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

    /// Records that the agent tagged `agent_tag` ran the pod `uid`: its pod cgroups
    /// (`/kubepods[/<qos>]/pod<uid>` in every hierarchy) then count as leftovers of every guard
    /// whose tag `agent_tag` contains. [`crate::TestAgent`] records each pod it sees.
    pub fn track_pod(agent_tag: &str, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let mut uids = POD_UIDS.lock().unwrap_or_else(|p| p.into_inner());
        uids.entry(agent_tag.to_string())
            .or_default()
            .insert(uid.to_string());
    }

    /// The cgroup directories that exist of the pods tracked for this guard's tag.
    pub fn pod_cgroups(&self) -> Vec<PathBuf> {
        let uids: BTreeSet<String> = POD_UIDS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(agent, _)| agent.contains(self.tag.as_str()))
            .flat_map(|(_, uids)| uids.iter().cloned())
            .collect();
        let mut found = Vec::new();
        for root in cgroup_hierarchies() {
            for uid in &uids {
                found.extend(
                    pod_cgroup_paths(uid)
                        .into_iter()
                        .map(|rel| root.join(rel))
                        .filter(|dir| dir.is_dir()),
                );
            }
        }
        found
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
            match crate::runc_list(root) {
                Ok(list) => {
                    for c in list {
                        if c.to_string().contains(tag.as_str()) {
                            found.push(format!("runc: {} ({})", c["id"], c["bundle"]));
                        }
                    }
                }
                Err(e) => found.push(format!("runc: {e:#}")),
            }
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            for line in mounts.lines().filter(|l| l.contains(tag.as_str())) {
                found.push(format!("mount: {line}"));
            }
        }
        for root in cgroup_hierarchies() {
            find_dirs(&root, tag, 4, &mut found);
        }
        for dir in self.pod_cgroups() {
            found.push(format!("pod cgroup: {}", dir.display()));
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

    /// Fails, listing every leftover, when anything carrying the tag survives. Leftover pod
    /// cgroups are removed once listed (the empty ones; a cgroup with processes stays), so
    /// that one failed test does not litter the machine for the next.
    pub fn check(&self) -> anyhow::Result<()> {
        let found = self.leftovers();
        if !found.is_empty() {
            for dir in self.pod_cgroups() {
                remove_cgroup_tree(&dir);
            }
            bail!(
                "left behind by the test (tag {}):\n  {}",
                self.tag,
                found.join("\n  ")
            );
        }
        Ok(())
    }
}

/// The mounted cgroup hierarchies: the root itself on a pure cgroup v2 host, else every v1
/// controller directory and the v2 `unified` mount of a hybrid host (the names vary: `cpu` and
/// `cpuacct` may be one hierarchy or two).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.is_symlink() && p.join("cgroup.procs").exists())
        .collect();
    out.sort();
    out
}

/// Where the kubelet puts pod `uid`'s cgroup, relative to a hierarchy, one path per QoS class
/// (upstream's cgroupfs layout: `kubepods/pod<uid>` for Guaranteed, `kubepods/burstable/...`
/// and `kubepods/besteffort/...`); containers are below it.
fn pod_cgroup_paths(uid: &str) -> [String; 3] {
    [
        format!("kubepods/pod{uid}"),
        format!("kubepods/burstable/pod{uid}"),
        format!("kubepods/besteffort/pod{uid}"),
    ]
}

/// Removes a cgroup directory and its children, deepest first (rmdir is how cgroups go).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
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
