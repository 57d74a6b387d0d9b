//! The node-wide counters that are not in a cgroup file: interfaces (`/proc/<pid>/net/dev`, the
//! network namespace of that process), memory (`/proc/meminfo`, `/proc/vmstat`) and CPU
//! (`/proc/stat`) for a cgroup v2 root, file systems (`statvfs`), boot time and process ids.

use std::path::Path;

use super::cgroup::MemorySample;
use super::types::InterfaceStats;

/// The kernel's clock tick for `/proc/stat` (`USER_HZ`, 100 on every Linux architecture that
/// kubenode builds for).
const USER_HZ: u64 = 100;

/// The interfaces of `/proc/<pid>/net/dev` text, skipping those cAdvisor ignores (`lo`,
/// `veth*`, `docker*`), in file order.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" || name.starts_with("veth") || name.starts_with("docker") {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() >= 16).then(|| InterfaceStats {
                name: name.to_string(),
                rx_bytes: Some(f[0]),
                rx_errors: Some(f[2]),
                tx_bytes: Some(f[8]),
                tx_errors: Some(f[10]),
            })
        })
        .collect()
}

/// `key:   1234 kB` of `/proc/meminfo`, in bytes.
fn meminfo_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k != key {
            return None;
        }
        let mut it = v.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        Some(match it.next() {
            Some("kB") => n * 1024,
            _ => n,
        })
    })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo_value(meminfo, "MemTotal")
}

/// The whole machine's memory as a cgroup's (cAdvisor's root container on cgroup v2):
/// usage `MemTotal - MemFree`, inactive file pages, anonymous pages, faults from `/proc/vmstat`.
pub fn node_memory(meminfo: &str, vmstat: &str) -> Option<MemorySample> {
    let total = meminfo_value(meminfo, "MemTotal")?;
    let free = meminfo_value(meminfo, "MemFree")?;
    let vm = |k| super::cgroup::stat_value(vmstat, k).unwrap_or(0);
    Some(MemorySample {
        usage: total.saturating_sub(free),
        inactive_file: meminfo_value(meminfo, "Inactive(file)").unwrap_or(0),
        rss: meminfo_value(meminfo, "AnonPages").unwrap_or(0),
        cache: meminfo_value(meminfo, "Cached").unwrap_or(0),
        page_faults: vm("pgfault"),
        major_page_faults: vm("pgmajfault"),
        limit: Some(total),
    })
}

/// The machine's busy CPU time in nanoseconds from the `cpu` line of `/proc/stat`: user, nice,
/// system, irq, softirq and steal (idle and iowait are not use).
pub fn node_cpu_ns(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<u64>();
    Some(busy * (1_000_000_000 / USER_HZ))
}

/// When a process started, in seconds since the epoch, from its `/proc/<pid>/stat` (field 22,
/// `starttime`, in clock ticks since boot) and `/proc/stat`'s `btime`: what client_golang's
/// process collector reports as `process_start_time_seconds`.
pub fn process_start_time(pid_stat: &str, stat: &str) -> Option<f64> {
    // The command (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &pid_stat[pid_stat.rfind(')')? + 1..];
    let ticks: u64 = rest.split_whitespace().nth(22 - 3)?.parse().ok()?;
    Some(boot_time(stat)? as f64 + ticks as f64 / USER_HZ as f64)
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
pub fn boot_time(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// A file system's size and free space and inodes (`statvfs` of a path on it); `used` is the
/// whole file system's.
pub fn fs_usage(path: &Path) -> Option<FsUsage> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size() as u64;
    Some(FsUsage {
        capacity: s.blocks() as u64 * frag,
        available: s.blocks_available() as u64 * frag,
        used: (s.blocks() as u64).saturating_sub(s.blocks_free() as u64) * frag,
        inodes: s.files() as u64,
        inodes_free: s.files_free() as u64,
    })
}

/// What `statvfs` tells of a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Size in bytes.
    pub capacity: u64,
    /// Bytes free to unprivileged users.
    pub available: u64,
    /// Bytes in use.
    pub used: u64,
    /// Inodes.
    pub inodes: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// The number of processes now (`sysinfo`'s `procs`, the count upstream's kubelet reports).
pub fn process_count() -> Option<i64> {
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: sysinfo fills the struct it is given and touches nothing else.
    (unsafe { libc::sysinfo(&mut info) } == 0).then_some(i64::from(info.procs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_start_from_proc() {
        // starttime (field 22) is 250 ticks: 2.5 s after boot; the command has a space and a ')'.
        let pid_stat = "4242 (kube node) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 \
                        250 123456 789 18446744073709551615";
        assert_eq!(
            process_start_time(pid_stat, "cpu 1 2 3\nbtime 1796454000\n"),
            Some(1_796_454_002.5)
        );
        assert_eq!(process_start_time("garbage", "btime 1\n"), None);
    }

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    8400     100    0    0    0     0          0         0     8400     100    0    0    0     0       0          0
  eth0: 1234567    1000    2    0    0     0          0         0   765432     900    3    0    0     0       0          0
vethab12:     10       1    0    0    0     0          0         0       20       2    0    0    0     0       0          0
";

    #[test]
    fn net_dev() {
        let ifs = parse_net_dev(NET_DEV);
        assert_eq!(
            ifs,
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: Some(1_234_567),
                rx_errors: Some(2),
                tx_bytes: Some(765_432),
                tx_errors: Some(3),
            }]
        );
        assert!(parse_net_dev("").is_empty());
    }

    #[test]
    fn node_memory_and_cpu() {
        let meminfo = "MemTotal:        1000 kB\nMemFree:          200 kB\n\
                       AnonPages:        300 kB\nInactive(file):   100 kB\n";
        let m = node_memory(meminfo, "pgfault 50\npgmajfault 5\n").unwrap();
        assert_eq!(m.usage, 800 * 1024);
        assert_eq!(m.working_set(), 700 * 1024);
        assert_eq!(
            (m.rss, m.page_faults, m.major_page_faults),
            (300 * 1024, 50, 5)
        );
        assert_eq!(mem_total(meminfo), Some(1000 * 1024));
        let stat = "cpu  100 10 50 9000 40 1 2 3 0 0\ncpu0 1 2 3 4\nbtime 1764900000\n";
        // user + nice + system + irq + softirq + steal = 166 ticks = 1.66 s.
        assert_eq!(node_cpu_ns(stat), Some(1_660_000_000));
        assert_eq!(boot_time(stat), Some(1_764_900_000));
    }

    #[test]
    fn statvfs_of_tmp() {
        let u = fs_usage(Path::new("/")).unwrap();
        assert!(u.capacity >= u.available && u.inodes >= u.inodes_free);
        assert!(process_count().unwrap() > 0);
    }
}
