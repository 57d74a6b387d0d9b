//! The container runtime end to end with real runc, overlayfs, network
//! namespaces and `kubenode shim`: a pod whose containers talk over its
//! loopback, CRI logs, exit codes 0/7/137, exec, SIGKILL of the managing
//! process followed by recovery, and teardown that leaves nothing behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use k8s_openapi::api::core::v1::Container;
use kubenode_integration::{
    busybox_rootfs, kubenode_bin, privileged, run_ok, run_tests, unique_tag, LeakGuard, TestDir,
};
use kubenode_runtime::spec::PodInfo;
use kubenode_runtime::{
    ContainerConfig, ContainerState, ImageRef, Runtime, RuntimeConfig, SandboxConfig, SandboxState,
};

/// When set, this test binary is the "agent" child of `agent_sigkill_recovery`.
const CHILD_ENV: &str = "KN_RUNTIME_TEST_AGENT";

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        if let Err(e) = agent_child(Path::new(&dir)) {
            eprintln!("agent child: {e:#}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    run_tests(vec![
        privileged(
            "runtime_pod_two_containers_logs_exit_codes_exec",
            pod_lifecycle,
        ),
        privileged("runtime_agent_sigkill_recovery", agent_sigkill_recovery),
        privileged("runtime_failed_create_leaves_nothing", failed_create),
        privileged("runtime_oom_killed", oom_killed),
        privileged("runtime_log_rotation_and_partial_lines", log_rotation),
        privileged("runtime_host_network_and_sysctls", host_network_and_sysctls),
    ])
}

/// A runtime that, when dropped, recovers its view and tears down every
/// sandbox, so a failing test leaves no container running.
struct Rt(Runtime);

impl std::ops::Deref for Rt {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.0
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        let _ = self.0.recover();
        for sb in self.0.list_sandboxes() {
            if let Err(e) = self.0.stop_and_remove_sandbox(&sb.id) {
                eprintln!("cleanup of sandbox {}: {e}", sb.id);
            }
        }
    }
}

struct Env {
    config: RuntimeConfig,
    layer: PathBuf,
    cgroup_parent: String,
}

fn env(dir: &Path, tag: &str) -> anyhow::Result<Env> {
    let layer = dir.join("layer0");
    if !layer.exists() {
        busybox_rootfs(&layer)?;
    }
    let mut config = RuntimeConfig::new(dir.join("root"), dir.join("run"), dir.join("logs"));
    config.runtime_path = PathBuf::from("/usr/sbin/runc");
    config.shim_binary = kubenode_bin();
    Ok(Env {
        config,
        layer,
        cgroup_parent: format!("/kn-{tag}"),
    })
}

fn pod(tag: &str) -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: format!("web-{tag}"),
        uid: format!("uid-{tag}"),
        hostname: "web".into(),
    }
}

fn container(env: &Env, name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        container: Container {
            name: name.into(),
            command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
            ..Default::default()
        },
        image: ImageRef {
            name: "busybox:test".into(),
            layers: vec![env.layer.clone()],
            config: None,
        },
        ..Default::default()
    }
}

fn loopback_up(netns: &Path) -> anyhow::Result<()> {
    run_ok(
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["ip", "link", "set", "lo", "up"]),
        Duration::from_secs(10),
    )?;
    Ok(())
}

