//! The proxy's input from the API server (cluster mode): Services and `discovery.k8s.io/v1`
//! EndpointSlices, each through one `kube::runtime::watcher` (list, then watch; a broken watch
//! is resumed and an expired one, 410 Gone, relisted, with kube-rs's backoff while the server is
//! unreachable), with kube-proxy's label selector, and the proxy's own Node. They become the same
//! [`ServiceChanges`] the manifest directory produces: one complete set once both lists are
//! done, then only what changed. A relist hands over only the objects that differ from what the
//! proxy already has, so it causes no rule change when nothing changed; while the server is
//! unreachable nothing is handed over and the rules stay as they are.
//!
//! ClusterIPs are the API server's: a Service without one yet (kube-proxy's
//! `ShouldSkipService`) is left out, so that the proxy never allocates one for an API Service.
//! [`merge`] puts these changes together with the manifest directory's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use kubenode_kubelet::source::ServiceChanges;
use tokio::sync::mpsc;

/// kube-proxy's label selector for Services and EndpointSlices: objects meant for another
/// proxy (`service.kubernetes.io/service-proxy-name`) and headless Services' endpoints
/// (`service.kubernetes.io/headless`) are not its business.
pub const LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

type Key = (String, String);

fn key(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A watch event, its object already made what the proxy takes (`None`: left out).
#[derive(Debug)]
enum Change<T> {
    Init,
    InitApply(Option<(Key, T)>),
    InitDone,
    Apply((Key, T)),
    Delete(Key),
}

/// The objects of one watch as the proxy has them, and a relist's objects until it is done.
#[derive(Debug)]
struct Cache<K> {
    current: BTreeMap<Key, K>,
    relist: Option<BTreeMap<Key, K>>,
    synced: bool,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            current: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<K: Clone + PartialEq> Cache<K> {
    /// [`Cache::event`], and a log line for a relist that comes after the first complete set
    /// was handed over (`sent_full`).
    fn event_logged(&mut self, ev: Change<K>, kind: &str, sent_full: bool) -> (Vec<K>, Vec<Key>) {
        let relisted = matches!(ev, Change::InitDone) && sent_full;
        let (up, rm) = self.event(ev);
        if relisted {
            log_relist(kind, up.len(), rm.len());
        }
        (up, rm)
    }

    /// Applies one watch event; returns the objects that changed and the keys removed.
    fn event(&mut self, ev: Change<K>) -> (Vec<K>, Vec<Key>) {
        let (mut upserts, mut removed) = (Vec::new(), Vec::new());
        match ev {
            Change::Init => self.relist = Some(BTreeMap::new()),
            Change::InitApply(obj) => {
                if let (Some(relist), Some((k, o))) = (self.relist.as_mut(), obj) {
                    relist.insert(k, o);
                }
            }
            Change::InitDone => {
                let new = self.relist.take().unwrap_or_default();
                removed = self
                    .current
                    .keys()
                    .filter(|k| !new.contains_key(*k))
                    .cloned()
                    .collect();
                upserts = new
                    .iter()
                    .filter(|(k, o)| self.current.get(*k) != Some(*o))
                    .map(|(_, o)| o.clone())
                    .collect();
                self.current = new;
                self.synced = true;
            }
            Change::Apply((k, o)) => {
                if self.current.get(&k) != Some(&o) {
                    self.current.insert(k, o.clone());
                    upserts.push(o);
                }
            }
            Change::Delete(k) => {
                if self.current.remove(&k).is_some() {
                    removed.push(k);
                }
            }
        }
        (upserts, removed)
    }
}

/// A Service as the proxy takes it, or `None` while it has no ClusterIP. `managedFields` are
/// dropped (the proxy never reads them).
fn service(mut svc: Service) -> Option<(Key, Service)> {
    svc.metadata.managed_fields = None;
    let has_ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    let k = key(&svc.metadata);
    if !has_ip {
        tracing::debug!(service = %format!("{}/{}", k.0, k.1), "Service has no ClusterIP yet: skipped");
        return None;
    }
    Some((k, svc))
}

fn slice(mut slice: EndpointSlice) -> Option<(Key, EndpointSlice)> {
    slice.metadata.managed_fields = None;
    Some((key(&slice.metadata), slice))
}

/// What the Node watch tells the health server: whether the node is eligible (not being
/// deleted), as kube-proxy's `/healthz` reports it in `nodeEligible`.
#[derive(Debug)]
pub struct NodeState {
    eligible: AtomicBool,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            eligible: AtomicBool::new(true),
        }
    }
}

