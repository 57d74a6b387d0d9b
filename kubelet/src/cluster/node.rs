//! The node's `Node` object in cluster mode (upstream `pkg/kubelet/kubelet_node_status.go` and
//! `pkg/kubelet/nodestatus/setters.go`).
//!
//! [`run`] registers the Node (POST; on 409 AlreadyExists GET it and adopt it, reconciling the
//! kubelet's own labels), retrying with kube-rs's backoff while the API server is unreachable,
//! then computes the status every [`NODE_STATUS_UPDATE_FREQUENCY`] with [`node_status`] and
//! PATCHes `nodes/<name>/status` (a strategic merge patch) when it changed, or at least every
//! [`NODE_STATUS_REPORT_FREQUENCY`]. A watcher of the Node hands the `spec.podCIDR` the control
//! plane assigns to the agent. A failed PATCH is tried again on the next tick; nothing
//! here ever stops the agent or a pod.
//!
//! The status: capacity and allocatable from the machine (`node::capacity`), the conditions
//! MemoryPressure, DiskPressure, PIDPressure (the eviction manager's, `crate::eviction`)
//! and Ready (False/KubeletNotReady while the pod network has no CNI configuration), addresses
//! (InternalIP, Hostname), the kubelet endpoint, nodeInfo and the images. A condition's
//! `lastHeartbeatTime` is the time of the computation (so it moves only when the status is
//! written); its `lastTransitionTime` only when its status changes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubenode_runtime::image::{Image, ImageStore};

use crate::config::Config;
use crate::events::{reason, ObjectRef, Recorder};
use crate::node::capacity::{allocatable, Machine, Resources};

/// How often the status is computed (upstream `nodeStatusUpdateFrequency`).
pub const NODE_STATUS_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);
/// The longest time between two status PATCHes when nothing changed (upstream
/// `nodeStatusReportFrequency`).
pub const NODE_STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(300);
/// The kubelet's port, `daemonEndpoints.kubeletEndpoint.Port`.
pub const KUBELET_PORT: i32 = 10250;
/// Images listed in the status at most, the largest first (upstream
/// `nodeStatusMaxImages`).
pub const MAX_IMAGES: usize = 50;
/// Names listed per image at most (upstream `MaxNamesPerImageInNodeStatus`).
pub const MAX_NAMES_PER_IMAGE: usize = 5;
/// The annotation upstream's kubelet sets on registration (attach/detach by the controller).
pub const ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// Upstream's Ready condition when the kubelet is ready.
const KUBELET_READY: (&str, &str) = ("KubeletReady", "kubelet is posting ready status");
/// Upstream's reason when it is not.
const KUBELET_NOT_READY: &str = "KubeletNotReady";
/// Upstream's Ready message while the runtime's network is not ready (the CRI runtime's
/// condition as containerd reports it without a CNI configuration).
pub const NETWORK_NOT_READY_MESSAGE: &str = "container runtime network not ready: \
     NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni \
     plugin not initialized";

/// The host's facts of `status.nodeInfo` that do not change while the agent runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemInfo {
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/sys/class/dmi/id/product_uuid` (empty when unreadable).
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
    /// `<runtime>://<version>` of the OCI runtime.
    pub container_runtime_version: String,
}

