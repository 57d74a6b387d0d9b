//! The kill-churn soak's short version (issue 19; the `soak` bench runs it for minutes): one
//! minute of static pods with probes, emptyDirs and Services created, changed and removed at
//! random while the agent is SIGKILLed 8 times. Asserted are counts: every desired pod runs,
//! one runtime container per container, no restart, and nothing left once every pod is gone
//! (runtime containers, shims, namespaces, veths, addresses, mounts, chains, the runtime's
//! state directories, pod and log directories, pod cgroups).
//! The seed is printed (`KUBENODE_SOAK_SEED` repeats a run).

use std::time::Duration;

use kubenode_integration::soak::{self, SoakOptions};
use kubenode_integration::{privileged, run_tests, unique_tag, LeakGuard, TestAgent};

fn main() {
    run_tests(vec![privileged(
        "kill_churn_soak_converges_without_leaks",
        kill_churn,
    )])
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
