//! The node's capacity and allocatable resources, and the admission check of a pod's requests
//! against them (upstream's `NodeResourcesFit` `Fits`, which the kubelet runs at admission
//! through `GeneralPredicates`, pkg/kubelet/lifecycle/predicate.go).
//!
//! Capacity is what upstream's kubelet reports from cAdvisor's machine info: `cpu` the online
//! CPUs, `memory` `MemTotal`, `pods` the `maxPods` setting, `ephemeral-storage` the size of the
//! file system holding the root directory, `hugepages-<size>` the pre-allocated pages of each
//! size in /sys/kernel/mm/hugepages; no extended resource (kubenode has no device plugins).
//! Allocatable is capacity less `kubeReserved`, `systemReserved` and the hard eviction
//! thresholds (`config/reserved.rs`; upstream's defaults `memory.available<100Mi` and
//! `nodefs.available<10%`), and memory less the huge pages. The Node status reports both.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::worker::pod_cgroup::{self, Amounts};
use crate::config::reserved::{NodeAllocatable, Threshold};

/// The reason upstream gives when it cannot read the node (`InvalidNodeInfo`).
pub(crate) const INVALID_NODE_INFO: &str = "InvalidNodeInfo";
/// Upstream's message with [`INVALID_NODE_INFO`].
pub(crate) const INVALID_NODE_INFO_MESSAGE: &str = "Kubelet cannot get node info.";

/// A list of resources as upstream's scheduler framework holds them (`framework.Resource`):
/// CPU in millicores, the rest in units (bytes, pages' bytes, devices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    /// Huge pages, extended and other scalar resources by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            let sum = self.scalar.entry(name.clone()).or_default();
            *sum = sum.saturating_add(*v);
        }
    }
}

/// What the machine has, as cAdvisor's machine info reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Machine {
    /// Online CPUs.
    pub cores: i64,
    /// `MemTotal`, in bytes.
    pub memory: i64,
    /// Huge page size in bytes → pre-allocated pages (`nr_hugepages`).
    pub huge_pages: BTreeMap<i64, i64>,
    /// Size of the file system holding the root directory, in bytes.
    pub root_fs: i64,
}

impl Machine {
    /// This host, with `root_dir`'s file system (its size is 0 when unreadable, as upstream's
    /// kubelet reports when it has no root file system info).
    pub(crate) fn of_host(root_dir: &Path) -> std::io::Result<Machine> {
        let root_fs = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| (s.blocks() as i64).saturating_mul(s.fragment_size() as i64))
            .unwrap_or_else(|e| {
                tracing::warn!(dir = %root_dir.display(), error = %e, "root file system size");
                0
            });
        Machine::read(Path::new("/"), root_fs)
    }

    /// The machine whose /proc and /sys are below `root` (`/` for this host).
    pub(crate) fn read(root: &Path, root_fs: i64) -> std::io::Result<Machine> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let online = root.join("sys/devices/system/cpu/online");
        let text = std::fs::read_to_string(&online)?;
        let cores = super::downward::online_cpus(&text)
            .ok_or_else(|| invalid(format!("{}: {text:?}", online.display())))?;
        let meminfo = root.join("proc/meminfo");
        let text = std::fs::read_to_string(&meminfo)?;
        let memory = text
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| invalid(format!("{}: no MemTotal", meminfo.display())))?;
        let mut huge_pages = BTreeMap::new();
        // A kernel without huge pages has no such directory.
        if let Ok(dir) = std::fs::read_dir(root.join("sys/kernel/mm/hugepages")) {
            for entry in dir {
                let entry = entry?;
                let name = entry.file_name();
                let Some(kib) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("hugepages-"))
                    .and_then(|n| n.strip_suffix("kB"))
                    .and_then(|n| n.parse::<i64>().ok())
                else {
                    continue;
                };
                let path = entry.path().join("nr_hugepages");
                let text = std::fs::read_to_string(&path)?;
                let pages = text
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| invalid(format!("{}: {text:?}", path.display())))?;
                huge_pages.insert(kib * 1024, pages);
            }
        }
        Ok(Machine {
            cores,
            memory: memory.saturating_mul(1024),
            huge_pages,
            root_fs,
        })
    }

    /// The node's capacity (upstream `CapacityFromMachineInfo` with the pods and the root file
    /// system added by the node status setter).
    pub(crate) fn capacity(&self, max_pods: u32) -> Resources {
        Resources {
            milli_cpu: self.cores.saturating_mul(1000),
            memory: self.memory,
            ephemeral_storage: self.root_fs,
            pods: i64::from(max_pods),
            scalar: self
                .huge_pages
                .iter()
                .map(|(size, pages)| (huge_page_resource(*size), size.saturating_mul(*pages)))
                .collect(),
        }
    }
}

