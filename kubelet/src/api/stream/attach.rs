//! `/attach/{ns}/{pod}[/{uid}]/{container}`: the output of a running container, live, as
//! upstream's kubelet serves `kubectl attach` (`remotecommand.ServeAttach` over the runtime's
//! `Attach`), on the channels and subprotocols of exec ([`super::channel`]), over WebSocket or
//! SPDY/3.1 as exec ([`super::transport`]).
//!
//! kubenode's containers have no standard input and no terminal (validation refuses `stdin`
//! and `tty`), and their output goes to the shim, which writes it to the container's CRI log
//! file (`/var/log/pods/...`). An attach is therefore output only: the session follows the
//! current instance's log from its end at the moment of attaching, and sends each line's text
//! on the channel of the stream it came from (`stdout` on 1, `stderr` on 2; partial `P` lines
//! without a newline, as written). What upstream does with the rest of the request:
//!
//! - **`tty`**: the kubelet replaces the client's `tty` with the container's own (`TTY: false`
//!   here, upstream's `GetAttach`), after `NewOptions` dropped `error` for a `tty` request; so a
//!   `tty` attach streams standard output only, without a terminal (kubectl says "Unable to use
//!   a TTY - container ... did not allocate one" itself and asks without one).
//! - **`input`**: containerd connects the client's stdin only when the container has one
//!   (`ContainerIO.Attach`); without one, what the client sends is discarded and the session
//!   streams the output as without `input` (logged once). An attach with neither output ends
//!   at once with `Success`, as containerd's `Attach` returns at once when it has nothing to
//!   copy.
//! - **Not running**: refused before the upgrade with 500 and containerd's
//!   `container is in CONTAINER_EXITED state`.
//! - **End**: when the container exits (or the instance is replaced by a restart) the rest of
//!   its log is sent, then `Success` on the error channel (v4 and later: a `metav1.Status`;
//!   under the v1 protocols nothing), then the socket closes (upstream's `ServeAttach` writes
//!   `Success` when the runtime's attach returns, which is when the container's output
//!   closes).
//! - **Idle**: a session with no message either way for the idle timeout is closed; a client
//!   that goes away ends it. Neither touches the container.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::channel::{self, Protocol};
use super::transport::{Input, Transport};
use crate::api::logs::CriLine;
use crate::api::router::{text, Body};
use crate::api::{ApiError, ContainerInstance, ContainerRef, NodeView};

/// How often the log is read for new lines and the container's state looked at.
pub const POLL: Duration = Duration::from_millis(100);
/// Bytes read from the log at a time.
const CHUNK: usize = 64 * 1024;

/// The options of an attach request (upstream's `remotecommand.Options`, after the kubelet's
/// `GetAttach`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOptions {
    /// The container.
    pub target: ContainerRef,
    /// The pod UID of the path, when given: the pod must have it.
    pub uid: Option<String>,
    /// The client asked for stdin (the container has none: discarded).
    pub stdin: bool,
    /// Standard output is streamed.
    pub stdout: bool,
    /// Standard error is streamed.
    pub stderr: bool,
}

/// Parses `/attach/{ns}/{pod}[/{uid}]/{container}` (`segments`: the path's, after `attach`)
/// and its query as upstream's `NewOptions`, then as `GetAttach` (the container's `tty`,
/// false, replaces the client's).
pub fn attach_options(segments: &[&str], query: &str) -> Result<AttachOptions, ApiError> {
    let (ns, pod, uid, container) = match segments {
        [ns, pod, container] => (*ns, *pod, None, *container),
        [ns, pod, uid, container] => (*ns, *pod, Some(uid.to_string()), *container),
        _ => {
            return Err(ApiError::NotFound(
                "attach paths are /attach/{namespace}/{pod}/{container}".into(),
            ))
        }
    };
    // GetAttach then replaces the client's `tty` with the container's (false)
    let q = super::stream_query(query)?;
    Ok(AttachOptions {
        target: ContainerRef {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: Some(container.to_string()),
        },
        uid,
        stdin: q.stdin,
        stdout: q.stdout,
        stderr: q.stderr,
    })
}