impl SystemInfo {
    /// This host's facts, with the OCI runtime `runtime` (a name in `PATH` or a path) asked for
    /// its version; what cannot be read is empty (upstream reports cAdvisor's empty values).
    pub fn of_host(runtime: &Path) -> SystemInfo {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|e| {
                    tracing::warn!(file = p, error = %e, "node info");
                    String::new()
                })
        };
        let os_release = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        let path = kubenode_runtime::oci::resolve_runtime(runtime)
            .unwrap_or_else(|| runtime.to_path_buf());
        let features = kubenode_runtime::oci::RuntimeFeatures::probe(&path);
        SystemInfo {
            machine_id: read("/etc/machine-id"),
            system_uuid: std::fs::read_to_string("/sys/class/dmi/id/product_uuid")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&os_release).unwrap_or_else(|| "Linux".to_string()),
            container_runtime_version: format!(
                "{}://{}",
                features.name,
                features.version.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// `PRETTY_NAME` of an os-release file, unquoted.
pub fn pretty_name(os_release: &str) -> Option<String> {
    let v = os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    Some(v.to_string())
}

/// The Kubernetes release whose kubelet kubenode behaves as.
pub const KUBERNETES_VERSION: &str = "1.34.0";

/// `kubeletVersion` of `status.nodeInfo`: the Kubernetes release kubenode matches, with
/// kubenode's own version as a semver pre-release (`v1.34.0-kubenode.0.1.0`), so that the
/// control plane's version-skew rules see a 1.34 kubelet and a reader sees kubenode's build.
pub fn kubelet_version() -> String {
    format!(
        "v{KUBERNETES_VERSION}-kubenode.{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// What one status computation observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The machine (`None` when it could not be read: capacity is left out).
    pub(crate) machine: Option<Machine>,
    /// `Err(message)` while the pod network is not ready.
    pub network: Result<(), String>,
    /// The images in the store.
    pub images: Vec<ContainerImage>,
    /// The pressure conditions the eviction manager reports `True` now.
    pub pressure: Vec<crate::eviction::Pressure>,
}

/// The Node events of the conditions whose status is new or changed from `previous` to `new`
/// (upstream's setters' `recordEventFunc`): `NodeHasSufficientMemory`, `NodeNotReady`, ...
pub fn condition_events(previous: Option<&NodeStatus>, new: &NodeStatus) -> Vec<&'static str> {
    let old = |type_: &str| {
        previous
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .map(|c| c.status.clone())
    };
    let mut out = Vec::new();
    for c in new.conditions.iter().flatten() {
        if old(&c.type_).as_deref() == Some(c.status.as_str()) {
            continue;
        }
        let event = match (c.type_.as_str(), c.status.as_str()) {
            ("MemoryPressure", "True") => "NodeHasInsufficientMemory",
            ("MemoryPressure", _) => "NodeHasSufficientMemory",
            ("DiskPressure", "True") => "NodeHasDiskPressure",
            ("DiskPressure", _) => "NodeHasNoDiskPressure",
            ("PIDPressure", "True") => "NodeHasInsufficientPID",
            ("PIDPressure", _) => "NodeHasSufficientPID",
            ("Ready", "True") => "NodeReady",
            ("Ready", _) => "NodeNotReady",
            _ => continue,
        };
        out.push(event);
    }
    out
}

/// The node's identity in the status: what [`node_status`] takes from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The node name (also its `Hostname` address, as upstream with `--hostname-override`).
    pub name: String,
    /// The node IP (`InternalIP`).
    pub ip: IpAddr,
    /// `maxPods`.
    pub max_pods: u32,
    /// What is kept back from the pods (allocatable = capacity less it).
    pub node_allocatable: crate::config::reserved::NodeAllocatable,
}

impl Identity {
    /// The identity of `config`'s node.
    pub fn of(config: &Config) -> Identity {
        Identity {
            name: config.node_name.clone(),
            ip: config.node_ip,
            max_pods: config.max_pods,
            node_allocatable: config.node_allocatable.clone(),
        }
    }
}

/// `cpu` as a DecimalSI quantity of millicores (`2`, `1500m`).
fn cpu_quantity(milli: i64) -> Quantity {
    if milli % 1000 == 0 {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

/// Bytes as a BinarySI quantity, canonical as upstream prints it (`8141236Ki`, `2Gi`, `123`).
pub fn binary_quantity(bytes: i64) -> Quantity {
    if bytes == 0 {
        return Quantity("0".into());
    }
    let mut v = bytes;
    let mut suffix = "";
    for s in ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"] {
        if v % 1024 != 0 {
            break;
        }
        v /= 1024;
        suffix = s;
    }
    Quantity(format!("{v}{suffix}"))
}

/// A resource list of `r`: cpu, memory, ephemeral-storage, pods and the huge pages.
fn resource_list(r: &Resources) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    out.insert("cpu".to_string(), cpu_quantity(r.milli_cpu));
    out.insert("memory".to_string(), binary_quantity(r.memory));
    out.insert(
        "ephemeral-storage".to_string(),
        binary_quantity(r.ephemeral_storage),
    );
    out.insert("pods".to_string(), Quantity(r.pods.to_string()));
    for (name, v) in &r.scalar {
        out.insert(name.clone(), binary_quantity(*v));
    }
    out
}

