//! Pod validation before anything runs, as the API server's
//! `ValidatePodCreate` does for the parts kubenode implements. Every error
//! carries an upstream-style field path and text, e.g.
//! `spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive`.

mod affinity;
mod common;
mod container;
#[cfg(test)]
mod fields;
#[cfg(test)]
mod fields_tests;
pub mod meta;
pub mod names;
mod objects;
mod pod;
#[cfg(test)]
pub(crate) mod pod_tests;
mod probe;
pub mod quantity;
mod refused;
mod security;
mod service;
pub mod sysctl;
mod volumes;
#[cfg(test)]
mod walk;

pub(crate) use common::has_backsteps;
pub use objects::{validate_config_map, validate_secret, MAX_OBJECT_SIZE};
pub use pod::{validate_api_pod, validate_pod};
pub use service::{validate_endpoint_slice, validate_endpoints, validate_service};

use std::fmt;

/// The kind of a field error, as upstream's `field.ErrorType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Invalid value: <value>: <detail>`
    Invalid,
    /// `Required value[: <detail>]`
    Required,
    /// `Duplicate value: <value>`
    Duplicate,
    /// `Not found: <value>`
    NotFound,
    /// `Unsupported value: <value>: supported values: "a", "b"`
    NotSupported,
    /// `Forbidden: <detail>`
    Forbidden,
    /// `Too many: <value>: must have at most <detail> items`
    TooMany,
    /// `Too long: may not be more than <detail> bytes` (the value is never shown)
    TooLong,
}

/// A value shown in an error: strings are quoted as Go's `%q`, numbers are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string value.
    Str(String),
    /// An integer value.
    Int(i64),
    /// A structured value, shown as compact JSON (upstream prints its Go struct, pointer
    /// addresses included, which no one can reproduce).
    Json(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Json(j) => f.write_str(j),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Self::Str(s.clone())
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}
impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Self::Int(i.into())
    }
}

/// One validation failure of one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The offending value, when there is one.
    pub value: Option<Value>,
    /// Explanation (for `NotSupported`: the supported values, already quoted).
    pub detail: String,
}

impl FieldError {
    /// `Invalid value`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Invalid,
            value: Some(value.into()),
            detail: detail.into(),
        }
    }
    /// `Required value`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Required,
            value: None,
            detail: detail.into(),
        }
    }
    /// `Duplicate value`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Duplicate,
            value: Some(value.into()),
            detail: String::new(),
        }
    }
    /// `Not found`.
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::NotFound,
            value: Some(value.into()),
            detail: String::new(),
        }
    }
    /// `Unsupported value`, listing the supported values.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[&str],
    ) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            field: field.into(),
            kind: ErrorKind::NotSupported,
            value: Some(value.into()),
            detail: list,
        }
    }
    /// `Too many`: `count` items where at most `max` are allowed.
    pub fn too_many(field: impl Into<String>, count: usize, max: usize) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::TooMany,
            value: Some(Value::Int(count as i64)),
            detail: max.to_string(),
        }
    }
    /// `Too long`: more than `max` bytes (upstream `field.TooLong`; the value is not shown).
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::TooLong,
            value: None,
            detail: max.to_string(),
        }
    }
    /// `Forbidden`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        let value = self
            .value
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        match self.kind {
            ErrorKind::Invalid => write!(f, "Invalid value: {value}: {}", self.detail),
            ErrorKind::Required if self.detail.is_empty() => f.write_str("Required value"),
            ErrorKind::Required => write!(f, "Required value: {}", self.detail),
            ErrorKind::Duplicate => write!(f, "Duplicate value: {value}"),
            ErrorKind::NotFound => write!(f, "Not found: {value}"),
            ErrorKind::NotSupported => write!(
                f,
                "Unsupported value: {value}: supported values: {}",
                self.detail
            ),
            ErrorKind::Forbidden => write!(f, "Forbidden: {}", self.detail),
            ErrorKind::TooLong => {
                write!(f, "Too long: may not be more than {} bytes", self.detail)
            }
            ErrorKind::TooMany => write!(
                f,
                "Too many: {value}: must have at most {} items",
                self.detail
            ),
        }
    }
}

/// Every failure found in one object; displayed as upstream joins an
/// aggregate (`[a, b]` when more than one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                let parts: Vec<String> = many.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

/// Collects errors while walking an object.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    /// Adds one `Invalid` error per message of a name check.
    pub fn name(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for m in msgs {
            self.push(FieldError::invalid(field, value, m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_upstream() {
        let cases = [
            (
                FieldError::invalid("spec.containers[0].ports[1].containerPort", 70000, "must be between 1 and 65535, inclusive"),
                "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
            (FieldError::required("spec.containers[0].image", ""), "spec.containers[0].image: Required value"),
            (FieldError::duplicate("spec.containers[1].name", "web"), "spec.containers[1].name: Duplicate value: \"web\""),
            (
                FieldError::not_supported("spec.restartPolicy", "Sometimes", &["Always", "OnFailure", "Never"]),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
            (FieldError::not_found("spec.containers[0].volumeMounts[0].name", "data"), "spec.containers[0].volumeMounts[0].name: Not found: \"data\""),
            (FieldError::forbidden("spec.volumes[0]", "nope"), "spec.volumes[0]: Forbidden: nope"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
        let agg = ValidationErrors(vec![
            FieldError::required("a", ""),
            FieldError::required("b", "x"),
        ]);
        assert_eq!(agg.to_string(), "[a: Required value, b: Required value: x]");
    }
}
