//! An in-memory [`Firewall`] for unit tests: it records every restore input and applies it to a
//! model of the tables with iptables-restore `--noflush` semantics (declaring a chain flushes it,
//! `-X` refuses a referenced or non-empty chain, each `COMMIT` is atomic).

use super::{Firewall, FirewallError, IptablesMode};
use crate::rules::Table;
use kubenode_fsutil::lock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

type Chains = BTreeMap<String, Vec<String>>;

/// Recording, simulating firewall. Built-in chains exist from the start.
#[derive(Debug)]
pub struct MemoryFirewall {
    tables: Mutex<BTreeMap<&'static str, Chains>>,
    restores: Mutex<Vec<String>>,
    fail_next: AtomicUsize,
    saves: AtomicUsize,
    route_localnet: AtomicBool,
    gate: Mutex<Gate>,
    gate_changed: Condvar,
}

/// Holds restores back while `held`, so a test can queue inputs behind a sync in progress.
#[derive(Debug, Default)]
struct Gate {
    held: bool,
    waiting: usize,
}

fn builtins(table: &str) -> &'static [&'static str] {
    match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        _ => &[],
    }
}

fn table_name(s: &str) -> Option<&'static str> {
    Table::ALL.iter().map(|t| t.name()).find(|n| *n == s)
}

fn fail(msg: String) -> FirewallError {
    FirewallError::Failed {
        command: "iptables-restore (memory)".into(),
        status: "exit status: 1".into(),
        stderr: msg,
    }
}

impl Default for MemoryFirewall {
    fn default() -> Self {
        let mut tables = BTreeMap::new();
        for t in Table::ALL {
            let chains: Chains = builtins(t.name())
                .iter()
                .map(|c| (c.to_string(), Vec::new()))
                .collect();
            tables.insert(t.name(), chains);
        }
        MemoryFirewall {
            tables: Mutex::new(tables),
            restores: Mutex::new(Vec::new()),
            fail_next: AtomicUsize::new(0),
            saves: AtomicUsize::new(0),
            route_localnet: AtomicBool::new(false),
            gate: Mutex::new(Gate::default()),
            gate_changed: Condvar::new(),
        }
    }
}

impl MemoryFirewall {
    /// An empty firewall (built-in chains only).
    pub fn new() -> MemoryFirewall {
        MemoryFirewall::default()
    }

    /// From now on every restore waits (before it is recorded) until [`Self::release_restores`].
    pub fn hold_restores(&self) {
        lock(&self.gate, "restore gate").held = true;
    }

    /// Lets held and later restores go on.
    pub fn release_restores(&self) {
        lock(&self.gate, "restore gate").held = false;
        self.gate_changed.notify_all();
    }

    /// How many restores are waiting at the gate now.
    pub fn restores_waiting(&self) -> usize {
        lock(&self.gate, "restore gate").waiting
    }

    /// Every restore input applied or attempted so far.
    pub fn restores(&self) -> Vec<String> {
        lock(&self.restores, "restores").clone()
    }

    /// Number of `save` calls so far.
    pub fn saves(&self) -> usize {
        self.saves.load(Ordering::SeqCst)
    }

