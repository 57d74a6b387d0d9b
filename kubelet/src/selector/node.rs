//! A pod's required node affinity, matched against this node as upstream's
//! `component-helpers/scheduling/corev1/nodeaffinity` (`GetRequiredNodeAffinity(pod).Match`)
//! does for the kubelet's `NodeAffinity` admission check: every `nodeSelector` entry must be
//! one of the node's labels, and `requiredDuringSchedulingIgnoredDuringExecution` must have a
//! matching term. Terms are ORed; within a term, `matchExpressions` (on labels) and
//! `matchFields` (on `metadata.name`, the only node field) are ANDed; an empty term, or one
//! with a requirement that does not parse, matches nothing.

use super::{Operator, Requirement};
use crate::validation::names::{label_value_errors, qualified_name_errors};
use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
};
use std::collections::BTreeMap;

/// The node as node affinity sees it: its name (`metadata.name`) and labels.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    /// The node's name.
    pub name: &'a str,
    /// The node's labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// Whether the pod's `nodeSelector` and required node affinity both admit the node.
pub fn required_node_affinity_matches(spec: &PodSpec, node: NodeFacts<'_>) -> bool {
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    if !selector_ok {
        return false;
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
        Some(selector) => node_selector_matches(selector, node),
        None => true,
    }
}

/// Whether some term of `selector` matches the node (no term: none does).
pub fn node_selector_matches(selector: &NodeSelector, node: NodeFacts<'_>) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node))
}

fn term_matches(term: &NodeSelectorTerm, node: NodeFacts<'_>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let Ok(labels) = exprs
        .iter()
        .map(label_requirement)
        .collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let Ok(fields) = fields
        .iter()
        .map(field_requirement)
        .collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    labels.iter().all(|r| r.matches(node.labels))
        && fields.iter().all(|(key, want, equal)| {
            // The node's only field is `metadata.name`; any other key reads as "".
            let have = if key == "metadata.name" {
                node.name
            } else {
                ""
            };
            (have == want) == *equal
        })
}

/// A `matchExpressions` entry as a label requirement, checked as upstream's
/// `labels.NewRequirement`: a qualified-name key, values as the operator needs (Gt/Lt: one
/// integer), each a valid label value.
pub fn label_requirement(r: &NodeSelectorRequirement) -> Result<Requirement, String> {
    let op = match r.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        other => return Err(format!("{other:?} is not a valid node selector operator")),
    };
    let errs = qualified_name_errors(&r.key);
    if !errs.is_empty() {
        return Err(format!("key {:?}: {}", r.key, errs.join("; ")));
    }
    let mut values = r.values.clone().unwrap_or_default();
    match op {
        Operator::In | Operator::NotIn if values.is_empty() => {
            return Err("for 'in', 'notin' operators, values set can't be empty".into())
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            return Err("values set must be empty for exists and does not exist".into())
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                return Err("for 'Gt', 'Lt' operators, exactly one value is required".into());
            }
            if values[0].parse::<i64>().is_err() {
                return Err("for 'Gt', 'Lt' operators, the value must be an integer".into());
            }
        }
        _ => {}
    }
    for v in &values {
        let errs = label_value_errors(v);
        if !errs.is_empty() {
            return Err(format!("value {v:?}: {}", errs.join("; ")));
        }
    }
    values.sort();
    values.dedup();
    Ok(Requirement {
        key: r.key.clone(),
        op,
        values,
        single: false,
    })
}

