//! CRI-format container logs: `<RFC3339Nano> <stdout|stderr> <F|P> <text>\n`,
//! lines longer than 16 KiB split into `P` chunks like containerd, the file
//! rotated by size (`N.log` → `N.log.1` → ... keeping `max_files` files).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// containerd's `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(partial, line)` for each finished or full chunk.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(bool, &[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE - self.buf.len();
            let window = &data[..data.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    if self.buf.is_empty() {
                        emit(false, &window[..nl]);
                    } else {
                        self.buf.extend_from_slice(&window[..nl]);
                        emit(false, &self.buf);
                        self.buf.clear();
                    }
                    data = &data[nl + 1..];
                }
                None => {
                    self.buf.extend_from_slice(window);
                    data = &data[window.len()..];
                    if self.buf.len() == MAX_LINE {
                        emit(true, &self.buf);
                        self.buf.clear();
                    }
                }
            }
        }
    }

    /// At end of stream: a pending unterminated line is emitted as full.
    pub fn finish(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        if !self.buf.is_empty() {
            emit(false, &self.buf);
            self.buf.clear();
        }
    }
}

/// An RFC3339Nano UTC timestamp as Go's `time.RFC3339Nano` prints it.
pub fn timestamp() -> String {
    jiff::Timestamp::now().to_string()
}

/// A size-rotated CRI log file.
#[derive(Debug)]
pub struct CriLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    line: Vec<u8>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl CriLog {
    /// Opens (appends to) the log at `path`, creating its directory.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<CriLog> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open(path)?;
        let size = file.metadata()?.len();
        Ok(CriLog {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            line: Vec::with_capacity(256),
        })
    }

    /// Writes one log line.
    pub fn write(&mut self, stream: Stream, partial: bool, content: &[u8]) -> std::io::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(timestamp().as_bytes());
        self.line.push(b' ');
        self.line.extend_from_slice(stream.as_str().as_bytes());
        self.line
            .extend_from_slice(if partial { b" P " } else { b" F " });
        self.line.extend_from_slice(content);
        self.line.push(b'\n');
        if self.size > 0 && self.size + self.line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(&self.line) {
            // A line cut short (a full disk) would run into the next one: cut it off, so the
            // file holds whole lines only.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += self.line.len() as u64;
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        p.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        if self.max_files > 1 {
            let _ = fs::remove_file(self.rotated(self.max_files - 1));
            for n in (1..self.max_files - 1).rev() {
                let _ = fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            fs::rename(&self.path, self.rotated(1))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.file = open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Flushes the file to disk.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |p, l| out.push((p, l.to_vec())));
        }
        s.finish(&mut |p, l| out.push((p, l.to_vec())));
        out
    }

    #[test]
    fn lines_split_and_join() {
        assert_eq!(
            split(&[b"a\nb", b"c\n", b"d"]),
            vec![
                (false, b"a".to_vec()),
                (false, b"bc".to_vec()),
                (false, b"d".to_vec())
            ]
        );
        assert_eq!(split(&[b"\n"]), vec![(false, Vec::new())]);
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let out = split(&[&input]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], (true, vec![b'x'; MAX_LINE]));
        assert_eq!(out[1], (false, vec![b'x'; 10]));
    }

    #[test]
    fn log_lines_have_cri_format_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut log = CriLog::open(&path, 200, 3).unwrap();
        log.write(Stream::Stdout, false, b"hello").unwrap();
        log.write(Stream::Stderr, true, b"part").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let (ts, rest) = lines[0].split_once(' ').unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
        assert!(ts.ends_with('Z'));
        assert_eq!(rest, "stdout F hello");
        assert!(lines[1].ends_with(" stderr P part"));
        for _ in 0..20 {
            log.write(
                Stream::Stdout,
                false,
                b"0123456789012345678901234567890123456789",
            )
            .unwrap();
        }
        assert!(fs::metadata(&path).unwrap().len() <= 200);
        assert!(dir.path().join("c/0.log.1").exists());
        assert!(dir.path().join("c/0.log.2").exists());
        assert!(!dir.path().join("c/0.log.3").exists());
    }
}
