//! `metrics.k8s.io/v1beta1`, what `kubectl top` reads: in a real cluster an aggregated API
//! served by metrics-server, which scrapes every kubelet's `GET /metrics/resource` on :10250.
//! The stand-in does both halves in-process (HTTPS mode only, with the API server's kubelet
//! client certificate, as [`super::podlogs`] reaches a kubelet), following metrics-server
//! (`pkg/scraper`, `pkg/storage`, `pkg/api`):
//!
//! - **Scraping** every `metric_resolution` (metrics-server's `--metric-resolution`, default
//!   15 s): each Node's kubelet at the first of its `InternalIP`, `ExternalIP`, `Hostname`
//!   addresses (metrics-server's default order starts with `Hostname`, which the test nodes
//!   cannot resolve) on its `daemonEndpoints.kubeletEndpoint.Port`, the kubelet's serving
//!   certificate not verified (`--kubelet-insecure-tls`, what test clusters run). The
//!   Prometheus text is decoded as `decodeBatch`: `node_cpu_usage_seconds_total`,
//!   `node_memory_working_set_bytes`, `node_swap_usage_bytes`, and the `container_*` series of
//!   the same names plus `container_start_time_seconds`, each point's time the sample's
//!   timestamp; a node point with no time, no CPU or no memory is dropped, and a pod with a
//!   container lacking CPU or memory.
//! - **Storage**: the last two points per node and per container, as `nodeStorage` and
//!   `podStorage`: a new point moves the stored one to `prev` when it is newer, a container
//!   whose start time is not before the stored point's time (it restarted) starts over, and a
//!   container that started between 10 s and one resolution before its first point gets a
//!   `prev` at its start time with zero CPU. Usage is `resourceUsage`: CPU the difference of the
//!   cumulative CPU over the window between the two points (nano-cores), memory the last
//!   working set, the window `last - prev`, the timestamp the last point's (for a pod: its
//!   earliest container's). Each scrape replaces the whole set, so a node that cannot be
//!   reached loses its points.
//! - **API**: `nodes` (cluster scope) and `pods` (all namespaces or one), list (with
//!   `labelSelector` and `fieldSelector` on `metadata.name`/`metadata.namespace`, matched
//!   against the Node or Pod) and get. Only objects with usage are listed; a get without usage
//!   is a 404 `nodemetrics.metrics.k8s.io "<name>" not found` (`podmetrics.metrics.k8s.io
//!   "<ns>/<name>"`). Items carry the Node's or Pod's labels, `creationTimestamp` now.
//!
//! Not done: metrics-server's Tables (`kubectl get nodemetrics` prints the default table),
//! watch (newer metrics-server serves it), protobuf, the APIService object itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jiff::{SignedDuration, Timestamp};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};

use super::handler::{Query, Shared};
use super::podlogs::KubeletClient;
use super::resources::RESOURCES;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// The API group and version served.
pub const GROUP: &str = "metrics.k8s.io";
/// The version of [`GROUP`].
pub const VERSION: &str = "v1beta1";
/// metrics-server's default `--metric-resolution`.
pub const DEFAULT_RESOLUTION: Duration = Duration::from_secs(15);
/// metrics-server's `freshContainerMinMetricsResolution`.
const FRESH_CONTAINER_MIN: SignedDuration = SignedDuration::from_secs(10);
/// The largest `/metrics/resource` body read from a kubelet.
const MAX_BODY: usize = 16 << 20;

/// One point of a node or a container (metrics-server's `MetricsPoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Point {
    /// The container's start (zero for a node).
    pub start: Option<Timestamp>,
    /// When it was measured.
    pub time: Option<Timestamp>,
    /// Cumulative CPU in nano-core-seconds.
    pub cpu: u64,
    /// Working set in bytes.
    pub memory: u64,
    /// Swap in bytes.
    pub swap: u64,
}

/// One scrape of one kubelet, decoded: the node's point, and each pod's containers' points.
#[derive(Debug, Default)]
pub struct Batch {
    /// The node's point, when complete.
    pub node: Option<Point>,
    /// `(namespace, pod)` → container → point.
    pub pods: BTreeMap<(String, String), BTreeMap<String, Point>>,
}

