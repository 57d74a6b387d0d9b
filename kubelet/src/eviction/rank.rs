//! Which pod goes first (upstream's `rankMemoryPressure`, `rankDiskPressureFunc`,
//! `rankPIDPressure`), and the evicted pod's message (`evictionMessage`).
//!
//! kubenode's image store and pod directories share the root directory's file system (no
//! dedicated image file system), so every disk signal ranks by the pod's whole local usage, as
//! upstream does without an imagefs: its containers' writable layers and logs, and its local
//! volumes, as far as the Summary reports them.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::signals::{binary_si, decimal_si, Observation};
use super::thresholds::{Resource, Signal, Threshold};
use crate::stats::types::{FsStats, PodStats};

/// Upstream's `Reason`: the evicted pod's status reason and its event's.
pub const REASON: &str = "Evicted";

/// A pod's priority (`spec.priority`, 0 when unset, as upstream `PodPriority`).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn requests(pod: &Pod) -> crate::node::capacity::Resources {
    pod.spec
        .as_ref()
        .map(crate::node::capacity::pod_requests)
        .unwrap_or_default()
}

fn memory_usage(stats: &PodStats) -> i64 {
    stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes)
        .unwrap_or(0) as i64
}

fn used(fs: Option<&FsStats>, inodes: bool) -> i64 {
    fs.and_then(|f| if inodes { f.inodes_used } else { f.used_bytes })
        .unwrap_or(0) as i64
}

/// The pod's local disk use (bytes, or inodes): its containers' writable layers and logs and
/// its ephemeral storage as the Summary has them (upstream `podDiskUsage` with every fs stats
/// type). kubenode's Summary counts the writable layers (measured every minute) and the logs
/// in the pod's ephemeral storage; the larger of the two is taken.
fn disk_usage(stats: &PodStats, inodes: bool) -> i64 {
    let containers: i64 = stats
        .containers
        .iter()
        .map(|c| used(c.rootfs.as_ref(), inodes) + used(c.logs.as_ref(), inodes))
        .sum();
    containers.max(used(stats.ephemeral_storage.as_ref(), inodes))
}

fn process_usage(stats: &PodStats) -> i64 {
    stats
        .process_stats
        .as_ref()
        .and_then(|p| p.process_count)
        .unwrap_or(0) as i64
}

/// `true` before `false` (upstream `cmpBool`).
fn true_first(a: bool, b: bool) -> Ordering {
    b.cmp(&a)
}

/// Sorts `pods` (each with its stats, if any) for eviction by `signal`, the first to evict
/// first: a pod without stats first; then for memory and disk, pods using more than they
/// request, then lower priority, then larger usage above the request; for pids, lower
/// priority, then more processes.
pub fn rank(signal: Signal, pods: &mut [(Pod, Option<PodStats>)]) {
    let resource = signal.resource();
    let usage = |s: &PodStats| match resource {
        Resource::Memory => memory_usage(s),
        Resource::EphemeralStorage => disk_usage(s, false),
        Resource::Inodes => disk_usage(s, true),
        Resource::Pids => process_usage(s),
    };
    let request = |p: &Pod| match resource {
        Resource::Memory => requests(p).memory,
        Resource::EphemeralStorage => requests(p).ephemeral_storage,
        // Upstream compares inodes with the (absent) request of "inodes": zero.
        Resource::Inodes | Resource::Pids => 0,
    };
    pods.sort_by(|(p1, s1), (p2, s2)| {
        let (s1, s2) = match (s1, s2) {
            (Some(a), Some(b)) => (a, b),
            _ => return true_first(s1.is_none(), s2.is_none()),
        };
        let by_priority = priority(p1).cmp(&priority(p2));
        if resource == Resource::Pids {
            return by_priority.then_with(|| usage(s2).cmp(&usage(s1)));
        }
        let (u1, u2) = (usage(s1), usage(s2));
        let (r1, r2) = (request(p1), request(p2));
        // Disk ranks by usage over the ephemeral-storage request, for inodes too (upstream).
        let (q1, q2) = if resource == Resource::Inodes {
            (
                requests(p1).ephemeral_storage,
                requests(p2).ephemeral_storage,
            )
        } else {
            (r1, r2)
        };
        true_first(u1 > r1, u2 > r2)
            .then(by_priority)
            .then_with(|| (u2 - q2).cmp(&(u1 - q1)))
    });
}

/// The Evicted event's annotation naming the containers using more than they request.
pub const OFFENDING_CONTAINERS_KEY: &str = "offending_containers";
/// The annotation with their usage, in the same order.
pub const OFFENDING_CONTAINERS_USAGE_KEY: &str = "offending_containers_usage";
/// The annotation naming the resource the node was low on.
pub const STARVED_RESOURCE_KEY: &str = "starved_resource";

