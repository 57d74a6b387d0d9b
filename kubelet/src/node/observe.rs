//! From what the runtime reports to what the status shows, and the values of `valueFrom.fieldRef`
//! environment variables.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};
use kubenode_runtime::{ContainerState, ContainerStatus};

use super::actions::group;
use crate::status::{
    api_time, reason, terminated_reason, ObservedContainer, ObservedState, Terminated,
};

/// A container the kubelet could not (re)start, and why: shown as its waiting state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// A waiting reason (`ErrImagePull`, `CrashLoopBackOff`, `CreateContainerError`, ...).
    pub reason: String,
    /// The detail.
    pub message: String,
    /// Not retried before this instant (`None`: the next pass may retry).
    pub retry_at: Option<std::time::Instant>,
    /// What holds it, where the worker has to know beyond the shown reason.
    pub cause: BlockCause,
}

/// What holds a [`Blocked`] container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCause {
    /// A volume of the pod, or one the container mounts, could not be set up: cleared as soon
    /// as the pod's volumes are set up.
    VolumeSetUp,
    /// Anything else (back-off, image, create and config errors): cleared by a start.
    Other,
}

fn terminated(s: &ContainerStatus, message: Option<String>) -> Terminated {
    let code = s.exit_code.unwrap_or(0);
    let reason = s
        .reason
        .clone()
        .unwrap_or_else(|| terminated_reason(code, false, false).to_string());
    Terminated {
        exit_code: code,
        signal: None,
        reason,
        message: message.or_else(|| s.message.clone()),
        started_at: s.started_at.map(api_time),
        finished_at: s.finished_at.map(api_time),
        container_id: Some(container_id(&s.id)),
    }
}

/// `kubenode://<id>`: the runtime-qualified container ID shown in statuses.
pub fn container_id(id: &str) -> String {
    format!("kubenode://{id}")
}

/// Builds the observed containers of a pod. `blocked` are containers whose next start is held
/// (back-off, image or create errors); `image_ids` maps image names to their IDs;
/// `termination_message` reads an instance's termination message; `probes` gives a running
/// instance's `(ready, started)` from the prober.
pub fn observe_containers(
    containers: &[&Container],
    instances: &[ContainerStatus],
    blocked: &HashMap<String, Blocked>,
    image_ids: &HashMap<String, String>,
    termination_message: impl Fn(&ContainerStatus) -> Option<String>,
    probes: impl Fn(&Container, &ContainerStatus) -> (bool, Option<bool>),
) -> Vec<ObservedContainer> {
    let groups = group(instances);
    let mut out = Vec::new();
    for c in containers {
        let g = groups.get(c.name.as_str());
        let current = g.and_then(|g| g.current());
        let previous = g.and_then(|g| g.previous());
        let block = blocked.get(&c.name);
        if current.is_none() && block.is_none() {
            continue; // not created yet: the status code shows ContainerCreating/PodInitializing
        }
        let image = c.image.clone().unwrap_or_default();
        let state = match (current, block) {
            (_, Some(b)) if current.is_none_or(|s| s.state != ContainerState::Running) => {
                ObservedState::Waiting {
                    reason: b.reason.clone(),
                    message: Some(b.message.clone()),
                }
            }
            (Some(s), _) => match s.state {
                ContainerState::Running => ObservedState::Running {
                    started_at: s
                        .started_at
                        .map_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH, api_time),
                },
                ContainerState::Exited => {
                    ObservedState::Terminated(terminated(s, termination_message(s)))
                }
                ContainerState::Created => ObservedState::Waiting {
                    reason: reason::CONTAINER_CREATING.into(),
                    message: None,
                },
                ContainerState::Unknown => ObservedState::Terminated(Terminated {
                    exit_code: 137,
                    reason: reason::CONTAINER_STATUS_UNKNOWN.into(),
                    message: Some(
                        "The container could not be located when the pod was terminated".into(),
                    ),
                    container_id: Some(container_id(&s.id)),
                    ..Default::default()
                }),
            },
            (None, None) => continue,
            (None, Some(_)) => unreachable!("handled by the first arm"),
        };
        // While the current instance is being replaced, the one that exited is the last state.
        let last = match (current, &state) {
            (Some(s), ObservedState::Waiting { .. }) if s.state == ContainerState::Exited => {
                Some(terminated(s, termination_message(s)))
            }
            _ => previous
                .filter(|p| p.state == ContainerState::Exited)
                .map(|p| terminated(p, termination_message(p))),
        };
        let (ready, started) = match current {
            Some(s) if matches!(state, ObservedState::Running { .. }) => probes(c, s),
            _ => (false, c.startup_probe.as_ref().map(|_| false)),
        };
        out.push(ObservedContainer {
            name: c.name.clone(),
            container_id: current.map(|s| container_id(&s.id)),
            image: None,
            image_id: image_ids.get(&image).cloned().unwrap_or_default(),
            restart_count: current.map_or(0, |s| s.restart_count as i32),
            state,
            last_terminated: last,
            ready,
            started,
        });
    }
    out
}