/// The images of the status (upstream's Images setter): the largest first, at most
/// [`MAX_IMAGES`], each with its digest reference and tag reference.
pub fn status_images(images: &[Image]) -> Vec<ContainerImage> {
    let mut images: Vec<&Image> = images.iter().collect();
    images.sort_by(|a, b| b.size.cmp(&a.size).then(a.reference.cmp(&b.reference)));
    images
        .into_iter()
        .take(MAX_IMAGES)
        .map(|i| {
            let mut names = vec![format!(
                "{}@{}",
                repository(&i.reference),
                i.manifest_digest
            )];
            if !i.reference.contains('@') {
                names.push(i.reference.clone());
            }
            names.truncate(MAX_NAMES_PER_IMAGE);
            ContainerImage {
                names: Some(names),
                size_bytes: i64::try_from(i.size).ok(),
            }
        })
        .collect()
}

/// The repository of a reference: without its tag or digest (`host:5000/a/b:1` → `host:5000/a/b`).
fn repository(reference: &str) -> &str {
    let r = reference.split('@').next().unwrap_or(reference);
    match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => &r[..i],
        _ => r,
    }
}

/// A condition whose status is `status` now: the previous condition of its type keeps its
/// `lastTransitionTime` when its status is the same (upstream's setters).
fn condition(
    previous: Option<&NodeStatus>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) -> NodeCondition {
    let old = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match old {
        Some(c) if c.status == status => c.last_transition_time.clone().or(Some(now.clone())),
        _ => Some(now.clone()),
    };
    NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: transition,
    }
}

/// The node's status computed at `now` from what was observed, with `previous` (the status
/// last written, or the adopted Node's) for the transition times.
pub fn node_status(
    id: &Identity,
    info: &SystemInfo,
    observed: &Observed,
    previous: Option<&NodeStatus>,
    now: &Time,
) -> NodeStatus {
    let (capacity, allocatable) = match &observed.machine {
        Some(m) => {
            let c = m.capacity(id.max_pods);
            let a = allocatable(&c, &id.node_allocatable);
            (Some(resource_list(&c)), Some(resource_list(&a)))
        }
        None => (
            previous.and_then(|p| p.capacity.clone()),
            previous.and_then(|p| p.allocatable.clone()),
        ),
    };
    let ready = match &observed.network {
        Ok(()) => condition(
            previous,
            "Ready",
            "True",
            KUBELET_READY.0,
            KUBELET_READY.1,
            now,
        ),
        Err(message) => condition(previous, "Ready", "False", KUBELET_NOT_READY, message, now),
    };
    let mut conditions: Vec<NodeCondition> = crate::eviction::Pressure::ALL
        .into_iter()
        .map(|p| {
            let under = observed.pressure.contains(&p);
            let (reason, message) = p.reason_and_message(under);
            let status = if under { "True" } else { "False" };
            condition(previous, p.condition_type(), status, reason, message, now)
        })
        .collect();
    conditions.push(ready);
    NodeStatus {
        capacity,
        allocatable,
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: id.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: id.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: KUBELET_PORT }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: info.machine_id.clone(),
            system_uuid: info.system_uuid.clone(),
            boot_id: info.boot_id.clone(),
            kernel_version: info.kernel_version.clone(),
            os_image: info.os_image.clone(),
            container_runtime_version: info.container_runtime_version.clone(),
            kubelet_version: kubelet_version(),
            kube_proxy_version: String::new(),
            operating_system: std::env::consts::OS.to_string(),
            architecture: crate::config::node_labels::goarch().to_string(),
            ..NodeSystemInfo::default()
        }),
        images: Some(observed.images.clone()),
        ..NodeStatus::default()
    }
}

/// Whether `new` differs from `old` other than in the conditions' heartbeat times (upstream
/// `nodeStatusHasChanged`): a change is written at once, the rest every
/// [`NODE_STATUS_REPORT_FREQUENCY`].
pub fn status_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(old) != strip(new)
}

/// The Node upstream's kubelet registers (`initialNode`): the name, the kubelet's labels, the
/// attach/detach annotation, the `--register-with-taints`, and the status.
pub fn initial_node(config: &Config, status: NodeStatus) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(config.node_labels.clone()),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!config.register_with_taints.is_empty())
                .then(|| config.register_with_taints.clone()),
            ..NodeSpec::default()
        }),
        status: Some(status),
    }
}

