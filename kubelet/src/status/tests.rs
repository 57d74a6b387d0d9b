//! Pod status generation, after upstream `status/generate_test.go` and `qos_test.go`.

use super::*;
use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

fn ctr(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some("busybox".into()),
        ..Container::default()
    }
}

fn spec(policy: &str, inits: &[&str], ctrs: &[&str]) -> PodSpec {
    PodSpec {
        restart_policy: Some(policy.into()),
        init_containers: (!inits.is_empty()).then(|| inits.iter().map(|n| ctr(n)).collect()),
        containers: ctrs.iter().map(|n| ctr(n)).collect(),
        ..PodSpec::default()
    }
}

fn pod(s: PodSpec) -> Pod {
    crate::testing::pod()
        .name("web-n1")
        .annotation(crate::source::CONFIG_SOURCE_ANNOTATION, "file")
        .spec(s)
        .build()
}

fn observed(name: &str, state: ObservedState, ready: bool) -> ObservedContainer {
    ObservedContainer {
        name: name.into(),
        container_id: Some(format!("runc://{name}")),
        image: None,
        image_id: "sha256:1".into(),
        restart_count: 0,
        state,
        last_terminated: None,
        ready,
        started: None,
    }
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn cond<'a>(st: &'a PodStatus, t: &str) -> &'a k8s_openapi::api::core::v1::PodCondition {
    st.conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == t)
        .unwrap()
}

#[test]
fn status_lifecycle_and_transition_times() {
    let p = pod(spec("Always", &[], &["a", "b"]));
    let mut obs = ObservedPod {
        pod_ips: vec!["10.244.0.5".parse().unwrap()],
        host_ips: vec!["10.0.0.1".parse().unwrap()],
        ..Default::default()
    };
    let s1 = generate_pod_status(&p, &obs, None, ts(100));
    assert_eq!(s1.phase.as_deref(), Some(PENDING));
    let types: Vec<_> = s1
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(
        types,
        vec![
            POD_READY_TO_START_CONTAINERS,
            INITIALIZED,
            READY,
            CONTAINERS_READY,
            POD_SCHEDULED
        ]
    );
    assert_eq!(cond(&s1, POD_READY_TO_START_CONTAINERS).status, "False");
    assert_eq!(cond(&s1, INITIALIZED).status, "True");
    let r = cond(&s1, READY);
    assert_eq!(
        (r.status.as_str(), r.reason.as_deref()),
        ("False", Some(CONTAINERS_NOT_READY))
    );
    assert_eq!(
        r.message.as_deref(),
        Some("containers with unready status: [a b]")
    );
    let cs = &s1.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some(reason::CONTAINER_CREATING)
    );
    assert_eq!(s1.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(s1.pod_ip.as_deref(), Some("10.244.0.5"));
    assert_eq!(s1.start_time.as_ref().unwrap().0, ts(100));

    obs.sandbox_ready = true;
    obs.containers = vec![
        observed(
            "a",
            ObservedState::Running {
                started_at: ts(105),
            },
            true,
        ),
        observed(
            "b",
            ObservedState::Running {
                started_at: ts(105),
            },
            false,
        ),
    ];
    let s2 = generate_pod_status(&p, &obs, Some(&s1), ts(110));
    assert_eq!(s2.phase.as_deref(), Some(RUNNING));
    assert_eq!(
        cond(&s2, POD_READY_TO_START_CONTAINERS)
            .last_transition_time
            .as_ref()
            .unwrap()
            .0,
        ts(110)
    );
    // Ready stayed False: its transition time is kept.
    assert_eq!(
        cond(&s2, READY).last_transition_time.as_ref().unwrap().0,
        ts(100)
    );
    assert_eq!(
        cond(&s2, READY).message.as_deref(),
        Some("containers with unready status: [b]")
    );
    assert_eq!(s2.start_time.as_ref().unwrap().0, ts(100));

    obs.containers[1].ready = true;
    let s3 = generate_pod_status(&p, &obs, Some(&s2), ts(120));
    assert_eq!(cond(&s3, READY).status, "True");
    assert_eq!(
        cond(&s3, READY).last_transition_time.as_ref().unwrap().0,
        ts(120)
    );
    assert_eq!(
        cond(&s3, POD_SCHEDULED)
            .last_transition_time
            .as_ref()
            .unwrap()
            .0,
        ts(100)
    );
    let cs = &s3.container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready && cs.started == Some(true));
    assert_eq!(cs.container_id.as_deref(), Some("runc://a"));
    assert_eq!(cs.image, "busybox");
}

