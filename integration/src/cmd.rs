//! Running external commands with a timeout, or in the background with their output collected.

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

/// A process run in the background, its stdout and stderr collected line by line by threads
/// as they come; killed when dropped (a failed check must not leave it running).
#[derive(Debug)]
pub struct Spawned {
    /// The process (its stdin, when piped, to write to).
    pub child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Spawned {
    /// Spawns `cmd` with its stdout and stderr piped and collected.
    pub fn spawn(mut cmd: Command) -> anyhow::Result<Spawned> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut spawned = Spawned::with_output(child, stdout);
        let reader = collect(stderr, spawned.err.clone());
        spawned.readers.push(reader);
        Ok(spawned)
    }

    /// `child`, its output read from `stdout` (a terminal's master side, say) and collected as
    /// stdout; nothing as stderr.
    pub fn with_output(child: std::process::Child, stdout: impl Read + Send + 'static) -> Spawned {
        let mut spawned = Spawned {
            child,
            out: std::sync::Arc::default(),
            err: std::sync::Arc::default(),
            readers: Vec::new(),
        };
        let reader = collect(stdout, spawned.out.clone());
        spawned.readers.push(reader);
        spawned
    }

    /// Its stdout so far.
    pub fn out(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Its stderr so far.
    pub fn err(&self) -> String {
        self.err.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (60 s at most) until `done` holds for (stdout, stderr) so far.
    pub fn wait_for(&self, what: &str, done: impl Fn(&str, &str) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.out(), &self.err()) {
            if Instant::now() > deadline {
                bail!(
                    "{what} not seen: stdout {:?} stderr {:?}",
                    self.out(),
                    self.err()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits (60 s at most) for the process to exit: its exit code (-1 for a signal).
    pub fn wait_exit(&mut self, what: &str) -> anyhow::Result<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait()? {
                // the readers end with the pipes (later, if a child of it still holds them)
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.readers.iter().all(|r| r.is_finished()) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(st.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} did not end: stdout {:?} stderr {:?}",
                    self.out(),
                    self.err()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends what `from` gives to `to` as it comes, in a thread, until its end.
fn collect(
    mut from: impl Read + Send + 'static,
    to: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                return;
            }
            to.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

/// The containers `runc --root ROOT list` reports (`id`, `status`, ... as runc prints them);
/// none when `root` does not exist. `runc list` reads the root's entries and then each
/// container's state, so a container deleted in between fails the whole listing ("stat
/// ROOT/ID: no such file or directory"): that race is retried (bounded), anything else is an
/// error.
pub fn runc_list(root: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    const TRIES: u32 = 10;
    let mut tries = 0;
    loop {
        if !root.exists() {
            return Ok(Vec::new());
        }
        let out = run(
            Command::new("runc")
                .arg("--root")
                .arg(root)
                .args(["list", "-f", "json"]),
            Duration::from_secs(10),
        )?;
        if out.status.success() {
            let list: Option<Vec<serde_json::Value>> = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("runc list of {} printed no JSON", root.display()))?;
            return Ok(list.unwrap_or_default());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        tries += 1;
        if tries >= TRIES || !stderr.contains("no such file or directory") {
            bail!(
                "runc --root {} list failed ({}): {}",
                root.display(),
                out.status,
                stderr.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
