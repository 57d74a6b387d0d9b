//! One pass of the node-wide garbage collection (see [`crate::node::container_gc`]): dead
//! containers per upstream's policy, then the sandboxes, log directories and pod directories
//! of pods that are gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::node::container_gc::{
    log_dir_pod_uid, select_containers, select_old_sandboxes, ContainerGcPolicy, GcContainer,
};

use super::prune::remove_log_set;
use super::WorkerDeps;

/// What one pass removed (logged, and read by tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(in crate::node) struct GcPass {
    /// Dead containers removed.
    pub containers: usize,
    /// Sandboxes of gone pods torn down.
    pub sandboxes: usize,
    /// Older inactive sandboxes of pods that still exist torn down.
    pub old_sandboxes: usize,
    /// Log directories of gone pods removed.
    pub log_dirs: usize,
}

impl WorkerDeps {
    /// Runs one pass. `live` is every pod UID with a worker (desired, or still being
    /// terminated): nothing of theirs but their dead containers beyond the policy is touched.
    pub(in crate::node) async fn collect_garbage(
        self: &Arc<Self>,
        policy: &ContainerGcPolicy,
        live: &HashSet<String>,
    ) -> GcPass {
        let mut pass = GcPass::default();
        let sandboxes = self.runtime.list_sandboxes().await;
        let pod_of: HashMap<&str, &str> = sandboxes
            .iter()
            .map(|s| (s.id.as_str(), s.pod.uid.as_str()))
            .collect();
        let containers = self.runtime.list_containers(None).await;
        let candidates: Vec<GcContainer<'_>> = containers
            .iter()
            .filter_map(|s| {
                pod_of.get(s.sandbox_id.as_str()).map(|uid| GcContainer {
                    pod_uid: uid,
                    status: s,
                })
            })
            .collect();
        let remove = select_containers(policy, jiff::Timestamp::now(), &candidates, |uid| {
            !live.contains(uid)
        });
        let mut removed: HashSet<String> = HashSet::new();
        for id in remove {
            let Some(s) = containers.iter().find(|s| s.id == id) else {
                continue;
            };
            // The logs first: a failed removal leaves the instance for the next pass.
            if let Err(e) = remove_log_set(&s.log_path) {
                tracing::warn!(container = %s.name, restart = s.restart_count, error = %e, "container GC: removing the logs of a dead container; keeping it to retry");
                continue;
            }
            match self.runtime.remove_container(&id).await {
                Ok(()) => {
                    pass.containers += 1;
                    removed.insert(id);
                }
                Err(e) => tracing::warn!(error = %e, "container GC: removing a dead container"),
            }
        }
        // Older inactive sandboxes of pods that exist (upstream's evictSandboxes).
        let with_containers: HashSet<&str> = containers
            .iter()
            .filter(|c| !removed.contains(&c.id))
            .map(|c| c.sandbox_id.as_str())
            .collect();
        for id in select_old_sandboxes(&sandboxes, &with_containers, |uid| live.contains(uid)) {
            if let Some(s) = sandboxes.iter().find(|s| s.id == id) {
                self.clone().remove_old_sandbox(s.clone()).await;
                pass.old_sandboxes += 1;
            }
        }
        // Sandboxes of pods that are gone: a teardown that failed, or was interrupted.
        let mut with_sandbox: HashSet<String> = HashSet::new();
        for s in sandboxes {
            if live.contains(&s.pod.uid) {
                with_sandbox.insert(s.pod.uid.clone());
                continue;
            }
            self.clone().remove_orphan(s).await;
            pass.sandboxes += 1;
        }
        // Log directories of pods that are gone and have no sandbox left.
        let log_dir = &self.config.log_dir;
        for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(uid) = log_dir_pod_uid(&name) else {
                continue;
            };
            if live.contains(uid) || with_sandbox.contains(uid) || !entry.path().is_dir() {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), "container GC: removed the logs of a pod that no longer exists");
                    pass.log_dirs += 1;
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "container GC: removing the logs of a pod that no longer exists")
                }
            }
        }
        // Pod directories (volumes) of pods that are gone.
        let mut keep: Vec<String> = live.iter().cloned().collect();
        keep.extend(with_sandbox);
        self.clone().remove_orphan_pod_dirs(keep).await;
        if pass != GcPass::default() {
            tracing::info!(
                containers = pass.containers,
                sandboxes = pass.sandboxes,
                old_sandboxes = pass.old_sandboxes,
                log_dirs = pass.log_dirs,
                "container garbage collection"
            );
        }
        pass
    }
}
