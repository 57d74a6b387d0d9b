//! Pod containers: their configuration, status and lifecycle
//! (create → start → stop → remove, and exec).

mod lifecycle;
mod status;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, PodSecurityContext};

use crate::spec::BindMount;

/// The image a container runs: its unpacked layers and its config.
#[derive(Debug, Clone, Default)]
pub struct ImageRef {
    /// The image reference as the pod names it (annotations, status).
    pub name: String,
    /// Unpacked layer directories, bottom layer first (the overlay lowerdirs).
    pub layers: Vec<PathBuf>,
    /// The image config (ENTRYPOINT, CMD, Env, User, WorkingDir).
    pub config: Option<oci_spec::image::ImageConfiguration>,
}

impl From<&crate::image::Image> for ImageRef {
    fn from(image: &crate::image::Image) -> ImageRef {
        ImageRef {
            name: image.reference.clone(),
            layers: image.layers.clone(),
            config: Some(image.config.clone()),
        }
    }
}

/// What the kubelet asks for when it creates a container in a sandbox. Its `Debug` shows the
/// environment's names, never its values (they may come from Secrets).
#[derive(Clone, Default)]
pub struct ContainerConfig {
    /// The Kubernetes container.
    pub container: Container,
    /// The pod's security context.
    pub pod_security: Option<PodSecurityContext>,
    /// The image.
    pub image: ImageRef,
    /// How many times this container restarted before (the log file name).
    pub restart_count: u32,
    /// Bind mounts: `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`,
    /// `/dev/termination-log`, volumes.
    pub mounts: Vec<BindMount>,
    /// Service environment variables, before the container's own.
    pub service_env: Vec<(String, String)>,
    /// Values of the container's `valueFrom` environment variables.
    pub resolved_env: HashMap<String, String>,
    /// OOM score adjustment for the QoS class (clamped to what the host allows).
    pub oom_score_adj: Option<i32>,
    /// The seccomp profile (the kubelet resolves pod and container fields and its default).
    pub seccomp: crate::spec::SeccompProfile,
    /// The AppArmor profile name for `process.apparmorProfile` (`None`: none).
    pub apparmor: Option<String>,
}

impl std::fmt::Debug for ContainerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: Vec<&String>| v.into_iter().cloned().collect::<Vec<_>>();
        let mut resolved: Vec<&String> = self.resolved_env.keys().collect();
        resolved.sort();
        f.debug_struct("ContainerConfig")
            .field("container", &self.container.name)
            .field("image", &self.image.name)
            .field("restart_count", &self.restart_count)
            .field("mounts", &self.mounts)
            .field(
                "service_env",
                &names(self.service_env.iter().map(|(k, _)| k).collect()),
            )
            .field("resolved_env", &names(resolved))
            .field("oom_score_adj", &self.oom_score_adj)
            .field("seccomp", &self.seccomp)
            .field("apparmor", &self.apparmor)
            .finish_non_exhaustive()
    }
}

/// The state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended (or never started: `StartError`).
    Exited,
    /// The runtime lost track of it.
    Unknown,
}

/// A container's status, as the kubelet shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Container id.
    pub id: String,
    /// Sandbox id.
    pub sandbox_id: String,
    /// Container name.
    pub name: String,
    /// Restart count it was created with.
    pub restart_count: u32,
    /// Image name.
    pub image: String,
    /// State.
    pub state: ContainerState,
    /// Host pid of its init while it runs.
    pub pid: Option<i32>,
    /// Exit code once exited (128+signal when killed).
    pub exit_code: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled` or `StartError` once exited.
    pub reason: Option<String>,
    /// Details (the start error, the termination message is the kubelet's).
    pub message: Option<String>,
    /// When it was created.
    pub created_at: jiff::Timestamp,
    /// When it was started.
    pub started_at: Option<jiff::Timestamp>,
    /// When it exited.
    pub finished_at: Option<jiff::Timestamp>,
    /// Its CRI log file.
    pub log_path: PathBuf,
}

/// The result of [`crate::Runtime::exec`].
pub type ExecResult = crate::oci::ExecOutput;

/// Waits (bounded, ~5 s) until a shim wrote `exit` or the shim is gone.
pub(crate) fn wait_for_exit_record(exit: &Path, shim_pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_millis(1);
    loop {
        if exit.exists() {
            return true;
        }
        if shim_pid <= 0 || !process_alive(shim_pid) || Instant::now() >= deadline {
            return exit.exists();
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Whether a process exists and is not a zombie. Asked for every container and sandbox each
/// second (PLEG) and for each Summary, so it asks with a pidfd (`pidfd_open`, a `poll` that
/// does not wait: readable once the process has exited, reaped or not, and `close`) rather
/// than reading `/proc/PID/stat`, whose ~50 fields the kernel formats for each read; that
/// read is left for a kernel without pidfds (before 5.3) or a pid that is not a process's.
pub(crate) fn process_alive(pid: i32) -> bool {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    if pid <= 0 {
        return false;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::ESRCH => false,
            _ => process_alive_by_stat(pid),
        };
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(0) => true,
        Ok(_) => false,
        Err(_) => process_alive_by_stat(pid),
    }
}

/// [`process_alive`] from `/proc/PID/stat`'s state field.
fn process_alive_by_stat(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running process is alive; once it exits it is not, whether still a zombie (not yet
    /// waited for) or reaped; both ways of asking agree; no pid is not a process.
    #[test]
    fn process_alive_until_it_exits() {
        assert!(process_alive(std::process::id() as i32));
        assert!(process_alive_by_stat(std::process::id() as i32));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(process_alive(pid) && process_alive_by_stat(pid));
        child.kill().unwrap();
        // a zombie until waited for: wait (bounded) for the kernel to mark it so
        let t = Instant::now();
        while process_alive_by_stat(pid) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            std::fs::metadata(format!("/proc/{pid}")).is_ok(),
            "not reaped yet"
        );
        assert!(!process_alive(pid), "a zombie is not alive");
        child.wait().unwrap();
        assert!(!process_alive(pid) && !process_alive_by_stat(pid));
        assert!(!process_alive(0) && !process_alive(-1));
    }
}