fn wait_exited(
    rt: &Runtime,
    id: &str,
    limit: Duration,
) -> anyhow::Result<kubenode_runtime::ContainerStatus> {
    let deadline = Instant::now() + limit;
    loop {
        let st = rt.container_status(id)?;
        if st.state == ContainerState::Exited {
            return Ok(st);
        }
        if Instant::now() > deadline {
            bail!("container {} still {:?} after {limit:?}", st.name, st.state);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(rt: &Runtime, sandbox: &str, c: &ContainerConfig) -> anyhow::Result<String> {
    let id = rt.create_container(sandbox, c)?;
    rt.start_container(&id)?;
    Ok(id)
}

fn make_pod(rt: &Runtime, env: &Env, tag: &str) -> anyhow::Result<String> {
    let sb = rt.create_sandbox(&SandboxConfig {
        pod: pod(tag),
        cgroup_parent: env.cgroup_parent.clone(),
    })?;
    let netns = sb.netns_path.clone();
    ensure!(netns.exists(), "netns {} missing", netns.display());
    loopback_up(&netns)?; // what the CNI loopback plugin would do
    let sb = rt.start_sandbox(&sb.id)?;
    ensure!(sb.state == SandboxState::Ready, "sandbox not ready: {sb:?}");
    Ok(sb.id)
}

fn pod_lifecycle() -> anyhow::Result<()> {
    let tag = unique_tag("rt");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let env = env(dir.path(), &tag)?;
        let rt = Rt(Runtime::new(env.config.clone())?);
        rt.recover()?;
        let sandbox = make_pod(&rt, &env, &tag)?;

        let server = start(
            &rt,
            &sandbox,
            &container(&env, "server", "mkdir -p /www && echo hello-from-server > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"),
        )?;
        let client = start(
            &rt,
            &sandbox,
            &container(
                &env,
                "client",
                "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do wget -q -O - http://127.0.0.1:8080/index.html && exit 0; sleep 0.2; done; exit 1",
            ),
        )?;
        let seven = start(
            &rt,
            &sandbox,
            &container(
                &env,
                "seven",
                "echo out; echo err >&2; printf partial; exit 7",
            ),
        )?;

        let st = wait_exited(&rt, &client, Duration::from_secs(20))?;
        ensure!(
            st.exit_code == Some(0) && st.reason.as_deref() == Some("Completed"),
            "client: {st:?}"
        );
        let log = std::fs::read_to_string(&st.log_path)
            .with_context(|| format!("reading {}", st.log_path.display()))?;
        ensure!(
            st.log_path
                .ends_with(format!("default_web-{tag}_uid-{tag}/client/0.log")),
            "log path {}",
            st.log_path.display()
        );
        ensure!(
            log.lines()
                .any(|l| l.ends_with(" stdout F hello-from-server")),
            "client log:\n{log}"
        );

        let st = wait_exited(&rt, &seven, Duration::from_secs(10))?;
        ensure!(
            st.exit_code == Some(7) && st.reason.as_deref() == Some("Error"),
            "seven: {st:?}"
        );
        let log = std::fs::read_to_string(&st.log_path)?;
        let tail: Vec<&str> = log
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest))
            .collect();
        ensure!(
            tail.contains(&"stdout F out")
                && tail.contains(&"stderr F err")
                && tail.contains(&"stdout F partial"),
            "seven log:\n{log}"
        );
        for line in log.lines() {
            let ts = line.split(' ').next().unwrap_or_default();
            ensure!(
                ts.ends_with('Z') && ts.contains('T') && ts.len() >= 20,
                "timestamp {ts:?} in {line:?}"
            );
        }

        let out = rt.exec(
            &server,
            &["cat".into(), "/www/index.html".into()],
            Duration::from_secs(10),
        )?;
        ensure!(
            out.exit_code == 0 && out.stdout == b"hello-from-server\n",
            "exec cat: {out:?}"
        );
        let out = rt.exec(
            &server,
            &["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            Duration::from_secs(10),
        )?;
        ensure!(
            out.exit_code == 3 && out.stderr == b"oops\n",
            "exec exit 3: {out:?}"
        );
        // The command would print after 30 s: the timeout ends the exec before, without it.
        let out = rt.exec(
            &server,
            &["sh".into(), "-c".into(), "sleep 30; echo finished".into()],
            Duration::from_millis(500),
        )?;
        ensure!(
            out.timed_out && !String::from_utf8_lossy(&out.stdout).contains("finished"),
            "exec timeout: {out:?}"
        );

        let running = rt.container_status(&server)?;
        ensure!(
            running.state == ContainerState::Running && running.pid.is_some(),
            "server: {running:?}"
        );
        // httpd is PID 1 without a SIGTERM handler: the grace runs out, SIGKILL follows.
        rt.stop_container(&server, Duration::from_millis(300), None)?;
        let st = rt.container_status(&server)?;
        ensure!(
            st.exit_code == Some(137) && st.reason.as_deref() == Some("Error"),
            "server: {st:?}"
        );

        rt.stop_sandbox(&sandbox, Duration::from_secs(5))?;
        ensure!(
            rt.sandbox(&sandbox)?.state == SandboxState::NotReady,
            "sandbox still ready after stop"
        );
        let pause = rt
            .sandbox_exit(&sandbox)
            .context("pause exit not recorded")?;
        ensure!(pause.exit_code == 0, "pause exit on SIGTERM: {pause:?}");
        rt.stop_and_remove_sandbox(&sandbox)?;
        ensure!(
            rt.list_containers(None).is_empty(),
            "containers left in the view"
        );
        ensure!(
            std::fs::read_dir(env.config.root_dir.join("containers"))?
                .next()
                .is_none(),
            "container dirs left"
        );
    }
    guard.runc_root(format!("/tmp/kn-{tag}/run/runc")).check()
}

/// The "agent" that gets SIGKILLed: makes a pod with a long-running and a
/// soon-exiting container, prints their ids, then waits to be killed.
fn agent_child(dir: &Path) -> anyhow::Result<()> {
    let tag = std::fs::read_to_string(dir.join("tag"))?;
    let env = env(dir, &tag)?;
    let rt = Runtime::new(env.config.clone())?;
    let sandbox = make_pod(&rt, &env, &tag)?;
    let long = start(
        &rt,
        &sandbox,
        &container(
            &env,
            "long",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ),
    )?;
    let soon = start(
        &rt,
        &sandbox,
        &container(&env, "soon", "sleep 1; echo bye; exit 7"),
    )?;
    let mut c = container(&env, "again", "exit 0");
    c.restart_count = 3;
    let again = start(&rt, &sandbox, &c)?;
    println!("{sandbox} {long} {soon} {again}");
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}

fn agent_sigkill_recovery() -> anyhow::Result<()> {
    let tag = unique_tag("rk");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        std::fs::write(dir.join("tag"), &tag)?;
        let env = env(dir.path(), &tag)?;
        let rt = Rt(Runtime::new(env.config.clone())?);
        let mut child = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        let read =
            BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut line);
        // SIGKILL the managing process while the containers run.
        child.kill()?;
        child.wait()?;
        read?;
        let ids: Vec<&str> = line.split_whitespace().collect();
        ensure!(ids.len() == 4, "child printed {line:?}");
        let (sandbox, long, soon, again) = (ids[0], ids[1], ids[2], ids[3]);
        // "soon" exits while no agent exists: wait (bounded) until runc sees it stopped.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = run_ok(
                Command::new("runc")
                    .arg("--root")
                    .arg(env.config.runtime_root())
                    .args(["state", soon]),
                Duration::from_secs(10),
            )?;
            let state: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            if state["status"] == "stopped" {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "container soon still {} after 30 s",
                state["status"]
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        rt.recover()?;
        ensure!(
            rt.sandbox(sandbox)?.state == SandboxState::Ready,
            "sandbox not ready after recovery"
        );
        let st = rt.container_status(long)?;
        ensure!(st.state == ContainerState::Running, "long: {st:?}");
        let st = wait_exited(&rt, soon, Duration::from_secs(10))?;
        ensure!(
            st.exit_code == Some(7) && st.reason.as_deref() == Some("Error"),
            "soon: {st:?}"
        );
        let log = std::fs::read_to_string(&st.log_path)?;
        ensure!(log.contains(" stdout F bye"), "soon log:\n{log}");
        let st = wait_exited(&rt, again, Duration::from_secs(10))?;
        ensure!(
            st.exit_code == Some(0) && st.restart_count == 3,
            "again: {st:?}"
        );
        ensure!(
            st.log_path.ends_with("again/3.log"),
            "again log {}",
            st.log_path.display()
        );
        let by_name: HashMap<String, u32> = rt
            .list_containers(Some(sandbox))
            .into_iter()
            .map(|c| (c.name, c.restart_count))
            .collect();
        ensure!(by_name.len() == 3, "listed {by_name:?}");

        // The trap makes "long" exit 0 on SIGTERM within the grace period.
        rt.stop_container(long, Duration::from_secs(10), None)?;
        let st = rt.container_status(long)?;
        ensure!(st.exit_code == Some(0), "long after SIGTERM: {st:?}");

        rt.stop_and_remove_sandbox(sandbox)?;
    }
    guard.runc_root(format!("/tmp/kn-{tag}/run/runc")).check()
}

