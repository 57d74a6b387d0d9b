//! The one `tracing` subscriber of the process.
//!
//! Level and filters come from `KUBENODE_LOG` (an `EnvFilter` directive such as `info` or
//! `kubenode_proxy=debug,info`; default `info`); `KUBENODE_LOG_FORMAT=json` switches to one JSON
//! object per line. Logs go to stderr, with ANSI colours only when stderr is a terminal (so the
//! journal gets plain text). When stderr is the systemd journal (`JOURNAL_STREAM` names
//! stderr's device and inode, see `systemd.exec(5)`), our own timestamp is left out: the journal
//! stamps every line itself.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init() -> anyhow::Result<()> {
    let filter = match std::env::var("KUBENODE_LOG") {
        Ok(spec) if !spec.is_empty() => {
            EnvFilter::try_new(&spec).with_context(|| format!("invalid KUBENODE_LOG {spec:?}"))?
        }
        _ => EnvFilter::new("info"),
    };
    let json = match std::env::var("KUBENODE_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") | Ok("") | Err(_) => false,
        Ok(other) => anyhow::bail!("invalid KUBENODE_LOG_FORMAT {other:?}: expected text or json"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match (json, stderr_is_journal()) {
        (true, _) => builder.json().try_init(),
        (false, true) => builder.with_ansi(false).without_time().try_init(),
        (false, false) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is `DEVICE:INODE` of it.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    journal_stream_matches(&stream.to_string_lossy(), meta.dev(), meta.ino())
}

/// Whether a `JOURNAL_STREAM` value names the file with `dev` and `ino`.
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

#[cfg(test)]
mod tests {
    use super::journal_stream_matches;

    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("garbage", 8, 12345));
        assert!(!journal_stream_matches("", 0, 0));
    }
}
