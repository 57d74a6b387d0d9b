//! Streaming on the kubelet's HTTPS port: `/exec/{ns}/{pod}[/{uid}]/{container}` over
//! WebSocket or SPDY/3.1, as upstream's kubelet (`pkg/kubelet/cri/streaming/remotecommand`)
//! serves it to the API server (which speaks SPDY/3.1 to kubelets, translating kubectl's
//! WebSocket) and to clients with a node's credentials.
//!
//! - **Query** (upstream's `core/v1` names): `command` (repeated: the argv), `input`, `output`,
//!   `error`, `tty` (`1` turns each on). At least one stream; a TTY turns stderr off (its
//!   output is the terminal's).
//! - **Handshake**: `Upgrade: websocket`; the subprotocol is the first of the client's
//!   `Sec-WebSocket-Protocol` that [`channel::EXEC_PROTOCOLS`] has (none asked for: the binary
//!   channel protocol). `Upgrade: SPDY/3.1` is served by [`spdy`] (`X-Stream-Protocol-Version`
//!   v4/v3/v2/v1 `channel.k8s.io`, one SPDY stream per `streamType`). Anything else is 400.
//! - **Session** ([`exec`], on a [`transport::Transport`] of either kind): the runtime's `exec` command line ([`crate::api::NodeView::exec_command`])
//!   runs with pipes, or with a pseudo-terminal whose size follows the resize channel. The
//!   first message is an empty one on the lowest output channel (upstream's "connection is
//!   established" signal); stdin's data goes to the command; v5's close signal on stdin closes
//!   its stdin. When the command exits and its output is drained, the error channel carries the
//!   result (v4 and later: `metav1.Status` `Success`, or `Failure` with reason
//!   `NonZeroExitCode` and a cause `ExitCode` whose message is the code), then the socket
//!   closes.
//! - **Port-forward**: `/portForward/{ns}/{pod}[/{uid}]?port=..` over WebSocket
//!   ([`portforward`]), or over SPDY/3.1 (`portforward.k8s.io`, [`spdy`]: the ports come with
//!   each stream pair, not in the query).
//! - **Attach**: `/attach/{ns}/{pod}[/{uid}]/{container}`, same query, handshake and channels
//!   as exec over either transport, output only: the container's log followed from the moment
//!   of attaching ([`attach`]).
//! - **Bounds**: at most [`MAX_SESSIONS`] sessions of either transport; client messages (and
//!   SPDY frames) at most
//!   [`channel::MAX_MESSAGE`]; a session with no message in
//!   either direction for the idle timeout (`streamingConnectionIdleTimeout`, 4 h) is closed; a
//!   client that goes away stops the command (SIGTERM, forwarded by the runtime, then SIGKILL).

pub mod attach;
pub mod channel;
mod exec;
pub mod portforward;
pub mod spdy;
mod transport;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::router::{text, Body};
use super::{ApiError, ContainerRef, NodeView};
use channel::Protocol;
use futures::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Upstream's `streamingConnectionIdleTimeout` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// At most this many streaming sessions at once (each holds a runtime process); more are
/// answered 429 (upstream caps none, but an upgraded connection leaves the server's
/// connection limit).
pub const MAX_SESSIONS: usize = 1024;

static SESSIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_SESSIONS);

/// The options of an exec request (upstream's `remotecommand.Options` and the command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    /// The container.
    pub target: ContainerRef,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Standard input is streamed.
    pub stdin: bool,
    /// Standard output is streamed.
    pub stdout: bool,
    /// Standard error is streamed (never with a TTY).
    pub stderr: bool,
    /// The command gets a terminal.
    pub tty: bool,
}

/// The query of an exec or attach request, as upstream's `NewOptions` reads it.
struct StreamQuery {
    /// `command`, repeated (exec's argv).
    command: Vec<String>,
    /// `input`.
    stdin: bool,
    /// `output`.
    stdout: bool,
    /// `error` (off with a terminal, which has no separate stderr).
    stderr: bool,
    /// `tty`.
    tty: bool,
}

