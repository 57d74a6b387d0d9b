//! Exec and port-forward over SPDY/3.1, as upstream's kubelet serves them to the API server
//! (`pkg/kubelet/cri/streaming/remotecommand/httpstream.go`, `portforward/httpstream.go`) on
//! `kubenode_spdy`'s connection:
//!
//! - **Handshake** (upstream's `httpstream.Handshake`, then the SPDY upgrader): the first of the
//!   client's `X-Stream-Protocol-Version` values that the server supports (none offered: 400
//!   `unable to upgrade: X-Stream-Protocol-Version is required`; none in common: 403 naming
//!   both lists, with `X-Accepted-Stream-Protocol-Versions`); the request must say
//!   `Connection: Upgrade` and `Upgrade: SPDY/3.1` (else 400); the 101 names the protocol.
//! - **Exec** ([`EXEC_PROTOCOLS`]): the client opens one stream per `streamType` — `error`,
//!   and `stdin`, `stdout`, `stderr` as the query asked, `resize` with a TTY under v3 and v4 —
//!   within [`STREAM_CREATION_TIMEOUT`] (else the connection closes: upstream's `timed out
//!   waiting for client to create streams`). Then the session runs as over WebSocket
//!   ([`super::exec`]); stdin's FIN closes the command's stdin; v4's error stream carries the
//!   `metav1.Status`, older ones the failure's text. At the end the server's streams are
//!   half-closed and the connection goes away (GOAWAY).
//! - **Port-forward** ([`PORT_FORWARD_PROTOCOL`]): each forwarded connection is a pair of
//!   streams with one `requestID` — `streamType` `error` and `data`, and the `port` — made
//!   within [`STREAM_CREATION_TIMEOUT`] of each other; the data stream is copied to and from
//!   `localhost:<port>` in the pod's network namespace; a failure is written on the error
//!   stream (`error forwarding port <p> to pod <pod>, uid <uid>: <cause>`); the pair closes
//!   when the pod's side ends. A stream without a valid `port` or `streamType` is reset.
//! - The session slot and idle timeout are the WebSocket ones: a connection with no frame
//!   either way for the idle timeout closes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use kubenode_spdy::{Config, Connection, Role, Stream, StreamReader};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::channel::{self, Protocol};
use super::transport::{Input, Transport};
use super::{ExecOptions, SESSIONS};
use crate::api::router::{text, Body};
use crate::api::NodeView;

/// The stream protocols of exec and attach over SPDY, upstream's order
/// (`remotecommand.SupportedStreamingProtocols`).
pub const EXEC_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The stream protocol of port-forward over SPDY.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// Upstream's `streamCreationTimeout` default (`DefaultStreamCreationTimeout`).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many streams at once on an exec connection (it needs five).
const EXEC_MAX_STREAMS: usize = 16;
/// Port-forward: at most this many streams at once (two per forwarded connection).
const PORT_FORWARD_MAX_STREAMS: usize = 1000;

/// Whether `req` asks for a SPDY/3.1 upgrade (upstream's upgrader: `Connection` contains
/// `upgrade`, `Upgrade` contains `spdy/3.1`, both compared lowercase).
pub fn is_spdy(req: &Request<Incoming>) -> bool {
    let h = |n| {
        req.headers()
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
            .to_ascii_lowercase()
    };
    h(hyper::header::CONNECTION).contains("upgrade")
        && h(hyper::header::UPGRADE).contains(&kubenode_spdy::UPGRADE.to_ascii_lowercase())
}

/// Upstream's handshake: the protocol chosen among `supported`, or the refusal.
#[allow(clippy::result_large_err, reason = "the error is the response to send")]
fn handshake(
    req: &Request<Incoming>,
    supported: &[&'static str],
) -> Result<&'static str, Response<Body>> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(kubenode_spdy::PROTOCOL_VERSION_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let chosen = match kubenode_spdy::negotiate(&offered, supported) {
        Ok(p) => p,
        Err(e) if offered.iter().all(|v| v.trim().is_empty()) => {
            return Err(text(StatusCode::BAD_REQUEST, format!("{e}\n")))
        }
        Err(e) => {
            let mut r = text(StatusCode::FORBIDDEN, format!("{e}\n"));
            for p in supported {
                r.headers_mut().append(
                    kubenode_spdy::ACCEPTED_PROTOCOL_VERSIONS_HEADER,
                    hyper::header::HeaderValue::from_static(p),
                );
            }
            return Err(r);
        }
    };
    if !is_spdy(req) {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (Connection: Upgrade, \
             Upgrade: SPDY/3.1 or websocket)\n"
                .into(),
        ));
    }
    supported
        .iter()
        .find(|p| **p == chosen)
        .copied()
        .ok_or_else(|| text(StatusCode::INTERNAL_SERVER_ERROR, "negotiation\n".into()))
}

