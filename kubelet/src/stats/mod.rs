//! Node, pod and container resource usage: upstream's Summary API (`GET /stats/summary`,
//! [`types`]) and resource metrics (`GET /metrics/resource`, [`resource`]), what metrics-server
//! and `kubectl top` read.
//!
//! Everything comes from a few small files per cgroup ([`cgroup`]: v1 or v2) and from `/proc`
//! ([`proc`]): the pod's network counters from the pause process's `/proc/<pid>/net/dev`. CPU
//! *rates* (`usageNanoCores`) need two samples: the [`Collector`] keeps, per cgroup, the last
//! two cumulative samples at least [`MIN_RATE_INTERVAL`] apart (as cAdvisor keeps its
//! housekeeping samples) and reports the rate between them; the agent samples every
//! [`HOUSEKEEPING_INTERVAL`] so that a request always finds a rate, and a request samples too.

pub mod cadvisor;
pub mod cgroup;
pub mod proc;
pub mod resource;
pub mod types;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use cgroup::{CgroupSample, Layout, MemorySample};
use types::{
    ContainerStats, CpuStats, FsStats, MemoryStats, NetworkStats, NodeStats, PodReference,
    PodStats, RlimitStats, RuntimeStats, Summary,
};

/// How often the agent samples every cgroup (cAdvisor's default housekeeping interval).
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// Two samples closer than this do not make a rate: a request right after another reuses the
/// earlier pair.
pub const MIN_RATE_INTERVAL: Duration = Duration::from_secs(1);

/// The default interface, whose counters `NetworkStats` carries inline (upstream's
/// `network.DefaultInterfaceName`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// What to measure of one pod: its cgroups and its containers'.
#[derive(Debug, Clone)]
pub struct PodTarget {
    /// The pod.
    pub pod_ref: PodReference,
    /// `status.startTime` (the sandbox's creation when unset).
    pub start_time: Timestamp,
    /// The pod cgroup (`/kubepods/burstable/pod<uid>`).
    pub cgroup: String,
    /// The sandbox's (pause container's) cgroup, whose process's network namespace is the
    /// pod's; `None` for a `hostNetwork` pod.
    pub netns_cgroup: Option<String>,
    /// The sandbox's ID (the pause container's runtime ID): cAdvisor's `name` of the pod's
    /// network series.
    pub sandbox_id: String,
    /// The running containers.
    pub containers: Vec<ContainerTarget>,
    /// The local volumes.
    pub volumes: Vec<VolumeTarget>,
}

/// What to measure of one container.
#[derive(Debug, Clone)]
pub struct ContainerTarget {
    /// Its name in the pod.
    pub name: String,
    /// Its runtime ID: cAdvisor's `name` label.
    pub id: String,
    /// Its image, as the pod spec names it: cAdvisor's `image` label.
    pub image: String,
    /// When it was created.
    pub start_time: Timestamp,
    /// Its cgroup (`<pod cgroup>/<container id>`).
    pub cgroup: String,
    /// Its current log file (the directory holding it holds its other instances' and
    /// rotated logs too).
    pub log_path: PathBuf,
    /// Its writable layer (the overlay upper directory), whose size is its `rootfs` usage;
    /// `None`: not measured.
    pub writable_layer: Option<PathBuf>,
}

/// A pod volume to measure.
#[derive(Debug, Clone)]
pub struct VolumeTarget {
    /// Its name in the pod.
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
    /// How its use is measured.
    pub usage: VolumeUsage,
}

/// How a volume's use is measured (upstream's volume plugins' `MetricsProvider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeUsage {
    /// A directory on a shared file system (a disk emptyDir, configMap, downwardAPI): a walk of
    /// its files, as `du` (`MetricsDu`), at most every [`WALK_PERIOD`].
    Walk,
    /// A file system of its own (a tmpfs: a `Memory` emptyDir, secret, projected): its
    /// `statvfs` (`MetricsStatFS`).
    FileSystem,
}

