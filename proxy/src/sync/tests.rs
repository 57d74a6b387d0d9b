use super::*;
use crate::iptables::MemoryFirewall;
use crate::model::{Endpoint, Protocol, ServicePortInfo, ServicePortName};
use crate::rules::{generate, RulesConfig};

fn svc(i: u32, eps: &[&str]) -> (ServicePortInfo, Vec<Endpoint>) {
    let name = ServicePortName {
        namespace: "ns".into(),
        name: format!("s{i}"),
        port: String::new(),
    };
    let sp = ServicePortInfo {
        name,
        protocol: Protocol::Tcp,
        cluster_ip: format!("10.96.{}.{}", i / 200, i % 200 + 1)
            .parse()
            .unwrap(),
        port: 80,
        node_port: None,
        external_ips: vec![],
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
    };
    let eps = eps
        .iter()
        .map(|ip| Endpoint {
            ip: ip.parse().unwrap(),
            port: 8080,
            ready: true,
            local: true,
            local_fallback: false,
        })
        .collect();
    (sp, eps)
}

fn rules(svcs: &[(ServicePortInfo, Vec<Endpoint>)]) -> Ruleset {
    let ports: Vec<_> = svcs.iter().map(|s| s.0.clone()).collect();
    let eps = svcs
        .iter()
        .map(|s| (s.0.name.clone(), s.1.clone()))
        .collect();
    let cfg = RulesConfig {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..RulesConfig::default()
    };
    generate(&cfg, &ports, &eps)
}

fn setup() -> (Arc<MemoryFirewall>, Syncer) {
    let fw = Arc::new(MemoryFirewall::new());
    let s = Syncer::new(fw.clone());
    (fw, s)
}

#[test]
fn first_sync_is_full_then_partial_rewrites_only_changed_buckets() {
    let (fw, mut s) = setup();
    let mut svcs: Vec<_> = (0..400)
        .map(|i| svc(i, &["10.244.0.5", "10.244.1.6"]))
        .collect();
    let r = s.sync(&rules(&svcs)).unwrap();
    assert!(r.full && !r.skipped);
    assert_eq!(fw.chain(Table::Nat, "PREROUTING").unwrap().len(), 1);
    assert_eq!(fw.chain(Table::Filter, "FORWARD").unwrap().len(), 3);
    assert_eq!(
        fw.chain(Table::Nat, "KUBE-SVCS-10.96.0.0").unwrap().len(),
        63 * 2
    );

    // Nothing changed: no restore at all.
    let n = fw.restores().len();
    assert!(s.sync(&rules(&svcs)).unwrap().skipped);
    assert_eq!(fw.restores().len(), n);

    // One endpoint changes: only that service's bucket and the hairpin chain are written.
    svcs[250] = svc(250, &["10.244.0.5", "10.244.0.7"]);
    let r = s.sync(&rules(&svcs)).unwrap();
    assert!(!r.full);
    let last = fw.restores().last().unwrap().clone();
    let declared: Vec<&str> = last.lines().filter(|l| l.starts_with(':')).collect();
    assert_eq!(
        declared,
        vec![
            ":KUBE-HP-10.244.0.0 - [0:0]",
            ":KUBE-SVCS-10.96.1.0 - [0:0]"
        ],
        "{last}"
    );
    assert_eq!(fw.dump().matches("10.244.0.7:8080").count(), 2);

    // A bucket that empties is deleted, KUBE-SERVICES rewritten.
    svcs.truncate(200);
    let r = s.sync(&rules(&svcs)).unwrap();
    assert_eq!(r.chains_deleted, 4, "the four 10.96.1.x buckets are gone");
    assert!(!fw.dump().contains("10.244.0.7"));
    assert!(fw.chain(Table::Nat, "KUBE-SVCS-10.96.1.0").is_none());
    assert_eq!(fw.chain(Table::Nat, "KUBE-SERVICES").unwrap().len(), 5);
}

