//! ClusterIP and NodePort allocation for Services that leave them empty, stable across restarts
//! through a small JSON state file. Explicit values are validated (inside the range, not taken);
//! a conflict is an error for the Service that sorts later by `namespace/name`.

use crate::model::{Ipv4Net, Ipv4NetExt};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// A Service whose address or port could not be assigned.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The requested ClusterIP is not an IPv4 address inside the service CIDR.
    #[error("service {service}: clusterIP {ip} is not in the service CIDR {cidr}")]
    OutOfRange {
        /// `ns/name`.
        service: String,
        /// Requested value.
        ip: String,
        /// The service CIDR.
        cidr: Ipv4Net,
    },
    /// Two Services ask for the same ClusterIP.
    #[error("service {service}: clusterIP {ip} is already allocated to {owner}")]
    IpConflict {
        /// `ns/name` of the Service refused.
        service: String,
        /// The address.
        ip: Ipv4Addr,
        /// `ns/name` holding it.
        owner: String,
    },
    /// The requested NodePort is outside the range.
    #[error("service {service}: nodePort {port} is not in the node port range {start}-{end}")]
    PortOutOfRange {
        /// `ns/name`.
        service: String,
        /// Requested value.
        port: i32,
        /// Range start.
        start: u16,
        /// Range end.
        end: u16,
    },
    /// Two Service ports ask for the same NodePort.
    #[error("service {service}: nodePort {port}/{protocol} is already allocated to {owner}")]
    PortConflict {
        /// `ns/name` of the Service refused.
        service: String,
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: String,
        /// `ns/name` holding it.
        owner: String,
    },
    /// No free address or port is left.
    #[error("service {service}: no free {what} left")]
    Exhausted {
        /// `ns/name`.
        service: String,
        /// `ClusterIP in 10.96.0.0/12` or `NodePort`.
        what: String,
    },
    /// Reading or writing the state file failed.
    #[error("{action} allocation state {path}")]
    State {
        /// `reading` or `writing`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    cluster_ips: BTreeMap<String, Ipv4Addr>,
    node_ports: BTreeMap<String, u16>,
}

/// Assigns ClusterIPs and NodePorts.
#[derive(Debug)]
pub struct Allocator {
    cidr: Ipv4Net,
    ports: RangeInclusive<u16>,
    path: Option<PathBuf>,
    state: State,
    /// The last allocation refused nothing and was saved: `state` holds exactly the present
    /// Services' assignments, which [`Allocator::allocate_changed`] relies on.
    clean: bool,
    /// `state` differs from the file (a save failed): the next full allocation saves it.
    unsaved: bool,
    /// `state` changed in [`Allocator::allocate_changed`] and is not saved yet.
    deferred: bool,
    /// Who holds each address and NodePort in `state`.
    owners: Owners,
}

/// The holders of the addresses and NodePorts in a [`State`], by value.
#[derive(Debug, Default)]
struct Owners {
    ips: HashMap<Ipv4Addr, String>,
    /// By (port, protocol).
    ports: HashMap<(u16, String), String>,
}

impl Owners {
    fn of(state: &State) -> Owners {
        Owners {
            ips: state
                .cluster_ips
                .iter()
                .map(|(id, ip)| (*ip, id.clone()))
                .collect(),
            ports: state
                .node_ports
                .iter()
                .filter_map(|(key, np)| {
                    let (id, _) = key.split_once(':')?;
                    Some(((*np, port_key_protocol(key)?.to_string()), id.to_string()))
                })
                .collect(),
        }
    }
}

/// The protocol of a NodePort key, `ns/name:port/PROTO`.
fn port_key_protocol(key: &str) -> Option<&str> {
    key.split_once(':')?.1.rsplit('/').next()
}

/// The Service that owns the first address of the service CIDR.
const KUBERNETES_SERVICE: &str = "default/kubernetes";

fn svc_id(s: &Service) -> String {
    crate::model::service::service_key(s).to_string()
}

impl Allocator {
    /// An allocator over `cidr` and `ports`, remembering assignments in `path` (if given; a
    /// missing file is an empty state).
    pub fn new(
        cidr: Ipv4Net,
        ports: RangeInclusive<u16>,
        path: Option<&Path>,
    ) -> Result<Allocator, AllocError> {
        let state = match path {
            Some(p) => match std::fs::read(p) {
                Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                    tracing::warn!(path = %p.display(), error = %e, "ignoring unreadable allocation state");
                    State::default()
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
                Err(source) => return Err(AllocError::State { action: "reading", path: p.to_path_buf(), source }),
            },
            None => State::default(),
        };
        Ok(Allocator {
            cidr,
            ports,
            path: path.map(Path::to_path_buf),
            owners: Owners::of(&state),
            state,
            clean: false,
            unsaved: false,
            deferred: false,
        })
    }

