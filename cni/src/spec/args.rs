//! `CNI_ARGS`: `K=V;K=V`, with the keys Kubernetes runtimes pass for a pod.

/// The pod identity a Kubernetes runtime passes to plugins in `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodArgs {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_INFRA_CONTAINER_ID`: the sandbox's container id.
    pub infra_container_id: String,
    /// `K8S_POD_UID`.
    pub uid: String,
}

/// Formats `CNI_ARGS` the way Kubernetes runtimes do:
/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`.
pub fn format_cni_args(pod: &PodArgs) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.infra_container_id, pod.uid
    )
}

/// Splits `CNI_ARGS` into key/value pairs, in order; an entry without `=` is an error naming it.
pub fn parse_cni_args(args: &str) -> Result<Vec<(String, String)>, String> {
    args.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("CNI_ARGS entry {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_pod_args() {
        let pod = PodArgs {
            namespace: "default".into(),
            name: "web-0".into(),
            infra_container_id: "abc123".into(),
            uid: "5f1c".into(),
        };
        let s = format_cni_args(&pod);
        assert_eq!(
            s,
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=5f1c"
        );
        let kv = parse_cni_args(&s).unwrap();
        assert_eq!(kv[0], ("IgnoreUnknown".into(), "1".into()));
        assert_eq!(kv[2], ("K8S_POD_NAME".into(), "web-0".into()));
    }

    #[test]
    fn rejects_entries_without_equals() {
        assert!(parse_cni_args("A=1;broken").unwrap_err().contains("broken"));
        assert!(parse_cni_args("").unwrap().is_empty());
    }
}
