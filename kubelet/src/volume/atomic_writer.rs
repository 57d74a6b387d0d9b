//! Upstream's atomic writer (`pkg/volume/util/atomic_writer.go`): how the contents of the
//! `configMap`, `secret`, `downwardAPI` and `projected` volumes are written and updated so that
//! a container never sees a half-written set of files.
//!
//! The layout of a volume directory (the target):
//!
//! ```text
//! <target>/..2026_01_02_03_04_05.123456789   the payload, in a timestamped hidden directory
//! <target>/..data -> ..2026_01_02_03_04_05.123456789
//! <target>/key    -> ..data/key              one symlink per top-level path of the payload
//! <target>/dir    -> ..data/dir              (nested paths go through their first segment)
//! ```
//!
//! A write ([`AtomicWriter::write`]) validates the payload's paths, compares it with what the
//! current timestamped directory holds and, only when a file's content differs or a path is
//! gone, writes the whole payload into a new timestamped directory, points `..data_tmp` at it
//! and renames that over `..data` (the one atomic step), removes the old directory, then adds
//! the symlinks of new top-level paths and removes those of paths no longer in the payload.
//!
//! Crash safety: every step leaves a consistent volume; a timestamped directory or a
//! `..data_tmp` left by a writer killed half way is removed by the next write.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The symlink to the current timestamped directory.
pub const DATA_DIR: &str = "..data";
/// The symlink made before it is renamed over [`DATA_DIR`].
pub const NEW_DATA_DIR: &str = "..data_tmp";
/// Upstream's `maxFileNameLength`.
pub const MAX_FILE_NAME_LENGTH: usize = 255;
/// Upstream's `maxPathLength`.
pub const MAX_PATH_LENGTH: usize = 4096;

/// One file of a payload: its bytes, its mode and (for a service-account token with a common
/// `runAsUser`) its owner.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct FileProjection {
    /// The content.
    pub data: Vec<u8>,
    /// The mode bits (at most 0777; validation refuses more).
    pub mode: u32,
    /// The owner the file is given (upstream's `FsUser`).
    pub fs_user: Option<u32>,
}

impl std::fmt::Debug for FileProjection {
    // The content may be a Secret's: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProjection")
            .field("bytes", &self.data.len())
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("fs_user", &self.fs_user)
            .finish()
    }
}

/// A volume's contents: relative path to file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Why a write failed. Paths are named, contents never.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A payload path is not acceptable (upstream's texts).
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// A file system operation failed.
    #[error(transparent)]
    Io(#[from] kubenode_fsutil::IoError),
}

