//! The plugin's OS boundary: the network operations kubenode-bridge needs ([`NetOps`]), the
//! states it reads back, and [`NetError`], which turns errnos into messages that say what was done
//! to what. The rtnetlink implementation is in `rtnl.rs`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

/// A network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The pod's network namespace could not be opened or entered.
    #[error("opening network namespace {path}: {source}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a request.
    #[error("{op}: {}", errno_message(*.errno))]
    Kernel {
        /// What was being done to what.
        op: String,
        /// The positive errno.
        errno: i32,
    },
    /// Anything else (a closed netlink socket, an unexpected answer, a sysctl write).
    #[error("{op}: {msg}")]
    Other {
        /// What was being done to what.
        op: String,
        /// The cause.
        msg: String,
    },
}

impl NetError {
    /// The errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A readable message for the errnos netlink link/address/route requests return.
pub fn errno_message(errno: i32) -> String {
    let what = match errno {
        libc::EEXIST => "it already exists",
        libc::ENODEV => "no such device",
        libc::ENOENT => "not found",
        libc::EPERM | libc::EACCES => {
            "operation not permitted (needs CAP_NET_ADMIN in this namespace)"
        }
        libc::EBUSY => "device or resource busy",
        libc::EINVAL => "invalid argument (name, MTU or address rejected by the kernel)",
        libc::ENETUNREACH => "network unreachable (is the gateway on a connected subnet?)",
        libc::EADDRNOTAVAIL => "address not available",
        libc::EOPNOTSUPP => "operation not supported by this kernel",
        libc::ENOBUFS | libc::ENOMEM => "out of kernel memory",
        _ => return std::io::Error::from_raw_os_error(errno).to_string(),
    };
    format!("{what} (errno {errno})")
}

/// A link as read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// MAC address `aa:bb:..`.
    pub mac: String,
    /// Administratively up.
    pub up: bool,
    /// The bridge it is attached to.
    pub master: Option<u32>,
    /// MTU.
    pub mtu: u32,
}

/// The pod's interface as read back from its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodIface {
    /// The link.
    pub link: LinkState,
    /// Its addresses.
    pub addrs: Vec<IpNet>,
    /// The gateways of the default routes (IPv4 and IPv6) through this interface.
    pub default_gws: Vec<IpAddr>,
}

/// A veth pair to create: `host` on the node, attached to a bridge, and `pod` created directly in
/// the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethRequest {
    /// Host-side name.
    pub host: String,
    /// Name in the pod (`CNI_IFNAME`).
    pub pod: String,
    /// The pod's namespace.
    pub netns: PathBuf,
    /// MTU of both ends.
    pub mtu: u32,
    /// The bridge's index.
    pub bridge: u32,
    /// Hairpin mode on the bridge port.
    pub hairpin: bool,
}

/// What kubenode-bridge does to the node and the pod's namespace. The real implementation talks
/// rtnetlink; the tests record calls.
#[allow(
    async_fn_in_trait,
    reason = "used through generics only, never as dyn or across threads"
)]
pub trait NetOps {
    /// Sets `/proc/sys/<key>` (dots or slashes) to `value` in the node's namespace; `Ok(false)`
    /// when the key does not exist (e.g. `net.bridge.*` without br_netfilter).
    async fn set_sysctl(&self, key: &str, value: &str) -> Result<bool, NetError>;
    /// Creates the bridge if missing (with `mtu`), brings it up and gives it the `gateways`
    /// (address/prefix of each pod CIDR; IPv6 without duplicate address detection).
    async fn ensure_bridge(
        &self,
        name: &str,
        mtu: u32,
        gateways: &[IpNet],
    ) -> Result<LinkState, NetError>;
    /// A node link by name.
    async fn link(&self, name: &str) -> Result<Option<LinkState>, NetError>;
    /// Creates a veth pair (see [`VethRequest`]), host end up and attached; returns the host end.
    async fn create_veth(&self, req: &VethRequest) -> Result<LinkState, NetError>;
    /// Deletes a node link; `Ok(false)` when it does not exist.
    async fn delete_link(&self, name: &str) -> Result<bool, NetError>;
    /// The pod's interface, or `None` when it does not exist.
    async fn pod_iface(&self, netns: &Path, ifname: &str) -> Result<Option<PodIface>, NetError>;
    /// In the pod: `lo` up, `ifname` up with `addrs` (IPv6 without duplicate address detection),
    /// a default route via each of `gateways`.
    async fn configure_pod(
        &self,
        netns: &Path,
        ifname: &str,
        addrs: &[IpNet],
        gateways: &[IpAddr],
    ) -> Result<PodIface, NetError>;
    /// Deletes the pod's interface; `Ok(false)` when it does not exist.
    async fn delete_pod_iface(&self, netns: &Path, ifname: &str) -> Result<bool, NetError>;
}
