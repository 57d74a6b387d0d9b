//! The pod cgroup's CPU shares, CPU quota and memory limit, as upstream's pod container manager
//! sets them (`ResourceConfigForPod`, pkg/kubelet/cm/helpers_linux.go) from the pod's requests
//! and limits (`PodRequests`/`PodLimits`, k8s.io/component-helpers/resource):
//!
//! - each resource sums over the regular containers and the sidecars (init containers with
//!   `restartPolicy: Always`); an ordinary init container counts with the sidecars started
//!   before it, and the pod needs the larger of the two (init containers run one at a time);
//! - `spec.overhead` adds to the requests, and to the limits that are set (not zero);
//! - CPU shares come from the CPU requests (`MilliCPUToShares`, at least 2); a CFS quota (over a
//!   100 ms period) only when every container has a CPU limit, a memory limit only when every
//!   container has a memory limit (as upstream counts them: an init container's with the
//!   sidecars before it); a Guaranteed pod gets both, a BestEffort pod shares 2 and no limit.
//!
//! kubenode always enforces CPU limits (the kubelet's `cpuCFSQuota: true`) over the 100 ms
//! period; pod-level `spec.resources` is refused by validation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubenode_runtime::host::PodCgroupResources;
use kubenode_runtime::spec::{
    milli_cpu_to_quota, milli_cpu_to_shares, parse_quantity, MIN_SHARES, QUOTA_PERIOD_US,
};

use crate::status::{is_restartable_init, qos_class, QosClass};

const NANO: u128 = 1_000_000_000;

/// Amounts summed over a pod's containers: [`CpuMemory`] for the pod cgroup, every resource
/// for admission (`crate::node::capacity`).
pub(crate) trait Amounts: Clone + Default {
    /// The amounts of a resource list (an absent resource is zero).
    fn of(list: Option<&BTreeMap<String, Quantity>>) -> Self;
    fn add(&self, other: &Self) -> Self;
    fn max(&self, other: &Self) -> Self;
}

/// The CPU and memory of a resource list, in nano-units (an absent resource is zero, which
/// sums and compares as upstream's absent entry does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CpuMemory {
    cpu: u128,
    memory: u128,
}

/// A quantity in nano-units; validation refused an unparsable or negative quantity before
/// any pod is admitted.
pub(crate) fn nanos(q: &Quantity) -> u128 {
    parse_quantity(&q.0, NANO).unwrap_or(0)
}

impl Amounts for CpuMemory {
    fn of(list: Option<&BTreeMap<String, Quantity>>) -> CpuMemory {
        let get = |name: &str| list.and_then(|l| l.get(name)).map(nanos).unwrap_or(0);
        CpuMemory {
            cpu: get("cpu"),
            memory: get("memory"),
        }
    }

