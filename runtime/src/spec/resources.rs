//! Resource requests/limits to OCI cgroup settings, Kubernetes constants
//! (kubernetes:pkg/kubelet/cm/helpers_linux.go): cpu shares = milliCPU × 1024
//! / 1000 (min 2), CFS quota over a 100 ms period (min 1000 µs), memory limit, and no swap
//! (see [`linux_resources`]).

use k8s_openapi::api::core::v1::ResourceRequirements;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder,
};

use super::{HostLimits, SpecError};

/// `MinShares`.
pub const MIN_SHARES: u64 = 2;
/// `MaxShares` (the kernel's largest `cpu.shares`).
pub const MAX_SHARES: u64 = 262_144;
/// `SharesPerCPU`.
pub const SHARES_PER_CPU: u64 = 1024;
/// `QuotaPeriod` in µs (100 ms).
pub const QUOTA_PERIOD_US: u64 = 100_000;
/// `MinQuotaPeriod` in µs.
pub const MIN_QUOTA_US: i64 = 1000;

/// Parses a Kubernetes quantity (`100m`, `0.5`, `128Mi`, `1G`, `1e3`) and
/// returns `ceil(value × scale)`; `scale` 1000 gives milli-units.
pub fn parse_quantity(q: &str, scale: u128) -> Result<u128, SpecError> {
    let bad = || SpecError::Quantity(q.to_string());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (int_part, frac_part) = number
        .trim_start_matches('+')
        .split_once('.')
        .unwrap_or((number.trim_start_matches('+'), ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    let digits = format!("{int_part}{frac_part}");
    let mantissa: u128 = digits.parse().map_err(|_| bad())?;
    let mut num = mantissa.checked_mul(scale).ok_or_else(bad)?;
    let mut den: u128 = 10u128.checked_pow(frac_part.len() as u32).ok_or_else(bad)?;
    let pow10 = |e: u32| 10u128.checked_pow(e).ok_or_else(bad);
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "n" => (1, pow10(9)?),
        "u" => (1, pow10(6)?),
        "m" => (1, pow10(3)?),
        "k" => (pow10(3)?, 1),
        "M" => (pow10(6)?, 1),
        "G" => (pow10(9)?, 1),
        "T" => (pow10(12)?, 1),
        "P" => (pow10(15)?, 1),
        "E" => (pow10(18)?, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            if exp >= 0 {
                (pow10(exp as u32)?, 1)
            } else {
                (1, pow10(exp.unsigned_abs())?)
            }
        }
        _ => return Err(bad()),
    };
    num = num.checked_mul(mul).ok_or_else(bad)?;
    den = den.checked_mul(div).ok_or_else(bad)?;
    Ok(num.div_ceil(den))
}

fn quantity(
    reqs: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
    name: &str,
    scale: u128,
) -> Result<Option<u128>, SpecError> {
    reqs.and_then(|m| m.get(name))
        .map(|q| parse_quantity(&q.0, scale))
        .transpose()
}

/// `MilliCPUToShares`: within `MIN_SHARES..=MAX_SHARES`.
pub fn milli_cpu_to_shares(milli: u128) -> u64 {
    let shares = milli.saturating_mul(u128::from(SHARES_PER_CPU)) / 1000;
    shares.clamp(u128::from(MIN_SHARES), u128::from(MAX_SHARES)) as u64
}

/// `MilliCPUToQuota` over the 100 ms CFS period (`QUOTA_PERIOD_US`), for a CPU limit that is
/// set (upstream gives a zero limit no quota at all).
pub fn milli_cpu_to_quota(milli: u128) -> i64 {
    let quota =
        i64::try_from(milli.saturating_mul(u128::from(QUOTA_PERIOD_US)) / 1000).unwrap_or(i64::MAX);
    quota.max(MIN_QUOTA_US)
}

/// The cgroup settings of a container's resources; devices are denied except
/// what the runtime adds itself.
///
/// Swap: kubenode runs the kubelet's `NoSwap` behaviour (the only one it has). Where the
/// memory controller accounts swap (`limits.swap_controller`), a container with a memory
/// limit gets `memory.swap` = that limit: the OCI value is memory + swap, so no swap at all
/// (containerd's `WithResources`; the kubelet's `ConfigureNoSwap` on cgroup v1). On cgroup v2
/// the kubelet also gives a container without a memory limit `memory.swap.max = 0`.
pub fn linux_resources(
    res: Option<&ResourceRequirements>,
    privileged: bool,
    host: &HostLimits,
) -> Result<LinuxResources, SpecError> {
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let cpu_request = quantity(requests, "cpu", 1000)?;
    let cpu_limit = quantity(limits, "cpu", 1000)?;
    let memory_limit = quantity(limits, "memory", 1)?;
    // A zero (or absent) request with a limit takes the shares from the limit, as the kubelet's
    // `calculateLinuxResources` does; a zero limit sets no quota (`MilliCPUToQuota(0)` is 0).
    let cpu_request = cpu_request.unwrap_or(0);
    let cpu_limit = cpu_limit.filter(|l| *l > 0);
    let shares = milli_cpu_to_shares(match cpu_limit {
        Some(limit) if cpu_request == 0 => limit,
        _ => cpu_request,
    });
    let mut cpu = LinuxCpuBuilder::default().shares(shares);
    if let Some(limit) = cpu_limit {
        cpu = cpu.quota(milli_cpu_to_quota(limit)).period(QUOTA_PERIOD_US);
    }
    let mut builder = LinuxResourcesBuilder::default()
        .devices(vec![oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
            .allow(privileged)
            .access("rwm")
            .build()
            .map_err(SpecError::Oci)?])
        .cpu(cpu.build().map_err(SpecError::Oci)?);
    if let Some(bytes) = memory_limit.filter(|b| *b > 0) {
        let bytes = i64::try_from(bytes)
            .map_err(|_| SpecError::Quantity(format!("memory limit {bytes}")))?;
        let mut memory = LinuxMemoryBuilder::default().limit(bytes);
        if host.swap_controller {
            memory = memory.swap(bytes);
        }
        builder = builder.memory(memory.build().map_err(SpecError::Oci)?);
    } else if host.swap_controller && host.cgroup_v2 {
        builder = builder.unified(std::collections::HashMap::from([(
            "memory.swap.max".to_string(),
            "0".to_string(),
        )]));
    }
    builder.build().map_err(SpecError::Oci)
}

#[cfg(test)]
mod tests {
    use super::super::swap_controller_available;
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m", 1000).unwrap(), 100);
        assert_eq!(parse_quantity("0.5", 1000).unwrap(), 500);
        assert_eq!(parse_quantity("2", 1000).unwrap(), 2000);
        assert_eq!(parse_quantity("1.5m", 1000).unwrap(), 2, "rounded up");
        assert_eq!(parse_quantity("128Mi", 1).unwrap(), 128 << 20);
        assert_eq!(parse_quantity("1G", 1).unwrap(), 1_000_000_000);
        assert_eq!(parse_quantity("1e3", 1).unwrap(), 1000);
        assert_eq!(parse_quantity("1.5Gi", 1).unwrap(), 3 << 29);
        assert!(parse_quantity("abc", 1).is_err());
        assert!(parse_quantity("1Xi", 1).is_err());
    }

    fn limits(cgroup_v2: bool, swap_controller: bool) -> HostLimits {
        HostLimits {
            nofile_hard: 1024,
            min_oom_score_adj: 0,
            cgroup_v2,
            capabilities: 0,
            swap_controller,
        }
    }

    fn memory_limit(limit: Option<&str>) -> ResourceRequirements {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        ResourceRequirements {
            limits: limit.map(|l| [("memory".to_string(), Quantity(l.into()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_memory_limit_caps_swap_where_swap_is_accounted() {
        for v2 in [false, true] {
            let r = linux_resources(Some(&memory_limit(Some("64Mi"))), false, &limits(v2, true))
                .unwrap();
            let m = r.memory().as_ref().unwrap();
            assert_eq!(m.limit(), Some(64 << 20));
            assert_eq!(
                m.swap(),
                Some(64 << 20),
                "memory + swap = the limit (v2 {v2})"
            );
            assert!(r.unified().is_none());
        }
        // No swap accounting in the kernel: runc could not write the file, nothing is set.
        let r = linux_resources(
            Some(&memory_limit(Some("64Mi"))),
            false,
            &limits(false, false),
        )
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().swap(), None);
    }

    #[test]
    fn without_a_memory_limit_only_cgroup_v2_forbids_swap() {
        let r = linux_resources(Some(&memory_limit(None)), false, &limits(true, true)).unwrap();
        assert!(r.memory().is_none());
        assert_eq!(
            r.unified()
                .as_ref()
                .and_then(|u| u.get("memory.swap.max"))
                .map(String::as_str),
            Some("0")
        );
        for (v2, swap) in [(false, true), (true, false), (false, false)] {
            let r = linux_resources(None, false, &limits(v2, swap)).unwrap();
            assert!(
                r.memory().is_none() && r.unified().is_none(),
                "v2 {v2} swap {swap}"
            );
        }
    }

    #[test]
    fn swap_controller_detection() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(!swap_controller_available(root, false, ""));
        std::fs::create_dir_all(root.join("memory")).unwrap();
        std::fs::write(root.join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
        assert!(swap_controller_available(root, false, ""));
        // v2: the agent's own cgroup, or a child of the root when the agent sits in the root.
        assert!(!swap_controller_available(
            root,
            true,
            "0::/system.slice/kn.service\n"
        ));
        std::fs::create_dir_all(root.join("system.slice/kn.service")).unwrap();
        std::fs::write(root.join("system.slice/kn.service/memory.swap.max"), "max").unwrap();
        assert!(swap_controller_available(
            root,
            true,
            "0::/system.slice/kn.service\n"
        ));
        assert!(!swap_controller_available(root, true, "0::/\n"));
        std::fs::create_dir_all(root.join("init.scope")).unwrap();
        std::fs::write(root.join("init.scope/memory.swap.max"), "max").unwrap();
        assert!(swap_controller_available(root, true, "0::/\n"));
    }

    fn cpu(request: Option<&str>, limit: Option<&str>) -> (Option<u64>, Option<i64>) {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let one = |q: Option<&str>| q.map(|q| [("cpu".to_string(), Quantity(q.into()))].into());
        let res = ResourceRequirements {
            requests: one(request),
            limits: one(limit),
            ..Default::default()
        };
        let r = linux_resources(Some(&res), false, &limits(false, false)).unwrap();
        let c = r.cpu().as_ref().unwrap();
        (c.shares(), c.quota())
    }

    #[test]
    fn container_cpu_as_calculate_linux_resources() {
        assert_eq!(cpu(Some("250m"), Some("500m")), (Some(256), Some(50_000)));
        assert_eq!(cpu(None, Some("500m")), (Some(512), Some(50_000)));
        // A zero request takes the shares from the limit.
        assert_eq!(cpu(Some("0"), Some("500m")), (Some(512), Some(50_000)));
        // A zero limit is no limit: no quota (not the 1 ms floor).
        assert_eq!(cpu(Some("0"), Some("0")), (Some(2), None));
        assert_eq!(cpu(None, None), (Some(2), None));
    }

    #[test]
    fn cpu_formulas_match_kubelet() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(256_000), 262_144);
        assert_eq!(milli_cpu_to_shares(300_000), 262_144, "MaxShares");
        assert_eq!(milli_cpu_to_quota(5), 1000);
        assert_eq!(milli_cpu_to_quota(250), 25_000);
        assert_eq!(milli_cpu_to_quota(2000), 200_000);
    }
}
