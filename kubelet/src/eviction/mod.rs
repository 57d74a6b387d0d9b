//! Node-pressure eviction, as upstream's eviction manager (`pkg/kubelet/eviction`).
//!
//! Every [`MONITORING_INTERVAL`] the manager synchronizes ([`Manager::synchronize`]): it takes
//! the Summary (`crate::stats`), observes the signals ([`signals::observe`]: `memory.available`,
//! `nodefs.*`, `imagefs.*`, `pid.available`), and compares them with the thresholds
//! ([`thresholds::EvictionConfig`]: `evictionHard`, `evictionSoft` with their
//! `evictionSoftGracePeriod`, `evictionMinimumReclaim`). A threshold met sets its node
//! condition (MemoryPressure, DiskPressure, PIDPressure), which stays until the threshold has
//! not been met for `evictionPressureTransitionPeriod` ([`State::update`]). Once a threshold
//! has been met for its grace period it acts: memory first, a Warning `EvictionThresholdMet`
//! on the Node, then for disk signals the node's own garbage first, in upstream's order
//! ([`node_reclaim_funcs`]: dead containers, then unused images, through
//! [`EvictionHost::reclaim`]); the signals are observed again and if no threshold (with its
//! minimum reclaim) is met any more nothing is evicted. Otherwise one pod is evicted per
//! synchronize, ranked by [`rank::rank`]. Static, mirror and critical pods are never evicted
//! (upstream `IsCriticalPod`); kubenode's file pods are static pods.
//!
//! The evicted pod gets a Warning event `Evicted` with [`rank::message`] and its annotations
//! (`offending_containers`, `offending_containers_usage`, `starved_resource`), its containers are
//! killed (grace 1 s for a hard threshold, upstream's `immediateEvictionGracePeriodSeconds`;
//! for a soft one the pod's own, at most `evictionMaxPodGracePeriod`), and its status becomes
//! phase Failed, reason `Evicted`, the message, and the condition `DisruptionTarget`
//! (`TerminationByKubelet`). The pod worker saves that in the pod's record before the kill,
//! so the pod stays evicted across an agent restart and is never started again. The manager
//! then waits (at most 30 s) for the pod to be cleaned up.
//!
//! While a condition holds, admission refuses new pods as upstream ([`Manager::admit`]):
//! under MemoryPressure alone, BestEffort pods that do not tolerate the memory-pressure taint;
//! under any other condition, every pod; critical (and so static) pods are always admitted.

pub mod rank;
pub mod signals;
pub mod thresholds;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::api::BoxFuture;
use crate::events::{ObjectRef, Recorder};
use crate::stats::types::{PodStats, Summary};
pub use rank::REASON;
use signals::Observations;
pub use thresholds::{EvictionConfig, Pressure, Resource, Signal, Threshold};

/// How often the manager synchronizes (upstream `evictionMonitoringPeriod`).
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// Upstream `immediateEvictionGracePeriodSeconds`: the grace of a pod evicted for a hard
/// threshold.
pub const IMMEDIATE_EVICTION_GRACE: Duration = Duration::from_secs(1);
/// How long the manager waits for an evicted pod to be cleaned up (upstream
/// `podCleanupTimeout`), polling every [`POD_CLEANUP_POLL`].
pub const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upstream `podCleanupPollFreq`.
pub const POD_CLEANUP_POLL: Duration = Duration::from_secs(1);
/// The pod condition type an eviction adds.
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// Its reason (upstream `PodReasonTerminationByKubelet`).
pub const TERMINATION_BY_KUBELET: &str = "TerminationByKubelet";
/// The Node event when a threshold acts.
pub const EVICTION_THRESHOLD_MET: &str = "EvictionThresholdMet";
/// The taint key a BestEffort pod may tolerate to be admitted under memory pressure.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// The priority from which a pod is critical (upstream `SystemCriticalPriority`).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The admission message under pressure (upstream `nodeConditionMessageFmt`), the conditions
/// as Go prints a slice: `The node had condition: [DiskPressure]. `.
pub fn node_condition_message(conditions: &[Pressure]) -> String {
    let names: Vec<&str> = conditions.iter().map(|c| c.condition_type()).collect();
    format!("The node had condition: [{}]. ", names.join(" "))
}

/// Upstream `IsCriticalPod`: a static pod (any source but the API server), a mirror pod, or
/// one of priority at least [`SYSTEM_CRITICAL_PRIORITY`].
pub fn is_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let is_static = annotations
        .and_then(|a| a.get(crate::source::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s != crate::cluster::pods::API_SOURCE);
    let is_mirror = annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    is_static || is_mirror || priority >= SYSTEM_CRITICAL_PRIORITY
}

