//! `proxy-bench --file-source`: manifest files → the real `kubenode proxy` → a request through a
//! ClusterIP, in a private network namespace.
//!
//! The namespace has a link `kb0` (one end of a veth pair) with the two endpoint addresses (10.250.0.1 and .2, a
//! server on port 8080 behind both), a route for the service CIDR into it, and one rule of ours:
//! TCP to the service CIDR that was not DNATed is rejected with a reset, so a request to a
//! ClusterIP not programmed yet fails at once instead of waiting for a SYN timeout.

use super::{command_dying_with_us, stop_child, stopping, NODEPORTS};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whole run, outer side.
const RUN_TIMEOUT: Duration = Duration::from_secs(1800);
/// Longest wait for one request to succeed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between two changes: the proxy's default `minSyncPeriod` (1 s) plus a margin, so every
/// change reaches an idle proxy, as a single edit on a quiet node does.
const BETWEEN_CHANGES: Duration = Duration::from_millis(1200);

fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, (i / 256) as u8, (i % 256) as u8)
}

/// The address the Service of run `r` moves to: outside every initial one (for < 64,000
/// Services and ≤ 250 runs).
fn moved_ip(r: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 250, (r % 250 + 1) as u8)
}

fn file_name(i: usize) -> String {
    format!("svc-{i:05}.yaml")
}

/// One Service and its Endpoints (both endpoints on the namespace's backend).
fn manifest(i: usize, ip: Ipv4Addr) -> String {
    let (ns, name) = (format!("ns{}", i / 250), format!("svc{i}"));
    let (ty, np) = if i < NODEPORTS {
        (
            "\n  type: NodePort".to_string(),
            format!(", nodePort: {}", 30000 + i),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: {ip}{ty}\n  ports: [{{name: http, port: 80, targetPort: 8080{np}}}]\n\
         ---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         subsets: [{{addresses: [{{ip: 10.250.0.1}}, {{ip: 10.250.0.2}}], ports: [{{name: http, port: 8080}}]}}]\n"
    )
}

/// Outer side (or the inner one with `--inner`).
pub(super) fn main(opt: &dyn Fn(&str) -> Option<String>, mode: &str) {
    let n: usize = opt("--services")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(20);
    assert!((1..64_000).contains(&n), "--services must be in 1..64000");
    assert!((1..=250).contains(&runs), "--runs must be in 1..=250");
    if opt("--inner").is_some() {
        let dir = PathBuf::from(opt("--dir").expect("--dir"));
        let kubenode = PathBuf::from(opt("--kubenode").expect("--kubenode"));
        inner(&dir, &kubenode, n, runs, mode);
        return;
    }
    let kubenode = opt("--kubenode").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("kubenode")
    });
    assert!(
        kubenode.is_file(),
        "{} not found: build it (cargo build --release --bin kubenode) or pass --kubenode PATH",
        kubenode.display()
    );
    let dir = std::env::temp_dir().join(format!("kubenode-proxy-bench-{}", std::process::id()));
    let result = run_outer(&dir, &kubenode, n, runs, mode);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(line) => {
            let kv: std::collections::BTreeMap<&str, &str> = line
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            println!(
                "# file source + kubenode proxy ({}), iptables-{mode}, S={n} Services x 2 endpoints, one file each",
                kubenode.display()
            );
            println!(
                "cold start: process start -> request through the last ClusterIP answered: {} s (its first full sync {} s; everything before it {} s)",
                kv["cold_start"], kv["full_sync"], kv["before_sync"]
            );
            println!(
                "one changed file renamed into place -> request through its new ClusterIP answered, {runs} runs: p50 {} ms, p99 {} ms (min {}, max {}); its sync: p50 {} ms",
                kv["change_p50_ms"], kv["change_p99_ms"], kv["change_min_ms"], kv["change_max_ms"], kv["sync_p50_ms"]
            );
        }
        Err(e) => {
            eprintln!("proxy-bench --file-source: {e}");
            std::process::exit(if stopping() { 130 } else { 1 });
        }
    }
}

