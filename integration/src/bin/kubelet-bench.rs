//! kubelet benchmark: single-pod start latency (manifest written → Running with every
//! container started, as the read-only port's `/pods` shows it), a 30-pod burst, and the agent's
//! RSS idle and with 100 pods; with `--podman`, the same pod started by `podman kube play`.
//!
//! Run as root: `cargo run --release -p kubenode-integration --bin kubelet-bench [-- --podman]`
//! (build the `kubenode` binary in the same profile first). `--single` stops after the
//! one-at-a-time starts; `KUBELET_BENCH_LOG=FILE` keeps the agent's log of them (with
//! `KUBENODE_TEST_LOG=debug` for the trace of each step).
//!
//! Ctrl-C (SIGINT) or SIGTERM stops it at the next step and removes what it made (pods, podman's
//! pods, agent, node namespace, registry, directories) before it exits with 130.
//! `KUBELET_BENCH_TAG=TAG` names everything it makes after TAG (default: a fresh tag).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::interrupt;
use kubenode_integration::{run, unique_tag, TestAgent};
use serde_json::Value;

const SINGLE: usize = 30;
const BURST: usize = 30;
const MANY: usize = 100;

fn pod_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// Polls `/pods` on the node's read-only port (from a thread inside the node namespace) until
/// every pod in `names` runs all its containers; returns the time each became Running.
fn wait_running(
    agent: &TestAgent,
    names: &[String],
    start: Instant,
    limit: Duration,
) -> anyhow::Result<Vec<Duration>> {
    agent.node.run_in(|| -> anyhow::Result<Vec<Duration>> {
        let mut done: Vec<Option<Duration>> = vec![None; names.len()];
        while done.iter().any(Option::is_none) {
            interrupt::check()?;
            if start.elapsed() > limit {
                bail!(
                    "pods not Running after {limit:?}: {:?}",
                    names
                        .iter()
                        .zip(&done)
                        .filter(|(_, d)| d.is_none())
                        .map(|(n, _)| n)
                        .collect::<Vec<_>>()
                );
            }
            let body = ureq::get("http://127.0.0.1:10255/pods")
                .call()?
                .body_mut()
                .read_to_string()?;
            let mut list: Value = serde_json::from_str(&body)?;
            let pods: Vec<Pod> = match list["items"].take() {
                Value::Null => Vec::new(),
                items => serde_json::from_value(items).context("/pods: items")?,
            };
            let now = start.elapsed();
            for p in &pods {
                let Some(i) = names
                    .iter()
                    .position(|n| p.metadata.name.as_deref() == Some(n.as_str()))
                else {
                    continue;
                };
                let status = p.status.as_ref();
                let running = status.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && status
                        .and_then(|s| s.container_statuses.as_deref())
                        .is_some_and(|c| {
                            c.iter()
                                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                        });
                if running && done[i].is_none() {
                    done[i] = Some(now);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(done.into_iter().flatten().collect())
    })?
}

fn remove_all(agent: &TestAgent, files: &[String]) -> anyhow::Result<()> {
    for f in files {
        agent.remove_manifest(f)?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !agent.pods()?.is_empty() {
        interrupt::check()?;
        if Instant::now() > deadline {
            bail!("pods still present");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Writes `count` manifests `<prefix><i>.yaml` at once and waits until every pod runs; returns
/// the time until the last one did, and the files (for `remove_all`).
fn start_batch(
    agent: &TestAgent,
    image: &str,
    prefix: &str,
    count: usize,
    limit: Duration,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let t = Instant::now();
    let mut files = Vec::new();
    for n in &names {
        interrupt::check()?;
        let file = format!("{n}.yaml");
        agent.write_manifest(&file, &pod_yaml(n, image))?;
        files.push(file);
    }
    let full: Vec<String> = names.iter().map(|n| agent.pod_name(n)).collect();
    let all = wait_running(agent, &full, t, limit)?
        .into_iter()
        .max()
        .unwrap_or_default();
    Ok((all, files))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))
        .with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn podman_latencies(agent: &TestAgent, image: &str) -> anyhow::Result<Vec<Duration>> {
    let conf = agent.dir.join("podman");
    std::fs::create_dir_all(conf.join("registries.conf.d"))?;
    let registry = image.split('/').next().unwrap_or_default();
    std::fs::write(
        conf.join("registries.conf"),
        format!("[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n"),
    )?;
    std::fs::write(
        conf.join("containers.conf"),
        "[engine]\nruntime = \"runc\"\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=20000:20000\"]\n",
    )?;
    let podman = |args: &[&str]| {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", agent.node.path().display()))
            .arg("podman")
            .args([
                "--root",
                &agent.dir.join("podman/storage").to_string_lossy(),
                "--runroot",
                &agent.dir.join("podman/run").to_string_lossy(),
            ])
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", conf.join("registries.conf"))
            .env("CONTAINERS_CONF", conf.join("containers.conf"));
        run(&mut cmd, Duration::from_secs(120))
    };
    let runs = || -> anyhow::Result<Vec<Duration>> {
        let warm = agent.dir.join("podman/warm.yaml");
        std::fs::write(&warm, pod_yaml("warm", image))?;
        let out = podman(&["kube", "play", &warm.to_string_lossy()])?;
        if !out.status.success() {
            bail!(
                "podman kube play failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        podman(&["kube", "down", &warm.to_string_lossy()])?;
        let mut lat = Vec::new();
        for i in 0..SINGLE {
            interrupt::check()?;
            let f = agent.dir.join(format!("podman/p{i}.yaml"));
            std::fs::write(&f, pod_yaml(&format!("pm{i}"), image))?;
            let t = Instant::now();
            let out = podman(&["kube", "play", &f.to_string_lossy()])?;
            lat.push(t.elapsed());
            if !out.status.success() {
                bail!(
                    "podman kube play failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            podman(&["kube", "down", &f.to_string_lossy()])?;
        }
        Ok(lat)
    };
    let result = runs();
    // Also after a failure or an interruption: no podman pod outlives the bench.
    let _ = podman(&["pod", "rm", "-af"]);
    let _ = podman(&["system", "reset", "-f"]);
    result
}

/// With `KUBELET_BENCH_SMAPS=DIR`, keeps the agent's `/proc/<pid>/smaps` at `stage` as
/// `DIR/<stage>.smaps` (to see where the memory is).
fn save_smaps(pid: u32, stage: &str) -> anyhow::Result<()> {
    if let Some(dir) = std::env::var_os("KUBELET_BENCH_SMAPS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(
            format!("/proc/{pid}/smaps"),
            dir.join(format!("{stage}.smaps")),
        )?;
    }
    Ok(())
}

fn main() {
    let result = interrupt::install().and_then(|()| bench());
    interrupt::exit("kubelet-bench", result)
}

/// The whole bench; everything it makes is owned by the agent, dropped on the way out.
fn bench() -> anyhow::Result<()> {
    let with_podman = std::env::args().any(|a| a == "--podman");
    let tag = std::env::var("KUBELET_BENCH_TAG").unwrap_or_else(|_| unique_tag("kbn"));
    // The read-only port is off by default; this bench polls its /pods.
    let mut agent = TestAgent::start_with_config(&tag, Some("readOnlyPort: 10255\n"))?;
    let image = agent.push_tag("1.0")?;
    let pid = agent.pid().context("agent pid")?;

    // Warm the image store (pull latency is not part of pod start).
    agent.write_manifest("warm.yaml", &pod_yaml("warm", &image))?;
    wait_running(
        &agent,
        &[agent.pod_name("warm")],
        Instant::now(),
        Duration::from_secs(60),
    )?;
    remove_all(&agent, &["warm.yaml".into()])?;
    interrupt::sleep(Duration::from_secs(2))?;
    let idle = rss_kib(pid)?;
    save_smaps(pid, "idle")?;

    // Like `podman kube play` then `kube down` below: each pod is started on an otherwise
    // empty node and removed before the next one.
    let mut single = Vec::new();
    for i in 0..SINGLE {
        interrupt::check()?;
        let file = format!("s{i}.yaml");
        let t = Instant::now();
        agent.write_manifest(&file, &pod_yaml(&format!("s{i}"), &image))?;
        single.extend(wait_running(
            &agent,
            &[agent.pod_name(&format!("s{i}"))],
            t,
            Duration::from_secs(60),
        )?);
        remove_all(&agent, &[file])?;
    }
    single.sort();
    if let Some(to) = std::env::var_os("KUBELET_BENCH_LOG") {
        std::fs::copy(agent.dir.join("agent.log"), &to).context("copying the agent log")?;
    }
    if std::env::args().any(|a| a == "--single") {
        println!(
            "kubenode pod start ({SINGLE} pods, one at a time): median {:.1} ms, p99 {:.1} ms, min {:.1} ms",
            ms(percentile(&single, 0.5)),
            ms(percentile(&single, 0.99)),
            ms(single[0])
        );
        return Ok(());
    }

    let (burst, files) = start_batch(&agent, &image, "b", BURST, Duration::from_secs(120))?;
    remove_all(&agent, &files)?;

    let (hundred, files) = start_batch(&agent, &image, "m", MANY, Duration::from_secs(300))?;
    interrupt::sleep(Duration::from_secs(3))?;
    let loaded = rss_kib(pid)?;
    // The agent returns freed heap pages to the kernel every 10 s: the steady state. Its CPU
    // over those 9 s is what keeping 100 pods costs (status passes, no probes).
    let cpu_before = cpu_ticks(pid)?;
    interrupt::sleep(Duration::from_secs(9))?;
    let idle_cpu = (cpu_ticks(pid)? - cpu_before) as f64 / clock_ticks() / 9.0 * 100.0;
    let steady = rss_kib(pid)?;
    let (anon, file) = (status_kib(pid, "RssAnon")?, status_kib(pid, "RssFile")?);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
    save_smaps(pid, "loaded")?;
    remove_all(&agent, &files)?;

    println!("kubenode pod start ({SINGLE} pods, one at a time): median {:.1} ms, p99 {:.1} ms, min {:.1} ms",
        ms(percentile(&single, 0.5)), ms(percentile(&single, 0.99)), ms(single[0]));
    println!(
        "kubenode burst of {BURST} pods: all Running after {:.0} ms",
        ms(burst)
    );
    println!(
        "kubenode {MANY} pods: all Running after {:.0} ms; then the agent uses {idle_cpu:.1} % of one core keeping them",
        ms(hundred)
    );
    println!(
        "agent RSS: idle {:.1} MiB, with {MANY} pods {:.1} MiB 3 s after the last start, {:.1} MiB steady (anonymous {:.1}, file {:.1}; {threads} threads)",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        steady as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    if with_podman {
        match podman_latencies(&agent, &image) {
            Ok(mut lat) => {
                lat.sort();
                let (pm, km) = (percentile(&lat, 0.5), percentile(&single, 0.5));
                println!(
                    "podman kube play ({SINGLE} pods): median {:.1} ms, p99 {:.1} ms",
                    ms(pm),
                    ms(percentile(&lat, 0.99))
                );
                println!(
                    "ratio kubenode/podman (median): {:.2}",
                    km.as_secs_f64() / pm.as_secs_f64()
                );
            }
            Err(e) => println!("podman: not measured: {e:#}"),
        }
    }
    agent.kill();
    agent.spawn()?;
    Ok(())
}
