//! The pod sandbox: find or create it (netns, CNI ADD, pause, managed /etc files), tear it down.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubenode_cni::Attachment;
use kubenode_runtime::spec::{PodNamespaces, SeccompProfile};
use kubenode_runtime::{Sandbox, SandboxConfig, SandboxOptions, SandboxState};

use super::outcome::{SandboxStartError, SyncError};
use super::{
    cgroup_parent, host_network, pod_info, uid_of, PodRecord, PodWorker, WorkerDeps,
    MIN_GRACE_AFTER_HOOK, POD_IFNAME,
};
use crate::node::files;

impl PodWorker {
    /// Finds (after a restart) the pod's ready sandbox, or creates one.
    ///
    /// A new sandbox is returned at once, with its network (CNI ADD) being set up and its pause
    /// container starting, both in the background (`state.pending`): containers can be created in
    /// it meanwhile (they join the pinned namespaces), and [`Self::finish_sandbox`] is awaited before
    /// one is started, or created when its environment needs the pod IP.
    pub(super) async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<Sandbox, SyncError> {
        // A sandbox left coming up by the last pass (which stopped before starting anything).
        self.finish_sandbox(pod).await?;
        let uid = uid_of(pod);
        let known = self.state.record.sandbox_id.clone();
        let wanted = uid.clone();
        // The recorded sandbox is checked alone; the whole list only when there is no record
        // (a new pod, or one whose record was lost).
        let existing = self
            .deps
            .runtime
            .run(move |rt| match known.map(|id| rt.sandbox(&id)) {
                Some(Ok(s)) => Some(s),
                _ => rt
                    .list_sandboxes()
                    .into_iter()
                    .find(|s| s.pod.uid == wanted),
            })
            .await;
        match existing {
            Some(s) if s.state == SandboxState::Ready && !self.state.record.network_pending => {
                if self.state.record.sandbox_id.as_deref() != Some(&s.id) {
                    self.state.record.sandbox_id = Some(s.id.clone());
                    self.save_record();
                }
                return Ok(s);
            }
            Some(s) => {
                if s.state == SandboxState::Ready {
                    tracing::warn!(sandbox = %s.id, "the pod's network was being set up when the agent stopped; recreating the sandbox and its containers");
                } else {
                    tracing::warn!(sandbox = %s.id, "the pod's sandbox is not running; recreating it and its containers");
                }
                self.deps
                    .teardown_sandbox(pod, &s.id, Duration::from_secs(2))
                    .await;
                self.state.record = PodRecord {
                    start_time: self.state.record.start_time.take(),
                    terminal: self.state.record.terminal.take(),
                    ..Default::default()
                };
            }
            None => {}
        }
        if self.state.record.start_time.is_none() {
            self.state.record.start_time = Some(self.deps.clock.now());
        }
        // Upstream updates the QoS cgroups before it makes a pod cgroup.
        self.deps.update_qos_cgroups().await;
        let config = SandboxConfig {
            pod: pod_info(pod),
            cgroup_parent: cgroup_parent(pod),
        };
        let options = SandboxOptions {
            host_network: host_network(pod),
            sysctls: pod
                .spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|c| c.sysctls.as_ref())
                .map(|l| {
                    l.iter()
                        .map(|s| (s.name.clone(), s.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            pids_limit: self.deps.config.pod_pids_limit,
            resources: pod
                .spec
                .as_ref()
                .map(super::pod_cgroup::pod_cgroup_resources)
                .unwrap_or_default(),
            namespaces: pod_namespaces(pod),
            // Upstream's kubelet always gives the sandbox the runtime's default profile.
            seccomp: SeccompProfile::RuntimeDefault,
            privileged: pod
                .spec
                .as_ref()
                .is_some_and(crate::security::seccomp::has_privileged_container),
        };
        let sandbox = self
            .deps
            .runtime
            .create_sandbox(config, options)
            .await
            .map_err(SyncError::CreateSandbox)?;
        self.state.record.sandbox_id = Some(sandbox.id.clone());
        self.state.record.pod_ips = Vec::new();
        self.state.record.network_pending = !host_network(pod);
        self.save_record();
        // The pause container and the network only share the pod's namespaces, which exist now:
        // both come up at once, while the first containers are created.
        let id = sandbox.id.clone();
        let pause = self.deps.runtime.spawn(move |rt| rt.start_sandbox(&id));
        let network = (!host_network(pod)).then(|| {
            let cni = self.deps.cni.clone();
            let attachment = attachment(pod, &sandbox);
            tokio::spawn(async move { cni.add(&attachment).await.map(|r| r.pod_ips()) })
        });
        self.state.pending = Some(Pending { pause, network });
        // The managed files exist before any container binds them; the pod IP is written into
        // /etc/hosts (in place, the same inode) once the network is up, before any start.
        if let Err(e) = self.deps.write_pod_files(pod, &self.state.record) {
            let _ = self.finish_sandbox(pod).await;
            return Err(SyncError::PodFiles(e));
        }
        Ok(sandbox)
    }

    /// Waits until the sandbox [`Self::ensure_sandbox`] left coming up is up: the pod IPs recorded and
    /// written into /etc/hosts, the pause container running. When either failed, the sandbox is
    /// torn down with whatever was created in it, and the error returned (for a
    /// `FailedCreatePodSandBox` event); the next pass makes a new sandbox.
    pub(super) async fn finish_sandbox(&mut self, pod: &Pod) -> Result<(), SyncError> {
        let Some(pending) = self.state.pending.take() else {
            return Ok(());
        };
        let network = match pending.network {
            None => Ok(None),
            Some(task) => match task.await {
                Ok(Ok(ips)) => Ok(Some(ips)),
                Ok(Err(e)) => Err(SandboxStartError::Network(e)),
                Err(e) => Err(SandboxStartError::NetworkTask(e)),
            },
        };
        let pause = match pending.pause.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SandboxStartError::Pause(e)),
            Err(e) => Err(SandboxStartError::PauseTask(e)),
        };
        let error = match (network, pause) {
            (Ok(ips), Ok(())) => {
                if let Some(ips) = ips {
                    self.state.record.pod_ips = ips;
                    self.state.record.network_pending = false;
                    self.save_record();
                }
                match self.deps.write_pod_files(pod, &self.state.record) {
                    Ok(()) => return Ok(()),
                    Err(e) => SandboxStartError::PodFiles(e),
                }
            }
            (Err(e), _) | (_, Err(e)) => e,
        };
        if let Some(id) = self.state.record.sandbox_id.clone() {
            self.deps.teardown_sandbox(pod, &id, Duration::ZERO).await;
        }
        self.state.record = PodRecord {
            start_time: self.state.record.start_time.take(),
            terminal: self.state.record.terminal.take(),
            ..Default::default()
        };
        self.save_record();
        Err(SyncError::SandboxStart(error))
    }
}

/// A new sandbox coming up: its pause container starting, its network being set up.
pub(super) struct Pending {
    pause: tokio::task::JoinHandle<Result<Sandbox, kubenode_runtime::RuntimeError>>,
    /// `None` for a host-network pod.
    network:
        Option<tokio::task::JoinHandle<Result<Vec<std::net::IpAddr>, kubenode_cni::ClientError>>>,
}

/// The pod's PID and IPC namespace modes, as upstream's `namespacesForPod` picks them.
pub(super) fn pod_namespaces(pod: &Pod) -> PodNamespaces {
    pod.spec.as_ref().map(PodNamespaces::of).unwrap_or_default()
}

/// The sandbox's CNI attachment, with the pod's host ports as the `portMappings` capability
/// (for ADD, and for DEL so that `portmap` removes its rules; a pod without a spec, such as an
/// orphan's stand-in, passes none and the client takes the ones ADD cached).
pub(super) fn attachment(pod: &Pod, sandbox: &Sandbox) -> Attachment {
    let info = pod_info(pod);
    Attachment {
        container_id: sandbox.id.clone(),
        netns_path: sandbox.netns_path.clone(),
        ifname: POD_IFNAME.into(),
        pod_namespace: info.namespace,
        pod_name: info.name,
        pod_uid: info.uid,
        capability_args: crate::node::hostports::capability_args(pod),
    }
}

impl WorkerDeps {
    /// Sets the QoS tiers' CPU shares from the active pods (upstream `UpdateQOSCgroups`: before
    /// a pod cgroup is made, and every minute). A failure is logged, as upstream does; the pod
    /// goes on.
    pub(in crate::node) async fn update_qos_cgroups(&self) {
        let tiers = {
            let active = self.pods.active_pods();
            super::pod_cgroup::qos_tiers(active.iter().filter_map(|p| p.spec.as_ref()))
        };
        for (path, resources) in tiers {
            if let Err(e) = self.runtime.set_cgroup_resources(path, resources).await {
                tracing::warn!(cgroup = path, error = %e, "updating the QoS cgroup");
            }
        }
    }

