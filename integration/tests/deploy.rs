//! What `deploy/` and `vagrant/` ship, checked as written: the install script (layout,
//! idempotence, the operator's files kept), the systemd unit (`systemd-analyze verify`), the
//! agent's readiness notification (`Type=notify`, with a socket the test binds, since this
//! machine has no systemd as PID 1), and the lab's and the walk-through's manifests as the agent
//! reads them.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::lab::{curl_in, vagrant_dir, WEB_CLUSTER_IP};
use kubenode_integration::{
    kubenode_bin, privileged, run, run_ok, run_tests, unique_tag, LeakGuard, Netns, TestDir, Trial,
};

fn main() {
    run_tests(vec![
        Trial::test("install_script_layout_idempotence_and_unit", || {
            install_script().map_err(|e| format!("{e:#}").into())
        }),
        Trial::test("lab_and_exercise_manifests_are_valid", || {
            manifests_valid().map_err(|e| format!("{e:#}").into())
        }),
        privileged(
            "agent_notifies_systemd_ready_after_api_and_stopping",
            notify_ready,
        ),
    ])
}

fn repo() -> PathBuf {
    vagrant_dir().join("..")
}

// ---------------------------------------------------------------------------------------------
// deploy/install and deploy/kubenode.service

fn install_script() -> anyhow::Result<()> {
    let dir = TestDir::new(&unique_tag("ins"))?;
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins)?;
    let write_bin = |name: &str, body: &str| -> anyhow::Result<()> {
        let p = bins.join(name);
        std::fs::write(&p, body)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    write_bin("kubenode", "#!/bin/sh\necho kubenode v1\n")?;
    write_bin("kubenode-shim", "#!/bin/sh\necho shim v1\n")?;
    let root = dir.join("root");
    let install = |extra: &[&str]| -> anyhow::Result<String> {
        let out = run_ok(
            Command::new(repo().join("deploy/install"))
                .arg("--root")
                .arg(&root)
                .arg("--bin-dir")
                .arg(&bins)
                .args(extra),
            Duration::from_secs(30),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let first = install(&[])?;
    ensure!(
        first.contains("not enabled"),
        "with --root the service is not enabled: {first}"
    );

    let at = |p: &str| root.join(p.trim_start_matches('/'));
    ensure!(std::fs::read(at("/usr/local/bin/kubenode"))? == std::fs::read(bins.join("kubenode"))?);
    ensure!(
        std::fs::read(at("/usr/local/bin/kubenode-shim"))?
            == std::fs::read(bins.join("kubenode-shim"))?
    );
    for bin in ["/usr/local/bin/kubenode", "/usr/local/bin/kubenode-shim"] {
        let mode = std::fs::metadata(at(bin))?.permissions().mode() & 0o777;
        ensure!(mode == 0o755, "{bin} has mode {mode:o}");
    }
    // The link the agent itself checks at start (cni::ensure_default_network_with links
    // <cniBinDir>/kubenode-bridge to the running binary).
    ensure!(
        std::fs::read_link(at("/opt/cni/bin/kubenode-bridge"))?
            == Path::new("/usr/local/bin/kubenode")
    );
    for (installed, source) in [
        ("/etc/kubenode/config.yaml", "deploy/config.yaml"),
        ("/etc/default/kubenode", "deploy/kubenode.env"),
        (
            "/etc/systemd/system/kubenode.service",
            "deploy/kubenode.service",
        ),
    ] {
        ensure!(
            std::fs::read(at(installed))? == std::fs::read(repo().join(source))?,
            "{installed} is not {source}"
        );
    }
    ensure!(at("/etc/kubenode/manifests").is_dir());

    // The shipped config file is one the agent accepts, and its paths agree with the layout.
    let config = kubenode_kubelet::config::ConfigFile::load(&at("/etc/kubenode/config.yaml"))?;
    ensure!(config.cni_bin_dir.as_deref() == Some("/opt/cni/bin"));
    ensure!(config.static_pod_path.as_deref() == Some("/etc/kubenode/manifests"));

    // Idempotent: the operator's config and env file stay, a new binary replaces the old one.
    std::fs::write(at("/etc/kubenode/config.yaml"), "# the operator's\n")?;
    std::fs::write(
        at("/etc/default/kubenode"),
        "KUBENODE_ARGS=\"--node-ip=1.2.3.4\"\n",
    )?;
    write_bin("kubenode", "#!/bin/sh\necho kubenode v2\n")?;
    let second = install(&["--no-enable"])?;
    ensure!(second.contains("kept"), "second run: {second}");
    ensure!(std::fs::read_to_string(at("/etc/kubenode/config.yaml"))? == "# the operator's\n");
    ensure!(std::fs::read_to_string(at("/etc/default/kubenode"))?.contains("1.2.3.4"));
    ensure!(std::fs::read_to_string(at("/usr/local/bin/kubenode"))?.contains("v2"));
    let third = install(&[])?;
    ensure!(
        !third.contains("installed"),
        "a third run with nothing new changes nothing: {third}"
    );

    // A missing binary is refused before anything is touched.
    std::fs::remove_file(bins.join("kubenode-shim"))?;
    let refused = run(
        Command::new(repo().join("deploy/install"))
            .arg("--root")
            .arg(dir.join("other"))
            .arg("--bin-dir")
            .arg(&bins),
        Duration::from_secs(30),
    )?;
    ensure!(!refused.status.success() && !dir.join("other").exists());

    // The unit as systemd reads it: no unknown keys, no bad values (ExecStart pointed at the
    // real binary, which systemd-analyze wants to exist).
    let unit = std::fs::read_to_string(repo().join("deploy/kubenode.service"))?;
    for needed in [
        "Type=notify",
        "Restart=always",
        "RestartSec=10",
        "KillMode=process",
        "After=network-online.target",
        "Wants=network-online.target",
        "EnvironmentFile=-/etc/default/kubenode",
        "$KUBENODE_ARGS",
    ] {
        ensure!(unit.contains(needed), "the unit lacks {needed}");
    }
    let verify_dir = dir.join("verify");
    std::fs::create_dir_all(&verify_dir)?;
    std::fs::write(
        verify_dir.join("kubenode.service"),
        unit.replace("/usr/local/bin/kubenode", &kubenode_bin().to_string_lossy()),
    )?;
    let out = run(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(verify_dir.join("kubenode.service")),
        Duration::from_secs(30),
    )
    .context("systemd-analyze (package systemd) is needed to check the unit")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// vagrant/manifests: what the agent reads from them

fn manifests_valid() -> anyhow::Result<()> {
    use kubenode_kubelet::source::read_dir_snapshot;
    let names = |snap: &kubenode_kubelet::source::Snapshot| -> Vec<String> {
        snap.pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    };
    let lab = read_dir_snapshot(&vagrant_dir().join("manifests/lab"), "node1");
    ensure!(
        lab.errors.is_empty(),
        "vagrant/manifests/lab: {:?}",
        lab.errors
    );
    ensure!(names(&lab) == ["web-node1"], "lab pods: {:?}", names(&lab));
    let svc = &lab.services[..];
    ensure!(svc.len() == 1, "lab services: {svc:?}");
    let spec = svc[0].spec.as_ref().context("web has a spec")?;
    ensure!(spec.cluster_ip.as_deref() == Some(WEB_CLUSTER_IP) && spec.selector.is_none());

    let ex = read_dir_snapshot(&vagrant_dir().join("manifests/exercises"), "node1");
    ensure!(
        ex.errors.is_empty(),
        "vagrant/manifests/exercises: {:?}",
        ex.errors
    );
    let mut pods = names(&ex);
    pods.sort();
    ensure!(
        pods == [
            "blog-frontend-node1",
            "greeter-node1",
            "hello-node1",
            "probed-node1",
            "shared-node1",
            "shop-backend-node1",
            "shop-frontend-node1"
        ],
        "exercise pods: {pods:?}"
    );
    ensure!(
        ex.services.len() == 1,
        "exercise services: {:?}",
        ex.services
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// READY=1 / STOPPING=1

fn notify_ready() -> anyhow::Result<()> {
    let tag = unique_tag("ntf");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let node = Netns::new(&format!("{tag}-node"))?;
        let socket_path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path)?;
        socket.set_read_timeout(Some(Duration::from_secs(30)))?;
        let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", node.path().display()))
            .arg(kubenode_bin())
            .args(["agent", "--node-name", "notify", "--node-ip", "127.0.0.1"])
            // Off by default; on here, so READY=1 can be seen to cover it too.
            .args(["--read-only-port", "10255"])
            .args(["--root-dir", &d("root"), "--run-dir", &d("run")])
            .args(["--log-dir", &d("logs"), "--manifest-dir", &d("manifests")])
            .args([
                "--cni-conf-dir",
                &d("cni/net.d"),
                "--cni-bin-dir",
                &d("cni/bin"),
            ])
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log"))?)
            .spawn()?;
        let result = (|| -> anyhow::Result<()> {
            let mut buf = [0u8; 1024];
            let n = socket
                .recv(&mut buf)
                .context("no notification from the agent within 30 s")?;
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            ensure!(
                msg.lines().any(|l| l == "READY=1"),
                "first message: {msg:?}"
            );
            // Ready means serving: both APIs answer at once, without retrying.
            let cli = run(
                Command::new(kubenode_bin())
                    .args(["get", "pods", "-A"])
                    .env("KUBENODE_RUN_DIR", dir.join("run")),
                Duration::from_secs(10),
            )?;
            ensure!(
                cli.status.success(),
                "the node API socket does not answer after READY=1"
            );
            let health = curl_in(&node, "http://127.0.0.1:10255/healthz")?;
            ensure!(
                health.as_deref() == Some("ok"),
                "the read-only port after READY=1: {health:?}"
            );
            // SAFETY: kill(2) on the child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let n = socket
                .recv(&mut buf)
                .context("no STOPPING=1 after SIGTERM")?;
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            ensure!(
                msg.lines().any(|l| l == "STOPPING=1"),
                "on SIGTERM: {msg:?}"
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    ensure!(status.success(), "the agent exited with {status}");
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            bail!("the agent did not exit within 15 s of SIGTERM")
        })();
        let _ = child.kill();
        let _ = child.wait();
        result
            .with_context(|| std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default())?;
    }
    guard.check()
}
