//! Container limits and spec hardening on the real kernel: each container's `oom_score_adj`
//! per QoS class (and its shim's), the swap cap of a memory-limited container, the pod cgroup's
//! CPU shares, CPU quota and memory limit (the sum of its containers', as upstream) and the
//! BestEffort tier's shares, the pod
//! pids limit (`podPidsLimit`) against a fork loop, and a pod with an unsafe sysctl rejected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::agent::with_config_agent;
use kubenode_integration::pods::{
    all_running, container_id, exec_sh, phase, pod_yaml, status, uid,
};
use kubenode_integration::{privileged, run_tests, TestAgent};

fn main() {
    run_tests(vec![
        privileged("oom_score_adj_per_qos_class_and_swap_cap", oom_and_swap),
        privileged("pod_cgroup_gets_the_sum_of_its_containers", pod_cgroup),
        privileged("pod_pids_limit_and_unsafe_sysctls", pids_and_sysctls),
    ])
}

fn read_i64(path: &Path) -> anyhow::Result<i64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text:?}", path.display()))
}

/// The lowest `oom_score_adj` this host lets a process of ours set: anything with
/// CAP_SYS_RESOURCE (bit 24 of the effective set), else no lower than its own value.
fn oom_floor(own: i64) -> anyhow::Result<i64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff in /proc/self/status")?;
    let caps = u64::from_str_radix(caps.trim(), 16).context("CapEff")?;
    Ok(if caps & (1 << 24) != 0 { -1000 } else { own })
}

fn mem_total() -> anyhow::Result<i64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    let kib: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .context("no MemTotal")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

/// The host pid of a running container's init, from the agent's runtime records.
fn container_pid(agent: &TestAgent, pod: &Pod, name: &str) -> anyhow::Result<i32> {
    let id = container_id(pod, name)
        .and_then(|s| s.rsplit("://").next())
        .context("no containerID")?;
    let pid = std::fs::read_to_string(
        agent
            .dir
            .join("root/runtime/containers")
            .join(id)
            .join("pid"),
    )
    .or_else(|_| {
        // The runtime's state may live under another directory name: find it.
        let hit = walk(&agent.dir.join("root"), 4)
            .into_iter()
            .find(|p| p.ends_with(Path::new(id).join("pid")))
            .context("no pid file")?;
        std::fs::read_to_string(hit).map_err(anyhow::Error::from)
    })
    .with_context(|| format!("pid file of container {id}"))?;
    Ok(pid.trim().parse()?)
}

fn walk(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) && depth > 0 {
            out.extend(walk(&p, depth - 1));
        } else {
            out.push(p);
        }
    }
    out
}

fn parent_pid(pid: i32) -> anyhow::Result<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    Ok(after.split_whitespace().nth(1).context("ppid")?.parse()?)
}

