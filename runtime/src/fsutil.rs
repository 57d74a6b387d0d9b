//! Small file helpers: atomic writes, random ids, JSON files.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// Writes `data` to `path` atomically: a temporary file in the same
/// directory renamed over the target, so a reader sees the old or the new
/// content, never a mix, even when the writer is killed half-way.
///
/// There is no fsync: what must survive is the death of a process (agent or
/// shim), which leaves the page cache intact; after a machine crash every
/// container is gone anyway and recovery treats them as lost. Skipping it
/// saves several milliseconds per container start.
pub(crate) fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    {
        let mut f = fs::File::create(tmp)?;
        f.write_all(data)?;
    }
    fs::rename(tmp, path)
}

/// A random 32-hex-digit id (128 bits from the kernel's CSPRNG).
pub(crate) fn random_id() -> String {
    let mut buf = [0u8; 16];
    // /dev/urandom never blocks after boot and always exists on Linux.
    let read = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    hex::encode(buf)
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let data = fs::read(path)?;
    serde_json::from_slice(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    atomic_write(path, &data)
}
