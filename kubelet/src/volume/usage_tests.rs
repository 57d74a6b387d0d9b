use super::*;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

const MI: u64 = 1 << 20;

fn container(name: &str, limit: Option<&str>) -> Container {
    Container {
        name: name.into(),
        resources: limit.map(|l| ResourceRequirements {
            limits: Some([(EPHEMERAL_STORAGE.to_string(), K8sQuantity(l.into()))].into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn spec(containers: Vec<Container>) -> PodSpec {
    PodSpec {
        containers,
        ..Default::default()
    }
}

fn usage(containers: &[(&str, u64)], other: u64) -> PodUsage {
    PodUsage {
        containers: containers
            .iter()
            .map(|(n, b)| (n.to_string(), *b))
            .collect(),
        other,
    }
}

fn instance(name: &str, restart: u32, state: ContainerState, created_s: i64) -> ContainerStatus {
    ContainerStatus {
        id: format!("{name}-{restart}"),
        sandbox_id: "s".into(),
        name: name.into(),
        restart_count: restart,
        image: "i".into(),
        state,
        pid: None,
        exit_code: None,
        reason: None,
        message: None,
        created_at: jiff::Timestamp::from_second(created_s).unwrap(),
        started_at: None,
        finished_at: None,
        log_path: PathBuf::from(format!("/logs/ns_p_u/{name}/{restart}.log")),
    }
}

#[test]
fn messages_are_upstreams() {
    assert_eq!(
        exceeded_message("cache", "1Mi"),
        "Usage of EmptyDir volume \"cache\" exceeds the limit \"1Mi\". "
    );
    let q = |t| StorageQuantity::parse(t).unwrap();
    assert_eq!(
        pod_limit_message(&q("4Mi")),
        "Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. "
    );
    assert_eq!(
        container_limit_message("writer", &q("2Mi")),
        "Container writer exceeded its local ephemeral storage limit \"2Mi\". "
    );
}

#[test]
fn quantities_print_canonically_as_upstream() {
    let cases = [
        ("2Mi", "2Mi"),
        ("2048Ki", "2Mi"),
        ("1536Ki", "1536Ki"),
        ("1.5Gi", "1536Mi"),
        ("1000Ki", "1000Ki"),
        ("1Ki", "1Ki"),
        ("1000", "1k"),
        ("1500", "1500"),
        ("4000000", "4M"),
        ("2M", "2M"),
        ("1G", "1G"),
        ("0", "0"),
        ("2e6", "2e6"),
        ("1E", "1E"),
    ];
    for (text, printed) in cases {
        assert_eq!(
            StorageQuantity::parse(text).unwrap().to_string(),
            printed,
            "{text}"
        );
    }
    assert_eq!(StorageQuantity::parse("x"), None);
}

#[test]
fn pod_limit_sums_the_containers_keeping_the_first_format() {
    let s = spec(vec![
        container("a", Some("2Mi")),
        container("b", None),
        container("c", Some("2097152")),
    ]);
    let limit = pod_storage_limit(&s).unwrap();
    assert_eq!(limit.bytes(), 4 << 20);
    assert_eq!(limit.to_string(), "4Mi");
    // A zero first term takes the next one's format (upstream `Quantity.Add`).
    let s = spec(vec![container("a", Some("0")), container("b", Some("1Mi"))]);
    assert_eq!(pod_storage_limit(&s).unwrap().to_string(), "1Mi");
    assert_eq!(
        pod_storage_limit(&spec(vec![container("a", None)])),
        None,
        "no limit declared: none"
    );
}

#[test]
fn pod_limit_takes_the_larger_init_container_and_adds_sidecars_and_overhead() {
    let mut s = spec(vec![container("app", Some("1Mi"))]);
    s.init_containers = Some(vec![container("init", Some("8Mi"))]);
    assert_eq!(pod_storage_limit(&s).unwrap().to_string(), "8Mi");

    let mut sidecar = container("side", Some("1Mi"));
    sidecar.restart_policy = Some("Always".into());
    s.init_containers = Some(vec![sidecar, container("init", Some("2Mi"))]);
    // app + side = 2Mi; init runs next to side: 3Mi.
    assert_eq!(pod_storage_limit(&s).unwrap().to_string(), "3Mi");

    s.init_containers = None;
    s.overhead = Some([(EPHEMERAL_STORAGE.to_string(), K8sQuantity("1Mi".into()))].into());
    assert_eq!(pod_storage_limit(&s).unwrap().to_string(), "2Mi");
    // A zero limit gets no overhead (upstream adds it to non-zero limits only).
    let mut s = spec(vec![container("app", Some("0"))]);
    s.overhead = Some([(EPHEMERAL_STORAGE.to_string(), K8sQuantity("1Mi".into()))].into());
    assert_eq!(pod_storage_limit(&s).unwrap().to_string(), "0");
    // Overhead alone sets no limit.
    let mut s = spec(vec![container("app", None)]);
    s.overhead = Some([(EPHEMERAL_STORAGE.to_string(), K8sQuantity("1Mi".into()))].into());
    assert_eq!(pod_storage_limit(&s), None);
}

#[test]
fn a_container_over_its_own_limit_is_evicted_with_its_message() {
    let s = spec(vec![
        container("writer", Some("2Mi")),
        container("idle", Some("8Mi")),
    ]);
    assert_eq!(
        storage_limit_message(&s, &usage(&[("writer", 4 * MI), ("idle", 0)], 4096)).as_deref(),
        Some("Container writer exceeded its local ephemeral storage limit \"2Mi\". ")
    );
    // Exactly at the limit is not over it.
    assert_eq!(
        storage_limit_message(&s, &usage(&[("writer", 2 * MI), ("idle", 0)], 0)),
        None
    );
}

#[test]
fn a_pod_over_the_sum_is_evicted_with_the_pod_message_first() {
    let s = spec(vec![
        container("a", Some("2Mi")),
        container("b", Some("2Mi")),
    ]);
    // Each container within its own limit, the pod over the 4Mi total.
    assert_eq!(
        storage_limit_message(&s, &usage(&[("a", 2 * MI), ("b", 2 * MI)], 8192)).as_deref(),
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. ")
    );
    // Upstream checks the pod before the containers: one container far over its limit
    // also puts the pod over the total.
    assert_eq!(
        storage_limit_message(&s, &usage(&[("a", 5 * MI), ("b", 0)], 0)).as_deref(),
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. ")
    );
    assert_eq!(
        storage_limit_message(&s, &usage(&[("a", MI), ("b", MI)], MI)),
        None
    );
}

#[test]
fn containers_without_a_limit_count_toward_the_pod_total_only() {
    let s = spec(vec![
        container("limited", Some("4Mi")),
        container("free", None),
    ]);
    // `free` is not checked on its own, but its usage counts in the pod's.
    assert_eq!(
        storage_limit_message(&s, &usage(&[("limited", MI), ("free", 5 * MI)], 0)).as_deref(),
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. ")
    );
    assert_eq!(
        storage_limit_message(
            &spec(vec![container("free", None)]),
            &usage(&[("free", u64::MAX)], 0)
        ),
        None
    );
    // A zero container limit is no container check (upstream skips `Value() == 0`), but the
    // pod total of zero is exceeded by any usage, as upstream.
    let s = spec(vec![container("z", Some("0"))]);
    assert_eq!(storage_limit_message(&s, &usage(&[("z", 0)], 0)), None);
    assert_eq!(
        storage_limit_message(&s, &usage(&[("z", 4096)], 0)).as_deref(),
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 0. ")
    );
}

#[test]
fn the_running_instance_counts_else_the_latest() {
    let all = [
        instance("a", 0, ContainerState::Exited, 10),
        instance("a", 1, ContainerState::Running, 20),
        instance("b", 0, ContainerState::Exited, 10),
        instance("b", 1, ContainerState::Exited, 30),
        instance("c", 0, ContainerState::Created, 5),
    ];
    let mut ids: Vec<&str> = counted_instances(&all)
        .into_iter()
        .map(|s| s.id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a-1", "b-1", "c-0"]);
    let st = ContainerStorage::of(&all[1], PathBuf::from("/root/containers/a-1/upper"));
    assert_eq!(st.log_dir, PathBuf::from("/logs/ns_p_u/a"));
    assert_eq!(st.name, "a");
}

#[test]
fn usage_counts_written_bytes_in_subdirectories_and_hard_links_once() {
    let tmp = tempfile::tempdir().unwrap();
    let before = disk_usage(tmp.path()).unwrap();
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    std::fs::write(tmp.path().join("sub/big"), vec![7u8; 256 * 1024]).unwrap();
    let after = disk_usage(tmp.path()).unwrap();
    assert!(after >= before + 256 * 1024, "{before} -> {after}");
    std::fs::hard_link(tmp.path().join("sub/big"), tmp.path().join("link")).unwrap();
    let linked = disk_usage(tmp.path()).unwrap();
    assert!(
        linked < after + 256 * 1024,
        "{after} -> {linked}: counted twice"
    );
}

#[test]
fn container_usage_adds_the_writable_layer_and_the_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let st = ContainerStorage {
        name: "c".into(),
        writable_layer: tmp.path().join("upper"),
        log_dir: tmp.path().join("logs"),
    };
    assert_eq!(st.usage(), 0, "neither exists yet");
    std::fs::create_dir(&st.writable_layer).unwrap();
    std::fs::create_dir(&st.log_dir).unwrap();
    std::fs::write(st.writable_layer.join("f"), vec![1u8; 128 * 1024]).unwrap();
    std::fs::write(st.log_dir.join("0.log"), vec![2u8; 128 * 1024]).unwrap();
    assert!(st.usage() >= 256 * 1024, "{}", st.usage());
}
