//! Eviction signals and thresholds, parsed as upstream's `ParseThresholdConfig`
//! (`pkg/kubelet/eviction/helpers.go`): `evictionHard`, `evictionSoft` (each needing its
//! `evictionSoftGracePeriod`) and `evictionMinimumReclaim`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::reserved::{parse_threshold, Threshold as Value};
use crate::validation::quantity::Quantity;

/// An eviction signal (upstream `evictionapi.Signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// `memory.available`: node memory capacity less the node's working set.
    MemoryAvailable,
    /// `allocatableMemory.available`: measured on the pods' cgroup, which kubenode's summary
    /// does not report: parsed, never observed (upstream logs the same when it lacks it).
    AllocatableMemoryAvailable,
    /// `nodefs.available`: statfs of the kubelet's root directory.
    NodeFsAvailable,
    /// `nodefs.inodesFree`.
    NodeFsInodesFree,
    /// `imagefs.available`: statfs of the image store.
    ImageFsAvailable,
    /// `imagefs.inodesFree`.
    ImageFsInodesFree,
    /// `containerfs.available`: upstream derives it from nodefs or imagefs and ignores a
    /// configured one; so does kubenode.
    ContainerFsAvailable,
    /// `containerfs.inodesFree`: as `containerfs.available`.
    ContainerFsInodesFree,
    /// `pid.available`: `kernel.pid_max` less the processes running.
    PidAvailable,
}

/// The node condition a signal's threshold sets (upstream `signalToNodeCondition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pressure {
    /// `MemoryPressure`.
    Memory,
    /// `DiskPressure`.
    Disk,
    /// `PIDPressure`.
    Pid,
}

impl Pressure {
    /// Every pressure condition, in the order the Node status lists them.
    pub const ALL: [Pressure; 3] = [Pressure::Memory, Pressure::Disk, Pressure::Pid];

    /// The condition type.
    pub fn condition_type(self) -> &'static str {
        match self {
            Pressure::Memory => "MemoryPressure",
            Pressure::Disk => "DiskPressure",
            Pressure::Pid => "PIDPressure",
        }
    }

    /// Upstream's reason and message (`pkg/kubelet/nodestatus/setters.go`) while the
    /// condition is `True` (`under`) or `False`.
    pub fn reason_and_message(self, under: bool) -> (&'static str, &'static str) {
        match (self, under) {
            (Pressure::Memory, true) => (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (Pressure::Memory, false) => (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (Pressure::Disk, true) => ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            (Pressure::Disk, false) => ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            (Pressure::Pid, true) => (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (Pressure::Pid, false) => (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        }
    }
}

/// The resource a signal reclaims (upstream `signalToResource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `memory`.
    Memory,
    /// `ephemeral-storage`.
    EphemeralStorage,
    /// `inodes` (internal to the eviction manager).
    Inodes,
    /// `pids` (internal to the eviction manager).
    Pids,
}

impl Resource {
    /// The resource name as upstream prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
            Resource::Pids => "pids",
        }
    }

    /// Whether amounts of it are bytes (printed as BinarySI quantities) rather than counts
    /// (DecimalSI).
    pub fn is_bytes(self) -> bool {
        matches!(self, Resource::Memory | Resource::EphemeralStorage)
    }
}

impl Signal {
    /// The signal named `name` (upstream's spelling).
    pub fn parse(name: &str) -> Option<Signal> {
        Some(match name {
            "memory.available" => Signal::MemoryAvailable,
            "allocatableMemory.available" => Signal::AllocatableMemoryAvailable,
            "nodefs.available" => Signal::NodeFsAvailable,
            "nodefs.inodesFree" => Signal::NodeFsInodesFree,
            "imagefs.available" => Signal::ImageFsAvailable,
            "imagefs.inodesFree" => Signal::ImageFsInodesFree,
            "containerfs.available" => Signal::ContainerFsAvailable,
            "containerfs.inodesFree" => Signal::ContainerFsInodesFree,
            "pid.available" => Signal::PidAvailable,
            _ => return None,
        })
    }

