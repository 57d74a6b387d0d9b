//! [`Proxy`]: inputs (Services, Endpoints, the node's pods) → allocation → desired rules → sync,
//! and [`ProxyHandle`], the same on a thread of its own: updates are coalesced (at most one sync
//! per `min_sync_period`), the canary chains are checked every `sync_period`, a full sync runs at
//! least every `full_sync_period` and after any failure.

use crate::alloc::{AllocError, Allocator};
use crate::conntrack::{stale_flows, udp_state, Conntrack, UdpState};
use crate::iptables::Firewall;
use crate::model::ServiceKey;
use crate::model::{
    endpoints_from_pods, service_ports, Endpoint, EndpointSet, Ipv4Net, ServicePortInfo,
    ServicePortName,
};
use crate::rules::{Generator, RulesConfig, Ruleset, Table, CANARY_CHAIN};
use crate::sync::{SyncError, SyncReport, Syncer};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubenode_fsutil::lock;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Configuration of the proxy role.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// `--service-cidr`: where ClusterIPs are allocated.
    pub service_cidr: Ipv4Net,
    /// `--service-node-port-range`.
    pub node_port_range: RangeInclusive<u16>,
    /// Where allocations are remembered across restarts (`None`: in memory only).
    pub state_file: Option<PathBuf>,
    /// Settings the rules depend on.
    pub rules: RulesConfig,
    /// Minimum time between syncs (`minSyncPeriod`, default 1 s).
    pub min_sync_period: Duration,
    /// Canary check and re-sync interval (`syncPeriod`, default 30 s).
    pub sync_period: Duration,
    /// Longest time between full syncs (default 1 h, as kube-proxy).
    pub full_sync_period: Duration,
}

impl ProxyConfig {
    /// Defaults for `node_name` with ClusterIPs from `service_cidr`.
    pub fn new(node_name: &str, service_cidr: Ipv4Net) -> ProxyConfig {
        ProxyConfig {
            node_name: node_name.to_string(),
            service_cidr,
            node_port_range: crate::alloc::DEFAULT_NODE_PORT_RANGE,
            state_file: None,
            rules: RulesConfig {
                service_cidr: Some(service_cidr),
                ..RulesConfig::default()
            },
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            full_sync_period: Duration::from_secs(3600),
        }
    }
}

/// Failures of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Allocation state could not be read.
    #[error("starting the proxy")]
    Alloc(#[from] AllocError),
    /// A sync failed (the next one is full).
    #[error("syncing proxy rules")]
    Sync(#[from] SyncError),
    /// The firewall failed outside a sync.
    #[error("talking to iptables")]
    Firewall(#[from] crate::iptables::FirewallError),
}

/// What the proxy serves, for `kubenode get services|endpoints` and metrics.
#[derive(Clone, Debug, Default)]
pub struct ProxyStatus {
    /// Services with their allocated ClusterIPs and NodePorts (shared with the proxy, so a
    /// status costs no copy of every Service).
    pub services: Vec<Arc<Service>>,
    /// Endpoints of every Service (computed or manual), by namespace and name.
    pub endpoints: Vec<Arc<EndpointSet>>,
    /// Services that could not be programmed, one message each.
    pub errors: Vec<String>,
    /// The last successful sync.
    pub last_sync: Option<SyncReport>,
    /// Successful syncs so far.
    pub syncs: u64,
    /// Failed syncs so far (`sync_proxy_rules_iptables_restore_failures_total`).
    pub failures: u64,
    /// When the running proxy last had its rules up to date with its inputs: its start, then
    /// each successful sync (kube-proxy's health server `lastUpdated`).
    pub last_updated: Option<std::time::SystemTime>,
    /// When the oldest input not yet in the rules arrived (kube-proxy's oldest queued update;
    /// `None`: nothing pending). Inputs before the first whole set do not count.
    pub pending_since: Option<std::time::SystemTime>,
}

/// Services, Endpoints and EndpointSlices that were added, changed or removed, by
/// [`ServiceKey`] (of the object: a slice's own namespace and name): what a source hands over
/// after the first, complete set (see [`Proxy::apply_changes`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Services added or changed (replacing the one with the same namespace and name).
    pub services: Vec<Service>,
    /// Services removed.
    pub removed_services: Vec<ServiceKey>,
    /// Endpoints added or changed.
    pub endpoints: Vec<Endpoints>,
    /// Endpoints removed.
    pub removed_endpoints: Vec<ServiceKey>,
    /// EndpointSlices added or changed.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// EndpointSlices removed (their namespace and name).
    pub removed_endpoint_slices: Vec<ServiceKey>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.removed_services.is_empty()
            && self.endpoints.is_empty()
            && self.removed_endpoints.is_empty()
            && self.endpoint_slices.is_empty()
            && self.removed_endpoint_slices.is_empty()
    }
}

