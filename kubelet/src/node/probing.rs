//! The prober's view of the node: exec probes through the runtime, kills as the pod worker stops
//! a container (preStop hook, stop signal, grace period), and waking a pod's worker when one of
//! its probe results changed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::prober::{BoxFuture, ExecOutcome, HostError, Kill, ProbeHost};

use super::Kubelet;

/// [`ProbeHost`] over the kubelet's runtime.
#[derive(Debug)]
pub(super) struct RuntimeProbeHost {
    pub(super) kubelet: Weak<Kubelet>,
}

impl RuntimeProbeHost {
    fn kubelet(&self) -> Result<Arc<Kubelet>, HostError> {
        self.kubelet.upgrade().ok_or(HostError::ShuttingDown)
    }
}

impl ProbeHost for RuntimeProbeHost {
    fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, HostError> {
        let k = self.kubelet()?;
        let out = k.runtime.inner().exec_capped(
            container_id,
            cmd,
            timeout,
            crate::prober::MAX_EXEC_OUTPUT,
        )?;
        let mut output = out.stdout;
        output.extend_from_slice(&out.stderr);
        Ok(ExecOutcome {
            exit_code: out.exit_code,
            output,
            timed_out: out.timed_out,
        })
    }

    fn kill(&self, request: Kill) -> BoxFuture<Result<(), HostError>> {
        let kubelet = self.kubelet.clone();
        Box::pin(async move {
            let k = kubelet.upgrade().ok_or(HostError::ShuttingDown)?;
            let entry = {
                let pods = k.pods.lock().expect("pods lock");
                pods.get(&request.pod_uid)
                    .map(|e| (e.pod.clone(), e.sandbox_id.clone()))
            };
            let Some((pod, Some(sandbox_id))) = entry else {
                return Ok(()); // the pod is gone, and its containers with it
            };
            let instances = k
                .runtime
                .try_run(move |rt| rt.list_containers(Some(&sandbox_id)))
                .await
                .map_err(|source| HostError::Task {
                    what: "listing the pod's containers",
                    source,
                })?;
            let Some(instance) = instances.into_iter().find(|s| s.id == request.container_id)
            else {
                return Ok(());
            };
            let container = pod
                .spec
                .iter()
                .flat_map(crate::pod_containers)
                .find(|c| c.name == request.container)
                .cloned();
            let pod_ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            super::worker::stop_one(k.clone(), pod, pod_ip, instance, container, request.grace)
                .await;
            Ok(())
        })
    }
}

/// Wakes the worker of pod `uid` (a no-op for a pod without one).
pub(super) fn wake(kubelet: &Weak<Kubelet>, uid: &str) {
    let Some(k) = kubelet.upgrade() else {
        return;
    };
    let pods = k.pods.lock().expect("pods lock");
    if let Some(w) = pods.get(uid).and_then(|e| e.worker.as_ref()) {
        w.send_modify(|_| {});
    }
}