    /// Upstream's name of the signal.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::ContainerFsAvailable => "containerfs.available",
            Signal::ContainerFsInodesFree => "containerfs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The node condition its threshold sets.
    pub fn pressure(self) -> Pressure {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => Pressure::Memory,
            Signal::PidAvailable => Pressure::Pid,
            _ => Pressure::Disk,
        }
    }

    /// The resource it reclaims.
    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => Resource::Memory,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable | Signal::ContainerFsAvailable => {
                Resource::EphemeralStorage
            }
            Signal::NodeFsInodesFree
            | Signal::ImageFsInodesFree
            | Signal::ContainerFsInodesFree => Resource::Inodes,
            Signal::PidAvailable => Resource::Pids,
        }
    }
}

/// One threshold: `signal < value`, hard (no grace period) or soft.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The signal.
    pub signal: Signal,
    /// The amount, or a fraction of the capacity.
    pub value: Value,
    /// The value as written (`100Mi`, `10%`), for messages.
    pub text: String,
    /// How long the threshold must be met before it acts; zero for a hard threshold.
    pub grace_period: Duration,
    /// `evictionMinimumReclaim`: once met, the threshold holds until this much more than it
    /// is available.
    pub min_reclaim: Option<Value>,
}

impl Threshold {
    /// Upstream `isHardEvictionThreshold`.
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }

    /// Upstream `GetThresholdQuantity` of the value against `capacity`.
    pub fn quantity(&self, capacity: i64) -> i64 {
        self.value.of(capacity)
    }

    /// Whether `available` (of `capacity`) meets it; with `enforce_min_reclaim`, the minimum
    /// reclaim is added to the threshold first (upstream `thresholdsMet`).
    pub fn met(&self, available: i64, capacity: i64, enforce_min_reclaim: bool) -> bool {
        let mut q = self.quantity(capacity);
        if enforce_min_reclaim {
            if let Some(r) = &self.min_reclaim {
                q = q.saturating_add(r.of(capacity));
            }
        }
        q > available
    }
}

/// The eviction settings (the KubeletConfiguration keys), resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionConfig {
    /// Hard, then soft thresholds.
    pub thresholds: Vec<Threshold>,
    /// `evictionPressureTransitionPeriod`: how long a pressure condition stays after its
    /// threshold is last met.
    pub pressure_transition_period: Duration,
    /// `evictionMaxPodGracePeriod` (seconds): the longest grace period a pod evicted for a
    /// soft threshold gets; 0 or less: the pod's own.
    pub max_pod_grace_period_seconds: i64,
}

/// `evictionPressureTransitionPeriod`'s default.
pub const DEFAULT_PRESSURE_TRANSITION_PERIOD: Duration = Duration::from_secs(300);

impl Default for EvictionConfig {
    /// Upstream's defaults: the default hard thresholds, nothing soft.
    fn default() -> Self {
        let hard = crate::config::reserved::DEFAULT_EVICTION_HARD
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EvictionConfig::parse(
            &hard,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            DEFAULT_PRESSURE_TRANSITION_PERIOD,
            0,
        )
        .expect("upstream's defaults are valid")
    }
}

fn signal_of(name: &str) -> Result<Signal, String> {
    Signal::parse(name).ok_or_else(|| format!("unsupported eviction signal {name:?}"))
}

