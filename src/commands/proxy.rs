//! `kubenode proxy`: kube-proxy's role alone. Services, Endpoints and EndpointSlices come from
//! the manifest directory and, with `--kubeconfig`, Services and EndpointSlices from the API
//! server too (`crate::proxy_api`); the node's pods from a kubelet's read-only port
//! (`--kubelet-url`, see `kubelet_client`). The health server answers on
//! `--healthz-bind-address` (`crate::healthz`). `--cleanup` removes every iptables rule and
//! chain kubenode owns and exits.
//! Inside `kubenode agent` the proxy is wired to the kubelet in-process instead
//! (`crate::wiring`).

mod kubelet_client;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kubenode_kubelet::config::{
    DEFAULT_FILE_CHECK_FREQUENCY, DEFAULT_MANIFEST_DIR, DEFAULT_ROOT_DIR, DEFAULT_SERVICE_CIDR,
    DEFAULT_SERVICE_NODE_PORT_RANGE, PROXY_STATE_FILE,
};
use kubenode_proxy::conntrack::ConntrackTool;
use kubenode_proxy::iptables::{Firewall, IptablesFirewall};
use kubenode_proxy::model::{parse_ipv4_cidr, Ipv4Net};
use kubenode_proxy::{Proxy, ProxyConfig};

/// Options of `kubenode proxy` (kube-proxy's flag names where one exists).
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// Remove every iptables rule and chain kubenode owns (and only those), then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Directory with Service and Endpoints manifests.
    #[arg(long, default_value = DEFAULT_MANIFEST_DIR)]
    pub manifest_dir: PathBuf,
    /// This node's name (default: the hostname).
    #[arg(long = "hostname-override")]
    pub node_name: Option<String>,
    /// Range ClusterIPs are allocated from.
    #[arg(long, default_value = DEFAULT_SERVICE_CIDR, value_parser = parse_ipv4_cidr)]
    pub service_cidr: Ipv4Net,
    /// Pod network of the cluster: traffic to ClusterIPs from outside it is masqueraded.
    #[arg(long, value_parser = parse_ipv4_cidr)]
    pub cluster_cidr: Option<Ipv4Net>,
    /// Range NodePorts are allocated from, `FIRST-LAST`.
    #[arg(long, default_value = DEFAULT_SERVICE_NODE_PORT_RANGE)]
    pub service_node_port_range: String,
    /// Networks whose local addresses accept NodePorts, comma-separated (default: all), or
    /// `primary`: the node's primary IP, from its Node's addresses (needs `--kubeconfig`).
    #[arg(long, value_delimiter = ',', value_parser = crate::proxy_api::parse_nodeport_address)]
    pub nodeport_addresses: Vec<crate::proxy_api::NodePortAddress>,
    /// Accept NodePorts on 127.0.0.1 (sets route_localnet=1 and adds the CVE-2020-8558 guard).
    #[arg(long)]
    pub localhost_nodeports: bool,
    /// Masquerade all traffic to ClusterIPs.
    #[arg(long)]
    pub masquerade_all: bool,
    /// iptables backend: auto, nft or legacy.
    #[arg(long, default_value = "auto")]
    pub iptables_mode: String,
    /// Minimum time between syncs (Go duration).
    #[arg(long, default_value = "1s", value_parser = kubenode_kubelet::config::parse_duration)]
    pub iptables_min_sync_period: Duration,
    /// Canary check and re-sync interval (Go duration).
    #[arg(long, default_value = "30s", value_parser = kubenode_kubelet::config::parse_duration)]
    pub iptables_sync_period: Duration,
    /// The local kubelet's read-only API (`http://127.0.0.1:10255`): the node's pods, whose
    /// addresses and readiness are the endpoints of Services with a selector. The kubelet's
    /// read-only port is off by default: turn it on there (`readOnlyPort: 10255`) to use this;
    /// `kubenode agent` needs neither, its proxy reads the pods in-process.
    #[arg(long)]
    pub kubelet_url: Option<String>,
    /// How often the pods are read from `--kubelet-url` (Go duration).
    #[arg(long, default_value = "2s", value_parser = kubenode_kubelet::config::parse_duration)]
    pub pods_poll_period: Duration,
    /// The kubeconfig of a cluster: Services and EndpointSlices are watched from its API
    /// server (beside the manifest directory's), and this node's Node.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Where the health server (`/healthz`, `/livez`) listens, IP:PORT; empty turns it off.
    #[arg(long, default_value = crate::healthz::DEFAULT_BIND_ADDRESS, value_parser = crate::healthz::parse_bind_address)]
    pub healthz_bind_address: crate::healthz::BindAddress,
    /// Where ClusterIP and NodePort allocations are kept across restarts.
    #[arg(long, default_value_os_t = std::path::Path::new(DEFAULT_ROOT_DIR).join(PROXY_STATE_FILE))]
    pub state_file: PathBuf,
}

