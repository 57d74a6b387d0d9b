//! The kill-churn soak (issue 19): for a while, static pods (with probes, an emptyDir, and
//! Services selecting some of them) are created, changed and removed at random while the agent
//! is SIGKILLed at random moments and restarted. Then the node must have converged, with
//! nothing spurious and nothing leaked:
//!
//! - every pod that should run runs, with each container running and ready, no other pod;
//! - exactly one runtime container per pod container (plus pause), none stopped;
//! - no restart at all (no container ever exits by itself here, so any restart is the agent's
//!   doing);
//! - once every manifest is gone: no runtime container, shim, pinned namespace, veth, allocated
//!   address, Service chain, pod mount, runtime state directory (bundle), pod directory or pod
//!   log directory of the agent left, while the agent still runs.
//!
//! The `soak` bench binary runs it for minutes and prints the counts and the agent's RSS and CPU;
//! `tests/soak.rs` runs one minute of it in CI. Every wait is bounded; counts are asserted,
//! never times.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;

use crate::pods::{all_running, phase, status};
use crate::{run_ok, TestAgent};

/// What a soak does.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long pods are churned.
    pub duration: Duration,
    /// How many times the agent is SIGKILLed (at random moments of `duration`).
    pub kills: u32,
    /// How many pod slots churn.
    pub slots: usize,
    /// The random seed (printed, so a failing run can be repeated).
    pub seed: u64,
    /// How often the agent's RSS and CPU are sampled during the churn (`None`: not).
    pub sample_every: Option<Duration>,
}

/// What a soak did and found.
#[derive(Debug, Default, Clone)]
pub struct SoakReport {
    /// Pods created, changed (a new manifest: a new pod) and removed during the churn.
    pub created: u32,
    /// See `created`.
    pub changed: u32,
    /// See `created`.
    pub removed: u32,
    /// Agent SIGKILLs done.
    pub kills: u32,
    /// Pods desired at the end, and how many ran (Running, every container running and ready).
    pub desired: usize,
    /// See `desired`.
    pub running: usize,
    /// Pods the agent reported that were not desired.
    pub unexpected_pods: Vec<String>,
    /// Containers whose restart count is not 0 (`pod/container=count`).
    pub restarted: Vec<String>,
    /// Runtime containers while converged, by status (`running`, `stopped`, ...).
    pub runtime_containers: BTreeMap<String, usize>,
    /// Containers desired while converged (pause included).
    pub desired_containers: usize,
    /// What was left after every manifest was removed (empty: nothing).
    pub leftovers: Vec<String>,
    /// The agent's RSS (KiB) and CPU time (ms) before the churn and at the end.
    pub rss_kib: (u64, u64),
    /// See `rss_kib`.
    pub cpu_ms: (u64, u64),
    /// Samples during the churn: seconds since its start, the agent's RSS (KiB) and its CPU
    /// time (ms) since its last (re)start.
    pub samples: Vec<(u64, u64, u64)>,
}

impl SoakReport {
    /// The failures, one line each (empty: the soak passed).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.running != self.desired {
            f.push(format!(
                "{} of {} desired pods running",
                self.running, self.desired
            ));
        }
        if !self.unexpected_pods.is_empty() {
            f.push(format!("pods not desired: {:?}", self.unexpected_pods));
        }
        if !self.restarted.is_empty() {
            f.push(format!("containers restarted: {:?}", self.restarted));
        }
        let running = self.runtime_containers.get("running").copied().unwrap_or(0);
        let total: usize = self.runtime_containers.values().sum();
        if running != self.desired_containers || total != running {
            f.push(format!(
                "runtime containers {:?}, want {} running and nothing else",
                self.runtime_containers, self.desired_containers
            ));
        }
        for l in &self.leftovers {
            f.push(format!("left after removing every pod: {l}"));
        }
        f
    }

    /// The report as the bench and the test print it.
    pub fn print(&self) {
        println!(
            "soak: pods created {}, changed {}, removed {}; agent SIGKILLed {} times",
            self.created, self.changed, self.removed, self.kills
        );
        println!(
            "soak: converged: {} of {} desired pods running, {} unexpected pods, {} restarted containers",
            self.running,
            self.desired,
            self.unexpected_pods.len(),
            self.restarted.len()
        );
        println!(
            "soak: runtime containers {:?} for {} desired (pause included)",
            self.runtime_containers, self.desired_containers
        );
        println!(
            "soak: leaked after removing every pod: {} (namespaces, veths, addresses, mounts, chains, runc containers, shims, state, pod and log directories, pod cgroups)",
            self.leftovers.len()
        );
        println!(
            "soak: agent RSS {} KiB -> {} KiB, CPU {} ms -> {} ms",
            self.rss_kib.0, self.rss_kib.1, self.cpu_ms.0, self.cpu_ms.1
        );
        for (at, rss, cpu) in &self.samples {
            println!("soak: at {at:>5} s: agent RSS {rss} KiB, CPU {cpu} ms since its start");
        }
    }
}

