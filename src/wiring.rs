//! The kubelet and the proxy in one process (`kubenode agent`). The kubelet never imports the
//! proxy, nor the proxy the kubelet: this module joins them. The proxy takes the Services,
//! Endpoints and EndpointSlices that changed from the manifest watcher (and, in cluster mode,
//! from the API server: `with_api_source`), and the node's pods from the `ProxyInput` the
//! kubelet publishes on a `tokio::sync::watch` channel whenever its pods change; the
//! Services with their allocated ClusterIPs and their endpoints go back to the kubelet, for the
//! pods' environment and `kubenode get services|endpoints`, whenever a proxy sync changed them
//! (the proxy thread hands its status over after each sync, see `ProxyHandle::on_status`).

use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use kubenode_kubelet::config::{DEFAULT_SERVICE_CIDR, PROXY_STATE_FILE};
use kubenode_kubelet::source::ServiceChanges;
use kubenode_proxy::conntrack::ConntrackTool;
use kubenode_proxy::iptables::IptablesFirewall;
use kubenode_proxy::model::{ipv4_cidr, parse_ipv4_cidr, EndpointSet, ServiceKey};
use kubenode_proxy::{Proxy, ProxyConfig};

/// Gives the proxy what the source says changed: the first, complete set replaces everything,
/// later ones are applied on top, so that one changed Service is reprogrammed alone. The
/// kubelet names removed objects by `(namespace, name)` (it does not know the proxy's types);
/// they become the proxy's [`ServiceKey`]s here.
pub fn hand_over(handle: &kubenode_proxy::ProxyHandle, change: ServiceChanges) {
    if change.full {
        handle.update_services(change.services);
        handle.update_endpoints(change.endpoints);
        handle.update_endpoint_slices(change.endpoint_slices);
    } else {
        let keys =
            |removed: Vec<(String, String)>| removed.into_iter().map(ServiceKey::from).collect();
        handle.apply_changes(kubenode_proxy::Changes {
            services: change.services,
            removed_services: keys(change.removed_services),
            endpoints: change.endpoints,
            removed_endpoints: keys(change.removed_endpoints),
            endpoint_slices: change.endpoint_slices,
            removed_endpoint_slices: keys(change.removed_endpoint_slices),
        });
    }
}

/// Cluster mode: the proxy's Services and EndpointSlices from the API server `client` beside
/// the manifest directory's `changes` (see `crate::proxy_api`), and the state of the Node
/// `node_name` for the health server. For `kubenode proxy --kubeconfig`, and for the agent in
/// cluster mode: hand the result to [`start_for_agent`] in place of the watcher's changes.
pub fn with_api_source(
    client: kube::Client,
    node_name: &str,
    changes: tokio::sync::mpsc::UnboundedReceiver<ServiceChanges>,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<ServiceChanges>,
    Arc<crate::proxy_api::NodeState>,
) {
    let node = Arc::new(crate::proxy_api::NodeState::default());
    let api = crate::proxy_api::spawn(client, node_name.to_string(), node.clone());
    (crate::proxy_api::merge(changes, api), node)
}

/// Starts the proxy inside `kubenode agent`: Services, Endpoints and EndpointSlices come from
/// the manifest directory's watcher as changes (`changes`, see `Watcher::subscribe_changes`;
/// in cluster mode merged with the API server's by [`with_api_source`]), the node's pods
/// in-process from the kubelet.
pub fn start_for_agent(
    config: &kubenode_kubelet::config::Config,
    kubelet: Arc<kubenode_kubelet::node::Kubelet>,
    changes: tokio::sync::mpsc::UnboundedReceiver<ServiceChanges>,
) -> anyhow::Result<()> {
    start_for_agent_with(config, kubelet, changes, None)
}

/// The proxy's syncs in the agent's `/metrics` (upstream's `kubeproxy_sync_proxy_rules_*`).
fn count_sync(report: &kubenode_proxy::sync::SyncReport) {
    let rules: Vec<(&str, usize)> = report
        .rules_total
        .iter()
        .map(|(t, n)| (t.name(), *n))
        .collect();
    kubenode_kubelet::metrics::metrics().proxy_synced(report.duration, &rules);
}

