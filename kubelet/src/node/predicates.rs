//! The node-label checks of upstream's kubelet admission (`pkg/kubelet/lifecycle/predicate.go`):
//! a pod labelled `kubernetes.io/os` with another OS than the node's, and a pod whose
//! `nodeSelector` or required node affinity does not match the node's labels (the scheduler's
//! `NodeAffinity` filter, which the kubelet runs in its `GeneralPredicates`), are rejected with
//! upstream's reasons and messages. So is an API pod that does not tolerate one of the node's
//! `NoExecute` taints (`TaintToleration`; static pods are exempt, as upstream's).

use crate::config::node_labels::LABEL_OS;
use crate::selector::{required_node_affinity_matches, NodeFacts};
use k8s_openapi::api::core::v1::{Pod, PodSpec, Taint, Toleration};

/// Rejection reason of a pod whose node selector or required node affinity does not match
/// (upstream: the failed predicate's name, the scheduler plugin `NodeAffinity`).
pub const NODE_AFFINITY: &str = "NodeAffinity";
/// Its message (upstream `PredicateFailureError.Error()` of `nodeaffinity.ErrReasonPod`).
pub const NODE_AFFINITY_MESSAGE: &str =
    "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector";
/// Rejection reason of a pod labelled for another OS.
pub const OS_SELECTOR_MISMATCH: &str = "PodOSSelectorNodeLabelDoesNotMatch";
/// Its message.
pub const OS_SELECTOR_MISMATCH_MESSAGE: &str =
    "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label";

/// Upstream `rejectPodAdmissionBasedOnOSSelector`: the pod's own `kubernetes.io/os` label (not
/// its node selector), when set, must be the node's OS (`linux`, whatever the node's labels say).
pub fn os_label(pod: &Pod) -> Result<(), (&'static str, String)> {
    match pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_OS)) {
        Some(os) if os != "linux" => Err((
            OS_SELECTOR_MISMATCH,
            OS_SELECTOR_MISMATCH_MESSAGE.to_owned(),
        )),
        _ => Ok(()),
    }
}

/// The `NodeAffinity` predicate: the pod's `nodeSelector` and required node affinity against
/// the node's name and labels.
pub fn node_affinity(spec: &PodSpec, node: NodeFacts<'_>) -> Result<(), (&'static str, String)> {
    if required_node_affinity_matches(spec, node) {
        Ok(())
    } else {
        Err((NODE_AFFINITY, NODE_AFFINITY_MESSAGE.to_owned()))
    }
}

/// Rejection reason of a pod that does not tolerate a `NoExecute` taint of the node (upstream:
/// the scheduler plugin's name, `tainttoleration.Name`).
pub const TAINT_TOLERATION: &str = "TaintToleration";
/// Its message (`PredicateFailureError.Error()` of `tainttoleration.ErrReasonNotMatch`).
pub const TAINT_TOLERATION_MESSAGE: &str =
    "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate";

