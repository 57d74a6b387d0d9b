//! `pods/<name>/exec`, `pods/<name>/attach` and `pods/<name>/portforward` as kube-apiserver
//! (1.30 and later) serves them: the pod's node is looked up as for `pods/log`
//! ([`super::podlogs`]), the `PodExecOptions` of the query become the kubelet's (`command`
//! repeated, `input`/`output`/`error`/`tty` = `1`; `ports` become `port`), and the kubelet is
//! reached at `https://<node>:<port>/{exec,attach}/<ns>/<pod>/<container>` or
//! `/portForward/<ns>/<pod>` with the API server's kubelet client certificate. As upstream, the
//! API server speaks SPDY/3.1 to the kubelet:
//!
//! - **exec/attach from a WebSocket client** (kubectl's default, `v5.channel.k8s.io`): upstream's
//!   `StreamTranslatorProxy` — the WebSocket is accepted, a SPDY/3.1 connection is made to the
//!   kubelet (`X-Stream-Protocol-Version` v4 down to v1) with one stream per `streamType`, the
//!   channels are copied to and from the streams (v5's close signal half-closes stdin), and the
//!   kubelet's v4 Status becomes the WebSocket's final Status as the translator writes it
//!   (`NonZeroExitCode` with the `ExitCode` cause; an error as `InternalError`).
//! - **port-forward from a WebSocket client asking for `SPDY/3.1+portforward.k8s.io`**
//!   (kubectl's default): upstream's `StreamTunnel` — the kubelet is asked for a SPDY/3.1
//!   upgrade (`portforward.k8s.io`); once it answers 101 the WebSocket is accepted with that
//!   subprotocol and its binary messages carry the SPDY bytes both ways.
//! - **a SPDY/3.1 upgrade** (kubectl with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` or
//!   `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`), or another WebSocket port-forward: proxied as an
//!   upgrade (upstream's `UpgradeAwareHandler`): the kubelet's answer goes back and the two
//!   upgraded connections are copied both ways.
//!
//! A request that is not an upgrade is 400 `Upgrade request required`, as upstream's.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::Response;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::handler::Shared;
use super::podlogs::{kubelet_target, KubeletClient};
use super::status::ApiError;
use super::Body;

/// The upgrade headers a proxied upgrade passes to the kubelet.
const REQUEST_HEADERS: [&str; 4] = [
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "X-Stream-Protocol-Version",
];

/// The headers of the kubelet's answer a proxied upgrade passes back.
const RESPONSE_HEADERS: [&str; 7] = [
    "Connection",
    "Upgrade",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
    "Content-Type",
    "X-Stream-Protocol-Version",
    "X-Accepted-Stream-Protocol-Versions",
];

/// kubectl's WebSocket subprotocol for port-forward tunnelled SPDY (upstream's
/// `WebsocketsSPDYTunnelingPortForwardV1`).
pub const TUNNELING_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The SPDY stream protocols the translator offers the kubelet (upstream's SPDY executor).
const SPDY_EXEC_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The WebSocket channel protocols the translator accepts from a client, in its preference.
const WS_PROTOCOLS: [&str; 3] = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];

fn error_reply(e: ApiError) -> Response<Body> {
    Response::builder()
        .status(e.code)
        .header("Content-Type", "application/json")
        .body(
            http_body_util::Full::new(Bytes::from(
                serde_json::to_vec(&e.to_status()).unwrap_or_default(),
            ))
            .boxed_unsync(),
        )
        .expect("valid response")
}

/// `key=value` pairs of a raw query, decoded (`+` is a space), repeated keys kept.
fn query_pairs(raw: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    match b
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

fn escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The kubelet's query for `PodExecOptions`/`PodAttachOptions` (upstream's `streamParams`).
fn kubelet_query(pairs: &[(String, String)]) -> String {
    let on = |v: &str| matches!(v, "true" | "1");
    let mut q = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "stdin" if on(v) => q.push("input=1".to_string()),
            "stdout" if on(v) => q.push("output=1".to_string()),
            "stderr" if on(v) => q.push("error=1".to_string()),
            "tty" if on(v) => q.push("tty=1".to_string()),
            "command" => q.push(format!("command={}", escape(v))),
            _ => {}
        }
    }
    q.join("&")
}

/// A streaming request to the API server: the pod, the subresource, the raw query and the
/// headers.
#[derive(Debug, Clone, Copy)]
pub struct StreamRequest<'a> {
    /// The pod's namespace.
    pub ns: &'a str,
    /// The pod's name.
    pub name: &'a str,
    /// `exec`, `attach` or `portforward`.
    pub sub: &'a str,
    /// The query, still escaped (repeated keys kept).
    pub raw_query: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
}