/// One collection round: the Summary, and the raw memory samples its `MemoryStats` were made
/// from, in the Summary's order (`/metrics/cadvisor` also reports the page cache and the limit,
/// which the Summary has no field for).
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// The Summary (`/stats/summary`).
    pub summary: Summary,
    /// The node's memory (the root cgroup's, or `/proc`'s on cgroup v2).
    pub node_memory: Option<MemorySample>,
    /// Per pod of the Summary, in its order.
    pub pods: Vec<PodSamples>,
}

/// The raw memory samples of one pod of a [`Collection`].
#[derive(Debug, Clone, Default)]
pub struct PodSamples {
    /// The pod cgroup's.
    pub memory: Option<MemorySample>,
    /// Each container's, in the order of the pod's `containers`.
    pub containers: Vec<Option<MemorySample>>,
}

/// Where the collector looks.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The node's name.
    pub node_name: String,
    /// Where cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// `/proc`.
    pub proc_root: PathBuf,
    /// The kubelet's root directory: its file system is the node's `fs`.
    pub root_dir: PathBuf,
    /// Where images and writable layers are: the `runtime.imageFs`.
    pub image_dir: PathBuf,
    /// Where container logs are.
    pub log_dir: PathBuf,
}

/// Samples cgroups and keeps what CPU rates need. Cheap to call: no directory walk, a handful
/// of small reads per cgroup.
#[derive(Debug)]
pub struct Collector {
    config: CollectorConfig,
    layout: Layout,
    rates: Mutex<Rates>,
    walked: Mutex<WalkedSizes>,
}

/// How long a walked directory's measured size (a writable layer, a volume) is used before it
/// is walked again: cAdvisor's file system usage period (`fsHandler`, one minute), from which
/// upstream's Summary reports a container's `rootfs.usedBytes`, and upstream's
/// `volumeStatsAggPeriod` (one minute) for volumes. A walk visits every file the container or
/// volume holds; a Summary is made every 10 s and per request.
pub const WALK_PERIOD: Duration = Duration::from_secs(60);

/// The walked directories' last measured sizes (the containers' writable layers and the pods'
/// volumes), kept for the directories the last Summary asked for.
#[derive(Debug, Default)]
struct WalkedSizes {
    round: u64,
    /// Size, when measured, the round that last asked.
    sizes: HashMap<PathBuf, (u64, Instant, u64)>,
}

/// At most this many threads read a Summary's pods.
const MAX_READERS: usize = 4;

/// A reader thread more for every this many pods.
const PODS_PER_READER: usize = 16;

/// What one pod's files said, read apart from the CPU rates (which need the collector's lock
/// and the pods in order).
#[derive(Debug)]
struct PodReading {
    pod: CgroupSample,
    /// Each container's, in the target's order.
    containers: Vec<ContainerReading>,
    /// Each volume's file system and use, in the target's order (`None`: not readable).
    volumes: Vec<Option<(proc::FsUsage, u64)>>,
    network: Option<Vec<types::InterfaceStats>>,
}

/// What one container's files said.
#[derive(Debug)]
struct ContainerReading {
    sample: CgroupSample,
    /// Its logs' directory (upstream counts every log of the container, rotated ones and
    /// earlier instances' included).
    log_bytes: u64,
    /// Its writable layer, measured at most every [`WALK_PERIOD`].
    rootfs_bytes: Option<u64>,
}

/// The bytes a container's logs use: the directory of its current log file, as upstream's
/// kubelet measures `<pod log dir>/<container>` (a log directory holds a few files; walked on
/// each Summary, as upstream does). A log path without a directory counts nothing.
fn log_usage(log_path: &Path) -> u64 {
    log_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .and_then(|d| crate::volume::usage::disk_usage(d).ok())
        .unwrap_or(0)
}

