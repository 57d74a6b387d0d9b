//! `env[].valueFrom.resourceFieldRef`: a container's limit or request as a number, as
//! upstream's kubelet fills it (`makeEnvironmentVariables` with
//! `defaultPodLimitsForDownwardAPI`, then `resource.ExtractContainerResourceValue`).

use crate::config::reserved::NodeAllocatable;
use crate::config::Config;
use crate::validation::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, ResourceFieldSelector};
use std::collections::HashMap;
use std::path::Path;

/// What the node has, standing in for a missing limit: upstream uses the node's allocatable
/// (`node/capacity.rs`: capacity less the reservations and hard eviction thresholds, memory
/// less the huge pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCapacity {
    /// Allocatable CPU, in millicores.
    pub cpu_millis: i64,
    /// Allocatable memory, in bytes.
    pub memory: i64,
    /// Allocatable ephemeral storage (of the file system holding the kubelet's root
    /// directory), in bytes.
    pub ephemeral_storage: i64,
}

impl NodeCapacity {
    /// This host's allocatable resources; the root directory's file system gives ephemeral
    /// storage. A host whose /proc or /sys cannot be read falls back to the CPUs this process
    /// may use and `MemTotal`.
    pub fn of_host(root_dir: &Path, reservation: &NodeAllocatable) -> Self {
        match super::capacity::Machine::of_host(root_dir) {
            Ok(machine) => {
                // maxPods plays no part in these three.
                let a = super::capacity::allocatable(&machine.capacity(0), reservation);
                Self {
                    cpu_millis: a.milli_cpu,
                    memory: a.memory,
                    ephemeral_storage: a.ephemeral_storage,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the node's capacity");
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as i64);
                Self {
                    cpu_millis: cpus * 1000,
                    memory: crate::volume::node_memory() as i64,
                    ephemeral_storage: 0,
                }
            }
        }
    }
}

/// This host's allocatable resources under `config`'s reservation, measured on first use (the
/// root directory and the reservation do not change while the agent runs).
pub fn host_capacity(config: &Config) -> &'static NodeCapacity {
    static CAPACITY: std::sync::OnceLock<NodeCapacity> = std::sync::OnceLock::new();
    CAPACITY.get_or_init(|| NodeCapacity::of_host(&config.root_dir, &config.node_allocatable))
}

/// The number of CPUs in a kernel CPU list such as `0-3,8,10-11`.
pub(crate) fn online_cpus(list: &str) -> Option<i64> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<i64>().ok()? - a.parse::<i64>().ok()? + 1,
            None => part.parse::<i64>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

/// The values of the container's `resourceFieldRef` variables. Validation has already
/// checked the resource names and that `containerName` is this container.
pub fn resource_field_env(container: &Container, node: &NodeCapacity) -> HashMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let rf = e.value_from.as_ref()?.resource_field_ref.as_ref()?;
            Some((e.name.clone(), resource_value(rf, container, node)?))
        })
        .collect()
}