/// Whether `pod` tolerates the `NoSchedule` memory-pressure taint.
fn tolerates_memory_pressure(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| {
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "NoSchedule");
            let key_ok = match t.key.as_deref() {
                None | Some("") => t.operator.as_deref() == Some("Exists"),
                Some(k) => k == TAINT_MEMORY_PRESSURE,
            };
            let op_ok = match t.operator.as_deref() {
                Some("Exists") => true,
                // Equal (the default) against the taint's empty value.
                _ => t.value.as_deref().unwrap_or("").is_empty(),
            };
            effect_ok && key_ok && op_ok
        })
}

/// What the manager remembers between synchronizes (upstream `managerImpl`'s state).
#[derive(Debug, Default, Clone)]
pub struct State {
    /// The conditions reported now.
    pub conditions: Vec<Pressure>,
    /// When each condition's threshold was last met.
    conditions_last_observed: BTreeMap<Pressure, Instant>,
    /// When each threshold met now was first met.
    thresholds_first_observed: Vec<(Threshold, Instant)>,
    /// The thresholds met (grace periods included) not yet resolved.
    thresholds_met: Vec<Threshold>,
}

/// Upstream `thresholdsMet`.
pub fn thresholds_met(
    thresholds: &[Threshold],
    observations: &Observations,
    enforce_min_reclaim: bool,
) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| {
            observations
                .get(&t.signal)
                .is_some_and(|o| t.met(o.available, o.capacity, enforce_min_reclaim))
        })
        .cloned()
        .collect()
}

impl State {
    /// One synchronize's bookkeeping at `now` (upstream's `synchronize` up to "update internal
    /// state"): the thresholds met now, and those met before whose minimum reclaim is not
    /// reached yet; the conditions (each held for `pressure_transition_period` after its
    /// threshold was last met); returns the thresholds whose grace period has passed, the
    /// ones to act on.
    pub fn update(
        &mut self,
        config: &EvictionConfig,
        observations: &Observations,
        now: Instant,
    ) -> Vec<Threshold> {
        let mut met = thresholds_met(&config.thresholds, observations, false);
        for t in thresholds_met(&self.thresholds_met, observations, true) {
            if !met.contains(&t) {
                met.push(t);
            }
        }
        let first_observed: Vec<(Threshold, Instant)> = met
            .iter()
            .map(|t| {
                let at = self
                    .thresholds_first_observed
                    .iter()
                    .find(|(old, _)| old == t)
                    .map_or(now, |(_, at)| *at);
                (t.clone(), at)
            })
            .collect();
        for t in &met {
            self.conditions_last_observed
                .insert(t.signal.pressure(), now);
        }
        let period = config.pressure_transition_period;
        self.conditions = Pressure::ALL
            .into_iter()
            .filter(|p| {
                self.conditions_last_observed
                    .get(p)
                    .is_some_and(|at| now.saturating_duration_since(*at) < period)
            })
            .collect();
        let acting: Vec<Threshold> = first_observed
            .iter()
            .filter(|(t, at)| now.saturating_duration_since(*at) >= t.grace_period)
            .map(|(t, _)| t.clone())
            .collect();
        self.thresholds_first_observed = first_observed;
        self.thresholds_met = acting.clone();
        acting
    }
}

/// Upstream `byEvictionPriority` then `getReclaimableThreshold`: a memory threshold first,
/// else the first other one.
pub fn threshold_to_reclaim(thresholds: &[Threshold]) -> Option<&Threshold> {
    thresholds
        .iter()
        .find(|t| {
            matches!(
                t.signal,
                Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable
            )
        })
        .or_else(|| thresholds.first())
}

/// One way to free node-level resources before evicting (upstream's `nodeReclaimFunc`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeReclaim {
    /// Upstream `ContainerGC.DeleteAllUnusedContainers`: a container garbage collection pass
    /// now (dead containers beyond the policy, the sandboxes and logs of pods that are gone).
    Containers,
    /// Upstream `ImageGC.DeleteUnusedImages`: every unused image old enough.
    Images,
}

/// Upstream `buildSignalToNodeReclaimFuncs` without an image file system of its own (as
/// [`rank`] assumes: the image store shares the root directory's file system): every disk
/// signal (`containerfs.*` included, as upstream, though they are never observed) reclaims dead
/// containers first, then unused images. Memory and PIDs have no node-level reclaim.
pub fn node_reclaim_funcs(signal: Signal) -> &'static [NodeReclaim] {
    match signal {
        Signal::NodeFsAvailable
        | Signal::NodeFsInodesFree
        | Signal::ImageFsAvailable
        | Signal::ImageFsInodesFree
        | Signal::ContainerFsAvailable
        | Signal::ContainerFsInodesFree => &[NodeReclaim::Containers, NodeReclaim::Images],
        _ => &[],
    }
}

