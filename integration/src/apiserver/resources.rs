//! The resources the stand-in serves, and what upstream's registry strategies do to an object on
//! create and update that a node agent can observe (status reset, defaults, graceful deletion).
//!
//! Every written object is decoded as its `k8s-openapi` type (a body that does not decode is a
//! 400 as upstream's decoder answers) and stored re-encoded, so unknown fields are dropped as
//! upstream drops them; the dropped field paths feed `fieldValidation` (Strict: 400, Warn: a
//! `Warning` header).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Map, Value};

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version (`v1`).
    pub version: &'static str,
    /// Kind (`Pod`).
    pub kind: &'static str,
    /// Plural resource name (`pods`).
    pub plural: &'static str,
    /// Singular name (`pod`).
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all` for `kubectl get all`).
    pub categories: &'static [&'static str],
    /// Whether a `/status` subresource exists (and the main resource ignores `status`).
    pub status: bool,
    /// A PUT on a missing object creates it (upstream's `AllowCreateOnUpdate`).
    pub create_on_update: bool,
    /// Extra field-selector labels beyond `metadata.name`/`metadata.namespace`.
    pub field_labels: &'static [&'static str],
    decode: fn(&Value) -> Result<Value, String>,
}

impl Resource {
    /// `pods` or `leases.coordination.k8s.io`, as upstream's `GroupResource.String()`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `v1` or `coordination.k8s.io/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Decodes `obj` as this resource's type and re-encodes it: the stored form. Returns the
    /// stored value and the paths of fields the type does not know (dropped, as upstream).
    pub fn decode(&self, obj: &Value) -> Result<(Value, Vec<String>), String> {
        let typed = (self.decode)(obj)?;
        let mut unknown = Vec::new();
        unknown_fields(obj, &typed, "", &mut unknown);
        Ok((typed, unknown))
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, String> {
    let de = v.clone();
    let typed: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

fn unknown_fields(input: &Value, stored: &Value, path: &str, out: &mut Vec<String>) {
    match (input, stored) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    None => {}
                    Some(w) => unknown_fields(v, w, &p, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every resource served, in discovery order.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        status: true,
        create_on_update: false,
        field_labels: &["status.phase"],
        decode: roundtrip::<Namespace>,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        status: true,
        create_on_update: false,
        field_labels: &["spec.unschedulable"],
        decode: roundtrip::<Node>,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        status: true,
        create_on_update: false,
        field_labels: POD_FIELDS,
        decode: roundtrip::<Pod>,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
        create_on_update: true,
        field_labels: EVENT_FIELDS,
        decode: roundtrip::<Event>,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        status: true,
        create_on_update: false,
        field_labels: &[],
        decode: roundtrip::<Service>,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        status: false,
        create_on_update: true,
        field_labels: &[],
        decode: roundtrip::<Endpoints>,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        status: false,
        create_on_update: false,
        field_labels: &[],
        decode: roundtrip::<ConfigMap>,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        create_on_update: false,
        field_labels: &["type"],
        decode: roundtrip::<Secret>,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        status: false,
        create_on_update: true,
        field_labels: &[],
        decode: roundtrip::<ServiceAccount>,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        create_on_update: true,
        field_labels: &[],
        decode: roundtrip::<Lease>,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        create_on_update: true,
        field_labels: &[],
        decode: roundtrip::<EndpointSlice>,
    },
    Resource {
        group: "certificates.k8s.io",
        version: "v1",
        kind: "CertificateSigningRequest",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        namespaced: false,
        short_names: &["csr"],
        categories: &[],
        status: true,
        create_on_update: false,
        field_labels: &["spec.signerName"],
        decode: roundtrip::<CertificateSigningRequest>,
    },
];

/// The resource served at `group/version` under `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The groups served (`""` first), each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// What upstream's strategy `PrepareForCreate` and defaulting do to a new object that a client
/// can observe. Pods: status reset to `Pending` with a QoS class, the defaults a kubelet reads.
/// Services: status cleared. Namespaces: `Active` and the name label. Nodes keep their status
/// (upstream lets a node register with one).
pub fn prepare_for_create(res: &Resource, obj: &mut Value) {
    match res.kind {
        "Pod" => {
            default_pod_spec(obj);
            default_toleration_seconds(obj);
            let qos = qos_class(obj);
            obj["status"] = json!({ "phase": "Pending", "qosClass": qos });
        }
        "Service" => {
            obj["status"] = json!({ "loadBalancer": {} });
            default_service_spec(obj);
        }
        "Secret" => merge_string_data(obj),
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            obj["spec"] = json!({ "finalizers": ["kubernetes"] });
            obj["status"] = json!({ "phase": "Active" });
        }
        _ => {}
    }
}

/// Upstream's `DefaultTolerationSeconds` admission plugin (on by default; pod create and
/// update): a pod that does not tolerate the `NoExecute` taints `node.kubernetes.io/not-ready`
/// and `node.kubernetes.io/unreachable` (a toleration with that key or none, and that effect
/// or none) gets a toleration of each with `operator: Exists` and `tolerationSeconds: 300`
/// (`--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`),
/// appended in that order.
pub fn default_toleration_seconds(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tolerates = |spec: &serde_json::Map<String, Value>, key: &str| {
        spec.get("tolerations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| {
                let k = t["key"].as_str().unwrap_or("");
                let e = t["effect"].as_str().unwrap_or("");
                (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
            })
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if tolerates(spec, key) {
            continue;
        }
        let list = spec.entry("tolerations").or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        if let Some(list) = list.as_array_mut() {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }));
        }
    }
}