/// Checks one payload path as upstream's `validatePath`.
pub fn validate_path(path: &str) -> Result<(), WriteError> {
    let bad = |m: String| Err(WriteError::InvalidPath(m));
    if path.is_empty() {
        return bad(format!("must not be empty: {path:?}"));
    }
    if path.starts_with('/') {
        return bad(format!("must be relative path: {path}"));
    }
    if path.len() > MAX_PATH_LENGTH {
        return bad(format!(
            "must be less than or equal to {MAX_PATH_LENGTH} characters"
        ));
    }
    let items: Vec<&str> = path.split('/').collect();
    for item in &items {
        if *item == ".." {
            return bad(format!("must not contain '..': {path}"));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return bad(format!(
                "filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            ));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return bad(format!("must not start with '..': {path}"));
    }
    Ok(())
}

/// `filepath.Clean` of a relative path without `..`: empty and `.` segments dropped.
fn clean(path: &str) -> String {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Validates every path and cleans it (upstream `validatePayload`).
pub fn validate_payload(payload: &Payload) -> Result<Payload, WriteError> {
    let mut out = Payload::new();
    for (path, file) in payload {
        validate_path(path)?;
        let cleaned = clean(path);
        if cleaned.is_empty() {
            return Err(WriteError::InvalidPath(format!(
                "must not be empty: {path:?}"
            )));
        }
        out.insert(cleaned, file.clone());
    }
    Ok(out)
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The payload was written into a new timestamped directory.
    Updated,
    /// The volume already held the payload: nothing was written.
    Unchanged,
}

/// Writes payloads into one volume directory (see the module docs).
#[derive(Debug)]
pub struct AtomicWriter<'a> {
    target: &'a Path,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
    move |e| WriteError::Io(kubenode_fsutil::IoError::new(what, path, e))
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl<'a> AtomicWriter<'a> {
    /// A writer of the volume directory `target` (which exists).
    pub fn new(target: &'a Path) -> Self {
        AtomicWriter { target }
    }

    /// The name of the current timestamped directory, when `..data` points at one.
    pub fn current_dir(&self) -> Option<String> {
        let link = std::fs::read_link(self.target.join(DATA_DIR)).ok()?;
        let name = link.to_str()?.to_string();
        (name.starts_with("..") && !name.contains('/') && self.target.join(&name).is_dir())
            .then_some(name)
    }

    /// `sub` (a relative path in the volume) through the writer's own symlinks: its first
    /// segment's `<name> -> ..data/<name>` and `..data`, to the path in the current data
    /// directory; `None` when the first segment is not such a symlink.
    pub fn resolve(&self, sub: &str) -> Option<String> {
        let first = sub.split('/').find(|s| !s.is_empty() && *s != ".")?;
        let link = std::fs::read_link(self.target.join(first)).ok()?;
        if link != Path::new(DATA_DIR).join(first) {
            return None;
        }
        let ts = self.current_dir()?;
        Some(format!("{ts}/{}", clean(sub)))
    }

    /// Writes `payload` (see the module docs); `set_perms` runs on the new timestamped
    /// directory before it becomes visible (upstream's `setPerms`: the `fsGroup` walk).
    pub fn write(
        &self,
        payload: &Payload,
        set_perms: impl FnOnce(&Path) -> Result<(), WriteError>,
    ) -> Result<Written, WriteError> {
        let payload = validate_payload(payload)?;
        let old = self.current_dir();
        let to_remove = match &old {
            Some(old) => paths_to_remove(&payload, &self.target.join(old))?,
            None => BTreeSet::new(),
        };
        let write = match &old {
            None => true,
            Some(old) => should_write_payload(&payload, &self.target.join(old))?,
        };
        let mut result = Written::Unchanged;
        if write || !to_remove.is_empty() {
            let ts = self.new_timestamp_dir()?;
            let ts_path = self.target.join(&ts);
            write_payload_to_dir(&payload, &ts_path)?;
            set_perms(&ts_path)?;
            let tmp = self.target.join(NEW_DATA_DIR);
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing a stale ..data_tmp", &tmp)(e))
                }
                _ => {}
            }
            std::os::unix::fs::symlink(&ts, &tmp).map_err(io("creating ..data_tmp", &tmp))?;
            let data = self.target.join(DATA_DIR);
            std::fs::rename(&tmp, &data).map_err(io("renaming ..data_tmp to ..data", &data))?;
            kubenode_fsutil::sync_dir(self.target).map_err(io("syncing", self.target))?;
            result = Written::Updated;
        }
        self.create_user_visible_files(&payload)?;
        self.remove_user_visible_paths(&to_remove)?;
        self.remove_stale_dirs()?;
        Ok(result)
    }

    /// `..<UTC time>.<unique>` with mode 0755, as upstream's `newTimestampDir`.
    fn new_timestamp_dir(&self) -> Result<String, WriteError> {
        let now = jiff::Timestamp::now();
        let stamp = now.strftime("..%Y_%m_%d_%H_%M_%S").to_string();
        loop {
            let unique = now.subsec_nanosecond() as u32 ^ SEQUENCE.fetch_add(1, Ordering::Relaxed);
            let name = format!("{stamp}.{unique}");
            let path = self.target.join(&name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(io("setting the mode of the data directory", &path))?;
                    return Ok(name);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("creating the data directory", &path)(e)),
            }
        }
    }

    /// A symlink `<first segment> -> ..data/<first segment>` per top-level path.
    fn create_user_visible_files(&self, payload: &Payload) -> Result<(), WriteError> {
        for path in payload.keys() {
            let first = path.split('/').next().unwrap_or(path);
            let visible = self.target.join(first);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(first), &visible)
                    .map_err(io("creating a user-visible symlink", &visible))?;
            }
        }
        Ok(())
    }

    /// Removes the symlinks of top-level paths that left the payload.
    fn remove_user_visible_paths(&self, paths: &BTreeSet<String>) -> Result<(), WriteError> {
        for p in paths.iter().filter(|p| !p.contains('/')) {
            let path = self.target.join(p);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing a user-visible symlink", &path)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the timestamped directories `..data` does not point at (the old one after a
    /// swap, a new one left by a writer killed before its swap).
    fn remove_stale_dirs(&self) -> Result<(), WriteError> {
        let current = self.current_dir();
        let entries = std::fs::read_dir(self.target).map_err(io("reading", self.target))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_timestamp_dir(&name) || Some(&name) == current.as_ref() {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                std::fs::remove_dir_all(&path)
                    .map_err(io("removing an old data directory", &path))?;
            }
        }
        Ok(())
    }
}