/// The 101 of a SPDY upgrade naming `protocol`.
fn switching_protocols(protocol: &'static str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, kubenode_spdy::UPGRADE)
        .header(kubenode_spdy::PROTOCOL_VERSION_HEADER, protocol)
        .body(http_body_util::Empty::<Bytes>::new().boxed())
        .expect("valid response")
}

fn too_many() -> Response<Body> {
    text(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many streaming sessions (at most {})\n",
            super::MAX_SESSIONS
        ),
    )
}

/// A SPDY upgrade accepted by the handshake: the protocol chosen and a session slot.
#[derive(Debug)]
pub(super) struct Accepted {
    protocol: &'static str,
    slot: tokio::sync::SemaphorePermit<'static>,
}

/// The checks of an exec or attach request that asked for SPDY: upstream's handshake among
/// [`EXEC_PROTOCOLS`] and a session slot, or the answer refusing it.
#[allow(clippy::result_large_err, reason = "the error is the response to send")]
pub(super) fn accept_exec(req: &Request<Incoming>) -> Result<Accepted, Response<Body>> {
    let protocol = handshake(req, &EXEC_PROTOCOLS)?;
    let slot = SESSIONS.try_acquire().map_err(|_| too_many())?;
    Ok(Accepted { protocol, slot })
}

/// Answers 101 to an accepted exec or attach request and, on the upgraded connection, waits
/// for the streams `opts` asks for, then runs `session` on them (exec's [`super::exec::run`];
/// attach plugs in the same way).
pub(super) fn start_session<F, Fut>(
    req: &mut Request<Incoming>,
    accepted: Accepted,
    opts: &ExecOptions,
    idle: Duration,
    session: F,
) -> Response<Body>
where
    F: FnOnce(Transport) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let Accepted { protocol, slot } = accepted;
    let resize = opts.tty && matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(resize);
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let _slot = slot;
        let io = match upgrade.await {
            Ok(io) => hyper_util::rt::TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "stream: the connection was not upgraded");
                return;
            }
        };
        let (conn, mut incoming) = Connection::start(
            io,
            Role::Server,
            Config {
                idle_timeout: idle,
                max_streams: EXEC_MAX_STREAMS,
            },
        );
        let streams = match tokio::time::timeout(
            STREAM_CREATION_TIMEOUT,
            exec_streams(&mut incoming, expected),
        )
        .await
        {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::debug!("stream: the SPDY connection ended before its streams were made");
                conn.close().await;
                return;
            }
            Err(_) => {
                tracing::info!("stream: timed out waiting for client to create streams");
                conn.close().await;
                return;
            }
        };
        let status = if protocol == "v4.channel.k8s.io" {
            Protocol::V4
        } else {
            Protocol::V1
        };
        session(exec_transport(conn, streams, status)).await;
    });
    switching_protocols(protocol)
}

