//! What a step of a pass comes to: a container start that must wait, and the sandbox failures
//! that end a pass (a `FailedCreatePodSandBox` event, then a retry).

use std::time::Duration;

use kubenode_cni::ClientError;
use kubenode_runtime::RuntimeError;
use tokio::task::JoinError;

/// A failure that ends the pass: the pod's sandbox is missing or did not come up. Its text is
/// the `FailedCreatePodSandBox` event's message (upstream's wording where it has one).
#[derive(Debug, thiserror::Error)]
pub(super) enum SyncError {
    /// The runtime could not create the sandbox.
    #[error("Failed to create pod sandbox: {0}")]
    CreateSandbox(#[source] RuntimeError),
    /// A new sandbox did not come up; it was torn down with what was created in it.
    #[error("Failed to create pod sandbox: {0}")]
    SandboxStart(#[source] SandboxStartError),
    /// The pod's managed /etc files could not be written into a new sandbox.
    #[error("writing the pod's /etc files: {0}")]
    PodFiles(#[source] std::io::Error),
}

/// Why a new sandbox did not come up.
#[derive(Debug, thiserror::Error)]
pub(super) enum SandboxStartError {
    /// CNI ADD failed.
    #[error("setting up the pod network: {0}")]
    Network(#[source] ClientError),
    /// The CNI ADD task panicked or was cancelled.
    #[error("setting up the pod network: the task failed: {0}")]
    NetworkTask(#[source] JoinError),
    /// The pause container did not start.
    #[error("starting the pause container: {0}")]
    Pause(#[source] RuntimeError),
    /// The pause container's start task panicked or was cancelled.
    #[error("starting the pause container: the task failed: {0}")]
    PauseTask(#[source] JoinError),
    /// The pod's /etc files could not be rewritten with the pod IPs.
    #[error("writing the pod's /etc files: {0}")]
    PodFiles(#[source] std::io::Error),
}

/// What came of an attempt to start one container (its failures show in its status; only a
/// sandbox failure, a [`SyncError`], ends the pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StartOutcome {
    /// Started, or the start failed and the runtime recorded the instance as exited: the
    /// back-off and the status take it from there.
    Done,
    /// Held (image pull back-off, a create or config error, a volume): come back after this.
    Wait(Duration),
}
