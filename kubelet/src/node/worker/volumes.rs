//! The worker's side of pod volumes: set them up before containers (a failure holds the
//! pod's containers in `ContainerCreating` with a `FailedMount` event and is retried), keep the contents of the
//! configMap, secret, downwardAPI and projected volumes current (made from `Objects` before the
//! set-up, made again on an objects change, a label or annotation change, or every 60 s),
//! evict a pod whose disk emptyDir outgrew its `sizeLimit` or that is over its
//! `ephemeral-storage` limits, and tear volumes down with the pod. The logic lives in [`crate::volume`]; this file is the glue to
//! events and status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubenode_runtime::spec::BindMount;

use super::{deadline, uid_of, PodWorker, Terminal, WorkerDeps};
use crate::events::ObjectRef;
use crate::node::observe::BlockCause;
use crate::volume::usage::{self, ContainerStorage};
use crate::volume::{projection, Payloads, VolumeError};

/// Wait before retrying volumes that failed to set up.
const VOLUME_RETRY: Duration = Duration::from_secs(2);
/// Upstream's pod status reason for an evicted pod.
const EVICTED: &str = "Evicted";

impl PodWorker {
    /// Sets the pod's volumes up. `Err(requeue)` when one failed: the pod gets a `FailedMount`
    /// warning per volume and no container is started (a container not created yet shows
    /// `ContainerCreating`, as upstream).
    pub(super) async fn set_up_volumes(&mut self, pod: &Pod) -> Result<(), Duration> {
        let uid = uid_of(pod);
        let with_contents = projection::has_projected_volumes(pod);
        let was_set_up = self.deps.volumes.is_set_up(&uid);
        if was_set_up && with_contents {
            self.update_contents_if_due(pod).await;
        }
        // The generation of the objects the contents are made from, taken before reading them.
        let mut changes = self.deps.objects.changes();
        changes.mark_unchanged();
        let payloads = if with_contents && !was_set_up {
            self.payloads(pod).await
        } else {
            Payloads::new()
        };
        let p = pod.clone();
        let result = self
            .deps
            .with_volumes(move |volumes| volumes.set_up_pod_with(&p, &payloads))
            .await;
        let errors = match result {
            Ok(()) => {
                if with_contents && !was_set_up {
                    self.state.contents = Some(ContentsSeen::now(pod, changes));
                }
                self.state
                    .blocked
                    .retain(|_, b| b.cause != BlockCause::VolumeSetUp);
                return Ok(());
            }
            Err(errors) => errors,
        };
        for e in &errors {
            tracing::warn!(error = %e, "setting up a volume");
            self.deps
                .events
                .warning(&ObjectRef::pod(pod), "FailedMount", e.to_string());
        }
        // Upstream's pod sync stops at the volumes: no container is created, and those that
        // never were show the default waiting reason (`ContainerCreating`, `PodInitializing`
        // with init containers) with no message; the pod stays Pending. The events say why.
        let instances = match self.state.record.sandbox_id.clone() {
            Some(sid) => self.deps.runtime.list_containers(Some(&sid)).await,
            None => Vec::new(),
        };
        self.publish(pod, true, &instances);
        Err(VOLUME_RETRY)
    }

    /// The contents of the pod's configMap, secret, downwardAPI and projected volumes now.
    async fn payloads(&self, pod: &Pod) -> Payloads {
        let node = crate::node::downward::host_capacity(&self.deps.config);
        projection::pod_payloads(pod, &self.deps.objects, node).await
    }

    /// Rewrites the contents of the pod's configMap, secret, downwardAPI and projected
    /// volumes when an object changed, the pod's labels or annotations changed, or
    /// [`CONTENTS_RESYNC`] passed (new tokens; upstream's periodic remount). Only changed
    /// payloads are written; a failure is a `FailedMount` warning and the running containers
    /// keep the last contents.
    async fn update_contents_if_due(&mut self, pod: &Pod) {
        let due = match self.state.contents.as_mut() {
            None => true,
            Some(seen) => seen.due(pod),
        };
        if !due {
            return;
        }
        let mut changes = self.deps.objects.changes();
        changes.mark_unchanged();
        let payloads = self.payloads(pod).await;
        let p = pod.clone();
        let (updated, errors) = self
            .deps
            .with_volumes(move |volumes| volumes.update_contents(&p, &payloads))
            .await;
        for volume in updated {
            tracing::info!(%volume, "updated the volume's contents");
        }
        for e in &errors {
            tracing::warn!(error = %e, "updating a volume's contents");
            self.deps
                .events
                .warning(&ObjectRef::pod(pod), "FailedMount", e.to_string());
        }
        self.state.contents = Some(ContentsSeen::now(pod, changes));
    }

