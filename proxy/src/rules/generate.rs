//! Builds the [`Ruleset`] from Services and endpoints: deterministic, no I/O. A [`Generator`]
//! memoizes each bucket chain by a hash of its inputs, so a sync after a small change renders
//! only the buckets that changed (and the syncer compares those hashes instead of the text).

use super::fixed::{
    comment, fixed_chains, forward_accept, nodeports_jumps, postrouting, EXTERNAL, MARK_MASQ,
    NODEPORTS, SERVICES,
};
use super::names::{nodeport_bucket, sep_name, svc_bucket};
use super::{RulesConfig, Ruleset, Table};
use crate::model::{
    masked_net, Endpoint, Ipv4Net, Protocol, ServiceKey, ServicePortInfo, ServicePortName,
};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Computes the complete desired ruleset. `endpoints` maps each Service port to all its
/// endpoints (ready or not); Service ports missing from it have no endpoints.
pub fn generate(
    cfg: &RulesConfig,
    services: &[ServicePortInfo],
    endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
) -> Ruleset {
    Generator::default().generate(cfg, services, endpoints)
}

/// A bucket chain: a destination range, or a NodePort range (by its first port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bucket {
    Dst(Ipv4Net),
    NodePort(Protocol, u16),
}

/// Where a Service port is reached.
#[derive(Clone, Copy, Debug, Hash)]
enum Frontend {
    ClusterIp,
    ExternalIp(Ipv4Addr),
    NodePort(u16),
}

/// One frontend of one Service port in a bucket chain.
#[derive(Debug, Hash)]
struct BucketEntry<'a> {
    frontend: Frontend,
    service_port: &'a ServicePortInfo,
    ready: &'a [Endpoint],
    local: &'a [Endpoint],
}

/// A Service port's place in the rules: by name and protocol (the order of the rules), then by
/// its position among its Service's ports (for two ports of one Service with the same name).
type PortKey = (ServicePortName, Protocol, usize);

/// What one Service port contributes to the ruleset.
#[derive(Debug)]
struct PortState {
    info: ServicePortInfo,
    ready: Vec<Endpoint>,
    /// The ready endpoints on this node.
    local: Vec<Endpoint>,
    /// Filter-table rules refusing its traffic (no endpoints, or no local ones): chain, spec.
    refusals: Vec<(&'static str, String)>,
    /// Its frontends, each in its bucket, in rule order.
    fronts: Vec<(Bucket, Frontend)>,
}

/// A bucket chain and the frontends in it.
#[derive(Debug)]
struct BucketState {
    chain: String,
    /// (port, index into its `fronts`), in rule order.
    members: BTreeSet<(PortKey, usize)>,
    /// Members that are ClusterIPs (such a bucket is part of the service CIDR's traffic).
    cluster_ips: usize,
    /// Hash of the inputs and the rendered rules; `None` until rendered after a change.
    rendered: Option<(u64, Arc<Vec<String>>)>,
}

/// The generator's view of every Service port, kept between calls so that a change of a few
/// Services redoes only their ports and buckets; the ruleset it returns is always the whole
/// one, equal to what [`generate`] gives for the same inputs.
#[derive(Debug, Default)]
pub struct Generator {
    /// The configuration the state was built for (another one rebuilds it).
    cfg: Option<RulesConfig>,
    ports: BTreeMap<PortKey, PortState>,
    /// Each Service's ports.
    by_service: HashMap<ServiceKey, Vec<PortKey>>,
    /// Ports with refusal rules.
    refusing: BTreeSet<PortKey>,
    buckets: BTreeMap<Bucket, BucketState>,
    /// Buckets whose members changed since they were rendered.
    dirty: BTreeSet<Bucket>,
    /// Local ready endpoints (hairpin traffic is marked for them), with the number of ports
    /// they serve.
    hairpin: BTreeMap<Ipv4Addr, usize>,
}

impl Generator {
    /// Same result as [`generate`]; bucket chains whose inputs did not change since the last
    /// call are reused rather than rendered again.
    pub fn generate(
        &mut self,
        cfg: &RulesConfig,
        services: &[ServicePortInfo],
        endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
    ) -> Ruleset {
        let mut by_service: BTreeMap<ServiceKey, Vec<ServicePortInfo>> = BTreeMap::new();
        for p in services {
            by_service
                .entry(ServiceKey::new(&p.name.namespace, &p.name.name))
                .or_default()
                .push(p.clone());
        }
        self.clear(cfg);
        for (key, ports) in &by_service {
            self.add_service(cfg, key, ports, endpoints);
        }
        self.assemble(cfg)
    }

