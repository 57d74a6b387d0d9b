//! [`RuncCli`]: drives runc (or crun/youki, same CLI) with a `--root` of the
//! agent's own, so two agents on one host never see each other's containers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::command::{run_capped, run_with_timeout, wait_or_kill, Finished};
use super::{CreateRequest, ExecOutput, OciError, OciRuntime, OciState};
use crate::signal::{KillScope, Signal};

/// OCI runtimes known to work with this driver (same command line as runc).
pub const KNOWN_RUNTIMES: [&str; 3] = ["runc", "crun", "youki"];

/// Resolves the configured runtime: a path (must be an executable file) or a
/// name looked up in `PATH`. `None` when there is no such executable.
pub fn resolve_runtime(name_or_path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name_or_path.components().count() > 1 || name_or_path.is_absolute() {
        return executable(name_or_path).then(|| name_or_path.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name_or_path))
        .find(|p| executable(p))
}

/// Time limit of one lifecycle call (`create`, `start`, `kill`, `delete`, `state`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// An OCI runtime driven through its command line.
#[derive(Debug, Clone)]
pub struct RuncCli {
    path: PathBuf,
    root: PathBuf,
    name: String,
}

impl RuncCli {
    /// A runtime binary at `path` keeping its state under `root`.
    pub fn new(path: impl Into<PathBuf>, root: impl Into<PathBuf>) -> RuncCli {
        let path = path.into();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "runc".into());
        RuncCli {
            path,
            root: root.into(),
            name,
        }
    }

    /// The runtime's state directory (`--root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The runtime binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&self.root);
        c
    }

    fn call(&self, args: &[&str]) -> Result<Finished, OciError> {
        let mut cmd = self.command();
        cmd.args(args);
        let out = run_with_timeout(&mut cmd, CALL_TIMEOUT)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(OciError::Failed {
                command: format!("{} {}", self.name, args.join(" ")),
                status: out.status.to_string(),
                message: error_message(&out.stderr),
            })
        }
    }
}

/// The useful part of runc's stderr: the last non-empty line, with JSON log
/// lines (`{"level":"error","msg":...}`) reduced to their message.
pub(crate) fn error_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        if let Some(msg) = v.get("msg").and_then(|m| m.as_str()) {
            return msg.to_string();
        }
    }
    line.to_string()
}

fn not_found(e: &OciError) -> bool {
    matches!(e, OciError::Failed { message, .. } if message.contains("does not exist") || message.contains("not found"))
}

impl OciRuntime for RuncCli {
    fn name(&self) -> &str {
        &self.name
    }

