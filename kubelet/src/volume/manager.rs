//! The volume manager: one per kubelet, used by the pod workers.
//!
//! [`VolumeManager::set_up_pod`] is called on every pass before containers start; it is cheap
//! once a pod's volumes are up (an in-memory set), and otherwise reads the mount table once and
//! sets up each volume idempotently. [`VolumeManager::container_mounts`] turns a container's
//! `volumeMounts` into runtime bind mounts. [`VolumeManager::tear_down_pod`] unmounts whatever
//! the mount table shows under the pod's directory (deepest first; it needs no pod spec, so
//! it also cleans up after a crash or for an orphan) and then removes the directory safely.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, Pod, Volume};
use kubenode_fsutil::{lock, IoError};
use kubenode_runtime::spec::{BindMount, Propagation};

use super::atomic_writer::{AtomicWriter, Payload, Written};
use super::mounter::Mounter;
use super::mountinfo::{self, MountPoint};
use super::ownership::{set_volume_ownership, ChangePolicy, FsGroup};
use super::projection::{Kind, PayloadError};
use super::{empty_dir, host_path, nfs, remove, subpath, usage, SetUpError, VolumeError};

/// The contents of a pod's configMap, secret, downwardAPI and projected volumes, by volume
/// name (see [`super::projection::pod_payloads`]).
pub type Payloads = HashMap<String, Result<Payload, PayloadError>>;

/// Sets up and tears down pod volumes (see the module docs).
#[derive(Debug)]
pub struct VolumeManager {
    pods_dir: PathBuf,
    mounter: Arc<dyn Mounter>,
    node_memory: u64,
    ready: Mutex<HashSet<String>>,
    checked: Mutex<HashMap<String, Instant>>,
}

/// The node's memory (`MemTotal` of `/proc/meminfo`), 0 when unknown.
pub fn node_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

