//! The one `tracing` subscriber of the process.
//!
//! Level and filters come from `KUBENODE_LOG` (an `EnvFilter` directive such as `info` or
//! `kubenode_proxy=debug,info`; default `info`); `KUBENODE_LOG_FORMAT=json` switches to one JSON
//! object per line. Logs go to stderr, with ANSI colours only when stderr is a terminal (so the
//! journal gets plain text).

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
    let result = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
