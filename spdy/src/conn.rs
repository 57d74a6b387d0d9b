//! A SPDY/3.1 connection over an upgraded byte stream, as moby/spdystream runs one for
//! Kubernetes: streams opened by either side ([`Connection::open_stream`], or received on the
//! [`Incoming`] queue and answered with an empty SYN_REPLY at once, as upstream's
//! `newSpdyStream`), their data in order, half-close by FIN, RST_STREAM, PING echo, GOAWAY.
//! Like spdystream, no flow control is enforced or sent (WINDOW_UPDATE and SETTINGS are read
//! and ignored): kubectl and the API server never send WINDOW_UPDATE. Bad input from the peer
//! is answered as the spec says: RST_STREAM for one stream's error, GOAWAY then close for the
//! session's ([`crate::FrameError`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::frame::{
    frame_len, goaway, rst, Frame, FrameError, FrameReader, FrameWriter, Headers, FLAG_FIN,
    HEADER_LEN, MAX_FRAME,
};

/// Upstream's wait for the peer's SYN_REPLY (`createStreamResponseTimeout`).
pub const STREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// After [`Connection::close`], the peer's remaining input is read (and dropped) for at most
/// this long before the socket goes, so that closing does not reset what the peer still reads.
const LINGER: Duration = Duration::from_secs(5);

/// Limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The connection closes after this long with no frame in either direction.
    pub idle_timeout: Duration,
    /// At most this many streams open at once; more are refused (RST_STREAM REFUSED_STREAM).
    pub max_streams: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: Duration::from_secs(4 * 3600),
            max_streams: 1000,
        }
    }
}

/// Which end of the connection this is (client streams and pings are odd, server's even).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the upgrade request.
    Client,
    /// The side that answered it.
    Server,
}

/// The streams the peer opens, in order.
pub type Incoming = mpsc::Receiver<Stream>;

enum Cmd {
    Frame(Frame),
    Close,
}

#[derive(Default)]
struct Entry {
    data: Option<mpsc::Sender<Vec<u8>>>,
    reply: Option<oneshot::Sender<Result<(), u32>>>,
    local_fin: bool,
    remote_fin: bool,
}

struct State {
    streams: HashMap<u32, Entry>,
    next_id: u32,
    last_peer_id: u32,
    going_away: bool,
    activity: Instant,
}

struct Inner {
    role: Role,
    config: Config,
    out: mpsc::Sender<Cmd>,
    /// Held from a stream id's allocation until its SYN_STREAM is queued: ids go out in order
    /// (the peer refuses an id lower than one it saw).
    opening: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    closed: watch::Sender<bool>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn touch(&self) {
        self.lock().activity = Instant::now();
    }
    /// Forgets a stream once both halves ended.
    fn settle(&self, id: u32) {
        let mut st = self.lock();
        if st
            .streams
            .get(&id)
            .is_some_and(|e| e.local_fin && e.remote_fin)
        {
            st.streams.remove(&id);
        }
    }
}

