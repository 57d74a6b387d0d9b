//! The shim process itself: detach, create the container, copy its output
//! into the CRI log, reap it and record how it ended.
//!
//! Nothing here may panic (the binary is built with `panic = "abort"`: a panic
//! kills the shim, closes the container's pipes and loses its exit status), so
//! no `println!`/`eprintln!` (they panic when the write fails, e.g. ENOSPC on a
//! full disk or EPIPE) and no `unwrap` on I/O: diagnostics go through [`note`],
//! which ignores its own errors. A log line that cannot be written is dropped
//! and counted, and the shim keeps copying, as conmon does; the count ends up in
//! the exit record (`log_lines_dropped`).

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::args::ShimArgs;
use super::attach;
use super::exit::{oom_kills, ExitRecord};
use super::log::{CriLog, LineSplitter, Stream};
use super::streams::{self, AttachServer, Slot};
use crate::oci::{CreateRequest, OciRuntime, RuncCli};
use crate::signal::KillScope;
use std::os::unix::net::UnixListener;

/// How long output is still drained after the container's init exited.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Writes a diagnostic line to stderr (the bundle's `shim.log`), ignoring failures.
pub(super) fn note(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "kubenode shim: {message}");
}

pub(super) fn run(argv: &[OsString]) -> i32 {
    let args = match ShimArgs::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(std::io::stdout(), "error {e}");
            return 2;
        }
    };
    // SAFETY: `shim::run`'s contract: no other thread exists yet (the binary
    // calls us first thing in main), so the child may run any code.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => 0,
        Ok(ForkResult::Child) => std::process::exit(child(&args)),
        Err(e) => {
            let _ = writeln!(std::io::stdout(), "error fork: {e}");
            1
        }
    }
}

fn devnull_stdio(fd: i32) {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto a standard descriptor number; both fds are valid.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// Closes every descriptor above stderr that the agent let us inherit.
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; none above 2 is in use yet.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        for fd in 3..1024 {
            // SAFETY: closing a descriptor we do not use; EBADF is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

fn child(args: &ShimArgs) -> i32 {
    close_inherited_fds();
    let _ = nix::unistd::setsid();
    if let Some(adj) = args.oom_score_adj {
        // The container's score, for the shim too: started by the agent, it inherited the
        // agent's (under systemd -999), which `runtime create` and the container's init would
        // inherit in turn. Raising one's own score needs no privilege.
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
            note(format_args!(
                "{}: setting oom_score_adj {adj}: {e}",
                args.id
            ));
        }
    }
    let _ = nix::sys::prctl::set_child_subreaper(true);
    devnull_stdio(0);
    // Our stdout is the report pipe; keep a handle, later point fd 1 at /dev/null.
    let mut report = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(_) => return 1,
    };
    // Held until the shim exits: a restarted agent knows from it that this bundle's
    // container is being made or watched (see `super::lock`).
    let _bundle_lock = match super::lock::hold(&args.bundle) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(report, "error {e}");
            return 1;
        }
    };
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if let Err(e) = mask.thread_block() {
        let _ = writeln!(report, "error blocking SIGCHLD: {e}");
        return 1;
    }
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(report, "error signalfd: {e}");
            return 1;
        }
    };
    let mut io = match ContainerIo::prepare(args) {
        Ok(io) => io,
        Err(e) => {
            let _ = writeln!(report, "error {e}");
            return 1;
        }
    };
    let console_path = io.console_path();
    let runtime = RuncCli::new(&args.runtime, &args.runtime_root);
    let created = runtime.create(CreateRequest {
        id: &args.id,
        bundle: &args.bundle,
        pid_file: &args.pid_file,
        stdout: io.out_w.take(),
        stderr: io.err_w.take(),
        stdin: io.in_r.take(),
        console_socket: console_path.as_deref(),
    });
    // Reap `runtime create` itself and anything else that already ended.
    while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
        waitpid(None, Some(WaitPidFlag::WNOHANG))
    {}
    if let Err(e) = created {
        let _ = writeln!(report, "error {}", e.to_string().replace('\n', " "));
        return 1;
    }
    let (outputs, server) = match io.finish(args) {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(report, "error {e}");
            let _ = runtime.delete(&args.id, true);
            return 1;
        }
    };
    let pid = match std::fs::read_to_string(&args.pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        Some(p) => p,
        None => {
            let _ = writeln!(report, "error reading pid file {}", args.pid_file.display());
            let _ = runtime.delete(&args.id, true);
            return 1;
        }
    };
    let baseline_oom = oom_kills(&args.oom_files);
    let mut log = args.log_path.as_ref().and_then(|p| {
        match CriLog::open(p, args.log_max_size, args.log_max_files) {
            Ok(l) => Some(l),
            Err(e) => {
                note(format_args!(
                    "{}: opening log {}: {e}",
                    args.id,
                    p.display()
                ));
                None
            }
        }
    });
    let _ = writeln!(report, "ok {pid} {}", std::process::id());
    drop(report);
    devnull_stdio(1);

    let mut sink = LogSink {
        log: log.as_mut(),
        dropped: 0,
        failing: false,
    };
    let kill_rest = kill_all_on_exit(&args.bundle);
    let mut init_exited = || {
        if !kill_rest {
            return;
        }
        // Only the processes in this container's cgroup (`kill --all`): never another
        // container's, never the host's, whatever PID namespace they share.
        if let Err(e) = runtime.kill(&args.id, crate::signal::Signal::SIGKILL, KillScope::All) {
            note(format_args!(
                "{}: killing the processes its init left: {e}",
                args.id
            ));
        }
    };
    let status = watch(
        Pid::from_raw(pid),
        &sfd,
        outputs,
        server,
        &mut sink,
        &mut init_exited,
    );
    // a restarted agent must not find the socket of a container that is gone
    let _ = std::fs::remove_file(args.bundle.join(attach::SOCKET));
    let dropped = sink.dropped;
    if let Some(l) = log.as_mut() {
        let _ = l.sync();
    }
    if dropped > 0 {
        note(format_args!(
            "{}: {dropped} log lines could not be written and were dropped",
            args.id
        ));
    }
    let oom = oom_kills(&args.oom_files) > baseline_oom;
    let mut record = ExitRecord::from_wait(status, oom).unwrap_or(ExitRecord {
        exit_code: 255,
        signal: None,
        oom_killed: oom,
        finished_at: jiff::Timestamp::now(),
        log_lines_dropped: 0,
    });
    record.log_lines_dropped = dropped;
    if let Err(e) = record.write(&args.exit_file) {
        note(format_args!(
            "{}: writing {}: {e}",
            args.id,
            args.exit_file.display()
        ));
        return 1;
    }
    0
}

