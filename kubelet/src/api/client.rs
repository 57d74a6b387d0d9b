//! The CLI's side of the node API socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Pod, Secret, Service};
use serde::de::DeserializeOwned;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::stream::channel::{self, Protocol, TerminalSize};
use super::stream::{ws_message, ExecOptions};
use super::{ContainerRef, ExecRequest, ExecResponse};

/// Errors talking to the local agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is not there or refuses connections: no agent runs with this run dir.
    #[error("cannot reach the kubenode agent at {socket} (is `kubenode agent` running with the same --run-dir?)")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// HTTP-level failure.
    #[error("talking to the kubenode agent: {0}")]
    Http(#[from] hyper::Error),
    /// The agent answered with an error.
    #[error("{0}")]
    Api(String),
    /// The answer did not parse.
    #[error("decoding the agent's answer: {0}")]
    Decode(#[from] serde_json::Error),
    /// A streaming session's connection broke without the agent ending the session (no
    /// WebSocket close): the agent stopped or the connection failed.
    #[error("{what}: lost the connection to the kubenode agent: {cause}")]
    Lost {
        /// The session's kind.
        what: &'static str,
        /// The failure.
        cause: String,
    },
    /// The agent took longer than the bound for this call.
    #[error("the kubenode agent at {socket} did not answer within {after:?} ({what})")]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// What was waited for.
        what: &'static str,
        /// The bound.
        after: Duration,
    },
}

/// The bound on connecting to the agent and on its HTTP handshake: a live agent accepts at
/// once, so this only ends a wait on an agent that stopped answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound on a whole read-only request (`get`, `describe`, events, ...). Exec and followed
/// logs are not bounded: they last as long as the command or the container.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the agent's unix socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

/// A list object as the API returns it.
#[derive(serde::Deserialize)]
struct List<T> {
    items: Vec<T>,
}

