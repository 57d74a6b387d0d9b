//! [`Proxy`]: inputs (Services, Endpoints, the node's pods) → allocation → desired rules → sync,
//! and [`ProxyHandle`], the same on a thread of its own: updates are coalesced (at most one sync
//! per `min_sync_period`), the canary chains are checked every `sync_period`, a full sync runs at
//! least every `full_sync_period` and after any failure.

use crate::alloc::{AllocError, Allocator};
use crate::conntrack::{stale_flows, udp_state, Conntrack, UdpState};
use crate::iptables::Firewall;
use crate::model::{
    endpoints_from_pods, service_ports, Endpoint, EndpointSet, Ipv4Cidr, ServicePortInfo,
    ServicePortName,
};
use crate::rules::{Generator, RulesConfig, Ruleset, Table, CANARY_CHAIN};
use crate::sync::{SyncError, SyncReport, Syncer};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use std::collections::{BTreeMap, HashMap};
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
    pub service_cidr: Ipv4Cidr,
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
    pub fn new(node_name: &str, service_cidr: Ipv4Cidr) -> ProxyConfig {
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
    /// Services with their allocated ClusterIPs and NodePorts.
    pub services: Vec<Service>,
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
    pods: Vec<Pod>,
    udp: UdpState,
    route_localnet: bool,
    status: Arc<Mutex<ProxyStatus>>,
    generator: Generator,
    resolved: Resolved,
    services_dirty: bool,
    endpoints_dirty: bool,
    pods_dirty: bool,
}

/// Inputs resolved by the last [`Proxy::desired`].
#[derive(Debug, Default)]
struct Resolved {
    services: Vec<Service>,
    svc_ports: Vec<((String, String), Vec<ServicePortInfo>)>,
    ports: Vec<ServicePortInfo>,
    errors: Vec<String>,
    svc_index: HashMap<(String, String), usize>,
    manual: HashMap<(String, String), (Endpoints, Arc<EndpointSet>)>,
    manual_order: Vec<(String, String)>,
    from_pods: HashMap<(String, String), Arc<EndpointSet>>,
    eps: BTreeMap<ServicePortName, Vec<Endpoint>>,
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
            pods: Vec::new(),
            udp: UdpState::new(),
            route_localnet: false,
            status: Arc::default(),
            generator: Generator::default(),
            resolved: Resolved::default(),
            services_dirty: true,
            endpoints_dirty: true,
            pods_dirty: true,
        })
    }

    /// Replaces the set of Services.
    pub fn update_services(&mut self, services: Vec<Service>) {
        self.services = services;
        self.services_dirty = true;
    }

    /// Replaces the manual `Endpoints` objects (used for Services without a selector).
    pub fn update_endpoints(&mut self, endpoints: Vec<Endpoints>) {
        self.endpoints = endpoints;
        self.endpoints_dirty = true;
    }

    /// Replaces the node's pods (endpoints of Services with a selector come from them).
    pub fn update_pods(&mut self, pods: Vec<Pod>) {
        self.pods = pods;
        self.pods_dirty = true;
    }

    /// A snapshot of what the proxy serves.
    pub fn status(&self) -> ProxyStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Allocates, resolves endpoints and computes the desired ruleset (no I/O but the
    /// allocation state file). Work is redone only for inputs that changed since the last call.
    pub fn desired(&mut self) -> Ruleset {
        let r = &mut self.resolved;
        if self.services_dirty {
            let (services, alloc_errors) = self.allocator.allocate(&self.services);
            r.errors = alloc_errors.iter().map(|e| e.to_string()).collect();
            r.svc_ports.clear();
            for svc in &services {
                match service_ports(svc) {
                    Ok(p) => r
                        .svc_ports
                        .push((crate::model::service::service_key(svc), p)),
                    Err(e) => r.errors.push(e.to_string()),
                }
            }
            r.ports = r
                .svc_ports
                .iter()
                .flat_map(|(_, p)| p.iter().cloned())
                .collect();
            for e in &r.errors {
                tracing::warn!(error = %e, "service not programmed");
            }
            r.services = services;
        }
        // Services whose endpoints must be re-resolved (`None`: all of them).
        let mut changed: Option<Vec<(String, String)>> = if self.services_dirty || self.pods_dirty {
            None
        } else {
            Some(Vec::new())
        };
        if self.services_dirty {
            r.svc_index = r
                .svc_ports
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
        }
        if self.endpoints_dirty {
            let new = std::mem::take(&mut self.endpoints);
            let key_of = |ep: &Endpoints| {
                let ns = ep.metadata.namespace.as_deref().unwrap_or("default");
                (ns.to_string(), ep.metadata.name.clone().unwrap_or_default())
            };
            let same_objects = new.len() == r.manual_order.len()
                && new.iter().zip(&r.manual_order).all(|(ep, (ns, name))| {
                    ep.metadata.namespace.as_deref().unwrap_or("default") == ns
                        && ep.metadata.name.as_deref().unwrap_or("") == name
                });
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
                r.manual_order = new.iter().map(key_of).collect();
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
        if self.services_dirty || self.pods_dirty {
            r.from_pods = endpoints_from_pods(&r.services, &self.pods, &self.cfg.node_name)
                .into_iter()
                .map(|s| ((s.namespace.clone(), s.name.clone()), Arc::new(s)))
                .collect();
        }
        let node = &self.cfg.node_name;
        let resolve = |r: &mut Resolved, i: usize| {
            let (key, ports) = &r.svc_ports[i];
            for p in ports {
                r.eps.remove(&p.name);
            }
            let set = r
                .from_pods
                .get(key)
                .or_else(|| r.manual.get(key).map(|(_, s)| s));
            if let Some(set) = set {
                set.for_ports(ports, node, &mut r.eps);
            }
        };
        match &changed {
            None => {
                r.eps.clear();
                for i in 0..r.svc_ports.len() {
                    resolve(r, i);
                }
            }
            Some(keys) => {
                for key in keys {
                    if let Some(&i) = r.svc_index.get(key) {
                        resolve(r, i);
                    }
                }
            }
        }
        if self.services_dirty || self.endpoints_dirty || self.pods_dirty {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if self.services_dirty {
                st.services = r.services.clone();
                st.errors = r.errors.clone();
            }
            let mut sets: BTreeMap<&(String, String), &Arc<EndpointSet>> =
                r.manual.iter().map(|(k, (_, s))| (k, s)).collect();
            sets.extend(r.from_pods.iter());
            st.endpoints = sets.into_values().cloned().collect();
        }
        self.services_dirty = false;
        self.endpoints_dirty = false;
        self.pods_dirty = false;
        self.generator.generate(&self.cfg.rules, &r.ports, &r.eps)
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
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
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
        let udp = udp_state(&self.resolved.ports, &self.resolved.eps);
        for f in stale_flows(&self.udp, &udp) {
            if let Err(e) = self.conntrack.delete_udp(&f) {
                tracing::warn!(error = %e, "stale UDP flows not cleared");
            }
        }
        self.udp = udp;
        Ok(report)
    }

    /// Runs the proxy on a thread of its own until the handle is shut down or dropped.
    pub fn spawn(self) -> ProxyHandle {
        run::spawn(self)
    }
}

mod run;

pub use run::ProxyHandle;

#[cfg(test)]
mod tests;