/// A connection: cheap to clone; it ends when the peer goes, when it idles out, on a session
/// error, or on [`Connection::close`].
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.inner.role)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Runs a connection over `io` (the upgraded socket) on two tasks: the handle, and the
    /// streams the peer opens.
    pub fn start<T>(io: T, role: Role, config: Config) -> (Connection, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (incoming_tx, incoming_rx) = mpsc::channel(64);
        let (closed, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            role,
            config,
            out: out_tx,
            opening: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_id: if role == Role::Client { 1 } else { 2 },
                last_peer_id: 0,
                going_away: false,
                activity: Instant::now(),
            }),
            closed,
        });
        tokio::spawn(write_loop(wr, out_rx, inner.clone()));
        tokio::spawn(read_loop(rd, inner.clone(), incoming_tx));
        (Connection { inner }, incoming_rx)
    }

    /// Opens a stream with `headers` and waits for the peer's SYN_REPLY (at most
    /// [`STREAM_REPLY_TIMEOUT`]).
    pub async fn open_stream(&self, headers: Headers) -> std::io::Result<Stream> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (data_tx, data_rx) = mpsc::channel(16);
        let opening = self.inner.opening.lock().await;
        let id = {
            let mut st = self.inner.lock();
            if st.going_away || *self.inner.closed.borrow() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the SPDY connection is closing",
                ));
            }
            let id = st.next_id;
            if id > 0x7fff_ffff {
                return Err(std::io::Error::other("SPDY stream ids are exhausted"));
            }
            st.next_id += 2;
            st.streams.insert(
                id,
                Entry {
                    data: Some(data_tx),
                    reply: Some(reply_tx),
                    ..Entry::default()
                },
            );
            id
        };
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers.clone(),
        })
        .await?;
        drop(opening);
        match tokio::time::timeout(STREAM_REPLY_TIMEOUT, reply_rx).await {
            Ok(Ok(Ok(()))) => Ok(self.stream(id, headers, data_rx)),
            Ok(Ok(Err(status))) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                format!("stream {id} was reset (status {status})"),
            )),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the SPDY connection ended",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("timed out waiting for the reply to stream {id}"),
            )),
        }
    }

    fn stream(&self, id: u32, headers: Headers, data: mpsc::Receiver<Vec<u8>>) -> Stream {
        Stream {
            headers,
            reader: StreamReader { id, data },
            writer: StreamWriter {
                id,
                conn: self.clone(),
            },
        }
    }

    async fn send(&self, frame: Frame) -> std::io::Result<()> {
        self.inner.out.send(Cmd::Frame(frame)).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the SPDY connection ended")
        })
    }

    /// Sends GOAWAY (status OK) and closes the connection once what is queued is written.
    pub async fn close(&self) {
        let last = {
            let mut st = self.inner.lock();
            st.going_away = true;
            st.last_peer_id
        };
        let _ = self
            .inner
            .out
            .send(Cmd::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status: goaway::OK,
            }))
            .await;
        let _ = self.inner.out.send(Cmd::Close).await;
    }

    /// Resolves once the connection has ended (the peer went, it idled out or was closed).
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// A stream: the headers it was opened with, and its two halves.
#[derive(Debug)]
pub struct Stream {
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl Stream {
    /// The headers of its SYN_STREAM (names lowercase).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }
    /// The value of one header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::frame::header(&self.headers, name)
    }
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.reader.id
    }
    /// The writing half (cheap to clone).
    pub fn writer(&self) -> &StreamWriter {
        &self.writer
    }
    /// The reading and writing halves.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

/// What the peer sends on a stream.
#[derive(Debug)]
pub struct StreamReader {
    id: u32,
    data: mpsc::Receiver<Vec<u8>>,
}

impl StreamReader {
    /// The next chunk; `None` once the peer half-closed (FIN), reset the stream or the
    /// connection ended.
    pub async fn read(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.data.recv().await {
                Some(d) if d.is_empty() => continue,
                other => return other,
            }
        }
    }
    /// Everything until the end of the stream, at most `limit` bytes (the rest is dropped).
    pub async fn read_to_end(&mut self, limit: usize) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(d) = self.read().await {
            let room = limit.saturating_sub(all.len());
            all.extend_from_slice(&d[..d.len().min(room)]);
        }
        all
    }
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// The sending half of a stream: cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    id: u32,
    conn: Connection,
}

