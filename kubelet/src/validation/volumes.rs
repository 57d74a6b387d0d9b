//! The `configMap`, `secret`, `downwardAPI` and `projected` volume sources, as upstream's
//! `validateConfigMapVolumeSource`, `validateSecretVolumeSource`,
//! `validateDownwardAPIVolumeSource` and `validateProjectedVolumeSource`
//! (`pkg/apis/core/validation`): names required, modes between 0 and 0777, item paths
//! relative without `..` and not starting with `..`, a token's `expirationSeconds` at least
//! ten minutes; `clusterTrustBundle` and `podCertificate` projections are refused (kubenode
//! does not implement them).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, ProjectedVolumeSource, Volume};

use super::common::has_backsteps;
use super::names::qualified_name_errors;
use super::{Errors, FieldError};

/// Upstream's `fileModeErrorMsg`.
const FILE_MODE: &str = "must be a number between 0 and 0777 (octal), both inclusive";
/// What a downwardAPI volume file may reference (`validVolumeDownwardAPIFieldPathExpressions`).
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];
/// What a volume's `resourceFieldRef` may name.
pub(super) const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];
/// The shortest token lifetime (`expirationSeconds`) the API server accepts.
const MIN_TOKEN_SECONDS: i64 = 10 * 60;

fn mode(field: String, m: Option<i32>, errs: &mut Errors) {
    if let Some(m) = m {
        if !(0..=0o777).contains(&m) {
            errs.push(FieldError::invalid(field, m, FILE_MODE));
        }
    }
}

/// Upstream `ValidateLocalNonReservedPath`.
fn local_path(field: &str, path: &str, errs: &mut Errors) {
    if path.starts_with('/') {
        errs.push(FieldError::invalid(field, path, "must be a relative path"));
    }
    if has_backsteps(path) {
        errs.push(FieldError::invalid(field, path, "must not contain '..'"));
    } else if path.starts_with("..") {
        errs.push(FieldError::invalid(field, path, "must not start with '..'"));
    }
}

/// Upstream `validateKeyToPath`.
fn key_to_path(kp: &KeyToPath, f: &str, errs: &mut Errors) {
    if kp.key.is_empty() {
        errs.push(FieldError::required(format!("{f}.key"), ""));
    }
    if kp.path.is_empty() {
        errs.push(FieldError::required(format!("{f}.path"), ""));
    }
    local_path(&format!("{f}.path"), &kp.path, errs);
    mode(format!("{f}.mode"), kp.mode, errs);
}

/// Upstream `validateDownwardAPIVolumeFile`; `f` is the source's path (upstream does not
/// index the items).
fn downward_file(file: &DownwardAPIVolumeFile, f: &str, errs: &mut Errors) {
    if file.path.is_empty() {
        errs.push(FieldError::required(format!("{f}.path"), ""));
    }
    local_path(&format!("{f}.path"), &file.path, errs);
    if let Some(fr) = &file.field_ref {
        let ff = format!("{f}.fieldRef");
        if let Some(v) = fr.api_version.as_deref().filter(|v| *v != "v1") {
            errs.push(FieldError::not_supported(
                format!("{ff}.apiVersion"),
                v,
                &["v1"],
            ));
        }
        if fr.field_path.is_empty() {
            errs.push(FieldError::required(format!("{ff}.fieldPath"), ""));
        } else if let Some((base, rest)) = fr.field_path.split_once('[') {
            let key = rest
                .strip_suffix("']")
                .and_then(|k| k.strip_prefix('\''))
                .unwrap_or(rest);
            match base {
                "metadata.annotations" => {
                    errs.name(&ff, key, qualified_name_errors(&key.to_lowercase()))
                }
                "metadata.labels" => errs.name(&ff, key, qualified_name_errors(key)),
                _ => errs.push(FieldError::invalid(&ff, base, "does not support subscript")),
            }
        } else if !VOLUME_FIELD_PATHS.contains(&fr.field_path.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{ff}.fieldPath"),
                &fr.field_path,
                VOLUME_FIELD_PATHS,
            ));
        }
        if file.resource_field_ref.is_some() {
            errs.push(FieldError::invalid(
                f,
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ));
        }
    } else if let Some(rf) = &file.resource_field_ref {
        let rff = format!("{f}.resourceFieldRef");
        if rf.container_name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{rff}.containerName"), ""));
        }
        if rf.resource.is_empty() {
            errs.push(FieldError::required(format!("{rff}.resource"), ""));
        } else if !RESOURCE_FIELDS.contains(&rf.resource.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{rff}.resource"),
                &rf.resource,
                RESOURCE_FIELDS,
            ));
        }
        if let Some(d) = &rf.divisor {
            super::common::quantity(&format!("{rff}.divisor"), &d.0, errs);
        }
    } else {
        errs.push(FieldError::required(
            f,
            "one of fieldRef and resourceFieldRef is required",
        ));
    }
    mode(format!("{f}.mode"), file.mode, errs);
}