impl ApiClient {
    /// A client for the socket at `socket` (`<run-dir>/kubenode.sock`).
    pub fn new(socket: impl Into<PathBuf>) -> ApiClient {
        ApiClient {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let connect = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
            Ok::<_, ClientError>(http1::handshake(TokioIo::new(stream)).await?)
        };
        let (mut sender, conn) = self.bounded(CONNECT_TIMEOUT, "connecting", connect).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "kubenode")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Api(format!("building request: {e}")))?;
        let resp = sender.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let text = resp.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            return Err(ClientError::Api(if text.is_empty() {
                status.to_string()
            } else {
                text
            }));
        }
        Ok(resp)
    }

    /// Runs `fut` for at most `after`.
    async fn bounded<T>(
        &self,
        after: Duration,
        what: &'static str,
        fut: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(after, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                socket: self.socket.clone(),
                what,
                after,
            })?
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.bounded(REQUEST_TIMEOUT, "a read request", async {
            let resp = self.send(Method::GET, path, Vec::new()).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(serde_json::from_slice(&body)?)
        })
        .await
    }

    /// `GET /pods`.
    pub async fn pods(&self) -> Result<Vec<Pod>, ClientError> {
        Ok(self.get::<List<Pod>>("/pods").await?.items)
    }

    /// `GET /events`.
    pub async fn events(&self) -> Result<Vec<Event>, ClientError> {
        Ok(self.get::<List<Event>>("/events").await?.items)
    }

    /// `GET /services`.
    pub async fn services(&self) -> Result<Vec<Service>, ClientError> {
        Ok(self.get::<List<Service>>("/services").await?.items)
    }

    /// `GET /configmaps` (keys only, no values).
    pub async fn config_maps(&self) -> Result<Vec<ConfigMap>, ClientError> {
        Ok(self.get::<List<ConfigMap>>("/configmaps").await?.items)
    }

    /// `GET /secrets` (keys only, no values).
    pub async fn secrets(&self) -> Result<Vec<Secret>, ClientError> {
        Ok(self.get::<List<Secret>>("/secrets").await?.items)
    }

    /// `GET /endpoints`.
    pub async fn endpoints(&self) -> Result<Vec<Endpoints>, ClientError> {
        Ok(self.get::<List<Endpoints>>("/endpoints").await?.items)
    }

    /// `GET /stats/summary`.
    pub async fn stats_summary(&self) -> Result<crate::stats::types::Summary, ClientError> {
        self.get("/stats/summary").await
    }

    /// A text answer: `GET /metrics` or `GET /metrics/resource`.
    pub async fn text(&self, path: &str) -> Result<String, ClientError> {
        self.bounded(REQUEST_TIMEOUT, "a read request", async {
            let resp = self.send(Method::GET, path, Vec::new()).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
        .await
    }

    /// `POST /exec`.
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecResponse, ClientError> {
        let body = serde_json::to_vec(request)?;
        let resp = self.send(Method::POST, "/exec", body).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }

    /// Opens a WebSocket to `path` (with its query) on the socket, offering `protocol`; an
    /// answer other than 101 is [`ClientError::Api`] with the agent's text.
    async fn websocket(
        &self,
        path: &str,
        protocol: Protocol,
    ) -> Result<WebSocketStream<tokio::net::UnixStream>, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let connect = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
            let mut req = format!("ws://kubenode{path}")
                .into_client_request()
                .map_err(|e| ClientError::Api(format!("building request: {e}")))?;
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                hyper::header::HeaderValue::from_static(protocol.name()),
            );
            tokio_tungstenite::client_async(req, stream)
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(resp) => {
                        let body = resp.body().as_deref().unwrap_or_default();
                        let text = String::from_utf8_lossy(body).trim().to_string();
                        ClientError::Api(if text.is_empty() {
                            resp.status().to_string()
                        } else {
                            text
                        })
                    }
                    other => ClientError::Api(format!("opening the stream: {other}")),
                })
        };
        let (ws, _) = self.bounded(CONNECT_TIMEOUT, "connecting", connect).await?;
        Ok(ws)
    }

    /// `GET /attach/{ns}/{pod}/{container}?output=1&error=1` over WebSocket
    /// (`v5.channel.k8s.io`): calls `out(channel, data)` with each chunk of the container's
    /// standard output (channel 1) and error (channel 2) as it arrives, until the container
    /// exits (`Ok`) or the agent ends the session with a failure (`Err` with its message).
    pub async fn attach(
        &self,
        target: &ContainerRef,
        out: impl FnMut(u8, &[u8]),
    ) -> Result<(), ClientError> {
        let opts = ExecOptions {
            target: target.clone(),
            command: Vec::new(),
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let (_, input) = mpsc::channel(1);
        match self.attach_stream(&opts, input, out).await? {
            0 => Ok(()),
            code => Err(ClientError::Api(format!(
                "attach ended with exit code {code}"
            ))),
        }
    }

    /// `GET /attach/{ns}/{pod}/{container}` over WebSocket (`v5.channel.k8s.io`), as `kubectl
    /// attach`: as [`Client::exec_stream`], for the container's own process (`opts.command`
    /// is not used). Ends when the container exits, or when the input ends and the container
    /// has no `stdinOnce` (the agent's `Success`: 0).
    pub async fn attach_stream(
        &self,
        opts: &ExecOptions,
        input: mpsc::Receiver<StreamInput>,
        out: impl FnMut(u8, &[u8]),
    ) -> Result<i32, ClientError> {
        let path = stream_path("attach", opts);
        self.session(&path, "attach", input, out).await
    }

    /// `GET /exec/{ns}/{pod}/{container}?command=..` over WebSocket (`v5.channel.k8s.io`), as
    /// `kubectl exec`: sends what comes from `input` (stdin's data, its end, terminal sizes),
    /// calls `out(channel, data)` with the command's output (channel 1, and 2 for stderr
    /// without a TTY) as it arrives, and returns the command's exit code once it has exited.
    /// `opts.target.container` must name the container. A session the agent ends with a
    /// failure other than a non-zero exit is `Err` with its message.
    pub async fn exec_stream(
        &self,
        opts: &ExecOptions,
        input: mpsc::Receiver<StreamInput>,
        out: impl FnMut(u8, &[u8]),
    ) -> Result<i32, ClientError> {
        self.session(&stream_path("exec", opts), "exec", input, out)
            .await
    }

    /// One exec or attach session on `path`: `input` to the agent, the output to `out`, the
    /// exit code from the final status.
    async fn session(
        &self,
        path: &str,
        what: &str,
        mut input: mpsc::Receiver<StreamInput>,
        mut out: impl FnMut(u8, &[u8]),
    ) -> Result<i32, ClientError> {
        let mut ws = self.websocket(path, Protocol::V5).await?;
        let mut status = Vec::new();
        let mut input_open = true;
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                i = input.recv(), if input_open => {
                    let (ch, data) = match i {
                        Some(StreamInput::Stdin(data)) if !data.is_empty() => (channel::STDIN, data),
                        Some(StreamInput::Stdin(_)) => continue,
                        Some(StreamInput::StdinClosed) => {
                            (channel::CLOSE_SIGNAL, vec![channel::STDIN])
                        }
                        Some(StreamInput::Resize(size)) => {
                            (channel::RESIZE, serde_json::to_vec(&size)?)
                        }
                        None => {
                            input_open = false;
                            continue;
                        }
                    };
                    // the command may have exited already: its status still follows
                    let _ = ws.send(ws_message(Protocol::V5, ch, &data)).await;
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            let data = match msg.map_err(|e| ClientError::Api(format!("{what} session: {e}")))? {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.split_first() {
                Some((&channel::ERROR, rest)) => status.extend_from_slice(rest),
                Some((&ch, rest)) if !rest.is_empty() => out(ch, rest),
                _ => {}
            }
        }
        session_status(&status, what)
    }

    /// `GET /portForward/{ns}/{pod}?port=PORT` over WebSocket (`v4.channel.k8s.io`): copies
    /// `local` to and from `localhost:PORT` in the pod's network namespace until the pod's
    /// side closes (or `local` fails), as one connection of `kubectl port-forward`. The agent's
    /// error (`error forwarding port ...`: nothing listens there, the pod has no network) is
    /// `Err` with its text, also when the agent closed the session before `local`'s data could
    /// be sent (what the agent sent is read to its end). A connection that breaks without the
    /// agent closing the session is [`ClientError::Lost`].
    ///
    /// `local`'s end of input (a half-close) is not forwarded: the v4 channel protocol has no
    /// frame for it (upstream's kubelet reads a channel's end only when the connection
    /// closes), so the session goes on until the pod's side closes.
    pub async fn port_forward<S>(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        local: S,
    ) -> Result<(), ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let path = format!("/portForward/{namespace}/{pod}?port={port}");
        let mut ws = self.websocket(&path, Protocol::V4).await?;
        let (mut local_r, mut local_w) = tokio::io::split(local);
        let mut buf = vec![0u8; 32 * 1024];
        // each channel's first message is the port (two bytes, little-endian)
        let mut prefixed = [false; 2];
        let mut error = Vec::new();
        let mut local_open = true;
        let mut local_failed = None;
        let mut lost = None;
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                n = local_r.read(&mut buf), if local_open => {
                    match n {
                        Ok(0) => local_open = false,
                        Ok(n) => {
                            // the agent may have ended the session already (its error and
                            // close frame unread): stop sending, read what it sent
                            if ws.send(ws_message(Protocol::V4, 0, &buf[..n])).await.is_err() {
                                local_open = false;
                            }
                        }
                        Err(e) => {
                            local_failed = Some(e);
                            break;
                        }
                    }
                    continue;
                }
            };
            let data = match msg {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    lost = Some(e.to_string());
                    break;
                }
                None => {
                    lost = Some("the connection ended".into());
                    break;
                }
            };
            let Some((&ch, rest)) = data.split_first() else {
                continue;
            };
            let ch = usize::from(ch);
            if ch > 1 {
                continue;
            }
            let rest = if prefixed[ch] {
                rest
            } else {
                prefixed[ch] = true;
                rest.get(2..).unwrap_or_default()
            };
            if ch == 1 {
                error.extend_from_slice(rest);
            } else if let Err(e) = local_w.write_all(rest).await {
                local_failed = Some(e);
                break;
            }
        }
        let _ = local_w.shutdown().await;
        let _ = ws.close(None).await;
        if !error.is_empty() {
            return Err(ClientError::Api(
                String::from_utf8_lossy(&error).trim().to_string(),
            ));
        }
        if let Some(cause) = lost {
            return Err(ClientError::Lost {
                what: "port-forward",
                cause,
            });
        }
        match local_failed {
            Some(e) => Err(ClientError::Api(format!("the local connection: {e}"))),
            None => Ok(()),
        }
    }

    /// `GET /containerLogs/...`: calls `out` with each chunk as it arrives (with `follow`, until
    /// the container's log ends or the agent closes the stream).
    pub async fn logs(
        &self,
        target: &ContainerRef,
        query: &str,
        mut out: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let mut path = format!("/containerLogs/{}/{}", target.namespace, target.pod);
        if let Some(c) = &target.container {
            path.push('/');
            path.push_str(c);
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        let mut body = self.send(Method::GET, &path, Vec::new()).await?.into_body();
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                out(data);
            }
        }
        Ok(())
    }
}

