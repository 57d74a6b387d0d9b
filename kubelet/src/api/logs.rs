//! Reading CRI-format container logs (`<RFC3339Nano> <stdout|stderr> <P|F> <text>`), as
//! `kubectl logs` shows them: partial (`P`) fragments joined into one line, optional timestamps,
//! the last N lines, lines since a time, at most N bytes.
//!
//! A log is never read whole: `tailLines` finds its starting offset by reading the file
//! backwards in blocks (as the kubelet's `tail.FindTailLineStartIndex`), and the rest is read
//! forward in blocks and rendered as it goes ([`LogStream`]), so a request costs a few blocks of
//! memory whatever the file's size.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use k8s_openapi::jiff::Timestamp;

/// Size of one read, forwards or backwards.
pub(crate) const BLOCK: usize = 64 * 1024;
/// Longest raw line kept. The shim splits output at 16 KiB of text; a longer "line" is not
/// something it wrote and is skipped rather than buffered.
pub(crate) const MAX_RAW_LINE: usize = 64 * 1024;

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// The RFC 3339 timestamp as written.
    pub timestamp: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Whether this fragment ends the line (`F`) or continues in the next (`P`).
    pub full: bool,
    /// The text, without the newline.
    pub text: &'a [u8],
}

impl<'a> CriLine<'a> {
    /// Parses one line (without its trailing newline); `None` when it is not in CRI format.
    pub fn parse(line: &'a [u8]) -> Option<CriLine<'a>> {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let timestamp = std::str::from_utf8(parts.next()?).ok()?;
        let stream = std::str::from_utf8(parts.next()?).ok()?;
        let tag = parts.next()?;
        let text = parts.next().unwrap_or_default();
        if stream != "stdout" && stream != "stderr" {
            return None;
        }
        let full = match tag.first()? {
            b'F' => true,
            b'P' => false,
            _ => return None,
        };
        Some(CriLine {
            timestamp,
            stream,
            full,
            text,
        })
    }
}

/// What to read (the kubelet's `PodLogOptions`, the parts a file read needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Prefix every line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines written at or after this time (`sinceTime`, or now minus `sinceSeconds`).
    pub since: Option<Timestamp>,
    /// Stop after this many bytes of output (`limitBytes`).
    pub limit_bytes: Option<u64>,
}

/// Renders raw CRI lines into what a user reads, one line at a time: fragments are written as
/// they come (a timestamp only before a line's first one), a line older than `since` is skipped
/// whole, and output stops at `limit_bytes`.
#[derive(Debug)]
pub struct LogStream {
    opts: LogOptions,
    at_line_start: bool,
    skipping: bool,
    written: u64,
}

impl LogStream {
    /// A stream at the start of a line.
    pub fn new(opts: LogOptions) -> LogStream {
        LogStream {
            opts,
            at_line_start: true,
            skipping: false,
            written: 0,
        }
    }

    /// Whether `limit_bytes` has been reached: nothing more will be written.
    pub fn done(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// Appends the rendering of one raw line (without its newline) to `out`. Lines not in CRI
    /// format are skipped.
    pub fn line(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let Some(line) = CriLine::parse(raw) else {
            return;
        };
        let start = out.len();
        if self.at_line_start {
            // The kubelet compares each message's own time; a line is judged by its first
            // fragment. An unreadable timestamp is shown rather than dropped.
            self.skipping = self
                .opts
                .since
                .is_some_and(|since| line.timestamp.parse::<Timestamp>().is_ok_and(|t| t < since));
            if !self.skipping && self.opts.timestamps {
                out.extend_from_slice(line.timestamp.as_bytes());
                out.push(b' ');
            }
        }
        if !self.skipping {
            out.extend_from_slice(line.text);
            if line.full {
                out.push(b'\n');
            }
        }
        self.at_line_start = line.full;
        self.limit(out, start);
    }

    /// Cuts what was just appended (from `start`) at the byte limit.
    fn limit(&mut self, out: &mut Vec<u8>, start: usize) {
        let added = (out.len() - start) as u64;
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.written);
            if added > room {
                out.truncate(start + room as usize);
            }
        }
        self.written += (out.len() - start) as u64;
    }
}

/// Splits `data` into complete raw lines fed to `stream`, keeping an unfinished last line in
/// `carry` (bounded by [`MAX_RAW_LINE`]; a longer one is dropped up to its newline).
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    carry: Vec<u8>,
    discarding: bool,
}

