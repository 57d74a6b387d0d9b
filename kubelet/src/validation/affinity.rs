//! `spec.nodeSelector` and `spec.affinity.nodeAffinity` as upstream's `ValidatePodSpec` checks
//! them on create (`ValidateLabels`, `ValidateNodeSelector`, `ValidatePreferredSchedulingTerms`,
//! `ValidateNodeSelectorRequirement`, `ValidateNodeFieldSelectorRequirement`, in
//! `pkg/apis/core/validation`). Pod affinity and anti-affinity are read by the scheduler only.

use super::names::{dns1123_subdomain_errors, label_value_errors, qualified_name_errors};
use super::{Errors, FieldError};
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

/// The node selector and node affinity of a pod.
pub(super) fn pod(spec: &PodSpec, errs: &mut Errors) {
    for (k, v) in spec.node_selector.iter().flatten() {
        errs.name("spec.nodeSelector", k, qualified_name_errors(k));
        errs.name("spec.nodeSelector", v, label_value_errors(v));
    }
    let Some(na) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    else {
        return;
    };
    let f = "spec.affinity.nodeAffinity";
    if let Some(required) = &na.required_during_scheduling_ignored_during_execution {
        let tf = format!("{f}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
        if required.node_selector_terms.is_empty() {
            errs.push(FieldError::required(
                tf,
                "must have at least one node selector term",
            ));
        } else {
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                node_selector_term(term, &format!("{tf}[{i}]"), errs);
            }
        }
    }
    for (i, p) in na
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .flatten()
        .enumerate()
    {
        let pf = format!("{f}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if !(1..=100).contains(&p.weight) {
            errs.push(FieldError::invalid(
                format!("{pf}.weight"),
                p.weight,
                "must be in the range 1-100",
            ));
        }
        node_selector_term(&p.preference, &format!("{pf}.preference"), errs);
    }
}

fn node_selector_term(term: &NodeSelectorTerm, f: &str, errs: &mut Errors) {
    for (j, r) in term.match_expressions.iter().flatten().enumerate() {
        requirement(r, &format!("{f}.matchExpressions[{j}]"), errs);
    }
    for (j, r) in term.match_fields.iter().flatten().enumerate() {
        field_requirement(r, &format!("{f}.matchFields[{j}]"), errs);
    }
}

