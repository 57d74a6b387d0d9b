//! A cgroup's cumulative CPU time and memory, read as cAdvisor reads them: a few small files per
//! cgroup, cgroup v1 (`cpuacct.usage`, `memory.usage_in_bytes`, `memory.stat`'s hierarchical
//! `total_*` counters) or v2 (`cpu.stat`'s `usage_usec`, `memory.current`, `memory.stat`). On a
//! hybrid host (v1 controllers beside a v2 `unified` mount) the v1 controllers hold the
//! resources, as runc places them there.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Which cgroup version holds the cpu and memory controllers under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
    v2: bool,
}

/// One cgroup's counters. A missing file leaves its field `None` (a controller the host lacks,
/// or a cgroup that went away between the listing and the read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupSample {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory.
    pub memory: Option<MemorySample>,
    /// Processes (`pids.current`).
    pub processes: Option<u64>,
}

/// A cgroup's memory counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySample {
    /// Everything charged (`memory.usage_in_bytes` / `memory.current`).
    pub usage: u64,
    /// Inactive page cache (`total_inactive_file` / `inactive_file`).
    pub inactive_file: u64,
    /// Anonymous memory (`total_rss` / `anon`).
    pub rss: u64,
    /// Page cache (`total_cache` / `file`): cAdvisor's `container_memory_cache`.
    pub cache: u64,
    /// Page faults (`total_pgfault` / `pgfault`).
    pub page_faults: u64,
    /// Major page faults (`total_pgmajfault` / `pgmajfault`).
    pub major_page_faults: u64,
    /// The limit, `None` when unlimited.
    pub limit: Option<u64>,
}

impl MemorySample {
    /// cAdvisor's working set: usage less inactive file pages, never below zero.
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }
}

/// v1 reports "no limit" as the largest page-aligned `i64`; anything this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

impl Layout {
    /// The layout of the hierarchies mounted under `root` (normally `/sys/fs/cgroup`): pure v2
    /// when `root` has `cgroup.controllers`, else v1.
    pub fn detect(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            v2: root.join("cgroup.controllers").exists(),
        }
    }

    /// Whether this is cgroup v2.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    fn dir(&self, controller: &str, cgroup: &str) -> PathBuf {
        let rel = cgroup.trim_start_matches('/');
        if self.v2 {
            self.root.join(rel)
        } else {
            self.root.join(controller).join(rel)
        }
    }

    /// Whether the cgroup exists (in the memory controller on v1).
    pub fn exists(&self, cgroup: &str) -> bool {
        self.dir("memory", cgroup).is_dir()
    }

    /// The counters of the cgroup `cgroup` (a cgroupfs path such as `/kubepods/pod<uid>`; `/`
    /// for the root, whose v2 counters are not in files: see [`super::proc`]).
    pub fn read(&self, cgroup: &str) -> CgroupSample {
        self.dirs(cgroup).read("")
    }

    /// The first process of the cgroup (`cgroup.procs`): for a sandbox's cgroup, the pause
    /// process, whose `/proc/<pid>/net/dev` is the pod's network namespace's.
    pub fn first_process(&self, cgroup: &str) -> Option<i32> {
        self.dirs(cgroup).first_process("")
    }

    /// The directories of `cgroup` in each controller, opened once, for reading it and the
    /// cgroups below it ([`CgroupDirs`]).
    pub fn dirs(&self, cgroup: &str) -> CgroupDirs {
        let open = |controller: &str| {
            nix::fcntl::open(
                &self.dir(controller, cgroup),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()
        };
        if self.v2 {
            CgroupDirs {
                cpu: None,
                memory: open("memory"),
                pids: None,
                v2: true,
            }
        } else {
            CgroupDirs {
                cpu: open("cpuacct"),
                memory: open("memory"),
                pids: open("pids"),
                v2: false,
            }
        }
    }
}

