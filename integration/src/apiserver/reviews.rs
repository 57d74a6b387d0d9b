//! `authentication.k8s.io/v1` TokenReview and `authorization.k8s.io/v1` SubjectAccessReview,
//! what a kubelet's HTTPS server asks about its clients (upstream's webhook token
//! authenticator and webhook authorizer call them). Both are create-only and stored nowhere;
//! the answer is the request with its `status`, 201 Created.
//!
//! - TokenReview: the token is checked as the stand-in's own authenticators check a bearer
//!   token: its static tokens, bootstrap tokens, and the service-account JWTs it signed
//!   (user `system:serviceaccount:<ns>:<name>`, groups `system:serviceaccounts`,
//!   `system:serviceaccounts:<ns>`, `system:authenticated`; extra
//!   `authentication.kubernetes.io/pod-name`/`pod-uid` for a pod-bound token, as upstream; an
//!   expired one is rejected). A rejected token: `authenticated: false` and an `error`.
//! - SubjectAccessReview, a small written-down policy in place of RBAC: allowed for users in
//!   `system:masters` and for the users and groups of [`HttpsOptions::allowed_subjects`]
//!   (`kubelet-api-admin`'s binding in a kubeadm cluster, for the tests), denied for everyone
//!   else; the reason names the rule.
//!
//! Only authenticated users that are not bootstrappers may create either (upstream grants
//! them to `system:node`, `system:kube-controller-manager`, ... through RBAC).
//!
//! [`HttpsOptions::allowed_subjects`]: super::HttpsOptions::allowed_subjects

use serde_json::{json, Value};

use super::auth::{Authenticator, Identity};
use super::handler::Reply;
use super::status::ApiError;
use super::store::Store;

fn decode(body: &[u8], kind: &str, group: &str) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {e}"
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: not an object"
        )));
    }
    let mut v = v;
    v["apiVersion"] = json!(format!("{group}/v1"));
    v["kind"] = json!(kind);
    if v.get("metadata").is_none() {
        v["metadata"] = json!({});
    }
    v["metadata"]["creationTimestamp"] = Value::Null;
    Ok(v)
}

fn invalid(kind: &str, field: &str, detail: &str) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "{kind}.{} \"\" is invalid: {field}: Required value{detail}",
            kind_group(kind)
        ),
        details: Some(json!({"kind": kind, "group": kind_group(kind),
            "causes": [{"reason": "FieldValueRequired", "message": format!("Required value{detail}"), "field": field}]})),
    }
}

fn kind_group(kind: &str) -> &'static str {
    if kind == "TokenReview" {
        "authentication.k8s.io"
    } else {
        "authorization.k8s.io"
    }
}