/// Splits the bytes of a CRI log into the text of its lines, by stream: `feed` takes what was
/// read (any cut), keeps an unfinished line for the next call and calls `emit(stream, text)`
/// for each complete one (`F` lines with their newline, `P` chunks as written). Lines that do
/// not parse are skipped.
#[derive(Debug, Default)]
pub struct CriDemux {
    pending: Vec<u8>,
    /// Bytes up to the next newline are dropped (the log was opened in the middle of a line).
    skip_to_newline: bool,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl CriDemux {
    /// A demultiplexer that starts at a line boundary, or, with `mid_line`, drops the bytes up
    /// to the first newline.
    pub fn new(mid_line: bool) -> Self {
        CriDemux {
            pending: Vec::new(),
            skip_to_newline: mid_line,
        }
    }

    /// Feeds `data`; `emit` gets each complete line's stream and text.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(LogStream, &[u8])) {
        if self.skip_to_newline {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    data = &data[nl + 1..];
                    self.skip_to_newline = false;
                }
                None => return,
            }
        }
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                Self::line(&data[..nl], emit);
            } else {
                self.pending.extend_from_slice(&data[..nl]);
                let line = std::mem::take(&mut self.pending);
                Self::line(&line, emit);
            }
            data = &data[nl + 1..];
        }
        self.pending.extend_from_slice(data);
    }

    /// Forgets an unfinished line (the file was replaced).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.skip_to_newline = false;
    }

    fn line(raw: &[u8], emit: &mut dyn FnMut(LogStream, &[u8])) {
        let Some(l) = CriLine::parse(raw) else {
            return;
        };
        let stream = if l.stream == "stderr" {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        };
        if l.full {
            let mut text = Vec::with_capacity(l.text.len() + 1);
            text.extend_from_slice(l.text);
            text.push(b'\n');
            emit(stream, &text);
        } else if !l.text.is_empty() {
            emit(stream, l.text);
        }
    }
}

/// Follows one container instance's log file: opened at its end, read as it grows, across a
/// rotation (the old file read to its end, then the new one from its start).
struct Follower {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    offset: u64,
    demux: CriDemux,
}

impl Follower {
    /// Opens `path` at its current end (a missing file is followed from its start once it
    /// appears).
    async fn at_end(path: PathBuf) -> std::io::Result<Follower> {
        let (file, offset, mid_line) = match tokio::fs::File::open(&path).await {
            Ok(mut f) => {
                let len = f.metadata().await?.len();
                let mid = if len > 0 {
                    f.seek(std::io::SeekFrom::Start(len - 1)).await?;
                    let mut last = [0u8; 1];
                    f.read_exact(&mut last).await?;
                    last[0] != b'\n'
                } else {
                    false
                };
                (Some(f), len, mid)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0, false),
            Err(e) => return Err(e),
        };
        Ok(Follower {
            path,
            file,
            offset,
            demux: CriDemux::new(mid_line),
        })
    }

    /// Reads what was appended since the last call: each complete line's stream and text.
    async fn read_new(&mut self) -> std::io::Result<Vec<(LogStream, Vec<u8>)>> {
        let mut lines = Vec::new();
        let mut emit = |s: LogStream, t: &[u8]| lines.push((s, t.to_vec()));
        loop {
            if self.file.is_none() {
                match tokio::fs::File::open(&self.path).await {
                    Ok(f) => {
                        self.file = Some(f);
                        self.offset = 0;
                        self.demux.reset();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(lines),
                    Err(e) => return Err(e),
                }
            }
            let Some(file) = self.file.as_mut() else {
                return Ok(lines);
            };
            if file.metadata().await?.len() < self.offset {
                // truncated in place: start over
                self.offset = 0;
                self.demux.reset();
            }
            file.seek(std::io::SeekFrom::Start(self.offset)).await?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                self.offset += n as u64;
                self.demux.feed(&buf[..n], &mut emit);
            }
            // rotated (renamed away, a new file in its place): the old one is read to its
            // end, go on with the new one
            if replaced(file, &self.path).await {
                self.file = None;
                continue;
            }
            return Ok(lines);
        }
    }
}

