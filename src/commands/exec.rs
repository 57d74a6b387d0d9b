//! `kubenode exec [-i] [-t] POD [-c C] -- CMD ARGS...`: runs a command in a container and exits
//! with its code, as `kubectl exec`.
//!
//! Without `-i`/`-t` the command runs to completion through the socket's `POST /exec` (bounded
//! by `--timeout`) and its output is printed when it ends. With `-i` (stdin) or `-t` (a
//! terminal) it runs as a stream through the socket's `/exec/...` WebSocket
//! ([`kubenode_kubelet::api::ApiClient::exec_stream`], the handler `kubectl exec` reaches on
//! :10250): standard input is forwarded as it is read and its end closes the command's, output
//! is printed as it comes; with a terminal the local one is put in raw mode (restored when the
//! session ends, also on error) and its size is sent at the start and on each `SIGWINCH`.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use kubenode_kubelet::api::stream::channel::TerminalSize;
use kubenode_kubelet::api::stream::ExecOptions;
use kubenode_kubelet::api::{pick_container, ContainerRef, ExecRequest, StreamInput};
use nix::sys::termios::{self, SetArg, Termios};

use super::AgentRef;

/// Options of `kubenode exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The pod's name.
    pub pod: String,
    /// The container (may be left out when the pod has one).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Give the command a terminal: only with `-i` and when standard input is a terminal (as
    /// kubectl's; otherwise the command runs without one).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Kill the command after this many seconds (without `-i`/`-t`: a stream lasts as long
    /// as the command).
    #[arg(long, default_value_t = 60, conflicts_with_all = ["stdin", "tty"])]
    pub timeout: u64,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Runs `kubenode exec`; the process exits with the command's exit code.
pub async fn run(args: ExecArgs) -> anyhow::Result<()> {
    let code = if args.stdin || args.tty {
        stream(args).await?
    } else {
        let request = ExecRequest {
            target: ContainerRef {
                namespace: args.namespace,
                pod: args.pod,
                container: args.container,
            },
            command: args.command,
            timeout: Duration::from_secs(args.timeout),
        };
        let answer = args.agent.client().exec(&request).await?;
        std::io::stdout().write_all(answer.stdout.as_bytes())?;
        std::io::stderr().write_all(answer.stderr.as_bytes())?;
        answer.exit_code
    };
    if code != 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(())
}

/// The streaming exec of `-i`/`-t`: the command's exit code.
async fn stream(args: ExecArgs) -> anyhow::Result<i32> {
    let client = args.agent.client();
    let pods = client.pods().await?;
    let pod = super::find_pod(&pods, &args.namespace, &args.pod).ok_or_else(|| {
        anyhow::anyhow!(
            "pods {:?} not found in namespace {}",
            args.pod,
            args.namespace
        )
    })?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if let Some(phase @ ("Succeeded" | "Failed")) = phase {
        anyhow::bail!("cannot exec into a container in a completed pod; current phase is {phase}");
    }
    let container = pick_container(pod, args.container.as_deref())?;
    // kubectl's `SetupTTY`: a terminal needs input (`-t` alone is none, as kubectl's, whose
    // flag help says so), and input that is one (said on stderr)
    let mut tty = args.tty && args.stdin;
    if tty && !std::io::stdin().is_terminal() {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
        tty = false;
    }
    let opts = ExecOptions {
        target: ContainerRef {
            namespace: args.namespace,
            pod: args.pod,
            container: Some(container),
        },
        command: args.command,
        stdin: args.stdin,
        stdout: true,
        stderr: !tty,
        tty,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    // restored when dropped: at the end of this function, whatever the outcome
    let raw = if tty { Some(RawMode::enter()?) } else { None };
    if tty {
        if let Some(size) = terminal_size() {
            let _ = tx.send(StreamInput::Resize(size)).await;
        }
        let resizes = tx.clone();
        let mut winch =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some(size) = terminal_size() {
                    if resizes.send(StreamInput::Resize(size)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    if opts.stdin {
        spawn_stdin_reader(tx);
    } else {
        drop(tx);
    }
    let mut output = super::StreamOutput::default();
    let code = client
        .exec_stream(&opts, rx, |channel, data| output.write(channel, data))
        .await?;
    drop(raw);
    output.finish()?;
    if code != 0 {
        // client-go's `CodeExitError`, which kubectl prints before exiting with the code
        eprintln!("command terminated with exit code {code}");
    }
    Ok(code)
}

/// Reads standard input on a thread of its own (a blocking read that may outlive the session;
/// the process exits without waiting for it) and sends it to the session, then its end.
fn spawn_stdin_reader(tx: tokio::sync::mpsc::Sender<StreamInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(StreamInput::Stdin(buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("kubenode: reading standard input: {e}");
                    break;
                }
            }
        }
        let _ = tx.blocking_send(StreamInput::StdinClosed);
    });
}

/// The local terminal's size: standard output's when it is a terminal, else standard input's
/// (kubectl's choice).
fn terminal_size() -> Option<TerminalSize> {
    let fd = if std::io::stdout().is_terminal() {
        std::io::stdout().as_raw_fd()
    } else {
        std::io::stdin().as_raw_fd()
    };
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some(TerminalSize {
        width: ws.ws_col,
        height: ws.ws_row,
    })
}

/// Standard input's terminal in raw mode (as kubectl's `term.MakeRaw`) until dropped, which
/// restores the settings it found.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| anyhow::anyhow!("reading the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| anyhow::anyhow!("putting the terminal in raw mode: {e}"))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Err(e) = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved) {
            eprintln!("kubenode: restoring the terminal's settings: {e}");
        }
    }
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawMode")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Line {
        #[command(flatten)]
        exec: super::ExecArgs,
    }

    #[test]
    fn flags_as_kubectl() {
        let l = Line::try_parse_from(["kubenode", "-it", "web", "--", "sh", "-c", "tty"]).unwrap();
        assert!(l.exec.stdin && l.exec.tty);
        assert_eq!(l.exec.command, ["sh", "-c", "tty"]);
        let l = Line::try_parse_from(["kubenode", "web", "-c", "app", "--", "true"]).unwrap();
        assert!(!l.exec.stdin && !l.exec.tty);
        assert_eq!(
            (l.exec.timeout, l.exec.container.as_deref()),
            (60, Some("app"))
        );
        // a stream has no timeout: asking for one is refused, not ignored
        let err = Line::try_parse_from(["kubenode", "-i", "--timeout", "5", "web", "--", "cat"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
