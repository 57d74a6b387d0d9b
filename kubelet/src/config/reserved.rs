//! What the node keeps back from its pods: `kubeReserved`, `systemReserved` (and their flags
//! `--kube-reserved`, `--system-reserved`) and the hard eviction thresholds (`evictionHard`,
//! `--eviction-hard`, `mergeDefaultEvictionSettings`), which upstream's container manager
//! subtracts from the capacity to give the allocatable resources
//! (`GetNodeAllocatableReservation`, `node/capacity.rs` applies it), and `enforceNodeAllocatable`.
//!
//! The same thresholds drive the eviction manager (`crate::eviction`), which parses them again
//! with the soft ones.

use crate::validation::quantity::Quantity;
use std::collections::BTreeMap;

/// The resources `kubeReserved` and `systemReserved` may name (upstream `parseResourceList`).
const RESERVABLE: &[&str] = &["cpu", "memory", "ephemeral-storage", "pid"];

/// Upstream's eviction signals (`pkg/kubelet/eviction/api`), each a valid `evictionHard` key.
pub(crate) const SIGNALS: &[&str] = &[
    "memory.available",
    "allocatableMemory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
];

/// Upstream's default `evictionHard` on Linux (`DefaultEvictionHard`).
pub const DEFAULT_EVICTION_HARD: &[(&str, &str)] = &[
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
];

/// One reservation (`kubeReserved` or `systemReserved`): CPU in millicores, the rest in units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    /// `cpu`, in millicores.
    pub milli_cpu: i64,
    /// `memory`, in bytes.
    pub memory: i64,
    /// `ephemeral-storage`, in bytes.
    pub ephemeral_storage: i64,
    /// `pid`: process IDs (no capacity of the node is reported for them; upstream only sizes the
    /// reserved cgroups with it).
    pub pid: i64,
}

/// A hard eviction threshold's value: a quantity or a fraction of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// An absolute amount (bytes).
    Quantity(i64),
    /// A fraction of the capacity, upstream's float32 (`10%` is 0.1).
    Percentage(f32),
}

impl Threshold {
    /// Upstream `GetThresholdQuantity`: the amount of `capacity` the threshold stands for (a
    /// percentage truncated).
    pub fn of(&self, capacity: i64) -> i64 {
        match *self {
            Threshold::Quantity(q) => q,
            Threshold::Percentage(p) => (capacity as f64 * f64::from(p)) as i64,
        }
    }
}

/// The node allocatable settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAllocatable {
    /// `kubeReserved` as given (the flag's or the file's), for the configuration view.
    pub kube_reserved_list: BTreeMap<String, String>,
    /// `systemReserved` as given.
    pub system_reserved_list: BTreeMap<String, String>,
    /// The effective `evictionHard` (upstream's defaults when not set).
    pub eviction_hard_list: BTreeMap<String, String>,
    /// `kubeReserved`.
    pub kube_reserved: Reserved,
    /// `systemReserved`.
    pub system_reserved: Reserved,
    /// `memory.available`, when set (and not disabled by `0%`/`100%`).
    pub eviction_memory: Option<Threshold>,
    /// `nodefs.available`, when set.
    pub eviction_nodefs: Option<Threshold>,
}

impl Default for NodeAllocatable {
    /// Upstream's defaults: nothing reserved, the default hard eviction thresholds.
    fn default() -> Self {
        let hard = DEFAULT_EVICTION_HARD
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NodeAllocatable::new(BTreeMap::new(), BTreeMap::new(), hard)
            .expect("upstream's defaults are valid")
    }
}

impl NodeAllocatable {
    /// The settings from the three lists; an error names the list's entry at fault (the caller
    /// adds the key or flag).
    pub fn new(
        kube_reserved: BTreeMap<String, String>,
        system_reserved: BTreeMap<String, String>,
        eviction_hard: BTreeMap<String, String>,
    ) -> Result<Self, (&'static str, String)> {
        let kube = parse_reserved(&kube_reserved).map_err(|e| ("kubeReserved", e))?;
        let system = parse_reserved(&system_reserved).map_err(|e| ("systemReserved", e))?;
        let mut eviction_memory = None;
        let mut eviction_nodefs = None;
        for (signal, value) in &eviction_hard {
            let t = parse_threshold(signal, value).map_err(|e| ("evictionHard", e))?;
            match signal.as_str() {
                "memory.available" => eviction_memory = t,
                "nodefs.available" => eviction_nodefs = t,
                _ => {}
            }
        }
        Ok(NodeAllocatable {
            kube_reserved_list: kube_reserved,
            system_reserved_list: system_reserved,
            eviction_hard_list: eviction_hard,
            kube_reserved: kube,
            system_reserved: system,
            eviction_memory,
            eviction_nodefs,
        })
    }
}

