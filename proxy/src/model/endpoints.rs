//! Endpoints of a Service: from a manual `Endpoints` object (selector-less Services), computed
//! from the node's pods (Services with a selector), or from the `discovery.k8s.io/v1`
//! EndpointSlices that name the Service (label `kubernetes.io/service-name`), then matched to
//! Service ports by port name and protocol, as kube-proxy matches EndpointSlice ports.

use super::{Endpoint, Protocol, ServicePortInfo, ServicePortName};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The endpoints of one Service: every (port name, address) pair with its readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// One entry per address and port.
    pub entries: Vec<EndpointEntry>,
}

/// One address and port of an [`EndpointSet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    /// Name of the Service port this serves (empty for an unnamed port).
    pub port_name: String,
    /// Protocol of the port.
    pub protocol: Protocol,
    /// Backend address.
    pub ip: Ipv4Addr,
    /// Backend port.
    pub port: u16,
    /// Readiness: ready entries receive traffic.
    pub ready: bool,
    /// Serving (EndpointSlice `conditions.serving`): the backend answers, even while
    /// terminating. Entries from Endpoints objects and pods: the same as `ready`.
    pub serving: bool,
    /// Terminating (EndpointSlice `conditions.terminating`). A serving, terminating entry
    /// receives traffic only while its Service port has no ready entry
    /// (kube-proxy's ProxyTerminatingEndpoints).
    pub terminating: bool,
    /// Node the backend runs on, when known.
    pub node_name: Option<String>,
}

/// The label of an EndpointSlice naming the Service it belongs to (`discovery.LabelServiceName`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service an EndpointSlice belongs to: its namespace and the value of its
/// `kubernetes.io/service-name` label (`None` without the label: kube-proxy skips such a slice).
pub fn slice_service(slice: &EndpointSlice) -> Option<super::ServiceKey> {
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .filter(|n| !n.is_empty())?;
    Some(super::ServiceKey::new(
        slice.metadata.namespace.as_deref().unwrap_or("default"),
        name.as_str(),
    ))
}

impl EndpointSet {
    /// Namespace and name of the Service.
    pub fn key(&self) -> super::ServiceKey {
        super::ServiceKey::new(self.namespace.as_str(), self.name.as_str())
    }

