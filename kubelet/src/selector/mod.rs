//! Label selectors: the string form of `kubectl -l` (`app=web,tier!=db`,
//! `env in (a,b)`, `!canary`) and the API forms (`LabelSelector` with
//! matchLabels/matchExpressions, and a Service's plain `selector` map),
//! all matched against a label map the way `k8s.io/apimachinery/pkg/labels`
//! does. `node` matches a pod's required node affinity (`nodeSelector` and node selector
//! terms) against the node.

mod convert;
mod node;
mod parse;

pub use convert::{from_label_selector, from_service_selector};
pub use node::{
    label_requirement, node_selector_matches, required_node_affinity_matches, NodeFacts,
};
pub use parse::SelectorError;

use std::collections::BTreeMap;
use std::fmt;

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`, `key==value`, `key in (v1,v2)`: present and one of the values.
    In,
    /// `key!=value`, `key notin (v1,v2)`: absent, or none of the values.
    NotIn,
    /// `key`: present.
    Exists,
    /// `!key`: absent.
    DoesNotExist,
    /// `key>n`: present, an integer, greater than n.
    GreaterThan,
    /// `key<n`: present, an integer, less than n.
    LessThan,
}

/// One condition on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub op: Operator,
    /// Values (sorted, deduplicated); one integer for `>`/`<`.
    pub values: Vec<String>,
    /// True when written with `=`/`==`/`!=` (a single value), for printing.
    pub single: bool,
}

impl Requirement {
    /// True when `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|w| w.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        match (self.op, self.single) {
            (Operator::Exists, _) => write!(f, "{k}"),
            (Operator::DoesNotExist, _) => write!(f, "!{k}"),
            (Operator::In, true) => write!(f, "{k}={}", self.values[0]),
            (Operator::NotIn, true) => write!(f, "{k}!={}", self.values[0]),
            (Operator::In, false) => write!(f, "{k} in ({})", self.values.join(",")),
            (Operator::NotIn, false) => write!(f, "{k} notin ({})", self.values.join(",")),
            (Operator::GreaterThan, _) => write!(f, "{k}>{}", self.values[0]),
            (Operator::LessThan, _) => write!(f, "{k}<{}", self.values[0]),
        }
    }
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the string form (`kubectl get -l`).
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        parse::parse(text)
    }

    /// Builds a selector from requirements (sorted by key, as upstream).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when this selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// As [`Selector::matches`] for an optional label map (absent = no labels).
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match labels {
            Some(l) => self.matches(l),
            None => self.matches(&BTreeMap::new()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests;
