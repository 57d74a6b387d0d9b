use super::*;
use crate::conntrack::RecordingConntrack;
use crate::iptables::MemoryFirewall;
use std::time::Instant;

fn obj<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_json::from_value(serde_yaml_ng::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
}

fn dns_service() -> Service {
    obj("metadata: {name: dns, namespace: kube-system}\nspec: {clusterIP: 10.96.0.10, selector: {app: dns}, ports: [{name: dns, port: 53, protocol: UDP}]}")
}

fn dns_pod(name: &str, ip: &str, ready: bool) -> Pod {
    obj(&format!(
        "metadata: {{name: {name}, namespace: kube-system, labels: {{app: dns}}}}\nspec: {{containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: {ip}, conditions: [{{type: Ready, status: '{}'}}]}}",
        if ready { "True" } else { "False" }
    ))
}

fn proxy(fw: Arc<MemoryFirewall>, ct: Arc<RecordingConntrack>) -> Proxy {
    let mut cfg = ProxyConfig::new("node1", "10.96.0.0/16".parse().unwrap());
    cfg.min_sync_period = Duration::from_millis(200);
    cfg.sync_period = Duration::from_millis(300);
    Proxy::new(cfg, fw, ct).unwrap()
}

#[test]
fn udp_flows_are_cleared_on_first_endpoint_and_endpoint_change() {
    let fw = Arc::new(MemoryFirewall::new());
    let ct = Arc::new(RecordingConntrack::default());
    let mut p = proxy(fw.clone(), ct.clone());
    p.update_services(vec![dns_service()]);
    p.sync().unwrap();
    assert!(fw.dump().contains("kube-system/dns:dns has no endpoints"));
    assert!(ct.calls().is_empty());

    p.update_pods(vec![dns_pod("a", "10.244.0.5", true)]);
    p.sync().unwrap();
    let calls: Vec<String> = ct.calls().iter().map(|f| f.args().join(" ")).collect();
    assert_eq!(
        calls,
        vec!["-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53"]
    );

    // The pod goes not-ready and another takes over: flows DNATed to the old one go.
    p.update_pods(vec![
        dns_pod("a", "10.244.0.5", false),
        dns_pod("b", "10.244.0.6", true),
    ]);
    p.sync().unwrap();
    let last = ct.calls().last().unwrap().args().join(" ");
    assert_eq!(
        last,
        "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.244.0.5"
    );
    assert!(!fw.dump().contains("10.244.0.5:53"));
    assert!(fw.dump().contains("--to-destination 10.244.0.6:53"));
}

#[test]
fn status_shows_allocations_and_errors() {
    let fw = Arc::new(MemoryFirewall::new());
    let mut p = proxy(fw, Arc::new(RecordingConntrack::default()));
    let bad: Service =
        obj("metadata: {name: bad}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}");
    p.update_services(vec![
        dns_service(),
        bad,
        obj("metadata: {name: auto}\nspec: {type: NodePort, ports: [{port: 80}]}"),
    ]);
    p.sync().unwrap();
    let st = p.status();
    assert_eq!(st.services.len(), 2);
    let auto = st
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("auto"))
        .unwrap();
    assert_eq!(
        auto.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("10.96.0.2")
    );
    assert_eq!(
        st.errors,
        vec!["service kube-system/dns: clusterIP 10.96.0.10 is already allocated to default/bad"]
    );
    assert_eq!(st.syncs, 1);
}

#[test]
fn localhost_node_ports_enable_route_localnet() {
    let fw = Arc::new(MemoryFirewall::new());
    let mut cfg = ProxyConfig::new("node1", "10.96.0.0/16".parse().unwrap());
    cfg.rules.localhost_node_ports = true;
    let mut p = Proxy::new(cfg, fw.clone(), Arc::new(RecordingConntrack::default())).unwrap();
    p.sync().unwrap();
    assert!(fw.route_localnet());
    assert!(fw.chain(Table::Filter, "KUBE-FIREWALL").is_some());
}

#[test]
fn running_proxy_coalesces_updates_and_repairs_flushed_tables() {
    let fw = Arc::new(MemoryFirewall::new());
    let handle = proxy(fw.clone(), Arc::new(RecordingConntrack::default())).spawn();
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("first sync", &|| handle.status().syncs >= 1);
    let first = fw.restores().len();
    for i in 0..20 {
        handle.update_pods(
            (0..=i)
                .map(|j| dns_pod(&format!("p{j}"), &format!("10.244.0.{}", j + 2), true))
                .collect(),
        );
        handle.update_services(vec![dns_service()]);
    }
    wait_for("all 20 endpoints", &|| fw.dump().contains("10.244.0.21:53"));
    let restores = fw.restores().len() - first;
    assert!(
        restores <= 3,
        "20 updates coalesced into {restores} restores"
    );

    fw.flush_table(Table::Nat);
    wait_for("canary repair", &|| {
        fw.chain_exists(Table::Nat, CANARY_CHAIN).unwrap()
    });
    assert!(fw.dump().contains("10.244.0.21:53"));
    handle.shutdown();
}

#[test]
fn incremental_resolution_matches_a_fresh_proxy() {
    let svc = |n: usize| -> Service {
        obj(&format!("metadata: {{name: s{n}}}\nspec: {{clusterIP: 10.96.1.{n}, ports: [{{name: p, port: 80}}]}}"))
    };
    let eps = |n: usize, ip: &str| -> Endpoints {
        obj(&format!(
            "metadata: {{name: s{n}}}\nsubsets: [{{addresses: [{{ip: {ip}}}], ports: [{{name: p, port: 8080}}]}}]"
        ))
    };
    let fresh = |s: Vec<Service>, e: Vec<Endpoints>, p: Vec<Pod>| {
        let mut x = proxy(
            Arc::new(MemoryFirewall::new()),
            Arc::new(RecordingConntrack::default()),
        );
        x.update_services(s);
        x.update_endpoints(e);
        x.update_pods(p);
        x.desired()
    };
    let mut p = proxy(
        Arc::new(MemoryFirewall::new()),
        Arc::new(RecordingConntrack::default()),
    );
    let services: Vec<Service> = (1..=5).map(svc).chain([dns_service()]).collect();
    let rounds: Vec<Vec<Endpoints>> = vec![
        (1..=5).map(|n| eps(n, &format!("10.244.0.{n}"))).collect(),
        (1..=5)
            .map(|n| eps(n, &format!("10.244.{}.{n}", n % 2)))
            .collect(),
        (2..=4).map(|n| eps(n, "10.244.9.9")).collect(),
        (2..=4)
            .map(|n| eps(n, if n == 3 { "10.244.9.8" } else { "10.244.9.9" }))
            .collect(),
        vec![],
    ];
    p.update_services(services.clone());
    let mut pods = vec![];
    for (i, e) in rounds.into_iter().enumerate() {
        p.update_endpoints(e.clone());
        if i == 2 {
            pods = vec![dns_pod("a", "10.244.5.2", true)];
            p.update_pods(pods.clone());
        }
        let got = p.desired();
        assert_eq!(got, fresh(services.clone(), e, pods.clone()), "round {i}");
    }
}
