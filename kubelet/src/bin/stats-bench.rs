//! `/stats/summary` cost benchmark, run as root, of the collector alone (no runtime, no
//! agent): N pods (default 30), each a real pod cgroup with a container cgroup and a sandbox
//! cgroup holding a `sleep` process (whose `/proc/<pid>/net/dev` stands for the pod's netns),
//! under `/kubepods-statsbench-<pid>` in every controller. Prints the p50 and p99 wall time
//! and the mean CPU time of one Summary over them (what one `GET /stats/summary` costs beside
//! listing the pods and encoding the JSON, also measured), and this process's RSS growth over
//! all the collections (what the collector keeps).
//!
//! `stats-bench [--pods N] [--rounds R]`. Removes its cgroups and processes at the end, also
//! when a step fails.

#[path = "bench/args.rs"]
mod args;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kubenode_kubelet::stats::types::PodReference;
use kubenode_kubelet::stats::{Collector, CollectorConfig, ContainerTarget, PodTarget};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn cpu_time() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The cgroups and processes made, removed on drop.
struct Fixture {
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deepest first.
        self.dirs
            .sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn controllers(root: &Path) -> Vec<PathBuf> {
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    ["cpuacct", "memory", "pids"]
        .iter()
        .map(|c| root.join(c))
        .filter(|p| p.exists())
        .collect()
}

fn main() -> Result<()> {
    let pods = args::number("--pods", 30);
    let rounds = args::number("--rounds", 200);
    let root = Path::new("/sys/fs/cgroup");
    let base = format!("/kubepods-statsbench-{}", std::process::id());
    let mut fx = Fixture {
        dirs: Vec::new(),
        children: Vec::new(),
    };
    let mut targets = Vec::new();
    for i in 0..pods {
        let pod_cg = format!("{base}/pod{i}");
        for h in controllers(root) {
            for sub in ["", "/c0", "/sandbox"] {
                let d = h.join(format!("{pod_cg}{sub}").trim_start_matches('/'));
                std::fs::create_dir_all(&d)?;
                fx.dirs.push(d);
            }
            fx.dirs.push(h.join(base.trim_start_matches('/')));
        }
        let child = Command::new("sleep").arg("600").spawn()?;
        let pid = child.id();
        fx.children.push(child);
        let mem = if root.join("cgroup.controllers").exists() {
            root.to_path_buf()
        } else {
            root.join("memory")
        };
        std::fs::write(
            mem.join(format!("{pod_cg}/sandbox").trim_start_matches('/'))
                .join("cgroup.procs"),
            pid.to_string(),
        )?;
        targets.push(PodTarget {
            volumes: Vec::new(),
            pod_ref: PodReference {
                name: format!("pod{i}"),
                namespace: "default".into(),
                uid: format!("uid{i}"),
            },
            start_time: jiff::Timestamp::now(),
            cgroup: pod_cg.clone(),
            netns_cgroup: Some(format!("{pod_cg}/sandbox")),
            sandbox_id: "sandbox".into(),
            containers: vec![ContainerTarget {
                writable_layer: None,
                name: "c0".into(),
                id: "c0".into(),
                image: "bench".into(),
                start_time: jiff::Timestamp::now(),
                cgroup: format!("{pod_cg}/c0"),
                log_path: PathBuf::from("/proc/self/status"),
            }],
        });
    }
    let collector = Collector::new(CollectorConfig {
        node_name: "bench".into(),
        cgroup_root: root.into(),
        proc_root: "/proc".into(),
        root_dir: "/".into(),
        image_dir: "/".into(),
        log_dir: "/".into(),
    });
    // Warm up (and check every pod is measured).
    let s = collector.summary(&targets);
    let measured = s
        .pods
        .iter()
        .filter(|p| p.memory.is_some() && p.network.is_some())
        .count();
    if measured != pods {
        return Err(format!("only {measured} of {pods} pods measured").into());
    }
    let rss0 = rss_kib();
    let mut wall = Vec::with_capacity(rounds);
    let mut json = Vec::with_capacity(rounds);
    let cpu0 = cpu_time();
    for _ in 0..rounds {
        let t = Instant::now();
        let s = collector.summary(&targets);
        wall.push(t.elapsed());
        let t = Instant::now();
        let body = serde_json::to_vec(&s)?;
        json.push(t.elapsed());
        std::hint::black_box(body);
    }
    let cpu = cpu_time() - cpu0;
    let rss1 = rss_kib();
    wall.sort();
    json.sort();
    let q = |v: &[Duration], f: f64| v[((v.len() as f64 * f) as usize).min(v.len() - 1)];
    println!(
        "stats-bench: {pods} pods ({} layout), {rounds} summaries",
        if root.join("cgroup.controllers").exists() {
            "cgroup v2"
        } else {
            "cgroup v1"
        }
    );
    println!(
        "  summary (collect):  p50 {:.2} ms  p99 {:.2} ms",
        q(&wall, 0.5).as_secs_f64() * 1e3,
        q(&wall, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "  JSON encoding:      p50 {:.2} ms",
        q(&json, 0.5).as_secs_f64() * 1e3
    );
    println!(
        "  CPU per summary (collect + encode): {:.2} ms",
        cpu.as_secs_f64() * 1e3 / rounds as f64
    );
    println!(
        "  RSS: {rss1} KiB after, {} KiB growth over the runs",
        rss1 as i64 - rss0 as i64
    );
    drop(fx);
    Ok(())
}