fn svc_id(svc: &Service) -> String {
    crate::model::service::service_key(svc).to_string()
}

/// The proxy state machine (single-threaded; see [`Proxy::spawn`] for the running form).
#[derive(Debug)]
pub struct Proxy {
    cfg: ProxyConfig,
    syncer: Syncer,
    conntrack: Arc<dyn Conntrack>,
    allocator: Allocator,
    services: Vec<Service>,
    endpoints: Vec<Endpoints>,
    /// EndpointSlices by their own namespace and name, with the Service each names.
    slices: HashMap<ServiceKey, (EndpointSlice, Option<ServiceKey>)>,
    /// The slices of each Service.
    slices_of: HashMap<ServiceKey, BTreeSet<ServiceKey>>,
    /// Services whose slices changed since the last [`Proxy::desired`].
    changed_slice_services: BTreeSet<ServiceKey>,
    pods: Vec<Arc<Pod>>,
    udp: UdpState,
    route_localnet: bool,
    status: Arc<Mutex<ProxyStatus>>,
    generator: Generator,
    resolved: Resolved,
    services_dirty: bool,
    endpoints_dirty: bool,
    pods_dirty: bool,
    /// Whether the whole set of Services, and of Endpoints, has been handed over once (see
    /// [`Proxy::initialized`]).
    services_set: bool,
    endpoints_set: bool,
    /// Services changed by [`Proxy::apply_changes`] since the last [`Proxy::desired`] (empty
    /// while a complete replacement is pending).
    changed_services: BTreeSet<ServiceKey>,
    /// Endpoints changed by [`Proxy::apply_changes`] since the last [`Proxy::desired`]: the new
    /// object, or `None` for a removal (empty while a complete replacement is pending).
    changed_endpoints: BTreeMap<ServiceKey, Option<Endpoints>>,
}

/// Inputs resolved by the last [`Proxy::desired`].
#[derive(Debug, Default)]
struct Resolved {
    /// Allocated Services, in `namespace/name` order.
    services: Vec<Arc<Service>>,
    /// The ports of each Service that has some.
    svc_ports: HashMap<ServiceKey, Vec<ServicePortInfo>>,
    alloc_errors: Vec<String>,
    /// Services the model refused, by `namespace/name`.
    port_errors: BTreeMap<String, String>,
    errors: Vec<String>,
    manual: HashMap<ServiceKey, (Endpoints, Arc<EndpointSet>)>,
    /// Services whose UDP ports or endpoints changed since the last successful sync cleared
    /// stale flows (`None`: any of them).
    udp_pending: Option<BTreeSet<ServiceKey>>,
    manual_order: Vec<ServiceKey>,
    from_pods: HashMap<ServiceKey, Arc<EndpointSet>>,
    /// The union of each Service's EndpointSlices.
    from_slices: HashMap<ServiceKey, Arc<EndpointSet>>,
    /// Every Service's endpoints, the computed ones over the manual ones (for the status).
    sets: BTreeMap<ServiceKey, Arc<EndpointSet>>,
    eps: BTreeMap<ServicePortName, Vec<Endpoint>>,
}

