//! seccomp and AppArmor on the real kernel with real runc: a `RuntimeDefault` container runs
//! under a filter (`Seccomp: 2`) that refuses `unshare(CLONE_NEWUSER)` with EPERM while an
//! `Unconfined` container (container level winning over the pod's `RuntimeDefault`) may make
//! it; a `Localhost` profile from `<root-dir>/seccomp/` that denies `mkdir` makes mkdir fail
//! with EPERM; a missing `Localhost` profile leaves the container waiting with
//! `CreateContainerError` and no container; `seccompDefault: true` gives a pod that names no
//! profile the runtime default; and on this host, which has no AppArmor, a pod asking for an
//! AppArmor profile is rejected at admission while `Unconfined` runs. The pause container runs
//! under the runtime default whatever the pod asks for (upstream's kubelet always asks for it
//! for the sandbox), except in a pod with a privileged container.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use kubenode_integration::agent::with_config_agent;
use kubenode_integration::pods::{
    all_running, container_id, phase, pod_yaml, status, waiting_message, waiting_reason,
};
use kubenode_integration::{privileged, run_tests, TestAgent};

fn main() {
    run_tests(vec![
        privileged("seccomp_profiles_and_apparmor_admission", profiles),
        privileged(
            "seccomp_default_config_gives_runtime_default",
            seccomp_default,
        ),
    ])
}

/// Waits (bounded) until the logs of `pod` contain `marker`; returns them.
fn logs_with(agent: &TestAgent, pod: &str, marker: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = agent.kubenode_ok(&["logs", pod])?;
        if log.contains(marker) || Instant::now() >= deadline {
            return Ok(log);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `Seccomp:` mode of `/proc/self/status` (0 none, 2 filter) and what `unshare -U true`
/// says, printed by the container; it then sleeps.
const PROBE: &str = r#"["sh", "-c", "grep Seccomp: /proc/self/status; if unshare -U true 2>/tmp/err; then echo unshare=ok; else echo unshare=failed; cat /tmp/err; fi; echo end; exec sleep 3600"]"#;

/// The `Seccomp:` mode of the pause process of the pod with UID `uid`: the process running
/// `/pause` whose cgroup names the pod's UID.
fn pause_seccomp(uid: &str) -> anyhow::Result<String> {
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let dir = entry.path();
        if std::fs::read(dir.join("cmdline")).ok().as_deref() != Some(b"/pause\0".as_slice()) {
            continue;
        }
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        if !cgroup.contains(&format!("pod{uid}")) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status"))?;
        return seccomp_mode(&status)
            .map(str::to_string)
            .with_context(|| format!("no Seccomp line in {}/status", dir.display()));
    }
    anyhow::bail!("no pause process of pod {uid}")
}

fn uid(pod: &k8s_openapi::api::core::v1::Pod) -> anyhow::Result<&str> {
    pod.metadata.uid.as_deref().context("pod without uid")
}

fn seccomp_mode(log: &str) -> Option<&str> {
    log.lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim)
}

