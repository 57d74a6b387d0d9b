use super::*;
use std::collections::BTreeMap;

fn id() -> Identity {
    Identity {
        name: "n1".into(),
        ip: "10.0.0.2".parse().unwrap(),
        max_pods: 110,
        node_allocatable: Default::default(),
    }
}

fn info() -> SystemInfo {
    SystemInfo {
        machine_id: "m".into(),
        system_uuid: "u".into(),
        boot_id: "b".into(),
        kernel_version: "6.1.0".into(),
        os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        container_runtime_version: "runc://1.1.5+ds1".into(),
    }
}

fn machine() -> Machine {
    Machine {
        cores: 2,
        memory: 8 << 30,
        huge_pages: BTreeMap::from([(2 << 20, 0)]),
        root_fs: 100 << 30,
    }
}

fn observed(network: Result<(), String>) -> Observed {
    Observed {
        machine: Some(machine()),
        network,
        images: Vec::new(),
        pressure: Vec::new(),
    }
}

fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

fn cond<'a>(s: &'a NodeStatus, type_: &str) -> &'a NodeCondition {
    s.conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
}

fn q(s: &str) -> Quantity {
    Quantity(s.into())
}

#[test]
fn capacity_allocatable_addresses_and_info() {
    let s = node_status(&id(), &info(), &observed(Ok(())), None, &at(1000));
    let cap = s.capacity.as_ref().unwrap();
    assert_eq!(cap["cpu"], q("2"));
    assert_eq!(cap["memory"], q("8Gi"));
    assert_eq!(cap["pods"], q("110"));
    assert_eq!(cap["ephemeral-storage"], q("100Gi"));
    assert_eq!(cap["hugepages-2Mi"], q("0"));
    let alloc = s.allocatable.as_ref().unwrap();
    assert_eq!(alloc["cpu"], q("2"));
    // Less the hard eviction thresholds: memory.available 100Mi, nodefs.available 10 %.
    assert_eq!(alloc["memory"], q("8092Mi"));
    // 100Gi less upstream's float32 10 % (0.1000000015 × capacity, truncated): not a round
    // number of Ki, so printed in bytes.
    assert_eq!(alloc["ephemeral-storage"], q("96636764000"));
    assert_eq!(alloc["pods"], q("110"));
    let addrs: Vec<(&str, &str)> = s
        .addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    assert_eq!(addrs, [("InternalIP", "10.0.0.2"), ("Hostname", "n1")]);
    assert_eq!(
        s.daemon_endpoints
            .as_ref()
            .unwrap()
            .kubelet_endpoint
            .as_ref()
            .unwrap()
            .port,
        10250
    );
    let ni = s.node_info.as_ref().unwrap();
    assert_eq!(ni.container_runtime_version, "runc://1.1.5+ds1");
    assert_eq!(ni.operating_system, "linux");
    assert_eq!(ni.os_image, "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(ni.machine_id, "m");
    assert_eq!(ni.boot_id, "b");
    assert_eq!(ni.kernel_version, "6.1.0");
    assert!(
        ni.kubelet_version.starts_with("v1.34.0-kubenode."),
        "{}",
        ni.kubelet_version
    );
}

/// `kubeReserved`, `systemReserved` and `evictionHard` reach the Node's allocatable.
#[test]
fn allocatable_less_the_configured_reservations() {
    let list = |items: &[(&str, &str)]| {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut id = id();
    id.node_allocatable = crate::config::reserved::NodeAllocatable::new(
        list(&[("cpu", "500m"), ("memory", "1Gi")]),
        list(&[
            ("cpu", "100m"),
            ("memory", "512Mi"),
            ("ephemeral-storage", "10Gi"),
        ]),
        list(&[("memory.available", "500Mi"), ("nodefs.available", "5Gi")]),
    )
    .unwrap();
    let s = node_status(&id, &info(), &observed(Ok(())), None, &at(1000));
    let cap = s.capacity.as_ref().unwrap();
    assert_eq!(cap["cpu"], q("2"));
    assert_eq!(cap["memory"], q("8Gi"));
    let alloc = s.allocatable.as_ref().unwrap();
    assert_eq!(alloc["cpu"], q("1400m"));
    assert_eq!(alloc["memory"], q("6156Mi"));
    assert_eq!(alloc["ephemeral-storage"], q("85Gi"));
    assert_eq!(alloc["pods"], q("110"));
}

#[test]
fn conditions_in_upstream_order_with_reasons() {
    let s = node_status(&id(), &info(), &observed(Ok(())), None, &at(1000));
    let got: Vec<(&str, &str, &str, &str)> = s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_deref().unwrap(),
                c.message.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available"
            ),
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure"
            ),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available"
            ),
            (
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status"
            ),
        ]
    );
}