    /// The whole ruleset for `services` (every Service's ports) and `endpoints`, where only the
    /// Services in `changed` (ports or endpoints) differ from the last call; `None` when any
    /// other input may have changed. Equal to [`generate`] of the same inputs.
    pub(crate) fn update(
        &mut self,
        cfg: &RulesConfig,
        services: &HashMap<ServiceKey, Vec<ServicePortInfo>>,
        endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
        changed: Option<&[ServiceKey]>,
    ) -> Ruleset {
        match changed {
            Some(keys) if self.cfg.as_ref() == Some(cfg) => {
                for key in keys {
                    self.remove_service(key);
                    if let Some(ports) = services.get(key) {
                        self.add_service(cfg, key, ports, endpoints);
                    }
                }
            }
            _ => {
                self.clear(cfg);
                for (key, ports) in services {
                    self.add_service(cfg, key, ports, endpoints);
                }
            }
        }
        self.assemble(cfg)
    }

    /// Forgets every port; the rendered buckets stay for reuse.
    fn clear(&mut self, cfg: &RulesConfig) {
        if self.cfg.as_ref() != Some(cfg) {
            self.buckets.clear();
            self.cfg = Some(cfg.clone());
        }
        self.ports.clear();
        self.by_service.clear();
        self.refusing.clear();
        self.hairpin.clear();
        for (bucket, state) in &mut self.buckets {
            state.members.clear();
            state.cluster_ips = 0;
            self.dirty.insert(*bucket);
        }
    }

    fn remove_service(&mut self, key: &ServiceKey) {
        for pk in self.by_service.remove(key).unwrap_or_default() {
            let Some(port) = self.ports.remove(&pk) else {
                continue;
            };
            for (i, (bucket, frontend)) in port.fronts.iter().enumerate() {
                if let Some(state) = self.buckets.get_mut(bucket) {
                    state.members.remove(&(pk.clone(), i));
                    if matches!(frontend, Frontend::ClusterIp) {
                        state.cluster_ips -= 1;
                    }
                    self.dirty.insert(*bucket);
                }
            }
            for e in &port.local {
                if let Some(n) = self.hairpin.get_mut(&e.ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.hairpin.remove(&e.ip);
                    }
                }
            }
            self.refusing.remove(&pk);
        }
    }

    fn add_service(
        &mut self,
        cfg: &RulesConfig,
        key: &ServiceKey,
        ports: &[ServicePortInfo],
        endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
    ) {
        let mut keys = Vec::with_capacity(ports.len());
        for (i, info) in ports.iter().enumerate() {
            let pk: PortKey = (info.name.clone(), info.protocol, i);
            let port = port_state(cfg, info, endpoints);
            for e in &port.local {
                // Only a pod on this node can reach itself through this node's rules.
                *self.hairpin.entry(e.ip).or_default() += 1;
            }
            if !port.refusals.is_empty() {
                self.refusing.insert(pk.clone());
            }
            for (f, (bucket, frontend)) in port.fronts.iter().enumerate() {
                let state = self.buckets.entry(*bucket).or_insert_with(|| BucketState {
                    chain: bucket_chain(cfg, *bucket),
                    members: BTreeSet::new(),
                    cluster_ips: 0,
                    rendered: None,
                });
                state.members.insert((pk.clone(), f));
                if matches!(frontend, Frontend::ClusterIp) {
                    state.cluster_ips += 1;
                }
                self.dirty.insert(*bucket);
            }
            self.ports.insert(pk.clone(), port);
            keys.push(pk);
        }
        self.by_service.insert(key.clone(), keys);
    }

