//! The proxy's iptables rules from fuzzed Services, Endpoints and EndpointSlices: the input is
//! a manifest file, read as the agent reads one (`read_manifest_bytes`: decoded, defaulted,
//! validated), whose objects feed a real `Proxy` (allocation, endpoint resolution, the rule
//! generator, the syncer) writing to the in-memory firewall. A second sync drops every other
//! Service (a partial transaction with chain deletions). Invariants: every sync succeeds, and
//! every transaction is valid iptables-restore input that references only built-in chains,
//! standard targets and chains that exist (`kubenode_fuzz::restore`).
#![no_main]

use kubenode_fuzz::restore::Chains;
use kubenode_fuzz::{seen_at, MANIFEST_PATH, NODE};
use kubenode_kubelet::source::read_manifest_bytes;
use kubenode_proxy::conntrack::RecordingConntrack;
use kubenode_proxy::iptables::MemoryFirewall;
use kubenode_proxy::{Proxy, ProxyConfig};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let snap = read_manifest_bytes(Path::new(MANIFEST_PATH), data, NODE, seen_at());
    if snap.services.is_empty() {
        return;
    }
    let fw = Arc::new(MemoryFirewall::new());
    let mut cfg = ProxyConfig::new(NODE, "10.96.0.0/16".parse().expect("a CIDR"));
    cfg.rules.cluster_cidr = Some("10.244.0.0/16".parse().expect("a CIDR"));
    let mut proxy = Proxy::new(cfg, fw.clone(), Arc::new(RecordingConntrack::default()))
        .expect("a proxy in memory");
    proxy.update_services(snap.services.clone());
    proxy.update_endpoints(snap.endpoints.clone());
    proxy.update_endpoint_slices(snap.endpoint_slices.clone());
    proxy.update_pods(snap.pods.clone());
    if let Err(e) = proxy.sync() {
        panic!("first sync failed: {e:?}\n{}", fw.restores().join("\n"));
    }
    let half: Vec<_> = snap.services.iter().step_by(2).cloned().collect();
    proxy.update_services(half);
    if let Err(e) = proxy.sync() {
        panic!("second sync failed: {e:?}\n{}", fw.restores().join("\n"));
    }
    let mut chains = Chains::new();
    for (i, text) in fw.restores().iter().enumerate() {
        if let Err(e) = chains.apply(text) {
            panic!("transaction {i} is not valid iptables-restore input: {e}\n{text}");
        }
    }
});
