//! [`Runtime`]: the kubelet's handle on sandboxes and containers, its
//! configuration, start-up (directories, the built-in pause program) and
//! recovery of its view from disk and the OCI runtime's state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{ErrorList, RuntimeError};
use crate::host::{Host, LinuxHost};
use crate::oci::{OciRuntime, RuncCli};
use crate::shim::launch::ProcessShimLauncher;
use crate::shim::ShimLauncher;
use crate::spec::HostLimits;
use crate::store::{self, ContainerMeta, SandboxMeta, SandboxPhase};

/// The static pause program, built from `runtime/pause/pause.c`.
static PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Where the runtime keeps things and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Persistent state: container bundles, overlay upper dirs, metadata.
    pub root_dir: PathBuf,
    /// Volatile state: the OCI runtime's `--root` (`<run>/runc`), netns files, the pause rootfs.
    pub run_dir: PathBuf,
    /// Pod logs (`/var/log/pods`).
    pub log_dir: PathBuf,
    /// The OCI runtime binary (`runc` is looked up in `PATH`).
    pub runtime_path: PathBuf,
    /// The binary whose `shim` subcommand is the shim (normally kubenode itself).
    pub shim_binary: PathBuf,
    /// Rotate container logs at this size.
    pub log_max_size: u64,
    /// Keep this many log files per container.
    pub log_max_files: u32,
    /// Where cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// Where the host's processes are (`/proc`): a pause process is checked there before its
    /// namespaces are joined by path.
    pub proc_root: PathBuf,
}

impl RuntimeConfig {
    /// A configuration with the default runtime (`runc`), log rotation
    /// (10 MiB × 5) and the default shim binary (see [`default_shim_binary`]).
    pub fn new(
        root_dir: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
        log_dir: impl Into<PathBuf>,
    ) -> RuntimeConfig {
        RuntimeConfig {
            root_dir: root_dir.into(),
            run_dir: run_dir.into(),
            log_dir: log_dir.into(),
            proc_root: PathBuf::from("/proc"),
            runtime_path: PathBuf::from("runc"),
            shim_binary: default_shim_binary(),
            log_max_size: crate::shim::DEFAULT_LOG_MAX_SIZE,
            log_max_files: crate::shim::DEFAULT_LOG_MAX_FILES,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }

    /// The OCI runtime's state directory.
    pub fn runtime_root(&self) -> PathBuf {
        self.run_dir.join("runc")
    }

    /// The shared read-only rootfs of every pause container.
    pub fn pause_rootfs(&self) -> PathBuf {
        self.run_dir.join("pause").join("rootfs")
    }

    /// Directory of the pod network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }
}

/// The shim binary used unless configured: `kubenode-shim` next to the
/// current executable when it exists (a small binary: ~0.25 MiB PSS per
/// container instead of ~0.85 MiB for the relocated pages of the whole
/// kubenode binary), else the current executable (`kubenode shim`).
pub fn default_shim_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kubenode"));
    let small = exe.with_file_name("kubenode-shim");
    if small.is_file() {
        small
    } else {
        exe
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub sandboxes: HashMap<String, SandboxMeta>,
    pub containers: HashMap<String, ContainerMeta>,
}

/// The container runtime of one agent. Cheap to share behind an `Arc`; every
/// method blocks.
#[derive(Debug)]
pub struct Runtime {
    pub(crate) config: RuntimeConfig,
    pub(crate) oci: Arc<dyn OciRuntime>,
    pub(crate) host: Arc<dyn Host>,
    pub(crate) shims: Arc<dyn ShimLauncher>,
    pub(crate) limits: HostLimits,
    pub(crate) state: Mutex<State>,
}

fn mkdir(path: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(path).map_err(|e| RuntimeError::io("creating directory", path, e))
}

impl Runtime {
    /// The real runtime: runc (or `runtime_path`) with `--root <run>/runc`,
    /// shims from `shim_binary`, the host's own limits.
    pub fn new(mut config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        config.runtime_path =
            crate::oci::resolve_runtime(&config.runtime_path).ok_or_else(|| {
                RuntimeError::UnknownRuntime {
                    name: config.runtime_path.display().to_string(),
                }
            })?;
        let oci = Arc::new(RuncCli::new(&config.runtime_path, config.runtime_root()));
        let shims = Arc::new(ProcessShimLauncher::new(&config.shim_binary));
        let limits = HostLimits::probe();
        tracing::info!(
            runtime = %config.runtime_path.display(),
            root = %config.runtime_root().display(),
            cgroup_v2 = limits.cgroup_v2,
            nofile_hard = limits.nofile_hard,
            "container runtime"
        );
        limits.warn_oom_floor();
        Runtime::with_parts(config, oci, Arc::new(LinuxHost::new()), shims, limits)
    }