    /// Checks the pod's active deadline, then its local storage limits (emptyDir `sizeLimit`,
    /// `ephemeral-storage` limits; measured at most every 10 s), and kills it when one is
    /// exceeded: containers killed at once, pod `Failed` with reason
    /// `DeadlineExceeded` (normal event of that name) or `Evicted` (warning event `Evicted`).
    /// The reason is saved in the pod record before the kill, so that a pod killed so (even
    /// by an agent that died right after deciding it) stays killed after an agent restart: any
    /// container of it still running is killed again, none is started.
    /// True when the pod is (now or already) killed so.
    pub(super) async fn evict_if_over_limit(&mut self, pod: &Pod, sandbox_id: &str) -> bool {
        if self.state.record.terminal.is_none() {
            let past_deadline =
                deadline::time_left(pod, self.state.record.start_time, self.deps.clock.now())
                    .is_some_and(|left| left.is_zero());
            let terminal = if past_deadline {
                // Upstream records this one as a normal event.
                tracing::warn!("the pod is past its activeDeadlineSeconds; killing it");
                self.deps.events.normal(
                    &ObjectRef::pod(pod),
                    deadline::DEADLINE_EXCEEDED,
                    deadline::DEADLINE_MESSAGE,
                );
                Terminal {
                    reason: deadline::DEADLINE_EXCEEDED.into(),
                    message: deadline::DEADLINE_MESSAGE.into(),
                    disruption_target: false,
                }
            } else {
                let Some(message) = self.local_storage_over_limit(pod, sandbox_id).await else {
                    return false;
                };
                tracing::warn!(%message, "evicting the pod");
                self.deps
                    .events
                    .warning(&ObjectRef::pod(pod), EVICTED, message.clone());
                Terminal {
                    reason: EVICTED.into(),
                    message,
                    disruption_target: false,
                }
            };
            // On disk (durably) before the kill: an agent killed in between finds the pod
            // Failed when it restarts, and never starts its containers again.
            self.state.record.terminal = Some(terminal);
            self.save_record();
        }
        // The DisruptionTarget condition's transition time, kept across passes.
        let disruption_since = self.state.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == crate::eviction::DISRUPTION_TARGET)
                .and_then(|c| c.last_transition_time.clone())
        });
        // Nothing to do but after an agent restart that came between the record and the kill.
        self.deps
            .stop_containers(pod, sandbox_id, Duration::ZERO)
            .await;
        let instances = self.deps.runtime.list_containers(Some(sandbox_id)).await;
        self.publish(pod, false, &instances);
        if let (Some(status), Some(terminal)) = (
            self.state.status.as_mut(),
            self.state.record.terminal.as_ref(),
        ) {
            status.phase = Some("Failed".into());
            status.reason = Some(terminal.reason.clone());
            status.message = Some(terminal.message.clone());
            if terminal.disruption_target {
                let since = disruption_since.unwrap_or(Time(self.deps.clock.now()));
                set_disruption_target(status, &terminal.message, since);
            }
            let mut pod = pod.clone();
            pod.status = Some(status.clone());
            self.deps
                .pods
                .set_pod(&uid_of(&pod), pod, self.state.record.sandbox_id.clone());
        }
        true
    }

    /// Upstream's `localStorageEviction` for the pod, at most every
    /// [`usage::CHECK_INTERVAL`]: the eviction message when a disk emptyDir, the pod or one
    /// of its containers is over its local ephemeral storage limit (see [`usage`]).
    async fn local_storage_over_limit(&self, pod: &Pod, sandbox_id: &str) -> Option<String> {
        if !self.deps.volumes.storage_check_due(&uid_of(pod)) {
            return None;
        }
        let instances = self.deps.runtime.list_containers(Some(sandbox_id)).await;
        let runtime = self.deps.runtime.inner();
        let containers: Vec<ContainerStorage> = usage::counted_instances(&instances)
            .into_iter()
            .map(|s| ContainerStorage::of(s, runtime.writable_layer(&s.id)))
            .collect();
        let p = pod.clone();
        self.deps
            .with_volumes(move |volumes| volumes.local_storage_exceeded(&p, &containers))
            .await
    }
}

