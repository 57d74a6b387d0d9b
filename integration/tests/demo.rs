//! `scripts/demo` leaves nothing behind when it is killed or interrupted: a script killed with
//! SIGKILL leaves its agent running, and the next run stops that agent (and only that one)
//! before removing the rest; a run interrupted while its output pipe is closed (Ctrl-C on
//! `scripts/demo | tee demo.log` ends tee too) still removes everything.
//!
//! The demo runs with `KUBENODE_DEMO_BIN` (this build's kubenode, no install or release build)
//! and `KUBENODE_DEMO_NAME` (a namespace and directories carrying the test's tag). Every wait is
//! bounded; on failure a guard kills what is left and removes it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::{kubenode_bin, privileged, run, run_tests, unique_tag, LeakGuard};

fn main() {
    run_tests(vec![privileged(
        "demo_killed_then_rerun_then_interrupted_with_a_closed_pipe_leaves_nothing",
        demo,
    )])
}

/// Time for the demo to build its node and start its pods (debug binary, loaded machine).
const SETUP: Duration = Duration::from_secs(240);
/// Time for the demo's clean-up (bounded in the script: about 30 s for the pods, 10 s of grace).
const CLEANUP: Duration = Duration::from_secs(120);
const READY_LINE: &str = "The demo node is running";

fn repo() -> PathBuf {
    kubenode_integration::lab::vagrant_dir().join("..")
}

/// A running `scripts/demo`, stdout and stderr into one pipe read by a thread.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Demo {
    fn start(name: &str) -> anyhow::Result<Demo> {
        // `exec ... 2>&1`: one pipe for both, as `scripts/demo 2>&1 | tee demo.log`.
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg("exec scripts/demo 2>&1")
            .current_dir(repo())
            .env("KUBENODE_DEMO_BIN", kubenode_bin())
            .env("KUBENODE_DEMO_NAME", name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SIGINT as at a terminal: a suite started in the background by a non-interactive
        // shell (`scripts/test &`) inherits SIGINT ignored, and bash cannot trap a signal
        // ignored on entry, so the script would never see the Ctrl-C this test sends.
        // SAFETY: `signal` is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting scripts/demo")?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let ready = line.contains(READY_LINE);
                if tx.send(line).is_err() || ready {
                    // Dropping the reader closes the pipe: later writes by the demo find
                    // no reader, as after tee ended.
                    break;
                }
            }
        });
        Ok(Demo {
            child,
            lines,
            output: Vec::new(),
        })
    }

    /// Waits until the demo says its node runs.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETUP;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let ready = line.contains(READY_LINE);
                    self.output.push(line);
                    if ready {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "the demo ended its output early:\n{}",
                        self.output.join("\n")
                    )
                }
            }
        }
        bail!(
            "the demo was not ready after {SETUP:?}:\n{}",
            self.output.join("\n")
        )
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits (bounded) for the script to end.
    fn wait_exit(&mut self, bound: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("scripts/demo did not end within {bound:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field 22 of /proc/PID/stat: the start time, which tells a PID's reuse apart.
/// The start time of `pid` while it runs; `None` once it has exited, also while it waits as a
/// zombie for its parent (a demo agent whose script was killed is reparented to PID 1, which on
/// some machines reaps it only seconds later).
fn starttime(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(") ")?.1;
    let mut fields = after_comm.split(' ');
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18).map(str::to_owned)
}

fn cmdline(pid: &str) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// Live (non-zombie) processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && cmdline(&pid.to_string()).contains(needle))
        .collect()
}

/// Kills and removes whatever a failed run left of demo `name`.
struct Remains {
    name: String,
}