impl Resolved {
    /// Every Service error: allocation first, then the model's, by `namespace/name`.
    fn collect_errors(&mut self) {
        self.errors = self
            .alloc_errors
            .iter()
            .chain(self.port_errors.values())
            .cloned()
            .collect();
    }
}

/// The endpoints of the Service `key`: computed from the node's pods (a Service with a
/// selector, whatever was written by hand) or its Endpoints object, with its EndpointSlices
/// added.
fn combined(r: &Resolved, key: &ServiceKey) -> Option<Arc<EndpointSet>> {
    let base = r
        .from_pods
        .get(key)
        .or_else(|| r.manual.get(key).map(|(_, s)| s));
    match (base, r.from_slices.get(key)) {
        (Some(b), Some(s)) => Some(Arc::new(b.union(s))),
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (None, None) => None,
    }
}

impl Proxy {
    /// A proxy writing through `fw` and clearing flows through `conntrack`.
    pub fn new(
        mut cfg: ProxyConfig,
        fw: Arc<dyn Firewall>,
        conntrack: Arc<dyn Conntrack>,
    ) -> Result<Proxy, ProxyError> {
        cfg.rules.service_cidr = Some(cfg.service_cidr);
        let allocator = Allocator::new(
            cfg.service_cidr,
            cfg.node_port_range.clone(),
            cfg.state_file.as_deref(),
        )?;
        Ok(Proxy {
            cfg,
            syncer: Syncer::new(fw),
            conntrack,
            allocator,
            services: Vec::new(),
            endpoints: Vec::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            changed_slice_services: BTreeSet::new(),
            pods: Vec::new(),
            udp: UdpState::new(),
            route_localnet: false,
            status: Arc::default(),
            generator: Generator::default(),
            resolved: Resolved::default(),
            services_dirty: true,
            endpoints_dirty: true,
            pods_dirty: true,
            services_set: false,
            endpoints_set: false,
            changed_services: BTreeSet::new(),
            changed_endpoints: BTreeMap::new(),
        })
    }

    /// Replaces the set of Services.
    pub fn update_services(&mut self, services: Vec<Service>) {
        self.services_set = true;
        self.services = services;
        self.services_dirty = true;
        self.changed_services.clear();
    }

    /// Whether the whole set of Services and of Endpoints has been handed over
    /// ([`Proxy::update_services`], [`Proxy::update_endpoints`]). Until then the proxy thread
    /// writes no rule, as kube-proxy waits for its informers' first sync: a restarted proxy does
    /// not replace the last run's rules with empty ones for a moment, and the first sync is the
    /// full one of every Service.
    pub fn initialized(&self) -> bool {
        self.services_set && self.endpoints_set
    }

    /// Replaces the manual `Endpoints` objects (used for Services without a selector).
    pub fn update_endpoints(&mut self, endpoints: Vec<Endpoints>) {
        self.endpoints_set = true;
        self.endpoints = endpoints;
        self.endpoints_dirty = true;
        self.changed_endpoints.clear();
    }

    /// Replaces the EndpointSlices. A Service's endpoints are the union of its slices (label
    /// `kubernetes.io/service-name`) and of its Endpoints object or, with a selector, of the
    /// node's pods; a slice without the label serves no Service (kube-proxy skips it).
    pub fn update_endpoint_slices(&mut self, slices: Vec<EndpointSlice>) {
        self.slices.clear();
        self.changed_slice_services
            .extend(std::mem::take(&mut self.slices_of).into_keys());
        for slice in slices {
            self.put_slice(ServiceKey::of(&slice.metadata), Some(slice));
        }
    }

