//! Choosing the node IP when none is configured.
//!
//! The rule, in order (the first that yields an address wins, and the
//! agent logs which one did):
//! 1. the first global IPv4 address of the interface holding the IPv4
//!    default route;
//! 2. the first global IPv4 address of any other up, non-loopback
//!    interface, in kernel order;
//! 3. the same two steps for global IPv6 addresses.
//!
//! "Global" excludes loopback, link-local, unspecified and multicast
//! addresses, and addresses inside the pod or cluster CIDR (a bridge
//! gateway of the pod network is never the node IP). Interfaces that are
//! down never count.

use super::InterfaceInfo;
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// Which step of the rule chose the node IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIpRule {
    /// Given by `--node-ip` or `nodeIP`.
    Explicit,
    /// First global address of the default-route interface.
    DefaultRoute {
        /// The interface.
        interface: String,
    },
    /// First global address of an up, non-loopback interface.
    FirstGlobal {
        /// The interface.
        interface: String,
    },
}

impl fmt::Display for NodeIpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit => f.write_str("given explicitly"),
            Self::DefaultRoute { interface } => {
                write!(
                    f,
                    "first global address of {interface}, the default-route interface"
                )
            }
            Self::FirstGlobal { interface } => {
                write!(
                    f,
                    "first global address of {interface} (no usable default-route interface)"
                )
            }
        }
    }
}

fn is_global(ip: IpAddr, excluded: &[IpNet]) -> bool {
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    !special && !excluded.iter().any(|c| c.contains(&ip))
}

/// Picks the node IP from the host's interfaces by the rule of this
/// module; `excluded` are the pod and cluster CIDRs. `None` when the host
/// has no global address at all.
pub fn choose_node_ip(
    interfaces: &[InterfaceInfo],
    default_route_interface: Option<&str>,
    excluded: &[IpNet],
) -> Option<(IpAddr, NodeIpRule)> {
    for want_v4 in [true, false] {
        let first_on = |i: &InterfaceInfo| {
            i.addrs
                .iter()
                .copied()
                .find(|a| a.is_ipv4() == want_v4 && is_global(*a, excluded))
        };
        let usable = |i: &&InterfaceInfo| i.up && !i.loopback;
        if let Some(dr) = default_route_interface {
            if let Some(ip) = interfaces
                .iter()
                .filter(usable)
                .find(|i| i.name == dr)
                .and_then(first_on)
            {
                return Some((
                    ip,
                    NodeIpRule::DefaultRoute {
                        interface: dr.to_owned(),
                    },
                ));
            }
        }
        for i in interfaces.iter().filter(usable) {
            if let Some(ip) = first_on(i) {
                return Some((
                    ip,
                    NodeIpRule::FirstGlobal {
                        interface: i.name.clone(),
                    },
                ));
            }
        }
    }
    None
}

/// Finds the interface of the IPv4 default route in the text of
/// `/proc/net/route` (destination and mask 0, flag `RTF_UP`); with several,
/// the one with the lowest metric.
pub fn parse_default_route_interface(table: &str) -> Option<String> {
    let mut best: Option<(u32, &str)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        let metric: u32 = f[6].parse().unwrap_or(u32::MAX);
        if f[1] == "00000000"
            && f[7] == "00000000"
            && flags & 1 == 1
            && best.is_none_or(|(m, _)| metric < m)
        {
            best = Some((metric, f[0]));
        }
    }
    best.map(|(_, name)| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, up: bool, addrs: &[&str]) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            up,
            loopback: name == "lo",
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn default_route_interface_wins() {
        let ifs = [
            iface("lo", true, &["127.0.0.1", "::1"]),
            iface("eth0", true, &["fe80::1", "192.168.1.5"]),
            iface("eth1", true, &["10.0.0.7"]),
        ];
        let (ip, rule) = choose_node_ip(&ifs, Some("eth1"), &[]).unwrap();
        assert_eq!(ip.to_string(), "10.0.0.7");
        assert_eq!(
            rule,
            NodeIpRule::DefaultRoute {
                interface: "eth1".into()
            }
        );
    }

    #[test]
    fn falls_back_to_first_global_and_skips_pod_network() {
        let pods: IpNet = "10.244.0.0/16".parse().unwrap();
        let ifs = [
            iface("lo", true, &["127.0.0.1"]),
            iface("kubenode0", true, &["10.244.1.1"]),
            iface("down0", false, &["172.16.0.1"]),
            iface("veth1", true, &["169.254.3.3", "172.20.0.2"]),
        ];
        let (ip, rule) = choose_node_ip(&ifs, None, &[pods]).unwrap();
        assert_eq!(ip.to_string(), "172.20.0.2");
        assert_eq!(
            rule,
            NodeIpRule::FirstGlobal {
                interface: "veth1".into()
            }
        );
        assert!(rule.to_string().contains("veth1"));
        // The default-route interface without a global IPv4 falls through.
        let (ip, _) = choose_node_ip(&ifs, Some("kubenode0"), &[pods]).unwrap();
        assert_eq!(ip.to_string(), "172.20.0.2");
    }

    #[test]
    fn ipv6_only_and_nothing() {
        let ifs = [
            iface("lo", true, &["127.0.0.1"]),
            iface("eth0", true, &["fe80::2", "2001:db8::5"]),
        ];
        let (ip, rule) = choose_node_ip(&ifs, Some("eth0"), &[]).unwrap();
        assert_eq!(ip.to_string(), "2001:db8::5");
        assert_eq!(
            rule,
            NodeIpRule::DefaultRoute {
                interface: "eth0".into()
            }
        );
        assert_eq!(
            choose_node_ip(&[iface("lo", true, &["127.0.0.1"])], None, &[]),
            None
        );
    }

    #[test]
    fn parses_proc_net_route() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(
            parse_default_route_interface(table).as_deref(),
            Some("eth0")
        );
        assert_eq!(parse_default_route_interface("Iface\n"), None);
    }
}
