//! `kubenode exec [-i] [-t] POD [-c C] -- CMD ARGS...`: runs a command in a container and exits
//! with its code, as `kubectl exec`.
//!
//! The command runs as a stream through the socket's `/exec/...` WebSocket
//! ([`kubenode_kubelet::api::ApiClient::exec_stream`], the handler `kubectl exec` reaches on
//! :10250): its output is printed as it comes (stdout and stderr apart), and its exit code,
//! after client-go's `command terminated with exit code N`, is ours. With `-i` standard input
//! is forwarded as it is read and its end closes the command's; with `-t` (and `-i`) the local
//! terminal is put in raw mode (restored when the session ends, also on error, and by a panic
//! hook on a panic) and its size is sent at the start and on each `SIGWINCH`. Without `-i`/`-t`
//! the session is bounded by `--timeout`: past it the session is closed, which makes the agent
//! stop the command (SIGTERM, then SIGKILL).

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use kubenode_kubelet::api::stream::channel::TerminalSize;
use kubenode_kubelet::api::stream::ExecOptions;
use kubenode_kubelet::api::{pick_container, ContainerRef, StreamInput};
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
    /// Stop the command after this many seconds, 0 for no bound (without `-i`/`-t` only: an
    /// interactive session lasts as long as the command). Past it the session is closed (the
    /// agent stops the command: SIGTERM, then SIGKILL) and kubenode exits with an error.
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
    let code = stream(args).await?;
    if code != 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(())
}

/// The bound on a session: `--timeout` without `-i`/`-t` (0: none), none with either.
fn session_bound(args: &ExecArgs) -> Option<Duration> {
    (!args.stdin && !args.tty && args.timeout > 0).then(|| Duration::from_secs(args.timeout))
}

/// The exec session: the command's exit code.
async fn stream(args: ExecArgs) -> anyhow::Result<i32> {
    let bound = session_bound(&args);
    let client = args.agent.client();
    let pods = client.pods().await?;
    let pod = super::get_pod(&pods, &args.namespace, &args.pod)?;
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
    // restored when dropped: at the end of this function, whatever the outcome
    let (rx, raw) = interactive(opts.stdin, tty).await?;
    let mut output = super::StreamOutput::default();
    let session = client.exec_stream(&opts, rx, |channel, data| output.write(channel, data));
    let code = match bound {
        // dropping the session closes its connection: the agent then stops the command
        Some(after) => tokio::time::timeout(after, session).await.ok(),
        None => Some(session.await),
    };
    drop(raw);
    output.finish()?;
    let Some(code) = code else {
        anyhow::bail!(
            "the command did not end within {}s (--timeout): the session was closed and the \
             agent stops the command",
            args.timeout
        );
    };
    let code = code?;
    if code != 0 {
        // client-go's `CodeExitError`, which kubectl prints before exiting with the code
        eprintln!("command terminated with exit code {code}");
    }
    Ok(code)
}

/// The input of an interactive session (exec or attach): standard input (with `stdin`) and,
/// with `tty`, the terminal's size at the start and after each change; the terminal is put in
/// raw mode until the returned guard is dropped.
pub(super) async fn interactive(
    stdin: bool,
    tty: bool,
) -> anyhow::Result<(tokio::sync::mpsc::Receiver<StreamInput>, Option<RawMode>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
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
    if stdin {
        spawn_stdin_reader(tx);
    }
    Ok((rx, raw))
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
/// restores the settings it found. While it is on, a panic hook restores them too: the release
/// profile aborts on a panic, which runs no destructor, but the hook runs before the abort.
pub(super) struct RawMode {
    fd: RawFd,
}

/// The terminal in raw mode and the settings to restore (at most one at a time), for the panic
/// hook.
static RAW: Mutex<Option<(RawFd, Termios)>> = Mutex::new(None);

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        RawMode::on(std::io::stdin().as_raw_fd())
    }

    /// Puts the terminal `fd` (open for the guard's life) in raw mode.
    fn on(fd: RawFd) -> anyhow::Result<RawMode> {
        // SAFETY: the caller keeps `fd` open while the guard lives.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let saved = termios::tcgetattr(borrowed)
            .map_err(|e| anyhow::anyhow!("reading the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        install_panic_hook();
        *RAW.lock().unwrap_or_else(|e| e.into_inner()) = Some((fd, saved));
        if let Err(e) = termios::tcsetattr(borrowed, SetArg::TCSANOW, &raw) {
            RAW.lock().unwrap_or_else(|e| e.into_inner()).take();
            anyhow::bail!("putting the terminal in raw mode: {e}");
        }
        Ok(RawMode { fd })
    }
}

/// Restores the settings [`RAW`] holds, once: the first of the guard's drop and the panic hook.
fn restore_terminal() -> Option<nix::Result<()>> {
    // `try_lock`: a panic while the lock is held must not deadlock the hook
    let mut raw = match RAW.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    let (fd, saved) = raw.take()?;
    // SAFETY: the guard that stored `fd` keeps it open until it has restored it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    Some(termios::tcsetattr(fd, SetArg::TCSANOW, &saved))
}

/// Chains a hook that restores the terminal ([`restore_terminal`]) before the previous hook
/// prints the panic (installed once).
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = restore_terminal();
            previous(info);
        }));
    });
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(Err(e)) = restore_terminal() {
            eprintln!("kubenode: restoring the terminal's settings: {e}");
        }
    }
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawMode({})", self.fd)
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

    #[test]
    fn only_a_session_without_input_or_terminal_is_bounded() {
        let bound = |argv: &[&str]| super::session_bound(&Line::try_parse_from(argv).unwrap().exec);
        assert_eq!(
            bound(&["kubenode", "web", "--", "true"]),
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(
            bound(&["kubenode", "--timeout", "5", "web", "--", "true"]),
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            bound(&["kubenode", "--timeout", "0", "web", "--", "true"]),
            None
        );
        assert_eq!(bound(&["kubenode", "-i", "web", "--", "cat"]), None);
        assert_eq!(bound(&["kubenode", "-t", "web", "--", "true"]), None);
    }

    /// A panic while the terminal is raw restores it (the hook runs before the release
    /// profile's abort; here the panic unwinds, and the guard outlives it so that only the
    /// hook can have restored the terminal); the guard's drop then has nothing left to do.
    #[test]
    fn a_panic_restores_the_terminal() {
        use nix::sys::termios::{tcgetattr, LocalFlags};
        use std::os::fd::AsRawFd;
        let pty = nix::pty::openpty(None, None).unwrap();
        let before = tcgetattr(&pty.slave).unwrap();
        assert!(before.local_flags.contains(LocalFlags::ICANON));
        let guard = super::RawMode::on(pty.slave.as_raw_fd()).unwrap();
        let raw = tcgetattr(&pty.slave).unwrap();
        assert!(!raw.local_flags.contains(LocalFlags::ICANON));
        assert!(!raw.local_flags.contains(LocalFlags::ECHO));
        let panicked = std::panic::catch_unwind(|| panic!("a panic in raw mode (expected)"));
        assert!(panicked.is_err());
        let after = tcgetattr(&pty.slave).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
        assert_eq!(after.output_flags, before.output_flags);
        drop(guard);
        assert!(super::RAW.lock().unwrap().is_none());
        assert_eq!(
            tcgetattr(&pty.slave).unwrap().local_flags,
            before.local_flags
        );
    }
}
