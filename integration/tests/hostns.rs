//! A pod's PID and IPC namespaces end to end: `hostPID`, `hostIPC` and `shareProcessNamespace`
//! against a real agent and runc, compared with the test process's own (host) namespaces.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::pods::{
    all_running, container, container_id, exec_sh, pod_yaml, restarts, with_agent,
};
use kubenode_integration::{privileged, run_tests, TestAgent};

fn main() {
    run_tests(vec![
        privileged(
            "host_pid_and_host_ipc_pods_share_the_hosts_namespaces",
            host_namespaces,
        ),
        privileged(
            "shared_process_namespace_one_container_signals_another",
            shared_process_namespace,
        ),
    ])
}

/// The namespace link `kind` (`pid`, `ipc`) of this test process: the host's.
fn host_ns(kind: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_link(format!("/proc/self/ns/{kind}"))?
        .to_string_lossy()
        .into_owned())
}

/// The namespace link `kind` of a process exec'd in container `c` of pod `pod`.
fn pod_ns(agent: &TestAgent, pod: &str, c: &str, kind: &str) -> anyhow::Result<String> {
    Ok(agent
        .kubenode_ok(&[
            "exec",
            pod,
            "-c",
            c,
            "--",
            "readlink",
            &format!("/proc/self/ns/{kind}"),
        ])?
        .trim()
        .to_string())
}

/// The command line of PID 1 as container `c` of `pod` sees it (NULs as spaces).
fn pid1(agent: &TestAgent, pod: &str, c: &str) -> anyhow::Result<String> {
    let (code, out) = exec_sh(agent, pod, c, "tr '\\0' ' ' < /proc/1/cmdline")?;
    ensure!(code == 0, "reading /proc/1/cmdline in {c}: {out}");
    Ok(out.trim().to_string())
}

/// A shell snippet printing the PIDs whose command line is exactly `cmdline` (words joined by
/// spaces): it never matches the shell running it, whose command line holds the snippet.
fn pids_of(cmdline: &str) -> String {
    format!(
        "for p in /proc/[0-9]*; do [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = \"{cmdline} \" ] && echo ${{p#/proc/}}; done; true"
    )
}

fn host_namespaces() -> anyhow::Result<()> {
    with_agent("hn", |agent| {
        let (host_pid, host_ipc) = (host_ns("pid")?, host_ns("ipc")?);
        // A file in the host's /dev/shm: a hostIPC pod sees it, another pod does not.
        let marker = format!("/dev/shm/kubenode-test-{}", agent.node_name());
        std::fs::write(&marker, b"host")?;
        let result = check_host_namespaces(agent, &host_pid, &host_ipc, &marker);
        let shm_kept = std::path::Path::new(&marker).exists();
        let _ = std::fs::remove_file(&marker);
        result?;
        ensure!(
            shm_kept,
            "the host's /dev/shm lost {marker} when the hostIPC pod went away"
        );
        Ok(())
    })
}

