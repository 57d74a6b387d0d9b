//! The kubelet configuration on a real network stack: the node IP rule,
//! read by `SystemHost` inside a node's own network namespace (as when
//! several agents share one host).
//!
//! The test re-runs this binary inside the namespace (`ip netns exec`) with
//! `KN_NODE_IP_CHILD` set, so that no test thread ever changes namespace.

use std::time::Duration;

use anyhow::{ensure, Context};
use kubenode_integration::{
    ip_addr_add, link_up, privileged, run, run_tests, unique_tag, veth, LeakGuard, Netns,
};
use kubenode_kubelet::config::{Config, Overrides};

const CHILD_ENV: &str = "KN_NODE_IP_CHILD";

fn main() {
    if let Ok(pod_cidr) = std::env::var(CHILD_ENV) {
        child(&pod_cidr);
    }
    run_tests(vec![privileged(
        "node_ip_rule_in_a_node_netns",
        node_ip_rule,
    )])
}

/// Inside the namespace: resolve the configuration and print `<ip> <rule>`.
fn child(pod_cidr: &str) -> ! {
    let overrides = Overrides {
        node_name: Some("node-a".into()),
        pod_cidr: Some(pod_cidr.parse().expect("pod CIDR")),
        ..Overrides::default()
    };
    match Config::resolve(None, &overrides) {
        Ok(cfg) => {
            println!("{} {}", cfg.node_ip, cfg.node_ip_rule);
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

fn resolve_in(ns: &Netns, pod_cidr: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("test binary path is not UTF-8")?;
    let mut cmd = ns.command(&[exe]);
    cmd.env(CHILD_ENV, pod_cidr);
    let out = run(&mut cmd, Duration::from_secs(30))?;
    ensure!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn node_ip_rule() -> anyhow::Result<()> {
    let tag = unique_tag("kc");
    let guard = LeakGuard::new(&tag);
    {
        let ns = Netns::new(&tag)?;
        let (p, q, r, s) = (
            format!("{tag}p"),
            format!("{tag}q"),
            format!("{tag}r"),
            format!("{tag}s"),
        );
        // p: a pod-network bridge address (excluded); q: a plain uplink.
        veth(Some(&ns), &p, Some(&ns), &q)?;
        ip_addr_add(Some(&ns), &p, "10.244.7.1/24")?;
        ip_addr_add(Some(&ns), &q, "10.88.0.3/24")?;
        for i in [&p, &q] {
            link_up(Some(&ns), i)?;
        }
        let got = resolve_in(&ns, "10.244.7.0/24")?;
        ensure!(
            got.starts_with(&format!("10.88.0.3 first global address of {q}")),
            "no default route: {got}"
        );

        // r holds the default route: it wins over interface order.
        veth(Some(&ns), &r, Some(&ns), &s)?;
        ip_addr_add(Some(&ns), &r, "10.77.0.2/24")?;
        for i in [&r, &s] {
            link_up(Some(&ns), i)?;
        }
        ns.ip(&["route", "add", "default", "via", "10.77.0.1", "dev", &r])?;
        let got = resolve_in(&ns, "10.244.7.0/24")?;
        ensure!(
            got.starts_with(&format!(
                "10.77.0.2 first global address of {r}, the default-route interface"
            )),
            "default route: {got}"
        );
    }
    guard.check()
}
