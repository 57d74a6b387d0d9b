//! Builds the [`Ruleset`] from Services and endpoints: deterministic, no I/O. A [`Generator`]
//! memoizes each bucket chain by a hash of its inputs, so a sync after a small change renders
//! only the buckets that changed (and the syncer compares those hashes instead of the text).

use super::fixed::{
    comment, fixed_chains, forward_accept, nodeports_jumps, postrouting, EXTERNAL, MARK_MASQ,
    NODEPORTS, SERVICES,
};
use super::names::{nodeport_bucket, sep_name, svc_bucket};
use super::{RulesConfig, Ruleset, Table};
use crate::model::{masked_net, Endpoint, Ipv4Net, Protocol, ServicePortInfo, ServicePortName};
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
    ready: Vec<&'a Endpoint>,
    local: Vec<&'a Endpoint>,
}

/// A generator that remembers rendered bucket chains between calls.
#[derive(Debug, Default)]
pub struct Generator {
    cache: HashMap<String, (u64, Arc<Vec<String>>)>,
}

impl Generator {
    /// Same result as [`generate`]; unchanged bucket chains come from the memo.
    pub fn generate(
        &mut self,
        cfg: &RulesConfig,
        services: &[ServicePortInfo],
        endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
    ) -> Ruleset {
        let mut ruleset = Ruleset::default();
        fixed_chains(cfg, &mut ruleset);

        let mut sorted: Vec<&ServicePortInfo> = services.iter().collect();
        sorted.sort_by(|a, b| (&a.name, a.protocol).cmp(&(&b.name, b.protocol)));

        let mut entries_by_bucket: BTreeMap<Bucket, Vec<BucketEntry<'_>>> = BTreeMap::new();
        let mut hairpin: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let none = Vec::new();
        for service_port in sorted {
            let all = endpoints.get(&service_port.name).unwrap_or(&none);
            let ready: Vec<&Endpoint> = all.iter().filter(|e| e.ready).collect();
            let local: Vec<&Endpoint> = ready.iter().copied().filter(|e| e.local).collect();
            // Only a pod on this node can reach itself through this node's rules.
            hairpin.extend(local.iter().map(|e| e.ip));
            let proto = service_port.protocol.lower();

            // Services without (local) endpoints are refused in the filter table.
            if ready.is_empty() || (service_port.external_local && local.is_empty()) {
                let mut filter = |matcher: String, external: bool| {
                    let (chain, what, target) = match (ready.is_empty(), external) {
                        (true, false) => (SERVICES, "has no endpoints", "REJECT"),
                        (true, true) => (EXTERNAL, "has no endpoints", "REJECT"),
                        _ => (EXTERNAL, "has no local endpoints", "DROP"),
                    };
                    let c = comment(&format!("{} {what}", service_port.name));
                    ruleset.add(Table::Filter, chain, format!("{c} {matcher} -j {target}"));
                };
                if ready.is_empty() {
                    filter(
                        format!(
                            "-d {}/32 -p {proto} -m {proto} --dport {}",
                            service_port.cluster_ip, service_port.port
                        ),
                        false,
                    );
                }
                for ip in &service_port.external_ips {
                    filter(
                        format!(
                            "-d {ip}/32 -p {proto} -m {proto} --dport {}",
                            service_port.port
                        ),
                        true,
                    );
                }
                if let Some(np) = service_port.node_port {
                    filter(
                        format!("-m addrtype --dst-type LOCAL -p {proto} -m {proto} --dport {np}"),
                        true,
                    );
                }
                if ready.is_empty() {
                    continue;
                }
            }
            let mut push = |bucket, frontend| {
                entries_by_bucket
                    .entry(bucket)
                    .or_default()
                    .push(BucketEntry {
                        frontend,
                        service_port,
                        ready: ready.clone(),
                        local: local.clone(),
                    });
            };
            push(
                Bucket::Dst(masked_net(service_port.cluster_ip, cfg.bucket_prefix)),
                Frontend::ClusterIp,
            );
            for ip in &service_port.external_ips {
                push(
                    Bucket::Dst(masked_net(*ip, cfg.bucket_prefix)),
                    Frontend::ExternalIp(*ip),
                );
            }
            if let Some(np) = service_port.node_port {
                let (_, start, _) =
                    nodeport_bucket(service_port.protocol, np, cfg.node_port_bucket);
                push(
                    Bucket::NodePort(service_port.protocol, start),
                    Frontend::NodePort(np),
                );
            }
        }

        // Render the bucket chains, reusing the ones whose inputs did not change.
        let mut fresh = HashMap::with_capacity(entries_by_bucket.len());
        let mut dst_buckets: Vec<(Ipv4Net, String)> = Vec::new();
        let mut np_buckets: Vec<(Protocol, u16, u16, String)> = Vec::new();
        let mut cluster_nets: Vec<Ipv4Net> = Vec::new();
        for (bucket, entries) in entries_by_bucket {
            let chain = match bucket {
                Bucket::Dst(net) => {
                    if entries
                        .iter()
                        .any(|e| matches!(e.frontend, Frontend::ClusterIp))
                    {
                        cluster_nets.push(net);
                    }
                    let (chain, _) = svc_bucket(net.addr(), net.prefix_len());
                    dst_buckets.push((net, chain.clone()));
                    chain
                }
                Bucket::NodePort(proto, start) => {
                    let (chain, start, end) = nodeport_bucket(proto, start, cfg.node_port_bucket);
                    np_buckets.push((proto, start, end, chain.clone()));
                    chain
                }
            };
            let mut hasher = DefaultHasher::new();
            (cfg, &chain, &entries).hash(&mut hasher);
            let hash = hasher.finish();
            let rules = match self.cache.remove(&chain) {
                Some((old, rules)) if old == hash => rules,
                _ => Arc::new(render_bucket(cfg, &chain, &entries)),
            };
            ruleset
                .tables
                .entry(Table::Nat)
                .or_default()
                .insert(chain.clone(), rules.clone());
            ruleset.hashes.insert((Table::Nat, chain.clone()), hash);
            fresh.insert(chain, (hash, rules));
        }
        self.cache = fresh;

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
        postrouting(cfg, &mut ruleset, &hairpin, &cluster_nets);
        forward_accept(cfg, &mut ruleset, &cluster_nets);
        ruleset
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
                ladder(&mut out, chain, &matcher, entry.service_port, &entry.ready);
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
        ladder(out, chain, matcher, entry.service_port, &entry.ready);
        return;
    }
    // externalTrafficPolicy: Local. Pods and the node itself still reach every endpoint.
    if let Some(cidr) = cfg.cluster_cidr {
        ladder(
            out,
            chain,
            &format!("{matcher} -s {cidr}"),
            entry.service_port,
            &entry.ready,
        );
    }
    let c = comment(&format!(
        "masquerade LOCAL traffic for {name} external destinations"
    ));
    let from_local = format!("{matcher} -m addrtype --src-type LOCAL");
    out.push(format!("-A {chain} {c} {from_local} -j {MARK_MASQ}"));
    ladder(out, chain, &from_local, entry.service_port, &entry.ready);
    if !entry.local.is_empty() {
        ladder(out, chain, matcher, entry.service_port, &entry.local);
    }
}

/// The DNAT rules of one frontend: affinity checks first (ClientIP), then the random ladder
/// (`1/(N-i)`, the last rule unconditional), each rule DNATing straight to its endpoint.
fn ladder(
    out: &mut Vec<String>,
    chain: &str,
    matcher: &str,
    service_port: &ServicePortInfo,
    eps: &[&Endpoint],
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
            })
            .collect();
        let ep = Endpoint {
            ip: "10.244.0.9".parse().unwrap(),
            port: 80,
            ready: true,
            local: false,
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
            };
            // Every other Service has no endpoints: its REJECT rules carry its name too.
            if i % 2 == 0 {
                let ep = Endpoint {
                    ip: format!("10.244.0.{}", i + 1).parse().unwrap(),
                    port: 8080,
                    ready: true,
                    local: true,
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
                affinity_timeout: (i % 2 == 0).then_some(60),
                external_local: i % 3 == 0,
            };
            let e = Endpoint {
                ip: ep.parse().unwrap(),
                port: 8080,
                ready: true,
                local: i % 2 == 1,
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