    fn add(&self, other: &CpuMemory) -> CpuMemory {
        CpuMemory {
            cpu: self.cpu.saturating_add(other.cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }

    fn max(&self, other: &CpuMemory) -> CpuMemory {
        CpuMemory {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

impl CpuMemory {
    /// Upstream `MilliValue()` of the CPU (rounded up).
    fn milli_cpu(self) -> u128 {
        self.cpu.div_ceil(NANO / 1000)
    }

    /// Upstream `Value()` of the memory (rounded up).
    fn memory_bytes(self) -> u128 {
        self.memory.div_ceil(NANO)
    }
}

/// Upstream `AggregateContainerRequests`/`AggregateContainerLimits` over the list `pick`
/// chooses; `each` sees what every container needs while it runs (an init container's with
/// the sidecars started before it), as upstream's `ContainerFn`.
fn aggregate<A: Amounts>(
    spec: &PodSpec,
    pick: fn(&ResourceRequirements) -> Option<&BTreeMap<String, Quantity>>,
    mut each: impl FnMut(&A),
) -> A {
    let of = |c: &Container| A::of(c.resources.as_ref().and_then(pick));
    let mut total = A::default();
    for c in &spec.containers {
        let own = of(c);
        each(&own);
        total = total.add(&own);
    }
    let mut sidecars = A::default();
    let mut init = A::default();
    for c in spec.init_containers.iter().flatten() {
        let own = of(c);
        let running = if is_restartable_init(c) {
            total = total.add(&own);
            sidecars = sidecars.add(&own);
            sidecars.clone()
        } else {
            own.add(&sidecars)
        };
        each(&running);
        init = init.max(&running);
    }
    total.max(&init)
}

/// Upstream `PodRequests`: with the pod overhead.
pub(crate) fn pod_requests<A: Amounts>(spec: &PodSpec) -> A {
    let requests: A = aggregate(spec, |r| r.requests.as_ref(), |_| {});
    requests.add(&A::of(spec.overhead.as_ref()))
}

/// Upstream `PodLimits` (CPU and memory) and whether every container declared a CPU limit and
/// a memory limit: the overhead is added only to a limit that is set.
fn pod_limits(spec: &PodSpec) -> (CpuMemory, bool, bool) {
    let (mut cpu_declared, mut memory_declared) = (true, true);
    let mut limits: CpuMemory = aggregate(
        spec,
        |r| r.limits.as_ref(),
        |l: &CpuMemory| {
            cpu_declared &= l.cpu != 0;
            memory_declared &= l.memory != 0;
        },
    );
    let overhead = CpuMemory::of(spec.overhead.as_ref());
    if limits.cpu != 0 {
        limits.cpu = limits.cpu.saturating_add(overhead.cpu);
    }
    if limits.memory != 0 {
        limits.memory = limits.memory.saturating_add(overhead.memory);
    }
    (limits, cpu_declared, memory_declared)
}

/// The pod cgroup's settings (upstream `ResourceConfigForPod` with CPU limits enforced).
pub(crate) fn pod_cgroup_resources(spec: &PodSpec) -> PodCgroupResources {
    let qos = qos_class(spec);
    if qos == QosClass::BestEffort {
        return PodCgroupResources {
            cpu_shares: Some(MIN_SHARES),
            ..Default::default()
        };
    }
    let requests: CpuMemory = pod_requests(spec);
    let (limits, cpu_declared, memory_declared) = pod_limits(spec);
    let guaranteed = qos == QosClass::Guaranteed;
    // A zero limit has no quota (upstream `MilliCPUToQuota` returns 0, which sets nothing).
    let quota =
        (limits.milli_cpu() > 0).then(|| (milli_cpu_to_quota(limits.milli_cpu()), QUOTA_PERIOD_US));
    let memory = i64::try_from(limits.memory_bytes()).ok().filter(|m| *m > 0);
    PodCgroupResources {
        cpu_shares: Some(milli_cpu_to_shares(requests.milli_cpu())),
        cpu_quota: quota.filter(|_| guaranteed || cpu_declared),
        memory_limit: memory.filter(|_| guaranteed || memory_declared),
    }
}

/// The QoS tiers' cgroups (upstream `qos_container_manager`): `besteffort` always has CPU
/// shares 2; `burstable` the shares of the summed CPU requests of the node's active Burstable
/// pods (`setCPUCgroupConfig`). Guaranteed pods sit directly below `kubepods`.
pub(crate) fn qos_tiers<'a>(
    active: impl IntoIterator<Item = &'a PodSpec>,
) -> [(&'static str, PodCgroupResources); 2] {
    let burstable_milli: u128 = active
        .into_iter()
        .filter(|s| qos_class(s) == QosClass::Burstable)
        .map(|s| pod_requests::<CpuMemory>(s).milli_cpu())
        .sum();
    let shares = |n| PodCgroupResources {
        cpu_shares: Some(n),
        ..Default::default()
    };
    [
        (
            BURSTABLE_CGROUP,
            shares(milli_cpu_to_shares(burstable_milli)),
        ),
        (BEST_EFFORT_CGROUP, shares(MIN_SHARES)),
    ]
}

/// The Burstable tier's cgroup (cgroupfs path).
pub(crate) const BURSTABLE_CGROUP: &str = "/kubepods/burstable";
/// The BestEffort tier's cgroup (cgroupfs path).
pub(crate) const BEST_EFFORT_CGROUP: &str = "/kubepods/besteffort";

#[cfg(test)]
mod tests {
    use super::*;

    const MI: i64 = 1 << 20;
    const GI: i64 = 1 << 30;

    fn list(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        let l: BTreeMap<String, Quantity> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect();
        (!l.is_empty()).then_some(l)
    }

    /// A container with (cpu, memory) requests and limits; "" leaves one out.
    fn c(requests: (&str, &str), limits: (&str, &str)) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: list(&[("cpu", requests.0), ("memory", requests.1)]),
                limits: list(&[("cpu", limits.0), ("memory", limits.1)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cpu_limit(cpu: &str) -> Container {
        c(("", ""), (cpu, ""))
    }

    fn sidecar(mut c: Container) -> Container {
        c.restart_policy = Some("Always".into());
        c
    }

    fn spec(containers: Vec<Container>, init: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            init_containers: (!init.is_empty()).then_some(init),
            ..Default::default()
        }
    }

    fn cfg(shares: u64, quota_milli: Option<u128>, memory: Option<i64>) -> PodCgroupResources {
        PodCgroupResources {
            cpu_shares: Some(shares),
            cpu_quota: quota_milli.map(|m| (milli_cpu_to_quota(m), 100_000)),
            memory_limit: memory,
        }
    }

    /// Upstream's `TestResourceConfigForPod` cases (those without pod-level resources, a tuned
    /// period or `cpuCFSQuota: false`, which kubenode does not have). Requests equal to the
    /// limits are spelled out, as API defaulting fills them in.
    #[test]
    fn resource_config_for_pod_as_upstream() {
        let cases: Vec<(&str, PodSpec, PodCgroupResources)> = vec![
            (
                "besteffort",
                spec(vec![c(("", ""), ("", ""))], vec![]),
                cfg(2, None, None),
            ),
            (
                "burstable-no-limits",
                spec(vec![c(("100m", "100Mi"), ("", ""))], vec![]),
                cfg(102, None, None),
            ),
            (
                "burstable-with-limits",
                spec(vec![c(("100m", "100Mi"), ("200m", "200Mi"))], vec![]),
                cfg(102, Some(200), Some(200 * MI)),
            ),
            (
                "burstable-partial-limits",
                spec(
                    vec![
                        c(("100m", "100Mi"), ("200m", "200Mi")),
                        c(("100m", "100Mi"), ("", "")),
                    ],
                    vec![],
                ),
                cfg(204, None, None),
            ),
            (
                "guaranteed",
                spec(vec![c(("100m", "100Mi"), ("100m", "100Mi"))], vec![]),
                cfg(102, Some(100), Some(100 * MI)),
            ),
            (
                "burstable-partial-limits-with-init-containers",
                spec(
                    vec![
                        c(("100m", "100m"), ("100m", "100Mi")),
                        c(("100m", "100m"), ("", "")),
                    ],
                    vec![
                        c(("100m", "100m"), ("100m", "100Mi")),
                        c(("100m", "100m"), ("", "")),
                    ],
                ),
                cfg(204, None, None),
            ),
        ];
        for (name, spec, want) in cases {
            assert_eq!(pod_cgroup_resources(&spec), want, "{name}");
        }
    }

    #[test]
    fn two_limited_containers_sum_and_the_quota_has_a_floor() {
        let two = spec(
            vec![
                c(("100m", "32Mi"), ("200m", "64Mi")),
                c(("50m", "16Mi"), ("100m", "32Mi")),
            ],
            vec![],
        );
        let want = cfg(153, Some(300), Some(96 * MI));
        assert_eq!(pod_cgroup_resources(&two), want);
        assert_eq!(want.cpu_quota, Some((30_000, 100_000)));
        // 5m + 3m is below the 1 ms minimum quota (`MinQuotaPeriod`).
        let tiny = spec(
            vec![
                c(("5m", "1Mi"), ("5m", "1Mi")),
                c(("3m", "1Mi"), ("3m", "1Mi")),
            ],
            vec![],
        );
        let got = pod_cgroup_resources(&tiny);
        assert_eq!(got.cpu_quota, Some((1000, 100_000)));
        assert_eq!(got.cpu_shares, Some(8), "8m × 1024 / 1000");
        // Burstable with a memory limit everywhere but a CPU limit missing: memory only.
        let memory_only = spec(
            vec![
                c(("100m", "32Mi"), ("", "64Mi")),
                c(("1", "16Mi"), ("1", "32Mi")),
            ],
            vec![],
        );
        assert_eq!(
            pod_cgroup_resources(&memory_only),
            cfg(1126, None, Some(96 * MI))
        );
    }

    /// Upstream's `TestPodResourceLimits` cases without resize status.
    #[test]
    fn pod_limits_as_upstream() {
        let cpu = |s: &str| parse_quantity(s, NANO).unwrap();
        let cases: Vec<(&str, PodSpec, u128)> = vec![
            (
                "larger init container",
                spec(vec![cpu_limit("1")], vec![cpu_limit("4")]),
                cpu("4"),
            ),
            (
                "larger containers",
                spec(vec![cpu_limit("2"), cpu_limit("3")], vec![cpu_limit("2")]),
                cpu("5"),
            ),
            (
                "restartable init container",
                spec(vec![cpu_limit("1")], vec![sidecar(cpu_limit("1"))]),
                cpu("2"),
            ),
            (
                // max(5, sidecars 1+2+3 + regular 1) = 7
                "multiple restartable init containers",
                spec(
                    vec![cpu_limit("1")],
                    vec![
                        cpu_limit("5"),
                        sidecar(cpu_limit("1")),
                        sidecar(cpu_limit("2")),
                        sidecar(cpu_limit("3")),
                    ],
                ),
                cpu("7"),
            ),
            (
                // init-2 needs 5 + the sidecars before it (1+2) = 8; the one after does not count
                "multiple restartable and regular init containers",
                spec(
                    vec![cpu_limit("1")],
                    vec![
                        cpu_limit("5"),
                        sidecar(cpu_limit("1")),
                        sidecar(cpu_limit("2")),
                        cpu_limit("5"),
                        sidecar(cpu_limit("3")),
                    ],
                ),
                cpu("8"),
            ),
            (
                "restartable-init, init and regular",
                spec(
                    vec![cpu_limit("100")],
                    vec![sidecar(cpu_limit("10")), cpu_limit("200")],
                ),
                cpu("210"),
            ),
            (
                "no limited containers",
                spec(vec![c(("", ""), ("", ""))], vec![]),
                0,
            ),
        ];
        for (name, spec, want) in cases {
            assert_eq!(pod_limits(&spec).0.cpu, want, "{name}");
        }
        // One limited and one unlimited init container: the limited one's limits.
        let s = spec(
            vec![c(("", ""), ("1", "1Gi"))],
            vec![c(("", ""), ("2", "2Gi")), c(("", ""), ("", ""))],
        );
        let (limits, cpu_declared, memory_declared) = pod_limits(&s);
        assert_eq!(limits.memory_bytes(), 2 * GI as u128);
        assert_eq!(limits.milli_cpu(), 2000);
        assert!(
            !cpu_declared && !memory_declared,
            "an init container has none"
        );
    }

    #[test]
    fn overhead_adds_to_requests_and_to_the_limits_that_are_set() {
        // Upstream's "pod overhead included": 5 CPUs limited + 1, memory unlimited stays so.
        let mut s = spec(vec![cpu_limit("2"), cpu_limit("3")], vec![cpu_limit("2")]);
        s.overhead = list(&[("cpu", "1"), ("memory", "1Gi")]);
        let (limits, ..) = pod_limits(&s);
        assert_eq!(limits.milli_cpu(), 6000);
        assert_eq!(limits.memory, 0);
        let mut s = spec(vec![c(("250m", "64Mi"), ("250m", "64Mi"))], vec![]);
        s.overhead = list(&[("cpu", "250m"), ("memory", "120Mi")]);
        assert_eq!(
            pod_cgroup_resources(&s),
            cfg(512, Some(500), Some(184 * MI)),
            "Guaranteed with overhead"
        );
    }

    #[test]
    fn a_plain_init_container_counts_with_the_sidecars_before_it() {
        // The sidecar has a CPU limit, the init container after it none: upstream's
        // `ContainerFn` sees the init container with the sidecar's limit, so the pod counts as
        // CPU-limited.
        let s = spec(
            vec![cpu_limit("1")],
            vec![sidecar(cpu_limit("500m")), c(("", ""), ("", ""))],
        );
        let (limits, cpu_declared, memory_declared) = pod_limits(&s);
        assert!(cpu_declared && !memory_declared);
        assert_eq!(limits.milli_cpu(), 1500);
        assert_eq!(pod_cgroup_resources(&s).cpu_quota, Some((150_000, 100_000)));
        // Requests the same way: max(1 + 0.5, 0.5 + 2) = 2.5 CPUs.
        let s = spec(
            vec![c(("1", ""), ("", ""))],
            vec![sidecar(c(("500m", ""), ("", ""))), c(("2", ""), ("", ""))],
        );
        assert_eq!(pod_requests::<CpuMemory>(&s).milli_cpu(), 2500);
        assert_eq!(pod_cgroup_resources(&s).cpu_shares, Some(2560));
    }

    #[test]
    fn qos_tiers_sum_the_burstable_pods_requests() {
        let burstable = spec(vec![c(("100m", "32Mi"), ("", ""))], vec![]);
        let sidecar_pod = spec(
            vec![c(("250m", ""), ("", ""))],
            vec![sidecar(c(("150m", ""), ("", "")))],
        );
        let guaranteed = spec(vec![c(("1", "1Gi"), ("1", "1Gi"))], vec![]);
        let best_effort = spec(vec![c(("", ""), ("", ""))], vec![]);
        let tiers = qos_tiers([&burstable, &sidecar_pod, &guaranteed, &best_effort]);
        // 100m + 250m + 150m: only the Burstable pods, sidecars included.
        assert_eq!(tiers[0], (BURSTABLE_CGROUP, cfg(512, None, None)));
        assert_eq!(tiers[1], (BEST_EFFORT_CGROUP, cfg(2, None, None)));
        // No Burstable pod: the minimum.
        assert_eq!(qos_tiers([&guaranteed])[0].1.cpu_shares, Some(2));
    }

    #[test]
    fn quantities_round_up_as_upstream() {
        // 1.5m rounds to 2m; sums are exact before rounding (0.5m + 0.5m = 1m).
        let s = spec(
            vec![
                c(("0.0005", ""), ("0.0005", "")),
                c(("0.0005", ""), ("0.0005", "")),
            ],
            vec![],
        );
        assert_eq!(pod_requests::<CpuMemory>(&s).milli_cpu(), 1);
        assert_eq!(pod_limits(&s).0.milli_cpu(), 1);
        let s = spec(vec![c(("", "1.5"), ("", "1.5"))], vec![]);
        assert_eq!(pod_limits(&s).0.memory_bytes(), 2);
    }
}
