//! `ports[].hostPort`: the CNI `portMappings` of a pod-network pod, and the node's used host
//! ports at admission.
//!
//! Port mappings are built as upstream's kubelet builds the sandbox config
//! (`generatePodSandboxConfig` over `MakePortMappings`: the app containers' ports, a port name
//! used twice in one container counted once) and containerd passes them to CNI
//! (`toCNIPortMappings`: only ports with a `hostPort`, the protocol in lower case, `hostIP` when
//! set), as the `portMappings` capability of the CNI conventions.
//!
//! Admission refuses a pod whose host ports another active pod of the node already uses, as
//! upstream's `NodePorts` predicate does (part of the kubelet's `GeneralPredicates`): the ports
//! with a `hostPort` of the app containers and of restartable (sidecar) init containers
//! (`GetHostPorts`); a conflict is the same protocol and port on the same host IP, where an
//! empty `hostIP` is `0.0.0.0` and `0.0.0.0` conflicts with every IP (`HostPortInfo`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::{ContainerPort, Pod, PodSpec};
use serde_json::{json, Map, Value};

/// The admission rejection reason for a host port conflict (upstream's `nodeports.Name`).
pub const NODE_PORTS: &str = "NodePorts";

/// The admission message for a host port conflict: upstream's `PredicateFailureError` text
/// around `nodeports.ErrReason`.
pub const NODE_PORTS_MESSAGE: &str =
    "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports";

/// The CNI capability that carries host ports.
pub const PORT_MAPPINGS: &str = "portMappings";

/// upstream's `DefaultBindAllHostIP`.
const BIND_ALL: &str = "0.0.0.0";

/// The pod's CNI `portMappings` entries (`{hostPort, containerPort, protocol, hostIP}`), in
/// container and port order; empty when no app container asks for a host port.
pub fn port_mappings(spec: &PodSpec) -> Vec<Value> {
    let mut out = Vec::new();
    for c in &spec.containers {
        let mut names = HashSet::new();
        for p in c.ports.iter().flatten() {
            if !names.insert(mapping_name(p)) {
                continue;
            }
            let host_port = p.host_port.unwrap_or(0);
            if host_port <= 0 {
                continue;
            }
            let mut m = json!({
                "hostPort": host_port,
                "containerPort": p.container_port,
                "protocol": protocol(p).to_ascii_lowercase(),
            });
            if let Some(ip) = p.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
                m["hostIP"] = json!(ip);
            }
            out.push(m);
        }
    }
    out
}

/// The capability arguments of the pod's CNI attachment: `portMappings` when it has any.
pub fn capability_args(pod: &Pod) -> Map<String, Value> {
    let mut args = Map::new();
    let mappings = pod.spec.as_ref().map(port_mappings).unwrap_or_default();
    if !mappings.is_empty() {
        args.insert(PORT_MAPPINGS.into(), Value::Array(mappings));
    }
    args
}

/// upstream's `MakePortMappings` key: the port's name, or one made of address family, protocol,
/// host IP, container port and host port.
fn mapping_name(p: &ContainerPort) -> String {
    if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let host_ip = p.host_ip.as_deref().unwrap_or_default();
    let family = match host_ip.parse::<std::net::IpAddr>() {
        _ if host_ip.is_empty() => "any",
        Ok(std::net::IpAddr::V6(_)) => "v6",
        _ => "v4",
    };
    format!(
        "{family}-{}-{host_ip}:{}:{}",
        p.protocol.as_deref().unwrap_or_default(),
        p.container_port,
        p.host_port.unwrap_or(0)
    )
}

fn protocol(p: &ContainerPort) -> &str {
    p.protocol
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("TCP")
}

/// The host ports a pod holds (upstream's `GetHostPorts`): ports with a `hostPort` of the
/// restartable init containers and the app containers.
fn host_ports(spec: &PodSpec) -> impl Iterator<Item = &ContainerPort> {
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
}

/// Whether the pod holds any host port (see [`UsedPorts`]).
pub fn has_host_ports(spec: &PodSpec) -> bool {
    host_ports(spec).next().is_some()
}

/// The host ports in use on the node: host IP → (protocol, port) (upstream's `HostPortInfo`).
#[derive(Debug, Default, Clone)]
pub struct UsedPorts(BTreeMap<String, BTreeSet<(String, i32)>>);

impl UsedPorts {
    /// Records the host ports of `spec`.
    pub fn add(&mut self, spec: &PodSpec) {
        for p in host_ports(spec) {
            let (ip, key) = Self::key(p);
            self.0.entry(ip).or_default().insert(key);
        }
    }