impl EvictionConfig {
    /// Upstream `ParseThresholdConfig` of the four maps; an error is `(key, message)`, the key
    /// being the KubeletConfiguration field at fault.
    pub fn parse(
        hard: &BTreeMap<String, String>,
        soft: &BTreeMap<String, String>,
        soft_grace: &BTreeMap<String, String>,
        min_reclaim: &BTreeMap<String, String>,
        pressure_transition_period: Duration,
        max_pod_grace_period_seconds: i64,
    ) -> Result<EvictionConfig, (&'static str, String)> {
        let statements = |map: &BTreeMap<String, String>, key: &'static str| {
            let mut out = Vec::new();
            for (name, text) in map {
                let signal = signal_of(name).map_err(|e| (key, e))?;
                if let Some(value) = parse_threshold(name, text).map_err(|e| (key, e))? {
                    out.push(Threshold {
                        signal,
                        value,
                        text: text.clone(),
                        grace_period: Duration::ZERO,
                        min_reclaim: None,
                    });
                }
            }
            Ok::<_, (&'static str, String)>(out)
        };
        let mut thresholds = statements(hard, "evictionHard")?;
        let mut graces = BTreeMap::new();
        for (name, text) in soft_grace {
            let signal = signal_of(name).map_err(|e| ("evictionSoftGracePeriod", e))?;
            let d = crate::duration::parse_duration(text).map_err(|e| {
                (
                    "evictionSoftGracePeriod",
                    format!(
                        "invalid eviction grace period specified: {text}, must be a positive value ({e})"
                    ),
                )
            })?;
            graces.insert(signal, d);
        }
        let mut reclaims = BTreeMap::new();
        for (name, text) in min_reclaim {
            let key = "evictionMinimumReclaim";
            let signal = signal_of(name).map_err(|e| (key, e))?;
            let value = if let Some(number) = text.strip_suffix('%') {
                let p: f32 = number
                    .parse()
                    .map_err(|_| (key, format!("invalid percentage {text:?} for {name}")))?;
                if p.is_nan() || p <= 0.0 {
                    return Err((
                        key,
                        format!(
                            "eviction percentage minimum reclaim {name} must be positive: {text}"
                        ),
                    ));
                }
                Value::Percentage(p / 100.0)
            } else {
                let q =
                    Quantity::parse(text).map_err(|e| (key, format!("{name}: {text:?}: {e}")))?;
                if q.is_negative() {
                    return Err((
                        key,
                        format!("negative eviction minimum reclaim specified for {name}"),
                    ));
                }
                Value::Quantity(q.value())
            };
            reclaims.insert(signal, value);
        }
        let mut softs = statements(soft, "evictionSoft")?;
        for t in &mut softs {
            t.grace_period = *graces.get(&t.signal).ok_or_else(|| {
                (
                    "evictionSoftGracePeriod",
                    format!(
                        "grace period must be specified for the soft eviction threshold {}",
                        t.signal.as_str()
                    ),
                )
            })?;
        }
        thresholds.extend(softs);
        for t in &mut thresholds {
            t.min_reclaim = reclaims.get(&t.signal).copied();
        }
        Ok(EvictionConfig {
            thresholds,
            pressure_transition_period,
            max_pod_grace_period_seconds,
        })
    }
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

    fn parse(
        hard: &[(&str, &str)],
        soft: &[(&str, &str)],
        grace: &[(&str, &str)],
        reclaim: &[(&str, &str)],
    ) -> Result<EvictionConfig, (&'static str, String)> {
        EvictionConfig::parse(
            &map(hard),
            &map(soft),
            &map(grace),
            &map(reclaim),
            DEFAULT_PRESSURE_TRANSITION_PERIOD,
            0,
        )
    }

    #[test]
    fn defaults_are_upstreams_hard_thresholds() {
        let c = EvictionConfig::default();
        let got: Vec<(&str, &str, bool)> = c
            .thresholds
            .iter()
            .map(|t| (t.signal.as_str(), t.text.as_str(), t.is_hard()))
            .collect();
        assert_eq!(
            got,
            [
                ("imagefs.available", "15%", true),
                ("imagefs.inodesFree", "5%", true),
                ("memory.available", "100Mi", true),
                ("nodefs.available", "10%", true),
                ("nodefs.inodesFree", "5%", true),
            ]
        );
        assert_eq!(c.pressure_transition_period, Duration::from_secs(300));
        let mem = &c.thresholds[2];
        assert_eq!(mem.value, Value::Quantity(100 << 20));
        assert_eq!(c.thresholds[3].value, Value::Percentage(0.1));
    }

