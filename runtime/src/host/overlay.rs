//! Overlay root filesystems of containers and the pod's shm tmpfs.

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags, MsFlags};

use super::HostError;

pub(super) fn mount_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    // overlayfs wants the top layer first.
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().replace(':', "\\:"))
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

pub(super) fn mount(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), HostError> {
    if lowers.is_empty() {
        return Err(HostError::new(
            "mounting overlay (no image layers)",
            target,
            std::io::Error::other("empty lowerdir"),
        ));
    }
    for d in [upper, work, target] {
        std::fs::create_dir_all(d)
            .map_err(|e| HostError::new("creating overlay directory", d, e))?;
    }
    let options = mount_options(lowers, upper, work);
    if options.len() >= 4000 {
        tracing::warn!(
            len = options.len(),
            "overlay mount options near the page-size limit"
        );
    }
    do_mount(&options, target)
}

fn do_mount(options: &str, target: &Path) -> Result<(), HostError> {
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options),
    )
    .map_err(|e| HostError::new("mounting overlay on", target, e))
}

/// containerd's sandbox shm: `mode=1777,size=67108864`, nosuid/nodev/noexec.
pub(super) fn mount_shm(target: &Path) -> Result<(), HostError> {
    std::fs::create_dir_all(target)
        .map_err(|e| HostError::new("creating shm directory", target, e))?;
    nix::mount::mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=67108864"),
    )
    .map_err(|e| HostError::new("mounting shm tmpfs on", target, e))
}

pub(super) fn unmount(target: &Path) -> Result<(), HostError> {
    if !super::is_mount_point(target) {
        return Ok(());
    }
    umount2(target, MntFlags::MNT_DETACH).map_err(|e| HostError::new("unmounting", target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_layer_first() {
        let o = mount_options(
            &["/l/a".into(), "/l/b".into()],
            Path::new("/c/up"),
            Path::new("/c/work"),
        );
        assert_eq!(o, "lowerdir=/l/b:/l/a,upperdir=/c/up,workdir=/c/work");
    }
}
