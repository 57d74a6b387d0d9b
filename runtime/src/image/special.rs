//! Special files a layer unpack creates: overlayfs whiteouts, opaque
//! directory markers and device nodes. This is the OS boundary of
//! unpacking ([`SpecialFiles`]); [`OverlaySpecialFiles`] is the real one.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};

/// Kinds of device nodes found in layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Char,
    Block,
    Fifo,
}

/// A device node or FIFO to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub major: u32,
    pub minor: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Creates the special files of a layer snapshot.
pub(crate) trait SpecialFiles: Send + Sync {
    /// Marks `path` as deleted for lower layers: an overlayfs whiteout
    /// (character device 0:0) owned by `uid:gid`.
    fn whiteout(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Hides every lower-layer child of `dir` (`trusted.overlay.opaque=y`).
    fn opaque(&self, dir: &Path) -> io::Result<()>;
    /// Creates a device node or FIFO at `path` (replacing what is there).
    fn node(&self, path: &Path, node: &Node, preserve_owner: bool) -> io::Result<()>;
}

/// The real implementation: overlayfs's on-disk whiteout format.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OverlaySpecialFiles;

impl SpecialFiles for OverlaySpecialFiles {
    fn whiteout(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        remove_existing(path)?;
        mknod(
            path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o000),
            makedev(0, 0),
        )?;
        lchown(path, uid, gid)
    }

    fn opaque(&self, dir: &Path) -> io::Result<()> {
        let c_path = CString::new(dir.as_os_str().as_bytes())?;
        let value = b"y";
        // SAFETY: both strings are NUL-terminated and live across the call;
        // `value` points to `value.len()` readable bytes.
        let rc = unsafe {
            libc::lsetxattr(
                c_path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn node(&self, path: &Path, node: &Node, preserve_owner: bool) -> io::Result<()> {
        remove_existing(path)?;
        let kind = match node.kind {
            NodeKind::Char => SFlag::S_IFCHR,
            NodeKind::Block => SFlag::S_IFBLK,
            NodeKind::Fifo => SFlag::S_IFIFO,
        };
        let dev = makedev(u64::from(node.major), u64::from(node.minor));
        mknod(
            path,
            kind,
            Mode::from_bits_truncate(node.mode & 0o7777),
            dev,
        )?;
        if preserve_owner {
            lchown(path, node.uid, node.gid)?;
        }
        // mknod applies the umask: set the exact mode afterwards.
        std::fs::set_permissions(
            path,
            std::os::unix::fs::PermissionsExt::from_mode(node.mode & 0o7777),
        )
    }
}

fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn remove_existing(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
