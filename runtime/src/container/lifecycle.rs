//! Creating, starting, stopping, removing and exec'ing into containers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{ErrorList, RuntimeError};
use crate::fsutil;
use crate::host::oom_files;
use crate::oci::OciStatus;
use crate::shim::ShimArgs;
use crate::signal::{KillScope, Signal};
use crate::spec::{self, BindMount, ContainerSpecInput, NamespaceMode};
use crate::store::{ContainerMeta, SandboxPhase, EXIT, META, PID};
use crate::Runtime;

use super::{wait_for_exit_record, ContainerConfig, ExecResult};

impl Runtime {
    fn save_container(&self, meta: &ContainerMeta) -> Result<(), RuntimeError> {
        let path = self.container_dir(&meta.id).join(META);
        fsutil::write_json(&path, meta)
            .map_err(|e| RuntimeError::io("writing container metadata", &path, e))?;
        self.state()
            .containers
            .insert(meta.id.clone(), meta.clone());
        Ok(())
    }

    /// The CRI log path: `<log-dir>/<ns>_<pod>_<uid>/<container>/<restartCount>.log`.
    pub fn log_path(&self, pod: &spec::PodInfo, container: &str, restart_count: u32) -> PathBuf {
        self.config
            .log_dir
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
            .join(container)
            .join(format!("{restart_count}.log"))
    }

    /// The container's writable layer: the overlay upper directory of container `id`, which
    /// holds whatever it wrote to its own filesystem (what its local ephemeral storage usage
    /// counts, with its logs).
    pub fn writable_layer(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("upper")
    }

