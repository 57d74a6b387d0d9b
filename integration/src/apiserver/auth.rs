//! Authentication and authorization of the stand-in's HTTPS mode, as kube-apiserver's:
//!
//! - x509 client certificates verified against the cluster CA (by the TLS handshake, and again
//!   at each request for the validity period, as upstream's x509 authenticator verifies the
//!   chain per request): user = `CN`, groups = `O`.
//! - Bearer tokens: static tokens (upstream's `--token-auth-file`, for a test's admin) and
//!   bootstrap tokens `<id>.<secret>` read as upstream's bootstrap authenticator
//!   (`plugin/pkg/auth/authenticator/token/bootstrap`) reads them: the Secret
//!   `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`, its `token-id`
//!   and `token-secret`, `usage-bootstrap-authentication: "true"`, an `expiration` (RFC 3339) not
//!   passed, not being deleted; user `system:bootstrap:<id>`, groups `system:bootstrappers` plus
//!   the `auth-extra-groups` (each must start with `system:bootstrappers:`).
//! - Every authenticated user also gets `system:authenticated`. A request no authenticator
//!   accepts is a 401 `Unauthorized` Status (anonymous requests are off, as
//!   `--anonymous-auth=false`).
//!
//! Authorization is kept small and written down: a user in `system:bootstrappers` may only
//! create, get, list and watch CertificateSigningRequests (kubeadm's `system:node-bootstrapper`
//! role) and read discovery (`system:discovery`); everything else it asks is a 403 with
//! upstream's RBAC message. Every other authenticated user may do everything (no RBAC roles,
//! no Node authorizer, no NodeRestriction admission).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::resources::RESOURCES;
use super::status::ApiError;
use super::store::Store;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user.Info.GetName()`.
    pub user: String,
    /// `user.Info.GetGroups()`, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl Identity {
    fn new(user: String, mut groups: Vec<String>) -> Identity {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Identity { user, groups }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The verified client certificate of a connection: its subject and validity.
#[derive(Debug, Clone)]
pub struct PeerCert {
    /// `CN`.
    pub user: String,
    /// `O`s.
    pub groups: Vec<String>,
    /// `notBefore`, seconds since the epoch.
    pub not_before: i64,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
}

impl PeerCert {
    /// Reads the subject and validity of a DER certificate (already verified against the CA by
    /// the TLS handshake).
    pub fn from_der(der: &[u8]) -> Option<PeerCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(PeerCert {
            user,
            groups,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// The stand-in's authenticators.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// Static bearer tokens: token → identity.
    pub static_tokens: BTreeMap<String, Identity>,
}

impl Authenticator {
    /// Adds a static token for `user` in `groups`.
    pub fn add_static_token(&mut self, token: &str, user: &str, groups: &[&str]) {
        self.static_tokens.insert(
            token.to_string(),
            Identity::new(user.into(), groups.iter().map(|g| g.to_string()).collect()),
        );
    }

    /// The identity of a request: its connection's client certificate if valid now, else its
    /// bearer token (`Authorization: Bearer ...`); 401 when neither authenticates.
    pub fn authenticate(
        &self,
        peer: Option<&PeerCert>,
        authorization: &str,
        store: &Store,
    ) -> Result<Identity, ApiError> {
        let now = jiff::Timestamp::now().as_second();
        if let Some(p) = peer {
            if now >= p.not_before && now <= p.not_after {
                return Ok(Identity::new(p.user.clone(), p.groups.clone()));
            }
        }
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .map(str::trim)
            .unwrap_or("");
        if !token.is_empty() {
            if let Some(id) = self.static_tokens.get(token) {
                return Ok(id.clone());
            }
            if let Some(id) = bootstrap_token(token, store) {
                return Ok(id);
            }
        }
        Err(unauthorized())
    }
}

/// 401, as upstream's `responsewriters.Unauthorized`.
pub fn unauthorized() -> ApiError {
    ApiError {
        code: 401,
        reason: "Unauthorized",
        message: "Unauthorized".into(),
        details: None,
    }
}

fn secret_data(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine;
    let b = secret["data"][key].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
    String::from_utf8(raw).ok()
}

/// Upstream's bootstrap token authenticator (`TokenAuthenticator.AuthenticateToken`).
fn bootstrap_token(token: &str, store: &Store) -> Option<Identity> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    if !ok(id, 6) || !ok(secret, 16) {
        return None;
    }
    let res = RESOURCES.iter().position(|r| r.kind == "Secret")?;
    let s = store.get(&(
        res,
        "kube-system".to_string(),
        format!("bootstrap-token-{id}"),
    ))?;
    if !s["metadata"]["deletionTimestamp"].is_null()
        || s["type"].as_str() != Some("bootstrap.kubernetes.io/token")
        || secret_data(s, "token-id").as_deref() != Some(id)
        || secret_data(s, "token-secret").as_deref() != Some(secret)
        || secret_data(s, "usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(exp) = secret_data(s, "expiration") {
        match exp.parse::<jiff::Timestamp>() {
            Ok(t) if t > jiff::Timestamp::now() => {}
            // expired, or an expiration that does not parse: upstream refuses the token
            _ => return None,
        }
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    if let Some(extra) = secret_data(s, "auth-extra-groups") {
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !g.starts_with("system:bootstrappers:") {
                return None;
            }
            groups.push(g.to_string());
        }
    }
    Some(Identity::new(format!("system:bootstrap:{id}"), groups))
}

/// What a request asks to do, for the authorizer.
#[derive(Debug)]
pub struct Attributes<'a> {
    /// `create`, `get`, `list`, `watch`, `update`, `patch`, `delete`.
    pub verb: &'a str,
    /// `None`: a non-resource path (discovery, `/version`, `/healthz`).
    pub resource: Option<(&'static str, &'static str)>,
    /// The subresource.
    pub subresource: Option<&'a str>,
    /// The namespace (`None`: cluster scope).
    pub namespace: Option<&'a str>,
    /// The object's name.
    pub name: &'a str,
}

/// The authorizer: a bootstrap identity may only read discovery and create/get/list/watch
/// CSRs; anyone else may do anything. 403 as upstream's RBAC denies.
pub fn authorize(id: &Identity, a: &Attributes<'_>) -> Result<(), ApiError> {
    if !id.in_group("system:bootstrappers") {
        return Ok(());
    }
    let Some((group, plural)) = a.resource else {
        // system:discovery / system:basic-user: GETs of the non-resource paths
        return Ok(());
    };
    if group == "certificates.k8s.io"
        && plural == "certificatesigningrequests"
        && a.subresource.is_none()
        && matches!(a.verb, "create" | "get" | "list" | "watch")
    {
        return Ok(());
    }
    let resource = match a.subresource {
        Some(sub) => format!("{plural}/{sub}"),
        None => plural.to_string(),
    };
    let scope = match a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let qualified = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    let what = if a.name.is_empty() {
        format!("{qualified} is forbidden")
    } else {
        format!("{qualified} \"{}\" is forbidden", a.name)
    };
    let mut details = json!({"name": a.name, "kind": plural});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    Err(ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{what}: User \"{}\" cannot {} resource \"{resource}\" in API group \"{group}\" {scope}",
            id.user, a.verb
        ),
        details: Some(details),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrappers_may_only_use_csrs() {
        let id = Identity::new(
            "system:bootstrap:abcdef".into(),
            vec!["system:bootstrappers".into()],
        );
        let csr = Attributes {
            verb: "create",
            resource: Some(("certificates.k8s.io", "certificatesigningrequests")),
            subresource: None,
            namespace: None,
            name: "",
        };
        assert!(authorize(&id, &csr).is_ok());
        let nodes = Attributes {
            verb: "list",
            resource: Some(("", "nodes")),
            subresource: None,
            namespace: None,
            name: "",
        };
        let e = authorize(&id, &nodes).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "nodes is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let approve = Attributes {
            verb: "update",
            resource: Some(("certificates.k8s.io", "certificatesigningrequests")),
            subresource: Some("approval"),
            namespace: None,
            name: "csr-x",
        };
        assert!(authorize(&id, &approve)
            .unwrap_err()
            .message
            .starts_with("certificatesigningrequests.certificates.k8s.io \"csr-x\" is forbidden: User \"system:bootstrap:abcdef\" cannot update resource \"certificatesigningrequests/approval\""));
        let node = Identity::new("system:node:n1".into(), vec!["system:nodes".into()]);
        assert!(authorize(&node, &nodes).is_ok());
    }
}