/// Whether `path` is no longer the file `file` reads.
async fn replaced(file: &tokio::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(open), now) = (file.metadata().await, tokio::fs::metadata(path).await) else {
        return false;
    };
    match now {
        Ok(now) => (now.dev(), now.ino()) != (open.dev(), open.ino()),
        Err(_) => false,
    }
}

/// The CRI name of a container state (containerd's `criContainerStateToString`).
pub fn cri_state(running: bool, state: &str) -> String {
    if running {
        "CONTAINER_RUNNING".into()
    } else {
        format!("CONTAINER_{}", state.to_ascii_uppercase())
    }
}

/// Serves `/attach/...` (`segments`: the path after `attach`): checks the request and the
/// container, answers 101 and runs the session on the upgraded connection.
pub async fn serve_attach(
    view: Arc<dyn NodeView>,
    segments: &[&str],
    mut req: Request<Incoming>,
    idle: Duration,
) -> Response<Body> {
    let opts = match attach_options(segments, req.uri().query().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return text(e.status(), format!("{e}\n")),
    };
    if let Some(uid) = &opts.uid {
        let same = view.pods().iter().any(|p| {
            p.metadata.namespace.as_deref().unwrap_or("default") == opts.target.namespace
                && p.metadata.name.as_deref() == Some(opts.target.pod.as_str())
                && p.metadata.uid.as_deref() == Some(uid.as_str())
        });
        if !same {
            // upstream's GetAttach: `pod <name>_<namespace> not found`, a 500 of WriteError
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "pod {}_{} not found\n",
                    opts.target.pod, opts.target.namespace
                ),
            );
        }
    }
    let instance = match view.container_instance(&opts.target) {
        Ok(i) => i,
        Err(e) => return text(e.status(), format!("{e}\n")),
    };
    if !instance.running {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "container is in {} state\n",
                cri_state(false, &instance.state)
            ),
        );
    }
    // a container with stdin or a terminal: its live streams, from its shim
    let live = match &instance.attach_socket {
        Some(socket) => match kubenode_runtime::shim::attach::connect(socket) {
            Ok(s) => Some(s),
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("attaching to container {}: {e}\n", instance.id),
                )
            }
        },
        None => None,
    };
    if !super::is_websocket(&req) {
        // SPDY/3.1, as kube-apiserver speaks to kubelets: the client makes a stream for each
        // of its request's streams (a resize stream for `tty`, though the container has none)
        let accepted = match super::spdy::accept_exec(&req) {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let streams = super::ExecOptions {
            target: opts.target.clone(),
            command: Vec::new(),
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
            tty: super::query_value(req.uri().query().unwrap_or(""), "tty").as_deref() == Some("1"),
        };
        return super::spdy::start_session(&mut req, accepted, &streams, idle, move |t| {
            run(t, opts, view, instance, live)
        });
    }
    let (protocol, key, slot) = match super::accept(&req, &channel::EXEC_PROTOCOLS) {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _slot = slot;
        match upgrade.await {
            Ok(io) => {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(io),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    Some(super::ws_config()),
                )
                .await;
                let protocol = protocol.unwrap_or(Protocol::V1);
                run(
                    super::transport::websocket(ws, protocol, idle),
                    opts,
                    view,
                    instance,
                    live,
                )
                .await;
            }
            Err(e) => tracing::debug!(error = %e, "attach: the connection was not upgraded"),
        }
    });
    super::switching_protocols(&key, protocol)
}

