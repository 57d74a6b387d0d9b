//! The prober's view of the node: exec probes and kills through the runtime, and waking a pod's
//! worker when one of its probe results changed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::prober::{ExecOutcome, ProbeHost};

use super::Kubelet;

/// [`ProbeHost`] over the kubelet's runtime.
#[derive(Debug)]
pub(super) struct RuntimeProbeHost {
    pub(super) kubelet: Weak<Kubelet>,
}

impl RuntimeProbeHost {
    fn kubelet(&self) -> Result<Arc<Kubelet>, String> {
        self.kubelet
            .upgrade()
            .ok_or_else(|| "the kubelet is shutting down".to_string())
    }
}

impl ProbeHost for RuntimeProbeHost {
    fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, String> {
        let k = self.kubelet()?;
        let out = k
            .parts
            .runtime
            .exec(container_id, cmd, timeout)
            .map_err(|e| e.to_string())?;
        let mut output = out.stdout;
        output.extend_from_slice(&out.stderr);
        Ok(ExecOutcome {
            exit_code: out.exit_code,
            output,
            timed_out: out.timed_out,
        })
    }

    fn kill(&self, container_id: &str, image: &str, grace: Duration) -> Result<(), String> {
        let k = self.kubelet()?;
        let signal = super::worker::image_stop_signal(&k, image);
        k.parts
            .runtime
            .stop_container(container_id, grace, signal)
            .map_err(|e| e.to_string())
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
