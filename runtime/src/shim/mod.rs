//! The shim: a small monitor process per container, between the agent and
//! the container, so the agent can crash, restart or upgrade while every
//! container keeps running and its output and exit status stay recorded.
//!
//! **One shim per container, not per pod.** A per-pod shim saves a process
//! per container, but it must then multiplex the lifecycles, pipes and logs of
//! many containers, and one bug or OOM kill in it loses the status of the
//! whole pod. A per-container shim is a plain sequential program (no threads,
//! no async runtime, a `poll(2)` loop over two pipes and a signalfd) whose
//! footprint is small (measured by `runtime-bench` with 10 containers:
//! ~0.23 MiB PSS per container as the standalone `kubenode-shim` binary,
//! ~0.85 MiB as `kubenode shim`, most of it the relocated read-only data of
//! the big binary), and its life is exactly
//! its container's: it starts with `runtime create` and exits after recording
//! the exit. That is conmon's model, which CRI-O has proven at scale.
//!
//! Protocol with the agent ([`launch::ProcessShimLauncher`]):
//! 1. the agent runs `kubenode shim <args>` with stdout a pipe;
//! 2. the shim forks; the parent exits at once (the agent reaps it), the child
//!    calls `setsid` and `PR_SET_CHILD_SUBREAPER`, so it is detached from the
//!    agent and becomes the container's parent once `runtime create` exits, and
//!    takes the bundle's lock (`shim.lock`, made by the agent; see [`lock`]) for
//!    its whole life, or gives up when it cannot;
//! 3. it creates the container's stdout/stderr pipes and runs
//!    `runtime create --bundle --pid-file`, then reports `ok <pid> <shim-pid>`
//!    or `error <message>` on the pipe and closes it;
//! 4. it copies output into the CRI log until the container exits, then drains
//!    the pipes, writes the exit record atomically and exits.
//!
//! A container with `stdin` or `tty` also gets an attach socket ([`attach`]): the shim keeps
//! the write end of its stdin pipe, or the master of its terminal (`runc create
//! --console-socket`), and serves both, with the live output, to `kubectl attach`.

mod args;
pub mod attach;
mod exit;
pub mod launch;
pub mod lock;
mod log;
mod monitor;
mod streams;

use std::ffi::OsString;

pub use args::{ShimArgs, DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE};
pub use exit::{oom_kills, ExitRecord};
pub use launch::{ShimLauncher, ShimStarted};
pub use log::{timestamp, CriLog, LineSplitter, Stream, MAX_LINE};

/// Entry point of `kubenode shim ...`: `args` is the whole argument vector
/// (anything before the first `--flag` is ignored). Returns the exit code of
/// the process that returns from it (the parent returns 0 at once).
///
/// # Safety
///
/// The process must have a single thread when this is called: the shim
/// forks and the child goes on running ordinary Rust code (allocations,
/// `std::process::Command`), which is only sound after `fork` in a
/// single-threaded process. Call it first thing in `main`.
pub unsafe fn run(args: &[OsString]) -> i32 {
    monitor::run(args)
}
