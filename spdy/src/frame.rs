//! SPDY/3.1 frames (draft 3.1, sections 2.2–2.6): their wire form, [`FrameReader`] (the parser:
//! pure, over a byte buffer, so that it can be fuzzed) and [`FrameWriter`]. Header blocks are
//! compressed with one zlib context per direction for the life of the connection, primed with
//! [`DICTIONARY`] and flushed with `Z_SYNC_FLUSH` after each block, as the spec and
//! moby/spdystream do.

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1): 1423 bytes,
/// byte-identical to moby/spdystream's `headerDictionary`.
pub const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\
    \x00\x00\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\
    \x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\
    \x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\
    \x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\
    \x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\
    \x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\
    \x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\
    \x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\
    \x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\
    \x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\
    \x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\
    \x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\
    \x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\
    \x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\
    \x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\
    \x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
    \x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\
    \x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\
    \x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\
    \x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\
    \x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\
    \x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\
    \x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\
    \x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\
    \x00\x00\x00\x06origin\
    10010120120220520630030230330430530630740240540640740840941041141241341441541641\
    7502504505203 Non-Authoritative Information204 No Content301 Moved Permanently40\
    0 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
    501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept O\
    ct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,imag\
    e/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/\
    javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1\
    ,utf-,*,enq=0.\
";

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// Length of the common frame header.
pub const HEADER_LEN: usize = 8;
/// The largest frame payload this parser accepts (the wire allows 2^24-1): larger frames are
/// a session error. Data is written in frames of at most this size.
pub const MAX_FRAME: usize = 1 << 20;
/// [`FrameReader::parse_buf`] hands out DATA payloads of at least this many bytes without a
/// copy; smaller ones are copied out of the read buffer.
pub const SPLIT_MIN: usize = 8 * 1024;
/// The largest header block once decompressed.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// At most this many name/value pairs in one header block.
pub const MAX_HEADERS: usize = 256;

/// SYN_STREAM's, SYN_REPLY's, HEADERS' and DATA's flag: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM's flag: the receiver may not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Control frame types.
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes (section 2.6.3).
pub mod rst {
    /// A generic error on the stream.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// A frame for a stream that is not active.
    pub const INVALID_STREAM: u32 = 2;
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: u32 = 3;
    /// The version is not supported.
    pub const UNSUPPORTED_VERSION: u32 = 4;
    /// The stream is no longer needed.
    pub const CANCEL: u32 = 5;
    /// An error not related to the protocol.
    pub const INTERNAL_ERROR: u32 = 6;
    /// Flow control was violated.
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    /// A SYN_REPLY for a stream already open.
    pub const STREAM_IN_USE: u32 = 8;
    /// Data or SYN_REPLY for a half-closed stream.
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    /// A frame too large for the receiver.
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes (section 2.6.6).
pub mod goaway {
    /// A normal teardown.
    pub const OK: u32 = 0;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// An internal error.
    pub const INTERNAL_ERROR: u32 = 2;
}

/// A header block: `(name, value)` pairs, names lowercase; several values of one name are
/// joined by NUL on the wire (and kept joined here).
pub type Headers = Vec<(String, String)>;

/// The value of `name` (any case) in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The stream (odd from the client, even from the server; never 0).
        stream_id: u32,
        /// The stream it is associated to (0: none).
        associated_to: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// [`FLAG_FIN`] and [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        /// The stream's headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// The reply's headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// A [`rst`] code.
        status: u32,
    },
    /// Connection settings: `(flags, id, value)`.
    Settings {
        /// The frame's flags (0x01: clear persisted settings).
        flags: u8,
        /// The entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// A ping (odd ids from the client, even from the server), echoed by the receiver.
    Ping {
        /// The ping's id.
        id: u32,
    },
    /// The sender creates no more streams and accepts none above `last_good_stream_id`.
    GoAway {
        /// The last stream the sender processed.
        last_good_stream_id: u32,
        /// A [`goaway`] code.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow control: the receiver's window grew.
    WindowUpdate {
        /// The stream (0: the connection).
        stream_id: u32,
        /// The growth, 1 to 2^31-1.
        delta: u32,
    },
    /// Data on a stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// The payload (a slice of the read buffer when parsed by [`FrameReader::parse_buf`]).
        data: Bytes,
    },
    /// A control frame of a type this version does not define: ignored, as the spec says.
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// Bad input: what the receiver must answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The connection cannot go on (a corrupt header block, a frame over the bound, a bad
    /// version): GOAWAY with this [`goaway`] status, then close.
    #[error("SPDY session error ({status}): {reason}")]
    Session {
        /// The GOAWAY status.
        status: u32,
        /// What was wrong.
        reason: String,
    },
    /// One stream is broken: RST_STREAM with this [`rst`] status; the connection goes on.
    #[error("SPDY stream {stream_id} error ({status}): {reason}")]
    Stream {
        /// The stream.
        stream_id: u32,
        /// The RST_STREAM status.
        status: u32,
        /// What was wrong.
        reason: String,
    },
}

