//! The boundary to the host's packet filter: the [`Firewall`] trait, its real implementation
//! ([`IptablesFirewall`]: `iptables-restore` / `iptables-save` of the detected backend) and an
//! in-memory one that records calls and models restore semantics, for tests.

mod exec;
mod memory;
mod real;

pub use memory::MemoryFirewall;
pub use real::{detect_mode, IptablesFirewall};

use crate::rules::Table;
use std::fmt;

/// Which iptables backend the host uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IptablesMode {
    /// `iptables-nft` (nf_tables kernel API).
    Nft,
    /// `iptables-legacy` (x_tables).
    Legacy,
}

impl fmt::Display for IptablesMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IptablesMode::Nft => "nft",
            IptablesMode::Legacy => "legacy",
        })
    }
}

/// A failure talking to the packet filter.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The command could not be run or timed out.
    #[error("running {command}")]
    Exec {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its standard error (trimmed).
        stderr: String,
    },
    /// An unknown backend name was configured.
    #[error("unknown iptables mode `{0}` (expected auto, nft or legacy)")]
    UnknownMode(String),
    /// Writing a sysctl failed.
    #[error("setting sysctl {key}")]
    Sysctl {
        /// The sysctl path.
        key: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The packet filter as the proxy uses it. Implementations must be usable from any thread.
pub trait Firewall: Send + Sync + fmt::Debug {
    /// The backend in use (logged once, used consistently).
    fn mode(&self) -> IptablesMode;
    /// Applies `input` in one `iptables-restore --noflush` transaction.
    fn restore(&self, input: &str) -> Result<(), FirewallError>;
    /// `iptables-save -t <table>` output.
    fn save(&self, table: Table) -> Result<String, FirewallError>;
    /// Whether `chain` exists in `table` (the canary check).
    fn chain_exists(&self, table: Table, chain: &str) -> Result<bool, FirewallError>;
    /// Sets `net.ipv4.conf.all.route_localnet=1` (only for NodePorts on 127.0.0.1).
    fn enable_route_localnet(&self) -> Result<(), FirewallError>;
}

/// Chain names declared in `iptables-save` output.
pub fn saved_chains(save: &str) -> Vec<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Runs a helper tool with a timeout: (success, stdout + stderr).
pub(crate) fn run_tool(
    program: &str,
    args: &[&str],
    timeout: std::time::Duration,
) -> std::io::Result<(bool, String)> {
    let out = exec::run(program, args, None, timeout)?;
    Ok((
        out.status.success(),
        format!("{}{}", out.stdout, out.stderr),
    ))
}
