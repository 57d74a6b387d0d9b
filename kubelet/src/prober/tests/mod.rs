//! Unit tests of the prober: accounting, gating, defaults, header and redirect rules, and whole
//! workers against a recording host with tokio's paused time. `mechanisms`: exec-free probes
//! against loopback servers.

mod mechanisms;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPHeader, Pod, Probe};
use kubenode_runtime::{ContainerState, ContainerStatus};

use super::http::{request_headers, user_agent, Url};
use super::worker::{should_probe, Accounting, Settings};
use super::*;
use crate::backoff::TestClock;

#[test]
fn defaults_and_minimums() {
    let s = Settings::of(&Probe::default());
    assert_eq!(s.initial_delay, Duration::ZERO);
    assert_eq!(s.period, Duration::from_secs(10));
    assert_eq!(s.timeout, Duration::from_secs(1));
    assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
    let s = Settings::of(&Probe {
        period_seconds: Some(0),
        timeout_seconds: Some(0),
        failure_threshold: Some(0),
        ..Default::default()
    });
    assert_eq!(s.period, Duration::from_secs(1));
    assert_eq!(s.timeout, Duration::from_secs(1));
    assert_eq!(s.failure_threshold, 1);
}

#[test]
fn results_change_only_past_their_thresholds() {
    let mut a = Accounting::new(&Settings {
        success_threshold: 2,
        failure_threshold: 3,
        ..Settings::of(&Probe::default())
    });
    use ProbeResult::*;
    assert_eq!(a.observe(Failure), None);
    assert_eq!(a.observe(Failure), None);
    assert_eq!(a.observe(Success), None, "a success resets the failure run");
    assert_eq!(a.observe(Failure), None);
    assert_eq!(a.observe(Failure), None);
    assert_eq!(a.observe(Failure), Some(Failure));
    assert_eq!(a.observe(Failure), Some(Failure), "stays settled");
    assert_eq!(a.observe(Success), None);
    assert_eq!(a.observe(Success), Some(Success));
}

#[test]
fn initial_results() {
    assert_eq!(ProbeKind::Liveness.initial(), ProbeResult::Success);
    assert_eq!(ProbeKind::Readiness.initial(), ProbeResult::Failure);
    assert_eq!(ProbeKind::Startup.initial(), ProbeResult::Unknown);
}

#[test]
fn startup_gates_the_others_and_the_initial_delay_gates_all() {
    use ProbeKind::*;
    assert!(!should_probe(Liveness, true, false, false));
    assert!(!should_probe(Readiness, true, false, false));
    assert!(should_probe(Startup, true, false, false));
    assert!(should_probe(Liveness, true, true, false));
    assert!(
        !should_probe(Startup, true, true, false),
        "idle once started"
    );
    assert!(should_probe(Readiness, false, false, false));
    assert!(!should_probe(Readiness, false, false, true));
}

#[test]
fn default_headers_and_overrides() {
    assert_eq!(user_agent(), "kube-probe/1.34");
    let h = request_headers(&[]);
    assert_eq!(
        h,
        [
            ("User-Agent".to_string(), "kube-probe/1.34".to_string()),
            ("Accept".to_string(), "*/*".to_string())
        ]
    );
    let hdr = |n: &str, v: &str| HTTPHeader {
        name: n.into(),
        value: v.into(),
    };
    let h = request_headers(&[hdr("X-Token", "a"), hdr("accept", "text/plain")]);
    assert!(h.contains(&("accept".into(), "text/plain".into())));
    assert!(!h.iter().any(|(n, _)| n == "Accept"), "{h:?}");
    let h = request_headers(&[hdr("User-Agent", ""), hdr("Accept", "")]);
    assert!(h.is_empty(), "an empty value removes the default: {h:?}");
}

#[test]
fn redirect_locations_resolve_against_the_url() {
    let base = Url {
        https: false,
        host: "10.0.0.1".into(),
        port: 8080,
        path: "/a/b?x=1".into(),
    };
    assert_eq!(
        base.join("/c").unwrap().to_string(),
        "http://10.0.0.1:8080/c"
    );
    assert_eq!(
        base.join("c").unwrap().to_string(),
        "http://10.0.0.1:8080/a/c"
    );
    let other = base.join("https://example.com/z").unwrap();
    assert_eq!(
        (other.host.as_str(), other.port, other.https),
        ("example.com", 443, true)
    );
    let port = base.join("//10.0.0.1:81").unwrap();
    assert_eq!(port.to_string(), "http://10.0.0.1:81/");
    assert!(base.join("ftp://x/").is_none());
}

// ---- whole workers against a recording host ----

#[derive(Debug, Default)]
struct FakeHost {
    /// Exit codes returned by successive execs of each command (then 0).
    script: Mutex<HashMap<String, VecDeque<i32>>>,
    execs: Mutex<Vec<String>>,
    kills: Mutex<Vec<(String, Duration)>>,
    /// Kills that fail before one succeeds.
    failing_kills: AtomicUsize,
}

