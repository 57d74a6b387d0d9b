//! Named network namespaces: a new netns bind-mounted on a file, like
//! `ip netns add` but at a path of our own (`<run-dir>/netns/<name>`).

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::HostError;

pub(super) fn create(path: &Path) -> Result<(), HostError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| HostError::new("creating directory for netns", path, e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| HostError::new("creating netns mount point", path, e))?;
    let target = path.to_path_buf();
    // unshare(CLONE_NEWNET) changes only the calling thread: do it on a
    // short-lived thread of our own so no other thread ever changes namespace.
    let res = std::thread::spawn(move || -> Result<(), HostError> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| HostError::new("unsharing a network namespace for", &target, e))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| HostError::new("bind-mounting the network namespace on", &target, e))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(HostError::new(
            "creating netns (thread panicked)",
            path,
            std::io::Error::other("panic"),
        ))
    });
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

pub(super) fn remove(path: &Path) -> Result<(), HostError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(HostError::new("unmounting netns", path, e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HostError::new("removing netns file", path, e)),
    }
}
