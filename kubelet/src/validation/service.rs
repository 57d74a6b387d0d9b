//! Checks of the Service, Endpoints and EndpointSlice objects of the manifest directory
//! (upstream `ValidateService` / `ValidateEndpoints` / `ValidateEndpointSlice`, the parts the
//! proxy relies on), metadata first (namespace and name, see [`super::meta`]).

use super::names::*;
use super::{Errors, FieldError, ValidationErrors};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::HashSet;
use std::net::IpAddr;

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const AFFINITIES: &[&str] = &["ClientIP", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];

fn result(errs: Errors) -> Result<(), ValidationErrors> {
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errs.0))
    }
}

fn port_range(errs: &mut Errors, field: String, port: i32) {
    if !(1..=65535).contains(&port) {
        errs.push(FieldError::invalid(
            field,
            port,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

fn protocol(errs: &mut Errors, field: String, p: Option<&str>) {
    if let Some(p) = p {
        if !PROTOCOLS.contains(&p) {
            errs.push(FieldError::not_supported(field, p, PROTOCOLS));
        }
    }
}

/// Validates a (defaulted) Service.
pub fn validate_service(svc: &Service) -> Result<(), ValidationErrors> {
    let mut errs = Errors::default();
    super::meta::object_meta(&svc.metadata, super::meta::dns1035_label_errors, &mut errs);
    let Some(spec) = &svc.spec else {
        errs.push(FieldError::required("spec", ""));
        return result(errs);
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&type_) {
        errs.push(FieldError::not_supported("spec.type", type_, SERVICE_TYPES));
    }
    if let Some(a) = spec.session_affinity.as_deref() {
        if !AFFINITIES.contains(&a) {
            errs.push(FieldError::not_supported(
                "spec.sessionAffinity",
                a,
                AFFINITIES,
            ));
        }
    }
    let ips: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(spec.cluster_ip.as_deref())
        .collect();
    for (i, ip) in ips.iter().enumerate() {
        if !ip.is_empty() && *ip != "None" && ip.parse::<IpAddr>().is_err() {
            let field = if i < spec.cluster_ips.as_ref().map_or(0, Vec::len) {
                format!("spec.clusterIPs[{i}]")
            } else {
                "spec.clusterIP".into()
            };
            errs.push(FieldError::invalid(
                field,
                *ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && type_ != "ExternalName" && spec.cluster_ip.as_deref() != Some("None") {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        match p.name.as_deref().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => errs.push(FieldError::required(format!("{f}.name"), "")),
            None => {}
            Some(n) => {
                errs.name(&format!("{f}.name"), n, dns1123_label_errors(n));
                if !names.insert(n) {
                    errs.push(FieldError::duplicate(format!("{f}.name"), n));
                }
            }
        }
        port_range(&mut errs, format!("{f}.port"), p.port);
        protocol(&mut errs, format!("{f}.protocol"), p.protocol.as_deref());
        match &p.target_port {
            Some(IntOrString::Int(t)) => port_range(&mut errs, format!("{f}.targetPort"), *t),
            Some(IntOrString::String(s)) => {
                errs.name(&format!("{f}.targetPort"), s, port_name_errors(s))
            }
            None => {}
        }
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            port_range(&mut errs, format!("{f}.nodePort"), np);
            if type_ == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    format!("{f}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    for (field, policy) in [
        ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
        ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
    ] {
        if let Some(p) = policy.as_deref().filter(|p| !TRAFFIC_POLICIES.contains(p)) {
            errs.push(FieldError::not_supported(field, p, TRAFFIC_POLICIES));
        }
    }
    // Upstream's validateServiceExternalTrafficPolicy: only a Service reachable from outside
    // (NodePort, LoadBalancer, or with externalIPs) has an external policy.
    let external = matches!(type_, "NodePort" | "LoadBalancer")
        || spec
            .external_ips
            .as_ref()
            .is_some_and(|ips| !ips.is_empty());
    if let Some(p) = spec.external_traffic_policy.as_deref() {
        if !external && !p.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                p,
                "may only be set for externally-accessible services",
            ));
        }
    }
    for (k, v) in spec.selector.iter().flatten() {
        errs.name("spec.selector", k, qualified_name_errors(k));
        errs.name("spec.selector", v, label_value_errors(v));
    }
    result(errs)
}

/// Validates an Endpoints object.
pub fn validate_endpoints(ep: &Endpoints) -> Result<(), ValidationErrors> {
    let mut errs = Errors::default();
    super::meta::object_meta(&ep.metadata, dns1123_subdomain_errors, &mut errs);
    for (i, s) in ep.subsets.iter().flatten().enumerate() {
        let f = format!("subsets[{i}]");
        let all = s
            .addresses
            .iter()
            .flatten()
            .map(|a| ("addresses", a))
            .chain(
                s.not_ready_addresses
                    .iter()
                    .flatten()
                    .map(|a| ("notReadyAddresses", a)),
            );
        for (j, (kind, a)) in all.enumerate() {
            if a.ip.parse::<IpAddr>().is_err() {
                errs.push(FieldError::invalid(
                    format!("{f}.{kind}[{j}].ip"),
                    &a.ip,
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
            }
        }
        let ports = s.ports.as_deref().unwrap_or_default();
        for (j, p) in ports.iter().enumerate() {
            let pf = format!("{f}.ports[{j}]");
            if ports.len() > 1 && p.name.as_deref().is_none_or(str::is_empty) {
                errs.push(FieldError::required(format!("{pf}.name"), ""));
            }
            port_range(&mut errs, format!("{pf}.port"), p.port);
            protocol(&mut errs, format!("{pf}.protocol"), p.protocol.as_deref());
        }
    }
    result(errs)
}

/// Address types of an EndpointSlice (`supportedAddressTypes`).
const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
/// Upstream's limits of one EndpointSlice.
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_SLICE_PORTS: usize = 20000;

/// Validates a (defaulted: port protocols set) EndpointSlice as upstream's
/// `ValidateEndpointSlice` does for what the proxy reads: name, address type, each endpoint's
/// addresses (by the address type), `nodeName` and `hostname`, the ports' names, numbers and
/// protocols, and the limits on endpoints, addresses and ports.
pub fn validate_endpoint_slice(slice: &EndpointSlice) -> Result<(), ValidationErrors> {
    let mut errs = Errors::default();
    super::meta::object_meta(&slice.metadata, dns1123_subdomain_errors, &mut errs);
    let addr_type = slice.address_type.as_str();
    if addr_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !ADDRESS_TYPES.contains(&addr_type) {
        errs.push(FieldError::not_supported(
            "addressType",
            addr_type,
            ADDRESS_TYPES,
        ));
    }
    if slice.endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_many(
            "endpoints",
            slice.endpoints.len(),
            MAX_ENDPOINTS,
        ));
    } else {
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let f = format!("endpoints[{i}]");
            let af = format!("{f}.addresses");
            if ep.addresses.is_empty() {
                errs.push(FieldError::required(&af, "must contain at least 1 address"));
            } else if ep.addresses.len() > MAX_ADDRESSES {
                errs.push(FieldError::too_many(&af, ep.addresses.len(), MAX_ADDRESSES));
            }
            for (j, a) in ep.addresses.iter().enumerate() {
                let field = format!("{af}[{j}]");
                match addr_type {
                    "IPv4" if a.parse::<std::net::Ipv4Addr>().is_err() => errs.push(
                        FieldError::invalid(field, a, "must be a valid IPv4 address"),
                    ),
                    "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => errs.push(
                        FieldError::invalid(field, a, "must be a valid IPv6 address"),
                    ),
                    "FQDN" => errs.name(&field, a, dns1123_subdomain_errors(a)),
                    _ => {}
                }
            }
            if let Some(n) = &ep.node_name {
                errs.name(&format!("{f}.nodeName"), n, dns1123_subdomain_errors(n));
            }
            if let Some(h) = &ep.hostname {
                errs.name(&format!("{f}.hostname"), h, dns1123_label_errors(h));
            }
        }
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_SLICE_PORTS {
        errs.push(FieldError::too_many("ports", ports.len(), MAX_SLICE_PORTS));
    } else {
        let mut names = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let f = format!("ports[{i}]");
            let name = p.name.as_deref().unwrap_or_default();
            if !name.is_empty() {
                errs.name(&format!("{f}.name"), name, dns1123_label_errors(name));
            }
            if !names.insert(name) {
                errs.push(FieldError::duplicate(format!("{f}.name"), name));
            }
            if let Some(n) = p.port {
                port_range(&mut errs, format!("{f}.port"), n);
            }
            match p.protocol.as_deref() {
                None => errs.push(FieldError::required(format!("{f}.protocol"), "")),
                Some(proto) => protocol(&mut errs, format!("{f}.protocol"), Some(proto)),
            }
            if let Some(a) = &p.app_protocol {
                errs.name(&format!("{f}.appProtocol"), a, qualified_name_errors(a));
            }
        }
    }
    result(errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_slices() {
        let check = |v: serde_json::Value| -> Vec<String> {
            let s: EndpointSlice = serde_json::from_value(v).unwrap();
            match validate_endpoint_slice(&s) {
                Ok(()) => vec![],
                Err(e) => e.0.iter().map(ToString::to_string).collect(),
            }
        };
        let ok = serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": "node1",
                           "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        });
        assert!(check(ok).is_empty());
        let bad = serde_json::json!({
            "metadata": {"name": "Web_1", "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": [], "nodeName": "Node 1"}],
            "ports": [{"name": "http", "port": 0, "protocol": "QUIC"}, {"name": "http"}]
        });
        let errs = check(bad);
        assert_eq!(errs.len(), 8, "{errs:?}");
        assert!(
            errs[0].starts_with("metadata.name: Invalid value: \"Web_1\""),
            "{errs:?}"
        );
        assert_eq!(
            errs[1],
            "endpoints[0].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address"
        );
        assert_eq!(
            errs[2],
            "endpoints[1].addresses: Required value: must contain at least 1 address"
        );
        assert!(errs[3].starts_with("endpoints[1].nodeName: Invalid value: \"Node 1\""));
        assert_eq!(
            errs[4],
            "ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert!(errs[5].starts_with("ports[0].protocol: Unsupported value: \"QUIC\""));
        assert_eq!(
            &errs[6..],
            [
                "ports[1].name: Duplicate value: \"http\"",
                "ports[1].protocol: Required value",
            ]
        );
        let errs = check(
            serde_json::json!({"metadata": {"name": "x", "namespace": "default"},
            "addressType": "IP", "endpoints": [], "ports": [{"port": 80}]}),
        );
        assert_eq!(
            errs,
            [
                "addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
                "ports[0].protocol: Required value",
            ]
        );
    }

    fn svc(v: serde_json::Value) -> Vec<String> {
        let s: Service = serde_json::from_value(v).unwrap();
        validate_service(&s)
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn traffic_policies() {
        let with = |spec: serde_json::Value| {
            let mut v = serde_json::json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"ports": [{"port": 80}]}});
            for (k, x) in spec.as_object().unwrap() {
                v["spec"][k] = x.clone();
            }
            svc(v)
        };
        assert!(with(serde_json::json!({"internalTrafficPolicy": "Local"})).is_empty());
        assert!(
            with(serde_json::json!({"type": "NodePort", "externalTrafficPolicy": "Local"}))
                .is_empty()
        );
        assert_eq!(
            with(serde_json::json!({"internalTrafficPolicy": "Nearest"})),
            ["spec.internalTrafficPolicy: Unsupported value: \"Nearest\": supported values: \"Cluster\", \"Local\""]
        );
        assert_eq!(
            with(serde_json::json!({"externalTrafficPolicy": "Local"})),
            ["spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"]
        );
    }

    #[test]
    fn services() {
        let ok = serde_json::json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}});
        assert!(svc(ok).is_empty());
        let bad = serde_json::json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"type": "Magic", "clusterIP": "x", "sessionAffinity": "Sticky",
            "ports": [{"port": 0}, {"port": 80, "name": "a", "protocol": "ICMP", "nodePort": 70000}]}});
        assert_eq!(
            svc(bad),
            vec![
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
                "spec.clusterIP: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                "spec.ports[0].name: Required value",
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[1].nodePort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ]
        );
        let headless = serde_json::json!({"metadata": {"name": "h", "namespace": "default"}, "spec": {"clusterIP": "None"}});
        assert!(svc(headless).is_empty());
        let cip = serde_json::json!({"metadata": {"name": "c", "namespace": "default"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}});
        assert_eq!(
            svc(cip),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
    }

    #[test]
    fn hostile_metadata_is_refused() {
        // A quote, a newline or an over-long namespace once reached iptables-restore input.
        for ns in ["bad\"ns", "a\n-A INPUT -j ACCEPT", &"n".repeat(200)] {
            let errs = svc(
                serde_json::json!({"metadata": {"name": "web", "namespace": ns},
                "spec": {"ports": [{"port": 80}]}}),
            );
            assert_eq!(errs.len(), 1, "{ns:?}: {errs:?}");
            assert!(
                errs[0].starts_with("metadata.namespace: Invalid value: "),
                "{errs:?}"
            );
            let ep: Endpoints = serde_json::from_value(
                serde_json::json!({"metadata": {"name": "web", "namespace": ns}}),
            )
            .unwrap();
            let errs = validate_endpoints(&ep).unwrap_err().0;
            assert_eq!(errs[0].field, "metadata.namespace", "{errs:?}");
        }
        // Service names are DNS-1035 labels, as the API server's.
        let errs = svc(
            serde_json::json!({"metadata": {"name": "1web", "namespace": "default"},
            "spec": {"ports": [{"port": 80}]}}),
        );
        assert_eq!(
            errs,
            vec![format!(
                "metadata.name: Invalid value: \"1web\": {}",
                crate::validation::meta::DNS1035_LABEL_MSG
            )]
        );
    }

    #[test]
    fn endpoints() {
        let ep: Endpoints = serde_json::from_value(serde_json::json!({"metadata": {"name": "e", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "nope"}], "ports": [{"port": 80, "name": "a"}, {"port": 0}]}]}))
        .unwrap();
        let errs: Vec<String> = validate_endpoints(&ep)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            vec![
                "subsets[0].addresses[1].ip: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                "subsets[0].ports[1].name: Required value",
                "subsets[0].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ]
        );
    }
}
