//! Start-up checks: the agent refuses to start, with one message naming the cause and the fix,
//! on a host where it could not run a single pod (instead of failing every sandbox every few
//! seconds for ever).
//!
//! Each check reads the host through [`Host`]: [`LinuxHost`] is the real one, tests pass a fake
//! with the files and executables they describe. The checks:
//! - a cgroup filesystem is mounted (runc creates every container in cgroups);
//! - the OCI runtime and the container shim are executables;
//! - the root, run and log directories are writable;
//! - swap is off, unless `failSwapOn: false` (the kubelet's rule);
//! - iptables is installed, for the roles that run the proxy.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What the checks read from the host.
pub trait Host {
    /// The text of a file (`/proc/self/mountinfo`, `/proc/swaps`).
    fn read(&self, path: &Path) -> io::Result<String>;
    /// `name_or_path` as an executable file: a path as given, a bare name looked up in `PATH`.
    fn find_executable(&self, name_or_path: &Path) -> Option<PathBuf>;
    /// Creates `dir` (and its parents) when missing, then creates and removes a file in it.
    fn probe_writable(&self, dir: &Path) -> io::Result<()>;
}

/// The machine the agent runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxHost;

impl Host for LinuxHost {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn find_executable(&self, name_or_path: &Path) -> Option<PathBuf> {
        // The runtime crate's lookup, so the check and the use agree.
        kubenode_runtime::oci::resolve_runtime(name_or_path)
    }

    fn probe_writable(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let probe = dir.join(format!(".kubenode-preflight-{}", std::process::id()));
        std::fs::File::create(&probe)?;
        std::fs::remove_file(&probe)
    }
}

/// One reason the agent cannot run pods: what is wrong, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong, naming the file, binary or setting.
    pub cause: String,
    /// What the operator can do.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.cause, self.fix)
    }
}

/// Every failed check: the agent does not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub Vec<Problem>);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "cannot run pods on this host: {one}"),
            many => {
                write!(f, "cannot run pods on this host:")?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Refused {}

/// What the agent is about to use.
#[derive(Debug, Clone)]
pub struct AgentPlan<'a> {
    /// The configured OCI runtime (name or path).
    pub runtime: &'a Path,
    /// The shim binary the runtime will start (see `kubenode_runtime::default_shim_binary`).
    pub shim: &'a Path,
    /// The running kubenode binary (the shim's fallback).
    pub exe: &'a Path,
    /// The directories the agent writes, with the flag that sets each (`--root-dir`, ...).
    pub dirs: Vec<(&'a str, &'a Path)>,
    /// `failSwapOn`.
    pub fail_swap_on: bool,
    /// Whether the proxy runs in this process: then iptables must be installed.
    pub proxy: bool,
}

