//! The default image pull policy, as the API server defaults it
//! (k/k `pkg/apis/core/v1/defaults.go` `SetDefaults_Container`).

use std::fmt;

/// When the kubelet pulls an image before starting a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time (resolving the tag again).
    Always,
    /// Pull only when the image is not present locally.
    IfNotPresent,
    /// Never pull; a missing image is `ErrImageNeverPull`.
    Never,
}

impl PullPolicy {
    /// Parses the Kubernetes spelling (`Always`, `IfNotPresent`, `Never`);
    /// an empty or unset value yields the default for `image`.
    pub fn resolve(policy: Option<&str>, image: &str) -> Option<PullPolicy> {
        match policy.unwrap_or("") {
            "" => Some(default_pull_policy(image)),
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        })
    }
}

/// The policy for an unset `imagePullPolicy`: `Always` when the tag is
/// `latest` (written or implied by a missing tag and digest), `IfNotPresent`
/// otherwise (a digest-only reference is `IfNotPresent`). An unparsable image
/// gets `IfNotPresent`, as upstream (the pull then fails with `InvalidImageName`).
pub fn default_pull_policy(image: &str) -> PullPolicy {
    match super::ImageReference::parse(image) {
        Ok(r) if r.tag() == Some("latest") => PullPolicy::Always,
        _ => PullPolicy::IfNotPresent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_or_no_tag_means_always() {
        assert_eq!(default_pull_policy("busybox"), PullPolicy::Always);
        assert_eq!(default_pull_policy("busybox:latest"), PullPolicy::Always);
        assert_eq!(
            default_pull_policy("127.0.0.1:5000/busybox"),
            PullPolicy::Always
        );
    }

    #[test]
    fn other_tags_and_digests_mean_if_not_present() {
        let d = format!("sha256:{}", "0f".repeat(32));
        assert_eq!(
            default_pull_policy("busybox:1.36"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            default_pull_policy(&format!("busybox@{d}")),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            default_pull_policy("registry:5000/x:v2"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(default_pull_policy("Not A Name"), PullPolicy::IfNotPresent);
    }

    #[test]
    fn explicit_policies_win() {
        assert_eq!(
            PullPolicy::resolve(Some("Never"), "busybox"),
            Some(PullPolicy::Never)
        );
        assert_eq!(
            PullPolicy::resolve(Some("Always"), "busybox:1"),
            Some(PullPolicy::Always)
        );
        assert_eq!(
            PullPolicy::resolve(None, "busybox:1"),
            Some(PullPolicy::IfNotPresent)
        );
        assert_eq!(
            PullPolicy::resolve(Some(""), "busybox"),
            Some(PullPolicy::Always)
        );
        assert_eq!(PullPolicy::resolve(Some("Sometimes"), "busybox"), None);
    }
}
