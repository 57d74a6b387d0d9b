//! The real packet filter: `iptables-<mode>-restore`, `-save` and `iptables-<mode>` with timeouts.

use super::exec;
use super::{Firewall, FirewallError, IptablesMode};
use crate::rules::Table;
use std::time::Duration;

/// Restore input can be megabytes at 10k Services; give it time before calling it hung.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
const SAVE_TIMEOUT: Duration = Duration::from_secs(60);
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `iptables-restore --noflush` / `iptables-save` of one backend.
#[derive(Debug, Clone)]
pub struct IptablesFirewall {
    mode: IptablesMode,
    prefix: Vec<String>,
}

impl IptablesFirewall {
    /// Uses `mode`: `"nft"`, `"legacy"`, or `"auto"` (detect, see [`detect_mode`]). The chosen
    /// backend is logged once.
    pub fn new(mode: &str) -> Result<IptablesFirewall, FirewallError> {
        IptablesFirewall::with_prefix(mode, Vec::new())
    }

    /// Runs every command inside network namespace `name` (`ip netns exec <name> ...`), for one
    /// agent per namespace on a shared host and for tests; `auto` detects inside it.
    pub fn in_netns(mode: &str, name: &str) -> Result<IptablesFirewall, FirewallError> {
        let prefix = ["ip", "netns", "exec", name].map(String::from).to_vec();
        IptablesFirewall::with_prefix(mode, prefix)
    }

    fn with_prefix(mode: &str, prefix: Vec<String>) -> Result<IptablesFirewall, FirewallError> {
        let mode = match mode {
            "nft" => IptablesMode::Nft,
            "legacy" => IptablesMode::Legacy,
            "auto" | "" => detect(&prefix),
            other => return Err(FirewallError::UnknownMode(other.to_string())),
        };
        tracing::info!(%mode, "using iptables backend");
        Ok(IptablesFirewall { mode, prefix })
    }