    /// Renders the changed buckets (reusing a rendering whose inputs hash the same) and puts
    /// the whole ruleset together.
    fn assemble(&mut self, cfg: &RulesConfig) -> Ruleset {
        for bucket in std::mem::take(&mut self.dirty) {
            let Some(state) = self.buckets.get_mut(&bucket) else {
                continue;
            };
            if state.members.is_empty() {
                self.buckets.remove(&bucket);
                continue;
            }
            let entries: Vec<BucketEntry<'_>> = state
                .members
                .iter()
                .map(|(pk, f)| {
                    let port = &self.ports[pk];
                    BucketEntry {
                        frontend: port.fronts[*f].1,
                        service_port: &port.info,
                        ready: &port.ready,
                        local: &port.local,
                    }
                })
                .collect();
            let mut hasher = DefaultHasher::new();
            (cfg, &state.chain, &entries).hash(&mut hasher);
            let hash = hasher.finish();
            if state.rendered.as_ref().is_none_or(|(old, _)| *old != hash) {
                let rules = Arc::new(render_bucket(cfg, &state.chain, &entries));
                state.rendered = Some((hash, rules));
            }
        }

        let mut ruleset = Ruleset::default();
        fixed_chains(cfg, &mut ruleset);
        for pk in &self.refusing {
            for (chain, spec) in &self.ports[pk].refusals {
                ruleset.add(Table::Filter, chain, spec);
            }
        }
        let mut dst_buckets: Vec<(Ipv4Net, String)> = Vec::new();
        let mut np_buckets: Vec<(Protocol, u16, u16, String)> = Vec::new();
        let mut cluster_nets: Vec<Ipv4Net> = Vec::new();
        for (bucket, state) in &self.buckets {
            match *bucket {
                Bucket::Dst(net) => {
                    if state.cluster_ips > 0 {
                        cluster_nets.push(net);
                    }
                    dst_buckets.push((net, state.chain.clone()));
                }
                Bucket::NodePort(proto, start) => {
                    let (_, start, end) = nodeport_bucket(proto, start, cfg.node_port_bucket);
                    np_buckets.push((proto, start, end, state.chain.clone()));
                }
            }
            let Some((hash, rules)) = &state.rendered else {
                continue;
            };
            ruleset
                .tables
                .entry(Table::Nat)
                .or_default()
                .insert(state.chain.clone(), rules.clone());
            ruleset
                .hashes
                .insert((Table::Nat, state.chain.clone()), *hash);
        }

        dispatch(cfg, &mut ruleset, &dst_buckets);
        nodeports_jumps(cfg, &mut ruleset);
        for (protocol, start, end, chain) in &np_buckets {
            let proto = protocol.lower();
            let c = comment(&format!("nodeports {start}-{end}/{proto}"));
            ruleset.add(
                Table::Nat,
                NODEPORTS,
                format!("{c} -p {proto} -m {proto} --dport {start}:{end} -j {chain}"),
            );
        }
        // The map keeps the addresses sorted, the order the hairpin rules are written in.
        postrouting(
            cfg,
            &mut ruleset,
            self.hairpin.keys().copied(),
            &cluster_nets,
        );
        forward_accept(cfg, &mut ruleset, &cluster_nets);
        ruleset
    }
}

/// The chain of a bucket.
fn bucket_chain(cfg: &RulesConfig, bucket: Bucket) -> String {
    match bucket {
        Bucket::Dst(net) => svc_bucket(net.addr(), net.prefix_len()).0,
        Bucket::NodePort(proto, start) => nodeport_bucket(proto, start, cfg.node_port_bucket).0,
    }
}