/// Serves an exec request that asked for SPDY: `opts` are the request's.
pub(super) async fn serve_exec(
    view: std::sync::Arc<dyn NodeView>,
    opts: ExecOptions,
    mut req: Request<Incoming>,
    idle: Duration,
) -> Response<Body> {
    let accepted = match accept_exec(&req) {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let command = match view.exec_command(&opts.target, &opts.command, opts.tty) {
        Ok(c) => c,
        Err(e) => return text(e.status(), format!("{e}\n")),
    };
    let session_opts = opts.clone();
    start_session(&mut req, accepted, &opts, idle, move |t| {
        super::exec::run(t, session_opts, command)
    })
}

/// The streams of an exec session, by `streamType`.
#[derive(Debug, Default)]
struct ExecStreams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

/// Takes the client's streams until `expected` known ones came (upstream's `waitForStreams`:
/// an unknown type is logged and not counted); `None` if the connection ended first.
async fn exec_streams(
    incoming: &mut kubenode_spdy::Incoming,
    expected: usize,
) -> Option<ExecStreams> {
    let mut got = ExecStreams::default();
    let mut count = 0;
    while count < expected {
        let stream = incoming.recv().await?;
        let kind = stream
            .header(kubenode_spdy::STREAM_TYPE_HEADER)
            .unwrap_or("")
            .to_string();
        let slot = match kind.as_str() {
            "error" => &mut got.error,
            "stdin" => &mut got.stdin,
            "stdout" => &mut got.stdout,
            "stderr" => &mut got.stderr,
            "resize" => &mut got.resize,
            other => {
                tracing::debug!(stream_type = other, "exec: unexpected stream type");
                continue;
            }
        };
        *slot = Some(stream);
        count += 1;
    }
    Some(got)
}

/// The next chunk of `r`, never when there is no `r`.
async fn next_chunk(r: &mut Option<StreamReader>) -> Option<Bytes> {
    match r {
        Some(r) => r.read().await,
        None => std::future::pending().await,
    }
}

/// An exec session's [`Transport`] on its SPDY streams.
fn exec_transport(conn: Connection, streams: ExecStreams, status: Protocol) -> Transport {
    let split = |s: Option<Stream>| {
        s.map(Stream::split)
            .map_or((None, None), |(r, w)| (Some(r), Some(w)))
    };
    let (_, error) = split(streams.error);
    let (_, stdout) = split(streams.stdout);
    let (_, stderr) = split(streams.stderr);
    let (mut stdin, stdin_w) = split(streams.stdin);
    let (mut resize, resize_w) = split(streams.resize);
    let (out, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        while let Some((ch, data)) = out_rx.recv().await {
            let target = match ch {
                channel::STDOUT => &stdout,
                channel::STDERR => &stderr,
                channel::ERROR => &error,
                _ => &None,
            };
            if let (Some(w), false) = (target, data.is_empty()) {
                if let Err(e) = w.write(&data).await {
                    tracing::debug!(error = %e, "exec: writing to the client");
                }
            }
        }
        for w in [&stdout, &stderr, &error, &stdin_w, &resize_w]
            .into_iter()
            .flatten()
        {
            w.close().await;
        }
        writer_conn.close().await;
        writer_conn.closed().await;
    });
    let (in_tx, input) = mpsc::channel(8);
    let reader = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                d = next_chunk(&mut stdin) => match d {
                    Some(d) => Input::Stdin(d.into()),
                    None => {
                        stdin = None;
                        Input::StdinClosed
                    }
                },
                d = next_chunk(&mut resize) => match d {
                    Some(d) => Input::Resize(d.into()),
                    None => {
                        resize = None;
                        continue;
                    }
                },
                _ = conn.closed() => return,
            };
            if in_tx.send(event).await.is_err() {
                return;
            }
        }
    });
    Transport {
        out,
        writer,
        input,
        reader,
        status,
    }
}

/// Serves a port-forward request that asked for SPDY (`pod`: its name; the pod's network
/// namespace and uid come from `view`).
pub(super) async fn serve_port_forward(
    view: std::sync::Arc<dyn NodeView>,
    ns: &str,
    pod: String,
    mut req: Request<Incoming>,
    idle: Duration,
) -> Response<Body> {
    let protocol = match handshake(&req, &[PORT_FORWARD_PROTOCOL]) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let Ok(slot) = SESSIONS.try_acquire() else {
        return too_many();
    };
    let (netns, uid) = match view.pod_network(ns, &pod) {
        Ok(n) => n,
        Err(e) => return text(e.status(), format!("{e}\n")),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _slot = slot;
        let io = match upgrade.await {
            Ok(io) => hyper_util::rt::TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: the connection was not upgraded");
                return;
            }
        };
        let (conn, incoming) = Connection::start(
            io,
            Role::Server,
            Config {
                idle_timeout: idle,
                max_streams: PORT_FORWARD_MAX_STREAMS,
            },
        );
        port_forward(conn, incoming, netns, pod, uid).await;
    });
    switching_protocols(protocol)
}

/// A forwarded connection's streams, until both came.
#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Upstream's checks of a port-forward stream (`httpStreamReceived`): its port and type.
fn check_stream(s: &Stream) -> Result<(u16, bool), String> {
    let port = s.header("port").unwrap_or("");
    if port.is_empty() {
        return Err("\"port\" header is required".into());
    }
    let p: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if p < 1 {
        return Err(format!("port {port:?} must be > 0"));
    }
    match s.header(kubenode_spdy::STREAM_TYPE_HEADER).unwrap_or("") {
        "" => Err("\"streamType\" header is required".into()),
        "error" => Ok((p, false)),
        "data" => Ok((p, true)),
        other => Err(format!("invalid stream type {other:?}")),
    }
}

