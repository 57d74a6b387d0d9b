//! The prober's view of the node: exec probes through the runtime, kills as the pod worker stops
//! a container (preStop hook, stop signal, grace period), and waking a pod's worker when one of
//! its probe results changed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::prober::{BoxFuture, ExecOutcome, HostError, Kill, ProbeHost};

use super::worker::WorkerDeps;

/// [`ProbeHost`] over the kubelet's runtime.
#[derive(Debug)]
pub(super) struct RuntimeProbeHost {
    pub(super) deps: Weak<WorkerDeps>,
}

impl RuntimeProbeHost {
    fn deps(&self) -> Result<Arc<WorkerDeps>, HostError> {
        self.deps.upgrade().ok_or(HostError::ShuttingDown)
    }
}

impl ProbeHost for RuntimeProbeHost {
    fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, HostError> {
        let deps = self.deps()?;
        let out = deps.runtime.inner().exec_capped(
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
        let deps = self.deps.clone();
        Box::pin(async move {
            let deps = deps.upgrade().ok_or(HostError::ShuttingDown)?;
            let Some((pod, Some(sandbox_id))) = deps.pods.get(&request.pod_uid) else {
                return Ok(()); // the pod is gone, and its containers with it
            };
            let instances = deps
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
            deps.stop_one(
                Arc::unwrap_or_clone(pod),
                pod_ip,
                instance,
                container,
                request.grace,
            )
            .await;
            Ok(())
        })
    }
}
