//! The scratch directory of the volume benches (`volume-bench`, `objects-bench`; each includes
//! this file next to `interrupt.rs`): the bench runs in it, and it is unmounted and removed at
//! the end, also when a step fails or the bench is interrupted.

use std::path::Path;

/// What a bench's run returns.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Runs `run` in `dir` with the interrupt handler installed, removes `dir` whatever happened,
/// and exits as an interrupted (130) or failed (1) bench when it was one. `name` prefixes the
/// messages.
pub fn run_in(name: &str, dir: &Path, run: impl FnOnce(&Path) -> Result<()>) {
    let result = crate::interrupt::install()
        .map_err(Into::into)
        .and_then(|()| run(dir));
    cleanup(dir);
    if crate::interrupt::interrupted() {
        eprintln!("{name}: interrupted; everything it made is removed");
        std::process::exit(crate::interrupt::EXIT_INTERRUPTED);
    }
    if let Err(e) = result {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

/// Unmounts anything left below `dir` (a failed run), then removes it; a mount that stays
/// keeps the directory (never removed through a mount).
fn cleanup(dir: &Path) {
    use kubenode_kubelet::volume::mountinfo;
    let mounts = mountinfo::read().unwrap_or_default();
    for m in mountinfo::under(&mounts, dir) {
        let _ = nix::mount::umount2(&m.target, nix::mount::MntFlags::MNT_DETACH);
    }
    if mountinfo::read()
        .map(|m| mountinfo::under(&m, dir).is_empty())
        .unwrap_or(false)
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}