    /// The set as a `v1` Endpoints object (one subset per port, ready addresses in `addresses`,
    /// the others in `notReadyAddresses`), for `kubenode get endpoints`.
    pub fn to_endpoints(&self) -> Endpoints {
        use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};
        let mut by_port: BTreeMap<(String, &'static str, u16), EndpointSubset> = BTreeMap::new();
        for e in &self.entries {
            let proto = e.protocol.lower().to_uppercase();
            let key = (e.port_name.clone(), e.protocol.lower(), e.port);
            let subset = by_port.entry(key).or_insert_with(|| EndpointSubset {
                ports: Some(vec![EndpointPort {
                    name: (!e.port_name.is_empty()).then(|| e.port_name.clone()),
                    port: i32::from(e.port),
                    protocol: Some(proto),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            let addr = EndpointAddress {
                ip: e.ip.to_string(),
                node_name: e.node_name.clone(),
                ..Default::default()
            };
            let list = if e.ready {
                &mut subset.addresses
            } else {
                &mut subset.not_ready_addresses
            };
            list.get_or_insert_with(Vec::new).push(addr);
        }
        let mut ep = Endpoints::default();
        ep.metadata.name = Some(self.name.clone());
        ep.metadata.namespace = Some(self.namespace.clone());
        ep.subsets = (!by_port.is_empty()).then(|| by_port.into_values().collect());
        ep
    }

    /// Explodes an `Endpoints` object (subsets × addresses × ports); `notReadyAddresses` become
    /// not-ready entries. IPv6 addresses and invalid ports are skipped.
    pub fn from_endpoints(ep: &Endpoints) -> EndpointSet {
        let mut entries = Vec::new();
        for subset in ep.subsets.iter().flatten() {
            let ready = subset.addresses.iter().flatten().map(|a| (a, true));
            let not_ready = subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false));
            for (addr, ready) in ready.chain(not_ready) {
                let Ok(ip) = addr.ip.parse::<Ipv4Addr>() else {
                    continue;
                };
                for p in subset.ports.iter().flatten() {
                    let (Some(protocol), Ok(port)) = (
                        Protocol::parse(p.protocol.as_deref()),
                        u16::try_from(p.port),
                    ) else {
                        continue;
                    };
                    entries.push(EndpointEntry {
                        port_name: p.name.clone().unwrap_or_default(),
                        protocol,
                        ip,
                        port,
                        ready,
                        serving: ready,
                        terminating: false,
                        node_name: addr.node_name.clone(),
                    });
                }
            }
        }
        EndpointSet {
            namespace: ep
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name: ep.metadata.name.clone().unwrap_or_default(),
            entries,
        }
    }

    /// The endpoints of the EndpointSlices of the Service `key` (slices of another address
    /// type than IPv4 are left out, as an IPv4 proxy leaves them), as kube-proxy's
    /// EndpointSlice cache reads them: the first address of each endpoint, `ready` and
    /// `serving` true unless false, `terminating` false unless true, ports without a number
    /// skipped.
    pub fn from_slices<'a>(
        key: &super::ServiceKey,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> EndpointSet {
        let mut entries = Vec::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            for ep in &slice.endpoints {
                let Some(ip) = ep
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<Ipv4Addr>().ok())
                else {
                    continue;
                };
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                let serving = cond.and_then(|c| c.serving).unwrap_or(true);
                let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
                for p in slice.ports.iter().flatten() {
                    let (Some(protocol), Some(port)) = (
                        Protocol::parse(p.protocol.as_deref()),
                        p.port
                            .and_then(|n| u16::try_from(n).ok())
                            .filter(|n| *n != 0),
                    ) else {
                        continue;
                    };
                    entries.push(EndpointEntry {
                        port_name: p.name.clone().unwrap_or_default(),
                        protocol,
                        ip,
                        port,
                        ready,
                        serving,
                        terminating,
                        node_name: ep.node_name.clone(),
                    });
                }
            }
        }
        EndpointSet {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            entries,
        }
    }

    /// The union of two sets of the same Service (an address and port in both: the ready
    /// entry wins, as kube-proxy merges the slices of one Service).
    pub fn union(&self, other: &EndpointSet) -> EndpointSet {
        let mut entries = self.entries.clone();
        entries.extend(other.entries.iter().cloned());
        EndpointSet {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            entries,
        }
    }

    /// The endpoints of each port of `ports` (which belong to this set's Service), sorted.
    /// `node_name` decides which endpoints are local. The same address and port twice (from
    /// two slices) counts once, ready if either is. A port with no ready entry uses its
    /// serving, terminating ones instead (kube-proxy's ProxyTerminatingEndpoints); with
    /// `externalTrafficPolicy: Local`, a port with ready entries only on other nodes sends its
    /// external traffic to this node's serving, terminating ones (`local_fallback`).
    pub(crate) fn for_ports(
        &self,
        ports: &[ServicePortInfo],
        node_name: &str,
        out: &mut BTreeMap<ServicePortName, Vec<Endpoint>>,
    ) {
        for sp in ports {
            let matching = || {
                self.entries
                    .iter()
                    .filter(|e| e.port_name == sp.name.port && e.protocol == sp.protocol)
            };
            let is_local = |e: &EndpointEntry| e.node_name.as_deref() == Some(node_name);
            let any_ready = matching().any(|e| e.ready);
            let any_local_ready = matching().any(|e| e.ready && is_local(e));
            let mut eps: Vec<Endpoint> = matching()
                .map(|e| {
                    let serving_terminating = !e.ready && e.serving && e.terminating;
                    Endpoint {
                        ip: e.ip,
                        port: e.port,
                        ready: e.ready || (!any_ready && serving_terminating),
                        local: is_local(e),
                        local_fallback: (sp.external_local || sp.internal_local)
                            && any_ready
                            && !any_local_ready
                            && is_local(e)
                            && serving_terminating,
                    }
                })
                .collect();
            // Ready first within one address and port, so that the dedup keeps it.
            eps.sort_by_key(|e| (e.ip, e.port, !e.ready, !e.local));
            eps.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
            out.insert(sp.name.clone(), eps);
        }
    }
}

fn pod_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded") | Some("Failed")) || pod.metadata.deletion_timestamp.is_some()
}

