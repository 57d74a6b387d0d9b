//! Exec probes at density through the real runtime: a `kubenode agent` with
//! `--pods N` busybox pods (default 20), each with an exec liveness probe (`true`, period 1 s);
//! prints the agent's own CPU and its children's (`runc exec` and what it runs) as shares of
//! one core over `--seconds S` (default 20), from `/proc/<agent>/stat`.
//!
//! With `--baseline`, the same pods without probes: the difference is the probes' cost.
//!
//! Run as root: `cargo run -p kubenode-integration --bin probe-exec-bench` (it uses the
//! `kubenode` binary of the same profile; the children's share does not depend on it).
//! Ctrl-C (SIGINT) or SIGTERM stops it and removes its pods, agent and node before it exits
//! with 130.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kubenode_integration::{bench_arg, interrupt, unique_tag, TestAgent};

/// `(own CPU, waited-for children's CPU)` of process `pid`, in clock ticks.
fn ticks(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime, stime, cutime, cstime are fields 14..=17: indices 11..=14 here.
    Ok((f[11] + f[12], f[13] + f[14]))
}

fn main() {
    let result = interrupt::install().and_then(|()| bench());
    interrupt::exit("probe-exec-bench", result)
}

/// The whole bench; everything it makes is owned by the agent, dropped on the way out.
fn bench() -> anyhow::Result<()> {
    let pods = bench_arg("--pods", 20) as usize;
    let seconds = bench_arg("--seconds", 20);
    let baseline = std::env::args().any(|a| a == "--baseline");
    let probe = if baseline {
        ""
    } else {
        "    livenessProbe:\n      exec: {command: [\"true\"]}\n      periodSeconds: 1\n"
    };
    let tag = unique_tag("pxb");
    let agent = TestAgent::start(&tag)?;
    let mut yaml = String::new();
    for i in 0..pods {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [\"sleep\", \"3600\"]\n{probe}",
            agent.image
        ));
    }
    agent.write_manifest("pods.yaml", &yaml)?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        interrupt::check()?;
        let running = agent
            .pods()?
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_deref()?.first()?.state.as_ref())
                    .is_some_and(|s| s.running.is_some())
            })
            .count();
        if running == pods {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {running} of {pods} pods running after 180 s");
        }
        interrupt::sleep(Duration::from_millis(500))?;
    }
    interrupt::sleep(Duration::from_secs(3))?;
    let pid = agent.pid().context("agent pid")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (own0, children0) = ticks(pid)?;
    interrupt::sleep(Duration::from_secs(seconds))?;
    let (own1, children1) = ticks(pid)?;
    let share = |t: u64| t as f64 / hz / seconds as f64 * 100.0;
    let unhealthy = agent
        .events()?
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Unhealthy"))
        .count();
    if baseline {
        println!("baseline: {pods} pods without probes, {seconds} s window");
    } else {
        println!(
            "exec probes through runc: {pods} pods, {pods} probes/s nominal (period 1 s), {seconds} s window"
        );
    }
    println!(
        "  agent CPU: {:.2} % of one core; runc exec and the probe commands: {:.2} %",
        share(own1 - own0),
        share(children1 - children0)
    );
    if !baseline {
        println!(
            "  per probe: {:.1} ms of CPU in total",
            (own1 - own0 + children1 - children0) as f64 / hz * 1000.0
                / (pods as f64 * seconds as f64)
        );
    }
    println!("  Unhealthy events: {unhealthy}");
    Ok(())
}