/// One value. A limit that is not set is the node's capacity for that resource
/// (`MergeContainerResourceLimits`); a request that is not set is 0. The quotient is rounded
/// up: cpu in millicores over the divisor's millicores, memory and storage in bytes over the
/// divisor's bytes; a missing or zero divisor is 1.
pub fn resource_value(
    rf: &ResourceFieldSelector,
    container: &Container,
    node: &NodeCapacity,
) -> Option<String> {
    let (kind, name) = rf.resource.split_once('.')?;
    let resources = container.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return None,
    }
    .and_then(|m| m.get(name))
    .and_then(|q| Quantity::parse(&q.0).ok());
    let fallback = |capacity: i64| match kind {
        "limits" => capacity,
        _ => 0,
    };
    let divisor = rf
        .divisor
        .as_ref()
        .and_then(|d| Quantity::parse(&d.0).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(Quantity::from_units(1));
    let (amount, per) = match name {
        "cpu" => (
            set.map_or(fallback(node.cpu_millis), |q| q.milli_value()),
            divisor.milli_value(),
        ),
        "memory" => (
            set.map_or(fallback(node.memory), |q| q.value()),
            divisor.value(),
        ),
        "ephemeral-storage" => (
            set.map_or(fallback(node.ephemeral_storage), |q| q.value()),
            divisor.value(),
        ),
        _ => return None,
    };
    if per <= 0 {
        return None;
    }
    let (a, p) = (i128::from(amount), i128::from(per));
    Some(((a + p - 1).div_euclid(p)).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: NodeCapacity = NodeCapacity {
        cpu_millis: 2000,
        memory: 4 << 30,
        ephemeral_storage: 100 << 30,
    };

    /// A container with `resources` (YAML) and one variable per `(name, resource, divisor)`.
    fn container(resources: &str, vars: &[(&str, &str, Option<&str>)]) -> Container {
        let env: Vec<serde_json::Value> = vars
            .iter()
            .map(|(n, r, d)| {
                let mut rf = serde_json::json!({"resource": r});
                if let Some(d) = d {
                    rf["divisor"] = (*d).into();
                }
                serde_json::json!({"name": n, "valueFrom": {"resourceFieldRef": rf}})
            })
            .collect();
        let mut c: serde_json::Value = serde_json::json!({"name": "c", "env": env});
        c["resources"] = serde_yaml_ng::from_str(resources).unwrap();
        serde_json::from_value(c).unwrap()
    }

    /// Upstream's `TestExtractResourceValue` cases and the downward API documentation's.
    #[test]
    fn limits_and_requests_with_divisors() {
        let c = container(
            "{limits: {cpu: 500m, memory: 64Mi, ephemeral-storage: 1Gi}, requests: {cpu: 250m, memory: 32Mi}}",
            &[
                ("CPU_M", "limits.cpu", Some("1m")),
                ("CPU", "limits.cpu", Some("1")),
                ("CPU_DEFAULT", "limits.cpu", None),
                ("MEM_MI", "limits.memory", Some("1Mi")),
                ("MEM", "limits.memory", None),
                ("MEM_G", "limits.memory", Some("1G")),
                ("REQ_CPU_M", "requests.cpu", Some("1m")),
                ("REQ_MEM_KI", "requests.memory", Some("1Ki")),
                ("STORAGE_MI", "limits.ephemeral-storage", Some("1Mi")),
                ("ZERO_DIVISOR", "limits.cpu", Some("0")),
            ],
        );
        let env = resource_field_env(&c, &NODE);
        let want = [
            ("CPU_M", "500"),
            ("CPU", "1"),
            ("CPU_DEFAULT", "1"),
            ("MEM_MI", "64"),
            ("MEM", "67108864"),
            ("MEM_G", "1"),
            ("REQ_CPU_M", "250"),
            ("REQ_MEM_KI", "32768"),
            ("STORAGE_MI", "1024"),
            ("ZERO_DIVISOR", "1"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(env.len(), want.len());
    }

    /// No limit: the node's capacity, as upstream's allocatable; no request: 0.
    #[test]
    fn unset_limit_is_node_capacity_and_unset_request_is_zero() {
        let c = container(
            "{}",
            &[
                ("CPU", "limits.cpu", None),
                ("CPU_M", "limits.cpu", Some("1m")),
                ("MEM_MI", "limits.memory", Some("1Mi")),
                ("STORAGE_GI", "limits.ephemeral-storage", Some("1Gi")),
                ("REQ_CPU", "requests.cpu", None),
                ("REQ_MEM", "requests.memory", None),
            ],
        );
        let env = resource_field_env(&c, &NODE);
        assert_eq!(env["CPU"], "2");
        assert_eq!(env["CPU_M"], "2000");
        assert_eq!(env["MEM_MI"], "4096");
        assert_eq!(env["STORAGE_GI"], "100");
        assert_eq!(env["REQ_CPU"], "0");
        assert_eq!(env["REQ_MEM"], "0");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(online_cpus("0-1\n"), Some(2));
        assert_eq!(online_cpus("0-3,8,10-11"), Some(7));
        assert_eq!(online_cpus("x"), None);
        assert_eq!(online_cpus(""), None);
    }
}
