//! What the runtime keeps on disk about each sandbox and container, so a
//! restarted agent rebuilds its whole view (`Runtime::recover`).
//!
//! ```text
//! <root>/sandboxes/<id>/meta.json  config.json  pid  exit  shim.log
//! <root>/containers/<id>/meta.json config.json  pid  exit  shim.log  runtime.log
//!                        rootfs/ (overlay mount)  upper/  work/
//! ```

use std::path::{Path, PathBuf};

use crate::spec::{NamespaceMode, PodInfo, PodNamespaces};

/// Lifecycle of a sandbox as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SandboxPhase {
    /// Directory and netns being made; half-made if found at recovery.
    Creating,
    /// Netns made, pause not started yet (CNI runs now).
    Created,
    /// The pause container runs.
    Ready,
    /// Being removed, or kept after a removal that failed: never ready again, no container
    /// joins it; the next teardown tries again what is left.
    Removing,
}

/// On-disk record of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SandboxMeta {
    pub id: String,
    pub pod: PodInfo,
    /// `None` for host-network pods.
    pub netns_path: Option<PathBuf>,
    /// The pod's pinned IPC namespace (`None` in sandboxes made before namespaces were
    /// pinned: their containers join the pause process's).
    #[serde(default)]
    pub ipc_path: Option<PathBuf>,
    /// The pod's pinned UTS namespace (`None` for host-network pods, which keep the host's,
    /// and in sandboxes made before namespaces were pinned).
    #[serde(default)]
    pub uts_path: Option<PathBuf>,
    /// The pod's `/dev/shm` tmpfs.
    #[serde(default)]
    pub shm_path: Option<PathBuf>,
    /// Namespaced sysctls applied in the pause container.
    #[serde(default)]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// The pod's PID and IPC namespace modes (records written before they were recorded were
    /// made with the defaults).
    #[serde(default)]
    pub namespaces: PodNamespaces,
    /// The pause container's seccomp profile and whether a container of the pod is
    /// privileged (records written before they were recorded: no filter).
    #[serde(default)]
    pub seccomp: crate::spec::SeccompProfile,
    #[serde(default)]
    pub privileged: bool,
    pub cgroup_parent: String,
    pub phase: SandboxPhase,
    pub created_at: jiff::Timestamp,
    #[serde(default)]
    pub pause_pid: i32,
    #[serde(default)]
    pub shim_pid: i32,
}

impl SandboxMeta {
    /// Whether the sandbox's containers join pinned namespaces (or the host's), rather than
    /// the pause process's `/proc/<pid>/ns/*` as in sandboxes made before pinning. A `hostIPC`
    /// sandbox pins no IPC namespace, and only newer records have one.
    pub fn pins_namespaces(&self) -> bool {
        self.ipc_path.is_some() || self.namespaces.ipc == NamespaceMode::Node
    }
}

/// On-disk record of a container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ContainerMeta {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub pod: PodInfo,
    pub restart_count: u32,
    pub image: String,
    /// The image's layer snapshots (overlay lowerdirs), bottom first: image removal and
    /// garbage collection keep them while this record exists. Empty in records written
    /// before they were recorded.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    pub log_path: PathBuf,
    pub cgroups_path: String,
    pub created_at: jiff::Timestamp,
    /// `false` until `create` finished: such a container is half-made.
    pub complete: bool,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub shim_pid: i32,
    #[serde(default)]
    pub started_at: Option<jiff::Timestamp>,
    #[serde(default)]
    pub start_error: Option<String>,
}

pub(crate) fn sandboxes_dir(root: &Path) -> PathBuf {
    root.join("sandboxes")
}

pub(crate) fn containers_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

pub(crate) const META: &str = "meta.json";
pub(crate) const EXIT: &str = "exit";
pub(crate) const PID: &str = "pid";

/// Every `meta.json` under `dir/*/`, with the directories that have none.
pub(crate) fn scan<T: serde::de::DeserializeOwned>(dir: &Path) -> (Vec<T>, Vec<PathBuf>) {
    let mut found = Vec::new();
    let mut broken = Vec::new();
    for entry in std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        match crate::fsutil::read_json::<T>(&path.join(META)) {
            Ok(m) => found.push(m),
            Err(_) => broken.push(path),
        }
    }
    (found, broken)
}