/// Reads `query` (`1` turns a stream on) and requires at least one stream, as upstream.
fn stream_query(query: &str) -> Result<StreamQuery, ApiError> {
    let mut q = StreamQuery {
        command: Vec::new(),
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
    };
    for (k, v) in form_urlencoded(query) {
        match k.as_str() {
            "command" => q.command.push(v),
            "input" => q.stdin = v == "1",
            "output" => q.stdout = v == "1",
            "error" => q.stderr = v == "1",
            "tty" => q.tty = v == "1",
            _ => {}
        }
    }
    if q.tty {
        q.stderr = false;
    }
    if !q.stdin && !q.stdout && !q.stderr {
        return Err(ApiError::BadRequest(
            "you must specify at least 1 of stdin, stdout, stderr".into(),
        ));
    }
    Ok(q)
}

/// Parses `/exec/{ns}/{pod}[/{uid}]/{container}` (`segments`: the path's, after `exec`) and
/// its query, as upstream's `NewOptions`.
pub fn exec_options(segments: &[&str], query: &str) -> Result<ExecOptions, ApiError> {
    let (ns, pod, container) = match segments {
        [ns, pod, container] | [ns, pod, _, container] => (*ns, *pod, *container),
        _ => {
            return Err(ApiError::NotFound(
                "exec paths are /exec/{namespace}/{pod}/{container}".into(),
            ))
        }
    };
    let StreamQuery {
        command,
        stdin,
        stdout,
        stderr,
        tty,
    } = stream_query(query)?;
    if command.is_empty() {
        return Err(ApiError::BadRequest(
            "command: Required value: you must specify a command".into(),
        ));
    }
    Ok(ExecOptions {
        target: ContainerRef {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: Some(container.to_string()),
        },
        command,
        stdin,
        stdout,
        stderr,
        tty,
    })
}

/// The first value of `key` in a query, decoded (`+` is a space).
pub fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// `key=value` pairs of a query, decoded (`+` is a space).
fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    if let Some(v) = b
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        out.push(v);
                        i += 2;
                    } else {
                        out.push(b'%');
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// Whether `req` asks for a WebSocket ([`super::auth::is_websocket`]).
pub(crate) fn is_websocket(req: &Request<Incoming>) -> bool {
    super::auth::is_websocket(req.headers())
}

/// The WebSocket handshake's checks shared by every streaming endpoint: the subprotocol
/// negotiated from the client's offer among `supported`, the handshake key, and a session slot;
/// or the answer refusing the request.
#[allow(clippy::result_large_err, reason = "the error is the response to send")]
fn accept(
    req: &Request<Incoming>,
    supported: &[Protocol],
) -> Result<
    (
        Option<Protocol>,
        String,
        tokio::sync::SemaphorePermit<'static>,
    ),
    Response<Body>,
> {
    let protocols: Vec<String> = req
        .headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let protocol = channel::negotiate(protocols.iter().map(String::as_str), supported)
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("{e}\n")))?;
    let key = handshake_key(req).map_err(|e| text(StatusCode::BAD_REQUEST, format!("{e}\n")))?;
    let slot = SESSIONS.try_acquire().map_err(|_| {
        text(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many streaming sessions (at most {MAX_SESSIONS})\n"),
        )
    })?;
    Ok((protocol, key, slot))
}