/// Whether `path` is the root of a mounted file system (its device differs from its
/// parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != m.dev())
}

/// A cumulative CPU sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// When it was read.
    pub at: Instant,
    /// Cumulative CPU nanoseconds.
    pub cpu_ns: u64,
}

/// The mean use between two cumulative samples in billionths of a core; `None` when they are
/// not in order or the counter went back (a cgroup made again under the same name).
pub fn nano_cores(prev: CpuSample, cur: CpuSample) -> Option<u64> {
    let dt = cur.at.checked_duration_since(prev.at)?.as_nanos();
    let used = cur.cpu_ns.checked_sub(prev.cpu_ns)?;
    (dt > 0).then(|| (u128::from(used) * 1_000_000_000 / dt) as u64)
}

/// The last two samples of every cgroup seen, by cgroup path.
#[derive(Debug, Default)]
pub struct Rates {
    tracks: HashMap<String, Track>,
    round: u64,
}

#[derive(Debug)]
struct Track {
    prev: Option<CpuSample>,
    last: CpuSample,
    round: u64,
}

impl Rates {
    /// Starts a collection round; [`Rates::end_round`] forgets the cgroups not seen in it.
    pub fn begin_round(&mut self) {
        self.round += 1;
    }

    /// Records `sample` of `key` and returns the rate of its last two samples: `sample`
    /// replaces the last one only when [`MIN_RATE_INTERVAL`] has passed since it.
    pub fn observe(&mut self, key: &str, sample: CpuSample) -> Option<u64> {
        let round = self.round;
        let track = self.tracks.entry(key.to_string()).or_insert_with(|| Track {
            prev: None,
            last: sample,
            round,
        });
        track.round = round;
        if sample.cpu_ns < track.last.cpu_ns {
            // The counter went back: a new cgroup under the old name.
            *track = Track {
                prev: None,
                last: sample,
                round,
            };
        } else if sample.at.saturating_duration_since(track.last.at) >= MIN_RATE_INTERVAL {
            track.prev = Some(track.last);
            track.last = sample;
        }
        track.prev.and_then(|p| nano_cores(p, track.last))
    }

    /// Forgets the cgroups not observed in the current round.
    pub fn end_round(&mut self) {
        let round = self.round;
        self.tracks.retain(|_, t| t.round == round);
    }

    /// Cgroups tracked.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// Whether no cgroup is tracked.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

fn fs_stats(time: Timestamp, u: proc::FsUsage) -> FsStats {
    FsStats {
        time,
        available_bytes: Some(u.available),
        capacity_bytes: Some(u.capacity),
        used_bytes: Some(u.used),
        inodes_free: Some(u.inodes_free),
        inodes: Some(u.inodes),
        inodes_used: Some(u.inodes.saturating_sub(u.inodes_free)),
    }
}

fn memory_stats(time: Timestamp, m: MemorySample, capacity: Option<u64>) -> MemoryStats {
    let ws = m.working_set();
    MemoryStats {
        time,
        available_bytes: m.limit.or(capacity).map(|l| l.saturating_sub(ws)),
        usage_bytes: Some(m.usage),
        working_set_bytes: Some(ws),
        rss_bytes: Some(m.rss),
        page_faults: Some(m.page_faults),
        major_page_faults: Some(m.major_page_faults),
    }
}

fn network_stats(time: Timestamp, interfaces: Vec<types::InterfaceStats>) -> NetworkStats {
    let default = interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .cloned()
        .unwrap_or_default();
    NetworkStats {
        time,
        default,
        interfaces,
    }
}

impl Collector {
    /// A collector for the host `config` describes.
    pub fn new(config: CollectorConfig) -> Collector {
        let layout = Layout::detect(&config.cgroup_root);
        Collector {
            config,
            layout,
            rates: Mutex::new(Rates::default()),
            walked: Mutex::new(WalkedSizes::default()),
        }
    }