    /// A runtime over the given OS boundary implementations (tests use the
    /// recording ones from [`crate::testing`]).
    pub fn with_parts(
        config: RuntimeConfig,
        oci: Arc<dyn OciRuntime>,
        host: Arc<dyn Host>,
        shims: Arc<dyn ShimLauncher>,
        limits: HostLimits,
    ) -> Result<Runtime, RuntimeError> {
        // The state root and the bundles below it are root's alone (containerd's answer to
        // CVE-2021-41103): a host user must not reach a container's rootfs, where an image's
        // setuid binaries and device nodes are. Existing installs are tightened here.
        for dir in [
            config.root_dir.clone(),
            store::sandboxes_dir(&config.root_dir),
            store::containers_dir(&config.root_dir),
        ] {
            crate::fsutil::ensure_dir(&dir, crate::fsutil::PRIVATE_DIR_MODE)
                .map_err(|e| RuntimeError::io("creating private directory", &dir, e))?;
        }
        for dir in [
            config.runtime_root(),
            config.netns_dir(),
            config.log_dir.clone(),
        ] {
            mkdir(&dir)?;
        }
        install_pause(&config.pause_rootfs())?;
        Ok(Runtime {
            config,
            oci,
            host,
            shims,
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        kubenode_fsutil::lock(&self.state, "runtime state")
    }

    pub(crate) fn sandbox_dir(&self, id: &str) -> PathBuf {
        store::sandboxes_dir(&self.config.root_dir).join(id)
    }

    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        store::containers_dir(&self.config.root_dir).join(id)
    }

    /// The directories holding one directory per sandbox and per container, in which each
    /// shim leaves its exit record (named [`crate::EXIT_RECORD`]) when its container exits.
    /// The record is renamed into place complete, so a watcher of these directories sees an
    /// exit as soon as it is recorded.
    pub fn exit_record_dirs(&self) -> [PathBuf; 2] {
        [
            store::sandboxes_dir(&self.config.root_dir),
            store::containers_dir(&self.config.root_dir),
        ]
    }

    /// Rebuilds the view from disk and the OCI runtime's state: loads every
    /// complete sandbox and container (their exit statuses and restart counts
    /// are on disk), and removes what this runtime owns that is half-made:
    /// containers whose create never finished, containers created but never
    /// started (they never ran: the kubelet makes them again with the same
    /// restart count), sandboxes whose netns was being made, and OCI runtime
    /// containers no record knows.
    ///
    /// A half-made record may have a shim of the last agent run still in
    /// `runtime create` (the agent was killed while it waited for the shim's
    /// report): each such bundle is settled first (see [`crate::shim::lock`]),
    /// so that nothing is created after its record is gone. A sandbox whose
    /// pause container was being started is settled the same way and kept as
    /// not ready: the kubelet tears it down and makes a new one.
    pub fn recover(&self) -> Result<(), RuntimeError> {
        let mut errors = ErrorList::new("half-made objects found at recovery");
        let (sandboxes, broken_s) =
            store::scan::<SandboxMeta>(&store::sandboxes_dir(&self.config.root_dir));
        let (containers, broken_c) =
            store::scan::<ContainerMeta>(&store::containers_dir(&self.config.root_dir));
        let mut known = std::collections::HashSet::new();
        for dir in broken_s.iter().chain(&broken_c) {
            tracing::info!(dir = %dir.display(), "removing a state directory without metadata");
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(_lock) = self.settle_bundle(dir, &id, &mut errors) else {
                continue;
            };
            errors.check(
                "removing directory without metadata",
                self.remove_state_dir(dir),
            );
        }
        let mut loaded_sandboxes = HashMap::new();
        // Every sandbox on disk, while half-made ones are removed: a pod cgroup another
        // sandbox of the pod still uses stays.
        self.state().sandboxes = sandboxes
            .iter()
            .map(|s| (s.id.clone(), s.clone()))
            .collect();
        for s in sandboxes {
            let dir = self.sandbox_dir(&s.id);
            if s.phase == SandboxPhase::Creating {
                tracing::info!(sandbox = %s.id, pod = %s.pod.full_name(), "removing half-made sandbox");
                let Some(_lock) = self.settle_bundle(&dir, &s.id, &mut errors) else {
                    self.state().sandboxes.remove(&s.id);
                    continue;
                };
                if self.remove_sandbox_files(&s, &mut errors) {
                    self.state().sandboxes.remove(&s.id);
                } else {
                    // Kept, not ready: the kubelet's teardown of it retries.
                    known.insert(s.id.clone());
                    loaded_sandboxes.insert(s.id.clone(), s);
                }
                continue;
            }
            if s.phase == SandboxPhase::Created {
                // Its pause container may have been in the making: stopped and deleted; the
                // sandbox stays, not ready.
                let _ = self.settle_bundle(&dir, &s.id, &mut errors);
            }
            known.insert(s.id.clone());
            loaded_sandboxes.insert(s.id.clone(), s);
        }
        let mut loaded_containers = HashMap::new();
        for c in containers {
            let dir = self.container_dir(&c.id);
            let never_started = c.complete && self.never_started(&c);
            if !c.complete || never_started || !loaded_sandboxes.contains_key(&c.sandbox_id) {
                let why = if !c.complete {
                    "its creation never finished"
                } else if never_started {
                    "it was created but never started"
                } else {
                    "its sandbox is gone"
                };
                tracing::info!(container = %c.id, name = %c.name, pod = %c.pod.full_name(), "removing a container left by the last run: {why}");
                let Some(_lock) = self.settle_bundle(&dir, &c.id, &mut errors) else {
                    continue;
                };
                self.remove_container_files(&c, &mut errors);
                continue;
            }
            known.insert(c.id.clone());
            loaded_containers.insert(c.id.clone(), c);
        }
        match self.oci.list() {
            Ok(list) => {
                for st in list.into_iter().filter(|st| !known.contains(&st.id)) {
                    tracing::info!(id = %st.id, "deleting OCI container without a record");
                    errors.check(
                        "deleting unknown OCI container",
                        self.oci.delete(&st.id, true),
                    );
                }
            }
            Err(e) => {
                errors.check::<(), _>("listing OCI containers", Err(e));
            }
        }
        tracing::info!(
            sandboxes = loaded_sandboxes.len(),
            containers = loaded_containers.len(),
            "runtime state recovered"
        );
        {
            let mut state = self.state();
            state.sandboxes = loaded_sandboxes;
            state.containers = loaded_containers;
        }
        errors.into_result().map_err(RuntimeError::from)
    }
}

/// How long recovery waits for the shim of one half-made bundle to go (it normally goes within
/// a `runtime create` and a `runtime delete`).
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Runtime {
    /// Whether a complete container record was never started by the last agent run: no start
    /// and no start error recorded, and the OCI runtime has it created (waiting for `start`)
    /// or not at all, without an exit record. One the runtime runs or ran is not: its start
    /// happened, only its record missed it.
    fn never_started(&self, c: &ContainerMeta) -> bool {
        if c.started_at.is_some() || c.start_error.is_some() {
            return false;
        }
        if self.container_dir(&c.id).join(store::EXIT).exists() {
            return false;
        }
        match self.oci.state(&c.id) {
            Ok(None) => true,
            Ok(Some(st)) => matches!(
                st.status,
                crate::oci::OciStatus::Creating | crate::oci::OciStatus::Created
            ),
            Err(_) => false,
        }
    }

    /// Settles the bundle `dir` of OCI container `id` at recovery: waits (bounded) until no
    /// shim of the last run holds its lock, deleting the OCI container meanwhile whenever it
    /// exists (a shim whose `runtime create` finished watches it until it is gone), and
    /// unlinks the lock so that no shim starts creating in it any more. Returns the held lock
    /// (keep it while the bundle is removed), or `None` when the shim did not go: the bundle is
    /// then left for the next start, and the failure recorded.
    pub(crate) fn settle_bundle(
        &self,
        dir: &Path,
        id: &str,
        errors: &mut ErrorList,
    ) -> Option<crate::shim::lock::Settle> {
        use crate::shim::lock::{try_settle, Settle};
        let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
        let mut waited = false;
        loop {
            match try_settle(dir) {
                Ok(settled @ Settle::Settled(_)) => {
                    if waited {
                        tracing::info!(id, "the last run's shim of a half-made bundle is gone");
                    }
                    // Whatever the shim created before it went.
                    errors.check("deleting the OCI container", self.oci.delete(id, true));
                    return Some(settled);
                }
                Ok(Settle::Held) if std::time::Instant::now() < deadline => {
                    if !waited {
                        tracing::info!(id, "a shim of the last run still holds a half-made bundle: stopping what it creates");
                        waited = true;
                    }
                    if matches!(self.oci.state(id), Ok(Some(_))) {
                        if let Err(e) = self.oci.delete(id, true) {
                            tracing::debug!(id, "deleting the half-made container: {e}");
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Ok(Settle::Held) => {
                    errors.check::<(), _>(
                        "settling a half-made bundle",
                        Err(format!(
                            "a shim still holds {} after {SETTLE_TIMEOUT:?}; left for the next start",
                            dir.display()
                        )),
                    );
                    return None;
                }
                Err(e) => {
                    errors.check::<(), _>(
                        "settling a half-made bundle",
                        Err(format!("locking {}: {e}", dir.display())),
                    );
                    return None;
                }
            }
        }
    }

    /// Removes a sandbox's or container's directory: first unmounts everything mounted at or
    /// below it (deepest first: a rootfs overlay, the pod's shm), then deletes it without
    /// descending into another filesystem. When something cannot be unmounted the directory
    /// stays whole: deleting across a mount would delete that filesystem's files (a
    /// container's writable layer, a volume bound below it).
    pub(crate) fn remove_state_dir(&self, dir: &Path) -> Result<(), String> {
        let mounts = self
            .host
            .mounts_under(dir)
            .map_err(|e| format!("leaving {} in place: {e}", dir.display()))?;
        let failed: Vec<String> = mounts
            .iter()
            .filter_map(|m| self.host.unmount(m).err().map(|e| e.to_string()))
            .collect();
        if !failed.is_empty() {
            return Err(format!(
                "leaving {} in place, something below it is still mounted: {}",
                dir.display(),
                failed.join("; ")
            ));
        }
        crate::fsutil::remove_dir_same_fs(dir)
            .map_err(|e| format!("removing {}: {e}", dir.display()))
    }
}

fn install_pause(rootfs: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    for d in ["proc", "dev", "sys", "etc"] {
        mkdir(&rootfs.join(d))?;
    }
    let target = rootfs.join("pause");
    if std::fs::read(&target).is_ok_and(|b| b == PAUSE_BINARY) {
        return Ok(());
    }
    crate::fsutil::write_atomic_mode(&target, PAUSE_BINARY, 0o755)
        .map_err(|e| RuntimeError::io("writing pause binary", &target, e))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| RuntimeError::io("making pause executable", &target, e))
}