fn failed_create() -> anyhow::Result<()> {
    let tag = unique_tag("rf");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let env = env(dir.path(), &tag)?;
        let rt = Rt(Runtime::new(env.config.clone())?);
        let sandbox = make_pod(&rt, &env, &tag)?;
        let mut missing = container(&env, "missing", "");
        missing.container.command = Some(vec!["/no/such/binary".into()]);
        let err = match start(&rt, &sandbox, &missing) {
            Ok(_) => bail!("a missing binary started"),
            Err(e) => e.to_string(),
        };
        ensure!(
            err.contains("missing") && err.contains(&format!("web-{tag}")),
            "error names neither: {err}"
        );
        let mut bad_user = container(&env, "baduser", "true");
        bad_user.container.security_context = Some(Default::default());
        bad_user.image.config = Some(serde_json::from_str(
            r#"{"config":{"User":"nosuchuser"},"rootfs":{"type":"layers","diff_ids":[]},"architecture":"amd64","os":"linux"}"#,
        )?);
        let err = rt
            .create_container(&sandbox, &bad_user)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        ensure!(
            err.contains("nosuchuser") && err.contains("baduser"),
            "bad user error: {err}"
        );
        let leftover: Vec<_> = rt
            .list_containers(None)
            .into_iter()
            .filter(|c| c.state != ContainerState::Exited)
            .collect();
        ensure!(leftover.is_empty(), "left: {leftover:?}");
        rt.stop_and_remove_sandbox(&sandbox)?;
        ensure!(
            std::fs::read_dir(env.config.root_dir.join("containers"))?
                .next()
                .is_none(),
            "container dirs left"
        );
    }
    guard.runc_root(format!("/tmp/kn-{tag}/run/runc")).check()
}

