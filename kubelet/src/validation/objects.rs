//! ConfigMaps and Secrets of the manifest directory, as the API server's `ValidateConfigMap` and
//! `ValidateSecret` check them: the name a DNS-1123 subdomain, keys `IsConfigMapKey`, a key not
//! in both `data` and `binaryData`, at most 1 MiB of values, and a typed Secret's required keys.
//! No error shows a Secret's value (keys are names, not content).

use super::meta::object_meta;
use super::names::{config_map_key_errors, dns1123_subdomain_errors};
use super::{Errors, FieldError, ValidationErrors};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

/// The most bytes of values a ConfigMap or Secret may hold (upstream `MaxSecretSize`, 1 MiB).
pub const MAX_OBJECT_SIZE: usize = 1 << 20;

fn result(errs: Errors) -> Result<(), ValidationErrors> {
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errs.0))
    }
}

/// Upstream `ValidateConfigMap` (the namespace already defaulted).
pub fn validate_config_map(cm: &ConfigMap) -> Result<(), ValidationErrors> {
    let mut errs = Errors::default();
    object_meta(&cm.metadata, dns1123_subdomain_errors, &mut errs);
    let mut total = 0;
    for (k, v) in cm.data.iter().flatten() {
        let f = format!("data[{k}]");
        errs.name(&f, k, config_map_key_errors(k));
        if cm.binary_data.as_ref().is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                &f,
                k,
                "duplicate of key present in binaryData",
            ));
        }
        total += v.len();
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        errs.name(&format!("binaryData[{k}]"), k, config_map_key_errors(k));
        total += v.0.len();
    }
    if total > MAX_OBJECT_SIZE {
        // Upstream names no field: the whole object is too large.
        errs.push(FieldError::too_long("", MAX_OBJECT_SIZE));
    }
    result(errs)
}