fn check_host_namespaces(
    agent: &mut TestAgent,
    host_pid: &str,
    host_ipc: &str,
    marker: &str,
) -> anyhow::Result<()> {
    let sleep = "    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
    let hpid = format!("  hostPID: true\n  containers:\n  - name: c\n{sleep}");
    let hipc = format!("  hostIPC: true\n  containers:\n  - name: c\n{sleep}");
    let plain = format!("  containers:\n  - name: a\n{sleep}  - name: b\n{sleep}");
    for (file, body) in [("hpid", &hpid), ("hipc", &hipc), ("plain", &plain)] {
        agent.write_manifest(&format!("{file}.yaml"), &pod_yaml(file, &agent.image, body))?;
    }
    let (hpid, hipc, plain) = (
        agent.pod_name("hpid"),
        agent.pod_name("hipc"),
        agent.pod_name("plain"),
    );
    for name in [&hpid, &hipc, &plain] {
        agent.wait_pod(name, Duration::from_secs(90), "Running", all_running)?;
    }

    // hostPID: the host's PID namespace, so the host's PID 1; the pod's own IPC namespace.
    let seen = pod_ns(agent, &hpid, "c", "pid")?;
    ensure!(
        seen == host_pid,
        "hostPID pod in pid namespace {seen}, host {host_pid}"
    );
    let (code, comm) = exec_sh(agent, &hpid, "c", "cat /proc/1/comm")?;
    let host_comm = std::fs::read_to_string("/proc/1/comm")?;
    ensure!(
        code == 0 && comm.trim() == host_comm.trim(),
        "hostPID pod sees PID 1 as {comm:?}, the host's is {host_comm:?}"
    );
    let ipc = pod_ns(agent, &hpid, "c", "ipc")?;
    ensure!(ipc != host_ipc, "hostPID pod got the host's IPC namespace");

    // hostIPC: the host's IPC namespace and /dev/shm; the pod's own PID namespace.
    let ipc = pod_ns(agent, &hipc, "c", "ipc")?;
    ensure!(
        ipc == host_ipc,
        "hostIPC pod in ipc namespace {ipc}, host {host_ipc}"
    );
    let (code, out) = exec_sh(agent, &hipc, "c", &format!("cat {marker}"))?;
    ensure!(
        code == 0 && out.trim() == "host",
        "hostIPC pod does not see the host's /dev/shm: {out}"
    );
    let pid = pod_ns(agent, &hipc, "c", "pid")?;
    ensure!(pid != host_pid, "hostIPC pod got the host's PID namespace");

    // A plain pod: each container its own PID namespace, where it is PID 1; the pod's IPC
    // namespace (shared by its containers) and its own /dev/shm.
    let (a, b) = (
        pod_ns(agent, &plain, "a", "pid")?,
        pod_ns(agent, &plain, "b", "pid")?,
    );
    ensure!(
        a != host_pid && b != host_pid && a != b,
        "plain pod pid namespaces: a {a}, b {b}, host {host_pid}"
    );
    let first = pid1(agent, &plain, "a")?;
    ensure!(
        first == "sleep 3600",
        "PID 1 of a plain container is {first:?}"
    );
    let (a, b) = (
        pod_ns(agent, &plain, "a", "ipc")?,
        pod_ns(agent, &plain, "b", "ipc")?,
    );
    ensure!(
        a == b && a != host_ipc,
        "plain pod ipc namespaces: a {a}, b {b}, host {host_ipc}"
    );
    let (code, out) = exec_sh(agent, &plain, "a", &format!("test -e {marker}"))?;
    ensure!(
        code == 1,
        "a plain pod sees the host's /dev/shm ({code}: {out})"
    );

    for file in ["hpid", "hipc", "plain"] {
        agent.remove_manifest(&format!("{file}.yaml"))?;
    }
    for name in [&hpid, &hipc, &plain] {
        agent.wait_gone(name, Duration::from_secs(45))?;
    }
    Ok(())
}

/// Waits until `check` holds for the pod, returning it.
fn wait(
    agent: &TestAgent,
    name: &str,
    what: &str,
    check: impl Fn(&Pod) -> bool,
) -> anyhow::Result<Pod> {
    agent.wait_pod(name, Duration::from_secs(60), what, check)
}

