//! SPDY/3.1, as Kubernetes streams exec, attach and port-forward between kubectl, the API
//! server and the kubelet (upstream's `httpstream/spdy` on moby/spdystream), written small
//! against the draft 3.1 spec:
//!
//! - [`frame`]: the frames, their parser ([`FrameReader`], pure and fuzzed) and writer
//!   ([`FrameWriter`]), header blocks compressed with one zlib context per direction and the
//!   SPDY/3 dictionary; bounds: frames at most [`MAX_FRAME`] bytes, header blocks at most
//!   [`frame::MAX_HEADER_BLOCK`] decompressed and [`frame::MAX_HEADERS`] pairs;
//! - [`Connection`]: streams over an upgraded connection, the server side (the kubelet) and
//!   the client side (the API server's stand-in, tests);
//! - [`ReadAhead`]: large socket reads under a client's TLS (rustls reads 4 KiB at a time);
//! - the upgrade's HTTP names ([`UPGRADE`], [`PROTOCOL_VERSION_HEADER`], ...).

pub mod conn;
pub mod frame;
pub mod readahead;

/// The buffers of the API: data read is [`Bytes`], a connection's read buffer [`BytesMut`].
pub use bytes::{Bytes, BytesMut};
pub use conn::{
    Config, Connection, Incoming, Role, Stream, StreamReader, StreamWriter, COPY_CHUNK,
};
pub use frame::{Frame, FrameError, FrameReader, FrameWriter, Headers, MAX_FRAME};
pub use readahead::{ReadAhead, READ_AHEAD};

/// The `Upgrade` token of a SPDY/3.1 connection.
pub const UPGRADE: &str = "SPDY/3.1";
/// The request header listing the client's stream protocols (one value each, in order of
/// preference) and the 101's header naming the one chosen (upstream's
/// `httpstream.HeaderProtocolVersion`).
pub const PROTOCOL_VERSION_HEADER: &str = "X-Stream-Protocol-Version";
/// The header of a refused negotiation listing the server's protocols (upstream's
/// `HeaderAcceptedProtocolVersions`).
pub const ACCEPTED_PROTOCOL_VERSIONS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";
/// The stream header naming a stream's role (`error`, `stdin`, `stdout`, `stderr`, `resize`;
/// port-forward's `error`, `data`).
pub const STREAM_TYPE_HEADER: &str = "streamType";

