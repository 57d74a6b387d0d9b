//! API errors as upstream's `metav1.Status` objects (k8s.io/apimachinery `errors.New*`): the same
//! HTTP code, `reason`, `message` format and `details`.

use serde_json::{json, Value};

use super::resources::Resource;

/// A failed request: the HTTP code and the `Status` body sent with it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, ...).
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when upstream sends one.
    pub details: Option<Value>,
}

impl ApiError {
    /// The `Status` object upstream sends with this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    fn with_details(mut self, res: &Resource, name: &str) -> ApiError {
        let mut details = json!({ "name": name, "kind": res.plural });
        if !res.group.is_empty() {
            details["group"] = json!(res.group);
        }
        self.details = Some(details);
        self
    }

    /// 404 `<resource> "<name>" not found`.
    pub fn not_found(res: &Resource, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", res.qualified()),
            details: None,
        }
        .with_details(res, name)
    }

    /// 409 `<resource> "<name>" already exists`.
    pub fn already_exists(res: &Resource, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", res.qualified()),
            details: None,
        }
        .with_details(res, name)
    }

    /// 409 `Operation cannot be fulfilled on <resource> "<name>": <why>`.
    pub fn conflict(res: &Resource, name: &str, why: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.qualified()
            ),
            details: None,
        }
        .with_details(res, name)
    }

    /// 409 Conflict for an update carrying a stale `metadata.resourceVersion`.
    pub fn stale(res: &Resource, name: &str) -> ApiError {
        ApiError::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 400 BadRequest with a free message.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 422 Invalid: `<Kind> "<name>" is invalid: <field>: <detail>` with one cause per field.
    pub fn invalid(res: &Resource, name: &str, causes: &[(&str, &str, String)]) -> ApiError {
        let text: Vec<String> = causes
            .iter()
            .map(|(field, _, msg)| format!("{field}: {msg}"))
            .collect();
        let message = if text.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", res.kind, text[0])
        } else {
            format!("{} \"{name}\" is invalid: [{}]", res.kind, text.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(field, reason, msg)| json!({"reason": reason, "message": msg, "field": field}))
            .collect();
        let mut details = json!({ "name": name, "kind": res.kind, "causes": causes });
        if !res.group.is_empty() {
            details["group"] = json!(res.group);
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(details),
        }
    }

    /// 410 Expired `too old resource version: <asked> (<oldest kept - 1>)`, as the watch cache.
    pub fn expired(asked: u64, oldest: u64) -> ApiError {
        ApiError {
            code: 410,
            reason: "Expired",
            message: format!("too old resource version: {asked} ({oldest})"),
            details: None,
        }
    }

    /// 504 Timeout `Too large resource version: <asked>, current: <current>` with the
    /// `ResourceVersionTooLarge` cause clients look for (they relist).
    pub fn too_large(asked: u64, current: u64) -> ApiError {
        ApiError {
            code: 504,
            reason: "Timeout",
            message: format!("Too large resource version: {asked}, current: {current}"),
            details: Some(serde_json::json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
        }
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> ApiError {
        ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource".into(),
            details: None,
        }
    }

    /// 404 for a path no resource serves.
    pub fn no_route() -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: None,
        }
    }

    /// 415 UnsupportedMediaType (a PATCH content type we do not know).
    pub fn unsupported_media_type(ct: &str) -> ApiError {
        ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"),
            details: None,
        }
    }
}