/// The labels and annotations an existing Node lacks or has otherwise than `wanted`
/// (upstream's `reconcileCMADAnnotationWithExistingNode` and `updateDefaultLabels`, with the
/// `--node-labels` too): `None` when it agrees, else the metadata to merge-patch.
pub fn reconcile_metadata(existing: &Node, wanted: &Node) -> Option<serde_json::Value> {
    let missing = |have: &Option<BTreeMap<String, String>>,
                   want: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .filter(|(k, v)| have.as_ref().and_then(|h| h.get(*k)) != Some(*v))
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
    };
    let labels = missing(&existing.metadata.labels, &wanted.metadata.labels);
    let annotations = missing(&existing.metadata.annotations, &wanted.metadata.annotations);
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut meta = serde_json::Map::new();
    if !labels.is_empty() {
        meta.insert("labels".into(), labels.into());
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), annotations.into());
    }
    Some(serde_json::json!({ "metadata": meta }))
}

/// Whether the pod network is ready: the CNI configuration directory has a network.
pub fn network_ready(cni_conf_dir: &Path) -> Result<(), String> {
    match kubenode_cni::spec::NetworkConfigList::load_first(cni_conf_dir) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(NETWORK_NOT_READY_MESSAGE.to_string()),
        Err(e) => Err(format!("{NETWORK_NOT_READY_MESSAGE}: {e}")),
    }
}

/// The time now, to the second (what a `metav1.Time` keeps).
fn now_seconds() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// What the Node task needs besides the client.
pub struct NodeDeps {
    /// The configuration.
    pub config: Config,
    /// The host's facts.
    pub info: SystemInfo,
    /// The image store, for `status.images`.
    pub images: Arc<ImageStore>,
    /// Called with the `spec.podCIDR` the control plane assigned, when it appears or changes
    /// (a watch of the Node).
    pub on_pod_cidr: Arc<dyn Fn(&str) + Send + Sync>,
    /// Called with the Node's `spec.taints` each time the watch of the Node shows them changed
    /// (admission's `NoExecute` check).
    pub on_taints: Arc<dyn Fn(Vec<Taint>) + Send + Sync>,
    /// The kubelet's recorder, for the Node's events.
    pub events: Recorder,
    /// The pressure conditions that are `True` now (the eviction manager's).
    pub pressure: Arc<dyn Fn() -> Vec<crate::eviction::Pressure> + Send + Sync>,
}

impl std::fmt::Debug for NodeDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDeps")
            .field("node", &self.config.node_name)
            .finish_non_exhaustive()
    }
}

impl NodeDeps {
    async fn observe(&self) -> Observed {
        let root = self.config.root_dir.clone();
        let conf_dir: PathBuf = self.config.cni_conf_dir.clone();
        let images = self.images.clone();
        let pressure = (self.pressure)();
        let observed = tokio::task::spawn_blocking(move || {
            let machine = Machine::of_host(&root)
                .map_err(|e| tracing::warn!(error = %e, "reading the machine's resources"))
                .ok();
            let images = images.list().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "listing the images for the node status");
                Vec::new()
            });
            Observed {
                machine,
                network: network_ready(&conf_dir),
                images: status_images(&images),
                pressure,
            }
        })
        .await;
        observed.unwrap_or_else(|e| Observed {
            machine: None,
            network: Err(format!("observing the node: {e}")),
            images: Vec::new(),
            pressure: (self.pressure)(),
        })
    }
}

/// Registers the Node (POST; on AlreadyExists GET and adopt), retrying with backoff until it
/// succeeds; returns the Node as the API server has it.
pub async fn register(api: &Api<Node>, node: &Node) -> Node {
    use kube::runtime::watcher::DefaultBackoff;
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut backoff = DefaultBackoff::default();
    loop {
        match try_register(api, node).await {
            Ok(n) => return n,
            Err(e) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(node = %name, error = %e, retry_in = ?wait, "registering the node with the API server");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One registration attempt (upstream `tryRegisterWithAPIServer`).
async fn try_register(api: &Api<Node>, node: &Node) -> Result<Node, kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), node).await {
        Ok(n) => {
            tracing::info!(node = %name, "registered the node with the API server");
            Ok(n)
        }
        Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" || s.code == 409 => {
            let existing = api.get(&name).await?;
            tracing::info!(node = %name, "the node exists in the API server: adopting it");
            match reconcile_metadata(&existing, node) {
                Some(patch) => {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                }
                None => Ok(existing),
            }
        }
        Err(e) => Err(e),
    }
}