fn run_outer(
    dir: &Path,
    kubenode: &Path,
    n: usize,
    runs: usize,
    mode: &str,
) -> Result<String, String> {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).map_err(|e| format!("{}: {e}", manifests.display()))?;
    for i in 0..n {
        if stopping() {
            return Err("interrupted".into());
        }
        std::fs::write(manifests.join(file_name(i)), manifest(i, cluster_ip(i)))
            .map_err(|e| format!("writing manifests: {e}"))?;
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = command_dying_with_us("unshare")
        .arg("-n")
        .arg(exe)
        .arg("--file-source")
        .args(["--inner", "file-source", "--mode", mode])
        .args(["--services", &n.to_string(), "--runs", &runs.to_string()])
        .arg("--dir")
        .arg(dir)
        .arg("--kubenode")
        .arg(kubenode)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running unshare -n (are you root?): {e}"))?;
    let start = Instant::now();
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if stopping() {
            stop_child(&mut child);
            return Err("interrupted; the namespace and kubenode went away with the run".into());
        }
        if start.elapsed() > RUN_TIMEOUT {
            stop_child(&mut child);
            return Err(format!("no result within {RUN_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(str::to_string)
        .ok_or_else(|| {
            let log = std::fs::read_to_string(dir.join("kubenode.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!(
                "the run failed: {text}\nlast lines of kubenode's log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
}

fn sh(program: &str, args: &[&str]) {
    let st = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(st.success(), "{program} {args:?} failed");
}

/// One request through `ip:80`: connect, read the answer.
fn request(ip: Ipv4Addr) -> bool {
    let addr = SocketAddr::from((ip, 80));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).is_ok() && buf == b"ok"
}

/// Polls until a request through `ip` succeeds; the time it took.
fn until_answered(ip: Ipv4Addr, since: Instant) -> Duration {
    loop {
        if request(ip) {
            return since.elapsed();
        }
        assert!(!stopping(), "interrupted");
        assert!(
            since.elapsed() < PROBE_TIMEOUT,
            "no answer through {ip} within {PROBE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `(full, duration_ms)` of every "synced proxy rules" line in kubenode's JSON log.
fn syncs(log: &Path) -> Vec<(bool, f64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "synced proxy rules")
        .filter_map(|v| {
            Some((
                v["fields"]["full"].as_bool()?,
                v["fields"]["duration_ms"].as_f64()?,
            ))
        })
        .collect()
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Inside the namespace: set up, start kubenode, measure, print `RESULT`.
fn inner(dir: &Path, kubenode: &Path, n: usize, runs: usize, mode: &str) {
    sh("ip", &["link", "set", "lo", "up"]);
    // A veth pair (kernels without the dummy module have veth: every pod network uses it).
    sh(
        "ip",
        &["link", "add", "kb0", "type", "veth", "peer", "name", "kb1"],
    );
    sh("ip", &["link", "set", "kb1", "up"]);
    sh("ip", &["addr", "add", "10.250.0.1/24", "dev", "kb0"]);
    sh("ip", &["addr", "add", "10.250.0.2/24", "dev", "kb0"]);
    sh("ip", &["link", "set", "kb0", "up"]);
    sh("ip", &["route", "add", "172.30.0.0/16", "dev", "kb0"]);
    sh(
        &format!("iptables-{mode}"),
        &[
            "-A",
            "OUTPUT",
            "-d",
            "172.30.0.0/16",
            "-p",
            "tcp",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );
    let listener = TcpListener::bind("0.0.0.0:8080").expect("backend on :8080");
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(b"ok");
        }
    });
    let manifests = dir.join("manifests");
    let log_path = dir.join("kubenode.log");
    let log = std::fs::File::create(&log_path).expect("kubenode.log");
    let start = Instant::now();
    let mut proxy = command_dying_with_us(kubenode)
        .arg("proxy")
        .arg("--manifest-dir")
        .arg(&manifests)
        .args(["--hostname-override", "bench"])
        .args([
            "--service-cidr",
            "172.30.0.0/16",
            "--cluster-cidr",
            "10.0.0.0/8",
        ])
        .args(["--iptables-mode", mode])
        .arg("--state-file")
        .arg(dir.join("allocations.json"))
        .env("KUBENODE_LOG_FORMAT", "json")
        // `BENCH_KUBENODE_LOG=kubenode_kubelet::source=debug,info` adds the watcher's read timings.
        .env(
            "KUBENODE_LOG",
            std::env::var("BENCH_KUBENODE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting kubenode proxy");
    let cold = until_answered(cluster_ip(n - 1), start);
    // The first full sync's own duration, and what came before it (reading, allocating).
    let wait = Instant::now();
    let full = loop {
        if let Some((_, d)) = syncs(&log_path).into_iter().find(|(f, _)| *f) {
            break Duration::from_secs_f64(d / 1000.0);
        }
        assert!(
            wait.elapsed() < Duration::from_secs(10),
            "no full sync logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(BETWEEN_CHANGES);
    let mut times = Vec::new();
    let mut sync_times = Vec::new();
    for r in 0..runs {
        let i = (r * 487 + n / 2) % n;
        let ip = moved_ip(r);
        let tmp = manifests.join(format!(".{}.tmp", file_name(i)));
        std::fs::write(&tmp, manifest(i, ip)).expect("writing the changed file");
        let before = syncs(&log_path).len();
        let t = Instant::now();
        std::fs::rename(&tmp, manifests.join(file_name(i))).expect("renaming into place");
        times.push(until_answered(ip, t));
        std::thread::sleep(BETWEEN_CHANGES);
        if let Some((_, d)) = syncs(&log_path).get(before) {
            sync_times.push(Duration::from_secs_f64(d / 1000.0));
        }
    }
    stop_child(&mut proxy);
    times.sort();
    sync_times.sort();
    let sync_p50 = if sync_times.is_empty() {
        "n/a".to_string()
    } else {
        ms(percentile(&sync_times, 0.5))
    };
    println!(
        "RESULT cold_start={:.3} full_sync={:.3} before_sync={:.3} change_p50_ms={} change_p99_ms={} change_min_ms={} change_max_ms={} sync_p50_ms={sync_p50}",
        cold.as_secs_f64(),
        full.as_secs_f64(),
        cold.saturating_sub(full).as_secs_f64(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(times[0]),
        ms(times[times.len() - 1]),
    );
}
