//! The start-up checks on the real machine: an agent that could run no pod exits at once with
//! one message naming the cause and the fix, instead of failing every sandbox for ever.
//!
//! Each agent runs inside a network namespace the test made (so that a regression that lets it
//! start never touches the host's iptables), and each wait is bounded: an agent that does not
//! exit within the bound is killed and the test fails.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Context};
use kubenode_integration::{
    kubenode_bin, privileged, run, run_tests, unique_tag, LeakGuard, Netns, TestDir,
};

fn main() {
    run_tests(vec![
        privileged(
            "agent_under_ip_netns_exec_exits_at_once_suggesting_nsenter",
            under_ip_netns_exec,
        ),
        privileged(
            "agent_without_runtime_and_writable_root_lists_both",
            no_runtime_no_root,
        ),
        privileged("proxy_without_iptables_exits_at_once", proxy_no_iptables),
    ])
}

/// Long enough for any start-up on a loaded machine; an agent that is still running then has
/// not refused to start.
const BOUND: Duration = Duration::from_secs(15);

/// `kubenode agent` flags for a node whose directories live below `dir`.
fn agent_args(tag: &str, dir: &TestDir) -> Vec<String> {
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    [
        "agent",
        "--node-name",
        tag,
        "--node-ip",
        "10.250.0.10",
        "--read-only-port",
        "0",
        "--root-dir",
        &d("root"),
        "--run-dir",
        &d("run"),
        "--log-dir",
        &d("logs"),
        "--manifest-dir",
        &d("manifests"),
        "--cni-conf-dir",
        &d("cni/net.d"),
        "--cni-bin-dir",
        &d("cni/bin"),
        "--pod-cidr",
        "10.244.1.0/24",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `cmd` to its end within [`BOUND`]; fails when it is still running then (killed), or
/// when it exited with 0.
fn refused(cmd: &mut Command) -> anyhow::Result<String> {
    let out: Output = run(cmd, BOUND).context("the agent did not refuse to start")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(!out.status.success(), "exited with success:\n{stderr}");
    // One error message (the log lines before it are the usual start-up lines).
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("kubenode: "))
        .collect();
    ensure!(errors.len() == 1, "not one error message:\n{stderr}");
    Ok(stderr)
}

fn under_ip_netns_exec() -> anyhow::Result<()> {
    let tag = unique_tag("pf");
    let guard = LeakGuard::new(&tag);
    {
        let ns = Netns::new(&tag)?;
        let dir = TestDir::new(&tag)?;
        let args = agent_args(&tag, &dir);
        let mut argv = vec![kubenode_bin().to_string_lossy().into_owned()];
        argv.extend(args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let stderr = refused(&mut ns.command(&argv))?;
        let error = stderr
            .lines()
            .find(|l| l.starts_with("kubenode: "))
            .unwrap_or_default();
        ensure!(
            error.starts_with("kubenode: cannot run pods on this host: no cgroup filesystem"),
            "{stderr}"
        );
        ensure!(
            error.contains(&format!("`ip netns exec {tag}`"))
                && error.contains(&format!("nsenter --net=/run/netns/{tag}")),
            "the message names neither ip netns exec nor nsenter:\n{stderr}"
        );
        // Refused before the runtime set up anything (no runc root, no pause rootfs).
        ensure!(
            !dir.join("run/runc").exists() && !dir.join("run/pause").exists(),
            "the runtime was set up before the refusal"
        );
    }
    guard.check()
}

fn no_runtime_no_root() -> anyhow::Result<()> {
    let tag = unique_tag("pf");
    let guard = LeakGuard::new(&tag);
    {
        let ns = Netns::new(&tag)?;
        let dir = TestDir::new(&tag)?;
        // The root directory below a regular file can never be made.
        std::fs::write(dir.join("file"), "")?;
        let bad_root = dir.join("file/root");
        let mut args = agent_args(&tag, &dir);
        let at = args.iter().position(|a| a == "--root-dir").unwrap_or(0) + 1;
        args[at] = bad_root.to_string_lossy().into_owned();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path().display()))
            .arg(kubenode_bin())
            .args(&args)
            .args(["--runtime", "/nonexistent/runc"]);
        let stderr = refused(&mut cmd)?;
        ensure!(
            stderr.contains("the OCI runtime /nonexistent/runc is not an executable file"),
            "{stderr}"
        );
        ensure!(
            stderr.contains(&format!(
                "the directory {} (--root-dir) is not writable",
                bad_root.display()
            )),
            "{stderr}"
        );
        ensure!(!Path::new(&dir.join("run/runc")).exists());
    }
    guard.check()
}

fn proxy_no_iptables() -> anyhow::Result<()> {
    let tag = unique_tag("pf");
    let guard = LeakGuard::new(&tag);
    {
        let ns = Netns::new(&tag)?;
        let dir = TestDir::new(&tag)?;
        std::fs::create_dir_all(dir.join("manifests"))?;
        std::fs::create_dir_all(dir.join("empty-path"))?;
        let mut cmd = Command::new("/usr/bin/nsenter");
        cmd.arg(format!("--net={}", ns.path().display()))
            .arg(kubenode_bin())
            .arg("proxy")
            .arg("--manifest-dir")
            .arg(dir.join("manifests"))
            .arg("--state-file")
            .arg(dir.join("allocations.json"))
            .arg("--hostname-override")
            .arg(&tag)
            // A PATH without iptables: the proxy cannot program anything.
            .env("PATH", dir.join("empty-path"));
        let stderr = refused(&mut cmd)?;
        ensure!(
            stderr.contains("iptables is not installed")
                && stderr.contains("apt-get install iptables"),
            "{stderr}"
        );
    }
    guard.check()
}
