//! Running external commands with a timeout.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Runs `cmd` to completion with stdout and stderr captured, killing it after `timeout`.
/// A timeout is an error; a non-zero exit is not (see [`run_ok`]).
pub fn run(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {shown}"))?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Like [`run`], but a non-zero exit is an error carrying the command's stderr.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let shown = format!("{cmd:?}");
    let out = run(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// Runs a shell script (`sh -c`) with a 60 s timeout; a non-zero exit is an error.
/// Returns stdout as text.
pub fn sh(script: &str) -> anyhow::Result<String> {
    let out = run_ok(
        Command::new("sh").arg("-c").arg(script),
        Duration::from_secs(60),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