/// Upstream's `httpStreamHandler.run`: pairs streams by `requestID` and forwards each pair.
async fn port_forward(
    conn: Connection,
    mut incoming: kubenode_spdy::Incoming,
    netns: Option<PathBuf>,
    pod: String,
    uid: String,
) {
    let (timeout_tx, mut timeouts) = mpsc::channel::<String>(16);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    loop {
        let stream = tokio::select! {
            s = incoming.recv() => match s {
                Some(s) => s,
                None => break,
            },
            Some(id) = timeouts.recv() => {
                if let Some(p) = pairs.remove(&id) {
                    let msg = format!("timed out waiting for streams for request {id}");
                    tracing::debug!("port-forward: {msg}");
                    if let Some(e) = p.error {
                        let (_, w) = e.split();
                        let _ = w.write(msg.as_bytes()).await;
                        w.close().await;
                    }
                    if let Some(d) = p.data {
                        d.split().1.reset().await;
                    }
                }
                continue;
            }
        };
        let (port, is_data) = match check_stream(&stream) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: a stream refused");
                stream.split().1.reset().await;
                continue;
            }
        };
        // an old client without request ids: its pairs are consecutive streams (upstream)
        let id = stream
            .header("requestID")
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| ((stream.id().saturating_sub(1)) / 4).to_string());
        let created = !pairs.contains_key(&id);
        let pair = pairs.entry(id.clone()).or_default();
        if created {
            let tx = timeout_tx.clone();
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(STREAM_CREATION_TIMEOUT).await;
                let _ = tx.send(id).await;
            });
        }
        let slot = if is_data {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            let kind = if is_data { "data" } else { "error" };
            let msg =
                format!("error processing stream for request {id}: {kind} stream already assigned");
            tracing::debug!("port-forward: {msg}");
            if let Some(e) = &pair.error {
                let _ = e.writer().write(msg.as_bytes()).await;
            }
            stream.split().1.reset().await;
            continue;
        }
        *slot = Some(stream);
        if pair.error.is_some() && pair.data.is_some() {
            let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&id)
            else {
                continue;
            };
            let (netns, pod, uid) = (netns.clone(), pod.clone(), uid.clone());
            tokio::spawn(forward(error, data, port, netns, pod, uid));
        }
    }
    conn.close().await;
}

/// One forwarded connection: `data` to and from `localhost:port` in the pod's namespace.
async fn forward(
    error: Stream,
    data: Stream,
    port: u16,
    netns: Option<PathBuf>,
    pod: String,
    uid: String,
) {
    let (_, err_w) = error.split();
    let (mut data_r, data_w) = data.split();
    let fail =
        |e: std::io::Error| format!("error forwarding port {port} to pod {pod}, uid {uid}: {e}");
    let result = match super::portforward::connect(netns, port).await {
        Err(e) => Err(e),
        Ok(conn) => {
            let (mut r, mut w) = conn.into_split();
            let upstream = async {
                while let Some(d) = data_r.read().await {
                    w.write_all(&d).await?;
                }
                w.shutdown().await
            };
            // each read of the pod's side is one DATA frame, read into the frame's own buffer
            let downstream = async {
                data_w.copy_from(&mut r).await?;
                Ok::<_, std::io::Error>(())
            };
            // the pod's side ending ends the forward (upstream's copy returns)
            tokio::select! {
                r = downstream => r,
                r = async { upstream.await?; std::future::pending::<std::io::Result<()>>().await } => r,
            }
        }
    };
    if let Err(e) = result {
        let msg = fail(e);
        tracing::debug!("port-forward: {msg}");
        let _ = err_w.write(msg.as_bytes()).await;
    }
    data_w.close().await;
    err_w.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ContainerRef;

    /// A SPDY client and this server over an in-memory pipe, the session running a local
    /// `sh` (no runtime): the streams by type, stdout and stderr apart, stdin's FIN, v4's
    /// Status with the exit code, the server's streams ended and the connection closed.
    #[tokio::test]
    async fn an_exec_session_over_spdy() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _) = Connection::start(a, Role::Client, Config::default());
        let (server, mut incoming) = Connection::start(b, Role::Server, Config::default());
        let opts = ExecOptions {
            target: ContainerRef {
                namespace: "ns".into(),
                pod: "p".into(),
                container: Some("c".into()),
            },
            command: vec!["sh".into()],
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let session_opts = opts.clone();
        let serve = tokio::spawn(async move {
            let streams = exec_streams(&mut incoming, 4).await.expect("the streams");
            let mut command = std::process::Command::new("sh");
            command.args(["-c", "cat; echo err >&2; exit 3"]);
            super::super::exec::run(
                exec_transport(server, streams, Protocol::V4),
                session_opts,
                command,
            )
            .await;
        });
        let open = |t: &str| {
            client.open_stream(vec![(kubenode_spdy::STREAM_TYPE_HEADER.into(), t.into())])
        };
        let error = open("error").await.unwrap();
        // an unknown type is not counted
        let _odd = open("other").await.unwrap();
        let stdin = open("stdin").await.unwrap();
        let stdout = open("stdout").await.unwrap();
        let stderr = open("stderr").await.unwrap();
        let w = stdin.writer().clone();
        w.write(b"through stdin\n").await.unwrap();
        w.close().await;
        let read = |s: Stream| async move { s.split().0.read_to_end(1 << 20).await };
        let (out, err, status) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(read(stdout), read(stderr), read(error))
        })
        .await
        .expect("the session ends");
        assert_eq!(out, b"through stdin\n");
        assert_eq!(err, b"err\n");
        let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        tokio::time::timeout(Duration::from_secs(30), client.closed())
            .await
            .expect("the server closes the connection");
        serve.await.unwrap();
    }
}
