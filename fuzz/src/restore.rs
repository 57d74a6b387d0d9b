//! A checker of `iptables-restore` input, for the rule generator's target: the syntax the
//! proxy's transactions use (`*table`, `:CHAIN POLICY [packets:bytes]`, `-A`/`-I`/`-D`/`-X`
//! commands, `COMMIT`, `#` comments), tokenized as iptables-restore does (whitespace, double
//! quotes with `\"`), and the chains: every chain a command names or a `-j`/`-g` jumps to is a
//! built-in chain, a standard or extension target, or a chain that exists (declared in this
//! transaction or an earlier one, and not deleted).

use std::collections::{BTreeMap, BTreeSet};

/// Longest chain name iptables takes (`XT_EXTENSION_MAXNAMELEN` - 1).
pub const MAX_CHAIN_NAME: usize = 28;
/// Longest `--comment` iptables takes (`XT_MAX_COMMENT_LEN` - 1).
pub const MAX_COMMENT: usize = 255;

/// Targets that are not chains: the standard verdicts and the extension targets the proxy uses,
/// with the tables they are valid in (`None`: any).
const TARGETS: &[(&str, Option<&str>)] = &[
    ("ACCEPT", None),
    ("DROP", None),
    ("RETURN", None),
    ("REJECT", Some("filter")),
    ("DNAT", Some("nat")),
    ("SNAT", Some("nat")),
    ("MASQUERADE", Some("nat")),
    ("MARK", None),
    ("CONNMARK", None),
    ("LOG", None),
];

fn builtins(table: &str) -> &'static [&'static str] {
    match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

/// The chains that exist between transactions, by table (built-in ones implied).
#[derive(Debug, Default, Clone)]
pub struct Chains {
    tables: BTreeMap<String, BTreeSet<String>>,
}

/// Splits one line as iptables-restore does: at whitespace, with `"..."` one argument
/// (`\"` inside is a quote).
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => match chars.next() {
                Some('"') => cur.push('"'),
                Some(o) => {
                    cur.push('\\');
                    cur.push(o);
                }
                None => return Err("a backslash ends the line".into()),
            },
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c if c.is_control() => return Err(format!("control character {c:?}")),
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if in_token {
        out.push(cur);
    }
    Ok(out)
}

fn check_chain_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHAIN_NAME {
        return Err(format!(
            "chain name {name:?} is empty or longer than {MAX_CHAIN_NAME}"
        ));
    }
    if name.starts_with('-') || name.starts_with('!') || name.chars().any(char::is_whitespace) {
        return Err(format!("invalid chain name {name:?}"));
    }
    Ok(())
}

impl Chains {
    /// No chain but the built-in ones.
    pub fn new() -> Chains {
        Chains::default()
    }

    fn exists(&self, table: &str, chain: &str) -> bool {
        builtins(table).contains(&chain)
            || self.tables.get(table).is_some_and(|c| c.contains(chain))
    }

    /// Checks one transaction and, when it is well formed, applies its chain declarations and
    /// deletions. The error names the line.
    pub fn apply(&mut self, text: &str) -> Result<(), String> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the input does not end with a newline".into());
        }
        let mut next = self.clone();
        let mut table: Option<String> = None;
        let mut deleted: Vec<(String, String)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if let Some(t) = &table {
                    return Err(at(format!("table {name} opened inside table {t}")));
                }
                if builtins(name).is_empty() {
                    return Err(at(format!("unknown table {name}")));
                }
                table = Some(name.to_string());
                continue;
            }
            let Some(t) = table.clone() else {
                return Err(at("outside a table".into()));
            };
            if line == "COMMIT" {
                table = None;
                for (t, c) in deleted.drain(..) {
                    next.tables.entry(t).or_default().remove(&c);
                }
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let parts: Vec<&str> = decl.split(' ').collect();
                let [name, policy, counters] = parts[..] else {
                    return Err(at("a declaration is `:CHAIN POLICY [p:b]`".into()));
                };
                check_chain_name(name).map_err(at)?;
                let builtin = builtins(&t).contains(&name);
                let policy_ok = if builtin {
                    matches!(policy, "ACCEPT" | "DROP")
                } else {
                    policy == "-"
                };
                if !policy_ok {
                    return Err(at(format!("policy {policy} of chain {name}")));
                }
                let counters_ok = counters
                    .strip_prefix('[')
                    .and_then(|c| c.strip_suffix(']'))
                    .and_then(|c| c.split_once(':'))
                    .is_some_and(|(p, b)| p.parse::<u64>().is_ok() && b.parse::<u64>().is_ok());
                if !counters_ok {
                    return Err(at(format!("counters {counters}")));
                }
                next.tables
                    .entry(t.clone())
                    .or_default()
                    .insert(name.into());
                continue;
            }
            let tokens = tokenize(line).map_err(at)?;
            let (cmd, chain) = match &tokens[..] {
                [cmd, chain, ..] => (cmd.as_str(), chain.as_str()),
                _ => return Err(at("a command and a chain expected".into())),
            };
            check_chain_name(chain).map_err(at)?;
            if !next.exists(&t, chain) {
                return Err(at(format!("chain {chain} does not exist in table {t}")));
            }
            match cmd {
                "-X" => {
                    if tokens.len() != 2 || builtins(&t).contains(&chain) {
                        return Err(at("`-X CHAIN` of a chain not built in".into()));
                    }
                    deleted.push((t.clone(), chain.to_string()));
                    continue;
                }
                "-A" | "-D" => check_rule(&next, &t, &tokens[2..]).map_err(at)?,
                "-I" => {
                    let rest = match tokens.get(2) {
                        Some(n) if n.parse::<u32>().is_ok_and(|n| n >= 1) => &tokens[3..],
                        _ => &tokens[2..],
                    };
                    check_rule(&next, &t, rest).map_err(at)?
                }
                other => return Err(at(format!("unknown command {other}"))),
            }
        }
        if let Some(t) = table {
            return Err(format!("table {t} has no COMMIT"));
        }
        *self = next;
        Ok(())
    }
}