/// The error channel's final message of an attach that ended with the container: `Success`
/// (nothing under the v1 protocols).
fn success(protocol: Protocol) -> Option<Vec<u8>> {
    protocol
        .status_errors()
        .then(|| br#"{"metadata":{},"status":"Success"}"#.to_vec())
}

/// Whether the instance attached to still runs (`false` also when a restart replaced it or
/// the pod is gone).
fn still_running(view: &dyn NodeView, target: &ContainerRef, id: &str) -> bool {
    matches!(view.container_instance(target), Ok(i) if i.id == id && i.running)
}

/// The messages of `lines`: the wanted streams' text on their channels, consecutive lines of
/// one channel joined up to [`CHUNK`] bytes.
fn by_channel(lines: Vec<(LogStream, Vec<u8>)>, stdout: bool, stderr: bool) -> Vec<(u8, Vec<u8>)> {
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    for (stream, text) in lines {
        let ch = match stream {
            LogStream::Stdout if stdout => channel::STDOUT,
            LogStream::Stderr if stderr => channel::STDERR,
            _ => continue,
        };
        match out.last_mut() {
            Some((c, buf)) if *c == ch && buf.len() + text.len() <= CHUNK => {
                buf.extend_from_slice(&text)
            }
            _ => out.push((ch, text)),
        }
    }
    out
}

/// Runs the session to its end: over the shim's attach socket (`live`) when the container
/// has one, else by following its log. Without a socket, what the client sends is discarded
/// (the container has no stdin, no terminal); the transport ends the input when the client
/// goes away or idles out.
async fn run(
    transport: Transport,
    opts: AttachOptions,
    view: Arc<dyn NodeView>,
    instance: ContainerInstance,
    live: Option<std::os::unix::net::UnixStream>,
) {
    if let Some(sock) = live {
        return run_live(transport, opts, instance, sock).await;
    }
    transport.established(opts.stdout, opts.stderr).await;
    let Transport {
        out: out_tx,
        writer,
        mut input,
        reader,
        status: protocol,
    } = transport;
    if opts.stdin {
        tracing::info!(pod = %opts.target.pod, container = ?opts.target.container,
            "attach: the container has no stdin; the client's input is discarded (as containerd)");
    }
    if opts.stdout || opts.stderr {
        let mut follower = match Follower::at_end(instance.log_path.clone()).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %instance.log_path.display(), error = %e,
                    "attach: opening the container's log");
                reader.abort();
                drop(out_tx);
                writer.abort();
                return;
            }
        };
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                m = input.recv() => {
                    if m.is_some() {
                        continue; // discarded
                    }
                    // the client went away or idled out
                    drop(out_tx);
                    writer.abort();
                    return;
                }
            }
            // looked at before reading: once it is gone, what it wrote is all in the file
            let alive = still_running(view.as_ref(), &opts.target, &instance.id);
            let lines = match follower.read_new().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(path = %instance.log_path.display(), error = %e,
                        "attach: reading the container's log");
                    break;
                }
            };
            for c in by_channel(lines, opts.stdout, opts.stderr) {
                if out_tx.send(c).await.is_err() {
                    reader.abort();
                    return;
                }
            }
            if !alive {
                break;
            }
        }
    }
    if let Some(m) = success(protocol) {
        let _ = out_tx.send((channel::ERROR, m)).await;
    }
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
}

/// How a live session's input side ended.
enum InputEnd {
    /// The client went away (or idled out): the session ends without a status.
    Gone,
    /// The client's stdin ended, which ends the session (unless `stdinOnce` without a
    /// terminal, where the container's stdin closes and the output goes on).
    StdinClosed,
}

