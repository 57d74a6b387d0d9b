//! Builds the [`Ruleset`] from Services and endpoints. Pure: no I/O, deterministic output.

use super::names::{hairpin_bucket, nodeport_bucket, sep_name, svc_bucket};
use super::{Jump, RulesConfig, Ruleset, Table, CANARY_CHAIN, HINT_CHAIN};
use crate::model::{Endpoint, Ipv4Cidr, ServicePortInfo, ServicePortName};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

const SERVICES: &str = "KUBE-SERVICES";
const EXTERNAL: &str = "KUBE-EXTERNAL-SERVICES";
const NODEPORTS: &str = "KUBE-NODEPORTS";
const MARK_MASQ: &str = "KUBE-MARK-MASQ";
const POSTROUTING: &str = "KUBE-POSTROUTING";
const FORWARD: &str = "KUBE-FORWARD";
const FIREWALL: &str = "KUBE-FIREWALL";

fn comment(text: &str) -> String {
    format!("-m comment --comment \"{text}\"")
}

/// Computes the complete desired ruleset. `endpoints` maps each Service port to all its
/// endpoints (ready or not); Service ports missing from it have no endpoints.
pub fn generate(
    cfg: &RulesConfig,
    services: &[ServicePortInfo],
    endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
) -> Ruleset {
    let mut rs = Ruleset::default();
    fixed_chains(cfg, &mut rs);

    let mut sorted: Vec<&ServicePortInfo> = services.iter().collect();
    sorted.sort_by(|a, b| (&a.name, a.protocol).cmp(&(&b.name, b.protocol)));

    let mut dst_buckets: BTreeMap<Ipv4Cidr, String> = BTreeMap::new();
    let mut np_buckets: BTreeMap<(crate::model::Protocol, u16), (String, u16)> = BTreeMap::new();
    let mut hairpin: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let none = Vec::new();
    for sp in sorted {
        let all = endpoints.get(&sp.name).unwrap_or(&none);
        let ready: Vec<&Endpoint> = all.iter().filter(|e| e.ready).collect();
        let local: Vec<&Endpoint> = ready.iter().copied().filter(|e| e.local).collect();
        hairpin.extend(ready.iter().map(|e| e.ip));
        let name = sp.name.to_string();
        let p = sp.protocol.lower();

        // ClusterIP.
        let m = format!("-d {}/32 -p {p} -m {p} --dport {}", sp.cluster_ip, sp.port);
        if ready.is_empty() {
            rs.add(
                Table::Filter,
                SERVICES,
                format!(
                    "{} {m} -j REJECT",
                    comment(&format!("{name} has no endpoints"))
                ),
            );
        } else {
            let (chain, net) = svc_bucket(sp.cluster_ip, cfg.bucket_prefix);
            dst_buckets.insert(net, chain.clone());
            let c = comment(&format!("{name} cluster IP"));
            if cfg.masquerade_all {
                rs.add(Table::Nat, &chain, format!("{c} {m} -j {MARK_MASQ}"));
            } else if let Some(cidr) = cfg.cluster_cidr {
                rs.add(
                    Table::Nat,
                    &chain,
                    format!("{c} {m} ! -s {cidr} -j {MARK_MASQ}"),
                );
            }
            ladder(&mut rs, &chain, &m, sp, &ready);
        }

        // External IPs.
        for ip in &sp.external_ips {
            let m = format!("-d {ip}/32 -p {p} -m {p} --dport {}", sp.port);
            let (chain, net) = svc_bucket(*ip, cfg.bucket_prefix);
            if external(cfg, &mut rs, &chain, &m, &m, sp, &ready, &local) {
                dst_buckets.insert(net, chain);
            }
        }

        // NodePort.
        if let Some(np) = sp.node_port {
            let m = format!("-p {p} -m {p} --dport {np}");
            let filter_m = format!("-m addrtype --dst-type LOCAL {m}");
            let (chain, start, end) = nodeport_bucket(sp.protocol, np, cfg.node_port_bucket);
            if external(cfg, &mut rs, &chain, &m, &filter_m, sp, &ready, &local) {
                np_buckets.insert((sp.protocol, start), (chain, end));
            }
        }
    }

    for (net, chain) in &dst_buckets {
        rs.add(
            Table::Nat,
            SERVICES,
            format!(
                "{} -d {net} -j {chain}",
                comment(&format!("services in {net}"))
            ),
        );
    }
    nodeports_jumps(cfg, &mut rs);
    for ((proto, start), (chain, end)) in &np_buckets {
        let p = proto.lower();
        rs.add(
            Table::Nat,
            NODEPORTS,
            format!(
                "{} -p {p} -m {p} --dport {start}:{end} -j {chain}",
                comment(&format!("nodeports {start}-{end}/{p}"))
            ),
        );
    }
    postrouting(cfg, &mut rs, &hairpin);
    rs
}

