//! `/portForward/{ns}/{pod}[/{uid}]` over WebSocket, as upstream's kubelet
//! (`pkg/kubelet/cri/streaming/portforward/websocket.go`): the query names the ports (`port`,
//! repeated or comma-separated, 1-65535); each port gets two channels, data (`2*i`) and error
//! (`2*i+1`), each opened by the server with the port number in two little-endian bytes. The
//! data channel is copied to and from a TCP connection to `localhost:<port>` in the pod's
//! network namespace; a connection that cannot be made, or fails, writes upstream's
//! `error forwarding port <p> to pod <pod>, uid <uid>: <cause>` on the error channel. When every
//! port's connection has ended, the socket closes. Subprotocols: `v4.channel.k8s.io`,
//! `v4.base64.channel.k8s.io`, or none (binary).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel::{self, Inbound, Protocol};
use super::{spawn_writer, ws_message, Activity};
use crate::api::ApiError;

/// The subprotocols of port-forward over WebSocket (upstream's `v4.` + the channel protocols).
pub const PORT_FORWARD_PROTOCOLS: [Protocol; 2] = [Protocol::V4, Protocol::V4Base64];

/// Each read of the pod's side takes at most this much (one message): twice upstream's 32 KiB
/// `io.Copy` buffer, as SPDY's [`kubenode_spdy::COPY_CHUNK`].
const COPY_CHUNK: usize = kubenode_spdy::COPY_CHUNK;

/// At most this many ports in one request.
pub const MAX_PORTS: usize = 64;

/// Parses the `port` query parameters as upstream's `NewV4Options`.
pub fn ports(query: &str) -> Result<Vec<u16>, ApiError> {
    let values: Vec<String> = super::form_urlencoded(query)
        .into_iter()
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| v)
        .collect();
    if values.is_empty() {
        return Err(ApiError::BadRequest(
            "query parameter \"port\" is required".into(),
        ));
    }
    let mut out = Vec::new();
    for v in &values {
        if v.is_empty() {
            return Err(ApiError::BadRequest(
                "query parameter \"port\" cannot be empty".into(),
            ));
        }
        for p in v.split(',') {
            let port: u16 = p.parse().map_err(|e| {
                ApiError::BadRequest(format!("unable to parse {v:?} as a port: {e}"))
            })?;
            if port < 1 {
                return Err(ApiError::BadRequest(format!("port {v:?} must be > 0")));
            }
            out.push(port);
        }
    }
    if out.len() > MAX_PORTS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_PORTS} ports can be forwarded at once"
        )));
    }
    Ok(out)
}

/// Connects to `localhost:port` inside `netns` (`None`: the host's, for a host-network pod):
/// the socket is made on a short-lived thread that enters the namespace, and keeps it.
pub(super) async fn connect(
    netns: Option<PathBuf>,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // a thread of its own: one that changed its namespace must not serve other work
    std::thread::spawn(move || {
        let made = (|| {
            if let Some(ns) = netns {
                let file = std::fs::File::open(&ns)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
            }
            let s = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(10),
            )?;
            // as Go's net.Dial in upstream's runtime: no Nagle delay on what the client sends
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })();
        let _ = tx.send(made);
    });
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread ended"))??;
    tokio::net::TcpStream::from_std(s)
}

/// Runs one port-forward session: `pod` and `uid` name the pod in error messages.
pub(super) async fn run<S>(
    ws: WebSocketStream<S>,
    protocol: Protocol,
    ports: Vec<u16>,
    netns: Option<PathBuf>,
    pod: String,
    uid: String,
    idle: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut source) = ws.split();
    let activity = Activity::new();
    let (out_tx, writer) = spawn_writer::<_, Message>(sink, protocol, activity.clone());
    let mut to_pod = Vec::new();
    let mut forwards = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        let prefix = port.to_le_bytes();
        let _ = out_tx.send(ws_message(protocol, data_ch, &prefix)).await;
        let _ = out_tx.send(ws_message(protocol, err_ch, &prefix)).await;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        to_pod.push(tx);
        let out = out_tx.clone();
        let netns = netns.clone();
        let (pod, uid) = (pod.clone(), uid.clone());
        forwards.push(tokio::spawn(async move {
            let fail = |e: std::io::Error| {
                let text = format!("error forwarding port {port} to pod {pod}, uid {uid}: {e}");
                ws_message(protocol, err_ch, text.as_bytes())
            };
            let conn = match connect(netns, port).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = out.send(fail(e)).await;
                    return;
                }
            };
            let (mut r, mut w) = conn.into_split();
            let upstream = async {
                while let Some(data) = rx.recv().await {
                    w.write_all(&data).await?;
                }
                w.shutdown().await
            };
            let downstream = async {
                let mut buf = BytesMut::new();
                loop {
                    let msg = if protocol.is_base64() {
                        buf.resize(COPY_CHUNK, 0);
                        let n = r.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        ws_message(protocol, data_ch, &buf[..n])
                    } else {
                        // the pod's bytes land in their message, behind the channel byte:
                        // not copied again on their way to the WebSocket
                        buf.reserve(1 + COPY_CHUNK);
                        buf.put_u8(data_ch);
                        let n = r.read_buf(&mut (&mut buf).limit(COPY_CHUNK)).await?;
                        if n == 0 {
                            return Ok(());
                        }
                        Message::Binary(buf.split().freeze())
                    };
                    if out.send(msg).await.is_err() {
                        return Ok(());
                    }
                }
            };
            // the pod's side ending ends the forward (upstream's copy returns)
            let result = tokio::select! {
                r = downstream => r,
                r = async { upstream.await?; futures::future::pending::<std::io::Result<()>>().await } => r,
            };
            if let Err(e) = result {
                let _ = out.send(fail(e)).await;
            }
        }));
    }
    drop(out_tx);
    let inbound = async {
        loop {
            let deadline = activity.last() + idle;
            let msg = match tokio::time::timeout_at(deadline.into(), source.next()).await {
                Err(_) if activity.last() + idle <= Instant::now() => return,
                Err(_) => continue,
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(m))) => m,
            };
            activity.touch();
            let data = match &msg {
                Message::Binary(b) => &b[..],
                Message::Text(t) => t.as_bytes(),
                Message::Close(_) => return,
                _ => continue,
            };
            match channel::decode(protocol, data) {
                Ok(Inbound::Data { channel, data }) if channel % 2 == 0 => {
                    if let Some(tx) = to_pod.get(usize::from(channel / 2)) {
                        let _ = tx.send(data).await;
                    }
                }
                Ok(_) => {}
                Err(channel::DemuxError::TooLarge(_)) => return,
                Err(e) => tracing::debug!(error = %e, "port-forward: a message skipped"),
            }
        }
    };
    let all = futures::future::join_all(forwards.iter_mut());
    tokio::select! {
        _ = all => {}
        _ = inbound => {}
    }
    for f in &forwards {
        f.abort();
    }
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_as_upstream() {
        assert_eq!(ports("port=8080&port=80,443"), Ok(vec![8080, 80, 443]));
        assert_eq!(
            ports(""),
            Err(ApiError::BadRequest(
                "query parameter \"port\" is required".into()
            ))
        );
        assert_eq!(
            ports("port="),
            Err(ApiError::BadRequest(
                "query parameter \"port\" cannot be empty".into()
            ))
        );
        assert!(ports("port=0").is_err());
        assert!(ports("port=70000").is_err());
        assert!(ports("port=x").is_err());
    }
}