fn label_value(labels: &str, key: &str) -> String {
    // `key="value"` with `\"`, `\\`, `\n` escapes, as the exposition format
    let mut rest = labels;
    while let Some(i) = rest.find('=') {
        let name = rest[..i].trim_start_matches([',', ' ', '{']).trim();
        let after = &rest[i + 1..];
        let Some(body) = after.strip_prefix('"') else {
            return String::new();
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((j, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, o)) => value.push(o),
                    None => {}
                },
                '"' => {
                    end = j + 1;
                    break;
                }
                o => value.push(o),
            }
        }
        if name == key {
            return value;
        }
        rest = &body[end.min(body.len())..];
    }
    String::new()
}

/// Decodes a `/metrics/resource` answer as metrics-server's `decodeBatch`; samples without a
/// timestamp get `now`.
pub fn decode(text: &str, now: Timestamp) -> Result<Batch, String> {
    let mut node = Point::default();
    let mut pods: BTreeMap<(String, String), BTreeMap<String, Point>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => line
                .split_once(' ')
                .ok_or_else(|| format!("line {}: no value: {line:?}", n + 1))?,
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let mut fields = rest.split_whitespace();
        let value: f64 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("line {}: bad value: {line:?}", n + 1))?;
        let time = match fields.next() {
            Some(t) => t
                .parse::<i64>()
                .ok()
                .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                .ok_or_else(|| format!("line {}: bad timestamp: {line:?}", n + 1))?,
            None => now,
        };
        match name {
            "node_cpu_usage_seconds_total" => {
                node.cpu = (value * 1e9) as u64;
                node.time = Some(time);
            }
            "node_memory_working_set_bytes" => {
                node.memory = value as u64;
                node.time = Some(time);
            }
            "node_swap_usage_bytes" => {
                node.swap = value as u64;
                node.time = Some(time);
            }
            "container_cpu_usage_seconds_total"
            | "container_memory_working_set_bytes"
            | "container_swap_usage_bytes"
            | "container_start_time_seconds" => {
                let key = (label_value(labels, "namespace"), label_value(labels, "pod"));
                let p = pods
                    .entry(key)
                    .or_default()
                    .entry(label_value(labels, "container"))
                    .or_default();
                match name {
                    "container_cpu_usage_seconds_total" => {
                        p.cpu = (value * 1e9) as u64;
                        p.time = Some(time);
                    }
                    "container_memory_working_set_bytes" => {
                        p.memory = value as u64;
                        p.time = Some(time);
                    }
                    "container_swap_usage_bytes" => {
                        p.swap = value as u64;
                        p.time = Some(time);
                    }
                    _ => {
                        p.start = Timestamp::from_nanosecond((value * 1e9) as i128).ok();
                    }
                }
            }
            _ => {}
        }
    }
    let node = (node.time.is_some() && node.cpu != 0 && node.memory != 0).then_some(node);
    // checkContainerMetrics: a container with a point but no CPU or no memory drops its pod
    pods.retain(|_, containers| {
        !containers.is_empty()
            && containers
                .values()
                .all(|c| *c == Point::default() || (c.cpu != 0 && c.memory != 0))
    });
    for containers in pods.values_mut() {
        containers.retain(|_, c| *c != Point::default());
    }
    Ok(Batch { node, pods })
}

/// The last two points of every node and container (metrics-server's `storage`).
#[derive(Debug, Default)]
pub struct Storage {
    nodes_last: BTreeMap<String, Point>,
    nodes_prev: BTreeMap<String, Point>,
    pods_last: BTreeMap<(String, String), BTreeMap<String, Point>>,
    pods_prev: BTreeMap<(String, String), BTreeMap<String, Point>>,
}

/// Usage over a window: `(cpu nano-cores, memory bytes, swap bytes, timestamp, window)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU in nano-cores.
    pub cpu: u64,
    /// Working set bytes.
    pub memory: u64,
    /// Swap bytes.
    pub swap: u64,
    /// The last point's time.
    pub time: Timestamp,
    /// Between the two points.
    pub window: SignedDuration,
}

