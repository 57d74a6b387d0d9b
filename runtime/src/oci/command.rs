//! Running an external command with a time limit and captured output.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

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

/// Output kept per stream of a command by default: 16 MiB, the cap containerd and CRI-O put on
/// `ExecSync` output after CVE-2022-31030 and CVE-2022-1708. More is read and dropped.
pub const MAX_OUTPUT: usize = 16 << 20;

/// How long the pipes are still read after the command exited: a background process it left
/// holding them gets this long, then our ends are closed (its next write fails).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Runs `cmd` with stdin from /dev/null and stdout/stderr captured (at most [`MAX_OUTPUT`]
/// each), killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Finished, OciError> {
    run_capped(cmd, timeout, MAX_OUTPUT)
}

/// One captured pipe: read without blocking, kept up to the cap, the rest dropped.
struct Capture {
    pipe: Option<OwnedFd>,
    data: Vec<u8>,
    max: usize,
}

impl Capture {
    fn new(pipe: Option<OwnedFd>, max: usize) -> Capture {
        if let Some(p) = &pipe {
            if let Ok(flags) = fcntl(p.as_fd(), FcntlArg::F_GETFL) {
                let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
                let _ = fcntl(p.as_fd(), FcntlArg::F_SETFL(flags));
            }
        }
        Capture {
            pipe,
            data: Vec::new(),
            max,
        }
    }

    /// Reads what is there (at most 16 buffers, so a writer faster than us cannot keep us
    /// from the deadline); closes the pipe at end of file or on an error.
    fn read(&mut self, buf: &mut [u8]) {
        for _ in 0..16 {
            let Some(p) = &self.pipe else { return };
            match nix::unistd::read(p, buf) {
                Ok(0) => self.pipe = None,
                Ok(n) => {
                    let room = self.max.saturating_sub(self.data.len());
                    self.data.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => self.pipe = None,
            }
        }
    }
}

/// Runs `cmd` with stdin from /dev/null, killing it after `timeout`. stdout and stderr are
/// read while it runs (one `poll` loop on this thread, no helper threads) and at most
/// `max_output` bytes of each are kept, the rest read and dropped so the command never blocks
/// on a full pipe. Once it exited, the pipes are read for at most [`DRAIN_GRACE`] more, then
/// closed: a background process it left holding them cannot keep us, or a thread of ours,
/// reading.
pub fn run_capped(
    cmd: &mut Command,
    timeout: Duration,
    max_output: usize,
) -> Result<Finished, OciError> {
    let command = describe(cmd);
    let spawn_err = |source| OciError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let mut out = Capture::new(child.stdout.take().map(OwnedFd::from), max_output);
    let mut err = Capture::new(child.stderr.take().map(OwnedFd::from), max_output);
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited: Option<(ExitStatus, Instant)> = None;
    // While the child runs with a pipe still open, wake now and then to notice its exit even
    // if a background process keeps the pipe open and silent.
    let mut slice = Duration::from_millis(1);
    loop {
        if exited.is_none() {
            if let Some(status) = child.try_wait().map_err(spawn_err)? {
                exited = Some((status, Instant::now()));
            }
        }
        if out.pipe.is_none() && err.pipe.is_none() {
            break;
        }
        let now = Instant::now();
        let deadline = match exited {
            Some((_, at)) => at + DRAIN_GRACE,
            None => start + timeout,
        };
        if now >= deadline {
            break;
        }
        let wait = (deadline - now).min(slice);
        slice = (slice * 2).min(Duration::from_millis(50));
        let mut fds: Vec<PollFd<'_>> = [&out.pipe, &err.pipe]
            .into_iter()
            .flatten()
            .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(spawn_err(e.into())),
        }
        drop(fds);
        out.read(&mut buf);
        err.read(&mut buf);
    }
    if exited.is_none() && start.elapsed() >= timeout {
        // Timed out with the command still running: kill it before closing the pipes. Closing
        // them first could let it die of SIGPIPE in between and look like it finished.
        if let Some(status) = child.try_wait().map_err(spawn_err)? {
            exited = Some((status, Instant::now()));
        } else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(OciError::Timeout {
                command,
                after: timeout,
            });
        }
    }
    // Our ends close here (a background holder's next write fails with EPIPE).
    out.pipe = None;
    err.pipe = None;
    let status = match exited {
        Some((status, _)) => status,
        None => {
            let left = timeout.saturating_sub(start.elapsed());
            wait_or_kill(&mut child, left, &command)?
        }
    };
    Ok(Finished {
        status,
        stdout: out.data,
        stderr: err.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A command that prints more than the cap: the output kept is the cap, read while the
    /// command runs (it is drained, so it still finishes), not everything it wrote.
    #[test]
    fn output_is_capped_while_reading() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "head -c 20000000 /dev/zero; echo err >&2"]),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), 16 << 20);
        let out = run_capped(
            Command::new("sh").args(["-c", "head -c 1000000 /dev/zero; echo err >&2"]),
            Duration::from_secs(60),
            10 * 1024,
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(
            (out.stdout.len(), out.stderr.as_slice()),
            (10 * 1024, &b"err\n"[..])
        );
        assert_eq!(out.stderr, b"err\n");
    }

    /// A command that writes without end is still killed at its timeout, its output capped.
    #[test]
    fn an_endless_writer_times_out() {
        let err = run_capped(
            Command::new("yes").arg("y"),
            Duration::from_millis(500),
            1024,
        )
        .unwrap_err();
        assert!(matches!(err, OciError::Timeout { .. }), "{err}");
    }

    /// A background child that keeps stdout open (and keeps writing) after the command exits:
    /// after a bounded wait the pipes are dropped, so its next write fails and it ends. Before,
    /// a reader thread kept the pipe and read from it for as long as the child lived.
    #[test]
    fn a_background_child_holding_the_pipe_is_cut_off() {
        let out = run_with_timeout(
            Command::new("sh").args([
                "-c",
                "sh -c 'trap \"\" PIPE; while echo x; do sleep 0.05; done; exit 0' & echo $! >&2",
            ]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.status.success());
        let pid: i32 = String::from_utf8_lossy(&out.stderr).trim().parse().unwrap();
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
        });
        if !gone {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(gone, "the background writer still had a reader 10 s later");
        assert!(out.stdout.starts_with(b"x\n"));
    }
}