impl NodeState {
    /// Whether the node is not being deleted (true until the Node says otherwise).
    pub fn eligible(&self) -> bool {
        self.eligible.load(Ordering::Relaxed)
    }

    /// Records whether the node is eligible.
    pub fn set_eligible(&self, eligible: bool) {
        self.eligible.store(eligible, Ordering::Relaxed);
    }
}

/// Watches Services and EndpointSlices (and the Node `node_name` for `node`) through `client`
/// until the receiver is dropped; see the module documentation.
pub fn spawn(
    client: kube::Client,
    node_name: String,
    node: Arc<NodeState>,
) -> mpsc::UnboundedReceiver<ServiceChanges> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(client, node_name, node, tx));
    rx
}

enum Input {
    Service(Box<Change<Service>>),
    Slice(Box<Change<EndpointSlice>>),
    /// The Node's eligibility, when the event tells it.
    Node(Option<bool>),
}

/// Whether the Node of an event is eligible (not being deleted); `None`: the event does not say.
fn node_eligible(ev: watcher::Event<Node>) -> Option<bool> {
    match ev {
        watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
            Some(n.metadata.deletion_timestamp.is_none())
        }
        watcher::Event::Delete(_) => Some(false),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

async fn run(
    client: kube::Client,
    node_name: String,
    node: Arc<NodeState>,
    tx: mpsc::UnboundedSender<ServiceChanges>,
) {
    let cfg = watcher::Config::default().labels(LABEL_SELECTOR);
    let services = watcher(Api::<Service>::all(client.clone()), cfg.clone())
        .default_backoff()
        .map(|r| r.map(|ev| Input::Service(Box::new(convert(ev, service)))));
    let slices = watcher(Api::<EndpointSlice>::all(client.clone()), cfg)
        .default_backoff()
        .map(|r| r.map(|ev| Input::Slice(Box::new(convert(ev, slice)))));
    let node_cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let nodes = watcher(Api::<Node>::all(client), node_cfg)
        .default_backoff()
        .map(|r| r.map(|ev| Input::Node(node_eligible(ev))));
    let mut inputs = std::pin::pin!(futures::stream::select(
        futures::stream::select(services, slices),
        nodes
    ));
    let mut svc_cache: Cache<Service> = Cache::default();
    let mut slice_cache: Cache<EndpointSlice> = Cache::default();
    let mut sent_full = false;
    while let Some(item) = inputs.next().await {
        let input = match item {
            Ok(i) => i,
            Err(e) => {
                // kube-rs retries with backoff; the proxy keeps its rules meanwhile.
                tracing::warn!(error = %e, "watching the API server for the proxy (retrying)");
                continue;
            }
        };
        let mut change = ServiceChanges::default();
        match input {
            Input::Service(ev) => {
                (change.services, change.removed_services) =
                    svc_cache.event_logged(*ev, "Services", sent_full);
            }
            Input::Slice(ev) => {
                (change.endpoint_slices, change.removed_endpoint_slices) =
                    slice_cache.event_logged(*ev, "EndpointSlices", sent_full);
            }
            Input::Node(eligible) => {
                if let Some(e) = eligible {
                    node.set_eligible(e);
                }
                continue;
            }
        }
        if !sent_full {
            if !(svc_cache.synced && slice_cache.synced) {
                continue;
            }
            sent_full = true;
            change = ServiceChanges {
                full: true,
                services: svc_cache.current.values().cloned().collect(),
                endpoint_slices: slice_cache.current.values().cloned().collect(),
                ..ServiceChanges::default()
            };
            tracing::info!(
                services = change.services.len(),
                endpoint_slices = change.endpoint_slices.len(),
                "listed Services and EndpointSlices from the API server"
            );
        } else if change.is_empty() {
            continue;
        }
        if tx.send(change).is_err() {
            return;
        }
    }
}

/// A relist (after 410 Gone or a restarted watch) is worth a line: what it changed.
fn log_relist(kind: &str, changed: usize, removed: usize) {
    tracing::info!(
        kind,
        changed,
        removed,
        "relisted from the API server; handing over only what differs"
    );
}

/// One watch event with its object made what the proxy takes.
fn convert<K: kube::Resource, T>(ev: watcher::Event<K>, f: fn(K) -> Option<(Key, T)>) -> Change<T> {
    match ev {
        watcher::Event::Init => Change::Init,
        watcher::Event::InitDone => Change::InitDone,
        watcher::Event::InitApply(o) => Change::InitApply(f(o)),
        watcher::Event::Apply(o) => {
            let k = key(o.meta());
            // Left out now (a Service without its ClusterIP): whatever the proxy had under
            // this name goes.
            f(o).map_or(Change::Delete(k), Change::Apply)
        }
        watcher::Event::Delete(o) => Change::Delete(key(o.meta())),
    }
}

/// One value of `--nodeport-addresses`: a network, or `primary` (the node's primary IP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePortAddress {
    /// The node's primary IPv4 address, from its Node.
    Primary,
    /// Local addresses in this network.
    Net(ipnet::Ipv4Net),
}