impl FakeHost {
    fn script(&self, cmd: &str, codes: &[i32]) {
        self.script
            .lock()
            .unwrap()
            .insert(cmd.into(), codes.iter().copied().collect());
    }
    fn execs_of(&self, cmd: &str) -> usize {
        self.execs
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == cmd)
            .count()
    }
}

impl ProbeHost for FakeHost {
    fn exec(&self, _id: &str, cmd: &[String], _t: Duration) -> Result<ExecOutcome, HostError> {
        let cmd = cmd.join(" ");
        self.execs.lock().unwrap().push(cmd.clone());
        let code = self
            .script
            .lock()
            .unwrap()
            .get_mut(&cmd)
            .and_then(VecDeque::pop_front)
            .unwrap_or(0);
        Ok(ExecOutcome {
            exit_code: code,
            output: format!("{cmd} said {code}").into_bytes(),
            timed_out: false,
        })
    }
    fn kill(&self, request: Kill) -> BoxFuture<Result<(), HostError>> {
        self.kills
            .lock()
            .unwrap()
            .push((request.container_id, request.grace));
        let fail = self
            .failing_kills
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move {
            if fail {
                Err(HostError::Other("runc kill: busy".into()))
            } else {
                Ok(())
            }
        })
    }
}

fn exec_probe(cmd: &str, period: i32, failure: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(cmd.split(' ').map(String::from).collect()),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure),
        ..Default::default()
    }
}

fn pod_with(c: Container) -> Pod {
    crate::testing::pod()
        .name("web")
        .namespace("default")
        .uid("uid-1")
        .containers([c])
        .with_spec(|s| s.termination_grace_period_seconds = Some(7))
        .build()
}

fn running(name: &str, id: &str) -> ContainerStatus {
    ContainerStatus {
        id: id.into(),
        sandbox_id: "s".into(),
        name: name.into(),
        restart_count: 0,
        image: "busybox".into(),
        state: ContainerState::Running,
        pid: Some(1),
        exit_code: None,
        reason: None,
        message: None,
        created_at: "2026-11-28T00:00:00Z".parse().unwrap(),
        started_at: None,
        finished_at: None,
        log_path: Default::default(),
    }
}

struct Setup {
    host: Arc<FakeHost>,
    prober: Prober,
    events: Recorder,
    wakes: Arc<AtomicUsize>,
}

fn setup() -> Setup {
    let host = Arc::new(FakeHost::default());
    let clock = Arc::new(TestClock::at_secs(1_800_000_000));
    let events = Recorder::new("node", clock.clone());
    let wakes = Arc::new(AtomicUsize::new(0));
    let w = wakes.clone();
    let prober = Prober::new(
        host.clone(),
        events.clone(),
        clock,
        Box::new(move |_| {
            w.fetch_add(1, Ordering::SeqCst);
        }),
    );
    Setup {
        host,
        prober,
        events,
        wakes,
    }
}

/// A prober that started long ago: no first-probe jitter (paused time makes the wait free).
async fn settled() -> Setup {
    let s = setup();
    tokio::time::sleep(Duration::from_secs(60)).await;
    s
}

