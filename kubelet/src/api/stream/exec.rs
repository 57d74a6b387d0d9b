//! One exec session, whatever the transport ([`super::transport::Transport`]: WebSocket or
//! SPDY/3.1): the command's streams multiplexed onto the channels of [`super::channel`], its
//! exit status on the error channel.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{self, Protocol, TerminalSize};
use super::transport::{Input, Transport};
use super::ExecOptions;

/// Output is read and sent in chunks of at most this many bytes.
const CHUNK: usize = 32 * 1024;
/// After the command exits, its output is drained for at most this long (a background process
/// may keep the pipes open).
const DRAIN: Duration = Duration::from_secs(5);
/// A client that went away: the command gets SIGTERM (which the runtime forwards), then
/// SIGKILL after this long.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// The command started: the process, where stdin goes, the outputs and the terminal.
struct Started {
    child: tokio::process::Child,
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)>,
    /// The terminal's master side (for resizes).
    tty: Option<OwnedFd>,
}

/// Starts `command` with pipes, or with a new pseudo-terminal as its standard streams and
/// controlling terminal (the runtime copies it to and from the container's terminal and
/// follows its size).
fn start(mut command: std::process::Command, opts: &ExecOptions) -> std::io::Result<Started> {
    if opts.tty {
        let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        let slave = pty.slave;
        command
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the closure touches no memory of
        // the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut cmd = tokio::process::Command::from(command);
        let child = cmd.spawn()?;
        drop(cmd);
        let reader = tokio::fs::File::from_std(std::fs::File::from(pty.master.try_clone()?));
        let writer = tokio::fs::File::from_std(std::fs::File::from(pty.master.try_clone()?));
        return Ok(Started {
            child,
            stdin: opts
                .stdin
                .then(|| Box::new(writer) as Box<dyn AsyncWrite + Send + Unpin>),
            outputs: vec![(channel::STDOUT, Box::new(reader))],
            tty: Some(pty.master),
        });
    }
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    command
        .stdin(pipe(opts.stdin))
        .stdout(pipe(opts.stdout))
        .stderr(pipe(opts.stderr));
    let mut child = tokio::process::Command::from(command).spawn()?;
    let stdin = child
        .stdin
        .take()
        .map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>);
    let mut outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)> = Vec::new();
    if let Some(o) = child.stdout.take() {
        outputs.push((channel::STDOUT, Box::new(o)));
    }
    if let Some(e) = child.stderr.take() {
        outputs.push((channel::STDERR, Box::new(e)));
    }
    Ok(Started {
        child,
        stdin,
        outputs,
        tty: None,
    })
}

/// Sets the terminal behind `master` to `size` (the kernel signals the foreground process).
fn resize(master: &OwnedFd, size: TerminalSize) {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "exec: resizing the terminal");
    }
}

/// The error channel's final message (upstream's `writeStatus`): `None` when nothing is
/// written (success under the v1 protocols).
pub(crate) fn final_status(
    protocol: Protocol,
    command: &[String],
    result: &Result<ExitStatus, String>,
) -> Option<Vec<u8>> {
    use std::os::unix::process::ExitStatusExt;
    let status = match result {
        Ok(s) if s.success() => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(s) => {
            let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "command terminated with non-zero exit code: error executing command \
                     [{}], exit code {code}",
                    command.join(" ")
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
        Err(e) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": e}]},
            "code": 500,
        }),
    };
    if protocol.status_errors() {
        return Some(serde_json::to_vec(&status).unwrap_or_default());
    }
    (status["status"] != "Success").then(|| {
        status["message"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec()
    })
}

