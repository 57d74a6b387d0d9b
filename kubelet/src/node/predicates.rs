//! The node-label checks of upstream's kubelet admission (`pkg/kubelet/lifecycle/predicate.go`):
//! a pod labelled `kubernetes.io/os` with another OS than the node's, and a pod whose
//! `nodeSelector` or required node affinity does not match the node's labels (the scheduler's
//! `NodeAffinity` filter, which the kubelet runs in its `GeneralPredicates`), are rejected with
//! upstream's reasons and messages.

use crate::config::node_labels::LABEL_OS;
use crate::selector::{required_node_affinity_matches, NodeFacts};
use k8s_openapi::api::core::v1::{Pod, PodSpec};

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
}