    /// The allocation after only the Services `changed` (by namespace and name) were added,
    /// changed or removed from `services` (the complete new set), when it can be decided without
    /// revisiting any other Service: the last allocation refused nothing, and every changed
    /// Service asks for an address and ports that are free (explicit ones) or that it already
    /// holds (empty ones). Then the result is exactly what [`Allocator::allocate`] would give,
    /// and the allocated forms of the changed Services still present are returned (any order).
    /// Otherwise `None`: a fresh address or port, a conflict or an error needs the full
    /// allocation, which decides them in `namespace/name` order.
    ///
    /// The work is proportional to the changed Services, not to all of them. Saving the state
    /// is left to [`Allocator::save_deferred`]: the only values that change here are explicit
    /// ones (which the manifests give again after a crash) and removals, so a crash before the
    /// save loses nothing.
    pub fn allocate_changed(
        &mut self,
        services: &[Service],
        changed: &BTreeSet<crate::model::ServiceKey>,
    ) -> Option<Vec<Service>> {
        if !self.clean {
            return None;
        }
        let ids: BTreeSet<String> = changed.iter().map(|key| key.to_string()).collect();
        let present: Vec<&Service> = services
            .iter()
            .filter(|s| {
                if changed.len() <= 16 {
                    changed.iter().any(|k| k.matches(&s.metadata))
                } else {
                    changed.contains(&crate::model::ServiceKey::of(&s.metadata))
                }
            })
            .collect();
        // Held by a Service that is not changing.
        let other_ip = |ip: &Ipv4Addr| self.owners.ips.get(ip).is_some_and(|o| !ids.contains(o));
        let other_port =
            |key: &(u16, String)| self.owners.ports.get(key).is_some_and(|o| !ids.contains(o));
        let mut taken_ips: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let mut taken_ports: BTreeSet<(u16, String)> = BTreeSet::new();
        let mut ips: Vec<(String, Ipv4Addr)> = Vec::new();
        let mut node_ports: Vec<(String, u16)> = Vec::new();
        for s in &present {
            if !crate::model::service::is_proxied(s) {
                continue;
            }
            let id = svc_id(s);
            let spec = s.spec.as_ref()?;
            let ip = match spec.cluster_ip.as_deref().filter(|v| !v.is_empty()) {
                Some(req) => req.parse::<Ipv4Addr>().ok()?,
                None => *self.state.cluster_ips.get(&id)?,
            };
            if !self.cidr.contains(&ip) || other_ip(&ip) || !taken_ips.insert(ip) {
                return None;
            }
            ips.push((id.clone(), ip));
            for (p, proto, key) in node_port_keys(&id, spec) {
                let np = match p.node_port {
                    Some(np) if np != 0 => u16::try_from(np).ok()?,
                    _ => *self.state.node_ports.get(&key)?,
                };
                let owner_key = (np, proto);
                if !self.ports.contains(&np)
                    || other_port(&owner_key)
                    || !taken_ports.insert(owner_key)
                {
                    return None;
                }
                node_ports.push((key, np));
            }
        }
        // Decided: the changed Services' old assignments give way to the new ones.
        let mut old_ips: Vec<(String, Ipv4Addr)> = ids
            .iter()
            .filter_map(|id| Some((id.clone(), *self.state.cluster_ips.get(id)?)))
            .collect();
        // Port keys are `ns/name:port/PROTO`: a Service's are the ones after `ns/name:`, before
        // `ns/name;` (the next character).
        let mut old_ports: Vec<(String, u16)> = ids
            .iter()
            .flat_map(|id| {
                self.state
                    .node_ports
                    .range(format!("{id}:")..format!("{id};"))
                    .map(|(k, v)| (k.clone(), *v))
            })
            .collect();
        let (mut new_ips, mut new_ports) = (ips.clone(), node_ports.clone());
        for v in [&mut old_ips, &mut new_ips] {
            v.sort();
        }
        for v in [&mut old_ports, &mut new_ports] {
            v.sort();
        }
        if old_ips != new_ips || old_ports != new_ports {
            for (id, ip) in &old_ips {
                self.state.cluster_ips.remove(id);
                self.owners.ips.remove(ip);
            }
            for (key, np) in &old_ports {
                self.state.node_ports.remove(key);
                if let Some(proto) = port_key_protocol(key) {
                    self.owners.ports.remove(&(*np, proto.to_string()));
                }
            }
            for (id, ip) in &ips {
                self.state.cluster_ips.insert(id.clone(), *ip);
                self.owners.ips.insert(*ip, id.clone());
            }
            for (key, np) in &node_ports {
                self.state.node_ports.insert(key.clone(), *np);
                if let (Some(proto), Some((id, _))) = (port_key_protocol(key), key.split_once(':'))
                {
                    self.owners
                        .ports
                        .insert((*np, proto.to_string()), id.to_string());
                }
            }
            self.deferred = true;
        }
        let ip_of: BTreeMap<String, Ipv4Addr> = ips.into_iter().collect();
        let port_of: BTreeMap<String, u16> = node_ports.into_iter().collect();
        Some(
            present
                .into_iter()
                .map(|s| {
                    let mut s = s.clone();
                    let id = svc_id(&s);
                    fill_in(&mut s, &id, &ip_of, &port_of);
                    s
                })
                .collect(),
        )
    }

