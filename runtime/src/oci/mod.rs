//! The OCI runtime driver: the [`OciRuntime`] trait over an OCI-CLI runtime
//! (`create/start/state/kill/delete/exec`), implemented by [`RuncCli`] for
//! runc or any runtime with runc's command line (crun, youki) by path.

mod command;
mod features;
mod runc;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::signal::{KillScope, Signal};

pub use command::{run_capped, run_with_timeout, MAX_OUTPUT};
pub use features::{
    kernel_userns_missing, numeric_version, parse_features_idmap, parse_version, RuntimeFeatures,
    CRUN_IDMAP_VERSION, IDMAP_TMPFS_KERNEL,
};
pub use runc::{resolve_runtime, RuncCli, KNOWN_RUNTIMES};

/// A failed OCI runtime call.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The runtime binary could not be run.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The runtime exited non-zero.
    #[error("{command} failed ({status}): {message}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The runtime's error message.
        message: String,
    },
    /// The runtime did not finish in time and was killed.
    #[error("{command} did not finish within {after:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// The time limit.
        after: Duration,
    },
    /// The runtime's output did not parse.
    #[error("parsing the output of {command}: {message}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        message: String,
    },
}

/// Status of a container as the OCI runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OciStatus {
    /// Being created.
    Creating,
    /// Created, waiting for `start`.
    Created,
    /// The process runs.
    Running,
    /// Paused (freezer).
    Paused,
    /// The process has exited.
    Stopped,
}

/// The runtime's `state` of one container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct OciState {
    /// Container id.
    pub id: String,
    /// Status.
    pub status: OciStatus,
    /// Host pid of the container's init (0 when stopped).
    #[serde(default)]
    pub pid: i32,
    /// Bundle directory.
    #[serde(default)]
    pub bundle: PathBuf,
}

/// The arguments of `create`.
#[derive(Debug)]
pub struct CreateRequest<'a> {
    /// Container id.
    pub id: &'a str,
    /// Bundle directory holding `config.json`.
    pub bundle: &'a Path,
    /// Where the runtime writes the init pid.
    pub pid_file: &'a Path,
    /// The container's stdout (default /dev/null).
    pub stdout: Option<OwnedFd>,
    /// The container's stderr (default /dev/null).
    pub stderr: Option<OwnedFd>,
    /// The container's stdin (default /dev/null).
    pub stdin: Option<OwnedFd>,
    /// For a container with a terminal: the socket the runtime sends the terminal's master
    /// to (`--console-socket`).
    pub console_socket: Option<&'a Path>,
}

/// The result of a command run in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code (128+signal when killed by a signal).
    pub exit_code: i32,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// The command ran out of time and was killed.
    pub timed_out: bool,
}

/// An OCI-CLI runtime. Implementations must be usable from many threads.
pub trait OciRuntime: Send + Sync + std::fmt::Debug {
    /// The runtime's name for logs (`runc`).
    fn name(&self) -> &str;
    /// `create --bundle B --pid-file P ID`: returns when the init waits for `start`.
    fn create(&self, req: CreateRequest<'_>) -> Result<(), OciError>;
    /// `start ID`.
    fn start(&self, id: &str) -> Result<(), OciError>;
    /// `state ID`; `None` when the runtime does not know the container.
    fn state(&self, id: &str) -> Result<Option<OciState>, OciError>;
    /// `kill [--all] ID SIGNAL`: `--all` for [`KillScope::All`].
    fn kill(&self, id: &str, signal: Signal, scope: KillScope) -> Result<(), OciError>;
    /// `delete [--force] ID`; deleting an unknown container succeeds.
    fn delete(&self, id: &str, force: bool) -> Result<(), OciError>;
    /// `exec ID ARGS...` capturing at most `max_output` bytes of stdout and of stderr (read
    /// while it runs, the rest dropped), killed after `timeout`.
    fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, OciError>;
    /// `list`: every container under this runtime's root.
    fn list(&self) -> Result<Vec<OciState>, OciError>;
    /// The command line `exec [--tty] ID ARGS...`, for a caller that runs it with its own
    /// standard streams and waits for it (the node API's streaming exec): its exit status is
    /// the command's. With `tty`, the runtime allocates the container's terminal and copies it
    /// to and from its own, which must then be a terminal (its controlling one, for resizes).
    /// `None` when this runtime cannot.
    fn exec_command(&self, id: &str, args: &[String], tty: bool) -> Option<std::process::Command> {
        let _ = (id, args, tty);
        None
    }
}