/// Runs the Node: registers it, then keeps its status current, until the agent stops.
pub async fn run(client: kube::Client, deps: NodeDeps) {
    let api: Api<Node> = Api::all(client);
    let id = Identity::of(&deps.config);
    let name = id.name.clone();
    let node_ref = ObjectRef::node(&name);
    // Upstream's kubelet says so on every start.
    deps.events
        .normal(&node_ref, reason::STARTING, "Starting kubelet.");
    let record = |previous: Option<&NodeStatus>, status: &NodeStatus| {
        for event in condition_events(previous, status) {
            deps.events.normal(
                &node_ref,
                event,
                format!("Node {name} status is now: {event}"),
            );
        }
    };
    let observed = deps.observe().await;
    let status = node_status(&id, &deps.info, &observed, None, &now_seconds());
    record(None, &status);
    let node = register(&api, &initial_node(&deps.config, status.clone())).await;
    // What the API server has: the transition times of an adopted Node are kept.
    let mut written: Option<(NodeStatus, tokio::time::Instant)> = None;
    let mut previous = node.status.clone();
    tokio::spawn(watch_node(
        api.clone(),
        name.clone(),
        deps.on_pod_cidr.clone(),
        deps.on_taints.clone(),
    ));
    let mut tick = tokio::time::interval(NODE_STATUS_UPDATE_FREQUENCY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let observed = deps.observe().await;
        let status = node_status(
            &id,
            &deps.info,
            &observed,
            previous.as_ref(),
            &now_seconds(),
        );
        record(previous.as_ref(), &status);
        // A transition dates from when it was observed, written or not.
        previous = Some(status.clone());
        let due = match &written {
            None => true,
            Some((old, at)) => {
                status_changed(old, &status) || at.elapsed() >= NODE_STATUS_REPORT_FREQUENCY
            }
        };
        if !due {
            continue;
        }
        let patch = serde_json::json!({ "status": status });
        let (params, patch) = (PatchParams::default(), Patch::Strategic(&patch));
        let update = api.patch_status(&name, &params, &patch);
        let Ok(answer) = tokio::time::timeout(super::lease::HEARTBEAT_TIMEOUT, update).await else {
            tracing::warn!(node = %name, "updating the node status: no answer within {:?} (retried in {:?})", super::lease::HEARTBEAT_TIMEOUT, NODE_STATUS_UPDATE_FREQUENCY);
            continue;
        };
        match answer {
            Ok(node) => {
                tracing::debug!(node = %name, resource_version = ?node.metadata.resource_version, "node status updated");
                written = Some((status, tokio::time::Instant::now()));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                // Deleted behind our back: upstream's kubelet registers only at start, so it
                // stays deleted until the agent restarts (an operator removing the node).
                tracing::warn!(node = %name, "the node is not in the API server (deleted?): its status is not updated until the agent restarts and registers it again");
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "updating the node status (retried in {:?})", NODE_STATUS_UPDATE_FREQUENCY);
            }
        }
    }
}

/// Watches the Node (one list+watch of `metadata.name=<name>`, kube-rs's watcher with its
/// backoff) for the `spec.podCIDR` the control plane assigns (kube-controller-manager's
/// `--allocate-node-cidrs`): `on_pod_cidr` gets each new one; and for its `spec.taints`:
/// `on_taints` gets them each time they change.
async fn watch_node(
    api: Api<Node>,
    name: String,
    on_pod_cidr: Arc<dyn Fn(&str) + Send + Sync>,
    on_taints: Arc<dyn Fn(Vec<Taint>) + Send + Sync>,
) {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut nodes = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut seen: Option<String> = None;
    let mut seen_taints: Option<Vec<Taint>> = None;
    while let Some(item) = nodes.next().await {
        match item {
            Ok(node) => {
                let taints = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default();
                if seen_taints.as_ref() != Some(&taints) {
                    on_taints(taints.clone());
                    seen_taints = Some(taints);
                }
                let cidr = node.spec.and_then(|s| s.pod_cidr);
                if let Some(c) = cidr.filter(|c| seen.as_ref() != Some(c)) {
                    tracing::info!(node = %name, pod_cidr = %c, "the control plane assigned a pod CIDR");
                    on_pod_cidr(&c);
                    seen = Some(c);
                }
            }
            Err(e) => tracing::warn!(node = %name, error = %e, "watching the node"),
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