/// A cgroup's directories (one on v2, one per controller on v1), opened once (`O_PATH`): its
/// files and those of the cgroups below it are opened relative to them (`openat`), so the
/// long path from the hierarchy's mount down to the pod is walked once per controller, not
/// once per file. A pod's Summary reads a dozen files of the pod's, its containers' and its
/// sandbox's cgroups, and each walk of a cgroupfs path revalidates every component.
#[derive(Debug)]
pub struct CgroupDirs {
    cpu: Option<OwnedFd>,
    memory: Option<OwnedFd>,
    pids: Option<OwnedFd>,
    v2: bool,
}

impl CgroupDirs {
    fn dir(&self, controller: &str) -> Option<&OwnedFd> {
        match (self.v2, controller) {
            (true, _) | (false, "memory") => self.memory.as_ref(),
            (false, "cpuacct") => self.cpu.as_ref(),
            (false, _) => self.pids.as_ref(),
        }
    }

    fn read_file(&self, controller: &str, rel: &str, file: &str) -> Option<String> {
        let dir = self.dir(controller)?;
        let path = if rel.is_empty() {
            file.to_string()
        } else {
            format!("{rel}/{file}")
        };
        let fd = nix::fcntl::openat(
            dir,
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        read_all(std::fs::File::from(fd))
    }

    /// The counters of the cgroup `rel` below this one (`""`: this one). A missing file leaves
    /// its field `None`.
    pub fn read(&self, rel: &str) -> CgroupSample {
        let read = |controller: &str, file: &str| self.read_file(controller, rel, file);
        if self.v2 {
            CgroupSample {
                cpu_ns: read("cpu", "cpu.stat").and_then(|t| parse_cpu_stat(&t)),
                memory: read("memory", "memory.current").and_then(|current| {
                    let stat = read("memory", "memory.stat").unwrap_or_default();
                    let max = read("memory", "memory.max").unwrap_or_default();
                    parse_memory(&current, &stat, &max, true)
                }),
                processes: read("pids", "pids.current").and_then(|t| t.trim().parse().ok()),
            }
        } else {
            CgroupSample {
                cpu_ns: read("cpuacct", "cpuacct.usage").and_then(|t| t.trim().parse().ok()),
                memory: read("memory", "memory.usage_in_bytes").and_then(|usage| {
                    let stat = read("memory", "memory.stat").unwrap_or_default();
                    let max = read("memory", "memory.limit_in_bytes").unwrap_or_default();
                    parse_memory(&usage, &stat, &max, false)
                }),
                processes: read("pids", "pids.current").and_then(|t| t.trim().parse().ok()),
            }
        }
    }

    /// The first process of the cgroup `rel` below this one (`""`: this one).
    pub fn first_process(&self, rel: &str) -> Option<i32> {
        let procs = self.read_file("memory", rel, "cgroup.procs")?;
        procs.lines().find_map(|l| l.trim().parse().ok())
    }
}

/// A small pseudo-file's text (a cgroup file, a `/proc` file), `None` when it cannot be read.
/// Unlike `std::fs::read_to_string`, which first asks the file's size (a `statx` and an
/// `lseek`, meaningless for these files, which report 0 or 4096), only `open`, `read` until
/// the end, `close`: a Summary reads a dozen files per pod.
pub fn read_small(path: &Path) -> Option<String> {
    read_all(std::fs::File::open(path).ok()?)
}

/// The rest of `file`'s text, read until the end without asking its size.
fn read_all(mut file: std::fs::File) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(4096);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        let len = buf.len();
        let room = buf.capacity() - len;
        buf.resize(len + room, 0);
        match file.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                break;
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(_) => return None,
        }
    }
    String::from_utf8(buf).ok()
}

