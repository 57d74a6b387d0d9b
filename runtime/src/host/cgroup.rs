//! cgroup directories: where a cgroupfs `cgroupsPath` lives in each mounted
//! hierarchy (v1 controllers and the v2 unified mount), their removal, and
//! the files that count OOM kills.

use std::path::{Path, PathBuf};

use super::HostError;

/// The hierarchy roots under `root`: `root` itself for pure cgroup v2, else
/// every mounted v1 controller directory plus `unified`.
pub fn cgroup_roots(root: &Path) -> Vec<PathBuf> {
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Files whose `oom_kill` counters tell whether the cgroup saw an OOM kill.
pub fn oom_files(root: &Path, cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel).join("memory.events")];
    }
    vec![
        root.join("memory").join(rel).join("memory.oom_control"),
        root.join("unified").join(rel).join("memory.events"),
    ]
}

/// Creates the cgroup `cgroups_path` in the pids controller and sets its `pids.max` (a
/// number, or `max`): the kubelet's pod cgroup with `podPidsLimit`. On cgroup v1 the pids
/// hierarchy is `<root>/pids`; on v2 (`root` unified) the pids controller is enabled in the
/// `cgroup.subtree_control` of every ancestor below the root first.
pub(super) fn set_pids_max(root: &Path, cgroups_path: &str, max: &str) -> Result<(), HostError> {
    let rel = cgroups_path.trim_start_matches('/');
    let v2 = is_v2(root);
    let base = if v2 {
        root.to_path_buf()
    } else {
        root.join("pids")
    };
    if !controller_available(root, v2, "pids") {
        // Without a pids controller there is no limit to lift, and none to set.
        return match max {
            "max" => Ok(()),
            _ => Err(HostError::new(
                "setting a pids limit: no pids controller at",
                &base,
                std::io::Error::from(std::io::ErrorKind::Unsupported),
            )),
        };
    }
    let dir = create(root, v2, "pids", rel, &["pids"])?;
    let file = dir.join("pids.max");
    std::fs::write(&file, max).map_err(|e| HostError::new("writing", &file, e))
}

/// The CPU and memory settings of a pod cgroup, as the kubelet's pod container manager gives
/// them (upstream `ResourceConfig` from `ResourceConfigForPod`); `None` leaves a setting at the
/// kernel's default (no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCgroupResources {
    /// CPU shares (v1 `cpu.shares`; on v2 `cpu.weight`, converted by [`cpu_shares_to_weight`]).
    pub cpu_shares: Option<u64>,
    /// CFS quota and period in µs (v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`, v2 `cpu.max`).
    pub cpu_quota: Option<(i64, u64)>,
    /// Memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub memory_limit: Option<i64>,
}

/// cgroup v1 `cpu.shares` to v2 `cpu.weight`, the kubelet's conversion (KEP 2254):
/// `1 + ((shares - 2) * 9999) / 262142`; shares are kept within the kernel's 2..=262144.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// Creates the cgroup `cgroups_path` in the cpu and memory controllers and writes `res` into
/// it. cgroup v1: `<root>/cpu` and `<root>/memory`; v2: the controllers are enabled in the
/// `cgroup.subtree_control` of every ancestor first. A limit whose controller the host lacks is
/// an error; the CPU shares alone are left out then (a BestEffort pod has nothing else).
pub(super) fn set_resources(
    root: &Path,
    cgroups_path: &str,
    res: &PodCgroupResources,
) -> Result<(), HostError> {
    let rel = cgroups_path.trim_start_matches('/');
    let v2 = is_v2(root);
    // (controller, file, value, required)
    let mut writes: Vec<(&str, &str, String, bool)> = Vec::new();
    if let Some(shares) = res.cpu_shares {
        let (file, value) = if v2 {
            ("cpu.weight", cpu_shares_to_weight(shares))
        } else {
            ("cpu.shares", shares)
        };
        writes.push(("cpu", file, value.to_string(), false));
    }
    if let Some((quota, period)) = res.cpu_quota {
        if v2 {
            writes.push(("cpu", "cpu.max", format!("{quota} {period}"), true));
        } else {
            // The period first: the quota is checked against it (and against the parent's).
            writes.push(("cpu", "cpu.cfs_period_us", period.to_string(), true));
            writes.push(("cpu", "cpu.cfs_quota_us", quota.to_string(), true));
        }
    }
    if let Some(bytes) = res.memory_limit {
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        writes.push(("memory", file, bytes.to_string(), true));
    }
    let mut missing = None;
    writes.retain(|(controller, _, _, required)| {
        let available = controller_available(root, v2, controller);
        if !available && *required {
            missing.get_or_insert(*controller);
        }
        available
    });
    if let Some(controller) = missing {
        let at = if v2 {
            root.join("cgroup.controllers")
        } else {
            root.join(controller)
        };
        return Err(HostError::new(
            match controller {
                "cpu" => "setting the pod's cpu limit: no cpu controller at",
                _ => "setting the pod's memory limit: no memory controller at",
            },
            &at,
            std::io::Error::from(std::io::ErrorKind::Unsupported),
        ));
    }
    let mut controllers: Vec<&str> = writes.iter().map(|w| w.0).collect();
    controllers.dedup();
    // v2 has one directory for all controllers, v1 one per hierarchy.
    let mut dirs: Vec<(&str, PathBuf)> = Vec::new();
    for controller in &controllers {
        let dir = match dirs.first() {
            Some((_, dir)) if v2 => dir.clone(),
            _ => create(root, v2, controller, rel, &controllers)?,
        };
        dirs.push((controller, dir));
    }
    for (controller, file, value, _) in &writes {
        let Some((_, dir)) = dirs.iter().find(|(c, _)| c == controller) else {
            continue;
        };
        let file = dir.join(file);
        std::fs::write(&file, value).map_err(|e| HostError::new("writing", &file, e))?;
    }
    Ok(())
}

