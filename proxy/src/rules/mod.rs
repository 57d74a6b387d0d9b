//! The desired ruleset: a pure function of (Services, endpoints, node configuration).
//!
//! Layout (kube-proxy's top-level chains and semantics, fewer chains): `KUBE-SERVICES` jumps by
//! destination range (one `/26` per bucket by default) to a `KUBE-SVCS-<net>` chain holding, for
//! each service address in that range, its DNAT rules inline (the `-m statistic` ladder, with
//! `-m recent` matches for ClientIP affinity). `KUBE-NODEPORTS` jumps by port range to
//! `KUBE-NP-<PROTO>-<first port>` chains built the same way. `KUBE-POSTROUTING` marks hairpin
//! traffic of this node's endpoints (`-s E -d E` after DNAT, in `KUBE-HP-<net>` chains per /24)
//! and off-cluster traffic that was DNATed from a ClusterIP (`--ctorigdst <service CIDR>`), then
//! masquerades what is marked. A Service change rewrites only its buckets.
//!
//! Differences from kube-proxy, on purpose: the off-cluster masquerade is decided after DNAT in
//! one rule instead of one rule per Service (same traffic; `KUBE-FORWARD` accepts it, as the mark
//! would have), and hairpin marks exist only for endpoints on this node (a pod elsewhere
//! hairpins through its own node's rules).

mod fixed;
mod generate;
pub mod names;

pub use generate::{generate, Generator};

use crate::model::Ipv4Net;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Default masquerade bit: mark `0x4000`.
pub const DEFAULT_MASQUERADE_BIT: u8 = 14;
/// The empty chain whose disappearance means someone flushed our tables.
pub const CANARY_CHAIN: &str = "KUBE-PROXY-CANARY";
/// The mangle chain telling other tools which iptables backend the node uses.
pub const HINT_CHAIN: &str = "KUBE-IPTABLES-HINT";

/// An iptables table kubenode writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `filter`: REJECT/DROP for ports without endpoints, forwarding rules.
    Filter,
    /// `nat`: the service DNAT rules.
    Nat,
    /// `mangle`: the canary and the backend hint only.
    Mangle,
}

impl Table {
    /// Every table, in restore order.
    pub const ALL: [Table; 3] = [Table::Filter, Table::Nat, Table::Mangle];

    /// The iptables name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
            Table::Mangle => "mangle",
        }
    }

    /// Fixed-name chains kubenode owns in this table (besides the bucket chains).
    pub fn owned_chains(self) -> &'static [&'static str] {
        match self {
            Table::Filter => &[
                "KUBE-SERVICES",
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-FORWARD",
                "KUBE-NODEPORTS",
                "KUBE-FIREWALL",
                CANARY_CHAIN,
            ],
            Table::Nat => &[
                "KUBE-SERVICES",
                "KUBE-NODEPORTS",
                "KUBE-MARK-MASQ",
                "KUBE-POSTROUTING",
                CANARY_CHAIN,
            ],
            Table::Mangle => &[CANARY_CHAIN, HINT_CHAIN],
        }
    }

    /// Whether `chain` is one kubenode owns in this table (what `--cleanup` removes).
    pub fn owns(self, chain: &str) -> bool {
        self.owned_chains().contains(&chain) || self.is_bucket(chain)
    }

    /// Whether `chain` is one of kubenode's per-bucket chains, the only chains a full sync deletes
    /// when they are not wanted (fixed names such as `KUBE-FIREWALL` may be shared with a kubelet).
    pub fn is_bucket(self, chain: &str) -> bool {
        self == Table::Nat && names::BUCKET_PREFIXES.iter().any(|p| chain.starts_with(p))
    }
}