impl VolumeManager {
    /// A manager for pods under `pods_dir` (`<root>/pods`), mounting through `mounter`, with
    /// the node's memory read from `/proc/meminfo`.
    pub fn new(pods_dir: &Path, mounter: Arc<dyn Mounter>) -> Self {
        // Root only, as the rest of the state root; an older install is tightened.
        if let Err(e) = kubenode_fsutil::ensure_dir(pods_dir, 0o700) {
            tracing::warn!(dir = %pods_dir.display(), error = %e, "creating the pods directory");
        }
        // Mount tables hold canonical paths: compare against the canonical directory.
        let pods_dir = std::fs::canonicalize(pods_dir).unwrap_or_else(|_| pods_dir.into());
        VolumeManager {
            pods_dir,
            mounter,
            node_memory: node_memory(),
            ready: Mutex::new(HashSet::new()),
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// The same manager with another node memory size (the tmpfs size bound).
    pub fn with_node_memory(mut self, bytes: u64) -> Self {
        self.node_memory = bytes;
        self
    }

    /// Whether the pod's volumes are all set up (by [`VolumeManager::set_up_pod_with`] since
    /// the agent started).
    pub fn is_set_up(&self, uid: &str) -> bool {
        lock(&self.ready, "volumes set up").contains(uid)
    }

    /// `<pods>/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    /// Where the volume `vol` of pod `uid` lives on the host, and whether its source is
    /// read-only (an `nfs` volume with `readOnly`).
    pub fn volume_path(&self, uid: &str, vol: &Volume) -> Option<(PathBuf, bool)> {
        let under = |plugin: &str| {
            self.pod_dir(uid)
                .join("volumes")
                .join(plugin)
                .join(&vol.name)
        };
        if let Some(kind) = Kind::of(vol) {
            // Always mounted read-only into containers, as upstream's plugins declare.
            Some((under(kind.plugin_dir()), true))
        } else if vol.empty_dir.is_some() {
            Some((under(empty_dir::PLUGIN_DIR), false))
        } else if let Some(h) = &vol.host_path {
            Some((PathBuf::from(&h.path), false))
        } else {
            vol.nfs
                .as_ref()
                .map(|n| (under(nfs::PLUGIN_DIR), n.read_only == Some(true)))
        }
    }

    /// Sets up every volume of a pod without configMap, secret, downwardAPI or projected
    /// volumes (see [`VolumeManager::set_up_pod_with`]).
    pub fn set_up_pod(&self, pod: &Pod) -> Result<(), Vec<VolumeError>> {
        self.set_up_pod_with(pod, &Payloads::new())
    }

    /// Sets up every volume of the pod (idempotent; cheap once done), writing the contents of
    /// its configMap, secret, downwardAPI and projected volumes from `payloads`. Each failing
    /// volume is one error; the others are still set up.
    pub fn set_up_pod_with(&self, pod: &Pod, payloads: &Payloads) -> Result<(), Vec<VolumeError>> {
        let uid = uid_of(pod);
        if lock(&self.ready, "volumes set up").contains(uid) {
            return Ok(());
        }
        let mounts = self
            .mounter
            .mount_points()
            .map_err(|e| vec![VolumeError::from(e)])?;
        let mut errors = Vec::new();
        // The pod's directory is root's alone before any volume appears below it: an
        // emptyDir is 0777, a host user must not reach it through the host path.
        let pod_dir = self.pod_dir(uid);
        if let Err(e) = kubenode_fsutil::ensure_dir(&pod_dir, 0o700) {
            tracing::warn!(dir = %pod_dir.display(), error = %e, "creating the pod directory");
        }
        for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Err(source) = self.set_up_volume(pod, vol, &mounts, payloads) {
                errors.push(VolumeError::SetUp {
                    volume: vol.name.clone(),
                    source,
                });
            }
        }
        if errors.is_empty() {
            lock(&self.ready, "volumes set up").insert(uid.into());
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn set_up_volume(
        &self,
        pod: &Pod,
        vol: &Volume,
        mounts: &[MountPoint],
        payloads: &Payloads,
    ) -> Result<(), SetUpError> {
        let (dir, _) = self
            .volume_path(uid_of(pod), vol)
            .ok_or(SetUpError::Unsupported)?;
        if let Some(kind) = Kind::of(vol) {
            // As upstream: the contents first (a missing object fails before anything is
            // made), then the wrapped emptyDir (a tmpfs for secret and projected), then the
            // atomic write.
            let payload = match payloads.get(&vol.name) {
                Some(Ok(p)) => p,
                Some(Err(e)) => return Err(SetUpError::Contents(e.clone())),
                None => return Err(SetUpError::NotResolved),
            };
            let wrapped = EmptyDirVolumeSource {
                medium: kind.in_memory().then(|| "Memory".to_string()),
                size_limit: None,
            };
            let meta = self
                .pod_dir(uid_of(pod))
                .join("plugins")
                .join(empty_dir::PLUGIN_DIR)
                .join(format!("wrapped_{}", vol.name));
            empty_dir::set_up(
                &*self.mounter,
                &dir,
                &meta,
                &wrapped,
                pod,
                self.node_memory,
                mounts,
            )?;
            self.write_contents(pod, vol, &dir, payload)?;
            Ok(())
        } else if let Some(e) = &vol.empty_dir {
            let meta = self
                .pod_dir(uid_of(pod))
                .join("plugins")
                .join(empty_dir::PLUGIN_DIR)
                .join(&vol.name);
            empty_dir::set_up(
                &*self.mounter,
                &dir,
                &meta,
                e,
                pod,
                self.node_memory,
                mounts,
            )
        } else if let Some(h) = &vol.host_path {
            host_path::set_up(h)
        } else if let Some(n) = &vol.nfs {
            nfs::set_up(&*self.mounter, &dir, n, mounts)
        } else {
            Err(SetUpError::Unsupported)
        }
    }

    /// Writes a volume's contents with the atomic writer; the `fsGroup` walk (read-only masks,
    /// no change policy, as upstream's plugins) runs on the volume before the new contents
    /// become visible.
    fn write_contents(
        &self,
        pod: &Pod,
        vol: &Volume,
        dir: &Path,
        payload: &Payload,
    ) -> Result<Written, SetUpError> {
        let group = FsGroup::of(pod).map(|g| FsGroup {
            policy: ChangePolicy::Always,
            ..g
        });
        let written = AtomicWriter::new(dir).write(payload, |_| {
            if let Some(g) = group {
                set_volume_ownership(dir, g, true)?;
            }
            Ok(())
        })?;
        if written == Written::Updated {
            tracing::info!(volume = %vol.name, files = payload.len(), "wrote the volume's contents");
        }
        Ok(written)
    }

    /// Rewrites the contents of the pod's configMap, secret, downwardAPI and projected
    /// volumes that changed (upstream's periodic remount); a volume not set up yet is left to
    /// [`VolumeManager::set_up_pod_with`]. Returns the volumes updated and the errors.
    pub fn update_contents(
        &self,
        pod: &Pod,
        payloads: &Payloads,
    ) -> (Vec<String>, Vec<VolumeError>) {
        let uid = uid_of(pod);
        let mut updated = Vec::new();
        let mut errors = Vec::new();
        for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(payload) = payloads.get(&vol.name) else {
                continue;
            };
            let Some((dir, _)) = self.volume_path(uid, vol) else {
                continue;
            };
            if !dir.is_dir() {
                continue;
            }
            let result = match payload {
                Ok(p) => self.write_contents(pod, vol, &dir, p),
                Err(e) => Err(SetUpError::Contents(e.clone())),
            };
            match result {
                Ok(Written::Updated) => updated.push(vol.name.clone()),
                Ok(Written::Unchanged) => {}
                Err(source) => errors.push(VolumeError::SetUp {
                    volume: vol.name.clone(),
                    source,
                }),
            }
        }
        (updated, errors)
    }

    /// The bind mounts of a container's `volumeMounts` (subPaths prepared safely).
    pub fn container_mounts(
        &self,
        pod: &Pod,
        container: &Container,
    ) -> Result<Vec<BindMount>, VolumeError> {
        let uid = uid_of(pod);
        let volumes: &[Volume] = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or_default();
        let mut table: Option<Vec<MountPoint>> = None;
        let mut out = Vec::new();
        for (index, m) in container.volume_mounts.iter().flatten().enumerate() {
            let missing = || VolumeError::NoVolume {
                volume: m.name.clone(),
                container: container.name.clone(),
            };
            let vol = volumes
                .iter()
                .find(|v| v.name == m.name)
                .ok_or_else(missing)?;
            let (mut host, source_ro) = self.volume_path(uid, vol).ok_or_else(missing)?;
            if vol.host_path.is_some() && std::fs::symlink_metadata(&host).is_err() {
                // An unchecked (`type: ""`) hostPath that does not exist: containerd creates it
                // as a directory before binding it.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&host)
                    .map_err(|source| VolumeError::SetUp {
                        volume: vol.name.clone(),
                        source: SetUpError::Io(IoError::new(
                            "creating the missing hostPath directory",
                            &host,
                            source,
                        )),
                    })?;
                tracing::info!(path = %host.display(), "created a missing hostPath directory for the bind mount");
            }
            if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(VolumeError::SubPathExpr {
                    volume: m.name.clone(),
                    container: container.name.clone(),
                });
            }
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                // A key of a configMap, secret, downwardAPI or projected volume is the writer's
                // symlink into `..data`: resolved to the current data directory, as upstream
                // evaluates symlinks within the volume first. The bind then keeps the
                // contents of this moment: subPath mounts do not update, as upstream.
                let resolved = Kind::of(vol).and_then(|_| AtomicWriter::new(&host).resolve(sub));
                let sub = resolved.as_deref().unwrap_or(sub);
                if table.is_none() {
                    table = Some(self.mounter.mount_points()?);
                }
                let target = self
                    .pod_dir(uid)
                    .join("volume-subpaths")
                    .join(&m.name)
                    .join(&container.name)
                    .join(index.to_string());
                host = subpath::prepare(
                    &*self.mounter,
                    &host,
                    sub,
                    &target,
                    table.as_deref().unwrap_or_default(),
                )
                .map_err(|source| {
                    tracing::warn!(volume = %m.name, container = %container.name, sub_path = sub, error = %source, "refusing a subPath");
                    VolumeError::SubPath {
                        volume: m.name.clone(),
                        container: container.name.clone(),
                        source: Box::new(source),
                    }
                })?;
            }
            let propagation = match m.mount_propagation.as_deref() {
                Some("HostToContainer") => Propagation::HostToContainer,
                Some("Bidirectional") => Propagation::Bidirectional,
                _ => Propagation::Private,
            };
            if propagation != Propagation::Private {
                if table.is_none() {
                    table = Some(self.mounter.mount_points()?);
                }
                let real = std::fs::canonicalize(&host).unwrap_or_else(|_| host.clone());
                let on = mountinfo::containing(table.as_deref().unwrap_or_default(), &real);
                let (ok, need) = match propagation {
                    Propagation::Bidirectional => (on.is_some_and(|m| m.is_shared()), "a shared"),
                    _ => (
                        on.is_some_and(|m| m.is_shared() || m.is_slave()),
                        "a shared or slave",
                    ),
                };
                if !ok {
                    return Err(VolumeError::Propagation {
                        volume: m.name.clone(),
                        container: container.name.clone(),
                        path: real,
                        mount: on.map(|m| m.target.clone()).unwrap_or_default(),
                        need,
                    });
                }
            }
            out.push(BindMount {
                container_path: m.mount_path.clone(),
                host_path: host,
                readonly: m.read_only == Some(true) || source_ro,
                propagation,
            });
        }
        Ok(out)
    }

