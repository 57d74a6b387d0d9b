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
fn running_proxy_hands_its_status_to_listeners_after_each_sync() {
    let handle = proxy(
        Arc::new(MemoryFirewall::new()),
        Arc::new(RecordingConntrack::default()),
    )
    .spawn();
    let (tx, rx) = std::sync::mpsc::channel();
    handle.on_status(move |status| {
        let _ = tx.send(status.clone());
    });
    // Nothing is synced before the first whole sets, so nothing is handed over yet.
    assert!(rx.try_recv().is_err());
    let auto: Service = obj("metadata: {name: auto}\nspec: {ports: [{port: 80}]}");
    handle.update_services(vec![auto]);
    handle.update_endpoints(vec![]);
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a status after the first sync");
    assert_eq!(status.syncs, 1);
    // The first address of the range is kept for `default/kubernetes`.
    assert_eq!(
        status.services[0]
            .spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("10.96.0.2")
    );
    // A listener that comes after a sync gets the status at once.
    let (late_tx, late_rx) = std::sync::mpsc::channel();
    handle.on_status(move |status| {
        let _ = late_tx.send(status.services.len());
    });
    assert_eq!(late_rx.try_recv(), Ok(1));
    handle.shutdown();
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
    // The sources' first whole sets (empty): the proxy writes nothing before them.
    handle.update_services(vec![]);
    handle.update_endpoints(vec![]);
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
    let pods = |n: usize| -> Vec<Pod> {
        (0..n)
            .map(|j| dns_pod(&format!("p{j}"), &format!("10.244.0.{}", j + 2), true))
            .collect()
    };
    // The first update's sync is held inside its restore while the other 19 arrive, so what
    // coalescing means is independent of how fast this machine is: everything that came during
    // one sync goes out in the next one.
    fw.hold_restores();
    handle.update_pods(pods(1));
    handle.update_services(vec![dns_service()]);
    wait_for("the first update's restore", &|| fw.restores_waiting() == 1);
    let first = fw.restores().len();
    for i in 1..20 {
        handle.update_pods(pods(i + 1));
        handle.update_services(vec![dns_service()]);
    }
    fw.release_restores();
    wait_for("all 20 endpoints", &|| fw.dump().contains("10.244.0.21:53"));
    let with_endpoints = fw.restores()[first..]
        .iter()
        .filter(|r| r.contains("10.244.0."))
        .count();
    assert_eq!(
        with_endpoints, 2,
        "the held sync and one sync for the 19 updates that came meanwhile"
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

fn web(i: usize, ip: &str, nodeport: bool) -> Service {
    let np = if nodeport {
        format!(", nodePort: {}", 30000 + i)
    } else {
        String::new()
    };
    let ty = if nodeport { "type: NodePort, " } else { "" };
    obj(&format!(
        "metadata: {{name: web{i}, namespace: ns}}\nspec: {{{ty}clusterIP: '{ip}', ports: [{{name: http, port: 80{np}}}]}}"
    ))
}

fn web_eps(i: usize, ip: &str) -> Endpoints {
    obj(&format!(
        "metadata: {{name: web{i}, namespace: ns}}\nsubsets: [{{addresses: [{{ip: {ip}}}], ports: [{{name: http, port: 8080}}]}}]"
    ))
}

fn many(n: usize) -> (Vec<Service>, Vec<Endpoints>) {
    (0..n)
        .map(|i| {
            (
                web(i, &format!("10.96.{}.{}", i / 200, i % 200 + 1), i % 3 == 0),
                web_eps(i, &format!("10.244.{}.{}", i / 200, i % 200 + 1)),
            )
        })
        .unzip()
}

/// A proxy given the final sets whole: what the one given changes must equal.
fn fed_whole(services: Vec<Service>, endpoints: Vec<Endpoints>) -> (Ruleset, ProxyStatus) {
    let mut p = proxy(
        Arc::new(MemoryFirewall::new()),
        Arc::new(RecordingConntrack::default()),
    );
    p.update_services(services);
    p.update_endpoints(endpoints);
    let rs = p.desired();
    (rs, p.status())
}

fn names(st: &ProxyStatus) -> Vec<(Option<String>, Option<String>)> {
    st.services
        .iter()
        .map(|s| {
            (
                s.metadata.name.clone(),
                s.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
            )
        })
        .collect()
}

#[test]
fn changes_rewrite_only_their_buckets_and_equal_a_whole_update() {
    let fw = Arc::new(MemoryFirewall::new());
    let mut p = proxy(fw.clone(), Arc::new(RecordingConntrack::default()));
    let (mut svcs, mut eps) = many(600);
    p.update_services(svcs.clone());
    p.update_endpoints(eps.clone());
    let full = p.sync().unwrap();
    assert!(full.full && full.chains_written > 10);

    // One Service moves to another ClusterIP, one Endpoints object changes.
    let moved = web(100, "10.96.9.9", false);
    svcs[100] = moved.clone();
    let changed_ep = web_eps(200, "10.244.99.1");
    eps[200] = changed_ep.clone();
    p.apply_changes(Changes {
        services: vec![moved],
        endpoints: vec![changed_ep],
        ..Changes::default()
    });
    let r = p.sync().unwrap();
    assert!(!r.full);
    // The old bucket, the new one and the changed Endpoints' bucket, plus KUBE-SERVICES for the
    // new bucket's jump (and the filter/nat chains that list it).
    assert!(r.chains_written <= 5, "{r:?}");
    assert!(fw.dump().contains("-d 10.96.9.9/32"));
    assert!(fw.dump().contains("--to-destination 10.244.99.1:8080"));
    let (whole, whole_status) = fed_whole(svcs.clone(), eps.clone());
    assert_eq!(p.desired(), whole);
    assert_eq!(names(&p.status()), names(&whole_status));
    assert_eq!(p.status().endpoints, whole_status.endpoints);

    // Removals, and a new Service without a ClusterIP (its address is allocated afresh).
    let fresh: Service =
        obj("metadata: {name: fresh, namespace: ns}\nspec: {ports: [{name: http, port: 80}]}");
    p.apply_changes(Changes {
        services: vec![fresh.clone()],
        removed_services: vec![ServiceKey::new("ns", "web5")],
        removed_endpoints: vec![ServiceKey::new("ns", "web6")],
        ..Changes::default()
    });
    p.sync().unwrap();
    svcs.retain(|s| s.metadata.name.as_deref() != Some("web5"));
    svcs.push(fresh);
    eps.retain(|e| e.metadata.name.as_deref() != Some("web6"));
    let (whole, whole_status) = fed_whole(svcs, eps);
    assert_eq!(p.desired(), whole);
    assert_eq!(names(&p.status()), names(&whole_status));
    assert_eq!(p.status().endpoints, whole_status.endpoints);
    assert!(fw.dump().contains("ns/web6:http has no endpoints"));
    assert!(!fw.dump().contains("ns/web5:http"));
}

#[test]
fn changes_that_conflict_are_decided_as_a_whole_update_would() {
    let mut p = proxy(
        Arc::new(MemoryFirewall::new()),
        Arc::new(RecordingConntrack::default()),
    );
    let (mut svcs, eps) = many(50);
    p.update_services(svcs.clone());
    p.update_endpoints(eps.clone());
    p.sync().unwrap();
    // web40 asks for web10's address: the earlier name keeps it, the later one is refused.
    let thief = web(40, "10.96.0.11", false);
    svcs[40] = thief.clone();
    p.apply_changes(Changes {
        services: vec![thief],
        ..Changes::default()
    });
    p.sync().unwrap();
    let st = p.status();
    assert_eq!(st.errors.len(), 1, "{:?}", st.errors);
    assert!(st.errors[0].contains("ns/web40"), "{:?}", st.errors);
    let (whole, whole_status) = fed_whole(svcs, eps);
    assert_eq!(p.desired(), whole);
    assert_eq!(whole_status.errors, st.errors);
}

#[test]
fn changes_reach_a_running_proxy() {
    let fw = Arc::new(MemoryFirewall::new());
    let p = proxy(fw.clone(), Arc::new(RecordingConntrack::default()));
    let h = p.spawn();
    let (svcs, eps) = many(10);
    h.update_services(svcs);
    h.update_endpoints(eps);
    h.apply_changes(Changes {
        endpoints: vec![web_eps(3, "10.244.50.50")],
        ..Changes::default()
    });
    let start = Instant::now();
    while !fw.dump().contains("10.244.50.50:8080") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "change not applied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    h.shutdown();
}

#[test]
fn a_running_proxy_writes_nothing_before_the_whole_sets() {
    let fw = Arc::new(MemoryFirewall::new());
    let h = proxy(fw.clone(), Arc::new(RecordingConntrack::default())).spawn();
    // Pods alone, and Services without Endpoints, are not the whole picture: no restore, for
    // longer than the minimum sync period and the canary period together.
    h.update_pods(vec![dns_pod("p0", "10.244.0.2", true)]);
    h.update_services(vec![dns_service()]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        fw.restores().len(),
        0,
        "rules written before the Endpoints came"
    );
    assert_eq!(h.status().syncs, 0);
    // Both whole sets: one sync, the full one, with the Service in it.
    h.update_endpoints(vec![]);
    let start = Instant::now();
    while h.status().syncs == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no sync after the whole sets"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fw.dump().contains("10.96.0.10"), "{}", fw.dump());
    assert!(h.status().last_sync.is_some_and(|r| r.full));
    h.shutdown();
}

#[test]
fn changed_udp_endpoints_clear_their_flows() {
    let fw = Arc::new(MemoryFirewall::new());
    let ct = Arc::new(RecordingConntrack::default());
    let mut p = proxy(fw.clone(), ct.clone());
    let svc: Service = obj("metadata: {name: dns, namespace: kube-system}\nspec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP}]}");
    let eps = |ip: &str| -> Endpoints {
        obj(&format!("metadata: {{name: dns, namespace: kube-system}}\nsubsets: [{{addresses: [{{ip: {ip}}}], ports: [{{name: dns, port: 53, protocol: UDP}}]}}]"))
    };
    p.update_services(vec![svc]);
    p.update_endpoints(vec![]);
    p.sync().unwrap();
    assert!(ct.calls().is_empty());

    // The first endpoint, then another one, arrive as changes, not as whole sets.
    p.apply_changes(Changes {
        endpoints: vec![eps("10.244.0.5")],
        ..Changes::default()
    });
    p.sync().unwrap();
    let calls: Vec<String> = ct.calls().iter().map(|f| f.args().join(" ")).collect();
    assert_eq!(
        calls,
        vec!["-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53"]
    );
    p.apply_changes(Changes {
        endpoints: vec![eps("10.244.0.6")],
        ..Changes::default()
    });
    p.sync().unwrap();
    assert_eq!(
        ct.calls().last().unwrap().args().join(" "),
        "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.244.0.5"
    );
    assert!(fw.dump().contains("--to-destination 10.244.0.6:53"));
}

#[test]
fn an_allocation_changed_alone_is_saved_by_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alloc.json");
    let mut cfg = ProxyConfig::new("node1", "10.96.0.0/16".parse().unwrap());
    cfg.state_file = Some(state.clone());
    let mut p = Proxy::new(
        cfg,
        Arc::new(MemoryFirewall::new()),
        Arc::new(RecordingConntrack::default()),
    )
    .unwrap();
    p.update_services(vec![dns_service()]);
    p.update_endpoints(vec![]);
    p.sync().unwrap();
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .contains("10.96.0.10"));
    let moved: Service = obj("metadata: {name: dns, namespace: kube-system}\nspec: {clusterIP: 10.96.0.11, selector: {app: dns}, ports: [{name: dns, port: 53, protocol: UDP}]}");
    p.apply_changes(Changes {
        services: vec![moved],
        ..Changes::default()
    });
    let r = p.sync().unwrap();
    assert!(!r.full);
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        saved.contains("10.96.0.11") && !saved.contains("10.96.0.10\""),
        "{saved}"
    );
}

