//! The proxy's view of Services and their endpoints: one [`ServicePortInfo`] per Service port and
//! the [`Endpoint`]s behind it, derived from k8s-openapi `Service`, `Endpoints` and `Pod` objects.

mod cidr;
mod endpoints;
mod key;
pub(crate) mod service;

pub use cidr::{ipv4_cidr, masked_net, parse_ipv4_cidr, CidrParseError, Ipv4NetExt};
pub use endpoints::{
    endpoints_from_pods, pods_from_list_json, slice_service, EndpointEntry, EndpointSet,
    SERVICE_NAME_LABEL,
};
pub use ipnet::Ipv4Net;
pub use key::ServiceKey;
pub use service::{service_ports, ServiceError};

use std::fmt;
use std::net::Ipv4Addr;

/// Transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`); `None` means TCP.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower-case name as iptables and kube-proxy's chain hashes use it.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// `namespace/name:port` of one Service port (kube-proxy's `ServicePortName`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ServicePortName {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Name of the port; empty for a Service's single unnamed port.
    pub port: String,
}

impl fmt::Display for ServicePortName {
    /// `ns/name:port`, or `ns/name` when the port is unnamed (kube-proxy's `fmtPortName`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        }
    }
}

/// One port of one Service, with every address the node must answer on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ServicePortInfo {
    /// `ns/name:port`.
    pub name: ServicePortName,
    /// Protocol of the port.
    pub protocol: Protocol,
    /// The ClusterIP (allocated when the Service left it empty).
    pub cluster_ip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The NodePort, for `NodePort` and `LoadBalancer` Services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs` (IPv4 only).
    pub external_ips: Vec<Ipv4Addr>,
    /// `Some(timeout seconds)` when `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic goes to this node's endpoints only,
    /// and is dropped when it has none.
    pub internal_local: bool,
}

/// One backend of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Endpoint {
    /// Backend address.
    pub ip: Ipv4Addr,
    /// Backend port (the resolved target port).
    pub port: u16,
    /// Ready endpoints receive new connections; others none.
    pub ready: bool,
    /// Whether the endpoint runs on this node (for `externalTrafficPolicy: Local`).
    pub local: bool,
    /// Not ready but serving and terminating on this node, while the port has ready endpoints
    /// only on other nodes: `externalTrafficPolicy: Local` traffic goes to it (kube-proxy's
    /// fallback to local terminating endpoints); cluster traffic does not.
    pub local_fallback: bool,
}

impl Endpoint {
    /// `ip:port`, as used in chain hashes, comments and DNAT targets.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}