fn oom_and_swap() -> anyhow::Result<()> {
    with_config_agent("lo", None, |agent| {
        let own: i64 = read_i64(Path::new("/proc/self/oom_score_adj"))?;
        let shell = r#"["sh", "-c", "cat /proc/self/oom_score_adj; exec sleep 3600"]"#;
        let pods = [
            ("be", String::new()),
            (
                "bu",
                "    resources: {requests: {memory: 100Mi}, limits: {memory: 64Gi}}\n".to_string(),
            ),
            (
                "gu",
                "    resources: {limits: {cpu: 100m, memory: 64Mi}}\n".to_string(),
            ),
        ];
        for (name, resources) in &pods {
            let yaml = pod_yaml(
                name,
                &agent.image,
                &format!(
                    "  containers:\n  - name: c\n    image: IMAGE\n    command: {shell}\n{resources}"
                ),
            );
            agent.write_manifest(&format!("{name}.yaml"), &yaml)?;
        }
        // Upstream's Burstable formula, with this node's memory.
        let burstable = (1000 - 1000 * (100 << 20) / mem_total()?).clamp(3, 999);
        // Without CAP_SYS_RESOURCE the kernel refuses any value below the agent's own (which
        // it inherits from this process), so every container gets at least that floor.
        let floor = oom_floor(own)?;
        let want = [
            ("be", 1000.max(floor), "BestEffort"),
            ("bu", burstable.max(floor), "Burstable"),
            ("gu", (-997).max(floor), "Guaranteed"),
        ];
        for (name, adj, qos) in want {
            let pod_name = agent.pod_name(name);
            let pod = agent.wait_pod(&pod_name, Duration::from_secs(60), "Running", all_running)?;
            ensure!(
                status(&pod).qos_class.as_deref() == Some(qos),
                "{name}: {:?}",
                pod.status
            );
            let log = agent.kubenode_ok(&["logs", &pod_name])?;
            ensure!(
                log.trim() == adj.to_string(),
                "{qos} container's oom_score_adj: want {adj}, read {log:?}"
            );
            let (code, out) = exec_sh(agent, &pod_name, "c", "cat /proc/self/oom_score_adj")?;
            ensure!(
                code == 0 && out.trim() == adj.to_string(),
                "{qos}: an exec'd process's oom_score_adj: want {adj}, read {out:?}"
            );
            // The shim never sits below its container: it would shelter nothing, and any
            // process it spawns starts at its value.
            let pid = container_pid(agent, &pod, "c")?;
            let shim = parent_pid(pid)?;
            let shim_adj = read_i64(Path::new(&format!("/proc/{shim}/oom_score_adj")))?;
            ensure!(
                shim_adj >= adj,
                "{qos}: shim {shim} at {shim_adj}, below its container's {adj}"
            );
            if name == "gu" {
                // A memory limit caps memory + swap at the same value: no swap.
                let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
                let rel = cg
                    .lines()
                    .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
                    .context("no memory cgroup")?;
                let dir = Path::new("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/'));
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    ensure!(
                        read_i64(&memsw)? == 64 << 20,
                        "memsw limit {} of a 64Mi container",
                        read_i64(&memsw)?
                    );
                } else {
                    eprintln!(
                        "no memory.memsw.limit_in_bytes on this kernel: swap cap not checked"
                    );
                }
            }
        }
        // A host that refuses pause's -998 is named once, at start, however many pods asked.
        let warned = agent
            .log()
            .matches("refuses an oom_score_adj below the agent's own")
            .count();
        let want_warned = usize::from(floor > -998);
        ensure!(
            warned == want_warned,
            "the oom_score_adj floor was logged {warned} times, want {want_warned}"
        );
        Ok(())
    })
}

fn pids_and_sysctls() -> anyhow::Result<()> {
    let config = "podPidsLimit: 16\n";
    with_config_agent("lp", Some(config), |agent| {
        // 40 background sleeps in a pod allowed 16 pids: the forks past the limit fail. They
        // are forked by a subshell, which busybox ends at the first failed fork; the
        // container's own shell goes on, so the pod stays Running whatever the timing.
        let fork = pod_yaml(
            "forker",
            &agent.image,
            r#"  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "(for i in $(seq 40); do sleep 3600 & done; echo done); exec sleep 3600"]
"#,
        );
        agent.write_manifest("forker.yaml", &fork)?;
        let bad = pod_yaml(
            "unsafe",
            &agent.image,
            r#"  securityContext:
    sysctls: [{name: kernel.msgmax, value: "65536"}]
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
"#,
        );
        agent.write_manifest("unsafe.yaml", &bad)?;
        let safe = pod_yaml(
            "safe",
            &agent.image,
            r#"  securityContext:
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "80"}]
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
"#,
        );
        agent.write_manifest("safe.yaml", &safe)?;

        let name = agent.pod_name("forker");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let dir =
            Path::new("/sys/fs/cgroup/pids/kubepods/besteffort").join(format!("pod{}", uid(&pod)));
        // busybox sh gives up at the first fork that fails ("can't fork"), so the log shows
        // that line rather than "done".
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut log = String::new();
        let forbidden =
            |l: &str| l.contains("can't fork") || l.contains("Resource temporarily unavailable");
        while std::time::Instant::now() < deadline {
            log = agent.kubenode_ok(&["logs", &name])?;
            if forbidden(&log) || log.contains("done") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            forbidden(&log),
            "40 forks in a pod limited to 16 pids all succeeded: {log}"
        );
        let max = std::fs::read_to_string(dir.join("pids.max"))
            .with_context(|| format!("{}", dir.display()))?;
        ensure!(max.trim() == "16", "pids.max of the pod cgroup: {max:?}");
        let current = read_i64(&dir.join("pids.current"))?;
        ensure!(current <= 16, "{current} pids in a pod limited to 16");

        let name = agent.pod_name("unsafe");
        let pod = agent.wait_pod(&name, Duration::from_secs(30), "rejected", |p| {
            phase(p) == "Failed"
        })?;
        ensure!(
            status(&pod).reason.as_deref() == Some("SysctlForbidden"),
            "reason: {:?}",
            pod.status
        );
        ensure!(
            status(&pod).message.as_deref()
                == Some("Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"),
            "message: {:?}",
            status(&pod).message
        );
        let name = agent.pod_name("safe");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        Ok(())
    })
}