fn oom_killed() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let tag = unique_tag("ro");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let env = env(dir.path(), &tag)?;
        let rt = Rt(Runtime::new(env.config.clone())?);
        let sandbox = make_pod(&rt, &env, &tag)?;
        let mut hog = container(
            &env,
            "hog",
            "a=$(head -c 100000000 /dev/zero | tr '\\0' x); echo ${#a}",
        );
        hog.container.resources = Some(ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity("16Mi".into()))].into()),
            ..Default::default()
        });
        let id = start(&rt, &sandbox, &hog)?;
        let st = wait_exited(&rt, &id, Duration::from_secs(30))?;
        ensure!(st.reason.as_deref() == Some("OOMKilled"), "hog: {st:?}");
        rt.stop_and_remove_sandbox(&sandbox)?;
    }
    guard.runc_root(format!("/tmp/kn-{tag}/run/runc")).check()
}

fn log_rotation() -> anyhow::Result<()> {
    let tag = unique_tag("rl");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let mut env = env(dir.path(), &tag)?;
        env.config.log_max_size = 8192;
        env.config.log_max_files = 3;
        let rt = Rt(Runtime::new(env.config.clone())?);
        let sandbox = make_pod(&rt, &env, &tag)?;
        // 20000 bytes without a newline: one 16 KiB `P` chunk, then the rest as `F`.
        let long = start(
            &rt,
            &sandbox,
            &container(&env, "long", "head -c 20000 /dev/zero | tr '\\0' y"),
        )?;
        let st = wait_exited(&rt, &long, Duration::from_secs(10))?;
        // The 16 KiB line alone exceeds the 8 KiB limit: it was rotated to `.1`.
        let first =
            std::fs::read_to_string(format!("{}.1", st.log_path.display())).unwrap_or_default();
        let text = first + &std::fs::read_to_string(&st.log_path)?;
        let tags: Vec<(&str, usize)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, ' ');
                let (_, _, tag, msg) = (f.next()?, f.next()?, f.next()?, f.next().unwrap_or(""));
                Some((tag, msg.len()))
            })
            .collect();
        ensure!(
            tags == [("P", 16384), ("F", 20000 - 16384)],
            "partial lines: {tags:?}"
        );

        let chatty = start(
            &rt,
            &sandbox,
            &container(&env, "chatty", "i=0; while [ $i -lt 400 ]; do echo line-$i-0123456789012345678901234567890123456789; i=$((i+1)); done"),
        )?;
        let st = wait_exited(&rt, &chatty, Duration::from_secs(20))?;
        let base = st.log_path.clone();
        let rotated = |n: u32| PathBuf::from(format!("{}.{n}", base.display()));
        ensure!(
            rotated(1).exists() && rotated(2).exists(),
            "no rotated files next to {}",
            base.display()
        );
        ensure!(!rotated(3).exists(), "more than 3 files kept");
        for p in [base.clone(), rotated(1), rotated(2)] {
            let len = std::fs::metadata(&p)?.len();
            ensure!(len <= 8192, "{} is {len} bytes", p.display());
        }
        let last = std::fs::read_to_string(&base)?;
        ensure!(
            last.lines()
                .last()
                .is_some_and(|l| l.contains("stdout F line-399-")),
            "last line missing:\n{last}"
        );
        rt.stop_and_remove_sandbox(&sandbox)?;
    }
    guard.runc_root(format!("/tmp/kn-{tag}/run/runc")).check()
}

