//! Resource usage on the real kernel: a pod spinning a CPU shows a CPU rate and a working set in
//! `/stats/summary`, its container in `/metrics/resource` (what metrics-server scrapes), its
//! `eth0` counters as the pod itself reads them (the pod's network namespace), a row
//! in `kubenode top pods`; `/metrics` counts the running pod and containers as upstream's
//! kubelet does.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use kubenode_integration::agent::with_config_agent;
use kubenode_integration::pods::{all_running, pod_ip, pod_yaml};
use kubenode_integration::run;
use kubenode_integration::{privileged, run_tests, TestAgent};
use kubenode_kubelet::stats::types::{PodStats, Summary};

fn main() {
    run_tests(vec![privileged(
        "summary_resource_metrics_top_and_kubelet_metrics",
        stats,
    )])
}

/// `GET path` on the agent's socket.
fn get(agent: &TestAgent, path: &str) -> anyhow::Result<String> {
    let socket = agent.dir.join("run/kubenode.sock");
    let out = run(
        Command::new("curl")
            .args(["-sS", "--fail-with-body", "--unix-socket"])
            .arg(&socket)
            .arg(format!("http://kubenode{path}")),
        Duration::from_secs(30),
    )?;
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "GET {path}: {body}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(body)
}

fn pod_of<'a>(s: &'a Summary, name: &str) -> Option<&'a PodStats> {
    s.pods.iter().find(|p| p.pod_ref.name == name)
}

