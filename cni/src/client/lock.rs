//! One operation per container at a time: an in-process async lock per container id, plus an
//! flock on `<cache-dir>/locks/<containerid>` so that other processes sharing the cache (another
//! agent, a CLI) wait too.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};

/// Hands out per-container guards.
#[derive(Debug, Default)]
pub struct ContainerLocks {
    dir: PathBuf,
    inner: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while an operation on one container runs.
#[derive(Debug)]
pub struct ContainerGuard {
    path: PathBuf,
    remove: bool,
    _file: Flock<std::fs::File>,
    _task: tokio::sync::OwnedMutexGuard<()>,
}

impl ContainerGuard {
    /// Removes the lock file when the guard is released (after a successful DEL), so lock files
    /// do not pile up; a waiter that had opened it notices and locks a fresh one.
    pub fn remove_on_release(&mut self) {
        self.remove = true;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if self.remove {
            // Still under the flock here: fields (and so the lock) drop after this body.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ContainerLocks {
    /// Lock files go in `<cache_dir>/locks`.
    pub fn new(cache_dir: &Path) -> Self {
        ContainerLocks {
            dir: cache_dir.join("locks"),
            inner: Mutex::default(),
        }
    }

    /// Waits until no other task or process operates on `container_id`.
    pub async fn lock(&self, container_id: &str) -> std::io::Result<ContainerGuard> {
        let m = {
            let mut map = kubenode_fsutil::lock(&self.inner, "CNI container locks");
            map.retain(|_, m| Arc::strong_count(m) > 1);
            map.entry(container_id.to_string()).or_default().clone()
        };
        let task = m.lock_owned().await;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(container_id);
        let locked = path.clone();
        let file = tokio::task::spawn_blocking(move || flock_path(&locked))
            .await
            .map_err(std::io::Error::other)??;
        Ok(ContainerGuard {
            path,
            remove: false,
            _file: file,
            _task: task,
        })
    }
}

/// flock(LOCK_EX) on `path`, retrying if the file was replaced while we waited.
fn flock_path(path: &Path) -> std::io::Result<Flock<std::fs::File>> {
    for _ in 0..100 {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let locked =
            Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
        let same = std::fs::metadata(path)
            .is_ok_and(|m| locked.metadata().is_ok_and(|l| l.ino() == m.ino()));
        if same {
            return Ok(locked);
        }
    }
    Err(std::io::Error::other(format!(
        "lock file {} keeps being replaced",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn serialises_one_container_but_not_others() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Arc::new(ContainerLocks::new(dir.path()));
        let g = locks.lock("a").await.unwrap();
        let other = tokio::time::timeout(Duration::from_secs(2), locks.lock("b")).await;
        assert!(other.is_ok(), "another container is not blocked");
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.lock("a").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "same container waits");
        let mut g = g;
        g.remove_on_release();
        drop(g);
        assert!(!dir.path().join("locks/a").exists(), "lock file removed");
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
