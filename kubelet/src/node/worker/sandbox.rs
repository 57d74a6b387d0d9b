//! The pod sandbox: find or create it (netns, CNI ADD, pause, managed /etc files), tear it down.

use super::*;

/// Finds (after a restart), or creates, the pod's ready sandbox.
pub(super) async fn ensure_sandbox(
    k: &Arc<Kubelet>,
    pod: &Pod,
    state: &mut WorkerState,
) -> Result<Sandbox, String> {
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
        Some(s) if s.state == SandboxState::Ready => {
            if state.record.sandbox_id.as_deref() != Some(&s.id) {
                state.record.sandbox_id = Some(s.id.clone());
                save_record(k, &uid, &state.record);
            }
            return Ok(s);
        }
        Some(s) => {
            tracing::warn!(sandbox = %s.id, "the pod's sandbox is not running; recreating it and its containers");
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
    };
    let sandbox = blocking(move || runtime.create_sandbox_with(&config, &options))
        .await
        .map_err(|e| format!("Failed to create pod sandbox: {e}"))?;
    let mut pod_ips = Vec::new();
    if !host_network(pod) {
        match k.parts.cni.add(&attachment(pod, &sandbox)).await {
            Ok(result) => pod_ips = result.pod_ips().iter().map(|ip| ip.to_string()).collect(),
            Err(e) => {
                teardown_sandbox(k, pod, &sandbox.id, Duration::ZERO).await;
                return Err(format!(
                    "Failed to create pod sandbox: setting up the pod network: {e}"
                ));
            }
        }
    }
    let runtime = k.parts.runtime.clone();
    let id = sandbox.id.clone();
    let started = blocking(move || runtime.start_sandbox(&id)).await;
    let sandbox = match started {
        Ok(s) => s,
        Err(e) => {
            teardown_sandbox(k, pod, &sandbox.id, Duration::ZERO).await;
            return Err(format!(
                "Failed to create pod sandbox: starting the pause container: {e}"
            ));
        }
    };
    state.record.sandbox_id = Some(sandbox.id.clone());
    state.record.pod_ips = pod_ips;
    save_record(k, &uid_of(pod), &state.record);
    write_pod_files(k, pod, &state.record)
        .map_err(|e| format!("writing the pod's /etc files: {e}"))?;
    Ok(sandbox)
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

pub(super) fn write_pod_files(k: &Kubelet, pod: &Pod, record: &PodRecord) -> std::io::Result<()> {
    let dir = k.pods_dir().join(uid_of(pod));
    std::fs::create_dir_all(&dir)?;
    let dns: Vec<String> = k
        .config
        .cluster_dns
        .iter()
        .map(|ip| ip.to_string())
        .collect();
    let ips = if host_network(pod) {
        vec![k.config.node_ip.to_string()]
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