/// The node's allocatable resources (upstream's node status setter with
/// `GetNodeAllocatableReservation`): capacity less `kubeReserved`, `systemReserved` and the hard
/// eviction thresholds `memory.available` (of memory) and `nodefs.available` (of
/// ephemeral-storage), then memory less the huge pages, each never below zero. `pods` and the
/// huge pages are not reserved (`pid` reserves no capacity the node reports).
pub(crate) fn allocatable(capacity: &Resources, reservation: &NodeAllocatable) -> Resources {
    let (kube, system) = (&reservation.kube_reserved, &reservation.system_reserved);
    let eviction = |t: &Option<Threshold>, of: i64| t.as_ref().map_or(0, |t| t.of(of));
    let less = |have: i64, reserved: &[i64]| {
        reserved
            .iter()
            .fold(have, |a, r| a.saturating_sub(*r))
            .max(0)
    };
    let mut a = capacity.clone();
    a.milli_cpu = less(capacity.milli_cpu, &[kube.milli_cpu, system.milli_cpu]);
    a.memory = less(
        capacity.memory,
        &[
            kube.memory,
            system.memory,
            eviction(&reservation.eviction_memory, capacity.memory),
        ],
    );
    a.ephemeral_storage = less(
        capacity.ephemeral_storage,
        &[
            kube.ephemeral_storage,
            system.ephemeral_storage,
            eviction(&reservation.eviction_nodefs, capacity.ephemeral_storage),
        ],
    );
    for (name, bytes) in &capacity.scalar {
        if name.starts_with(HUGE_PAGES_PREFIX) {
            a.memory = (a.memory - bytes).max(0);
        }
    }
    a
}

const HUGE_PAGES_PREFIX: &str = "hugepages-";

/// `hugepages-<size>` with the size as upstream's `BinarySI` quantity prints it (`2Mi`, `1Gi`).
fn huge_page_resource(bytes: i64) -> String {
    let mut size = bytes.to_string();
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        if bytes > 0 && bytes % (1i64 << shift) == 0 {
            size = format!("{}{suffix}", bytes >> shift);
            break;
        }
    }
    format!("{HUGE_PAGES_PREFIX}{size}")
}

/// Upstream `IsExtendedResourceName`: a fully qualified name outside `kubernetes.io/` (the
/// native domain) and not a quota's `requests.` name.
fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// Upstream `IsScalarResourceName`: extended, huge pages, native with a domain, or attachable
/// volumes.
fn is_scalar(name: &str) -> bool {
    is_extended(name)
        || name.starts_with(HUGE_PAGES_PREFIX)
        || name.contains("kubernetes.io/")
        || name.starts_with("attachable-volumes-")
}

/// Every resource of a list, in nano-units, summed and compared over a pod's containers by
/// [`pod_cgroup::pod_requests`].
#[derive(Debug, Clone, Default)]
struct Nanos(BTreeMap<String, u128>);

impl Amounts for Nanos {
    fn of(list: Option<&BTreeMap<String, Quantity>>) -> Nanos {
        Nanos(
            list.into_iter()
                .flatten()
                .map(|(k, q)| (k.clone(), pod_cgroup::nanos(q)))
                .collect(),
        )
    }

    fn add(&self, other: &Nanos) -> Nanos {
        let mut sum = self.0.clone();
        for (k, v) in &other.0 {
            let s = sum.entry(k.clone()).or_default();
            *s = s.saturating_add(*v);
        }
        Nanos(sum)
    }

    fn max(&self, other: &Nanos) -> Nanos {
        let mut max = self.0.clone();
        for (k, v) in &other.0 {
            let m = max.entry(k.clone()).or_default();
            *m = (*m).max(*v);
        }
        Nanos(max)
    }
}