fn web_slice(name: &str, service: &str, endpoints: &str) -> EndpointSlice {
    obj(&format!(
        "metadata: {{name: {name}, namespace: ns, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints: {endpoints}"
    ))
}

/// The DNAT targets of the rules, sorted.
fn targets(fw: &MemoryFirewall) -> Vec<String> {
    let mut out: Vec<String> = fw
        .dump()
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--to-destination")
        .map(|w| w[1].to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn endpoint_slices_union_ready_and_terminating_fallback() {
    let fw = Arc::new(MemoryFirewall::new());
    let mut p = proxy(fw.clone(), Arc::new(RecordingConntrack::default()));
    let svc: Service = obj(
        "metadata: {name: web, namespace: ns}\nspec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}",
    );
    p.update_services(vec![svc]);
    p.update_endpoints(vec![]);
    // Two slices: a ready endpoint (ready unset means ready), a not-ready one, and a serving
    // terminating one; a slice of another Service and one without the label change nothing.
    let a = web_slice(
        "web-a",
        "web",
        "[{addresses: [10.244.0.5]}, {addresses: [10.244.0.6], conditions: {ready: false}}]",
    );
    let b = web_slice(
        "web-b",
        "web",
        "[{addresses: [10.244.1.7], conditions: {ready: false, serving: true, terminating: true}}]",
    );
    let other = web_slice("other-a", "other", "[{addresses: [10.244.2.2]}]");
    let mut unlabelled = web_slice("loose", "web", "[{addresses: [10.244.3.3]}]");
    unlabelled.metadata.labels = None;
    p.update_endpoint_slices(vec![a.clone(), b.clone(), other, unlabelled]);
    p.sync().unwrap();
    assert_eq!(targets(&fw), ["10.244.0.5:8080"]);
    let st = p.status();
    let set = st.endpoints.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(set.entries.len(), 3);

    // The ready endpoint goes: the serving, terminating one takes the traffic.
    p.apply_changes(Changes {
        removed_endpoint_slices: vec![ServiceKey::new("ns", "web-a")],
        ..Changes::default()
    });
    p.sync().unwrap();
    assert_eq!(targets(&fw), ["10.244.1.7:8080"]);

    // A ready endpoint returns in another slice: the terminating one stops receiving.
    let c = web_slice(
        "web-c",
        "web",
        "[{addresses: [10.244.4.4], conditions: {ready: true}}]",
    );
    p.apply_changes(Changes {
        endpoint_slices: vec![c.clone()],
        ..Changes::default()
    });
    p.sync().unwrap();
    assert_eq!(targets(&fw), ["10.244.4.4:8080"]);

    // The same slices handed over again as a complete set: nothing to write.
    p.update_endpoint_slices(vec![b, c]);
    let r = p.sync().unwrap();
    assert_eq!(r.chains_written, 0, "{r:?}");

    // The same address in an Endpoints object and a slice counts once, ready if either is.
    let ep: Endpoints = obj(
        "metadata: {name: web, namespace: ns}\nsubsets: [{notReadyAddresses: [{ip: 10.244.4.4}], addresses: [{ip: 10.244.5.5}], ports: [{name: http, port: 8080}]}]",
    );
    p.apply_changes(Changes {
        endpoints: vec![ep],
        ..Changes::default()
    });
    p.sync().unwrap();
    assert_eq!(targets(&fw), ["10.244.4.4:8080", "10.244.5.5:8080"]);
}
