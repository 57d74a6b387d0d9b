use super::*;
use crate::model::parse_ipv4_cidr;

fn svc(yaml: &str) -> Service {
    serde_json::from_value(serde_yaml_ng::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
}

fn ip_of(s: &Service) -> String {
    s.spec.as_ref().unwrap().cluster_ip.clone().unwrap()
}

fn np_of(s: &Service) -> i32 {
    s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap()
}

#[test]
fn allocates_stably_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alloc.json");
    let cidr = parse_ipv4_cidr("10.96.0.0/24").unwrap();
    let services = vec![
        svc("metadata: {name: b}\nspec: {type: NodePort, ports: [{port: 80}]}"),
        svc("metadata: {name: a}\nspec: {ports: [{port: 80}]}"),
        svc("metadata: {name: fixed}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}"),
    ];
    let mut a = Allocator::new(cidr, DEFAULT_NODE_PORT_RANGE, Some(&path)).unwrap();
    let (out, errs) = a.allocate(&services);
    assert!(errs.is_empty(), "{errs:?}");
    let by_name = |out: &[Service], n: &str| {
        out.iter()
            .find(|s| s.metadata.name.as_deref() == Some(n))
            .unwrap()
            .clone()
    };
    assert_eq!(ip_of(&by_name(&out, "fixed")), "10.96.0.1");
    assert_eq!(ip_of(&by_name(&out, "a")), "10.96.0.2");
    assert_eq!(ip_of(&by_name(&out, "b")), "10.96.0.3");
    assert_eq!(np_of(&by_name(&out, "b")), 30000);

    // After a restart, with `a` gone and a new `0` that sorts first, `b` keeps its values.
    let services2 = vec![
        services[0].clone(),
        svc("metadata: {name: '0'}\nspec: {type: NodePort, ports: [{port: 80}]}"),
    ];
    let mut a2 = Allocator::new(cidr, DEFAULT_NODE_PORT_RANGE, Some(&path)).unwrap();
    let (out2, errs) = a2.allocate(&services2);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(ip_of(&by_name(&out2, "b")), "10.96.0.3");
    assert_eq!(np_of(&by_name(&out2, "b")), 30000);
    assert_eq!(ip_of(&by_name(&out2, "0")), "10.96.0.2");
    assert_eq!(np_of(&by_name(&out2, "0")), 30001);
}

#[test]
fn the_first_address_is_kept_for_the_kubernetes_service() {
    let cidr = parse_ipv4_cidr("10.96.0.0/24").unwrap();
    let mut a = Allocator::new(cidr, DEFAULT_NODE_PORT_RANGE, None).unwrap();
    let (out, errs) = a.allocate(&[
        svc("metadata: {name: web}\nspec: {ports: [{port: 80}]}"),
        svc("metadata: {name: kubernetes, namespace: default}\nspec: {ports: [{port: 443}]}"),
    ]);
    assert!(errs.is_empty(), "{errs:?}");
    let ip = |n: &str| {
        ip_of(
            out.iter()
                .find(|s| s.metadata.name.as_deref() == Some(n))
                .unwrap(),
        )
    };
    assert_eq!(ip("web"), "10.96.0.2");
    assert_eq!(ip("kubernetes"), "10.96.0.1");
}

#[test]
fn conflicts_and_ranges_are_clear_errors() {
    let cidr = parse_ipv4_cidr("10.96.0.0/24").unwrap();
    let services = vec![
        svc("metadata: {name: a}\nspec: {clusterIP: 10.96.0.5, type: NodePort, ports: [{port: 80, nodePort: 30080}]}"),
        svc("metadata: {name: b}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}"),
        svc("metadata: {name: c}\nspec: {clusterIP: 192.168.0.1, ports: [{port: 80}]}"),
        svc("metadata: {name: d}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}"),
        svc("metadata: {name: e}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 80}]}"),
        svc("metadata: {name: f}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30080, protocol: UDP}]}"),
    ];
    let mut a = Allocator::new(cidr, DEFAULT_NODE_PORT_RANGE, None).unwrap();
    let (out, errs) = a.allocate(&services);
    let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(out.len(), 2, "{msgs:?}");
    assert!(
        msgs.contains(
            &"service default/b: clusterIP 10.96.0.5 is already allocated to default/a".to_string()
        ),
        "{msgs:?}"
    );
    assert!(msgs
        .iter()
        .any(|m| m.contains("default/c") && m.contains("not in the service CIDR")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("default/d: nodePort 30080/TCP is already allocated to default/a")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("default/e: nodePort 80 is not in the node port range 30000-32767")));
}

