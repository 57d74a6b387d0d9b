//! Resource admission on the real host, as upstream's kubelet (`NodeResourcesFit` through
//! `GeneralPredicates`): a pod whose requests do not fit the node's allocatable beside the
//! running pods is Failed with `OutOf<resource>` and upstream's message, with a Warning event,
//! while the pods that fit keep running. Allocatable is measured here independently of the
//! agent: the online CPUs, `MemTotal` less the 100Mi eviction threshold and the huge pages, and
//! the pre-allocated 2Mi huge pages. An extended resource the node does not have is dropped
//! before the check, as upstream's kubelet does (`removeMissingExtendedResources`), so such a
//! pod runs. The downward API gives a container without limits the same allocatable.

use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::agent::with_config_agent;
use kubenode_integration::pods::{all_running, container, exec_sh, phase, pod_yaml, status};
use kubenode_integration::{privileged, run_tests, TestAgent};

fn main() {
    run_tests(vec![privileged(
        "requests_beyond_allocatable_are_rejected_out_of_resource",
        out_of_resources,
    )])
}

fn online_cpus() -> anyhow::Result<i64> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    let mut n = 0;
    for part in list.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<i64>()? - a.parse::<i64>()? + 1,
            None => 1,
        };
    }
    Ok(n)
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

/// Bytes of pre-allocated huge pages of each size.
fn huge_pages() -> anyhow::Result<Vec<(String, i64)>> {
    let mut sizes = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Ok(sizes);
    };
    for entry in dir {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kib: i64 = name
            .trim_start_matches("hugepages-")
            .trim_end_matches("kB")
            .parse()?;
        let pages: i64 = std::fs::read_to_string(entry.path().join("nr_hugepages"))?
            .trim()
            .parse()?;
        sizes.push((name, kib * 1024 * pages));
    }
    Ok(sizes)
}

fn pod_with(agent: &TestAgent, name: &str, resources: &str) -> anyhow::Result<String> {
    // The limits a container does not set are the node's allocatable in the downward API.
    let env = "    env:\n    - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}\n    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}\n";
    let body = format!(
        "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n{env}    resources:\n{resources}"
    );
    agent.write_manifest(
        &format!("{name}.yaml"),
        &pod_yaml(name, &agent.image, &body),
    )?;
    Ok(agent.pod_name(name))
}

/// Waits for `name` to be rejected with `reason`, checks the message (after upstream's
/// "Pod was rejected: " prefix), that nothing ran, and the Warning event.
fn expect_rejected(
    agent: &TestAgent,
    name: &str,
    reason: &str,
    message: &str,
) -> anyhow::Result<Pod> {
    let pod = agent.wait_pod(name, Duration::from_secs(30), "rejected", |p| {
        phase(p) == "Failed"
    })?;
    ensure!(
        status(&pod).reason.as_deref() == Some(reason),
        "{name}: reason, want {reason}: {:?}",
        pod.status
    );
    let got = status(&pod).message.clone().unwrap_or_default();
    ensure!(
        got == format!("Pod was rejected: {message}"),
        "{name}: message {got:?}, want {message:?}"
    );
    ensure!(
        container(&pod, "c").is_none(),
        "{name}: the rejected pod ran"
    );
    let events = agent.events()?;
    ensure!(
        events.iter().any(|e| e.reason.as_deref() == Some(reason)
            && e.type_.as_deref() == Some("Warning")
            && e.involved_object.name.as_deref() == Some(name)
            && e.message.as_deref() == Some(message)),
        "no {reason} Warning event for {name}: {:?}",
        events
            .iter()
            .map(|e| (&e.reason, &e.message))
            .collect::<Vec<_>>()
    );
    Ok(pod)
}

fn out_of_resources() -> anyhow::Result<()> {
    with_config_agent("rs", None, |agent| {
        let cpus = online_cpus()?;
        let memory = mem_total()?;
        let huge = huge_pages()?;
        let huge_total: i64 = huge.iter().map(|(_, b)| b).sum();
        let huge_2mi = huge
            .iter()
            .find(|(n, _)| n == "hugepages-2048kB")
            .map(|(_, b)| *b)
            .context("this kernel has no 2Mi huge pages")?;

        let small = pod_with(
            agent,
            "small",
            "      requests: {cpu: 100m, memory: 16Mi}\n",
        )?;
        agent.wait_pod(&small, Duration::from_secs(60), "Running", all_running)?;
        let allocatable_memory = memory - (100 << 20) - huge_total;
        let (code, out) = exec_sh(agent, &small, "c", "echo $CPU $MEM")?;
        ensure!(
            code == 0 && out.trim() == format!("{} {allocatable_memory}", cpus * 1000),
            "downward API limits without a limit set: {out:?} ({code}), want the allocatable {} {allocatable_memory}",
            cpus * 1000
        );

        // A thousand CPUs on this machine.
        let big = pod_with(agent, "big-cpu", "      requests: {cpu: \"1000\"}\n")?;
        expect_rejected(
            agent,
            &big,
            "OutOfcpu",
            &format!(
                "Node didn't have enough resource: cpu, requested: 1000000, used: 100, capacity: {}",
                cpus * 1000
            ),
        )?;

        // All of MemTotal: more than allocatable, which keeps the eviction threshold back.
        let mem = pod_with(
            agent,
            "big-memory",
            &format!("      requests: {{memory: \"{memory}\"}}\n"),
        )?;
        expect_rejected(
            agent,
            &mem,
            "OutOfmemory",
            &format!(
                "Node didn't have enough resource: memory, requested: {memory}, used: {}, capacity: {}",
                16 << 20,
                allocatable_memory
            ),
        )?;

        // One more 2Mi huge page than the host has pre-allocated (it usually has none).
        let want = huge_2mi + (2 << 20);
        let pages = pod_with(
            agent,
            "huge-pages",
            &format!(
                "      requests: {{hugepages-2Mi: \"{want}\", memory: 16Mi}}\n      limits: {{hugepages-2Mi: \"{want}\", memory: 16Mi}}\n"
            ),
        )?;
        expect_rejected(
            agent,
            &pages,
            "OutOfhugepages-2Mi",
            &format!(
                "Node didn't have enough resource: hugepages-2Mi, requested: {want}, used: 0, capacity: {huge_2mi}"
            ),
        )?;

        // An extended resource no device plugin offers here: upstream's kubelet drops it
        // before the fit and admits the pod (the scheduler is what keeps such pods away).
        let widget = pod_with(
            agent,
            "widget",
            "      requests: {example.com/widget: \"1\"}\n      limits: {example.com/widget: \"1\"}\n",
        )?;
        agent.wait_pod(&widget, Duration::from_secs(60), "Running", all_running)?;

        // The pod that fitted was not disturbed.
        let pod = agent.pod(&small)?.context("the small pod is gone")?;
        ensure!(
            all_running(&pod) && container(&pod, "c").is_some_and(|c| c.restart_count == 0),
            "small pod disturbed: {:?}",
            pod.status
        );
        Ok(())
    })
}
