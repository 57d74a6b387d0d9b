//! kubenode-bridge's network configuration (the plugin object of the conflist, as received on
//! stdin) and the CNI environment.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use serde_json::Value;

use super::PluginError;
use crate::spec::codes;

/// The bridge used when the config names none.
pub const DEFAULT_BRIDGE: &str = "kubenode0";
/// Where allocations live unless `dataDir` says otherwise (host-local's default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeConf {
    /// Spec version the runtime speaks.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Bridge name (default [`DEFAULT_BRIDGE`]).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// MTU of the bridge and the veths (default 1500).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The node's pod CIDR (or `ipam.subnet` / `ipam.ranges[0][0].subnet`, host-local style).
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<Ipv4Net>,
    /// The gateway on the bridge (default: the first address of the pod CIDR).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The cluster's pod CIDR: traffic from it to outside it is masqueraded (one rule per node).
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<Ipv4Net>,
    /// Hairpin mode on bridge ports (default true, so a pod reaches itself through a Service).
    #[serde(default = "yes")]
    pub hairpin_mode: bool,
    /// Allocation store directory (default [`DEFAULT_DATA_DIR`]).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// host-local compatible IPAM section (only `subnet`, `ranges`, `gateway`, `dataDir` are read).
    #[serde(default)]
    pub ipam: Option<Value>,
    /// The previous result (CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.into()
}
fn yes() -> bool {
    true
}

impl BridgeConf {
    /// Parses and validates stdin.
    pub fn parse(stdin: &[u8]) -> Result<Self, PluginError> {
        let mut conf: BridgeConf = serde_json::from_slice(stdin).map_err(|e| {
            PluginError::new(
                codes::DECODE_FAILURE,
                "decoding the network configuration",
                e,
            )
        })?;
        if conf.pod_cidr.is_none() {
            conf.pod_cidr = conf
                .ipam_str(&["ranges", "0", "0", "subnet"])
                .or(conf.ipam_str(&["subnet"]))
                .and_then(|s| match s.parse::<IpNet>() {
                    Ok(IpNet::V4(n)) => Some(n),
                    _ => None,
                });
        }
        if conf.gateway.is_none() {
            conf.gateway = conf
                .ipam_str(&["ranges", "0", "0", "gateway"])
                .or(conf.ipam_str(&["gateway"]))
                .and_then(|s| s.parse().ok());
        }
        if conf.data_dir.is_none() {
            conf.data_dir = conf.ipam_str(&["dataDir"]).map(PathBuf::from);
        }
        let invalid = |msg: String| PluginError::msg(codes::INVALID_CONFIG, msg);
        let Some(cidr) = conf.pod_cidr else {
            return Err(invalid(
                "network configuration needs \"podCIDR\" (an IPv4 CIDR such as 10.244.1.0/24)"
                    .into(),
            ));
        };
        if conf.bridge.is_empty() || conf.bridge.len() > 15 {
            return Err(invalid(format!(
                "bridge name {:?} must be 1-15 characters",
                conf.bridge
            )));
        }
        if let Some(gw) = conf.gateway {
            if !cidr.contains(&gw) {
                return Err(invalid(format!("gateway {gw} is outside podCIDR {cidr}")));
            }
        }
        if let Some(mtu) = conf.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid(format!("mtu {mtu} is out of range 68-65535")));
            }
        }
        Ok(conf)
    }

    fn ipam_str(&self, path: &[&str]) -> Option<String> {
        let mut v = self.ipam.as_ref()?;
        for key in path {
            v = match key.parse::<usize>() {
                Ok(i) => v.get(i)?,
                Err(_) => v.get(key)?,
            };
        }
        v.as_str().map(str::to_string)
    }

    /// The MTU to use.
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(1500)
    }

    /// The allocation store directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
    }
}

/// The CNI environment of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let var = |k| std::env::var(k).unwrap_or_default();
        Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
        }
    }

    /// Checks the variables `command` requires (spec table).
    pub fn require(&self, netns: bool) -> Result<(), PluginError> {
        let missing = |k: &str| {
            PluginError::msg(
                codes::INVALID_ENV,
                format!("required environment variable {k} is empty"),
            )
        };
        if self.container_id.is_empty() {
            return Err(missing("CNI_CONTAINERID"));
        }
        if self.ifname.is_empty() {
            return Err(missing("CNI_IFNAME"));
        }
        if netns && self.netns.is_empty() {
            return Err(missing("CNI_NETNS"));
        }
        if self.ifname.len() > 15 || self.ifname.contains(['/', ' ', ':']) {
            return Err(PluginError::msg(
                codes::INVALID_ENV,
                format!("CNI_IFNAME {:?} is not a valid interface name", self.ifname),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pod_cidr_and_defaults() {
        let c = BridgeConf::parse(br#"{"cniVersion":"1.0.0","name":"kn","type":"kubenode-bridge","podCIDR":"10.244.1.0/24","clusterCIDR":"10.244.0.0/16"}"#).unwrap();
        assert_eq!(
            (c.bridge.as_str(), c.mtu(), c.hairpin_mode),
            (DEFAULT_BRIDGE, 1500, true)
        );
        assert_eq!(c.cluster_cidr, Some("10.244.0.0/16".parse().unwrap()));
        assert_eq!(c.data_dir(), PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn reads_host_local_style_ipam() {
        let c = BridgeConf::parse(
            br#"{"cniVersion":"1.0.0","name":"kn","ipam":{"type":"host-local","ranges":[[{"subnet":"10.9.0.0/24","gateway":"10.9.0.254"}]],"dataDir":"/tmp/x"}}"#,
        )
        .unwrap();
        assert_eq!(c.pod_cidr, Some("10.9.0.0/24".parse().unwrap()));
        assert_eq!(c.gateway, Some("10.9.0.254".parse().unwrap()));
        assert_eq!(c.data_dir(), PathBuf::from("/tmp/x"));
    }

    #[test]
    fn rejects_bad_configs_with_code_7() {
        for bad in [
            r#"{"cniVersion":"1.0.0","name":"kn"}"#,
            r#"{"cniVersion":"1.0.0","name":"kn","podCIDR":"10.0.0.0/24","gateway":"10.1.0.1"}"#,
            r#"{"cniVersion":"1.0.0","name":"kn","podCIDR":"10.0.0.0/24","bridge":"a-very-long-bridge-name"}"#,
            r#"{"cniVersion":"1.0.0","name":"kn","podCIDR":"10.0.0.0/24","mtu":10}"#,
        ] {
            assert_eq!(
                BridgeConf::parse(bad.as_bytes()).unwrap_err().code,
                codes::INVALID_CONFIG,
                "{bad}"
            );
        }
        assert_eq!(
            BridgeConf::parse(b"{").unwrap_err().code,
            codes::DECODE_FAILURE
        );
    }

    #[test]
    fn env_requirements() {
        let mut env = Env {
            command: "ADD".into(),
            container_id: "c".into(),
            netns: String::new(),
            ifname: "eth0".into(),
        };
        assert_eq!(env.require(true).unwrap_err().code, codes::INVALID_ENV);
        env.require(false).unwrap();
        env.ifname = "x/y".into();
        assert_eq!(env.require(false).unwrap_err().code, codes::INVALID_ENV);
    }
}