/// Rules of an external frontend (external IP or NodePort) in `chain`; the filter rule uses
/// `filter_m` as its match. Returns whether `chain` received rules.
#[allow(clippy::too_many_arguments)] // one call per frontend kind; a struct would only rename them
fn external(
    cfg: &RulesConfig,
    rs: &mut Ruleset,
    chain: &str,
    m: &str,
    filter_m: &str,
    sp: &ServicePortInfo,
    ready: &[&Endpoint],
    local: &[&Endpoint],
) -> bool {
    let name = sp.name.to_string();
    if ready.is_empty() {
        let c = comment(&format!("{name} has no endpoints"));
        rs.add(Table::Filter, EXTERNAL, format!("{c} {filter_m} -j REJECT"));
        return false;
    }
    if !sp.external_local {
        let c = comment(&format!(
            "masquerade traffic for {name} external destinations"
        ));
        rs.add(Table::Nat, chain, format!("{c} {m} -j {MARK_MASQ}"));
        ladder(rs, chain, m, sp, ready);
        return true;
    }
    // externalTrafficPolicy: Local. Pods and the node itself still reach every endpoint.
    if let Some(cidr) = cfg.cluster_cidr {
        ladder(rs, chain, &format!("{m} -s {cidr}"), sp, ready);
    }
    let c = comment(&format!(
        "masquerade LOCAL traffic for {name} external destinations"
    ));
    let from_local = format!("{m} -m addrtype --src-type LOCAL");
    rs.add(
        Table::Nat,
        chain,
        format!("{c} {from_local} -j {MARK_MASQ}"),
    );
    ladder(rs, chain, &from_local, sp, ready);
    if local.is_empty() {
        let c = comment(&format!("{name} has no local endpoints"));
        rs.add(Table::Filter, EXTERNAL, format!("{c} {filter_m} -j DROP"));
    } else {
        ladder(rs, chain, m, sp, local);
    }
    true
}