/// What a pod cgroup should hold: CPU shares (v2: the weight converted from them), the CFS
/// quota over the 100 ms period, the memory limit; `None` is no limit.
struct PodCgroupWant {
    shares: u64,
    quota: Option<i64>,
    memory: Option<i64>,
}

fn read_trimmed(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

/// Checks the pod cgroup `rel` (e.g. `kubepods/burstable/pod<uid>`) in every hierarchy that has
/// the cpu and memory controllers, on cgroup v1 or v2.
fn check_pod_cgroup(rel: &str, want: &PodCgroupWant) -> anyhow::Result<()> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(rel);
        let weight = 1 + (want.shares - 2) * 9999 / 262_142;
        ensure!(
            read_trimmed(&dir.join("cpu.weight"))? == weight.to_string(),
            "{rel}: cpu.weight, want {weight} (shares {})",
            want.shares
        );
        let max = want
            .quota
            .map_or_else(|| "max".to_string(), |q| q.to_string());
        let cpu_max = read_trimmed(&dir.join("cpu.max"))?;
        ensure!(
            cpu_max == format!("{max} 100000"),
            "{rel}: cpu.max {cpu_max:?}"
        );
        let memory = read_trimmed(&dir.join("memory.max"))?;
        let want_memory = want
            .memory
            .map_or_else(|| "max".to_string(), |m| m.to_string());
        ensure!(
            memory == want_memory,
            "{rel}: memory.max {memory:?}, want {want_memory}"
        );
        return Ok(());
    }
    let cpu = root.join("cpu").join(rel);
    let shares = read_i64(&cpu.join("cpu.shares"))?;
    ensure!(
        shares == want.shares as i64,
        "{rel}: cpu.shares {shares}, want {}",
        want.shares
    );
    let quota = read_i64(&cpu.join("cpu.cfs_quota_us"))?;
    ensure!(
        quota == want.quota.unwrap_or(-1),
        "{rel}: cpu.cfs_quota_us {quota}, want {:?}",
        want.quota
    );
    let period = read_i64(&cpu.join("cpu.cfs_period_us"))?;
    ensure!(period == 100_000, "{rel}: cpu.cfs_period_us {period}");
    let memory = read_i64(&root.join("memory").join(rel).join("memory.limit_in_bytes"))?;
    match want.memory {
        Some(m) => ensure!(
            memory == m,
            "{rel}: memory.limit_in_bytes {memory}, want {m}"
        ),
        // Unlimited reads as the largest page-aligned count the kernel keeps.
        None => ensure!(
            memory >= 1 << 62,
            "{rel}: memory.limit_in_bytes {memory}, want unlimited"
        ),
    }
    Ok(())
}