/// Checks the configMap, secret, downwardAPI or projected source of volume `v` at `f`
/// (`spec.volumes[i]`).
pub(super) fn validate(v: &Volume, f: &str, errs: &mut Errors) {
    if let Some(s) = &v.config_map {
        let sf = format!("{f}.configMap");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{sf}.name"), ""));
        }
        mode(format!("{sf}.defaultMode"), s.default_mode, errs);
        for (i, kp) in s.items.iter().flatten().enumerate() {
            key_to_path(kp, &format!("{sf}.items[{i}]"), errs);
        }
    }
    if let Some(s) = &v.secret {
        let sf = format!("{f}.secret");
        if s.secret_name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{sf}.secretName"), ""));
        }
        mode(format!("{sf}.defaultMode"), s.default_mode, errs);
        for (i, kp) in s.items.iter().flatten().enumerate() {
            key_to_path(kp, &format!("{sf}.items[{i}]"), errs);
        }
    }
    if let Some(s) = &v.downward_api {
        let sf = format!("{f}.downwardAPI");
        mode(format!("{sf}.defaultMode"), s.default_mode, errs);
        for file in s.items.iter().flatten() {
            downward_file(file, &sf, errs);
        }
    }
    if let Some(p) = &v.projected {
        projected(p, &format!("{f}.projected"), errs);
    }
}