/// Runs every check of `kubenode agent` / `kubenode kubelet`.
pub fn check_agent(host: &dyn Host, plan: &AgentPlan<'_>) -> Result<(), Refused> {
    let mut problems = Vec::new();
    problems.extend(cgroups(host));
    problems.extend(runtime(host, plan.runtime));
    problems.extend(shim(host, plan.shim, plan.exe));
    for (flag, dir) in &plan.dirs {
        problems.extend(writable(host, flag, dir));
    }
    problems.extend(swap(host, plan.fail_swap_on));
    if plan.proxy {
        problems.extend(iptables(host, "auto"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Refused(problems))
    }
}

/// The check of `kubenode proxy`: iptables for `mode` (`auto`, `nft` or `legacy`).
pub fn check_proxy(host: &dyn Host, mode: &str) -> Result<(), Refused> {
    match iptables(host, mode) {
        Some(p) => Err(Refused(vec![Problem {
            fix: "install it (`apt-get install iptables`)".into(),
            ..p
        }])),
        None => Ok(()),
    }
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// runc puts every container in cgroups and finds the hierarchies in `/proc/self/mountinfo`
/// (fstype `cgroup` or `cgroup2`); without one, every sandbox fails with "no cgroup mount
/// found in mountinfo".
pub fn cgroups(host: &dyn Host) -> Option<Problem> {
    let info = match host.read(Path::new(MOUNTINFO)) {
        Ok(info) => info,
        Err(e) => {
            return Some(Problem {
                cause: format!("reading {MOUNTINFO}: {e}"),
                fix: "is /proc mounted?".into(),
            })
        }
    };
    // A mountinfo line: `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`.
    let mounts: Vec<(&str, &str, &str)> = info
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            Some((point, right.next()?, right.next().unwrap_or_default()))
        })
        .collect();
    if mounts
        .iter()
        .any(|(_, fstype, _)| *fstype == "cgroup" || *fstype == "cgroup2")
    {
        return None;
    }
    let cause = format!(
        "no cgroup filesystem is mounted in this process's mount namespace ({MOUNTINFO} lists \
         no cgroup or cgroup2 mount), so runc can create no container"
    );
    // `ip netns exec NAME` unshares the mount namespace and mounts a fresh sysfs on /sys with
    // NAME as its source (iproute2's netns_switch), which hides the cgroup mounts below /sys.
    let netns = mounts
        .iter()
        .rev()
        .find(|(point, fstype, _)| *point == "/sys" && *fstype == "sysfs")
        .map(|(_, _, source)| *source)
        .filter(|source| !source.is_empty() && *source != "sysfs" && *source != "none");
    let fix = match netns {
        Some(name) => format!(
            "/sys is the sysfs `ip netns exec {name}` mounts, which hides the cgroup mounts: \
             start the agent with `nsenter --net=/run/netns/{name} kubenode ...` instead (it \
             changes only the network namespace)"
        ),
        None => "if the agent was started with `ip netns exec NAME`, which remounts /sys and \
                 hides the cgroup mounts, start it with `nsenter --net=/run/netns/NAME \
                 kubenode ...` instead; otherwise mount the cgroup hierarchy \
                 (`mount -t cgroup2 none /sys/fs/cgroup`)"
            .into(),
    };
    Some(Problem { cause, fix })
}

/// The OCI runtime must be an executable path or a name in `PATH`.
pub fn runtime(host: &dyn Host, runtime: &Path) -> Option<Problem> {
    if host.find_executable(runtime).is_some() {
        return None;
    }
    let shown = runtime.display();
    let cause = if runtime.components().count() > 1 {
        format!("the OCI runtime {shown} is not an executable file")
    } else {
        format!("the OCI runtime `{shown}` is not in PATH")
    };
    let fix = if runtime == Path::new(kubenode_kubelet::config::DEFAULT_RUNTIME) {
        "install runc (`apt-get install runc`), or set `runtime:` in the configuration file \
         (or --runtime) to the path of another OCI runtime"
            .to_string()
    } else {
        format!(
            "install it, or correct `runtime:` in the configuration file (or --runtime); \
             known to work: {}",
            kubenode_runtime::oci::KNOWN_RUNTIMES.join(", ")
        )
    };
    Some(Problem { cause, fix })
}

/// Each container's shim is `kubenode-shim` next to the kubenode binary when that file
/// exists, else `kubenode shim` from the kubenode binary itself (the documented fallback).
/// Either way it must be an executable file.
pub fn shim(host: &dyn Host, shim: &Path, exe: &Path) -> Option<Problem> {
    if host.find_executable(shim).is_some() {
        return None;
    }
    let shown = shim.display();
    Some(if shim == exe {
        Problem {
            cause: format!(
                "the container shim is `kubenode shim` of {shown}, which is not an executable \
                 file (was the binary removed or replaced while starting?)"
            ),
            fix: "start the agent from the installed kubenode binary, with kubenode-shim \
                  installed next to it"
                .into(),
        }
    } else {
        Problem {
            cause: format!("the container shim {shown} is not executable"),
            fix: format!(
                "make it executable (`chmod 0755 {shown}`), or remove it so that the agent \
                 uses `kubenode shim` of {}",
                exe.display()
            ),
        }
    })
}