    /// Makes the next `n` restores fail without changing anything.
    pub fn fail_next_restores(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Whether `route_localnet` was enabled.
    pub fn route_localnet(&self) -> bool {
        self.route_localnet.load(Ordering::SeqCst)
    }

    /// Rules of `chain` in `table`, if it exists.
    pub fn chain(&self, table: Table, chain: &str) -> Option<Vec<String>> {
        lock(&self.tables, "iptables tables")[table.name()]
            .get(chain)
            .cloned()
    }

    /// Removes every user chain and every rule of `table`, as `iptables -F; iptables -X` would.
    pub fn flush_table(&self, table: Table) {
        let mut t = lock(&self.tables, "iptables tables");
        let chains = t.get_mut(table.name()).expect("known table");
        chains.retain(|c, _| builtins(table.name()).contains(&c.as_str()));
        chains.values_mut().for_each(Vec::clear);
    }

    /// The whole state, `iptables-save` style, for comparisons.
    pub fn dump(&self) -> String {
        Table::ALL
            .iter()
            .map(|t| self.save(*t).unwrap_or_default())
            .collect()
    }

    fn apply(&self, input: &str) -> Result<(), FirewallError> {
        let mut guard = lock(&self.tables, "iptables tables");
        let mut current: Option<(&'static str, Chains)> = None;
        for (i, line) in input.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(t) = line.strip_prefix('*') {
                let name =
                    table_name(t).ok_or_else(|| fail(format!("line {n}: unknown table {t}")))?;
                current = Some((name, guard[name].clone()));
                continue;
            }
            let Some((tname, chains)) = current.as_mut() else {
                return Err(fail(format!("line {n}: no table")));
            };
            if line == "COMMIT" {
                guard.insert(tname, std::mem::take(chains));
                current = None;
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let c = decl
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if !builtins(tname).contains(&c.as_str()) {
                    chains.entry(c).or_default().clear();
                }
                continue;
            }
            let mut parts = line.splitn(3, ' ');
            let (op, chain, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let target_ok = |chains: &Chains, rule: &str| match rule.rsplit_once("-j ") {
                Some((_, t)) => {
                    let t = t.split_whitespace().next().unwrap_or("");
                    !t.starts_with("KUBE-") || chains.contains_key(t)
                }
                None => true,
            };
            match op {
                "-A" | "-I" => {
                    let (pos, rule) = if op == "-I" {
                        match rest.split_once(' ') {
                            Some((num, r)) if num.parse::<usize>().is_ok() => {
                                (num.parse::<usize>().unwrap_or(1), r)
                            }
                            _ => (1, rest),
                        }
                    } else {
                        (usize::MAX, rest)
                    };
                    if !target_ok(chains, rule) {
                        return Err(fail(format!("line {n}: unknown jump target in `{line}`")));
                    }
                    let rules = chains
                        .get_mut(chain)
                        .ok_or_else(|| fail(format!("line {n}: no chain {chain}")))?;
                    let at = pos.saturating_sub(1).min(rules.len());
                    rules.insert(at, rule.to_string());
                }
                "-D" => {
                    let rules = chains
                        .get_mut(chain)
                        .ok_or_else(|| fail(format!("line {n}: no chain {chain}")))?;
                    let at = rules
                        .iter()
                        .position(|r| r == rest)
                        .ok_or_else(|| fail(format!("line {n}: no such rule")))?;
                    rules.remove(at);
                }
                "-F" => chains
                    .get_mut(chain)
                    .ok_or_else(|| fail(format!("line {n}: no chain {chain}")))?
                    .clear(),
                "-X" => {
                    let non_empty = chains
                        .get(chain)
                        .map(|r| !r.is_empty())
                        .ok_or_else(|| fail(format!("line {n}: no chain {chain}")))?;
                    let jump = format!("-j {chain}");
                    let referenced = chains
                        .values()
                        .flatten()
                        .any(|r| r.ends_with(&jump) || r.contains(&format!("{jump} ")));
                    if non_empty || referenced {
                        return Err(fail(format!(
                            "line {n}: chain {chain} is in use (too many links)"
                        )));
                    }
                    chains.remove(chain);
                }
                _ => return Err(fail(format!("line {n}: cannot parse `{line}`"))),
            }
        }
        if current.is_some() {
            return Err(fail("input ended without COMMIT".into()));
        }
        Ok(())
    }
}

impl Firewall for MemoryFirewall {
    fn mode(&self) -> IptablesMode {
        IptablesMode::Nft
    }

    fn restore(&self, input: &str) -> Result<(), FirewallError> {
        {
            let mut gate = lock(&self.gate, "restore gate");
            gate.waiting += 1;
            while gate.held {
                gate = self
                    .gate_changed
                    .wait(gate)
                    .unwrap_or_else(|e| e.into_inner());
            }
            gate.waiting -= 1;
        }
        lock(&self.restores, "restores").push(input.to_string());
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            return Err(fail("line 1 failed (injected)".into()));
        }
        self.apply(input)
    }

    fn save(&self, table: Table) -> Result<String, FirewallError> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let t = lock(&self.tables, "iptables tables");
        let chains = &t[table.name()];
        let mut out = format!("*{}\n", table.name());
        let builtin = builtins(table.name());
        for c in builtin {
            out.push_str(&format!(":{c} ACCEPT [0:0]\n"));
        }
        for c in chains.keys().filter(|c| !builtin.contains(&c.as_str())) {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        let order = builtin.iter().map(|s| s.to_string()).chain(
            chains
                .keys()
                .filter(|c| !builtin.contains(&c.as_str()))
                .cloned(),
        );
        for c in order {
            for r in &chains[&c] {
                out.push_str(&format!("-A {c} {r}\n"));
            }
        }
        out.push_str("COMMIT\n");
        Ok(out)
    }

    fn chain_exists(&self, table: Table, chain: &str) -> Result<bool, FirewallError> {
        Ok(lock(&self.tables, "iptables tables")[table.name()].contains_key(chain))
    }

    fn enable_route_localnet(&self) -> Result<(), FirewallError> {
        self.route_localnet.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_semantics() {
        let fw = MemoryFirewall::new();
        fw.restore(
            "*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j RETURN\n-I PREROUTING 1 -j KUBE-A\nCOMMIT\n",
        )
        .unwrap();
        assert_eq!(
            fw.chain(Table::Nat, "PREROUTING").unwrap(),
            vec!["-j KUBE-A"]
        );
        // referenced chain cannot be deleted
        assert!(fw
            .restore("*nat\n:KUBE-A - [0:0]\n-X KUBE-A\nCOMMIT\n")
            .is_err());
        assert_eq!(
            fw.chain(Table::Nat, "KUBE-A").unwrap(),
            vec!["-j RETURN"],
            "failed commit changes nothing"
        );
        fw.restore("*nat\n-D PREROUTING -j KUBE-A\n:KUBE-A - [0:0]\n-X KUBE-A\nCOMMIT\n")
            .unwrap();
        assert!(fw.chain(Table::Nat, "KUBE-A").is_none());
        assert!(fw
            .restore("*nat\n-A KUBE-NOPE -j RETURN\nCOMMIT\n")
            .is_err());
    }
}
