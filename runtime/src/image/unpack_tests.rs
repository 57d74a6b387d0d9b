//! Unit tests of layer unpacking on synthetic tars.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Mutex;

use tar::{Builder, EntryType, Header};

use super::*;
use crate::image::special::OverlaySpecialFiles;

/// Records special-file requests instead of creating them.
#[derive(Default)]
struct Recording {
    calls: Mutex<Vec<String>>,
}

impl SpecialFiles for Recording {
    fn whiteout(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("whiteout {} {uid}:{gid}", path.display()));
        Ok(())
    }
    fn opaque(&self, dir: &Path) -> io::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("opaque {}", dir.display()));
        Ok(())
    }
    fn node(&self, path: &Path, node: &Node, _preserve_owner: bool) -> io::Result<()> {
        self.calls.lock().unwrap().push(format!(
            "node {} {:?} {:o} {}:{}",
            path.display(),
            node.kind,
            node.mode,
            node.major,
            node.minor
        ));
        Ok(())
    }
}

fn header(kind: EntryType, path: &str, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn file(b: &mut Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(EntryType::Regular, path, mode, data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn entry(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &str, mode: u32, link: Option<&str>) {
    let mut h = header(kind, path, mode, 0);
    if let Some(link) = link {
        h.set_link_name(link).unwrap();
    }
    if kind == EntryType::Char {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    h.set_cksum();
    b.append(&h, io::empty()).unwrap();
}

fn sample_layer() -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    entry(&mut b, EntryType::Directory, "bin/", 0o755, None);
    file(&mut b, "bin/tool", 0o4755, b"#!/bin/sh\n");
    entry(&mut b, EntryType::Symlink, "bin/alias", 0o777, Some("tool"));
    entry(&mut b, EntryType::Link, "bin/hard", 0o755, Some("bin/tool"));
    entry(&mut b, EntryType::Directory, "etc/", 0o700, None);
    file(&mut b, "etc/.wh.removed", 0o600, b"");
    file(&mut b, "var/cache/.wh..wh..opq", 0o600, b"");
    file(&mut b, "var/cache/new", 0o644, b"fresh");
    entry(&mut b, EntryType::Char, "dev/null", 0o666, None);
    entry(&mut b, EntryType::Fifo, "run/pipe", 0o600, None);
    b.into_inner().unwrap()
}

#[test]
fn whiteouts_become_requests_and_are_never_materialized() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recording::default();
    unpack_layer(&sample_layer()[..], dir.path(), &rec, false).unwrap();
    let root = dir.path().display().to_string();
    let calls: Vec<String> = rec
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.replace(&root, ""))
        .collect();
    assert_eq!(
        calls,
        vec![
            "whiteout /etc/removed 0:0".to_string(),
            "opaque /var/cache".to_string(),
            "node /dev/null Char 666 1:3".to_string(),
            "node /run/pipe Fifo 600 0:0".to_string(),
        ]
    );
    assert!(!dir.path().join("etc/.wh.removed").exists());
    assert!(!dir.path().join("var/cache/.wh..wh..opq").exists());
    assert_eq!(
        std::fs::read(dir.path().join("var/cache/new")).unwrap(),
        b"fresh"
    );
}

#[test]
fn files_links_and_modes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(
        &sample_layer()[..],
        dir.path(),
        &Recording::default(),
        false,
    )
    .unwrap();
    let tool = std::fs::metadata(dir.path().join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(tool.mtime(), 1_700_000_000);
    assert_eq!(
        std::fs::read_link(dir.path().join("bin/alias")).unwrap(),
        Path::new("tool")
    );
    let hard = std::fs::metadata(dir.path().join("bin/hard")).unwrap();
    assert_eq!(hard.ino(), tool.ino());
    let etc = std::fs::metadata(dir.path().join("etc")).unwrap();
    assert_eq!(etc.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        etc.mtime(),
        1_700_000_000,
        "directory mtimes are applied after their children"
    );
}

#[test]
fn whiteouts_through_symlinks_and_parent_escapes_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let mut b = Builder::new(Vec::new());
    entry(
        &mut b,
        EntryType::Symlink,
        "evil",
        0o777,
        Some(outside.path().to_str().unwrap()),
    );
    file(&mut b, "evil/.wh.victim", 0o600, b"");
    let layer = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = Recording::default();
    let err = unpack_layer(&layer[..], dir.path(), &rec, false).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(rec.calls.lock().unwrap().is_empty());

    let mut b = Builder::new(Vec::new());
    let mut h = header(EntryType::Regular, "x", 0o644, 1);
    // `set_path` refuses `..`; write the raw name field as a hostile tar would.
    h.as_old_mut().name[..6].copy_from_slice(b"../esc");
    h.set_cksum();
    b.append(&h, &b"z"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let err = unpack_layer(&layer[..], dir.path(), &rec, false).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[test]
fn overlay_special_files_on_disk() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for mknod and trusted.* xattrs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&sample_layer()[..], dir.path(), &OverlaySpecialFiles, true).unwrap();
    let wh = std::fs::symlink_metadata(dir.path().join("etc/removed")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));
    assert_eq!(wh.rdev(), 0);
    let null = std::fs::symlink_metadata(dir.path().join("dev/null")).unwrap();
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.permissions().mode() & 0o777, 0o666);
    let pipe = std::fs::symlink_metadata(dir.path().join("run/pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
    let mut buf = [0u8; 8];
    let c = std::ffi::CString::new(dir.path().join("var/cache").to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(n, 1);
    assert_eq!(buf[0], b'y');
}
