//! Stale UDP conntrack entries: which to delete after a sync (pure) and the [`Conntrack`] trait
//! that deletes them (`conntrack -D`). TCP needs nothing: a new connection is a new entry.
//!
//! As kube-proxy: when a UDP Service port gets its first ready endpoint, flows to its addresses
//! that were answered by the no-endpoint REJECT (or nothing) are dropped; when a UDP endpoint goes
//! away, flows DNATed to it are dropped, so the next datagram is balanced again.

use crate::model::{Endpoint, Protocol, ServicePortInfo, ServicePortName};
use kubenode_fsutil::lock;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

/// Which UDP flows to delete: every given field must match.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowFilter {
    /// Original destination address (a ClusterIP or external IP).
    pub orig_dst: Option<Ipv4Addr>,
    /// Original destination port (the Service port or NodePort).
    pub orig_dport: u16,
    /// The address the flow was DNATed to (an endpoint).
    pub dst_nat: Option<Ipv4Addr>,
}

impl FlowFilter {
    /// `conntrack` arguments for deleting matching UDP flows.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["-D".to_string(), "-p".into(), "udp".into()];
        if let Some(ip) = self.orig_dst {
            a.extend(["--orig-dst".into(), ip.to_string()]);
        }
        a.extend(["--orig-port-dst".into(), self.orig_dport.to_string()]);
        if let Some(ip) = self.dst_nat {
            a.extend(["--dst-nat".into(), ip.to_string()]);
        }
        a
    }
}

/// A conntrack deletion that failed.
#[derive(Debug, thiserror::Error)]
#[error("deleting UDP conntrack entries ({filter}): {message}")]
pub struct ConntrackError {
    /// The filter, as conntrack arguments.
    pub filter: String,
    /// What went wrong.
    pub message: String,
}

/// The host's connection tracking table.
pub trait Conntrack: Send + Sync + fmt::Debug {
    /// Deletes the UDP flows matching `filter`; none matching is success.
    fn delete_udp(&self, filter: &FlowFilter) -> Result<(), ConntrackError>;
}

/// `conntrack -D` with a timeout (optionally inside a named network namespace).
#[derive(Debug, Default, Clone)]
pub struct ConntrackTool {
    netns: Option<String>,
}

impl ConntrackTool {
    /// Deletes flows of the current network namespace.
    pub fn new() -> ConntrackTool {
        ConntrackTool::default()
    }

    /// Deletes flows of network namespace `name` (`ip netns exec <name> conntrack ...`).
    pub fn in_netns(name: &str) -> ConntrackTool {
        ConntrackTool {
            netns: Some(name.to_string()),
        }
    }
}

impl Conntrack for ConntrackTool {
    fn delete_udp(&self, filter: &FlowFilter) -> Result<(), ConntrackError> {
        let args = filter.args();
        let err = |message: String| ConntrackError {
            filter: args.join(" "),
            message,
        };
        let mut argv: Vec<&str> = Vec::new();
        let program = match &self.netns {
            Some(ns) => {
                argv.extend(["netns", "exec", ns.as_str(), "conntrack"]);
                "ip"
            }
            None => "conntrack",
        };
        argv.extend(args.iter().map(String::as_str));
        let out = crate::iptables::run_tool(program, &argv, Duration::from_secs(10))
            .map_err(|e| err(e.to_string()))?;
        // conntrack exits 1 with "0 flow entries have been deleted" when nothing matched.
        if out.0 || out.1.contains("0 flow entries") {
            Ok(())
        } else {
            Err(err(out.1.trim().to_string()))
        }
    }
}

/// Records deletions, for tests.
#[derive(Debug, Default)]
pub struct RecordingConntrack {
    calls: Mutex<Vec<FlowFilter>>,
}

impl RecordingConntrack {
    /// Every filter deleted so far.
    pub fn calls(&self) -> Vec<FlowFilter> {
        lock(&self.calls, "conntrack calls").clone()
    }
}

impl Conntrack for RecordingConntrack {
    fn delete_udp(&self, filter: &FlowFilter) -> Result<(), ConntrackError> {
        lock(&self.calls, "conntrack calls").push(filter.clone());
        Ok(())
    }
}