/// metrics-server's `resourceUsage`.
fn resource_usage(last: &Point, prev: &Point) -> Result<Usage, String> {
    if last.start < prev.start {
        return Err("unexpected decrease in startTime of node/container".into());
    }
    if last.cpu < prev.cpu {
        return Err("unexpected decrease in cumulative CPU usage value".into());
    }
    let (Some(t), Some(p)) = (last.time, prev.time) else {
        return Err("a point without a time".into());
    };
    let window = t.duration_since(p);
    if window.as_nanos() <= 0 {
        return Err("a window of zero".into());
    }
    let cpu = (last.cpu - prev.cpu) as f64 / window.as_secs_f64();
    Ok(Usage {
        cpu: cpu as u64,
        memory: last.memory,
        swap: last.swap,
        time: t,
        window,
    })
}

impl Storage {
    /// Stores one scrape of every node: `nodes` name → batch (`nodeStorage.Store` and
    /// `podStorage.Store`); `resolution` is the scrape period.
    pub fn store(&mut self, nodes: BTreeMap<String, Batch>, resolution: Duration) {
        let resolution = SignedDuration::try_from(resolution).unwrap_or(SignedDuration::MAX);
        let mut nodes_last = BTreeMap::new();
        let mut nodes_prev = BTreeMap::new();
        let mut pods_last = BTreeMap::new();
        let mut pods_prev = BTreeMap::new();
        for (name, batch) in nodes {
            if let Some(new) = batch.node {
                if let Some(last) = self.nodes_last.get(&name) {
                    if new.time > last.time {
                        nodes_prev.insert(name.clone(), *last);
                    } else if let Some(prev) = self.nodes_prev.get(&name) {
                        if prev.time < new.time {
                            nodes_prev.insert(name.clone(), *prev);
                        }
                    }
                }
                nodes_last.insert(name.clone(), new);
            }
            for (pod, containers) in batch.pods {
                if pods_last.contains_key(&pod) {
                    continue; // a duplicate pod point
                }
                let mut prev_containers = BTreeMap::new();
                for (c, new) in &containers {
                    let (Some(start), Some(time)) = (new.start, new.time) else {
                        if let Some(old) = self.kept(&pod, c, new) {
                            prev_containers.insert(c.clone(), old);
                        }
                        continue;
                    };
                    let age = time.duration_since(start);
                    if start < time && age < resolution && age >= FRESH_CONTAINER_MIN {
                        let mut copied = *new;
                        copied.time = Some(start);
                        copied.cpu = 0;
                        prev_containers.insert(c.clone(), copied);
                    } else if let Some(old) = self.kept(&pod, c, new) {
                        prev_containers.insert(c.clone(), old);
                    }
                }
                if !prev_containers.is_empty() {
                    pods_prev.insert(pod.clone(), prev_containers);
                }
                pods_last.insert(pod, containers);
            }
        }
        self.nodes_last = nodes_last;
        self.nodes_prev = nodes_prev;
        self.pods_last = pods_last;
        self.pods_prev = pods_prev;
    }

    /// The previous point of container `c` of `pod` for the new point `new`, as `podStorage`
    /// keeps it: the last stored one when `new` is newer, else the stored previous one when
    /// older than `new`; none when the container restarted since.
    fn kept(&self, pod: &(String, String), c: &str, new: &Point) -> Option<Point> {
        let last = self.pods_last.get(pod)?.get(c)?;
        if new.start >= last.time {
            return None;
        }
        if new.time > last.time {
            return Some(*last);
        }
        let prev = self.pods_prev.get(pod)?.get(c)?;
        (prev.time < new.time).then_some(*prev)
    }

    /// The usage of node `name`, once it has two points.
    pub fn node(&self, name: &str) -> Option<Usage> {
        let last = self.nodes_last.get(name)?;
        let prev = self.nodes_prev.get(name)?;
        resource_usage(last, prev).ok()
    }

