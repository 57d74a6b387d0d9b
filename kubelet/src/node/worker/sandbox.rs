//! The pod sandbox: find or create it (netns, CNI ADD, pause, managed /etc files), tear it down.

use super::*;

/// Finds (after a restart) the pod's ready sandbox, or creates one.
///
/// A new sandbox is returned at once, with its network (CNI ADD) being set up and its pause
/// container starting, both in the background (`state.pending`): containers can be created in
/// it meanwhile (they join the pinned namespaces), and [`finish_sandbox`] is awaited before
/// one is started, or created when its environment needs the pod IP.
pub(super) async fn ensure_sandbox(
    k: &Arc<Kubelet>,
    pod: &Pod,
    state: &mut WorkerState,
) -> Result<Sandbox, String> {
    // A sandbox left coming up by the last pass (which stopped before starting anything).
    finish_sandbox(k, pod, state).await?;
    let uid = uid_of(pod);
    let runtime = k.parts.runtime.clone();
    let known = state.record.sandbox_id.clone();
    let wanted = uid.clone();
    // The recorded sandbox is checked alone; the whole list only when there is no record
    // (a new pod, or one whose record was lost).
    let existing = blocking(move || match known.map(|id| runtime.sandbox(&id)) {
        Some(Ok(s)) => Some(s),
        _ => runtime
            .list_sandboxes()
            .into_iter()
            .find(|s| s.pod.uid == wanted),
    })
    .await;
    match existing {
        Some(s) if s.state == SandboxState::Ready && !state.record.network_pending => {
            if state.record.sandbox_id.as_deref() != Some(&s.id) {
                state.record.sandbox_id = Some(s.id.clone());
                save_record(k, &uid, &state.record);
            }
            return Ok(s);
        }
        Some(s) => {
            if s.state == SandboxState::Ready {
                tracing::warn!(sandbox = %s.id, "the pod's network was being set up when the agent stopped; recreating the sandbox and its containers");
            } else {
                tracing::warn!(sandbox = %s.id, "the pod's sandbox is not running; recreating it and its containers");
            }
            teardown_sandbox(k, pod, &s.id, Duration::from_secs(2)).await;
            state.record = PodRecord {
                start_time: state.record.start_time.take(),
                ..Default::default()
            };
        }
        None => {}
    }
    if state.record.start_time.is_none() {
        state.record.start_time = Some(k.parts.clock.now().to_string());
    }
    let config = SandboxConfig {
        pod: pod_info(pod),
        cgroup_parent: cgroup_parent(pod),
    };
    let runtime = k.parts.runtime.clone();
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
        pids_limit: k.config.pod_pids_limit,
    };
    let sandbox = blocking(move || runtime.create_sandbox_with(&config, &options))
        .await
        .map_err(|e| format!("Failed to create pod sandbox: {e}"))?;
    state.record.sandbox_id = Some(sandbox.id.clone());
    state.record.pod_ips = Vec::new();
    state.record.network_pending = !host_network(pod);
    save_record(k, &uid, &state.record);
    // The pause container and the network only share the pod's namespaces, which exist now:
    // both come up at once, while the first containers are created.
    let runtime = k.parts.runtime.clone();
    let id = sandbox.id.clone();
    let pause = tokio::task::spawn_blocking(move || runtime.start_sandbox(&id));
    let network = (!host_network(pod)).then(|| {
        let cni = k.parts.cni.clone();
        let attachment = attachment(pod, &sandbox);
        tokio::spawn(async move {
            cni.add(&attachment)
                .await
                .map(|r| r.pod_ips())
                .map_err(|e| e.to_string())
        })
    });
    state.pending = Some(Pending { pause, network });
    // The managed files exist before any container binds them; the pod IP is written into
    // /etc/hosts (in place, the same inode) once the network is up, before any start.
    if let Err(e) = write_pod_files(k, pod, &state.record) {
        let _ = finish_sandbox(k, pod, state).await;
        return Err(format!("writing the pod's /etc files: {e}"));
    }
    Ok(sandbox)
}

/// A new sandbox coming up: its pause container starting, its network being set up.
pub(super) struct Pending {
    pause: tokio::task::JoinHandle<Result<Sandbox, kubenode_runtime::RuntimeError>>,
    /// `None` for a host-network pod.
    network: Option<tokio::task::JoinHandle<Result<Vec<std::net::IpAddr>, String>>>,
}

