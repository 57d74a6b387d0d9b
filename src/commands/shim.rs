//! `kubenode shim`: the per-container monitor (hidden subcommand). The agent
//! starts it; see `kubenode_runtime::shim` for what it does and why.

use std::ffi::OsString;

/// Runs the shim with the full argument vector; returns the process exit code.
/// Called before any thread or async runtime exists (the shim forks).
pub fn run(args: Vec<OsString>) -> i32 {
    // SAFETY: main calls this before starting any thread, runtime or logging,
    // which is the single-threaded precondition of `shim::run`.
    unsafe { kubenode_runtime::shim::run(&args) }
}