    /// The usage of each container of pod `ns/name` (sorted by name), with the pod's
    /// timestamp and window (its earliest container's); `None` unless every container has two
    /// points.
    pub fn pod(&self, ns: &str, name: &str) -> Option<(Vec<(String, Usage)>, Usage)> {
        let key = (ns.to_string(), name.to_string());
        let last = self.pods_last.get(&key)?;
        let prev = self.pods_prev.get(&key)?;
        let mut out = Vec::new();
        let mut earliest: Option<Usage> = None;
        for (c, l) in last {
            let p = prev.get(c)?;
            let Ok(u) = resource_usage(l, p) else {
                continue;
            };
            if earliest.is_none_or(|e| e.time > u.time) {
                earliest = Some(u);
            }
            out.push((c.clone(), u));
        }
        Some((out, earliest?))
    }
}

/// A `Quantity` of `n * 10^-9` in DecimalSI, canonical as upstream prints it (`250m`, `1`,
/// `123456n`).
pub fn nano_quantity(n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let (mut v, mut scale) = (n, 0);
    while v % 1000 == 0 && scale < 3 {
        v /= 1000;
        scale += 1;
    }
    format!("{v}{}", ["n", "u", "m", ""][scale])
}

/// A `Quantity` of `n` bytes in BinarySI, canonical as upstream prints it (`12Ki`, `1Mi`,
/// `1000`).
pub fn bytes_quantity(n: u64) -> String {
    if n < 1024 {
        return n.to_string();
    }
    let (mut v, mut i) = (n, 0);
    while v % 1024 == 0 && i < 6 {
        v /= 1024;
        i += 1;
    }
    format!("{v}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i])
}

/// A `metav1.Duration` as Go's `time.Duration.String` prints it (`15.004s`, `1m0.5s`, `500ms`).
pub fn go_duration(d: SignedDuration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let (sign, ns) = if ns < 0 { ("-", -ns) } else { ("", ns) };
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", trim_frac(ns, div));
    }
    let h = ns / 3_600_000_000_000;
    let m = (ns / 60_000_000_000) % 60;
    let s = ns % 60_000_000_000;
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_frac(s, 1_000_000_000)));
    out
}

fn trim_frac(v: i128, div: i128) -> String {
    let whole = v / div;
    let frac = v % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = (div as f64).log10().round() as usize;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "cpu": nano_quantity(u.cpu),
        "memory": bytes_quantity(u.memory),
        "swap": bytes_quantity(u.swap),
    })
}