/// What the client asked to upgrade to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    WebSocket,
    Spdy,
}

fn upgrade_of(headers: &HeaderMap) -> Option<Upgrade> {
    let v = headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())?
        .to_ascii_lowercase();
    if v == "websocket" {
        Some(Upgrade::WebSocket)
    } else if v.contains("spdy/3.1") {
        Some(Upgrade::Spdy)
    } else {
        None
    }
}

/// The client's `Sec-WebSocket-Protocol` offers, in order.
fn ws_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The 101 accepting a WebSocket with `protocol`, or 400 without a valid key.
#[allow(clippy::result_large_err, reason = "the error is the response to send")]
fn accept_websocket(headers: &HeaderMap, protocol: &str) -> Result<Response<Body>, Response<Body>> {
    let key = headers
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|_| {
            headers
                .get(hyper::header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13")
        })
        .ok_or_else(|| error_reply(ApiError::bad_request("invalid WebSocket handshake")))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(Response::builder()
        .status(hyper::StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(hyper::header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Empty::new().boxed_unsync())
        .expect("valid response"))
}

/// Serves `pods/<name>/<sub>` (`exec`, `attach` or `portforward`) through the node's kubelet:
/// `raw_query` is the request's, `headers` its headers and `upgrade` its connection once
/// upgraded.
pub async fn proxy(
    shared: &Shared,
    client: &KubeletClient,
    req: StreamRequest<'_>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<Body> {
    let StreamRequest {
        ns,
        name,
        sub,
        raw_query,
        headers,
    } = req;
    let (Some(upgrade), Some(kind)) = (upgrade, upgrade_of(headers)) else {
        return error_reply(ApiError::bad_request("Upgrade request required"));
    };
    let pairs = query_pairs(raw_query);
    let mut query = super::handler::Query::new();
    if let Some((_, c)) = pairs.iter().find(|(k, _)| k == "container") {
        query.insert("container".into(), c.clone());
    }
    let (host, container) = match kubelet_target(shared, ns, name, &query) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return error_reply(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )))
        }
        Err(e) => return error_reply(e),
    };
    if sub == "portforward" {
        // upstream's PodPortForwardOptions: `ports`, passed on as the kubelet's `port`
        let ports: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "ports")
            .map(|(_, v)| format!("port={}", escape(v)))
            .collect();
        let path = format!("/portForward/{ns}/{name}?{}", ports.join("&"));
        if kind == Upgrade::WebSocket
            && ws_protocols(headers)
                .iter()
                .any(|p| p == TUNNELING_PROTOCOL)
        {
            return tunnel(client, &host, &path, headers, upgrade).await;
        }
        return relay(client, &host, &path, headers, kind, upgrade).await;
    }
    let path = format!("/{sub}/{ns}/{name}/{container}?{}", kubelet_query(&pairs));
    match kind {
        Upgrade::Spdy => relay(client, &host, &path, headers, kind, upgrade).await,
        Upgrade::WebSocket => translate(client, &host, &path, &pairs, headers, upgrade),
    }
}

/// Proxies the upgrade: the kubelet's answer back, then the connections copied both ways.
async fn relay(
    client: &KubeletClient,
    host: &str,
    path: &str,
    headers: &HeaderMap,
    kind: Upgrade,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let mut send: Vec<(String, String)> = vec![(
        "Upgrade".into(),
        match kind {
            Upgrade::WebSocket => "websocket".into(),
            Upgrade::Spdy => "SPDY/3.1".into(),
        },
    )];
    for h in REQUEST_HEADERS {
        for v in headers.get_all(h) {
            if let Ok(v) = v.to_str() {
                send.push((h.to_string(), v.to_string()));
            }
        }
    }
    match connect(client, host, path, &send).await {
        Ok((resp, None)) => passthrough(resp),
        Ok((resp, Some(kubelet))) => {
            let answer = passthrough(resp);
            tokio::spawn(async move {
                let (Ok(kubelet), Ok(user)) = (kubelet.await, upgrade.await) else {
                    return;
                };
                let mut kubelet = TokioIo::new(kubelet);
                let mut user = TokioIo::new(user);
                let _ = tokio::io::copy_bidirectional(&mut user, &mut kubelet).await;
            });
            answer
        }
        Err(e) => dial_error(e),
    }
}

fn dial_error(e: Box<dyn std::error::Error + Send + Sync>) -> Response<Body> {
    error_reply(ApiError {
        code: 500,
        reason: "InternalError",
        message: format!("error dialing backend: {e}"),
        details: None,
    })
}

