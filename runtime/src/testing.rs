//! Recording test implementations of the OS boundaries ([`OciRuntime`],
//! [`Host`], [`ShimLauncher`]) for unit tests without root, here and in the
//! kubelet. Each records its calls as strings and can be told to fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::host::{Host, HostError, NamespaceFiles};
use crate::oci::{CreateRequest, ExecOutput, OciError, OciRuntime, OciState, OciStatus};
use crate::shim::{ShimArgs, ShimLauncher, ShimStarted};
use crate::signal::{KillScope, Signal};

#[derive(Debug, Default)]
struct OciInner {
    calls: Vec<String>,
    containers: HashMap<String, OciState>,
    failures: HashMap<String, String>,
    exec_output: ExecOutput,
}

/// An in-memory OCI runtime that records every call.
#[derive(Debug, Default)]
pub struct RecordingRuntime {
    inner: Mutex<OciInner>,
}

impl RecordingRuntime {
    /// A new, empty runtime.
    pub fn new() -> Arc<RecordingRuntime> {
        Arc::new(RecordingRuntime::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OciInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls so far, like `create c1`, `start c1`, `kill c1 15`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Makes operation `op` (`create`, `start`, `kill`, `delete`, `state`, `exec`) fail with `message`.
    pub fn fail(&self, op: &str, message: &str) {
        self.lock()
            .failures
            .insert(op.to_string(), message.to_string());
    }

    /// Makes every operation succeed again.
    pub fn heal(&self) {
        self.lock().failures.clear();
    }

    /// Sets a container's status (e.g. `Stopped` after a simulated exit).
    pub fn set_status(&self, id: &str, status: OciStatus) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.status = status;
        }
    }

    /// What `exec` returns.
    pub fn set_exec_output(&self, out: ExecOutput) {
        self.lock().exec_output = out;
    }