/// Upstream `ValidateSecret` (the namespace already defaulted; `stringData` merged into `data`).
pub fn validate_secret(secret: &Secret) -> Result<(), ValidationErrors> {
    let mut errs = Errors::default();
    object_meta(&secret.metadata, dns1123_subdomain_errors, &mut errs);
    let data = secret.data.as_ref();
    let mut total = 0;
    for (k, v) in data.into_iter().flatten() {
        errs.name(&format!("data[{k}]"), k, config_map_key_errors(k));
        total += v.0.len();
    }
    if total > MAX_OBJECT_SIZE {
        errs.push(FieldError::too_long("data", MAX_OBJECT_SIZE));
    }
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let required = |k: &str| FieldError::required(format!("data[{k}]"), "");
    // A JSON document (the docker configs), without showing the content.
    let json = |k: &str, errs: &mut Errors| {
        let bytes = data.and_then(|d| d.get(k)).map(|v| v.0.as_slice());
        if let Some(b) = bytes {
            if let Err(e) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(b)
            {
                errs.push(FieldError::invalid(
                    format!("data[{k}]"),
                    "<secret contents redacted>",
                    e.to_string(),
                ));
            }
        } else {
            errs.push(required(k));
        }
    };
    match secret.type_.as_deref().unwrap_or("Opaque") {
        "" | "Opaque" => {}
        "kubernetes.io/service-account-token" => {
            let name = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .filter(|v| !v.is_empty());
            if name.is_none() {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => json(".dockercfg", &mut errs),
        "kubernetes.io/dockerconfigjson" => json(".dockerconfigjson", &mut errs),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(required("username"));
            errs.push(required("password"));
        }
        "kubernetes.io/ssh-auth"
            if data
                .and_then(|d| d.get("ssh-privatekey"))
                .is_none_or(|v| v.0.is_empty()) =>
        {
            errs.push(required("ssh-privatekey"));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(required(k));
                }
            }
        }
        _ => {}
    }
    result(errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    fn errors<T>(r: Result<(), ValidationErrors>, _: &T) -> Vec<String> {
        r.err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn config_maps_as_the_api_server() {
        let cm = |name: &str, data: &[(&str, &str)], binary: &[(&str, &[u8])]| ConfigMap {
            metadata: meta(name),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            binary_data: Some(
                binary
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        let ok = cm(
            "app.config",
            &[("a.b", "1"), ("C_D-e", "2")],
            &[("bin", b"\x00\x01")],
        );
        assert_eq!(errors(validate_config_map(&ok), &ok), Vec::<String>::new());
        let cases: Vec<(ConfigMap, &str)> = vec![
            (cm("Bad_Name", &[], &[]), "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
            (cm("c", &[("a/b", "x")], &[]), "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
            (cm("c", &[("..", "x")], &[]), "data[..]: Invalid value: \"..\": must not be '..'"),
            (cm("c", &[("..x", "x")], &[]), "data[..x]: Invalid value: \"..x\": must not start with '..'"),
            (cm("c", &[(".", "x")], &[]), "data[.]: Invalid value: \".\": must not be '.'"),
            (cm("c", &[(&"k".repeat(254), "x")], &[]), "must be no more than 253 characters"),
            (cm("c", &[("k", "x")], &[("k", b"y")]), "data[k]: Invalid value: \"k\": duplicate of key present in binaryData"),
            (cm("c", &[("big", &"x".repeat(MAX_OBJECT_SIZE))], &[("more", b"y")]), ": Too long: may not be more than 1048576 bytes"),
        ];
        for (cm, want) in cases {
            let got = errors(validate_config_map(&cm), &cm);
            assert!(
                got.iter().any(|e| e.starts_with(want) || e.ends_with(want)),
                "want {want:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn secrets_as_the_api_server_without_their_values() {
        let secret = |type_: &str, data: &[(&str, &[u8])]| Secret {
            metadata: meta("s"),
            type_: Some(type_.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        };
        for ok in [
            secret("Opaque", &[("password", b"hunter2")]),
            secret(
                "kubernetes.io/dockerconfigjson",
                &[(".dockerconfigjson", b"{\"auths\":{}}")],
            ),
            secret("kubernetes.io/basic-auth", &[("password", b"")]),
            secret("kubernetes.io/tls", &[("tls.crt", b"c"), ("tls.key", b"k")]),
            secret("example.com/custom", &[]),
        ] {
            assert_eq!(errors(validate_secret(&ok), &ok), Vec::<String>::new());
        }
        let cases: Vec<(Secret, Vec<&str>)> = vec![
            (secret("kubernetes.io/dockerconfigjson", &[]), vec!["data[.dockerconfigjson]: Required value"]),
            (secret("kubernetes.io/dockercfg", &[(".dockercfg", b"hunter2")]), vec!["data[.dockercfg]: Invalid value: \"<secret contents redacted>\": expected value at line 1 column 1"]),
            (secret("kubernetes.io/basic-auth", &[]), vec!["data[username]: Required value", "data[password]: Required value"]),
            (secret("kubernetes.io/ssh-auth", &[("ssh-privatekey", b"")]), vec!["data[ssh-privatekey]: Required value"]),
            (secret("kubernetes.io/tls", &[("tls.crt", b"c")]), vec!["data[tls.key]: Required value"]),
            (secret("kubernetes.io/service-account-token", &[]), vec!["metadata.annotations[kubernetes.io/service-account.name]: Required value"]),
            (secret("Opaque", &[("a b", b"hunter2")]), vec!["data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]),
            (secret("Opaque", &[("big", &vec![b'x'; MAX_OBJECT_SIZE + 1])]), vec!["data: Too long: may not be more than 1048576 bytes"]),
        ];
        for (s, want) in cases {
            let got = errors(validate_secret(&s), &s);
            assert_eq!(got, want);
            assert!(got.iter().all(|e| !e.contains("hunter2")), "{got:?}");
        }
    }
}