/// The pod shapes that churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A sleeper with an exec readiness probe.
    Sleeper,
    /// An httpd with HTTP liveness and TCP readiness probes, serving from an emptyDir, and a
    /// Service selecting it.
    Server,
}

/// One slot's pod as it is on disk.
#[derive(Debug, Clone)]
struct Slot {
    shape: Shape,
    generation: u32,
}

fn pod_manifest(image: &str, slot: usize, s: &Slot) -> String {
    let name = format!("soak{slot}");
    let common = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{soak: \"{slot}\"}}\n  \
         annotations: {{soak/generation: \"{}\"}}\nspec:\n  terminationGracePeriodSeconds: 1\n",
        s.generation
    );
    match s.shape {
        Shape::Sleeper => format!(
            "{common}  containers:\n  - name: c\n    image: {image}\n    \
             command: [sleep, \"3600\"]\n    readinessProbe:\n      exec: {{command: [\"true\"]}}\n      \
             periodSeconds: 2\n"
        ),
        Shape::Server => format!(
            "{common}  volumes:\n  - name: www\n    emptyDir: {{}}\n  containers:\n  - name: c\n    \
             image: {image}\n    command: [sh, -c, \"echo {slot} > /www/index.html; exec httpd -f -p 8080 -h /www\"]\n    \
             volumeMounts:\n    - {{name: www, mountPath: /www}}\n    ports:\n    - {{name: http, containerPort: 8080}}\n    \
             livenessProbe:\n      httpGet: {{path: /, port: 8080}}\n      periodSeconds: 2\n      \
             timeoutSeconds: 5\n      failureThreshold: 10\n    readinessProbe:\n      \
             tcpSocket: {{port: 8080}}\n      periodSeconds: 2\n"
        ),
    }
}