/// The identity of a service-account JWT this stand-in signed and that has not expired.
fn service_account(token: &str) -> Option<(Identity, Value)> {
    let claims = super::serviceaccounts::verify(token)?;
    let now = jiff::Timestamp::now().as_second();
    if claims["exp"].as_i64().is_some_and(|exp| exp < now) {
        return None;
    }
    let k = &claims["kubernetes.io"];
    let ns = k["namespace"].as_str()?;
    let sa = k["serviceaccount"]["name"].as_str()?;
    let uid = k["serviceaccount"]["uid"].as_str().unwrap_or("");
    let mut extra = serde_json::Map::new();
    if let (Some(name), Some(puid)) = (k["pod"]["name"].as_str(), k["pod"]["uid"].as_str()) {
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            json!([name]),
        );
        extra.insert("authentication.kubernetes.io/pod-uid".into(), json!([puid]));
    }
    let id = Identity {
        user: format!("system:serviceaccount:{ns}:{sa}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    };
    Some((id, json!({"uid": uid, "extra": extra})))
}

fn may_review(requester: Option<&Identity>) -> Result<(), ApiError> {
    match requester {
        Some(id) if id.in_group("system:bootstrappers") => Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "the review is forbidden: User \"{}\" cannot create reviews",
                id.user
            ),
            details: None,
        }),
        _ => Ok(()),
    }
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub fn token_review(
    authn: &Authenticator,
    store: &Store,
    requester: Option<&Identity>,
    body: &[u8],
) -> Result<Reply, ApiError> {
    may_review(requester)?;
    let mut review = decode(body, "TokenReview", "authentication.k8s.io")?;
    let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
    if token.is_empty() {
        return Err(invalid("TokenReview", "spec.token", ""));
    }
    let found = service_account(&token).or_else(|| {
        authn
            .authenticate(None, &format!("Bearer {token}"), store)
            .ok()
            .map(|id| (id, json!({})))
    });
    let audiences = review["spec"]["audiences"].clone();
    review["status"] = match found {
        Some((id, more)) => {
            let mut user = json!({"username": id.user, "groups": id.groups});
            if let Some(uid) = more["uid"].as_str().filter(|u| !u.is_empty()) {
                user["uid"] = json!(uid);
            }
            if more["extra"].as_object().is_some_and(|m| !m.is_empty()) {
                user["extra"] = more["extra"].clone();
            }
            let mut s = json!({"authenticated": true, "user": user});
            if audiences.is_array() {
                s["audiences"] = audiences;
            }
            s
        }
        None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
    };
    Ok(Reply {
        code: 201,
        body: review,
        warnings: Vec::new(),
    })
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`; `allowed_subjects`: users and
/// groups allowed everything besides `system:masters`.
pub fn subject_access_review(
    allowed_subjects: &[String],
    requester: Option<&Identity>,
    body: &[u8],
) -> Result<Reply, ApiError> {
    may_review(requester)?;
    let mut review = decode(body, "SubjectAccessReview", "authorization.k8s.io")?;
    let spec = &review["spec"];
    if spec["resourceAttributes"].is_null() && spec["nonResourceAttributes"].is_null() {
        return Err(invalid(
            "SubjectAccessReview",
            "spec.resourceAttributes",
            ": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let user = spec["user"].as_str().unwrap_or("").to_string();
    let groups: Vec<String> = spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_string))
        .collect();
    if user.is_empty() && groups.is_empty() {
        return Err(invalid(
            "SubjectAccessReview",
            "spec.user",
            ": at least one of user or group must be specified",
        ));
    }
    let rule = if groups.iter().any(|g| g == "system:masters") {
        Some("the group system:masters".to_string())
    } else if allowed_subjects.contains(&user) {
        Some(format!("the user {user:?} of the allowed subjects"))
    } else {
        groups
            .iter()
            .find(|g| allowed_subjects.contains(g))
            .map(|g| format!("the group {g:?} of the allowed subjects"))
    };
    review["status"] = match rule {
        Some(r) => json!({"allowed": true, "reason": format!("kn-apiserver: allowed to {r}")}),
        None => json!({"allowed": false}),
    };
    Ok(Reply {
        code: 201,
        body: review,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_reviews_know_static_tokens_only_here() {
        let mut a = Authenticator::default();
        a.add_static_token("admin-token", "admin", &["system:masters"]);
        let store = Store::new(10);
        let r = token_review(&a, &store, None, br#"{"spec":{"token":"admin-token"}}"#).unwrap();
        assert_eq!(r.code, 201);
        assert_eq!(r.body["kind"], "TokenReview");
        assert_eq!(r.body["status"]["authenticated"], true);
        assert_eq!(r.body["status"]["user"]["username"], "admin");
        let r = token_review(&a, &store, None, br#"{"spec":{"token":"nope"}}"#).unwrap();
        assert_eq!(r.body["status"]["authenticated"], Value::Null);
        assert!(r.body["status"]["error"].is_string());
        assert_eq!(
            token_review(&a, &store, None, br#"{"spec":{}}"#)
                .unwrap_err()
                .code,
            422
        );
    }

    #[test]
    fn access_reviews_follow_the_written_policy() {
        let allow = vec!["kubelet-client".to_string()];
        let sar = |u: &str, g: &str| {
            let body = json!({"spec": {"user": u, "groups": [g],
                "resourceAttributes": {"verb": "get", "resource": "nodes", "subresource": "proxy", "name": "n1"}}});
            subject_access_review(&allow, None, body.to_string().as_bytes())
                .unwrap()
                .body["status"]["allowed"]
                .clone()
        };
        assert_eq!(sar("admin", "system:masters"), true);
        assert_eq!(sar("kubelet-client", "x"), true);
        assert_eq!(sar("someone", "system:authenticated"), false);
        let e = subject_access_review(&allow, None, br#"{"spec":{"user":"a"}}"#).unwrap_err();
        assert_eq!(e.code, 422);
    }
}
