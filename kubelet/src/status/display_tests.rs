//! `kubectl get pods` rows, after upstream `printers_test.go` (`TestPrintPod*`).

use super::*;

const NOW: i64 = 1_700_000_000;

fn pod(spec: serde_json::Value, status: serde_json::Value) -> Pod {
    let mut p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-n1", "namespace": "default"},
        "spec": spec,
        "status": status,
    }))
    .unwrap();
    p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(NOW - 300).unwrap(),
    ));
    p
}

fn row(spec: serde_json::Value, status: serde_json::Value) -> PodRow {
    pod_row(&pod(spec, status), Timestamp::from_second(NOW).unwrap())
}

fn two() -> serde_json::Value {
    serde_json::json!({"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]})
}

fn cs(name: &str, ready: bool, restarts: i32, state: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"name": name, "ready": ready, "restartCount": restarts, "image": "i", "imageID": "x", "state": state})
}

#[test]
fn running_and_ready() {
    let r = row(
        two(),
        serde_json::json!({"phase": "Running", "podIPs": [{"ip": "10.244.0.7"}], "containerStatuses": [
            cs("a", true, 0, serde_json::json!({"running": {}})),
            cs("b", false, 0, serde_json::json!({"running": {}})),
        ]}),
    );
    assert_eq!(
        (
            r.name.as_str(),
            r.ready.as_str(),
            r.status.as_str(),
            r.restarts.as_str(),
            r.age.as_str()
        ),
        ("web-n1", "1/2", "Running", "0", "5m")
    );
    assert_eq!(
        (
            r.ip.as_str(),
            r.node.as_str(),
            r.nominated_node.as_str(),
            r.readiness_gates.as_str()
        ),
        ("10.244.0.7", "n1", "<none>", "<none>")
    );
}

#[test]
fn crash_loop_with_restart_age() {
    let mut b = cs(
        "b",
        false,
        3,
        serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}),
    );
    // Finished 65 s before NOW.
    b["lastState"] = serde_json::json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2023-11-14T22:12:15Z"}});
    let r = row(
        two(),
        serde_json::json!({"phase": "Running", "containerStatuses": [cs("a", true, 0, serde_json::json!({"running": {}})), b]}),
    );
    assert_eq!(
        (r.ready.as_str(), r.status.as_str(), r.restarts.as_str()),
        ("1/2", "CrashLoopBackOff", "3 (65s ago)")
    );
    assert_eq!(r.ip, "<none>");
}

#[test]
fn init_states() {
    let spec = serde_json::json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]});
    let done = cs(
        "i1",
        true,
        0,
        serde_json::json!({"terminated": {"exitCode": 0}}),
    );
    let cases = [
        (
            vec![cs("i1", false, 0, serde_json::json!({"running": {}}))],
            "Init:0/2",
        ),
        (
            vec![
                done,
                cs(
                    "i2",
                    false,
                    0,
                    serde_json::json!({"waiting": {"reason": "PodInitializing"}}),
                ),
            ],
            "Init:1/2",
        ),
        (
            vec![cs(
                "i1",
                false,
                2,
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            )],
            "Init:CrashLoopBackOff",
        ),
        (
            vec![cs(
                "i1",
                false,
                0,
                serde_json::json!({"terminated": {"exitCode": 1, "reason": "Error"}}),
            )],
            "Init:Error",
        ),
        (
            vec![cs(
                "i1",
                false,
                0,
                serde_json::json!({"terminated": {"exitCode": 3}}),
            )],
            "Init:ExitCode:3",
        ),
        (
            vec![cs(
                "i1",
                false,
                0,
                serde_json::json!({"terminated": {"exitCode": 137, "signal": 9}}),
            )],
            "Init:Signal:9",
        ),
    ];
    for (statuses, want) in cases {
        let r = row(
            spec.clone(),
            serde_json::json!({"phase": "Pending", "initContainerStatuses": statuses}),
        );
        assert_eq!((r.status.as_str(), r.ready.as_str()), (want, "0/1"));
    }
}

#[test]
fn completed_creating_terminating_unknown_age() {
    let completed = serde_json::json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    let r = row(
        two(),
        serde_json::json!({"phase": "Succeeded", "containerStatuses": [cs("a", false, 0, completed.clone()), cs("b", false, 0, completed.clone())]}),
    );
    assert_eq!((r.ready.as_str(), r.status.as_str()), ("0/2", "Completed"));

    let creating = serde_json::json!({"waiting": {"reason": "ContainerCreating"}});
    let r = row(
        two(),
        serde_json::json!({"phase": "Pending", "containerStatuses": [cs("a", false, 0, creating.clone()), cs("b", false, 0, creating)]}),
    );
    assert_eq!(r.status, "ContainerCreating");

    // One container completed, the other running and ready: NotReady unless the pod is Ready.
    let statuses = serde_json::json!([
        cs("a", false, 0, completed),
        cs("b", true, 0, serde_json::json!({"running": {}}))
    ]);
    let r = row(
        two(),
        serde_json::json!({"phase": "Running", "containerStatuses": statuses.clone()}),
    );
    assert_eq!(r.status, "NotReady");
    let ready = serde_json::json!([{"type": "Ready", "status": "True"}]);
    let r = row(
        two(),
        serde_json::json!({"phase": "Running", "containerStatuses": statuses, "conditions": ready}),
    );
    assert_eq!(r.status, "Running");

    let mut p = pod(two(), serde_json::json!({"phase": "Running"}));
    p.metadata.deletion_timestamp = p.metadata.creation_timestamp.take();
    let r = pod_row(&p, Timestamp::from_second(NOW).unwrap());
    assert_eq!(
        (r.status.as_str(), r.age.as_str(), r.ready.as_str()),
        ("Terminating", "<unknown>", "0/2")
    );
    assert_eq!(POD_COLUMNS.len() + POD_WIDE_COLUMNS.len(), 9);
}