/// One Service port's endpoints, refusals and frontends.
fn port_state(
    cfg: &RulesConfig,
    info: &ServicePortInfo,
    endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
) -> PortState {
    let all = endpoints.get(&info.name).map(Vec::as_slice).unwrap_or(&[]);
    let ready: Vec<Endpoint> = all.iter().filter(|e| e.ready).copied().collect();
    let local: Vec<Endpoint> = all
        .iter()
        .filter(|e| e.local && (e.ready || e.local_fallback))
        .copied()
        .collect();
    let proto = info.protocol.lower();
    let mut refusals = Vec::new();

    // internalTrafficPolicy: Local with endpoints on other nodes only: ClusterIP traffic is
    // dropped (upstream's "has no local endpoints" DROP in the filter table's KUBE-SERVICES),
    // while external traffic follows externalTrafficPolicy.
    let internal_refused = info.internal_local && local.is_empty() && !ready.is_empty();
    if internal_refused {
        let c = comment(&format!("{} has no local endpoints", info.name));
        refusals.push((
            SERVICES,
            format!(
                "{c} -d {}/32 -p {proto} -m {proto} --dport {} -j DROP",
                info.cluster_ip, info.port
            ),
        ));
    }
    // Services without (local) endpoints are refused in the filter table.
    if ready.is_empty() || (info.external_local && local.is_empty()) {
        let mut refuse = |matcher: String, external: bool| {
            let (chain, what, target) = match (ready.is_empty(), external) {
                (true, false) => (SERVICES, "has no endpoints", "REJECT"),
                (true, true) => (EXTERNAL, "has no endpoints", "REJECT"),
                _ => (EXTERNAL, "has no local endpoints", "DROP"),
            };
            let c = comment(&format!("{} {what}", info.name));
            refusals.push((chain, format!("{c} {matcher} -j {target}")));
        };
        if ready.is_empty() {
            refuse(
                format!(
                    "-d {}/32 -p {proto} -m {proto} --dport {}",
                    info.cluster_ip, info.port
                ),
                false,
            );
        }
        for ip in &info.external_ips {
            refuse(
                format!("-d {ip}/32 -p {proto} -m {proto} --dport {}", info.port),
                true,
            );
        }
        if let Some(np) = info.node_port {
            refuse(
                format!("-m addrtype --dst-type LOCAL -p {proto} -m {proto} --dport {np}"),
                true,
            );
        }
    }
    let mut fronts = Vec::new();
    if !ready.is_empty() {
        if !internal_refused {
            fronts.push((
                Bucket::Dst(masked_net(info.cluster_ip, cfg.bucket_prefix)),
                Frontend::ClusterIp,
            ));
        }
        for ip in &info.external_ips {
            fronts.push((
                Bucket::Dst(masked_net(*ip, cfg.bucket_prefix)),
                Frontend::ExternalIp(*ip),
            ));
        }
        if let Some(np) = info.node_port {
            let (_, start, _) = nodeport_bucket(info.protocol, np, cfg.node_port_bucket);
            fronts.push((
                Bucket::NodePort(info.protocol, start),
                Frontend::NodePort(np),
            ));
        }
    }
    PortState {
        info: info.clone(),
        ready,
        local,
        refusals,
        fronts,
    }
}

/// More destination buckets than this get a second level of dispatch.
const DIRECT_BUCKETS: usize = 16;

/// The jumps from `KUBE-SERVICES` to the destination buckets. With many buckets, they are
/// grouped 16 to a `KUBE-SVCR-<net>` chain (prefix 4 bits shorter), so that the first packet
/// passes at most (groups + 16) jump rules instead of one per bucket.
fn dispatch(cfg: &RulesConfig, ruleset: &mut Ruleset, buckets: &[(Ipv4Net, String)]) {
    if buckets.len() <= DIRECT_BUCKETS || cfg.bucket_prefix < 4 {
        for (net, chain) in buckets {
            let c = comment(&format!("services in {net}"));
            ruleset.add(Table::Nat, SERVICES, format!("{c} -d {net} -j {chain}"));
        }
        return;
    }
    let mut groups: BTreeMap<Ipv4Net, Vec<&(Ipv4Net, String)>> = BTreeMap::new();
    for bucket in buckets {
        groups
            .entry(masked_net(bucket.0.addr(), cfg.bucket_prefix - 4))
            .or_default()
            .push(bucket);
    }
    for (group, members) in groups {
        let c = comment(&format!("services in {group}"));
        if let [(net, chain)] = members.as_slice() {
            ruleset.add(Table::Nat, SERVICES, format!("{c} -d {net} -j {chain}"));
            continue;
        }
        let gchain = format!("{}{}", super::names::SVC_RANGE_PREFIX, group.addr());
        ruleset.add(Table::Nat, SERVICES, format!("{c} -d {group} -j {gchain}"));
        for (net, chain) in members {
            ruleset.add(Table::Nat, &gchain, format!("-d {net} -j {chain}"));
        }
    }
}

