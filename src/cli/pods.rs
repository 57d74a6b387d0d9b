//! `kubenode get pods` rows, with kubectl's STATUS, READY and RESTARTS logic (k/k
//! pkg/printers/internalversion/printers.go `printPod`).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

use super::age::{age, human_duration};

/// Column headers; `-A` adds NAMESPACE first, `-o wide` adds IP and NODE.
pub fn header(all_namespaces: bool, wide: bool) -> Vec<&'static str> {
    let mut h = Vec::new();
    if all_namespaces {
        h.push("NAMESPACE");
    }
    h.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    if wide {
        h.extend(["IP", "NODE"]);
    }
    h
}

/// One row of `kubenode get pods`.
pub fn row(pod: &Pod, now: Timestamp, all_namespaces: bool, wide: bool) -> Vec<String> {
    let (ready, status, restarts) = summarize(pod, now);
    let mut r = Vec::new();
    if all_namespaces {
        r.push(pod.metadata.namespace.clone().unwrap_or_default());
    }
    r.push(pod.metadata.name.clone().unwrap_or_default());
    r.push(ready);
    r.push(status);
    r.push(restarts);
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| &t.0)
        .or(pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| &t.0));
    r.push(age(created, now));
    if wide {
        let status = pod.status.as_ref();
        r.push(
            status
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_else(|| "<none>".into()),
        );
        r.push(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| "<none>".into()),
        );
    }
    r
}

fn terminated_reason(prefix: &str, cs: &ContainerStatus) -> Option<String> {
    let t = cs.state.as_ref()?.terminated.as_ref()?;
    Some(match t.reason.as_deref() {
        Some(r) if !r.is_empty() => format!("{prefix}{r}"),
        _ if t.signal.unwrap_or(0) != 0 => format!("{prefix}Signal:{}", t.signal.unwrap_or(0)),
        _ => format!("{prefix}ExitCode:{}", t.exit_code),
    })
}

/// (READY, STATUS, RESTARTS) as kubectl computes them.
pub fn summarize(pod: &Pod, now: Timestamp) -> (String, String, String) {
    let spec = pod.spec.as_ref();
    let status = pod.status.clone().unwrap_or_default();
    let total = spec.map_or(0, |s| s.containers.len());
    let init_total = spec
        .and_then(|s| s.init_containers.as_ref())
        .map_or(0, Vec::len);
    let mut reason = status.phase.clone().unwrap_or_default();
    if let Some(r) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    let mut restarts = 0;
    let mut last_restart: Option<Timestamp> = None;
    let note_restart =
        |cs: &ContainerStatus, restarts: &mut i32, last_restart: &mut Option<Timestamp>| {
            *restarts += cs.restart_count;
            if let Some(t) = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.finished_at.as_ref())
            {
                if last_restart.is_none_or(|l| t.0 > l) {
                    *last_restart = Some(t.0);
                }
            }
        };

    let mut initializing = false;
    for (i, cs) in status.init_container_statuses.iter().flatten().enumerate() {
        note_restart(cs, &mut restarts, &mut last_restart);
        let state = cs.state.clone().unwrap_or_default();
        if state.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        initializing = true;
        reason = if state.terminated.is_some() {
            terminated_reason("Init:", cs).unwrap_or_default()
        } else if let Some(w) = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            format!("Init:{w}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }

    let initialized = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    let mut ready = 0;
    if !initializing || initialized {
        restarts = 0;
        last_restart = None;
        let mut has_running = false;
        for cs in status.container_statuses.iter().flatten().rev() {
            note_restart(cs, &mut restarts, &mut last_restart);
            let state = cs.state.clone().unwrap_or_default();
            if let Some(w) = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty())
            {
                reason = w;
            } else if state.terminated.is_some() {
                reason = terminated_reason("", cs).unwrap_or_default();
            } else if cs.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let ready_cond = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if ready_cond {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = if status.reason.as_deref() == Some("NodeLost") {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => {
            let ago = (now.as_second() - t.as_second()).max(0).unsigned_abs();
            format!(
                "{restarts} ({} ago)",
                human_duration(std::time::Duration::from_secs(ago))
            )
        }
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn now() -> Timestamp {
        "2026-11-28T12:00:00Z".parse().unwrap()
    }

    fn pod(containers: usize, inits: usize, status: PodStatus) -> Pod {
        let c = |i: usize| Container {
            name: format!("c{i}"),
            ..Default::default()
        };
        Pod {
            spec: Some(PodSpec {
                containers: (0..containers).map(c).collect(),
                init_containers: (inits > 0).then(|| (0..inits).map(c).collect()),
                ..Default::default()
            }),
            status: Some(status),
            ..Default::default()
        }
    }

    fn running(ready: bool) -> ContainerStatus {
        ContainerStatus {
            ready,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waiting(reason: &str, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            restart_count: restarts,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            last_state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    finished_at: Some(Time("2026-11-28T11:58:00Z".parse().unwrap())),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn terminated(code: i32, reason: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: reason.map(String::from),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn running_ready_and_crashlooping() {
        let p = pod(
            2,
            0,
            PodStatus {
                phase: Some("Running".into()),
                container_statuses: Some(vec![running(true), waiting("CrashLoopBackOff", 3)]),
                ..Default::default()
            },
        );
        assert_eq!(
            summarize(&p, now()),
            ("1/2".into(), "CrashLoopBackOff".into(), "3 (2m ago)".into())
        );
    }

    #[test]
    fn init_progress_and_failure() {
        let p = pod(
            1,
            2,
            PodStatus {
                phase: Some("Pending".into()),
                init_container_statuses: Some(vec![
                    terminated(0, Some("Completed")),
                    running(false),
                ]),
                container_statuses: Some(vec![waiting("PodInitializing", 0)]),
                ..Default::default()
            },
        );
        assert_eq!(summarize(&p, now()).1, "Init:1/2");
        let p = pod(
            1,
            1,
            PodStatus {
                init_container_statuses: Some(vec![terminated(2, None)]),
                ..Default::default()
            },
        );
        assert_eq!(summarize(&p, now()).1, "Init:ExitCode:2");
    }

    #[test]
    fn completed_with_a_running_sidecar_is_running_or_notready() {
        let mut status = PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![terminated(0, Some("Completed")), running(true)]),
            ..Default::default()
        };
        assert_eq!(summarize(&pod(2, 0, status.clone()), now()).1, "NotReady");
        status.conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        assert_eq!(summarize(&pod(2, 0, status), now()).1, "Running");
    }

    #[test]
    fn terminating_and_reason() {
        let mut p = pod(
            1,
            0,
            PodStatus {
                phase: Some("Failed".into()),
                reason: Some("UnexpectedAdmissionError".into()),
                ..Default::default()
            },
        );
        assert_eq!(summarize(&p, now()).1, "UnexpectedAdmissionError");
        p.metadata.deletion_timestamp = Some(Time(now()));
        assert_eq!(summarize(&p, now()).1, "Terminating");
    }

    #[test]
    fn wide_row() {
        let mut p = pod(
            1,
            0,
            PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.244.0.5".into()),
                start_time: Some(Time("2026-11-28T11:59:00Z".parse().unwrap())),
                container_statuses: Some(vec![running(true)]),
                ..Default::default()
            },
        );
        p.metadata.name = Some("web-node1".into());
        p.metadata.namespace = Some("default".into());
        p.spec.as_mut().unwrap().node_name = Some("node1".into());
        assert_eq!(
            row(&p, now(), true, true),
            [
                "default",
                "web-node1",
                "1/1",
                "Running",
                "0",
                "60s",
                "10.244.0.5",
                "node1"
            ]
        );
    }
}