/// Runs the proxy role until interrupted (the rules stay in place, as with kube-proxy).
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    crate::preflight::check_proxy(&crate::preflight::LinuxHost, &args.iptables_mode)?;
    let fw = IptablesFirewall::new(&args.iptables_mode)?;
    if args.cleanup {
        let report = kubenode_proxy::sync::cleanup(&fw as &dyn Firewall)?;
        tracing::info!(chains = report.chains, jumps = report.jumps, "cleanup done");
        return Ok(());
    }
    let node_name = match args.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the hostname (or pass --hostname-override)")?
            .trim()
            .to_string(),
    };
    let (first, last) = args
        .service_node_port_range
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .filter(|(a, b)| a <= b)
        .with_context(|| {
            format!(
                "--service-node-port-range `{}`: expected FIRST-LAST",
                args.service_node_port_range
            )
        })?;
    let mut cfg = ProxyConfig::new(&node_name, args.service_cidr);
    cfg.node_port_range = first..=last;
    cfg.state_file = Some(args.state_file);
    cfg.min_sync_period = args.iptables_min_sync_period;
    cfg.sync_period = args.iptables_sync_period;
    // kube-proxy's health timeout: twice the sync period.
    let health_timeout = 2 * args.iptables_sync_period;
    cfg.rules.cluster_cidr = args.cluster_cidr;
    let primary = args
        .nodeport_addresses
        .contains(&crate::proxy_api::NodePortAddress::Primary);
    cfg.rules.node_port_addresses = args
        .nodeport_addresses
        .iter()
        .filter_map(|a| match a {
            crate::proxy_api::NodePortAddress::Net(n) => Some(*n),
            crate::proxy_api::NodePortAddress::Primary => None,
        })
        .collect();
    cfg.rules.localhost_node_ports = args.localhost_nodeports;
    cfg.rules.masquerade_all = args.masquerade_all;

    // Cluster mode: a client first, so that a bad kubeconfig stops the start.
    let client = match &args.kubeconfig {
        Some(path) => Some(kubenode_kubelet::cluster::connect(path).await?),
        None => None,
    };
    if primary {
        let Some(client) = &client else {
            anyhow::bail!(
                "--nodeport-addresses primary: the node's primary IP comes from its Node: give \
                 --kubeconfig, or list the networks"
            );
        };
        let ip = crate::proxy_api::node_primary_ip(client, &node_name).await;
        cfg.rules.node_port_addresses.push(Ipv4Net::from(ip));
    }
    let proxy = Proxy::new(cfg, Arc::new(fw), Arc::new(ConntrackTool::new()))?;
    let handle = proxy.spawn();
    // The source hands over only the Services and Endpoints that changed; its snapshots (pods,
    // errors) are not needed here.
    let mut watcher = kubenode_kubelet::source::Watcher::new(
        args.manifest_dir,
        node_name.clone(),
        DEFAULT_FILE_CHECK_FREQUENCY,
    );
    let mut changes = watcher.subscribe_changes();
    let mut node_state = Arc::new(crate::proxy_api::NodeState::default());
    if let Some(client) = client {
        (changes, node_state) = crate::wiring::with_api_source(client, &node_name, changes);
    }
    if let crate::healthz::BindAddress(Some(addr)) = args.healthz_bind_address {
        crate::healthz::spawn(
            addr,
            crate::healthz::Health {
                proxy: handle.health(),
                node: node_state.clone(),
                timeout: health_timeout,
            },
        );
    }
    let (snapshot_tx, mut snapshots) = tokio::sync::mpsc::channel(4);
    tokio::spawn(watcher.run(snapshot_tx));
    let mut poll = tokio::time::interval(args.pods_poll_period.max(Duration::from_millis(100)));
    let mut last_pods: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(change) => crate::wiring::hand_over(&handle, change),
                None => break,
            },
            snap = snapshots.recv() => if snap.is_none() {
                break;
            },
            _ = poll.tick(), if args.kubelet_url.is_some() => {
                let url = args.kubelet_url.clone().unwrap_or_default();
                match kubelet_client::get(&url, "/pods").await {
                    Ok(body) if last_pods.as_deref() != Some(body.as_slice()) => {
                        match kubenode_proxy::model::pods_from_list_json(&body) {
                            Ok(pods) => {
                                handle.update_pods(pods);
                                last_pods = Some(body);
                            }
                            Err(e) => tracing::warn!(error = %e, "reading the kubelet's pod list"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading pods from the kubelet"),
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tokio::task::spawn_blocking(move || handle.shutdown()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProxyArgs,
    }

    #[test]
    fn cidr_flags_mask_host_bits_and_take_a_bare_address() {
        let cli = Cli::try_parse_from([
            "proxy",
            "--service-cidr",
            "10.96.3.4/12",
            "--cluster-cidr",
            "10.244.1.1",
            "--nodeport-addresses",
            "192.168.50.7/24,127.0.0.1",
        ])
        .unwrap();
        assert_eq!(cli.args.service_cidr.to_string(), "10.96.0.0/12");
        assert_eq!(cli.args.cluster_cidr.unwrap().to_string(), "10.244.1.1/32");
        let nets: Vec<String> = cli
            .args
            .nodeport_addresses
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["192.168.50.0/24", "127.0.0.1/32"]);
        let err = Cli::try_parse_from(["proxy", "--service-cidr", "fd00::/64"])
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("parsing `fd00::/64` as an IPv4 CIDR"),
            "{err}"
        );
    }
}
