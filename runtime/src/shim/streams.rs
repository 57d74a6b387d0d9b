//! The shim's side of the attach socket ([`super::attach`]): the listening socket, its
//! clients, and the container's standard input and terminal. Everything is non-blocking and
//! driven by the shim's `poll` loop; nothing here may block the copying of the container's
//! output into its log.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::attach::{self, Decoder};
use super::monitor::note;

/// Input buffered for the container's stdin beyond which clients are not read (the container
/// reads its input slower than clients send it).
const STDIN_HIGH_WATER: usize = 256 * 1024;

/// After `accept` fails other than by having nothing to take (`EMFILE`, `ENFILE`, `ENOBUFS`:
/// the connection stays queued and `poll` keeps reporting it), the listener is left out of
/// the poll this long instead of being retried at once (a busy loop), as Go's `http.Server`
/// backs off on a temporary accept error (up to 1 s).
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// What a descriptor of [`AttachServer::fds`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Listener,
    Client(usize),
    Stdin,
}

struct Client {
    sock: UnixStream,
    /// Frames not yet written.
    out: Vec<u8>,
    frames: Decoder,
    gone: bool,
}

/// The container's standard input: the write end of its pipe, or the terminal's master.
struct Stdin {
    fd: std::fs::File,
    pending: Vec<u8>,
    /// Close once `pending` is written (`stdinOnce`: the first session's input ended).
    close_when_written: bool,
}

/// The attach socket and what it connects to.
pub(super) struct AttachServer {
    listener: UnixListener,
    clients: Vec<Client>,
    stdin: Option<Stdin>,
    /// The terminal's master (resizes), when the container has one.
    terminal: Option<OwnedFd>,
    stdin_once: bool,
    /// What a client's read lands in: on the heap, so that the shim's poll loop keeps a small
    /// stack (a big buffer in a frame inlined into it would make every shim's stack bigger:
    /// the stack probes touch each of its pages).
    read_buf: Vec<u8>,
    /// The listener is not polled until then ([`ACCEPT_PAUSE`]).
    accept_paused_until: Option<Instant>,
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl AttachServer {
    /// Serves `listener`; `stdin` is where input goes (none: discarded), `terminal` the
    /// master of the container's terminal.
    pub(super) fn new(
        listener: UnixListener,
        stdin: Option<OwnedFd>,
        terminal: Option<OwnedFd>,
        stdin_once: bool,
    ) -> std::io::Result<AttachServer> {
        listener.set_nonblocking(true)?;
        if let Some(fd) = &stdin {
            set_nonblocking(fd.as_fd())?;
        }
        Ok(AttachServer {
            listener,
            clients: Vec::new(),
            stdin: stdin.map(|fd| Stdin {
                fd: std::fs::File::from(fd),
                pending: Vec::new(),
                close_when_written: false,
            }),
            terminal,
            stdin_once,
            read_buf: vec![0u8; 16 * 1024],
            accept_paused_until: None,
        })
    }

    /// The descriptors to poll, with the events wanted and what each is.
    pub(super) fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags, Slot)> {
        let mut out = Vec::with_capacity(2 + self.clients.len());
        if self.poll_timeout().is_none() {
            out.push((self.listener.as_fd(), PollFlags::POLLIN, Slot::Listener));
        }
        let stdin_full = self
            .stdin
            .as_ref()
            .is_some_and(|s| s.pending.len() >= STDIN_HIGH_WATER);
        for (i, c) in self.clients.iter().enumerate() {
            let mut events = PollFlags::empty();
            if !stdin_full {
                events |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            out.push((c.sock.as_fd(), events, Slot::Client(i)));
        }
        if let Some(s) = self.stdin.as_ref().filter(|s| !s.pending.is_empty()) {
            out.push((s.fd.as_fd(), PollFlags::POLLOUT, Slot::Stdin));
        }
        out
    }

    /// How long the poll may wait at most: until a paused listener is polled again.
    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        self.accept_paused_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Handles what one `poll` reported, `(slot, events)` for the slots of [`Self::fds`]
    /// (client indexes stay valid until every slot is handled: gone clients are dropped last).
    pub(super) fn ready(&mut self, slots: &[(Slot, PollFlags)]) {
        for &(slot, events) in slots {
            match slot {
                Slot::Listener => self.accept(),
                Slot::Client(i) if i < self.clients.len() => {
                    if events
                        .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                    {
                        self.read_client(i);
                    }
                    if events.contains(PollFlags::POLLOUT) && !self.clients[i].gone {
                        flush(&mut self.clients[i]);
                    }
                }
                Slot::Client(_) => {}
                Slot::Stdin => self.write_stdin(),
            }
        }
        self.clients.retain(|c| !c.gone);
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            sock,
                            out: Vec::new(),
                            frames: Decoder::default(),
                            gone: false,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.accept_failed(e),
            }
        }
    }

    fn accept_failed(&mut self, e: std::io::Error) {
        if e.kind() != ErrorKind::WouldBlock {
            note(format_args!(
                "attach: accept: {e}; trying again in {ACCEPT_PAUSE:?}"
            ));
            self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        }
    }

    fn read_client(&mut self, i: usize) {
        let n = match self.clients[i].sock.read(&mut self.read_buf) {
            Ok(0) => {
                self.clients[i].gone = true;
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return,
            Err(_) => {
                self.clients[i].gone = true;
                return;
            }
        };
        self.clients[i].frames.feed(&self.read_buf[..n]);
        loop {
            let frame = match self.clients[i].frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    note(format_args!("attach: a client broke the protocol: {e}"));
                    self.clients[i].gone = true;
                    break;
                }
            };
            match frame {
                (attach::STDIN, data) => {
                    if let Some(s) = self.stdin.as_mut().filter(|s| !s.close_when_written) {
                        s.pending.extend_from_slice(&data);
                    }
                }
                // containerd: with stdinOnce and no terminal, the container's stdin closes
                // when the first session's input ends
                (attach::STDIN_CLOSE, _) if self.stdin_once && self.terminal.is_none() => {
                    if let Some(s) = self.stdin.as_mut() {
                        s.close_when_written = true;
                    }
                }
                (attach::RESIZE, data) => {
                    if let (Some(t), Some((w, h))) =
                        (self.terminal.as_ref(), attach::parse_resize(&data))
                    {
                        resize(t, w, h);
                    }
                }
                _ => {}
            }
        }
        self.write_stdin();
    }

    fn write_stdin(&mut self) {
        let Some(s) = self.stdin.as_mut() else {
            return;
        };
        while !s.pending.is_empty() {
            match s.fd.write(&s.pending) {
                Ok(n) => {
                    s.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    // the container closed its stdin (or exited): input is discarded
                    self.stdin = None;
                    return;
                }
            }
        }
        if s.close_when_written {
            self.stdin = None;
        }
    }

    /// Sends output to every client; a client too far behind is disconnected.
    pub(super) fn broadcast(&mut self, kind: u8, data: &[u8]) {
        for c in &mut self.clients {
            attach::encode(&mut c.out, kind, data);
            if c.out.len() > attach::MAX_BACKLOG {
                note(format_args!(
                    "attach: a client {} bytes behind is disconnected",
                    c.out.len()
                ));
                c.gone = true;
                continue;
            }
            flush(c);
        }
        self.clients.retain(|c| !c.gone);
    }

    /// At the container's end: what is queued for clients is written for at most `limit`,
    /// then every connection closes.
    pub(super) fn finish(mut self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        for c in &mut self.clients {
            let _ = c.sock.set_nonblocking(false);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || c.out.is_empty() {
                continue;
            }
            let _ = c.sock.set_write_timeout(Some(left));
            let _ = c.sock.write_all(&c.out);
        }
        self.clients.clear();
    }
}

