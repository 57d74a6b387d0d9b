//! Starting one container: image pull (policy, back-off, events), create, start.

use super::*;

/// Pulls, creates and starts one container. Returns a shorter requeue when blocked, or the
/// sandbox error when the pause container, awaited before the start, failed (the sandbox and
/// the container are then gone).
pub(super) async fn start_container(
    k: &Arc<Kubelet>,
    pod: &Pod,
    sandbox: &Sandbox,
    state: &mut WorkerState,
    start: &Start,
) -> Result<Option<Duration>, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(container) = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == start.name)
        .cloned()
    else {
        return Ok(None);
    };
    let obj = ObjectRef::container(pod, &container.name);
    let image_name = container.image.clone().unwrap_or_default();
    let image = match pull(k, pod, &container, state).await {
        Ok(i) => i,
        Err(wait) => return Ok(Some(wait)),
    };
    state
        .image_ids
        .insert(image_name.clone(), image.manifest_digest.clone());

    let pods_dir = k.pods_dir().join(uid_of(pod));
    let term_log = termination_log(&pods_dir, &container.name, start.restart_count);
    if let Err(e) = term_log
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|()| std::fs::write(&term_log, b""))
        // Any user the container runs as may write its message (upstream makes it 0666 too).
        .and_then(|()| {
            std::fs::set_permissions(
                &term_log,
                std::os::unix::fs::PermissionsExt::from_mode(0o666),
            )
        })
    {
        tracing::warn!(error = %e, "creating the termination log");
    }
    let mut mounts = vec![
        BindMount {
            container_path: "/etc/hosts".into(),
            host_path: pods_dir.join("etc-hosts"),
            readonly: false,
            propagation: Default::default(),
        },
        BindMount {
            container_path: "/etc/resolv.conf".into(),
            host_path: pods_dir.join("resolv.conf"),
            readonly: false,
            propagation: Default::default(),
        },
        BindMount {
            container_path: "/etc/hostname".into(),
            host_path: pods_dir.join("hostname"),
            readonly: false,
            propagation: Default::default(),
        },
    ];
    let term_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    mounts.push(BindMount {
        container_path: term_path,
        host_path: term_log,
        readonly: false,
        propagation: Default::default(),
    });
    match super::volumes::container_mounts(k, pod, &container).await {
        Ok(volume_mounts) => mounts.extend(volume_mounts),
        Err(message) => {
            return Ok(create_failed(
                k,
                &obj,
                state,
                &container.name,
                reason::CREATE_CONTAINER_CONFIG_ERROR,
                message,
            ));
        }
    }
    if observe::needs_pod_ip(&container) {
        // The environment names the pod IP: the network has to be up before the create.
        super::finish_sandbox(k, pod, state).await?;
    }
    let pod_ip = state.record.pod_ips.first().cloned();
    let config = ContainerConfig {
        resolved_env: observe::field_ref_env(
            pod,
            &container,
            pod_ip.as_deref(),
            &k.config.node_ip.to_string(),
        ),
        container: container.clone(),
        pod_security: spec.security_context.clone(),
        image: ImageRef {
            name: image_name,
            layers: image.layers.clone(),
            config: Some(image.config.clone()),
        },
        restart_count: start.restart_count,
        mounts,
        service_env: k.service_env(pod),
        oom_score_adj: None,
    };
    let runtime = k.parts.runtime.clone();
    let sid = sandbox.id.clone();
    let created = blocking(move || runtime.create_container(&sid, &config)).await;
    let id = match created {
        Ok(id) => id,
        Err(e) => {
            return Ok(create_failed(
                k,
                &obj,
                state,
                &container.name,
                reason::CREATE_CONTAINER_ERROR,
                e.to_string(),
            ));
        }
    };
    k.events.normal(
        &obj,
        "Created",
        format!("Created container: {}", container.name),
    );
    // A new sandbox may still be coming up: containers run only in a sandbox with its
    // network and pause container up.
    super::finish_sandbox(k, pod, state).await?;
    let runtime = k.parts.runtime.clone();
    let started = {
        let id = id.clone();
        blocking(move || runtime.start_container(&id)).await
    };
    match started {
        Ok(()) => {
            state.blocked.remove(&container.name);
            k.events.normal(
                &obj,
                "Started",
                format!("Started container {}", container.name),
            );
            Ok(None)
        }
        Err(e) => {
            // The runtime records the instance as exited (StartError, 128): the back-off and
            // the status take it from there.
            state.blocked.remove(&container.name);
            k.events.warning(&obj, "Failed", format!("Error: {e}"));
            Ok(None)
        }
    }
}