/// Whether the container's environment takes the pod IP (`status.podIP`/`status.podIPs`).
pub fn needs_pod_ip(container: &Container) -> bool {
    container.env.iter().flatten().any(|e| {
        e.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .is_some_and(|f| matches!(f.field_path.as_str(), "status.podIP" | "status.podIPs"))
    })
}

/// Values of the container's `env[].valueFrom.fieldRef` and `resourceFieldRef` variables
/// (`node` stands in for a limit that is not set).
pub fn field_ref_env(
    pod: &Pod,
    container: &Container,
    pod_ip: Option<&str>,
    host_ip: &str,
    node: &super::downward::NodeCapacity,
) -> HashMap<String, String> {
    let mut out = super::downward::resource_field_env(container, node);
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    for e in container.env.iter().flatten() {
        let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) else {
            continue;
        };
        let path = f.field_path.as_str();
        let key_of = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix("']"))
                .map(String::from)
        };
        let value = match path {
            "metadata.name" => pod.metadata.name.clone(),
            "metadata.namespace" => pod.metadata.namespace.clone(),
            "metadata.uid" => pod.metadata.uid.clone(),
            "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            "spec.serviceAccountName" => pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone()),
            "status.podIP" | "status.podIPs" => pod_ip.map(String::from),
            "status.hostIP" | "status.hostIPs" => Some(host_ip.to_string()),
            "metadata.labels" => Some(format_map(labels)),
            "metadata.annotations" => Some(format_map(annotations)),
            _ => key_of("metadata.labels['")
                .map(|k| labels.get(&k).cloned().unwrap_or_default())
                .or_else(|| {
                    key_of("metadata.annotations['")
                        .map(|k| annotations.get(&k).cloned().unwrap_or_default())
                }),
        };
        if let Some(v) = value {
            out.insert(e.name.clone(), v);
        }
    }
    out
}

fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec};

    use super::*;

    const NODE: crate::node::downward::NodeCapacity = crate::node::downward::NodeCapacity {
        cpu_millis: 2000,
        memory: 4 << 30,
        ephemeral_storage: 100 << 30,
    };

    #[test]
    fn field_refs() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        pod.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        });
        let var = |name: &str, path: &str| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
            value: None,
        };
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                var("NAME", "metadata.name"),
                var("IP", "status.podIP"),
                var("HOST", "status.hostIP"),
                var("APP", "metadata.labels['app']"),
                var("NODE", "spec.nodeName"),
            ]),
            ..Default::default()
        };
        let env = field_ref_env(&pod, &c, Some("10.244.0.9"), "192.168.56.11", &NODE);
        assert_eq!(env["NAME"], "web");
        assert_eq!(env["IP"], "10.244.0.9");
        assert_eq!(env["HOST"], "192.168.56.11");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["NODE"], "n1");
        // Only the pod IP makes a container wait for the network before its create.
        assert!(needs_pod_ip(&c));
        let without_ip = Container {
            env: Some(vec![
                var("NAME", "metadata.name"),
                var("HOST", "status.hostIP"),
            ]),
            ..c.clone()
        };
        assert!(!needs_pod_ip(&without_ip));
        let ips = Container {
            env: Some(vec![var("IPS", "status.podIPs")]),
            ..c
        };
        assert!(needs_pod_ip(&ips));
    }

    /// `resourceFieldRef` variables are filled from the container's limits (they were
    /// missing from the resolved environment, so the container saw an empty string).
    #[test]
    fn resource_field_refs_are_resolved() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
            "env": [
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            ],
        }))
        .unwrap();
        let env = field_ref_env(&Pod::default(), &c, None, "192.168.56.11", &NODE);
        assert_eq!(env.get("MEM").map(String::as_str), Some("64"));
        assert_eq!(env.get("CPU").map(String::as_str), Some("500"));
    }
}
