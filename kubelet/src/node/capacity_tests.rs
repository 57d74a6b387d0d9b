use super::*;

use k8s_openapi::api::core::v1::ResourceRequirements;

const EXT_A: &str = "example.com/aaa";
const EXT_B: &str = "example.com/bbb";
const K8S_IO_A: &str = "kubernetes.io/something";
const HUGE_A: &str = "hugepages-2Mi";

/// A container requesting `milli` millicores, `memory` bytes and the scalar resources.
fn c(milli: i64, memory: i64, scalar: &[(&str, i64)]) -> Container {
    let mut requests = BTreeMap::new();
    if milli > 0 {
        requests.insert("cpu".to_string(), Quantity(format!("{milli}m")));
    }
    if memory > 0 {
        requests.insert("memory".to_string(), Quantity(memory.to_string()));
    }
    for (name, v) in scalar {
        requests.insert(name.to_string(), Quantity(v.to_string()));
    }
    Container {
        name: "c".into(),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(containers: Vec<Container>, init: Vec<Container>) -> PodSpec {
    PodSpec {
        containers,
        init_containers: (!init.is_empty()).then_some(init),
        ..Default::default()
    }
}

/// Upstream's test node: `makeAllocatableResources(10, 20, 32, 5, 20, 5)`.
fn node() -> Resources {
    Resources {
        milli_cpu: 10,
        memory: 20,
        ephemeral_storage: 20,
        pods: 32,
        scalar: [(EXT_A.to_string(), 5), (HUGE_A.to_string(), 5)].into(),
    }
}

fn short(resource: &str, requested: i64, used: i64, capacity: i64) -> Result<(), Insufficient> {
    Err(Insufficient {
        resource: resource.into(),
        requested,
        used,
        capacity,
    })
}

#[test]
fn enough_requests_as_upstream() {
    // Upstream fit_test.go `TestEnoughRequests`: (name, pod, the node's one other pod, the first
    // insufficient resource as the kubelet reports it).
    let cases: Vec<(&str, PodSpec, PodSpec, Result<(), Insufficient>)> =
        vec![
        (
            "no resources requested always fits",
            pod(vec![Container::default()], vec![]),
            pod(vec![c(10, 20, &[])], vec![]),
            Ok(()),
        ),
        (
            "too many resources fails",
            pod(vec![c(1, 1, &[])], vec![]),
            pod(vec![c(10, 20, &[])], vec![]),
            short("cpu", 1, 10, 10),
        ),
        (
            "too many resources fails due to init container cpu",
            pod(vec![c(1, 1, &[])], vec![c(3, 1, &[])]),
            pod(vec![c(8, 19, &[])], vec![]),
            short("cpu", 3, 8, 10),
        ),
        (
            "too many resources fails due to highest init container cpu",
            pod(vec![c(1, 1, &[])], vec![c(3, 1, &[]), c(2, 1, &[])]),
            pod(vec![c(8, 19, &[])], vec![]),
            short("cpu", 3, 8, 10),
        ),
        (
            "too many resources fails due to init container memory",
            pod(vec![c(1, 1, &[])], vec![c(1, 3, &[])]),
            pod(vec![c(9, 19, &[])], vec![]),
            short("memory", 3, 19, 20),
        ),
        (
            "init container fits because it's the max, not sum, of containers and init containers",
            pod(vec![c(1, 1, &[])], vec![c(1, 1, &[]), c(1, 1, &[])]),
            pod(vec![c(9, 19, &[])], vec![]),
            Ok(()),
        ),
        (
            "both resources fit",
            pod(vec![c(1, 1, &[])], vec![]),
            pod(vec![c(5, 5, &[])], vec![]),
            Ok(()),
        ),
        (
            "one resource memory fits",
            pod(vec![c(2, 1, &[])], vec![]),
            pod(vec![c(9, 5, &[])], vec![]),
            short("cpu", 2, 9, 10),
        ),
        (
            "one resource cpu fits",
            pod(vec![c(1, 2, &[])], vec![]),
            pod(vec![c(5, 19, &[])], vec![]),
            short("memory", 2, 19, 20),
        ),
        (
            "equal edge case",
            pod(vec![c(5, 1, &[])], vec![]),
            pod(vec![c(5, 19, &[])], vec![]),
            Ok(()),
        ),
        (
            "equal edge case for init container",
            pod(vec![c(4, 1, &[])], vec![c(5, 1, &[])]),
            pod(vec![c(5, 19, &[])], vec![]),
            Ok(()),
        ),
        (
            "extended resource fits",
            pod(vec![c(0, 0, &[(EXT_A, 1)])], vec![]),
            pod(vec![], vec![]),
            Ok(()),
        ),
        (
            "extended resource capacity enforced",
            pod(vec![c(1, 1, &[(EXT_A, 10)])], vec![]),
            pod(vec![c(0, 0, &[(EXT_A, 0)])], vec![]),
            short(EXT_A, 10, 0, 5),
        ),
        (
            "extended resource capacity enforced for init container",
            pod(vec![], vec![c(1, 1, &[(EXT_A, 10)])]),
            pod(vec![c(0, 0, &[(EXT_A, 0)])], vec![]),
            short(EXT_A, 10, 0, 5),
        ),
        (
            "extended resource allocatable enforced",
            pod(vec![c(1, 1, &[(EXT_A, 1)])], vec![]),
            pod(vec![c(0, 0, &[(EXT_A, 5)])], vec![]),
            short(EXT_A, 1, 5, 5),
        ),
        (
            "extended resource allocatable enforced for multiple containers",
            pod(vec![c(1, 1, &[(EXT_A, 3)]), c(1, 1, &[(EXT_A, 3)])], vec![]),
            pod(vec![c(0, 0, &[(EXT_A, 2)])], vec![]),
            short(EXT_A, 6, 2, 5),
        ),
        (
            "extended resource allocatable admits multiple init containers",
            pod(vec![], vec![c(1, 1, &[(EXT_A, 3)]), c(1, 1, &[(EXT_A, 3)])]),
            pod(vec![c(0, 0, &[(EXT_A, 2)])], vec![]),
            Ok(()),
        ),
        (
            "extended resource allocatable enforced for multiple init containers",
            pod(vec![], vec![c(1, 1, &[(EXT_A, 6)]), c(1, 1, &[(EXT_A, 3)])]),
            pod(vec![c(0, 0, &[(EXT_A, 2)])], vec![]),
            short(EXT_A, 6, 2, 5),
        ),
        // The scheduler enforces an extended resource the node does not know; the kubelet
        // drops it first (`removeMissingExtendedResources`) and admits the pod.
        (
            "extended resource unknown to the node is dropped by the kubelet",
            pod(vec![c(1, 1, &[(EXT_B, 1)])], vec![]),
            pod(vec![], vec![]),
            Ok(()),
        ),
        (
            "kubernetes.io resource capacity enforced",
            pod(vec![c(1, 1, &[(K8S_IO_A, 10)])], vec![]),
            pod(vec![], vec![]),
            short(K8S_IO_A, 10, 0, 0),
        ),
        (
            "hugepages resource capacity enforced",
            pod(vec![c(1, 1, &[(HUGE_A, 10)])], vec![]),
            pod(vec![c(0, 0, &[(HUGE_A, 0)])], vec![]),
            short(HUGE_A, 10, 0, 5),
        ),
        (
            "hugepages resource capacity enforced for init container",
            pod(vec![], vec![c(1, 1, &[(HUGE_A, 10)])]),
            pod(vec![c(0, 0, &[(HUGE_A, 0)])], vec![]),
            short(HUGE_A, 10, 0, 5),
        ),
        (
            "hugepages resource allocatable enforced for multiple containers",
            pod(vec![c(1, 1, &[(HUGE_A, 3)]), c(1, 1, &[(HUGE_A, 3)])], vec![]),
            pod(vec![c(0, 0, &[(HUGE_A, 2)])], vec![]),
            short(HUGE_A, 6, 2, 5),
        ),
    ];
    for (name, spec, other, want) in cases {
        assert_eq!(fits(&spec, &node(), [&other]), want, "{name}");
    }
}

#[test]
fn sidecars_and_overhead_count_and_other_pods_sum() {
    let mut sidecar = c(4, 0, &[]);
    sidecar.restart_policy = Some("Always".into());
    // A sidecar (4m) runs beside the containers (3m): 7m, and the overhead adds 2m.
    let mut spec = pod(vec![c(3, 0, &[])], vec![sidecar]);
    spec.overhead = Some([("cpu".to_string(), Quantity("2m".into()))].into());
    assert_eq!(pod_requests(&spec).milli_cpu, 9);
    let one = pod(vec![c(1, 0, &[])], vec![]);
    assert_eq!(fits(&spec, &node(), [&one]), Ok(()));
    assert_eq!(fits(&spec, &node(), [&one, &one]), short("cpu", 9, 2, 10));
}

#[test]
fn requests_round_up_as_upstream() {
    let mut spec = pod(vec![c(0, 0, &[])], vec![]);
    let requests = spec.containers[0]
        .resources
        .as_mut()
        .and_then(|r| r.requests.as_mut())
        .unwrap();
    requests.insert("cpu".into(), Quantity("1.0001".into()));
    requests.insert("memory".into(), Quantity("1500m".into()));
    requests.insert("ephemeral-storage".into(), Quantity("1Ki".into()));
    let r = pod_requests(&spec);
    assert_eq!(
        (r.milli_cpu, r.memory, r.ephemeral_storage),
        (1001, 2, 1024)
    );
}

#[test]
fn messages_and_reasons_as_upstream() {
    let e = Insufficient {
        resource: "cpu".into(),
        requested: 64000,
        used: 500,
        capacity: 2000,
    };
    assert_eq!(e.reason(), "OutOfcpu");
    assert_eq!(
        e.message(),
        "Node didn't have enough resource: cpu, requested: 64000, used: 500, capacity: 2000"
    );
    let e = Insufficient {
        resource: HUGE_A.into(),
        ..e
    };
    assert_eq!(e.reason(), "OutOfhugepages-2Mi");
}

/// A fake /proc and /sys below a temporary directory.
fn fake_root(online: &str, meminfo: &str, huge: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cpu = dir.path().join("sys/devices/system/cpu");
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(cpu.join("online"), online).unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(dir.path().join("proc/meminfo"), meminfo).unwrap();
    for (name, pages) in huge {
        let d = dir.path().join("sys/kernel/mm/hugepages").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("nr_hugepages"), pages).unwrap();
    }
    dir
}

const MEMINFO: &str = "MemTotal:        4022868 kB\nMemFree:          123456 kB\n";

#[test]
fn capacity_and_allocatable_from_proc_and_sys() {
    let root = fake_root(
        "0-2,5\n",
        MEMINFO,
        &[("hugepages-2048kB", "3\n"), ("hugepages-1048576kB", "0\n")],
    );
    let machine = Machine::read(root.path(), 50_000_000_000).unwrap();
    let capacity = machine.capacity(110);
    let mem = 4_022_868 * 1024;
    assert_eq!(
        capacity,
        Resources {
            milli_cpu: 4000,
            memory: mem,
            ephemeral_storage: 50_000_000_000,
            pods: 110,
            scalar: [
                ("hugepages-2Mi".to_string(), 3 << 21),
                ("hugepages-1Gi".to_string(), 0)
            ]
            .into(),
        }
    );
    let a = allocatable(&capacity, &NodeAllocatable::default());
    // memory.available<100Mi and the huge pages; nodefs.available<10% as a float32 (0.1f32 is
    // a hair over 0.1, so upstream reserves 5000000074 bytes of 50 GB).
    assert_eq!(a.memory, mem - (100 << 20) - (3 << 21));
    assert_eq!(a.ephemeral_storage, 50_000_000_000 - 5_000_000_074);
    assert_eq!((a.milli_cpu, a.pods), (4000, 110));
    assert_eq!(a.scalar, capacity.scalar);
}

#[test]
fn machine_without_huge_pages_and_bad_files() {
    let root = fake_root("0\n", MEMINFO, &[]);
    let m = Machine::read(root.path(), 0).unwrap();
    assert_eq!((m.cores, m.huge_pages.len()), (1, 0));
    let small = Resources {
        memory: 50 << 20,
        ..Default::default()
    };
    assert_eq!(
        allocatable(&small, &NodeAllocatable::default()).memory,
        0,
        "never below zero"
    );
    let root = fake_root("", MEMINFO, &[]);
    assert!(Machine::read(root.path(), 0).is_err(), "no online CPU");
    let root = fake_root("0-1", "MemFree: 1 kB\n", &[]);
    assert!(Machine::read(root.path(), 0).is_err(), "no MemTotal");
}

#[test]
fn huge_page_names_as_upstream_quantities() {
    assert_eq!(huge_page_resource(2 << 20), "hugepages-2Mi");
    assert_eq!(huge_page_resource(1 << 30), "hugepages-1Gi");
    assert_eq!(huge_page_resource(64 << 10), "hugepages-64Ki");
    assert_eq!(huge_page_resource(32 << 20), "hugepages-32Mi");
}

/// kubeReserved, systemReserved and the hard eviction thresholds are subtracted as upstream's
/// `GetNodeAllocatableReservation` sums them, each resource floored at zero.
#[test]
fn reservations_and_thresholds_subtracted() {
    let list = |items: &[(&str, &str)]| {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let reservation = NodeAllocatable::new(
        list(&[
            ("cpu", "500m"),
            ("memory", "1Gi"),
            ("ephemeral-storage", "1Gi"),
        ]),
        list(&[("cpu", "250m"), ("memory", "512Mi"), ("pid", "100")]),
        list(&[("memory.available", "10%"), ("nodefs.available", "2Gi")]),
    )
    .unwrap();
    let capacity = Resources {
        milli_cpu: 4000,
        memory: 8 << 30,
        ephemeral_storage: 100 << 30,
        pods: 110,
        scalar: [("hugepages-2Mi".to_string(), 4 << 21)].into(),
    };
    let a = allocatable(&capacity, &reservation);
    assert_eq!(a.milli_cpu, 3250);
    // 10 % of 8 GiB as float32 then truncated, as upstream's GetThresholdQuantity.
    let ten_percent = ((8i64 << 30) as f64 * f64::from(0.1f32)) as i64;
    assert_eq!(
        a.memory,
        (8 << 30) - (1 << 30) - (512 << 20) - ten_percent - (4 << 21)
    );
    assert_eq!(a.ephemeral_storage, (100 << 30) - (1 << 30) - (2 << 30));
    assert_eq!(a.pods, 110, "pods are never reserved");
    assert_eq!(a.scalar, capacity.scalar);

    // More reserved than there is: zero, never negative.
    let greedy = NodeAllocatable::new(
        list(&[("cpu", "8"), ("memory", "16Gi")]),
        BTreeMap::new(),
        BTreeMap::new(),
    )
    .unwrap();
    let a = allocatable(&capacity, &greedy);
    assert_eq!((a.milli_cpu, a.memory), (0, 0));
    // No threshold at all (an empty evictionHard): only the reservations.
    assert_eq!(a.ephemeral_storage, 100 << 30);
}

/// Admission checks requests against the allocatable resources left by the reservations.
#[test]
fn admission_sees_the_reservations() {
    let reservation = NodeAllocatable::new(
        [("cpu".to_string(), "1".to_string())].into(),
        BTreeMap::new(),
        BTreeMap::new(),
    )
    .unwrap();
    let capacity = Resources {
        milli_cpu: 2000,
        memory: 1 << 30,
        ..Default::default()
    };
    let a = allocatable(&capacity, &reservation);
    let pod = |cpu: &str| -> PodSpec {
        serde_json::from_value(
            serde_json::json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": cpu}}}]}),
        )
        .unwrap()
    };
    assert!(fits(&pod("1"), &a, []).is_ok());
    let e = fits(&pod("1500m"), &a, []).unwrap_err();
    assert_eq!(e.reason(), "OutOfcpu");
    assert_eq!(
        e.message(),
        "Node didn't have enough resource: cpu, requested: 1500, used: 0, capacity: 1000"
    );
}
