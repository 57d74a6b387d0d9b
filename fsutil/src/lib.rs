//! The one way kubenode writes a state file, and the one way it makes a directory that only
//! root may enter.
//!
//! [`write_atomic`] is the classic crash-safe replace: a uniquely named temporary file in the
//! same directory, written and `fsync`ed, renamed over the target, then the directory
//! `fsync`ed so the rename itself is on disk. A reader (or the agent after a crash or a power
//! loss) sees the old or the new content, never a torn or empty file. containerd's
//! `atomicfile` and the kubelet's checkpoint manager do the same.
//!
//! [`ensure_dir`] makes a directory with a given mode and, for a directory that already
//! exists, tightens its mode when it is looser than asked (an install from before the modes
//! were set). containerd did the same for its root and plugin directories after
//! CVE-2021-41103: any host user could walk into a snapshot and run an image's setuid binary.
//!
//! [`IoError`] is the failed operation with its path that the other crates' errors wrap;
//! [`if_present`] and [`read_dir_if_present`] read a file or directory that may be missing;
//! [`lock`] is the one policy for a poisoned mutex.

use std::fs::{DirEntry, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

mod error;
mod lock;

pub use error::IoError;
pub use lock::lock;

static TEMP_FILES: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `path` atomically and durably (mode 0644 for a new file; see
/// [`write_atomic_mode`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, data, 0o644)
}

/// Writes `data` to `path` atomically and durably: temp file, `fsync`, rename, `fsync` of the
/// directory. The file gets `mode` (before the umask). The temporary file is removed on
/// failure.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        Some(_) => Path::new("."),
        None => {
            return Err(io::Error::other(format!(
                "{}: no parent directory",
                path.display()
            )))
        }
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: no file name", path.display())))?;
    let n = TEMP_FILES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `fsync`s a directory, so a rename or a new entry inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes `dir` (and missing parents, with the default mode) and gives it `mode`: a new
/// directory is created with it, an existing one whose permission bits allow more than `mode`
/// is tightened to `mode` (logged). Returns whether an existing directory was tightened.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<bool> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let current = meta.permissions().mode() & 0o7777;
    // The umask may have taken bits away from a new directory: that only tightens. Any bit
    // beyond `mode` (group/other access, setgid, sticky) is what must go.
    if current & !mode == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    tracing::info!(
        path = %dir.display(),
        from = format!("{current:04o}"),
        to = format!("{mode:04o}"),
        "tightened directory permissions"
    );
    Ok(true)
}

/// Turns "not found" into `Ok(None)`: for a file or directory that may be missing, e.g.
/// `if_present(std::fs::symlink_metadata(p))?`. Any other error stays an error.
pub fn if_present<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The entries of `dir` as [`std::fs::read_dir`] gives them, except that a missing `dir` has
/// none.
pub fn read_dir_if_present(dir: &Path) -> io::Result<impl Iterator<Item = io::Result<DirEntry>>> {
    Ok(if_present(std::fs::read_dir(dir))?.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn new_files_get_the_mode_asked_for() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        write_atomic_mode(&p, b"x", 0o600).unwrap();
        assert_eq!(mode_of(&p), 0o600);
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temp file is written.
        let p = d.path().join("busy");
        std::fs::create_dir_all(p.join("inside")).unwrap();
        assert!(write_atomic(&p, b"x").is_err());
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("busy")]);
    }

    #[test]
    fn ensure_dir_creates_private_and_tightens_existing() {
        let d = tempfile::tempdir().unwrap();
        let fresh = d.path().join("a/b");
        assert!(!ensure_dir(&fresh, 0o700).unwrap());
        assert_eq!(mode_of(&fresh), 0o700);

        let old = d.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ensure_dir(&old, 0o711).unwrap());
        assert_eq!(mode_of(&old), 0o711);
        // Already as tight (or tighter): left alone.
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!ensure_dir(&old, 0o711).unwrap());
        assert_eq!(mode_of(&old), 0o700);
    }

    #[test]
    fn a_missing_directory_lists_as_empty_and_other_errors_stay() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            read_dir_if_present(&d.path().join("gone")).unwrap().count(),
            0
        );
        std::fs::write(d.path().join("f"), "x").unwrap();
        let names: Vec<_> = read_dir_if_present(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("f")]);
        // A file is not a directory: that is an error, not "missing".
        assert!(read_dir_if_present(&d.path().join("f")).is_err());
        assert!(if_present(std::fs::metadata(d.path().join("gone")))
            .unwrap()
            .is_none());
    }

    #[test]
    fn ensure_dir_refuses_a_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert!(ensure_dir(&f, 0o700).is_err());
    }
}
