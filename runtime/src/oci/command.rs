//! Running an external command with a time limit and captured output.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::OciError;

/// Output of a finished command.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// stdout.
    pub stdout: Vec<u8>,
    /// stderr.
    pub stderr: Vec<u8>,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Waits for `child` at most `timeout`; on timeout kills and reaps it and answers
/// [`OciError::Timeout`] for `command`.
pub(crate) fn wait_or_kill(
    child: &mut Child,
    timeout: Duration,
    command: &str,
) -> Result<ExitStatus, OciError> {
    let status = wait_timeout(child, timeout).map_err(|source| OciError::Spawn {
        command: command.to_string(),
        source,
    })?;
    status.ok_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        OciError::Timeout {
            command: command.to_string(),
            after: timeout,
        }
    })
}

/// Waits for `child` at most `timeout`, polling with a short sleep (≤ 0.5 ms
/// for the first half second, then ≤ 10 ms);
/// `None` on timeout (the child is left running).
pub(crate) fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Ok(None);
        }
        std::thread::sleep(pause);
        // Fine-grained while a quick command would finish, then back off.
        let cap = if elapsed < Duration::from_millis(500) {
            Duration::from_micros(500)
        } else {
            Duration::from_millis(10)
        };
        pause = (pause * 2).min(cap);
    }
}

/// Runs `cmd` with stdin from /dev/null and stdout/stderr captured, killing it
/// after `timeout`. Output is read on helper threads so a full pipe never blocks.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Finished, OciError> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| OciError::Spawn {
            command: command.clone(),
            source,
        })?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = wait_or_kill(&mut child, timeout, &command)?;
    // A background process left holding the pipes must not block us forever.
    let grace = Duration::from_secs(1);
    Ok(Finished {
        status,
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: err.recv_timeout(grace).unwrap_or_default(),
    })
}