/// A session on the shim's attach socket: the container's output as the shim copies it, the
/// client's input to the container's stdin, its resizes to the terminal. It ends as
/// containerd's `ContainerIO.Attach` does: when the container's output ends (it exited:
/// `Success`), when the client's stdin ends (if the container has one: `Success`; with
/// `stdinOnce` and no terminal the container's stdin is closed instead and the output goes on),
/// or when the client goes away.
async fn run_live(
    transport: Transport,
    mut opts: AttachOptions,
    instance: ContainerInstance,
    sock: std::os::unix::net::UnixStream,
) {
    use kubenode_runtime::shim::attach as wire;
    use tokio::io::AsyncWriteExt;
    // upstream's GetAttach: the container's `tty`, which drops `error` (NewOptions)
    if instance.tty {
        opts.stderr = false;
    }
    let sock = match sock
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(sock))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(container = %instance.id, error = %e, "attach: the shim's socket");
            return;
        }
    };
    transport.established(opts.stdout, opts.stderr).await;
    let Transport {
        out: out_tx,
        writer,
        mut input,
        reader,
        status: protocol,
    } = transport;
    let (mut rd, mut wr) = sock.into_split();
    let output = {
        let out_tx = out_tx.clone();
        async move {
            let mut frames = wire::Decoder::default();
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => n,
                };
                frames.feed(&buf[..n]);
                loop {
                    let (kind, data) = match frames.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "attach: the shim broke the protocol");
                            return true;
                        }
                    };
                    let ch = match kind {
                        wire::STDOUT if opts.stdout => channel::STDOUT,
                        wire::STDERR if opts.stderr => channel::STDERR,
                        _ => continue,
                    };
                    if out_tx.send((ch, data)).await.is_err() {
                        return false;
                    }
                }
            }
        }
    };
    let forward_stdin = opts.stdin && instance.stdin;
    let keep_output = instance.stdin_once && !instance.tty;
    let input_side = async move {
        let mut sizes = Vec::new();
        let mut stdin_open = forward_stdin;
        let mut frame = Vec::new();
        loop {
            frame.clear();
            let event = input.recv().await;
            match event {
                Some(Input::Stdin(data)) => {
                    if !stdin_open {
                        continue;
                    }
                    wire::encode(&mut frame, wire::STDIN, &data);
                }
                Some(Input::StdinClosed) | None => {
                    // containerd copies the client's stdin only when the container has one
                    // (and the client asked): only then does its end mean anything
                    let attached = stdin_open;
                    if attached {
                        wire::encode(&mut frame, wire::STDIN_CLOSE, &[]);
                        let _ = wr.write_all(&frame).await;
                        stdin_open = false;
                    }
                    if event.is_none() {
                        return InputEnd::Gone;
                    }
                    if attached && !keep_output {
                        return InputEnd::StdinClosed;
                    }
                    continue;
                }
                Some(Input::Resize(data)) => {
                    if !instance.tty {
                        continue;
                    }
                    sizes.extend_from_slice(&data);
                    match channel::take_sizes(&mut sizes) {
                        Ok(got) => {
                            for size in got {
                                wire::encode(
                                    &mut frame,
                                    wire::RESIZE,
                                    &wire::resize_payload(size.width, size.height),
                                );
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "attach: resize events stop");
                            sizes.clear();
                        }
                    }
                }
            }
            if !frame.is_empty() && wr.write_all(&frame).await.is_err() {
                // the shim is gone: the output side sees it end
                std::future::pending::<()>().await;
            }
        }
    };
    let finished = tokio::select! {
        ended = output => ended,
        end = input_side => matches!(end, InputEnd::StdinClosed),
    };
    if finished {
        if let Some(m) = success(protocol) {
            let _ = out_tx.send((channel::ERROR, m)).await;
        }
    }
    drop(out_tx);
    if finished {
        let _ = writer.await;
    } else {
        writer.abort();
    }
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_as_upstream() {
        let o = attach_options(&["ns", "p", "c"], "output=1&error=1").unwrap();
        assert!(o.stdout && o.stderr && !o.stdin);
        assert_eq!(o.target.container.as_deref(), Some("c"));
        assert_eq!(o.uid, None);
        // a TTY request: stderr dropped by NewOptions, then no terminal (the container's)
        let o = attach_options(&["ns", "p", "u1", "c"], "input=1&output=1&error=1&tty=1").unwrap();
        assert!(o.stdin && o.stdout && !o.stderr);
        assert_eq!(o.uid.as_deref(), Some("u1"));
        assert_eq!(
            attach_options(&["ns", "p", "c"], "tty=1&error=1"),
            Err(ApiError::BadRequest(
                "you must specify at least 1 of stdin, stdout, stderr".into()
            ))
        );
        assert!(matches!(
            attach_options(&["ns", "p"], "output=1"),
            Err(ApiError::NotFound(_))
        ));
    }

    fn demux(mid: bool, cuts: &[&[u8]]) -> Vec<(LogStream, String)> {
        let mut d = CriDemux::new(mid);
        let mut out = Vec::new();
        for c in cuts {
            d.feed(c, &mut |s, t| {
                out.push((s, String::from_utf8_lossy(t).into_owned()))
            });
        }
        out
    }

    #[test]
    fn cri_lines_become_stream_text() {
        use LogStream::*;
        let log: &[u8] = b"2026-01-01T00:00:00.1Z stdout F one\n\
            2026-01-01T00:00:00.2Z stderr F two\n\
            2026-01-01T00:00:00.3Z stdout P par\n\
            2026-01-01T00:00:00.4Z stdout F tial\n\
            garbage\n\
            2026-01-01T00:00:00.5Z stdout F \n";
        let want = vec![
            (Stdout, "one\n".to_string()),
            (Stderr, "two\n".into()),
            (Stdout, "par".into()),
            (Stdout, "tial\n".into()),
            (Stdout, "\n".into()),
        ];
        assert_eq!(demux(false, &[log]), want);
        // any cut gives the same lines
        for cut in 1..log.len() {
            assert_eq!(demux(false, &[&log[..cut], &log[cut..]]), want, "cut {cut}");
        }
        // opened in the middle of a line: up to its end is dropped
        assert_eq!(
            demux(true, &[b"F half\n2026-01-01T00:00:00.6Z stdout F next\n"]),
            [(Stdout, "next\n".to_string())]
        );
        assert_eq!(demux(true, &[b"no newline yet"]), []);
    }

    #[test]
    fn lines_join_per_channel() {
        use LogStream::*;
        let lines = vec![
            (Stdout, b"a\n".to_vec()),
            (Stdout, b"b\n".to_vec()),
            (Stderr, b"e\n".to_vec()),
            (Stdout, b"c\n".to_vec()),
        ];
        assert_eq!(
            by_channel(lines.clone(), true, true),
            [
                (channel::STDOUT, b"a\nb\n".to_vec()),
                (channel::STDERR, b"e\n".to_vec()),
                (channel::STDOUT, b"c\n".to_vec())
            ]
        );
        assert_eq!(
            by_channel(lines, true, false),
            [(channel::STDOUT, b"a\nb\nc\n".to_vec())]
        );
    }

    #[test]
    fn state_names_as_containerd() {
        assert_eq!(cri_state(false, "exited"), "CONTAINER_EXITED");
        assert_eq!(cri_state(false, "created"), "CONTAINER_CREATED");
        assert_eq!(cri_state(true, "running"), "CONTAINER_RUNNING");
    }

    #[tokio::test]
    async fn follower_reads_appends_and_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let line = |t: &str| format!("2026-01-01T00:00:00Z stdout F {t}\n");
        std::fs::write(&path, line("before")).unwrap();
        let mut f = Follower::at_end(path.clone()).await.unwrap();
        async fn collect(f: &mut Follower) -> Vec<String> {
            f.read_new()
                .await
                .unwrap()
                .into_iter()
                .map(|(_, t)| String::from_utf8_lossy(&t).into_owned())
                .collect()
        }
        let got = collect(&mut f).await;
        assert!(got.is_empty(), "lines from before attaching: {got:?}");
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(line("after").as_bytes()).unwrap();
        w.write_all(b"2026-01-01T00:00:00Z stdout F unfin").unwrap();
        assert_eq!(collect(&mut f).await, ["after\n"]);
        w.write_all(b"ished\n").unwrap();
        // rotation: the old file gets a last line, then is renamed; a new one appears
        w.write_all(line("last of old").as_bytes()).unwrap();
        drop(w);
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, line("first of new")).unwrap();
        assert_eq!(
            collect(&mut f).await,
            ["unfinished\n", "last of old\n", "first of new\n"]
        );
    }
}