/// Waits until the sandbox [`ensure_sandbox`] left coming up is up: the pod IPs recorded and
/// written into /etc/hosts, the pause container running. When either failed, the sandbox is
/// torn down with whatever was created in it, and the error returned (for a
/// `FailedCreatePodSandBox` event); the next pass makes a new sandbox.
pub(super) async fn finish_sandbox(
    k: &Arc<Kubelet>,
    pod: &Pod,
    state: &mut WorkerState,
) -> Result<(), String> {
    let Some(pending) = state.pending.take() else {
        return Ok(());
    };
    let network = match pending.network {
        None => Ok(None),
        Some(task) => match task.await {
            Ok(Ok(ips)) => Ok(Some(ips)),
            Ok(Err(e)) => Err(format!("setting up the pod network: {e}")),
            Err(e) => Err(format!("setting up the pod network: the task failed: {e}")),
        },
    };
    let pause = match pending.pause.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("starting the pause container: {e}")),
        Err(e) => Err(format!(
            "starting the pause container: the task failed: {e}"
        )),
    };
    let error = match (network, pause) {
        (Ok(ips), Ok(())) => {
            if let Some(ips) = ips {
                state.record.pod_ips = ips;
                state.record.network_pending = false;
                save_record(k, &uid_of(pod), &state.record);
            }
            match write_pod_files(k, pod, &state.record) {
                Ok(()) => return Ok(()),
                Err(e) => format!("writing the pod's /etc files: {e}"),
            }
        }
        (Err(e), _) | (_, Err(e)) => e,
    };
    if let Some(id) = state.record.sandbox_id.clone() {
        teardown_sandbox(k, pod, &id, Duration::ZERO).await;
    }
    state.record = PodRecord {
        start_time: state.record.start_time.take(),
        ..Default::default()
    };
    save_record(k, &uid_of(pod), &state.record);
    Err(format!("Failed to create pod sandbox: {error}"))
}

pub(super) fn attachment(pod: &Pod, sandbox: &Sandbox) -> Attachment {
    let info = pod_info(pod);
    Attachment {
        container_id: sandbox.id.clone(),
        netns_path: sandbox.netns_path.clone(),
        ifname: POD_IFNAME.into(),
        pod_namespace: info.namespace,
        pod_name: info.name,
        pod_uid: info.uid,
        capability_args: Default::default(),
    }
}

/// Writes the pod's managed /etc/hosts, /etc/resolv.conf and /etc/hostname. Each file is
/// rewritten in place (never replaced by a rename): containers bind the inode.
pub(super) fn write_pod_files(k: &Kubelet, pod: &Pod, record: &PodRecord) -> std::io::Result<()> {
    let dir = k.pods_dir().join(uid_of(pod));
    kubenode_fsutil::ensure_dir(&dir, super::POD_DIR_MODE)?;
    let dns: Vec<String> = k
        .config
        .cluster_dns
        .iter()
        .map(|ip| ip.to_string())
        .collect();
    let ips = if host_network(pod) {
        vec![k.config.node_ip]
    } else {
        record.pod_ips.clone()
    };
    std::fs::write(
        dir.join("etc-hosts"),
        files::hosts_file(pod, &ips, &k.config.cluster_domain),
    )?;
    std::fs::write(
        dir.join("resolv.conf"),
        files::resolv_conf(pod, &dns, &k.config.cluster_domain, &k.host_resolv),
    )?;
    std::fs::write(dir.join("hostname"), format!("{}\n", files::hostname(pod)))
}

/// Stops and removes a sandbox's containers, detaches its network, and removes it.
pub(super) async fn teardown_sandbox(
    k: &Arc<Kubelet>,
    pod: &Pod,
    sandbox_id: &str,
    grace: Duration,
) {
    stop_containers(k, pod, sandbox_id, grace).await;
    let runtime = k.parts.runtime.clone();
    let sid = sandbox_id.to_string();
    let instances = blocking(move || runtime.list_containers(Some(&sid))).await;
    for s in instances {
        let runtime = k.parts.runtime.clone();
        if let Err(e) = blocking(move || runtime.remove_container(&s.id)).await {
            tracing::warn!(error = %e, "removing a container");
        }
    }
    if !host_network(pod) {
        let runtime = k.parts.runtime.clone();
        let sid = sandbox_id.to_string();
        if let Ok(sandbox) = blocking(move || runtime.sandbox(&sid)).await {
            if let Err(e) = k.parts.cni.del(&attachment(pod, &sandbox)).await {
                tracing::warn!(error = %e, "CNI DEL");
            }
        }
    }
    let runtime = k.parts.runtime.clone();
    let sid = sandbox_id.to_string();
    if let Err(e) = blocking(move || runtime.stop_and_remove_sandbox(&sid)).await {
        tracing::warn!(error = %e, "removing the sandbox");
    }
}

/// Removes a recovered sandbox that no desired pod owns.
pub(in crate::node) async fn remove_orphan(k: Arc<Kubelet>, sandbox: Sandbox) {
    tracing::info!(sandbox = %sandbox.id, pod = %sandbox.pod.full_name(), "removing a pod that is no longer wanted");
    let mut pod = Pod::default();
    pod.metadata.name = Some(sandbox.pod.name.clone());
    pod.metadata.namespace = Some(sandbox.pod.namespace.clone());
    pod.metadata.uid = Some(sandbox.pod.uid.clone());
    teardown_sandbox(&k, &pod, &sandbox.id, MIN_GRACE_AFTER_HOOK).await;
    super::volumes::tear_down_volumes(&k, &sandbox.pod.uid).await;
}