#[test]
fn exhaustion_is_reported() {
    let cidr = parse_ipv4_cidr("10.96.0.0/30").unwrap();
    let services: Vec<Service> = (0..3)
        .map(|i| {
            svc(&format!(
                "metadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}"
            ))
        })
        .collect();
    let mut a = Allocator::new(cidr, DEFAULT_NODE_PORT_RANGE, None).unwrap();
    let (out, errs) = a.allocate(&services);
    // .0 is the network, .3 the broadcast address and .1 is kept for default/kubernetes.
    assert_eq!(out.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "service default/s1: no free ClusterIP in 10.96.0.0/30 left"
    );
}

#[test]
fn changed_services_are_decided_alone_and_saved_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alloc.json");
    let cidr = parse_ipv4_cidr("10.96.0.0/24").unwrap();
    let mut services = vec![
        svc("metadata: {name: a}\nspec: {type: NodePort, ports: [{port: 80}]}"),
        svc("metadata: {name: b}\nspec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}"),
        svc("metadata: {name: c}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30100}]}"),
    ];
    let mut a = Allocator::new(cidr, DEFAULT_NODE_PORT_RANGE, Some(&path)).unwrap();
    let (_, errs) = a.allocate(&services);
    assert!(errs.is_empty(), "{errs:?}");
    let saved = std::fs::read_to_string(&path).unwrap();
    let key = |name: &str| BTreeSet::from([crate::model::ServiceKey::new("default", name)]);

    // `b` moves to a free address: decided alone, the file untouched until save_deferred.
    services[1] = svc("metadata: {name: b}\nspec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}");
    let out = a
        .allocate_changed(&services, &key("b"))
        .expect("decided alone");
    assert_eq!(out.len(), 1);
    assert_eq!(ip_of(&out[0]), "10.96.0.50");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), saved);
    a.save_deferred();
    let state = std::fs::read_to_string(&path).unwrap();
    assert!(
        state.contains("10.96.0.50") && !state.contains("10.96.0.9\""),
        "{state}"
    );
    // The full allocation agrees, and a restart reads the same state back.
    let mut fresh = Allocator::new(cidr, DEFAULT_NODE_PORT_RANGE, Some(&path)).unwrap();
    let (all, errs) = fresh.allocate(&services);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(ip_of(&all[1]), "10.96.0.50");

    // The address `a` holds, and the NodePort `c` holds, need the full allocation.
    let a_ip = ip_of(&all[0]);
    services[1] = svc(&format!(
        "metadata: {{name: b}}\nspec: {{clusterIP: {a_ip}, ports: [{{port: 80}}]}}"
    ));
    assert!(a.allocate_changed(&services, &key("b")).is_none());
    services[1] = svc(
        "metadata: {name: b}\nspec: {type: NodePort, clusterIP: 10.96.0.51, ports: [{port: 80, nodePort: 30100}]}",
    );
    assert!(a.allocate_changed(&services, &key("b")).is_none());
    // The address `b` itself gave up is free again for another Service.
    services[2] = svc(
        "metadata: {name: c}\nspec: {type: NodePort, clusterIP: 10.96.0.9, ports: [{port: 80, nodePort: 30100}]}",
    );
    services[1] = svc("metadata: {name: b}\nspec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}");
    let out = a
        .allocate_changed(&services, &key("c"))
        .expect("free address");
    assert_eq!(ip_of(&out[0]), "10.96.0.9");
}
