//! Pod sandboxes: the pod's network, IPC and UTS namespaces pinned on files under
//! `<run-dir>/{netns,ipcns,utsns}/`, then a pause container (the built-in static pause
//! program) in them, monitored by its own shim.
//!
//! The kubelet runs CNI after [`Runtime::create_sandbox`] (which returns the netns path),
//! and may create containers (not start them) while [`Runtime::start_sandbox`] starts pause:
//! they join the pinned namespaces, not the pause process's. Only with
//! `shareProcessNamespace` do they join a namespace of pause's own (its PID namespace), and
//! are then created once pause runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{ErrorList, RuntimeError};
use crate::fsutil;
use crate::host::{NamespaceFiles, PodCgroupResources};
use crate::shim::{ExitRecord, ShimArgs};
use crate::signal::{KillScope, Signal};
use crate::spec::{
    self, NamespaceMode, NamespacePaths, PidNamespace, PodInfo, PodNamespaces, SeccompProfile,
};
use crate::store::{SandboxMeta, SandboxPhase, EXIT, META, PID};
use crate::Runtime;

/// What the kubelet asks for when it makes a pod sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The pod.
    pub pod: PodInfo,
    /// The pod's cgroup (cgroupfs path, e.g. `/kubepods/besteffort/pod<uid>`);
    /// pause and every container get a child of it, and teardown removes it.
    pub cgroup_parent: String,
}

/// Less common sandbox settings, for [`Runtime::create_sandbox_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxOptions {
    /// `hostNetwork: true`: no netns, the host's network and UTS namespaces.
    pub host_network: bool,
    /// Namespaced sysctls from the pod's `securityContext.sysctls`.
    pub sysctls: BTreeMap<String, String>,
    /// The most pids the whole pod may have (`podPidsLimit`), set on the pod cgroup
    /// (`SandboxConfig::cgroup_parent`) before any of its processes exists; `None`: no limit.
    pub pids_limit: Option<u64>,
    /// The pod cgroup's CPU shares, CPU quota and memory limit (the kubelet computes them from
    /// the pod's containers), set before any of its processes exists.
    pub resources: PodCgroupResources,
    /// The pod's PID and IPC namespace modes (`hostPID`, `shareProcessNamespace`, `hostIPC`).
    pub namespaces: PodNamespaces,
    /// The pause container's seccomp profile (CRI's `linux.security_context.seccomp`, which
    /// the kubelet always sets to `RuntimeDefault`).
    pub seccomp: SeccompProfile,
    /// A container of the pod is privileged (CRI's `linux.security_context.privileged`): pause
    /// then runs without a filter, as containerd's sandbox.
    pub privileged: bool,
}

/// The host's `/dev/shm`, which a `hostIPC` pod binds instead of a tmpfs of its own.
pub(crate) const HOST_DEV_SHM: &str = "/dev/shm";

/// Whether a sandbox can run containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// The netns exists, pause is not running (not started yet, or it died).
    NotReady,
    /// The pause container runs.
    Ready,
}

/// A pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Sandbox id (also the pause container's OCI id).
    pub id: String,
    /// The pod.
    pub pod: PodInfo,
    /// The network namespace file, for CNI (empty for host-network pods).
    pub netns_path: PathBuf,
    /// The pod uses the host's network namespace.
    pub host_network: bool,
    /// Ready or not.
    pub state: SandboxState,
    /// When the sandbox was made (the container GC keeps a pod's newest).
    pub created_at: jiff::Timestamp,
}