fn service_manifest(slot: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: soak{slot}\nspec:\n  \
         selector: {{soak: \"{slot}\"}}\n  ports:\n  - {{port: 80, targetPort: 8080}}\n"
    )
}

/// Runs the soak against `agent` (which must run no other pod) and reports; every manifest it
/// wrote is removed before it returns, also on error.
pub fn run(agent: &mut TestAgent, opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    let mut report = SoakReport::default();
    let mut slots: Vec<Option<Slot>> = vec![None; opts.slots];
    let baseline_mounts = agent_mounts(agent);
    let outcome = churn_and_check(agent, opts, &mut slots, &mut report, &baseline_mounts);
    // Whatever happened: every manifest goes.
    for (i, slot) in slots.iter().enumerate() {
        if slot.is_some() {
            let _ = agent.remove_manifest(&format!("soak{i}.yaml"));
            let _ = agent.remove_manifest(&format!("soak{i}-svc.yaml"));
        }
    }
    outcome?;
    Ok(report)
}

fn churn_and_check(
    agent: &mut TestAgent,
    opts: &SoakOptions,
    slots: &mut [Option<Slot>],
    report: &mut SoakReport,
    baseline_mounts: &[String],
) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let started = Instant::now();
    let mut kill_at: Vec<Duration> = (0..opts.kills)
        .map(|_| opts.duration.mul_f64(rng.f64()))
        .collect();
    kill_at.sort();
    kill_at.reverse();
    let pid = agent.pid().context("agent pid")?;
    report.rss_kib.0 = rss_kib(pid);
    report.cpu_ms.0 = cpu_ms(pid);

    let mut next_sample = opts.sample_every;
    while started.elapsed() < opts.duration {
        crate::interrupt::check()?;
        if let Some(at) = next_sample.filter(|at| started.elapsed() >= *at) {
            if let Some(pid) = agent.pid() {
                report
                    .samples
                    .push((started.elapsed().as_secs(), rss_kib(pid), cpu_ms(pid)));
            }
            next_sample = opts.sample_every.map(|every| at + every);
        }
        if kill_at.last().is_some_and(|t| started.elapsed() >= *t) {
            kill_at.pop();
            agent.kill();
            report.kills += 1;
            std::thread::sleep(Duration::from_millis(rng.u64(0..300)));
            agent.spawn()?;
            continue;
        }
        let i = rng.usize(0..slots.len());
        let pod_file = format!("soak{i}.yaml");
        let svc_file = format!("soak{i}-svc.yaml");
        match slots[i].take() {
            None => {
                let shape = if rng.bool() {
                    Shape::Server
                } else {
                    Shape::Sleeper
                };
                let s = Slot {
                    shape,
                    generation: 0,
                };
                agent.write_manifest(&pod_file, &pod_manifest(&agent.image, i, &s))?;
                if shape == Shape::Server {
                    agent.write_manifest(&svc_file, &service_manifest(i))?;
                }
                slots[i] = Some(s);
                report.created += 1;
            }
            Some(mut s) if rng.u8(0..3) > 0 => {
                s.generation += 1;
                agent.write_manifest(&pod_file, &pod_manifest(&agent.image, i, &s))?;
                slots[i] = Some(s);
                report.changed += 1;
            }
            Some(s) => {
                agent.remove_manifest(&pod_file)?;
                if s.shape == Shape::Server {
                    agent.remove_manifest(&svc_file)?;
                }
                report.removed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(100..400)));
    }
    // The remaining kills, if the clock ran out first.
    for _ in kill_at {
        agent.kill();
        report.kills += 1;
        agent.spawn()?;
    }

    // Converged: every desired pod Running and ready, nothing else.
    let desired: BTreeMap<String, &Slot> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (agent.pod_name(&format!("soak{i}")), s)))
        .collect();
    report.desired = desired.len();
    report.desired_containers = desired.len() * 2;
    // Converged means the agent's work is done: the desired pods ready, and the pods it no
    // longer wants (the restarted agent's orphans, replaced generations) torn down, which
    // may end after the new ones are ready.
    let want_containers = BTreeMap::from([("running".to_string(), report.desired_containers)]);
    let deadline = Instant::now() + Duration::from_secs(180);
    let pods = loop {
        let pods = agent.pods()?;
        let settled = pods.len() == desired.len()
            && pods.iter().all(|p| {
                let name = p.metadata.name.as_deref().unwrap_or_default();
                desired
                    .get(name)
                    .is_some_and(|s| generation(p) == Some(s.generation.to_string()) && ready(p))
            })
            && (report.desired_containers == 0 || runtime_containers(agent)? == want_containers);
        if settled || Instant::now() > deadline {
            break pods;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for p in &pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        match desired.get(&name) {
            Some(s) if generation(p) == Some(s.generation.to_string()) && ready(p) => {
                report.running += 1;
            }
            Some(_) => {}
            None => report.unexpected_pods.push(name.clone()),
        }
        for c in status(p).container_statuses.iter().flatten() {
            if c.restart_count != 0 {
                report
                    .restarted
                    .push(format!("{name}/{}={}", c.name, c.restart_count));
            }
        }
    }
    report.runtime_containers = runtime_containers(agent)?;

    // Everything removed: nothing may be left while the agent runs.
    for (i, slot) in slots.iter_mut().enumerate() {
        if let Some(s) = slot.take() {
            agent.remove_manifest(&format!("soak{i}.yaml"))?;
            if s.shape == Shape::Server {
                agent.remove_manifest(&format!("soak{i}-svc.yaml"))?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = leftovers(agent, baseline_mounts)?;
        if left.is_empty() || Instant::now() > deadline {
            report.leftovers = left;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    report.rss_kib.1 = agent.pid().map(rss_kib).unwrap_or_default();
    report.cpu_ms.1 = agent.pid().map(cpu_ms).unwrap_or_default();
    Ok(())
}

fn generation(p: &Pod) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()?
        .get("soak/generation")
        .cloned()
}

fn ready(p: &Pod) -> bool {
    phase(p) == "Running"
        && all_running(p)
        && status(p)
            .container_statuses
            .iter()
            .flatten()
            .all(|c| c.ready)
}

/// The agent's runc containers by status.
fn runtime_containers(agent: &TestAgent) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut by_status = BTreeMap::new();
    for c in crate::runc_list(&agent.dir.join("run/runc"))? {
        let s = c["status"].as_str().unwrap_or("unknown").to_string();
        *by_status.entry(s).or_insert(0) += 1;
    }
    Ok(by_status)
}

/// Mount points below the agent's directory.
pub fn agent_mounts(agent: &TestAgent) -> Vec<String> {
    let dir = agent.dir.path().to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// What of the pods is left while no pod is desired, one line each (mounts in
/// `baseline_mounts`, from [`agent_mounts`] before any pod, are not counted).
pub fn leftovers(agent: &TestAgent, baseline_mounts: &[String]) -> anyhow::Result<Vec<String>> {
    let mut left = Vec::new();
    for p in agent.pods()? {
        left.push(format!("pod {}", p.metadata.name.unwrap_or_default()));
    }
    for c in crate::runc_list(&agent.dir.join("run/runc"))? {
        left.push(format!("runc container {} ({})", c["id"], c["status"]));
    }
    for d in ["netns", "ipcns", "utsns"] {
        for e in read_names(&agent.dir.join("run").join(d)) {
            left.push(format!("pinned {d} {e}"));
        }
    }
    // The runtime's state (bundles, rootfs snapshots), pod directories and pod log directories.
    for d in ["root/sandboxes", "root/containers", "root/pods", "logs"] {
        for e in read_names(&agent.dir.join(d)) {
            left.push(format!("directory {d}/{e}"));
        }
    }
    for m in agent_mounts(agent) {
        if !baseline_mounts.contains(&m) {
            left.push(format!("mount {m}"));
        }
    }
    for dir in crate::LeakGuard::new(agent.tag()).pod_cgroups() {
        left.push(format!("pod cgroup {}", dir.display()));
    }
    for net in read_names(&agent.dir.join("root/cni/networks")) {
        for a in read_names(&agent.dir.join("root/cni/networks").join(&net)) {
            if a.parse::<std::net::IpAddr>().is_ok() {
                left.push(format!("address {a} allocated in {net}"));
            }
        }
    }
    let links = run_ok(
        &mut agent
            .node
            .command(&["ip", "-o", "link", "show", "type", "veth"]),
        Duration::from_secs(10),
    )?;
    for l in String::from_utf8_lossy(&links.stdout).lines() {
        let name = l.split(':').nth(1).unwrap_or_default().trim();
        if !name.starts_with("node0") {
            left.push(format!("veth {name}"));
        }
    }
    let rules = run_ok(
        &mut agent.node.command(&["iptables-save", "-t", "nat"]),
        Duration::from_secs(10),
    )?;
    for l in String::from_utf8_lossy(&rules.stdout).lines() {
        if l.starts_with(":KUBE-SVC-") || l.starts_with(":KUBE-SEP-") {
            left.push(format!("chain {l}"));
        }
    }
    let dir = agent.dir.path().to_string_lossy().into_owned();
    let agent_pid = agent.pid().unwrap_or_default().to_string();
    for p in read_names(Path::new("/proc")) {
        if !p.bytes().all(|b| b.is_ascii_digit()) || p == agent_pid {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&dir) && cmdline.contains("shim") {
            left.push(format!("process {p}: {cmdline}"));
        }
    }
    Ok(left)
}

fn read_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A process's resident set, KiB (0 when gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A process's user + system CPU time, ms (0 when gone).
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / hz
}

/// Fails with every failure of `report`.
pub fn check(report: &SoakReport) -> anyhow::Result<()> {
    let failures = report.failures();
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("the soak failed:\n  {}", failures.join("\n  "))
    }
}