    /// Adds, replaces (`Some`) or removes (`None`) the slice `key`, noting the Services whose
    /// slices changed.
    fn put_slice(&mut self, key: ServiceKey, slice: Option<EndpointSlice>) {
        let new_service = slice.as_ref().and_then(crate::model::slice_service);
        if let Some((_, Some(svc))) = self.slices.get(&key) {
            let svc = svc.clone();
            if let Some(set) = self.slices_of.get_mut(&svc) {
                set.remove(&key);
                if set.is_empty() {
                    self.slices_of.remove(&svc);
                }
            }
            self.changed_slice_services.insert(svc);
        }
        match slice {
            Some(slice) => {
                if let Some(svc) = &new_service {
                    self.slices_of
                        .entry(svc.clone())
                        .or_default()
                        .insert(key.clone());
                    self.changed_slice_services.insert(svc.clone());
                } else {
                    tracing::warn!(slice = %key, "EndpointSlice without the {} label serves no Service", crate::model::SERVICE_NAME_LABEL);
                }
                self.slices.insert(key, (slice, new_service));
            }
            None => {
                self.slices.remove(&key);
            }
        }
    }

    /// Applies added, changed and removed Services and Endpoints on top of what the proxy has.
    /// The next sync redoes allocation, endpoints and rules only for those (when the allocation
    /// allows: see [`crate::alloc::Allocator::allocate_changed`]), so one changed Service among
    /// thousands rewrites only its bucket chains. The result is the same as replacing the whole
    /// sets with [`Proxy::update_services`] and [`Proxy::update_endpoints`].
    pub fn apply_changes(&mut self, changes: Changes) {
        for slice in changes.endpoint_slices {
            let key = ServiceKey::of(&slice.metadata);
            if self.slices.get(&key).is_some_and(|(old, _)| *old == slice) {
                continue;
            }
            self.put_slice(key, Some(slice));
        }
        for key in changes.removed_endpoint_slices {
            if self.slices.contains_key(&key) {
                self.put_slice(key, None);
            }
        }
        for svc in changes.services {
            let key = crate::model::service::service_key(&svc);
            match self.services.iter().position(|s| key.matches(&s.metadata)) {
                Some(i) => self.services[i] = svc,
                None => self.services.push(svc),
            }
            if !self.services_dirty {
                self.changed_services.insert(key);
            }
        }
        for key in changes.removed_services {
            self.services.retain(|s| !key.matches(&s.metadata));
            if !self.services_dirty {
                self.changed_services.insert(key);
            }
        }
        let updates = changes
            .endpoints
            .into_iter()
            .map(|ep| (ServiceKey::of(&ep.metadata), Some(ep)))
            .chain(changes.removed_endpoints.into_iter().map(|k| (k, None)));
        for (key, ep) in updates {
            if !self.endpoints_dirty {
                self.changed_endpoints.insert(key, ep);
                continue;
            }
            // A complete replacement is pending: change it instead.
            let at = self.endpoints.iter().position(|e| key.matches(&e.metadata));
            match (at, ep) {
                (Some(i), Some(ep)) => self.endpoints[i] = ep,
                (None, Some(ep)) => self.endpoints.push(ep),
                (Some(i), None) => {
                    self.endpoints.remove(i);
                }
                (None, None) => {}
            }
        }
    }

    /// Replaces the node's pods (endpoints of Services with a selector come from them).
    /// The pods may come shared (`Arc<Pod>`, the agent's: one copy of each pod for the kubelet
    /// and the proxy) or owned (`Pod`).
    pub fn update_pods<P: Into<Arc<Pod>>>(&mut self, pods: impl IntoIterator<Item = P>) {
        self.pods = pods.into_iter().map(Into::into).collect();
        self.pods_dirty = true;
    }

    /// A snapshot of what the proxy serves.
    pub fn status(&self) -> ProxyStatus {
        lock(&self.status, "proxy status").clone()
    }