/// What the manager acts through: the kubelet's pods, stats, garbage collection and workers.
pub trait EvictionHost: Send + Sync {
    /// The Summary now (blocking reads: called on the blocking pool).
    fn summary(&self) -> Summary;
    /// The active pods (admitted, not finished), with their status.
    fn active_pods(&self) -> Vec<Pod>;
    /// Frees node-level resources one way. Returns what it did, for the log.
    fn reclaim(&self, what: NodeReclaim) -> BoxFuture<'_, Result<String, String>>;
    /// Kills `pod` for good with `grace`: phase Failed, reason `Evicted`, `message`, the
    /// `DisruptionTarget` condition; saved so that it survives an agent restart.
    fn evict(&self, pod: &Pod, grace: Duration, message: &str);
    /// Whether the pod `uid` is still active.
    fn is_active(&self, uid: &str) -> bool;
    /// Whether every pod source has delivered its pods and they were admitted: until then
    /// the manager does not synchronize, so that the pods an agent restart adopts are
    /// admitted as they were, not refused for a pressure seen first (upstream's manager
    /// likewise has no stats before its first housekeeping).
    fn sources_ready(&self) -> bool;
}

/// The eviction manager: its configuration, its state, and the conditions it reports.
#[derive(Debug)]
pub struct Manager {
    config: EvictionConfig,
    state: RwLock<State>,
    events: Recorder,
    node: ObjectRef,
}

