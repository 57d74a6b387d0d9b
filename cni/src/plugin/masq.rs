//! The node's one masquerade rule: traffic from the cluster CIDR to anywhere outside it leaves the
//! node with the node's address; pod-to-pod traffic (on this node or across nodes) never does.
//! `iptables -t nat POSTROUTING -s <cluster> ! -d <cluster> -m comment --comment ... -j MASQUERADE`.

use std::time::Duration;

use ipnet::IpNet;

/// The comment on the rule (also how it is found again).
pub fn comment(cluster: IpNet) -> String {
    format!("kubenode-bridge: masquerade traffic leaving cluster {cluster}")
}

/// An iptables call failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {msg}")]
pub struct FirewallError {
    /// What was being done.
    pub op: String,
    /// The cause (iptables' stderr, or why it could not run).
    pub msg: String,
}

/// The firewall boundary: the masquerade rule only.
#[allow(
    async_fn_in_trait,
    reason = "used through generics only, never as dyn or across threads"
)]
pub trait Firewall {
    /// Adds the rule unless it is there.
    async fn ensure_masquerade(&self, cluster: IpNet) -> Result<(), FirewallError>;
    /// Removes the rule if it is there.
    async fn remove_masquerade(&self, cluster: IpNet) -> Result<(), FirewallError>;
}

/// The `iptables` / `ip6tables` commands (whichever backend they are), each call with `-w` and
/// a timeout.
#[derive(Debug, Clone)]
pub struct Iptables {
    /// The IPv4 binary.
    pub bin: String,
    /// The IPv6 binary.
    pub bin6: String,
    /// Limit for one call.
    pub timeout: Duration,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables {
            bin: "iptables".into(),
            bin6: "ip6tables".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

fn rule(op: &str, cluster: IpNet) -> Vec<String> {
    let c = cluster.to_string();
    [
        "-w",
        "5",
        "-t",
        "nat",
        op,
        "POSTROUTING",
        "-s",
        &c,
        "!",
        "-d",
        &c,
        "-m",
        "comment",
        "--comment",
        &comment(cluster),
        "-j",
        "MASQUERADE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Iptables {
    async fn run(&self, v6: bool, args: &[String]) -> Result<bool, FirewallError> {
        let bin = if v6 { &self.bin6 } else { &self.bin };
        let op = format!("{} {}", bin, args.join(" "));
        let child = tokio::process::Command::new(bin)
            .args(args)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(self.timeout, child).await {
            Err(_) => Err(FirewallError {
                op,
                msg: format!("timed out after {:?}", self.timeout),
            }),
            Ok(Err(e)) => Err(FirewallError {
                op,
                msg: e.to_string(),
            }),
            Ok(Ok(out)) if out.status.success() => Ok(true),
            // -C and -D exit 1 when the rule does not exist; other codes are real errors.
            Ok(Ok(out))
                if out.status.code() == Some(1) && args.iter().any(|a| a == "-C" || a == "-D") =>
            {
                Ok(false)
            }
            Ok(Ok(out)) => Err(FirewallError {
                op,
                msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }
}

impl Firewall for Iptables {
    async fn ensure_masquerade(&self, cluster: IpNet) -> Result<(), FirewallError> {
        let v6 = cluster.addr().is_ipv6();
        if !self.run(v6, &rule("-C", cluster)).await? {
            self.run(v6, &rule("-A", cluster)).await?;
        }
        Ok(())
    }

    async fn remove_masquerade(&self, cluster: IpNet) -> Result<(), FirewallError> {
        // One exec: -D of an absent rule exits 1, which is what an idempotent DEL wants. The rule
        // is only ever added after a -C under the allocation store's lock, so there are no
        // duplicates of ours to chase.
        self.run(cluster.addr().is_ipv6(), &rule("-D", cluster))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_is_cluster_to_outside_only() {
        let r = rule("-A", "10.244.0.0/16".parse().unwrap()).join(" ");
        assert_eq!(
            r,
            "-w 5 -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment kubenode-bridge: masquerade traffic leaving cluster 10.244.0.0/16 -j MASQUERADE"
        );
    }
}