fn shared_process_namespace() -> anyhow::Result<()> {
    with_agent("hs", |agent| {
        let host_pid = host_ns("pid")?;
        // `a` leaves a child behind its init; `b` is the one that signals.
        let body = r#"  shareProcessNamespace: true
  containers:
  - name: a
    image: IMAGE
    command: ["sh", "-c", "sleep 3602 & exec sleep 3601"]
  - name: b
    image: IMAGE
    command: ["sleep", "3600"]
"#;
        agent.write_manifest("shared.yaml", &pod_yaml("shared", &agent.image, body))?;
        let name = agent.pod_name("shared");
        let before = agent.wait_pod(&name, Duration::from_secs(90), "Running", all_running)?;

        // The pause container is PID 1 of the one namespace both containers are in.
        let (a, b) = (
            pod_ns(agent, &name, "a", "pid")?,
            pod_ns(agent, &name, "b", "pid")?,
        );
        ensure!(
            a == b && a != host_pid,
            "pid namespaces: a {a}, b {b}, host {host_pid}"
        );
        for c in ["a", "b"] {
            let first = pid1(agent, &name, c)?;
            ensure!(first == "/pause", "PID 1 seen from {c} is {first:?}");
        }
        let ps = agent.kubenode_ok(&["exec", &name, "-c", "b", "--", "ps", "-o", "pid,args"])?;
        for want in ["/pause", "sleep 3601", "sleep 3602", "sleep 3600"] {
            ensure!(ps.contains(want), "ps in b does not list {want}:\n{ps}");
        }

        // The choice survives an agent restart: the pod is adopted as it is, and a container
        // made afterwards joins the same namespace.
        agent.kill();
        agent.spawn()?;
        let adopted =
            agent.wait_pod(&name, Duration::from_secs(30), "Running again", all_running)?;
        ensure!(
            container_id(&adopted, "a") == container_id(&before, "a"),
            "container a was restarted by the agent restart"
        );

        // b signals a's init: a ends with SIGTERM (143) and is restarted; b is undisturbed.
        let (code, out) = exec_sh(
            agent,
            &name,
            "b",
            &format!("kill $({})", pids_of("sleep 3601")),
        )?;
        ensure!(code == 0, "kill from b: {out}");
        let after = wait(agent, &name, "a restarted after b's signal", |p| {
            restarts(p, "a") == Some(1) && all_running(p)
        })?;
        let last = container(&after, "a")
            .and_then(|c| c.last_state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .context("no last state of a")?;
        ensure!(
            last.exit_code == 143,
            "a ended with {} ({:?}), not SIGTERM's 143",
            last.exit_code,
            last.reason
        );
        ensure!(
            restarts(&after, "b") == Some(0)
                && container_id(&after, "b") == container_id(&before, "b"),
            "b was disturbed"
        );
        // a's left-behind child went with a's init (its cgroup was killed), b's process did not.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = String::from("?");
        while Instant::now() < deadline {
            let (_, out) = exec_sh(agent, &name, "b", &pids_of("sleep 3602"))?;
            left = out.trim().to_string();
            // The new a started its own `sleep 3602`: exactly one may be left.
            if left.lines().count() <= 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            left.lines().count() == 1,
            "sleep 3602 processes after a's restart: {left:?} (want only the new a's)"
        );
        let (_, mine) = exec_sh(agent, &name, "b", &pids_of("sleep 3600"))?;
        ensure!(
            mine.trim().lines().count() == 1,
            "b's sleep is gone: {mine:?}"
        );
        // The restarted a is in the pause's namespace again.
        let again = pod_ns(agent, &name, "a", "pid")?;
        ensure!(
            again == b,
            "restarted a in pid namespace {again}, pod's {b}"
        );
        ensure!(pid1(agent, &name, "a")? == "/pause");
        // No create or start of the pod's containers failed on the way (a container made
        // before pause ran could not join its PID namespace).
        let failed: Vec<String> = agent
            .events()?
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Failed")
                    && e.involved_object.name.as_deref() == Some(name.as_str())
            })
            .map(|e| e.message.clone().unwrap_or_default())
            .collect();
        ensure!(failed.is_empty(), "Failed events of the pod: {failed:?}");

        // hostPID and shareProcessNamespace together are refused, with upstream's field path.
        let both = "  hostPID: true\n  shareProcessNamespace: true\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
        agent.write_manifest("both.yaml", &pod_yaml("both", &agent.image, both))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let field = "spec.securityContext.shareProcessNamespace";
        let refused = |agent: &TestAgent| -> anyhow::Result<bool> {
            Ok(agent.events()?.iter().any(|e| {
                let m = e.message.as_deref().unwrap_or_default();
                m.contains("both.yaml")
                    && m.contains(field)
                    && m.contains("ShareProcessNamespace and HostPID cannot both be enabled")
            }))
        };
        while !refused(agent)? {
            ensure!(
                Instant::now() < deadline,
                "no event refuses both.yaml at {field}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            agent.pod(&agent.pod_name("both"))?.is_none(),
            "a pod with hostPID and shareProcessNamespace was run"
        );

        for f in ["shared.yaml", "both.yaml"] {
            agent.remove_manifest(f)?;
        }
        agent.wait_gone(&name, Duration::from_secs(45))
    })
}
