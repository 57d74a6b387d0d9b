//! kubenode-bridge's network configuration (the plugin object of the conflist, as received on
//! stdin) and the CNI environment.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
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
    /// The node's pod CIDR (or `ipam.subnet` / `ipam.ranges[*][0].subnet`, host-local style).
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<IpNet>,
    /// The node's pod CIDRs, one per family (dual-stack); merged with `podCIDR` by [`Self::parse`].
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNet>,
    /// The gateway on the bridge for the pod CIDR of its family (default: the first address).
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// The cluster's pod CIDR: traffic from it to outside it is masqueraded (one rule per node).
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<IpNet>,
    /// The cluster's pod CIDRs (dual-stack); merged with `clusterCIDR` by [`Self::parse`].
    #[serde(default, rename = "clusterCIDRs")]
    pub cluster_cidrs: Vec<IpNet>,
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

fn dedup(mut v: Vec<IpNet>) -> Vec<IpNet> {
    v = v.into_iter().map(|c| c.trunc()).collect();
    let mut out: Vec<IpNet> = Vec::new();
    for c in v {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
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
        let mut cidrs: Vec<IpNet> = conf
            .pod_cidrs
            .iter()
            .copied()
            .chain(conf.pod_cidr)
            .collect();
        let ranges = conf
            .ipam
            .as_ref()
            .and_then(|i| i.get("ranges"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..ranges {
            cidrs.extend(
                conf.ipam_str(&["ranges", &i.to_string(), "0", "subnet"])
                    .and_then(|s| s.parse::<IpNet>().ok()),
            );
        }
        cidrs.extend(
            conf.ipam_str(&["subnet"])
                .and_then(|s| s.parse::<IpNet>().ok()),
        );
        conf.pod_cidrs = dedup(cidrs);
        conf.cluster_cidrs = dedup(
            conf.cluster_cidrs
                .iter()
                .copied()
                .chain(conf.cluster_cidr)
                .collect(),
        );
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
        if conf.pod_cidrs.is_empty() {
            return Err(invalid(
                "network configuration needs \"podCIDR\" (a CIDR such as 10.244.1.0/24) or \"podCIDRs\"".into(),
            ));
        }
        for list in [&conf.pod_cidrs, &conf.cluster_cidrs] {
            if list.iter().filter(|c| c.addr().is_ipv4()).count() > 1
                || list.iter().filter(|c| c.addr().is_ipv6()).count() > 1
            {
                return Err(invalid(format!(
                    "at most one CIDR per address family, got {list:?}"
                )));
            }
        }
        if conf.bridge.is_empty() || conf.bridge.len() > 15 {
            return Err(invalid(format!(
                "bridge name {:?} must be 1-15 characters",
                conf.bridge
            )));
        }
        if let Some(gw) = conf.gateway {
            match conf
                .pod_cidrs
                .iter()
                .find(|c| c.addr().is_ipv4() == gw.is_ipv4())
            {
                Some(c) if c.contains(&gw) => {}
                _ => {
                    return Err(invalid(format!(
                        "gateway {gw} is outside the pod CIDRs {:?}",
                        conf.pod_cidrs
                    )))
                }
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

    /// The address ranges, one per pod CIDR (IPv4 first), each with its gateway.
    pub fn ranges(&self) -> Result<Vec<super::Range>, super::IpamError> {
        let mut cidrs = self.pod_cidrs.clone();
        cidrs.sort_by_key(|c| c.addr().is_ipv6());
        cidrs
            .into_iter()
            .map(|c| {
                super::Range::new(
                    c,
                    self.gateway.filter(|g| g.is_ipv4() == c.addr().is_ipv4()),
                )
            })
            .collect()
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
        assert_eq!(c.pod_cidrs, ["10.9.0.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(c.gateway, Some("10.9.0.254".parse().unwrap()));
        assert_eq!(c.data_dir(), PathBuf::from("/tmp/x"));
    }

    #[test]
    fn dual_stack_ranges_ipv4_first() {
        let c = BridgeConf::parse(
            br#"{"cniVersion":"1.0.0","name":"kn","podCIDRs":["fd00:10:244:1::/64","10.244.1.0/24"],"gateway":"fd00:10:244:1::fe",
                 "clusterCIDRs":["10.244.0.0/16","fd00:10:244::/48"]}"#,
        )
        .unwrap();
        let r = c.ranges().unwrap();
        assert_eq!(r[0].subnet, "10.244.1.0/24".parse::<IpNet>().unwrap());
        assert_eq!(r[0].gateway, "10.244.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(r[1].gateway, "fd00:10:244:1::fe".parse::<IpAddr>().unwrap());
        assert_eq!(c.cluster_cidrs.len(), 2);
        let two_v4 =
            br#"{"cniVersion":"1.0.0","name":"kn","podCIDRs":["10.1.0.0/24","10.2.0.0/24"]}"#;
        assert_eq!(
            BridgeConf::parse(two_v4).unwrap_err().code,
            codes::INVALID_CONFIG
        );
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