/// The rules of one bucket chain: each frontend's DNAT rules, in Service order.
fn render_bucket(cfg: &RulesConfig, chain: &str, entries: &[BucketEntry<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in entries {
        let proto = entry.service_port.protocol.lower();
        match entry.frontend {
            Frontend::ClusterIp => {
                let matcher = format!(
                    "-d {}/32 -p {proto} -m {proto} --dport {}",
                    entry.service_port.cluster_ip, entry.service_port.port
                );
                let internal = if entry.service_port.internal_local {
                    entry.local
                } else {
                    entry.ready
                };
                ladder(&mut out, chain, &matcher, entry.service_port, internal);
            }
            Frontend::ExternalIp(ip) => {
                let matcher = format!(
                    "-d {ip}/32 -p {proto} -m {proto} --dport {}",
                    entry.service_port.port
                );
                external(cfg, &mut out, chain, &matcher, entry);
            }
            Frontend::NodePort(np) => external(
                cfg,
                &mut out,
                chain,
                &format!("-p {proto} -m {proto} --dport {np}"),
                entry,
            ),
        }
    }
    out
}

/// DNAT rules of an external frontend (external IP or NodePort) with ready endpoints.
fn external(
    cfg: &RulesConfig,
    out: &mut Vec<String>,
    chain: &str,
    matcher: &str,
    entry: &BucketEntry<'_>,
) {
    let name = entry.service_port.name.to_string();
    if !entry.service_port.external_local {
        let c = comment(&format!(
            "masquerade traffic for {name} external destinations"
        ));
        out.push(format!("-A {chain} {c} {matcher} -j {MARK_MASQ}"));
        ladder(out, chain, matcher, entry.service_port, entry.ready);
        return;
    }
    // externalTrafficPolicy: Local. Pods and the node itself still reach every endpoint.
    if let Some(cidr) = cfg.cluster_cidr {
        ladder(
            out,
            chain,
            &format!("{matcher} -s {cidr}"),
            entry.service_port,
            entry.ready,
        );
    }
    let c = comment(&format!(
        "masquerade LOCAL traffic for {name} external destinations"
    ));
    let from_local = format!("{matcher} -m addrtype --src-type LOCAL");
    out.push(format!("-A {chain} {c} {from_local} -j {MARK_MASQ}"));
    ladder(out, chain, &from_local, entry.service_port, entry.ready);
    if !entry.local.is_empty() {
        ladder(out, chain, matcher, entry.service_port, entry.local);
    }
}

/// The DNAT rules of one frontend: affinity checks first (ClientIP), then the random ladder
/// (`1/(N-i)`, the last rule unconditional), each rule DNATing straight to its endpoint.
fn ladder(
    out: &mut Vec<String>,
    chain: &str,
    matcher: &str,
    service_port: &ServicePortInfo,
    eps: &[Endpoint],
) {
    let name = service_port.name.to_string();
    if let Some(timeout) = service_port.affinity_timeout {
        for ep in eps {
            let list = sep_name(&service_port.name, service_port.protocol, ep);
            out.push(format!(
                "-A {chain} {} {matcher} -m recent --name {list} --update --seconds {timeout} --reap -j DNAT --to-destination {}",
                comment(&format!("{name} -> {}", ep.addr())),
                ep.addr()
            ));
        }
    }
    let count = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let prob = if i + 1 < count {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (count - i) as f64
            )
        } else {
            String::new()
        };
        let set = if service_port.affinity_timeout.is_some() {
            format!(
                " -m recent --name {} --set",
                sep_name(&service_port.name, service_port.protocol, ep)
            )
        } else {
            String::new()
        };
        out.push(format!(
            "-A {chain} {} {matcher}{prob}{set} -j DNAT --to-destination {}",
            comment(&format!("{name} -> {}", ep.addr())),
            ep.addr()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_buckets_get_a_second_dispatch_level() {
        let cfg = RulesConfig::default();
        let ports: Vec<ServicePortInfo> = (0..2000u32)
            .map(|i| ServicePortInfo {
                name: ServicePortName {
                    namespace: "ns".into(),
                    name: format!("s{i}"),
                    port: String::new(),
                },
                protocol: Protocol::Tcp,
                cluster_ip: format!("172.30.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
                port: 80,
                node_port: None,
                external_ips: vec![],
                affinity_timeout: None,
                external_local: false,
                internal_local: false,
            })
            .collect();
        let ep = Endpoint {
            ip: "10.244.0.9".parse().unwrap(),
            port: 80,
            ready: true,
            local: false,
            local_fallback: false,
        };
        let eps = ports.iter().map(|p| (p.name.clone(), vec![ep])).collect();
        let rs = generate(&cfg, &ports, &eps);
        let nat = &rs.tables[&Table::Nat];
        // 2000 addresses in 172.30.0-7.x: 32 /26 buckets in 2 /22 groups, plus the NodePort jump.
        assert_eq!(
            nat["KUBE-SERVICES"].len(),
            2 + 1,
            "{:?}",
            nat["KUBE-SERVICES"]
        );
        assert_eq!(nat["KUBE-SVCR-172.30.4.0"].len(), 16);
        assert!(nat["KUBE-SVCR-172.30.0.0"][0]
            .starts_with("-A KUBE-SVCR-172.30.0.0 -d 172.30.0.0/26 -j KUBE-SVCS-172.30.0.0"));
        assert!(Table::Nat.is_bucket("KUBE-SVCR-172.30.0.0"));
    }

    /// internalTrafficPolicy: Local: the ClusterIP reaches this node's endpoint only, and with
    /// none here it is dropped (filter table) while the NodePort still reaches every endpoint.
    #[test]
    fn internal_traffic_policy_local() {
        let cfg = RulesConfig::default();
        let sp = ServicePortInfo {
            name: ServicePortName {
                namespace: "ns".into(),
                name: "web".into(),
                port: String::new(),
            },
            protocol: Protocol::Tcp,
            cluster_ip: "172.30.0.5".parse().unwrap(),
            port: 80,
            node_port: Some(30080),
            external_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: true,
        };
        let ep = |ip: &str, local: bool| Endpoint {
            ip: ip.parse().unwrap(),
            port: 8080,
            ready: true,
            local,
            local_fallback: false,
        };
        let all = |rs: &Ruleset, t: Table| -> Vec<String> {
            rs.tables
                .get(&t)
                .into_iter()
                .flat_map(|chains| chains.values().flat_map(|r| r.iter().cloned()))
                .collect()
        };
        let dnat_to = |rules: &[String], front: &str, ip: &str| {
            rules
                .iter()
                .any(|r| r.contains(front) && r.contains(&format!("--to-destination {ip}:8080")))
        };
        let front = "-d 172.30.0.5/32 -p tcp -m tcp --dport 80 ";
        let eps = BTreeMap::from([(
            sp.name.clone(),
            vec![ep("10.244.1.5", true), ep("10.244.2.5", false)],
        )]);
        let rs = generate(&cfg, std::slice::from_ref(&sp), &eps);
        let nat = all(&rs, Table::Nat);
        assert!(dnat_to(&nat, front, "10.244.1.5"), "{nat:#?}");
        assert!(!dnat_to(&nat, front, "10.244.2.5"), "{nat:#?}");
        assert!(dnat_to(&nat, "--dport 30080", "10.244.2.5"), "{nat:#?}");
        assert!(!all(&rs, Table::Filter)
            .iter()
            .any(|r| r.contains("has no local endpoints")));

        let eps = BTreeMap::from([(sp.name.clone(), vec![ep("10.244.2.5", false)])]);
        let rs = generate(&cfg, std::slice::from_ref(&sp), &eps);
        let nat = all(&rs, Table::Nat);
        assert!(!nat.iter().any(|r| r.contains(front)), "{nat:#?}");
        assert!(dnat_to(&nat, "--dport 30080", "10.244.2.5"), "{nat:#?}");
        let filter = all(&rs, Table::Filter);
        assert!(
            filter.iter().any(|r| r.starts_with("-A KUBE-SERVICES")
                && r.contains("ns/web has no local endpoints")
                && r.contains(front)
                && r.ends_with("-j DROP")),
            "{filter:#?}"
        );
    }

    /// Checks `text` the way iptables-restore tokenizes it: only table, chain, rule and COMMIT
    /// lines, no rule into a chain kubenode does not own, balanced quotes, and every comment
    /// short enough for the comment match (255 bytes) and free of quotes and backslashes.
    fn assert_restore_safe(text: &str) {
        for line in text.lines() {
            assert!(
                line.starts_with('*')
                    || line.starts_with(':')
                    || line.starts_with("-A KUBE-")
                    || line == "COMMIT",
                "unexpected restore line {line:?}"
            );
            assert_eq!(
                line.matches('"').count() % 2,
                0,
                "unbalanced quotes: {line:?}"
            );
            assert!(!line.contains('\\'), "backslash in {line:?}");
            let mut rest = line;
            while let Some(i) = rest.find("--comment \"") {
                let body = &rest[i + 11..];
                let end = body.find('"').expect("closing quote");
                assert!(end <= 255, "comment of {end} bytes: {line:?}");
                assert!(
                    body[..end].bytes().all(|b| (b' '..=b'~').contains(&b)),
                    "{line:?}"
                );
                rest = &body[end + 1..];
            }
        }
    }

    #[test]
    fn hostile_names_give_parseable_restore_input() {
        let cfg = RulesConfig::default();
        let hostile = [
            ("bad\"ns", "web"),
            ("a\n-A INPUT -j ACCEPT\n#", "web"),
            ("ns", "x\\\" -j ACCEPT \\"),
            (&*"n".repeat(200), &*"s".repeat(200)),
            ("caf\u{e9}\r\t", "\u{0}"),
        ];
        let mut ports = Vec::new();
        let mut eps = BTreeMap::new();
        for (i, (ns, name)) in hostile.iter().enumerate() {
            let sp = ServicePortInfo {
                name: ServicePortName {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    port: format!("p\"{i}"),
                },
                protocol: Protocol::Tcp,
                cluster_ip: format!("10.96.0.{}", i + 1).parse().unwrap(),
                port: 80,
                node_port: Some(30000 + i as u16),
                external_ips: vec![format!("192.0.2.{}", i + 1).parse().unwrap()],
                affinity_timeout: (i % 2 == 0).then_some(60),
                external_local: i % 2 == 1,
                internal_local: i % 5 == 2,
            };
            // Every other Service has no endpoints: its REJECT rules carry its name too.
            if i % 2 == 0 {
                let ep = Endpoint {
                    ip: format!("10.244.0.{}", i + 1).parse().unwrap(),
                    port: 8080,
                    ready: true,
                    local: true,
                    local_fallback: false,
                };
                eps.insert(sp.name.clone(), vec![ep]);
            }
            ports.push(sp);
        }
        let rs = generate(&cfg, &ports, &eps);
        let text = rs.to_restore_text();
        assert_restore_safe(&text);
        // The names still show, made harmless.
        assert!(
            text.contains("--comment \"bad_ns/web:p_0 -> 10.244.0.1:8080\""),
            "{text}"
        );
    }

    /// A small deterministic generator of pseudo-random numbers (xorshift).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Service `i`'s ports in `version`: the address, ports, NodePorts, external IPs, affinity
    /// and traffic policy all vary with the version, so buckets gain and lose members.
    fn service_version(i: u32, version: u64) -> Vec<ServicePortInfo> {
        let v = version as u32;
        let ports = 1 + (v % 3) as usize;
        (0..ports)
            .map(|p| ServicePortInfo {
                name: ServicePortName {
                    namespace: format!("ns{}", i % 3),
                    name: format!("s{i}"),
                    port: if ports == 1 {
                        String::new()
                    } else {
                        format!("p{p}")
                    },
                },
                protocol: if (v + p as u32).is_multiple_of(4) {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                cluster_ip: Ipv4Addr::new(10, 96, ((i + v) % 4) as u8, (i * 7 + v) as u8),
                port: 80 + p as u16,
                node_port: v
                    .is_multiple_of(2)
                    .then_some(30000 + (i * 3 + v) as u16 % 200),
                external_ips: if v.is_multiple_of(5) {
                    vec![Ipv4Addr::new(192, 0, 2, (i + v) as u8)]
                } else {
                    vec![]
                },
                affinity_timeout: v.is_multiple_of(7).then_some(60),
                external_local: v % 3 == 1,
                internal_local: v % 4 == 2,
            })
            .collect()
    }

    /// Service `i`'s endpoints in `version`: none, not ready, remote or local ones.
    fn endpoints_version(i: u32, version: u64) -> Vec<Endpoint> {
        (0..version % 4)
            .map(|e| Endpoint {
                ip: Ipv4Addr::new(10, 244, (i % 4) as u8, (e * 40 + version) as u8),
                port: 8080,
                ready: !(version + e).is_multiple_of(5),
                local: (i as u64 + e).is_multiple_of(2),
                local_fallback: false,
            })
            .collect()
    }

    #[test]
    fn updating_changed_services_equals_fresh_generation() {
        let cfg = RulesConfig {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            ..RulesConfig::default()
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Service i exists in version versions[i] (None: absent).
        let mut versions: Vec<Option<u64>> = (0..60).map(|i| (i % 4 != 0).then_some(i)).collect();
        let inputs = |versions: &[Option<u64>]| {
            let mut services = HashMap::new();
            let mut eps = BTreeMap::new();
            for (i, v) in versions.iter().enumerate() {
                let Some(v) = *v else { continue };
                let ports = service_version(i as u32, v);
                for p in &ports {
                    eps.insert(p.name.clone(), endpoints_version(i as u32, v));
                }
                services.insert(
                    ServiceKey::new(format!("ns{}", i % 3), format!("s{i}")),
                    ports,
                );
            }
            (services, eps)
        };
        let mut g = Generator::default();
        let (services, eps) = inputs(&versions);
        g.update(&cfg, &services, &eps, None);
        for round in 0..200 {
            let mut changed = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(versions.len() as u64) as usize;
                versions[i] = match rng.below(5) {
                    0 => None,
                    _ => Some(rng.below(1000)),
                };
                changed.push(ServiceKey::new(format!("ns{}", i % 3), format!("s{i}")));
            }
            let (services, eps) = inputs(&versions);
            let all: Vec<ServicePortInfo> = services.values().flatten().cloned().collect();
            assert_eq!(
                g.update(&cfg, &services, &eps, Some(&changed)),
                generate(&cfg, &all, &eps),
                "round {round}"
            );
        }
        // A different configuration rebuilds everything.
        let other = RulesConfig {
            bucket_prefix: 28,
            ..cfg.clone()
        };
        let (services, eps) = inputs(&versions);
        let all: Vec<ServicePortInfo> = services.values().flatten().cloned().collect();
        assert_eq!(
            g.update(&other, &services, &eps, Some(&[])),
            generate(&other, &all, &eps)
        );
    }

    #[test]
    fn memoized_generation_equals_fresh_generation() {
        let cfg = RulesConfig {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            ..RulesConfig::default()
        };
        let mk = |i: u32, ep: &str| {
            let sp = ServicePortInfo {
                name: ServicePortName {
                    namespace: "ns".into(),
                    name: format!("s{i}"),
                    port: "p".into(),
                },
                protocol: Protocol::Tcp,
                cluster_ip: format!("10.96.0.{i}").parse().unwrap(),
                port: 80,
                node_port: Some(30000 + i as u16),
                external_ips: vec![],
                affinity_timeout: i.is_multiple_of(2).then_some(60),
                external_local: i.is_multiple_of(3),
                internal_local: i % 5 == 1,
            };
            let e = Endpoint {
                ip: ep.parse().unwrap(),
                port: 8080,
                ready: true,
                local: i % 2 == 1,
                local_fallback: false,
            };
            (sp, e)
        };
        let mut g = Generator::default();
        for round in 0..4 {
            let svcs: Vec<_> = (1..100)
                .map(|i| mk(i, &format!("10.244.{}.{}", round % 2, i)))
                .take(60 + round * 10)
                .collect();
            let ports: Vec<_> = svcs.iter().map(|s| s.0.clone()).collect();
            let eps = svcs.iter().map(|s| (s.0.name.clone(), vec![s.1])).collect();
            assert_eq!(
                g.generate(&cfg, &ports, &eps),
                generate(&cfg, &ports, &eps),
                "round {round}"
            );
        }
    }
}
