//! `kubenode proxy --cleanup`: removes every chain kubenode owns and every rule leading into
//! them, and nothing else. Each table is handled on its own; failures are collected.

use super::restore::RestoreInput;
use super::rule_target;
use crate::iptables::{saved_chains, Firewall, FirewallError};
use crate::rules::Table;
use std::collections::BTreeSet;

/// What cleanup removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Chains deleted.
    pub chains: usize,
    /// Rules deleted from chains kubenode does not own (the jumps into its chains).
    pub jumps: usize,
}

/// Every failure of a cleanup (the other tables were still cleaned).
#[derive(Debug, thiserror::Error)]
#[error("cleaning up kubenode's iptables chains: {}", .errors.iter().map(|(t, e)| format!("{t}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct CleanupError {
    /// Per table, what failed.
    pub errors: Vec<(&'static str, FirewallError)>,
    /// What was removed anyway.
    pub partial: CleanupReport,
}

/// Removes kubenode's chains from every table.
pub fn cleanup(fw: &dyn Firewall) -> Result<CleanupReport, CleanupError> {
    let mut report = CleanupReport::default();
    let mut errors = Vec::new();
    for t in Table::ALL {
        let save = match fw.save(t) {
            Ok(s) => s,
            Err(e) => {
                errors.push((t.name(), e));
                continue;
            }
        };
        let owned: BTreeSet<String> = saved_chains(&save)
            .into_iter()
            .filter(|c| t.owns(c))
            .collect();
        if owned.is_empty() {
            continue;
        }
        let mut input = RestoreInput::default();
        let mut jumps = 0;
        for line in save.lines() {
            let Some((chain, spec)) = line.strip_prefix("-A ").and_then(|r| r.split_once(' '))
            else {
                continue;
            };
            if !owned.contains(chain) && rule_target(spec).is_some_and(|tg| owned.contains(tg)) {
                input.delete_rule(t, chain, spec);
                jumps += 1;
            }
        }
        for c in &owned {
            input.delete_chain(t, c);
        }
        match fw.restore(&input.render()) {
            Ok(()) => {
                tracing::info!(
                    table = t.name(),
                    chains = owned.len(),
                    jumps,
                    "removed kubenode chains"
                );
                report.chains += owned.len();
                report.jumps += jumps;
            }
            Err(e) => errors.push((t.name(), e)),
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(CleanupError {
            errors,
            partial: report,
        })
    }
}
