//! Applying one layer tar to an empty snapshot directory, in the form
//! overlayfs wants for a lowerdir (image-spec `layer.md`, containerd
//! `OverlayConvertWhiteout`): `.wh.<name>` becomes a 0:0 character device,
//! `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory, and
//! neither marker is written. Regular files, directories, symlinks,
//! hardlinks, permissions, ownership, mtimes and xattrs come from the tar
//! crate; device nodes and FIFOs from [`SpecialFiles`].

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::{Archive, EntryType};

use super::special::{Node, NodeKind, SpecialFiles};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Unpacks the uncompressed layer `tar` into `dest` (an existing, empty
/// directory). Ownership is kept only when `preserve_owner` (as root).
pub(crate) fn unpack_layer(
    tar: impl Read,
    dest: &Path,
    specials: &dyn SpecialFiles,
    preserve_owner: bool,
) -> io::Result<()> {
    let mut archive = Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(preserve_owner);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);

    // Directories last, deepest first (as `tar::Archive::unpack`): creating
    // children must neither be blocked by a directory's mode nor bump its mtime.
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel = relative_path(&entry.path()?)?;
        let Some(name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            // "." or "/" itself: attributes of the snapshot root.
            if entry.header().entry_type() == EntryType::Directory {
                directories.push(entry);
            }
            continue;
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let header = entry.header();
        if name == OPAQUE_MARKER {
            let dir = ensure_dir(dest, parent)?;
            specials.opaque(&dir)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(invalid(format!("invalid whiteout {}", rel.display())));
            }
            let dir = ensure_dir(dest, parent)?;
            specials.whiteout(
                &dir.join(hidden),
                header.uid()? as u32,
                header.gid()? as u32,
            )?;
            continue;
        }
        let kind = match header.entry_type() {
            EntryType::Directory => {
                directories.push(entry);
                continue;
            }
            EntryType::Char => Some(NodeKind::Char),
            EntryType::Block => Some(NodeKind::Block),
            EntryType::Fifo => Some(NodeKind::Fifo),
            _ => None,
        };
        if let Some(kind) = kind {
            let dir = ensure_dir(dest, parent)?;
            let node = Node {
                kind,
                mode: header.mode()?,
                major: device_number(kind, header.device_major())?,
                minor: device_number(kind, header.device_minor())?,
                uid: header.uid()? as u32,
                gid: header.gid()? as u32,
            };
            specials.node(&dir.join(&name), &node, preserve_owner)?;
            continue;
        }
        entry.unpack_in(dest)?;
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut dir in directories {
        dir.unpack_in(dest)?;
        // The tar crate leaves directory mtimes at "now".
        let path = dest.join(relative_path(&dir.path()?)?);
        let mtime = nix::sys::time::TimeSpec::new(dir.header().mtime()? as i64, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )?;
    }
    Ok(())
}

/// The entry path relative to the layer root; `..` is refused.
fn relative_path(path: &Path) -> io::Result<PathBuf> {
    let mut rel = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(invalid(format!(
                    "entry {} escapes the layer root",
                    path.display()
                )))
            }
            Component::Normal(p) => rel.push(p),
        }
    }
    Ok(rel)
}

/// `dest/rel`, creating missing directories (0755); refuses to pass through
/// anything but real directories, so a symlink in the layer cannot redirect
/// a whiteout or device node outside the snapshot.
fn ensure_dir(dest: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut cur = dest.to_path_buf();
    for part in rel.components() {
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(invalid(format!("{} is not a directory", cur.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur)?;
                std::fs::set_permissions(
                    &cur,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// A device number; FIFOs often leave the fields blank.
fn device_number(kind: NodeKind, field: io::Result<Option<u32>>) -> io::Result<u32> {
    match (kind, field) {
        (_, Ok(n)) => Ok(n.unwrap_or(0)),
        (NodeKind::Fifo, Err(_)) => Ok(0),
        (_, Err(e)) => Err(e),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