#[test]
fn failed_restore_forces_a_full_sync() {
    let (fw, mut s) = setup();
    let mut svcs = vec![svc(1, &["10.244.0.5"])];
    s.sync(&rules(&svcs)).unwrap();
    svcs.push(svc(2, &["10.244.0.6"]));
    fw.fail_next_restores(1);
    assert!(matches!(
        s.sync(&rules(&svcs)),
        Err(SyncError::Restore {
            kind: "partial",
            ..
        })
    ));
    assert!(s.needs_full());
    let saves = fw.saves();
    let r = s.sync(&rules(&svcs)).unwrap();
    assert!(r.full);
    assert_eq!(fw.saves(), saves + 3, "a full sync reads every table");
    assert_eq!(
        fw.chain(Table::Nat, "PREROUTING").unwrap().len(),
        1,
        "jumps are not duplicated"
    );
}

#[test]
fn full_sync_removes_stale_owned_chains_and_keeps_foreign_ones() {
    let (fw, mut s) = setup();
    fw.restore(
        "*nat\n:KUBE-SVCS-10.1.2.0 - [0:0]\n:KUBE-NP-TCP-30000 - [0:0]\n:DOCKER - [0:0]\n:KUBE-SVC-ABC - [0:0]\n\
         -A KUBE-SVCS-10.1.2.0 -j RETURN\n-A DOCKER -j RETURN\n-I PREROUTING 1 -j KUBE-SVCS-10.1.2.0\n-I PREROUTING 1 -j DOCKER\nCOMMIT\n",
    )
    .unwrap();
    fw.restore("*filter\n:KUBE-FIREWALL - [0:0]\n-A KUBE-FIREWALL -j DROP\n-I INPUT 1 -j KUBE-FIREWALL\nCOMMIT\n")
        .unwrap();
    s.sync(&rules(&[svc(1, &["10.244.0.5"])])).unwrap();
    assert!(fw.chain(Table::Nat, "KUBE-SVCS-10.1.2.0").is_none());
    assert!(fw.chain(Table::Nat, "KUBE-NP-TCP-30000").is_none());
    assert_eq!(fw.chain(Table::Nat, "DOCKER").unwrap(), vec!["-j RETURN"]);
    let kubelet_fw = fw.chain(Table::Filter, "KUBE-FIREWALL").unwrap_or_default();
    assert_eq!(
        kubelet_fw,
        vec!["-j DROP"],
        "a kubelet's KUBE-FIREWALL is left alone"
    );
    assert!(
        fw.chain(Table::Nat, "KUBE-SVC-ABC").is_some(),
        "kube-proxy's chains are not ours"
    );
    let pre = fw.chain(Table::Nat, "PREROUTING").unwrap();
    assert_eq!(pre.len(), 2, "{pre:?}");
    assert!(pre[0].ends_with("-j KUBE-SERVICES") && pre[1] == "-j DOCKER");
}

#[test]
fn flushed_tables_are_rebuilt_by_a_full_sync() {
    let (fw, mut s) = setup();
    let rs = rules(&[svc(1, &["10.244.0.5"])]);
    s.sync(&rs).unwrap();
    let before = fw.dump();
    fw.flush_table(Table::Nat);
    assert!(!fw
        .chain_exists(Table::Nat, crate::rules::CANARY_CHAIN)
        .unwrap());
    s.force_full();
    s.sync(&rs).unwrap();
    assert_eq!(fw.dump(), before);
}

#[test]
fn cleanup_restores_the_tables_exactly() {
    let (fw, mut s) = setup();
    fw.restore("*nat\n:CNI-X - [0:0]\n-A CNI-X -j RETURN\n-A POSTROUTING -j CNI-X\nCOMMIT\n*filter\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n").unwrap();
    let before = fw.dump();
    let svcs: Vec<_> = (0..300).map(|i| svc(i, &["10.244.0.5"])).collect();
    s.sync(&rules(&svcs)).unwrap();
    assert_ne!(fw.dump(), before);
    let r = cleanup(fw.as_ref()).unwrap();
    assert_eq!(r.jumps, 9);
    assert_eq!(fw.dump(), before);
    assert_eq!(
        cleanup(fw.as_ref()).unwrap(),
        CleanupReport::default(),
        "idempotent"
    );
}

#[test]
fn cleanup_collects_failures_and_keeps_going() {
    let (fw, mut s) = setup();
    s.sync(&rules(&[svc(1, &["10.244.0.5"])])).unwrap();
    fw.fail_next_restores(1);
    let e = cleanup(fw.as_ref()).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].0, "filter");
    assert!(e.partial.chains > 0, "nat and mangle were still cleaned");
    assert!(e.to_string().contains("filter: "), "{e}");
}