    /// Creates a container in a ready sandbox: overlay rootfs over the image
    /// layers, `config.json`, and a shim that runs `runtime create`. Returns
    /// its id. Nothing is left behind when it fails.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let sandbox = self
            .state()
            .sandboxes
            .get(sandbox_id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "sandbox",
                id: sandbox_id.to_string(),
            })?;
        let pod = sandbox.pod.full_name();
        let name = config.container.name.clone();
        // With pinned namespaces a container can be created while pause still starts, unless
        // it joins pause's PID namespace, which exists once pause runs.
        let shares_pause_pid = sandbox.namespaces.pid == NamespaceMode::Pod;
        let joinable = sandbox.phase == SandboxPhase::Ready
            || (sandbox.phase == SandboxPhase::Created
                && sandbox.pins_namespaces()
                && !shares_pause_pid);
        if !joinable {
            return Err(RuntimeError::BadState {
                what: "create a container in it",
                pod,
                container: "POD".into(),
                state: if shares_pause_pid {
                    "not ready (its containers join the PID namespace of its pause container, \
                     which is not running)"
                        .into()
                } else {
                    "not ready".into()
                },
            });
        }
        let id = fsutil::random_id();
        let dir = self.container_dir(&id);
        let meta = ContainerMeta {
            id: id.clone(),
            sandbox_id: sandbox_id.to_string(),
            name: name.clone(),
            pod: sandbox.pod.clone(),
            restart_count: config.restart_count,
            image: config.image.name.clone(),
            layers: config.image.layers.clone(),
            log_path: self.log_path(&sandbox.pod, &name, config.restart_count),
            cgroups_path: format!("{}/{}", sandbox.cgroup_parent.trim_end_matches('/'), id),
            created_at: jiff::Timestamp::now(),
            complete: false,
            pid: 0,
            shim_pid: 0,
            started_at: None,
            start_error: None,
        };
        let result = fsutil::ensure_dir(&dir, fsutil::PRIVATE_DIR_MODE)
            .map_err(|e| RuntimeError::io("creating container directory", &dir, e))
            .and_then(|_| self.save_container(&meta))
            .and_then(|()| self.build_container(&meta, &sandbox, config));
        match result {
            Ok(meta) => {
                tracing::info!(container = %id, name = %name, pod = %pod, pid = meta.pid, "container created");
                Ok(id)
            }
            Err(e) => {
                let mut errors = ErrorList::new(format!("failed container {name} of pod {pod}"));
                // What the cleanup could not remove stays recorded: its pod's teardown retries.
                if self.remove_container_files(&meta, &mut errors) {
                    self.state().containers.remove(&id);
                }
                Err(e)
            }
        }
    }

    fn build_container(
        &self,
        meta: &ContainerMeta,
        sandbox: &crate::store::SandboxMeta,
        config: &ContainerConfig,
    ) -> Result<ContainerMeta, RuntimeError> {
        let pod = meta.pod.full_name();
        let dir = self.container_dir(&meta.id);
        let rootfs = dir.join("rootfs");
        self.host
            .mount_overlay(
                &config.image.layers,
                &self.writable_layer(&meta.id),
                &dir.join("work"),
                &rootfs,
            )
            .map_err(|source| RuntimeError::Host {
                what: "mounting the container rootfs",
                pod: pod.clone(),
                source,
            })?;
        let namespaces = self.container_namespaces(sandbox)?;
        // The pod's shared /dev/shm (the host's with hostIPC, as containerd), unless the
        // kubelet mounts its own.
        let mut mounts = config.mounts.clone();
        let host_shm = (sandbox.namespaces.ipc == NamespaceMode::Node)
            .then(|| PathBuf::from(crate::sandbox::HOST_DEV_SHM));
        if let Some(shm) = sandbox.shm_path.as_ref().or(host_shm.as_ref()) {
            if !mounts.iter().any(|m| m.container_path == "/dev/shm") {
                mounts.push(BindMount {
                    container_path: "/dev/shm".into(),
                    host_path: shm.clone(),
                    readonly: false,
                    propagation: Default::default(),
                });
            }
        }
        let privileged = config
            .container
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            == Some(true);
        let host_devices = if privileged {
            crate::host::host_devices()
        } else {
            Vec::new()
        };
        let image_config = config
            .image
            .config
            .as_ref()
            .and_then(|c| c.config().as_ref());
        let spec = spec::container_spec(&ContainerSpecInput {
            pod: &meta.pod,
            sandbox_id: &sandbox.id,
            container: &config.container,
            pod_security: config.pod_security.as_ref(),
            image: image_config,
            image_name: &config.image.name,
            rootfs: &rootfs,
            namespaces: &namespaces,
            cgroups_path: &meta.cgroups_path,
            mounts: &mounts,
            service_env: &config.service_env,
            resolved_env: &config.resolved_env,
            oom_score_adj: config.oom_score_adj,
            limits: &self.limits,
            host_devices: &host_devices,
            seccomp: &config.seccomp,
            apparmor: config.apparmor.as_deref(),
        })
        .map_err(|source| RuntimeError::Spec {
            pod: pod.clone(),
            container: meta.name.clone(),
            source,
        })?;
        let config_path = dir.join("config.json");
        fsutil::write_atomic(&config_path, &spec::to_config_json(&spec))
            .map_err(|e| RuntimeError::io("writing config.json", &config_path, e))?;
        if let Some(log_dir) = meta.log_path.parent() {
            std::fs::create_dir_all(log_dir)
                .map_err(|e| RuntimeError::io("creating log directory", log_dir, e))?;
        }
        let args = ShimArgs {
            id: meta.id.clone(),
            bundle: dir.clone(),
            runtime: self.config.runtime_path.clone(),
            runtime_root: self.config.runtime_root(),
            pid_file: dir.join(PID),
            exit_file: dir.join(EXIT),
            log_path: Some(meta.log_path.clone()),
            log_max_size: self.config.log_max_size,
            log_max_files: self.config.log_max_files,
            oom_files: oom_files(&self.config.cgroup_root, &meta.cgroups_path),
            oom_score_adj: spec.process().as_ref().and_then(|p| p.oom_score_adj()),
            stdin: config.container.stdin == Some(true),
            stdin_once: config.container.stdin_once == Some(true),
            tty: config.container.tty == Some(true),
        };
        let started = self
            .shims
            .launch(&args)
            .map_err(|message| RuntimeError::Create {
                pod: pod.clone(),
                container: meta.name.clone(),
                message,
            })?;
        let mut meta = meta.clone();
        meta.complete = true;
        meta.pid = started.container_pid;
        meta.shim_pid = started.shim_pid;
        self.save_container(&meta)?;
        Ok(meta)
    }

    /// Starts a created container. A failure is recorded (the status turns
    /// `Exited`/`StartError`) and returned.
    pub fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut meta = self.container_meta(id)?;
        match self.oci.start(id) {
            Ok(()) => {
                meta.started_at = Some(jiff::Timestamp::now());
                self.save_container(&meta)?;
                tracing::info!(container = %id, name = %meta.name, pod = %meta.pod.full_name(), "container started");
                Ok(())
            }
            Err(source) => {
                meta.start_error = Some(source.to_string());
                let _ = self.oci.delete(id, true);
                self.save_container(&meta)?;
                Err(RuntimeError::Start {
                    pod: meta.pod.full_name(),
                    container: meta.name,
                    source: Box::new(source),
                })
            }
        }
    }

    /// Stops a container: `signal` (default SIGTERM), then SIGKILL to all its
    /// processes when `grace` runs out; returns once its exit is recorded.
    pub fn stop_container(
        &self,
        id: &str,
        grace: Duration,
        signal: Option<Signal>,
    ) -> Result<(), RuntimeError> {
        let meta = self.container_meta(id)?;
        let exit = self.container_dir(id).join(EXIT);
        let oci_err = |what, source| RuntimeError::Oci {
            what,
            pod: meta.pod.full_name(),
            container: meta.name.clone(),
            source: Box::new(source),
        };
        if exit.exists() || meta.start_error.is_some() {
            return Ok(());
        }
        match self.oci.state(id).map_err(|e| oci_err("querying", e))? {
            None => return Ok(()),
            Some(s) if s.status == OciStatus::Stopped => {
                wait_for_exit_record(&exit, meta.shim_pid);
                return Ok(());
            }
            Some(s) if s.status == OciStatus::Created => {
                // A created init waits on the exec fifo and, as PID 1, ignores SIGTERM.
                self.oci
                    .delete(id, true)
                    .map_err(|e| oci_err("deleting", e))?;
                wait_for_exit_record(&exit, meta.shim_pid);
                return Ok(());
            }
            Some(_) => {}
        }
        if !grace.is_zero() {
            if let Err(e) = self
                .oci
                .kill(id, signal.unwrap_or(Signal::SIGTERM), KillScope::Init)
            {
                tracing::debug!(container = %id, "stop signal: {e}");
            }
            let deadline = Instant::now() + grace;
            let mut pause = Duration::from_millis(1);
            while !exit.exists() && Instant::now() < deadline {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            if exit.exists() {
                return Ok(());
            }
        }
        if let Err(e) = self.oci.kill(id, Signal::SIGKILL, KillScope::All) {
            if !matches!(self.oci.state(id), Ok(Some(s)) if s.status == OciStatus::Stopped)
                && !exit.exists()
            {
                return Err(oci_err("killing", e));
            }
        }
        wait_for_exit_record(&exit, meta.shim_pid);
        Ok(())
    }

    /// Removes a container (killing it if it still runs): OCI state, rootfs
    /// mount, cgroup and directory; its log files stay for `--previous`. After a failure the
    /// container stays recorded, so that a later removal (its pod's teardown, the garbage
    /// collection) tries again what is left: forgotten, a container the OCI runtime could not
    /// delete would run on unseen.
    pub fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let meta = self.container_meta(id)?;
        let mut errors = ErrorList::new(format!(
            "container {} of pod {}",
            meta.name,
            meta.pod.full_name()
        ));
        if self.remove_container_files(&meta, &mut errors) {
            self.state().containers.remove(id);
        }
        errors.into_result().map_err(RuntimeError::from)
    }

    /// Removes the OCI container, rootfs mount, cgroup and directory of a container; the
    /// directory (with the record) only when everything else went: whether it went. Every
    /// step is idempotent, so a retry picks up what a failed attempt left.
    pub(crate) fn remove_container_files(
        &self,
        meta: &ContainerMeta,
        errors: &mut ErrorList,
    ) -> bool {
        let before = errors.errors.len();
        let dir = self.container_dir(&meta.id);
        errors.check(
            "deleting the OCI container",
            self.oci.delete(&meta.id, true),
        );
        if meta.shim_pid > 0 {
            wait_for_exit_record(&dir.join(EXIT), meta.shim_pid);
        }
        errors.check(
            "unmounting the rootfs",
            self.host.unmount(&dir.join("rootfs")),
        );
        errors.check(
            "removing the container cgroup",
            self.host.remove_cgroup(&meta.cgroups_path),
        );
        if errors.errors.len() > before {
            return false;
        }
        errors
            .check(
                "removing the container directory",
                self.remove_state_dir(&dir),
            )
            .is_some()
    }

    /// Runs `cmd` in a running container, capturing stdout, stderr (at most
    /// [`crate::oci::MAX_OUTPUT`] each) and the exit code; the command is killed
    /// after `timeout` (`timed_out` set).
    pub fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        self.exec_capped(id, cmd, timeout, crate::oci::MAX_OUTPUT)
    }

    /// The runtime's command line that runs `cmd` in running container `id` with the caller's
    /// standard streams ([`crate::oci::OciRuntime::exec_command`]).
    pub fn exec_command(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
    ) -> Result<std::process::Command, RuntimeError> {
        let meta = self.container_meta(id)?;
        self.oci
            .exec_command(id, cmd, tty)
            .ok_or_else(|| RuntimeError::Oci {
                what: "exec in",
                pod: meta.pod.full_name(),
                container: meta.name.clone(),
                source: Box::new(crate::oci::OciError::Spawn {
                    command: format!("{} exec {id}", self.oci.name()),
                    source: std::io::Error::new(
                        std::io::ErrorKind::Unsupported,
                        "this runtime cannot run a command with streams",
                    ),
                }),
            })
    }

    /// [`Runtime::exec`] keeping at most `max_output` bytes of stdout and of stderr, read
    /// while the command runs (probes and hooks keep 10 KiB, as upstream's prober).
    pub fn exec_capped(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecResult, RuntimeError> {
        let meta = self.container_meta(id)?;
        self.oci
            .exec(id, cmd, timeout, max_output)
            .map_err(|source| RuntimeError::Oci {
                what: "exec in",
                pod: meta.pod.full_name(),
                container: meta.name.clone(),
                source: Box::new(source),
            })
    }
}