/// [`start_for_agent`], with kube-proxy's health server on `health`'s address judging by its
/// Node's state (from [`with_api_source`] in cluster mode, else always eligible).
pub fn start_for_agent_with(
    config: &kubenode_kubelet::config::Config,
    kubelet: Arc<kubenode_kubelet::node::Kubelet>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<ServiceChanges>,
    health: Option<(std::net::SocketAddr, Arc<crate::proxy_api::NodeState>)>,
) -> anyhow::Result<()> {
    let mut input = kubelet.proxy_input();
    kubenode_proxy::observe_syncs(count_sync);
    let service_cidr = match config.service_cidr {
        Some(c) => ipv4_cidr(c),
        None => parse_ipv4_cidr(DEFAULT_SERVICE_CIDR),
    }
    .context("service CIDR")?;
    let mut cfg = ProxyConfig::new(&config.node_name, service_cidr);
    let range = &config.service_node_port_range;
    cfg.node_port_range = range.first..=range.last;
    cfg.state_file = Some(config.root_dir.join(PROXY_STATE_FILE));
    cfg.rules.cluster_cidr = config
        .cluster_cidr
        .map(ipv4_cidr)
        .transpose()
        .context("cluster CIDR")?;
    // kube-proxy's health timeout: twice the sync period.
    let health_timeout = 2 * cfg.sync_period;
    let fw = IptablesFirewall::new("auto")?;
    let mut proxy = Proxy::new(cfg, Arc::new(fw), Arc::new(ConntrackTool::new()))?;
    // The rules stay in place when the agent stops, as kube-proxy's do.
    // Pods see the Services' allocated ClusterIPs in their environment: the allocation comes
    // back after each sync that changed it.
    tokio::spawn(async move {
        // Like kube-proxy waiting for its informers' initial sync: no rules are written before
        // the first read of the manifest directory, so a restarted agent does not replace the
        // previous run's rules with empty ones for a moment.
        let Some(first) = changes.recv().await else {
            return;
        };
        proxy.update_services(first.services);
        proxy.update_endpoints(first.endpoints);
        proxy.update_endpoint_slices(first.endpoint_slices);
        let mut pods = input.borrow_and_update().pods.clone();
        proxy.update_pods(pods.clone());
        let handle = proxy.spawn();
        if let Some((addr, node)) = health {
            crate::healthz::spawn(
                addr,
                crate::healthz::Health {
                    proxy: handle.health(),
                    node,
                    timeout: health_timeout,
                },
            );
        }
        // The proxy thread's status, reduced to what the kubelet takes; receivers wake only
        // when that changed (`None` until the first sync).
        type Served = Option<(Vec<Arc<Service>>, Vec<Arc<EndpointSet>>)>;
        let (served_tx, mut served) = tokio::sync::watch::channel::<Served>(None);
        handle.on_status(move |status| {
            served_tx.send_if_modified(|last| {
                // The proxy shares the objects it did not change: comparing pointers first
                // keeps this cheap with thousands of Services.
                let same = last.as_ref().is_some_and(|(services, endpoints)| {
                    same_objects(services, &status.services)
                        && same_objects(endpoints, &status.endpoints)
                });
                if !same {
                    *last = Some((status.services.clone(), status.endpoints.clone()));
                }
                !same
            });
        });
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(change) => hand_over(&handle, change),
                    None => break,
                },
                // The kubelet publishes on every snapshot and pod change; only a change of the
                // pods is news here (Services and Endpoints come above).
                changed = input.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = input.borrow_and_update().pods.clone();
                    if now != pods {
                        pods = now;
                        handle.update_pods(pods.clone());
                    }
                }
                changed = served.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some((services, endpoints)) = served.borrow_and_update().clone() else {
                        continue;
                    };
                    let services = services.iter().map(|s| Service::clone(s)).collect();
                    let endpoints = endpoints.iter().map(|e| e.to_endpoints()).collect();
                    kubelet.set_services(services, endpoints);
                }
            }
        }
    });
    Ok(())
}

/// Whether two lists hold equal objects, comparing the shared ones by address.
fn same_objects<T: PartialEq>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
}
