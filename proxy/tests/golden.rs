//! Golden-file tests: k8s objects → desired ruleset, compared with `tests/golden/<case>.txt`.
//! Set `UPDATE_GOLDEN=1` to rewrite the files after an intended change, and review the diff.

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kubenode_proxy::conntrack::RecordingConntrack;
use kubenode_proxy::iptables::MemoryFirewall;
use kubenode_proxy::rules::Ruleset;
use kubenode_proxy::{Proxy, ProxyConfig};
use std::sync::Arc;

fn objects(yaml: &str) -> (Vec<Service>, Vec<Endpoints>, Vec<Pod>) {
    let (mut s, mut e, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for doc in yaml.split("\n---\n") {
        let v: serde_json::Value = serde_yaml_ng::from_str(doc).unwrap();
        match v["kind"].as_str() {
            Some("Service") => s.push(serde_json::from_value(v).unwrap()),
            Some("Endpoints") => e.push(serde_json::from_value(v).unwrap()),
            Some("Pod") => p.push(serde_json::from_value(v).unwrap()),
            k => panic!("unexpected kind {k:?}"),
        }
    }
    (s, e, p)
}

fn ruleset(cfg: ProxyConfig, yaml: &str) -> Ruleset {
    let (s, e, p) = objects(yaml);
    let mut proxy = Proxy::new(
        cfg,
        Arc::new(MemoryFirewall::new()),
        Arc::new(RecordingConntrack::default()),
    )
    .unwrap();
    proxy.update_services(s);
    proxy.update_endpoints(e);
    proxy.update_pods(p);
    let status_errors = {
        let (rs, _, _) = proxy.desired();
        assert!(
            proxy.status().errors.is_empty(),
            "{:?}",
            proxy.status().errors
        );
        rs
    };
    status_errors
}

fn check(case: &str, rs: &Ruleset) {
    let mut text = rs.to_restore_text();
    text.push_str("# jumps from built-in chains\n");
    for j in &rs.jumps {
        text.push_str(&format!("# {} -A {} {}\n", j.table.name(), j.chain, j.spec));
    }
    let path = format!("{}/tests/golden/{case}.txt", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if want != text {
        let got = format!("{path}.got");
        std::fs::write(&got, &text).unwrap();
        panic!("{case}: ruleset differs from {path}; see `diff {path} {got}` (UPDATE_GOLDEN=1 to accept)");
    }
}

fn cfg() -> ProxyConfig {
    let mut c = ProxyConfig::new("node1", "172.30.0.0/16".parse().unwrap());
    c.rules.cluster_cidr = Some("10.180.0.0/16".parse().unwrap());
    c
}

/// The reference example (proxy-cni.md §1.12): ClusterIP, NodePort with ClientIP affinity, and
/// a UDP Service without endpoints.
#[test]
fn reference_example() {
    let yaml = r#"
kind: Service
metadata: {name: svc1, namespace: ns1}
spec: {clusterIP: 172.30.0.41, ports: [{name: p80, port: 80}]}
---
kind: Endpoints
metadata: {name: svc1, namespace: ns1}
subsets: [{addresses: [{ip: 10.180.0.1}, {ip: 10.180.0.2}], ports: [{name: p80, port: 80}]}]
---
kind: Service
metadata: {name: svc2, namespace: ns2}
spec:
  type: NodePort
  clusterIP: 172.30.0.42
  sessionAffinity: ClientIP
  ports: [{name: p80, port: 80, nodePort: 30080}]
---
kind: Endpoints
metadata: {name: svc2, namespace: ns2}
subsets: [{addresses: [{ip: 10.180.0.3}, {ip: 10.180.0.4}], ports: [{name: p80, port: 80}]}]
---
kind: Service
metadata: {name: svc3, namespace: ns3}
spec: {clusterIP: 172.30.0.43, ports: [{name: dns, port: 53, protocol: UDP}]}
"#;
    check("reference-example", &ruleset(cfg(), yaml));
}

/// Selector Services from pods (named target port, a not-ready pod, multi-port, allocated
/// ClusterIP and NodePort), externalTrafficPolicy Local with externalIPs, localhost NodePorts
/// with the CVE-2020-8558 guard, and nodePortAddresses.
#[test]
fn pods_local_policy_localhost() {
    let yaml = r#"
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  externalIPs: [192.0.2.10]
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, targetPort: web}, {name: metrics, port: 9090, targetPort: 9100}]
---
kind: Service
metadata: {name: remote-only, namespace: default}
spec:
  type: NodePort
  clusterIP: 172.30.1.7
  externalTrafficPolicy: Local
  ports: [{port: 8080, nodePort: 31000}]
---
kind: Endpoints
metadata: {name: remote-only, namespace: default}
subsets: [{addresses: [{ip: 10.180.1.9, nodeName: node2}], ports: [{port: 8080}]}]
---
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: x, ports: [{name: web, containerPort: 8080}]}]}
status: {podIP: 10.180.0.5, conditions: [{type: Ready, status: "True"}]}
---
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: x, ports: [{name: web, containerPort: 8081}]}]}
status: {podIP: 10.180.0.6, conditions: [{type: Ready, status: "False"}]}
"#;
    let mut c = cfg();
    c.rules.localhost_node_ports = true;
    c.rules.node_port_addresses = vec![
        "192.168.50.0/24".parse().unwrap(),
        "127.0.0.0/8".parse().unwrap(),
    ];
    check("pods-local-policy-localhost", &ruleset(c, yaml));
}

/// masqueradeAll, no cluster CIDR, SCTP, a selector-less Service without Endpoints, an
/// ExternalName and a headless Service (no rules), three endpoints (1/3, 1/2 ladder).
#[test]
fn masquerade_all_misc() {
    let yaml = r#"
kind: Service
metadata: {name: three, namespace: a}
spec: {clusterIP: 172.30.9.1, ports: [{port: 7, protocol: SCTP}]}
---
kind: Endpoints
metadata: {name: three, namespace: a}
subsets: [{addresses: [{ip: 10.1.0.1}, {ip: 10.1.0.2}, {ip: 10.1.0.3}], ports: [{port: 7, protocol: SCTP}]}]
---
kind: Service
metadata: {name: lonely, namespace: a}
spec: {type: LoadBalancer, clusterIP: 172.30.9.2, externalIPs: [198.51.100.1], ports: [{port: 443, nodePort: 32443}]}
---
kind: Service
metadata: {name: headless, namespace: a}
spec: {clusterIP: None, selector: {app: x}, ports: [{port: 80}]}
---
kind: Service
metadata: {name: alias, namespace: a}
spec: {type: ExternalName, externalName: example.org}
"#;
    let mut c = ProxyConfig::new("node1", "172.30.0.0/16".parse().unwrap());
    c.rules.masquerade_all = true;
    check("masquerade-all-misc", &ruleset(c, yaml));
}
