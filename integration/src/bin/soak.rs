//! soak: the kill-churn soak of issue 19 for minutes (`tests/soak.rs` runs one minute in CI).
//! Static pods with probes, emptyDirs and Services are created, changed and removed at random
//! while the agent is SIGKILLed at random moments and restarted; then the node must have
//! converged with nothing spurious, and once every pod is removed nothing may be left. Prints
//! the counts, and the agent's RSS and CPU sampled every minute.
//!
//! Run as root: `cargo run --release -p kubenode-integration --bin soak [-- --minutes 10
//! --kills 20 --slots 10 --seed N]` (it uses the `kubenode` binary of the same profile). Exits
//! 1 when the soak found a failure; Ctrl-C (SIGINT) or SIGTERM stops it, removes its pods, agent
//! and node, and exits with 130. When the soak fails, the agent's log is kept in
//! `$TMPDIR/soak-<tag>-agent.log`.

use std::time::Duration;

use kubenode_integration::soak::{self, SoakOptions};
use kubenode_integration::{bench_arg, interrupt, unique_tag, LeakGuard, TestAgent};

fn main() {
    let result = interrupt::install().and_then(|()| bench());
    interrupt::exit("soak", result)
}

fn bench() -> anyhow::Result<()> {
    let minutes = bench_arg("--minutes", 10).max(1);
    let seed = bench_arg("--seed", fastrand::u64(..));
    let opts = SoakOptions {
        duration: Duration::from_secs(60 * minutes),
        kills: bench_arg("--kills", 20) as u32,
        slots: bench_arg("--slots", 10).max(1) as usize,
        seed,
        sample_every: Some(Duration::from_secs(60)),
    };
    println!(
        "soak: {minutes} min, {} kills, {} slots, seed {seed}",
        opts.kills, opts.slots
    );
    let tag = std::env::var("SOAK_TAG").unwrap_or_else(|_| unique_tag("soak"));
    let guard = LeakGuard::new(&tag);
    let report = {
        let mut agent = TestAgent::start(&tag)?;
        let report = soak::run(&mut agent, &opts)?;
        if soak::check(&report).is_err() {
            // the agent's directory goes with it: keep its log for the post-mortem
            let kept = std::env::temp_dir().join(format!("soak-{tag}-agent.log"));
            if std::fs::write(&kept, agent.log()).is_ok() {
                println!(
                    "soak: failed; the agent's log is kept in {}",
                    kept.display()
                );
            }
        }
        report
    };
    report.print();
    let left = guard.leftovers();
    println!("soak: left after the agent was removed: {}", left.len());
    for l in &left {
        println!("  {l}");
    }
    soak::check(&report)?;
    anyhow::ensure!(left.is_empty(), "leftovers after the agent was removed");
    Ok(())
}