/// Whether `name` is a timestamped directory's (`..` followed by a digit).
fn is_timestamp_dir(name: &str) -> bool {
    name.strip_prefix("..")
        .and_then(|r| r.chars().next())
        .is_some_and(|c| c.is_ascii_digit())
}

/// The relative paths (files and directories) of `old` that the payload does not have, its
/// paths' parent directories counting as had (upstream `pathsToRemove`).
fn paths_to_remove(payload: &Payload, old: &Path) -> Result<BTreeSet<String>, WriteError> {
    let mut found = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = old.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("reading the old data directory", &dir)(e)),
        };
        for entry in entries.flatten() {
            let r = rel.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(r.clone());
            }
            found.insert(r.to_string_lossy().into_owned());
        }
    }
    for file in payload.keys() {
        let mut sub = file.as_str();
        loop {
            found.remove(sub);
            match sub.rfind('/') {
                Some(i) => sub = &sub[..i],
                None => break,
            }
        }
    }
    Ok(found)
}

/// Whether any file's content differs from the one in `old` (or is missing there).
fn should_write_payload(payload: &Payload, old: &Path) -> Result<bool, WriteError> {
    for (path, file) in payload {
        let p = old.join(path);
        match std::fs::read(&p) {
            Ok(content) if content == file.data => {}
            Ok(_) => return Ok(true),
            // Missing, or a directory where the payload now has a file.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) =>
            {
                return Ok(true)
            }
            Err(e) => return Err(io("reading the current content", &p)(e)),
        }
    }
    Ok(false)
}