/// `/apis`'s entry for the group.
pub fn group_doc() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis/metrics.k8s.io`.
pub fn api_group() -> Value {
    let mut doc = group_doc();
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    doc
}

/// `/apis/metrics.k8s.io/v1beta1`.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics",
             "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics",
             "verbs": ["get", "list"]},
        ],
    })
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: format!("{kind}.{GROUP} \"{name}\" not found"),
        details: Some(json!({"name": name, "group": GROUP, "kind": kind})),
    }
}

/// Which objects a list selects: the label and field selectors of `q`.
fn selectors(q: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    fields
        .matches(|l| meta_field(&Value::Null, l))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

/// `generic.AddObjectMetaFieldsSet`: `metadata.name`, `metadata.namespace`.
fn meta_field(obj: &Value, label: &str) -> Option<String> {
    match label {
        "metadata.name" => Some(obj["metadata"]["name"].as_str().unwrap_or("").into()),
        "metadata.namespace" => Some(obj["metadata"]["namespace"].as_str().unwrap_or("").into()),
        _ => None,
    }
}

fn objects(shared: &Shared, plural: &str, ns: Option<&str>) -> Vec<Value> {
    let Some(res) = RESOURCES
        .iter()
        .position(|r| r.plural == plural && r.group.is_empty())
    else {
        return Vec::new();
    };
    let mut items = shared.lock().list(res, ns);
    items.sort_by(|a, b| {
        let key = |o: &Value| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    items
}

fn node_metrics(storage: &Storage, node: &Value) -> Option<Value> {
    let name = node["metadata"]["name"].as_str()?;
    let u = storage.node(name)?;
    let mut meta = json!({"name": name, "creationTimestamp": rfc3339(Timestamp::now())});
    if let Some(l) = node["metadata"].get("labels") {
        meta["labels"] = l.clone();
    }
    Some(json!({
        "metadata": meta,
        "timestamp": rfc3339(u.time),
        "window": go_duration(u.window),
        "usage": usage_json(&u),
    }))
}

fn pod_metrics(storage: &Storage, pod: &Value) -> Option<Value> {
    let ns = pod["metadata"]["namespace"].as_str()?;
    let name = pod["metadata"]["name"].as_str()?;
    let (containers, pod_usage) = storage.pod(ns, name)?;
    let mut meta = json!({"name": name, "namespace": ns,
        "creationTimestamp": rfc3339(Timestamp::now())});
    if let Some(l) = pod["metadata"].get("labels") {
        meta["labels"] = l.clone();
    }
    let containers: Vec<Value> = containers
        .iter()
        .map(|(c, u)| json!({"name": c, "usage": usage_json(u)}))
        .collect();
    Some(json!({
        "metadata": meta,
        "timestamp": rfc3339(pod_usage.time),
        "window": go_duration(pod_usage.window),
        "containers": containers,
    }))
}

fn typed(mut v: Value, kind: &str) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("kind".into(), json!(kind));
        m.insert("apiVersion".into(), json!(format!("{GROUP}/{VERSION}")));
    }
    v
}

/// Serves `GET /apis/metrics.k8s.io/v1beta1/<rest>` (`rest`: the segments after the
/// version).
pub fn serve(
    shared: &Shared,
    storage: &Mutex<Storage>,
    rest: &[&str],
    q: &Query,
) -> Result<Value, ApiError> {
    if matches!(q.get("watch").map(String::as_str), Some("1" | "true")) {
        return Err(ApiError::method_not_allowed());
    }
    let storage = storage.lock().unwrap_or_else(|e| e.into_inner());
    let list = |kind: &str, items: Vec<Value>| {
        json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {}, "items": items})
    };
    match rest {
        ["nodes"] => {
            let (labels, fields) = selectors(q)?;
            let items = objects(shared, "nodes", None)
                .iter()
                .filter(|n| {
                    labels.matches_object(n)
                        && fields.matches(|l| meta_field(n, l)).unwrap_or(false)
                })
                .filter_map(|n| node_metrics(&storage, n))
                .collect();
            Ok(list("NodeMetricsList", items))
        }
        ["nodes", name] => objects(shared, "nodes", None)
            .iter()
            .find(|n| n["metadata"]["name"] == *name)
            .and_then(|n| node_metrics(&storage, n))
            .map(|v| typed(v, "NodeMetrics"))
            .ok_or_else(|| not_found("nodemetrics", name)),
        ["pods"] | ["namespaces", _, "pods"] => {
            let ns = match rest {
                ["namespaces", ns, _] => Some(*ns),
                _ => None,
            };
            let (labels, fields) = selectors(q)?;
            let items = objects(shared, "pods", ns)
                .iter()
                .filter(|p| {
                    labels.matches_object(p)
                        && fields.matches(|l| meta_field(p, l)).unwrap_or(false)
                })
                .filter_map(|p| pod_metrics(&storage, p))
                .collect();
            Ok(list("PodMetricsList", items))
        }
        ["namespaces", ns, "pods", name] => objects(shared, "pods", Some(*ns))
            .iter()
            .find(|p| p["metadata"]["name"] == *name)
            .and_then(|p| pod_metrics(&storage, p))
            .map(|v| typed(v, "PodMetrics"))
            .ok_or_else(|| not_found("podmetrics", &format!("{ns}/{name}"))),
        _ => Err(ApiError::no_route()),
    }
}

/// The kubelet (`host:port`) of a Node object, as [`super::podlogs`] finds it.
fn kubelet_of(node: &Value) -> Option<String> {
    let addresses = node["status"]["addresses"].as_array()?;
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a["type"] == *t)
                .and_then(|a| a["address"].as_str())
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap_or(10250);
    Some(if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    })
}

/// `GET https://<host>/metrics/resource` with the API server's kubelet client certificate.
async fn scrape(client: &KubeletClient, host: &str) -> Result<String, String> {
    let fail = |e: &dyn std::fmt::Display| format!("scraping https://{host}/metrics/resource: {e}");
    let tcp = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| fail(&e))?;
    let ip = host
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(host);
    let server_name = ServerName::try_from(ip.to_string()).map_err(|e| fail(&e))?;
    let tls = tokio_rustls::TlsConnector::from(client.tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/metrics/resource")
        .header("Host", host)
        .header("User-Agent", "kn-apiserver (metrics-server)")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| fail(&e))?
        .to_bytes();
    if !status.is_success() {
        return Err(fail(&format!(
            "request failed, status: \"{status}\": {}",
            String::from_utf8_lossy(&body)
        )));
    }
    String::from_utf8(body.to_vec()).map_err(|e| fail(&e))
}

