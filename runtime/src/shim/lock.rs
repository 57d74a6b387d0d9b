//! The bundle lock: how a restarted agent knows whether a shim still lives for a bundle,
//! including one whose `runtime create` is still running, started by an agent that was
//! SIGKILLed before the shim reported.
//!
//! The agent makes `<bundle>/shim.lock` (empty) before it starts the shim. The shim opens it
//! (never creating it) and takes an exclusive `flock(2)` on it first thing, before `runtime
//! create`, and holds it until it exits: the kernel drops the lock with the shim, however it
//! ends. Recovery takes the same lock to settle a bundle whose record is half-made: while a
//! shim holds it, the container it made (or is making) is deleted until the shim exits; once
//! recovery holds it, it unlinks the file and only then removes the bundle. A shim that opened
//! the file before the unlink and locks it after sees it unlinked (`st_nlink` 0) and gives
//! up before `runtime create`; one that comes later finds no file. So no `runtime create` of
//! a half-made record can run after recovery removed that record: nothing is created that no
//! record knows.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in a bundle.
pub const SHIM_LOCK: &str = "shim.lock";

/// The lock file of `bundle`.
pub fn lock_path(bundle: &Path) -> PathBuf {
    bundle.join(SHIM_LOCK)
}

/// Makes the lock file of `bundle` (the agent, before it starts the shim).
pub fn create(bundle: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(bundle))
        .map(drop)
}

/// Takes the lock of `bundle` for the shim's whole life (the shim, before `runtime create`).
/// Fails when the file is missing, held (recovery settles the bundle), or was unlinked
/// (recovery removed the bundle): the shim must then create nothing.
pub fn hold(bundle: &Path) -> Result<Flock<File>, String> {
    let path = lock_path(bundle);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        format!(
            "locking {}: {e} (the agent is removing this bundle)",
            path.display()
        )
    })?;
    let linked = held
        .metadata()
        .map_err(|e| format!("checking {}: {e}", path.display()))?
        .nlink();
    if linked == 0 {
        return Err(format!(
            "{} was removed: the agent removed this bundle",
            path.display()
        ));
    }
    Ok(held)
}

/// What [`try_settle`] found.
#[derive(Debug)]
pub enum Settle {
    /// No shim holds the bundle, and none can start creating in it any more: the lock file
    /// is unlinked (or there was none). Keep the value until the bundle is removed.
    Settled(Option<Flock<File>>),
    /// A shim holds the lock: it lives (maybe still in `runtime create`).
    Held,
}

/// Tries once to take the lock of `bundle` for recovery (see the module docs).
pub fn try_settle(bundle: &Path) -> std::io::Result<Settle> {
    let path = lock_path(bundle);
    let file = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settle::Settled(None)),
        Err(e) => return Err(e),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            Ok(Settle::Settled(Some(held)))
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(Settle::Held),
        Err((_, e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shim_cannot_lock_a_bundle_recovery_settled() {
        let dir = tempfile::tempdir().unwrap();
        // No lock file: nothing to wait for, and a shim refuses to run.
        assert!(matches!(try_settle(dir.path()), Ok(Settle::Settled(None))));
        assert!(hold(dir.path()).unwrap_err().contains("opening"));

        create(dir.path()).unwrap();
        // A shim that opened the file before recovery unlinked it sees it unlinked.
        let early = OpenOptions::new()
            .write(true)
            .open(lock_path(dir.path()))
            .unwrap();
        let settled = try_settle(dir.path()).unwrap();
        assert!(matches!(settled, Settle::Settled(Some(_))));
        assert!(!lock_path(dir.path()).exists());
        drop(settled);
        let late = Flock::lock(early, FlockArg::LockExclusiveNonblock).unwrap();
        assert_eq!(late.metadata().unwrap().nlink(), 0);
        drop(late);
        assert!(hold(dir.path()).is_err());
    }

    #[test]
    fn recovery_waits_while_a_shim_holds_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path()).unwrap();
        let shim = hold(dir.path()).unwrap();
        assert!(matches!(try_settle(dir.path()), Ok(Settle::Held)));
        assert!(lock_path(dir.path()).exists());
        // A second shim for the same bundle is refused.
        assert!(hold(dir.path()).unwrap_err().contains("locking"));
        drop(shim);
        assert!(matches!(
            try_settle(dir.path()),
            Ok(Settle::Settled(Some(_)))
        ));
    }
}