/// The agent keeps its state in `dir` (set with `flag`): it must be writable.
pub fn writable(host: &dyn Host, flag: &str, dir: &Path) -> Option<Problem> {
    let e = host.probe_writable(dir).err()?;
    let shown = dir.display();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    Some(Problem {
        cause: format!("the directory {shown} ({flag}) is not writable: {e}"),
        fix: if root {
            format!("make {shown} writable (is its filesystem read-only?), or choose another with {flag}")
        } else {
            format!("run the agent as root (it mounts, creates namespaces and runs runc), or choose another directory with {flag}")
        },
    })
}

const SWAPS: &str = "/proc/swaps";

/// The kubelet's rule (its container manager at start-up): with `failSwapOn` (the default),
/// any line after the header of `/proc/swaps` refuses the start; a host without
/// `/proc/swaps` has no swap.
pub fn swap(host: &dyn Host, fail_swap_on: bool) -> Option<Problem> {
    if !fail_swap_on {
        return None;
    }
    let text = match host.read(Path::new(SWAPS)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(Problem {
                cause: format!("reading {SWAPS} to check that swap is off: {e}"),
                fix: "set `failSwapOn: false` in the configuration file to skip the check".into(),
            })
        }
    };
    let devices: Vec<&str> = text
        .trim()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if devices.is_empty() {
        return None;
    }
    Some(Problem {
        cause: format!(
            "swap is on ({SWAPS} lists {}), and pods' memory limits and the kubelet's \
             memory accounting assume no swap",
            devices.join(", ")
        ),
        fix: "turn it off (`swapoff -a`, and remove it from /etc/fstab), or set \
              `failSwapOn: false` in the configuration file"
            .into(),
    })
}

