//! exit-bench: how soon the agent sees a container's exit, through the real runtime.
//!
//! Runs `--runs N` pods (default 20) one after the other, each with one container that sleeps a
//! second and exits with 3. The bench polls `/pods` on the node's read-only port every 2 ms and
//! notes, for each pod, when the container's exit first shows in the status (a `terminated`
//! state or last state) and when its restarted instance runs (the first restart: no back-off);
//! the restarted instance's `created_at` (in its `meta.json`) tells when the agent began to
//! create it, which is when it had seen the exit and decided. All three are measured from the
//! exit as its shim saw it: the `finished_at` of the exit record in the container's directory
//! (nanoseconds, taken when `waitpid` returned, before the record is written and synced; the
//! shim, the agent and the bench share the host's clock). Prints p50/p99/max of each; the
//! status times carry the 2 ms polling on top.
//!
//! Run as root: `cargo run -p kubenode-integration --bin exit-bench [-- --runs N]` (it uses the
//! `kubenode` binary of the same profile). Ctrl-C (SIGINT) or SIGTERM stops it and removes its
//! pods, agent and node before it exits with 130.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::{bench_arg, interrupt, unique_tag, TestAgent};
use serde_json::Value;

fn pod_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n"
    )
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

/// A timestamp field of a JSON file in container `id`'s directory, in nanoseconds since the
/// epoch.
fn stamp(root: &Path, id: &str, file: &str, field: &str) -> anyhow::Result<i128> {
    let id = id.strip_prefix("kubenode://").unwrap_or(id);
    let path = root.join("containers").join(id).join(file);
    let record: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let at: k8s_openapi::jiff::Timestamp = record[field]
        .as_str()
        .with_context(|| format!("{}: {field}", path.display()))?
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {field}: {e}", path.display()))?;
    Ok(at.as_nanosecond())
}

/// When the shim saw container `id` exit, from its exit record.
fn finished_at(root: &Path, id: &str) -> anyhow::Result<i128> {
    stamp(root, id, "exit", "finished_at")
}

/// When the agent began to create container `id` (its restart began), from its metadata.
fn created_at(root: &Path, id: &str) -> anyhow::Result<i128> {
    stamp(root, id, "meta.json", "created_at")
}

/// What one poll saw of the pod's container: the time its first instance exited (once its exit
/// shows), and when the agent began to create the restarted instance (once that runs).
fn observe(root: &Path, pod: &Pod) -> anyhow::Result<(Option<i128>, Option<i128>)> {
    let Some(c) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
    else {
        return Ok((None, None));
    };
    let terminated = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
    let exited = match terminated.and_then(|t| t.container_id.as_deref()) {
        Some(id) => Some(finished_at(root, id)?),
        None => None,
    };
    let running = c.restart_count >= 1 && c.state.as_ref().is_some_and(|s| s.running.is_some());
    let restarted = match c.container_id.as_deref() {
        Some(id) if running => Some(created_at(root, id)?),
        _ => None,
    };
    Ok((exited, restarted))
}

/// Times from a container's exit, in one run.
struct Run {
    /// To the agent beginning to create the restarted instance.
    restart_begun: Duration,
    /// To the exit showing in the pod's status.
    seen: Duration,
    /// To the restarted instance running in the pod's status.
    running: Duration,
}

/// Polls `/pods` until pod `name`'s container has exited and restarted.
fn measure(agent: &TestAgent, name: &str) -> anyhow::Result<Run> {
    let name = name.to_string();
    let root = agent.dir.path().join("root");
    agent.node.run_in(move || -> anyhow::Result<Run> {
        let limit = Instant::now() + Duration::from_secs(120);
        let mut seen: Option<(i128, i128)> = None;
        loop {
            interrupt::check()?;
            if Instant::now() > limit {
                bail!("{name}: no exit and restart within 120 s");
            }
            let body = ureq::get("http://127.0.0.1:10255/pods")
                .call()?
                .body_mut()
                .read_to_string()?;
            let t = now_ns();
            let mut list: Value = serde_json::from_str(&body)?;
            let pods: Vec<Pod> = match list["items"].take() {
                Value::Null => Vec::new(),
                items => serde_json::from_value(items).context("/pods: items")?,
            };
            if let Some(p) = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
            {
                let (wrote, restarted) = observe(&root, p)?;
                if let (Some(w), None) = (wrote, seen) {
                    seen = Some((w, t));
                }
                if let (Some((w, term)), Some(created)) = (seen, restarted) {
                    let d = |ns: i128| Duration::from_nanos(ns.max(0) as u64);
                    return Ok(Run {
                        restart_begun: d(created - w),
                        seen: d(term - w),
                        running: d(t - w),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })?
}

fn remove(agent: &TestAgent, file: &str) -> anyhow::Result<()> {
    agent.remove_manifest(file)?;
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} runs)",
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.99)),
        ms(*v.last().unwrap_or(&Duration::ZERO)),
        v.len()
    );
}

fn main() {
    let result = interrupt::install().and_then(|()| bench());
    interrupt::exit("exit-bench", result)
}

/// The whole bench; everything it makes is owned by the agent, dropped on the way out.
fn bench() -> anyhow::Result<()> {
    let runs = bench_arg("--runs", 20).max(1) as usize;
    let tag = std::env::var("EXIT_BENCH_TAG").unwrap_or_else(|_| unique_tag("exb"));
    // The read-only port is off by default; this bench polls its /pods.
    let agent = TestAgent::start_with_config(&tag, Some("readOnlyPort: 10255\n"))?;
    let image = agent.push_tag("1.0")?;
    let mut begun = Vec::new();
    let mut seen = Vec::new();
    let mut running = Vec::new();
    for i in 0..runs {
        let name = format!("ex{i}");
        let file = format!("{name}.yaml");
        agent.write_manifest(&file, &pod_yaml(&name, &image))?;
        let run = measure(&agent, &agent.pod_name(&name))?;
        remove(&agent, &file)?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "run {i}: restart begun {:.1} ms, exit in status {:.1} ms, restarted and running {:.1} ms",
            ms(run.restart_begun),
            ms(run.seen),
            ms(run.running)
        );
        begun.push(run.restart_begun);
        seen.push(run.seen);
        running.push(run.running);
    }
    report(
        "exit -> restart begun (agent creates the new instance)",
        begun,
    );
    report("exit -> exit in the pod's status", seen);
    report(
        "exit -> restarted instance running in the pod's status",
        running,
    );
    Ok(())
}