/// The kubelet's answer as the client's: its status, the upgrade headers, its body.
fn passthrough(resp: KubeletAnswer) -> Response<Body> {
    let mut out = Response::builder().status(resp.status);
    for h in RESPONSE_HEADERS {
        for v in resp.headers.get_all(h) {
            out = out.header(h, v);
        }
    }
    if resp.status != hyper::StatusCode::SWITCHING_PROTOCOLS
        && !resp.headers.contains_key(hyper::header::CONTENT_TYPE)
    {
        out = out.header(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    out.body(http_body_util::Full::new(resp.body).boxed_unsync())
        .expect("valid response")
}

/// Port-forward's `StreamTunnel`: a SPDY upgrade to the kubelet; once it switched, the
/// WebSocket is accepted and its binary messages carry the SPDY bytes.
async fn tunnel(
    client: &KubeletClient,
    host: &str,
    path: &str,
    headers: &HeaderMap,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let send = vec![
        ("Upgrade".to_string(), "SPDY/3.1".to_string()),
        (
            "X-Stream-Protocol-Version".to_string(),
            "portforward.k8s.io".to_string(),
        ),
    ];
    let kubelet = match connect(client, host, path, &send).await {
        Ok((_, Some(k))) => k,
        Ok((resp, None)) => return passthrough(resp),
        Err(e) => return dial_error(e),
    };
    let answer = match accept_websocket(headers, TUNNELING_PROTOCOL) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    tokio::spawn(async move {
        let (Ok(kubelet), Ok(user)) = (kubelet.await, upgrade.await) else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(user),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut ws_tx, mut ws_rx) = ws.split();
        let (mut k_rd, mut k_wr) = tokio::io::split(TokioIo::new(kubelet));
        let up = async {
            while let Some(Ok(msg)) = ws_rx.next().await {
                match msg {
                    Message::Binary(b) if k_wr.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = k_wr.shutdown().await;
        };
        let down = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match k_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if ws_tx
                            .send(Message::binary(buf[..n].to_vec()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            let _ = ws_tx.send(normal_close()).await;
            let _ = ws_tx.close().await;
        };
        tokio::join!(up, down);
    });
    answer
}

/// Exec and attach's `StreamTranslatorProxy`: the WebSocket is accepted, the session runs
/// over SPDY to the kubelet.
fn translate(
    client: &KubeletClient,
    host: &str,
    path: &str,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let offered = ws_protocols(headers);
    let Some(protocol) = offered
        .iter()
        .find_map(|p| WS_PROTOCOLS.iter().find(|w| **w == p.as_str()))
        .copied()
    else {
        return error_reply(ApiError::bad_request(format!(
            "requested protocol(s) are not supported: {offered:?}; supports {WS_PROTOCOLS:?}"
        )));
    };
    let answer = match accept_websocket(headers, protocol) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let on = |k: &str| {
        pairs
            .iter()
            .any(|(n, v)| n == k && matches!(v.as_str(), "true" | "1"))
    };
    let tty = on("tty");
    let opts = Streams {
        stdin: on("stdin"),
        stdout: on("stdout"),
        stderr: on("stderr") && !tty,
        tty,
    };
    let (client, host, path) = (client.clone(), host.to_string(), path.to_string());
    tokio::spawn(async move {
        let Ok(user) = upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(user),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        translate_session(ws, protocol, opts, &client, &host, &path).await;
    });
    answer
}

/// The streams a translated session asked for.
#[derive(Debug, Clone, Copy)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

type UserWs = tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Runs one translated session to its end: the final Status on the error channel, then the
/// WebSocket closes.
async fn translate_session(
    ws: UserWs,
    protocol: &'static str,
    opts: Streams,
    client: &KubeletClient,
    host: &str,
    path: &str,
) {
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    let writer = tokio::spawn(async move {
        while let Some((ch, data)) = out_rx.recv().await {
            let mut m = Vec::with_capacity(1 + data.len());
            m.push(ch);
            m.extend_from_slice(&data);
            if ws_tx.send(Message::binary(m)).await.is_err() {
                return;
            }
        }
        // a normal closure: client-go's readers see EOF (any other close is an error)
        let _ = ws_tx.send(normal_close()).await;
        let _ = ws_tx.close().await;
    });
    // the WebSocket server's "established" signal: an empty message on the lowest output
    let first = if opts.stdout {
        1
    } else if opts.stderr {
        2
    } else {
        3
    };
    let _ = out_tx.send((first, Vec::new())).await;
    let status = match spdy_session(&mut ws_rx, &out_tx, opts, client, host, path).await {
        Ok(s) => s,
        Err(e) => Err(format!("{e}")),
    };
    let _ = out_tx.send((3, final_status(protocol, status))).await;
    drop(out_tx);
    let _ = writer.await;
}

/// A close frame with status 1000 (normal closure).
fn normal_close() -> Message {
    Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }))
}

/// The outcome of the kubelet's session as upstream's v4 error decoder reads it: `Ok(None)`
/// success, `Ok(Some(code))` a non-zero exit code, `Err` any other error.
type Outcome = Result<Option<u32>, String>;

/// The SPDY half of a translated session; `Err` when the kubelet could not be reached.
async fn spdy_session(
    ws_rx: &mut futures::stream::SplitStream<UserWs>,
    out: &tokio::sync::mpsc::Sender<(u8, Vec<u8>)>,
    opts: Streams,
    client: &KubeletClient,
    host: &str,
    path: &str,
) -> Result<Outcome, Box<dyn std::error::Error + Send + Sync>> {
    let mut send = vec![("Upgrade".to_string(), "SPDY/3.1".to_string())];
    for p in SPDY_EXEC_PROTOCOLS {
        send.push(("X-Stream-Protocol-Version".into(), p.into()));
    }
    let (resp, upgrading) = connect(client, host, path, &send).await?;
    let Some(upgrading) = upgrading else {
        return Err(format!(
            "unable to upgrade connection: {}",
            String::from_utf8_lossy(&resp.body).trim()
        )
        .into());
    };
    let kubelet = TokioIo::new(upgrading.await?);
    let (conn, _) = kubenode_spdy::Connection::start(
        kubelet,
        kubenode_spdy::Role::Client,
        kubenode_spdy::Config::default(),
    );
    let open = |t: &'static str| {
        let conn = conn.clone();
        async move {
            conn.open_stream(vec![("streamtype".into(), t.into())])
                .await
        }
    };
    // upstream's client: error, then stdin, stdout, stderr, then resize
    let error = open("error").await?;
    let stdin = if opts.stdin {
        Some(open("stdin").await?)
    } else {
        None
    };
    let stdout = if opts.stdout {
        Some(open("stdout").await?)
    } else {
        None
    };
    let stderr = if opts.stderr {
        Some(open("stderr").await?)
    } else {
        None
    };
    let resize = if opts.tty {
        Some(open("resize").await?)
    } else {
        None
    };
    let stdin_w = stdin.map(|s| s.split().1);
    let resize_w = resize.map(|s| s.split().1);
    let copy = |s: Option<kubenode_spdy::Stream>, ch: u8| {
        let out = out.clone();
        tokio::spawn(async move {
            let Some(s) = s else { return };
            let (mut r, _) = s.split();
            while let Some(d) = r.read().await {
                if out.send((ch, d.into())).await.is_err() {
                    return;
                }
            }
        })
    };
    let outputs = [copy(stdout, 1), copy(stderr, 2)];
    let (mut error_r, _) = error.split();
    let error_msg = tokio::spawn(async move { error_r.read_to_end(64 * 1024).await });
    // the client's input until the outputs and the error stream are done
    let input = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            match data.as_slice() {
                [0, rest @ ..] => {
                    if let Some(w) = &stdin_w {
                        let _ = w.write(rest).await;
                    }
                }
                [4, rest @ ..] => {
                    if let Some(w) = &resize_w {
                        let _ = w.write(rest).await;
                    }
                }
                [255, 0] if protocol_closes(&data) => {
                    if let Some(w) = &stdin_w {
                        w.close().await;
                    }
                }
                _ => {}
            }
        }
    };
    let done = async {
        for o in outputs {
            let _ = o.await;
        }
        error_msg.await.unwrap_or_default()
    };
    tokio::pin!(done);
    let message = tokio::select! {
        m = &mut done => Some(m),
        _ = input => None,
    };
    let Some(message) = message else {
        // the client went away: the kubelet's session ends with the connection
        conn.close().await;
        return Err("the client closed the connection".into());
    };
    conn.close().await;
    Ok(decode_v4(&message))
}