/// `usage_usec` of a v2 `cpu.stat`, in nanoseconds.
pub fn parse_cpu_stat(text: &str) -> Option<u64> {
    stat_value(text, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// The value of `key` in a flat-keyed file (`key value` per line).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Memory counters from the usage file, `memory.stat` and the limit file (`max` on v2, a huge
/// number on v1 for none). `None` when the usage does not parse.
pub fn parse_memory(usage: &str, stat: &str, limit: &str, v2: bool) -> Option<MemorySample> {
    let usage = usage.trim().parse().ok()?;
    let key = |v1: &str, v2_key: &str| stat_value(stat, if v2 { v2_key } else { v1 }).unwrap_or(0);
    let limit = match limit.trim() {
        "" | "max" => None,
        l => l.parse::<u64>().ok().filter(|&n| n < V1_UNLIMITED),
    };
    Some(MemorySample {
        usage,
        inactive_file: key("total_inactive_file", "inactive_file"),
        rss: key("total_rss", "anon"),
        cache: key("total_cache", "file"),
        page_faults: key("total_pgfault", "pgfault"),
        major_page_faults: key("total_pgmajfault", "pgmajfault"),
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn reads_cgroup_v1_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("unified")).unwrap();
        write(
            &root.join("cpuacct/kubepods/podu1"),
            &[("cpuacct.usage", "123456789\n")],
        );
        write(
            &root.join("memory/kubepods/podu1"),
            &[
                ("memory.usage_in_bytes", "10485760\n"),
                (
                    "memory.stat",
                    "cache 4096\nrss 99\ninactive_file 1\ntotal_cache 8192\ntotal_rss 6291456\n\
                     total_inactive_file 2097152\ntotal_pgfault 1000\ntotal_pgmajfault 7\n",
                ),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("cgroup.procs", "4242\n4243\n"),
            ],
        );
        write(
            &root.join("pids/kubepods/podu1"),
            &[("pids.current", "3\n")],
        );
        let layout = Layout::detect(root);
        assert!(!layout.is_v2());
        let s = layout.read("/kubepods/podu1");
        assert_eq!(s.cpu_ns, Some(123_456_789));
        assert_eq!(s.processes, Some(3));
        let m = s.memory.unwrap();
        assert_eq!(
            m,
            MemorySample {
                usage: 10_485_760,
                inactive_file: 2_097_152,
                rss: 6_291_456,
                cache: 8192,
                page_faults: 1000,
                major_page_faults: 7,
                limit: None,
            }
        );
        assert_eq!(m.working_set(), 8_388_608);
        assert_eq!(layout.first_process("/kubepods/podu1"), Some(4242));
        // A cgroup that is gone reads as nothing, not as zero.
        assert_eq!(layout.read("/kubepods/gone"), CgroupSample::default());
    }

    #[test]
    fn reads_cgroup_v2_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, &[("cgroup.controllers", "cpu memory pids\n")]);
        write(
            &root.join("kubepods/podu1/c1"),
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
                ),
                ("memory.current", "5000\n"),
                (
                    "memory.stat",
                    "anon 3000\nfile 2000\ninactive_file 6000\npgfault 12\npgmajfault 1\n",
                ),
                ("memory.max", "8000\n"),
                ("pids.current", "1\n"),
            ],
        );
        let layout = Layout::detect(root);
        assert!(layout.is_v2());
        let s = layout.read("kubepods/podu1/c1");
        assert_eq!(s.cpu_ns, Some(2_500_000));
        let m = s.memory.unwrap();
        assert_eq!((m.usage, m.rss, m.limit), (5000, 3000, Some(8000)));
        assert_eq!(m.cache, 2000);
        assert_eq!((m.page_faults, m.major_page_faults), (12, 1));
        // More inactive file pages than usage (the counters are read apart): zero, not a wrap.
        assert_eq!(m.working_set(), 0);
    }

    #[test]
    fn limits_and_bad_files() {
        assert_eq!(parse_memory("x", "", "", true), None);
        assert_eq!(parse_memory("1", "", "max\n", true).unwrap().limit, None);
        assert_eq!(
            parse_memory("1", "", "4096", false).unwrap().limit,
            Some(4096)
        );
        assert_eq!(parse_cpu_stat("user_usec 5\n"), None);
        assert_eq!(stat_value("a 1\nab 2\n", "ab"), Some(2));
    }
}
