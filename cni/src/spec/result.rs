//! The ADD result (spec 0.3.x, 0.4.0, 1.0.0 and 1.1.0 parse into one [`CniResult`]), and its
//! rendering in any of those versions.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::version_at_least;

/// A result could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The JSON does not have the shape of a CNI result.
    #[error("decoding CNI result (cniVersion {version:?}): {source}")]
    Decode {
        /// The version the result claims.
        version: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// An interface created by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:..`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path when the interface is in the container, absent on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// vhost-user socket path (1.1.0).
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// PCI id (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An IP address assigned to the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, `10.244.1.5/24`.
    pub address: IpNet,
    /// The default gateway of this subnet, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route added in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; the default gateway when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Priority (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

/// DNS settings a plugin suggests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// The result of ADD, whatever spec version the plugin answered in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CniResult {
    /// The version the result was written in.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Interfaces created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// IP addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS suggestions.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Parses a result of spec 0.3.0 – 1.1.0 (0.x's `ips[].version` is ignored: the address says it).
    pub fn from_json(value: &Value) -> Result<Self, ResultError> {
        let version = value
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        serde_json::from_value(value.clone())
            .map_err(|source| ResultError::Decode { version, source })
    }

    /// Renders the result in spec `version` (0.3.x/0.4.0 add `ips[].version`; 1.1.0-only
    /// fields are dropped for older versions).
    pub fn to_json(&self, version: &str) -> Value {
        let mut r = self.clone();
        r.cni_version = version.to_string();
        if !version_at_least(version, "1.1.0") {
            for i in &mut r.interfaces {
                (i.mtu, i.socket_path, i.pci_id) = (None, None, None);
            }
            for rt in &mut r.routes {
                (rt.mtu, rt.advmss, rt.priority, rt.table, rt.scope) =
                    (None, None, None, None, None);
            }
        }
        let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
        if !version_at_least(version, "1.0.0") {
            if let Some(Value::Array(ips)) = v.get_mut("ips") {
                for ip in ips {
                    let fam = if ip["address"].as_str().is_some_and(|a| a.contains(':')) {
                        "6"
                    } else {
                        "4"
                    };
                    ip["version"] = Value::String(fam.into());
                }
            }
        }
        v
    }

    /// The container's addresses: those on an interface inside the sandbox, or every address
    /// when no interface is named (IPAM-only results).
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let in_sandbox = |ip: &&IpConfig| match ip.interface.and_then(|i| self.interfaces.get(i)) {
            Some(iface) => iface.sandbox.is_some(),
            None => true,
        };
        self.ips
            .iter()
            .filter(in_sandbox)
            .map(|ip| ip.address.addr())
            .collect()
    }

    /// The first pod address's gateway, if any.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.ips.iter().find_map(|ip| ip.gateway)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result_04() -> Value {
        json!({"cniVersion":"0.4.0",
            "interfaces":[{"name":"cni0","mac":"aa:aa:aa:aa:aa:01"},{"name":"veth1","mac":"aa:aa:aa:aa:aa:02"},
                          {"name":"eth0","mac":"aa:aa:aa:aa:aa:03","sandbox":"/run/netns/p"}],
            "ips":[{"version":"4","address":"10.244.1.5/24","gateway":"10.244.1.1","interface":2}],
            "routes":[{"dst":"0.0.0.0/0"}],
            "dns":{}})
    }

    #[test]
    fn parses_0_4_0() {
        let r = CniResult::from_json(&bridge_result_04()).unwrap();
        assert_eq!(r.pod_ips(), vec!["10.244.1.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.gateway(), Some("10.244.1.1".parse().unwrap()));
        assert_eq!(r.routes[0].dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/run/netns/p"));
    }

    #[test]
    fn parses_1_0_0_ipam_result_without_interfaces() {
        let v = json!({"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64","gateway":"fd00::1"}],
                       "dns":{"nameservers":["10.96.0.10"]}});
        let r = CniResult::from_json(&v).unwrap();
        assert_eq!(r.pod_ips(), vec!["fd00::5".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.dns.nameservers, vec!["10.96.0.10"]);
    }

    #[test]
    fn parses_1_1_0_fields() {
        let v = json!({"cniVersion":"1.1.0",
            "interfaces":[{"name":"eth0","mac":"aa:aa:aa:aa:aa:03","mtu":1450,"sandbox":"/run/netns/p","pciID":"0000:00:01.0"}],
            "ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}],
            "routes":[{"dst":"10.96.0.0/12","gw":"10.0.0.1","mtu":1400,"priority":10,"table":100,"scope":0}]});
        let r = CniResult::from_json(&v).unwrap();
        assert_eq!(r.interfaces[0].mtu, Some(1450));
        assert_eq!(r.routes[0].table, Some(100));
        assert_eq!(r.to_json("1.1.0"), v);
    }

    #[test]
    fn renders_older_versions() {
        let r = CniResult::from_json(&bridge_result_04()).unwrap();
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["cniVersion"], "0.4.0");
        let v10 = r.to_json("1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10.get("dns").is_none());
    }

    #[test]
    fn rejects_garbage_with_the_version_named() {
        let e = CniResult::from_json(&json!({"cniVersion":"1.0.0","ips":[{"address":"nope"}]}))
            .unwrap_err();
        assert!(e.to_string().contains("1.0.0"), "{e}");
    }
}
