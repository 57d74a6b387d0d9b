//! `kubenode-shim`: the per-container monitor as its own small executable.
//!
//! The same program as the hidden `kubenode shim` subcommand; being a much
//! smaller binary, it dirties far fewer pages when the dynamic loader applies
//! its relocations, which keeps the private memory of each shim low (see
//! `runtime-bench`). Point `RuntimeConfig::shim_binary` at it to use it.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // SAFETY: first thing in main: this process has a single thread.
    std::process::exit(unsafe { kubenode_runtime::shim::run(&args) });
}
