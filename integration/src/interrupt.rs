//! SIGINT and SIGTERM for the bench binaries: the first signal only raises a flag, which the
//! bench's loops check ([`check`], [`sleep`]); the bench then returns an error, its guards
//! ([`crate::TestAgent`], [`crate::Netns`], [`crate::TestDir`]) remove what it made on the way
//! out, and [`exit`] ends the process with 130 (128 + SIGINT, what a shell reports for Ctrl-C).
//! A second signal ends the process at once, without cleaning up, for a bench stuck in a step.

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

/// Catches SIGINT and SIGTERM for the rest of the process's life. Children get the default
/// dispositions back when they exec.
pub fn install() -> anyhow::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid value; the handler only touches an atomic and
        // calls _exit, both async-signal-safe. SA_RESTART keeps blocking calls going.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            anyhow::bail!(
                "installing the handler of signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error once SIGINT or SIGTERM arrived: put it in every loop of a bench.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, returning early with an error when a signal arrives.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Ends a bench whose work (and guards) are done: 130 when interrupted, 1 with the error on
/// stderr when it failed, 0 otherwise.
pub fn exit(name: &str, result: anyhow::Result<()>) -> ! {
    if interrupted() {
        eprintln!("{name}: interrupted; everything it made is removed");
        std::process::exit(EXIT_INTERRUPTED);
    }
    if let Err(e) = result {
        eprintln!("{name}: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0)
}