impl Runtime {
    fn sandbox_meta(&self, id: &str) -> Result<SandboxMeta, RuntimeError> {
        self.state()
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "sandbox",
                id: id.to_string(),
            })
    }

    /// The IDs of the sandbox's containers.
    fn container_ids_of(&self, sandbox_id: &str) -> Vec<String> {
        self.state()
            .containers
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id.clone())
            .collect()
    }

    fn save_sandbox(&self, meta: &SandboxMeta) -> Result<(), RuntimeError> {
        let path = self.sandbox_dir(&meta.id).join(META);
        fsutil::write_json(&path, meta)
            .map_err(|e| RuntimeError::io("writing sandbox metadata", &path, e))?;
        self.state().sandboxes.insert(meta.id.clone(), meta.clone());
        Ok(())
    }

    fn sandbox_view(&self, meta: &SandboxMeta) -> Sandbox {
        // The pause process and its shim both alive answer without an OCI runtime call (see
        // `status_of`); otherwise the runtime's state decides.
        let ready = meta.phase == SandboxPhase::Ready
            && !self.sandbox_dir(&meta.id).join(EXIT).exists()
            && ((meta.pause_pid > 0
                && crate::container::process_alive(meta.pause_pid)
                && crate::container::process_alive(meta.shim_pid))
                || matches!(self.oci.state(&meta.id), Ok(Some(s)) if s.status == crate::oci::OciStatus::Running));
        self.sandbox_with_state(meta, ready)
    }

    fn sandbox_with_state(&self, meta: &SandboxMeta, ready: bool) -> Sandbox {
        Sandbox {
            id: meta.id.clone(),
            pod: meta.pod.clone(),
            netns_path: meta.netns_path.clone().unwrap_or_default(),
            host_network: meta.netns_path.is_none(),
            state: if ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: meta.created_at,
        }
    }

    /// Makes a sandbox's directory and network namespace; the kubelet then
    /// runs CNI ADD on `netns_path` and calls [`Runtime::start_sandbox`].
    /// Nothing is left behind on failure.
    pub fn create_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox, RuntimeError> {
        self.create_sandbox_with(config, &SandboxOptions::default())
    }

    /// [`Runtime::create_sandbox`] with [`SandboxOptions`] (host network, sysctls).
    pub fn create_sandbox_with(
        &self,
        config: &SandboxConfig,
        options: &SandboxOptions,
    ) -> Result<Sandbox, RuntimeError> {
        let host_ipc = options.namespaces.ipc == NamespaceMode::Node;
        if host_ipc {
            // containerd refuses a host-IPC sandbox when the host has no /dev/shm to share.
            let shm = Path::new(HOST_DEV_SHM);
            std::fs::metadata(shm).map_err(|e| RuntimeError::Host {
                what: "sharing the host's /dev/shm (hostIPC)",
                pod: config.pod.full_name(),
                source: crate::host::HostError::new("looking up", shm, e),
            })?;
        }
        let id = fsutil::random_id();
        let dir = self.sandbox_dir(&id);
        crate::fsutil::ensure_dir(&dir, crate::fsutil::PRIVATE_DIR_MODE)
            .map_err(|e| RuntimeError::io("creating sandbox directory", &dir, e))?;
        let pin = |kind: &str| {
            self.config
                .run_dir
                .join(kind)
                .join(format!("kn-{}", &id[..16]))
        };
        let mut meta = SandboxMeta {
            id: id.clone(),
            pod: config.pod.clone(),
            netns_path: (!options.host_network)
                .then(|| self.config.netns_dir().join(format!("kn-{}", &id[..16]))),
            // hostIPC: the host's IPC namespace and /dev/shm, nothing of the pod's own.
            ipc_path: (!host_ipc).then(|| pin("ipcns")),
            uts_path: (!options.host_network).then(|| pin("utsns")),
            shm_path: (!host_ipc).then(|| dir.join("shm")),
            sysctls: options.sysctls.clone(),
            namespaces: options.namespaces,
            seccomp: options.seccomp.clone(),
            privileged: options.privileged,
            cgroup_parent: config.cgroup_parent.clone(),
            phase: SandboxPhase::Creating,
            created_at: jiff::Timestamp::now(),
            pause_pid: 0,
            shim_pid: 0,
        };
        let result = self.save_sandbox(&meta).and_then(|()| {
            let pod = meta.pod.full_name();
            let host_err = |what| {
                let pod = pod.clone();
                move |source| RuntimeError::Host { what, pod, source }
            };
            let files = NamespaceFiles {
                net: meta.netns_path.as_deref(),
                ipc: meta.ipc_path.as_deref(),
                uts: meta
                    .uts_path
                    .as_deref()
                    .map(|p| (p, meta.pod.hostname.as_str())),
            };
            self.host
                .create_namespaces(&files)
                .map_err(host_err("creating the pod's namespaces"))?;
            if let Some(shm) = &meta.shm_path {
                self.host
                    .mount_shm(shm)
                    .map_err(host_err("mounting the pod's /dev/shm"))?;
            }
            // The kubelet's pod cgroup carries the pod's pids limit, CPU shares and quota and
            // memory limit (upstream's pod container manager); pause and every container are
            // created below it.
            if !meta.cgroup_parent.trim_matches('/').is_empty() {
                self.host
                    .set_pids_limit(&meta.cgroup_parent, options.pids_limit)
                    .map_err(host_err("setting the pod's pids limit"))?;
                if options.resources != PodCgroupResources::default() {
                    self.host
                        .set_pod_resources(&meta.cgroup_parent, &options.resources)
                        .map_err(host_err("setting the pod's cpu and memory limits"))?;
                }
            }
            meta.phase = SandboxPhase::Created;
            self.save_sandbox(&meta)
        });
        if let Err(e) = result {
            let mut errors =
                ErrorList::new(format!("failed sandbox of pod {}", meta.pod.full_name()));
            // What the cleanup could not remove stays recorded (not ready): the kubelet's
            // next teardown of it retries.
            if self.remove_sandbox_files(&meta, &mut errors) {
                self.state().sandboxes.remove(&id);
            } else {
                tracing::warn!(sandbox = %id, "the failed sandbox is kept, not ready, to retry its removal");
            }
            return Err(e);
        }
        tracing::info!(sandbox = %id, pod = %meta.pod.full_name(), netns = ?meta.netns_path, "sandbox created");
        Ok(self.sandbox_with_state(&meta, false))
    }

    /// Creates the cgroup `cgroups_path` (a QoS tier, `/kubepods/burstable`) with `resources`:
    /// the kubelet's QoS cgroups, which hold the pod cgroups of their class.
    pub fn set_cgroup_resources(
        &self,
        cgroups_path: &str,
        resources: &PodCgroupResources,
    ) -> Result<(), crate::host::HostError> {
        self.host.set_pod_resources(cgroups_path, resources)
    }

    /// Starts the pause container in the sandbox's network namespace.
    pub fn start_sandbox(&self, id: &str) -> Result<Sandbox, RuntimeError> {
        let mut meta = self.sandbox_meta(id)?;
        let pod = meta.pod.full_name();
        let create_err = |message: String| RuntimeError::Create {
            pod: pod.clone(),
            container: "POD".into(),
            message,
        };
        if meta.phase == SandboxPhase::Ready {
            return Ok(self.sandbox_view(&meta));
        }
        if meta.phase == SandboxPhase::Removing {
            return Err(create_err("the sandbox is being removed".into()));
        }
        let dir = self.sandbox_dir(id);
        let cgroups_path = format!("{}/{}", meta.cgroup_parent.trim_end_matches('/'), id);
        let spec = spec::pause_spec(&spec::PauseSpecInput {
            pod: &meta.pod,
            rootfs: &self.config.pause_rootfs(),
            netns: meta.netns_path.as_deref(),
            ipc: meta.ipc_path.as_deref(),
            uts: meta.uts_path.as_deref(),
            shm: meta.shm_path.as_deref().or_else(|| {
                (meta.namespaces.ipc == NamespaceMode::Node).then_some(Path::new(HOST_DEV_SHM))
            }),
            cgroups_path: &cgroups_path,
            sysctls: &meta.sysctls,
            namespaces: meta.namespaces,
            seccomp: &meta.seccomp,
            privileged: meta.privileged,
            limits: &self.limits,
        })
        .map_err(|e| create_err(e.to_string()))?;
        let config_path = dir.join("config.json");
        fsutil::write_atomic(&config_path, &spec::to_config_json(&spec))
            .map_err(|e| RuntimeError::io("writing pause config.json", &config_path, e))?;
        let args = ShimArgs {
            id: id.to_string(),
            bundle: dir.clone(),
            runtime: self.config.runtime_path.clone(),
            runtime_root: self.config.runtime_root(),
            pid_file: dir.join(PID),
            exit_file: dir.join(EXIT),
            log_path: None,
            log_max_size: self.config.log_max_size,
            log_max_files: self.config.log_max_files,
            oom_files: Vec::new(),
            oom_score_adj: spec.process().as_ref().and_then(|p| p.oom_score_adj()),
            stdin: false,
            stdin_once: false,
            tty: false,
        };
        let started = self.shims.launch(&args).map_err(create_err)?;
        if let Err(source) = self.oci.start(id) {
            let _ = self.oci.delete(id, true);
            return Err(RuntimeError::Start {
                pod,
                container: "POD".into(),
                source: Box::new(source),
            });
        }
        meta.phase = SandboxPhase::Ready;
        meta.pause_pid = started.container_pid;
        meta.shim_pid = started.shim_pid;
        self.save_sandbox(&meta)?;
        tracing::info!(sandbox = %id, pod = %pod, pid = started.container_pid, "sandbox ready");
        Ok(self.sandbox_with_state(&meta, true))
    }

    /// The sandbox as it is now.
    pub fn sandbox(&self, id: &str) -> Result<Sandbox, RuntimeError> {
        let meta = self.sandbox_meta(id)?;
        Ok(self.sandbox_view(&meta))
    }

    /// Every known sandbox.
    pub fn list_sandboxes(&self) -> Vec<Sandbox> {
        let metas: Vec<SandboxMeta> = self.state().sandboxes.values().cloned().collect();
        metas.iter().map(|m| self.sandbox_view(m)).collect()
    }

    /// Stops every container of the sandbox (each with `grace`, see
    /// [`Runtime::stop_container`]) and then the pause container, keeping all
    /// records, the netns and the logs: CRI `StopPodSandbox`. The sandbox is
    /// `NotReady` afterwards; continue past failures and report all of them.
    pub fn stop_sandbox(&self, id: &str, grace: std::time::Duration) -> Result<(), RuntimeError> {
        let meta = self.sandbox_meta(id)?;
        let mut errors = ErrorList::new(format!(
            "stopping sandbox {} of pod {}",
            id,
            meta.pod.full_name()
        ));
        let containers = self.container_ids_of(id);
        for cid in containers {
            errors.check(
                &format!("stopping container {cid}"),
                self.stop_container(&cid, grace, None),
            );
        }
        let exit = self.sandbox_dir(id).join(EXIT);
        if meta.phase == SandboxPhase::Ready && !exit.exists() {
            // pause exits 0 on SIGTERM at once; SIGKILL covers a stuck one.
            if self.oci.kill(id, Signal::SIGTERM, KillScope::Init).is_ok()
                && !crate::container::wait_for_exit_record(&exit, meta.shim_pid)
            {
                errors.check(
                    "killing the pause container",
                    self.oci.kill(id, Signal::SIGKILL, KillScope::All),
                );
                crate::container::wait_for_exit_record(&exit, meta.shim_pid);
            }
        }
        errors.into_result().map_err(RuntimeError::from)
    }

    /// Stops and removes every container of the sandbox, the pause container,
    /// the network namespace, the pod cgroup and all state, continuing past
    /// failures and reporting all of them. The kubelet runs CNI DEL before.
    ///
    /// After a failure the sandbox stays (its record and directory, not ready), so that a
    /// later teardown (the kubelet's garbage collection of sandboxes of gone pods) tries
    /// again what is left, as CRI's `RemovePodSandbox` leaves a sandbox it could not remove:
    /// forgotten, a container, mount or cgroup it still held would outlive it for good.
    pub fn stop_and_remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut meta = self.sandbox_meta(id)?;
        let mut errors = ErrorList::new(format!("sandbox {} of pod {}", id, meta.pod.full_name()));
        if meta.phase != SandboxPhase::Removing {
            meta.phase = SandboxPhase::Removing;
            errors.check("recording the removal", self.save_sandbox(&meta));
        }
        let containers = self.container_ids_of(id);
        for cid in containers {
            errors.check(
                &format!("removing container {cid}"),
                self.remove_container(&cid),
            );
        }
        if self.remove_sandbox_files(&meta, &mut errors) {
            self.state().sandboxes.remove(id);
            tracing::info!(sandbox = %id, pod = %meta.pod.full_name(), "sandbox removed");
        }
        errors.into_result().map_err(RuntimeError::from)
    }

    /// Removes the pause container, netns, cgroup and directory of a sandbox. The directory
    /// (with the record) goes only when everything else did, and no error is in `errors`
    /// already (a container of the sandbox that could not be removed): whether it went.
    /// Every step is idempotent, so a retry picks up what a failed attempt left. The pod
    /// cgroup stays while another sandbox of the pod (one kept after a failed teardown, or
    /// its replacement) still lives in it.
    pub(crate) fn remove_sandbox_files(&self, meta: &SandboxMeta, errors: &mut ErrorList) -> bool {
        let dir = self.sandbox_dir(&meta.id);
        errors.check(
            "deleting the pause container",
            self.oci.delete(&meta.id, true),
        );
        crate::container::wait_for_exit_record(&dir.join(EXIT), meta.shim_pid);
        let pins = [
            ("removing the network namespace", &meta.netns_path),
            ("removing the IPC namespace", &meta.ipc_path),
            ("removing the UTS namespace", &meta.uts_path),
        ];
        for (what, path) in pins {
            if let Some(path) = path {
                errors.check(what, self.host.remove_namespace(path));
            }
        }
        if let Some(shm) = &meta.shm_path {
            errors.check("unmounting the pod's /dev/shm", self.host.unmount(shm));
        }
        let shared = self
            .state()
            .sandboxes
            .values()
            .any(|s| s.id != meta.id && s.cgroup_parent == meta.cgroup_parent);
        if !meta.cgroup_parent.trim_matches('/').is_empty() && !shared {
            errors.check(
                "removing the pod cgroup",
                self.host.remove_cgroup(&meta.cgroup_parent),
            );
        }
        if !errors.errors.is_empty() {
            return false;
        }
        errors
            .check(
                "removing the sandbox directory",
                self.remove_state_dir(&dir),
            )
            .is_some()
    }

    /// The namespaces a container of `meta` joins: the pinned ones, or, in a sandbox made
    /// before namespaces were pinned, the pause process's `/proc/<pid>/ns/*` once that pid is
    /// checked to still be this sandbox's pause (see [`verify_pause`]): a pid reused by
    /// another process would otherwise put the container into a stranger's namespaces. The
    /// PID namespace is its own, the host's (`hostPID`), or pause's, joined the same checked
    /// way (`shareProcessNamespace`: a PID namespace ends with its PID 1, so it is not pinned).
    pub(crate) fn container_namespaces(
        &self,
        meta: &SandboxMeta,
    ) -> Result<NamespacePaths, RuntimeError> {
        let pid = match meta.namespaces.pid {
            NamespaceMode::Container => PidNamespace::Own,
            NamespaceMode::Node => PidNamespace::Host,
            NamespaceMode::Pod => PidNamespace::Join(self.pause_namespaces(meta)?.join("pid")),
        };
        if meta.pins_namespaces() {
            return Ok(NamespacePaths {
                net: meta.netns_path.clone(),
                ipc: meta.ipc_path.clone(),
                uts: meta.uts_path.clone(),
                pid,
            });
        }
        let pause = self.pause_namespaces(meta)?;
        Ok(NamespacePaths {
            net: meta.netns_path.clone(),
            ipc: Some(pause.join("ipc")),
            uts: Some(pause.join("uts")),
            pid,
        })
    }

    /// `/proc/<pause>/ns` of the sandbox, once the recorded pid is checked to be its pause.
    fn pause_namespaces(&self, meta: &SandboxMeta) -> Result<PathBuf, RuntimeError> {
        verify_pause(&self.config.proc_root, meta.pause_pid, &meta.id).map_err(|why| {
            RuntimeError::BadState {
                what: "create a container in it",
                pod: meta.pod.full_name(),
                container: "POD".into(),
                state: format!(
                    "pause process {} is not this sandbox's: {why}",
                    meta.pause_pid
                ),
            }
        })?;
        Ok(self
            .config
            .proc_root
            .join(meta.pause_pid.to_string())
            .join("ns"))
    }

    /// How the pause container ended, if it did.
    pub fn sandbox_exit(&self, id: &str) -> Option<ExitRecord> {
        ExitRecord::read(&self.sandbox_dir(id).join(EXIT))
    }
}

