//! The kill-churn soak's short version (issue 19; the `soak` bench runs it for minutes): one
//! minute of static pods with probes, emptyDirs and Services created, changed and removed at
//! random while the agent is SIGKILLed 8 times. Asserted are counts: every desired pod runs,
//! one runtime container per container, no restart, and nothing left once every pod is gone
//! (runtime containers, shims, namespaces, veths, addresses, mounts, chains, the runtime's
//! state directories, pod and log directories, pod cgroups).
//! The seed is printed (`KUBENODE_SOAK_SEED` repeats a run).

use std::time::{Duration, Instant};

use kubenode_integration::soak::{self, SoakOptions};
use kubenode_integration::{pods, privileged, run_tests, unique_tag, LeakGuard, TestAgent};

fn main() {
    run_tests(vec![
        privileged("kill_churn_soak_converges_without_leaks", kill_churn),
        privileged(
            "a_pod_removed_while_the_agent_is_down_leaves_nothing",
            removed_while_down,
        ),
    ])
}

/// A pod whose manifest goes while the agent is SIGKILLed: the restarted agent tears down its
/// sandbox at start, and the container GC removes what that teardown does not (its log
/// directory); nothing of it is left. Bounded waits, no timing asserted.
fn removed_while_down() -> anyhow::Result<()> {
    let tag = unique_tag("kg");
    let guard = LeakGuard::new(&tag);
    let result = {
        let mut agent = TestAgent::start(&tag)?;
        let r = remove_while_down(&mut agent);
        if r.is_err() {
            eprintln!(
                "--- agent log ({tag}) ---\n{}",
                kubenode_integration::agent::tail(&agent.log(), 80)
            );
        }
        r
    };
    result?;
    guard.check()
}

fn remove_while_down(agent: &mut TestAgent) -> anyhow::Result<()> {
    let baseline = soak::agent_mounts(agent);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: gone\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    \
         command: [sh, -c, \"echo hello; exec sleep 3600\"]\n",
        agent.image
    );
    agent.write_manifest("gone.yaml", &manifest)?;
    let name = agent.pod_name("gone");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !agent
        .pods()?
        .iter()
        .any(|p| p.metadata.name.as_deref() == Some(name.as_str()) && pods::phase(p) == "Running")
    {
        anyhow::ensure!(Instant::now() < deadline, "pod {name} never ran");
        std::thread::sleep(Duration::from_millis(300));
    }
    let logs = std::fs::read_dir(agent.dir.join("logs"))?.count();
    anyhow::ensure!(logs == 1, "{logs} log directories for one pod");
    agent.kill();
    agent.remove_manifest("gone.yaml")?;
    agent.spawn()?;
    // The container GC runs a minute after the sources are ready: wait up to three.
    let deadline = Instant::now() + Duration::from_secs(200);
    let left = loop {
        let left = soak::leftovers(agent, &baseline)?;
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    anyhow::ensure!(left.is_empty(), "left of the removed pod: {left:?}");
    Ok(())
}

fn kill_churn() -> anyhow::Result<()> {
    let seed = std::env::var("KUBENODE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("soak seed {seed} (KUBENODE_SOAK_SEED={seed} repeats this run)");
    let tag = unique_tag("ks");
    let guard = LeakGuard::new(&tag);
    let result = {
        let mut agent = TestAgent::start(&tag)?;
        let opts = SoakOptions {
            duration: Duration::from_secs(60),
            kills: 8,
            slots: 6,
            seed,
            sample_every: None,
        };
        let r = soak::run(&mut agent, &opts);
        if let Ok(report) = &r {
            report.print();
        }
        let r = r.and_then(|report| soak::check(&report));
        if r.is_err() {
            eprintln!(
                "--- agent log ({tag}) ---\n{}",
                kubenode_integration::agent::tail(&agent.log(), 120)
            );
        }
        r
    };
    result?;
    guard.check()
}
