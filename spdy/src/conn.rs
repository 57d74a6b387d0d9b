//! A SPDY/3.1 connection over an upgraded byte stream, as moby/spdystream runs one for
//! Kubernetes: streams opened by either side ([`Connection::open_stream`], or received on the
//! [`Incoming`] queue and answered with an empty SYN_REPLY at once, as upstream's
//! `newSpdyStream`), their data in order, half-close by FIN, RST_STREAM, PING echo, GOAWAY.
//! Like spdystream, no flow control is enforced or sent (WINDOW_UPDATE and SETTINGS are read
//! and ignored): kubectl and the API server never send WINDOW_UPDATE. Bad input from the peer
//! is answered as the spec says: RST_STREAM for one stream's error, GOAWAY then close for the
//! session's ([`crate::FrameError`]).

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::frame::{
    data_header, frame_len, goaway, rst, Frame, FrameError, FrameReader, FrameWriter, Headers,
    FLAG_FIN, HEADER_LEN, MAX_FRAME,
};

/// Upstream's wait for the peer's SYN_REPLY (`createStreamResponseTimeout`).
pub const STREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// After [`Connection::close`], the peer's remaining input is read (and dropped) for at most
/// this long before the socket goes, so that closing does not reset what the peer still reads.
const LINGER: Duration = Duration::from_secs(5);
/// [`StreamWriter::copy_from`] reads at most this much into one DATA frame (twice upstream's
/// 32 KiB `io.Copy` buffer: fewer frames, system calls and TLS writes per byte).
pub const COPY_CHUNK: usize = 64 * 1024;
/// [`StreamWriter::copy_from`] has at most this many DATA frames queued or being written at
/// once: it reads more only when one of them has been written, into that frame's buffer (the
/// same few buffers for the whole copy, not one allocation per read whose fresh pages the
/// kernel zeroes). Twice what one batch of the writer takes, so that the reader fills
/// buffers while the writer writes the others.
const COPY_IN_FLIGHT: usize = 2 * BATCH_BYTES / COPY_CHUNK;
/// The read buffer of a connection grows by at least this much (reads of up to this size).
const READ_BUF: usize = 256 * 1024;
/// The writer gathers queued frames up to about this many bytes into one write.
const BATCH_BYTES: usize = 256 * 1024;
/// ... and at most this many frames (one vectored write's slices).
const BATCH_FRAMES: usize = 64;
/// On a connection without vectored writes, frames under this size are copied together into
/// one write; larger ones are written as they are.
const COALESCE_UNDER: usize = 16 * 1024;

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
    /// A DATA frame in its wire form (header and payload), encoded by its stream's writer, with
    /// the credit of a [`StreamWriter::copy_from`] that it returns once written.
    Encoded(Bytes, Option<OwnedSemaphorePermit>),
    Close,
}

#[derive(Default)]
struct Entry {
    data: Option<mpsc::Sender<Bytes>>,
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
        // room for every stream the bound lets open: a stream is answered (SYN_REPLY) before
        // it is queued, so a full queue would reset a stream the peer was told it has (a
        // burst of port-forward pairs faster than the handler takes them)
        let (incoming_tx, incoming_rx) = mpsc::channel(config.max_streams.max(1));
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

    fn stream(&self, id: u32, headers: Headers, data: mpsc::Receiver<Bytes>) -> Stream {
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
        self.send_cmd(Cmd::Frame(frame)).await
    }

