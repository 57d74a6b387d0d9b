//! The agent's configuration: a KubeletConfiguration-shaped YAML file
//! (`apiVersion: kubelet.config.k8s.io/v1beta1`, `kind:
//! KubeletConfiguration`) plus kubenode's own keys, overridden by explicit
//! command-line flags, with upstream defaults and the node directories of
//! docs/architecture.md ("On-disk state"). Upstream's keys that kubenode does not act on are
//! accepted and reported (`upstream.rs`), so that the file `kubeadm join` writes loads.
//!
//! This module is the one source of the node's default paths and values: the resolver, the
//! subcommands' flag defaults and the proxy wiring all read the constants below.

mod cidr;
mod file;
mod host;
mod node_ip;
pub mod node_labels;
pub mod reserved;
mod resolve;
pub mod server;
pub mod taints;
mod upstream;

pub use crate::duration::{format_duration, parse_duration, DurationError};
pub use cidr::{parse_cidr, CidrError, PortRange};
pub use file::{ConfigFile, API_VERSION, KIND};
pub use host::{Host, InterfaceInfo, SystemHost};
pub use node_ip::{choose_node_ip, parse_default_route_interface, NodeIpRule};
pub use resolve::{Config, Overrides};
pub use upstream::{is_upstream_key, unsupported_warning, UPSTREAM_KEYS};

use std::path::PathBuf;

/// Default static pod directory.
pub const DEFAULT_MANIFEST_DIR: &str = "/etc/kubenode/manifests";
/// Default configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/kubenode/config.yaml";
/// Default state directory.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubenode";
/// Default runtime directory (runc root, shim sockets, `kubenode.sock`).
pub const DEFAULT_RUN_DIR: &str = "/run/kubenode";
/// Default container log directory (CRI layout).
pub const DEFAULT_LOG_DIR: &str = "/var/log/pods";
/// Default CNI configuration directory.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Default CNI plugin directory.
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Plugins of the distribution's containernetworking-plugins package (Debian installs them
/// here), searched after the CNI plugin directory so that `portmap` can be chained.
pub const SYSTEM_CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The node API's unix socket, under the run directory.
pub const SOCKET_FILE: &str = "kubenode.sock";
/// The proxy's ClusterIP and NodePort allocations, under the root directory.
pub const PROXY_STATE_FILE: &str = "proxy/allocations.json";
/// The CNI result cache, under the root directory.
pub const CNI_CACHE_DIR: &str = "cni";
/// The default network's IP allocation store, under the root directory.
pub const CNI_NETWORKS_DIR: &str = "cni/networks";
/// Default OCI runtime (looked up in `PATH` when not absolute).
pub const DEFAULT_RUNTIME: &str = "runc";
/// Default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Default read-only port: 0, off. Upstream's KubeletConfiguration (v1beta1) defaults
/// `readOnlyPort` to 0; only its deprecated command-line flag still defaults to 10255. The port
/// is unauthenticated, so it stays off unless a configuration or `--read-only-port` asks for it.
pub const DEFAULT_READ_ONLY_PORT: u16 = 0;
/// Default health port, `healthzPort` (upstream's 10248; 0 turns it off).
pub const DEFAULT_HEALTHZ_PORT: u16 = 10248;
/// Default health port address, `healthzBindAddress` (upstream's `127.0.0.1`).
pub const DEFAULT_HEALTHZ_BIND_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;
/// Default maximum number of pods.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Default static pod re-read period.
pub const DEFAULT_FILE_CHECK_FREQUENCY: std::time::Duration = std::time::Duration::from_secs(20);
/// Default pod resync period.
pub const DEFAULT_SYNC_FREQUENCY: std::time::Duration = std::time::Duration::from_secs(60);
/// Default container log rotation size (`10Mi`).
pub const DEFAULT_CONTAINER_LOG_MAX_SIZE: &str = "10Mi";
/// Default number of container log files kept.
pub const DEFAULT_CONTAINER_LOG_MAX_FILES: u32 = 5;
/// Default NodePort range.
pub const DEFAULT_SERVICE_NODE_PORT_RANGE: &str = "30000-32767";
/// Default Service ClusterIP range when `serviceCIDR` is not set (kubeadm's default
/// `serviceSubnet`).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// Default of `failSwapOn`: the kubelet refuses to start on a host with swap on (upstream's
/// KubeletConfiguration v1beta1 defaults it to true).
pub const DEFAULT_FAIL_SWAP_ON: bool = true;
/// Default `podPidsLimit`: -1, no limit (upstream's default; `deploy/config.yaml` sets one).
pub const DEFAULT_POD_PIDS_LIMIT: i64 = -1;
/// Default resolver configuration for `dnsPolicy: Default`.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Errors while loading or resolving the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading configuration file {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML, or a value has the wrong type.
    #[error("parsing configuration file {file}: {source}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The YAML error.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// The file holds a key kubenode does not know.
    #[error("configuration file {file}: unknown key {key:?}")]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The unknown key.
        key: String,
    },
    /// A key has a value of the right type but not a valid one.
    #[error("configuration file {file}: {key}: {reason}")]
    InvalidValue {
        /// The file, or `flags` for a command-line value.
        file: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// No node IP was given and none could be chosen.
    #[error("choosing the node IP: {0}")]
    NodeIp(String),
    /// Reading the host's name or interfaces failed.
    #[error("reading {what} of this host: {source}")]
    Host {
        /// What was being read.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
