//! Server-side `meta.k8s.io/v1` Tables, what `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`). Every served kind (pods, nodes,
//! namespaces, services, endpoints, configmaps, secrets, endpointslices, events, leases) is
//! printed as upstream's `pkg/printers/internalversion/printers.go` does (the server always
//! computes the wide columns; kubectl hides `priority: 1` ones without `-o wide`); a kind added
//! without a printer gets upstream's default table convertor (`Name`, `Created At`).

use jiff::Timestamp;
use serde_json::{json, Value};

use super::resources::Resource;

/// What `includeObject` asks to embed in each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (upstream's default).
    Metadata,
    /// The whole object.
    Object,
}

fn col(name: &str, format: &str, description: &str, priority: u8) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
}

const AGE: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

fn columns(kind: &str) -> Vec<Value> {
    match kind {
        "Pod" => vec![
            col("Name", "name", NAME, 0),
            col("Ready", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
            col("Status", "", "The aggregate status of the containers in this pod.", 0),
            col("Restarts", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
            col("Age", "", AGE, 0),
            col("IP", "", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
            col("Node", "", "NodeName is a request to schedule this pod onto a specific node. If it is non-empty, the scheduler simply schedules this pod onto that node, assuming that it fits resource requirements.", 1),
            col("Nominated Node", "", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.", 1),
            col("Readiness Gates", "", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates", 1),
        ],
        "Node" => vec![
            col("Name", "name", NAME, 0),
            col("Status", "", "The status of the node", 0),
            col("Roles", "", "The roles of the node", 0),
            col("Age", "", AGE, 0),
            col("Version", "", "Kubelet Version reported by the node.", 0),
            col("Internal-IP", "", "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).", 1),
            col("External-IP", "", "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).", 1),
            col("OS-Image", "", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", 1),
            col("Kernel-Version", "", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
            col("Container-Runtime", "", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", 1),
        ],
        "ServiceAccount" => vec![
            col("Name", "name", NAME, 0),
            col("Secrets", "", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret", 0),
            col("Age", "", AGE, 0),
        ],
        "Namespace" => vec![
            col("Name", "name", NAME, 0),
            col("Status", "", "The status of the namespace", 0),
            col("Age", "", AGE, 0),
        ],
        "Service" => vec![
            col("Name", "name", NAME, 0),
            col("Type", "", "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types", 0),
            col("Cluster-IP", "", "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies", 0),
            col("External-IP", "", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.", 0),
            col("Port(s)", "", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies", 0),
            col("Age", "", AGE, 0),
            col("Selector", "", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/", 1),
        ],
        "Event" => vec![
            col("Last Seen", "", "The time at which the most recent occurrence of this event was recorded.", 0),
            col("Type", "", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
            col("Reason", "", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0),
            col("Object", "", "The object that this event is about.", 0),
            col("Subobject", "", "If the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.", 1),
            col("Source", "", "The component reporting this event. Should be a short machine understandable string.", 1),
            col("Message", "", "A human-readable description of the status of this operation.", 0),
            col("First Seen", "", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)", 1),
            json!({"name": "Count", "type": "integer", "format": "", "description": "The number of times this event has occurred.", "priority": 1}),
            col("Name", "name", NAME, 1),
        ],
        "Endpoints" => vec![
            col("Name", "name", NAME, 0),
            col("Endpoints", "", "The set of all endpoints is the union of all subsets.", 0),
            col("Age", "", AGE, 0),
        ],
        "EndpointSlice" => vec![
            col("Name", "name", NAME, 0),
            col("AddressType", "", "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type.", 0),
            col("Ports", "", "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.", 0),
            col("Endpoints", "", "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.", 0),
            col("Age", "", AGE, 0),
        ],
        "ConfigMap" => vec![
            col("Name", "name", NAME, 0),
            col("Data", "", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.", 0),
            col("Age", "", AGE, 0),
        ],
        "Secret" => vec![
            col("Name", "name", NAME, 0),
            col("Type", "", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types", 0),
            col("Data", "", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4", 0),
            col("Age", "", AGE, 0),
        ],
        "Lease" => vec![
            col("Name", "name", NAME, 0),
            col("Holder", "", "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.", 0),
            col("Age", "", AGE, 0),
        ],
        "CertificateSigningRequest" => super::csr::columns(col, NAME, AGE),
        _ => vec![
            col("Name", "name", NAME, 0),
            json!({"name": "Created At", "type": "date", "format": "", "description": AGE, "priority": 0}),
        ],
    }
}

/// A Table of `objects` (each a stored object of `res`), with the list's resourceVersion.
pub fn table(res: &Resource, objects: &[Value], rv: &str, include: IncludeObject) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({ "cells": cells(res, o) });
            match include {
                IncludeObject::None => {}
                IncludeObject::Object => row["object"] = o.clone(),
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"].clone(),
                    })
                }
            }
            if res.kind == "Pod" {
                let phase = o["status"]["phase"].as_str().unwrap_or("");
                if phase == "Succeeded" || phase == "Failed" {
                    row["conditions"] = json!([{"type": "Completed", "status": "True",
                        "reason": phase, "message": format!("The pod {}", if phase == "Succeeded" { "has completed successfully." } else { "failed." })}]);
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": rv },
        "columnDefinitions": columns(res.kind),
        "rows": rows,
    })
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn cells(res: &Resource, o: &Value) -> Vec<Value> {
    let name = json!(s(&o["metadata"]["name"]));
    let created = &o["metadata"]["creationTimestamp"];
    match res.kind {
        "Pod" => pod_cells(o),
        "Node" => node_cells(o),
        "ServiceAccount" => vec![name, json!(arr(&o["secrets"]).len()), json!(since(created))],
        "Namespace" => vec![name, json!(s(&o["status"]["phase"])), json!(since(created))],
        "Lease" => vec![
            name,
            json!(s(&o["spec"]["holderIdentity"])),
            json!(since(created)),
        ],
        "Service" => service_cells(o),
        "Event" => event_cells(o),
        "Endpoints" => vec![name, json!(format_endpoints(o)), json!(since(created))],
        // Upstream prints the number of keys (data plus binaryData for ConfigMaps), never values.
        "ConfigMap" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), json!(since(created))]
        }
        "Secret" => {
            let n = o["data"].as_object().map_or(0, |m| m.len());
            vec![name, json!(s(&o["type"])), json!(n), json!(since(created))]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = arr(&o["ports"])
                .iter()
                .map(|p| match (p["port"].as_i64(), p["name"].as_str()) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(n)) => n.to_string(),
                    _ => "*".into(),
                })
                .collect();
            let addrs: Vec<String> = arr(&o["endpoints"])
                .iter()
                .flat_map(|e| arr(&e["addresses"]).iter().map(|a| s(a).to_string()))
                .collect();
            vec![
                name,
                json!(s(&o["addressType"])),
                json!(list_with_more(&ports)),
                json!(list_with_more(&addrs)),
                json!(since(created)),
            ]
        }
        "CertificateSigningRequest" => super::csr::cells(o, since(created)),
        _ => vec![name, created.clone()],
    }
}

fn parse_time(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

/// `translateTimestampSince`: `<unknown>` for no time, else `duration.HumanDuration`.
fn since(v: &Value) -> String {
    match parse_time(v) {
        None => "<unknown>".into(),
        Some(t) => {
            let secs = Timestamp::now().as_second() - t.as_second();
            human_duration(secs)
        }
    }
}

/// k8s.io/apimachinery/pkg/util/duration.HumanDuration, on whole seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `printPod`.
fn pod_cells(pod: &Value) -> Vec<Value> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let phase = s(&status["phase"]);
    let mut reason = if s(&status["reason"]).is_empty() {
        phase.to_string()
    } else {
        s(&status["reason"]).to_string()
    };
    for c in arr(&status["conditions"]) {
        if s(&c["type"]) == "PodScheduled" && s(&c["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }
    let restartable = |name: &str| -> bool {
        arr(&spec["initContainers"])
            .iter()
            .any(|c| s(&c["name"]) == name && s(&c["restartPolicy"]) == "Always")
    };
    let mut total = arr(&spec["containers"]).len();
    total += arr(&spec["initContainers"])
        .iter()
        .filter(|c| s(&c["restartPolicy"]) == "Always")
        .count();
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let mut initializing = false;
    let n_init = arr(&spec["initContainers"]).len();
    for (i, c) in arr(&status["initContainerStatuses"]).iter().enumerate() {
        let count = c["restartCount"].as_i64().unwrap_or(0);
        restarts += count;
        let finished = parse_time(&c["lastState"]["terminated"]["finishedAt"]);
        last_restart = later(last_restart, finished);
        let is_sidecar = restartable(s(&c["name"]));
        if is_sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let term = &c["state"]["terminated"];
        let wait = &c["state"]["waiting"];
        if term.is_object() && term["exitCode"].as_i64().unwrap_or(0) == 0 {
            continue;
        }
        if is_sidecar && c["started"].as_bool() == Some(true) {
            if c["ready"].as_bool() == Some(true) {
                ready += 1;
            }
            continue;
        }
        if term.is_object() {
            reason = if s(&term["reason"]).is_empty() {
                let signal = term["signal"].as_i64().unwrap_or(0);
                if signal != 0 {
                    format!("Init:Signal:{signal}")
                } else {
                    format!("Init:ExitCode:{}", term["exitCode"].as_i64().unwrap_or(0))
                }
            } else {
                format!("Init:{}", s(&term["reason"]))
            };
        } else if wait.is_object()
            && !s(&wait["reason"]).is_empty()
            && s(&wait["reason"]) != "PodInitializing"
        {
            reason = format!("Init:{}", s(&wait["reason"]));
        } else {
            reason = format!("Init:{i}/{n_init}");
        }
        initializing = true;
        break;
    }
    let initialized = arr(&status["conditions"])
        .iter()
        .any(|c| s(&c["type"]) == "Initialized" && s(&c["status"]) == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(&status["containerStatuses"]).iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            last_restart = later(
                last_restart,
                parse_time(&c["lastState"]["terminated"]["finishedAt"]),
            );
            let wait = &c["state"]["waiting"];
            let term = &c["state"]["terminated"];
            if wait.is_object() && !s(&wait["reason"]).is_empty() {
                reason = s(&wait["reason"]).into();
            } else if term.is_object() && !s(&term["reason"]).is_empty() {
                reason = s(&term["reason"]).into();
            } else if term.is_object() {
                let signal = term["signal"].as_i64().unwrap_or(0);
                reason = if signal != 0 {
                    format!("Signal:{signal}")
                } else {
                    format!("ExitCode:{}", term["exitCode"].as_i64().unwrap_or(0))
                };
            } else if c["ready"].as_bool() == Some(true) && c["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(&status["conditions"])
                .iter()
                .any(|c| s(&c["type"]) == "Ready" && s(&c["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    if deleting && s(&status["reason"]) == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(Timestamp::now().as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    };
    let or_none = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };
    let ip = arr(&status["podIPs"])
        .first()
        .map(|p| s(&p["ip"]).to_string())
        .unwrap_or_default();
    let gates = arr(&spec["readinessGates"]);
    let readiness = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let t = gates
            .iter()
            .filter(|g| {
                arr(&status["conditions"])
                    .iter()
                    .find(|c| c["type"] == g["conditionType"])
                    .is_some_and(|c| s(&c["status"]) == "True")
            })
            .count();
        format!("{t}/{}", gates.len())
    };
    vec![
        json!(s(&pod["metadata"]["name"])),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_str),
        json!(since(&pod["metadata"]["creationTimestamp"])),
        json!(or_none(&ip)),
        json!(or_none(s(&spec["nodeName"]))),
        json!(or_none(s(&status["nominatedNodeName"]))),
        json!(readiness),
    ]
}

/// `listWithMoreString` over at most 3 items: `a,b,c + N more...`, `<unset>` when empty.
fn list_with_more(items: &[String]) -> String {
    const MAX: usize = 3;
    let shown = items[..items.len().min(MAX)].join(",");
    if items.len() > MAX {
        format!("{shown} + {} more...", items.len() - MAX)
    } else if shown.is_empty() {
        "<unset>".into()
    } else {
        shown
    }
}

/// `formatEndpoints` with all ports: `ip:port` per address and port, at most 3, then
/// `+ N more...`; `<none>` without subsets.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr(&ep["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    let mut more = false;
    for ss in subsets {
        let addrs = arr(&ss["addresses"]);
        let ports = arr(&ss["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(&a["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let ip = s(&a["ip"]);
                let port = p["port"].as_i64().unwrap_or(0);
                // net.JoinHostPort: brackets around an IPv6 address
                list.push(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
}

/// `printEvent` (wide, as the server always prints).
fn event_cells(ev: &Value) -> Vec<Value> {
    let first = if parse_time(&ev["firstTimestamp"]).is_some() {
        since(&ev["firstTimestamp"])
    } else {
        since(&ev["eventTime"])
    };
    let mut last = if parse_time(&ev["lastTimestamp"]).is_some() {
        since(&ev["lastTimestamp"])
    } else {
        first.clone()
    };
    let mut count = ev["count"].as_i64().unwrap_or(0);
    if ev["series"].is_object() {
        last = since(&ev["series"]["lastObservedTime"]);
        count = ev["series"]["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let io = &ev["involvedObject"];
    let kind = s(&io["kind"]).to_lowercase();
    let target = if s(&io["name"]).is_empty() {
        kind
    } else {
        format!("{kind}/{}", s(&io["name"]))
    };
    let first_non_empty = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    let component = first_non_empty(s(&ev["source"]["component"]), s(&ev["reportingComponent"]));
    let instance = first_non_empty(s(&ev["source"]["host"]), s(&ev["reportingInstance"]));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(s(&ev["type"])),
        json!(s(&ev["reason"])),
        json!(target),
        json!(s(&io["fieldPath"])),
        json!(source),
        json!(s(&ev["message"]).trim()),
        json!(first),
        json!(count),
        json!(s(&ev["metadata"]["name"])),
    ]
}

/// `printService`.
fn service_cells(svc: &Value) -> Vec<Value> {
    let spec = &svc["spec"];
    let cluster_ip = arr(&spec["clusterIPs"])
        .first()
        .map(|ip| s(ip).to_string())
        .unwrap_or_else(|| "<none>".into());
    let external: Vec<&str> = arr(&spec["externalIPs"]).iter().map(s).collect();
    let external = match s(&spec["type"]) {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let mut lb: Vec<&str> = arr(&svc["status"]["loadBalancer"]["ingress"])
                .iter()
                .map(|i| {
                    if s(&i["ip"]).is_empty() {
                        s(&i["hostname"])
                    } else {
                        s(&i["ip"])
                    }
                })
                .filter(|x| !x.is_empty())
                .collect();
            lb.sort();
            lb.dedup();
            let mut lb_text = lb.join(",");
            if lb_text.len() > 16 {
                lb_text = format!("{}...", &lb_text[..13]);
            }
            if !external.is_empty() {
                let mut all: Vec<&str> = lb_text.split(',').filter(|x| !x.is_empty()).collect();
                all.extend(external);
                all.join(",")
            } else if lb_text.is_empty() {
                "<pending>".into()
            } else {
                lb_text
            }
        }
        "ExternalName" => s(&spec["externalName"]).to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = arr(&spec["ports"])
        .iter()
        .map(|p| {
            let port = p["port"].as_i64().unwrap_or(0);
            let proto = s(&p["protocol"]);
            match p["nodePort"].as_i64() {
                Some(np) if np > 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    // labels.FormatLabels: sorted key=value pairs, "<none>" when empty
    let selector = spec["selector"]
        .as_object()
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        json!(s(&svc["metadata"]["name"])),
        json!(s(&spec["type"])),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        json!(since(&svc["metadata"]["creationTimestamp"])),
        json!(selector),
    ]
}

/// `printNode`.
fn node_cells(node: &Value) -> Vec<Value> {
    let status = &node["status"];
    let mut states: Vec<String> = Vec::new();
    if let Some(c) = arr(&status["conditions"])
        .iter()
        .rev()
        .find(|c| s(&c["type"]) == "Ready")
    {
        states.push(
            if s(&c["status"]) == "True" {
                "Ready"
            } else {
                "NotReady"
            }
            .into(),
        );
    }
    if states.is_empty() {
        states.push("Unknown".into());
    }
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        states.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.into());
                }
            } else if k == "kubernetes.io/role" && !s(v).is_empty() {
                roles.push(s(v).into());
            }
        }
    }
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let address = |t: &str| {
        arr(&status["addresses"])
            .iter()
            .find(|a| s(&a["type"]) == t)
            .map(|a| s(&a["address"]).to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let info = &status["nodeInfo"];
    let or_unknown = |v: &str| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        json!(s(&node["metadata"]["name"])),
        json!(states.join(",")),
        json!(roles),
        json!(since(&node["metadata"]["creationTimestamp"])),
        json!(s(&info["kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or_unknown(s(&info["osImage"]))),
        json!(or_unknown(s(&info["kernelVersion"]))),
        json!(or_unknown(s(&info["containerRuntimeVersion"]))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_as_upstream() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_status_column_follows_containers() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}],
              "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = pod_cells(&pod);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "1");
        assert_eq!(c[5], "10.1.0.5");
        assert_eq!(c[6], "<none>");
        let mut deleting = pod.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(pod_cells(&deleting)[2], "Terminating");
    }

    #[test]
    fn node_status_and_roles() {
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "False"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let c = node_cells(&node);
        assert_eq!(c[1], "NotReady,SchedulingDisabled");
        assert_eq!(c[2], "control-plane,worker");
        assert_eq!(c[5], "10.0.0.1");
        assert_eq!(c[6], "<none>");
        assert_eq!(c[7], "<unknown>");
    }
}
