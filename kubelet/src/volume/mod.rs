//! Pod volumes: `emptyDir`, `hostPath`, `nfs`, `configMap`, `secret`, `downwardAPI` and
//! `projected`, set up before a pod's first container and
//! torn down after its last one, plus the per-container bind mounts (`readOnly`, `subPath`,
//! `mountPropagation`).
//!
//! Layout (upstream's): `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>` for volumes
//! the node makes (emptyDir, nfs, configmap, secret, downward-api, projected; a hostPath is its
//! own host path), and
//! `<root>/pods/<uid>/volume-subpaths/<volume>/<container>/<mount index>` for subPath binds.
//!
//! The kernel's mount table (`/proc/self/mountinfo`) is the source of truth: set-up reuses a
//! mount that is already there and teardown unmounts whatever is mounted under the pod's
//! directory, so an agent killed in the middle of either picks up where it stopped. The pod's
//! directory is removed only when nothing is mounted below it, and the removal never crosses
//! into another filesystem (see `remove`).
//!
//! `fsGroup` is applied to the ownership of the volumes whose plugin manages it upstream: of
//! kubenode's, emptyDir, configMap, secret, downwardAPI and projected (see `ownership`); hostPath
//! and nfs are left as they are, as upstream.
//!
//! The contents of configMap, secret, downwardAPI and projected volumes are made by the pod
//! worker (`projection`, from [`crate::objects::Objects`]) and written by the manager with
//! upstream's atomic writer (`atomic_writer`) into a wrapped emptyDir: on disk for configMap and
//! downwardAPI, a tmpfs for secret and projected.
//!
//! Files: `manager` (the [`VolumeManager`]), one file per plugin (`empty_dir`, `host_path`,
//! `nfs`, `projection` for the four object-backed types), `atomic_writer`, `ownership` (`fsGroup`), `subpath` (safe subPath binds), `usage` (emptyDir
//! `sizeLimit` checks), `remove` (mount-safe removal), `mounter` (the OS boundary),
//! `mountinfo`, `testing` (a recording mounter).

pub mod atomic_writer;
pub mod empty_dir;
pub mod host_path;
mod manager;
#[cfg(test)]
mod manager_tests;
pub mod mounter;
pub mod mountinfo;
pub mod nfs;
pub mod ownership;
pub mod projection;
#[cfg(test)]
mod projection_tests;
pub mod remove;
pub mod subpath;
pub mod testing;
pub mod usage;

pub use manager::{node_memory, Payloads, VolumeManager};
pub use mounter::{MountError, Mounter, SystemMounter};

use std::path::PathBuf;

/// Why one volume could not be set up. The texts are upstream's where upstream has one.
#[derive(Debug, thiserror::Error)]
pub enum SetUpError {
    /// A hostPath `type` check failed (`is not a directory`, `is not a file`, ...).
    #[error("hostPath type check failed: {path} {problem}")]
    HostPathType {
        /// The host path.
        path: String,
        /// What is wrong, as upstream words it.
        problem: &'static str,
    },
    /// A hostPath `type` that does not exist.
    #[error("{0} is an invalid volume type")]
    InvalidHostPathType(String),
    /// An emptyDir `medium` kubenode does not support.
    #[error("emptyDir medium {0:?} is not supported")]
    Medium(String),
    /// The volume has no source kubenode supports.
    #[error("volume has no supported source (emptyDir, hostPath, nfs, configMap, secret, downwardAPI or projected)")]
    Unsupported,
    /// The contents of a configMap, secret, downwardAPI or projected volume could not be made
    /// (upstream's texts: `configmap "x" not found`, ...).
    #[error(transparent)]
    Contents(#[from] projection::PayloadError),
    /// The contents of such a volume were not resolved before its set-up (a caller's bug).
    #[error("the volume's contents were not resolved")]
    NotResolved,
    /// Writing such a volume's contents failed.
    #[error(transparent)]
    Write(#[from] atomic_writer::WriteError),
    /// A file system operation failed.
    #[error(transparent)]
    Io(#[from] kubenode_fsutil::IoError),
    /// Mounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// A failure of the volume manager, naming the volume (and container) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A volume could not be set up (upstream's `FailedMount` event text).
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    SetUp {
        /// The volume.
        volume: String,
        /// Why.
        #[source]
        source: SetUpError,
    },
    /// A volumeMount names a volume the pod does not have.
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    NoVolume {
        /// The volume.
        volume: String,
        /// The container.
        container: String,
    },
    /// A subPath could not be prepared (upstream's text; the detail is logged, not shown, as
    /// upstream does, since it could reveal the host's files).
    #[error("failed to prepare subPath for volumeMount \"{volume}\" of container \"{container}\"")]
    SubPath {
        /// The volumeMount's volume.
        volume: String,
        /// The container.
        container: String,
        /// Why.
        #[source]
        source: Box<subpath::SubPathError>,
    },
    /// `subPathExpr` is not implemented.
    #[error("volumeMount \"{volume}\" of container \"{container}\": subPathExpr is not supported by kubenode")]
    SubPathExpr {
        /// The volume.
        volume: String,
        /// The container.
        container: String,
    },
    /// HostToContainer or Bidirectional propagation from a source whose mount does not
    /// propagate (containerd's check and text).
    #[error("volumeMount \"{volume}\" of container \"{container}\": path \"{}\" is mounted on \"{}\" but it is not {need} mount", path.display(), mount.display())]
    Propagation {
        /// The volume.
        volume: String,
        /// The container.
        container: String,
        /// The source path.
        path: PathBuf,
        /// The mount point it is on.
        mount: PathBuf,
        /// `a shared` (Bidirectional) or `a shared or slave` (HostToContainer).
        need: &'static str,
    },
    /// Something under the pod's directory could not be unmounted.
    #[error("unmounting {path} of pod {uid}: {source}")]
    Unmount {
        /// The pod.
        uid: String,
        /// The mount point.
        path: PathBuf,
        /// Why.
        #[source]
        source: MountError,
    },
    /// The pod's directory could not be removed (safely).
    #[error("removing the directory of pod {uid}: {source}")]
    Remove {
        /// The pod.
        uid: String,
        /// Why.
        #[source]
        source: remove::RemoveError,
    },
    /// The mount table could not be read.
    #[error(transparent)]
    Mount(#[from] MountError),
}
