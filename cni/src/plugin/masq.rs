//! The node's one masquerade rule: traffic from the cluster CIDR to anywhere outside it leaves the
//! node with the node's address; pod-to-pod traffic (on this node or across nodes) never does.
//! `iptables -t nat POSTROUTING -s <cluster> ! -d <cluster> -m comment --comment ... -j MASQUERADE`.

use std::time::Duration;

use ipnet::Ipv4Net;

/// The comment on the rule (also how it is found again).
pub fn comment(cluster: Ipv4Net) -> String {
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
    async fn ensure_masquerade(&self, cluster: Ipv4Net) -> Result<(), FirewallError>;
    /// Removes the rule if it is there.
    async fn remove_masquerade(&self, cluster: Ipv4Net) -> Result<(), FirewallError>;
}

/// The `iptables` command (whichever backend it is), each call with `-w` and a timeout.
#[derive(Debug, Clone)]
pub struct Iptables {
    /// The binary.
    pub bin: String,
    /// Limit for one call.
    pub timeout: Duration,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables {
            bin: "iptables".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

fn rule(op: &str, cluster: Ipv4Net) -> Vec<String> {
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
    async fn run(&self, args: &[String]) -> Result<bool, FirewallError> {
        let op = format!("{} {}", self.bin, args.join(" "));
        let child = tokio::process::Command::new(&self.bin)
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
            // -C exits 1 when the rule does not exist; other codes are real errors.
            Ok(Ok(out)) if out.status.code() == Some(1) && args.iter().any(|a| a == "-C") => {
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
    async fn ensure_masquerade(&self, cluster: Ipv4Net) -> Result<(), FirewallError> {
        if !self.run(&rule("-C", cluster)).await? {
            self.run(&rule("-A", cluster)).await?;
        }
        Ok(())
    }

    async fn remove_masquerade(&self, cluster: Ipv4Net) -> Result<(), FirewallError> {
        // Bounded: a rule added twice by hand is removed as well.
        for _ in 0..8 {
            if !self.run(&rule("-C", cluster)).await? {
                break;
            }
            self.run(&rule("-D", cluster)).await?;
        }
        Ok(())
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
