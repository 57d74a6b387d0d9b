//! How `kubectl get pods` shows a pod (upstream `printPod` in
//! `pkg/printers/internalversion/printers.go` and `duration.HumanDuration`),
//! so that `kubenode get pods` prints the same READY, STATUS, RESTARTS and
//! AGE columns.

use super::phase::is_restartable_init;
use crate::duration::human_duration;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;

/// One row of `kubectl get pods` (`-o wide` adds the last four).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    /// NAME
    pub name: String,
    /// NAMESPACE (shown with `-A`)
    pub namespace: String,
    /// READY, `ready/total`
    pub ready: String,
    /// STATUS, e.g. `Running`, `Init:0/1`, `CrashLoopBackOff`, `Terminating`
    pub status: String,
    /// RESTARTS, e.g. `3 (5m ago)`
    pub restarts: String,
    /// AGE
    pub age: String,
    /// IP (wide)
    pub ip: String,
    /// NODE (wide)
    pub node: String,
    /// NOMINATED NODE (wide)
    pub nominated_node: String,
    /// READINESS GATES (wide)
    pub readiness_gates: String,
}

/// The column headers of [`PodRow`], without and with `-o wide`.
pub const POD_COLUMNS: [&str; 5] = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
/// The extra headers of `-o wide`.
pub const POD_WIDE_COLUMNS: [&str; 4] = ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"];

fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        None => "<unknown>".into(),
        Some(t) => human_duration(now.as_second() - t.as_second()),
    }
}

fn last_finish(c: &ContainerStatus) -> Option<Timestamp> {
    c.last_state
        .as_ref()?
        .terminated
        .as_ref()?
        .finished_at
        .as_ref()
        .map(|t| t.0)
}

fn condition_true(status: &PodStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Builds the `kubectl get pods` row of `pod` at time `now`.
pub fn pod_row(pod: &Pod, now: Timestamp) -> PodRow {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let init_by_name: HashMap<&str, bool> = inits
        .iter()
        .map(|c| (c.name.as_str(), is_restartable_init(c)))
        .collect();
    let total = spec.containers.len() + init_by_name.values().filter(|r| **r).count();
    let mut ready = 0;
    let (mut restarts, mut sidecar_restarts) = (0i64, 0i64);
    let (mut last_restart, mut sidecar_last_restart): (Option<Timestamp>, Option<Timestamp>) =
        (None, None);
    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = status
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| phase.clone());

    let mut initializing = false;
    let init_statuses = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += i64::from(c.restart_count);
        last_restart = last_restart.max(last_finish(c));
        let sidecar = init_by_name.get(c.name.as_str()).copied().unwrap_or(false);
        if sidecar {
            sidecar_restarts += i64::from(c.restart_count);
            sidecar_last_restart = sidecar_last_restart.max(last_finish(c));
        }
        let state = c.state.clone().unwrap_or_default();
        match (&state.terminated, &state.waiting) {
            (Some(t), _) if t.exit_code == 0 => continue,
            _ if sidecar && c.started == Some(true) => {
                if c.ready {
                    ready += 1;
                }
                continue;
            }
            (Some(t), _) => {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => format!("Init:{r}"),
                    None if t.signal.unwrap_or(0) != 0 => {
                        format!("Init:Signal:{}", t.signal.unwrap_or(0))
                    }
                    None => format!("Init:ExitCode:{}", t.exit_code),
                };
            }
            (None, Some(w))
                if w.reason
                    .as_deref()
                    .is_some_and(|r| !r.is_empty() && r != "PodInitializing") =>
            {
                reason = format!("Init:{}", w.reason.as_deref().unwrap_or_default());
            }
            _ => reason = format!("Init:{i}/{}", inits.len()),
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(&status, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(c.restart_count);
            last_restart = last_restart.max(last_finish(c));
            let state = c.state.clone().unwrap_or_default();
            if let Some(r) = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty())
            {
                reason = r;
            } else if let Some(t) = &state.terminated {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_owned(),
                    None if t.signal.unwrap_or(0) != 0 => {
                        format!("Signal:{}", t.signal.unwrap_or(0))
                    }
                    None => format!("ExitCode:{}", t.exit_code),
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(&status, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let terminal = phase == "Succeeded" || phase == "Failed";
    if pod.metadata.deletion_timestamp.is_some() && status.reason.as_deref() == Some("NodeLost") {
        reason = "Unknown".into();
    } else if pod.metadata.deletion_timestamp.is_some() && !terminal {
        reason = "Terminating".into();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };
    let gates = spec.readiness_gates.as_deref().unwrap_or_default();
    let readiness_gates = if gates.is_empty() {
        "<none>".into()
    } else {
        let ok = gates
            .iter()
            .filter(|g| condition_true(&status, &g.condition_type))
            .count();
        format!("{ok}/{}", gates.len())
    };
    let none = |s: Option<String>| {
        s.filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into())
    };
    PodRow {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
        age: since(pod.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
        ip: none(
            status
                .pod_ips
                .as_ref()
                .and_then(|ips| ips.first())
                .map(|ip| ip.ip.clone()),
        ),
        node: none(spec.node_name.clone()),
        nominated_node: none(status.nominated_node_name.clone()),
        readiness_gates,
    }
}