/// The proxy programs Services with `iptables-<mode>-restore` and `-save` and reads with
/// `iptables-<mode>`; `auto` needs one complete backend.
pub fn iptables(host: &dyn Host, mode: &str) -> Option<Problem> {
    let modes: &[&str] = match mode {
        "nft" => &["nft"],
        "legacy" => &["legacy"],
        // An unknown mode is the firewall's own error, with its own message.
        _ => &["nft", "legacy"],
    };
    let complete = |m: &str| {
        ["", "-restore", "-save"].iter().all(|s| {
            host.find_executable(Path::new(&format!("iptables-{m}{s}")))
                .is_some()
        })
    };
    if modes.iter().any(|m| complete(m)) {
        return None;
    }
    let wanted: Vec<String> = modes
        .iter()
        .map(|m| format!("iptables-{m}-restore"))
        .collect();
    Some(Problem {
        cause: format!(
            "iptables is not installed ({} not in PATH), and the proxy programs Services with it",
            wanted.join(" or ")
        ),
        fix: "install it (`apt-get install iptables`), or run `kubenode kubelet` for the \
              kubelet role alone"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A host made of the files, executables and unwritable directories a test names.
    #[derive(Debug, Default)]
    struct FakeHost {
        files: HashMap<PathBuf, String>,
        executables: HashSet<PathBuf>,
        read_only: HashSet<PathBuf>,
    }

    impl FakeHost {
        /// A host every check passes on: cgroups mounted, no swap, runc, the shim, iptables.
        fn good() -> FakeHost {
            let mut h = FakeHost::default();
            h.file(MOUNTINFO, HOST_MOUNTINFO);
            h.file(SWAPS, "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
            for exe in [
                "runc",
                "/usr/local/bin/kubenode",
                "/usr/local/bin/kubenode-shim",
                "iptables-nft",
                "iptables-nft-restore",
                "iptables-nft-save",
            ] {
                h.executables.insert(exe.into());
            }
            h
        }

        fn file(&mut self, path: &str, text: &str) {
            self.files.insert(path.into(), text.into());
        }
    }

    impl Host for FakeHost {
        fn read(&self, path: &Path) -> io::Result<String> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn find_executable(&self, p: &Path) -> Option<PathBuf> {
            self.executables.get(p).cloned()
        }
        fn probe_writable(&self, dir: &Path) -> io::Result<()> {
            if self.read_only.contains(dir) {
                Err(io::Error::from_raw_os_error(libc::EROFS))
            } else {
                Ok(())
            }
        }
    }

    /// This machine's mountinfo, shortened: cgroup v1 with a v2 `unified` mount.
    const HOST_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// The same process under `ip netns exec demo`: a fresh sysfs named after the namespace,
    /// no cgroup mount.
    const NETNS_EXEC_MOUNTINFO: &str = "\
48 47 8:1 / / rw,relatime - ext4 /dev/sda1 rw
51 48 0:40 / /sys rw,relatime - sysfs demo rw
";

    fn plan(fail_swap_on: bool, proxy: bool) -> AgentPlan<'static> {
        AgentPlan {
            runtime: Path::new("runc"),
            shim: Path::new("/usr/local/bin/kubenode-shim"),
            exe: Path::new("/usr/local/bin/kubenode"),
            dirs: vec![
                ("--root-dir", Path::new("/var/lib/kubenode")),
                ("--run-dir", Path::new("/run/kubenode")),
                ("--log-dir", Path::new("/var/log/pods")),
            ],
            fail_swap_on,
            proxy,
        }
    }

    #[test]
    fn a_good_host_passes() {
        assert_eq!(check_agent(&FakeHost::good(), &plan(true, true)), Ok(()));
        assert_eq!(check_proxy(&FakeHost::good(), "auto"), Ok(()));
        assert_eq!(check_proxy(&FakeHost::good(), "nft"), Ok(()));
    }

    #[test]
    fn ip_netns_exec_is_named_with_its_namespace_and_nsenter_suggested() {
        let mut h = FakeHost::good();
        h.file(MOUNTINFO, NETNS_EXEC_MOUNTINFO);
        let msg = check_agent(&h, &plan(true, true)).unwrap_err().to_string();
        assert_eq!(
            msg,
            "cannot run pods on this host: no cgroup filesystem is mounted in this process's \
             mount namespace (/proc/self/mountinfo lists no cgroup or cgroup2 mount), so runc \
             can create no container; /sys is the sysfs `ip netns exec demo` mounts, which \
             hides the cgroup mounts: start the agent with `nsenter --net=/run/netns/demo \
             kubenode ...` instead (it changes only the network namespace)"
        );
    }

    #[test]
    fn no_cgroups_without_a_netns_sysfs_still_suggests_both_fixes() {
        let mut h = FakeHost::good();
        h.file(
            MOUNTINFO,
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n23 22 0:21 / /sys rw - sysfs sysfs rw\n",
        );
        let p = cgroups(&h).expect("a problem");
        assert!(p.fix.contains("nsenter --net=/run/netns/NAME"), "{p}");
        assert!(p.fix.contains("mount -t cgroup2"), "{p}");
        // cgroup v2 alone is enough.
        h.file(
            MOUNTINFO,
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(cgroups(&h), None);
    }

    #[test]
    fn missing_runtime_names_it_and_the_setting() {
        let mut h = FakeHost::good();
        h.executables.remove(Path::new("runc"));
        let p = runtime(&h, Path::new("runc")).expect("a problem");
        assert_eq!(p.cause, "the OCI runtime `runc` is not in PATH");
        assert!(p.fix.contains("apt-get install runc"), "{p}");
        let p = runtime(&h, Path::new("/opt/crun")).expect("a problem");
        assert_eq!(
            p.cause,
            "the OCI runtime /opt/crun is not an executable file"
        );
        assert!(p.fix.contains("--runtime"), "{p}");
    }

    #[test]
    fn shim_not_executable_and_lost_fallback() {
        let mut h = FakeHost::good();
        let exe = Path::new("/usr/local/bin/kubenode");
        let small = Path::new("/usr/local/bin/kubenode-shim");
        assert_eq!(shim(&h, exe, exe), None, "the fallback is fine");
        h.executables.remove(small);
        let p = shim(&h, small, exe).expect("a problem");
        assert!(
            p.cause
                .contains("/usr/local/bin/kubenode-shim is not executable")
                && p.fix.contains("chmod 0755"),
            "{p}"
        );
        let gone = Path::new("/usr/local/bin/kubenode (deleted)");
        let p = shim(&h, gone, gone).expect("a problem");
        assert!(p.cause.contains("`kubenode shim`"), "{p}");
    }

    #[test]
    fn unwritable_dir_names_dir_and_flag() {
        let mut h = FakeHost::good();
        h.read_only.insert("/var/lib/kubenode".into());
        let msg = check_agent(&h, &plan(true, false)).unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "cannot run pods on this host: the directory /var/lib/kubenode (--root-dir) is \
                 not writable: Read-only file system"
            ),
            "{msg}"
        );
        assert!(msg.contains("--root-dir"), "{msg}");
    }

    #[test]
    fn the_real_probe_fails_below_a_file_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("kubenode-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        let below_file = LinuxHost.probe_writable(&file.join("root"));
        let ok = dir.join("a/b");
        let made = LinuxHost.probe_writable(&ok);
        let left = std::fs::read_dir(&ok).map(|d| d.count());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(below_file.is_err());
        made.unwrap();
        assert_eq!(left.unwrap(), 0);
    }

    #[test]
    fn swap_on_refuses_unless_fail_swap_on_is_false() {
        let mut h = FakeHost::good();
        h.file(
            SWAPS,
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
             /dev/sda2                               partition\t1048572\t\t0\t\t-2\n\
             /swapfile                               file\t\t524284\t\t0\t\t-3\n",
        );
        let p = swap(&h, true).expect("a problem");
        assert!(
            p.cause
                .starts_with("swap is on (/proc/swaps lists /dev/sda2, /swapfile)"),
            "{p}"
        );
        assert!(p.fix.contains("failSwapOn: false"), "{p}");
        assert_eq!(swap(&h, false), None);
        assert_eq!(check_agent(&h, &plan(false, true)), Ok(()));
        // Only the header: off. No /proc/swaps at all: off, as upstream assumes.
        h.file(SWAPS, "Filename\tType\tSize\tUsed\tPriority\n");
        assert_eq!(swap(&h, true), None);
        h.files.remove(Path::new(SWAPS));
        assert_eq!(swap(&h, true), None);
    }

    #[test]
    fn iptables_needed_only_with_the_proxy() {
        let mut h = FakeHost::good();
        h.executables
            .retain(|p| !p.to_string_lossy().starts_with("iptables"));
        assert_eq!(check_agent(&h, &plan(true, false)), Ok(()));
        let msg = check_agent(&h, &plan(true, true)).unwrap_err().to_string();
        assert!(
            msg.contains("iptables-nft-restore or iptables-legacy-restore not in PATH")
                && msg.contains("kubenode kubelet"),
            "{msg}"
        );
        let msg = check_proxy(&h, "legacy").unwrap_err().to_string();
        assert!(!msg.contains("kubenode kubelet"), "{msg}");
        assert!(
            msg.contains("(iptables-legacy-restore not in PATH"),
            "{msg}"
        );
        // A backend with its restore but no save is not complete.
        h.executables.insert("iptables-legacy".into());
        h.executables.insert("iptables-legacy-restore".into());
        assert!(check_proxy(&h, "auto").is_err());
        h.executables.insert("iptables-legacy-save".into());
        assert_eq!(check_proxy(&h, "auto"), Ok(()));
        assert!(check_proxy(&h, "nft").is_err());
    }

    #[test]
    fn several_problems_are_listed_in_one_message() {
        let mut h = FakeHost::good();
        h.file(MOUNTINFO, NETNS_EXEC_MOUNTINFO);
        h.executables.remove(Path::new("runc"));
        let msg = check_agent(&h, &plan(true, true)).unwrap_err().to_string();
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 3, "{msg}");
        assert_eq!(lines[0], "cannot run pods on this host:");
        assert!(lines[1].starts_with("  - no cgroup filesystem"), "{msg}");
        assert!(lines[2].starts_with("  - the OCI runtime `runc`"), "{msg}");
    }
}
