//! The `emptyDir` volume plugin (upstream `pkg/volume/emptydir`).
//!
//! Default medium: a 0777 directory at `volumes/kubernetes.io~empty-dir/<name>` (chmod'ed
//! after creation so the umask does not narrow it), removed with the pod. `medium: Memory`: a
//! tmpfs there with `size=` the smallest of `sizeLimit`, the pod's memory limit (when every
//! container declares one) and the node's memory (upstream `calculateEmptyDirMemorySize`),
//! plus `noswap` where the kernel knows it. A directory that already is a tmpfs mount point
//! is reused. A disk `sizeLimit` is not a mount option: see `usage` for its enforcement.
//!
//! With the pod's `fsGroup`, the new volume is given to that group (`ownership`: the root
//! becomes 2777, a tmpfs root 3777, group `fsGroup`). Upstream's emptyDir passes no
//! `fsGroupChangePolicy`: the walk is always the whole volume, and it is done once per set-up.
//! As upstream, a `ready` file in `plugins/kubernetes.io~empty-dir/<name>/` marks a volume set
//! up: a later set-up (the next agent run) finds it, and the directory (or the tmpfs) still
//! there, and changes nothing, so modes that containers set since are kept.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod};

use super::mounter::{MountError, Mounter};
use super::mountinfo::{self, MountPoint};
use super::ownership::{set_volume_ownership, ChangePolicy, FsGroup};
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

/// The marker of a volume set up, in its `meta` directory (upstream `volumeutil.SetReady`).
const READY: &str = "ready";

/// Marks the volume set up; a failure is logged only, as upstream's (the next set-up walks
/// the volume again).
fn set_ready(meta: &Path) {
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(meta)
        .and_then(|()| std::fs::File::create(meta.join(READY)));
    if let Err(e) = made {
        tracing::warn!(dir = %meta.display(), error = %e, "writing the emptyDir ready marker");
    }
}

/// Sets the volume up at `dir`, with its `ready` marker in `meta`
/// (`<pod>/plugins/kubernetes.io~empty-dir/<name>`).
pub(super) fn set_up(
    mounter: &dyn Mounter,
    dir: &Path,
    meta: &Path,
    source: &EmptyDirVolumeSource,
    pod: &Pod,
    node_memory: u64,
    mounts: &[MountPoint],
) -> Result<(), SetUpError> {
    let medium = source.medium.as_deref().unwrap_or("");
    let tmpfs = mountinfo::at(mounts, dir).is_some_and(|m| m.fstype == "tmpfs");
    if meta.join(READY).exists() {
        match medium {
            "Memory" if tmpfs => return Ok(()),
            "" if dir.is_dir() => return Ok(()),
            _ => {
                tracing::warn!(dir = %dir.display(), "the emptyDir is marked ready but is gone; setting it up again")
            }
        }
    }
    match medium {
        "" => make_dir(dir)?,
        "Memory" => mount_tmpfs(mounter, dir, source, pod, node_memory, tmpfs)?,
        other => return Err(SetUpError::Medium(other.into())),
    }
    if let Some(group) = FsGroup::of(pod) {
        // Upstream's emptyDir passes no fsGroupChangePolicy: always the whole volume.
        let group = FsGroup {
            policy: ChangePolicy::Always,
            ..group
        };
        set_volume_ownership(dir, group, false)?;
    }
    set_ready(meta);
    Ok(())
}

/// Mounts the sized tmpfs at `dir`, unless `mounted` already.
fn mount_tmpfs(
    mounter: &dyn Mounter,
    dir: &Path,
    source: &EmptyDirVolumeSource,
    pod: &Pod,
    node_memory: u64,
    mounted: bool,
) -> Result<(), SetUpError> {
    if mounted {
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
            &tmp.path().join("meta"),
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
        let meta = tmp.path().join("meta");
        set_up(&m, &dir, &meta, &src, &p, 1 << 30, &[]).unwrap();
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
        set_up(&m, &dir, &meta, &src, &p, 1 << 30, &table).unwrap();
        assert_eq!(m.calls().len(), 1, "mounted twice");
        // Marked ready but no longer mounted (a reboot): mounted again, as upstream.
        set_up(&m, &dir, &meta, &src, &p, 1 << 30, &[]).unwrap();
        assert_eq!(m.calls().len(), 2, "a ready volume without its tmpfs");
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
            &tmp.path().join("meta"),
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

    /// A group the test may give files to: any as root, else its own.
    fn test_gid() -> u32 {
        if nix::unistd::Uid::effective().is_root() {
            2000
        } else {
            nix::unistd::Gid::effective().as_raw()
        }
    }

    fn with_fs_group(gid: u32, policy: Option<&str>) -> Pod {
        crate::testing::pod()
            .with_spec(|s| {
                s.security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
                    fs_group: Some(gid.into()),
                    fs_group_change_policy: policy.map(Into::into),
                    ..Default::default()
                })
            })
            .build()
    }

    fn mode_and_gid(path: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).unwrap();
        (m.mode() & 0o7777, m.gid())
    }

    #[test]
    fn fs_group_owns_a_new_disk_volume_once_per_set_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v/cache");
        let meta = tmp.path().join("plugins/cache");
        let gid = test_gid();
        // OnRootMismatch is not emptyDir's: upstream's plugin passes no policy.
        let p = with_fs_group(gid, Some("OnRootMismatch"));
        let m = RecordingMounter::new();
        let src = EmptyDirVolumeSource::default();
        set_up(&m, &dir, &meta, &src, &p, 1, &[]).unwrap();
        assert_eq!(mode_and_gid(&dir), (0o2777, gid));
        assert!(meta.join("ready").is_file());

        // What a container does later is kept by the next set-up (an agent restart).
        std::fs::write(dir.join("private"), "x").unwrap();
        std::fs::set_permissions(dir.join("private"), PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o700)).unwrap();
        set_up(&m, &dir, &meta, &src, &p, 1, &[]).unwrap();
        assert_eq!(mode_and_gid(&dir).0, 0o700);
        assert_eq!(mode_and_gid(&dir.join("private")).0, 0o600);

        // Without the marker it is a new set-up: the whole volume is walked again.
        std::fs::remove_file(meta.join("ready")).unwrap();
        set_up(&m, &dir, &meta, &src, &p, 1, &[]).unwrap();
        assert_eq!(mode_and_gid(&dir), (0o2777, gid));
        assert_eq!(mode_and_gid(&dir.join("private")), (0o660, gid));
        assert!(m.calls().is_empty());
    }

    #[test]
    fn fs_group_owns_the_tmpfs_root_after_the_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v/mem");
        let meta = tmp.path().join("plugins/mem");
        let gid = test_gid();
        let m = RecordingMounter::new();
        let src = EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: None,
        };
        set_up(
            &m,
            &dir,
            &meta,
            &src,
            &with_fs_group(gid, None),
            1 << 20,
            &[],
        )
        .unwrap();
        assert_eq!(m.calls().len(), 1);
        // The recording mounter mounts nothing: the directory below stands in for the tmpfs.
        assert_eq!(mode_and_gid(&dir), (0o2777, gid));
        assert!(meta.join("ready").is_file());
    }

    #[test]
    fn without_fs_group_nothing_changes_group() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v/cache");
        let before = std::fs::metadata(tmp.path()).unwrap();
        set_up(
            &RecordingMounter::new(),
            &dir,
            &tmp.path().join("meta"),
            &EmptyDirVolumeSource::default(),
            &pod(vec![], vec![]),
            1,
            &[],
        )
        .unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(mode_and_gid(&dir), (0o777, before.gid()));
    }
}