/// The options of one rule: each `-j`/`-g` target exists, comments fit.
fn check_rule(chains: &Chains, table: &str, args: &[String]) -> Result<(), String> {
    let mut targets = 0;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let value = args.get(i + 1).map(String::as_str);
        match a {
            "-j" | "--jump" | "-g" | "--goto" => {
                let Some(target) = value else {
                    return Err(format!("{a} without a target"));
                };
                targets += 1;
                match TARGETS.iter().find(|(name, _)| *name == target) {
                    Some((_, Some(only))) if *only != table => {
                        return Err(format!("target {target} is not valid in table {table}"))
                    }
                    Some(_) if a.starts_with("-g") || a == "--goto" => {
                        return Err(format!("goto to the non-chain target {target}"))
                    }
                    Some(_) => {}
                    None => {
                        check_chain_name(target)?;
                        if !chains.exists(table, target) || builtins(table).contains(&target) {
                            return Err(format!(
                                "jump to {target}, which is no target and no chain of table {table}"
                            ));
                        }
                    }
                }
                i += 2;
            }
            "--comment" => {
                let Some(c) = value else {
                    return Err("--comment without a text".into());
                };
                if c.len() > MAX_COMMENT {
                    return Err(format!("a comment of {} bytes (> {MAX_COMMENT})", c.len()));
                }
                i += 2;
            }
            _ if a.is_empty() => return Err("an empty argument".into()),
            _ => i += 1,
        }
    }
    if targets > 1 {
        return Err("more than one target".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_transaction_and_remembers_its_chains() {
        let mut c = Chains::new();
        c.apply(
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
             -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
             -A KUBE-SERVICES -m comment --comment \"a \\\"b\\\" c\" -j KUBE-MARK-MASQ\n\
             -I PREROUTING 1 -j KUBE-SERVICES\nCOMMIT\n",
        )
        .unwrap();
        c.apply("*nat\n-A KUBE-SERVICES -j DNAT --to-destination 1.2.3.4:80\nCOMMIT\n")
            .unwrap();
        c.apply("*nat\n:KUBE-MARK-MASQ - [0:0]\n-X KUBE-MARK-MASQ\nCOMMIT\n")
            .unwrap();
        let e = c
            .apply("*nat\n-A KUBE-SERVICES -j KUBE-MARK-MASQ\nCOMMIT\n")
            .unwrap_err();
        assert!(e.contains("no target and no chain"), "{e}");
    }

    #[test]
    fn refuses_what_iptables_restore_refuses() {
        for (bad, why) in [
            ("*nat\n-A KUBE-X -j ACCEPT\nCOMMIT\n", "does not exist"),
            ("*nat\n:KUBE-X - [0:0]\n", "no COMMIT"),
            ("-A INPUT -j ACCEPT\n", "outside a table"),
            (
                "*filter\n-A INPUT -m comment --comment \"x -j ACCEPT\nCOMMIT\n",
                "unterminated",
            ),
            (
                "*filter\n-A INPUT -j DNAT --to-destination 1.1.1.1\nCOMMIT\n",
                "not valid",
            ),
            ("*filter\n-A INPUT -j KUBE-NOPE\nCOMMIT\n", "no target"),
            (
                "*filter\n:KUBE-A-NAME-LONGER-THAN-28-CHARS - [0:0]\nCOMMIT\n",
                "longer",
            ),
            ("*nat\n*filter\nCOMMIT\n", "inside table"),
            (
                "*filter\n-A INPUT -j ACCEPT -j DROP\nCOMMIT\n",
                "more than one",
            ),
        ] {
            let e = Chains::new().apply(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
