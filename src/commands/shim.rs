//! `kubenode shim`: the per-container monitor (hidden subcommand).

use std::ffi::OsString;

/// Runs the shim with the full argument vector; returns the process exit code.
pub fn run(_args: Vec<OsString>) -> i32 {
    eprintln!("kubenode shim: not implemented yet");
    2
}