    /// Writes the pod's managed /etc/hosts, /etc/resolv.conf and /etc/hostname. Each file is
    /// rewritten in place (never replaced by a rename): containers bind the inode.
    pub(super) fn write_pod_files(&self, pod: &Pod, record: &PodRecord) -> std::io::Result<()> {
        let dir = self.pods_dir().join(uid_of(pod));
        kubenode_fsutil::ensure_dir(&dir, super::POD_DIR_MODE)?;
        let dns: Vec<String> = self
            .config
            .cluster_dns
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        let ips = if host_network(pod) {
            vec![self.config.node_ip]
        } else {
            record.pod_ips.clone()
        };
        std::fs::write(
            dir.join("etc-hosts"),
            files::hosts_file(pod, &ips, &self.config.cluster_domain),
        )?;
        std::fs::write(
            dir.join("resolv.conf"),
            files::resolv_conf(pod, &dns, &self.config.cluster_domain, &self.host_resolv),
        )?;
        std::fs::write(dir.join("hostname"), format!("{}\n", files::hostname(pod)))
    }

    /// Stops and removes a sandbox's containers, detaches its network, and removes it.
    pub(super) async fn teardown_sandbox(
        self: &Arc<Self>,
        pod: &Pod,
        sandbox_id: &str,
        grace: Duration,
    ) {
        self.stop_containers(pod, sandbox_id, grace).await;
        let instances = self.runtime.list_containers(Some(sandbox_id)).await;
        for s in instances {
            if let Err(e) = self.runtime.remove_container(&s.id).await {
                tracing::warn!(error = %e, "removing a container");
            }
        }
        if !host_network(pod) {
            if let Ok(sandbox) = self.runtime.sandbox(sandbox_id).await {
                if let Err(e) = self.cni.del(&attachment(pod, &sandbox)).await {
                    tracing::warn!(error = %e, "CNI DEL");
                }
            }
        }
        if let Err(e) = self.runtime.stop_and_remove_sandbox(sandbox_id).await {
            tracing::warn!(error = %e, "removing the sandbox");
        }
    }