/// Upstream `parseResourceList`: cpu, memory, ephemeral-storage and pid, each a quantity not
/// below zero.
fn parse_reserved(list: &BTreeMap<String, String>) -> Result<Reserved, String> {
    let mut r = Reserved::default();
    for (name, value) in list {
        if !RESERVABLE.contains(&name.as_str()) {
            return Err(format!(
                "cannot reserve {name:?} resource (only {})",
                RESERVABLE.join(", ")
            ));
        }
        let q = Quantity::parse(value).map_err(|e| {
            format!("failed to parse quantity {value:?} for {name:?} resource: {e}")
        })?;
        if q.is_negative() {
            return Err(format!(
                "resource quantity for {name:?} cannot be negative: {value}"
            ));
        }
        match name.as_str() {
            "cpu" => r.milli_cpu = q.milli_value(),
            "memory" => r.memory = q.value(),
            "ephemeral-storage" => r.ephemeral_storage = q.value(),
            _ => r.pid = q.value(),
        }
    }
    Ok(r)
}

/// Upstream `parseThresholdStatement` for a hard threshold (`<` implied): a signal of
/// upstream's list, and a quantity above zero or a percentage; `0%` and `100%` disable it
/// (`None`).
pub(crate) fn parse_threshold(signal: &str, value: &str) -> Result<Option<Threshold>, String> {
    if !SIGNALS.contains(&signal) {
        return Err(format!("unsupported eviction signal {signal:?}"));
    }
    if let Some(number) = value.strip_suffix('%') {
        if value == "0%" || value == "100%" {
            return Ok(None);
        }
        let p: f32 = number
            .parse()
            .map_err(|_| format!("invalid percentage {value:?} for {signal}"))?;
        if p.is_nan() || p < 0.0 {
            return Err(format!(
                "eviction percentage threshold {signal} must be >= 0%: {value}"
            ));
        }
        if p > 100.0 {
            return Err(format!(
                "eviction percentage threshold {signal} must be <= 100%: {value}"
            ));
        }
        return Ok(Some(Threshold::Percentage(p / 100.0)));
    }
    let q = Quantity::parse(value).map_err(|e| format!("{signal}: {value:?}: {e}"))?;
    if q.is_negative() || q.is_zero() {
        return Err(format!(
            "eviction threshold {signal} must be positive: {value}"
        ));
    }
    Ok(Some(Threshold::Quantity(q.value())))
}

/// Upstream's defaulting of `evictionHard`: the defaults when not set; with
/// `mergeDefaultEvictionSettings`, the defaults for the signals the setting does not name.
pub fn effective_eviction_hard(
    given: Option<&BTreeMap<String, String>>,
    merge_defaults: bool,
) -> BTreeMap<String, String> {
    let defaults = DEFAULT_EVICTION_HARD
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()));
    match given {
        None => defaults.collect(),
        Some(given) => {
            let mut out = given.clone();
            if merge_defaults {
                for (k, v) in defaults {
                    out.entry(k).or_insert(v);
                }
            }
            out
        }
    }
}