    fn bin(&self, suffix: &str) -> String {
        format!("iptables-{}{suffix}", self.mode)
    }

    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<exec::Output, FirewallError> {
        let command = format!("{program} {}", args.join(" "));
        let (program, args): (&str, Vec<&str>) = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut v: Vec<&str> = rest.iter().map(String::as_str).collect();
                v.push(program);
                v.extend(args.iter().copied());
                (first.as_str(), v)
            }
            None => (program, args.to_vec()),
        };
        let out =
            exec::run(program, &args, stdin, timeout).map_err(|source| FirewallError::Exec {
                command: command.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(FirewallError::Failed {
                command,
                status: out.status.to_string(),
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(out)
    }
}

impl Firewall for IptablesFirewall {
    fn mode(&self) -> IptablesMode {
        self.mode
    }

    fn restore(&self, input: &str) -> Result<(), FirewallError> {
        tracing::trace!(input, "iptables-restore");
        let bin = self.bin("-restore");
        self.run(
            &bin,
            &["-w", "5", "-W", "100000", "--noflush", "--counters"],
            Some(input.as_bytes()),
            RESTORE_TIMEOUT,
        )
        .map_err(|e| match e {
            FirewallError::Failed {
                command,
                status,
                stderr,
            } => FirewallError::Failed {
                stderr: with_context(&stderr, input),
                command,
                status,
            },
            e => e,
        })?;
        Ok(())
    }

    fn save(&self, table: Table) -> Result<String, FirewallError> {
        let bin = self.bin("-save");
        Ok(self
            .run(&bin, &["-t", table.name()], None, SAVE_TIMEOUT)?
            .stdout)
    }

    fn chain_exists(&self, table: Table, chain: &str) -> Result<bool, FirewallError> {
        let bin = self.bin("");
        match self.run(
            &bin,
            &["-w", "5", "-t", table.name(), "-S", chain],
            None,
            SHORT_TIMEOUT,
        ) {
            Ok(_) => Ok(true),
            Err(FirewallError::Failed { status, .. }) if status.ends_with(": 1") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn enable_route_localnet(&self) -> Result<(), FirewallError> {
        let key = "net.ipv4.conf.all.route_localnet";
        tracing::warn!(
            "setting {key}=1 for NodePorts on 127.0.0.1 (CVE-2020-8558 guard rule installed)"
        );
        if self.prefix.is_empty() {
            let path = "/proc/sys/net/ipv4/conf/all/route_localnet";
            return std::fs::write(path, "1").map_err(|source| FirewallError::Sysctl {
                key: key.to_string(),
                source,
            });
        }
        self.run("sysctl", &["-qw", &format!("{key}=1")], None, SHORT_TIMEOUT)
            .map(|_| ())
    }
}

/// Adds the input lines around the one iptables-restore names in "line N failed" (as kube-proxy
/// logs them), so a failure says what was wrong.
fn with_context(stderr: &str, input: &str) -> String {
    let line_no = stderr
        .split("line ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse::<usize>().ok());
    let Some(n) = line_no else {
        return stderr.trim().to_string();
    };
    let lines: Vec<&str> = input.lines().collect();
    let from = n.saturating_sub(2).max(1);
    let ctx: Vec<String> = (from..=(n + 1).min(lines.len()))
        .map(|i| format!("{i}: {}", lines[i - 1]))
        .collect();
    format!("{} [input: {}]", stderr.trim(), ctx.join(" | "))
}

/// Detects the backend the host uses, as kubernetes-sigs/iptables-wrappers does: a
/// `KUBE-IPTABLES-HINT` or `KUBE-KUBELET-CANARY` chain wins (legacy checked first);
/// otherwise the backend holding more rules; on a tie (e.g. a fresh network namespace) the
/// backend `iptables` itself points to.
pub fn detect_mode() -> IptablesMode {
    detect(&[])
}

fn detect(prefix: &[String]) -> IptablesMode {
    let exec = |program: &str, args: &[&str]| {
        let mut argv: Vec<&str> = prefix.iter().skip(1).map(String::as_str).collect();
        let first = if prefix.is_empty() {
            program
        } else {
            argv.push(program);
            prefix[0].as_str()
        };
        argv.extend(args);
        exec::run(first, &argv, None, SHORT_TIMEOUT)
    };
    let save = |mode: IptablesMode, args: &[&str]| {
        exec(&format!("iptables-{mode}-save"), args)
            .ok()
            .filter(|o| o.status.success())
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    // Whole saves, never `-t mangle`: asking iptables-legacy for a table creates it.
    let (legacy_save, nft_save) = (
        save(IptablesMode::Legacy, &[]),
        save(IptablesMode::Nft, &[]),
    );
    let hinted = |save: &str| {
        save.lines()
            .any(|l| l.starts_with(":KUBE-IPTABLES-HINT") || l.starts_with(":KUBE-KUBELET-CANARY"))
    };
    if hinted(&legacy_save) {
        return IptablesMode::Legacy;
    }
    if hinted(&nft_save) {
        return IptablesMode::Nft;
    }
    let count = |save: &str| save.lines().filter(|l| l.starts_with('-')).count();
    let (legacy, nft) = (count(&legacy_save), count(&nft_save));
    if legacy != nft {
        return if legacy > nft {
            IptablesMode::Legacy
        } else {
            IptablesMode::Nft
        };
    }
    match exec("iptables", &["--version"]) {
        Ok(o) if o.stdout.contains("legacy") => IptablesMode::Legacy,
        _ => IptablesMode::Nft,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_errors_show_the_failing_line() {
        let input = "*nat\n:A - [0:0]\n-A A -j NOPE\nCOMMIT\n";
        let s = with_context("iptables-restore: line 3 failed", input);
        assert!(s.contains("3: -A A -j NOPE"), "{s}");
        assert_eq!(with_context("other", input), "other");
    }

    #[test]
    fn unknown_mode_is_an_error() {
        assert!(matches!(
            IptablesFirewall::new("ipvs"),
            Err(FirewallError::UnknownMode(_))
        ));
    }
}
