//! The spec's error reply `{cniVersion, code, msg, details}` and its well-known codes.

use serde::{Deserialize, Serialize};

/// Spec error codes (SPEC.md "Error"). 100 and up are plugin specific.
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// First plugin-specific code: kubenode-bridge's netlink failures.
    pub const NETLINK: u32 = 100;
    /// kubenode-bridge: the address range is exhausted.
    pub const IPAM_EXHAUSTED: u32 = 101;
    /// kubenode-bridge: iptables failed.
    pub const IPTABLES: u32 = 102;
    /// kubenode-bridge: the interface already exists in the container.
    pub const INTERFACE_EXISTS: u32 = 103;
}

/// A plugin's error reply, exactly as printed on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginErrorReply {
    /// The spec version of the reply.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The error code (see [`codes`]).
    pub code: u32,
    /// A short message.
    #[serde(default)]
    pub msg: String,
    /// Longer details, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl std::fmt::Display for PluginErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}