    fn read_proc(&self, file: &str) -> Option<String> {
        cgroup::read_small(&self.config.proc_root.join(file))
    }

    fn cpu(
        &self,
        rates: &mut Rates,
        key: &str,
        at: Instant,
        time: Timestamp,
        cpu_ns: Option<u64>,
    ) -> Option<CpuStats> {
        let cpu_ns = cpu_ns?;
        let nano = rates.observe(key, CpuSample { at, cpu_ns });
        Some(CpuStats {
            time,
            usage_nano_cores: nano,
            usage_core_nano_seconds: Some(cpu_ns),
        })
    }

    /// The Summary of the node and `pods`.
    pub fn summary(&self, pods: &[PodTarget]) -> Summary {
        self.collect(pods).summary
    }

    /// One collection round of the node and `pods`: the Summary and the raw memory samples
    /// behind it (see [`Collection`]).
    pub fn collect(&self, pods: &[PodTarget]) -> Collection {
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.begin_round();
        self.lock_walked().round += 1;
        let now = Timestamp::now();
        let at = Instant::now();
        let meminfo = self.read_proc("meminfo").unwrap_or_default();
        let stat = self.read_proc("stat").unwrap_or_default();
        let capacity = proc::mem_total(&meminfo);

        // The node: the root cgroup on v1; /proc on v2, whose root has no memory files.
        let root = if self.layout.is_v2() {
            CgroupSample {
                cpu_ns: proc::node_cpu_ns(&stat),
                memory: proc::node_memory(&meminfo, &self.read_proc("vmstat").unwrap_or_default()),
                processes: None,
            }
        } else {
            let mut s = self.layout.read("/");
            s.cpu_ns = s.cpu_ns.or_else(|| proc::node_cpu_ns(&stat));
            s
        };
        let fs = |p: &Path| proc::fs_usage(p).map(|u| fs_stats(now, u));
        let node = NodeStats {
            node_name: self.config.node_name.clone(),
            system_containers: Vec::new(),
            start_time: proc::boot_time(&stat)
                .and_then(|s| Timestamp::from_second(s).ok())
                .unwrap_or(Timestamp::UNIX_EPOCH),
            cpu: self.cpu(&mut rates, "/", at, now, root.cpu_ns),
            memory: root
                .memory
                .map(|m| memory_stats(now, MemorySample { limit: None, ..m }, capacity)),
            network: self
                .read_proc("net/dev")
                .map(|t| network_stats(now, proc::parse_net_dev(&t))),
            fs: fs(&self.config.root_dir),
            runtime: Some(RuntimeStats {
                image_fs: fs(&self.config.image_dir),
                container_fs: fs(&self.config.image_dir),
            }),
            rlimit: Some(RlimitStats {
                time: now,
                maxpid: self
                    .read_proc("sys/kernel/pid_max")
                    .and_then(|t| t.trim().parse().ok()),
                curproc: proc::process_count(),
            }),
        };
        let log_fs = proc::fs_usage(&self.config.log_dir);
        let root_fs = proc::fs_usage(&self.config.image_dir);
        let readings = self.read_pods(pods);
        let (pods, samples) = pods
            .iter()
            .zip(readings)
            .map(|(p, r)| self.pod(&mut rates, p, r, at, now, log_fs, root_fs))
            .unzip();
        rates.end_round();
        // the directories this round did not ask for (gone containers and volumes) are forgotten
        let mut walked = self.lock_walked();
        let round = walked.round;
        walked.sizes.retain(|_, (_, _, asked)| *asked == round);
        drop(walked);
        Collection {
            summary: Summary { node, pods },
            node_memory: root.memory,
            pods: samples,
        }
    }