impl std::fmt::Display for NodePortAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodePortAddress::Primary => f.write_str("primary"),
            NodePortAddress::Net(n) => write!(f, "{n}"),
        }
    }
}

/// Parses one `--nodeport-addresses` value: `primary` or an IPv4 CIDR.
pub fn parse_nodeport_address(s: &str) -> Result<NodePortAddress, String> {
    if s == "primary" {
        return Ok(NodePortAddress::Primary);
    }
    kubenode_proxy::model::parse_ipv4_cidr(s)
        .map(NodePortAddress::Net)
        .map_err(|e| e.to_string())
}

/// The node's primary IPv4 address as upstream's `GetNodeHostIPs` orders a Node's addresses
/// (InternalIP first, then ExternalIP).
fn primary_ip(node: &Node) -> Option<std::net::Ipv4Addr> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    ["InternalIP", "ExternalIP"].iter().find_map(|kind| {
        addrs
            .iter()
            .filter(|a| a.type_ == *kind)
            .find_map(|a| a.address.parse().ok())
    })
}

/// How long kube-proxy waits for its Node's addresses at start.
const NODE_IP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The primary IPv4 address of the Node `node_name`, waiting up to 30 s for it to appear with
/// one, as kube-proxy does at start; then, as kube-proxy, loopback with a warning.
pub async fn node_primary_ip(client: &kube::Client, node_name: &str) -> std::net::Ipv4Addr {
    let api = Api::<Node>::all(client.clone());
    let deadline = tokio::time::Instant::now() + NODE_IP_WAIT;
    loop {
        match api.get_opt(node_name).await {
            Ok(Some(node)) => {
                if let Some(ip) = primary_ip(&node) {
                    tracing::info!(node = node_name, %ip, "the node's primary IP accepts NodePorts");
                    return ip;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(node = node_name, error = %e, "reading this node's Node"),
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                node = node_name,
                "can't determine this node's IP, assuming loopback; if this is incorrect, list \
                 the networks in --nodeport-addresses"
            );
            return std::net::Ipv4Addr::LOCALHOST;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The objects of one kind from both sources, for [`merge`]: the API server's (kept, so that
/// one shadowed by a manifest comes back when the manifest goes) and the names the manifest
/// directory defines.
#[derive(Debug)]
struct Sources<T> {
    kind: &'static str,
    api: BTreeMap<Key, T>,
    files: std::collections::BTreeSet<Key>,
    warned: std::collections::BTreeSet<Key>,
}

impl<T: Clone> Sources<T> {
    fn new(kind: &'static str) -> Self {
        Sources {
            kind,
            api: BTreeMap::new(),
            files: std::collections::BTreeSet::new(),
            warned: std::collections::BTreeSet::new(),
        }
    }

    /// Says once per name that the manifest's object hides the API server's.
    fn shadowed(&mut self, k: &Key) {
        if self.warned.insert(k.clone()) {
            tracing::warn!(
                kind = self.kind,
                name = %format!("{}/{}", k.0, k.1),
                "defined both in the manifest directory and in the API server: the proxy uses \
                 the manifest's"
            );
        }
    }

    /// The upserts and removals of `origin`, made the proxy's.
    fn changed(
        &mut self,
        origin: Origin,
        upserts: Vec<T>,
        removed: Vec<Key>,
        meta: fn(&T) -> &ObjectMeta,
    ) -> (Vec<T>, Vec<Key>) {
        match origin {
            Origin::Files => self.files_changed(upserts, removed, meta),
            Origin::Api => self.api_changed(upserts, removed, meta),
        }
    }

    /// The manifest directory's upserts and removals, made the proxy's: a removal of a name
    /// the API server also has brings the API server's object back.
    fn files_changed(
        &mut self,
        upserts: Vec<T>,
        removed: Vec<Key>,
        meta: fn(&T) -> &ObjectMeta,
    ) -> (Vec<T>, Vec<Key>) {
        let mut up = Vec::with_capacity(upserts.len());
        for o in upserts {
            let k = key(meta(&o));
            if self.api.contains_key(&k) {
                self.shadowed(&k);
            }
            self.files.insert(k);
            up.push(o);
        }
        let mut rm = Vec::new();
        for k in removed {
            self.files.remove(&k);
            self.warned.remove(&k);
            match self.api.get(&k) {
                Some(o) => up.push(o.clone()),
                None => rm.push(k),
            }
        }
        (up, rm)
    }

    /// The API server's upserts and removals, made the proxy's: names the manifest directory
    /// defines are left alone.
    fn api_changed(
        &mut self,
        upserts: Vec<T>,
        removed: Vec<Key>,
        meta: fn(&T) -> &ObjectMeta,
    ) -> (Vec<T>, Vec<Key>) {
        let mut up = Vec::with_capacity(upserts.len());
        for o in upserts {
            let k = key(meta(&o));
            self.api.insert(k.clone(), o.clone());
            if self.files.contains(&k) {
                self.shadowed(&k);
            } else {
                up.push(o);
            }
        }
        let mut rm = Vec::new();
        for k in removed {
            self.api.remove(&k);
            if !self.files.contains(&k) {
                rm.push(k);
            }
        }
        (up, rm)
    }
}

/// Joins the manifest directory's changes (`files`) and the API server's (`api`) into one
/// stream for the proxy: one complete set once both gave theirs (the proxy writes no rule
/// before it, as kube-proxy waits for its informers), then each one's changes as they come. A
/// Service or EndpointSlice defined in both is the manifest's (a warning says so, once); when
/// the manifest goes, the API server's object takes its place.
pub fn merge(
    mut files: mpsc::UnboundedReceiver<ServiceChanges>,
    mut api: mpsc::UnboundedReceiver<ServiceChanges>,
) -> mpsc::UnboundedReceiver<ServiceChanges> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (Some(first_files), Some(first_api)) = tokio::join!(files.recv(), api.recv()) else {
            return;
        };
        let mut services = Sources::<Service>::new("Service");
        let mut slices = Sources::<EndpointSlice>::new("EndpointSlice");
        let mut all = translate(Origin::Files, &mut services, &mut slices, first_files);
        let more = translate(Origin::Api, &mut services, &mut slices, first_api);
        all.full = true;
        all.services.extend(more.services);
        all.endpoint_slices.extend(more.endpoint_slices);
        if tx.send(all).is_err() {
            return;
        }
        let (mut files_open, mut api_open) = (true, true);
        while files_open || api_open {
            let change = tokio::select! {
                c = files.recv(), if files_open => match c {
                    Some(c) => translate(Origin::Files, &mut services, &mut slices, c),
                    None => { files_open = false; continue; }
                },
                c = api.recv(), if api_open => match c {
                    Some(c) => translate(Origin::Api, &mut services, &mut slices, c),
                    None => { api_open = false; continue; }
                },
            };
            if !change.is_empty() && tx.send(change).is_err() {
                return;
            }
        }
    });
    rx
}

/// Where a change of the merged input came from.
#[derive(Clone, Copy)]
enum Origin {
    Files,
    Api,
}

/// One side's change made the proxy's (the manifests' objects win over the API server's).
fn translate(
    origin: Origin,
    services: &mut Sources<Service>,
    slices: &mut Sources<EndpointSlice>,
    c: ServiceChanges,
) -> ServiceChanges {
    let (s, rs) = services.changed(origin, c.services, c.removed_services, |o| &o.metadata);
    let (e, re) = slices.changed(origin, c.endpoint_slices, c.removed_endpoint_slices, |o| {
        &o.metadata
    });
    ServiceChanges {
        full: false,
        services: s,
        removed_services: rs,
        endpoints: c.endpoints,
        removed_endpoints: c.removed_endpoints,
        endpoint_slices: e,
        removed_endpoint_slices: re,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    fn ev(s: Service) -> Change<Service> {
        convert(watcher::Event::Apply(s), service)
    }

    #[test]
    fn relist_hands_over_only_differences_and_services_without_an_ip_are_left_out() {
        let mut c: Cache<Service> = Cache::default();
        c.event(Change::Init);
        for s in [svc("a", "10.96.0.1"), svc("b", "10.96.0.2"), svc("c", "")] {
            c.event(convert(watcher::Event::InitApply(s), service));
        }
        let (up, rm) = c.event(Change::InitDone);
        assert!(c.synced);
        assert_eq!(up.len(), 2);
        assert!(rm.is_empty());
        // The same objects relisted (410 Gone): nothing to hand over.
        c.event(Change::Init);
        for s in [svc("a", "10.96.0.1"), svc("b", "10.96.0.2")] {
            c.event(convert(watcher::Event::InitApply(s), service));
        }
        assert_eq!(c.event(Change::InitDone), (vec![], vec![]));
        // A relist where b changed and a is gone.
        c.event(Change::Init);
        c.event(convert(
            watcher::Event::InitApply(svc("b", "10.96.0.3")),
            service,
        ));
        let (up, rm) = c.event(Change::InitDone);
        assert_eq!(up.len(), 1);
        assert_eq!(rm, [("default".to_string(), "a".to_string())]);
        // An event repeating what the proxy has changes nothing; one losing the ClusterIP
        // removes the Service.
        assert_eq!(c.event(ev(svc("b", "10.96.0.3"))), (vec![], vec![]));
        let (up, rm) = c.event(ev(svc("b", "")));
        assert!(up.is_empty());
        assert_eq!(rm, [("default".to_string(), "b".to_string())]);
    }

    #[test]
    fn primary_ip_prefers_internal_and_nodeport_values_parse() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.5"},
                {"type": "InternalIP", "address": "fd00::5"},
                {"type": "InternalIP", "address": "192.168.56.11"}
            ]}
        }))
        .unwrap();
        assert_eq!(primary_ip(&node), Some("192.168.56.11".parse().unwrap()));
        assert_eq!(primary_ip(&Node::default()), None);
        assert_eq!(
            parse_nodeport_address("primary").unwrap(),
            NodePortAddress::Primary
        );
        assert_eq!(
            parse_nodeport_address("10.0.0.7/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_nodeport_address("nope").is_err());
    }

    #[tokio::test]
    async fn merge_sends_one_complete_set_then_changes() {
        let (ftx, frx) = mpsc::unbounded_channel();
        let (atx, arx) = mpsc::unbounded_channel();
        let mut out = merge(frx, arx);
        ftx.send(ServiceChanges {
            full: true,
            services: vec![svc("file", "10.96.0.9")],
            ..ServiceChanges::default()
        })
        .unwrap();
        atx.send(ServiceChanges {
            full: true,
            services: vec![svc("api", "10.96.0.8")],
            ..ServiceChanges::default()
        })
        .unwrap();
        let first = out.recv().await.unwrap();
        assert!(first.full);
        assert_eq!(first.services.len(), 2);
        atx.send(ServiceChanges {
            removed_services: vec![("default".into(), "api".into())],
            ..ServiceChanges::default()
        })
        .unwrap();
        let next = out.recv().await.unwrap();
        assert!(!next.full && next.removed_services.len() == 1);

        // A name in both: the manifest's object; the API server's returns when it goes.
        // (with another Service, whose arrival shows that the change was taken)
        atx.send(ServiceChanges {
            services: vec![svc("file", "10.96.0.7"), svc("x", "10.96.0.6")],
            ..ServiceChanges::default()
        })
        .unwrap();
        let next = out.recv().await.unwrap();
        let names = |c: &ServiceChanges| -> Vec<String> {
            c.services
                .iter()
                .map(|s| s.metadata.name.clone().unwrap())
                .collect()
        };
        assert_eq!(names(&next), ["x"]);
        ftx.send(ServiceChanges {
            removed_services: vec![("default".into(), "file".into())],
            ..ServiceChanges::default()
        })
        .unwrap();
        let next = out.recv().await.unwrap();
        assert!(next.removed_services.is_empty(), "{next:?}");
        let ip = |s: &Service| s.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
        assert_eq!(
            next.services.iter().map(ip).collect::<Vec<_>>(),
            ["10.96.0.7"]
        );
        // Now only the API server has it: its removal goes through.
        atx.send(ServiceChanges {
            removed_services: vec![("default".into(), "file".into())],
            ..ServiceChanges::default()
        })
        .unwrap();
        let next = out.recv().await.unwrap();
        assert_eq!(next.removed_services.len(), 1);
    }
}
