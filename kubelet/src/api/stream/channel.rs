//! The channel subprotocols of upstream's WebSocket streams (`wsstream` in apimachinery): every
//! message carries one channel's data, prefixed by the channel number.
//!
//! - `channel.k8s.io` (and no subprotocol at all) and `v4.channel.k8s.io`,
//!   `v5.channel.k8s.io`: binary messages, the first byte is the channel;
//! - `base64.channel.k8s.io`, `v4.base64.channel.k8s.io`: text messages, the first character
//!   is `'0' + channel` and the rest is the data in standard base64;
//! - `v4` and later write a `metav1.Status` (JSON) on the error channel; `v5` adds the close
//!   signal: a message `[255, channel]` from the client closes that channel (stdin's EOF).
//!
//! Everything here is pure (no I/O), so that the demultiplexer ([`decode`]) can be fuzzed.

use base64::Engine;

/// Channel numbers of exec and attach (the POSIX file descriptors, then error and resize).
pub const STDIN: u8 = 0;
/// Standard output.
pub const STDOUT: u8 = 1;
/// Standard error.
pub const STDERR: u8 = 2;
/// The error channel: the final status.
pub const ERROR: u8 = 3;
/// Terminal resize events (`{"Width":..,"Height":..}`).
pub const RESIZE: u8 = 4;
/// v5's close signal (upstream's `remotecommand.StreamClose`).
pub const CLOSE_SIGNAL: u8 = 255;

/// A negotiated channel subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `channel.k8s.io`, or none asked for: binary; errors as plain text.
    V1,
    /// `base64.channel.k8s.io`: text, base64; errors as plain text.
    V1Base64,
    /// `v4.channel.k8s.io`: binary; the error channel carries a Status.
    V4,
    /// `v4.base64.channel.k8s.io`.
    V4Base64,
    /// `v5.channel.k8s.io`: as v4, plus the close signal.
    V5,
}

impl Protocol {
    /// The subprotocol's name (`""` for [`Protocol::V1`] when the client named none).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => "channel.k8s.io",
            Protocol::V1Base64 => "base64.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V4Base64 => "v4.base64.channel.k8s.io",
            Protocol::V5 => "v5.channel.k8s.io",
        }
    }

    /// Text frames of base64 data.
    pub fn is_base64(self) -> bool {
        matches!(self, Protocol::V1Base64 | Protocol::V4Base64)
    }

    /// The error channel carries a JSON `metav1.Status` (v4 and later), not plain text.
    pub fn status_errors(self) -> bool {
        matches!(self, Protocol::V4 | Protocol::V4Base64 | Protocol::V5)
    }

    /// The client may close one channel with [`CLOSE_SIGNAL`].
    pub fn supports_close(self) -> bool {
        self == Protocol::V5
    }
}

/// The subprotocols of exec and attach, as upstream's kubelet offers them.
pub const EXEC_PROTOCOLS: [Protocol; 5] = [
    Protocol::V5,
    Protocol::V4,
    Protocol::V4Base64,
    Protocol::V1,
    Protocol::V1Base64,
];

/// Picks the first subprotocol of the client's `Sec-WebSocket-Protocol` list (comma-separated
/// header values, in the client's order) that the server `supports`, as upstream's handshake.
/// No subprotocol asked for: the binary channel protocol (`""` in upstream's table), returned
/// as `Ok(None)` since the answer then names none. Otherwise upstream's error.
pub fn negotiate<'a>(
    requested: impl IntoIterator<Item = &'a str>,
    supports: &[Protocol],
) -> Result<Option<Protocol>, String> {
    let asked: Vec<&str> = requested
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if asked.is_empty() {
        return Ok(None);
    }
    for a in &asked {
        if let Some(p) = supports.iter().find(|p| p.name() == *a) {
            return Ok(Some(*p));
        }
    }
    let names: Vec<&str> = supports.iter().map(|p| p.name()).collect();
    Err(format!(
        "requested protocol(s) are not supported: [{}]; supports [{}]",
        asked.join(" "),
        names.join(" ")
    ))
}

/// One message from the client, demultiplexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Nothing (an empty message, which upstream skips).
    Empty,
    /// Data for a channel.
    Data {
        /// The channel.
        channel: u8,
        /// The data, decoded.
        data: Vec<u8>,
    },
    /// v5: the client closed its side of a channel.
    Close {
        /// The channel.
        channel: u8,
    },
}

/// Why a client message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    /// A base64 protocol's channel character is not a digit.
    #[error("channel character {0:#04x} is not a digit")]
    BadChannel(u8),
    /// A base64 protocol's data does not decode.
    #[error("invalid base64 data on channel {0}")]
    BadBase64(u8),
    /// A close signal not followed by exactly one channel byte (upstream closes the
    /// connection).
    #[error("single channel byte should follow stream close signal, got {0} bytes")]
    BadClose(usize),
    /// A message over the size limit.
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// The largest message a client may send (upstream's `golang.org/x/net/websocket` reads whole
/// messages; 1 MiB bounds ours).
pub const MAX_MESSAGE: usize = 1 << 20;

/// Demultiplexes one client message under `protocol`: its channel and its (decoded) data, or
/// v5's close signal.
pub fn decode(protocol: Protocol, message: &[u8]) -> Result<Inbound, DemuxError> {
    if message.len() > MAX_MESSAGE {
        return Err(DemuxError::TooLarge(message.len()));
    }
    let Some((&first, rest)) = message.split_first() else {
        return Ok(Inbound::Empty);
    };
    if protocol.supports_close() && first == CLOSE_SIGNAL {
        return match rest {
            [channel] => Ok(Inbound::Close { channel: *channel }),
            _ => Err(DemuxError::BadClose(rest.len())),
        };
    }
    if protocol.is_base64() {
        let channel = first
            .checked_sub(b'0')
            .filter(|c| *c <= 9)
            .ok_or(DemuxError::BadChannel(first))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| DemuxError::BadBase64(channel))?;
        return Ok(Inbound::Data { channel, data });
    }
    Ok(Inbound::Data {
        channel: first,
        data: rest.to_vec(),
    })
}