/// The DNAT rules of one frontend: affinity checks first (ClientIP), then the random ladder
/// (`1/(N-i)`, the last rule unconditional), each rule DNATing straight to its endpoint.
fn ladder(rs: &mut Ruleset, chain: &str, m: &str, sp: &ServicePortInfo, eps: &[&Endpoint]) {
    let name = sp.name.to_string();
    if let Some(timeout) = sp.affinity_timeout {
        for ep in eps {
            let list = sep_name(&sp.name, sp.protocol, ep);
            rs.add(
                Table::Nat,
                chain,
                format!(
                    "{} {m} -m recent --name {list} --update --seconds {timeout} --reap -j DNAT --to-destination {}",
                    comment(&format!("{name} -> {}", ep.addr())),
                    ep.addr()
                ),
            );
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let prob = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        let set = if sp.affinity_timeout.is_some() {
            format!(
                " -m recent --name {} --set",
                sep_name(&sp.name, sp.protocol, ep)
            )
        } else {
            String::new()
        };
        rs.add(
            Table::Nat,
            chain,
            format!(
                "{} {m}{prob}{set} -j DNAT --to-destination {}",
                comment(&format!("{name} -> {}", ep.addr())),
                ep.addr()
            ),
        );
    }
}

fn nodeports_jumps(cfg: &RulesConfig, rs: &mut Ruleset) {
    let c = comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain");
    let localhost = cfg.localhost_enabled();
    let no_lo = if localhost { "" } else { " ! -d 127.0.0.0/8" };
    if cfg.node_port_addresses.is_empty() {
        rs.add(
            Table::Nat,
            SERVICES,
            format!("{c}{no_lo} -m addrtype --dst-type LOCAL -j {NODEPORTS}"),
        );
        return;
    }
    for cidr in &cfg.node_port_addresses {
        let no_lo = if cidr.contains(Ipv4Addr::LOCALHOST) {
            no_lo
        } else {
            ""
        };
        rs.add(
            Table::Nat,
            SERVICES,
            format!("{c} -d {cidr}{no_lo} -m addrtype --dst-type LOCAL -j {NODEPORTS}"),
        );
    }
}

fn postrouting(cfg: &RulesConfig, rs: &mut Ruleset, hairpin: &BTreeSet<Ipv4Addr>) {
    let mut nets: BTreeMap<Ipv4Cidr, String> = BTreeMap::new();
    for ip in hairpin {
        let (chain, net) = hairpin_bucket(*ip);
        rs.add(
            Table::Nat,
            &chain,
            format!("-s {ip}/32 -d {ip}/32 -j {MARK_MASQ}"),
        );
        nets.insert(net, chain);
    }
    for (net, chain) in &nets {
        rs.add(
            Table::Nat,
            POSTROUTING,
            format!(
                "{} -s {net} -d {net} -m conntrack --ctstate DNAT -j {chain}",
                comment(&format!("hairpin traffic in {net}"))
            ),
        );
    }
    let mark = cfg.mark();
    rs.add(
        Table::Nat,
        POSTROUTING,
        format!("-m mark ! --mark {mark}/{mark} -j RETURN"),
    );
    rs.add(
        Table::Nat,
        POSTROUTING,
        format!("-j MARK --xor-mark {mark}"),
    );
    rs.add(
        Table::Nat,
        POSTROUTING,
        format!(
            "{} -j MASQUERADE --random-fully",
            comment("kubernetes service traffic requiring SNAT")
        ),
    );
}

fn fixed_chains(cfg: &RulesConfig, rs: &mut Ruleset) {
    let mark = cfg.mark();
    for t in Table::ALL {
        rs.chain(t, CANARY_CHAIN);
    }
    rs.chain(Table::Mangle, HINT_CHAIN);
    for c in [SERVICES, EXTERNAL, NODEPORTS] {
        rs.chain(Table::Filter, c);
    }
    rs.add(
        Table::Filter,
        FORWARD,
        "-m conntrack --ctstate INVALID -j DROP",
    );
    rs.add(
        Table::Filter,
        FORWARD,
        format!(
            "{} -m mark --mark {mark}/{mark} -j ACCEPT",
            comment("kubernetes forwarding rules")
        ),
    );
    rs.add(
        Table::Filter,
        FORWARD,
        format!(
            "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            comment("kubernetes forwarding conntrack rule")
        ),
    );
    for c in [SERVICES, NODEPORTS] {
        rs.chain(Table::Nat, c);
    }
    rs.add(Table::Nat, MARK_MASQ, format!("-j MARK --or-mark {mark}"));

    let new = "-m conntrack --ctstate NEW ";
    let portals = comment("kubernetes service portals");
    let ext = comment("kubernetes externally-visible service portals");
    let mut j = |table, chain, spec: String, target| {
        rs.jumps.push(Jump {
            table,
            chain,
            spec,
            target,
        })
    };
    let localhost = cfg.localhost_enabled();
    if localhost {
        j(Table::Filter, "INPUT", format!("-j {FIREWALL}"), FIREWALL);
    }
    j(
        Table::Filter,
        "INPUT",
        format!(
            "{} -j {NODEPORTS}",
            comment("kubernetes health check service ports")
        ),
        NODEPORTS,
    );
    j(
        Table::Filter,
        "INPUT",
        format!("{new}{ext} -j {EXTERNAL}"),
        EXTERNAL,
    );
    j(
        Table::Filter,
        "FORWARD",
        format!("{} -j {FORWARD}", comment("kubernetes forwarding rules")),
        FORWARD,
    );
    j(
        Table::Filter,
        "FORWARD",
        format!("{new}{portals} -j {SERVICES}"),
        SERVICES,
    );
    j(
        Table::Filter,
        "FORWARD",
        format!("{new}{ext} -j {EXTERNAL}"),
        EXTERNAL,
    );
    if localhost {
        j(Table::Filter, "OUTPUT", format!("-j {FIREWALL}"), FIREWALL);
    }
    j(
        Table::Filter,
        "OUTPUT",
        format!("{new}{portals} -j {SERVICES}"),
        SERVICES,
    );
    j(
        Table::Nat,
        "PREROUTING",
        format!("{portals} -j {SERVICES}"),
        SERVICES,
    );
    j(
        Table::Nat,
        "OUTPUT",
        format!("{portals} -j {SERVICES}"),
        SERVICES,
    );
    j(
        Table::Nat,
        "POSTROUTING",
        format!(
            "{} -j {POSTROUTING}",
            comment("kubernetes postrouting rules")
        ),
        POSTROUTING,
    );
    if localhost {
        rs.add(
            Table::Filter,
            FIREWALL,
            format!(
                "{} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
                comment("block incoming localnet connections")
            ),
        );
    }
}