#[test]
fn crash_loop_status_and_terminal_stickiness() {
    let p = pod(spec("Never", &["init"], &["a"]));
    let done = Terminated {
        exit_code: 0,
        reason: terminated_reason(0, false, false).into(),
        finished_at: Some(ts(50)),
        ..Default::default()
    };
    let failed = Terminated {
        exit_code: 3,
        reason: terminated_reason(3, false, false).into(),
        ..Default::default()
    };
    let obs = ObservedPod {
        sandbox_ready: true,
        containers: vec![
            observed("init", ObservedState::Terminated(done), false),
            observed("a", ObservedState::Terminated(failed.clone()), false),
        ],
        ..Default::default()
    };
    let s = generate_pod_status(&p, &obs, None, ts(60));
    assert_eq!(s.phase.as_deref(), Some(FAILED));
    assert_eq!(cond(&s, READY).reason.as_deref(), Some(POD_FAILED));
    assert_eq!(cond(&s, INITIALIZED).status, "True");
    let ics = &s.init_container_statuses.as_ref().unwrap()[0];
    assert!(ics.ready, "an init container that exited 0 is ready");
    let t = s.container_statuses.as_ref().unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));

    // Failed stays Failed even if the runtime later reports something else.
    let later = ObservedPod {
        sandbox_ready: true,
        ..Default::default()
    };
    let s2 = generate_pod_status(&p, &later, Some(&s), ts(70));
    assert_eq!(s2.phase.as_deref(), Some(FAILED));

    // Back-off: waiting with the message, last state terminated.
    let p = pod(spec("Always", &[], &["a"]));
    let mut c = observed(
        "a",
        ObservedState::Waiting {
            reason: reason::CRASH_LOOP_BACK_OFF.into(),
            message: Some(
                "back-off 10s restarting failed container=a pod=web-n1_default(u)".into(),
            ),
        },
        false,
    );
    c.last_terminated = Some(failed);
    c.restart_count = 1;
    let obs = ObservedPod {
        sandbox_ready: true,
        containers: vec![c],
        ..Default::default()
    };
    let s = generate_pod_status(&p, &obs, None, ts(80));
    assert_eq!(s.phase.as_deref(), Some(RUNNING));
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    let w = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(
        cs.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        3
    );
    assert_eq!(
        (cs.restart_count, cs.ready, cs.started),
        (1, false, Some(false))
    );
}

#[test]
fn init_pending_condition_messages() {
    let p = pod(spec("Always", &["i1", "i2"], &["a"]));
    let obs = ObservedPod {
        sandbox_ready: true,
        containers: vec![observed(
            "i1",
            ObservedState::Running { started_at: ts(1) },
            false,
        )],
        ..Default::default()
    };
    let s = generate_pod_status(&p, &obs, None, ts(2));
    assert_eq!(s.phase.as_deref(), Some(PENDING));
    let c = cond(&s, INITIALIZED);
    assert_eq!(c.reason.as_deref(), Some(CONTAINERS_NOT_INITIALIZED));
    assert_eq!(
        c.message.as_deref(),
        Some("containers with incomplete status: [i1 i2]")
    );
    let app = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        app.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some(reason::POD_INITIALIZING)
    );
}

#[test]
fn reasons_and_rejection() {
    assert_eq!(terminated_reason(0, false, false), "Completed");
    assert_eq!(terminated_reason(1, false, false), "Error");
    assert_eq!(terminated_reason(137, true, false), "OOMKilled");
    assert_eq!(
        terminated_reason(START_ERROR_EXIT_CODE, false, true),
        "StartError"
    );
    let p = pod(spec("Always", &[], &["a"]));
    let s = rejected_status(&p, OUT_OF_PODS, &out_of_pods_message(110, 110), ts(1));
    assert_eq!(s.phase.as_deref(), Some(FAILED));
    assert_eq!(s.reason.as_deref(), Some("OutOfpods"));
    assert!(s
        .message
        .unwrap()
        .starts_with("Pod was rejected: Node didn't"));
}