/// A server message: binary, or text for the base64 protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A binary message.
    Binary(Vec<u8>),
    /// A text message.
    Text(String),
}

/// Multiplexes `data` onto `channel` under `protocol`.
pub fn encode(protocol: Protocol, channel: u8, data: &[u8]) -> Outbound {
    if protocol.is_base64() {
        let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        s.push(char::from(b'0'.wrapping_add(channel)));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Outbound::Text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Outbound::Binary(v)
    }
}

/// A terminal size from the resize channel (upstream's `remotecommand.TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits the resize channel's byte stream into sizes (upstream decodes a stream of JSON
/// values): the complete sizes in `buf` are returned and removed; an invalid value is an
/// error (upstream stops reading resizes).
pub fn take_sizes(buf: &mut Vec<u8>) -> Result<Vec<TerminalSize>, String> {
    let mut out = Vec::new();
    let mut consumed = 0;
    {
        let mut it =
            serde_json::Deserializer::from_slice(buf.as_slice()).into_iter::<TerminalSize>();
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    out.push(s);
                    consumed = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(format!("resize: {e}")),
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
    }
    buf.drain(..consumed);
    if buf.len() > 4096 {
        return Err("resize: a size over 4096 bytes".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        assert_eq!(
            negotiate(["v5.channel.k8s.io, v4.channel.k8s.io"], &EXEC_PROTOCOLS),
            Ok(Some(Protocol::V5))
        );
        assert_eq!(
            negotiate(
                ["x", "v4.channel.k8s.io", "v5.channel.k8s.io"],
                &EXEC_PROTOCOLS
            ),
            Ok(Some(Protocol::V4))
        );
        assert_eq!(
            negotiate(["base64.channel.k8s.io"], &EXEC_PROTOCOLS),
            Ok(Some(Protocol::V1Base64))
        );
        assert_eq!(negotiate([], &EXEC_PROTOCOLS), Ok(None));
        assert_eq!(
            negotiate(["portforward.k8s.io"], &EXEC_PROTOCOLS),
            Err(
                "requested protocol(s) are not supported: [portforward.k8s.io]; supports \
                 [v5.channel.k8s.io v4.channel.k8s.io v4.base64.channel.k8s.io \
                 channel.k8s.io base64.channel.k8s.io]"
                    .into()
            )
        );
    }

    #[test]
    fn messages_demultiplex() {
        assert_eq!(decode(Protocol::V5, b""), Ok(Inbound::Empty));
        assert_eq!(
            decode(Protocol::V5, b"\x00foo\n"),
            Ok(Inbound::Data {
                channel: 0,
                data: b"foo\n".to_vec()
            })
        );
        assert_eq!(
            decode(Protocol::V5, &[255, 0]),
            Ok(Inbound::Close { channel: 0 })
        );
        assert_eq!(
            decode(Protocol::V5, &[255, 0, 1]),
            Err(DemuxError::BadClose(2))
        );
        // v4 has no close signal: 255 is a channel (ignored by the caller)
        assert_eq!(
            decode(Protocol::V4, &[255, 0]),
            Ok(Inbound::Data {
                channel: 255,
                data: vec![0]
            })
        );
        assert_eq!(
            decode(Protocol::V4Base64, b"0Zm9vCg=="),
            Ok(Inbound::Data {
                channel: 0,
                data: b"foo\n".to_vec()
            })
        );
        assert_eq!(
            decode(Protocol::V4Base64, b"0Zm9v!"),
            Err(DemuxError::BadBase64(0))
        );
        assert_eq!(
            decode(Protocol::V1Base64, b"xZm9v"),
            Err(DemuxError::BadChannel(b'x'))
        );
        assert_eq!(
            decode(Protocol::V5, &vec![1; MAX_MESSAGE + 1]),
            Err(DemuxError::TooLarge(MAX_MESSAGE + 1))
        );
    }

    #[test]
    fn messages_multiplex() {
        assert_eq!(
            encode(Protocol::V5, STDOUT, b"hi"),
            Outbound::Binary(b"\x01hi".to_vec())
        );
        assert_eq!(
            encode(Protocol::V4Base64, STDERR, b"\n"),
            Outbound::Text("2Cg==".into())
        );
        for p in EXEC_PROTOCOLS {
            let data = b"any \xff bytes".to_vec();
            let back = match encode(p, STDIN, &data) {
                Outbound::Binary(b) => decode(p, &b),
                Outbound::Text(t) => decode(p, t.as_bytes()),
            };
            assert_eq!(
                back,
                Ok(Inbound::Data {
                    channel: STDIN,
                    data
                })
            );
        }
    }

    #[test]
    fn resize_events_split_across_messages() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        assert_eq!(
            take_sizes(&mut buf),
            Ok(vec![TerminalSize {
                width: 80,
                height: 24
            }])
        );
        buf.extend_from_slice(br#"00,"Height":50}"#);
        assert_eq!(
            take_sizes(&mut buf),
            Ok(vec![TerminalSize {
                width: 100,
                height: 50
            }])
        );
        assert!(buf.is_empty());
        let mut bad = b"[1]".to_vec();
        assert!(take_sizes(&mut bad).is_err());
    }
}