fn is_v2(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// Whether the host has `controller`: listed in the v2 root's `cgroup.controllers`, or a
/// mounted v1 hierarchy `<root>/<controller>`.
fn controller_available(root: &Path, v2: bool, controller: &str) -> bool {
    if v2 {
        std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
    } else {
        root.join(controller).join("cgroup.procs").exists()
    }
}

/// Makes the cgroup `rel` and returns its directory holding `controller`'s files: on v1 in that
/// controller's hierarchy; on v2 below the root, with `enable` switched on in the
/// `cgroup.subtree_control` of every ancestor on the way (as runc does for a container).
fn create(
    root: &Path,
    v2: bool,
    controller: &str,
    rel: &str,
    enable: &[&str],
) -> Result<PathBuf, HostError> {
    if !v2 {
        let dir = root.join(controller).join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| HostError::new("creating cgroup", &dir, e))?;
        return Ok(dir);
    }
    let mut at = root.to_path_buf();
    for part in Path::new(rel).components() {
        let control = at.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control)
            .map_err(|e| HostError::new("reading", &control, e))?;
        let missing: Vec<String> = enable
            .iter()
            .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if !missing.is_empty() {
            std::fs::write(&control, missing.join(" "))
                .map_err(|e| HostError::new("enabling controllers in", &control, e))?;
        }
        at.push(part);
        std::fs::create_dir_all(&at).map_err(|e| HostError::new("creating cgroup", &at, e))?;
    }
    Ok(at)
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How many times a cgroup that is busy is tried, and the first pause between tries (doubled
/// each time): runc's `RemovePath` retries alike, as a cgroup whose last process is still
/// exiting refuses to go for a moment (EBUSY).
const REMOVE_ATTEMPTS: u32 = 5;
const REMOVE_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

pub(super) fn remove(root: &Path, cgroups_path: &str) -> Result<(), HostError> {
    let rel = cgroups_path.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(());
    }
    let mut first_err = None;
    for h in cgroup_roots(root) {
        let dir = h.join(rel);
        let mut pause = REMOVE_FIRST_PAUSE;
        let mut attempt = 1;
        let result = loop {
            match remove_tree(&dir) {
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::EBUSY) && attempt < REMOVE_ATTEMPTS =>
                {
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        };
        if let Err(e) = result {
            first_err.get_or_insert(HostError::new("removing cgroup", &dir, e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_max_on_cgroup_v1() {
        let root = tempfile::tempdir().unwrap();
        // No pids hierarchy: no limit is fine, a limit is an error.
        set_pids_max(root.path(), "/kubepods/besteffort/podu1", "max").unwrap();
        assert!(set_pids_max(root.path(), "/kubepods/besteffort/podu1", "16").is_err());
        assert!(!root.path().join("pids").exists());
        std::fs::create_dir(root.path().join("pids")).unwrap();
        std::fs::write(root.path().join("pids/cgroup.procs"), "").unwrap();
        set_pids_max(root.path(), "/kubepods/besteffort/podu1", "16").unwrap();
        let file = root.path().join("pids/kubepods/besteffort/podu1/pids.max");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "16");
    }

    #[test]
    fn pids_max_on_cgroup_v2_enables_the_controller_on_the_way() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::write(r.join("cgroup.subtree_control"), "memory pids").unwrap();
        std::fs::create_dir(r.join("kubepods")).unwrap();
        // A real kernel creates this file with the directory; the fake starts it empty.
        std::fs::write(r.join("kubepods/cgroup.subtree_control"), "").unwrap();
        let e = set_pids_max(r, "/kubepods/burstable/podu2", "max").unwrap_err();
        assert!(
            e.to_string()
                .contains("kubepods/burstable/cgroup.subtree_control"),
            "{e}"
        );
        std::fs::write(r.join("kubepods/burstable/cgroup.subtree_control"), "").unwrap();
        set_pids_max(r, "/kubepods/burstable/podu2", "max").unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("cgroup.subtree_control")).unwrap(),
            "memory pids",
            "already enabled: left alone"
        );
        for d in ["kubepods", "kubepods/burstable"] {
            let c = std::fs::read_to_string(r.join(d).join("cgroup.subtree_control")).unwrap();
            assert_eq!(c, "+pids", "{d}");
        }
        let max = std::fs::read_to_string(r.join("kubepods/burstable/podu2/pids.max")).unwrap();
        assert_eq!(max, "max");
    }

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn v1_root(controllers: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for c in controllers {
            std::fs::create_dir(root.path().join(c)).unwrap();
            std::fs::write(root.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        root
    }

    #[test]
    fn shares_to_weight_as_the_kubelet() {
        // (shares, weight): upstream's KEP 2254 formula, integer division.
        for (shares, weight) in [
            (2, 1),
            (3, 1),
            (28, 1),
            (29, 2),
            (102, 4),
            (1024, 39),
            (2048, 79),
            (262_144, 10_000),
            (0, 1),
            (1 << 20, 10_000),
        ] {
            assert_eq!(cpu_shares_to_weight(shares), weight, "shares {shares}");
        }
    }

    #[test]
    fn pod_resources_on_cgroup_v1() {
        let root = v1_root(&["cpu", "memory"]);
        let r = root.path();
        let res = PodCgroupResources {
            cpu_shares: Some(204),
            cpu_quota: Some((30_000, 100_000)),
            memory_limit: Some(96 << 20),
        };
        set_resources(r, "/kubepods/burstable/podu1", &res).unwrap();
        let cpu = r.join("cpu/kubepods/burstable/podu1");
        assert_eq!(read(cpu.join("cpu.shares")), "204");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "30000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        let mem = r.join("memory/kubepods/burstable/podu1/memory.limit_in_bytes");
        assert_eq!(read(mem), (96 << 20).to_string());

        // BestEffort: shares only; nothing is made in the memory hierarchy.
        let be = PodCgroupResources {
            cpu_shares: Some(2),
            ..Default::default()
        };
        set_resources(r, "/kubepods/besteffort/podu2", &be).unwrap();
        assert_eq!(
            read(r.join("cpu/kubepods/besteffort/podu2/cpu.shares")),
            "2"
        );
        assert!(!r
            .join("cpu/kubepods/besteffort/podu2/cpu.cfs_quota_us")
            .exists());
        assert!(!r.join("memory/kubepods/besteffort").exists());
    }

    #[test]
    fn a_limit_without_its_controller_is_an_error_shares_are_skipped() {
        let root = v1_root(&["cpu"]);
        let r = root.path();
        let res = PodCgroupResources {
            cpu_shares: Some(2),
            memory_limit: Some(1 << 20),
            ..Default::default()
        };
        let e = set_resources(r, "/kubepods/podu1", &res).unwrap_err();
        assert!(e.to_string().contains("no memory controller"), "{e}");
        let root = v1_root(&["memory"]);
        let r = root.path();
        let shares = PodCgroupResources {
            cpu_shares: Some(2),
            ..Default::default()
        };
        set_resources(r, "/kubepods/besteffort/podu1", &shares).unwrap();
        assert!(!r.join("cpu").exists());
        let quota = PodCgroupResources {
            cpu_quota: Some((1000, 100_000)),
            ..Default::default()
        };
        let e = set_resources(r, "/kubepods/podu1", &quota).unwrap_err();
        assert!(e.to_string().contains("no cpu controller"), "{e}");
    }

    #[test]
    fn pod_resources_on_cgroup_v2_enable_the_controllers_on_the_way() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        std::fs::write(r.join("cgroup.subtree_control"), "memory").unwrap();
        // A real kernel creates these files with the directories; the fake makes them first.
        for d in ["kubepods", "kubepods/burstable"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
            std::fs::write(r.join(d).join("cgroup.subtree_control"), "").unwrap();
        }
        let res = PodCgroupResources {
            cpu_shares: Some(1024),
            cpu_quota: Some((250_000, 100_000)),
            memory_limit: Some(128 << 20),
        };
        set_resources(r, "/kubepods/burstable/podu1", &res).unwrap();
        let pod = r.join("kubepods/burstable/podu1");
        assert_eq!(read(pod.join("cpu.weight")), "39");
        assert_eq!(read(pod.join("cpu.max")), "250000 100000");
        assert_eq!(read(pod.join("memory.max")), (128 << 20).to_string());
        assert!(!pod.join("cpu.shares").exists());
        // Only what was missing is written (the fake keeps the last write).
        assert_eq!(read(r.join("cgroup.subtree_control")), "+cpu");
        for d in ["kubepods", "kubepods/burstable"] {
            assert_eq!(
                read(r.join(d).join("cgroup.subtree_control")),
                "+cpu +memory"
            );
        }
    }
}