/// Writes every file below `dir` with its exact mode (no umask) and owner.
fn write_payload_to_dir(payload: &Payload, dir: &Path) -> Result<(), WriteError> {
    for (path, file) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io("creating a payload directory", parent))?;
        }
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(file.mode & 0o777)
                .open(&full)
                .map_err(io("creating a payload file", &full))?;
            f.write_all(&file.data)
                .and_then(|()| f.sync_all())
                .map_err(io("writing a payload file", &full))?;
        }
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(file.mode & 0o777))
            .map_err(io("setting the mode of a payload file", &full))?;
        if let Some(uid) = file.fs_user {
            std::os::unix::fs::chown(&full, Some(uid), None)
                .map_err(io("setting the owner of a payload file", &full))?;
        }
    }
    kubenode_fsutil::sync_dir(dir).map_err(io("syncing", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
            fs_user: None,
        }
    }

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(p, d)| (p.to_string(), file(d, 0o644)))
            .collect()
    }

    fn write(target: &Path, p: &Payload) -> Written {
        AtomicWriter::new(target).write(p, |_| Ok(())).unwrap()
    }

    /// Every visible file, read through the symlinks, and nothing else (upstream's
    /// `checkVolumeContents`).
    fn contents(target: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for e in std::fs::read_dir(target.join(&rel)).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if rel.as_os_str().is_empty() && name.starts_with("..") {
                    continue;
                }
                let r = rel.join(&name);
                let full = target.join(&r);
                if full.is_dir() {
                    stack.push(r);
                } else {
                    out.insert(
                        r.to_string_lossy().into_owned(),
                        std::fs::read_to_string(&full).unwrap(),
                    );
                }
            }
        }
        out
    }

    fn expect(p: &Payload) -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (clean(k), String::from_utf8(v.data.clone()).unwrap()))
            .collect()
    }

    /// Upstream's `TestValidatePath` cases, with its messages.
    #[test]
    fn paths_are_validated_as_upstream() {
        let max_file = "a".repeat(MAX_FILE_NAME_LENGTH);
        let max_path = format!("{}/", "a".repeat(255)).repeat(16)[..MAX_PATH_LENGTH].to_string();
        for ok in [
            "i/am/well/behaved.txt",
            "keepyourheaddownandfollowtherules.txt",
            "a/.b",
            "a/..b",
            &max_file,
            &max_path,
        ] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_FILE_NAME_LENGTH + 1);
        let too_long = format!("{max_path}a");
        let cases: &[(&str, &str)] = &[
            ("", "invalid path: must not be empty: \"\""),
            (
                "/dev/null",
                "invalid path: must be relative path: /dev/null",
            ),
            (
                "..sneaky.txt",
                "invalid path: must not start with '..': ..sneaky.txt",
            ),
            ("..", "invalid path: must not contain '..': .."),
            (
                "hello/there/../../../../../../etc/passwd",
                "invalid path: must not contain '..': hello/there/../../../../../../etc/passwd",
            ),
            (
                "hello/../etc/somethingbad",
                "invalid path: must not contain '..': hello/../etc/somethingbad",
            ),
            (
                &long,
                "invalid path: filenames must be less than or equal to 255 characters",
            ),
            (
                &too_long,
                "invalid path: must be less than or equal to 4096 characters",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(validate_path(p).unwrap_err().to_string(), *want, "{p:?}");
        }
    }

    #[test]
    fn a_payload_is_written_behind_data_and_visible_through_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let p = payload(&[
            ("foo", "foo"),
            ("bar/zab.txt", "zab"),
            ("bar/nested/x", "x"),
        ]);
        assert_eq!(write(t, &p), Written::Updated);
        assert_eq!(contents(t), expect(&p));
        let ts = AtomicWriter::new(t).current_dir().unwrap();
        assert!(ts.starts_with(".."), "{ts}");
        let mode = std::fs::metadata(t.join(&ts)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        assert_eq!(
            std::fs::read_link(t.join("foo")).unwrap(),
            Path::new("..data/foo")
        );
        assert_eq!(
            std::fs::read_link(t.join("bar")).unwrap(),
            Path::new("..data/bar")
        );
        assert!(!t.join(NEW_DATA_DIR).exists());
    }

    #[test]
    fn an_unchanged_payload_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let p = payload(&[("foo", "foo"), ("bar/baz", "baz")]);
        write(t, &p);
        let ts = AtomicWriter::new(t).current_dir().unwrap();
        assert_eq!(write(t, &p), Written::Unchanged);
        assert_eq!(AtomicWriter::new(t).current_dir().unwrap(), ts);
    }

    /// Upstream's `TestUpdate` cases: a changed file, a removed one, a new nested one.
    #[test]
    fn updates_swap_the_data_dir_and_remove_what_left() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let steps: Vec<Payload> = vec![
            payload(&[("foo", "foo"), ("bar", "bar")]),
            // A changed file.
            payload(&[("foo", "foo2"), ("bar", "bar")]),
            // A removed top-level file.
            payload(&[("foo", "foo2")]),
            // A nested file added, then one of two nested files removed.
            payload(&[("foo", "foo2"), ("dir/a", "a"), ("dir/b", "b")]),
            payload(&[("foo", "foo2"), ("dir/a", "a")]),
            // A whole directory gone, a file in its place.
            payload(&[("foo", "foo2"), ("dir", "now a file")]),
            payload(&[]),
        ];
        let mut dirs = BTreeSet::new();
        for p in &steps {
            assert_eq!(write(t, p), Written::Updated, "{p:?}");
            assert_eq!(contents(t), expect(p), "{p:?}");
            let ts = AtomicWriter::new(t).current_dir().unwrap();
            assert!(dirs.insert(ts.clone()), "a new directory each time");
            // Only the current timestamped directory is left.
            let hidden: Vec<String> = std::fs::read_dir(t)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".."))
                .collect();
            assert_eq!(hidden.len(), 2, "{hidden:?}");
            assert!(hidden.contains(&ts) && hidden.contains(&DATA_DIR.to_string()));
        }
    }

    #[test]
    fn modes_are_exact_and_owners_set() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let mut p = Payload::new();
        p.insert("secret".into(), file("s", 0o400));
        p.insert("open".into(), file("o", 0o777));
        let root = nix::unistd::Uid::effective().is_root();
        p.insert(
            "token".into(),
            FileProjection {
                fs_user: root.then_some(1234),
                ..file("t", 0o600)
            },
        );
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let r = AtomicWriter::new(t).write(&p, |_| Ok(()));
        nix::sys::stat::umask(old);
        r.unwrap();
        let meta = |n: &str| std::fs::metadata(t.join(n)).unwrap();
        assert_eq!(meta("secret").mode() & 0o7777, 0o400);
        assert_eq!(meta("open").mode() & 0o7777, 0o777);
        if root {
            assert_eq!(meta("token").uid(), 1234);
        }
    }

    #[test]
    fn bad_paths_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for bad in ["../escape", "/etc/passwd", "..data/x", "a/../../b"] {
            let p = payload(&[("ok", "1"), (bad, "x")]);
            assert!(AtomicWriter::new(t).write(&p, |_| Ok(())).is_err(), "{bad}");
        }
        assert_eq!(std::fs::read_dir(t).unwrap().count(), 0);
    }

    #[test]
    fn leftovers_of_a_killed_writer_are_cleaned_by_the_next_write() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        write(t, &payload(&[("a", "1")]));
        // Killed after making a new directory and ..data_tmp, before the rename.
        std::fs::create_dir(t.join("..2020_01_01_00_00_00.1")).unwrap();
        std::fs::write(t.join("..2020_01_01_00_00_00.1/a"), "2").unwrap();
        std::os::unix::fs::symlink("..2020_01_01_00_00_00.1", t.join(NEW_DATA_DIR)).unwrap();
        assert_eq!(contents(t), expect(&payload(&[("a", "1")])));
        assert_eq!(write(t, &payload(&[("a", "2")])), Written::Updated);
        assert_eq!(contents(t), expect(&payload(&[("a", "2")])));
        assert!(!t.join("..2020_01_01_00_00_00.1").exists());
        assert!(!t.join(NEW_DATA_DIR).exists());
    }

    #[test]
    fn set_perms_runs_on_the_new_directory_before_the_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let seen = std::cell::RefCell::new(None);
        AtomicWriter::new(t)
            .write(&payload(&[("a", "1")]), |dir| {
                assert!(!t.join(DATA_DIR).exists(), "before the swap");
                *seen.borrow_mut() = Some(dir.to_path_buf());
                Ok(())
            })
            .unwrap();
        let dir = seen.into_inner().unwrap();
        assert_eq!(dir, t.join(AtomicWriter::new(t).current_dir().unwrap()));
    }
}