/// Node-level settings the rules depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RulesConfig {
    /// The range ClusterIPs come from (one masquerade rule covers it; without it, one per bucket).
    pub service_cidr: Option<Ipv4Net>,
    /// Pod network of the cluster; traffic to a ClusterIP from outside it is masqueraded.
    /// `None` disables that (as kube-proxy without a local-traffic detector).
    pub cluster_cidr: Option<Ipv4Net>,
    /// Masquerade all traffic to ClusterIPs (`masqueradeAll`).
    pub masquerade_all: bool,
    /// Networks whose local addresses accept NodePorts; empty means every local address.
    pub node_port_addresses: Vec<Ipv4Net>,
    /// Accept NodePorts on 127.0.0.1 (needs `route_localnet=1`; adds the CVE-2020-8558 guard).
    pub localhost_node_ports: bool,
    /// Bit of the packet mark that requests masquerade (`masqueradeBit`, default 14).
    pub masquerade_bit: u8,
    /// Prefix length of the destination buckets (default 26: one chain per 64 addresses).
    pub bucket_prefix: u8,
    /// NodePorts per NodePort bucket chain (default 32).
    pub node_port_bucket: u16,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            service_cidr: None,
            cluster_cidr: None,
            masquerade_all: false,
            node_port_addresses: Vec::new(),
            localhost_node_ports: false,
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            bucket_prefix: 26,
            node_port_bucket: 32,
        }
    }
}

impl RulesConfig {
    /// The masquerade mark, `1 << masquerade_bit` in hex (`0x4000`).
    pub fn mark(&self) -> String {
        format!("{:#x}", 1u32 << self.masquerade_bit.min(31))
    }

    /// Whether NodePorts answer on 127.0.0.1 with this configuration.
    pub fn localhost_enabled(&self) -> bool {
        self.localhost_node_ports
            && (self.node_port_addresses.is_empty()
                || self
                    .node_port_addresses
                    .iter()
                    .any(|c| c.contains(&std::net::Ipv4Addr::LOCALHOST)))
    }
}

/// A rule in a built-in chain that leads into kubenode's chains (inserted at the top, once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jump {
    /// Table of the built-in chain.
    pub table: Table,
    /// The built-in chain (`PREROUTING`, `INPUT`, ...).
    pub chain: &'static str,
    /// The rule after `-A CHAIN`, ending with `-j TARGET`.
    pub spec: String,
    /// The chain jumped to.
    pub target: &'static str,
}

/// The complete desired state: every owned chain with its rules, and the jumps into them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Table → chain → rule lines (each a full `-A CHAIN ...` line), shared with the generator's
    /// memo.
    pub tables: BTreeMap<Table, BTreeMap<String, Arc<Vec<String>>>>,
    /// Jumps from built-in chains, in the order they must appear (top first).
    pub jumps: Vec<Jump>,
    /// Identity of chains whose rules are a function of a known input (the bucket chains): equal
    /// hashes mean equal rules. Other chains are compared by their text.
    pub hashes: BTreeMap<(Table, String), u64>,
}

impl Ruleset {
    /// Declares `chain` (empty if new) in `table`.
    pub(crate) fn chain(&mut self, table: Table, chain: &str) -> &mut Vec<String> {
        Arc::make_mut(
            self.tables
                .entry(table)
                .or_default()
                .entry(chain.to_string())
                .or_default(),
        )
    }

    /// Appends `-A chain <spec>` to `table`.
    pub(crate) fn add(&mut self, table: Table, chain: &str, spec: impl AsRef<str>) {
        let line = format!("-A {chain} {}", spec.as_ref());
        self.chain(table, chain).push(line);
    }

    /// Number of rules per table (for metrics).
    pub fn rule_counts(&self) -> BTreeMap<Table, usize> {
        self.tables
            .iter()
            .map(|(t, c)| (*t, c.values().map(|r| r.len()).sum()))
            .collect()
    }

    /// Number of chains per table.
    pub fn chain_counts(&self) -> BTreeMap<Table, usize> {
        self.tables.iter().map(|(t, c)| (*t, c.len())).collect()
    }

    /// The whole ruleset as one `iptables-restore --noflush` input (every chain written; no jumps).
    pub fn to_restore_text(&self) -> String {
        let mut out = String::new();
        for (table, chains) in &self.tables {
            out.push_str(&format!("*{}\n", table.name()));
            for c in chains.keys() {
                out.push_str(&format!(":{c} - [0:0]\n"));
            }
            for rules in chains.values() {
                for r in rules.iter() {
                    out.push_str(r);
                    out.push('\n');
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}
