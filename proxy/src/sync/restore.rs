//! Building one `iptables-restore --noflush` input: per table, chain declarations (which flush),
//! rule deletions, rules, jump insertions, then chain deletions, then `COMMIT`.

use crate::rules::Table;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
struct Section {
    declare: Vec<String>,
    delete_rules: Vec<String>,
    rules: Vec<String>,
    inserts: Vec<String>,
    delete_chains: Vec<String>,
}

/// A restore input under construction.
#[derive(Debug, Default)]
pub(crate) struct RestoreInput {
    tables: BTreeMap<Table, Section>,
}

impl RestoreInput {
    fn section(&mut self, t: Table) -> &mut Section {
        self.tables.entry(t).or_default()
    }

    /// `:chain - [0:0]`: creates the chain or flushes it.
    pub fn declare(&mut self, t: Table, chain: &str) {
        self.section(t).declare.push(format!(":{chain} - [0:0]"));
    }

    /// Full `-A` lines for declared chains.
    pub fn rules(&mut self, t: Table, rules: &[String]) {
        self.section(t).rules.extend(rules.iter().cloned());
    }

    /// `-D chain spec` (a rule of someone else's chain that jumps to a chain being deleted).
    pub fn delete_rule(&mut self, t: Table, chain: &str, spec: &str) {
        self.section(t)
            .delete_rules
            .push(format!("-D {chain} {spec}"));
    }

    /// `-I chain 1 spec`.
    pub fn insert_jump(&mut self, t: Table, chain: &str, spec: &str) {
        self.section(t).inserts.push(format!("-I {chain} 1 {spec}"));
    }

    /// Flushes and deletes `chain`.
    pub fn delete_chain(&mut self, t: Table, chain: &str) {
        self.declare(t, chain);
        self.section(t).delete_chains.push(format!("-X {chain}"));
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The text for iptables-restore.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (t, s) in &self.tables {
            out.push_str(&format!("*{}\n", t.name()));
            for l in s
                .declare
                .iter()
                .chain(&s.delete_rules)
                .chain(&s.rules)
                .chain(&s.inserts)
                .chain(&s.delete_chains)
            {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}