/// A `matchFields` entry: (key, value, true for `In` / false for `NotIn`), exactly one value.
fn field_requirement(r: &NodeSelectorRequirement) -> Result<(String, String, bool), String> {
    let equal = match r.operator.as_str() {
        "In" => true,
        "NotIn" => false,
        other => return Err(format!("{other:?} is not a valid field selector operator")),
    };
    match r.values.as_deref() {
        Some([v]) => Ok((r.key.clone(), v.clone(), equal)),
        _ => Err("must have one element".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// upstream `TestPodMatchesNodeSelectorAndAffinityTerms` and `TestNodeSelectorMatch`
    /// (`component-helpers/scheduling/corev1/nodeaffinity`): the pod's spec (YAML), the node's
    /// name and labels, whether the pod may run there.
    #[test]
    fn matches_as_upstream_nodeaffinity_tests() {
        let term = |t: &str| {
            format!("affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{t}]}}}}}}")
        };
        /// Name, pod spec, node name, node labels, whether the pod may run there.
        type Case<'a> = (&'a str, String, &'a str, &'a [(&'a str, &'a str)], bool);
        let cases: Vec<Case> = vec![
            ("no selector", String::new(), "", &[], true),
            ("missing labels", "nodeSelector: {foo: bar}".into(), "", &[], false),
            ("same labels", "nodeSelector: {foo: bar}".into(), "", &[("foo", "bar")], true),
            ("node labels are superset", "nodeSelector: {foo: bar}".into(), "", &[("foo", "bar"), ("baz", "blah")], true),
            ("node labels are subset", "nodeSelector: {foo: bar, baz: blah}".into(), "", &[("foo", "bar")], false),
            ("In matches", term("{matchExpressions: [{key: foo, operator: In, values: [bar, value2]}]}"), "", &[("foo", "bar")], true),
            ("Gt matches", term("{matchExpressions: [{key: kernel-version, operator: Gt, values: ['0204']}]}"), "", &[("kernel-version", "0206")], true),
            ("Gt on a non-integer label", term("{matchExpressions: [{key: kernel-version, operator: Gt, values: ['0204']}]}"), "", &[("kernel-version", "v6")], false),
            ("Lt matches", term("{matchExpressions: [{key: n, operator: Lt, values: ['7']}]}"), "", &[("n", "3")], true),
            ("NotIn matches", term("{matchExpressions: [{key: mem-type, operator: NotIn, values: [DDR, DDR2]}]}"), "", &[("mem-type", "DDR3")], true),
            ("Exists matches", term("{matchExpressions: [{key: GPU, operator: Exists}]}"), "", &[("GPU", "NVIDIA-GRID-K1")], true),
            ("DoesNotExist", term("{matchExpressions: [{key: GPU, operator: DoesNotExist}]}"), "", &[("GPU", "x")], false),
            ("affinity that does not match the node's labels", term("{matchExpressions: [{key: foo, operator: In, values: [value1, value2]}]}"), "", &[("foo", "bar")], false),
            ("a nil []NodeSelectorTerm matches nothing", "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: null}}}".into(), "", &[("foo", "bar")], false),
            ("an empty []NodeSelectorTerm matches nothing", term(""), "", &[("foo", "bar")], false),
            ("empty matchExpressions match nothing", term("{matchExpressions: []}"), "", &[("foo", "bar")], false),
            ("no Affinity", "affinity: {}".into(), "", &[("foo", "bar")], true),
            ("Affinity with a nil NodeSelector", "affinity: {nodeAffinity: {}}".into(), "", &[("foo", "bar")], true),
            ("matchExpressions ANDed, matching", term("{matchExpressions: [{key: GPU, operator: Exists}, {key: GPU, operator: NotIn, values: [AMD, INTER]}]}"), "", &[("GPU", "NVIDIA-GRID-K1")], true),
            ("matchExpressions ANDed, not matching", term("{matchExpressions: [{key: GPU, operator: Exists}, {key: GPU, operator: In, values: [AMD, INTER]}]}"), "", &[("GPU", "NVIDIA-GRID-K1")], false),
            ("terms ORed", term("{matchExpressions: [{key: foo, operator: In, values: [bar, value2]}]}, {matchExpressions: [{key: diffkey, operator: In, values: [wrong, value2]}]}"), "", &[("foo", "bar")], true),
            ("affinity and nodeSelector both satisfied", format!("nodeSelector: {{foo: bar}}\n{}", term("{matchExpressions: [{key: foo, operator: Exists}]}")), "", &[("foo", "bar")], true),
            ("affinity matches but nodeSelector does not", format!("nodeSelector: {{foo: bar}}\n{}", term("{matchExpressions: [{key: foo, operator: Exists}]}")), "", &[("foo", "barrrrrr")], false),
            ("an invalid value in a term", term("{matchExpressions: [{key: foo, operator: NotIn, values: ['invalid value: ___@#$%^']}]}"), "", &[("foo", "bar")], false),
            ("matchFields In matches", term("{matchFields: [{key: metadata.name, operator: In, values: [node-1]}]}"), "node-1", &[], true),
            ("matchFields In does not match", term("{matchFields: [{key: metadata.name, operator: In, values: [node-1]}]}"), "node-2", &[], false),
            ("matchFields NotIn", term("{matchFields: [{key: metadata.name, operator: NotIn, values: [node-1]}]}"), "node-2", &[], true),
            ("two terms: fields do not match, expressions do", term("{matchFields: [{key: metadata.name, operator: In, values: [node-1]}]}, {matchExpressions: [{key: foo, operator: In, values: [bar]}]}"), "node-2", &[("foo", "bar")], true),
            ("one term: fields do not match, expressions do", term("{matchFields: [{key: metadata.name, operator: In, values: [node-1]}], matchExpressions: [{key: foo, operator: In, values: [bar]}]}"), "node-2", &[("foo", "bar")], false),
            ("one term: both match", term("{matchFields: [{key: metadata.name, operator: In, values: [node-1]}], matchExpressions: [{key: foo, operator: In, values: [bar]}]}"), "node-1", &[("foo", "bar")], true),
            ("two terms: neither matches", term("{matchFields: [{key: metadata.name, operator: In, values: [node-1]}]}, {matchExpressions: [{key: foo, operator: In, values: [not-match-to-bar]}]}"), "node-2", &[("foo", "bar")], false),
            // TestNodeSelectorMatch: a term that does not parse matches nothing; another may.
            ("matchFields with two values", term("{matchFields: [{key: metadata.name, operator: In, values: [host-1, host-2]}]}"), "host-1", &[], false),
            ("an invalid key", term("{matchExpressions: [{key: invalid key, operator: In, values: [v]}]}, {matchFields: [{key: metadata.name, operator: In, values: [host-1]}]}"), "host-1", &[], true),
            ("node matches field selector, but not labels", term("{matchExpressions: [{key: label_1, operator: In, values: [label_1_val]}], matchFields: [{key: metadata.name, operator: In, values: [host-1]}]}"), "host-1", &[], false),
            ("an unknown operator", term("{matchExpressions: [{key: foo, operator: Near, values: [bar]}]}"), "", &[("foo", "bar")], false),
        ];
        for (name, spec, node, l, want) in cases {
            let spec: PodSpec = serde_yaml_ng::from_str(&format!("containers: []\n{spec}"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let labels = labels(l);
            let got = required_node_affinity_matches(
                &spec,
                NodeFacts {
                    name: node,
                    labels: &labels,
                },
            );
            assert_eq!(got, want, "{name}");
        }
    }
}