#[test]
fn not_ready_without_a_pod_network() {
    let dir = std::env::temp_dir().join(format!("kn-node-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let network = network_ready(&dir);
    assert_eq!(network, Err(NETWORK_NOT_READY_MESSAGE.to_string()));
    let s = node_status(&id(), &info(), &observed(network), None, &at(1000));
    let ready = cond(&s, "Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(
        ready.message.as_deref(),
        Some(
            "container runtime network not ready: NetworkReady=false \
             reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not \
             initialized"
        )
    );
    // A network configuration appears: Ready.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let network = network_ready(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(network, Ok(()));
}

#[test]
fn heartbeat_moves_transition_only_on_change() {
    let s1 = node_status(&id(), &info(), &observed(Err("x".into())), None, &at(1000));
    assert_eq!(cond(&s1, "Ready").last_transition_time, Some(at(1000)));
    // Same status later: the heartbeat moves, the transition does not; not a change.
    let s2 = node_status(
        &id(),
        &info(),
        &observed(Err("x".into())),
        Some(&s1),
        &at(1010),
    );
    let r = cond(&s2, "Ready");
    assert_eq!(r.last_heartbeat_time, Some(at(1010)));
    assert_eq!(r.last_transition_time, Some(at(1000)));
    assert_eq!(
        cond(&s2, "MemoryPressure").last_transition_time,
        Some(at(1000))
    );
    assert!(!status_changed(&s1, &s2));
    // Ready now: the transition moves, and it is a change.
    let s3 = node_status(&id(), &info(), &observed(Ok(())), Some(&s2), &at(1020));
    let r = cond(&s3, "Ready");
    assert_eq!(r.status, "True");
    assert_eq!(r.last_transition_time, Some(at(1020)));
    assert_eq!(
        cond(&s3, "MemoryPressure").last_transition_time,
        Some(at(1000))
    );
    assert!(status_changed(&s2, &s3));
    // A new image is a change too.
    let mut o = observed(Ok(()));
    o.images = vec![ContainerImage {
        names: Some(vec!["a".into()]),
        size_bytes: Some(1),
    }];
    let s4 = node_status(&id(), &info(), &o, Some(&s3), &at(1030));
    assert!(status_changed(&s3, &s4));
}

#[test]
fn unreadable_machine_keeps_the_previous_capacity() {
    let s1 = node_status(&id(), &info(), &observed(Ok(())), None, &at(1000));
    let mut o = observed(Ok(()));
    o.machine = None;
    let s2 = node_status(&id(), &info(), &o, Some(&s1), &at(1010));
    assert_eq!(s2.capacity, s1.capacity);
    assert_eq!(s2.allocatable, s1.allocatable);
}

#[test]
fn quantities_as_upstream_prints_them() {
    assert_eq!(binary_quantity(0), q("0"));
    assert_eq!(binary_quantity(1000), q("1000"));
    assert_eq!(binary_quantity(8_141_236 * 1024), q("8141236Ki"));
    assert_eq!(binary_quantity(2 << 30), q("2Gi"));
    assert_eq!(cpu_quantity(1500), q("1500m"));
    assert_eq!(cpu_quantity(4000), q("4"));
}

fn image(reference: &str, size: u64) -> Image {
    Image {
        reference: reference.into(),
        manifest_digest: format!("sha256:{size:064x}"),
        config: Default::default(),
        layers: Vec::new(),
        size,
    }
}

#[test]
fn images_largest_first_at_most_fifty() {
    let mut images: Vec<Image> = (1..=60)
        .map(|i| image(&format!("127.0.0.1:5000/img{i}:v1"), i * 10))
        .collect();
    images.push(image("docker.io/library/busybox@sha256:ab", 5));
    let got = status_images(&images);
    assert_eq!(got.len(), MAX_IMAGES);
    assert_eq!(got[0].size_bytes, Some(600));
    assert_eq!(
        got[0].names.as_deref().unwrap(),
        [
            format!("127.0.0.1:5000/img60@sha256:{:064x}", 600),
            "127.0.0.1:5000/img60:v1".to_string()
        ]
    );
    assert_eq!(got[49].size_bytes, Some(110));
    assert_eq!(repository("host:5000/a/b"), "host:5000/a/b");
    assert_eq!(repository("a/b:1@sha256:x"), "a/b");
}

#[test]
fn os_release_pretty_name() {
    assert_eq!(
        pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
    assert_eq!(pretty_name("PRETTY_NAME=Alpine").as_deref(), Some("Alpine"));
    assert_eq!(pretty_name("NAME=x"), None);
}

#[test]
fn adoption_reconciles_only_missing_labels_and_annotation() {
    let wanted = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/os".into(), "linux".into()),
                ("disktype".into(), "ssd".into()),
            ])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH.into(),
                "true".into(),
            )])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    assert_eq!(reconcile_metadata(&wanted, &wanted), None);
    let mut existing = wanted.clone();
    existing.metadata.labels = Some(BTreeMap::from([
        ("kubernetes.io/os".into(), "linux".into()),
        ("other".into(), "kept".into()),
    ]));
    assert_eq!(
        reconcile_metadata(&existing, &wanted),
        Some(serde_json::json!({"metadata": {"labels": {"disktype": "ssd"}}}))
    );
}