struct Pipe {
    fd: OwnedFd,
    stream: Stream,
    lines: LineSplitter,
    open: bool,
}

/// Where output lines go: the CRI log (if it could be opened), counting the lines it refused.
struct LogSink<'a> {
    log: Option<&'a mut CriLog>,
    dropped: u64,
    failing: bool,
}

impl LogSink<'_> {
    fn emit(&mut self, stream: Stream, partial: bool, line: &[u8]) {
        let Some(l) = self.log.as_deref_mut() else {
            return;
        };
        match l.write(stream, partial, line) {
            Ok(()) if self.failing => {
                self.failing = false;
                note(format_args!(
                    "log writes work again; {} lines dropped so far",
                    self.dropped
                ));
            }
            Ok(()) => {}
            Err(e) => {
                self.dropped += 1;
                if !self.failing {
                    self.failing = true;
                    note(format_args!(
                        "writing log: {e}; dropping lines until writes work again"
                    ));
                }
            }
        }
    }
}

/// Whether the container's other processes are killed when its init exits, as containerd's
/// shim decides it from the bundle (`ShouldKillAllOnExit`): unless the container has a PID
/// namespace of its own, which the kernel tears down with its PID 1, they would outlive the
/// init (`shareProcessNamespace`, `hostPID`). A spec that cannot be read counts as shared.
pub(super) fn kill_all_on_exit(bundle: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return true;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return true;
    };
    let own_pid_namespace = spec
        .pointer("/linux/namespaces")
        .and_then(|v| v.as_array())
        .is_some_and(|list| {
            list.iter().any(|n| {
                n.get("type").and_then(|t| t.as_str()) == Some("pid")
                    && n.get("path")
                        .and_then(|p| p.as_str())
                        .is_none_or(str::is_empty)
            })
        });
    !own_pid_namespace
}

