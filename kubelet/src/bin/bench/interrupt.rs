//! SIGINT and SIGTERM for this crate's bench binaries (each includes this file): the first
//! signal only raises a flag, which the bench's loops check ([`check`], [`sleep`]); the bench
//! then stops, removes what it made on the way out, and exits with [`EXIT_INTERRUPTED`]
//! (128 + SIGINT, what a shell reports for Ctrl-C). A second signal exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The exit status of an interrupted bench.
pub const EXIT_INTERRUPTED: i32 = 130;

extern "C" fn on_signal(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(EXIT_INTERRUPTED) };
    }
}

/// Catches SIGINT and SIGTERM (children get the default dispositions back when they exec).
pub fn install() -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let handler = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
        unsafe { sigaction(sig, &handler) }?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error a bench's steps return once a signal arrived.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// An error once SIGINT or SIGTERM arrived: put it in every loop of a bench.
#[allow(dead_code)] // not every bench that includes this file has a synchronous loop
pub fn check() -> Result<(), Interrupted> {
    if interrupted() {
        return Err(Interrupted);
    }
    Ok(())
}

/// Sleeps `d` on the tokio runtime, returning early with an error when a signal arrives.
#[allow(dead_code)] // not every bench that includes this file is async
pub async fn sleep(d: Duration) -> Result<(), Interrupted> {
    let end = Instant::now() + d;
    loop {
        if interrupted() {
            return Err(Interrupted);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(left.min(Duration::from_millis(50))).await;
    }
}
