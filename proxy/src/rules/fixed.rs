//! The chains every ruleset has, whatever the Services: the jumps from built-in chains,
//! `KUBE-MARK-MASQ`, `KUBE-POSTROUTING` (hairpin and masquerade), `KUBE-FORWARD`, the canary and
//! hint chains, the CVE-2020-8558 guard, and the NodePort jump at the end of `KUBE-SERVICES`.

use super::names::hairpin_bucket;
use super::{Jump, RulesConfig, Ruleset, Table, CANARY_CHAIN, HINT_CHAIN};
use crate::model::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub(super) const SERVICES: &str = "KUBE-SERVICES";
pub(super) const EXTERNAL: &str = "KUBE-EXTERNAL-SERVICES";
pub(super) const NODEPORTS: &str = "KUBE-NODEPORTS";
pub(super) const MARK_MASQ: &str = "KUBE-MARK-MASQ";
const POSTROUTING: &str = "KUBE-POSTROUTING";
const FORWARD: &str = "KUBE-FORWARD";
const FIREWALL: &str = "KUBE-FIREWALL";

/// Longest comment the iptables comment match takes (`XT_MAX_COMMENT_LEN` is 256 with the NUL).
pub(super) const MAX_COMMENT: usize = 255;

/// `-m comment --comment "<text>"`, safe for iptables-restore whatever `text` holds. Comments
/// carry Service names; kube-proxy relies on the API server's name rules alone, but one bad
/// name must never break every later restore or inject a rule: anything but printable ASCII,
/// and the `"` and `\` that iptables-restore's tokenizer interprets, become `_`, and the text is
/// cut to what the comment match accepts.
pub(super) fn comment(text: &str) -> String {
    let mut safe: String = text
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            ' '..='~' => c,
            _ => '_',
        })
        .collect();
    safe.truncate(MAX_COMMENT); // ASCII only now: any byte is a char boundary
    format!("-m comment --comment \"{safe}\"")
}

pub(super) fn nodeports_jumps(cfg: &RulesConfig, rs: &mut Ruleset) {
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
        let no_lo = if cidr.contains(&Ipv4Addr::LOCALHOST) {
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

pub(super) fn postrouting(
    cfg: &RulesConfig,
    rs: &mut Ruleset,
    hairpin: impl IntoIterator<Item = Ipv4Addr>,
    cluster_nets: &[Ipv4Net],
) {
    let mut nets: BTreeMap<Ipv4Net, String> = BTreeMap::new();
    for ip in hairpin {
        let (chain, net) = hairpin_bucket(ip);
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
    // Off-cluster traffic to a ClusterIP (or all of it, with masqueradeAll): decided here, after
    // DNAT, so that only traffic that really reached a Service is marked (kube-proxy marks it in
    // each KUBE-SVC chain: one rule per Service where this is one per service range). The same
    // traffic is accepted in KUBE-FORWARD, as kube-proxy's mark would have it.
    for m in masquerade_matches(cfg, cluster_nets) {
        let c = comment("masquerade off-cluster traffic to cluster IPs");
        rs.add(Table::Nat, POSTROUTING, format!("{c} {m} -j {MARK_MASQ}"));
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

/// Matches for traffic to a ClusterIP, after DNAT, that is to be masqueraded (empty: none).
pub(super) fn masquerade_matches(cfg: &RulesConfig, cluster_nets: &[Ipv4Net]) -> Vec<String> {
    let src = match (cfg.masquerade_all, cfg.cluster_cidr) {
        (true, _) => String::new(),
        (false, Some(cidr)) => format!(" ! -s {cidr}"),
        (false, None) => return Vec::new(),
    };
    let nets: Vec<Ipv4Net> = match cfg.service_cidr {
        Some(c) => vec![c],
        None => cluster_nets.to_vec(),
    };
    nets.iter()
        .map(|n| format!("-m conntrack --ctstate DNAT --ctorigdst {n}{src}"))
        .collect()
}

pub(super) fn forward_accept(cfg: &RulesConfig, rs: &mut Ruleset, cluster_nets: &[Ipv4Net]) {
    for m in masquerade_matches(cfg, cluster_nets) {
        let c = comment("kubernetes forwarding rules");
        rs.add(Table::Filter, FORWARD, format!("{c} {m} -j ACCEPT"));
    }
}

pub(super) fn fixed_chains(cfg: &RulesConfig, rs: &mut Ruleset) {
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
