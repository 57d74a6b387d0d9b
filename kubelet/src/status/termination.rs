//! A terminated container's message: the file bound at its `terminationMessagePath`, or with
//! `terminationMessagePolicy: FallbackToLogsOnError` and a failed container whose file is
//! empty, the tail of its log (upstream `getTerminationMessage` and
//! `readLastStringFromContainerLogs` in `kuberuntime_container.go`; the limits are
//! `kubecontainer`'s constants, and the per-pod share is the status manager's
//! `normalizeStatus`).
//!
//! The container writes both files, so both are read with `saferead`: regular files only,
//! never followed through a symlink, and never more than the cap from their end. A container
//! that writes 20 GB to `/dev/termination-log` costs the agent a 4 KiB read per status.

use std::path::Path;

use kubenode_runtime::host::saferead::{open_regular, read_tail};

use crate::api::{render, LogOptions};

/// At most this much of the termination message file is read: its last 4 KiB
/// (upstream `MaxContainerTerminationMessageLength`).
pub const MAX_MESSAGE_LENGTH: u64 = 4 * 1024;
/// All containers of a pod share this many bytes of message, evenly
/// (upstream `MaxPodTerminationMessageLogLength`).
pub const MAX_POD_MESSAGE_LENGTH: usize = 12 * 1024;
/// From the log, at most the last 2 KiB (upstream `MaxContainerTerminationMessageLogLength`) ...
pub const MAX_LOG_MESSAGE_LENGTH: usize = 2 * 1024;
/// ... of the last 80 lines (upstream `MaxContainerTerminationMessageLogLines`).
pub const MAX_LOG_MESSAGE_LINES: usize = 80;
/// The raw CRI log read from its end to find those lines: enough for 80 lines of 2 KiB of
/// text with their ~40-byte CRI prefixes, never the whole file.
const LOG_READ: u64 = 32 * 1024;

/// Where a terminated container's message comes from.
#[derive(Debug, Clone, Copy)]
pub struct MessageSource<'a> {
    /// The host file bound at its `terminationMessagePath`.
    pub file: &'a Path,
    /// Its CRI log file.
    pub log: &'a Path,
    /// `terminationMessagePolicy: FallbackToLogsOnError`.
    pub fallback_to_logs: bool,
    /// Its exit code.
    pub exit_code: i32,
    /// It never ran (`StartError`): no log to fall back to.
    pub start_error: bool,
    /// Containers and init containers in the pod (the pod-wide share divides by it).
    pub containers_in_pod: usize,
}

/// The message, or `None` when there is none.
pub fn termination_message(src: &MessageSource<'_>) -> Option<String> {
    let fallback = src.fallback_to_logs && src.exit_code != 0 && !src.start_error;
    let from_file = match open_regular(src.file)
        .and_then(|mut f| read_tail(&mut f, src.file, MAX_MESSAGE_LENGTH))
    {
        Ok((data, _)) => data,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Some(e.to_string()).map(|m| share(m, src)),
    };
    let text = if from_file.is_empty() && fallback {
        log_tail(src.log)
    } else {
        String::from_utf8_lossy(&from_file).into_owned()
    };
    (!text.is_empty()).then(|| share(text, src))
}

/// The pod-wide limit: each container's message keeps its first 12 KiB / containers bytes.
fn share(mut text: String, src: &MessageSource<'_>) -> String {
    let max = MAX_POD_MESSAGE_LENGTH / src.containers_in_pod.max(1);
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The last 80 lines of the log, at most their last 2 KiB, as `kubectl logs` shows them.
fn log_tail(log: &Path) -> String {
    let (raw, cut) = match open_regular(log).and_then(|mut f| read_tail(&mut f, log, LOG_READ)) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return String::new(),
        Err(e) => return format!("Error on reading termination message from logs: {e}"),
    };
    // A read that starts mid-file starts mid-line: drop that fragment.
    let raw = match (cut, raw.iter().position(|b| *b == b'\n')) {
        (true, Some(nl)) => &raw[nl + 1..],
        (true, None) => &[][..],
        (false, _) => &raw[..],
    };
    let opts = LogOptions {
        tail_lines: Some(MAX_LOG_MESSAGE_LINES),
        ..LogOptions::default()
    };
    let text = render(raw, &opts);
    let start = text.len().saturating_sub(MAX_LOG_MESSAGE_LENGTH);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn src<'a>(file: &'a Path, log: &'a Path) -> MessageSource<'a> {
        MessageSource {
            file,
            log,
            fallback_to_logs: false,
            exit_code: 1,
            start_error: false,
            containers_in_pod: 1,
        }
    }

    #[test]
    fn the_last_4_kib_of_a_huge_file_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("termination-log");
        // 64 MiB of 'x' (sparse-free but quick), then the real message at the end.
        let mut f = std::fs::File::create(&file).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            f.write_all(&chunk).unwrap();
        }
        let mut tail = vec![b'y'; 4096 - 4];
        tail.extend_from_slice(b"done");
        f.write_all(&tail).unwrap();
        drop(f);
        let msg = termination_message(&src(&file, Path::new("/nonexistent"))).unwrap();
        assert_eq!(msg.len(), 4096);
        assert!(
            msg.starts_with("yyyy") && msg.ends_with("done"),
            "{}",
            &msg[..16]
        );
    }

    #[test]
    fn the_pod_shares_12_kib() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("termination-log");
        std::fs::write(&file, "é".repeat(3000)).unwrap(); // 6000 bytes
        let mut s = src(&file, Path::new("/nonexistent"));
        s.containers_in_pod = 5; // 12288 / 5 = 2457 bytes each, cut at a char boundary
        let msg = termination_message(&s).unwrap();
        assert_eq!(msg.len(), 2456);
        assert!(msg.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_fifo_or_symlink_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let msg = termination_message(&src(&fifo, Path::new("/nonexistent"))).unwrap();
        assert!(msg.contains("is a FIFO"), "{msg}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        let msg = termination_message(&src(&link, Path::new("/nonexistent"))).unwrap();
        assert!(msg.contains("is a symlink"), "{msg}");
    }

    fn cri_log(lines: usize, text: &str) -> String {
        (0..lines)
            .map(|i| format!("2026-12-04T10:00:00.{i:09}Z stderr F {text}{i}\n"))
            .collect()
    }

    #[test]
    fn fallback_to_logs_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("termination-log");
        std::fs::write(&file, "").unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(&log, cri_log(100, "line ")).unwrap();
        let mut s = src(&file, &log);
        // Policy File: an empty file is no message.
        assert_eq!(termination_message(&s), None);
        s.fallback_to_logs = true;
        let msg = termination_message(&s).unwrap();
        let want: String = (20..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(msg, want, "the last 80 lines, as kubectl logs shows them");
        // Only after a failure, and only when the file is empty.
        s.exit_code = 0;
        assert_eq!(termination_message(&s), None);
        s.exit_code = 2;
        s.start_error = true;
        assert_eq!(termination_message(&s), None);
        s.start_error = false;
        std::fs::write(&file, "from the file").unwrap();
        assert_eq!(termination_message(&s).unwrap(), "from the file");
        // Long lines: the last 2 KiB only, of a log far longer than what is read.
        std::fs::write(&file, "").unwrap();
        std::fs::write(&log, cri_log(2000, &"z".repeat(500))).unwrap();
        let msg = termination_message(&s).unwrap();
        assert_eq!(msg.len(), MAX_LOG_MESSAGE_LENGTH);
        assert!(msg.ends_with(&format!("{}1999\n", "z".repeat(500))));
    }
}
