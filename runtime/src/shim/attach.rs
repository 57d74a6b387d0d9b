//! The attach socket: how the agent reaches a running container's standard streams, for
//! `kubectl attach` and `kubectl run -it`, as conmon's attach socket does for CRI-O.
//!
//! A container whose spec asks for `stdin` or `tty` gets one: the shim listens on
//! `<bundle>/attach` (a Unix stream socket, mode 0600) for its whole life. Every client sees
//! the container's output from the moment it connects, live, as the shim copies it into the
//! CRI log; what a client sends goes to the container's standard input (the write end of its
//! stdin pipe, or the terminal's master), and a terminal's size follows the client's resizes.
//!
//! The wire: frames of `[kind: u8][length: u32, big endian][payload]`, at most
//! [`MAX_FRAME`] bytes of payload.
//! - Shim to client: [`STDOUT`] and [`STDERR`] with output (a terminal's output is all
//!   [`STDOUT`]). The shim closes the connection once the container exited and its output
//!   is drained, or when the client fell more than [`MAX_BACKLOG`] bytes behind (a client
//!   must never stall the container's output or its log).
//! - Client to shim: [`STDIN`] with input; [`STDIN_CLOSE`] when the client's standard input
//!   ended, which closes the container's stdin when the container has `stdinOnce` and no
//!   terminal (containerd's `ContainerIO.Attach`), and is otherwise ignored; [`RESIZE`] with
//!   `[width: u16][height: u16]` (big endian), which sets the terminal's size.
//!
//! The bundle's path can be longer than a socket address holds (108 bytes), so the socket is
//! bound and reached through a descriptor of the bundle directory (`/proc/self/fd/N/attach`),
//! as conmon does.

use std::io;

/// The attach socket's name in the bundle.
pub const SOCKET: &str = "attach";
/// Output of the container's standard output (or of its terminal).
pub const STDOUT: u8 = 1;
/// Output of the container's standard error.
pub const STDERR: u8 = 2;
/// Input for the container's standard input.
pub const STDIN: u8 = 0x10;
/// The client's standard input ended.
pub const STDIN_CLOSE: u8 = 0x11;
/// A terminal size: `[width: u16][height: u16]`, big endian.
pub const RESIZE: u8 = 0x12;
/// The largest payload of one frame.
pub const MAX_FRAME: usize = 64 * 1024;
/// A client this many bytes behind the container's output is disconnected.
pub const MAX_BACKLOG: usize = 4 * 1024 * 1024;

/// Appends one frame to `out`.
pub fn encode(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    for chunk in payload.chunks(MAX_FRAME) {
        out.push(kind);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    if payload.is_empty() {
        out.push(kind);
        out.extend_from_slice(&0u32.to_be_bytes());
    }
}

/// Reassembles frames from a byte stream cut anywhere.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Takes bytes read from the socket.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if any; an error for a frame longer than [`MAX_FRAME`] (the
    /// peer breaks the protocol: close the connection).
    pub fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("attach frame of {len} bytes"),
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

/// Connects to the attach socket at `socket` (`<bundle>/attach`), whatever the length of its
/// path: through a descriptor of its directory.
pub fn connect(socket: &std::path::Path) -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::AsRawFd;
    let dir = socket.parent().unwrap_or(std::path::Path::new("."));
    let name = socket
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no socket name"))?;
    let dir = std::fs::File::open(dir)?;
    let via = std::path::Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    std::os::unix::net::UnixStream::connect(via)
}

/// The payload of a [`RESIZE`] frame.
pub fn resize_payload(width: u16, height: u16) -> [u8; 4] {
    let [w0, w1] = width.to_be_bytes();
    let [h0, h1] = height.to_be_bytes();
    [w0, w1, h0, h1]
}

/// Reads a [`RESIZE`] payload: `(width, height)`.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [w0, w1, h0, h1] => Some((
            u16::from_be_bytes([*w0, *w1]),
            u16::from_be_bytes([*h0, *h1]),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_cut() {
        let mut wire = Vec::new();
        encode(&mut wire, STDOUT, b"hello");
        encode(&mut wire, STDIN_CLOSE, b"");
        encode(&mut wire, RESIZE, &resize_payload(80, 24));
        let big = vec![7u8; MAX_FRAME + 3];
        encode(&mut wire, STDERR, &big);
        for cut in [1, 3, 5, 7, 4096] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(cut) {
                d.feed(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 5, "cut {cut}");
            assert_eq!(got[0], (STDOUT, b"hello".to_vec()));
            assert_eq!(got[1], (STDIN_CLOSE, Vec::new()));
            assert_eq!(parse_resize(&got[2].1), Some((80, 24)));
            assert_eq!(got[3].1.len(), MAX_FRAME);
            assert_eq!(got[4], (STDERR, vec![7u8; 3]));
        }
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut d = Decoder::default();
        d.feed(&[STDIN]);
        d.feed(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(d.next_frame().is_err());
        assert_eq!(parse_resize(&[1, 2, 3]), None);
    }
}
