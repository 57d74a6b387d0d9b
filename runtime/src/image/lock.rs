//! Locks that make concurrent pulls do each piece of work once: a per-key
//! async mutex inside the process, and `flock(2)` on a lock file across
//! processes. A store-wide reader/writer lock keeps `remove`'s garbage
//! collection from deleting content a pull in progress has just written.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::error::{ImageError, Result};

/// Lock files live in `dir`; in-process waiters queue on async locks first so
/// they do not each tie up a blocking thread.
#[derive(Debug)]
pub(crate) struct Locks {
    dir: PathBuf,
    keyed: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    gc: Arc<RwLock<()>>,
}

/// A held exclusive lock on one key; released on drop.
#[derive(Debug)]
pub(crate) struct KeyLock {
    _file: Flock<File>,
    _guard: OwnedMutexGuard<()>,
}

/// A held store-wide lock (shared for pulls, exclusive for garbage collection).
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: Flock<File>,
    _shared: Option<OwnedRwLockReadGuard<()>>,
    _exclusive: Option<OwnedRwLockWriteGuard<()>>,
}

impl Locks {
    pub(crate) fn new(dir: PathBuf) -> Locks {
        Locks {
            dir,
            keyed: Mutex::new(HashMap::new()),
            gc: Arc::new(RwLock::new(())),
        }
    }

    /// Locks `key` (e.g. `blob-<hex>`, `snapshot-<hex>`, `index`) exclusively.
    pub(crate) async fn key(&self, key: &str) -> Result<KeyLock> {
        let mutex = {
            let mut map = kubenode_fsutil::lock(&self.keyed, "image key locks");
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&m));
                    m
                }
            }
        };
        let guard = mutex.lock_owned().await;
        let file = flock(
            self.dir.join(format!("{key}.lock")),
            FlockArg::LockExclusive,
        )
        .await?;
        Ok(KeyLock {
            _file: file,
            _guard: guard,
        })
    }

    /// The store-wide lock held for the duration of a pull or import.
    pub(crate) async fn store_shared(&self) -> Result<StoreLock> {
        let guard = self.gc.clone().read_owned().await;
        let file = flock(self.dir.join("store.lock"), FlockArg::LockShared).await?;
        Ok(StoreLock {
            _file: file,
            _shared: Some(guard),
            _exclusive: None,
        })
    }

    /// The store-wide lock held while removing and garbage-collecting.
    pub(crate) async fn store_exclusive(&self) -> Result<StoreLock> {
        let guard = self.gc.clone().write_owned().await;
        let file = flock(self.dir.join("store.lock"), FlockArg::LockExclusive).await?;
        Ok(StoreLock {
            _file: file,
            _shared: None,
            _exclusive: Some(guard),
        })
    }
}

impl Locks {
    /// The exclusive store lock if nobody (in any process) holds the store
    /// lock right now; `None` otherwise. Never waits.
    pub(crate) fn try_store_exclusive(&self) -> Option<StoreLock> {
        let guard = self.gc.clone().try_write_owned().ok()?;
        let file = lock_file(
            &self.dir.join("store.lock"),
            FlockArg::LockExclusiveNonblock,
        )
        .ok()?;
        Some(StoreLock {
            _file: file,
            _shared: None,
            _exclusive: Some(guard),
        })
    }
}

async fn flock(path: PathBuf, arg: FlockArg) -> Result<Flock<File>> {
    let p = path.clone();
    tokio::task::spawn_blocking(move || lock_file(&p, arg))
        .await
        .map_err(|e| ImageError::io("locking", &path)(std::io::Error::other(e)))?
}

fn lock_file(path: &Path, arg: FlockArg) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(ImageError::io("opening lock file", path))?;
    Flock::lock(file, arg).map_err(|(_, errno)| ImageError::io("locking", path)(errno.into()))
}