/// Copies output until the container's init `pid` has exited and its pipes
/// are drained (or [`DRAIN_LIMIT`] passed); returns its wait status. `init_exited` runs
/// once, when the init's exit is seen. The attach `server`, if any, gets the output too and
/// is served in the same loop.
fn watch(
    pid: Pid,
    sfd: &SignalFd,
    outputs: Vec<(OwnedFd, Stream)>,
    mut server: Option<AttachServer>,
    log: &mut LogSink<'_>,
    init_exited: &mut dyn FnMut(),
) -> WaitStatus {
    let mut pipes: Vec<Pipe> = outputs
        .into_iter()
        .map(|(fd, stream)| Pipe {
            fd,
            stream,
            lines: LineSplitter::default(),
            open: true,
        })
        .collect();
    let mut status: Option<WaitStatus> = None;
    let mut drain_until: Option<Instant> = None;
    let mut buf = [0u8; 8192];
    loop {
        if let Some(deadline) = drain_until {
            if pipes.iter().all(|p| !p.open) || Instant::now() >= deadline {
                break;
            }
        }
        let (ready, sig_ready, served) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(4);
            let mut idx = Vec::with_capacity(2);
            for (i, p) in pipes.iter().enumerate() {
                if p.open {
                    fds.push(PollFd::new(p.fd.as_fd(), PollFlags::POLLIN));
                    idx.push(i);
                }
            }
            let sig_at = fds.len();
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
            // asked before the slots: a pause that ends in between leaves the listener
            // polled with a short timeout, never left out with none
            let paused = server.as_ref().and_then(|s| s.poll_timeout());
            let slots = server.as_ref().map(|s| s.fds()).unwrap_or_default();
            for (fd, events, _) in &slots {
                fds.push(PollFd::new(*fd, *events));
            }
            let mut timeout = if drain_until.is_some() {
                PollTimeout::from(100u16)
            } else {
                PollTimeout::NONE
            };
            // a paused attach listener is polled again when its pause ends
            if let Some(wait) = paused {
                let ms = u16::try_from(wait.as_millis() + 1).unwrap_or(u16::MAX);
                if timeout == PollTimeout::NONE || PollTimeout::from(ms) < timeout {
                    timeout = PollTimeout::from(ms);
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    note(format_args!("poll: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let revents = |f: &PollFd<'_>| f.revents().filter(|r| !r.is_empty());
            let ready: Vec<usize> = idx
                .iter()
                .enumerate()
                .filter(|(k, _)| revents(&fds[*k]).is_some())
                .map(|(_, i)| *i)
                .collect();
            let served: Vec<(Slot, PollFlags)> = slots
                .iter()
                .enumerate()
                .filter_map(|(k, (_, _, slot))| revents(&fds[sig_at + 1 + k]).map(|r| (*slot, r)))
                .collect();
            (ready, revents(&fds[sig_at]).is_some(), served)
        };
        if let Some(s) = server.as_mut() {
            s.ready(&served);
        }
        for i in ready {
            let p = &mut pipes[i];
            let stream = p.stream;
            match nix::unistd::read(&p.fd, &mut buf) {
                // EIO: a terminal whose other side every process closed
                Ok(0) | Err(Errno::EIO) => {
                    p.open = false;
                    p.lines
                        .finish(&mut |partial, line| log.emit(stream, partial, line));
                }
                Ok(n) => {
                    p.lines.feed(&buf[..n], &mut |partial, line| {
                        log.emit(stream, partial, line)
                    });
                    if let Some(s) = server.as_mut() {
                        let kind = match stream {
                            Stream::Stdout => attach::STDOUT,
                            Stream::Stderr => attach::STDERR,
                        };
                        s.broadcast(kind, &buf[..n]);
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => p.open = false,
            }
        }
        if sig_ready {
            while let Ok(Some(_)) = sfd.read_signal() {}
        }
        if status.is_none() {
            // Reap every child that ended; subreaper orphans included.
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(s) if s.pid() == Some(pid) => {
                        if matches!(s, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                            status = Some(s);
                            drain_until = Some(Instant::now() + DRAIN_LIMIT);
                            init_exited();
                        }
                    }
                    Ok(_) => {}
                    Err(Errno::EINTR) => {}
                    Err(_) => {
                        // No children left. If the init was never reaped by us
                        // (it was not reparented to us), it is gone without a status.
                        if status.is_none() {
                            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                                status = Some(WaitStatus::Exited(pid, 255));
                                drain_until = Some(Instant::now() + DRAIN_LIMIT);
                                init_exited();
                            } else if pipes.iter().all(|p| !p.open) {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                        break;
                    }
                }
            }
        }
    }
    for p in pipes.iter_mut().filter(|p| p.open) {
        let stream = p.stream;
        p.lines
            .finish(&mut |partial, line| log.emit(stream, partial, line));
    }
    if let Some(s) = server {
        s.finish(Duration::from_secs(1));
    }
    status.unwrap_or(WaitStatus::Exited(pid, 255))
}

/// The container's standard streams, before and after `runtime create`.
struct ContainerIo {
    /// The bundle directory, through which the sockets are bound (`/proc/self/fd/N/...`).
    dir: OwnedFd,
    out_r: Option<OwnedFd>,
    out_w: Option<OwnedFd>,
    err_r: Option<OwnedFd>,
    err_w: Option<OwnedFd>,
    in_r: Option<OwnedFd>,
    in_w: Option<OwnedFd>,
    /// For a terminal: where the runtime sends its master.
    console: Option<UnixListener>,
    attach: Option<UnixListener>,
}

/// The name of the console socket in the bundle (removed once the terminal arrived).
const CONSOLE_SOCKET: &str = "console.sock";

impl ContainerIo {
    /// Pipes for the output (and the input, with `stdin`), or a console socket (with `tty`),
    /// and the attach socket when the container has either.
    fn prepare(args: &ShimArgs) -> Result<ContainerIo, String> {
        use nix::fcntl::OFlag;
        let dir = nix::fcntl::open(
            &args.bundle,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("opening {}: {e}", args.bundle.display()))?;
        let pipe =
            || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating pipes: {e}"));
        let mut io = ContainerIo {
            dir,
            out_r: None,
            out_w: None,
            err_r: None,
            err_w: None,
            in_r: None,
            in_w: None,
            console: None,
            attach: None,
        };
        if args.tty {
            io.console = Some(io.bind(CONSOLE_SOCKET)?);
        } else {
            let (r, w) = pipe()?;
            (io.out_r, io.out_w) = (Some(r), Some(w));
            let (r, w) = pipe()?;
            (io.err_r, io.err_w) = (Some(r), Some(w));
            if args.stdin {
                let (r, w) = pipe()?;
                (io.in_r, io.in_w) = (Some(r), Some(w));
            }
        }
        if args.stdin || args.tty {
            io.attach = Some(io.bind(attach::SOCKET)?);
        }
        Ok(io)
    }

    fn in_dir(&self, name: &str) -> String {
        format!("/proc/self/fd/{}/{name}", self.dir.as_raw_fd())
    }

    /// A socket `name` in the bundle, only for root.
    fn bind(&self, name: &str) -> Result<UnixListener, String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.in_dir(name);
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|e| format!("binding {name}: {e}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("securing {name}: {e}"))?;
        Ok(l)
    }

    /// The console socket as the runtime reaches it: through this process's descriptor of
    /// the bundle (the bundle's own path can be too long for a socket address).
    fn console_path(&self) -> Option<std::path::PathBuf> {
        self.console.as_ref().map(|_| {
            format!(
                "/proc/{}/fd/{}/{CONSOLE_SOCKET}",
                std::process::id(),
                self.dir.as_raw_fd()
            )
            .into()
        })
    }

    /// After `runtime create`: the outputs to copy and the attach server.
    #[allow(clippy::type_complexity)]
    fn finish(
        mut self,
        args: &ShimArgs,
    ) -> Result<(Vec<(OwnedFd, Stream)>, Option<AttachServer>), String> {
        let mut outputs = Vec::new();
        let mut terminal = None;
        let mut stdin = self.in_w.take();
        if let Some(console) = self.console.take() {
            let master = streams::receive_terminal(&console).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(self.in_dir(CONSOLE_SOCKET));
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup: {e}"));
            outputs.push((dup(&master)?, Stream::Stdout));
            if args.stdin {
                stdin = Some(dup(&master)?);
            }
            terminal = Some(master);
        }
        if let Some(r) = self.out_r.take() {
            outputs.push((r, Stream::Stdout));
        }
        if let Some(r) = self.err_r.take() {
            outputs.push((r, Stream::Stderr));
        }
        let server = match self.attach.take() {
            Some(l) => Some(
                AttachServer::new(l, stdin, terminal, args.stdin_once)
                    .map_err(|e| format!("attach socket: {e}"))?,
            ),
            None => None,
        };
        Ok((outputs, server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes to a device that always answers ENOSPC: every line is dropped and counted,
    /// nothing panics.
    #[test]
    fn rest_of_the_container_is_killed_unless_its_pid_namespace_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let with = |namespaces: &str| {
            let spec = format!(r#"{{"linux":{{"namespaces":{namespaces}}}}}"#);
            std::fs::write(dir.path().join("config.json"), spec).unwrap();
            kill_all_on_exit(dir.path())
        };
        // Its own PID namespace: the kernel kills the rest with PID 1.
        assert!(!with(r#"[{"type":"pid"},{"type":"mount"}]"#));
        assert!(!with(r#"[{"type":"pid","path":""}]"#));
        // shareProcessNamespace (pause's, by path) and hostPID (none).
        assert!(with(r#"[{"type":"pid","path":"/proc/42/ns/pid"}]"#));
        assert!(with(r#"[{"type":"mount"}]"#));
        // Unreadable: killed, as containerd.
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        assert!(kill_all_on_exit(dir.path()));
        assert!(kill_all_on_exit(&dir.path().join("nonexistent")));
    }

    #[test]
    fn log_lines_that_cannot_be_written_are_counted() {
        let mut log = CriLog::open(std::path::Path::new("/dev/full"), 1 << 20, 1).unwrap();
        let mut sink = LogSink {
            log: Some(&mut log),
            dropped: 0,
            failing: false,
        };
        for _ in 0..3 {
            sink.emit(Stream::Stdout, false, b"hello");
        }
        assert_eq!((sink.dropped, sink.failing), (3, true));
    }
}