    /// Saves the state that [`Allocator::allocate_changed`] left unsaved, if any. A failure is
    /// logged and left to the next full allocation, which retries.
    pub fn save_deferred(&mut self) {
        if !std::mem::take(&mut self.deferred) {
            return;
        }
        if let Err(e) = self.persist() {
            tracing::warn!(error = %e, "allocation state not saved; the next full allocation retries");
            self.clean = false;
            self.unsaved = true;
        }
    }

    /// Returns the Services with every empty ClusterIP and NodePort filled in, and an error for
    /// each Service left out. Assignments are persisted when they changed.
    pub fn allocate(&mut self, services: &[Service]) -> (Vec<Service>, Vec<AllocError>) {
        let mut sorted: Vec<Service> = services.to_vec();
        sorted.sort_by_key(svc_id);
        let mut errors = Vec::new();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        let mut ips: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        let mut new_state = State::default();

        // ClusterIPs: explicit ones, then remembered ones, then new ones.
        let wants_ip = |s: &Service| crate::model::service::is_proxied(s);
        for s in sorted.iter().filter(|s| wants_ip(s)) {
            let id = svc_id(s);
            let Some(req) = s
                .spec
                .as_ref()
                .and_then(|sp| sp.cluster_ip.clone())
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            match req.parse::<Ipv4Addr>() {
                Ok(ip) if self.cidr.contains(&ip) => {
                    if let Some(owner) = ips.get(&ip) {
                        errors.push(AllocError::IpConflict {
                            service: id.clone(),
                            ip,
                            owner: owner.clone(),
                        });
                        failed.insert(id);
                    } else {
                        ips.insert(ip, id.clone());
                        new_state.cluster_ips.insert(id, ip);
                    }
                }
                _ => {
                    errors.push(AllocError::OutOfRange {
                        service: id.clone(),
                        ip: req,
                        cidr: self.cidr,
                    });
                    failed.insert(id);
                }
            }
        }
        let needs_ip: Vec<String> = sorted
            .iter()
            .filter(|s| {
                wants_ip(s)
                    && s.spec
                        .as_ref()
                        .and_then(|sp| sp.cluster_ip.as_deref())
                        .unwrap_or("")
                        .is_empty()
            })
            .map(svc_id)
            .collect();
        let mut fresh = Vec::new();
        for id in needs_ip {
            match self.state.cluster_ips.get(&id) {
                Some(ip) if self.cidr.contains(ip) && !ips.contains_key(ip) => {
                    ips.insert(*ip, id.clone());
                    new_state.cluster_ips.insert(id, *ip);
                }
                _ => fresh.push(id),
            }
        }
        // The first address belongs to `default/kubernetes` (as the API server reserves it);
        // every other Service is allocated from the second on.
        let mut next = 2u64;
        for id in fresh {
            if id == KUBERNETES_SERVICE && !ips.contains_key(&self.cidr.nth(1)) {
                let ip = self.cidr.nth(1);
                ips.insert(ip, id.clone());
                new_state.cluster_ips.insert(id, ip);
                continue;
            }
            // Skip the network and broadcast addresses, as the API server does.
            while next + 1 < self.cidr.size() && ips.contains_key(&self.cidr.nth(next)) {
                next += 1;
            }
            if next + 1 >= self.cidr.size() {
                errors.push(AllocError::Exhausted {
                    service: id.clone(),
                    what: format!("ClusterIP in {}", self.cidr),
                });
                failed.insert(id);
                continue;
            }
            let ip = self.cidr.nth(next);
            ips.insert(ip, id.clone());
            new_state.cluster_ips.insert(id, ip);
        }

        // NodePorts, same order of precedence; keyed by `ns/name:port/PROTO`.
        let mut ports: BTreeMap<(u16, String), String> = BTreeMap::new();
        let mut pending: Vec<(String, String, String)> = Vec::new(); // (svc id, key, protocol)
        for s in sorted.iter().filter(|s| wants_ip(s)) {
            let id = svc_id(s);
            let Some(spec) = &s.spec else { continue };
            for (p, proto, key) in node_port_keys(&id, spec) {
                match p.node_port {
                    Some(np) if np != 0 => {
                        let ok = u16::try_from(np).ok().filter(|n| self.ports.contains(n));
                        let Some(np) = ok else {
                            errors.push(AllocError::PortOutOfRange {
                                service: id.clone(),
                                port: np,
                                start: *self.ports.start(),
                                end: *self.ports.end(),
                            });
                            failed.insert(id.clone());
                            continue;
                        };
                        if let Some(owner) = ports.get(&(np, proto.clone())) {
                            errors.push(AllocError::PortConflict {
                                service: id.clone(),
                                port: np,
                                protocol: proto,
                                owner: owner.clone(),
                            });
                            failed.insert(id.clone());
                        } else {
                            ports.insert((np, proto), id.clone());
                            new_state.node_ports.insert(key, np);
                        }
                    }
                    _ => pending.push((id.clone(), key, proto)),
                }
            }
        }
        let mut fresh = Vec::new();
        for (id, key, proto) in pending {
            match self.state.node_ports.get(&key) {
                Some(np)
                    if self.ports.contains(np) && !ports.contains_key(&(*np, proto.clone())) =>
                {
                    ports.insert((*np, proto), id);
                    new_state.node_ports.insert(key, *np);
                }
                _ => fresh.push((id, key, proto)),
            }
        }
        for (id, key, proto) in fresh {
            match self
                .ports
                .clone()
                .find(|p| !ports.contains_key(&(*p, proto.clone())))
            {
                Some(np) => {
                    ports.insert((np, proto), id);
                    new_state.node_ports.insert(key, np);
                }
                None => {
                    errors.push(AllocError::Exhausted {
                        service: id.clone(),
                        what: "NodePort".into(),
                    });
                    failed.insert(id);
                }
            }
        }

        // Fill in the values.
        let mut out = Vec::new();
        for mut s in sorted {
            let id = svc_id(&s);
            if failed.contains(&id) {
                continue;
            }
            fill_in(&mut s, &id, &new_state.cluster_ips, &new_state.node_ports);
            out.push(s);
        }
        if new_state != self.state || self.unsaved || self.deferred {
            self.owners = Owners::of(&new_state);
            self.state = new_state;
            self.unsaved = false;
            self.deferred = false;
            if let Err(e) = self.persist() {
                self.unsaved = true;
                errors.push(e);
            }
        }
        self.clean = errors.is_empty();
        (out, errors)
    }