    #[test]
    fn quantities_percentages_soft_thresholds_and_minimum_reclaim() {
        let c = parse(
            &[("memory.available", "1Gi"), ("pid.available", "0%")],
            &[("nodefs.available", "20%")],
            &[("nodefs.available", "1m30s")],
            &[("nodefs.available", "5%"), ("memory.available", "500Mi")],
        )
        .unwrap();
        assert_eq!(c.thresholds.len(), 2, "0% disables pid.available");
        let mem = &c.thresholds[0];
        assert_eq!(mem.signal, Signal::MemoryAvailable);
        assert!(mem.is_hard());
        assert_eq!(mem.min_reclaim, Some(Value::Quantity(500 << 20)));
        let nodefs = &c.thresholds[1];
        assert_eq!(nodefs.grace_period, Duration::from_secs(90));
        assert!(!nodefs.is_hard());
        assert_eq!(nodefs.min_reclaim, Some(Value::Percentage(0.05)));
        // 20 % of 1000 is 200: met below it; with the minimum reclaim, below 250.
        assert!(nodefs.met(199, 1000, false));
        assert!(!nodefs.met(200, 1000, false));
        assert!(nodefs.met(240, 1000, true));
        assert!(!nodefs.met(250, 1000, true));
    }

    #[test]
    fn invalid_settings_name_their_key() {
        assert_eq!(
            parse(&[("memory.free", "1Mi")], &[], &[], &[]).unwrap_err(),
            (
                "evictionHard",
                "unsupported eviction signal \"memory.free\"".into()
            )
        );
        assert_eq!(
            parse(&[("nodefs.available", "150%")], &[], &[], &[]).unwrap_err(),
            (
                "evictionHard",
                "eviction percentage threshold nodefs.available must be <= 100%: 150%".into()
            )
        );
        assert_eq!(
            parse(&[], &[("memory.available", "1Gi")], &[], &[]).unwrap_err(),
            (
                "evictionSoftGracePeriod",
                "grace period must be specified for the soft eviction threshold memory.available"
                    .into()
            )
        );
        assert_eq!(
            parse(&[], &[("memory.available", "-1Gi")], &[], &[])
                .unwrap_err()
                .0,
            "evictionSoft"
        );
        let (key, msg) = parse(&[], &[], &[("memory.available", "soon")], &[]).unwrap_err();
        assert_eq!(key, "evictionSoftGracePeriod");
        assert!(
            msg.starts_with("invalid eviction grace period specified: soon"),
            "{msg}"
        );
        assert_eq!(
            parse(&[], &[], &[], &[("nodefs.available", "0%")]).unwrap_err(),
            (
                "evictionMinimumReclaim",
                "eviction percentage minimum reclaim nodefs.available must be positive: 0%".into()
            )
        );
        assert_eq!(
            parse(&[], &[], &[], &[("nodefs.available", "-1Gi")]).unwrap_err(),
            (
                "evictionMinimumReclaim",
                "negative eviction minimum reclaim specified for nodefs.available".into()
            )
        );
    }

    #[test]
    fn signals_map_to_conditions_and_resources_as_upstream() {
        assert_eq!(Signal::MemoryAvailable.pressure(), Pressure::Memory);
        assert_eq!(Signal::ImageFsInodesFree.pressure(), Pressure::Disk);
        assert_eq!(Signal::PidAvailable.pressure(), Pressure::Pid);
        assert_eq!(
            Signal::NodeFsAvailable.resource().as_str(),
            "ephemeral-storage"
        );
        assert_eq!(Signal::NodeFsInodesFree.resource().as_str(), "inodes");
        assert_eq!(Signal::PidAvailable.resource().as_str(), "pids");
        for name in crate::config::reserved::SIGNALS {
            assert_eq!(Signal::parse(name).unwrap().as_str(), *name);
        }
    }
}