impl Drop for Remains {
    fn drop(&mut self) {
        let name = &self.name;
        for pid in processes_with(&format!("--run-dir /run/{name} ")) {
            // SAFETY: kill(2) on a pid read from /proc; no memory is involved.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let root = format!("/run/{name}/runc");
        if Path::new(&root).exists() {
            if let Ok(list) = kubenode_integration::runc_list(Path::new(&root)) {
                for id in list.iter().filter_map(|c| c["id"].as_str()) {
                    let _ = run(
                        Command::new("runc").args(["--root", &root, "delete", "-f", id]),
                        Duration::from_secs(20),
                    );
                }
            }
        }
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.contains(name.as_str()))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = run(
                    Command::new("umount").args(["-l", p]),
                    Duration::from_secs(20),
                );
            }
        }
        let _ = run(
            Command::new("ip").args(["netns", "del", name]),
            Duration::from_secs(20),
        );
        for dir in [
            format!("/var/lib/{name}"),
            format!("/run/{name}"),
            format!("/var/log/{name}"),
        ] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn demo() -> anyhow::Result<()> {
    let tag = unique_tag("dm");
    let name = format!("kndemo-{tag}");
    let guard = LeakGuard::new(&tag);
    let agent_marker = format!("--run-dir /run/{name} ");
    {
        let _remains = Remains { name: name.clone() };
        // A process the demo did not start, named by a stale PID file: it must survive.
        let mut decoy = Command::new("sleep").arg("300").spawn()?;
        let decoy_pid = decoy.id();
        let decoy_start = starttime(decoy_pid).context("decoy start time")?;
        std::fs::create_dir_all(format!("/run/{name}"))?;
        std::fs::write(
            format!("/run/{name}/demo-agent.pid"),
            format!("{decoy_pid} {decoy_start}\n"),
        )?;
        let result = (|| -> anyhow::Result<()> {
            // 1. A demo killed with SIGKILL: its agent (in its own session) keeps running.
            let mut first = Demo::start(&name)?;
            first.wait_ready()?;
            ensure!(
                starttime(decoy_pid).as_deref() == Some(decoy_start.as_str()),
                "the demo killed a process it did not start (PID {decoy_pid})"
            );
            let agents = processes_with(&agent_marker);
            ensure!(agents.len() == 1, "one demo agent expected: {agents:?}");
            let old_agent = agents[0];
            let old_start = starttime(old_agent).context("agent start time")?;
            first.signal(libc::SIGKILL);
            first.wait_exit(Duration::from_secs(10))?;
            ensure!(
                starttime(old_agent).as_deref() == Some(old_start.as_str()),
                "the agent did not outlive the killed script"
            );

            // 2. Run again: the leftover agent is stopped before the new node starts.
            let mut second = Demo::start(&name)?;
            second.wait_ready()?;
            ensure!(
                starttime(old_agent).as_deref() != Some(old_start.as_str()),
                "the second run left the first run's agent (PID {old_agent}) running:\n{}",
                second.output.join("\n")
            );
            ensure!(
                processes_with(&agent_marker).len() == 1,
                "not one demo agent after the second start"
            );

            // 3. Its output pipe is closed (the reader stopped at the ready line), then
            // Ctrl-C: the clean-up must not die on the closed pipe.
            std::thread::sleep(Duration::from_millis(200));
            second.signal(libc::SIGINT);
            second.wait_exit(CLEANUP)?;

            let agents = processes_with(&agent_marker);
            ensure!(agents.is_empty(), "demo agents left: {agents:?}");
            let netns = run(
                Command::new("ip").args(["netns", "list"]),
                Duration::from_secs(10),
            )?;
            ensure!(
                !String::from_utf8_lossy(&netns.stdout).contains(&name),
                "the demo's namespace is left"
            );
            let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
            ensure!(
                !mounts.contains(&name),
                "mounts of the demo are left:\n{}",
                mounts
                    .lines()
                    .filter(|l| l.contains(&name))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            for dir in [
                format!("/var/lib/{name}"),
                format!("/run/{name}"),
                format!("/var/log/{name}"),
            ] {
                ensure!(!Path::new(&dir).exists(), "{dir} is left");
            }
            ensure!(
                starttime(decoy_pid).as_deref() == Some(decoy_start.as_str()),
                "the demo killed a process it did not start (PID {decoy_pid})"
            );
            Ok(())
        })();
        let _ = decoy.kill();
        let _ = decoy.wait();
        result?;
    }
    guard.check()
}
