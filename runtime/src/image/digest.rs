//! sha256 digests: validation (they become file names) and hashing.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// Returns the hex part of a `sha256:<64 lowercase hex>` digest, or `Err(())`
/// when it is anything else. Digests name files in the store, so nothing but
/// this exact form is accepted.
pub(crate) fn hex_of(digest: &str) -> Result<&str, ()> {
    let hex = digest.strip_prefix("sha256:").ok_or(())?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex)
    } else {
        Err(())
    }
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A running sha256 with a byte count.
#[derive(Default)]
pub(crate) struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `sha256:<hex>` of everything seen so far.
    pub(crate) fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.sha.finalize()))
    }
}

/// A reader that hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads the rest of the stream (tar archives end before their padding)
    /// and returns the digest of all of it.
    pub(crate) fn drain_and_finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_sha256_digests_are_accepted() {
        let good = format!("sha256:{}", "a1".repeat(32));
        assert_eq!(hex_of(&good), Ok(&good[7..]));
        assert!(hex_of(&format!("sha256:{}", "A1".repeat(32))).is_err());
        assert!(hex_of("sha256:../../etc/passwd").is_err());
        assert!(hex_of(&format!("sha512:{}", "a1".repeat(32))).is_err());
        assert!(hex_of(&format!("sha256:{}", "a1".repeat(31))).is_err());
    }

    #[test]
    fn hashing_reader_sees_the_whole_stream() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.drain_and_finish().unwrap(), sha256_of(b"hello world"));
    }
}
