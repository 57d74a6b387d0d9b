//! Object metadata checks shared by every kind the manifest directory holds, as the API server's
//! `ValidateObjectMeta` (apimachinery `api/validation/objectmeta.go`): the name by the kind's own
//! rule, the namespace as a DNS-1123 label, label keys and values, annotation keys. Each error
//! has upstream's field path (`metadata.name`, `metadata.namespace`, ...) and text.
//!
//! These are what keep hostile names out of everything downstream: a namespace or name reaches
//! iptables comments, log directory names (`<ns>_<pod>_<uid>`) and environment variable names.

use super::names::*;
use super::{Errors, FieldError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Max length of a DNS-1035 label.
pub const DNS1035_LABEL_MAX: usize = 63;
/// Upstream's message for a malformed DNS-1035 label (`IsDNS1035Label`).
pub const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Upstream `IsDNS1035Label` (`[a-z]([-a-z0-9]*[a-z0-9])?`, ≤ 63): the problems, empty when
/// valid. Service names follow it (they become DNS names and environment variable prefixes).
pub fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > DNS1035_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1035_LABEL_MAX} characters"
        ));
    }
    let b = s.as_bytes();
    let shape = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !shape {
        errs.push(DNS1035_LABEL_MSG.to_owned());
    }
    errs
}

/// A name rule: the problems of a name, empty when valid.
pub type NameRule = fn(&str) -> Vec<String>;

/// Upstream `ValidateObjectMeta` for a namespaced object whose names follow `name_rule`
/// (`ValidateServiceName` is DNS-1035, `ValidateEndpointsName` and pod names DNS-1123
/// subdomains; namespaces are always DNS-1123 labels, `ValidateNamespaceName`).
pub(crate) fn object_meta(meta: &ObjectMeta, name_rule: NameRule, errs: &mut Errors) {
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(n) => errs.name("metadata.name", n, name_rule(n)),
    }
    match meta.namespace.as_deref() {
        None | Some("") => errs.push(FieldError::required("metadata.namespace", "")),
        Some(ns) => errs.name("metadata.namespace", ns, dns1123_label_errors(ns)),
    }
    labels_and_annotations(meta, errs);
}

/// Label keys and values, and annotation keys, as upstream's `ValidateObjectMeta` checks them.
pub(crate) fn labels_and_annotations(meta: &ObjectMeta, errs: &mut Errors) {
    for (k, v) in meta.labels.iter().flatten() {
        errs.name("metadata.labels", k, qualified_name_errors(k));
        errs.name("metadata.labels", v, label_value_errors(v));
    }
    // Upstream checks annotation keys lower-cased.
    for k in meta.annotations.iter().flatten().map(|(k, _)| k) {
        errs.name(
            "metadata.annotations",
            k,
            qualified_name_errors(&k.to_lowercase()),
        );
    }
}

/// The metadata of a Service (`ValidateService`'s `ValidateObjectMeta` with
/// `ValidateServiceName`).
pub fn validate_service_meta(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errs = Errors::default();
    object_meta(meta, dns1035_label_errors, &mut errs);
    errs.0
}

/// The metadata of an Endpoints object (`ValidateEndpointsName`: a DNS-1123 subdomain).
pub fn validate_endpoints_meta(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errs = Errors::default();
    object_meta(meta, dns1123_subdomain_errors, &mut errs);
    errs.0
}

/// The metadata of a Pod (`ValidatePodName`: a DNS-1123 subdomain).
pub fn validate_pod_meta(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errs = Errors::default();
    object_meta(meta, dns1123_subdomain_errors, &mut errs);
    errs.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn texts(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn dns1035_labels() {
        for ok in ["a", "web", "a-1", "abc-123", &"a".repeat(63)] {
            assert!(dns1035_label_errors(ok).is_empty(), "{ok}");
        }
        for bad in ["", "1abc", "-a", "a-", "A", "a.b", "a_b", "a\"b"] {
            assert_eq!(
                dns1035_label_errors(bad),
                vec![DNS1035_LABEL_MSG.to_owned()],
                "{bad:?}"
            );
        }
        assert_eq!(
            dns1035_label_errors(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_owned()]
        );
    }

    #[test]
    fn hostile_namespaces_are_refused_with_upstream_text() {
        let cases = [
            "bad\"ns".to_string(),
            "a\nb".to_string(),
            "x".repeat(200),
            "UPPER".to_string(),
            "a.b".to_string(),
            "ns\\".to_string(),
        ];
        for ns in &cases {
            for errs in [
                validate_service_meta(&meta(ns, "web")),
                validate_endpoints_meta(&meta(ns, "web")),
                validate_pod_meta(&meta(ns, "web")),
            ] {
                assert!(!errs.is_empty(), "{ns:?} accepted");
                assert!(
                    errs.iter().all(|e| e.field == "metadata.namespace"),
                    "{ns:?}: {errs:?}"
                );
            }
        }
        assert_eq!(
            texts(validate_service_meta(&meta("bad\"ns", "web"))),
            vec![format!(
                "metadata.namespace: Invalid value: \"bad\\\"ns\": {DNS1123_LABEL_MSG}"
            )]
        );
        let long = "x".repeat(200);
        assert_eq!(
            texts(validate_service_meta(&meta(&long, "web"))),
            vec![format!(
                "metadata.namespace: Invalid value: {long:?}: must be no more than 63 characters"
            )]
        );
    }

    #[test]
    fn names_follow_the_kind_rule() {
        // A Service name is a DNS-1035 label: no leading digit, no dot.
        assert_eq!(
            texts(validate_service_meta(&meta("default", "1web"))),
            vec![format!(
                "metadata.name: Invalid value: \"1web\": {DNS1035_LABEL_MSG}"
            )]
        );
        assert!(validate_service_meta(&meta("default", "web-1")).is_empty());
        // Endpoints and pods: DNS-1123 subdomains, dots allowed.
        assert!(validate_endpoints_meta(&meta("default", "1web.v2")).is_empty());
        assert!(validate_pod_meta(&meta("kube-system", "etcd.node-1")).is_empty());
        assert_eq!(
            texts(validate_endpoints_meta(&meta("default", "we\"b"))),
            vec![format!(
                "metadata.name: Invalid value: \"we\\\"b\": {DNS1123_SUBDOMAIN_MSG}"
            )]
        );
        // Missing name and namespace: both reported.
        assert_eq!(
            texts(validate_service_meta(&ObjectMeta::default())),
            vec![
                "metadata.name: Required value: name or generateName is required",
                "metadata.namespace: Required value",
            ]
        );
        let mut m = meta("default", "web");
        m.labels = Some([("app".to_string(), "bad value".to_string())].into());
        m.annotations = Some([("a b".to_string(), String::new())].into());
        let errs = validate_service_meta(&m);
        assert_eq!(
            errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["metadata.labels", "metadata.annotations"]
        );
    }
}
