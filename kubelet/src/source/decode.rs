//! Decoding one manifest file: YAML (one or more documents) or JSON, each
//! document a Pod, Service, Endpoints, EndpointSlice (`discovery.k8s.io/v1`), ConfigMap, Secret
//! or a List of them. A Secret's `stringData` is merged into `data` as the API server does, and a
//! Secret's decoding errors never show a value.

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// One object decoded from a file.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Object {
    Pod(Box<Pod>),
    Service(Box<Service>),
    Endpoints(Box<Endpoints>),
    EndpointSlice(Box<EndpointSlice>),
    ConfigMap(Box<ConfigMap>),
    Secret(SecretDoc),
}

/// A Secret whose `Debug` shows no value.
#[derive(Clone, PartialEq)]
pub(super) struct SecretDoc(pub Box<Secret>);

impl std::fmt::Debug for SecretDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::objects::Redacted(&self.0).fmt(f)
    }
}

/// A Secret as the API server stores it: `stringData` merged into `data` (a `stringData` key
/// wins), `type` defaulted to `Opaque`.
pub(super) fn normalize_secret(mut s: Secret) -> Secret {
    if let Some(strings) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
    if s.type_.as_deref().is_none_or(str::is_empty) {
        s.type_ = Some("Opaque".into());
    }
    s
}

/// A problem with one document: optional field path and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DocError {
    pub document: Option<usize>,
    pub field: Option<String>,
    pub reason: String,
}

/// One decoded object and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Decoded {
    pub document: usize,
    /// `items[i]` for members of a List.
    pub item: Option<usize>,
    pub object: Object,
}

fn typed<T: DeserializeOwned>(
    v: serde_json::Value,
    prefix: &str,
) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            None
        } else {
            Some(format!("{prefix}{path}"))
        };
        (field, e.into_inner().to_string())
    })
}

fn decode_value(
    v: serde_json::Value,
    document: usize,
    item: Option<usize>,
    out: &mut Vec<Decoded>,
    errs: &mut Vec<DocError>,
) {
    let prefix = item.map(|i| format!("items[{i}].")).unwrap_or_default();
    let err = |field: Option<String>, reason: String| DocError {
        document: Some(document),
        field,
        reason,
    };
    let Some(map) = v.as_object() else {
        errs.push(err(None, "document is not an object".into()));
        return;
    };
    let kind = map
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned();
    let api_version = map
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned();
    if kind.is_empty() {
        errs.push(err(
            Some(format!("{prefix}kind")),
            "Object 'Kind' is missing".into(),
        ));
        return;
    }
    let core = api_version == "v1";
    let object = match kind.as_str() {
        "List" | "PodList" | "ServiceList" | "EndpointsList" | "EndpointSliceList"
        | "ConfigMapList" | "SecretList"
            if item.is_none() =>
        {
            let items = map
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default();
            for (i, it) in items.into_iter().enumerate() {
                decode_value(it, document, Some(i), out, errs);
            }
            return;
        }
        "Pod" | "Service" | "Endpoints" | "ConfigMap" | "Secret" if !core => {
            errs.push(err(
                Some(format!("{prefix}apiVersion")),
                format!("{kind} must have apiVersion \"v1\", not {api_version:?}"),
            ));
            return;
        }
        "EndpointSlice" if api_version != "discovery.k8s.io/v1" => {
            errs.push(err(
                Some(format!("{prefix}apiVersion")),
                format!("EndpointSlice must have apiVersion \"discovery.k8s.io/v1\", not {api_version:?}"),
            ));
            return;
        }
        "EndpointSlice" => {
            typed::<EndpointSlice>(v, &prefix).map(|e| Object::EndpointSlice(Box::new(e)))
        }
        "Pod" => {
            typed::<Pod>(super::octal::yaml11_modes(v), &prefix).map(|p| Object::Pod(Box::new(p)))
        }
        "Service" => typed::<Service>(v, &prefix).map(|s| Object::Service(Box::new(s))),
        "Endpoints" => typed::<Endpoints>(v, &prefix).map(|e| Object::Endpoints(Box::new(e))),
        "ConfigMap" => typed::<ConfigMap>(v, &prefix).map(|c| Object::ConfigMap(Box::new(c))),
        "Secret" => typed::<Secret>(v, &prefix)
            .map(|s| Object::Secret(SecretDoc(Box::new(normalize_secret(s)))))
            .map_err(|(field, reason)| {
                // serde's messages quote what they could not take ("invalid type: integer
                // `5`", a base64 decoder's offending byte): a value's are not shown.
                let in_values = field.as_deref().is_none_or(|f| {
                    let f = f.strip_prefix(&prefix).unwrap_or(f);
                    f.starts_with("data") || f.starts_with("stringData")
                });
                if in_values {
                    let reason = "invalid value: `data` holds base64 strings and `stringData` strings (the value is not shown)".to_string();
                    (field, reason)
                } else {
                    (field, reason)
                }
            }),
        other => {
            errs.push(err(
                Some(format!("{prefix}kind")),
                format!("kind {other:?} is not supported in a manifest directory (Pod, Service, Endpoints, EndpointSlice, ConfigMap, Secret or List)"),
            ));
            return;
        }
    };
    match object {
        Ok(object) => out.push(Decoded {
            document,
            item,
            object,
        }),
        Err((field, reason)) => errs.push(err(field, reason)),
    }
}