/// Whether a `[255, 0]` message is v5's close signal (only v5 clients send it).
fn protocol_closes(data: &[u8]) -> bool {
    data == [255, 0]
}

/// Upstream's `errorDecoderV4`.
fn decode_v4(message: &[u8]) -> Outcome {
    if message.is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(message).map_err(|e| {
        format!(
            "error stream protocol error: {e} in {:?}",
            String::from_utf8_lossy(message)
        )
    })?;
    match v["status"].as_str() {
        Some("Success") => Ok(None),
        Some("Failure") if v["reason"] == "NonZeroExitCode" => {
            let causes = v["details"]["causes"]
                .as_array()
                .ok_or("error stream protocol error: details must be set")?;
            let cause = causes
                .iter()
                .find(|c| c["reason"] == "ExitCode")
                .ok_or("error stream protocol error: no ExitCode cause given")?;
            let m = cause["message"].as_str().unwrap_or("");
            m.parse::<u8>()
                .map(|c| Some(u32::from(c)))
                .map_err(|_| format!("error stream protocol error: invalid exit code value {m:?}"))
        }
        Some("Failure") => Err(v["message"].as_str().unwrap_or("").to_string()),
        _ => Err("error stream protocol error: unknown error".into()),
    }
}

/// The translator's final message on the error channel (`writeStatus`): under v4 and v5 a
/// `metav1.Status`; under `channel.k8s.io` the failure's text, nothing on success.
fn final_status(protocol: &str, outcome: Outcome) -> Vec<u8> {
    let status = match &outcome {
        Ok(None) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(Some(code)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: command terminated with exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": e}]},
            "code": 500,
        }),
    };
    if protocol == "channel.k8s.io" {
        return match outcome {
            Ok(None) => Vec::new(),
            _ => status["message"].as_str().unwrap_or("").as_bytes().to_vec(),
        };
    }
    serde_json::to_vec(&status).unwrap_or_default()
}