/// A container that could not be created: a `Failed` event, and the container waits with
/// `reason` for [`CREATE_RETRY`].
fn create_failed(
    k: &Kubelet,
    obj: &ObjectRef,
    state: &mut WorkerState,
    name: &str,
    reason: &str,
    message: String,
) -> Option<Duration> {
    k.events.warning(obj, "Failed", format!("Error: {message}"));
    state.blocked.insert(
        name.to_string(),
        Blocked {
            reason: reason.into(),
            message,
            retry_at: Some(Instant::now() + CREATE_RETRY),
        },
    );
    Some(CREATE_RETRY)
}

/// Ensures the container's image per its pull policy, with pull back-off and events.
pub(super) async fn pull(
    k: &Arc<Kubelet>,
    pod: &Pod,
    container: &Container,
    state: &mut WorkerState,
) -> Result<Image, Duration> {
    let obj = ObjectRef::container(pod, &container.name);
    let image = container.image.clone().unwrap_or_default();
    let key = image_backoff_key(&uid_of(pod), &image);
    if let Some(wait) = k
        .image_backoff
        .lock()
        .expect("image backoff lock")
        .wait(&key)
    {
        let message = image_pull_backoff_message(&image);
        k.events.normal(&obj, "BackOff", message.clone());
        state.blocked.insert(
            container.name.clone(),
            Blocked {
                reason: reason::IMAGE_PULL_BACK_OFF.into(),
                message,
                retry_at: None,
            },
        );
        return Err(wait.max(Duration::from_millis(100)));
    }
    let policy = match PullPolicy::resolve(container.image_pull_policy.as_deref(), &image) {
        Some(p) => p,
        None => {
            let message = format!("unknown imagePullPolicy {:?}", container.image_pull_policy);
            state.blocked.insert(
                container.name.clone(),
                Blocked {
                    reason: reason::CREATE_CONTAINER_CONFIG_ERROR.into(),
                    message,
                    retry_at: Some(Instant::now() + CREATE_RETRY),
                },
            );
            return Err(CREATE_RETRY);
        }
    };
    let present = matches!(k.parts.images.get(&image), Ok(Some(_)));
    if policy == PullPolicy::Always || !present {
        k.events
            .normal(&obj, "Pulling", format!("Pulling image \"{image}\""));
    }
    let started = Instant::now();
    match k.parts.images.ensure(&image, policy, &k.parts.pull).await {
        Ok(img) => {
            k.image_backoff
                .lock()
                .expect("image backoff lock")
                .forget(&key);
            if policy == PullPolicy::Always || !present {
                let took = started.elapsed().as_secs_f64();
                k.events.normal(
                    &obj,
                    "Pulled",
                    format!("Successfully pulled image \"{image}\" in {took:.3}s. Image size: {} bytes.", img.size),
                );
            } else {
                k.events.normal(
                    &obj,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
            }
            Ok(img)
        }
        Err(e) => {
            let reason = e.kubelet_reason().to_string();
            let message = e.to_string();
            k.events.warning(
                &obj,
                "Failed",
                format!("Failed to pull image \"{image}\": {message}"),
            );
            k.events.warning(&obj, "Failed", format!("Error: {reason}"));
            k.image_backoff
                .lock()
                .expect("image backoff lock")
                .failed(&key);
            state.blocked.insert(
                container.name.clone(),
                Blocked {
                    reason,
                    message,
                    retry_at: None,
                },
            );
            Err(RESYNC)
        }
    }
}
