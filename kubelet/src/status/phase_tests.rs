//! `getPhase` tables after upstream `kubelet_pods_test.go` (`TestPodPhaseWith*`).

use super::*;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodSpec,
};

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

fn running(name: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state: Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn terminated(name: &str, code: i32) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(name: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waiting after a previous run that exited with `code` (restarting/back-off).
fn restarting(name: &str, code: i32) -> ContainerStatus {
    ContainerStatus {
        last_state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..waiting(name)
    }
}

#[test]
fn phase_restart_always() {
    let s = spec("Always", &[], &["a", "b"]);
    let cases: Vec<(Vec<ContainerStatus>, bool, &str)> = vec![
        (vec![running("a"), running("b")], false, RUNNING),
        (vec![terminated("a", 0), terminated("b", 0)], false, RUNNING),
        (vec![terminated("a", 0), terminated("b", 1)], true, FAILED),
        (
            vec![terminated("a", 0), terminated("b", 0)],
            true,
            SUCCEEDED,
        ),
        (vec![running("a"), terminated("b", 0)], false, RUNNING),
        (vec![running("a")], false, PENDING),
        (vec![running("a"), waiting("b")], false, PENDING),
        (vec![running("a"), restarting("b", 1)], false, RUNNING),
        (vec![], false, PENDING),
    ];
    for (i, (st, terminal, want)) in cases.into_iter().enumerate() {
        assert_eq!(get_phase(&s, &st, terminal, false), want, "case {i}");
    }
    // Static pods never get the terminal override.
    assert_eq!(
        get_phase(&s, &[terminated("a", 0), terminated("b", 1)], true, true),
        RUNNING
    );
}

#[test]
fn phase_restart_never_and_on_failure() {
    let never = spec("Never", &[], &["a", "b"]);
    let on_failure = spec("OnFailure", &[], &["a", "b"]);
    let cases: Vec<(Vec<ContainerStatus>, &str, &str)> = vec![
        (vec![running("a"), running("b")], RUNNING, RUNNING),
        (
            vec![terminated("a", 0), terminated("b", 0)],
            SUCCEEDED,
            SUCCEEDED,
        ),
        (
            vec![terminated("a", 0), terminated("b", 1)],
            FAILED,
            RUNNING,
        ),
        (vec![running("a"), terminated("b", 0)], RUNNING, RUNNING),
        (vec![running("a")], PENDING, PENDING),
        (vec![running("a"), waiting("b")], PENDING, PENDING),
        (vec![running("a"), restarting("b", 1)], RUNNING, RUNNING),
        (
            vec![restarting("a", 1), terminated("b", 0)],
            FAILED,
            RUNNING,
        ),
    ];
    for (i, (st, want_never, want_on_failure)) in cases.into_iter().enumerate() {
        assert_eq!(
            get_phase(&never, &st, false, false),
            want_never,
            "never case {i}"
        );
        assert_eq!(
            get_phase(&on_failure, &st, false, false),
            want_on_failure,
            "onfailure case {i}"
        );
    }
}

#[test]
fn phase_with_init_containers() {
    for policy in ["Always", "OnFailure", "Never"] {
        let s = spec(policy, &["init"], &["a"]);
        let cases: Vec<(Vec<ContainerStatus>, &str)> = vec![
            (vec![running("init"), waiting("a")], PENDING),
            (vec![terminated("init", 0), waiting("a")], PENDING),
            (vec![terminated("init", 0), running("a")], RUNNING),
            (vec![waiting("init"), waiting("a")], PENDING),
            (vec![], PENDING),
        ];
        for (i, (st, want)) in cases.into_iter().enumerate() {
            assert_eq!(get_phase(&s, &st, false, false), want, "{policy} case {i}");
        }
        let failed = vec![restarting("init", 1), waiting("a")];
        let want = if policy == "Never" { FAILED } else { PENDING };
        assert_eq!(
            get_phase(&s, &failed, false, false),
            want,
            "{policy} init failure"
        );
        let failed = vec![terminated("init", 2), waiting("a")];
        assert_eq!(
            get_phase(&s, &failed, false, false),
            want,
            "{policy} init terminated"
        );
    }
}

#[test]
fn phase_with_sidecars() {
    let mut s = spec("Always", &["side"], &["a"]);
    s.init_containers.as_mut().unwrap()[0].restart_policy = Some("Always".into());
    let mut side = running("side");
    assert_eq!(
        get_phase(&s, &[side.clone(), waiting("a")], false, false),
        PENDING
    );
    side.started = Some(true);
    assert_eq!(
        get_phase(&s, &[side.clone(), running("a")], false, false),
        RUNNING
    );
    // A sidecar restarting after the app started keeps the pod Running.
    assert_eq!(
        get_phase(&s, &[waiting("side"), running("a")], false, false),
        PENDING
    );
    assert_eq!(
        get_phase(&s, &[restarting("side", 1), running("a")], false, false),
        RUNNING
    );
}