    /// Whether any host port of `spec` is taken: the same protocol and port on the same host
    /// IP or on `0.0.0.0`; a port on `0.0.0.0` is taken on any IP.
    pub fn conflicts(&self, spec: &PodSpec) -> bool {
        host_ports(spec).any(|p| {
            let (ip, key) = Self::key(p);
            if ip == BIND_ALL {
                self.0.values().any(|set| set.contains(&key))
            } else {
                [BIND_ALL, ip.as_str()]
                    .iter()
                    .any(|i| self.0.get(*i).is_some_and(|set| set.contains(&key)))
            }
        })
    }

    fn key(p: &ContainerPort) -> (String, (String, i32)) {
        let ip = p
            .host_ip
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .unwrap_or(BIND_ALL);
        (
            ip.to_string(),
            (protocol(p).to_string(), p.host_port.unwrap_or(0)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn port(cp: i32, hp: Option<i32>, proto: Option<&str>, ip: Option<&str>) -> ContainerPort {
        ContainerPort {
            container_port: cp,
            host_port: hp,
            protocol: proto.map(Into::into),
            host_ip: ip.map(Into::into),
            ..Default::default()
        }
    }

    fn spec(ports: Vec<ContainerPort>) -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ports: Some(ports),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn mappings_follow_cri_and_containerd() {
        let mut s = spec(vec![
            port(80, Some(18080), Some("TCP"), None),
            port(53, Some(5353), Some("UDP"), Some("10.0.0.1")),
            port(9000, None, Some("TCP"), None),
            port(132, Some(1132), Some("SCTP"), Some("")),
            // The same generated name twice: upstream keeps the first.
            port(80, Some(18080), Some("TCP"), None),
        ]);
        s.init_containers = Some(vec![Container {
            name: "sidecar".into(),
            restart_policy: Some("Always".into()),
            ports: Some(vec![port(81, Some(18081), None, None)]),
            ..Default::default()
        }]);
        assert_eq!(
            Value::Array(port_mappings(&s)),
            json!([
                {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "10.0.0.1"},
                {"hostPort": 1132, "containerPort": 132, "protocol": "sctp"},
            ]),
            "app containers only, as upstream's sandbox config"
        );
        let pod = Pod {
            spec: Some(s),
            ..Default::default()
        };
        assert_eq!(capability_args(&pod)["portMappings"][0]["hostPort"], 18080);
        let none = Pod {
            spec: Some(spec(vec![port(80, None, None, None)])),
            ..Default::default()
        };
        assert!(capability_args(&none).is_empty());
    }

    #[test]
    fn conflicts_as_host_port_info() {
        let mut used = UsedPorts::default();
        used.add(&spec(vec![
            port(80, Some(8080), Some("TCP"), None),
            port(53, Some(5353), Some("UDP"), Some("127.0.0.1")),
            port(90, None, Some("TCP"), None),
        ]));
        let conflict = |p: ContainerPort| used.conflicts(&spec(vec![p]));
        assert!(conflict(port(1, Some(8080), Some("TCP"), None)));
        assert!(
            conflict(port(1, Some(8080), None, Some("10.1.1.1"))),
            "0.0.0.0 holds every IP; no protocol is TCP"
        );
        assert!(!conflict(port(1, Some(8080), Some("UDP"), None)));
        assert!(!conflict(port(1, Some(8081), Some("TCP"), None)));
        assert!(conflict(port(
            1,
            Some(5353),
            Some("UDP"),
            Some("127.0.0.1")
        )));
        assert!(
            conflict(port(1, Some(5353), Some("UDP"), None)),
            "a port on 0.0.0.0 conflicts with any IP holding it"
        );
        assert!(!conflict(port(
            1,
            Some(5353),
            Some("UDP"),
            Some("127.0.0.2")
        )));
        assert!(!conflict(port(90, None, Some("TCP"), None)));
        // A sidecar's host port counts; a run-to-completion init container's does not.
        let mut with_init = spec(vec![]);
        with_init.init_containers = Some(vec![Container {
            name: "i".into(),
            ports: Some(vec![port(1, Some(8080), None, None)]),
            ..Default::default()
        }]);
        assert!(!used.conflicts(&with_init));
        with_init.init_containers.as_mut().unwrap()[0].restart_policy = Some("Always".into());
        assert!(used.conflicts(&with_init));
    }
}
