//! Selectors from API objects.

use super::{Operator, Requirement, Selector, SelectorError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Converts a `LabelSelector` (upstream `LabelSelectorAsSelector`): an
/// empty selector matches everything; matchLabels become equality
/// requirements; matchExpressions use `In`, `NotIn`, `Exists`,
/// `DoesNotExist`.
pub fn from_label_selector(ls: &LabelSelector) -> Result<Selector, SelectorError> {
    let mut reqs = vec![];
    for (k, v) in ls.match_labels.iter().flatten() {
        reqs.push(Requirement {
            key: k.clone(),
            op: Operator::In,
            values: vec![v.clone()],
            single: true,
        });
    }
    for e in ls.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let op = match e.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(SelectorError(format!(
                    "{other:?} is not a valid label selector operator"
                )))
            }
        };
        let needs_values = matches!(op, Operator::In | Operator::NotIn);
        if needs_values && values.is_empty() {
            return Err(SelectorError(
                "for 'in', 'notin' operators, values set can't be empty".into(),
            ));
        }
        if !needs_values && !values.is_empty() {
            return Err(SelectorError(
                "values set must be empty for exists and does not exist".into(),
            ));
        }
        let mut values = values;
        values.sort();
        values.dedup();
        reqs.push(Requirement {
            key: e.key.clone(),
            op,
            values,
            single: false,
        });
    }
    Ok(Selector::from_requirements(reqs))
}

/// A Service's `selector` map as a selector; `None` for an empty or absent
/// map (a selector-less Service, whose Endpoints are written by hand).
pub fn from_service_selector(selector: Option<&BTreeMap<String, String>>) -> Option<Selector> {
    let map = selector.filter(|m| !m.is_empty())?;
    Some(Selector::from_requirements(
        map.iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Operator::In,
                values: vec![v.clone()],
                single: true,
            })
            .collect(),
    ))
}
