//! `ephemeral-storage` limits: a container writing past its own limit into its own filesystem
//! (its writable layer, no volume) and a pod whose containers and disk emptyDir together pass
//! the sum of the containers' limits are evicted with upstream's messages; a pod within its
//! limits keeps running.

use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::TestAgent;

use super::{all_running, phase, pod_yaml, remove_and_check, state, status, uid, with_agent};

const CONTAINER_MESSAGE: &str =
    "Container writer exceeded its local ephemeral storage limit \"2Mi\". ";
const POD_MESSAGE: &str =
    "Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. ";

pub(crate) fn ephemeral_storage_limits() -> anyhow::Result<()> {
    with_agent("ve", |agent| {
        // 4 MiB into the writer's own filesystem, over its 2Mi limit. The idle container's
        // 8Mi keeps the pod within its 10Mi total: upstream checks the pod before the
        // containers, so a writer alone in its pod would get the pod message.
        let over = pod_yaml(
            "over",
            &agent.image,
            r#"  restartPolicy: Always
  containers:
  - name: writer
    image: IMAGE
    command: ["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=4; sleep 3600"]
    resources: {limits: {ephemeral-storage: 2Mi}}
  - name: idle
    image: IMAGE
    command: ["sleep", "3600"]
    resources: {limits: {ephemeral-storage: 8Mi}}
"#,
        );
        // Each container writes 1 MiB into its own filesystem (within its 2Mi), one also
        // 3 MiB into a disk emptyDir: 5 MiB for the pod, over the 4Mi total of its containers.
        let total = pod_yaml(
            "total",
            &agent.image,
            r#"  restartPolicy: Always
  volumes:
  - {name: scratch, emptyDir: {}}
  containers:
  - name: a
    image: IMAGE
    command: ["sh", "-c", "dd if=/dev/zero of=/own bs=1M count=1; dd if=/dev/zero of=/scratch/big bs=1M count=3; sleep 3600"]
    resources: {limits: {ephemeral-storage: 2Mi}}
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  - name: b
    image: IMAGE
    command: ["sh", "-c", "dd if=/dev/zero of=/own bs=1M count=1; sleep 3600"]
    resources: {limits: {ephemeral-storage: 2Mi}}
"#,
        );
        // 1 MiB under an 8Mi limit.
        let within = pod_yaml(
            "within",
            &agent.image,
            r#"  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "dd if=/dev/zero of=/own bs=1M count=1 && echo written; sleep 3600"]
    resources: {limits: {ephemeral-storage: 8Mi}}
"#,
        );
        agent.write_manifest("within.yaml", &within)?;
        agent.write_manifest("over.yaml", &over)?;
        agent.write_manifest("total.yaml", &total)?;

        let over_pod = evicted(agent, "over", CONTAINER_MESSAGE, &["writer", "idle"])?;
        let total_pod = evicted(agent, "total", POD_MESSAGE, &["a", "b"])?;

        let name = agent.pod_name("within");
        agent.wait_pod(&name, Duration::from_secs(40), "running", all_running)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !agent
            .kubenode_ok(&["logs", &name, "-c", "c"])?
            .contains("written")
        {
            ensure!(std::time::Instant::now() < deadline, "within never wrote");
            std::thread::sleep(Duration::from_millis(500));
        }
        // More than one measuring period (10 s) after its write: still running.
        std::thread::sleep(Duration::from_secs(12));
        let p = agent.pod(&name)?.context("within gone")?;
        ensure!(
            phase(&p) == "Running" && status(&p).reason.is_none(),
            "the pod within its limits: {:?} {:?}",
            phase(&p),
            status(&p).message
        );
        ensure!(
            state(&p, "c").running.is_some(),
            "the container within its limit was stopped"
        );

        remove_and_check(agent, "over.yaml", &agent.pod_name("over"), &uid(&over_pod))?;
        remove_and_check(
            agent,
            "total.yaml",
            &agent.pod_name("total"),
            &uid(&total_pod),
        )?;
        remove_and_check(agent, "within.yaml", &name, &uid(&p))
    })
}

