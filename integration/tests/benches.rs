//! The bench binaries stop cleanly: each is started small, sent SIGINT (what Ctrl-C sends) once
//! it has made things (containers, mounts, cgroups, pods), and must exit with 130 having
//! removed everything it made, as the leak guard sees it.
//!
//! `cluster-bench` is also run whole, tiny, and must exit 0 having printed each of its
//! figures (never compared with anything) and left nothing behind.
//!
//! The benches are the debug binaries next to `kubenode` (`cargo build --workspace --bins`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::{kubenode_bin, privileged, run_tests, unique_tag, LeakGuard};

fn main() {
    run_tests(vec![
        privileged(
            "runtime_bench_sigint_removes_containers_mounts_cgroups",
            runtime_bench,
        ),
        privileged(
            "kubelet_bench_sigint_removes_pods_agent_and_node",
            kubelet_bench,
        ),
        privileged("volume_bench_sigint_removes_its_mounts", volume_bench),
        privileged("exit_bench_sigint_removes_pods_agent_and_node", exit_bench),
        privileged(
            "cluster_bench_sigint_removes_api_pods_agent_and_node",
            cluster_bench_sigint,
        ),
        privileged(
            "cluster_bench_tiny_run_prints_its_figures_and_cleans_up",
            cluster_bench_tiny,
        ),
    ])
}