    /// Unmounts everything mounted under the pod's directory (deepest first), then removes the
    /// directory, never crossing a mount point. Keeps going past failures and reports them all;
    /// the directory stays when anything could not be unmounted.
    pub fn tear_down_pod(&self, uid: &str) -> Result<(), Vec<VolumeError>> {
        lock(&self.ready, "volumes set up").remove(uid);
        lock(&self.checked, "volume usage checks").remove(uid);
        let dir = self.pod_dir(uid);
        let mut errors = Vec::new();
        let mounts = self
            .mounter
            .mount_points()
            .map_err(|e| vec![VolumeError::from(e)])?;
        for m in mountinfo::under(&mounts, &dir) {
            match self.mounter.unmount(&m.target) {
                Ok(()) => {
                    tracing::info!(target = %m.target.display(), fstype = %m.fstype, "unmounted pod volume")
                }
                Err(source) => errors.push(VolumeError::Unmount {
                    uid: uid.into(),
                    path: m.target.clone(),
                    source,
                }),
            }
        }
        let mounts = self
            .mounter
            .mount_points()
            .map_err(|e| vec![VolumeError::from(e)])?;
        if let Err(source) = remove::remove_dir_safely(&dir, &mounts) {
            errors.push(VolumeError::Remove {
                uid: uid.into(),
                source,
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Whether the pod's local storage is due to be measured: at most every
    /// [`usage::CHECK_INTERVAL`] per pod, the first time at once.
    pub fn storage_check_due(&self, uid: &str) -> bool {
        let now = Instant::now();
        let mut checked = lock(&self.checked, "volume usage checks");
        if checked
            .get(uid)
            .is_some_and(|at| now.duration_since(*at) < usage::CHECK_INTERVAL)
        {
            return false;
        }
        checked.insert(uid.into(), now);
        true
    }

    /// Upstream's `localStorageEviction` for one pod (see [`usage`]): the eviction message
    /// when a disk emptyDir is over its `sizeLimit`, the pod over its containers' total
    /// `ephemeral-storage` limit, or a container over its own. `containers` are the pod's
    /// counted instances ([`usage::counted_instances`]); they are measured only when the pod
    /// has a limit.
    pub fn local_storage_exceeded(
        &self,
        pod: &Pod,
        containers: &[usage::ContainerStorage],
    ) -> Option<String> {
        let uid = uid_of(pod);
        let spec = pod.spec.as_ref()?;
        // Without a pod limit only the emptyDirs with a sizeLimit need measuring.
        let pod_limit = usage::pod_storage_limit(spec);
        let mut volumes = 0u64;
        for vol in spec.volumes.iter().flatten() {
            // configMap and downwardAPI volumes are on disk and count towards the pod's
            // usage, as upstream's `localEphemeralVolumeNames` (secret and projected are
            // tmpfs).
            if matches!(Kind::of(vol), Some(Kind::ConfigMap | Kind::DownwardApi)) {
                if pod_limit.is_some() {
                    if let Some((dir, _)) = self.volume_path(uid, vol) {
                        volumes = volumes.saturating_add(usage::disk_usage(&dir).unwrap_or(0));
                    }
                }
                continue;
            }
            let Some(e) = &vol.empty_dir else { continue };
            if e.medium.as_deref().is_some_and(|m| !m.is_empty()) {
                continue;
            }
            if pod_limit.is_none() && e.size_limit.is_none() {
                continue;
            }
            let Some((dir, _)) = self.volume_path(uid, vol) else {
                continue;
            };
            let used = match usage::disk_usage(&dir) {
                Ok(used) => used,
                Err(e) => {
                    tracing::debug!(volume = %vol.name, error = %e, "measuring emptyDir usage");
                    continue;
                }
            };
            volumes = volumes.saturating_add(used);
            let limit = e
                .size_limit
                .as_ref()
                .and_then(|limit| usage::StorageQuantity::parse(&limit.0));
            if let Some(limit) = limit {
                if limit.bytes() > 0 && i64::try_from(used).unwrap_or(i64::MAX) > limit.bytes() {
                    // Upstream prints the limit canonically (`1024Ki` as `1Mi`).
                    return Some(usage::exceeded_message(&vol.name, &limit.to_string()));
                }
            }
        }
        pod_limit?;
        let hosts = usage::disk_usage(&self.pod_dir(uid).join("etc-hosts")).unwrap_or(0);
        let measured = usage::PodUsage {
            containers: containers
                .iter()
                .map(|c| (c.name.clone(), c.usage()))
                .collect(),
            other: volumes.saturating_add(hosts),
        };
        tracing::debug!(?measured, "local ephemeral storage");
        usage::storage_limit_message(spec, &measured)
    }
}