    /// Reads every pod's files ([`Collector::read_pod`]), the pods split among up to
    /// [`MAX_READERS`] threads (this one included) when there are more than
    /// [`PODS_PER_READER`]: the reads are system calls into cgroupfs and `/proc`, which run
    /// side by side on a node's cores, so a Summary of many pods takes a fraction of the time.
    /// In the order of `pods`.
    fn read_pods(&self, pods: &[PodTarget]) -> Vec<PodReading> {
        let read = |chunk: &[PodTarget]| -> Vec<PodReading> {
            chunk.iter().map(|p| self.read_pod(p)).collect()
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_READERS)
            .min(pods.len().div_ceil(PODS_PER_READER));
        if threads <= 1 {
            return read(pods);
        }
        let mut chunks = pods.chunks(pods.len().div_ceil(threads));
        let first = chunks.next().unwrap_or_default();
        std::thread::scope(|s| {
            // a thread that cannot be made reads its chunk here, after the first
            let others: Vec<Result<_, &[PodTarget]>> = chunks
                .map(|c| {
                    std::thread::Builder::new()
                        .name("stats".into())
                        .spawn_scoped(s, move || read(c))
                        .map_err(|_| c)
                })
                .collect();
            let mut out = read(first);
            for other in others {
                match other {
                    Ok(h) => match h.join() {
                        Ok(v) => out.extend(v),
                        Err(panic) => std::panic::resume_unwind(panic),
                    },
                    Err(c) => out.extend(read(c)),
                }
            }
            out
        })
    }