/// Serves `/exec/...` (`segments`: the path after `exec`): checks the request, resolves the
/// container's exec command, answers 101 and runs the session on the upgraded connection.
pub async fn serve_exec(
    view: std::sync::Arc<dyn NodeView>,
    segments: &[&str],
    mut req: Request<Incoming>,
    idle: Duration,
) -> Response<Body> {
    let opts = match exec_options(segments, req.uri().query().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return text(e.status(), format!("{e}\n")),
    };
    if !is_websocket(&req) {
        return spdy::serve_exec(view, opts, req, idle).await;
    }
    let (protocol, key, slot) = match accept(&req, &channel::EXEC_PROTOCOLS) {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let command = match view.exec_command(&opts.target, &opts.command, opts.tty) {
        Ok(c) => c,
        Err(e) => return text(e.status(), format!("{e}\n")),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _slot = slot;
        match upgrade.await {
            Ok(io) => {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(io),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    Some(ws_config()),
                )
                .await;
                let protocol = protocol.unwrap_or(Protocol::V1);
                exec::run(transport::websocket(ws, protocol, idle), opts, command).await;
            }
            Err(e) => tracing::debug!(error = %e, "exec: the connection was not upgraded"),
        }
    });
    switching_protocols(&key, protocol)
}

/// Serves `/portForward/{ns}/{pod}[/{uid}]` (`segments`: the path after `portForward`).
pub async fn serve_port_forward(
    view: std::sync::Arc<dyn NodeView>,
    segments: &[&str],
    mut req: Request<Incoming>,
    idle: Duration,
) -> Response<Body> {
    let (ns, pod) = match segments {
        [ns, pod] | [ns, pod, _] => (ns.to_string(), pod.to_string()),
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "port-forward paths are /portForward/{namespace}/{pod}\n".into(),
            )
        }
    };
    if !is_websocket(&req) {
        // SPDY: the ports come with each stream (upstream's NewV4Options reads none)
        return spdy::serve_port_forward(view, &ns, pod, req, idle).await;
    }
    let ports = match portforward::ports(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return text(e.status(), format!("{e}\n")),
    };
    let (protocol, key, slot) = match accept(&req, &portforward::PORT_FORWARD_PROTOCOLS) {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let (netns, uid) = match view.pod_network(&ns, &pod) {
        Ok(n) => n,
        Err(e) => return text(e.status(), format!("{e}\n")),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _slot = slot;
        match upgrade.await {
            Ok(io) => {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(io),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    Some(ws_config()),
                )
                .await;
                portforward::run(
                    ws,
                    protocol.unwrap_or(Protocol::V1),
                    ports,
                    netns,
                    pod,
                    uid,
                    idle,
                )
                .await;
            }
            Err(e) => tracing::debug!(error = %e, "port-forward: the connection was not upgraded"),
        }
    });
    switching_protocols(&key, protocol)
}

/// The WebSocket limits of a session: messages and frames at most
/// [`channel::MAX_MESSAGE`] (base64 data is a third larger).
pub fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    let max = channel::MAX_MESSAGE + channel::MAX_MESSAGE / 2;
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// The client's `Sec-WebSocket-Key`, checking `Sec-WebSocket-Version: 13`.
fn handshake_key(req: &Request<Incoming>) -> Result<String, String> {
    let version = req
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if version.trim() != "13" {
        return Err(format!(
            "Sec-WebSocket-Version: only 13 is supported, not {version:?}"
        ));
    }
    req.headers()
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| "Sec-WebSocket-Key is missing".to_string())
}

/// The 101 answer of a WebSocket handshake.
fn switching_protocols(key: &str, protocol: Option<Protocol>) -> Response<Body> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = protocol {
        b = b.header(hyper::header::SEC_WEBSOCKET_PROTOCOL, p.name());
    }
    b.body(http_body_util::Empty::<Bytes>::new().boxed())
        .expect("valid response")
}

/// The activity clock of the idle timeout: the last message in either direction.
#[derive(Debug, Clone)]
pub(super) struct Activity(Arc<Mutex<Instant>>);