/// What conntrack cleanup needs to remember of one UDP Service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpPort {
    /// ClusterIP and external IPs.
    pub ips: Vec<Ipv4Addr>,
    /// Service port.
    pub port: u16,
    /// NodePort.
    pub node_port: Option<u16>,
    /// Ready endpoints.
    pub endpoints: BTreeSet<Ipv4Addr>,
}

/// The UDP part of a proxy state, kept between syncs.
pub type UdpState = BTreeMap<ServicePortName, UdpPort>;

/// The UDP Service ports of a state and their ready endpoints.
pub fn udp_state<'a>(
    services: impl IntoIterator<Item = &'a ServicePortInfo>,
    endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
) -> UdpState {
    services
        .into_iter()
        .filter(|s| s.protocol == Protocol::Udp)
        .map(|s| {
            let mut ips = vec![s.cluster_ip];
            ips.extend(&s.external_ips);
            let eps = endpoints
                .get(&s.name)
                .into_iter()
                .flatten()
                .filter(|e| e.ready)
                .map(|e| e.ip)
                .collect();
            (
                s.name.clone(),
                UdpPort {
                    ips,
                    port: s.port,
                    node_port: s.node_port,
                    endpoints: eps,
                },
            )
        })
        .collect()
}

/// Flows to delete after moving from `old` to `new` (deduplicated, sorted).
pub fn stale_flows(old: &UdpState, new: &UdpState) -> Vec<FlowFilter> {
    let mut out = BTreeSet::new();
    for (name, n) in new {
        let had = old.get(name).is_some_and(|o| !o.endpoints.is_empty());
        if !n.endpoints.is_empty() && !had {
            for ip in &n.ips {
                out.insert(FlowFilter {
                    orig_dst: Some(*ip),
                    orig_dport: n.port,
                    dst_nat: None,
                });
            }
            if let Some(np) = n.node_port {
                out.insert(FlowFilter {
                    orig_dst: None,
                    orig_dport: np,
                    dst_nat: None,
                });
            }
        }
    }
    for (name, o) in old {
        let now = new.get(name).map(|n| &n.endpoints);
        for ep in o
            .endpoints
            .iter()
            .filter(|e| !now.is_some_and(|n| n.contains(e)))
        {
            for ip in &o.ips {
                out.insert(FlowFilter {
                    orig_dst: Some(*ip),
                    orig_dport: o.port,
                    dst_nat: Some(*ep),
                });
            }
            if let Some(np) = o.node_port {
                out.insert(FlowFilter {
                    orig_dst: None,
                    orig_dport: np,
                    dst_nat: Some(*ep),
                });
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(eps: &[&str]) -> UdpPort {
        UdpPort {
            ips: vec!["10.96.0.10".parse().unwrap()],
            port: 53,
            node_port: Some(30053),
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn name() -> ServicePortName {
        ServicePortName {
            namespace: "kube-system".into(),
            name: "dns".into(),
            port: "dns".into(),
        }
    }

    #[test]
    fn first_endpoint_clears_service_flows() {
        let old = UdpState::from([(name(), port(&[]))]);
        let new = UdpState::from([(name(), port(&["10.244.0.5"]))]);
        let f = stale_flows(&old, &new);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].args().join(" "), "-D -p udp --orig-port-dst 30053");
        assert_eq!(
            f[1].args().join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53"
        );
        assert_eq!(
            stale_flows(&UdpState::new(), &new).len(),
            2,
            "a new service too"
        );
    }

    #[test]
    fn removed_endpoint_clears_its_flows_only() {
        let old = UdpState::from([(name(), port(&["10.244.0.5", "10.244.0.6"]))]);
        let new = UdpState::from([(name(), port(&["10.244.0.6", "10.244.0.7"]))]);
        let f = stale_flows(&old, &new);
        assert_eq!(f.len(), 2);
        assert!(f
            .iter()
            .all(|f| f.dst_nat == Some("10.244.0.5".parse().unwrap())));
        assert_eq!(stale_flows(&new, &new), vec![]);
        assert_eq!(
            stale_flows(&old, &UdpState::new()).len(),
            4,
            "deleted service"
        );
    }
}