/// Waits for pod `short` to be `Failed`/`Evicted` with `message`, its `containers` killed and
/// not restarted, and a warning `Evicted` event with the message.
fn evicted(
    agent: &TestAgent,
    short: &str,
    message: &str,
    containers: &[&str],
) -> anyhow::Result<Pod> {
    let name = agent.pod_name(short);
    // Usage is measured every 10 s (upstream's monitoring period): 60 s only bounds the wait.
    let p = agent.wait_pod(&name, Duration::from_secs(60), "Failed/Evicted", |p| {
        phase(p) == "Failed" && status(p).reason.as_deref() == Some("Evicted")
    })?;
    ensure!(
        status(&p).message.as_deref() == Some(message),
        "{short}: message {:?}",
        status(&p).message
    );
    let p = agent.wait_pod(&name, Duration::from_secs(20), "containers killed", |p| {
        containers.iter().all(|c| state(p, c).terminated.is_some())
    })?;
    let events = agent.events()?;
    ensure!(
        events.iter().any(|e| e.reason.as_deref() == Some("Evicted")
            && e.type_.as_deref() == Some("Warning")
            && e.message.as_deref() == Some(message)
            && e.involved_object.name.as_deref().is_some_and(|n| n == name)),
        "{short}: no Evicted warning event with the message"
    );
    std::thread::sleep(Duration::from_secs(2));
    let later = agent.pod(&name)?.context("pod gone")?;
    for c in containers {
        ensure!(
            state(&later, c).running.is_none(),
            "{short}: {c} restarted after eviction"
        );
    }
    Ok(p)
}

/// An evicted pod stays evicted across an agent restart, even one that finds the pod's pause
/// dead (its sandbox would be recreated with new containers, whose storage is not over the
/// limit yet): the restarted agent keeps it `Failed`/`Evicted` with the same message and
/// starts nothing, whatever its `restartPolicy: Always`.
pub(crate) fn eviction_survives_restart() -> anyhow::Result<()> {
    with_agent("vr", |agent| {
        let over = pod_yaml(
            "over",
            &agent.image,
            r#"  restartPolicy: Always
  containers:
  - name: writer
    image: IMAGE
    command: ["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=4; sleep 3600"]
    resources: {limits: {ephemeral-storage: 2Mi}}
"#,
        );
        agent.write_manifest("over.yaml", &over)?;
        let name = agent.pod_name("over");
        // Usage is measured every 10 s (upstream's monitoring period): 60 s only bounds the wait.
        let before = agent.wait_pod(&name, Duration::from_secs(60), "Failed/Evicted", |p| {
            phase(p) == "Failed"
                && status(p).reason.as_deref() == Some("Evicted")
                && state(p, "writer").terminated.is_some()
        })?;
        let message = status(&before).message.clone();
        let id = container_id(&before)?;

        // The agent dies, and the pod's pause with it (as a reboot would have it).
        agent.kill();
        let root = agent.dir.join("run/runc");
        let running: Vec<String> = kubenode_integration::runc_list(&root)?
            .iter()
            .filter(|c| c["status"] == "running")
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect();
        ensure!(running.len() == 1, "running besides the pause: {running:?}");
        kubenode_integration::run_ok(
            std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["kill", &running[0], "KILL"]),
            Duration::from_secs(10),
        )?;
        agent.spawn()?;
        let after = agent.wait_pod(
            &name,
            Duration::from_secs(60),
            "Failed/Evicted after the restart",
            |p| {
                phase(p) == "Failed"
                    && status(p).reason.as_deref() == Some("Evicted")
                    && state(p, "writer").terminated.is_some()
            },
        )?;
        ensure!(
            status(&after).message == message,
            "message {:?}, was {message:?}",
            status(&after).message
        );
        ensure!(
            container_id(&after)? == id,
            "the writer was recreated: {:?}",
            after.status
        );
        // Past one measuring period of the restarted agent: nothing came back.
        std::thread::sleep(Duration::from_secs(12));
        let later = agent.pod(&name)?.context("pod gone")?;
        ensure!(
            phase(&later) == "Failed" && container_id(&later)? == id,
            "the pod came back: {:?}",
            later.status
        );
        remove_and_check(agent, "over.yaml", &name, &uid(&before))
    })
}

fn container_id(p: &Pod) -> anyhow::Result<String> {
    status(p)
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == "writer")
        .and_then(|c| c.container_id.clone())
        .context("no container id for writer")
}