fn messages(events: &Recorder, reason: &str) -> Vec<(String, i32)> {
    events
        .list()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| (e.message.unwrap_or_default(), e.count.unwrap_or(1)))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn liveness_kills_after_the_failure_threshold_with_the_probe_grace() {
    let s = settled().await;
    let mut probe = exec_probe("check", 1, 3);
    probe.termination_grace_period_seconds = Some(2);
    let c = Container {
        name: "app".into(),
        liveness_probe: Some(probe),
        ..Default::default()
    };
    s.host.script("check", &[0, 1, 1, 1]);
    let pod = pod_with(c.clone());
    s.prober
        .sync_pod(&pod, "10.244.1.5", &[running("app", "c1")]);
    assert_eq!(s.prober.worker_count(), 1);
    assert_eq!(
        s.prober.status(&c, "c1"),
        (true, None),
        "liveness starts as success"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        s.host.kills.lock().unwrap().is_empty(),
        "two failures are not enough"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        *s.host.kills.lock().unwrap(),
        [("c1".to_string(), Duration::from_secs(2))]
    );
    assert_eq!(
        messages(&s.events, "Unhealthy"),
        [("Liveness probe failed: check said 1".to_string(), 3)]
    );
    assert_eq!(
        messages(&s.events, "Killing"),
        [(
            "Container app failed liveness probe, will be restarted".to_string(),
            1
        )]
    );
    assert!(s.wakes.load(Ordering::SeqCst) >= 1);
    let probes_then = s.host.execs_of("check");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        s.host.execs_of("check"),
        probes_then,
        "no probing after the kill"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_kill_is_retried_on_the_next_failure() {
    let s = settled().await;
    s.host.failing_kills.store(1, Ordering::SeqCst);
    let c = Container {
        name: "app".into(),
        liveness_probe: Some(exec_probe("check", 1, 1)),
        ..Default::default()
    };
    s.host.script("check", &[1, 1, 1]);
    s.prober
        .sync_pod(&pod_with(c), "10.244.1.5", &[running("app", "c1")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.host.kills.lock().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.host.kills.lock().unwrap().len(), 2, "retried");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.host.kills.lock().unwrap().len(), 2, "done once it worked");
}

#[tokio::test(start_paused = true)]
async fn startup_gates_liveness_and_readiness_until_it_succeeds() {
    let s = settled().await;
    let c = Container {
        name: "app".into(),
        startup_probe: Some(exec_probe("started", 1, 30)),
        liveness_probe: Some(exec_probe("alive", 1, 1)),
        readiness_probe: Some(exec_probe("ready", 1, 1)),
        ..Default::default()
    };
    s.host.script("started", &[1, 1, 1, 1, 0]);
    let pod = pod_with(c.clone());
    s.prober
        .sync_pod(&pod, "10.244.1.5", &[running("app", "c1")]);
    assert_eq!(s.prober.worker_count(), 3);
    assert_eq!(s.prober.status(&c, "c1"), (false, Some(false)));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(s.host.execs_of("alive"), 0);
    assert_eq!(s.host.execs_of("ready"), 0);
    assert_eq!(s.prober.status(&c, "c1"), (false, Some(false)));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.host.execs_of("started"),
        5,
        "the startup probe stops once started"
    );
    assert!(s.host.execs_of("alive") >= 1);
    assert_eq!(s.prober.status(&c, "c1"), (true, Some(true)));
    assert!(s.host.kills.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn startup_failure_kills_and_a_new_instance_starts_fresh() {
    let s = settled().await;
    let c = Container {
        name: "app".into(),
        startup_probe: Some(exec_probe("started", 1, 2)),
        readiness_probe: Some(exec_probe("ready", 1, 1)),
        ..Default::default()
    };
    s.host.script("started", &[1, 1]);
    let mut pod = pod_with(c.clone());
    pod.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    s.prober
        .sync_pod(&pod, "10.244.1.5", &[running("app", "c1")]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        *s.host.kills.lock().unwrap(),
        [("c1".to_string(), Duration::from_secs(7))],
        "the pod's grace period without a probe-level one"
    );
    assert_eq!(
        messages(&s.events, "Killing"),
        [("Container app failed startup probe".to_string(), 1)]
    );
    let mut exited = running("app", "c1");
    exited.state = ContainerState::Exited;
    let mut next = running("app", "c2");
    next.restart_count = 1;
    s.prober.sync_pod(&pod, "10.244.1.5", &[exited, next]);
    assert_eq!(s.prober.status(&c, "c2"), (false, Some(false)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.prober.status(&c, "c2"), (true, Some(true)));
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    s.prober.sync_pod(&pod, "10.244.1.5", &[]);
    assert_eq!(s.prober.worker_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_both_ways_and_wakes_the_pod() {
    let s = settled().await;
    let mut probe = exec_probe("ready", 1, 2);
    probe.success_threshold = Some(2);
    probe.initial_delay_seconds = Some(3);
    let c = Container {
        name: "app".into(),
        readiness_probe: Some(probe),
        ..Default::default()
    };
    s.host.script("ready", &[0, 0, 1, 1, 0, 0]);
    s.prober
        .sync_pod(&pod_with(c.clone()), "10.244.1.5", &[running("app", "c1")]);
    tokio::time::sleep(Duration::from_millis(2900)).await;
    assert_eq!(s.host.execs_of("ready"), 0, "initial delay");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!s.prober.status(&c, "c1").0, "one success of two");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(s.prober.status(&c, "c1").0);
    let wakes = s.wakes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!s.prober.status(&c, "c1").0, "two failures");
    assert!(s.wakes.load(Ordering::SeqCst) > wakes);
    assert!(
        s.host.kills.lock().unwrap().is_empty(),
        "readiness never kills"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.prober.status(&c, "c1").0);
    assert_eq!(
        s.prober.last("c1", ProbeKind::Readiness).unwrap().detail,
        "ready said 0"
    );
}

#[test]
fn first_probe_jitter_stays_within_one_period() {
    let period = Duration::from_secs(10);
    let draws: Vec<Duration> = (0..20).map(|_| super::worker::jitter(period)).collect();
    assert!(draws.iter().all(|d| *d < period));
    assert!(draws.iter().any(|d| *d != draws[0]), "{draws:?}");
}

#[tokio::test(start_paused = true)]
async fn a_fresh_prober_delays_first_probes_a_settled_one_does_not() {
    let c = Container {
        name: "app".into(),
        liveness_probe: Some(exec_probe("alive", 10, 3)),
        ..Default::default()
    };
    let s = settled().await;
    s.prober
        .sync_pod(&pod_with(c.clone()), "10.244.1.5", &[running("app", "c1")]);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(s.host.execs_of("alive"), 1);
    // Fresh: many containers' first probes spread over the period.
    let s = setup();
    let pods: Vec<Pod> = (0..10)
        .map(|i| {
            let mut p = pod_with(c.clone());
            p.metadata.uid = Some(format!("uid-{i}"));
            p
        })
        .collect();
    for (i, p) in pods.iter().enumerate() {
        s.prober
            .sync_pod(p, "10.244.1.5", &[running("app", &format!("c{i}"))]);
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(s.host.execs_of("alive") < 10);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(s.host.execs_of("alive"), 10);
}