/// A Secret's write-only `stringData` merged into `data` (base64), as upstream's conversion
/// does; `type` defaulted to `Opaque`.
fn merge_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(m) = secret.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(strings)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in strings {
            let text = v.as_str().unwrap_or_default();
            data[k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    set_default(m, "type", json!("Opaque"));
}

fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value);
    }
}

/// The Service defaults a proxy reads (no ClusterIP is allocated: a test sets `clusterIP`).
fn default_service_spec(svc: &mut Value) {
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    if let Some(ip) = spec.get("clusterIP").cloned().filter(|ip| ip.is_string()) {
        set_default(spec, "clusterIPs", json!([ip]));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
}

/// The pod defaults of `pkg/apis/core/v1/defaults.go` that the kubelet reads.
fn default_pod_spec(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "priority", json!(0));
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            default_container_common(c);
            set_default(c, "resources", json!({}));
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// The defaults of a container that an ephemeral container shares: the termination message's
/// path and policy, and the pull policy (`Always` for `:latest` or no tag, `IfNotPresent` for
/// another tag or a digest).
pub(super) fn default_container_common(c: &mut Map<String, Value>) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or("");
    let policy = if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    };
    set_default(c, "imagePullPolicy", json!(policy));
}

/// `qos.GetPodQOS`, for cpu and memory: BestEffort without any request or limit, Guaranteed when
/// every container limits both and requests (defaulted from limits) equal the limits.
fn qos_class(pod: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let inits = pod["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in containers.iter().chain(inits.iter()) {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            if !req[r].is_null() || !lim[r].is_null() {
                any = true;
            }
            if lim[r].is_null() || (!req[r].is_null() && req[r] != lim[r]) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The value of a field-selector label on `obj` (`None`: the label is not supported for this
/// resource, a 400 as upstream's `field label not supported`).
pub fn field_value(res: &Resource, obj: &Value, label: &str) -> Option<String> {
    let supported = label == "metadata.name"
        || (res.namespaced && label == "metadata.namespace")
        || res.field_labels.contains(&label);
    if !supported {
        return None;
    }
    if res.kind == "Event" && label == "source" {
        return Some(str_of(&obj["source"]["component"]));
    }
    let mut v = obj;
    for part in label.split('.') {
        v = &v[part];
    }
    Some(match v {
        Value::Bool(b) => b.to_string(),
        // upstream's pod and node selectors render an absent bool as "false"
        Value::Null if label == "spec.hostNetwork" || label == "spec.unschedulable" => {
            "false".into()
        }
        other => str_of(other),
    })
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Upstream's name validation for the kind: `None` when `name` is valid, else the message
/// (`metadata.name: Invalid value: ...`'s detail).
pub fn name_error(res: &Resource, name: &str) -> Option<String> {
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| lower_alnum(c) || c == '-')
            && l.starts_with(lower_alnum)
            && l.ends_with(lower_alnum)
    };
    match res.kind {
        "Namespace" => (!label_ok(name)).then(|| {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()
        }),
        "Service" => (!(label_ok(name) && name.starts_with(|c: char| c.is_ascii_lowercase()))).then(|| {
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string()
        }),
        _ => (!(name.len() <= 253 && name.split('.').all(label_ok))).then(|| {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(kind: &str) -> &'static Resource {
        RESOURCES.iter().find(|r| r.kind == kind).unwrap()
    }

    #[test]
    fn default_toleration_seconds_as_upstreams_admission() {
        let default = |key: &str| serde_json::json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        let mut pod = serde_json::json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod);
        assert_eq!(
            pod["spec"]["tolerations"],
            serde_json::json!([
                default("node.kubernetes.io/not-ready"),
                default("node.kubernetes.io/unreachable")
            ])
        );
        // Idempotent (the update path runs it again).
        let before = pod.clone();
        default_toleration_seconds(&mut pod);
        assert_eq!(pod, before);
        // The pod's own come first; one of the two already tolerated is not added.
        let own = serde_json::json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10});
        let mut pod = serde_json::json!({"spec": {"tolerations": [own.clone()]}});
        default_toleration_seconds(&mut pod);
        assert_eq!(
            pod["spec"]["tolerations"],
            serde_json::json!([own, default("node.kubernetes.io/not-ready")])
        );
        // A toleration of every taint (no key, no effect) covers both.
        let all = serde_json::json!({"operator": "Exists"});
        let mut pod = serde_json::json!({"spec": {"tolerations": [all.clone()]}});
        default_toleration_seconds(&mut pod);
        assert_eq!(pod["spec"]["tolerations"], serde_json::json!([all]));
        // NoSchedule only: both added.
        let mut pod = serde_json::json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]}});
        default_toleration_seconds(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn names_as_upstream_validates_them() {
        assert!(name_error(res("Pod"), "web-1.a").is_none());
        assert!(name_error(res("Pod"), "Web").is_some());
        assert!(name_error(res("Pod"), "a..b").is_some());
        assert!(name_error(res("Namespace"), "a.b").is_some());
        assert!(name_error(res("Namespace"), "kube-system").is_none());
        assert!(name_error(res("Service"), "1web").is_some());
        assert!(name_error(res("Service"), "web-1").is_none());
    }

    #[test]
    fn decoding_drops_and_reports_unknown_fields() {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "x": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": true}]}});
        let (stored, unknown) = res("Pod").decode(&pod).unwrap();
        assert_eq!(unknown, ["metadata.x", "spec.containers[0].bogus"]);
        assert!(stored["spec"]["containers"][0].get("bogus").is_none());
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": 5}]}});
        let err = res("Pod").decode(&bad).unwrap_err();
        assert!(
            err.starts_with("spec.containers[0].image: invalid type"),
            "{err}"
        );
    }
}
