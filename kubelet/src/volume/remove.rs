//! Removing a pod's directory without ever touching a mounted volume.
//!
//! `remove_dir_all` on a directory with a live NFS or tmpfs mount below it would delete the
//! volume's files (on NFS: the server's). [`remove_dir_safely`] first refuses when the mount
//! table lists anything at or below the directory, and then, while deleting, refuses to
//! descend into a directory on another device (`st_dev`): a mount that appeared in between, or
//! one the table missed, stops the removal instead of being emptied.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kubenode_fsutil::if_present;

use super::mountinfo::{self, MountPoint};

/// Why a directory was (partly) left in place.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// Something is still mounted at or below the directory.
    #[error("{0} is still mounted; refusing to remove it")]
    Mounted(PathBuf),
    /// A directory below is on another filesystem (a mount point).
    #[error("{0} is on another filesystem (a mount point); refusing to descend into it")]
    CrossesMount(PathBuf),
    /// A file system operation failed.
    #[error("removing {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RemoveError + '_ {
    move |source| RemoveError::Io {
        path: path.into(),
        source,
    }
}

/// Removes `dir` and its contents unless anything at or below it is mounted (per `mounts`), and
/// without descending into another filesystem. A missing `dir` is fine.
pub fn remove_dir_safely(dir: &Path, mounts: &[MountPoint]) -> Result<(), RemoveError> {
    let Some(meta) = if_present(std::fs::symlink_metadata(dir)).map_err(io(dir))? else {
        return Ok(());
    };
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if let Some(m) = mountinfo::under(mounts, &real).first() {
        return Err(RemoveError::Mounted(m.target.clone()));
    }
    if !meta.is_dir() {
        return std::fs::remove_file(dir).map_err(io(dir));
    }
    empty(dir, meta.dev())?;
    std::fs::remove_dir(dir).map_err(io(dir))
}

fn empty(dir: &Path, dev: u64) -> Result<(), RemoveError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(RemoveError::CrossesMount(path));
            }
            empty(&path, dev)?;
            std::fs::remove_dir(&path).map_err(io(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_tree_with_symlinks_without_following_them() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let pod = tmp.path().join("pod");
        std::fs::create_dir_all(pod.join("volumes/a/b")).unwrap();
        std::fs::write(pod.join("volumes/a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, pod.join("volumes/a/link")).unwrap();
        remove_dir_safely(&pod, &[]).unwrap();
        assert!(!pod.exists());
        assert!(outside.join("keep").exists(), "followed a symlink out");
        remove_dir_safely(&pod, &[]).unwrap();
    }

    #[test]
    fn refuses_when_something_below_is_mounted() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = tmp.path().join("pod");
        let vol = pod.join("volumes/kubernetes.io~nfs/data");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("server-file"), "precious").unwrap();
        let mounts = vec![MountPoint {
            target: std::fs::canonicalize(&vol).unwrap(),
            fstype: "nfs4".into(),
            source: "s:/e".into(),
            options: "rw".into(),
            propagation: String::new(),
        }];
        let e = remove_dir_safely(&pod, &mounts).unwrap_err();
        assert!(matches!(e, RemoveError::Mounted(_)), "{e}");
        assert_eq!(
            std::fs::read_to_string(vol.join("server-file")).unwrap(),
            "precious"
        );
    }
}
