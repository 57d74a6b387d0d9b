//! Termination: preStop hooks, the stop signal, the grace period, then removal of everything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kubenode_runtime::{ContainerState, ContainerStatus, Signal};

use super::{pod_info, uid_of, PodWorker, WorkerDeps, MIN_GRACE_AFTER_HOOK};
use crate::backoff::container_backoff_key;
use crate::events::ObjectRef;
use crate::node::actions::Kill;

impl PodWorker {
    /// Stops and removes everything of the pod, within `deletionGracePeriodSeconds` when the
    /// API deleted it, else `terminationGracePeriodSeconds`.
    pub(super) async fn terminate(&mut self, pod: &Pod) {
        let grace = kill_grace(pod);
        // A sandbox that failed to come up is gone already.
        let _ = self.finish_sandbox(pod).await;
        if let Some(sid) = self.state.record.sandbox_id.clone() {
            self.deps.stop_containers(pod, &sid, grace).await;
            let instances = self.deps.runtime.list_containers(Some(&sid)).await;
            self.publish(pod, false, &instances);
            self.deps.teardown_sandbox(pod, &sid, Duration::ZERO).await;
        } else {
            // A worker that never recorded its sandbox (or an adopted one): find it by UID.
            let uid = uid_of(pod);
            if let Some(s) = self
                .deps
                .runtime
                .list_sandboxes()
                .await
                .into_iter()
                .find(|s| s.pod.uid == uid)
            {
                self.deps.teardown_sandbox(pod, &s.id, grace).await;
            }
        }
        let uid = uid_of(pod);
        self.deps.tear_down_volumes(&uid).await;
        let info = pod_info(pod);
        let _ = std::fs::remove_dir_all(
            self.deps
                .config
                .log_dir
                .join(format!("{}_{}_{}", info.namespace, info.name, uid)),
        );
        let mut crash = self.deps.crash_backoff();
        for c in pod.spec.iter().flat_map(crate::pod_containers) {
            crash.forget(&container_backoff_key(
                &info.namespace,
                &info.name,
                &uid,
                &c.name,
            ));
        }
    }
}

/// The grace period of a kill: the API's deletion grace period when it deleted the pod, else
/// the pod's `terminationGracePeriodSeconds` (30 s by default), as upstream's `killContainer`.
fn kill_grace(pod: &Pod) -> Duration {
    Duration::from_secs(
        pod.metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64,
    )
}

impl WorkerDeps {
    /// Kills the instances `compute_pod_actions` named (an instance in `Unknown` state before
    /// its restart), each with a `Killing` event carrying the action's message. False when one
    /// could not be killed: then nothing may start this pass (upstream `SyncPod` returns).
    pub(super) async fn kill_instances(
        self: &Arc<Self>,
        pod: &Pod,
        instances: &[ContainerStatus],
        kills: &[Kill],
    ) -> bool {
        let spec = pod.spec.clone().unwrap_or_default();
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|st| st.pod_ip.clone())
            .unwrap_or_default();
        let mut all_killed = true;
        for kill in kills {
            let Some(instance) = instances.iter().find(|s| s.id == kill.id) else {
                continue; // gone already
            };
            self.events.normal(
                &ObjectRef::container(pod, &kill.name),
                "Killing",
                kill.message.clone(),
            );
            let container = crate::pod_containers(&spec)
                .find(|c| c.name == kill.name)
                .cloned();
            all_killed &= self
                .clone()
                .stop_one(
                    pod.clone(),
                    pod_ip.clone(),
                    instance.clone(),
                    container,
                    kill_grace(pod),
                )
                .await;
        }
        all_killed
    }

    /// Stops the running containers of a sandbox: preStop hooks first, then the stop signal and
    /// SIGKILL when the grace runs out, all containers at once.
    pub(super) async fn stop_containers(
        self: &Arc<Self>,
        pod: &Pod,
        sandbox_id: &str,
        grace: Duration,
    ) {
        let running: Vec<ContainerStatus> = self
            .runtime
            .list_containers(Some(sandbox_id))
            .await
            .into_iter()
            .filter(|s| matches!(s.state, ContainerState::Running | ContainerState::Created))
            .collect();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut tasks = Vec::new();
        for s in running {
            let container = crate::pod_containers(&spec)
                .find(|c| c.name == s.name)
                .cloned();
            self.events.normal(
                &ObjectRef::container(pod, &s.name),
                "Killing",
                format!("Stopping container {}", s.name),
            );
            let deps = self.clone();
            let pod_obj = pod.clone();
            let pod_ip = pod
                .status
                .as_ref()
                .and_then(|st| st.pod_ip.clone())
                .unwrap_or_default();
            tasks.push(tokio::spawn(
                deps.stop_one(pod_obj, pod_ip, s, container, grace),
            ));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Runs the container's preStop hook (if any) within `grace`, then stops `instance` with
    /// the image's stop signal and what is left of the grace period (at least 2 s after a hook).
    /// False (and a warning logged) when the runtime could not stop it.
    pub(in crate::node) async fn stop_one(
        self: Arc<Self>,
        pod_obj: Pod,
        pod_ip: String,
        instance: ContainerStatus,
        container: Option<Container>,
        grace: Duration,
    ) -> bool {
        let started = Instant::now();
        let pre_stop = container
            .as_ref()
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref());
        if let (Some(hook), Some(c), false) = (pre_stop, container.as_ref(), grace.is_zero()) {
            let target = crate::node::hooks::Target {
                pod: &pod_obj,
                container: c,
                container_id: &instance.id,
                pod_ip: &pod_ip,
            };
            // Upstream waits for the hook at most the grace period, then goes on with the stop
            // (a `sleep` longer than that is cut there).
            let ran = tokio::time::timeout(
                grace,
                crate::node::hooks::run(&self.runtime, &self.events, target, hook, grace),
            )
            .await;
            match ran {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    tracing::warn!(container = %instance.name, "{why}");
                    // No detail in the event, as upstream (the output may hold secrets).
                    self.events.warning(
                        &ObjectRef::container(&pod_obj, &instance.name),
                        "FailedPreStopHook",
                        "PreStopHook failed",
                    );
                }
                Err(_) => tracing::info!(
                    container = %instance.name,
                    grace = ?grace,
                    "the preStop hook did not complete within the grace period"
                ),
            }
        }
        let left = grace
            .saturating_sub(started.elapsed())
            .max(if grace.is_zero() {
                Duration::ZERO
            } else {
                MIN_GRACE_AFTER_HOOK
            });
        let signal = self.image_stop_signal(&instance.image);
        match self
            .runtime
            .stop_container(&instance.id, left, signal)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(container = %instance.name, error = %e, "stopping the container");
                false
            }
        }
    }

    /// The image's `STOPSIGNAL` (`None`: SIGTERM).
    pub(super) fn image_stop_signal(&self, image: &str) -> Option<Signal> {
        let img = self.images.get(image).ok().flatten()?;
        let text = img.config.config().as_ref()?.stop_signal().clone()?;
        let signal = parse_signal(&text).and_then(Signal::new);
        if signal.is_none() {
            tracing::warn!(image, stop_signal = %text, "unknown STOPSIGNAL in the image; using SIGTERM");
        }
        signal
    }
}

/// Parses a signal as images spell it: `SIGQUIT`, `QUIT` or `3`.
pub(super) fn parse_signal(text: &str) -> Option<i32> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn stop_signals_as_images_spell_them() {
        assert_eq!(parse_signal("SIGQUIT"), Some(3));
        assert_eq!(parse_signal("quit"), Some(3));
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