    fn persist(&self) -> Result<(), AllocError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| AllocError::State {
            action: "writing",
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let body =
            serde_json::to_vec_pretty(&self.state).map_err(|e| err(std::io::Error::other(e)))?;
        kubenode_fsutil::write_atomic(path, &body).map_err(err)
    }
}

/// Writes the allocated ClusterIP (by Service id) and NodePorts (by port key, as
/// [`node_port_keys`] spells it) into the Service `id`.
fn fill_in(
    svc: &mut Service,
    id: &str,
    cluster_ips: &BTreeMap<String, Ipv4Addr>,
    node_ports: &BTreeMap<String, u16>,
) {
    let Some(spec) = svc.spec.as_mut() else {
        return;
    };
    if let Some(ip) = cluster_ips.get(id) {
        spec.cluster_ip = Some(ip.to_string());
        spec.cluster_ips = Some(vec![ip.to_string()]);
    }
    for p in spec.ports.iter_mut().flatten() {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let key = format!(
            "{id}:{}/{proto}",
            p.name.clone().unwrap_or_else(|| p.port.to_string())
        );
        if let Some(np) = node_ports.get(&key) {
            p.node_port = Some(i32::from(*np));
        }
    }
}

/// The ports of a Service that carry a NodePort (none unless its type is NodePort or
/// LoadBalancer), each with its protocol and its key in the state, `ns/name:port/PROTO`.
fn node_port_keys<'a>(
    id: &'a str,
    spec: &'a ServiceSpec,
) -> impl Iterator<Item = (&'a ServicePort, String, String)> + 'a {
    let wants = matches!(
        spec.type_.as_deref(),
        Some("NodePort") | Some("LoadBalancer")
    );
    spec.ports
        .iter()
        .flatten()
        .filter(move |_| wants)
        .map(move |p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let key = format!(
                "{id}:{}/{proto}",
                p.name.clone().unwrap_or_else(|| p.port.to_string())
            );
            (p, proto, key)
        })
}

#[cfg(test)]
mod tests;