/// The endpoints of every Service with a selector, computed from the node's pods, as the
/// endpoints controller does: pods in the Service's namespace whose labels match the selector and
/// that have an IPv4 `status.podIP`; the target port resolved per pod (a number, or a container
/// port name); readiness from the pod's `Ready` condition (`publishNotReadyAddresses` makes every
/// address ready). Terminal and deleted pods are left out. Services without a selector get no set
/// (their `Endpoints` are written by hand).
pub fn endpoints_from_pods<'a, P: std::borrow::Borrow<Pod>>(
    services: impl IntoIterator<Item = &'a Service>,
    pods: &[P],
    node_name: &str,
) -> Vec<EndpointSet> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let super::ServiceKey {
            namespace: ns,
            name,
        } = super::service::service_key(svc);
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let mut set = EndpointSet {
            namespace: ns.clone(),
            name,
            entries: Vec::new(),
        };
        for pod in pods {
            let pod: &Pod = pod.borrow();
            if pod.metadata.namespace.as_deref().unwrap_or("default") != ns || pod_terminal(pod) {
                continue;
            }
            let labels = pod.metadata.labels.as_ref();
            if !selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            {
                continue;
            }
            let Some(ip) = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let ready = publish_not_ready || pod_ready(pod);
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| node_name.to_string());
            for sp in spec.ports.iter().flatten() {
                let Some(protocol) = Protocol::parse(sp.protocol.as_deref()) else {
                    continue;
                };
                let Some(port) = target_port(pod, sp.target_port.as_ref(), sp.port, protocol)
                else {
                    continue;
                };
                set.entries.push(EndpointEntry {
                    port_name: sp.name.clone().unwrap_or_default(),
                    protocol,
                    ip,
                    port,
                    ready,
                    serving: ready,
                    terminating: false,
                    node_name: Some(node.clone()),
                });
            }
        }
        out.push(set);
    }
    out
}

/// The pods of a `PodList` as the kubelet's `/pods` endpoint serves it (JSON).
pub fn pods_from_list_json(body: &[u8]) -> Result<Vec<Pod>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct PodList {
        #[serde(default)]
        items: Vec<Pod>,
    }
    Ok(serde_json::from_slice::<PodList>(body)?.items)
}

