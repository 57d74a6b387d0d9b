//! User namespaces and `/proc` masking on the real kernel with the host's runc: a pod with
//! `hostUsers: false` is rejected at admission (phase `Failed`, reason
//! `UserNamespacesNotSupported`) with a message naming the runtime and what it lacks (this
//! machine's runc 1.1 makes no idmapped mounts), and gets no container; a container with
//! `procMount: Unmasked` in a pod sharing the host's user namespace is refused by validation
//! with upstream's message; and a `procMount: Default` container sees `/proc/timer_list` masked and
//! `/proc/sys` read-only.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use kubenode_integration::pods::{all_running, exec_sh, phase, pod_yaml, status, with_agent};
use kubenode_integration::{privileged, run_tests};

fn main() {
    run_tests(vec![privileged(
        "host_users_false_rejected_and_proc_mount",
        userns_and_proc_mount,
    )])
}

/// The message the agent must give on this host, from the host's own runc: its path, and
/// `runc version X` (the first line of `runc --version`); runc makes idmapped mounts from 1.2.
fn expected_message() -> anyhow::Result<String> {
    let runc = kubenode_runtime::oci::resolve_runtime(Path::new("runc")).context("no runc")?;
    let out = std::process::Command::new(&runc)
        .arg("--version")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("runc version "))
        .with_context(|| format!("runc --version: {text:?}"))?
        .trim()
        .to_string();
    let mut nums = version.split(['.', '+', '-']).map(|n| n.parse::<u32>());
    let (major, minor) = (nums.next(), nums.next());
    let idmap = match (major, minor) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (1, 2),
        _ => anyhow::bail!("runc version {version:?} does not parse"),
    };
    Ok(if idmap {
        // A runc that can: kubenode itself is what is missing.
        format!(
            "Pod was rejected: can't set `spec.hostUsers: false`: kubenode does not implement \
             user namespaces yet ({} is runc {version} and makes idmapped mounts)",
            runc.display()
        )
    } else {
        format!(
            "Pod was rejected: can't set `spec.hostUsers: false`, runtime does not support user \
             namespaces: {} is runc {version}; user namespaces need an OCI runtime with \
             idmapped mounts (runc >= 1.2 or crun >= 1.9)",
            runc.display()
        )
    })
}

fn userns_and_proc_mount() -> anyhow::Result<()> {
    let want = expected_message()?;
    with_agent("uns", |agent| {
        let userns = pod_yaml(
            "userns",
            &agent.image,
            r#"  hostUsers: false
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
"#,
        );
        agent.write_manifest("userns.yaml", &userns)?;
        let unmasked = pod_yaml(
            "unmasked",
            &agent.image,
            r#"  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    securityContext: {procMount: Unmasked}
"#,
        );
        agent.write_manifest("unmasked.yaml", &unmasked)?;
        let masked = pod_yaml(
            "masked",
            &agent.image,
            r#"  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    securityContext: {procMount: Default}
"#,
        );
        agent.write_manifest("masked.yaml", &masked)?;

        // hostUsers: false → rejected with the reason and what this node lacks.
        let name = agent.pod_name("userns");
        let pod = agent.wait_pod(&name, Duration::from_secs(30), "rejected", |p| {
            phase(p) == "Failed"
        })?;
        ensure!(
            status(&pod).reason.as_deref() == Some("UserNamespacesNotSupported"),
            "reason: {:?}",
            pod.status
        );
        ensure!(
            status(&pod).message.as_deref() == Some(want.as_str()),
            "message: {:?}\n   want: {want:?}",
            status(&pod).message
        );
        ensure!(
            status(&pod)
                .container_statuses
                .as_deref()
                .unwrap_or_default()
                .iter()
                .all(|c| c.container_id.is_none()),
            "a rejected pod got a container: {:?}",
            pod.status
        );

        // procMount: Unmasked with the host's user namespace → refused by validation.
        let field = "spec.containers[0].securityContext.procMount: Invalid value: \"Unmasked\": \
                     `hostUsers` must be false to use `Unmasked`";
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = agent.events()?.into_iter().any(|e| {
                let msg = e.message.unwrap_or_default();
                msg.contains("unmasked.yaml") && msg.contains(field)
            });
            if found {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no event names unmasked.yaml and {field:?}: {:?}",
                agent.events()?
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            agent.pod(&agent.pod_name("unmasked"))?.is_none(),
            "the refused pod exists"
        );

        // procMount: Default → the masked and read-only paths. /proc/timer_list is masked
        // (bind-mounted /dev/null); the host's is not empty, so the check can fail.
        let host = std::fs::read("/proc/timer_list").context("the host's /proc/timer_list")?;
        ensure!(!host.is_empty(), "the host's /proc/timer_list is empty");
        let name = agent.pod_name("masked");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let (code, out) = exec_sh(
            agent,
            &name,
            "c",
            "wc -c < /proc/timer_list; grep ' /proc/sys ' /proc/mounts",
        )?;
        ensure!(code == 0, "exec: {code}: {out}");
        let mut lines = out.lines();
        ensure!(
            lines.next().map(str::trim) == Some("0"),
            "/proc/timer_list is not masked: {out}"
        );
        ensure!(
            lines.next().is_some_and(|l| l.contains(" ro,")),
            "/proc/sys is not read-only: {out}"
        );
        Ok(())
    })
}
