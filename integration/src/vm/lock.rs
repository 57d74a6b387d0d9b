//! An exclusive `flock(2)` on a file, held until drop: serializes test processes that share one
//! fixed resource (the kernel cache, the NFS port 2049).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a test waits for another test process to release a lock.
const WAIT: Duration = Duration::from_secs(600);

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Opens (creating) `path` and takes an exclusive lock on it, waiting at most 10 minutes.
    pub fn acquire(path: &Path) -> anyhow::Result<FileLock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let deadline = Instant::now() + WAIT;
        loop {
            // SAFETY: flock on a file descriptor we own; LOCK_NB makes it return at once.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} still locked by another test after {WAIT:?}",
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