fn profiles() -> anyhow::Result<()> {
    with_config_agent("sc", None, |agent| {
        // A Localhost profile that allows everything but mkdir, which fails with EPERM.
        let dir = agent.dir.join("root/seccomp/profiles");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("deny-mkdir.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
        )?;
        let pods = [
            (
                "rd",
                format!(
                    "  securityContext:\n    seccompProfile: {{type: RuntimeDefault}}\n  containers:\n  - name: c\n    image: IMAGE\n    command: {PROBE}\n"
                ),
            ),
            (
                "unc",
                format!(
                    "  securityContext:\n    seccompProfile: {{type: RuntimeDefault}}\n  containers:\n  - name: c\n    image: IMAGE\n    command: {PROBE}\n    securityContext:\n      seccompProfile: {{type: Unconfined}}\n"
                ),
            ),
            (
                "lh",
                r#"  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?; echo end; exec sleep 3600"]
    securityContext:
      seccompProfile: {type: Localhost, localhostProfile: profiles/deny-mkdir.json}
"#
                .to_string(),
            ),
            (
                "missing",
                r#"  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    securityContext:
      seccompProfile: {type: Localhost, localhostProfile: profiles/nope.json}
"#
                .to_string(),
            ),
            (
                "priv",
                r#"  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    securityContext:
      privileged: true
"#
                .to_string(),
            ),
            (
                "aa",
                r#"  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    securityContext:
      appArmorProfile: {type: RuntimeDefault}
"#
                .to_string(),
            ),
            (
                "aaunc",
                r#"  securityContext:
    appArmorProfile: {type: Unconfined}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
"#
                .to_string(),
            ),
        ];
        for (name, body) in &pods {
            agent.write_manifest(&format!("{name}.yaml"), &pod_yaml(name, &agent.image, body))?;
        }

        // RuntimeDefault: a filter, and unshare(CLONE_NEWUSER) refused with EPERM.
        let rd = agent.pod_name("rd");
        let pod = agent.wait_pod(&rd, Duration::from_secs(60), "Running", all_running)?;
        let mode = pause_seccomp(uid(&pod)?)?;
        ensure!(
            mode == "2",
            "the pause container of {rd} has Seccomp: {mode}"
        );
        let log = logs_with(agent, &rd, "end")?;
        ensure!(
            seccomp_mode(&log) == Some("2"),
            "a RuntimeDefault container runs without a seccomp filter: {log:?}"
        );
        ensure!(
            log.contains("unshare=failed") && log.contains("Operation not permitted"),
            "unshare -U under RuntimeDefault did not fail with EPERM: {log:?}"
        );

        // Unconfined at container level wins over the pod's RuntimeDefault: no filter, and the
        // same unshare succeeds.
        let unc = agent.pod_name("unc");
        let pod = agent.wait_pod(&unc, Duration::from_secs(60), "Running", all_running)?;
        let log = logs_with(agent, &unc, "end")?;
        ensure!(
            seccomp_mode(&log) == Some("0"),
            "an Unconfined container runs under a filter: {log:?}"
        );
        ensure!(
            log.contains("unshare=ok"),
            "unshare -U failed in an Unconfined container: {log:?}"
        );
        // Pause stays under the runtime default: the kubelet asks for it for every sandbox.
        let mode = pause_seccomp(uid(&pod)?)?;
        ensure!(
            mode == "2",
            "the pause container of {unc} has Seccomp: {mode}"
        );

        // A pod with a privileged container: its sandbox is privileged, pause has no filter.
        let name = agent.pod_name("priv");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let mode = pause_seccomp(uid(&pod)?)?;
        ensure!(
            mode == "0",
            "the pause container of {name} has Seccomp: {mode}"
        );

        // Localhost: the profile's mkdir rule.
        let lh = agent.pod_name("lh");
        agent.wait_pod(&lh, Duration::from_secs(60), "Running", all_running)?;
        let log = logs_with(agent, &lh, "end")?;
        ensure!(
            log.contains("Operation not permitted") && log.contains("rc=1"),
            "mkdir under a profile denying it with EPERM: {log:?}"
        );

        // A missing Localhost profile: the container waits with upstream's reason, and there is
        // no container.
        let missing = agent.pod_name("missing");
        let pod = agent.wait_pod(
            &missing,
            Duration::from_secs(60),
            "CreateContainerError",
            |p| waiting_reason(p, "c") == Some("CreateContainerError"),
        )?;
        let message = waiting_message(&pod, "c").unwrap_or_default();
        ensure!(
            message.contains("cannot load seccomp profile")
                && message.contains("seccomp/profiles/nope.json"),
            "waiting message: {message:?}"
        );
        ensure!(phase(&pod) == "Pending", "phase: {:?}", pod.status);
        ensure!(
            container_id(&pod, "c").is_none(),
            "a container exists: {:?}",
            pod.status
        );
        let events = agent.kubenode_ok(&["get", "events", "-A"])?;
        ensure!(
            events.contains("cannot load seccomp profile"),
            "no event names the missing profile:\n{events}"
        );

        // AppArmor on a host without it: rejected at admission, with upstream's reason and text.
        ensure!(
            !std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists(),
            "this test expects a host without AppArmor"
        );
        let aa = agent.pod_name("aa");
        let pod = agent.wait_pod(&aa, Duration::from_secs(30), "rejected", |p| {
            phase(p) == "Failed"
        })?;
        ensure!(
            status(&pod).reason.as_deref() == Some("AppArmor"),
            "reason: {:?}",
            pod.status
        );
        ensure!(
            status(&pod).message.as_deref()
                == Some("Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host"),
            "message: {:?}",
            status(&pod).message
        );
        agent.wait_pod(
            &agent.pod_name("aaunc"),
            Duration::from_secs(60),
            "Running",
            all_running,
        )?;
        Ok(())
    })
}

fn seccomp_default() -> anyhow::Result<()> {
    with_config_agent("sd", Some("seccompDefault: true\n"), |agent| {
        let body = format!("  containers:\n  - name: c\n    image: IMAGE\n    command: {PROBE}\n");
        agent.write_manifest("plain.yaml", &pod_yaml("plain", &agent.image, &body))?;
        let name = agent.pod_name("plain");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let log = logs_with(agent, &name, "end").context("logs")?;
        ensure!(
            seccomp_mode(&log) == Some("2") && log.contains("unshare=failed"),
            "seccompDefault: true, a pod naming no profile: {log:?}"
        );
        Ok(())
    })
}