/// Upstream's `httpstream.Handshake` choice: the first of the client's protocols (in its
/// order) that the server supports; `Err` carries upstream's message when none is.
/// `client`: the values of [`PROTOCOL_VERSION_HEADER`] (each may be a comma-separated list).
pub fn negotiate<'a>(client: &[&'a str], server: &[&str]) -> Result<&'a str, String> {
    let offered: Vec<&str> = client
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if offered.is_empty() {
        return Err(format!(
            "unable to upgrade: {PROTOCOL_VERSION_HEADER} is required"
        ));
    }
    offered
        .iter()
        .find(|c| server.contains(c))
        .copied()
        .ok_or_else(|| {
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                offered.join(" "),
                server.join(" ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn negotiation_as_upstream() {
        let server = ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"];
        assert_eq!(
            negotiate(&["v5.channel.k8s.io", "v4.channel.k8s.io"], &server),
            Ok("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&["channel.k8s.io, v3.channel.k8s.io"], &server),
            Ok("channel.k8s.io")
        );
        assert!(negotiate(&[], &server).unwrap_err().contains("is required"));
        assert!(negotiate(&["x"], &server)
            .unwrap_err()
            .contains("unable to negotiate protocol"));
    }

    /// A client and a server over an in-memory pipe: a stream each way's data, FIN, reset.
    #[tokio::test]
    async fn connection_round_trip() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _) = Connection::start(a, Role::Client, Config::default());
        let (server, mut incoming) = Connection::start(b, Role::Server, Config::default());
        let serve = tokio::spawn(async move {
            let s = incoming.recv().await.unwrap();
            assert_eq!(s.header("streamType"), Some("stdin"));
            let (mut r, w) = s.split();
            let got = r.read_to_end(1 << 22).await;
            w.write(&got).await.unwrap();
            w.close().await;
            // a second stream: reset by the server
            let s = incoming.recv().await.unwrap();
            s.split().1.reset().await;
            server
        });
        let s = client
            .open_stream(vec![("streamtype".into(), "stdin".into())])
            .await
            .unwrap();
        assert_eq!(s.id(), 1);
        let (mut r, w) = s.split();
        let big = vec![7u8; 3 * MAX_FRAME / 2];
        w.write(b"hello ").await.unwrap();
        w.write(&big).await.unwrap();
        w.close().await;
        assert!(w.write(b"late").await.is_err(), "a write after FIN");
        let echoed = r.read_to_end(1 << 22).await;
        assert_eq!(&echoed[..6], b"hello ");
        assert_eq!(echoed.len(), 6 + big.len());
        let s = client
            .open_stream(vec![("streamtype".into(), "x".into())])
            .await
            .unwrap();
        assert_eq!(s.id(), 3);
        let (mut r, _) = s.split();
        assert_eq!(r.read().await, None);
        let server = serve.await.unwrap();
        server.close().await;
        tokio::time::timeout(Duration::from_secs(10), client.closed())
            .await
            .unwrap();
    }

    /// Bad input from the peer: a DATA frame for a stream never opened is answered with
    /// RST_STREAM INVALID_STREAM; garbage ends the session with GOAWAY PROTOCOL_ERROR.
    #[tokio::test]
    async fn bad_input_is_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut peer, b) = tokio::io::duplex(1 << 16);
        let (_server, _incoming) = Connection::start(b, Role::Server, Config::default());
        let mut w = FrameWriter::new();
        let mut wire = Vec::new();
        w.encode(
            &Frame::Data {
                stream_id: 9,
                flags: 0,
                data: bytes::Bytes::from_static(b"x"),
            },
            &mut wire,
        );
        wire.extend_from_slice(&[0x80, 3, 0, 6, 0, 0, 0, 3, 1, 2, 3]);
        peer.write_all(&wire).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let mut r = FrameReader::new();
        let (f, n) = r.parse(&got).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::RstStream {
                stream_id: 9,
                status: frame::rst::INVALID_STREAM
            }
        );
        let (f, _) = r.parse(&got[n..]).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::GoAway {
                last_good_stream_id: 0,
                status: frame::goaway::PROTOCOL_ERROR
            }
        );
    }

    /// Streams over the bound are refused (RST_STREAM REFUSED_STREAM); a connection with no
    /// frame either way for the idle timeout closes.
    #[tokio::test(start_paused = true)]
    async fn bounds_and_idle_timeout() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let config = Config {
            idle_timeout: Duration::from_secs(60),
            max_streams: 2,
        };
        let (client, _) = Connection::start(a, Role::Client, Config::default());
        let (_server, mut incoming) = Connection::start(b, Role::Server, config);
        let h = || vec![("streamtype".to_string(), "data".to_string())];
        let _one = client.open_stream(h()).await.unwrap();
        let _two = client.open_stream(h()).await.unwrap();
        let refused = client.open_stream(h()).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(refused.to_string().contains("status 3"), "{refused}");
        assert!(incoming.recv().await.is_some() && incoming.recv().await.is_some());
        // nothing more: the server's idle timeout closes the connection
        tokio::time::timeout(Duration::from_secs(3600), client.closed())
            .await
            .expect("the idle connection closed");
    }

    /// Streams opened at once from many tasks reach the peer in id order (the peer refuses an
    /// id lower than one it saw, a session error).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opens() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _) = Connection::start(a, Role::Client, Config::default());
        let (_server, mut incoming) = Connection::start(b, Role::Server, Config::default());
        tokio::spawn(async move { while incoming.recv().await.is_some() {} });
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move {
                    c.open_stream(vec![("streamtype".into(), "data".into())])
                        .await
                        .map(|s| s.id())
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }
}