/// Upstream `ValidateNodeSelectorRequirement` (values must be label values, as on create).
fn requirement(r: &NodeSelectorRequirement, f: &str, errs: &mut Errors) {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
            format!("{f}.values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
            format!("{f}.values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if values.len() != 1 => errs.push(FieldError::required(
            format!("{f}.values"),
            "must be specified single value when `operator` is 'Lt' or 'Gt'",
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
        other => errs.push(FieldError::invalid(
            format!("{f}.operator"),
            other,
            "not a valid selector operator",
        )),
    }
    errs.name(&format!("{f}.key"), &r.key, qualified_name_errors(&r.key));
    for (i, v) in values.iter().enumerate() {
        errs.name(&format!("{f}.values[{i}]"), v, label_value_errors(v));
    }
}

/// Upstream `ValidateNodeFieldSelectorRequirement`: `metadata.name` only, In/NotIn, one value.
fn field_requirement(r: &NodeSelectorRequirement, f: &str, errs: &mut Errors) {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" | "NotIn" => {
            if values.len() != 1 {
                errs.push(FieldError::required(
                    format!("{f}.values"),
                    "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                ));
            }
        }
        other => errs.push(FieldError::invalid(
            format!("{f}.operator"),
            other,
            "not a valid selector operator",
        )),
    }
    if r.key != "metadata.name" {
        errs.push(FieldError::invalid(
            format!("{f}.key"),
            &r.key,
            "not a valid field selector key",
        ));
    } else {
        for (i, v) in values.iter().enumerate() {
            errs.name(&format!("{f}.values[{i}]"), v, dns1123_subdomain_errors(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::pod_tests::errors;

    /// Upstream's messages for bad node selectors and node affinity, each at its field.
    #[test]
    fn node_selector_and_affinity_validated_as_upstream() {
        let na = "spec.affinity.nodeAffinity";
        let req = format!("{na}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
        let affinity = |terms: serde_json::Value| serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
        // Good ones pass.
        let good = affinity(serde_json::json!([
            {"matchExpressions": [
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {"key": "n", "operator": "Gt", "values": ["3"]},
                {"key": "gpu", "operator": "DoesNotExist"}]},
            {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-b"]}]},
        ]));
        assert_eq!(
            errors(|v| {
                v["spec"]["nodeSelector"] =
                    serde_json::json!({"kubernetes.io/os": "linux", "disktype": ""});
                v["spec"]["affinity"] = good.clone();
            }),
            Vec::<String>::new()
        );
        assert_eq!(
            errors(|v| v["spec"]["nodeSelector"] = serde_json::json!({"bad key": "bad value!"})),
            [
                "spec.nodeSelector: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "spec.nodeSelector: Invalid value: \"bad value!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ]
        );
        assert_eq!(
            errors(|v| v["spec"]["affinity"] = affinity(serde_json::json!([]))),
            [format!(
                "{req}: Required value: must have at least one node selector term"
            )]
        );
        let one = |r: serde_json::Value| affinity(serde_json::json!([{"matchExpressions": [r]}]));
        let e = format!("{req}[0].matchExpressions[0]");
        let cases = [
            (serde_json::json!({"key": "k", "operator": "In"}), format!("{e}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'")),
            (serde_json::json!({"key": "k", "operator": "NotIn", "values": []}), format!("{e}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'")),
            (serde_json::json!({"key": "k", "operator": "Exists", "values": ["v"]}), format!("{e}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")),
            (serde_json::json!({"key": "k", "operator": "Gt", "values": ["1", "2"]}), format!("{e}.values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'")),
            (serde_json::json!({"key": "k", "operator": "Near", "values": ["v"]}), format!("{e}.operator: Invalid value: \"Near\": not a valid selector operator")),
            (serde_json::json!({"key": "k", "operator": "In", "values": ["a b"]}), format!("{e}.values[0]: Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")),
            (serde_json::json!({"key": "-k", "operator": "Exists"}), format!("{e}.key: Invalid value: \"-k\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")),
        ];
        for (r, want) in cases {
            assert_eq!(
                errors(|v| v["spec"]["affinity"] = one(r.clone())),
                [want],
                "{r}"
            );
        }
        let field = |r: serde_json::Value| affinity(serde_json::json!([{"matchFields": [r]}]));
        let f = format!("{req}[0].matchFields[0]");
        let cases = [
            (serde_json::json!({"key": "metadata.name", "operator": "In", "values": ["a", "b"]}), format!("{f}.values: Required value: must be only one value when `operator` is 'In' or 'NotIn' for node field selector")),
            (serde_json::json!({"key": "metadata.name", "operator": "Exists"}), format!("{f}.operator: Invalid value: \"Exists\": not a valid selector operator")),
            (serde_json::json!({"key": "metadata.labels", "operator": "In", "values": ["a"]}), format!("{f}.key: Invalid value: \"metadata.labels\": not a valid field selector key")),
            (serde_json::json!({"key": "metadata.name", "operator": "In", "values": ["Node_A"]}), format!("{f}.values[0]: Invalid value: \"Node_A\": {}", crate::validation::names::DNS1123_SUBDOMAIN_MSG)),
        ];
        for (r, want) in cases {
            assert_eq!(
                errors(|v| v["spec"]["affinity"] = field(r.clone())),
                [want],
                "{r}"
            );
        }
        // Preferred terms: a weight of 1-100, and their terms as the required ones.
        assert_eq!(
            errors(|v| v["spec"]["affinity"] = serde_json::json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 0, "preference": {"matchExpressions": [{"key": "k", "operator": "In"}]}}]}})),
            [
                format!("{na}.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 0: must be in the range 1-100"),
                format!("{na}.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"),
            ]
        );
    }
}