    fn lock_walked(&self) -> std::sync::MutexGuard<'_, WalkedSizes> {
        self.walked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes under a directory (a writable layer, a volume): measured (a walk of its files,
    /// as `du`) when not measured within [`WALK_PERIOD`], else the last measure. `None` when it
    /// cannot be read.
    fn walked_size(&self, dir: &Path) -> Option<u64> {
        let now = Instant::now();
        {
            let mut walked = self.lock_walked();
            let round = walked.round;
            if let Some((bytes, at, asked)) = walked.sizes.get_mut(dir) {
                if now.duration_since(*at) < WALK_PERIOD {
                    *asked = round;
                    return Some(*bytes);
                }
            }
        }
        // measured without the lock: the other reader threads go on meanwhile
        let bytes = crate::volume::usage::disk_usage(dir).ok()?;
        let mut walked = self.lock_walked();
        let round = walked.round;
        walked.sizes.insert(dir.to_path_buf(), (bytes, now, round));
        Some(bytes)
    }

    /// One pod's files: its cgroup's, each container's (and the size of its log), its network
    /// namespace's counters.
    /// The pod's cgroup directories are opened once; its containers' and its sandbox's
    /// cgroups, which are below it, are read relative to them.
    fn read_pod(&self, p: &PodTarget) -> PodReading {
        let dirs = self.layout.dirs(&p.cgroup);
        let pod = p.cgroup.trim_end_matches('/');
        let below = |cgroup: &str| {
            cgroup
                .strip_prefix(pod)
                .and_then(|r| r.strip_prefix('/'))
                .filter(|r| !r.is_empty())
                .map(str::to_string)
        };
        PodReading {
            pod: dirs.read(""),
            containers: p
                .containers
                .iter()
                .map(|c| {
                    let sample = match below(&c.cgroup) {
                        Some(rel) => dirs.read(&rel),
                        None => self.layout.read(&c.cgroup),
                    };
                    ContainerReading {
                        sample,
                        log_bytes: log_usage(&c.log_path),
                        rootfs_bytes: c
                            .writable_layer
                            .as_deref()
                            .and_then(|l| self.walked_size(l)),
                    }
                })
                .collect(),
            network: p.netns_cgroup.as_deref().and_then(|cg| {
                let pid = match below(cg) {
                    Some(rel) => dirs.first_process(&rel),
                    None => self.layout.first_process(cg),
                }?;
                let text = self.read_proc(&format!("{pid}/net/dev"))?;
                Some(proc::parse_net_dev(&text))
            }),
            volumes: p
                .volumes
                .iter()
                .map(|v| {
                    let used = match v.usage {
                        VolumeUsage::Walk => self.walked_size(&v.path)?,
                        // not mounted (yet, or any more): the file system below is not its
                        VolumeUsage::FileSystem if !is_mount_point(&v.path) => return None,
                        VolumeUsage::FileSystem => 0,
                    };
                    let fs = proc::fs_usage(&v.path)?;
                    let used = if v.usage == VolumeUsage::FileSystem {
                        fs.used
                    } else {
                        used
                    };
                    Some((fs, used))
                })
                .collect(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pod(
        &self,
        rates: &mut Rates,
        p: &PodTarget,
        reading: PodReading,
        at: Instant,
        now: Timestamp,
        log_fs: Option<proc::FsUsage>,
        root_fs: Option<proc::FsUsage>,
    ) -> (PodStats, PodSamples) {
        let sample = reading.pod;
        let mut log_total = 0u64;
        let mut rootfs_total = 0u64;
        let mut container_memory = Vec::with_capacity(p.containers.len());
        let containers: Vec<ContainerStats> = p
            .containers
            .iter()
            .zip(reading.containers)
            .map(|(c, r)| {
                let (s, log_bytes) = (r.sample, r.log_bytes);
                container_memory.push(s.memory);
                log_total += log_bytes;
                rootfs_total += r.rootfs_bytes.unwrap_or(0);
                ContainerStats {
                    name: c.name.clone(),
                    start_time: c.start_time,
                    cpu: self.cpu(rates, &c.cgroup, at, now, s.cpu_ns),
                    memory: s.memory.map(|m| memory_stats(now, m, None)),
                    rootfs: root_fs.map(|u| FsStats {
                        used_bytes: r.rootfs_bytes,
                        inodes_used: None,
                        ..fs_stats(now, u)
                    }),
                    logs: log_fs.map(|u| FsStats {
                        used_bytes: Some(log_bytes),
                        inodes_used: Some(1),
                        ..fs_stats(now, u)
                    }),
                }
            })
            .collect();
        let network = reading.network.map(|i| network_stats(now, i));
        let volume: Vec<types::VolumeStats> = p
            .volumes
            .iter()
            .zip(reading.volumes)
            .filter_map(|(v, r)| {
                let (fs, used) = r?;
                let whole = fs_stats(now, fs);
                Some(types::VolumeStats {
                    fs: FsStats {
                        used_bytes: Some(used),
                        // a walk counts bytes only; a file system of its own is all the volume's
                        inodes_used: match v.usage {
                            VolumeUsage::Walk => None,
                            VolumeUsage::FileSystem => whole.inodes_used,
                        },
                        ..whole
                    },
                    name: v.name.clone(),
                })
            })
            .collect();
        let volumes_total = volume
            .iter()
            .filter_map(|v| v.fs.used_bytes)
            .fold(0u64, u64::saturating_add);
        let stats = PodStats {
            pod_ref: p.pod_ref.clone(),
            start_time: p.start_time,
            cpu: self.cpu(rates, &p.cgroup, at, now, sample.cpu_ns),
            memory: sample.memory.map(|m| memory_stats(now, m, None)),
            network,
            volume,
            // upstream's `calcEphemeralStorage`: the containers' writable layers and logs and
            // the pod's local volumes
            ephemeral_storage: log_fs.map(|u| FsStats {
                used_bytes: Some(
                    log_total
                        .saturating_add(rootfs_total)
                        .saturating_add(volumes_total),
                ),
                inodes_used: Some(containers.len() as u64),
                ..fs_stats(now, u)
            }),
            process_stats: sample.processes.map(|n| types::ProcessStats {
                process_count: Some(n),
            }),
            containers,
        };
        let samples = PodSamples {
            memory: sample.memory,
            containers: container_memory,
        };
        (stats, samples)
    }
}

#[cfg(test)]
mod tests;
