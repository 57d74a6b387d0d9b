use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::signals::{Observation, Observations};
use super::*;

fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn config(hard: &[(&str, &str)], soft: &[(&str, &str)], grace: &[(&str, &str)]) -> EvictionConfig {
    EvictionConfig::parse(
        &map(hard),
        &map(soft),
        &map(grace),
        &map(&[("memory.available", "100Mi")]),
        Duration::from_secs(300),
        0,
    )
    .unwrap()
}

const MI: i64 = 1 << 20;

fn memory(available: i64) -> Observations {
    let mut o = Observations::new();
    o.insert(
        Signal::MemoryAvailable,
        Observation {
            available,
            capacity: 8 << 30,
        },
    );
    o
}

#[test]
fn a_hard_threshold_sets_its_condition_and_acts_at_once_and_the_condition_waits_out_the_transition_period(
) {
    let c = config(&[("memory.available", "200Mi")], &[], &[]);
    let mut s = State::default();
    let t0 = Instant::now();
    let at = |secs: u64| t0 + Duration::from_secs(secs);
    assert!(s.update(&c, &memory(1 << 30), t0).is_empty());
    assert!(s.conditions.is_empty());

    let acting = s.update(&c, &memory(150 * MI), at(10));
    assert_eq!(acting.len(), 1);
    assert_eq!(acting[0].signal, Signal::MemoryAvailable);
    assert_eq!(s.conditions, [Pressure::Memory]);

    // 250Mi available: above the threshold, but not above it plus the minimum reclaim
    // (200Mi + 100Mi): still acting.
    assert_eq!(s.update(&c, &memory(250 * MI), at(20)).len(), 1);
    // 400Mi: resolved; the condition holds for the transition period after it was last met.
    assert!(s.update(&c, &memory(400 * MI), at(30)).is_empty());
    assert_eq!(s.conditions, [Pressure::Memory]);
    assert!(s.update(&c, &memory(400 * MI), at(20 + 299)).is_empty());
    assert_eq!(s.conditions, [Pressure::Memory]);
    s.update(&c, &memory(400 * MI), at(20 + 300));
    assert!(s.conditions.is_empty());
}

#[test]
fn a_soft_threshold_acts_only_after_its_grace_period() {
    let c = config(
        &[],
        &[("memory.available", "1Gi")],
        &[("memory.available", "1m")],
    );
    let mut s = State::default();
    let t0 = Instant::now();
    let at = |secs: u64| t0 + Duration::from_secs(secs);
    assert!(s.update(&c, &memory(512 * MI), t0).is_empty());
    // The condition is set at once, the eviction waits.
    assert_eq!(s.conditions, [Pressure::Memory]);
    assert!(s.update(&c, &memory(512 * MI), at(59)).is_empty());
    let acting = s.update(&c, &memory(512 * MI), at(60));
    assert_eq!(acting.len(), 1);
    assert!(!acting[0].is_hard());
    // Once no longer met, the grace period starts over.
    s.update(&c, &memory(4 << 30), at(70));
    assert!(s.update(&c, &memory(512 * MI), at(80)).is_empty());
}

#[test]
fn disk_and_pid_thresholds_set_their_conditions_memory_is_reclaimed_first() {
    let c = config(
        &[
            ("nodefs.available", "99%"),
            ("pid.available", "1k"),
            ("memory.available", "100Mi"),
        ],
        &[],
        &[],
    );
    let mut o = memory(50 * MI);
    o.insert(
        Signal::NodeFsAvailable,
        Observation {
            available: 500,
            capacity: 1000,
        },
    );
    o.insert(
        Signal::PidAvailable,
        Observation {
            available: 10,
            capacity: 4_194_304,
        },
    );
    let mut s = State::default();
    let acting = s.update(&c, &o, Instant::now());
    assert_eq!(
        s.conditions,
        [Pressure::Memory, Pressure::Disk, Pressure::Pid]
    );
    assert_eq!(
        threshold_to_reclaim(&acting).unwrap().signal,
        Signal::MemoryAvailable
    );
    let no_memory: Vec<Threshold> = acting
        .into_iter()
        .filter(|t| t.signal != Signal::MemoryAvailable)
        .collect();
    assert_eq!(
        threshold_to_reclaim(&no_memory).unwrap().signal,
        Signal::NodeFsAvailable
    );
    assert!(threshold_to_reclaim(&[]).is_none());
}