/// The kubelet's answer to an upgrade request.
struct KubeletAnswer {
    status: hyper::StatusCode,
    headers: HeaderMap,
    /// The body of a refusal (bounded), empty for a 101.
    body: Bytes,
}

type Upgrading = hyper::upgrade::OnUpgrade;

/// Sends an upgrade request (`Connection: Upgrade` and `send`) to the kubelet: its answer,
/// and its connection to be upgraded when it answered 101.
async fn connect(
    client: &KubeletClient,
    host: &str,
    path: &str,
    send: &[(String, String)],
) -> Result<(KubeletAnswer, Option<Upgrading>), Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tokio::net::TcpStream::connect(host).await?;
    let ip = host
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(host);
    let tls = tokio_rustls::TlsConnector::from(client.tls.clone())
        .connect(ServerName::try_from(ip.to_string())?, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // upstream's SPDY executor POSTs; a proxied WebSocket keeps its GET
    let websocket = send
        .iter()
        .any(|(n, v)| n == "Upgrade" && v.eq_ignore_ascii_case("websocket"));
    let mut req = hyper::Request::builder()
        .method(if websocket { "GET" } else { "POST" })
        .uri(path)
        .header("Host", host)
        .header("User-Agent", "kn-apiserver")
        .header(hyper::header::CONNECTION, "Upgrade");
    for (n, v) in send {
        req = req.header(n.as_str(), v.as_str());
    }
    let mut resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if status == hyper::StatusCode::SWITCHING_PROTOCOLS {
        let upgrading = hyper::upgrade::on(&mut resp);
        let answer = KubeletAnswer {
            status,
            headers,
            body: Bytes::new(),
        };
        return Ok((answer, Some(upgrading)));
    }
    // the kubelet's refusal, bounded
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((
        KubeletAnswer {
            status,
            headers,
            body,
        },
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_become_the_kubelets_query() {
        let pairs = query_pairs(
            "command=sh&command=-c&command=exit+3&container=main&stdin=true&stdout=true&stderr=false&tty=false",
        );
        assert_eq!(
            kubelet_query(&pairs),
            "command=sh&command=-c&command=exit%203&input=1&output=1"
        );
    }

    #[test]
    fn the_kubelets_status_becomes_the_translators() {
        let three = br#"{"metadata":{},"status":"Failure","message":"x","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(decode_v4(three), Ok(Some(3)));
        assert_eq!(
            decode_v4(br#"{"metadata":{},"status":"Success"}"#),
            Ok(None)
        );
        assert_eq!(decode_v4(b""), Ok(None));
        assert!(decode_v4(b"{").is_err());
        let v: serde_json::Value =
            serde_json::from_slice(&final_status("v5.channel.k8s.io", Ok(Some(3)))).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(
            v["message"],
            "command terminated with non-zero exit code: command terminated with exit code 3"
        );
        let v: serde_json::Value =
            serde_json::from_slice(&final_status("v4.channel.k8s.io", Err("boom".into()))).unwrap();
        assert_eq!(v["reason"], "InternalError");
        assert!(final_status("channel.k8s.io", Ok(None)).is_empty());
    }
}