impl Activity {
    pub(super) fn new() -> Self {
        Activity(Arc::new(Mutex::new(Instant::now())))
    }
    pub(super) fn touch(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
    pub(super) fn last(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `data` on channel `ch` as one WebSocket message of `protocol` ([`channel::encode`]).
pub(super) fn ws_message(protocol: Protocol, ch: u8, data: &[u8]) -> Message {
    match channel::encode(protocol, ch, data) {
        channel::Outbound::Binary(b) => Message::binary(b),
        channel::Outbound::Text(t) => Message::text(t),
    }
}

/// At most this many queued messages go out with one flush of the WebSocket.
const WRITE_BATCH: usize = 32;

/// What a session queues for its writer ([`spawn_writer`]).
pub(super) trait Outgoing: Send + 'static {
    /// The WebSocket message under `protocol`.
    fn into_message(self, protocol: Protocol) -> Message;
}

/// `(channel, data)`, encoded by the writer ([`ws_message`]).
impl Outgoing for (u8, Vec<u8>) {
    fn into_message(self, protocol: Protocol) -> Message {
        ws_message(protocol, self.0, &self.1)
    }
}

/// A message already encoded (port-forward's data, read straight into its message).
impl Outgoing for Message {
    fn into_message(self, _: Protocol) -> Message {
        self
    }
}

/// The sending half of a session: a task that encodes each item the session queues (at most
/// 16 waiting: a slow client slows the session), sends it (what is queued together, up to
/// [`WRITE_BATCH`] messages, with one flush), touches `activity`, and once the queue's
/// senders are gone closes the socket normally.
pub(super) fn spawn_writer<S, T: Outgoing>(
    mut sink: futures::stream::SplitSink<WebSocketStream<S>, Message>,
    protocol: Protocol,
    activity: Activity,
) -> (tokio::sync::mpsc::Sender<T>, tokio::task::JoinHandle<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<T>(16);
    let writer = tokio::spawn(async move {
        while let Some(first) = out_rx.recv().await {
            // what is queued goes out with one flush (one TLS write, fewer system calls)
            let mut next = Some(first);
            let mut queued = 0;
            while let Some(item) = next.take() {
                if sink.feed(item.into_message(protocol)).await.is_err() {
                    return;
                }
                queued += 1;
                if queued < WRITE_BATCH {
                    next = out_rx.try_recv().ok();
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
            activity.touch();
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
    });
    (out_tx, writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_as_upstream() {
        let o = exec_options(
            &["ns", "p", "c"],
            "command=sh&command=-c&command=echo+hi%21&output=1&error=1",
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi!"]);
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        assert_eq!(o.target.container.as_deref(), Some("c"));
        let o = exec_options(&["ns", "p", "uid", "c"], "command=sh&input=1&tty=1&error=1").unwrap();
        assert!(o.stdin && o.tty && !o.stderr, "a TTY has no stderr");
        assert_eq!(
            exec_options(&["ns", "p", "c"], "command=sh"),
            Err(ApiError::BadRequest(
                "you must specify at least 1 of stdin, stdout, stderr".into()
            ))
        );
        assert!(exec_options(&["ns", "p", "c"], "output=1").is_err());
        assert!(matches!(
            exec_options(&["ns", "p"], "command=sh&output=1"),
            Err(ApiError::NotFound(_))
        ));
    }

    /// The writer sends every queued message, in order, however many are queued at once
    /// (they go out in batches, each with one flush), then closes normally.
    #[tokio::test]
    async fn the_writer_sends_queued_messages_in_order_then_closes() {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let (sink, _source) = server.split();
        let (out, writer) = spawn_writer::<_, (u8, Vec<u8>)>(sink, Protocol::V4, Activity::new());
        let count = 3 * WRITE_BATCH + 5;
        let queue = tokio::spawn(async move {
            for i in 0..count {
                out.send((channel::STDOUT, (i as u32).to_be_bytes().to_vec()))
                    .await
                    .unwrap();
            }
        });
        for i in 0..count {
            let msg = client.next().await.unwrap().unwrap();
            let mut want = vec![channel::STDOUT];
            want.extend_from_slice(&(i as u32).to_be_bytes());
            assert_eq!(msg, Message::binary(want), "message {i}");
        }
        assert!(matches!(
            client.next().await,
            Some(Ok(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                ..
            }))))
        ));
        queue.await.unwrap();
        writer.await.unwrap();
    }
}