/// A pod's requests (upstream `PodRequests`) as the scheduler framework counts them
/// (`SetMaxResource`): CPU's `MilliValue()`, the others' `Value()` (both rounded up); a name
/// that is none of cpu, memory, ephemeral-storage or a scalar resource is not counted.
pub(crate) fn pod_requests(spec: &PodSpec) -> Resources {
    const NANO: u128 = 1_000_000_000;
    let whole = |n: u128, unit: u128| i64::try_from(n.div_ceil(unit)).unwrap_or(i64::MAX);
    let mut r = Resources::default();
    for (name, n) in pod_cgroup::pod_requests::<Nanos>(spec).0 {
        match name.as_str() {
            "cpu" => r.milli_cpu = whole(n, NANO / 1000),
            "memory" => r.memory = whole(n, NANO),
            "ephemeral-storage" => r.ephemeral_storage = whole(n, NANO),
            _ if is_scalar(&name) => {
                r.scalar.insert(name, whole(n, NANO));
            }
            _ => {}
        }
    }
    r
}

/// Upstream `removeMissingExtendedResources`: the containers' requests of extended resources
/// the node does not have are dropped before the fit (cluster-level resources; upstream's
/// caveat: a static pod needing a node-level resource the node lacks is admitted).
fn without_missing_extended(spec: &PodSpec, allocatable: &Resources) -> PodSpec {
    let mut spec = spec.clone();
    let filter = |c: &mut Container| {
        if let Some(requests) = c.resources.as_mut().and_then(|r| r.requests.as_mut()) {
            requests.retain(|name, _| !is_extended(name) || allocatable.scalar.contains_key(name));
        }
    };
    spec.containers.iter_mut().for_each(filter);
    spec.init_containers.iter_mut().flatten().for_each(filter);
    spec
}

/// A resource the node lacks for a pod (upstream `InsufficientResourceError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Insufficient {
    pub resource: String,
    pub requested: i64,
    pub used: i64,
    pub capacity: i64,
}

impl Insufficient {
    /// The admission reason: `OutOf<resource>` (`OutOfcpu`, `OutOfhugepages-2Mi`).
    pub(crate) fn reason(&self) -> String {
        format!("OutOf{}", self.resource)
    }

    /// Upstream's message (units: millicores for cpu, bytes or counts for the rest).
    pub(crate) fn message(&self) -> String {
        format!(
            "Node didn't have enough resource: {}, requested: {}, used: {}, capacity: {}",
            self.resource, self.requested, self.used, self.capacity
        )
    }
}

/// Whether a pod fits beside the `active` pods (upstream `fitsRequest` without the pod count,
/// which the caller checks first): the first resource that does not fit, in upstream's order
/// (cpu, memory, ephemeral-storage, then the scalar resources, by name here). A request of zero
/// always fits; the other pods' requests are counted whole.
pub(crate) fn fits<'a>(
    spec: &PodSpec,
    allocatable: &Resources,
    active: impl IntoIterator<Item = &'a PodSpec>,
) -> Result<(), Insufficient> {
    let request = pod_requests(&without_missing_extended(spec, allocatable));
    let mut used = Resources::default();
    for other in active {
        used.add(&pod_requests(other));
    }
    let check = |resource: &str, requested: i64, used: i64, capacity: i64| {
        if requested > 0 && requested > capacity.saturating_sub(used) {
            Err(Insufficient {
                resource: resource.to_string(),
                requested,
                used,
                capacity,
            })
        } else {
            Ok(())
        }
    };
    check(
        "cpu",
        request.milli_cpu,
        used.milli_cpu,
        allocatable.milli_cpu,
    )?;
    check("memory", request.memory, used.memory, allocatable.memory)?;
    check(
        "ephemeral-storage",
        request.ephemeral_storage,
        used.ephemeral_storage,
        allocatable.ephemeral_storage,
    )?;
    for (name, requested) in &request.scalar {
        let of = |r: &Resources| r.scalar.get(name).copied().unwrap_or(0);
        check(name, *requested, of(&used), of(allocatable))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "capacity_tests.rs"]
mod tests;