fn resources(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Option<ResourceRequirements> {
    let m = |v: &[(&str, &str)]| {
        (!v.is_empty()).then(|| {
            v.iter()
                .map(|(k, q)| (k.to_string(), Q(q.to_string())))
                .collect()
        })
    };
    Some(ResourceRequirements {
        requests: m(req),
        limits: m(lim),
        ..Default::default()
    })
}

#[test]
fn qos_classes() {
    let with = |rs: Vec<Option<ResourceRequirements>>| PodSpec {
        containers: rs
            .into_iter()
            .enumerate()
            .map(|(i, r)| Container {
                name: format!("c{i}"),
                resources: r,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let cases = vec![
        (with(vec![None]), QosClass::BestEffort),
        (
            with(vec![resources(
                &[("nvidia.com/gpu", "1")],
                &[("nvidia.com/gpu", "1")],
            )]),
            QosClass::BestEffort,
        ),
        (
            with(vec![resources(&[("cpu", "0")], &[])]),
            QosClass::BestEffort,
        ),
        (
            with(vec![resources(
                &[("cpu", "100m"), ("memory", "100Mi")],
                &[("cpu", "100m"), ("memory", "100Mi")],
            )]),
            QosClass::Guaranteed,
        ),
        (
            with(vec![resources(
                &[("cpu", "0.1"), ("memory", "100Mi")],
                &[("cpu", "100m"), ("memory", "100Mi")],
            )]),
            QosClass::Guaranteed,
        ),
        (
            with(vec![
                resources(
                    &[("cpu", "100m"), ("memory", "100Mi")],
                    &[("cpu", "100m"), ("memory", "100Mi")],
                ),
                resources(
                    &[("cpu", "100m"), ("memory", "100Mi")],
                    &[("cpu", "100m"), ("memory", "100Mi")],
                ),
            ]),
            QosClass::Guaranteed,
        ),
        (
            with(vec![resources(
                &[("cpu", "100m"), ("memory", "100Mi")],
                &[("cpu", "200m"), ("memory", "100Mi")],
            )]),
            QosClass::Burstable,
        ),
        (
            with(vec![resources(&[("cpu", "100m")], &[("cpu", "100m")])]),
            QosClass::Burstable,
        ),
        (
            with(vec![resources(&[("memory", "1Gi")], &[])]),
            QosClass::Burstable,
        ),
        (
            with(vec![
                resources(
                    &[("cpu", "100m"), ("memory", "100Mi")],
                    &[("cpu", "100m"), ("memory", "100Mi")],
                ),
                None,
            ]),
            QosClass::Burstable,
        ),
    ];
    for (i, (s, want)) in cases.into_iter().enumerate() {
        assert_eq!(qos_class(&s), want, "case {i}");
    }
}

/// Each ephemeral container (`kubectl debug`) gets a status, in spec order, waiting with
/// `CreateContainerConfigError` and a message that says kubenode does not run it; the pod's
/// phase and readiness are its regular containers' alone.
#[test]
fn ephemeral_containers_wait_with_the_reason_they_do_not_run() {
    use k8s_openapi::api::core::v1::EphemeralContainer;
    let mut s = spec("Always", &[], &["a"]);
    let obs = ObservedPod {
        sandbox_ready: true,
        containers: vec![observed(
            "a",
            ObservedState::Running {
                started_at: ts(100),
            },
            true,
        )],
        ..Default::default()
    };
    let plain = generate_pod_status(&pod(s.clone()), &obs, None, ts(110));
    assert!(plain.ephemeral_container_statuses.is_none());
    s.ephemeral_containers = Some(
        ["debugger-1", "debugger-2"]
            .iter()
            .map(|n| EphemeralContainer {
                name: n.to_string(),
                image: Some("busybox".into()),
                ..EphemeralContainer::default()
            })
            .collect(),
    );
    let st = generate_pod_status(&pod(s), &obs, None, ts(110));
    let eph = st.ephemeral_container_statuses.as_ref().unwrap();
    let names: Vec<_> = eph.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["debugger-1", "debugger-2"]);
    for c in eph {
        let w = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(
            w.reason.as_deref(),
            Some(reason::CREATE_CONTAINER_CONFIG_ERROR)
        );
        assert_eq!(w.message.as_deref(), Some(EPHEMERAL_NOT_RUN));
        assert!(!c.ready && c.started == Some(false) && c.image == "busybox");
    }
    assert_eq!(st.phase, plain.phase);
    assert_eq!(cond(&st, READY).status, cond(&plain, READY).status);
    assert_eq!(cond(&st, READY).status, "True");
}