fn session(reason: impl Into<String>) -> FrameError {
    FrameError::Session {
        status: goaway::PROTOCOL_ERROR,
        reason: reason.into(),
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The parsing half of a connection: its header decompression context.
pub struct FrameReader {
    inflate: Decompress,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader").finish_non_exhaustive()
    }
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// A reader for a new connection.
    pub fn new() -> Self {
        FrameReader {
            inflate: Decompress::new(true),
        }
    }

    /// Parses the first frame of `buf`: `Ok(None)` when `buf` holds less than a whole frame,
    /// else the frame and the bytes it took. A stream error consumed the frame (its length is
    /// in the error's frame, so the caller goes on after [`frame_len`]); a session error leaves
    /// the connection unusable.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(len) = frame_len(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + len;
        let p = &buf[HEADER_LEN..total];
        let flags = buf[4];
        if buf[0] & 0x80 == 0 {
            let stream_id = be32(buf) & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(session("a DATA frame on stream 0"));
            }
            return Ok(Some((
                Frame::Data {
                    stream_id,
                    flags,
                    data: Bytes::copy_from_slice(p),
                },
                total,
            )));
        }
        let version = u16::from_be_bytes([buf[0], buf[1]]) & 0x7fff;
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        if version != VERSION {
            // the header blocks' shared zlib context cannot skip a frame it did not read
            return Err(FrameError::Session {
                status: goaway::PROTOCOL_ERROR,
                reason: format!("unsupported SPDY version {version}"),
            });
        }
        let need = |n: usize| {
            if p.len() < n {
                Err(session(format!(
                    "control frame type {kind}: {} bytes, at least {n} needed",
                    p.len()
                )))
            } else {
                Ok(())
            }
        };
        let exact = |n: usize| {
            if p.len() != n {
                Err(session(format!(
                    "control frame type {kind}: {} bytes, {n} expected",
                    p.len()
                )))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                let stream_id = be32(p) & 0x7fff_ffff;
                let associated_to = be32(&p[4..]) & 0x7fff_ffff;
                let priority = p[8] >> 5;
                // the block is read even for a bad stream id: the zlib context must follow
                let headers = self.header_block(&p[10..])?;
                if stream_id == 0 {
                    return Err(session("SYN_STREAM with stream id 0"));
                }
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let stream_id = be32(p) & 0x7fff_ffff;
                let headers = self.header_block(&p[4..])?;
                if stream_id == 0 {
                    return Err(session(format!("control frame type {kind} on stream 0")));
                }
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                exact(8)?;
                let stream_id = be32(p) & 0x7fff_ffff;
                let status = be32(&p[4..]);
                if stream_id == 0 || status == 0 {
                    return Err(session("RST_STREAM with stream id 0 or status 0"));
                }
                Frame::RstStream { stream_id, status }
            }
            SETTINGS => {
                need(4)?;
                let n = be32(p) as usize;
                if p.len() != 4 + n.saturating_mul(8) {
                    return Err(session(format!(
                        "SETTINGS of {n} entries in {} bytes",
                        p.len()
                    )));
                }
                let entries = p[4..]
                    .chunks_exact(8)
                    .map(|e| (e[0], be32(e) & 0x00ff_ffff, be32(&e[4..])))
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                exact(4)?;
                Frame::Ping { id: be32(p) }
            }
            GOAWAY => {
                exact(8)?;
                Frame::GoAway {
                    last_good_stream_id: be32(p) & 0x7fff_ffff,
                    status: be32(&p[4..]),
                }
            }
            WINDOW_UPDATE => {
                exact(8)?;
                let stream_id = be32(p) & 0x7fff_ffff;
                let delta = be32(&p[4..]) & 0x7fff_ffff;
                if delta == 0 {
                    return Err(FrameError::Stream {
                        stream_id,
                        status: rst::FLOW_CONTROL_ERROR,
                        reason: "WINDOW_UPDATE with delta 0".into(),
                    });
                }
                Frame::WindowUpdate { stream_id, delta }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some((frame, total)))
    }

    /// As [`FrameReader::parse`], over a connection's read buffer, and the frame is taken off
    /// its front: a DATA frame's payload of at least [`SPLIT_MIN`] bytes is split off the buffer
    /// (no copy: it shares the buffer's allocation until dropped), a smaller one is copied (so
    /// that a few small chunks held by a slow reader do not pin whole read buffers). A stream
    /// error takes its frame off too; after a session error the buffer is left as it was.
    pub fn parse_buf(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(len) = frame_len(buf)? else {
            return Ok(None);
        };
        if buf[0] & 0x80 == 0 && len >= SPLIT_MIN {
            let stream_id = be32(buf) & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(session("a DATA frame on stream 0"));
            }
            let flags = buf[4];
            buf.advance(HEADER_LEN);
            let data = buf.split_to(len).freeze();
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data,
            }));
        }
        match self.parse(buf) {
            Ok(Some((frame, n))) => {
                buf.advance(n);
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e @ FrameError::Stream { .. }) => {
                buf.advance(HEADER_LEN + len);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Decompresses and parses one header block (section 2.6.10).
    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let mut out = Vec::with_capacity(1024);
        let mut input = compressed;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(session(format!(
                        "a header block over {MAX_HEADER_BLOCK} bytes decompressed"
                    )));
                }
                out.reserve((out.len()).min(MAX_HEADER_BLOCK - out.len()).max(1024));
            }
            let in_before = self.inflate.total_in();
            let out_before = out.len();
            let status = match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(s) => s,
                Err(e) if e.needs_dictionary().is_some() => {
                    input = &input[(self.inflate.total_in() - in_before) as usize..];
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| session(format!("header block: {e}")))?;
                    continue;
                }
                Err(e) => return Err(session(format!("header block: {e}"))),
            };
            let used = (self.inflate.total_in() - in_before) as usize;
            input = &input[used..];
            if status == Status::StreamEnd {
                return Err(session("header block: the zlib stream ended"));
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() == out_before && out.len() < out.capacity() {
                return Err(session("header block: truncated"));
            }
        }
        if out.len() > MAX_HEADER_BLOCK {
            return Err(session(format!(
                "a header block over {MAX_HEADER_BLOCK} bytes decompressed"
            )));
        }
        parse_pairs(&out)
    }
}

