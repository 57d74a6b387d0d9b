//! The `emptyDir` volume plugin (upstream `pkg/volume/emptydir`).
//!
//! Default medium: a 0777 directory at `volumes/kubernetes.io~empty-dir/<name>` (chmod'ed
//! after creation so the umask does not narrow it), removed with the pod. `medium: Memory`: a
//! tmpfs there with `size=` the smallest of `sizeLimit`, the pod's memory limit (when every
//! container declares one) and the node's memory (upstream `calculateEmptyDirMemorySize`),
//! plus `noswap` where the kernel knows it. A directory that already is a tmpfs mount point
//! is reused. A disk `sizeLimit` is not a mount option: see `usage` for its enforcement.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod};

use super::mounter::{MountError, Mounter};
use super::mountinfo::{self, MountPoint};
use super::SetUpError;
use crate::validation::quantity::Quantity;
use kubenode_fsutil::IoError;

/// The plugin's directory name under `volumes/`.
pub const PLUGIN_DIR: &str = "kubernetes.io~empty-dir";

fn bytes(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<u64> {
    Quantity::parse(&q.0)
        .ok()
        .and_then(|q| u64::try_from(q.value()).ok())
}

/// The pod's memory limit as its cgroup gets it: the larger of the sum of the app containers'
/// limits and the largest init container limit, and only when every container has one.
pub fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(bytes)
    };
    let mut sum = 0u64;
    for c in &spec.containers {
        sum = sum.saturating_add(limit(c)?);
    }
    let mut init_max = 0u64;
    for c in spec.init_containers.iter().flatten() {
        init_max = init_max.max(limit(c)?);
    }
    Some(sum.max(init_max))
}

/// The tmpfs size: node memory, lowered to the pod's memory limit and then to `sizeLimit`
/// when those are positive and smaller (upstream `calculateEmptyDirMemorySize`).
pub fn tmpfs_size(node_memory: u64, pod_limit: Option<u64>, size_limit: Option<u64>) -> u64 {
    let mut size = node_memory;
    for candidate in [pod_limit, size_limit].into_iter().flatten() {
        if candidate > 0 && candidate <= size {
            size = candidate;
        }
    }
    size
}

/// Makes `dir` a 0777 directory.
fn make_dir(dir: &Path) -> Result<(), SetUpError> {
    let io = |what| IoError::with(what, dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o777)
        .create(dir)
        .map_err(io("creating the emptyDir directory"))?;
    let meta = std::fs::metadata(dir).map_err(io("reading the emptyDir directory"))?;
    if meta.permissions().mode() & 0o777 != 0o777 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(io("setting the mode of the emptyDir directory"))?;
    }
    Ok(())
}

/// Sets the volume up at `dir`.
pub(super) fn set_up(
    mounter: &dyn Mounter,
    dir: &Path,
    source: &EmptyDirVolumeSource,
    pod: &Pod,
    node_memory: u64,
    mounts: &[MountPoint],
) -> Result<(), SetUpError> {
    match source.medium.as_deref().unwrap_or("") {
        "" => make_dir(dir),
        "Memory" => {
            if mountinfo::at(mounts, dir).is_some_and(|m| m.fstype == "tmpfs") {
                tracing::debug!(dir = %dir.display(), "tmpfs already mounted; reusing it");
                return Ok(());
            }
            make_dir(dir)?;
            let size = tmpfs_size(
                node_memory,
                pod_memory_limit(pod),
                source.size_limit.as_ref().and_then(bytes),
            );
            let mut options = Vec::new();
            if size > 0 {
                options.push(format!("size={size}"));
            }
            options.push("noswap".into());
            match mounter.mount("tmpfs", dir, "tmpfs", &options) {
                // Kernels before 6.4 do not know `noswap`.
                Err(MountError::Syscall {
                    source: nix::errno::Errno::EINVAL,
                    ..
                }) => {
                    options.pop();
                    mounter.mount("tmpfs", dir, "tmpfs", &options)?;
                }
                other => other?,
            }
            tracing::info!(dir = %dir.display(), size, "mounted emptyDir tmpfs");
            Ok(())
        }
        other => Err(SetUpError::Medium(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::testing::{Call, RecordingMounter};
    use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use std::collections::BTreeMap;

    fn container(limit: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            resources: limit.map(|l| ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".to_string(), Q(l.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        crate::testing::pod()
            .containers(containers)
            .init_containers(init)
            .build()
    }

    #[test]
    fn pod_limit_only_when_every_container_has_one() {
        let p = pod(
            vec![container(Some("64Mi")), container(Some("32Mi"))],
            vec![],
        );
        assert_eq!(pod_memory_limit(&p), Some(96 << 20));
        let p = pod(
            vec![container(Some("64Mi"))],
            vec![container(Some("128Mi"))],
        );
        assert_eq!(pod_memory_limit(&p), Some(128 << 20));
        let p = pod(vec![container(Some("64Mi")), container(None)], vec![]);
        assert_eq!(pod_memory_limit(&p), None);
        let p = pod(vec![container(Some("64Mi"))], vec![container(None)]);
        assert_eq!(pod_memory_limit(&p), None);
    }

    #[test]
    fn tmpfs_size_is_the_smallest_positive_bound() {
        assert_eq!(tmpfs_size(1000, None, None), 1000);
        assert_eq!(tmpfs_size(1000, Some(500), None), 500);
        assert_eq!(tmpfs_size(1000, Some(500), Some(100)), 100);
        assert_eq!(tmpfs_size(1000, Some(500), Some(700)), 500);
        assert_eq!(tmpfs_size(1000, Some(0), Some(2000)), 1000);
        assert_eq!(tmpfs_size(1000, Some(5000), Some(0)), 1000);
    }

    #[test]
    fn disk_medium_is_a_0777_directory_without_mounts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v/cache");
        let m = RecordingMounter::new();
        set_up(
            &m,
            &dir,
            &EmptyDirVolumeSource::default(),
            &pod(vec![], vec![]),
            1 << 30,
            &[],
        )
        .unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o777);
        assert!(m.calls().is_empty());
    }

    #[test]
    fn memory_medium_mounts_a_sized_tmpfs_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v/mem");
        let m = RecordingMounter::new();
        let src = EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Q("16Mi".into())),
        };
        let p = pod(vec![container(Some("64Mi"))], vec![]);
        set_up(&m, &dir, &src, &p, 1 << 30, &[]).unwrap();
        assert_eq!(
            m.calls(),
            vec![Call::Mount {
                source: "tmpfs".into(),
                target: dir.clone(),
                fstype: "tmpfs".into(),
                options: vec![format!("size={}", 16 << 20), "noswap".into()],
            }]
        );
        let table = m.mount_points().unwrap();
        set_up(&m, &dir, &src, &p, 1 << 30, &table).unwrap();
        assert_eq!(m.calls().len(), 1, "mounted twice");
    }

    #[test]
    fn unknown_medium_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let src = EmptyDirVolumeSource {
            medium: Some("HugePages".into()),
            size_limit: None,
        };
        let e = set_up(
            &RecordingMounter::new(),
            tmp.path(),
            &src,
            &pod(vec![], vec![]),
            1,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "emptyDir medium \"HugePages\" is not supported"
        );
    }
}
