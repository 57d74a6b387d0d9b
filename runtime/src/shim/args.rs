//! The shim's command line, shared by the agent (which builds it) and the
//! shim (which parses it): `--key value` pairs, no parser dependency.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// Default size at which a container log is rotated (10 MiB, `containerLogMaxSize`).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default number of log files kept per container (`containerLogMaxFiles`).
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;

/// Everything one shim needs to create and watch one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    /// Container id.
    pub id: String,
    /// Bundle directory (holds `config.json`).
    pub bundle: PathBuf,
    /// OCI runtime binary.
    pub runtime: PathBuf,
    /// OCI runtime state dir (`--root`).
    pub runtime_root: PathBuf,
    /// Where the runtime writes the container's pid.
    pub pid_file: PathBuf,
    /// Where the shim records the exit status.
    pub exit_file: PathBuf,
    /// CRI log file, or none to discard output (the pause container).
    pub log_path: Option<PathBuf>,
    /// Rotate the log at this size.
    pub log_max_size: u64,
    /// Keep at most this many log files (current included).
    pub log_max_files: u32,
    /// cgroup files with an `oom_kill N` line (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_files: Vec<PathBuf>,
    /// The container's `oom_score_adj` (already clamped): the shim takes it for itself before
    /// it runs the runtime, so neither the shim nor anything it starts inherits the agent's
    /// protected value.
    pub oom_score_adj: Option<i32>,
    /// The container has a standard input (`stdin`): the shim keeps its pipe's write end and
    /// serves the attach socket.
    pub stdin: bool,
    /// `stdinOnce`: the stdin closes when the first attach session's input ends.
    pub stdin_once: bool,
    /// The container has a terminal (`tty`): the runtime sends its master on a console
    /// socket, and the shim serves the attach socket.
    pub tty: bool,
}

/// A bad shim command line.
#[derive(Debug, thiserror::Error)]
#[error("shim arguments: {0}")]
pub struct ArgsError(String);

impl ShimArgs {
    /// The arguments after `kubenode shim`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        let mut push = |k: &str, v: &OsStr| {
            out.push(k.into());
            out.push(v.to_owned());
        };
        push("--id", OsStr::new(&self.id));
        push("--bundle", self.bundle.as_os_str());
        push("--runtime", self.runtime.as_os_str());
        push("--runtime-root", self.runtime_root.as_os_str());
        push("--pid-file", self.pid_file.as_os_str());
        push("--exit-file", self.exit_file.as_os_str());
        if let Some(p) = &self.log_path {
            push("--log-path", p.as_os_str());
        }
        push("--log-max-size", OsStr::new(&self.log_max_size.to_string()));
        push(
            "--log-max-files",
            OsStr::new(&self.log_max_files.to_string()),
        );
        for f in &self.oom_files {
            push("--oom-file", f.as_os_str());
        }
        if let Some(adj) = self.oom_score_adj {
            push("--oom-score-adj", OsStr::new(&adj.to_string()));
        }
        for (flag, on) in [
            ("--stdin", self.stdin),
            ("--stdin-once", self.stdin_once),
            ("--tty", self.tty),
        ] {
            if on {
                push(flag, OsStr::new("true"));
            }
        }
        out
    }

    /// Parses the arguments; anything before the first `--flag` (program
    /// name, `shim`) is skipped.
    pub fn parse(args: &[OsString]) -> Result<ShimArgs, ArgsError> {
        let start = args
            .iter()
            .position(|a| a.to_string_lossy().starts_with("--"))
            .unwrap_or(args.len());
        let mut it = args[start..].iter();
        let mut a = ShimArgs {
            id: String::new(),
            bundle: PathBuf::new(),
            runtime: PathBuf::new(),
            runtime_root: PathBuf::new(),
            pid_file: PathBuf::new(),
            exit_file: PathBuf::new(),
            log_path: None,
            log_max_size: DEFAULT_LOG_MAX_SIZE,
            log_max_files: DEFAULT_LOG_MAX_FILES,
            oom_files: Vec::new(),
            oom_score_adj: None,
            stdin: false,
            stdin_once: false,
            tty: false,
        };
        while let Some(key) = it.next() {
            let key = key.to_string_lossy().into_owned();
            let value = it
                .next()
                .ok_or_else(|| ArgsError(format!("{key} needs a value")))?
                .clone();
            let num = |v: &OsString| {
                v.to_string_lossy()
                    .parse::<u64>()
                    .map_err(|_| ArgsError(format!("{key}: not a number")))
            };
            match key.as_str() {
                "--id" => a.id = value.to_string_lossy().into_owned(),
                "--bundle" => a.bundle = value.into(),
                "--runtime" => a.runtime = value.into(),
                "--runtime-root" => a.runtime_root = value.into(),
                "--pid-file" => a.pid_file = value.into(),
                "--exit-file" => a.exit_file = value.into(),
                "--log-path" => a.log_path = Some(value.into()),
                "--log-max-size" => a.log_max_size = num(&value)?,
                "--log-max-files" => a.log_max_files = num(&value)? as u32,
                "--oom-file" => a.oom_files.push(value.into()),
                "--oom-score-adj" => {
                    a.oom_score_adj = Some(
                        value
                            .to_string_lossy()
                            .parse::<i32>()
                            .map_err(|_| ArgsError(format!("{key}: not a number")))?,
                    )
                }
                "--stdin" => a.stdin = flag(&key, &value)?,
                "--stdin-once" => a.stdin_once = flag(&key, &value)?,
                "--tty" => a.tty = flag(&key, &value)?,
                other => return Err(ArgsError(format!("unknown flag {other}"))),
            }
        }
        for (name, empty) in [
            ("--id", a.id.is_empty()),
            ("--bundle", a.bundle.as_os_str().is_empty()),
            ("--runtime", a.runtime.as_os_str().is_empty()),
            ("--runtime-root", a.runtime_root.as_os_str().is_empty()),
            ("--pid-file", a.pid_file.as_os_str().is_empty()),
            ("--exit-file", a.exit_file.as_os_str().is_empty()),
        ] {
            if empty {
                return Err(ArgsError(format!("{name} is required")));
            }
        }
        Ok(a)
    }
}

fn flag(key: &str, value: &OsString) -> Result<bool, ArgsError> {
    match value.to_str() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(ArgsError(format!("{key}: not true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = ShimArgs {
            id: "abc".into(),
            bundle: "/b".into(),
            runtime: "/usr/sbin/runc".into(),
            runtime_root: "/run/k/runc".into(),
            pid_file: "/b/pid".into(),
            exit_file: "/b/exit".into(),
            log_path: Some("/logs/0.log".into()),
            log_max_size: 100,
            log_max_files: 3,
            oom_files: vec!["/sys/fs/cgroup/memory/x/memory.oom_control".into()],
            oom_score_adj: Some(-997),
            stdin: true,
            stdin_once: false,
            tty: true,
        };
        let mut argv: Vec<OsString> = vec!["kubenode".into(), "shim".into()];
        argv.extend(a.to_args());
        assert_eq!(ShimArgs::parse(&argv).unwrap(), a);
        assert!(ShimArgs::parse(&["--id".into()]).is_err());
        assert!(ShimArgs::parse(&["--bogus".into(), "x".into()]).is_err());
        let mut bad = argv.clone();
        bad.extend(["--oom-score-adj".into(), "high".into()]);
        assert!(ShimArgs::parse(&bad).is_err());
    }
}