impl LineSplitter {
    pub(crate) fn feed(&mut self, data: &[u8], stream: &mut LogStream, out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = (&rest[..i], &rest[i + 1..]);
            if !self.discarding && self.carry.len() + line.len() <= MAX_RAW_LINE {
                if self.carry.is_empty() {
                    stream.line(line, out);
                } else {
                    self.carry.extend_from_slice(line);
                    stream.line(&self.carry, out);
                }
            }
            self.discarding = false;
            self.carry.clear();
            rest = tail;
        }
        if !self.discarding {
            self.carry.extend_from_slice(rest);
            if self.carry.len() > MAX_RAW_LINE {
                self.carry.clear();
                self.discarding = true;
            }
        }
    }

    /// The unfinished last line, rendered as is (a container may still be writing it).
    pub(crate) fn finish(&mut self, stream: &mut LogStream, out: &mut Vec<u8>) {
        if !self.discarding && !self.carry.is_empty() {
            let last = std::mem::take(&mut self.carry);
            stream.line(&last, out);
        }
    }

    /// Forgets a partial line (the file was truncated or replaced).
    pub(crate) fn reset(&mut self) {
        self.carry.clear();
        self.discarding = false;
    }
}

/// The offset where the last `n` lines of a CRI log of `len` bytes start, found by reading
/// backwards from the end in blocks. A line is a logical line: its `P` fragments and the `F` that
/// ends it; an unfinished line at the end counts as one. Lines not in CRI format do not count.
pub fn tail_start<F: Read + Seek>(f: &mut F, len: u64, n: usize) -> std::io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    // Walks raw lines from the end. `end` is the offset just past the line being assembled
    // (past its newline); `head` holds the first bytes of the line that starts after the newline
    // found last, enough to read its fields.
    const HEAD: usize = 64;
    let mut lines = 0usize;
    let mut trailing = true; // no `F` seen yet: fragments here are the unfinished last line
    let mut pos = len;
    let mut line_end = len; // end (exclusive) of the raw line whose start is being looked for
    let mut later: Vec<u8> = Vec::new(); // bytes from the current block's end onwards (≤ HEAD)
    let mut buf = vec![0u8; BLOCK];
    // Judges the raw line starting at `start` whose first bytes are `head`; returns the offset
    // to start from when enough lines have been seen.
    let mut judge = |head: &[u8], line_end: u64| -> Option<u64> {
        let head = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = CriLine::parse(head)?;
        if line.full {
            if lines >= n {
                return Some(line_end);
            }
            lines += 1;
            trailing = false;
        } else if trailing {
            lines += 1;
            trailing = false;
        }
        None
    };
    while pos > 0 {
        let size = (pos.min(BLOCK as u64)) as usize;
        pos -= size as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..size])?;
        let block = &buf[..size];
        let mut i = size;
        while let Some(nl) = block[..i].iter().rposition(|b| *b == b'\n') {
            // A raw line starts at pos + nl + 1 and ends at line_end.
            let start = nl + 1;
            let mut head: Vec<u8> = block[start..size.min(start + HEAD)].to_vec();
            if head.len() < HEAD && start + head.len() == size {
                head.extend_from_slice(&later[..later.len().min(HEAD - head.len())]);
            }
            let this_end = line_end;
            line_end = pos + start as u64;
            if this_end > line_end {
                if let Some(offset) = judge(&head, this_end) {
                    return Ok(offset);
                }
            }
            i = nl;
        }
        let mut next_later = block[..size.min(HEAD)].to_vec();
        if next_later.len() < HEAD {
            next_later.extend_from_slice(&later[..later.len().min(HEAD - next_later.len())]);
        }
        later = next_later;
    }
    // The first line of the file.
    if line_end > 0 {
        if let Some(offset) = judge(&later, line_end) {
            return Ok(offset);
        }
    }
    Ok(0)
}

/// Reads a CRI log file and renders it with `opts`, reading only what it needs (see
/// [`tail_start`]). A missing file reads as empty: a container that has not written anything
/// yet has no log.
pub fn read_cri_log(path: &Path, opts: &LogOptions) -> std::io::Result<Vec<u8>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = match opts.tail_lines {
        Some(n) => tail_start(&mut f, len, n)?,
        None => 0,
    };
    f.seek(SeekFrom::Start(start))?;
    let mut stream = LogStream::new(opts.clone());
    let mut split = LineSplitter::default();
    let mut out = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 || stream.done() {
            break;
        }
        split.feed(&buf[..n], &mut stream, &mut out);
    }
    split.finish(&mut stream, &mut out);
    Ok(out)
}

