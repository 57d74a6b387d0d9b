//! Exits seen as they are recorded: an inotify watch on every sandbox's and container's
//! directory, where the shim renames its exit record into place once the container's process
//! is gone (temporary file, fsync, rename: the record is complete when its name appears). The
//! PLEG relists as soon as one appears instead of at its next period.
//!
//! One inotify instance watches the runtime's two parents (`sandboxes/`, `containers/`) for new
//! directories and each instance directory for a file named [`kubenode_runtime::EXIT_RECORD`]
//! moved in (or closed after writing, should a writer ever write it in place). A directory
//! created after the watch began is watched when its creation is reported, and checked for a
//! record right then, so a record written in between is not missed. Removed directories drop
//! their watches (`IN_IGNORED`). Nothing here is needed for correctness: the relist stays the
//! safety net for what a watch can lose (a full event queue, the per-user watch limit, an
//! agent restart: the watch is made before the first relist, which sees what happened while
//! the agent was down).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// What the watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    /// An exit record appeared, complete, in this sandbox's or container's directory.
    Exit(PathBuf),
    /// Events were lost (the kernel's queue overflowed, a directory could not be watched):
    /// any instance may have exited.
    Lost,
}

/// The watch of the exit records under some parent directories.
pub(super) struct ExitWatch {
    stream: inotify::EventStream<Vec<u8>>,
    record: &'static str,
    parents: HashMap<WatchDescriptor, PathBuf>,
    instances: HashMap<WatchDescriptor, PathBuf>,
    pending: VecDeque<Seen>,
    broken: bool,
    /// A directory could not be watched (said once per watch).
    warned: bool,
}

fn parent_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
}

fn instance_mask() -> WatchMask {
    WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE | WatchMask::ONLYDIR | WatchMask::DONT_FOLLOW
}

impl std::fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitWatch")
            .field("parents", &self.parents.values().collect::<Vec<_>>())
            .field("instances", &self.instances.len())
            .finish()
    }
}

