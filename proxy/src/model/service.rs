//! From a k8s `Service` (ClusterIP and NodePorts already allocated) to its [`ServicePortInfo`]s.

use super::{Protocol, ServicePortInfo, ServicePortName};
use k8s_openapi::api::core::v1::Service;
use std::net::Ipv4Addr;

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 h).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// Largest accepted affinity timeout (1 day), as the API server validates it.
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// A Service the proxy cannot program.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A port has a protocol other than TCP, UDP or SCTP.
    #[error("service {service}: port {port} has unsupported protocol `{protocol}`")]
    Protocol {
        /// `ns/name`.
        service: String,
        /// The port number.
        port: i32,
        /// The protocol as written.
        protocol: String,
    },
    /// A port number is outside 1..=65535.
    #[error("service {service}: port {port} is not in 1-65535")]
    Port {
        /// `ns/name`.
        service: String,
        /// The offending number.
        port: i32,
    },
    /// The ClusterIP is not an IPv4 address.
    #[error("service {service}: clusterIP `{ip}` is not an IPv4 address")]
    ClusterIp {
        /// `ns/name`.
        service: String,
        /// The value as written.
        ip: String,
    },
    /// The affinity timeout is outside 1..=86400.
    #[error("service {service}: sessionAffinity timeout {timeout} is not in 1-86400")]
    Affinity {
        /// `ns/name`.
        service: String,
        /// The value as written.
        timeout: i32,
    },
}

/// Namespace and name of a Service (`default` when the namespace is unset).
pub(crate) fn service_key(svc: &Service) -> super::ServiceKey {
    super::ServiceKey::of(&svc.metadata)
}

/// Whether the Service gets proxy rules at all: ExternalName and headless Services do not.
pub(crate) fn is_proxied(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    spec.cluster_ip.as_deref() != Some("None")
}

/// The Service's ports as the proxy programs them. Returns no ports for Services that get no
/// rules (ExternalName, headless, no ClusterIP yet); IPv6 external IPs are skipped.
pub fn service_ports(svc: &Service) -> Result<Vec<ServicePortInfo>, ServiceError> {
    if !is_proxied(svc) {
        return Ok(Vec::new());
    }
    let key = service_key(svc);
    let id = key.to_string();
    let super::ServiceKey {
        namespace: ns,
        name,
    } = key;
    let Some(spec) = &svc.spec else {
        return Ok(Vec::new());
    };
    let Some(ip) = spec.cluster_ip.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    let cluster_ip: Ipv4Addr = ip.parse().map_err(|_| ServiceError::ClusterIp {
        service: id.clone(),
        ip: ip.to_string(),
    })?;
    let affinity_timeout = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT as i32);
        if t < 1 || t as u32 > MAX_AFFINITY_TIMEOUT {
            return Err(ServiceError::Affinity {
                service: id,
                timeout: t,
            });
        }
        Some(t as u32)
    } else {
        None
    };
    let with_node_ports = matches!(
        spec.type_.as_deref(),
        Some("NodePort") | Some("LoadBalancer")
    );
    let external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|s| s.parse().ok())
        .collect();
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let protocol =
            Protocol::parse(p.protocol.as_deref()).ok_or_else(|| ServiceError::Protocol {
                service: id.clone(),
                port: p.port,
                protocol: p.protocol.clone().unwrap_or_default(),
            })?;
        let port = port_u16(&id, p.port)?;
        let node_port = match p.node_port {
            Some(np) if with_node_ports && np != 0 => Some(port_u16(&id, np)?),
            _ => None,
        };
        out.push(ServicePortInfo {
            name: ServicePortName {
                namespace: ns.clone(),
                name: name.clone(),
                port: p.name.clone().unwrap_or_default(),
            },
            protocol,
            cluster_ip,
            port,
            node_port,
            external_ips: external_ips.clone(),
            affinity_timeout,
            external_local,
            internal_local,
        });
    }
    Ok(out)
}

fn port_u16(id: &str, port: i32) -> Result<u16, ServiceError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ServiceError::Port {
            service: id.to_string(),
            port,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        serde_json::from_value(
            serde_json::to_value(serde_yaml_ng::from_str::<serde_json::Value>(yaml).unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn nodeport_affinity_multiport() {
        let s = svc(r#"
metadata: {name: web, namespace: ns2}
spec:
  type: NodePort
  clusterIP: 172.30.0.42
  sessionAffinity: ClientIP
  externalIPs: ["192.0.2.7", "2001:db8::1"]
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, nodePort: 30080, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP, nodePort: 30053}
"#);
        let ports = service_ports(&s).unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].name.to_string(), "ns2/web:http");
        assert_eq!(ports[0].node_port, Some(30080));
        assert_eq!(ports[0].affinity_timeout, Some(10800));
        assert_eq!(
            ports[0].external_ips,
            vec!["192.0.2.7".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(ports[0].external_local);
        assert_eq!(ports[1].protocol, Protocol::Udp);
    }

    #[test]
    fn headless_and_external_name_get_nothing() {
        let s = svc("metadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}");
        assert!(service_ports(&s).unwrap().is_empty());
        let s = svc("metadata: {name: e}\nspec: {type: ExternalName, externalName: x.example}");
        assert!(service_ports(&s).unwrap().is_empty());
    }

    #[test]
    fn bad_protocol_is_an_error() {
        let s = svc(
            "metadata: {name: b}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80, protocol: QUIC}]}",
        );
        let e = service_ports(&s).unwrap_err().to_string();
        assert!(e.contains("default/b") && e.contains("QUIC"), "{e}");
    }
}
