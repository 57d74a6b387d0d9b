//! Applying a [`Ruleset`]: one `iptables-restore --noflush` transaction per sync. A partial sync
//! writes only the chains whose rules changed since the last successful restore and deletes the
//! chains that disappeared; a full sync writes every chain, inserts missing jumps from the built-in
//! chains and deletes stale bucket chains found with `iptables-save`. A failed restore makes the
//! next sync full. [`cleanup`] removes everything kubenode owns.

mod cleanup;
mod restore;

pub use cleanup::{cleanup, CleanupError, CleanupReport};

use crate::iptables::{saved_chains, Firewall, FirewallError};
use crate::rules::{Ruleset, Table};
use restore::RestoreInput;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sync that did not reach the kernel.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading the current tables failed.
    #[error("reading the {table} table before a full sync")]
    Save {
        /// The table.
        table: &'static str,
        /// Why.
        #[source]
        source: FirewallError,
    },
    /// iptables-restore rejected the input or failed; the next sync will be full.
    #[error("applying {kind} sync ({chains} chains, {bytes} bytes) with iptables-restore")]
    Restore {
        /// `full` or `partial`.
        kind: &'static str,
        /// Chains written.
        chains: usize,
        /// Size of the input.
        bytes: usize,
        /// Why.
        #[source]
        source: FirewallError,
    },
}

/// What one sync did (kube-proxy's sync metrics, as a struct the caller logs or exports).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether this was a full sync.
    pub full: bool,
    /// Nothing changed: no restore was run.
    pub skipped: bool,
    /// Chains written (flushed and refilled).
    pub chains_written: usize,
    /// Chains deleted.
    pub chains_deleted: usize,
    /// Rules written.
    pub rules_written: usize,
    /// Size of the restore input.
    pub bytes: usize,
    /// Rules in the desired ruleset per table (`iptables_rules_total{table}`).
    pub rules_total: BTreeMap<Table, usize>,
    /// Chains in the desired ruleset per table.
    pub chains_total: BTreeMap<Table, usize>,
    /// Wall time of the sync (`sync_{full,partial}_proxy_rules_duration_seconds`).
    pub duration: Duration,
}

type ChainKey = (Table, String);

/// Applies rulesets, remembering what the last successful restore wrote.
#[derive(Debug)]
pub struct Syncer {
    fw: Arc<dyn Firewall>,
    applied: Option<BTreeMap<ChainKey, u64>>,
}

fn chain_hash(rules: &[String]) -> u64 {
    let mut h = DefaultHasher::new();
    rules.hash(&mut h);
    h.finish()
}

/// The chain a saved rule jumps or goes to (`-j X` / `-g X`), if any.
pub(crate) fn rule_target(rule: &str) -> Option<&str> {
    let mut it = rule.split_whitespace();
    while let Some(tok) = it.next() {
        if tok == "-j" || tok == "-g" || tok == "--jump" || tok == "--goto" {
            return it.next();
        }
    }
    None
}

impl Syncer {
    /// A syncer whose first sync is full.
    pub fn new(fw: Arc<dyn Firewall>) -> Syncer {
        Syncer { fw, applied: None }
    }

    /// The firewall in use.
    pub fn firewall(&self) -> &Arc<dyn Firewall> {
        &self.fw
    }

    /// Makes the next sync full (canary gone, periodic re-assert).
    pub fn force_full(&mut self) {
        self.applied = None;
    }

    /// Whether the next sync will be full.
    pub fn needs_full(&self) -> bool {
        self.applied.is_none()
    }

    /// Brings the tables to `desired`, fully or partially.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let hashes: BTreeMap<ChainKey, u64> = desired
            .tables
            .iter()
            .flat_map(|(t, chains)| {
                chains.iter().map(move |(c, r)| {
                    let key = (*t, c.clone());
                    let h = desired
                        .hashes
                        .get(&key)
                        .copied()
                        .unwrap_or_else(|| chain_hash(r));
                    (key, h)
                })
            })
            .collect();
        let full = self.applied.is_none();
        let mut input = RestoreInput::default();
        let mut report = SyncReport {
            full,
            rules_total: desired.rule_counts(),
            chains_total: desired.chain_counts(),
            ..SyncReport::default()
        };
        let write = |input: &mut RestoreInput, report: &mut SyncReport, t: Table, c: &str| {
            let rules = &desired.tables[&t][c];
            input.declare(t, c);
            input.rules(t, rules);
            report.chains_written += 1;
            report.rules_written += rules.len();
        };
        if let Some(applied) = &self.applied {
            for ((t, c), h) in &hashes {
                if applied.get(&(*t, c.clone())) != Some(h) {
                    write(&mut input, &mut report, *t, c);
                }
            }
            for (t, c) in applied.keys().filter(|k| !hashes.contains_key(*k)) {
                input.delete_chain(*t, c);
                report.chains_deleted += 1;
            }
            if input.is_empty() {
                report.skipped = true;
                report.duration = start.elapsed();
                return Ok(report);
            }
        } else {
            for t in Table::ALL {
                let save = self.fw.save(t).map_err(|source| SyncError::Save {
                    table: t.name(),
                    source,
                })?;
                let existing: BTreeSet<String> = saved_chains(&save).into_iter().collect();
                let wanted = desired.tables.get(&t);
                if let Some(chains) = wanted {
                    for c in chains.keys() {
                        write(&mut input, &mut report, t, c);
                    }
                }
                let stale: BTreeSet<&String> = existing
                    .iter()
                    .filter(|c| t.is_bucket(c) && !wanted.is_some_and(|w| w.contains_key(*c)))
                    .collect();
                for line in save.lines() {
                    let Some(rest) = line.strip_prefix("-A ") else {
                        continue;
                    };
                    let Some((chain, spec)) = rest.split_once(' ') else {
                        continue;
                    };
                    if !t.owns(chain)
                        && rule_target(spec).is_some_and(|tg| stale.contains(&tg.to_string()))
                    {
                        input.delete_rule(t, chain, spec);
                    }
                }
                for c in &stale {
                    input.delete_chain(t, c);
                    report.chains_deleted += 1;
                }
                // Missing jumps, inserted bottom-up so they end in the listed order at the top.
                let have = |chain: &str, target: &str| {
                    save.lines().any(|l| {
                        l.strip_prefix("-A ")
                            .and_then(|r| r.split_once(' '))
                            .is_some_and(|(c, spec)| {
                                c == chain && rule_target(spec) == Some(target)
                            })
                    })
                };
                let missing: Vec<_> = desired
                    .jumps
                    .iter()
                    .filter(|j| j.table == t && !have(j.chain, j.target))
                    .collect();
                for j in missing.iter().rev() {
                    input.insert_jump(t, j.chain, &j.spec);
                }
            }
        }
        let text = input.render();
        report.bytes = text.len();
        let kind = if full { "full" } else { "partial" };
        if let Err(source) = self.fw.restore(&text) {
            self.applied = None;
            return Err(SyncError::Restore {
                kind,
                chains: report.chains_written,
                bytes: report.bytes,
                source,
            });
        }
        self.applied = Some(hashes);
        report.duration = start.elapsed();
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
