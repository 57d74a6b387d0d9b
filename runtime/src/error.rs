//! Errors of the runtime crate: one enum naming the pod, the container and the
//! cause, so the kubelet can map it to `CreateContainerError`, `StartError`
//! or `RunContainerError`, and [`ErrorList`] for teardown that keeps going.

use std::fmt;
use std::path::PathBuf;

use kubenode_fsutil::IoError;

use crate::oci::OciError;

/// An error of a runtime operation on a pod or container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Preparing the runtime's own directories or files failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Generating the OCI spec of a container failed (bad user, no command...).
    #[error("generating the OCI spec of container {container} of pod {pod}: {source}")]
    Spec {
        /// `namespace/name` of the pod.
        pod: String,
        /// Container name.
        container: String,
        /// The cause.
        #[source]
        source: crate::spec::SpecError,
    },
    /// Creating a container (bundle, rootfs, shim, `runtime create`) failed.
    #[error("creating container {container} of pod {pod}: {message}")]
    Create {
        /// `namespace/name` of the pod.
        pod: String,
        /// Container name (`POD` for the sandbox).
        container: String,
        /// What failed, with the runtime's own message.
        message: String,
    },
    /// Starting a created container failed.
    #[error("starting container {container} of pod {pod}: {source}")]
    Start {
        /// `namespace/name` of the pod.
        pod: String,
        /// Container name.
        container: String,
        /// The cause.
        #[source]
        source: Box<OciError>,
    },
    /// An OCI runtime call failed outside create/start.
    #[error("{what} container {container} of pod {pod}: {source}")]
    Oci {
        /// What was being done.
        what: &'static str,
        /// `namespace/name` of the pod.
        pod: String,
        /// Container name.
        container: String,
        /// The cause.
        #[source]
        source: Box<OciError>,
    },
    /// A host operation (mount, netns, cgroup) failed.
    #[error("{what} for pod {pod}: {source}")]
    Host {
        /// What was being done.
        what: &'static str,
        /// `namespace/name` of the pod.
        pod: String,
        /// The cause.
        #[source]
        source: crate::host::HostError,
    },
    /// No sandbox or container with this id is known.
    #[error("no {kind} with id {id}")]
    NotFound {
        /// `sandbox` or `container`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The operation does not fit the object's state (start a running container...).
    #[error("container {container} of pod {pod} is {state}, cannot {what}")]
    BadState {
        /// What was asked.
        what: &'static str,
        /// `namespace/name` of the pod.
        pod: String,
        /// Container name.
        container: String,
        /// The state it is in.
        state: String,
    },
    /// The configured OCI runtime does not exist.
    #[error("OCI runtime {name:?} not found: neither an executable path nor a name in PATH (known to work: runc, crun, youki)")]
    UnknownRuntime {
        /// The configured name or path.
        name: String,
    },
    /// Several steps of a teardown failed.
    #[error(transparent)]
    Teardown(#[from] ErrorList),
}

impl RuntimeError {
    /// The kubelet's waiting reason for this error when it came from creating
    /// or starting a container: `CreateContainerConfigError` (the pod's own
    /// settings cannot work, e.g. `runAsNonRoot` with a root image),
    /// `CreateContainerError` or `RunContainerError`.
    pub fn kubelet_reason(&self) -> Option<&'static str> {
        match self {
            RuntimeError::Spec {
                source: crate::spec::SpecError::InvalidUser(m),
                ..
            } if m.contains("runAsNonRoot") || m.contains("non-numeric user") => {
                Some("CreateContainerConfigError")
            }
            RuntimeError::Spec { .. }
            | RuntimeError::Create { .. }
            | RuntimeError::Host { .. }
            | RuntimeError::Io { .. } => Some("CreateContainerError"),
            RuntimeError::Start { .. } => Some("RunContainerError"),
            _ => None,
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io(IoError::new(what, path, source))
    }
}

/// All failures of a teardown that went on past the first one.
#[derive(Debug, Default, thiserror::Error)]
pub struct ErrorList {
    /// What was being torn down, e.g. `sandbox default/web`.
    pub subject: String,
    /// Every failure, in the order it happened.
    pub errors: Vec<String>,
}

impl ErrorList {
    pub(crate) fn new(subject: impl Into<String>) -> Self {
        ErrorList {
            subject: subject.into(),
            errors: Vec::new(),
        }
    }

    /// Records the error of `result`, if any, with a short context.
    pub(crate) fn check<T, E: fmt::Display>(
        &mut self,
        context: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(subject = %self.subject, "{context}: {e}");
                self.errors.push(format!("{context}: {e}"));
                None
            }
        }
    }

    /// `Ok` when nothing failed, otherwise the list as an error.
    pub(crate) fn into_result(self) -> Result<(), ErrorList> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tearing down {}: {} error(s): {}",
            self.subject,
            self.errors.len(),
            self.errors.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecError;

    #[test]
    fn kubelet_reasons() {
        let spec = |e| RuntimeError::Spec {
            pod: "ns/p".into(),
            container: "c".into(),
            source: e,
        };
        let non_root = spec(SpecError::InvalidUser(
            "container has runAsNonRoot and image will run as root".into(),
        ));
        assert_eq!(
            non_root.kubelet_reason(),
            Some("CreateContainerConfigError")
        );
        assert_eq!(
            spec(SpecError::NoCommand).kubelet_reason(),
            Some("CreateContainerError")
        );
        let start = RuntimeError::Start {
            pod: "ns/p".into(),
            container: "c".into(),
            source: Box::new(OciError::Timeout {
                command: "runc start".into(),
                after: std::time::Duration::from_secs(1),
            }),
        };
        assert_eq!(start.kubelet_reason(), Some("RunContainerError"));
        assert!(start
            .to_string()
            .contains("starting container c of pod ns/p"));
        assert_eq!(
            RuntimeError::NotFound {
                kind: "container",
                id: "x".into()
            }
            .kubelet_reason(),
            None
        );
        let mut list = ErrorList::new("sandbox s");
        list.check::<(), _>("a", Err("one"));
        list.check::<(), _>("b", Err("two"));
        assert_eq!(
            list.to_string(),
            "tearing down sandbox s: 2 error(s): a: one; b: two"
        );
    }
}
