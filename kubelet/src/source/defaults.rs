//! API defaults (upstream `SetDefaults_*` of `pkg/apis/core/v1`) and the
//! static-pod rewrite (upstream `applyDefaults` of `pkg/kubelet/config/common.go`).

use super::{
    CONFIG_HASH_ANNOTATION, CONFIG_SEEN_ANNOTATION, CONFIG_SOURCE_ANNOTATION, FILE_SOURCE,
};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HTTPGetAction, Pod, PodSecurityContext, PodStatus, Probe,
    Toleration, Volume,
};
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The pull policy an unset `imagePullPolicy` gets: `Always` for `:latest`
/// or no tag, `IfNotPresent` for another tag or a digest.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn default_probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    p.initial_delay_seconds.get_or_insert(0);
    if let Some(h) = &mut p.http_get {
        default_http_get(h);
    }
}

fn default_http_get(h: &mut HTTPGetAction) {
    if h.path.as_deref().is_none_or(str::is_empty) {
        h.path = Some("/".into());
    }
    h.scheme.get_or_insert_with(|| "HTTP".into());
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        if let Some(image) = c.image.as_deref() {
            c.image_pull_policy = Some(default_pull_policy(image).into());
        }
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(fr) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            fr.api_version.get_or_insert_with(|| "v1".into());
        }
    }
    for p in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(p);
    }
    if let Some(l) = &mut c.lifecycle {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = &mut h.http_get {
                default_http_get(g);
            }
        }
    }
    // Requests default to the limits for each resource that has only a limit.
    if let Some(r) = &mut c.resources {
        if let Some(limits) = &r.limits {
            let req = r.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                req.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

fn volume_has_source(v: &Volume) -> bool {
    let mut probe = v.clone();
    probe.name = String::new();
    probe != Volume::default()
}

/// Applies the API server's defaults to a pod as decoding does upstream.
pub fn apply_pod_defaults(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);
    // `serviceAccount` is the deprecated alias of `serviceAccountName`: upstream's conversion
    // fills the name from it when unset and writes the name back into it.
    if spec
        .service_account_name
        .as_deref()
        .is_none_or(str::is_empty)
    {
        spec.service_account_name = spec.service_account.clone().filter(|s| !s.is_empty());
    }
    if spec.service_account_name.is_some() {
        spec.service_account.clone_from(&spec.service_account_name);
    }
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        default_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        if !volume_has_source(v) {
            v.empty_dir = Some(EmptyDirVolumeSource::default());
        }
        if let Some(h) = &mut v.host_path {
            h.type_.get_or_insert_with(String::new);
        }
    }
}

/// The static pod UID: a hash of the defaulted pod, the node name and the
/// source file (upstream: md5 over `host:<node>` `file:<path>` after the
/// object; Go's object dump cannot be reproduced, so ours hashes the
/// canonical JSON with SHA-256 and keeps 16 bytes, the same length).
pub fn static_pod_uid(pod: &Pod, node_name: &str, source: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(pod).unwrap_or_default());
    h.update(format!("host:{node_name}"));
    h.update(format!("file:{source}"));
    hex::encode(&h.finalize()[..16])
}

/// Rewrites a decoded pod into the static pod of `node_name` from `source`
/// (a file path, with `#<n>` for documents after the first): API defaults,
/// UID = content hash, name `<name>-<node>`, namespace `default` when
/// unset, `spec.nodeName`, the config annotations, `creationTimestamp` =
/// `seen`, the NoExecute toleration and phase Pending.
pub fn make_static_pod(mut pod: Pod, node_name: &str, source: &Path, seen: Timestamp) -> Pod {
    apply_pod_defaults(&mut pod);
    let node = node_name.to_lowercase();
    let source = source.display().to_string();
    let uid = match pod.metadata.uid.as_deref() {
        Some(u) if !u.is_empty() => u.to_owned(),
        _ => static_pod_uid(&pod, &node, &source),
    };
    let meta = &mut pod.metadata;
    meta.uid = Some(uid.clone());
    meta.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(seen));
    meta.name = Some(format!(
        "{}-{node}",
        meta.name.as_deref().unwrap_or_default()
    ));
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
    let ann = meta.annotations.get_or_insert_with(Default::default);
    ann.insert(CONFIG_HASH_ANNOTATION.into(), uid);
    ann.insert(CONFIG_SOURCE_ANNOTATION.into(), FILE_SOURCE.into());
    ann.insert(CONFIG_SEEN_ANNOTATION.into(), format_seen(seen));
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node);
        let tol = Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Toleration::default()
        };
        let tols = spec.tolerations.get_or_insert_with(Vec::new);
        if !tols.contains(&tol) {
            tols.push(tol);
        }
    }
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..PodStatus::default()
    });
    pod
}

/// RFC 3339 with nanoseconds, as Go's `time.RFC3339Nano` (trailing zeros trimmed).
pub(crate) fn format_seen(t: Timestamp) -> String {
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_is_rfc3339_nano() {
        let t = Timestamp::new(1_700_000_000, 500_000_000).unwrap();
        assert_eq!(format_seen(t), "2023-11-14T22:13:20.5Z");
        let t = Timestamp::new(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(format_seen(t), "2023-11-14T22:13:20.123456789Z");
    }

    #[test]
    fn deprecated_service_account_fills_service_account_name() {
        let defaulted = |sa: Option<&str>, name: Option<&str>| {
            let mut pod = Pod {
                spec: Some(k8s_openapi::api::core::v1::PodSpec {
                    service_account: sa.map(Into::into),
                    service_account_name: name.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            };
            apply_pod_defaults(&mut pod);
            let spec = pod.spec.unwrap();
            (spec.service_account, spec.service_account_name)
        };
        let both = |s: &str| (Some(s.to_owned()), Some(s.to_owned()));
        assert_eq!(defaulted(Some("old"), None), both("old"));
        assert_eq!(defaulted(Some("old"), Some("")), both("old"));
        assert_eq!(defaulted(None, Some("new")), both("new"));
        // The name wins.
        assert_eq!(defaulted(Some("old"), Some("new")), both("new"));
        assert_eq!(defaulted(None, None), (None, None));
    }

    #[test]
    fn pull_policy_by_tag() {
        for (image, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("127.0.0.1:5000/busybox", "Always"),
            ("127.0.0.1:5000/busybox:v1", "IfNotPresent"),
            ("127.0.0.1:5000/busybox:latest", "Always"),
            ("busybox@sha256:abcd", "IfNotPresent"),
            ("reg:5000/a/b:latest@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }
}