/// The payload length of the frame `buf` starts with, once its header is there; a frame over
/// [`MAX_FRAME`] is a session error.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = (be32(&buf[4..]) & 0x00ff_ffff) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::Session {
            status: goaway::PROTOCOL_ERROR,
            reason: format!("a frame of {len} bytes (at most {MAX_FRAME})"),
        });
    }
    Ok((buf.len() >= HEADER_LEN + len).then_some(len))
}

/// The 8-byte header of a DATA frame of `len` payload bytes (at most [`MAX_FRAME`]): what
/// [`FrameWriter::encode`] writes before the payload, for a caller that places the payload
/// itself (a connection's writers encode their data frames in their own buffers).
pub fn data_header(stream_id: u32, flags: u8, len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(len <= MAX_FRAME);
    let id = (stream_id & 0x7fff_ffff).to_be_bytes();
    let n = (len as u32).to_be_bytes();
    [id[0], id[1], id[2], id[3], flags, n[1], n[2], n[3]]
}

/// A decompressed header block's pairs.
fn parse_pairs(b: &[u8]) -> Result<Headers, FrameError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        let s = b
            .get(
                at..at
                    .checked_add(n)
                    .ok_or_else(|| session("header block: overflow"))?,
            )
            .ok_or_else(|| session("header block: truncated pair"))?;
        at += n;
        Ok(s)
    };
    let count = be32(take(4)?) as usize;
    if count > MAX_HEADERS {
        return Err(session(format!(
            "header block of {count} pairs (at most {MAX_HEADERS})"
        )));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = take(n)?;
        if name.is_empty() {
            return Err(session("header block: an empty name"));
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| session("header block: a name is not UTF-8"))?
            .to_string();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name.to_ascii_lowercase(), value));
    }
    if at != b.len() {
        return Err(session("header block: bytes after the last pair"));
    }
    Ok(headers)
}

/// The writing half of a connection: its header compression context.
pub struct FrameWriter {
    deflate: Compress,
    primed: bool,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter").finish_non_exhaustive()
    }
}