/// Upstream `evictionMessage`: `The node was low on resource: <resource>. `, the threshold
/// met for that resource and what was available, then each container using more of a
/// memory or ephemeral-storage than it requests; and the Evicted event's annotations: those
/// containers' names and usage (comma-separated) and the resource, none when the pod has no
/// stats (as upstream).
pub fn message(
    resource: Resource,
    pod: &Pod,
    stats: Option<&PodStats>,
    thresholds: &[Threshold],
    observations: &super::signals::Observations,
) -> (String, BTreeMap<String, String>) {
    let mut annotations = BTreeMap::new();
    let mut message = format!("The node was low on resource: {}. ", resource.as_str());
    let met = thresholds.iter().find_map(|t| {
        (t.signal.resource() == resource)
            .then(|| observations.get(&t.signal).map(|o| (t, *o)))
            .flatten()
    });
    if let Some((
        t,
        Observation {
            available,
            capacity,
        },
    )) = met
    {
        let quantity = match t.value {
            crate::config::reserved::Threshold::Quantity(_) => t.text.clone(),
            crate::config::reserved::Threshold::Percentage(_) => binary_si(t.quantity(capacity)),
        };
        let available = if resource.is_bytes() {
            binary_si(available)
        } else {
            decimal_si(available)
        };
        message += &format!("Threshold quantity: {quantity}, available: {available}. ");
    }
    let Some(stats) = stats else {
        return (message, annotations);
    };
    let mut offending: Vec<&str> = Vec::new();
    let mut usages: Vec<String> = Vec::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let containers: Vec<_> = containers.collect();
    for cs in &stats.containers {
        let Some(c) = containers.iter().find(|c| c.name == cs.name) else {
            continue;
        };
        let request = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource.as_str()));
        let request_bytes = request
            .and_then(|q| crate::validation::quantity::Quantity::parse(&q.0).ok())
            .map_or(0, |q| q.value());
        let usage = match resource {
            Resource::Memory => cs
                .memory
                .as_ref()
                .and_then(|m| m.working_set_bytes)
                .map(|u| u as i64),
            Resource::EphemeralStorage => {
                match (
                    cs.rootfs.as_ref().and_then(|f| f.used_bytes),
                    cs.logs.as_ref().and_then(|f| f.used_bytes),
                ) {
                    (Some(r), Some(l)) => Some((r + l) as i64),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(usage) = usage.filter(|u| *u > request_bytes) {
            let request = request.map_or_else(|| "0".to_string(), |q| q.0.clone());
            message += &format!(
                "Container {} was using {}, request is {request}, has larger consumption of {}. ",
                c.name,
                binary_si(usage),
                resource.as_str()
            );
            offending.push(&c.name);
            usages.push(binary_si(usage));
        }
    }
    annotations.insert(OFFENDING_CONTAINERS_KEY.into(), offending.join(","));
    annotations.insert(OFFENDING_CONTAINERS_USAGE_KEY.into(), usages.join(","));
    annotations.insert(STARVED_RESOURCE_KEY.into(), resource.as_str().into());
    (message, annotations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::types::{ContainerStats, MemoryStats, PodReference, ProcessStats};
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(name: &str, memory_request: Option<&str>, priority: Option<i32>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(name.into());
        p.spec = Some(PodSpec {
            priority,
            containers: vec![Container {
                name: "c".into(),
                resources: memory_request.map(|m| ResourceRequirements {
                    requests: Some([("memory".to_string(), Quantity(m.into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    fn mem(bytes: u64) -> Option<MemoryStats> {
        Some(MemoryStats {
            time: jiff::Timestamp::UNIX_EPOCH,
            available_bytes: None,
            usage_bytes: Some(bytes),
            working_set_bytes: Some(bytes),
            rss_bytes: None,
            page_faults: None,
            major_page_faults: None,
        })
    }

    fn stats(name: &str, memory: u64, processes: u64) -> PodStats {
        PodStats {
            pod_ref: PodReference {
                name: name.into(),
                namespace: "default".into(),
                uid: name.into(),
            },
            start_time: jiff::Timestamp::UNIX_EPOCH,
            containers: vec![ContainerStats {
                name: "c".into(),
                start_time: jiff::Timestamp::UNIX_EPOCH,
                cpu: None,
                memory: mem(memory),
                rootfs: None,
                logs: None,
            }],
            cpu: None,
            memory: mem(memory),
            network: None,
            volume: Vec::new(),
            ephemeral_storage: None,
            process_stats: Some(ProcessStats {
                process_count: Some(processes),
            }),
        }
    }

    fn names(pods: &[(Pod, Option<PodStats>)]) -> Vec<String> {
        pods.iter()
            .map(|(p, _)| p.metadata.name.clone().unwrap())
            .collect()
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn memory_ranks_over_requests_then_priority_then_usage_above_request() {
        let mut pods = vec![
            // Within its request: last.
            (
                pod("within", Some("500Mi"), None),
                Some(stats("within", 400 * MI, 1)),
            ),
            // Over its request, high priority.
            (
                pod("high", Some("100Mi"), Some(1000)),
                Some(stats("high", 900 * MI, 1)),
            ),
            // Over (BestEffort: any usage is over), 50Mi above.
            (pod("small", None, None), Some(stats("small", 50 * MI, 1))),
            // Over, 300Mi above.
            (
                pod("big", Some("100Mi"), None),
                Some(stats("big", 400 * MI, 1)),
            ),
            // No stats: first.
            (pod("unknown", None, Some(5000)), None),
        ];
        rank(Signal::MemoryAvailable, &mut pods);
        assert_eq!(names(&pods), ["unknown", "big", "small", "high", "within"]);
    }

    #[test]
    fn pids_rank_by_priority_then_process_count() {
        let mut pods = vec![
            (pod("a", None, Some(10)), Some(stats("a", 0, 500))),
            (pod("b", None, None), Some(stats("b", 0, 5))),
            (pod("c", None, None), Some(stats("c", 0, 50))),
        ];
        rank(Signal::PidAvailable, &mut pods);
        assert_eq!(names(&pods), ["c", "b", "a"]);
    }

    #[test]
    fn disk_ranks_by_local_usage() {
        let with_disk = |name: &str, bytes: u64| {
            let mut s = stats(name, 0, 1);
            s.ephemeral_storage = Some(FsStats {
                time: jiff::Timestamp::UNIX_EPOCH,
                available_bytes: None,
                capacity_bytes: None,
                used_bytes: Some(bytes),
                inodes_free: None,
                inodes: None,
                inodes_used: Some(bytes / 100),
            });
            Some(s)
        };
        let mut pods = vec![
            (pod("little", None, None), with_disk("little", 10 * MI)),
            (pod("lots", None, None), with_disk("lots", 500 * MI)),
            (
                pod("critical-ish", None, Some(100)),
                with_disk("critical-ish", 900 * MI),
            ),
        ];
        rank(Signal::NodeFsAvailable, &mut pods);
        assert_eq!(names(&pods), ["lots", "little", "critical-ish"]);
        rank(Signal::NodeFsInodesFree, &mut pods);
        assert_eq!(names(&pods), ["lots", "little", "critical-ish"]);
    }

    #[test]
    fn message_as_upstream_formats_it() {
        let cfg = super::super::thresholds::EvictionConfig::default();
        let mut obs = super::super::signals::Observations::new();
        obs.insert(
            Signal::MemoryAvailable,
            Observation {
                available: 50 * MI as i64,
                capacity: 8 << 30,
            },
        );
        obs.insert(
            Signal::NodeFsAvailable,
            Observation {
                available: 1_000_000_000,
                capacity: 50_000_000_000,
            },
        );
        let p = pod("p", Some("100Mi"), None);
        let s = stats("p", 300 * MI, 1);
        let mem: Vec<Threshold> = cfg
            .thresholds
            .iter()
            .filter(|t| t.signal == Signal::MemoryAvailable)
            .cloned()
            .collect();
        let (text, annotations) = message(Resource::Memory, &p, Some(&s), &mem, &obs);
        assert_eq!(
            text,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container c was using 300Mi, request is 100Mi, has larger consumption of memory. "
        );
        let annotation = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned();
        assert_eq!(annotations.len(), 3);
        assert_eq!(
            annotation(&annotations, OFFENDING_CONTAINERS_KEY).as_deref(),
            Some("c")
        );
        assert_eq!(
            annotation(&annotations, OFFENDING_CONTAINERS_USAGE_KEY).as_deref(),
            Some("300Mi")
        );
        assert_eq!(
            annotation(&annotations, STARVED_RESOURCE_KEY).as_deref(),
            Some("memory")
        );
        let disk: Vec<Threshold> = cfg
            .thresholds
            .iter()
            .filter(|t| t.signal == Signal::NodeFsAvailable)
            .cloned()
            .collect();
        let (text, annotations) = message(Resource::EphemeralStorage, &p, Some(&s), &disk, &obs);
        assert_eq!(
            text,
            "The node was low on resource: ephemeral-storage. Threshold quantity: 5000000074, \
             available: 1000000000. "
        );
        // No container over its request: the keys are there, empty, as upstream.
        assert_eq!(
            annotation(&annotations, OFFENDING_CONTAINERS_KEY).as_deref(),
            Some("")
        );
        assert_eq!(
            annotation(&annotations, OFFENDING_CONTAINERS_USAGE_KEY).as_deref(),
            Some("")
        );
        assert_eq!(
            annotation(&annotations, STARVED_RESOURCE_KEY).as_deref(),
            Some("ephemeral-storage")
        );
        // Without stats or an observed threshold: the first sentence only, no annotations.
        assert_eq!(
            message(Resource::Pids, &p, None, &[], &obs),
            (
                "The node was low on resource: pids. ".to_string(),
                BTreeMap::new()
            )
        );
    }
}