impl ExitWatch {
    /// Watches `parents` and every directory in them for records named `record`. Fails when
    /// inotify is unavailable or a parent cannot be watched; a subdirectory that cannot be
    /// watched (the watch limit) makes the first [`ExitWatch::next`] report [`Seen::Lost`].
    pub(super) fn new(parents: &[PathBuf], record: &'static str) -> io::Result<ExitWatch> {
        let inotify = Inotify::init()?;
        let stream = inotify.into_event_stream(vec![0u8; 4096])?;
        let mut watch = ExitWatch {
            stream,
            record,
            parents: HashMap::new(),
            instances: HashMap::new(),
            pending: VecDeque::new(),
            broken: false,
            warned: false,
        };
        for parent in parents {
            let wd = watch
                .stream
                .watches()
                .add(parent, parent_mask())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
            watch.parents.insert(wd, parent.clone());
            // After the parent's watch: a directory made meanwhile is both listed here and
            // reported, and watching it twice is one watch.
            for entry in std::fs::read_dir(parent)?.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    // Records already there are the first relist's to see.
                    watch.watch_instance(&entry.path(), false);
                }
            }
        }
        Ok(watch)
    }

    /// Watches an instance directory; with `check`, reports a record already in it.
    fn watch_instance(&mut self, dir: &Path, check: bool) {
        match self.stream.watches().add(dir, instance_mask()) {
            Ok(wd) => {
                self.instances.insert(wd, dir.to_path_buf());
                if check && dir.join(self.record).exists() {
                    self.pending.push_back(Seen::Exit(dir.to_path_buf()));
                }
            }
            // Removed before it could be watched, or not a directory.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
            // The per-user watch limit (`fs.inotify.max_user_watches`), mostly: this
            // instance's exit is seen at the relist.
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for exit records; such exits are seen at the next relist");
                }
                self.pending.push_back(Seen::Lost);
            }
        }
    }

    /// Handles one event from the kernel.
    fn handle(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<&OsStr>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            self.pending.push_back(Seen::Lost);
            return;
        }
        if let Some(parent) = self.parents.get(wd) {
            if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
                self.broken = true;
                return;
            }
            if mask.contains(EventMask::ISDIR) {
                if let Some(name) = name {
                    let dir = parent.join(name);
                    self.watch_instance(&dir, true);
                }
            }
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            self.instances.remove(wd);
            return;
        }
        if let (Some(dir), Some(name)) = (self.instances.get(wd), name) {
            if name == self.record
                && mask.intersects(EventMask::MOVED_TO | EventMask::CLOSE_WRITE)
                && !mask.contains(EventMask::ISDIR)
            {
                self.pending.push_back(Seen::Exit(dir.clone()));
            }
        }
    }

    /// The next exit (or loss); `None` once the watch no longer works (a parent went, the
    /// inotify descriptor failed): make a new one.
    pub(super) async fn next(&mut self) -> Option<Seen> {
        loop {
            if let Some(seen) = self.pending.pop_front() {
                return Some(seen);
            }
            if self.broken {
                return None;
            }
            match self.stream.next().await? {
                Ok(ev) => self.handle(&ev.wd, ev.mask, ev.name.as_deref()),
                Err(e) => {
                    tracing::warn!(error = %e, "reading exit record events");
                    self.broken = true;
                }
            }
        }
    }

    /// How many instance directories are watched.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.instances.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RECORD: &str = "exit";

    fn parents(root: &Path) -> Vec<PathBuf> {
        let p = vec![root.join("sandboxes"), root.join("containers")];
        for d in &p {
            std::fs::create_dir_all(d).unwrap();
        }
        p
    }

    /// The next report, or `None` when nothing comes within a while (the test's guard against
    /// hanging, not a measurement).
    async fn next(w: &mut ExitWatch) -> Option<Seen> {
        tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .ok()
            .flatten()
    }

    /// Nothing is reported, checked after a marker event that must come after anything the
    /// earlier writes caused (inotify keeps order).
    async fn nothing_before_marker(w: &mut ExitWatch, marker_dir: &Path) {
        kubenode_fsutil::write_atomic(&marker_dir.join(RECORD), b"{}").unwrap();
        assert_eq!(next(w).await, Some(Seen::Exit(marker_dir.to_path_buf())));
    }

    #[tokio::test]
    async fn a_record_renamed_into_place_is_reported_with_its_directory() {
        let root = tempfile::tempdir().unwrap();
        let p = parents(root.path());
        let old = p[1].join("old");
        std::fs::create_dir(&old).unwrap();
        let mut w = ExitWatch::new(&p, RECORD).unwrap();
        assert_eq!(w.watched(), 1);
        // An existing container's record, written as the shim writes it.
        kubenode_fsutil::write_atomic(&old.join(RECORD), b"{\"exit_code\":0}").unwrap();
        assert_eq!(next(&mut w).await, Some(Seen::Exit(old.clone())));
        // A sandbox made after the watch began.
        let sb = p[0].join("sb");
        std::fs::create_dir(&sb).unwrap();
        std::fs::write(sb.join("meta.json"), b"{}").unwrap();
        kubenode_fsutil::write_atomic(&sb.join(RECORD), b"{\"exit_code\":137}").unwrap();
        assert_eq!(next(&mut w).await, Some(Seen::Exit(sb)));
    }

    #[tokio::test]
    async fn a_partial_or_foreign_write_is_not_an_exit() {
        let root = tempfile::tempdir().unwrap();
        let p = parents(root.path());
        let c = p[1].join("c");
        std::fs::create_dir(&c).unwrap();
        let marker = p[1].join("marker");
        std::fs::create_dir(&marker).unwrap();
        let mut w = ExitWatch::new(&p, RECORD).unwrap();
        // The record being written under its name, not yet closed.
        let mut f = std::fs::File::create(c.join(RECORD)).unwrap();
        std::io::Write::write_all(&mut f, b"{\"exit_co").unwrap();
        // Other files: the temporary name, the metadata, a pid file.
        kubenode_fsutil::write_atomic(&c.join("meta.json"), b"{}").unwrap();
        std::fs::write(c.join(".exit.tmp-1-0"), b"{}").unwrap();
        std::fs::write(c.join("pid"), b"1").unwrap();
        nothing_before_marker(&mut w, &marker).await;
        // Closing the file completes it.
        drop(f);
        assert_eq!(next(&mut w).await, Some(Seen::Exit(c)));
    }

    #[tokio::test]
    async fn a_directory_made_with_its_record_already_in_it_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let p = parents(root.path());
        let mut w = ExitWatch::new(&p, RECORD).unwrap();
        // Made elsewhere, then renamed in: the record predates the watch of the directory.
        let staged = root.path().join("staged");
        std::fs::create_dir(&staged).unwrap();
        kubenode_fsutil::write_atomic(&staged.join(RECORD), b"{}").unwrap();
        let c = p[1].join("c");
        std::fs::rename(&staged, &c).unwrap();
        assert_eq!(next(&mut w).await, Some(Seen::Exit(c.clone())));
        // A removed directory drops its watch.
        std::fs::remove_dir_all(&c).unwrap();
        let marker = p[1].join("marker");
        std::fs::create_dir(&marker).unwrap();
        nothing_before_marker(&mut w, &marker).await;
        assert_eq!(w.watched(), 1);
    }

    #[tokio::test]
    async fn a_new_watch_covers_directories_made_before_it() {
        // An agent restart: the old watch is gone with the old process, shims went on. The
        // new watch covers every directory there is, made before it or after.
        let root = tempfile::tempdir().unwrap();
        let p = parents(root.path());
        let before = p[1].join("before");
        std::fs::create_dir(&before).unwrap();
        drop(ExitWatch::new(&p, RECORD).unwrap());
        let sb = p[0].join("sb");
        std::fs::create_dir(&sb).unwrap();
        let mut w = ExitWatch::new(&p, RECORD).unwrap();
        assert_eq!(w.watched(), 2);
        kubenode_fsutil::write_atomic(&sb.join(RECORD), b"{}").unwrap();
        assert_eq!(next(&mut w).await, Some(Seen::Exit(sb)));
        kubenode_fsutil::write_atomic(&before.join(RECORD), b"{}").unwrap();
        assert_eq!(next(&mut w).await, Some(Seen::Exit(before)));
    }

    #[tokio::test]
    async fn a_parent_gone_ends_the_watch() {
        let root = tempfile::tempdir().unwrap();
        let p = parents(root.path());
        let mut w = ExitWatch::new(&p, RECORD).unwrap();
        std::fs::remove_dir(&p[0]).unwrap();
        assert_eq!(next(&mut w).await, None);
        // A missing parent cannot be watched.
        assert!(ExitWatch::new(&p, RECORD).is_err());
    }
}
