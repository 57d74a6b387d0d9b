//! Reading CRI-format container logs (`<RFC3339Nano> <stdout|stderr> <P|F> <text>`), as
//! `kubectl logs` shows them: partial (`P`) fragments joined into one line, optional timestamps,
//! the last N lines.

use std::path::Path;

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

/// What to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Prefix every line with its RFC 3339 timestamp.
    pub timestamps: bool,
}

/// Turns CRI log bytes into what a user reads: whole lines, optionally timestamped. A trailing
/// fragment without its final `F` is kept (the container may still be writing it).
pub fn render(data: &[u8], opts: &LogOptions) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for raw in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(line) = CriLine::parse(raw) else {
            continue;
        };
        let buf = current.get_or_insert_with(|| {
            let mut b = Vec::new();
            if opts.timestamps {
                b.extend_from_slice(line.timestamp.as_bytes());
                b.push(b' ');
            }
            b
        });
        buf.extend_from_slice(line.text);
        if line.full {
            let mut done = current.take().unwrap_or_default();
            done.push(b'\n');
            lines.push(done);
        }
    }
    if let Some(rest) = current {
        lines.push(rest);
    }
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
}

/// Reads a CRI log file and renders it (see [`render`]). A missing file reads as empty: a
/// container that has not written anything yet has no log.
pub fn read_cri_log(path: &Path, opts: &LogOptions) -> std::io::Result<Vec<u8>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(render(&data, opts).concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-28T01:00:00.000000001Z stdout F hello\n\
                       2026-11-28T01:00:01.000000000Z stderr P par\n\
                       2026-11-28T01:00:01.500000000Z stderr F tial\n\
                       2026-11-28T01:00:02.000000000Z stdout F \n\
                       2026-11-28T01:00:03.000000000Z stdout F last\n";

    #[test]
    fn joins_partials_and_keeps_empty_lines() {
        let out = render(LOG.as_bytes(), &LogOptions::default()).concat();
        assert_eq!(String::from_utf8(out).unwrap(), "hello\npartial\n\nlast\n");
    }

    #[test]
    fn timestamps_prefix_each_logical_line_once() {
        let opts = LogOptions {
            timestamps: true,
            tail_lines: Some(2),
        };
        let out = String::from_utf8(render(LOG.as_bytes(), &opts).concat()).unwrap();
        assert_eq!(
            out,
            "2026-11-28T01:00:02.000000000Z \n2026-11-28T01:00:03.000000000Z last\n"
        );
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
        )
        .concat();
        assert_eq!(out, b"ok\n");
    }

    #[test]
    fn unfinished_fragment_is_shown() {
        let out = render(b"t stdout P abc", &LogOptions::default()).concat();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn missing_file_is_empty() {
        let out = read_cri_log(Path::new("/nonexistent/0.log"), &LogOptions::default()).unwrap();
        assert!(out.is_empty());
    }
}