fn flush(c: &mut Client) {
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => {
                c.gone = true;
                return;
            }
        }
    }
}

/// Sets the size of the terminal behind `master`.
fn resize(master: &OwnedFd, width: u16, height: u16) {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        note(format_args!(
            "attach: resizing the terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// Receives the terminal master the runtime sends on the console socket (`runc create
/// --console-socket`): one connection, one message with the descriptor as `SCM_RIGHTS`.
pub(super) fn receive_terminal(listener: &UnixListener) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    listener.set_nonblocking(true)?;
    let (conn, _) = listener.accept().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("the runtime sent no terminal on its console socket: {e}"),
        )
    })?;
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut buf = vec![0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut master = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in our table for us; we own it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if master.is_none() {
                    master = Some(owned);
                }
            }
        }
    }
    master.ok_or_else(|| {
        std::io::Error::new(
            ErrorKind::InvalidData,
            "the runtime's console message carried no descriptor",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(stdin_once: bool) -> (tempfile::TempDir, AttachServer, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("attach")).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let s = AttachServer::new(listener, Some(w), None, stdin_once).unwrap();
        (dir, s, std::fs::File::from(r))
    }

    /// Runs the server's poll loop until `done` or 200 rounds.
    fn pump(s: &mut AttachServer, rounds: usize) {
        for _ in 0..rounds {
            let fds = s.fds();
            let mut pfds: Vec<nix::poll::PollFd<'_>> = fds
                .iter()
                .map(|(fd, ev, _)| nix::poll::PollFd::new(*fd, *ev))
                .collect();
            let _ = nix::poll::poll(&mut pfds, nix::poll::PollTimeout::from(20u16));
            let ready: Vec<(Slot, PollFlags)> = pfds
                .iter()
                .zip(fds.iter())
                .filter_map(|(p, (_, _, slot))| {
                    p.revents().filter(|r| !r.is_empty()).map(|r| (*slot, r))
                })
                .collect();
            s.ready(&ready);
        }
    }

    #[test]
    fn clients_get_output_and_their_input_reaches_stdin() {
        let (dir, mut s, mut stdin) = server(true);
        let mut a = UnixStream::connect(dir.path().join("attach")).unwrap();
        let mut b = UnixStream::connect(dir.path().join("attach")).unwrap();
        pump(&mut s, 3);
        assert_eq!(s.clients.len(), 2);
        s.broadcast(attach::STDOUT, b"out");
        s.broadcast(attach::STDERR, b"err");
        for c in [&mut a, &mut b] {
            let mut got = [0u8; 16];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got[..8], &[1, 0, 0, 0, 3, b'o', b'u', b't']);
            assert_eq!(&got[8..], &[2, 0, 0, 0, 3, b'e', b'r', b'r']);
        }
        let mut frames = Vec::new();
        attach::encode(&mut frames, attach::STDIN, b"hello\n");
        attach::encode(&mut frames, attach::STDIN_CLOSE, b"");
        a.write_all(&frames).unwrap();
        pump(&mut s, 3);
        // stdinOnce without a terminal: the input ended, so did the container's stdin
        let mut got = String::new();
        stdin.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");
        // a client that leaves is forgotten; the other stays
        drop(a);
        pump(&mut s, 3);
        assert_eq!(s.clients.len(), 1);
        s.finish(std::time::Duration::from_secs(1));
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn without_stdin_once_the_stdin_stays_open() {
        let (dir, mut s, stdin) = server(false);
        let mut a = UnixStream::connect(dir.path().join("attach")).unwrap();
        let mut frames = Vec::new();
        attach::encode(&mut frames, attach::STDIN, b"x");
        attach::encode(&mut frames, attach::STDIN_CLOSE, b"");
        a.write_all(&frames).unwrap();
        pump(&mut s, 3);
        assert!(s.stdin.is_some());
        set_nonblocking(stdin.as_fd()).unwrap();
        let mut buf = [0u8; 4];
        let mut r = &stdin;
        assert_eq!(r.read(&mut buf).unwrap(), 1);
        // nothing more, and not closed: a read would block
        assert_eq!(r.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    }

    /// Two clients leave in the same round: the second's slot still names the second client
    /// (indexes are not shifted while a round is handled), and nothing panics.
    #[test]
    fn clients_leaving_together_are_all_dropped() {
        let (dir, mut s, _stdin) = server(false);
        let a = UnixStream::connect(dir.path().join("attach")).unwrap();
        let mut b = UnixStream::connect(dir.path().join("attach")).unwrap();
        let c = UnixStream::connect(dir.path().join("attach")).unwrap();
        pump(&mut s, 3);
        assert_eq!(s.clients.len(), 3);
        drop(a);
        drop(c);
        pump(&mut s, 3);
        assert_eq!(s.clients.len(), 1);
        s.broadcast(attach::STDOUT, b"x");
        let mut got = [0u8; 6];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, [1, 0, 0, 0, 1, b'x']);
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped() {
        let (dir, mut s, _stdin) = server(false);
        let _lazy = UnixStream::connect(dir.path().join("attach")).unwrap();
        pump(&mut s, 2);
        let chunk = vec![b'x'; 60 * 1024];
        for _ in 0..(attach::MAX_BACKLOG / chunk.len() + 200) {
            s.broadcast(attach::STDOUT, &chunk);
        }
        assert!(s.clients.is_empty());
    }

    /// An accept error other than "nothing to take" (here `EMFILE`) leaves the listener out of
    /// the poll for a while, and the poll loop is told when to look again; then it is back.
    #[test]
    fn a_failing_accept_is_not_retried_at_once() {
        let (_dir, mut s, _r) = server(false);
        let has_listener = |s: &AttachServer| s.fds().iter().any(|f| f.2 == Slot::Listener);
        assert!(has_listener(&s) && s.poll_timeout().is_none());
        s.accept_failed(std::io::Error::from(ErrorKind::WouldBlock));
        assert!(has_listener(&s) && s.poll_timeout().is_none());
        s.accept_failed(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert!(!has_listener(&s));
        let wait = s.poll_timeout().expect("a timeout for the pause");
        assert!(wait <= ACCEPT_PAUSE && !wait.is_zero(), "{wait:?}");
        s.accept_paused_until = Some(Instant::now() - Duration::from_millis(1));
        assert!(has_listener(&s) && s.poll_timeout().is_none());
    }
}