fn pod_cgroup() -> anyhow::Result<()> {
    with_config_agent("lc", None, |agent| {
        const MI: i64 = 1 << 20;
        let sleep = r#"["sleep", "3600"]"#;
        let pods = [
            // Two limited containers: the pod cgroup holds the sums.
            (
                "two",
                format!(
                    "  containers:
  - name: a
    image: IMAGE
    command: {sleep}
    resources: {{requests: {{cpu: 100m, memory: 32Mi}}, limits: {{cpu: 200m, memory: 64Mi}}}}
  - name: b
    image: IMAGE
    command: {sleep}
    resources: {{requests: {{cpu: 50m, memory: 16Mi}}, limits: {{cpu: 100m, memory: 32Mi}}}}
"
                ),
            ),
            // One container without a memory limit: no memory limit for the pod, CPU still.
            (
                "half",
                format!(
                    "  containers:
  - name: a
    image: IMAGE
    command: {sleep}
    resources: {{limits: {{cpu: 100m, memory: 32Mi}}}}
  - name: b
    image: IMAGE
    command: {sleep}
    resources: {{limits: {{cpu: 100m}}}}
"
                ),
            ),
            // Guaranteed, with an init container larger than the app: the pod gets the larger.
            (
                "init",
                format!(
                    "  initContainers:
  - name: i
    image: IMAGE
    command: [\"true\"]
    resources: {{limits: {{cpu: 500m, memory: 128Mi}}}}
  containers:
  - name: a
    image: IMAGE
    command: {sleep}
    resources: {{limits: {{cpu: 100m, memory: 64Mi}}}}
"
                ),
            ),
            (
                "be",
                format!("  containers:\n  - name: a\n    image: IMAGE\n    command: {sleep}\n"),
            ),
        ];
        for (name, body) in &pods {
            agent.write_manifest(&format!("{name}.yaml"), &pod_yaml(name, &agent.image, body))?;
        }
        let want = [
            (
                "two",
                "kubepods/burstable",
                // requests 150m: 150 × 1024 / 1000
                PodCgroupWant {
                    shares: 153,
                    quota: Some(30_000),
                    memory: Some(96 * MI),
                },
            ),
            (
                "half",
                "kubepods/burstable",
                // the requests default to the limits: 200m
                PodCgroupWant {
                    shares: 204,
                    quota: Some(20_000),
                    memory: None,
                },
            ),
            (
                "init",
                "kubepods",
                PodCgroupWant {
                    shares: 512,
                    quota: Some(50_000),
                    memory: Some(128 * MI),
                },
            ),
            (
                "be",
                "kubepods/besteffort",
                PodCgroupWant {
                    shares: 2,
                    quota: None,
                    memory: None,
                },
            ),
        ];
        for (name, parent, want) in &want {
            let pod_name = agent.pod_name(name);
            let pod = agent.wait_pod(&pod_name, Duration::from_secs(60), "Running", all_running)?;
            let rel = format!("{parent}/pod{}", uid(&pod));
            check_pod_cgroup(&rel, want).with_context(|| format!("pod {name}"))?;
            // The container runs inside the pod cgroup, so the pod's limits bind it too.
            let pid = container_pid(agent, &pod, "a")?;
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
            let inside = cg.lines().any(|l| {
                let (controllers, path) = l
                    .split_once(':')
                    .and_then(|(_, r)| r.split_once(':'))
                    .unwrap_or_default();
                (controllers.is_empty() || controllers.split(',').any(|c| c == "memory"))
                    && path.starts_with(&format!("/{rel}/"))
            });
            ensure!(inside, "{name}: container {pid} is not below /{rel}: {cg}");
        }

        // The BestEffort tier weighs as little as the kernel allows (upstream's QoS cgroup
        // manager); the Burstable tier's shares follow the node's Burstable pods, which other
        // agents on this machine rewrite, so only the unit tests check them.
        let root = Path::new("/sys/fs/cgroup");
        let (file, want) = if root.join("cgroup.controllers").exists() {
            (root.join("kubepods/besteffort/cpu.weight"), 1)
        } else {
            (root.join("cpu/kubepods/besteffort/cpu.shares"), 2)
        };
        let got = read_i64(&file)?;
        ensure!(got == want, "{}: {got}, want {want}", file.display());

        // A container that outgrows its limit: the pod cgroup (the same limit, plus pause)
        // may be the one that runs out, and the kill is still the container's OOMKilled.
        let hog = pod_yaml(
            "hog",
            &agent.image,
            r#"  restartPolicy: Never
  containers:
  - name: a
    image: IMAGE
    command: ["sh", "-c", "a=$(head -c 100000000 /dev/zero | tr '\\0' x); echo ${#a}"]
    resources: {limits: {cpu: 100m, memory: 16Mi}}
"#,
        );
        agent.write_manifest("hog.yaml", &hog)?;
        let name = agent.pod_name("hog");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Failed", |p| {
            phase(p) == "Failed"
        })?;
        let reason = status(&pod)
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.reason.clone());
        ensure!(
            reason.as_deref() == Some("OOMKilled"),
            "hog: {:?}",
            status(&pod).container_statuses
        );
        Ok(())
    })
}