    /// Ids of the containers it holds.
    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().containers.keys().cloned().collect();
        v.sort();
        v
    }

    fn record(&self, op: &str, call: String) -> Result<(), OciError> {
        let mut inner = self.lock();
        inner.calls.push(call.clone());
        match inner.failures.get(op) {
            Some(message) => Err(OciError::Failed {
                command: call,
                status: "exit status: 1".into(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl OciRuntime for RecordingRuntime {
    fn name(&self) -> &str {
        "recording"
    }

    fn create(&self, req: CreateRequest<'_>) -> Result<(), OciError> {
        self.record("create", format!("create {}", req.id))?;
        let pid = 1000 + self.lock().containers.len() as i32;
        let _ = std::fs::write(req.pid_file, pid.to_string());
        self.lock().containers.insert(
            req.id.to_string(),
            OciState {
                id: req.id.to_string(),
                status: OciStatus::Created,
                pid,
                bundle: req.bundle.to_path_buf(),
            },
        );
        Ok(())
    }

    fn start(&self, id: &str) -> Result<(), OciError> {
        self.record("start", format!("start {id}"))?;
        self.set_status(id, OciStatus::Running);
        Ok(())
    }

    fn state(&self, id: &str) -> Result<Option<OciState>, OciError> {
        self.record("state", format!("state {id}"))?;
        Ok(self.lock().containers.get(id).cloned())
    }

    fn kill(&self, id: &str, signal: Signal, scope: KillScope) -> Result<(), OciError> {
        let all = match scope {
            KillScope::All => " --all",
            KillScope::Init => "",
        };
        self.record("kill", format!("kill {id} {signal}{all}"))
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        self.record(
            "delete",
            format!("delete {id}{}", if force { " --force" } else { "" }),
        )?;
        self.lock().containers.remove(id);
        Ok(())
    }

    fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, OciError> {
        self.record(
            "exec",
            format!("exec {id} {} ({timeout:?})", args.join(" ")),
        )?;
        let mut out = self.lock().exec_output.clone();
        out.stdout.truncate(max_output);
        out.stderr.truncate(max_output);
        Ok(out)
    }

    fn list(&self) -> Result<Vec<OciState>, OciError> {
        self.record("list", "list".into())?;
        Ok(self.lock().containers.values().cloned().collect())
    }
}

/// A shim launcher that creates the container in a [`RecordingRuntime`]
/// in-process and records the shim arguments.
#[derive(Debug)]
pub struct RecordingShims {
    runtime: Arc<RecordingRuntime>,
    launched: Mutex<Vec<ShimArgs>>,
}

impl RecordingShims {
    /// Launcher over `runtime`.
    pub fn new(runtime: Arc<RecordingRuntime>) -> Arc<RecordingShims> {
        Arc::new(RecordingShims {
            runtime,
            launched: Mutex::new(Vec::new()),
        })
    }

    /// The arguments of every launch so far.
    pub fn launched(&self) -> Vec<ShimArgs> {
        self.launched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ShimLauncher for RecordingShims {
    fn launch(&self, args: &ShimArgs) -> Result<ShimStarted, String> {
        self.launched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(args.clone());
        self.runtime
            .create(CreateRequest {
                id: &args.id,
                bundle: &args.bundle,
                pid_file: &args.pid_file,
                stdout: None,
                stderr: None,
                stdin: None,
                console_socket: None,
            })
            .map_err(|e| e.to_string())?;
        let pid = std::fs::read_to_string(&args.pid_file)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // No shim process exists: pid 0 means "gone" to the runtime.
        Ok(ShimStarted {
            container_pid: pid,
            shim_pid: 0,
        })
    }
}

/// A host that records operations and only touches files under the paths given.
#[derive(Debug, Default)]
pub struct RecordingHost {
    calls: Mutex<Vec<String>>,
    failures: Mutex<HashMap<String, String>>,
    mounts: Mutex<Vec<PathBuf>>,
}

impl RecordingHost {
    /// A new recording host.
    pub fn new() -> Arc<RecordingHost> {
        Arc::new(RecordingHost::default())
    }

    /// The calls so far, like `create_netns /run/x/netns/kn-…`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Pretends `path` is a mount point (listed by `mounts_under` until an `unmount` of it
    /// succeeds).
    pub fn add_mount(&self, path: &Path) {
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(path.to_path_buf());
    }

    /// Makes operation `op` fail.
    pub fn fail(&self, op: &str, message: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(op.into(), message.into());
    }

    /// Makes every operation succeed again.
    pub fn heal(&self) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn record(&self, op: &str, path: &Path) -> Result<(), HostError> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{op} {}", path.display()));
        match self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(op)
        {
            Some(m) => Err(HostError::new(
                "recorded failure of",
                path,
                std::io::Error::other(m.clone()),
            )),
            None => Ok(()),
        }
    }
}

impl Host for RecordingHost {
    fn create_namespaces(&self, files: &NamespaceFiles<'_>) -> Result<(), HostError> {
        let pins = [
            ("create_netns", files.net),
            ("create_ipcns", files.ipc),
            ("create_utsns", files.uts.map(|(p, _)| p)),
        ];
        for (op, path) in pins {
            let Some(path) = path else { continue };
            self.record(op, path)?;
            if let Some(d) = path.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            std::fs::write(path, b"").map_err(|e| HostError::new("creating", path, e))?;
        }
        Ok(())
    }

    fn remove_namespace(&self, path: &Path) -> Result<(), HostError> {
        self.record("remove_namespace", path)?;
        let _ = std::fs::remove_file(path);
        Ok(())
    }

    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> Result<(), HostError> {
        self.record("mount_overlay", target)?;
        // Stand-in for the mount: the top layer's files become visible.
        std::fs::create_dir_all(target.join("etc"))
            .map_err(|e| HostError::new("creating", target, e))?;
        if let Some(top) = lowers.last() {
            for f in ["etc/passwd", "etc/group"] {
                let _ = std::fs::copy(top.join(f), target.join(f));
            }
        }
        Ok(())
    }

    fn mount_shm(&self, target: &Path) -> Result<(), HostError> {
        self.record("mount_shm", target)?;
        std::fs::create_dir_all(target).map_err(|e| HostError::new("creating", target, e))
    }

    fn unmount(&self, target: &Path) -> Result<(), HostError> {
        self.record("unmount", target)?;
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|m| m != target);
        Ok(())
    }

    fn mounts_under(&self, dir: &Path) -> Result<Vec<PathBuf>, HostError> {
        let mut found: Vec<PathBuf> = self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|m| m.starts_with(dir))
            .cloned()
            .collect();
        found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        Ok(found)
    }

    fn remove_cgroup(&self, cgroups_path: &str) -> Result<(), HostError> {
        self.record("remove_cgroup", Path::new(cgroups_path))
    }

    fn set_pids_limit(&self, cgroups_path: &str, max: Option<u64>) -> Result<(), HostError> {
        let max = max.map_or_else(|| "max".to_string(), |n| n.to_string());
        self.record(
            "set_pids_limit",
            &Path::new(cgroups_path).join(format!("pids.max={max}")),
        )
    }

    fn set_pod_resources(
        &self,
        cgroups_path: &str,
        resources: &crate::host::PodCgroupResources,
    ) -> Result<(), HostError> {
        let mut set = Vec::new();
        if let Some(shares) = resources.cpu_shares {
            set.push(format!("shares={shares}"));
        }
        if let Some((quota, period)) = resources.cpu_quota {
            set.push(format!("quota={quota}/{period}"));
        }
        if let Some(bytes) = resources.memory_limit {
            set.push(format!("memory={bytes}"));
        }
        self.record(
            "set_pod_resources",
            &Path::new(cgroups_path).join(set.join(",")),
        )
    }
}

/// Host limits for tests: NOFILE hard 20000, negative OOM adjustments refused, cgroup v1.
pub fn test_limits() -> crate::spec::HostLimits {
    crate::spec::HostLimits {
        nofile_hard: 20000,
        min_oom_score_adj: 0,
        cgroup_v2: false,
        capabilities: u64::MAX,
        swap_controller: false,
    }
}