    /// Allocates, resolves endpoints and computes the desired ruleset (no I/O but the
    /// allocation state file). Work is redone only for inputs that changed since the last call.
    pub fn desired(&mut self) -> Ruleset {
        // Services changed one by one, when the allocation can be decided for them alone.
        let mut some_services: Option<Vec<Service>> = None;
        if !self.services_dirty && !self.changed_services.is_empty() {
            match self
                .allocator
                .allocate_changed(&self.services, &self.changed_services)
            {
                Some(allocated) => some_services = Some(allocated),
                None => self.services_dirty = true,
            }
        }
        let changed_services = std::mem::take(&mut self.changed_services);
        let r = &mut self.resolved;
        if self.services_dirty {
            let (services, alloc_errors) = self.allocator.allocate(&self.services);
            r.alloc_errors = alloc_errors.iter().map(|e| e.to_string()).collect();
            r.port_errors.clear();
            r.svc_ports.clear();
            for svc in &services {
                match service_ports(svc) {
                    Ok(p) => {
                        r.svc_ports
                            .insert(crate::model::service::service_key(svc), p);
                    }
                    Err(e) => {
                        r.port_errors.insert(svc_id(svc), e.to_string());
                    }
                }
            }
            r.collect_errors();
            for e in &r.errors {
                tracing::warn!(error = %e, "service not programmed");
            }
            r.services = services.into_iter().map(Arc::new).collect();
        } else if let Some(allocated) = &some_services {
            for key in &changed_services {
                // The old ports' endpoints go; the Service's new ports get theirs below.
                if let Some(old) = r.svc_ports.remove(key) {
                    for p in &old {
                        r.eps.remove(&p.name);
                    }
                }
                let id = key.to_string();
                r.port_errors.remove(&id);
                if let Ok(i) = r.services.binary_search_by(|s| svc_id(s).cmp(&id)) {
                    r.services.remove(i);
                }
            }
            for svc in allocated {
                let id = svc_id(svc);
                match service_ports(svc) {
                    Ok(p) => {
                        r.svc_ports
                            .insert(crate::model::service::service_key(svc), p);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "service not programmed");
                        r.port_errors.insert(id.clone(), e.to_string());
                    }
                }
                let at = r
                    .services
                    .binary_search_by(|s| svc_id(s).cmp(&id))
                    .unwrap_or_else(|i| i);
                r.services.insert(at, Arc::new(svc.clone()));
            }
            r.collect_errors();
        }
        let services_changed = self.services_dirty || some_services.is_some();
        // Services whose endpoints must be re-resolved (`None`: all of them).
        let mut changed: Option<Vec<ServiceKey>> = if self.services_dirty || self.pods_dirty {
            None
        } else {
            Some(changed_services.iter().cloned().collect())
        };
        if self.endpoints_dirty {
            let new = std::mem::take(&mut self.endpoints);
            let same_objects = new.len() == r.manual_order.len()
                && new
                    .iter()
                    .zip(&r.manual_order)
                    .all(|(ep, key)| key.matches(&ep.metadata));
            if same_objects {
                // The usual case: the same objects in the same order, a few of them changed.
                for (ep, key) in new.into_iter().zip(&r.manual_order) {
                    if let Some(entry) = r.manual.get_mut(key) {
                        if entry.0 != ep {
                            entry.1 = Arc::new(EndpointSet::from_endpoints(&ep));
                            entry.0 = ep;
                            if let Some(c) = changed.as_mut() {
                                c.push(key.clone());
                            }
                        }
                    }
                }
            } else {
                // Objects came or went: re-parse only the ones that differ.
                let mut old = std::mem::take(&mut r.manual);
                r.manual_order = new.iter().map(|ep| ServiceKey::of(&ep.metadata)).collect();
                for (ep, key) in new.into_iter().zip(r.manual_order.iter().cloned()) {
                    let set = match old.remove(&key) {
                        Some((prev, set)) if prev == ep => set,
                        _ => {
                            if let Some(c) = changed.as_mut() {
                                c.push(key.clone());
                            }
                            Arc::new(EndpointSet::from_endpoints(&ep))
                        }
                    };
                    r.manual.insert(key, (ep, set));
                }
                if let Some(c) = changed.as_mut() {
                    c.extend(old.into_keys());
                }
            }
        }
        let slices_changed = !self.changed_slice_services.is_empty();
        let endpoints_changed =
            self.endpoints_dirty || !self.changed_endpoints.is_empty() || slices_changed;
        for key in std::mem::take(&mut self.changed_slice_services) {
            let set = self.slices_of.get(&key).map(|names| {
                let slices = names
                    .iter()
                    .filter_map(|n| self.slices.get(n).map(|(s, _)| s));
                EndpointSet::from_slices(&key, slices)
            });
            match set {
                Some(set) => {
                    if r.from_slices.get(&key).is_some_and(|old| **old == set) {
                        continue;
                    }
                    r.from_slices.insert(key.clone(), Arc::new(set));
                }
                None => {
                    if r.from_slices.remove(&key).is_none() {
                        continue;
                    }
                }
            }
            if let Some(c) = changed.as_mut() {
                c.push(key);
            }
        }
        for (key, ep) in std::mem::take(&mut self.changed_endpoints) {
            match ep {
                Some(ep) => {
                    if r.manual.get(&key).is_some_and(|(old, _)| *old == ep) {
                        continue;
                    }
                    let set = Arc::new(EndpointSet::from_endpoints(&ep));
                    if r.manual.insert(key.clone(), (ep, set)).is_none() {
                        r.manual_order.push(key.clone());
                    }
                }
                None => {
                    if r.manual.remove(&key).is_none() {
                        continue;
                    }
                    r.manual_order.retain(|k| *k != key);
                }
            }
            if let Some(c) = changed.as_mut() {
                c.push(key);
            }
        }
        if self.services_dirty || self.pods_dirty {
            r.from_pods = endpoints_from_pods(
                r.services.iter().map(|s| &**s),
                &self.pods,
                &self.cfg.node_name,
            )
            .into_iter()
            .map(|s| (s.key(), Arc::new(s)))
            .collect();
        } else if let Some(allocated) = &some_services {
            for key in &changed_services {
                r.from_pods.remove(key);
            }
            for s in endpoints_from_pods(allocated, &self.pods, &self.cfg.node_name) {
                r.from_pods.insert(s.key(), Arc::new(s));
            }
        }
        let node = &self.cfg.node_name;
        let resolve = |r: &mut Resolved, key: &ServiceKey| {
            let Some(ports) = r.svc_ports.get(key) else {
                return;
            };
            for p in ports {
                r.eps.remove(&p.name);
            }
            if let Some(set) = combined(r, key) {
                set.for_ports(ports, node, &mut r.eps);
            }
        };
        match &changed {
            None => {
                r.eps.clear();
                let keys: Vec<ServiceKey> = r.svc_ports.keys().cloned().collect();
                for key in &keys {
                    resolve(r, key);
                }
            }
            Some(keys) => {
                for key in keys {
                    resolve(r, key);
                }
            }
        }
        match &changed {
            None => {
                let keys: BTreeSet<&ServiceKey> = r
                    .manual
                    .keys()
                    .chain(r.from_pods.keys())
                    .chain(r.from_slices.keys())
                    .collect();
                let sets = keys
                    .into_iter()
                    .filter_map(|k| combined(r, k).map(|s| (k.clone(), s)))
                    .collect();
                r.sets = sets;
            }
            Some(keys) => {
                for key in keys {
                    match combined(r, key) {
                        Some(set) => r.sets.insert(key.clone(), set),
                        None => r.sets.remove(key),
                    };
                }
            }
        }
        if services_changed || endpoints_changed || self.pods_dirty {
            let mut st = lock(&self.status, "proxy status");
            if services_changed {
                st.services = r.services.clone();
                st.errors = r.errors.clone();
            }
            st.endpoints = r.sets.values().cloned().collect();
        }
        match (&changed, &mut r.udp_pending) {
            (Some(keys), Some(pending)) => pending.extend(keys.iter().cloned()),
            _ => r.udp_pending = None,
        }
        self.services_dirty = false;
        self.endpoints_dirty = false;
        self.pods_dirty = false;
        self.generator
            .update(&self.cfg.rules, &r.svc_ports, &r.eps, changed.as_deref())
    }

    /// Makes the next sync full.
    pub fn force_full_sync(&mut self) {
        self.syncer.force_full();
    }

    /// Whether every canary chain is still there (false: someone flushed a table).
    pub fn canary_present(&self) -> Result<bool, ProxyError> {
        for t in [Table::Mangle, Table::Nat, Table::Filter] {
            if !self.syncer.firewall().chain_exists(t, CANARY_CHAIN)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Computes the desired rules and applies them, then clears stale UDP flows.
    pub fn sync(&mut self) -> Result<SyncReport, ProxyError> {
        let span = tracing::info_span!("proxy_sync", full = self.syncer.needs_full());
        let _g = span.enter();
        let rs = self.desired();
        if self.cfg.rules.localhost_enabled() && !self.route_localnet {
            self.syncer.firewall().enable_route_localnet()?;
            self.route_localnet = true;
        }
        let result = self.syncer.sync(&rs);
        // After the rules: what was left unsaved can wait that long (see `allocate_changed`).
        self.allocator.save_deferred();
        let mut st = lock(&self.status, "proxy status");
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                st.failures += 1;
                return Err(e.into());
            }
        };
        st.syncs += 1;
        st.last_sync = Some(report.clone());
        drop(st);
        if let Some(observe) = SYNC_OBSERVER.get() {
            observe(&report);
        }
        if !report.skipped {
            tracing::info!(
                full = report.full,
                duration_ms = report.duration.as_secs_f64() * 1000.0,
                chains_written = report.chains_written,
                chains_deleted = report.chains_deleted,
                rules_written = report.rules_written,
                bytes = report.bytes,
                nat_rules = report.rules_total.get(&Table::Nat).copied().unwrap_or(0),
                filter_rules = report.rules_total.get(&Table::Filter).copied().unwrap_or(0),
                "synced proxy rules"
            );
        }
        for f in self.udp_update() {
            if let Err(e) = self.conntrack.delete_udp(&f) {
                tracing::warn!(error = %e, "stale UDP flows not cleared");
            }
        }
        Ok(report)
    }

    /// Brings the UDP state to the last desired ruleset's and returns the flows that went
    /// stale: for the Services changed since the last call, or for all.
    fn udp_update(&mut self) -> Vec<crate::conntrack::FlowFilter> {
        let r = &mut self.resolved;
        let Some(keys) = r.udp_pending.replace(BTreeSet::new()) else {
            let udp = udp_state(r.svc_ports.values().flatten(), &r.eps);
            let stale = stale_flows(&self.udp, &udp);
            self.udp = udp;
            return stale;
        };
        let mut stale = Vec::new();
        for key in keys {
            let first = ServicePortName {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                port: String::new(),
            };
            let names: Vec<ServicePortName> = self
                .udp
                .range(first..)
                .map(|(n, _)| n)
                .take_while(|n| n.namespace == key.namespace && n.name == key.name)
                .cloned()
                .collect();
            let old: UdpState = names
                .into_iter()
                .filter_map(|n| self.udp.remove_entry(&n))
                .collect();
            let new = udp_state(r.svc_ports.get(&key).into_iter().flatten(), &r.eps);
            stale.extend(stale_flows(&old, &new));
            self.udp.extend(new);
        }
        stale.sort();
        stale.dedup();
        stale
    }

    /// Runs the proxy on a thread of its own until the handle is shut down or dropped.
    pub fn spawn(self) -> ProxyHandle {
        run::spawn(self)
    }
}

mod run;

pub use run::{ProxyHandle, ProxyHealth};

#[cfg(test)]
mod tests;

/// Told of every sync that succeeded: the agent counts it in upstream's
/// `kubeproxy_sync_proxy_rules_*` metrics (the proxy itself keeps no metrics registry).
pub type SyncObserver = fn(&SyncReport);

static SYNC_OBSERVER: std::sync::OnceLock<SyncObserver> = std::sync::OnceLock::new();

/// Installs the process's [`SyncObserver`]; the first one installed stays.
pub fn observe_syncs(observer: SyncObserver) {
    let _ = SYNC_OBSERVER.set(observer);
}