/// What the CLI sends a streaming exec session ([`ApiClient::exec_stream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamInput {
    /// Bytes for the command's standard input.
    Stdin(Vec<u8>),
    /// Standard input has ended (v5's close signal: the command sees end of file).
    StdinClosed,
    /// The local terminal's size, at the start and after each change.
    Resize(TerminalSize),
}

/// The path and query of a streaming exec or attach (`kind`), as client-go builds it
/// (`command` repeated, `1` for each stream asked for).
fn stream_path(kind: &str, opts: &ExecOptions) -> String {
    let mut query: Vec<String> = opts
        .command
        .iter()
        .map(|c| format!("command={}", escape(c)))
        .collect();
    for (on, key) in [
        (opts.stdin, "input"),
        (opts.stdout, "output"),
        (opts.stderr && !opts.tty, "error"),
        (opts.tty, "tty"),
    ] {
        if on {
            query.push(format!("{key}=1"));
        }
    }
    format!(
        "/{kind}/{}/{}/{}?{}",
        escape(&opts.target.namespace),
        escape(&opts.target.pod),
        escape(opts.target.container.as_deref().unwrap_or_default()),
        query.join("&")
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The exit code a session's final `metav1.Status` (the error channel, v4 and later) reports:
/// 0 for `Success`, the `ExitCode` cause of `NonZeroExitCode`; any other failure, or no
/// status at all, is an error with its message.
fn session_status(status: &[u8], what: &str) -> Result<i32, ClientError> {
    if status.is_empty() {
        return Err(ClientError::Api(format!(
            "the {what} session ended without a status"
        )));
    }
    let status: serde_json::Value = serde_json::from_slice(status)?;
    if status["status"] == "Success" {
        return Ok(0);
    }
    if status["reason"] == "NonZeroExitCode" {
        let code = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(ClientError::Api(
        status["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{what} failed: {status}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_path_as_client_go() {
        let opts = ExecOptions {
            target: ContainerRef {
                namespace: "default".into(),
                pod: "web-node".into(),
                container: Some("c".into()),
            },
            command: vec!["sh".into(), "-c".into(), "echo a&b=1 %".into()],
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let path = stream_path("exec", &opts);
        assert_eq!(
            path,
            "/exec/default/web-node/c?command=sh&command=-c&command=echo%20a%26b%3D1%20%25\
             &input=1&output=1&error=1"
        );
        // the server's own parser reads back what was sent
        let (p, q) = path.split_once('?').unwrap();
        let segments: Vec<&str> = p.trim_start_matches("/exec/").split('/').collect();
        assert_eq!(
            super::super::stream::exec_options(&segments, q),
            Ok(opts.clone())
        );
        let tty = ExecOptions { tty: true, ..opts };
        assert!(
            stream_path("exec", &tty).ends_with("&input=1&output=1&tty=1"),
            "a TTY has no stderr"
        );
    }

    /// A stand-in agent's socket in a temporary directory (kept while the guard lives).
    fn stand_in_socket() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        tokio::net::UnixListener,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubenode.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        (dir, socket, listener)
    }

    /// A stand-in agent's side of one port-forward WebSocket (`v4.channel.k8s.io`) on `conn`.
    #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
    async fn accept_v4(conn: tokio::net::UnixStream) -> WebSocketStream<tokio::net::UnixStream> {
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        tokio_tungstenite::accept_hdr_async(conn, |_: &Request, mut resp: Response| {
            resp.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                hyper::header::HeaderValue::from_static(Protocol::V4.name()),
            );
            Ok(resp)
        })
        .await
        .unwrap()
    }

    /// The agent writes its error and closes the session at once, while the local client's
    /// data is waiting to be sent (whichever the client handles first, in turn): the error is
    /// reported, the local side's output shut down.
    #[tokio::test]
    async fn port_forward_reports_the_error_of_a_session_the_agent_closed() {
        for _ in 0..20 {
            let (_dir, socket, listener) = stand_in_socket();
            let agent = tokio::spawn(async move {
                let (conn, _) = listener.accept().await.unwrap();
                let mut ws = accept_v4(conn).await;
                let error = [
                    &[1u8][..],
                    b"error forwarding port 9999 to pod p, uid u: refused",
                ];
                for m in [vec![0, 0x0f, 0x27], vec![1, 0x0f, 0x27], error.concat()] {
                    ws.send(Message::binary(m)).await.unwrap();
                }
                let _ = ws.close(None).await;
                // dropped: the connection closes, the client's data unread
            });
            let (mut local, theirs) = tokio::io::duplex(1 << 16);
            local.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            let err = ApiClient::new(&socket)
                .port_forward("default", "p", 9999, theirs)
                .await
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "error forwarding port 9999 to pod p, uid u: refused"
            );
            let mut rest = Vec::new();
            local.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "{rest:?}");
            agent.await.unwrap();
        }
    }

    /// A connection that ends without the agent closing the session is a lost connection.
    #[tokio::test]
    async fn port_forward_without_a_close_is_lost() {
        let (_dir, socket, listener) = stand_in_socket();
        let agent = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let mut ws = accept_v4(conn).await;
            ws.send(Message::binary(vec![0, 80, 0])).await.unwrap();
            ws.send(Message::binary(vec![1, 80, 0])).await.unwrap();
            ws.send(Message::binary(b"\0some data".to_vec()))
                .await
                .unwrap();
            // dropped without a close frame: the agent went away
        });
        let (mut local, theirs) = tokio::io::duplex(1 << 16);
        let err = ApiClient::new(&socket)
            .port_forward("default", "p", 80, theirs)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Lost {
                    what: "port-forward",
                    ..
                }
            ),
            "{err}"
        );
        let mut got = Vec::new();
        local.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"some data");
        agent.await.unwrap();
    }

    #[test]
    fn session_status_exit_codes() {
        assert_eq!(
            session_status(br#"{"status":"Success"}"#, "exec").unwrap(),
            0
        );
        let three = br#"{"status":"Failure","reason":"NonZeroExitCode","message":"command terminated with non-zero exit code: error executing command [sh], exit code 3","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(session_status(three, "exec").unwrap(), 3);
        let internal = br#"{"status":"Failure","reason":"InternalError","message":"Internal error occurred: boom"}"#;
        assert_eq!(
            session_status(internal, "exec").unwrap_err().to_string(),
            "Internal error occurred: boom"
        );
        assert_eq!(
            session_status(b"", "exec").unwrap_err().to_string(),
            "the exec session ended without a status"
        );
    }
}