fn host_network_and_sysctls() -> anyhow::Result<()> {
    use kubenode_runtime::SandboxOptions;
    let tag = unique_tag("rh");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let env = env(dir.path(), &tag)?;
        let rt = Rt(Runtime::new(env.config.clone())?);
        let config = SandboxConfig {
            pod: pod(&tag),
            cgroup_parent: env.cgroup_parent.clone(),
        };

        // hostNetwork: no netns; the container sees the host's hostname and links.
        let options = SandboxOptions {
            host_network: true,
            ..Default::default()
        };
        let sb = rt.create_sandbox_with(&config, &options)?;
        ensure!(
            sb.host_network && sb.netns_path.as_os_str().is_empty(),
            "{sb:?}"
        );
        rt.start_sandbox(&sb.id)?;
        let id = start(
            &rt,
            &sb.id,
            &container(&env, "h", "hostname; ls /sys/class/net"),
        )?;
        let st = wait_exited(&rt, &id, Duration::from_secs(10))?;
        let log = std::fs::read_to_string(&st.log_path)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
        ensure!(
            log.contains(&format!("stdout F {}", host.trim())),
            "hostname in log:\n{log}"
        );
        let host_links = std::fs::read_dir("/sys/class/net")?.count();
        ensure!(
            host_links > 1 && log.lines().count() > 2,
            "host links not visible:\n{log}"
        );

        // A privileged container gets the host's devices and all capabilities.
        let mut privileged = container(
            &env,
            "p",
            "ls /dev | wc -l; grep CapEff /proc/self/status; [ $(ls /dev | wc -l) -gt 30 ]",
        );
        privileged.container.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let id = start(&rt, &sb.id, &privileged)?;
        let st = wait_exited(&rt, &id, Duration::from_secs(10))?;
        let log = std::fs::read_to_string(&st.log_path)?;
        ensure!(st.exit_code == Some(0), "privileged: {st:?}\n{log}");
        rt.stop_and_remove_sandbox(&sb.id)?;

        // Pod sysctls are set in the pod's network namespace by the pause container.
        let sysctls = [(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        )]
        .into();
        let sb = rt.create_sandbox_with(
            &config,
            &SandboxOptions {
                sysctls,
                ..Default::default()
            },
        )?;
        rt.start_sandbox(&sb.id)?;
        let id = start(
            &rt,
            &sb.id,
            &container(
                &env,
                "s",
                "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; hostname",
            ),
        )?;
        let st = wait_exited(&rt, &id, Duration::from_secs(10))?;
        let log = std::fs::read_to_string(&st.log_path)?;
        ensure!(
            log.contains("stdout F 0\n") && log.contains("stdout F web\n"),
            "sysctl/hostname:\n{log}"
        );
        rt.stop_and_remove_sandbox(&sb.id)?;
    }
    guard.runc_root(format!("/tmp/kn-{tag}/run/runc")).check()
}
