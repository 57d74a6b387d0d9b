//! kubenode-bridge, kubenode's own CNI plugin: a bridge on the node, a veth pair per pod (the pod
//! end created directly in the pod's namespace as `CNI_IFNAME`), an address from the node's pod
//! CIDR (host-local compatible store), the gateway on the bridge, a default route in the pod,
//! hairpin mode, and one masquerade rule for traffic leaving the cluster.
//!
//! [`main`] is the process entry point; [`Plugin`] holds the logic over the [`NetOps`] and
//! [`Firewall`] boundaries so it can be tested without root.

mod add;
mod check;
mod conf;
mod del;
mod ipam;
mod masq;
mod netlink;
mod rtnl;
#[cfg(test)]
mod tests;

use std::io::{Read, Write};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use conf::{BridgeConf, Env, DEFAULT_BRIDGE, DEFAULT_DATA_DIR};
pub use ipam::{Allocation, IpamError, Range, Store};
pub use masq::{Firewall, FirewallError, Iptables};
pub use netlink::{errno_message, LinkState, NetError, NetOps, PodIface, VethRequest};
pub use rtnl::Rtnl;

use crate::spec::{codes, PluginErrorReply, CURRENT_VERSION, SUPPORTED_VERSIONS};

/// A failure, as the plugin reports it: a spec error code, a message and details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct PluginError {
    /// Spec error code (see [`codes`]).
    pub code: u32,
    /// What was being done to what, and why it failed.
    pub msg: String,
    /// The underlying cause, if separate.
    pub details: String,
}

impl PluginError {
    /// An error with a cause.
    pub fn new(code: u32, what: &str, cause: impl std::fmt::Display) -> Self {
        PluginError {
            code,
            msg: format!("{what}: {cause}"),
            details: cause.to_string(),
        }
    }

    /// An error without a separate cause.
    pub fn msg(code: u32, msg: impl Into<String>) -> Self {
        PluginError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The spec reply.
    pub fn reply(&self, version: &str) -> PluginErrorReply {
        PluginErrorReply {
            cni_version: version.into(),
            code: self.code,
            msg: self.msg.clone(),
            details: self.details.clone(),
        }
    }
}

impl From<NetError> for PluginError {
    fn from(e: NetError) -> Self {
        let code = match &e {
            NetError::Netns { .. } => codes::INVALID_ENV,
            _ => codes::NETLINK,
        };
        PluginError::msg(code, e.to_string())
    }
}

impl From<IpamError> for PluginError {
    fn from(e: IpamError) -> Self {
        let code = match &e {
            IpamError::Exhausted { .. } => codes::IPAM_EXHAUSTED,
            IpamError::TooSmall(_) => codes::INVALID_CONFIG,
            IpamError::Io { .. } => codes::IO_FAILURE,
        };
        PluginError::msg(code, e.to_string())
    }
}

impl From<FirewallError> for PluginError {
    fn from(e: FirewallError) -> Self {
        PluginError::msg(codes::IPTABLES, e.to_string())
    }
}

/// The plugin over its two OS boundaries.
#[derive(Debug)]
pub struct Plugin<N, F> {
    /// Netlink and sysctls.
    pub net: N,
    /// iptables.
    pub fw: F,
}

/// The host end of a pod's veth: `veth` + 11 hex digits of sha256(network, container, ifname),
/// so DEL finds it again without any state.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{network}\n{container_id}\n{ifname}").as_bytes());
    format!("veth{}", &hex::encode(digest)[..11])
}

impl<N: NetOps, F: Firewall> Plugin<N, F> {
    /// Runs one command and returns what to print on success (`None` prints nothing).
    pub async fn dispatch(&self, env: &Env, stdin: &[u8]) -> Result<Option<Value>, PluginError> {
        if env.command == "VERSION" {
            return Ok(Some(version_reply(stdin)));
        }
        let conf = BridgeConf::parse(stdin)?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(PluginError::msg(
                codes::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {} is not supported (supported: {})",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        match env.command.as_str() {
            "ADD" => Ok(Some(self.add(env, &conf).await?.to_json(&conf.cni_version))),
            "DEL" => self.del(env, &conf).await.map(|_| None),
            "CHECK" => self.check(env, &conf).await.map(|_| None),
            "GC" => self.gc(&conf, stdin).await.map(|_| None),
            "STATUS" => self.status(&conf).map(|_| None),
            other => Err(PluginError::msg(
                codes::INVALID_ENV,
                format!("unknown CNI_COMMAND {other:?}"),
            )),
        }
    }
}

fn version_reply(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.into());
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
}

/// The plugin process: reads `CNI_*` and stdin, runs the command, prints the result or the spec
/// error JSON on stdout and returns the exit code. Runs its own single-threaded runtime; logs go
/// to stderr (which runtimes keep) at `KUBENODE_LOG` level, default `warn`.
pub fn main() -> i32 {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBENODE_LOG")
        .unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .without_time()
        .try_init();
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| CURRENT_VERSION.into());
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async {
            if env.command == "VERSION" {
                return Ok(Some(version_reply(&stdin)));
            }
            let plugin = Plugin {
                net: Rtnl::new()?,
                fw: Iptables::default(),
            };
            plugin.dispatch(&env, &stdin).await
        }),
        Err(e) => Err(PluginError::new(
            codes::IO_FAILURE,
            "starting the plugin's runtime",
            e,
        )),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&e.reply(&version)).unwrap_or_default()
            );
            1
        }
    }
}