fn pod(qos: &str, source: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("p".into());
    p.metadata.annotations = Some(
        [(
            crate::source::CONFIG_SOURCE_ANNOTATION.to_string(),
            source.to_string(),
        )]
        .into(),
    );
    let resources = (qos == "Burstable").then(|| ResourceRequirements {
        requests: Some([("memory".to_string(), Quantity("64Mi".into()))].into()),
        ..Default::default()
    });
    p.spec = Some(PodSpec {
        containers: vec![Container {
            name: "c".into(),
            resources,
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

#[test]
fn admission_under_pressure_as_upstream() {
    let api = crate::cluster::pods::API_SOURCE;
    let be = pod("BestEffort", api);
    let burstable = pod("Burstable", api);
    assert_eq!(admit(&[], &be), Ok(()));
    // MemoryPressure alone: BestEffort refused, others admitted.
    assert_eq!(
        admit(&[Pressure::Memory], &be),
        Err((
            "Evicted",
            "The node had condition: [MemoryPressure]. ".into()
        ))
    );
    assert_eq!(admit(&[Pressure::Memory], &burstable), Ok(()));
    // A BestEffort pod tolerating the memory-pressure taint is admitted.
    let mut tolerant = be.clone();
    tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
        key: Some(TAINT_MEMORY_PRESSURE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    assert_eq!(admit(&[Pressure::Memory], &tolerant), Ok(()));
    // DiskPressure: every pod refused, the tolerant one too.
    assert_eq!(
        admit(&[Pressure::Disk], &burstable),
        Err(("Evicted", "The node had condition: [DiskPressure]. ".into()))
    );
    assert_eq!(
        admit(&[Pressure::Memory, Pressure::Disk], &tolerant),
        Err((
            "Evicted",
            "The node had condition: [MemoryPressure DiskPressure]. ".into()
        ))
    );
    // Static (file) pods and critical ones are always admitted.
    assert_eq!(admit(&[Pressure::Disk], &pod("BestEffort", "file")), Ok(()));
    let mut critical = be.clone();
    critical.spec.as_mut().unwrap().priority = Some(SYSTEM_CRITICAL_PRIORITY);
    assert_eq!(admit(&[Pressure::Disk], &critical), Ok(()));
    let mut mirror = be;
    mirror
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("kubernetes.io/config.mirror".into(), "x".into());
    assert!(is_critical(&mirror));
}

#[test]
fn conditions_read_as_upstream_setters_write_them() {
    assert_eq!(
        Pressure::Memory.reason_and_message(true),
        (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available"
        )
    );
    assert_eq!(
        Pressure::Disk.reason_and_message(false),
        ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
    );
    assert_eq!(
        Pressure::Pid.reason_and_message(true),
        (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available"
        )
    );
}

#[test]
fn soft_eviction_grace_is_the_pods_own_at_most_the_maximum() {
    let mut p = pod("BestEffort", "api");
    assert_eq!(soft_grace(&p, 0), Duration::from_secs(30));
    assert_eq!(soft_grace(&p, 10), Duration::from_secs(10));
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(5);
    assert_eq!(soft_grace(&p, 10), Duration::from_secs(5));
}

/// A node of 1000 bytes of disk whose reclaim steps free what the test says.
struct FakeHost {
    available: std::sync::Mutex<u64>,
    frees: BTreeMap<&'static str, u64>,
    calls: std::sync::Mutex<Vec<NodeReclaim>>,
    evicted: std::sync::Mutex<Vec<String>>,
    summaries: std::sync::atomic::AtomicUsize,
}

impl FakeHost {
    fn new(available: u64, containers_free: u64, images_free: u64) -> Arc<FakeHost> {
        Arc::new(FakeHost {
            available: std::sync::Mutex::new(available),
            frees: [("containers", containers_free), ("images", images_free)].into(),
            calls: Default::default(),
            evicted: Default::default(),
            summaries: Default::default(),
        })
    }
}

fn victim() -> Pod {
    let mut p = pod("BestEffort", crate::cluster::pods::API_SOURCE);
    p.metadata.uid = Some("victim-uid".into());
    p.metadata.namespace = Some("default".into());
    p
}

impl EvictionHost for FakeHost {
    fn summary(&self) -> Summary {
        self.summaries
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut s = Summary::default();
        s.node.fs = Some(crate::stats::types::FsStats {
            time: jiff::Timestamp::UNIX_EPOCH,
            available_bytes: Some(*self.available.lock().unwrap()),
            capacity_bytes: Some(1000),
            used_bytes: None,
            inodes_free: None,
            inodes: None,
            inodes_used: None,
        });
        s.pods.push(PodStats {
            pod_ref: crate::stats::types::PodReference {
                name: "p".into(),
                namespace: "default".into(),
                uid: "victim-uid".into(),
            },
            ..Default::default()
        });
        s
    }
    fn active_pods(&self) -> Vec<Pod> {
        vec![victim()]
    }
    fn reclaim(&self, what: NodeReclaim) -> BoxFuture<'_, Result<String, String>> {
        self.calls.lock().unwrap().push(what);
        let key = match what {
            NodeReclaim::Containers => "containers",
            NodeReclaim::Images => "images",
        };
        *self.available.lock().unwrap() += self.frees[key];
        Box::pin(async move {
            match what {
                // A failed step is logged; the next one still runs.
                NodeReclaim::Containers => Err("the runtime said no".to_string()),
                NodeReclaim::Images => Ok(format!("freed {}", self.frees[key])),
            }
        })
    }
    fn evict(&self, pod: &Pod, _grace: Duration, _message: &str) {
        self.evicted
            .lock()
            .unwrap()
            .push(pod.metadata.name.clone().unwrap_or_default());
    }
    fn is_active(&self, _uid: &str) -> bool {
        false
    }
    fn sources_ready(&self) -> bool {
        true
    }
}

fn manager(hard: &[(&str, &str)]) -> (Arc<Manager>, Recorder) {
    let events = Recorder::new(
        "n1",
        Arc::new(crate::backoff::TestClock::at_secs(1_700_000_000)),
    );
    (
        Manager::new(config(hard, &[], &[]), events.clone(), "n1"),
        events,
    )
}

#[tokio::test]
async fn disk_pressure_reclaims_dead_containers_then_images_and_evicts_nobody_when_that_is_enough()
{
    let (m, _) = manager(&[("nodefs.available", "50%")]);
    // 100 of 1000 bytes free; the reclaim frees 300 + 300: 700, above the 50 % threshold.
    let fake = FakeHost::new(100, 300, 300);
    let host: Arc<dyn EvictionHost> = fake.clone();
    assert!(m.synchronize(&host).await.is_none());
    assert_eq!(
        *fake.calls.lock().unwrap(),
        [NodeReclaim::Containers, NodeReclaim::Images]
    );
    assert!(fake.evicted.lock().unwrap().is_empty());
    // Observed once to decide, once again after the reclaim.
    assert_eq!(fake.summaries.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(m.conditions(), [Pressure::Disk]);
}

#[tokio::test]
async fn disk_pressure_evicts_when_the_reclaim_is_not_enough_with_the_annotated_event() {
    let (m, events) = manager(&[("nodefs.available", "50%")]);
    let fake = FakeHost::new(100, 100, 100);
    let host: Arc<dyn EvictionHost> = fake.clone();
    let evicted = m.synchronize(&host).await.expect("a pod evicted");
    assert_eq!(evicted.metadata.uid.as_deref(), Some("victim-uid"));
    assert_eq!(
        *fake.calls.lock().unwrap(),
        [NodeReclaim::Containers, NodeReclaim::Images]
    );
    assert_eq!(*fake.evicted.lock().unwrap(), ["p"]);
    let event = events
        .list()
        .into_iter()
        .find(|e| e.reason.as_deref() == Some(REASON))
        .expect("an Evicted event");
    let annotations = event.metadata.annotations.expect("annotations");
    assert_eq!(
        annotations
            .get(rank::STARVED_RESOURCE_KEY)
            .map(String::as_str),
        Some("ephemeral-storage")
    );
    assert_eq!(
        annotations
            .get(rank::OFFENDING_CONTAINERS_KEY)
            .map(String::as_str),
        Some("")
    );
    assert_eq!(
        annotations
            .get(rank::OFFENDING_CONTAINERS_USAGE_KEY)
            .map(String::as_str),
        Some("")
    );
}

#[test]
fn only_disk_signals_have_node_level_reclaim_dead_containers_first() {
    assert!(node_reclaim_funcs(Signal::MemoryAvailable).is_empty());
    assert!(node_reclaim_funcs(Signal::PidAvailable).is_empty());
    for s in [
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::ContainerFsAvailable,
        Signal::ContainerFsInodesFree,
    ] {
        assert_eq!(
            node_reclaim_funcs(s),
            [NodeReclaim::Containers, NodeReclaim::Images]
        );
    }
}