    async fn send_cmd(&self, cmd: Cmd) -> std::io::Result<()> {
        self.inner.out.send(cmd).await.map_err(|_| {
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
    data: mpsc::Receiver<Bytes>,
}

impl StreamReader {
    /// The next chunk (one DATA frame's payload, never empty); `None` once the peer
    /// half-closed (FIN), reset the stream or the connection ended.
    pub async fn read(&mut self) -> Option<Bytes> {
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
            let mut frame = BytesMut::with_capacity(HEADER_LEN + chunk.len());
            frame.put_slice(&data_header(self.id, 0, chunk.len()));
            frame.put_slice(chunk);
            self.conn
                .send_cmd(Cmd::Encoded(frame.freeze(), None))
                .await?;
        }
        Ok(())
    }

    /// Copies `r` onto the stream until `r` ends (the stream is not half-closed): the bytes
    /// copied. Each read, of at most [`COPY_CHUNK`] bytes, goes straight into the buffer of
    /// the DATA frame that carries it, so the bytes are not copied again on their way to the
    /// connection; at most [`COPY_IN_FLIGHT`] frames wait to be written, and a written
    /// frame's buffer takes the next read. Errors: `r`'s, or the stream's or connection's end.
    pub async fn copy_from<R>(&self, r: &mut R) -> std::io::Result<u64>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        const FRAME: usize = HEADER_LEN + COPY_CHUNK;
        let credit = Arc::new(Semaphore::new(COPY_IN_FLIGHT));
        // a frame's bytes are dropped before its credit returns, so with a credit in hand one
        // of these is free once all are made
        let mut buffers: Vec<BytesMut> = Vec::new();
        let mut total = 0u64;
        loop {
            let permit = credit
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let buf = match buffers.iter_mut().position(|b| b.try_reclaim(FRAME)) {
                Some(i) => &mut buffers[i],
                None => {
                    debug_assert!(buffers.len() < COPY_IN_FLIGHT);
                    buffers.push(BytesMut::with_capacity(FRAME));
                    buffers.last_mut().expect("just pushed")
                }
            };
            buf.put_bytes(0, HEADER_LEN);
            let n = r.read_buf(&mut buf.limit(COPY_CHUNK)).await?;
            if n == 0 {
                return Ok(total);
            }
            self.check_open()?;
            buf[..HEADER_LEN].copy_from_slice(&data_header(self.id, 0, n));
            self.conn
                .send_cmd(Cmd::Encoded(buf.split().freeze(), Some(permit)))
                .await?;
            total += n as u64;
        }
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
                data: Bytes::new(),
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
    let mut batch = Batch::default();
    let mut closing = false;
    while !closing {
        let Some(first) = rx.recv().await else { break };
        let mut next = Some(first);
        // what is queued goes out in one (vectored) write
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Frame(f) => {
                    let mut wire = Vec::new();
                    writer.encode(&f, &mut wire);
                    batch.push(wire.into(), None);
                }
                Cmd::Encoded(b, credit) => batch.push(b, credit),
                Cmd::Close => {
                    closing = true;
                    break;
                }
            }
            if !batch.full() {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if batch.write_to(&mut wr).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            inner.touch();
        }
    }
    // what is still queued goes now (its credits return), not after a shutdown that may hang
    drop(rx);
    let _ = wr.shutdown().await;
    inner.lock().going_away = true;
    inner.closed.send_replace(true);
}

/// Frames in their wire form, gathered to go out together.
#[derive(Debug, Default)]
struct Batch {
    frames: Vec<Bytes>,
    /// Each frame's credit (`copy_from`'s), returned once the frame is written.
    credits: Vec<Option<OwnedSemaphorePermit>>,
    bytes: usize,
    /// Small frames copied together when the writer takes no vectored writes.
    scratch: Vec<u8>,
}

impl Batch {
    fn push(&mut self, frame: Bytes, credit: Option<OwnedSemaphorePermit>) {
        self.bytes += frame.len();
        self.frames.push(frame);
        self.credits.push(credit);
    }
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    /// Enough for one write: take no more.
    fn full(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.frames.len() >= BATCH_FRAMES
    }
    /// Frame `i` is written (or copied): its bytes go, then its credit, so that the copy
    /// waiting for the credit finds the frame's buffer free.
    fn done(&mut self, i: usize) {
        self.frames[i] = Bytes::new();
        self.credits[i] = None;
    }
    /// Writes every frame, in order, and empties the batch: vectored writes (no copy) when `w`
    /// takes them; else runs of small frames copied into one write and large frames written
    /// as they are.
    async fn write_to<W: AsyncWrite + Unpin + ?Sized>(&mut self, w: &mut W) -> std::io::Result<()> {
        let result = if w.is_write_vectored() {
            self.write_vectored(w).await
        } else {
            self.write_coalesced(w).await
        };
        self.frames.clear();
        self.credits.clear();
        self.bytes = 0;
        self.scratch.clear();
        result
    }
    async fn write_vectored<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
    ) -> std::io::Result<()> {
        let mut at = 0;
        loop {
            while at < self.frames.len() && self.frames[at].is_empty() {
                self.done(at);
                at += 1;
            }
            if at == self.frames.len() {
                return Ok(());
            }
            let slices: Vec<IoSlice<'_>> =
                self.frames[at..].iter().map(|f| IoSlice::new(f)).collect();
            let mut n = w.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let f = &mut self.frames[at];
                let k = n.min(f.len());
                f.advance(k);
                n -= k;
                if f.is_empty() {
                    self.done(at);
                    at += 1;
                }
            }
        }
    }
    async fn write_coalesced<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
    ) -> std::io::Result<()> {
        // frames copied into `scratch` from `first` on; done once `scratch` is written
        let mut first = 0;
        for i in 0..self.frames.len() {
            let f = &self.frames[i];
            if f.len() < COALESCE_UNDER {
                self.scratch.extend_from_slice(f);
                if self.scratch.len() >= BATCH_BYTES {
                    w.write_all(&self.scratch).await?;
                    self.scratch.clear();
                    (first..=i).for_each(|j| self.done(j));
                    first = i + 1;
                }
            } else {
                if !self.scratch.is_empty() {
                    w.write_all(&self.scratch).await?;
                    self.scratch.clear();
                }
                w.write_all(f).await?;
                (first..=i).for_each(|j| self.done(j));
                first = i + 1;
            }
        }
        if !self.scratch.is_empty() {
            w.write_all(&self.scratch).await?;
        }
        Ok(())
    }
}