impl Default for FrameWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameWriter {
    /// A writer for a new connection.
    pub fn new() -> Self {
        FrameWriter {
            deflate: Compress::new(Compression::best(), true),
            primed: false,
        }
    }

    /// Appends `frame`'s wire form to `out`. Data longer than [`MAX_FRAME`] is the caller's
    /// to split; names are written lowercase.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]| {
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(payload);
        };
        let mut p = Vec::new();
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                p.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                p.push((priority & 7) << 5);
                p.push(0);
                self.compress(headers, &mut p);
                control(out, SYN_STREAM, *flags, &p);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                p.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                self.compress(headers, &mut p);
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                control(out, kind, *flags, &p);
            }
            Frame::RstStream { stream_id, status } => {
                p.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p.extend_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &p);
            }
            Frame::Settings { flags, entries } => {
                p.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (f, id, value) in entries {
                    p.push(*f);
                    p.extend_from_slice(&(id & 0x00ff_ffff).to_be_bytes()[1..]);
                    p.extend_from_slice(&value.to_be_bytes());
                }
                control(out, SETTINGS, *flags, &p);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                p.extend_from_slice(&(last_good_stream_id & 0x7fff_ffff).to_be_bytes());
                p.extend_from_slice(&status.to_be_bytes());
                control(out, GOAWAY, 0, &p);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                p.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(out, WINDOW_UPDATE, 0, &p);
            }
            Frame::Unknown { kind } => control(out, *kind, 0, &[]),
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.extend_from_slice(&data_header(*stream_id, *flags, data.len()));
                out.extend_from_slice(data);
            }
        }
    }

    /// Compresses a header block onto `out` (sync flush: the block ends on a byte boundary).
    fn compress(&mut self, headers: &Headers, out: &mut Vec<u8>) {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, v) in headers {
            raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
            raw.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        if !self.primed {
            // a fresh context takes a dictionary before its first byte
            let _ = self.deflate.set_dictionary(DICTIONARY);
            self.primed = true;
        }
        let mut input = &raw[..];
        loop {
            out.reserve(input.len() + 64);
            let before = self.deflate.total_in();
            let Ok(status) = self.deflate.compress_vec(input, out, FlushCompress::Sync) else {
                // compress_vec fails only on a corrupt context, which this code never makes
                return;
            };
            input = &input[(self.deflate.total_in() - before) as usize..];
            // done when the input is consumed and the flush stopped short of the room it had
            if input.is_empty() && (out.len() < out.capacity() || status == Status::BufError) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) {
        let mut w = FrameWriter::new();
        let mut r = FrameReader::new();
        let mut wire = Vec::new();
        for f in frames {
            w.encode(f, &mut wire);
        }
        let mut at = 0;
        for f in frames {
            let (got, n) = r.parse(&wire[at..]).unwrap().unwrap();
            assert_eq!(&got, f);
            at += n;
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn frames_round_trip() {
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        round_trip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            // a second block reuses the compression context
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: h(&[("a", "x\0y")]),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: goaway::OK,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 1 << 20,
            },
            Frame::Unknown { kind: 10 },
        ]);
    }

    /// `parse_buf` takes frames off the front of a read buffer: a large DATA payload is a
    /// slice of the buffer (no copy), a small one a copy; a partial frame waits; a stream
    /// error takes its frame off; the frames are those `parse` sees.
    #[test]
    fn parse_buf_takes_frames_off_the_buffer() {
        let mut w = FrameWriter::new();
        let big = Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from(vec![7u8; SPLIT_MIN]),
        };
        let small = Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"tail"),
        };
        let reply = Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: vec![("a".into(), "b".into())],
        };
        let mut wire = Vec::new();
        for f in [&big, &reply, &small] {
            w.encode(f, &mut wire);
        }
        // a WINDOW_UPDATE of delta 0 (a stream error), then half of another frame
        wire.extend_from_slice(&[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 0]);
        wire.extend_from_slice(&data_header(5, 0, 10));
        wire.extend_from_slice(b"12345");
        let mut buf = BytesMut::from(&wire[..]);
        let start = buf.as_ptr() as usize;
        let mut r = FrameReader::new();
        let got = r.parse_buf(&mut buf).unwrap().unwrap();
        assert_eq!(got, big);
        let Frame::Data { data, .. } = &got else {
            unreachable!()
        };
        assert_eq!(data.as_ptr() as usize, start + HEADER_LEN, "not copied");
        assert_eq!(r.parse_buf(&mut buf).unwrap().unwrap(), reply);
        assert_eq!(r.parse_buf(&mut buf).unwrap().unwrap(), small);
        assert!(matches!(
            r.parse_buf(&mut buf),
            Err(FrameError::Stream { stream_id: 5, .. })
        ));
        assert_eq!(r.parse_buf(&mut buf), Ok(None));
        assert_eq!(buf.len(), HEADER_LEN + 5, "the partial frame stays");
        buf.extend_from_slice(b"67890");
        let Frame::Data { data, .. } = r.parse_buf(&mut buf).unwrap().unwrap() else {
            panic!("not data")
        };
        assert_eq!(&data[..], b"1234567890");
        assert!(buf.is_empty());
        // a session error leaves the buffer
        let mut bad = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(matches!(
            r.parse_buf(&mut bad),
            Err(FrameError::Session { .. })
        ));
        let mut bad = BytesMut::from(&data_header(0, 0, SPLIT_MIN)[..]);
        bad.extend_from_slice(&vec![0; SPLIT_MIN]);
        assert!(matches!(
            r.parse_buf(&mut bad),
            Err(FrameError::Session { .. })
        ));
        assert_eq!(bad.len(), HEADER_LEN + SPLIT_MIN);
    }

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
        // the dictionary id (Adler-32) every SPDY/3 header stream names
        let mut a = 1u32;
        let mut b = 0u32;
        for &c in DICTIONARY {
            a = (a + u32::from(c)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    /// A SYN_STREAM as Go's spdystream (zlib level 9, the dictionary, sync flush) writes it
    /// for `streamType: error` on stream 1: the header block decodes.
    #[test]
    fn header_block_vector() {
        // zlib header 78 f9 (FDICT, best compression) then the dictionary id e3 c6 a7 c2
        let mut w = FrameWriter::new();
        let mut wire = Vec::new();
        w.encode(
            &Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamType".into(), "error".into())],
            },
            &mut wire,
        );
        assert_eq!(&wire[..4], b"\x80\x03\x00\x01");
        assert_eq!(&wire[18..24], b"\x78\xf9\xe3\xc6\xa7\xc2");
        let (f, _) = FrameReader::new().parse(&wire).unwrap().unwrap();
        let Frame::SynStream { headers, .. } = f else {
            panic!("{f:?}")
        };
        assert_eq!(headers, vec![("streamtype".into(), "error".into())]);
    }

    #[test]
    fn bounds() {
        let mut r = FrameReader::new();
        // partial frames wait
        assert_eq!(r.parse(b"\x00\x00\x00\x01\x00\x00"), Ok(None));
        assert_eq!(r.parse(b"\x00\x00\x00\x01\x00\x00\x00\x02a"), Ok(None));
        // a frame over the bound
        let big = [0u8, 0, 0, 1, 0, 0x20, 0, 0];
        assert!(matches!(
            r.parse(&big),
            Err(FrameError::Session {
                status: goaway::PROTOCOL_ERROR,
                ..
            })
        ));
        // another version
        let v2 = [0x80u8, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(r.parse(&v2), Err(FrameError::Session { .. })));
        // data on stream 0
        assert!(r.parse(&[0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // a PING of the wrong length
        assert!(r.parse(&[0x80, 3, 0, 6, 0, 0, 0, 2, 0, 1]).is_err());
        // a header block that is not zlib
        let bad = [
            0x80u8, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef,
        ];
        assert!(matches!(
            FrameReader::new().parse(&bad),
            Err(FrameError::Session { .. })
        ));
        // a WINDOW_UPDATE of 0 is the stream's error
        let wu = [0x80u8, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            r.parse(&wu),
            Err(FrameError::Stream {
                stream_id: 1,
                status: rst::FLOW_CONTROL_ERROR,
                ..
            })
        ));
        // a header block that decompresses past the bound
        let mut w = FrameWriter::new();
        let mut wire = Vec::new();
        w.encode(
            &Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![("x".into(), "y".repeat(MAX_HEADER_BLOCK))],
            },
            &mut wire,
        );
        assert!(matches!(
            FrameReader::new().parse(&wire),
            Err(FrameError::Session { .. })
        ));
        // too many pairs
        let many: Headers = (0..=MAX_HEADERS)
            .map(|i| (format!("h{i}"), String::new()))
            .collect();
        let mut wire = Vec::new();
        FrameWriter::new().encode(
            &Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: many,
            },
            &mut wire,
        );
        assert!(FrameReader::new().parse(&wire).is_err());
    }
}