/// The start time (clock ticks after boot, field 22 of `stat`) of process `pid`.
fn start_time(proc_root: &Path, pid: i32) -> Result<u64, String> {
    let path = proc_root.join(pid.to_string()).join("stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("{}: no start time", path.display()))
}

/// Checks that `pid` is the pause process of sandbox `id`: it runs the built-in `/pause`
/// and sits in the sandbox's own cgroup (`<pod cgroup>/<id>`, which only the pause container
/// uses), and its start time did not change while this was read (a pid that died and was
/// reused in between would have another one).
pub(crate) fn verify_pause(proc_root: &Path, pid: i32, id: &str) -> Result<(), String> {
    if pid <= 0 {
        return Err("no pause pid recorded".into());
    }
    let dir = proc_root.join(pid.to_string());
    let before = start_time(proc_root, pid)?;
    let cmdline = std::fs::read(dir.join("cmdline")).map_err(|e| format!("cmdline: {e}"))?;
    if cmdline != b"/pause\0" {
        return Err(format!(
            "it runs {:?}, not /pause",
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim_end()
        ));
    }
    let cgroup = std::fs::read_to_string(dir.join("cgroup")).map_err(|e| format!("cgroup: {e}"))?;
    let suffix = format!("/{id}");
    if !cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|p| p.ends_with(&suffix))
    {
        return Err("it is not in the sandbox's cgroup".into());
    }
    if start_time(proc_root, pid)? != before {
        return Err("it was replaced while being checked".into());
    }
    Ok(())
}

