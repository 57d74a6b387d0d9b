//! Safe `subPath` binds (upstream `pkg/volume/util/subpath/subpath_linux.go`, after
//! CVE-2017-1002101 and CVE-2021-25741).
//!
//! The subPath is opened one component at a time below an open descriptor of the volume with
//! `openat2(O_PATH|O_NOFOLLOW, RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`: no symlink is followed and
//! nothing resolves outside the volume, so a container that plants a symlink in a shared volume
//! cannot point another container's subPath at the host. Missing components are created as
//! directories (`mkdirat`, with the volume directory's mode, as upstream's `SafeMakeDir`). The
//! opened descriptor's `/proc/self/fd/N` is then bind-mounted at
//! `volume-subpaths/<volume>/<container>/<index>`, which the runtime binds into the container;
//! what the container sees is the object that was checked, not a path that could have been
//! swapped in between. An existing bind there (after an agent restart) is reused.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmodat, fstat, mkdirat, FchmodatFlags, Mode, SFlag};

use super::mounter::{MountError, Mounter};
use super::mountinfo::{self, MountPoint};

/// Why a subPath could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    /// A component is a symlink (or resolves outside the volume): refused.
    #[error("subPath {sub_path:?} of volume {volume}: {component:?} is a symlink or leaves the volume; subPaths never follow symlinks")]
    Symlink {
        /// The volume's directory.
        volume: PathBuf,
        /// The subPath.
        sub_path: String,
        /// The offending component.
        component: String,
    },
    /// The subPath is absolute or has `..`.
    #[error("subPath {0:?} must be a relative path without '..'")]
    Invalid(String),
    /// Opening or creating a component failed.
    #[error("{what} {path}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// To what.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Preparing the bind target failed.
    #[error("creating the bind target {path}: {source}")]
    Target {
        /// The target.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bind mount failed.
    #[error(transparent)]
    Mount(#[from] MountError),
}

fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens `sub_path` below `volume` without following symlinks, creating missing components
/// as directories with the volume's mode. Returns an `O_PATH` descriptor and whether it is a
/// directory.
pub fn open_beneath(volume: &Path, sub_path: &str) -> Result<(OwnedFd, bool), SubPathError> {
    let os = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SubPathError::Os { what, path, source }
    };
    let mut parts = Vec::new();
    for c in Path::new(sub_path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_owned()),
            Component::CurDir => {}
            _ => return Err(SubPathError::Invalid(sub_path.into())),
        }
    }
    let mut fd = nix::fcntl::open(
        volume,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(os("opening the volume", volume))?;
    let perm = std::fs::metadata(volume)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o755);
    let mut at = volume.to_path_buf();
    for part in &parts {
        at.push(part);
        let how = beneath(OFlag::O_PATH | OFlag::O_NOFOLLOW);
        let next = match openat2(fd.as_fd(), part.as_os_str(), how) {
            Err(Errno::ENOENT) => {
                // mkdirat needs a real directory descriptor, not O_PATH.
                let dir = openat2(
                    fd.as_fd(),
                    ".",
                    beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
                )
                .map_err(os("opening", &at))?;
                match mkdirat(
                    dir.as_fd(),
                    part.as_os_str(),
                    Mode::from_bits_truncate(perm),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(os("creating", &at)(e)),
                }
                fchmodat(
                    dir.as_fd(),
                    part.as_os_str(),
                    Mode::from_bits_truncate(perm),
                    FchmodatFlags::NoFollowSymlink,
                )
                .or_else(|e| {
                    if e == Errno::EOPNOTSUPP {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(os("setting the mode of", &at))?;
                tracing::debug!(path = %at.display(), "created a missing subPath directory");
                openat2(fd.as_fd(), part.as_os_str(), how).map_err(os("opening", &at))?
            }
            Err(Errno::ELOOP) | Err(Errno::EXDEV) => {
                return Err(SubPathError::Symlink {
                    volume: volume.into(),
                    sub_path: sub_path.into(),
                    component: part.to_string_lossy().into_owned(),
                })
            }
            Err(e) => return Err(os("opening", &at)(e)),
            Ok(f) => f,
        };
        let st = fstat(next.as_fd()).map_err(os("inspecting", &at))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            return Err(SubPathError::Symlink {
                volume: volume.into(),
                sub_path: sub_path.into(),
                component: part.to_string_lossy().into_owned(),
            });
        }
        fd = next;
    }
    let st = fstat(fd.as_fd()).map_err(os("inspecting", &at))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    Ok((fd, is_dir))
}

/// Binds `sub_path` of the volume at `volume` onto `target` (reusing a bind already there) and
/// returns `target`.
pub fn prepare(
    mounter: &dyn Mounter,
    volume: &Path,
    sub_path: &str,
    target: &Path,
    mounts: &[MountPoint],
) -> Result<PathBuf, SubPathError> {
    if mountinfo::at(mounts, target).is_some() {
        tracing::debug!(target = %target.display(), "subPath bind already mounted; reusing it");
        return Ok(target.into());
    }
    let (fd, is_dir) = open_beneath(volume, sub_path)?;
    let target_err = |source| SubPathError::Target {
        path: target.into(),
        source,
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(target_err)?;
    }
    if is_dir {
        match std::fs::create_dir(target) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(target_err(e)),
            _ => {}
        }
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map_err(target_err)?;
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mounter.bind(&source, target)?;
    drop(fd);
    Ok(target.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::testing::{Call, RecordingMounter};

    #[test]
    fn opens_and_creates_components_below_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir(vol.join("a")).unwrap();
        std::fs::write(vol.join("a/file"), "x").unwrap();
        let (_, dir) = open_beneath(&vol, "a/file").unwrap();
        assert!(!dir);
        let (_, dir) = open_beneath(&vol, "./new/deeper").unwrap();
        assert!(dir);
        let meta = std::fs::metadata(vol.join("new/deeper")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o777,
            "volume mode not kept"
        );
    }

    #[test]
    fn symlinks_are_refused_even_inside_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(vol.join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("escape")).unwrap();
        std::os::unix::fs::symlink("real", vol.join("inside")).unwrap();
        for sub in ["escape", "escape/passwd", "inside", "inside/x"] {
            let e = open_beneath(&vol, sub).unwrap_err();
            assert!(matches!(e, SubPathError::Symlink { .. }), "{sub}: {e}");
        }
        assert!(matches!(
            open_beneath(&vol, "../x").unwrap_err(),
            SubPathError::Invalid(_)
        ));
        assert!(!Path::new("/etc/x").exists());
    }

    #[test]
    fn prepare_binds_the_opened_descriptor_and_reuses_a_bind() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(vol.join("conf")).unwrap();
        std::fs::write(vol.join("conf/app.ini"), "x").unwrap();
        let target = tmp.path().join("volume-subpaths/vol/app/0");
        let m = RecordingMounter::new();
        prepare(&m, &vol, "conf/app.ini", &target, &[]).unwrap();
        assert!(target.is_file(), "a file subPath needs a file target");
        match &m.calls()[..] {
            [Call::Bind { source, target: t }] => {
                assert!(source.starts_with("/proc/self/fd/"), "{}", source.display());
                assert_eq!(t, &target);
            }
            other => panic!("unexpected calls {other:?}"),
        }
        let table = m.mount_points().unwrap();
        prepare(&m, &vol, "conf/app.ini", &target, &table).unwrap();
        assert_eq!(m.calls().len(), 1, "bound twice");
    }
}
