//! Pinned pod namespaces: new network, IPC and UTS namespaces, each bind-mounted on a file of
//! our own (`<run-dir>/{netns,ipcns,utsns}/<name>`), like `ip netns add` for the network and
//! CRI-O's `pinns` for the others. Pinned, they outlive no process in particular: the pause
//! container and every container join them by path, so a container can be created while pause
//! is still starting.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::{HostError, NamespaceFiles};

pub(super) fn create(files: &NamespaceFiles<'_>) -> Result<(), HostError> {
    let mut pins: Vec<(CloneFlags, &'static str, std::path::PathBuf)> = Vec::new();
    if let Some(p) = files.net {
        pins.push((CloneFlags::CLONE_NEWNET, "net", p.to_path_buf()));
    }
    if let Some(p) = files.ipc {
        pins.push((CloneFlags::CLONE_NEWIPC, "ipc", p.to_path_buf()));
    }
    if let Some((p, _)) = files.uts {
        pins.push((CloneFlags::CLONE_NEWUTS, "uts", p.to_path_buf()));
    }
    let Some(first) = pins.first().map(|(_, _, p)| p.clone()) else {
        return Ok(());
    };
    for (_, _, path) in &pins {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HostError::new("creating the directory of namespace file", path, e))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| HostError::new("creating namespace mount point", path, e))?;
    }
    let hostname = files.uts.map(|(_, h)| h.to_string());
    let flags = pins
        .iter()
        .fold(CloneFlags::empty(), |all, (flag, _, _)| all | *flag);
    let targets: Vec<(&'static str, std::path::PathBuf)> =
        pins.iter().map(|(_, kind, p)| (*kind, p.clone())).collect();
    // unshare(2) of these namespaces changes only the calling thread: do it on a short-lived
    // thread of our own so no other thread ever changes namespace.
    let res = std::thread::spawn(move || -> Result<(), HostError> {
        let at = &targets[0].1;
        unshare(flags).map_err(|e| HostError::new("unsharing the pod's namespaces for", at, e))?;
        if let Some(h) = &hostname {
            nix::unistd::sethostname(h)
                .map_err(|e| HostError::new("setting the pod's hostname in", at, e))?;
        }
        for (kind, target) in &targets {
            mount(
                Some(format!("/proc/thread-self/ns/{kind}").as_str()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| HostError::new("bind-mounting the namespace on", target, e))?;
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| {
        Err(HostError::new(
            "creating namespaces (thread panicked)",
            &first,
            std::io::Error::other("panic"),
        ))
    });
    if res.is_err() {
        for (_, _, path) in &pins {
            let _ = remove(path);
        }
    }
    res
}

pub(super) fn remove(path: &Path) -> Result<(), HostError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(HostError::new("unmounting namespace file", path, e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HostError::new("removing namespace file", path, e)),
    }
}