/// Renders CRI log bytes held in memory (see [`LogStream`]); the same result as
/// [`read_cri_log`] on a file holding `data`.
pub fn render(data: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(data);
    let start = match opts.tail_lines {
        Some(n) => tail_start(&mut cursor, data.len() as u64, n).unwrap_or(0),
        None => 0,
    };
    let mut stream = LogStream::new(opts.clone());
    let mut split = LineSplitter::default();
    let mut out = Vec::new();
    split.feed(&data[start as usize..], &mut stream, &mut out);
    split.finish(&mut stream, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-28T01:00:00.000000001Z stdout F hello\n\
                       2026-11-28T01:00:01.000000000Z stderr P par\n\
                       2026-11-28T01:00:01.500000000Z stderr F tial\n\
                       2026-11-28T01:00:02.000000000Z stdout F \n\
                       2026-11-28T01:00:03.000000000Z stdout F last\n";

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn joins_partials_and_keeps_empty_lines() {
        let out = render(LOG.as_bytes(), &LogOptions::default());
        assert_eq!(text(out), "hello\npartial\n\nlast\n");
    }

    #[test]
    fn timestamps_prefix_each_logical_line_once() {
        let opts = LogOptions {
            timestamps: true,
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(
            text(render(LOG.as_bytes(), &opts)),
            "2026-11-28T01:00:02.000000000Z \n2026-11-28T01:00:03.000000000Z last\n"
        );
    }

    #[test]
    fn tail_counts_logical_lines() {
        let tail = |n: usize, data: &str| {
            text(render(
                data.as_bytes(),
                &LogOptions {
                    tail_lines: Some(n),
                    ..Default::default()
                },
            ))
        };
        assert_eq!(tail(3, LOG), "partial\n\nlast\n");
        assert_eq!(tail(4, LOG), "hello\npartial\n\nlast\n");
        assert_eq!(tail(40, LOG), "hello\npartial\n\nlast\n");
        // An unfinished line at the end is one line.
        let open = format!("{LOG}t stdout P more\nt stdout P still");
        assert_eq!(tail(1, &open), "morestill");
        assert_eq!(tail(2, &open), "last\nmorestill");
        // Garbage does not count; no trailing newline is fine.
        assert_eq!(tail(1, "t stdout F a\njunk\n\nt stdout F b"), "b\n");
        assert_eq!(tail(2, "t stdout F a\njunk\n\nt stdout F b"), "a\nb\n");
    }

    #[test]
    fn tail_crosses_block_boundaries() {
        // Lines of varied length around the block size, so newlines and line heads fall on
        // both sides of block edges.
        let mut data = String::new();
        let mut want = Vec::new();
        for i in 0..400 {
            let body = "x".repeat((i * 997) % 3000);
            let line = format!("2026-11-28T01:00:00Z stdout F {i} {body}\n");
            want.push(format!("{i} {body}\n"));
            data.push_str(&line);
        }
        for n in [1, 2, 7, 64, 399, 400, 401] {
            let got = render(
                data.as_bytes(),
                &LogOptions {
                    tail_lines: Some(n),
                    ..Default::default()
                },
            );
            let expect: String = want[want.len().saturating_sub(n)..].concat();
            assert_eq!(text(got), expect, "tail {n}");
        }
    }

    #[test]
    fn since_and_limit_bytes() {
        let since = |t: &str| LogOptions {
            since: Some(t.parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            text(render(LOG.as_bytes(), &since("2026-11-28T01:00:01Z"))),
            "partial\n\nlast\n"
        );
        assert_eq!(
            text(render(LOG.as_bytes(), &since("2026-11-28T01:00:01.2Z"))),
            "\nlast\n",
            "a line is judged by its first fragment"
        );
        assert_eq!(
            text(render(LOG.as_bytes(), &since("2026-11-28T01:00:02Z"))),
            "\nlast\n"
        );
        let limit = LogOptions {
            limit_bytes: Some(8),
            ..Default::default()
        };
        assert_eq!(text(render(LOG.as_bytes(), &limit)), "hello\npa");
    }

    #[test]
    fn tail_zero_and_garbage() {
        let opts = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert!(render(LOG.as_bytes(), &opts).is_empty());
        let out = render(
            b"not a cri line\n2026 stdout F ok\n",
            &LogOptions::default(),
        );
        assert_eq!(out, b"ok\n");
    }

    #[test]
    fn unfinished_fragment_is_shown() {
        let out = render(b"t stdout P abc", &LogOptions::default());
        assert_eq!(out, b"abc");
    }

    #[test]
    fn overlong_raw_lines_are_skipped() {
        let mut data = b"t stdout F before\nt stdout F ".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_RAW_LINE + 10));
        data.extend_from_slice(b"\nt stdout F after\n");
        let mut stream = LogStream::new(LogOptions::default());
        let mut split = LineSplitter::default();
        let mut out = Vec::new();
        for chunk in data.chunks(1000) {
            split.feed(chunk, &mut stream, &mut out);
        }
        split.finish(&mut stream, &mut out);
        assert_eq!(text(out), "before\nafter\n");
    }

    #[test]
    fn missing_file_is_empty() {
        let out = read_cri_log(Path::new("/nonexistent/0.log"), &LogOptions::default()).unwrap();
        assert!(out.is_empty());
    }
}
