//! The QoS class of a pod (upstream `GetPodQOS`, `pkg/apis/core/v1/helper/qos`).

use crate::validation::quantity::Quantity;
use k8s_openapi::api::core::v1::PodSpec;
use std::collections::BTreeMap;

/// A pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Every container has equal cpu and memory requests and limits.
    Guaranteed,
    /// Some request or limit is set, but not Guaranteed.
    Burstable,
    /// No cpu or memory request or limit anywhere.
    BestEffort,
}

impl QosClass {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// Computes the QoS class from the spec's containers and init containers:
/// only cpu and memory count, zero quantities are ignored.
pub fn qos_class(spec: &PodSpec) -> QosClass {
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        let res = c.resources.as_ref();
        for (name, q) in res.and_then(|r| r.requests.as_ref()).into_iter().flatten() {
            let Some(&name) = QOS_RESOURCES.iter().find(|r| **r == name.as_str()) else {
                continue;
            };
            let Ok(q) = Quantity::parse(&q.0) else {
                continue;
            };
            if q > Quantity::default() {
                let e = requests.entry(name).or_default();
                *e = add(*e, q);
            }
        }
        let mut found = 0;
        for (name, q) in res.and_then(|r| r.limits.as_ref()).into_iter().flatten() {
            let Some(&name) = QOS_RESOURCES.iter().find(|r| **r == name.as_str()) else {
                continue;
            };
            let Ok(q) = Quantity::parse(&q.0) else {
                continue;
            };
            if q > Quantity::default() {
                found += 1;
                let e = limits.entry(name).or_default();
                *e = add(*e, q);
            }
        }
        if found < QOS_RESOURCES.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requests.iter().all(|(n, r)| limits.get(n) == Some(r))
        && requests.len() == limits.len()
    {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

fn add(a: Quantity, b: Quantity) -> Quantity {
    // Milli precision is all QoS needs.
    Quantity::from_milli(a.milli_value().saturating_add(b.milli_value()))
}