    /// Removes a recovered sandbox that no desired pod owns.
    pub(in crate::node) async fn remove_orphan(self: Arc<Self>, sandbox: Sandbox) {
        tracing::info!(sandbox = %sandbox.id, pod = %sandbox.pod.full_name(), "removing a pod that is no longer wanted");
        let (name, namespace) = (&sandbox.pod.name, &sandbox.pod.namespace);
        // A static pod of the same name and namespace waits until this one is gone.
        self.pods.orphan_removing(name, namespace, &sandbox.id);
        self.teardown_sandbox(&pod_of(&sandbox), &sandbox.id, MIN_GRACE_AFTER_HOOK)
            .await;
        self.tear_down_volumes(&sandbox.pod.uid).await;
        self.pods.orphan_removed(name, namespace, &sandbox.id);
    }

    /// Removes an older sandbox of a pod that still exists, one that is not ready and holds no
    /// container (its teardown failed while the worker went on with a new one): its network
    /// and the sandbox go, the pod's volumes stay.
    pub(in crate::node) async fn remove_old_sandbox(self: Arc<Self>, sandbox: Sandbox) {
        tracing::info!(sandbox = %sandbox.id, pod = %sandbox.pod.full_name(), "container GC: removing an older sandbox of the pod");
        self.teardown_sandbox(&pod_of(&sandbox), &sandbox.id, MIN_GRACE_AFTER_HOOK)
            .await;
    }
}

/// The pod as far as a sandbox's record knows it (name, namespace, UID, host network): what a
/// teardown needs when the pod's manifest is not at hand.
fn pod_of(sandbox: &Sandbox) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(sandbox.pod.name.clone());
    pod.metadata.namespace = Some(sandbox.pod.namespace.clone());
    pod.metadata.uid = Some(sandbox.pod.uid.clone());
    if sandbox.host_network {
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
    }
    pod
}