/// Upstream `validateProjectedVolumeSource` and `validateProjectionSources`.
fn projected(p: &ProjectedVolumeSource, f: &str, errs: &mut Errors) {
    mode(format!("{f}.defaultMode"), p.default_mode, errs);
    let mut paths = HashSet::new();
    let mut seen = |path: &str, value: &str, errs: &mut Errors| {
        if !path.is_empty() && !paths.insert(path.to_string()) {
            errs.push(FieldError::invalid(f, value, "conflicting duplicate paths"));
        }
    };
    for (i, source) in p.sources.iter().flatten().enumerate() {
        let sf = format!("{f}.sources[{i}]");
        let mut kinds = 0;
        if let Some(s) = &source.secret {
            kinds += 1;
            if s.name.is_empty() {
                errs.push(FieldError::required(format!("{sf}.secret.name"), ""));
            }
            for (j, kp) in s.items.iter().flatten().enumerate() {
                key_to_path(kp, &format!("{sf}.secret.items[{j}]"), errs);
                seen(&kp.path, &s.name, errs);
            }
        }
        if let Some(s) = &source.config_map {
            kinds += 1;
            if s.name.is_empty() {
                errs.push(FieldError::required(format!("{sf}.configMap.name"), ""));
            }
            for (j, kp) in s.items.iter().flatten().enumerate() {
                key_to_path(kp, &format!("{sf}.configMap.items[{j}]"), errs);
                seen(&kp.path, &s.name, errs);
            }
        }
        if let Some(s) = &source.downward_api {
            kinds += 1;
            for file in s.items.iter().flatten() {
                downward_file(file, &format!("{sf}.downwardAPI"), errs);
                seen(&file.path, &file.path, errs);
            }
        }
        if let Some(t) = &source.service_account_token {
            kinds += 1;
            let tf = format!("{sf}.serviceAccountToken");
            if let Some(e) = t.expiration_seconds {
                if e < MIN_TOKEN_SECONDS {
                    errs.push(FieldError::invalid(
                        format!("{tf}.expirationSeconds"),
                        e,
                        "may not specify a duration less than 10 minutes",
                    ));
                }
                if e > 1 << 32 {
                    errs.push(FieldError::invalid(
                        format!("{tf}.expirationSeconds"),
                        e,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
            }
            // Upstream's paths for these two are the volume's, not the source's.
            if t.path.is_empty() {
                errs.push(FieldError::required(format!("{f}.path"), ""));
            } else {
                local_path(&format!("{f}.path"), &t.path, errs);
            }
        }
        if source.cluster_trust_bundle.is_some() {
            kinds += 1;
            errs.push(FieldError::forbidden(
                format!("{sf}.clusterTrustBundle"),
                "kubenode does not implement clusterTrustBundle projections (ClusterTrustBundle objects are beta and off by default upstream)",
            ));
        }
        if source.pod_certificate.is_some() {
            kinds += 1;
            errs.push(FieldError::forbidden(
                format!("{sf}.podCertificate"),
                "kubenode does not implement podCertificate projections (alpha upstream)",
            ));
        }
        if kinds > 1 {
            errs.push(FieldError::forbidden(
                &sf,
                "may not specify more than 1 volume type per source",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pod_tests::errors;

    fn volume(v: serde_json::Value) -> Vec<String> {
        errors(|p| p["spec"]["volumes"][0] = v.clone())
    }

    #[test]
    fn object_volumes_are_validated_as_upstream() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (serde_json::json!({"name": "data", "configMap": {"name": "cm", "defaultMode": 420, "items": [{"key": "k", "path": "a/b", "mode": 256}]}}), vec![]),
            (serde_json::json!({"name": "data", "configMap": {"name": "", "defaultMode": 512}}), vec![
                "spec.volumes[0].configMap.name: Required value",
                "spec.volumes[0].configMap.defaultMode: Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive",
            ]),
            (serde_json::json!({"name": "data", "configMap": {"name": "cm", "defaultMode": -1}}), vec![
                "spec.volumes[0].configMap.defaultMode: Invalid value: -1: must be a number between 0 and 0777 (octal), both inclusive",
            ]),
            (serde_json::json!({"name": "data", "secret": {"secretName": "s", "items": [
                {"key": "k", "path": "../escape"},
                {"key": "k", "path": "/abs"},
                {"key": "", "path": "..data"},
                {"key": "k", "path": "ok", "mode": 1000}
            ]}}), vec![
                "spec.volumes[0].secret.items[0].path: Invalid value: \"../escape\": must not contain '..'",
                "spec.volumes[0].secret.items[1].path: Invalid value: \"/abs\": must be a relative path",
                "spec.volumes[0].secret.items[2].key: Required value",
                "spec.volumes[0].secret.items[2].path: Invalid value: \"..data\": must not start with '..'",
                "spec.volumes[0].secret.items[3].mode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
            ]),
            (serde_json::json!({"name": "data", "secret": {}}), vec!["spec.volumes[0].secret.secretName: Required value"]),
            (serde_json::json!({"name": "data", "downwardAPI": {"items": [
                {"path": "l", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "a", "fieldRef": {"fieldPath": "metadata.annotations['a.b/c']"}},
                {"path": "n", "fieldRef": {"fieldPath": "spec.nodeName"}},
                {"path": "c", "resourceFieldRef": {"resource": "limits.cpu"}},
                {"path": "x"}
            ]}}), vec![
                "spec.volumes[0].downwardAPI.fieldRef.fieldPath: Unsupported value: \"spec.nodeName\": supported values: \"metadata.annotations\", \"metadata.labels\", \"metadata.name\", \"metadata.namespace\", \"metadata.uid\"",
                "spec.volumes[0].downwardAPI.resourceFieldRef.containerName: Required value",
                "spec.volumes[0].downwardAPI: Required value: one of fieldRef and resourceFieldRef is required",
            ]),
            (serde_json::json!({"name": "data", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 599}},
                {"configMap": {"name": "a", "items": [{"key": "k", "path": "p"}]}},
                {"secret": {"name": "b", "items": [{"key": "k", "path": "p"}]}},
                {"clusterTrustBundle": {"path": "ca.pem", "name": "b"}}
            ]}}), vec![
                "spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes",
                "spec.volumes[0].projected: Invalid value: \"b\": conflicting duplicate paths",
                "spec.volumes[0].projected.sources[3].clusterTrustBundle: Forbidden: kubenode does not implement clusterTrustBundle projections (ClusterTrustBundle objects are beta and off by default upstream)",
            ]),
        ];
        for (v, want) in cases {
            assert_eq!(volume(v.clone()), want, "{v}");
        }
    }
}
