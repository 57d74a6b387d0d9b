//! Starting a shim from the agent: the [`ShimLauncher`] trait and the real
//! [`ProcessShimLauncher`] that runs `<binary> shim <args>` and reads its report.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::args::ShimArgs;

/// How long the agent waits for a shim to report that `create` finished.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(90);

/// A shim that created its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimStarted {
    /// Host pid of the container's init.
    pub container_pid: i32,
    /// Pid of the shim.
    pub shim_pid: i32,
}

/// Starts the monitor of one container, which creates it.
pub trait ShimLauncher: Send + Sync + std::fmt::Debug {
    /// Starts a shim for `args` and waits until the container is created;
    /// `Err` carries the reason (the runtime's message).
    fn launch(&self, args: &ShimArgs) -> Result<ShimStarted, String>;
}

/// Runs the shim as `<binary> shim <args>` (the hidden `kubenode shim` subcommand).
#[derive(Debug, Clone)]
pub struct ProcessShimLauncher {
    binary: PathBuf,
}

impl ProcessShimLauncher {
    /// A launcher running the shim from `binary` (normally kubenode itself).
    pub fn new(binary: impl Into<PathBuf>) -> ProcessShimLauncher {
        ProcessShimLauncher {
            binary: binary.into(),
        }
    }
}

/// Parses the shim's one-line report.
pub(crate) fn parse_report(line: &str) -> Result<ShimStarted, String> {
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("ok ") {
        let mut it = rest.split_whitespace().map(str::parse::<i32>);
        if let (Some(Ok(container_pid)), Some(Ok(shim_pid))) = (it.next(), it.next()) {
            return Ok(ShimStarted {
                container_pid,
                shim_pid,
            });
        }
    }
    if let Some(msg) = line.strip_prefix("error ") {
        return Err(msg.to_string());
    }
    Err(format!("unexpected shim report {line:?}"))
}

impl ShimLauncher for ProcessShimLauncher {
    fn launch(&self, args: &ShimArgs) -> Result<ShimStarted, String> {
        super::lock::create(&args.bundle).map_err(|e| {
            format!(
                "making {}: {e}",
                super::lock::lock_path(&args.bundle).display()
            )
        })?;
        let stderr = std::fs::File::create(args.bundle.join("shim.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut child = Command::new(&self.binary)
            .arg("shim")
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting shim {}: {e}", self.binary.display()))?;
        let stdout = child.stdout.take().ok_or("shim has no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let report = rx.recv_timeout(REPORT_TIMEOUT);
        // The first shim process exits right after forking.
        let _ = child.wait();
        match report {
            Ok(line) if line.is_empty() => Err("shim exited without reporting".to_string()),
            Ok(line) => parse_report(&line),
            Err(_) => Err(format!("shim did not report within {REPORT_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports() {
        assert_eq!(
            parse_report("ok 12 34\n").unwrap(),
            ShimStarted {
                container_pid: 12,
                shim_pid: 34
            }
        );
        assert_eq!(
            parse_report("error exec: \"x\": not found\n").unwrap_err(),
            "exec: \"x\": not found"
        );
        assert!(parse_report("garbage").is_err());
    }
}