impl WorkerDeps {
    /// The bind mounts of a container's volumeMounts; an error blocks the container with
    /// `CreateContainerConfigError` (as upstream's `makeMounts` failures do).
    pub(super) async fn container_mounts(
        self: &Arc<Self>,
        pod: &Pod,
        container: &Container,
    ) -> Result<Vec<BindMount>, VolumeError> {
        let (p, c) = (pod.clone(), container.clone());
        self.with_volumes(move |volumes| volumes.container_mounts(&p, &c))
            .await
    }

    /// Unmounts the pod's volumes and removes its directory (never through a mount point),
    /// retrying a busy teardown a few times.
    pub(super) async fn tear_down_volumes(self: &Arc<Self>, uid: &str) {
        for attempt in 1..=TEARDOWN_ATTEMPTS {
            let u = uid.to_string();
            let Err(errors) = self
                .with_volumes(move |volumes| volumes.tear_down_pod(&u))
                .await
            else {
                return;
            };
            for e in errors {
                if attempt == TEARDOWN_ATTEMPTS {
                    tracing::error!(pod_uid = uid, error = %e, "tearing down the pod's volumes; its directory is kept until the next agent start");
                } else {
                    tracing::warn!(pod_uid = uid, error = %e, attempt, "tearing down the pod's volumes; retrying");
                }
            }
            if attempt < TEARDOWN_ATTEMPTS {
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
    }

    /// Tears down pod directories left by pods that are neither desired nor have a sandbox (an
    /// agent killed after removing a sandbox but before unmounting its volumes): upstream's
    /// orphaned pod directory cleanup, run once at start.
    pub(in crate::node) async fn remove_orphan_pod_dirs(self: Arc<Self>, keep: Vec<String>) {
        let Ok(entries) = std::fs::read_dir(self.pods_dir()) else {
            return;
        };
        for uid in entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|uid| !keep.contains(uid))
        {
            tracing::info!(pod_uid = %uid, "removing the directory of a pod that no longer exists");
            self.tear_down_volumes(&uid).await;
        }
    }
}

/// How often the contents of a running pod's configMap, secret, downwardAPI and projected
/// volumes are made again when nothing signalled a change (upstream's sync period, one
/// minute): a new service-account token is written within it.
pub(super) const CONTENTS_RESYNC: Duration = Duration::from_secs(60);

/// What the contents of a pod's volumes were last made from.
pub(super) struct ContentsSeen {
    changes: watch::Receiver<u64>,
    at: Instant,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

impl ContentsSeen {
    fn now(pod: &Pod, changes: watch::Receiver<u64>) -> Self {
        ContentsSeen {
            changes,
            at: Instant::now(),
            labels: pod.metadata.labels.clone(),
            annotations: pod.metadata.annotations.clone(),
        }
    }

    fn due(&mut self, pod: &Pod) -> bool {
        self.changes.has_changed().unwrap_or(false)
            || self.at.elapsed() >= CONTENTS_RESYNC
            || self.labels != pod.metadata.labels
            || self.annotations != pod.metadata.annotations
    }
}

/// Teardown attempts before giving up until the next agent start (a mount can stay busy for
/// a moment after its last process exits).
const TEARDOWN_ATTEMPTS: u32 = 3;

/// Sets the `DisruptionTarget` condition of a pod evicted for node pressure (upstream's
/// eviction manager: reason `TerminationByKubelet`, the eviction message) as of `since`.
fn set_disruption_target(
    status: &mut k8s_openapi::api::core::v1::PodStatus,
    message: &str,
    since: Time,
) {
    use k8s_openapi::api::core::v1::PodCondition;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != crate::eviction::DISRUPTION_TARGET);
    conditions.push(PodCondition {
        type_: crate::eviction::DISRUPTION_TARGET.into(),
        status: "True".into(),
        reason: Some(crate::eviction::TERMINATION_BY_KUBELET.into()),
        message: Some(message.to_string()),
        last_transition_time: Some(since),
        ..Default::default()
    });
}