/// A bench binary of this build.
fn bench_bin(name: &str) -> anyhow::Result<PathBuf> {
    let bin = kubenode_bin().with_file_name(name);
    ensure!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --workspace --bins`",
        bin.display()
    );
    Ok(bin)
}

/// A running bench whose output goes to a file. Dropping it (a failed test) interrupts it and
/// waits for its cleanup, then kills it.
struct Bench {
    child: Option<Child>,
    log: PathBuf,
}

impl Bench {
    fn start(cmd: &mut Command, log: &Path) -> anyhow::Result<Bench> {
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Bench {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ready` (bounded by `limit`) while the bench runs; an early exit is an error.
    fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        ready: impl Fn() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !ready() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "the bench exited ({status}) before {what}:\n{}",
                    self.output()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "no {what} within {limit:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Sends `signal` and waits (bounded) for the exit; returns the exit code.
    fn signal_and_wait(&mut self, signal: libc::c_int, limit: Duration) -> anyhow::Result<i32> {
        let mut child = self.child.take().context("already stopped")?;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return status
                    .code()
                    .with_context(|| format!("the bench ended by a signal: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the bench did not exit within {limit:?} of the signal:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_and_wait(libc::SIGINT, Duration::from_secs(120));
        }
    }
}

/// Interrupts a bench once it made what `made` sees, and checks the exit code, the guard and
/// that its work directory `dir` is gone.
fn interrupt_and_check(
    bench: &mut Bench,
    guard: &LeakGuard,
    dir: &Path,
    made: impl Fn(&[String]) -> bool,
    limit: Duration,
) -> anyhow::Result<()> {
    bench.wait_until("anything made", limit, || made(&guard.leftovers()))?;
    let code = bench.signal_and_wait(libc::SIGINT, Duration::from_secs(180))?;
    ensure!(
        code == 130,
        "exit code {code} after SIGINT, not 130:\n{}",
        bench.output()
    );
    ensure!(
        bench.output().contains("interrupted"),
        "the bench did not say it was interrupted:\n{}",
        bench.output()
    );
    guard.check()?;
    ensure!(!dir.exists(), "{} is left", dir.display());
    Ok(())
}

/// runtime-bench names everything `knbench-<pid>`: wait until it has a container, a mount or
/// a cgroup, then interrupt it.
fn runtime_bench() -> anyhow::Result<()> {
    let bin = bench_bin("runtime-bench")?;
    let log = PathBuf::from(format!("/tmp/kn-{}-runtime-bench.log", unique_tag("br")));
    let mut bench = Bench::start(
        Command::new(bin)
            .args(["--runs", "100000", "--containers", "2"])
            .arg("--shim")
            .arg(kubenode_bin()),
        &log,
    )?;
    let tag = format!("knbench-{}", bench.pid());
    let guard = LeakGuard::new(&tag)
        .runc_root(format!("/tmp/{tag}/run/runc"))
        .runc_root(format!("/tmp/{tag}/floor-runc"));
    let result = interrupt_and_check(
        &mut bench,
        &guard,
        Path::new(&format!("/tmp/{tag}")),
        |found| {
            found.iter().any(|l| {
                l.starts_with("runc:") || l.starts_with("cgroup:") || l.starts_with("mount:")
            })
        },
        Duration::from_secs(120),
    );
    drop(bench);
    let _ = std::fs::remove_file(&log);
    result
}

/// kubelet-bench with a tag of ours: wait until its agent runs a pod (recording the pod's UID
/// so that the guard looks for its cgroups too), then interrupt it.
fn kubelet_bench() -> anyhow::Result<()> {
    agent_bench("kubelet-bench", "bk", "KUBELET_BENCH_TAG", &[])
}

/// exit-bench, like kubelet-bench, runs a test agent named after its tag (its pods crash-loop
/// by design).
fn exit_bench() -> anyhow::Result<()> {
    agent_bench("exit-bench", "be", "EXIT_BENCH_TAG", &["--runs", "1000"])
}

/// cluster-bench, like kubelet-bench, runs a test agent named after its tag (joined to a
/// stand-in API server in the bench's process).
fn cluster_bench_sigint() -> anyhow::Result<()> {
    agent_bench(
        "cluster-bench",
        "bc",
        "CLUSTER_BENCH_TAG",
        &["--runs", "1000"],
    )
}

/// A whole run of cluster-bench, as small as it goes: exit 0, each figure printed, nothing
/// left. The figures themselves are not checked (a busy machine changes them).
fn cluster_bench_tiny() -> anyhow::Result<()> {
    let bin = bench_bin("cluster-bench")?;
    let tag = unique_tag("bt");
    let guard = LeakGuard::new(&tag);
    let log = PathBuf::from(format!("/tmp/kn-{tag}-cluster-bench.log"));
    let mut bench = Bench::start(
        Command::new(bin)
            .args(["--runs", "2", "--pods", "3", "--window", "5"])
            .env("CLUSTER_BENCH_TAG", &tag),
        &log,
    )?;
    let result = (|| {
        let pods = PathBuf::from(format!("/tmp/kn-{tag}/root/pods"));
        let mut child = bench.child.take().context("not running")?;
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = loop {
            // Every pod the agent made is looked for by the guard (its cgroups too).
            for e in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
                LeakGuard::track_pod(&tag, &e.file_name().to_string_lossy());
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bench.child = Some(child);
                bail!(
                    "cluster-bench still running after 600 s:\n{}",
                    bench.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = bench.output();
        ensure!(status.success(), "cluster-bench failed ({status}):\n{out}");
        for line in [
            "API pod start (2 pods",
            "static pod start (2 pods",
            "ratio API/static (p50): ",
            "3 API pods: all Running and Ready in the API ",
            "requests to the API server with 3 pods over 5 s: ",
            "agent RSS with 3 pods: ",
        ] {
            ensure!(
                out.lines().any(|l| l.starts_with(line)),
                "no line {line:?} in:\n{out}"
            );
        }
        guard.check()?;
        ensure!(
            !Path::new(&format!("/tmp/kn-{tag}")).exists(),
            "/tmp/kn-{tag} is left"
        );
        Ok(())
    })();
    drop(bench);
    let _ = std::fs::remove_file(&log);
    result
}

/// A bench that runs a test agent in `/tmp/kn-<tag>`, the tag given in the environment
/// variable `tag_env`: wait until the agent has a pod (its UID recorded so that the guard
/// looks for its cgroups too), then interrupt the bench and check it left nothing.
fn agent_bench(name: &str, prefix: &str, tag_env: &str, args: &[&str]) -> anyhow::Result<()> {
    let bin = bench_bin(name)?;
    let tag = unique_tag(prefix);
    let log = PathBuf::from(format!("/tmp/kn-{tag}-{name}.log"));
    let guard = LeakGuard::new(&tag);
    let mut bench = Bench::start(Command::new(bin).args(args).env(tag_env, &tag), &log)?;
    let pods = PathBuf::from(format!("/tmp/kn-{tag}/root/pods"));
    let result = (|| {
        bench.wait_until("a pod", Duration::from_secs(180), || {
            std::fs::read_dir(&pods).is_ok_and(|mut d| d.next().is_some())
        })?;
        for e in std::fs::read_dir(&pods)?.flatten() {
            LeakGuard::track_pod(&tag, &e.file_name().to_string_lossy());
        }
        interrupt_and_check(
            &mut bench,
            &guard,
            Path::new(&format!("/tmp/kn-{tag}")),
            |found| found.iter().any(|l| l.starts_with("pod cgroup:")),
            Duration::from_secs(120),
        )
    })();
    drop(bench);
    let _ = std::fs::remove_file(&log);
    result
}

/// volume-bench works in `/tmp/kn-volbench-<pid>`: wait until it has tmpfs volumes mounted,
/// then interrupt it.
fn volume_bench() -> anyhow::Result<()> {
    let bin = bench_bin("volume-bench")?;
    let log = PathBuf::from(format!("/tmp/kn-{}-volume-bench.log", unique_tag("bv")));
    let mut bench = Bench::start(Command::new(bin).args(["--pods", "3000"]), &log)?;
    let tag = format!("kn-volbench-{}", bench.pid());
    let guard = LeakGuard::new(&tag);
    let result = interrupt_and_check(
        &mut bench,
        &guard,
        Path::new(&format!("/tmp/{tag}")),
        |found| found.iter().any(|l| l.starts_with("mount:")),
        Duration::from_secs(300),
    );
    drop(bench);
    let _ = std::fs::remove_file(&log);
    result
}