/// Upstream `Toleration.ToleratesTaint`: an empty effect or key matches any; operator `Exists`
/// matches any value, `Equal` (or none) the same value; another operator matches nothing.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// The kubelet's taint check (upstream `generalFilter` with `FindMatchingUntoleratedTaint`
/// filtered to `NoExecute`): a `NoExecute` taint of the node that none of the pod's
/// tolerations tolerates rejects the pod. The caller skips static pods, as upstream does.
pub fn no_execute_taints(spec: &PodSpec, taints: &[Taint]) -> Result<(), (&'static str, String)> {
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let untolerated = taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
    if untolerated {
        Err((TAINT_TOLERATION, TAINT_TOLERATION_MESSAGE.to_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node_labels::default_labels;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// The node's own labels admit `kubernetes.io/os: linux` and its hostname; a label the node
    /// lacks is rejected with upstream's reason and message.
    #[test]
    fn node_affinity_admission_against_the_nodes_labels() {
        let labels = default_labels("node-a");
        let node = NodeFacts {
            name: "node-a",
            labels: &labels,
        };
        let spec = |yaml: &str| pod(yaml).spec.unwrap();
        let linux = spec("metadata: {name: p}\nspec:\n  containers: []\n  nodeSelector: {kubernetes.io/os: linux}");
        assert_eq!(node_affinity(&linux, node), Ok(()));
        let host = spec("metadata: {name: p}\nspec:\n  containers: []\n  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [node-a]}]}]}}}");
        assert_eq!(node_affinity(&host, node), Ok(()));
        let ssd =
            spec("metadata: {name: p}\nspec:\n  containers: []\n  nodeSelector: {disktype: ssd}");
        assert_eq!(
            node_affinity(&ssd, node),
            Err((
                "NodeAffinity",
                "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
                    .to_owned()
            ))
        );
    }

    #[test]
    fn a_pod_labelled_for_another_os_is_rejected() {
        assert_eq!(os_label(&pod("metadata: {name: p}")), Ok(()));
        assert_eq!(
            os_label(&pod(
                "metadata: {name: p, labels: {kubernetes.io/os: linux}}"
            )),
            Ok(())
        );
        assert_eq!(
            os_label(&pod(
                "metadata: {name: p, labels: {kubernetes.io/os: windows}}"
            )),
            Err((
                "PodOSSelectorNodeLabelDoesNotMatch",
                "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
                    .to_owned()
            ))
        );
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn spec_with(tolerations: &str) -> PodSpec {
        pod(&format!(
            "metadata: {{name: p}}\nspec:\n  containers: []\n  tolerations: {tolerations}"
        ))
        .spec
        .unwrap()
    }

    /// Upstream's `ToleratesTaint` cases: key, value, effect, and the operators.
    #[test]
    fn toleration_matching_as_upstream() {
        let t = taint("dedicated", Some("gpu"), "NoExecute");
        let tol = |yaml: &str| -> Toleration { serde_yaml_ng::from_str(yaml).unwrap() };
        assert!(tolerates(
            &tol("{key: dedicated, value: gpu, effect: NoExecute}"),
            &t
        ));
        assert!(tolerates(
            &tol("{key: dedicated, operator: Equal, value: gpu}"),
            &t
        ));
        assert!(tolerates(&tol("{key: dedicated, operator: Exists}"), &t));
        assert!(
            tolerates(&tol("{operator: Exists}"), &t),
            "empty key and Exists: all"
        );
        assert!(!tolerates(&tol("{key: dedicated, value: cpu}"), &t));
        assert!(!tolerates(
            &tol("{key: dedicated, value: gpu, effect: NoSchedule}"),
            &t
        ));
        assert!(!tolerates(&tol("{key: other, operator: Exists}"), &t));
        assert!(
            !tolerates(&tol("{key: dedicated}"), &t),
            "Equal with no value"
        );
        assert!(!tolerates(
            &tol("{key: dedicated, operator: Lt, value: gpu}"),
            &t
        ));
        let no_value = taint("spot", None, "NoExecute");
        assert!(tolerates(&tol("{key: spot}"), &no_value));
    }

    /// Only `NoExecute` taints count; one not tolerated rejects with upstream's reason and
    /// message.
    #[test]
    fn untolerated_no_execute_taint_rejects() {
        let taints = [
            taint("dedicated", Some("gpu"), "NoSchedule"),
            taint("spot", None, "NoExecute"),
        ];
        let none = spec_with("[]");
        assert_eq!(
            no_execute_taints(&none, &taints),
            Err((
                "TaintToleration",
                "Predicate TaintToleration failed: node(s) had taints that the pod didn't \
                 tolerate"
                    .to_owned()
            ))
        );
        assert_eq!(
            no_execute_taints(&spec_with("[{key: spot, operator: Exists}]"), &taints),
            Ok(()),
            "the NoSchedule taint is the scheduler's business"
        );
        assert_eq!(
            no_execute_taints(
                &spec_with("[{key: spot, effect: NoSchedule, operator: Exists}]"),
                &taints
            ),
            Err((TAINT_TOLERATION, TAINT_TOLERATION_MESSAGE.to_owned()))
        );
        assert_eq!(no_execute_taints(&none, &taints[..1]), Ok(()));
        assert_eq!(no_execute_taints(&none, &[]), Ok(()));
    }
}
