//! Privileged trials: run as root, reported as ignored (with the reason printed) otherwise.

pub use libtest_mimic::Trial;

/// Whether the process runs as root (privileged tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A trial that needs root: ignored, never silently passed, when not root.
pub fn privileged(name: &str, test: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> Trial {
    Trial::test(name, move || test().map_err(|e| format!("{e:#}").into()))
        .with_ignored_flag(!is_root())
}

/// Runs the trials with libtest's command-line flags and exits with its status.
pub fn run_tests(trials: Vec<Trial>) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    if !is_root() {
        eprintln!("note: not running as root: privileged tests are ignored (skipped); run as root to run them");
    }
    libtest_mimic::run(&args, trials).exit()
}
