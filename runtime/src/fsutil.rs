//! Small file helpers: atomic writes (the workspace's one crash-safe writer, from
//! `kubenode-fsutil`), private directories, removal that never crosses a mount, random ids,
//! JSON files.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kubenode_fsutil::if_present;
pub use kubenode_fsutil::{ensure_dir, sync_dir, write_atomic, write_atomic_mode};

/// Mode of the directories under the state root that only the agent (root) uses: snapshots,
/// image blobs, container bundles, sandboxes, pod directories. Nothing a container runs
/// reaches them by path: runc mounts the rootfs and every bind mount as root before it
/// changes to the container's user, and overlayfs checks the layers with the mounter's
/// credentials.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// A random 32-hex-digit id (128 bits from the kernel's CSPRNG).
pub(crate) fn random_id() -> String {
    let mut buf = [0u8; 16];
    // /dev/urandom never blocks after boot and always exists on Linux.
    let read = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    hex::encode(buf)
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let data = fs::read(path)?;
    serde_json::from_slice(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Serializes `value` as pretty JSON and writes it atomically and durably.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &data)
}

/// Removes a file or a directory tree; a missing path is fine.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the directory tree `dir` without ever descending into another filesystem: a
/// directory below it on another device (a mount point the caller did not unmount) stops the
/// removal with an error and keeps everything under that mount. A missing `dir` is fine.
pub(crate) fn remove_dir_same_fs(dir: &Path) -> io::Result<()> {
    let Some(meta) = if_present(fs::symlink_metadata(dir))? else {
        return Ok(());
    };
    if !meta.is_dir() {
        return fs::remove_file(dir);
    }
    empty_same_fs(dir, meta.dev())?;
    fs::remove_dir(dir)
}

fn empty_same_fs(dir: &Path, dev: u64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(io::Error::other(format!(
                    "{} is on another filesystem (a mount point); refusing to remove it",
                    path.display()
                )));
            }
            empty_same_fs(&path, dev)?;
            fs::remove_dir(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}