impl StreamWriter {
    fn check_open(&self) -> std::io::Result<()> {
        let st = self.conn.inner.lock();
        match st.streams.get(&self.id) {
            Some(e) if !e.local_fin => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                format!("SPDY stream {} is closed", self.id),
            )),
        }
    }

    /// Sends `data` (in frames of at most [`MAX_FRAME`] bytes).
    pub async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(MAX_FRAME) {
            self.check_open()?;
            self.conn
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: chunk.to_vec(),
                })
                .await?;
        }
        Ok(())
    }

    /// Half-closes the stream (an empty DATA frame with FIN); later closes do nothing.
    pub async fn close(&self) {
        {
            let mut st = self.conn.inner.lock();
            match st.streams.get_mut(&self.id) {
                Some(e) if !e.local_fin => e.local_fin = true,
                _ => return,
            }
        }
        let _ = self
            .conn
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Vec::new(),
            })
            .await;
        self.conn.inner.settle(self.id);
    }

    /// Resets the stream (RST_STREAM CANCEL).
    pub async fn reset(&self) {
        if self.conn.inner.lock().streams.remove(&self.id).is_none() {
            return;
        }
        let _ = self
            .conn
            .send(Frame::RstStream {
                stream_id: self.id,
                status: rst::CANCEL,
            })
            .await;
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

async fn write_loop<W: AsyncWrite>(
    mut wr: tokio::io::WriteHalf<W>,
    mut rx: mpsc::Receiver<Cmd>,
    inner: Arc<Inner>,
) {
    let mut writer = FrameWriter::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut closing = false;
    while !closing {
        let Some(first) = rx.recv().await else { break };
        let mut next = Some(first);
        // batch what is queued into one write
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Frame(f) => writer.encode(&f, &mut buf),
                Cmd::Close => {
                    closing = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            buf.clear();
            inner.touch();
        }
    }
    let _ = wr.shutdown().await;
    inner.lock().going_away = true;
    inner.closed.send_replace(true);
}

async fn read_loop<R: AsyncRead>(
    mut rd: tokio::io::ReadHalf<R>,
    inner: Arc<Inner>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut reader = FrameReader::new();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut start = 0usize;
    let mut closed = inner.closed.subscribe();
    let mut linger_until: Option<Instant> = None;
    let conn = Connection {
        inner: inner.clone(),
    };
    'outer: loop {
        // every whole frame in the buffer
        loop {
            let parsed = reader.parse(&buf[start..]);
            match parsed {
                Ok(None) => break,
                Ok(Some((frame, n))) => {
                    start += n;
                    if linger_until.is_none() && !dispatch(&conn, frame, &incoming).await {
                        break 'outer;
                    }
                }
                Err(FrameError::Stream {
                    stream_id,
                    status,
                    reason,
                }) => {
                    tracing::debug!(stream_id, status, %reason, "SPDY: resetting a stream");
                    let len = frame_len(&buf[start..]).ok().flatten().unwrap_or(0);
                    start += HEADER_LEN + len;
                    let _ = conn.send(Frame::RstStream { stream_id, status }).await;
                }
                Err(FrameError::Session { status, reason }) => {
                    tracing::debug!(status, %reason, "SPDY: closing the session");
                    let last = inner.lock().last_peer_id;
                    let _ = inner
                        .out
                        .send(Cmd::Frame(Frame::GoAway {
                            last_good_stream_id: last,
                            status,
                        }))
                        .await;
                    break 'outer;
                }
            }
        }
        // keep room for large reads (fewer system calls); move the unparsed tail down once
        // the parsed head is large
        if start > 0 && (start == buf.len() || start > 1024 * 1024) {
            buf.drain(..start);
            start = 0;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        let deadline = {
            let idle = inner.lock().activity + inner.config.idle_timeout;
            linger_until.map_or(idle, |l| l.min(idle))
        };
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => inner.touch(),
            },
            _ = tokio::time::sleep_until(deadline) => {
                if linger_until.is_some_and(|l| l <= Instant::now()) {
                    break;
                }
                if inner.lock().activity + inner.config.idle_timeout <= Instant::now() {
                    tracing::info!(
                        "SPDY: closing a connection idle for {:?}",
                        inner.config.idle_timeout
                    );
                    break;
                }
            }
            _ = closed.wait_for(|c| *c), if linger_until.is_none() => {
                linger_until = Some(Instant::now() + LINGER);
            }
        }
    }
    // the end: every stream's reader sees its end, the writer closes
    {
        let mut st = inner.lock();
        st.going_away = true;
        for e in st.streams.values_mut() {
            e.data = None;
            if let Some(r) = e.reply.take() {
                let _ = r.send(Err(rst::CANCEL));
            }
        }
        st.streams.clear();
    }
    drop(incoming);
    let _ = inner.out.send(Cmd::Close).await;
    inner.closed.send_replace(true);
}