/// Runs the session to its end on `transport`.
pub(super) async fn run(transport: Transport, opts: ExecOptions, command: std::process::Command) {
    transport.established(opts.stdout, opts.stderr).await;
    let Transport {
        out: out_tx,
        writer,
        input,
        reader,
        status: protocol,
    } = transport;

    let started = match start(command, &opts) {
        Ok(s) => s,
        Err(e) => {
            let result = Err(format!("starting the command: {e}"));
            if let Some(m) = final_status(protocol, &opts.command, &result) {
                let _ = out_tx.send((channel::ERROR, m)).await;
            }
            drop(out_tx);
            let _ = writer.await;
            reader.abort();
            return;
        }
    };
    let Started {
        mut child,
        stdin,
        outputs,
        tty,
    } = started;
    let readers: Vec<_> = outputs
        .into_iter()
        .map(|(ch, mut r)| {
            let tx = out_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tx.send((ch, buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Vec<u8>>(8);
    let stdin_task = stdin.map(|mut w| {
        tokio::spawn(async move {
            while let Some(data) = stdin_rx.recv().await {
                if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
            let _ = w.shutdown().await;
        })
    });
    let stdin_tx = stdin_task.as_ref().map(|_| stdin_tx);
    let mut inbound = tokio::spawn(consume(input, stdin_tx, tty));

    let exited = tokio::select! {
        s = child.wait() => Some(s),
        _ = &mut inbound => None,
    };
    let Some(exited) = exited else {
        // the client went away (or idled out): stop the command
        terminate(&mut child).await;
        for r in readers {
            r.abort();
        }
        if let Some(t) = stdin_task {
            t.abort();
        }
        drop(out_tx);
        writer.abort();
        reader.abort();
        return;
    };
    let _ = tokio::time::timeout(DRAIN, futures::future::join_all(readers)).await;
    let result = exited.map_err(|e| format!("waiting for the command: {e}"));
    if let Some(m) = final_status(protocol, &opts.command, &result) {
        let _ = out_tx.send((channel::ERROR, m)).await;
    }
    drop(out_tx);
    let _ = writer.await;
    inbound.abort();
    reader.abort();
    if let Some(t) = stdin_task {
        t.abort();
    }
}

/// SIGTERM, then SIGKILL after [`TERM_GRACE`]; reaps the process.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Takes the client's input until it ends (the client went away): stdin data goes to `stdin`,
/// resizes to the terminal.
async fn consume(
    mut input: mpsc::Receiver<Input>,
    mut stdin: Option<mpsc::Sender<Vec<u8>>>,
    tty: Option<OwnedFd>,
) {
    let mut sizes = Vec::new();
    while let Some(event) = input.recv().await {
        match event {
            Input::Stdin(data) => {
                if let Some(tx) = &stdin {
                    if tx.send(data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Input::StdinClosed => stdin = None,
            Input::Resize(data) => {
                let Some(master) = &tty else { continue };
                sizes.extend_from_slice(&data);
                match channel::take_sizes(&mut sizes) {
                    Ok(got) => {
                        for s in got {
                            resize(master, s);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "exec: resize events stop");
                        sizes.clear();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn final_status_as_upstream() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let ok = Ok(ExitStatus::from_raw(0));
        let three = Ok(ExitStatus::from_raw(3 << 8));
        assert_eq!(
            final_status(Protocol::V5, &cmd, &ok).unwrap(),
            br#"{"metadata":{},"status":"Success"}"#
        );
        let v: serde_json::Value =
            serde_json::from_slice(&final_status(Protocol::V4, &cmd, &three).unwrap()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(
            v["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert_eq!(
            v["message"],
            "command terminated with non-zero exit code: error executing command \
             [sh -c exit 3], exit code 3"
        );
        assert_eq!(final_status(Protocol::V1, &cmd, &ok), None);
        assert_eq!(
            final_status(Protocol::V1, &cmd, &three).unwrap(),
            b"command terminated with non-zero exit code: error executing command \
              [sh -c exit 3], exit code 3"
        );
        let v: serde_json::Value = serde_json::from_slice(
            &final_status(Protocol::V5, &cmd, &Err("no such file".into())).unwrap(),
        )
        .unwrap();
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(v["code"], 500);
    }
}