    fn create(&self, req: CreateRequest<'_>) -> Result<(), OciError> {
        let log = req.bundle.join("runtime.log");
        let mut cmd = self.command();
        cmd.arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "create", "--bundle"]);
        cmd.arg(req.bundle).arg("--pid-file").arg(req.pid_file);
        if let Some(socket) = req.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(req.id);
        cmd.stdin(req.stdin.map_or_else(Stdio::null, Stdio::from));
        cmd.stdout(req.stdout.map_or_else(Stdio::null, Stdio::from));
        cmd.stderr(req.stderr.map_or_else(Stdio::null, Stdio::from));
        let command = format!("{} create {}", self.name, req.id);
        let mut child = cmd.spawn().map_err(|source| OciError::Spawn {
            command: command.clone(),
            source,
        })?;
        // Our copies of the container's pipes must close now, or the reader never sees EOF.
        drop(cmd);
        let status = wait_or_kill(&mut child, CALL_TIMEOUT, &command)?;
        if status.success() {
            return Ok(());
        }
        let logged = std::fs::read(&log).unwrap_or_default();
        let message = String::from_utf8_lossy(&logged)
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
            .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| "no error message".to_string());
        Err(OciError::Failed {
            command,
            status: status.to_string(),
            message,
        })
    }

    fn start(&self, id: &str) -> Result<(), OciError> {
        self.call(&["start", id]).map(drop)
    }

    fn state(&self, id: &str) -> Result<Option<OciState>, OciError> {
        match self.call(&["state", id]) {
            Ok(out) => serde_json::from_slice(&out.stdout)
                .map(Some)
                .map_err(|e| OciError::Parse {
                    command: format!("{} state {id}", self.name),
                    message: e.to_string(),
                }),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn kill(&self, id: &str, signal: Signal, scope: KillScope) -> Result<(), OciError> {
        let sig = signal.to_string();
        match scope {
            KillScope::All => self.call(&["kill", "--all", id, &sig]).map(drop),
            KillScope::Init => self.call(&["kill", id, &sig]).map(drop),
        }
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        let res = if force {
            self.call(&["delete", "--force", id])
        } else {
            self.call(&["delete", id])
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, OciError> {
        remove_stale_exec_pid_files(&std::env::temp_dir());
        let pid_file = std::env::temp_dir().join(format!(
            "{EXEC_PID_PREFIX}{}-{}.pid",
            std::process::id(),
            crate::fsutil::random_id()
        ));
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .args(args);
        let res = run_capped(&mut cmd, timeout, max_output);
        let out = match res {
            Err(OciError::Timeout { .. }) => {
                // runc itself was killed; kill the process it started too.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = std::fs::remove_file(&pid_file);
                return Ok(ExecOutput {
                    exit_code: 137,
                    timed_out: true,
                    ..Default::default()
                });
            }
            other => other,
        };
        let _ = std::fs::remove_file(&pid_file);
        let out = out?;
        let exit_code = out.status.code().unwrap_or(255);
        Ok(ExecOutput {
            exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: false,
        })
    }

    fn exec_command(&self, id: &str, args: &[String], tty: bool) -> Option<Command> {
        let mut cmd = self.command();
        cmd.arg("exec");
        if tty {
            // containerd's exec with a terminal: `TERM=xterm`, over the container's own
            cmd.args(["--tty", "--env", "TERM=xterm"]);
        }
        cmd.arg(id).args(args);
        Some(cmd)
    }

    fn list(&self) -> Result<Vec<OciState>, OciError> {
        // runc reads the root's entries, then each container's state: a container deleted
        // in between fails the whole listing ("stat ROOT/ID: no such file or directory").
        // That race is tried again (bounded); any other failure is returned.
        let mut tries = 0;
        let out = loop {
            match self.call(&["list", "--format", "json"]) {
                Err(OciError::Failed { message, .. })
                    if tries < LIST_RACE_TRIES && message.contains("no such file or directory") =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        if out.stdout.trim_ascii().is_empty() || out.stdout.trim_ascii() == b"null" {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| OciError::Parse {
            command: format!("{} list", self.name),
            message: e.to_string(),
        })
    }
}

/// How many times `list` is tried again after it raced a container's deletion.
const LIST_RACE_TRIES: u32 = 5;

/// The name every exec's `--pid-file` starts with, then the agent's pid.
const EXEC_PID_PREFIX: &str = "kubenode-exec-";

/// Removes, once per agent run, the exec pid files of agents that are gone (an agent killed
/// during an exec leaves its file in the temporary directory). Another live agent's files,
/// and this one's, stay.
fn remove_stale_exec_pid_files(dir: &std::path::Path) {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| remove_exec_pid_files_of_gone_agents(dir, std::process::id()));
}

fn remove_exec_pid_files_of_gone_agents(dir: &std::path::Path, me: u32) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(EXEC_PID_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner != me && !std::path::Path::new(&format!("/proc/{owner}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exec pid files of agents that are gone go; this agent's, a live one's and other files
    /// stay.
    #[test]
    fn stale_exec_pid_files_of_gone_agents_go() {
        let dir = tempfile::tempdir().unwrap();
        let gone = "kubenode-exec-4194304999-ab.pid"; // above any pid_max
        let live = "kubenode-exec-1-cd.pid"; // init
        let mine = format!("kubenode-exec-{}-ef.pid", std::process::id());
        for name in [gone, live, mine.as_str(), "kubenode-exec-x.pid", "other"] {
            std::fs::write(dir.path().join(name), "1").unwrap();
        }
        remove_exec_pid_files_of_gone_agents(dir.path(), std::process::id());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            live.to_string(),
            mine,
            "kubenode-exec-x.pid".into(),
            "other".into(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    /// A runtime script whose first `list` fails as runc does when a container is deleted
    /// between reading the root and reading the container's state.
    fn racing_runtime(dir: &Path, failures: u32) -> RuncCli {
        let script = dir.join("racy-runc");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nn=$(cat {d}/count 2>/dev/null || echo 0)\necho $((n+1)) > {d}/count\n\
                 if [ \"$n\" -lt {failures} ]; then\n  echo 'time=\"x\" level=error msg=\"stat {d}/abc: no such file or directory\"' >&2\n  exit 1\nfi\n\
                 echo '[{{\"ociVersion\":\"1.0.2\",\"id\":\"c1\",\"pid\":0,\"status\":\"stopped\",\"bundle\":\"/b\",\"rootfs\":\"/b/rootfs\",\"created\":\"2026-01-01T00:00:00Z\",\"owner\":\"root\"}}]'\n",
                d = dir.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        RuncCli::new(script, dir.join("root"))
    }

    #[test]
    fn a_list_that_raced_a_deletion_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let list = racing_runtime(dir.path(), 2).list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, "c1");
        let count = std::fs::read_to_string(dir.path().join("count")).unwrap();
        assert_eq!(count.trim(), "3");
    }

    #[test]
    fn a_list_that_keeps_failing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = racing_runtime(dir.path(), 100).list().unwrap_err();
        assert!(
            err.to_string().contains("no such file or directory"),
            "{err}"
        );
        let count = std::fs::read_to_string(dir.path().join("count")).unwrap();
        assert_eq!(count.trim(), (LIST_RACE_TRIES + 1).to_string());
    }

    #[test]
    fn runtimes_resolve_by_name_or_path() {
        assert_eq!(
            resolve_runtime(Path::new("sh")).map(|p| p.is_absolute()),
            Some(true)
        );
        assert!(resolve_runtime(Path::new("/bin/sh")).is_some());
        assert!(resolve_runtime(Path::new("no-such-runtime-xyz")).is_none());
        assert!(
            resolve_runtime(Path::new("/etc/passwd")).is_none(),
            "not executable"
        );
    }

    #[test]
    fn error_message_prefers_json_msg() {
        assert_eq!(
            error_message(b"{\"level\":\"error\",\"msg\":\"boom\"}\n"),
            "boom"
        );
        assert_eq!(
            error_message(b"first\ncontainer does not exist\n\n"),
            "container does not exist"
        );
    }
}