/// Polls `f` every 500 ms for at most `within` until it returns `Some`.
fn until<T>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The value of the sample `series` (name and labels exactly as printed) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn stats() -> anyhow::Result<()> {
    with_config_agent("st", None, |agent| {
        let body = "  containers:\n  - name: spin\n    image: IMAGE\n    command: [\"sh\", \"-c\", \"dd if=/dev/urandom of=/written bs=1048576 count=2 2>/dev/null; dd if=/dev/urandom of=/scratch/f bs=1048576 count=1 2>/dev/null; while :; do :; done\"]\n    volumeMounts:\n    - name: scratch\n      mountPath: /scratch\n  - name: web\n    image: IMAGE\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/\"]\n  volumes:\n  - name: scratch\n    emptyDir: {}\n";
        agent.write_manifest("busy.yaml", &pod_yaml("busy", &agent.image, body))?;
        let name = agent.pod_name("busy");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let ip = pod_ip(&pod).to_string();
        ensure!(!ip.is_empty(), "no pod IP: {:?}", pod.status);

        // CPU rate and working set of the spinning container, once two samples exist.
        let summary = until(Duration::from_secs(60), "a CPU rate of spin", || {
            let s: Summary = serde_json::from_str(&get(agent, "/stats/summary")?)?;
            let rated = pod_of(&s, &name)
                .and_then(|p| p.containers.iter().find(|c| c.name == "spin"))
                .and_then(|c| c.cpu?.usage_nano_cores)
                .is_some();
            Ok(rated.then_some(s))
        })?;
        let p = pod_of(&summary, &name).context("pod in summary")?;
        ensure!(p.pod_ref.namespace == "default", "{:?}", p.pod_ref);
        let spin = p.containers.iter().find(|c| c.name == "spin").unwrap();
        let cpu = spin.cpu.unwrap();
        ensure!(cpu.usage_nano_cores.unwrap() > 0, "spin: {cpu:?}");
        ensure!(cpu.usage_core_nano_seconds.unwrap() > 0, "spin: {cpu:?}");
        let mem = spin.memory.context("spin memory")?;
        ensure!(mem.working_set_bytes.unwrap() > 0, "spin: {mem:?}");
        ensure!(
            p.containers.iter().any(|c| c.name == "web"),
            "web missing: {p:?}"
        );
        let pod_cpu = p.cpu.context("pod cpu")?;
        ensure!(
            pod_cpu.usage_core_nano_seconds >= cpu.usage_core_nano_seconds,
            "the pod cgroup holds its containers: {pod_cpu:?} < {cpu:?}"
        );
        ensure!(
            summary
                .node
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .unwrap_or(0)
                > 0
        );
        ensure!(
            summary
                .node
                .memory
                .and_then(|m| m.working_set_bytes)
                .unwrap_or(0)
                > 0
        );
        ensure!(summary.node.fs.and_then(|f| f.capacity_bytes).unwrap_or(0) > 0);

        // What spin wrote to its own filesystem is its writable layer, its rootfs usage, and
        // what it wrote to the emptyDir the volume's (each walked once a minute, as cAdvisor
        // and upstream's volume stats: the first measure may predate the write); both are part
        // of the pod's ephemeral storage with the logs.
        let written = until(Duration::from_secs(90), "spin's rootfs usage", || {
            let s: Summary = serde_json::from_str(&get(agent, "/stats/summary")?)?;
            let Some(p) = pod_of(&s, &name) else {
                return Ok(None);
            };
            let rootfs = p
                .containers
                .iter()
                .find(|c| c.name == "spin")
                .and_then(|c| c.rootfs.as_ref()?.used_bytes)
                .unwrap_or(0);
            let scratch = p
                .volume
                .iter()
                .find(|v| v.name == "scratch")
                .and_then(|v| v.fs.used_bytes)
                .unwrap_or(0);
            Ok((rootfs >= 2 << 20 && scratch >= 1 << 20).then(|| (rootfs + scratch, p.clone())))
        })?;
        let (rootfs, p) = written;
        let ephemeral = p
            .ephemeral_storage
            .as_ref()
            .and_then(|e| e.used_bytes)
            .context("pod ephemeral storage")?;
        ensure!(
            ephemeral >= rootfs,
            "ephemeral {ephemeral} < spin's rootfs and the scratch emptyDir {rootfs}"
        );

        // The pod's eth0 counters are its network namespace's: what the pod itself reads in
        // /proc/net/dev (read after the summary: counters only grow).
        let net = |s: &Summary| {
            let n = pod_of(s, &name)?.network.clone()?;
            Some((
                n.default.name.clone(),
                n.default.rx_bytes?,
                n.default.tx_bytes?,
            ))
        };
        let (ifname, rx, tx) = net(&summary).context("pod network stats")?;
        ensure!(ifname == "eth0", "default interface {ifname:?}");
        ensure!(rx > 0 && tx > 0, "eth0 rx {rx} tx {tx}");
        let (code, inside) =
            kubenode_integration::pods::exec_sh(agent, &name, "web", "cat /proc/net/dev")?;
        ensure!(code == 0, "{inside}");
        let eth0: Vec<u64> = inside
            .lines()
            .find_map(|l| l.trim().strip_prefix("eth0:"))
            .context("no eth0 in the pod")?
            .split_whitespace()
            .map(|v| v.parse())
            .collect::<Result<_, _>>()?;
        ensure!(
            eth0[0] >= rx && eth0[8] >= tx && eth0[0] < rx + 100_000,
            "summary rx {rx} tx {tx}, the pod's own: {inside}"
        );

        // metrics-server's view.
        let resource = get(agent, "/metrics/resource")?;
        let series = format!(
            "container_cpu_usage_seconds_total{{container=\"spin\",namespace=\"default\",pod=\"{name}\"}}"
        );
        let used = sample(&resource, &series).with_context(|| format!("{series} in {resource}"))?;
        ensure!(used > 0.0, "{series} = {used}");
        let ws = format!(
            "container_memory_working_set_bytes{{container=\"spin\",namespace=\"default\",pod=\"{name}\"}}"
        );
        ensure!(
            sample(&resource, &ws).unwrap_or(0.0) > 0.0,
            "{ws}: {resource}"
        );
        ensure!(sample(&resource, "scrape_error") == Some(0.0), "{resource}");

        // kubectl top's table.
        let top = agent.kubenode_ok(&["top", "pods"])?;
        let mut lines = top.lines();
        ensure!(
            lines
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                == ["NAME", "CPU(cores)", "MEMORY(bytes)"],
            "{top}"
        );
        let row: Vec<&str> = lines
            .find(|l| l.starts_with(&format!("{name} ")))
            .with_context(|| format!("{name} not in:\n{top}"))?
            .split_whitespace()
            .collect();
        ensure!(
            row.len() == 3 && row[1].ends_with('m') && row[2].ends_with("Mi"),
            "{top}"
        );
        let milli: u64 = row[1].trim_end_matches('m').parse()?;
        ensure!(milli > 0, "a spinning container uses some CPU: {top}");
        let node = agent.kubenode_ok(&["top", "node"])?;
        ensure!(
            node.contains(agent.node_name()) && node.contains('%'),
            "{node}"
        );

        // The kubelet's own metrics: one pod with a running sandbox, two running containers.
        let pods = agent.pods()?.len() as f64;
        until(Duration::from_secs(30), "kubelet_running_pods", || {
            let m = get(agent, "/metrics")?;
            let running = sample(&m, "kubelet_running_pods");
            let ctrs = sample(
                &m,
                "kubelet_running_containers{container_state=\"running\"}",
            );
            Ok((running == Some(pods) && ctrs == Some(2.0)).then_some(()))
        })?;
        let m = get(agent, "/metrics")?;
        ensure!(
            sample(
                &m,
                "kubelet_runtime_operations_total{operation_type=\"start_container\"}"
            )
            .unwrap_or(0.0)
                >= 2.0,
            "{m}"
        );
        ensure!(
            sample(&m, "kubelet_pod_start_duration_seconds_count") >= Some(1.0),
            "{m}"
        );
        ensure!(
            sample(&m, "kubelet_pleg_relist_duration_seconds_count") >= Some(1.0),
            "{m}"
        );
        Ok(())
    })
}
