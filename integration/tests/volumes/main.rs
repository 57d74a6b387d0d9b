//! Pod volumes end to end: emptyDir (disk and tmpfs), every hostPath type, readOnly, subPath
//! (with symlink escapes), eviction over an emptyDir sizeLimit and over `ephemeral-storage`
//! limits, agent restarts around set-up and teardown, mount propagation, the nfs plugin through
//! a configured mount program, the mount-safe removal of a pod directory, and `fsGroup` on
//! volume ownership. Through the binary (`TestAgent`) except
//! `busy_volume_survives_a_failed_teardown`, which drives the volume manager with the real
//! mounter.
//!
//! Files: `plugins` (emptyDir, tmpfs, hostPath, readOnly, subPath), `lifecycle` (eviction,
//! restarts, teardown), `ephemeral` (`ephemeral-storage` limits), `mounts` (propagation, nfs),
//! `fsgroup` (volume ownership); the shared helpers are below.

mod ephemeral;
mod fsgroup;
mod lifecycle;
mod mounts;
mod plugins;

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
pub(crate) use kubenode_integration::pods::exec_sh as exec;
pub(crate) use kubenode_integration::pods::{
    all_running, phase, pod_yaml, state, status, uid, waiting_message, waiting_reason, with_agent,
};
use kubenode_integration::{privileged, run_tests, TestAgent};

use ephemeral::{ephemeral_storage_limits, eviction_survives_restart};
use fsgroup::{emptydir_given_to_fs_group, fs_group_not_reapplied_after_restart};
use lifecycle::{busy_teardown, eviction, restart, teardown_after_death};
use mounts::{nfs_fake_server, propagation};
use plugins::{emptydir_course_example, host_path_types, subpaths, tmpfs_with_size};

fn main() {
    run_tests(vec![
        privileged(
            "emptydir_writer_and_readonly_httpd",
            emptydir_course_example,
        ),
        privileged("emptydir_memory_is_a_sized_tmpfs", tmpfs_with_size),
        privileged("hostpath_every_type_and_failures", host_path_types),
        privileged("readonly_and_subpath_with_symlink_escapes", subpaths),
        privileged("emptydir_size_limit_evicts_the_pod", eviction),
        privileged(
            "ephemeral_storage_limits_evict_container_and_pod",
            ephemeral_storage_limits,
        ),
        privileged(
            "an_evicted_pod_stays_failed_after_an_agent_restart",
            eviction_survives_restart,
        ),
        privileged("agent_killed_after_volume_setup_no_double_mount", restart),
        privileged("busy_volume_survives_a_failed_teardown", busy_teardown),
        privileged(
            "pods_gone_while_the_agent_was_down_are_unmounted",
            teardown_after_death,
        ),
        privileged(
            "mount_propagation_none_host_to_container_bidirectional",
            propagation,
        ),
        privileged("nfs_through_a_configured_mount_program", nfs_fake_server),
        privileged(
            "fs_group_owns_emptydir_not_hostpath",
            emptydir_given_to_fs_group,
        ),
        privileged(
            "fs_group_not_reapplied_after_agent_restart",
            fs_group_not_reapplied_after_restart,
        ),
    ])
}

/// Mount points (from this process's mountinfo) at or below `dir`.
pub(crate) fn mounts_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4).map(|t| (t.to_string(), l)))
        .filter(|(t, _)| t.starts_with(&dir))
        .map(|(_, l)| l.to_string())
        .collect()
}

/// Removes the manifest, waits for the pod to go, and checks its volumes are unmounted and
/// its directory gone.
pub(crate) fn remove_and_check(
    agent: &TestAgent,
    file: &str,
    name: &str,
    uid: &str,
) -> anyhow::Result<()> {
    agent.remove_manifest(file)?;
    agent.wait_gone(name, Duration::from_secs(45))?;
    let pod_dir = agent.dir.join("root/pods").join(uid);
    let left = mounts_below(&pod_dir);
    ensure!(
        left.is_empty(),
        "still mounted after the pod went: {left:?}"
    );
    ensure!(!pod_dir.exists(), "{} left behind", pod_dir.display());
    Ok(())
}
