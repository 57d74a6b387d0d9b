//! The OS boundary of the volume manager: mounting and unmounting.
//!
//! [`SystemMounter`] is the real one. NFS (and any type but tmpfs) goes through the system's
//! mount program exactly as the kubelet's `mount-utils` does it: `mount -t nfs -o <options>
//! SERVER:PATH DIR` (options only when there are some; `ro` for a read-only volume), run
//! directly, not wrapped in `systemd-run`. The program is `mount` from `PATH` unless
//! configured otherwise: the configuration key `mounterPath` or the flag
//! `--experimental-mounter-path` (upstream's flag of the same name) set
//! [`SystemMounter::new`]'s argument. tmpfs mounts and bind mounts are `mount(2)` calls (a bind
//! of `/proc/self/fd/N` must happen in the process holding the descriptor). Unmounting waits
//! [`UNMOUNT_TIMEOUT`] for `umount2(2)` and then detaches lazily (`MNT_DETACH`) with a warning,
//! which is what a hung NFS server needs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};

use super::mountinfo::{self, MountPoint};

/// How long a mount command may take (a foreground NFS mount retries for 2 minutes).
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(150);
/// How long an unmount may block before it is made lazy (upstream NFS teardown: one minute).
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed mount or unmount.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount program failed; the text is `mount-utils`' own.
    #[error("mount failed: {}\nMounting command: {}\nMounting arguments: {}\nOutput: {}", .0.status, .0.command, .0.args, .0.output)]
    Command(Box<CommandFailure>),
    /// The mount program could not be started.
    #[error("running the mount program {command}: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The mount program did not finish in time and was killed.
    #[error("mounting {target}: {command} did not finish within {timeout:?}")]
    Timeout {
        /// The program.
        command: String,
        /// The mount point.
        target: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// A mount(2) or umount2(2) call failed.
    #[error("{op} {target}: {source}")]
    Syscall {
        /// What was done (`mounting tmpfs at`, `unmounting`).
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::errno::Errno,
    },
    /// `/proc/self/mountinfo` could not be read.
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
}

/// How the mount program failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailure {
    /// How it ended (`exit status: 32`).
    pub status: String,
    /// The program.
    pub command: String,
    /// Its arguments, joined.
    pub args: String,
    /// What it printed (the server's error, for NFS).
    pub output: String,
}

/// Mounting and unmounting, behind a trait so that volume logic is tested without root.
pub trait Mounter: Send + Sync + std::fmt::Debug {
    /// Mounts `source` of type `fstype` at `target` with `options`.
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        options: &[String],
    ) -> Result<(), MountError>;
    /// Bind-mounts `source` (a path, possibly `/proc/self/fd/N`) at `target`.
    fn bind(&self, source: &Path, target: &Path) -> Result<(), MountError>;
    /// Unmounts `target` (lazily if it hangs).
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
    /// What is mounted now.
    fn mount_points(&self) -> Result<Vec<MountPoint>, MountError>;
}

/// The real mounter (see the module docs).
#[derive(Debug, Clone)]
pub struct SystemMounter {
    program: PathBuf,
    unmount_timeout: Duration,
}

impl SystemMounter {
    /// A mounter running `program` (`None`: `mount` from `PATH`) for non-tmpfs mounts.
    pub fn new(program: Option<PathBuf>) -> Self {
        SystemMounter {
            program: program.unwrap_or_else(|| PathBuf::from("mount")),
            unmount_timeout: UNMOUNT_TIMEOUT,
        }
    }

    /// The same mounter with another unmount timeout.
    pub fn with_unmount_timeout(mut self, timeout: Duration) -> Self {
        self.unmount_timeout = timeout;
        self
    }

    /// The mount program.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

/// The mount program's arguments: `-t TYPE [-o OPTS] SOURCE TARGET`.
pub fn mount_args(source: &str, target: &Path, fstype: &str, options: &[String]) -> Vec<String> {
    let mut args = vec!["-t".to_string(), fstype.to_string()];
    if !options.is_empty() {
        args.push("-o".into());
        args.push(options.join(","));
    }
    args.push(source.to_string());
    args.push(target.display().to_string());
    args
}

/// Runs `unmount` on its own thread and waits `timeout` for it; when it hangs (a dead NFS
/// server never answers), runs `detach` (a lazy unmount) instead, with a warning. The hung
/// thread is left behind.
fn unmount_or_detach(
    target: &Path,
    timeout: Duration,
    unmount: impl FnOnce() -> nix::Result<()> + Send + 'static,
    detach: impl FnOnce() -> nix::Result<()>,
) -> Result<(), MountError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(unmount());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(MountError::Syscall {
            op: "unmounting",
            target: target.into(),
            source,
        }),
        Err(_) => {
            tracing::warn!(target = %target.display(), ?timeout, "unmount hangs (server unreachable?); detaching it lazily");
            detach().map_err(|source| MountError::Syscall {
                op: "lazily unmounting",
                target: target.into(),
                source,
            })
        }
    }
}

