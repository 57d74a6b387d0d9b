//! [`ReadAhead`]: large reads of the socket under a TLS stream, for a client reading a lot.
//!
//! rustls reads its socket at most 4 KiB at a time (its deframer's read size), so a TLS
//! connection carrying a gigabyte makes a quarter of a million read system calls. Put under
//! the TLS layer, [`ReadAhead`] reads the socket up to [`READ_AHEAD`] bytes at once and hands
//! rustls its small reads from memory. Its buffer exists only while data flows: it is
//! allocated by a read and freed when the socket has nothing more to give (a read would
//! block), so idle connections hold none. Writes pass straight through. `portforward-bench`'s
//! clients read through it, as the API server's Go `crypto/tls` reads whole records (5 to 7%
//! less CPU per GiB received there); on the kubelet's :10250, whose reads are what clients
//! send, it measured no gain for port-forward uploads, so the kubelet does not use it.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read of the socket takes.
pub const READ_AHEAD: usize = 64 * 1024;

/// A byte stream whose reads are made [`READ_AHEAD`] bytes at a time (see the module).
#[derive(Debug)]
pub struct ReadAhead<T> {
    io: T,
    /// Empty while idle; `buf[pos..end]` is read and not yet handed out.
    buf: Box<[MaybeUninit<u8>]>,
    pos: usize,
    end: usize,
}

impl<T> ReadAhead<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Self {
        ReadAhead {
            io,
            buf: Box::new([]),
            pos: 0,
            end: 0,
        }
    }
    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.end {
            if out.remaining() >= READ_AHEAD {
                // as large as ours: straight into the caller's
                this.buf = Box::new([]);
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            if this.buf.is_empty() {
                this.buf = Box::new_uninit_slice(READ_AHEAD);
            }
            let mut rb = ReadBuf::uninit(&mut this.buf);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    // nothing more for now: an idle connection keeps no buffer
                    this.buf = Box::new([]);
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    this.pos = 0;
                    this.end = rb.filled().len();
                }
            }
        }
        let n = out.remaining().min(this.end - this.pos);
        // SAFETY: `buf[pos..end]` was initialized by the read that filled it
        let ready =
            unsafe { std::slice::from_raw_parts(this.buf[this.pos..].as_ptr().cast::<u8>(), n) };
        out.put_slice(ready);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Small reads through it see every byte in order, across its refills, whatever their
    /// size; a large read goes straight through; writes pass through.
    #[tokio::test]
    async fn reads_see_every_byte_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let sent: Vec<u8> = (0..3 * READ_AHEAD + 777).map(|i| (i * 7) as u8).collect();
        let data = sent.clone();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(10_000) {
                b.write_all(chunk).await.unwrap();
            }
            let mut back = [0u8; 2];
            b.read_exact(&mut back).await.unwrap();
            back
        });
        let mut r = ReadAhead::new(a);
        let mut got = Vec::new();
        let sizes = [1usize, 4096, 333, READ_AHEAD, 17];
        let mut i = 0;
        while got.len() < sent.len() {
            let mut buf = vec![0u8; sizes[i % sizes.len()]];
            i += 1;
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, sent);
        r.write_all(b"ok").await.unwrap();
        assert_eq!(&writer.await.unwrap(), b"ok");
        // the writer's end went away: EOF
        assert_eq!(r.read(&mut [0u8; 8]).await.unwrap(), 0);
    }
}
