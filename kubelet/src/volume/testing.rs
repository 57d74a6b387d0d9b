//! A recording [`Mounter`] for tests: it keeps a pretend mount table instead of mounting, and
//! can be told to fail.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::mounter::{CommandFailure, MountError, Mounter};
use super::mountinfo::MountPoint;

/// One call made to the [`RecordingMounter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `mount(source, target, fstype, options)`.
    Mount {
        /// Source.
        source: String,
        /// Mount point.
        target: PathBuf,
        /// Filesystem type.
        fstype: String,
        /// Options.
        options: Vec<String>,
    },
    /// `bind(source, target)`.
    Bind {
        /// Source.
        source: PathBuf,
        /// Mount point.
        target: PathBuf,
    },
    /// `unmount(target)`.
    Unmount(PathBuf),
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    table: Vec<MountPoint>,
    fail_mount: Option<String>,
    fail_unmount: bool,
    mount_then_fail: bool,
}

/// A mounter that records calls and keeps a pretend mount table.
#[derive(Debug, Default)]
pub struct RecordingMounter {
    inner: Mutex<Inner>,
}

impl RecordingMounter {
    /// An empty one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().expect("mounter lock").calls.clone()
    }

    /// Makes every later `mount` fail with a mount-program error printing `output`; with
    /// `half_mounted`, the target is left mounted as a broken mount program might.
    pub fn fail_mounts(&self, output: Option<&str>, half_mounted: bool) {
        let mut i = self.inner.lock().expect("mounter lock");
        i.fail_mount = output.map(String::from);
        i.mount_then_fail = half_mounted;
    }

    /// Makes every later `unmount` fail with EBUSY.
    pub fn fail_unmounts(&self, fail: bool) {
        self.inner.lock().expect("mounter lock").fail_unmount = fail;
    }

    /// Sets the propagation fields (`shared:1`, `master:1`) of the mounts at `target`.
    pub fn set_propagation(&self, target: &Path, fields: &str) {
        for m in self
            .inner
            .lock()
            .expect("mounter lock")
            .table
            .iter_mut()
            .filter(|m| m.target == target)
        {
            m.propagation = fields.into();
        }
    }

    /// Pretends `target` is mounted (as found after an agent restart).
    pub fn add_mount(&self, source: &str, target: &Path, fstype: &str) {
        self.inner
            .lock()
            .expect("mounter lock")
            .table
            .push(MountPoint {
                target: target.into(),
                fstype: fstype.into(),
                source: source.into(),
                options: "rw".into(),
                propagation: String::new(),
            });
    }
}

impl Mounter for RecordingMounter {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        options: &[String],
    ) -> Result<(), MountError> {
        let mut i = self.inner.lock().expect("mounter lock");
        i.calls.push(Call::Mount {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            options: options.to_vec(),
        });
        if i.fail_mount.is_none() || i.mount_then_fail {
            i.table.push(MountPoint {
                target: target.into(),
                fstype: fstype.into(),
                source: source.into(),
                options: "rw".into(),
                propagation: String::new(),
            });
        }
        match &i.fail_mount {
            Some(output) => Err(MountError::Command(Box::new(CommandFailure {
                status: "exit status 32".into(),
                command: "mount".into(),
                args: super::mounter::mount_args(source, target, fstype, options).join(" "),
                output: output.clone(),
            }))),
            None => Ok(()),
        }
    }

    fn bind(&self, source: &Path, target: &Path) -> Result<(), MountError> {
        let mut i = self.inner.lock().expect("mounter lock");
        i.calls.push(Call::Bind {
            source: source.into(),
            target: target.into(),
        });
        i.table.push(MountPoint {
            target: target.into(),
            fstype: "bind".into(),
            source: source.display().to_string(),
            options: "rw".into(),
            propagation: String::new(),
        });
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        let mut i = self.inner.lock().expect("mounter lock");
        i.calls.push(Call::Unmount(target.into()));
        if i.fail_unmount {
            return Err(MountError::Syscall {
                op: "unmounting",
                target: target.into(),
                source: nix::errno::Errno::EBUSY,
            });
        }
        match i.table.iter().rposition(|m| m.target == target) {
            Some(pos) => {
                i.table.remove(pos);
                Ok(())
            }
            None => Err(MountError::Syscall {
                op: "unmounting",
                target: target.into(),
                source: nix::errno::Errno::EINVAL,
            }),
        }
    }

    fn mount_points(&self) -> Result<Vec<MountPoint>, MountError> {
        Ok(self.inner.lock().expect("mounter lock").table.clone())
    }
}