/// Resolves a Service port's `targetPort` for one pod: unset means the Service port, a number is
/// itself, a name is looked up among the pod's container ports with the same protocol.
fn target_port(
    pod: &Pod,
    target: Option<&IntOrString>,
    port: i32,
    protocol: Protocol,
) -> Option<u16> {
    match target {
        None => u16::try_from(port).ok(),
        Some(IntOrString::Int(n)) if *n == 0 => u16::try_from(port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|p| *p != 0),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<u16>() {
                return Some(n);
            }
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
                })
                .and_then(|p| u16::try_from(p.container_port).ok())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        let v: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, app: &str) -> Pod {
        obj(&format!(
            r#"
metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}
spec:
  nodeName: node1
  containers:
  - name: c
    image: busybox
    ports: [{{name: web, containerPort: 8080}}, {{name: web, containerPort: 5353, protocol: UDP}}]
status:
  podIP: {ip}
  conditions: [{{type: Ready, status: "{}"}}]
"#,
            if ready { "True" } else { "False" }
        ))
    }

    #[test]
    fn selector_named_target_port_and_readiness() {
        let svc: Service = obj(r#"
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: dns, port: 53, protocol: UDP, targetPort: web}
  - {name: raw, port: 9000}
"#);
        let pods = vec![
            pod("a", "10.244.0.5", true, "web"),
            pod("b", "10.244.0.6", false, "web"),
            pod("c", "10.244.0.7", true, "other"),
        ];
        let sets = endpoints_from_pods(&[svc], &pods, "node1");
        assert_eq!(sets.len(), 1);
        let e = &sets[0].entries;
        assert_eq!(e.len(), 6);
        assert_eq!(
            (e[0].port_name.as_str(), e[0].port, e[0].ready),
            ("http", 8080, true)
        );
        assert_eq!((e[1].port_name.as_str(), e[1].port), ("dns", 5353));
        assert_eq!((e[2].port_name.as_str(), e[2].port), ("raw", 9000));
        assert!(!e[3].ready);
    }

    #[test]
    fn slices_terminating_fallbacks_cluster_wide_and_local() {
        let slice: EndpointSlice = obj(r#"
metadata: {name: web-1, namespace: ns, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: a, port: 80, protocol: TCP}]
endpoints:
- {addresses: [192.0.2.1], nodeName: node2}
- {addresses: [192.0.2.2], nodeName: node1, conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [192.0.2.3], nodeName: node1, conditions: {ready: false, serving: false, terminating: true}}
"#);
        let key = crate::model::ServiceKey::new("ns", "web");
        let set = EndpointSet::from_slices(&key, [&slice]);
        let port = |local_policy: bool| ServicePortInfo {
            name: ServicePortName {
                namespace: "ns".into(),
                name: "web".into(),
                port: "a".into(),
            },
            protocol: Protocol::Tcp,
            cluster_ip: "10.96.0.9".parse().unwrap(),
            port: 80,
            node_port: None,
            external_ips: vec![],
            affinity_timeout: None,
            external_local: local_policy,
            internal_local: false,
        };
        let eps = |sp: ServicePortInfo| {
            let mut out = BTreeMap::new();
            set.for_ports(std::slice::from_ref(&sp), "node1", &mut out);
            out.remove(&sp.name).unwrap()
        };
        // A ready endpoint elsewhere: cluster traffic only to it; with the Local policy the
        // serving, terminating local one takes external traffic, the not-serving one nothing.
        let cluster = eps(port(false));
        assert_eq!(
            cluster
                .iter()
                .map(|e| (e.ready, e.local_fallback))
                .collect::<Vec<_>>(),
            [(true, false), (false, false), (false, false)]
        );
        let local = eps(port(true));
        assert_eq!(
            local
                .iter()
                .map(|e| (e.ready, e.local_fallback))
                .collect::<Vec<_>>(),
            [(true, false), (false, true), (false, false)]
        );
        // No ready endpoint anywhere: the serving, terminating one is used for all traffic.
        let mut only_terminating = slice.clone();
        only_terminating.endpoints.remove(0);
        let set = EndpointSet::from_slices(&key, [&only_terminating]);
        let mut out = BTreeMap::new();
        set.for_ports(&[port(false)], "node1", &mut out);
        let got: Vec<bool> = out
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|e| e.ready)
            .collect();
        assert_eq!(got, [true, false]);
    }

    #[test]
    fn pod_list_json() {
        let body = br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"a"},"status":{"podIP":"10.244.0.5"}}]}"#;
        let pods = pods_from_list_json(body).unwrap();
        assert_eq!(pods.len(), 1);
        assert!(pods_from_list_json(b"nope").is_err());
    }

    #[test]
    fn manual_endpoints_explode_subsets() {
        let ep: Endpoints = obj(r#"
metadata: {name: ext, namespace: ns}
subsets:
- addresses: [{ip: 192.0.2.10}, {ip: 192.0.2.11, nodeName: node1}]
  notReadyAddresses: [{ip: 192.0.2.12}]
  ports: [{name: a, port: 80}, {name: b, port: 53, protocol: UDP}]
"#);
        let set = EndpointSet::from_endpoints(&ep);
        assert_eq!(set.entries.len(), 6);
        assert_eq!(set.entries.iter().filter(|e| !e.ready).count(), 2);
        let sp = ServicePortInfo {
            name: ServicePortName {
                namespace: "ns".into(),
                name: "ext".into(),
                port: "a".into(),
            },
            protocol: Protocol::Tcp,
            cluster_ip: "10.96.0.9".parse().unwrap(),
            port: 80,
            node_port: None,
            external_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
        };
        let mut out = BTreeMap::new();
        set.for_ports(std::slice::from_ref(&sp), "node1", &mut out);
        let eps = &out[&sp.name];
        assert_eq!(eps.len(), 3);
        assert!(eps[1].local && !eps[0].local);
    }
}