#[test]
fn condition_events_on_first_status_and_on_transitions() {
    let s1 = node_status(&id(), &info(), &observed(Err("x".into())), None, &at(1000));
    assert_eq!(
        condition_events(None, &s1),
        [
            "NodeHasSufficientMemory",
            "NodeHasNoDiskPressure",
            "NodeHasSufficientPID",
            "NodeNotReady"
        ]
    );
    let s2 = node_status(
        &id(),
        &info(),
        &observed(Err("x".into())),
        Some(&s1),
        &at(1010),
    );
    assert!(condition_events(Some(&s1), &s2).is_empty());
    let s3 = node_status(&id(), &info(), &observed(Ok(())), Some(&s2), &at(1020));
    assert_eq!(condition_events(Some(&s2), &s3), ["NodeReady"]);
}

#[test]
fn pressure_conditions_come_from_the_eviction_manager() {
    let id = id();
    let mut o = observed(Ok(()));
    o.pressure = vec![crate::eviction::Pressure::Disk];
    let s = node_status(&id, &SystemInfo::default(), &o, None, &at(100));
    let disk = cond(&s, "DiskPressure");
    assert_eq!(
        (
            disk.status.as_str(),
            disk.reason.as_deref(),
            disk.message.as_deref()
        ),
        (
            "True",
            Some("KubeletHasDiskPressure"),
            Some("kubelet has disk pressure")
        )
    );
    assert_eq!(cond(&s, "MemoryPressure").status, "False");
    assert_eq!(cond(&s, "Ready").status, "True");
    assert_eq!(condition_events(None, &s)[1], "NodeHasDiskPressure");
    // Relieved: False again, a new transition time, the event of the change.
    let s2 = node_status(
        &id,
        &SystemInfo::default(),
        &observed(Ok(())),
        Some(&s),
        &at(400),
    );
    let disk2 = cond(&s2, "DiskPressure");
    assert_eq!(disk2.status, "False");
    assert_eq!(disk2.last_transition_time, Some(at(400)));
    assert_eq!(condition_events(Some(&s), &s2), ["NodeHasNoDiskPressure"]);
}