/// Decodes every document of a file's text. Empty documents are skipped;
/// a document that is not valid YAML stops the file there (the YAML
/// stream cannot be resynchronised), earlier documents still count.
pub(super) fn decode_file(text: &str) -> (Vec<Decoded>, Vec<DocError>) {
    let (mut out, mut errs) = (vec![], vec![]);
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml_ng::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                errs.push(DocError {
                    document: Some(i),
                    field: None,
                    reason: format!("invalid YAML or JSON: {e}"),
                });
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match serde_json::to_value(&value) {
            Ok(json) => decode_value(json, i, None, &mut out, &mut errs),
            Err(e) => errs.push(DocError {
                document: Some(i),
                field: None,
                reason: format!("not a JSON-compatible document: {e}"),
            }),
        }
    }
    (out, errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_errors() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n---\n\
                    ---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: s}}\n\
                    - {apiVersion: v1, kind: Endpoints, metadata: {name: s}}\n- {apiVersion: apps/v1, kind: Deployment}\n\
                    ---\nkind: Pod\napiVersion: v1\nspec: {containers: [{name: c, ports: [{containerPort: many}]}]}\n\
                    ---\nmetadata: {}\n";
        let (objs, errs) = decode_file(text);
        assert_eq!(objs.len(), 3);
        assert!(matches!(objs[0].object, Object::Pod(_)));
        assert_eq!((objs[1].document, objs[1].item), (2, Some(0)));
        assert!(matches!(objs[2].object, Object::Endpoints(_)));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0].field.as_deref(), Some("items[2].kind"));
        assert_eq!(errs[1].document, Some(3));
        assert_eq!(
            errs[1].field.as_deref(),
            Some("spec.containers[0].ports[0].containerPort")
        );
        assert_eq!(errs[2].reason, "Object 'Kind' is missing");
    }

    #[test]
    fn json_and_bad_yaml() {
        let (objs, errs) = decode_file(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[]}}"#,
        );
        assert_eq!((objs.len(), errs.len()), (1, 0));
        let (objs, errs) = decode_file("kind: Pod\n  bad: [\n");
        assert!(objs.is_empty());
        assert!(
            errs[0].reason.starts_with("invalid YAML or JSON"),
            "{errs:?}"
        );
        let (objs, errs) = decode_file("apiVersion: v2\nkind: Pod\n");
        assert!(objs.is_empty());
        assert_eq!(errs[0].field.as_deref(), Some("apiVersion"));
    }
}