/// Handles one frame from the peer; `false` ends the connection.
async fn dispatch(conn: &Connection, frame: Frame, incoming: &mpsc::Sender<Stream>) -> bool {
    let inner = &conn.inner;
    let peer_parity = if inner.role == Role::Server { 1 } else { 0 };
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            enum Verdict {
                Accept,
                Refuse(u32),
                Session(u32),
            }
            let verdict = {
                let mut st = inner.lock();
                if stream_id % 2 != peer_parity {
                    Verdict::Refuse(rst::PROTOCOL_ERROR)
                } else if stream_id <= st.last_peer_id {
                    // ids only grow: a session error
                    Verdict::Session(st.last_peer_id)
                } else {
                    st.last_peer_id = stream_id;
                    if st.going_away || st.streams.len() >= inner.config.max_streams {
                        Verdict::Refuse(rst::REFUSED_STREAM)
                    } else {
                        Verdict::Accept
                    }
                }
            };
            let refuse = match verdict {
                Verdict::Accept => None,
                Verdict::Refuse(status) => Some(status),
                Verdict::Session(last) => {
                    let _ = conn
                        .send(Frame::GoAway {
                            last_good_stream_id: last,
                            status: goaway::PROTOCOL_ERROR,
                        })
                        .await;
                    return false;
                }
            };
            if let Some(status) = refuse {
                let _ = conn.send(Frame::RstStream { stream_id, status }).await;
                return true;
            }
            let (data_tx, data_rx) = mpsc::channel(16);
            let remote_fin = flags & FLAG_FIN != 0;
            inner.lock().streams.insert(
                stream_id,
                Entry {
                    data: (!remote_fin).then_some(data_tx),
                    remote_fin,
                    ..Entry::default()
                },
            );
            let stream = conn.stream(stream_id, headers, data_rx);
            // the reply goes out before anything the handler writes on the stream
            let _ = conn
                .send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                })
                .await;
            if incoming.try_send(stream).is_err() {
                inner.lock().streams.remove(&stream_id);
                let _ = conn
                    .send(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    })
                    .await;
            }
        }
        Frame::SynReply {
            stream_id, flags, ..
        } => {
            let answer = {
                let mut st = inner.lock();
                match st.streams.get_mut(&stream_id) {
                    None => Some(rst::INVALID_STREAM),
                    Some(e) => match e.reply.take() {
                        None => Some(rst::STREAM_IN_USE),
                        Some(r) => {
                            let _ = r.send(Ok(()));
                            if flags & FLAG_FIN != 0 {
                                e.remote_fin = true;
                                e.data = None;
                            }
                            None
                        }
                    },
                }
            };
            if let Some(status) = answer {
                let _ = conn.send(Frame::RstStream { stream_id, status }).await;
            }
            inner.settle(stream_id);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let target = {
                let mut st = inner.lock();
                match st.streams.get_mut(&stream_id) {
                    None => Err(rst::INVALID_STREAM),
                    Some(e) if e.remote_fin => Err(rst::STREAM_ALREADY_CLOSED),
                    Some(e) => {
                        let tx = e.data.clone();
                        if flags & FLAG_FIN != 0 {
                            e.remote_fin = true;
                            e.data = None;
                        }
                        Ok(tx)
                    }
                }
            };
            match target {
                Ok(tx) => {
                    if let Some(tx) = tx {
                        if !data.is_empty() {
                            // a reader that went away drops its data
                            let _ = tx.send(data).await;
                        }
                    }
                    inner.settle(stream_id);
                }
                Err(status) => {
                    let _ = conn.send(Frame::RstStream { stream_id, status }).await;
                }
            }
        }
        Frame::RstStream { stream_id, status } => {
            let mut st = inner.lock();
            if let Some(mut e) = st.streams.remove(&stream_id) {
                if let Some(r) = e.reply.take() {
                    let _ = r.send(Err(status));
                }
            }
        }
        Frame::Ping { id } => {
            if id % 2 == peer_parity {
                let _ = conn.send(Frame::Ping { id }).await;
            }
        }
        Frame::GoAway { .. } => inner.lock().going_away = true,
        Frame::Settings { .. }
        | Frame::WindowUpdate { .. }
        | Frame::Headers { .. }
        | Frame::Unknown { .. } => {}
    }
    true
}