impl Mounter for SystemMounter {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        options: &[String],
    ) -> Result<(), MountError> {
        if fstype == "tmpfs" {
            let data = options.join(",");
            return nix::mount::mount(
                Some(source),
                target,
                Some("tmpfs"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(|source| MountError::Syscall {
                op: "mounting tmpfs at",
                target: target.into(),
                source,
            });
        }
        let args = mount_args(source, target, fstype, options);
        let command = self.program.display().to_string();
        tracing::info!(%command, args = %args.join(" "), "mounting");
        let mut child = Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| MountError::Spawn {
                command: command.clone(),
                source,
            })?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < MOUNT_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(MountError::Timeout {
                        command,
                        target: target.into(),
                        timeout: MOUNT_TIMEOUT,
                    });
                }
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut output = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut output);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut output);
        }
        Err(MountError::Command(Box::new(CommandFailure {
            status: status.to_string(),
            command,
            args: args.join(" "),
            output,
        })))
    }

    fn bind(&self, source: &Path, target: &Path) -> Result<(), MountError> {
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| MountError::Syscall {
            op: "bind-mounting onto",
            target: target.into(),
            source: e,
        })
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        let path = target.to_path_buf();
        unmount_or_detach(
            target,
            self.unmount_timeout,
            move || nix::mount::umount2(&path, MntFlags::empty()),
            || nix::mount::umount2(target, MntFlags::MNT_DETACH),
        )
    }

    fn mount_points(&self) -> Result<Vec<MountPoint>, MountError> {
        mountinfo::read().map_err(MountError::MountInfo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_unmount_is_detached_lazily() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let detached = std::cell::Cell::new(false);
        // The unmount hangs until the test releases it (60 s at most, should the code under
        // test wait for it): it must still be hanging when unmount_or_detach returns.
        let (release, hung) = std::sync::mpsc::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let finished2 = finished.clone();
        let r = unmount_or_detach(
            Path::new("/p/nfs"),
            Duration::from_millis(100),
            move || {
                let _ = hung.recv_timeout(Duration::from_secs(60));
                finished2.store(true, Ordering::SeqCst);
                Ok(())
            },
            || {
                detached.set(true);
                Ok(())
            },
        );
        assert!(
            !finished.load(Ordering::SeqCst),
            "waited for the hung unmount"
        );
        drop(release);
        assert!(r.is_ok());
        assert!(detached.get(), "not detached");
        // A prompt failure (busy) is reported, not detached.
        let detached = std::cell::Cell::new(false);
        let e = unmount_or_detach(
            Path::new("/p/busy"),
            Duration::from_secs(5),
            || Err(nix::errno::Errno::EBUSY),
            || {
                detached.set(true);
                Ok(())
            },
        )
        .unwrap_err();
        assert!(!detached.get());
        assert!(
            e.to_string().starts_with("unmounting /p/busy: EBUSY"),
            "{e}"
        );
    }

    #[test]
    fn mount_args_as_mount_utils_builds_them() {
        let a = mount_args(
            "10.0.0.5:/exports",
            Path::new("/p/v"),
            "nfs",
            &["ro".into()],
        );
        assert_eq!(a, ["-t", "nfs", "-o", "ro", "10.0.0.5:/exports", "/p/v"]);
        let a = mount_args("s:/e", Path::new("/p/v"), "nfs", &[]);
        assert_eq!(a, ["-t", "nfs", "s:/e", "/p/v"]);
    }

    #[test]
    fn a_failing_mount_program_reports_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("fake-mount");
        std::fs::write(
            &prog,
            "#!/bin/sh\necho \"mount.nfs: Connection refused for $*\" >&2\nexit 32\n",
        )
        .unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let m = SystemMounter::new(Some(prog.clone()));
        let e = m
            .mount("srv:/x", Path::new("/mnt/t"), "nfs", &["ro".into()])
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("mount failed: exit status: 32\n"),
            "{text}"
        );
        assert!(
            text.contains("Mounting arguments: -t nfs -o ro srv:/x /mnt/t"),
            "{text}"
        );
        assert!(
            text.contains("mount.nfs: Connection refused for -t nfs -o ro srv:/x /mnt/t"),
            "{text}"
        );
        let missing = SystemMounter::new(Some(dir.path().join("nope")));
        assert!(matches!(
            missing.mount("s:/x", Path::new("/t"), "nfs", &[]),
            Err(MountError::Spawn { .. })
        ));
    }
}