/// Parses a flag's `KEY=VALUE,...` (`separator` `=`) or `KEY<VALUE,...` (`<`, `--eviction-hard`)
/// lists, each flag occurrence adding to the map.
pub fn parse_flag_map(
    values: &[String],
    separator: char,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in values.iter().flat_map(|v| v.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once(separator)
            .ok_or_else(|| format!("{item:?}: expected KEY{separator}VALUE"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Upstream's `enforceNodeAllocatable` values. kubenode accepts `pods` (the default) and
/// `none`: it admits pods against the allocatable resources and does not limit the `/kubepods`
/// cgroup, nor create the kube- and system-reserved cgroups.
pub fn check_enforce_node_allocatable(values: &[String]) -> Result<(), String> {
    for v in values {
        match v.as_str() {
            "pods" | "none" => {}
            "kube-reserved"
            | "system-reserved"
            | "kube-reserved-compressible"
            | "system-reserved-compressible" => {
                return Err(format!(
                    "{v:?} is not supported by kubenode: it does not enforce the kube-reserved \
                     and system-reserved cgroups (use \"pods\")"
                ))
            }
            other => {
                return Err(format!(
                    "invalid option {other:?}: valid options are \"pods\", \"system-reserved\", \
                     \"system-reserved-compressible\", \"kube-reserved\", \
                     \"kube-reserved-compressible\" or \"none\""
                ))
            }
        }
    }
    if values.len() > 1 && values.iter().any(|v| v == "none") {
        return Err("\"none\" cannot be combined with other options".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_upstreams() {
        let d = NodeAllocatable::default();
        assert_eq!(d.kube_reserved, Reserved::default());
        assert_eq!(d.eviction_memory, Some(Threshold::Quantity(100 << 20)));
        assert_eq!(d.eviction_nodefs, Some(Threshold::Percentage(0.1)));
        assert_eq!(d.eviction_hard_list.len(), 5);
    }

    #[test]
    fn reserved_lists_parse_and_are_checked() {
        let a = NodeAllocatable::new(
            map(&[("cpu", "250m"), ("memory", "1Gi"), ("pid", "1000")]),
            map(&[("ephemeral-storage", "1G"), ("cpu", "1")]),
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            a.kube_reserved,
            Reserved {
                milli_cpu: 250,
                memory: 1 << 30,
                ephemeral_storage: 0,
                pid: 1000
            }
        );
        assert_eq!(a.system_reserved.milli_cpu, 1000);
        assert_eq!(a.system_reserved.ephemeral_storage, 1_000_000_000);
        assert_eq!((a.eviction_memory, a.eviction_nodefs), (None, None));

        let e = |k: &[(&str, &str)], s: &[(&str, &str)]| {
            NodeAllocatable::new(map(k), map(s), BTreeMap::new()).unwrap_err()
        };
        assert_eq!(
            e(&[("nvidia.com/gpu", "1")], &[]),
            (
                "kubeReserved",
                "cannot reserve \"nvidia.com/gpu\" resource (only cpu, memory, \
                 ephemeral-storage, pid)"
                    .to_string()
            )
        );
        assert_eq!(
            e(&[], &[("memory", "-1Mi")]),
            (
                "systemReserved",
                "resource quantity for \"memory\" cannot be negative: -1Mi".to_string()
            )
        );
        let (key, msg) = e(&[("cpu", "lots")], &[]);
        assert_eq!(key, "kubeReserved");
        assert!(
            msg.starts_with("failed to parse quantity \"lots\" for \"cpu\" resource"),
            "{msg}"
        );
    }

    #[test]
    fn eviction_thresholds_as_upstream_parses_them() {
        let a = NodeAllocatable::new(
            BTreeMap::new(),
            BTreeMap::new(),
            map(&[
                ("memory.available", "5%"),
                ("nodefs.available", "2Gi"),
                ("imagefs.available", "0%"),
                ("pid.available", "10%"),
            ]),
        )
        .unwrap();
        assert_eq!(a.eviction_memory, Some(Threshold::Percentage(0.05)));
        assert_eq!(a.eviction_nodefs, Some(Threshold::Quantity(2 << 30)));
        let disabled = NodeAllocatable::new(
            BTreeMap::new(),
            BTreeMap::new(),
            map(&[("memory.available", "100%"), ("nodefs.available", "0%")]),
        )
        .unwrap();
        assert_eq!(
            (disabled.eviction_memory, disabled.eviction_nodefs),
            (None, None)
        );
        let e = |k: &str, v: &str| {
            NodeAllocatable::new(BTreeMap::new(), BTreeMap::new(), map(&[(k, v)]))
                .unwrap_err()
                .1
        };
        assert_eq!(
            e("memory.free", "1Mi"),
            "unsupported eviction signal \"memory.free\""
        );
        assert_eq!(
            e("memory.available", "0"),
            "eviction threshold memory.available must be positive: 0"
        );
        assert_eq!(
            e("memory.available", "-1Mi"),
            "eviction threshold memory.available must be positive: -1Mi"
        );
        assert_eq!(
            e("nodefs.available", "101%"),
            "eviction percentage threshold nodefs.available must be <= 100%: 101%"
        );
        assert_eq!(
            e("nodefs.available", "-1%"),
            "eviction percentage threshold nodefs.available must be >= 0%: -1%"
        );
        assert_eq!(Threshold::Percentage(0.1).of(50_000_000_000), 5_000_000_074);
    }

    #[test]
    fn eviction_defaults_replaced_or_merged() {
        let given = map(&[("memory.available", "1Gi")]);
        assert_eq!(effective_eviction_hard(Some(&given), false), given);
        let merged = effective_eviction_hard(Some(&given), true);
        assert_eq!(merged.len(), 5);
        assert_eq!(merged["memory.available"], "1Gi");
        assert_eq!(merged["nodefs.available"], "10%");
        assert_eq!(effective_eviction_hard(None, false).len(), 5);
    }

    #[test]
    fn flag_maps() {
        assert_eq!(
            parse_flag_map(&["cpu=100m,memory=1Gi".into(), "pid=10".into()], '=').unwrap(),
            map(&[("cpu", "100m"), ("memory", "1Gi"), ("pid", "10")])
        );
        assert_eq!(
            parse_flag_map(&["memory.available<1Gi,nodefs.available<5%".into()], '<').unwrap(),
            map(&[("memory.available", "1Gi"), ("nodefs.available", "5%")])
        );
        assert_eq!(
            parse_flag_map(&["cpu:1".into()], '=').unwrap_err(),
            "\"cpu:1\": expected KEY=VALUE"
        );
    }

    #[test]
    fn enforce_node_allocatable_values() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_enforce_node_allocatable(&v(&["pods"])).is_ok());
        assert!(check_enforce_node_allocatable(&v(&["none"])).is_ok());
        assert!(check_enforce_node_allocatable(&v(&[])).is_ok());
        let e = check_enforce_node_allocatable(&v(&["pods", "kube-reserved"])).unwrap_err();
        assert!(
            e.starts_with("\"kube-reserved\" is not supported by kubenode"),
            "{e}"
        );
        assert!(check_enforce_node_allocatable(&v(&["pod"])).is_err());
        assert!(check_enforce_node_allocatable(&v(&["pods", "none"])).is_err());
    }
}
