//! Pod status as the upstream kubelet reports it: phase (`getPhase`),
//! conditions with transition times, container statuses with the exact
//! reason strings, QoS class, IPs and start time; terminal phases are
//! sticky. The input is what the runtime observed ([`ObservedPod`]), so all
//! of this is pure and testable.

mod conditions;
mod containers;
mod display;
#[cfg(test)]
mod display_tests;
mod phase;
#[cfg(test)]
mod phase_tests;
mod qos;
mod termination;
#[cfg(test)]
mod tests;

pub use crate::duration::human_duration;
pub use conditions::*;
pub use containers::{
    container_statuses, ephemeral_statuses, reason, terminated_reason, ObservedContainer,
    ObservedState, Terminated, EPHEMERAL_NOT_RUN, START_ERROR_EXIT_CODE,
};
pub use display::{pod_row, PodRow, POD_COLUMNS, POD_WIDE_COLUMNS};
pub use phase::{
    get_phase, has_any_regular_container_started, is_restartable_init, is_terminal, RestartPolicy,
    FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN,
};
pub use qos::{qos_class, QosClass};
pub use termination::{termination_message, MessageSource};

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{HostIP, Pod, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A runtime time as the API's `Time` holds it: the runtime uses jiff 1, `k8s-openapi` jiff 0.2
/// (the two share the range of timestamps, so no value is lost).
pub fn api_time(t: jiff::Timestamp) -> Timestamp {
    Timestamp::from_nanosecond(t.as_nanosecond())
        .expect("jiff 0.2 and jiff 1 timestamps have the same range")
}

/// Admission rejection reason when `maxPods` is reached (upstream `OutOfpods`).
pub const OUT_OF_PODS: &str = "OutOfpods";

/// What is known about one pod right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPod {
    /// The sandbox exists and its network is set up.
    pub sandbox_ready: bool,
    /// Pod IPs, primary first.
    pub pod_ips: Vec<IpAddr>,
    /// Node IPs.
    pub host_ips: Vec<IpAddr>,
    /// When the agent accepted the pod (kept once set).
    pub start_time: Option<Timestamp>,
    /// Init and app containers the runtime knows, by name.
    pub containers: Vec<ObservedContainer>,
    /// The pod is being ended for good (its containers will not restart).
    pub terminal: bool,
}

/// Builds the pod status from the spec, the observation and the previous
/// status (for transition times, start time and terminal stickiness).
pub fn generate_pod_status(
    pod: &Pod,
    observed: &ObservedPod,
    old: Option<&PodStatus>,
    now: Timestamp,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let has_init = !inits.is_empty();
    let app = container_statuses(&spec.containers, &observed.containers, has_init, false);
    let init = container_statuses(inits, &observed.containers, has_init, true);
    let all: Vec<_> = app.iter().chain(init.iter()).cloned().collect();
    let is_static = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::source::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s != "api");

    let mut phase = get_phase(&spec, &all, observed.terminal, is_static);
    let old_phase = old.and_then(|o| o.phase.as_deref());
    if let Some(op) = old_phase.filter(|p| is_terminal(p)) {
        if phase != op {
            if !is_terminal(phase) {
                tracing::debug!(pod = ?pod.metadata.name, old = op, new = phase, "keeping terminal phase");
            }
            phase = if op == SUCCEEDED { SUCCEEDED } else { FAILED };
        }
    }
    let (reason, message) = match old {
        Some(o) if o.phase.as_deref() == Some(phase) => (o.reason.clone(), o.message.clone()),
        _ => (None, None),
    };

    let all_for_conditions: Vec<_> = init.iter().chain(app.iter()).cloned().collect();
    let statuses = Some(all_for_conditions.as_slice());
    let mut conds = vec![
        ready_to_start_containers(observed.sandbox_ready),
        initialized(&spec, statuses, phase),
        pod_ready(&spec, statuses, phase),
        containers_ready(&spec, statuses, phase),
        scheduled(),
    ];
    let now_t = Time(now);
    stamp_transitions(
        &mut conds,
        old.and_then(|o| o.conditions.as_deref())
            .unwrap_or_default(),
        &now_t,
    );

    let start_time = old
        .and_then(|o| o.start_time.clone())
        .or_else(|| observed.start_time.map(Time))
        .unwrap_or(now_t);
    PodStatus {
        phase: Some(phase.into()),
        reason,
        message,
        conditions: Some(conds),
        container_statuses: Some(app),
        init_container_statuses: has_init.then_some(init),
        ephemeral_container_statuses: spec
            .ephemeral_containers
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(ephemeral_statuses),
        pod_ip: observed.pod_ips.first().map(ToString::to_string),
        pod_ips: (!observed.pod_ips.is_empty()).then(|| {
            observed
                .pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.to_string() })
                .collect()
        }),
        host_ip: observed.host_ips.first().map(ToString::to_string),
        host_ips: (!observed.host_ips.is_empty()).then(|| {
            observed
                .host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.to_string() })
                .collect()
        }),
        start_time: Some(start_time),
        qos_class: Some(qos_class(&spec).as_str().into()),
        ..PodStatus::default()
    }
}

/// The admission message when `maxPods` pods already run (upstream
/// `InsufficientResourceError`).
pub fn out_of_pods_message(used: usize, capacity: usize) -> String {
    format!(
        "Node didn't have enough resource: pods, requested: 1, used: {used}, capacity: {capacity}"
    )
}

/// The status of a pod refused at admission (e.g. reason [`OUT_OF_PODS`]):
/// phase Failed, `message` prefixed `Pod was rejected: ` as upstream.
pub fn rejected_status(pod: &Pod, reason: &str, message: &str, now: Timestamp) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    PodStatus {
        phase: Some(FAILED.into()),
        reason: Some(reason.into()),
        message: Some(format!("Pod was rejected: {message}")),
        start_time: Some(Time(now)),
        qos_class: Some(qos_class(&spec).as_str().into()),
        ..PodStatus::default()
    }
}