impl Manager {
    /// A manager of `config`, recording events of the node `node_name` with `events`.
    pub fn new(config: EvictionConfig, events: Recorder, node_name: &str) -> Arc<Manager> {
        Arc::new(Manager {
            config,
            state: RwLock::new(State::default()),
            events,
            node: ObjectRef::node(node_name),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EvictionConfig {
        &self.config
    }

    /// The pressure conditions that are `True` now (the others are `False`).
    pub fn conditions(&self) -> Vec<Pressure> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .conditions
            .clone()
    }

    /// Upstream's eviction admit handler: `Err((reason, message))` to reject `pod`.
    pub fn admit(&self, pod: &Pod) -> Result<(), (&'static str, String)> {
        let conditions = self.conditions();
        admit(&conditions, pod)
    }

    /// One synchronize (upstream `synchronize`): returns the pod evicted, if any.
    pub async fn synchronize(&self, host: &Arc<dyn EvictionHost>) -> Option<Pod> {
        if self.config.thresholds.is_empty() {
            return None;
        }
        let h = host.clone();
        let summary = tokio::task::spawn_blocking(move || h.summary())
            .await
            .ok()?;
        let observations = signals::observe(&summary);
        let active = host.active_pods();
        let (thresholds, before) = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let before = state.conditions.clone();
            (
                state.update(&self.config, &observations, Instant::now()),
                before,
            )
        };
        let after = self.conditions();
        if after != before {
            for p in Pressure::ALL {
                let (was, is) = (before.contains(&p), after.contains(&p));
                if was != is {
                    let (reason, message) = p.reason_and_message(is);
                    tracing::warn!(
                        condition = p.condition_type(),
                        status = is,
                        reason,
                        "{message}"
                    );
                }
            }
        }
        let threshold = threshold_to_reclaim(&thresholds)?.clone();
        let resource = threshold.signal.resource();
        tracing::info!(
            resource = resource.as_str(),
            "Eviction manager: attempting to reclaim"
        );
        self.events.warning(
            &self.node,
            EVICTION_THRESHOLD_MET,
            format!("Attempting to reclaim {}", resource.as_str()),
        );
        if self
            .reclaim_node_level_resources(host, threshold.signal, resource)
            .await
        {
            tracing::info!(
                resource = resource.as_str(),
                "Eviction manager: able to reduce resource pressure without evicting pods."
            );
            return None;
        }
        tracing::info!(
            resource = resource.as_str(),
            "Eviction manager: must evict pod(s) to reclaim"
        );
        if active.is_empty() {
            tracing::error!("Eviction manager: eviction thresholds have been met, but no pods are active to evict");
            return None;
        }
        let stats: BTreeMap<&str, &PodStats> = summary
            .pods
            .iter()
            .map(|p| (p.pod_ref.uid.as_str(), p))
            .collect();
        let mut ranked: Vec<(Pod, Option<PodStats>)> = active
            .into_iter()
            .map(|p| {
                let s = p
                    .metadata
                    .uid
                    .as_deref()
                    .and_then(|u| stats.get(u))
                    .map(|s| (*s).clone());
                (p, s)
            })
            .collect();
        rank::rank(threshold.signal, &mut ranked);
        for (pod, stats) in &ranked {
            if is_critical(pod) {
                tracing::error!(
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    "Eviction manager: cannot evict a critical pod"
                );
                continue;
            }
            let (message, annotations) =
                rank::message(resource, pod, stats.as_ref(), &thresholds, &observations);
            let grace = if threshold.is_hard() {
                IMMEDIATE_EVICTION_GRACE
            } else {
                soft_grace(pod, self.config.max_pod_grace_period_seconds)
            };
            self.events.annotated_warning(
                &ObjectRef::pod(pod),
                annotations,
                REASON,
                message.clone(),
            );
            tracing::info!(pod = pod.metadata.name.as_deref().unwrap_or(""), %message, "Eviction manager: evicting pod");
            host.evict(pod, grace, &message);
            return Some(pod.clone());
        }
        tracing::info!("Eviction manager: unable to evict any pods from the node");
        None
    }

    /// Upstream `reclaimNodeLevelResources`: runs the node-level reclaim steps of `signal` in
    /// order (a failed one is logged and the next runs), then observes the signals again: true
    /// when no threshold is met any more, its minimum reclaim included (regardless of grace
    /// periods), so that no pod need be evicted. False when the signal has no reclaim step.
    pub async fn reclaim_node_level_resources(
        &self,
        host: &Arc<dyn EvictionHost>,
        signal: Signal,
        resource: Resource,
    ) -> bool {
        let funcs = node_reclaim_funcs(signal);
        for what in funcs {
            match host.reclaim(*what).await {
                Ok(done) => tracing::info!(
                    resource = resource.as_str(),
                    "Eviction manager: node-level reclaim: {done}"
                ),
                Err(e) => {
                    tracing::info!(resource = resource.as_str(), error = %e, "Eviction manager: unexpected error when attempting to reduce resource pressure")
                }
            }
        }
        if funcs.is_empty() {
            return false;
        }
        let h = host.clone();
        let summary = match tokio::task::spawn_blocking(move || h.summary()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "Eviction manager: failed to get summary stats after resource reclaim");
                return false;
            }
        };
        let observations = signals::observe(&summary);
        thresholds_met(&self.config.thresholds, &observations, true).is_empty()
    }

    /// Upstream `waitForPodsCleanup`: until the pod is no longer active, at most
    /// [`POD_CLEANUP_TIMEOUT`].
    pub async fn wait_for_cleanup(&self, host: &Arc<dyn EvictionHost>, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + POD_CLEANUP_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POD_CLEANUP_POLL).await;
            if !host.is_active(&uid) {
                tracing::info!(
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    "Eviction manager: pods successfully cleaned up"
                );
                return;
            }
        }
        tracing::info!(
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            "Eviction manager: timed out waiting for pods to be cleaned up"
        );
    }

    /// Runs the manager until `host` is gone (upstream `Start`): a synchronize every
    /// [`MONITORING_INTERVAL`], or right after an evicted pod was cleaned up.
    pub async fn run(self: Arc<Self>, host: std::sync::Weak<dyn EvictionHost>) {
        loop {
            let Some(h) = host.upgrade() else { return };
            if !h.sources_ready() {
                drop(h);
                tokio::time::sleep(POD_CLEANUP_POLL).await;
                continue;
            }
            match self.synchronize(&h).await {
                Some(pod) => self.wait_for_cleanup(&h, &pod).await,
                None => {
                    drop(h);
                    tokio::time::sleep(MONITORING_INTERVAL).await;
                }
            }
        }
    }
}

/// The grace of a pod evicted for a soft threshold: its `terminationGracePeriodSeconds`
/// (30 s by default), at most `max_seconds` when that is above zero.
pub fn soft_grace(pod: &Pod, max_seconds: i64) -> Duration {
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0);
    let seconds = if max_seconds > 0 {
        own.min(max_seconds)
    } else {
        own
    };
    Duration::from_secs(seconds as u64)
}

/// Upstream's eviction `Admit` under `conditions`.
pub fn admit(conditions: &[Pressure], pod: &Pod) -> Result<(), (&'static str, String)> {
    if conditions.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if conditions == [Pressure::Memory] {
        let best_effort = pod
            .spec
            .as_ref()
            .is_none_or(|s| crate::status::qos_class(s) == crate::status::QosClass::BestEffort);
        if !best_effort || tolerates_memory_pressure(pod) {
            return Ok(());
        }
    }
    Err((REASON, node_condition_message(conditions)))
}

#[cfg(test)]
mod tests;
