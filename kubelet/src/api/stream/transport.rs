//! The transports of a streaming session (exec, attach): a session sees its client as a
//! [`Transport`] — a queue of `(channel, data)` to send on the channels of [`super::channel`]
//! (stdout, stderr, the error channel), and the client's [`Input`] — whether the client speaks
//! WebSocket ([`websocket`]) or SPDY/3.1 (`super::spdy`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel::{self, Inbound, Protocol};
use super::{spawn_writer, Activity};

/// What the client sends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Input {
    /// Data for the command's standard input.
    Stdin(Vec<u8>),
    /// The client closed standard input.
    StdinClosed,
    /// Bytes of the resize stream (a stream of `TerminalSize` JSON values).
    Resize(Vec<u8>),
}

/// A session's client, whatever it speaks.
#[derive(Debug)]
pub(super) struct Transport {
    /// `(channel, data)` for the client ([`channel::STDOUT`], [`channel::STDERR`],
    /// [`channel::ERROR`]; an empty message is WebSocket's "established" signal, which SPDY
    /// drops). When every sender is gone the transport closes normally.
    pub out: mpsc::Sender<(u8, Vec<u8>)>,
    /// The task writing `out`: it ends once everything queued is sent and the client closed.
    pub writer: JoinHandle<()>,
    /// The client's input: ends when the client goes away, breaks the protocol or idles out.
    pub input: mpsc::Receiver<Input>,
    /// The task reading the client (aborted when the session ends).
    pub reader: JoinHandle<()>,
    /// The form of the final status on the error channel ([`Protocol::status_errors`]: a
    /// `metav1.Status`, else text).
    pub status: Protocol,
}

impl Transport {
    /// Upstream's "the session is up" signal: an empty message on the lowest output channel
    /// the client asked for (the error channel when neither; SPDY drops it).
    pub async fn established(&self, stdout: bool, stderr: bool) {
        let first = if stdout {
            channel::STDOUT
        } else if stderr {
            channel::STDERR
        } else {
            channel::ERROR
        };
        let _ = self.out.send((first, Vec::new())).await;
    }
}

/// A WebSocket client under `protocol`, closed after `idle` with no message either way.
pub(super) fn websocket<S>(ws: WebSocketStream<S>, protocol: Protocol, idle: Duration) -> Transport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, source) = ws.split();
    let activity = Activity::new();
    let (out, writer) = spawn_writer(sink, protocol, activity.clone());
    let (in_tx, input) = mpsc::channel(8);
    let reader = tokio::spawn(websocket_input(source, protocol, in_tx, activity, idle));
    Transport {
        out,
        writer,
        input,
        reader,
        status: protocol,
    }
}

/// Reads the client's messages until it closes, errs, breaks the protocol or stays idle.
async fn websocket_input<S>(
    mut source: futures::stream::SplitStream<WebSocketStream<S>>,
    protocol: Protocol,
    input: mpsc::Sender<Input>,
    activity: Activity,
    idle: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let deadline = activity.last() + idle;
        let next = match tokio::time::timeout_at(deadline.into(), source.next()).await {
            Err(_) if activity.last() + idle <= Instant::now() => {
                tracing::info!("stream: closing a session idle for {idle:?}");
                return;
            }
            Err(_) => continue,
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(m))) => m,
        };
        activity.touch();
        let data = match &next {
            Message::Binary(b) => &b[..],
            Message::Text(t) => t.as_bytes(),
            Message::Close(_) => return,
            _ => continue,
        };
        let event = match channel::decode(protocol, data) {
            Ok(Inbound::Data {
                channel: channel::STDIN,
                data,
            }) => Input::Stdin(data),
            Ok(Inbound::Data {
                channel: channel::RESIZE,
                data,
            }) => Input::Resize(data),
            Ok(Inbound::Close {
                channel: channel::STDIN,
            }) => Input::StdinClosed,
            Ok(_) => continue,
            Err(e @ (channel::DemuxError::BadClose(_) | channel::DemuxError::TooLarge(_))) => {
                tracing::debug!(error = %e, "stream: closing the session");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "stream: a message skipped");
                continue;
            }
        };
        if input.send(event).await.is_err() {
            return;
        }
    }
}
