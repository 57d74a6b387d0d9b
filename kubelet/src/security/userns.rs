//! Pods with their own user namespace (`spec.hostUsers: false`) at admission.
//!
//! Upstream's kubelet gives such a pod a 65536-id range and asks the runtime for a user
//! namespace with idmapped volume mounts; when the runtime cannot, sandbox creation fails with
//! "can't set `spec.hostUsers: false`, runtime does not support user namespaces". kubenode
//! does not implement user namespaces yet, so it rejects such a pod at admission (phase
//! `Failed`, reason [`REASON`]) with a message naming what is missing on this node: an OCI
//! runtime with idmapped mounts (runc >= 1.2, crun >= 1.9), Linux >= 6.3 (idmapped tmpfs),
//! or, where both are there, kubenode's own support.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::core::v1::PodSpec;
use kubenode_runtime::oci::{kernel_userns_missing, resolve_runtime, RuntimeFeatures};

/// The rejection reason.
pub const REASON: &str = "UserNamespacesNotSupported";

/// Upstream's error when the runtime lacks user namespace support
/// (`pkg/kubelet/userns/userns_manager.go`).
pub const RUNTIME_MISSING: &str =
    "can't set `spec.hostUsers: false`, runtime does not support user namespaces";

/// What the node offers for user namespaces.
pub trait UsernsHost {
    /// The OCI runtime's name, version and idmap support.
    fn runtime(&self) -> RuntimeFeatures;
    /// The kernel's `major.minor`.
    fn kernel(&self) -> Option<(u32, u32)>;
}

/// The real node: the configured runtime, asked once per process and path.
#[derive(Debug, Clone)]
pub struct SystemUserns {
    runtime: PathBuf,
}

impl SystemUserns {
    /// The node whose OCI runtime is `runtime` (a path or a name looked up in `PATH`).
    pub fn new(runtime: &Path) -> SystemUserns {
        SystemUserns {
            runtime: resolve_runtime(runtime).unwrap_or_else(|| runtime.to_path_buf()),
        }
    }
}

impl UsernsHost for SystemUserns {
    fn runtime(&self) -> RuntimeFeatures {
        static PROBED: OnceLock<Mutex<HashMap<PathBuf, RuntimeFeatures>>> = OnceLock::new();
        let mut probed = crate::node::lock(PROBED.get_or_init(Default::default), "runtime probes");
        probed
            .entry(self.runtime.clone())
            .or_insert_with(|| {
                let f = RuntimeFeatures::probe(&self.runtime);
                tracing::info!(
                    runtime = %f.describe(),
                    idmap_mounts = f.idmap_mounts(),
                    "OCI runtime probed for user namespace support"
                );
                f
            })
            .clone()
    }

    fn kernel(&self) -> Option<(u32, u32)> {
        crate::validation::sysctl::SysctlAllowlist::kernel_version()
    }
}

/// The admission decision for a pod; the error is the rejection message.
pub fn admit(spec: &PodSpec, host: &dyn UsernsHost) -> Result<(), String> {
    if spec.host_users != Some(false) {
        return Ok(());
    }
    let runtime = host.runtime();
    let kernel = kernel_userns_missing(host.kernel());
    Err(match (runtime.userns_missing(), kernel) {
        (Some(r), Some(k)) => format!("{RUNTIME_MISSING}: {r}; also {k}"),
        (Some(r), None) => format!("{RUNTIME_MISSING}: {r}"),
        (None, Some(k)) => {
            format!("can't set `spec.hostUsers: false`, this node does not support user namespaces: {k}")
        }
        (None, None) => format!(
            "can't set `spec.hostUsers: false`: kubenode does not implement user namespaces yet \
             ({} and makes idmapped mounts)",
            runtime.describe()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Host(RuntimeFeatures, Option<(u32, u32)>);

    impl UsernsHost for Host {
        fn runtime(&self) -> RuntimeFeatures {
            self.0.clone()
        }
        fn kernel(&self) -> Option<(u32, u32)> {
            self.1
        }
    }

    fn runtime(name: &str, version: &str, idmap: Option<bool>) -> RuntimeFeatures {
        RuntimeFeatures {
            path: PathBuf::from(format!("/usr/bin/{name}")),
            name: name.into(),
            version: Some(version.into()),
            idmap,
        }
    }

    fn spec(host_users: Option<bool>) -> PodSpec {
        PodSpec {
            host_users,
            ..Default::default()
        }
    }

    #[test]
    fn only_host_users_false_is_checked() {
        let host = Host(runtime("runc", "1.1.5+ds1", None), Some((6, 1)));
        assert_eq!(admit(&spec(None), &host), Ok(()));
        assert_eq!(admit(&spec(Some(true)), &host), Ok(()));
    }

    #[test]
    fn rejection_names_what_is_missing() {
        let old = runtime("runc", "1.1.5+ds1", None);
        assert_eq!(
            admit(&spec(Some(false)), &Host(old.clone(), Some((6, 18)))),
            Err(
                "can't set `spec.hostUsers: false`, runtime does not support user namespaces: \
                 /usr/bin/runc is runc 1.1.5+ds1; user namespaces need an OCI runtime with \
                 idmapped mounts (runc >= 1.2 or crun >= 1.9)"
                    .into()
            )
        );
        assert_eq!(
            admit(&spec(Some(false)), &Host(old, Some((5, 10)))),
            Err(
                "can't set `spec.hostUsers: false`, runtime does not support user namespaces: \
                 /usr/bin/runc is runc 1.1.5+ds1; user namespaces need an OCI runtime with \
                 idmapped mounts (runc >= 1.2 or crun >= 1.9); also the kernel is 5.10; \
                 idmapped tmpfs mounts need Linux >= 6.3"
                    .into()
            )
        );
        let new = runtime("runc", "1.2.0", Some(true));
        assert_eq!(
            admit(&spec(Some(false)), &Host(new.clone(), Some((6, 1)))),
            Err(
                "can't set `spec.hostUsers: false`, this node does not support user \
                 namespaces: the kernel is 6.1; idmapped tmpfs mounts need Linux >= 6.3"
                    .into()
            )
        );
        // Everything the node needs is there: kubenode itself is what is missing.
        assert_eq!(
            admit(&spec(Some(false)), &Host(new, Some((6, 3)))),
            Err(
                "can't set `spec.hostUsers: false`: kubenode does not implement user \
                 namespaces yet (/usr/bin/runc is runc 1.2.0 and makes idmapped mounts)"
                    .into()
            )
        );
    }
}