/// A fake `/proc/<pid>` with the given command line, cgroup file and start time.
#[cfg(test)]
pub(crate) fn fake_process(root: &Path, pid: i32, cmdline: &[u8], cgroup: &str, start: u64) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    std::fs::write(dir.join("cgroup"), cgroup).unwrap();
    let stat = format!(
        "{pid} (pa use) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {start} 1 2\n"
    );
    std::fs::write(dir.join("stat"), stat).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_sandboxs_pause_passes() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let cg = "12:pids:/kubepods/besteffort/podu1/sb1\n0::/kubepods/besteffort/podu1/sb1\n";
        fake_process(r, 10, b"/pause\0", cg, 777);
        assert_eq!(verify_pause(r, 10, "sb1"), Ok(()));
        assert_eq!(start_time(r, 10), Ok(777));
        // Another sandbox's pause.
        assert!(verify_pause(r, 10, "sb2").unwrap_err().contains("cgroup"));
        // The pid reused by some other program.
        fake_process(r, 11, b"sleep\x00100\x00", cg, 778);
        let e = verify_pause(r, 11, "sb1").unwrap_err();
        assert!(e.contains("\"sleep 100\""), "{e}");
        // Gone.
        assert!(verify_pause(r, 12, "sb1").is_err());
        assert!(verify_pause(r, 0, "sb1").is_err());
    }
}