/// Scrapes every Node's kubelet every `resolution` into `storage`, until the server stops.
pub async fn run_scraper(
    shared: Arc<Shared>,
    client: Arc<KubeletClient>,
    storage: Arc<Mutex<Storage>>,
    resolution: Duration,
) {
    let timeout = resolution.mul_f64(0.9).max(Duration::from_secs(1));
    loop {
        let next = tokio::time::Instant::now() + resolution;
        let nodes = objects(&shared, "nodes", None);
        let mut tasks = Vec::new();
        for node in nodes {
            let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
            let Some(host) = kubelet_of(&node) else {
                continue;
            };
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let got = tokio::time::timeout(timeout, scrape(&client, &host))
                    .await
                    .unwrap_or_else(|_| Err(format!("scraping {host}: timed out")));
                (name, got)
            }));
        }
        let mut batches = BTreeMap::new();
        for t in tasks {
            let Ok((name, got)) = t.await else { continue };
            match got.and_then(|text| decode(&text, Timestamp::now())) {
                Ok(batch) => {
                    batches.insert(name, batch);
                }
                Err(e) => eprintln!("kn-apiserver: metrics: node {name}: {e}"),
            }
        }
        storage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .store(batches, resolution);
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="main",namespace="default",pod="burn"} 2.5 1764921600000
container_cpu_usage_seconds_total{container="idle",namespace="default",pod="half"} 0 1764921600000
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="main",namespace="default",pod="burn"} 4.194304e+06 1764921600000
container_memory_working_set_bytes{container="idle",namespace="default",pod="half"} 8192 1764921600000
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="main",namespace="default",pod="burn"} 1.7649215e+09 1764921600000
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 100.5 1764921600000
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.073741824e+09 1764921600000
# TYPE scrape_error gauge
scrape_error 0
"#;

    fn shifted(text: &str, secs: i64, cpu_add: f64) -> String {
        // the same scrape `secs` later with `cpu_add` core-seconds more everywhere
        text.lines()
            .map(|l| {
                if l.starts_with('#') || !l.contains("1764921600000") {
                    return l.to_string();
                }
                let mut parts: Vec<String> = l.rsplitn(3, ' ').map(str::to_string).collect();
                parts.reverse();
                let ts: i64 = parts[2].parse().unwrap();
                parts[2] = (ts + secs * 1000).to_string();
                if l.contains("cpu_usage") {
                    let v: f64 = parts[1].parse().unwrap();
                    if v != 0.0 {
                        parts[1] = (v + cpu_add).to_string();
                    }
                }
                parts.join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn decodes_as_metrics_server() {
        let b = decode(TEXT, Timestamp::now()).unwrap();
        let node = b.node.unwrap();
        assert_eq!(node.cpu, 100_500_000_000);
        assert_eq!(node.memory, 1 << 30);
        // the pod whose container has no CPU is dropped, as checkContainerMetrics does
        assert_eq!(b.pods.len(), 1);
        let c = &b.pods[&("default".into(), "burn".into())]["main"];
        assert_eq!(c.cpu, 2_500_000_000);
        assert_eq!(c.memory, 4 << 20);
        // value * 1e9 in floating point, as upstream: within a second
        assert!((c.start.unwrap().as_second() - 1_764_921_500).abs() <= 1);
        assert!(decode("node_cpu_usage_seconds_total x", Timestamp::now()).is_err());
        // a node without memory is no node point
        let b = decode("node_cpu_usage_seconds_total 1 1000\n", Timestamp::now()).unwrap();
        assert!(b.node.is_none());
    }

    #[test]
    fn usage_needs_two_scrapes_and_is_a_rate() {
        let mut s = Storage::default();
        let res = Duration::from_secs(15);
        let one =
            |t: &str| BTreeMap::from([("n1".to_string(), decode(t, Timestamp::now()).unwrap())]);
        s.store(one(TEXT), res);
        assert!(s.node("n1").is_none());
        assert!(s.pod("default", "burn").is_none());
        // 15 s later, 7.5 core-seconds more: half a core
        s.store(one(&shifted(TEXT, 15, 7.5)), res);
        let n = s.node("n1").unwrap();
        assert_eq!(n.cpu, 500_000_000);
        assert_eq!(n.window, SignedDuration::from_secs(15));
        assert_eq!(nano_quantity(n.cpu), "500m");
        assert_eq!(bytes_quantity(n.memory), "1Gi");
        let (containers, pod) = s.pod("default", "burn").unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0].1.cpu, 500_000_000);
        assert_eq!(go_duration(pod.window), "15s");
        // the same points again: nothing newer, the previous point is kept
        s.store(one(&shifted(TEXT, 15, 7.5)), res);
        assert_eq!(s.node("n1").unwrap().cpu, 500_000_000);
        // a node that was not scraped loses its points
        s.store(BTreeMap::new(), res);
        assert!(s.node("n1").is_none());
    }

    #[test]
    fn a_fresh_container_counts_from_its_start() {
        let mut s = Storage::default();
        // started 12 s before its first point (between 10 s and the 15 s resolution)
        let text = "container_cpu_usage_seconds_total{container=\"c\",namespace=\"d\",pod=\"p\"} 6 1764921612000\n\
                    container_memory_working_set_bytes{container=\"c\",namespace=\"d\",pod=\"p\"} 4096 1764921612000\n\
                    container_start_time_seconds{container=\"c\",namespace=\"d\",pod=\"p\"} 1764921600 1764921612000\n";
        let b = BTreeMap::from([("n".to_string(), decode(text, Timestamp::now()).unwrap())]);
        s.store(b, Duration::from_secs(15));
        let (c, _) = s.pod("d", "p").unwrap();
        assert_eq!(c[0].1.cpu, 500_000_000);
        assert_eq!(bytes_quantity(c[0].1.memory), "4Ki");
    }

    #[test]
    fn quantities_and_durations_print_as_upstream() {
        assert_eq!(nano_quantity(0), "0");
        assert_eq!(nano_quantity(123_456_789), "123456789n");
        assert_eq!(nano_quantity(1_000_000_000), "1");
        assert_eq!(nano_quantity(250_000_000), "250m");
        assert_eq!(nano_quantity(1_500), "1500n");
        assert_eq!(bytes_quantity(1000), "1000");
        assert_eq!(bytes_quantity(1_048_576), "1Mi");
        assert_eq!(bytes_quantity(12_345_678), "12345678");
        assert_eq!(go_duration(SignedDuration::from_millis(15_004)), "15.004s");
        assert_eq!(go_duration(SignedDuration::from_millis(60_500)), "1m0.5s");
        assert_eq!(go_duration(SignedDuration::from_millis(500)), "500ms");
        assert_eq!(go_duration(SignedDuration::ZERO), "0s");
    }

    #[test]
    fn label_values_with_escapes() {
        let l = r#"container="a\"b",namespace="ns",pod="p\\q""#;
        assert_eq!(label_value(l, "container"), "a\"b");
        assert_eq!(label_value(l, "namespace"), "ns");
        assert_eq!(label_value(l, "pod"), "p\\q");
        assert_eq!(label_value(l, "other"), "");
    }
}