async fn read_loop<R: AsyncRead>(
    mut rd: tokio::io::ReadHalf<R>,
    inner: Arc<Inner>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut reader = FrameReader::new();
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut closed = inner.closed.subscribe();
    let mut linger_until: Option<Instant> = None;
    let conn = Connection {
        inner: inner.clone(),
    };
    'outer: loop {
        // every whole frame in the buffer
        loop {
            match reader.parse_buf(&mut buf) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    if linger_until.is_none() && !dispatch(&conn, frame, &incoming).await {
                        break 'outer;
                    }
                }
                Err(FrameError::Stream {
                    stream_id,
                    status,
                    reason,
                }) => {
                    // parse_buf took the frame off
                    tracing::debug!(stream_id, status, %reason, "SPDY: resetting a stream");
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
        // room for large reads (fewer system calls) and for the whole of a large frame begun:
        // data handed out keeps its part of the buffer, so this takes a new one (or reclaims
        // this one once that data is dropped)
        let want = match frame_len(&buf) {
            Ok(Some(_)) | Err(_) => 0,
            Ok(None) if buf.len() >= HEADER_LEN => {
                let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
                HEADER_LEN + len - buf.len()
            }
            Ok(None) => 0,
        };
        if buf.capacity() - buf.len() < want.max(READ_BUF / 4) {
            buf.reserve(want.max(READ_BUF));
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
                    if flags & FLAG_FIN != 0 {
                        inner.settle(stream_id);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A sink taking at most `step` bytes a call, with or without vectored writes.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            assert!(self.vectored, "a vectored write to a sink without them");
            let mut left = self.step;
            for b in bufs {
                let n = b.len().min(left);
                self.got.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(self.step - left))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Every frame of a batch goes out whole and in order, through partial writes, with
    /// vectored writes or without; small frames share writes, large ones are not copied
    /// together.
    #[tokio::test]
    async fn a_batch_goes_out_whole_and_in_order() {
        let frames: Vec<Bytes> = [10usize, 0, 70_000, 3, 5, 20_000, 1, 0, 9000]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
            .collect();
        let want: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        for vectored in [true, false] {
            for step in [1, 7, 4096, 1 << 20] {
                let mut batch = Batch::default();
                for f in &frames {
                    batch.push(f.clone(), None);
                }
                let mut w = Trickle {
                    got: Vec::new(),
                    step,
                    vectored,
                    calls: 0,
                };
                batch.write_to(&mut w).await.unwrap();
                assert_eq!(w.got, want, "vectored {vectored}, step {step}");
                assert!(batch.is_empty() && batch.bytes == 0);
                if step == 1 << 20 {
                    // vectored: one write; else [10] [70000] [3,5] [20000] [1,9000]
                    assert_eq!(w.calls, if vectored { 1 } else { 5 }, "vectored {vectored}");
                }
            }
        }
        // the bounds of one batch
        let mut batch = Batch::default();
        for _ in 0..BATCH_FRAMES - 1 {
            batch.push(Bytes::from_static(b"x"), None);
        }
        assert!(!batch.full());
        batch.push(Bytes::from_static(b"x"), None);
        assert!(batch.full());
        let mut batch = Batch::default();
        batch.push(Bytes::from(vec![0; BATCH_BYTES]), None);
        assert!(batch.full());
    }

    /// A burst of streams the handler has not taken yet is queued, not reset, up to the
    /// connection's bound (before, the 65th waiting stream was answered and then reset).
    #[tokio::test]
    async fn a_burst_of_streams_waits_for_the_handler() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _) = Connection::start(a, Role::Client, Config::default());
        let (_server, mut incoming) = Connection::start(b, Role::Server, Config::default());
        let mut opened = Vec::new();
        for _ in 0..200 {
            let s = client
                .open_stream(vec![("streamtype".into(), "data".into())])
                .await
                .unwrap();
            opened.push(s);
        }
        for s in &opened {
            let got = tokio::time::timeout(Duration::from_secs(30), incoming.recv())
                .await
                .expect("a stream queued (not reset)")
                .expect("the connection is up");
            assert_eq!(got.id(), s.id());
            got.split().1.write(b"x").await.unwrap();
        }
        for s in opened {
            let (mut r, _) = s.split();
            assert_eq!(r.read().await.as_deref(), Some(&b"x"[..]), "not reset");
        }
    }

    /// `copy_from` sends a reader's bytes as DATA frames of at most [`COPY_CHUNK`] bytes,
    /// in order, and returns their count; the stream stays open until closed.
    #[tokio::test]
    async fn copy_from_frames_a_reader() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _) = Connection::start(a, Role::Client, Config::default());
        let (_server, mut incoming) = Connection::start(b, Role::Server, Config::default());
        let source: Vec<u8> = (0..3 * COPY_CHUNK + 123).map(|i| i as u8).collect();
        let sent = source.clone();
        let serve = tokio::spawn(async move {
            let s = incoming.recv().await.unwrap();
            let (_, w) = s.split();
            let n = w.copy_from(&mut &sent[..]).await.unwrap();
            w.write(b"after").await.unwrap();
            w.close().await;
            n
        });
        let s = client
            .open_stream(vec![("streamtype".into(), "data".into())])
            .await
            .unwrap();
        let (mut r, _) = s.split();
        let mut got = Vec::new();
        while let Some(d) = r.read().await {
            assert!(!d.is_empty() && d.len() <= COPY_CHUNK, "{}", d.len());
            got.extend_from_slice(&d);
        }
        assert_eq!(serve.await.unwrap(), source.len() as u64);
        assert_eq!(&got[..source.len()], &source[..]);
        assert_eq!(&got[source.len()..], b"after");
    }

    /// Reads of uneven sizes, some short (as a socket's), from `data`.
    struct Uneven {
        data: Vec<u8>,
        at: usize,
        reads: usize,
    }

    impl AsyncRead for Uneven {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let sizes = [COPY_CHUNK, 1, 7000, COPY_CHUNK - 1, 300];
            let want = sizes[self.reads % sizes.len()];
            let n = want.min(buf.remaining()).min(self.data.len() - self.at);
            buf.put_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            self.reads += 1;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// With the peer reading slowly (a small pipe), `copy_from` reuses its few buffers many
    /// times over: every byte arrives once, in order, whatever the sizes of the reads.
    #[tokio::test]
    async fn copy_from_reuses_buffers_without_mixing_bytes() {
        let (a, b) = tokio::io::duplex(4096);
        let (client, _) = Connection::start(a, Role::Client, Config::default());
        let (_server, mut incoming) = Connection::start(b, Role::Server, Config::default());
        let source: Vec<u8> = (0..40 * COPY_CHUNK + 5)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut reader = Uneven {
            data: source.clone(),
            at: 0,
            reads: 0,
        };
        let serve = tokio::spawn(async move {
            let s = incoming.recv().await.unwrap();
            let (_, w) = s.split();
            let n = w.copy_from(&mut reader).await.unwrap();
            w.close().await;
            (n, reader.reads)
        });
        let s = client.open_stream(vec![]).await.unwrap();
        let (mut r, _) = s.split();
        let mut got = Vec::new();
        while let Some(d) = r.read().await {
            got.extend_from_slice(&d);
        }
        let (n, reads) = serve.await.unwrap();
        assert_eq!(n, source.len() as u64);
        assert!(reads > 10 * COPY_IN_FLIGHT, "{reads} reads");
        assert!(got == source, "the bytes differ");
    }

    /// A writer that takes 10 bytes per call and notes the credits free at each call.
    struct Tens {
        credit: Arc<Semaphore>,
        free: Vec<usize>,
    }

    impl AsyncWrite for Tens {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let free = self.credit.available_permits();
            self.free.push(free);
            std::task::Poll::Ready(Ok(buf.len().min(10)))
        }
        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            self.poll_write(cx, first)
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A frame's credit returns as soon as the frame is written, not when the whole batch is:
    /// the copy it belongs to reads on while the rest of the batch goes out.
    #[tokio::test]
    async fn credits_return_frame_by_frame() {
        let credit = Arc::new(Semaphore::new(3));
        let mut batch = Batch::default();
        for _ in 0..3 {
            let permit = credit.clone().try_acquire_owned().unwrap();
            batch.push(Bytes::from(vec![1; 20]), Some(permit));
        }
        let mut w = Tens {
            credit: credit.clone(),
            free: Vec::new(),
        };
        batch.write_to(&mut w).await.unwrap();
        assert_eq!(w.free, [0, 0, 1, 1, 2, 2]);
        assert_eq!(credit.available_permits(), 3);
    }
}
