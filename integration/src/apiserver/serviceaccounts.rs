//! ServiceAccounts and their tokens: the `default` ServiceAccount of every namespace (upstream's
//! serviceaccount controller), the `kube-root-ca.crt` ConfigMap (root-ca-cert-publisher) where
//! ConfigMaps are served and a CA is known, and `serviceaccounts/<name>/token` (TokenRequest,
//! `authentication.k8s.io/v1`) as `pkg/registry/core/serviceaccount/storage/token.go` serves it:
//! the same checks, errors and claims, signed ES256 with one key per process. The request may
//! be JSON or protobuf (kubectl's typed client, `kubectl create token`, sends protobuf; the
//! answer is JSON, which it accepts).
//!
//! Not: `--service-account-max-token-expiration` (no maximum), token review/authentication
//! (the stand-in authenticates nobody), the OIDC discovery documents (`/openid/v1/jwks`; a test
//! verifies a token with [`verify`]).

use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use k8s_openapi::api::authentication::v1::TokenRequest;
use serde_json::{json, Value};
use sha2::Digest as _;

use super::handler::{self, new_uid, Query, Reply, Shared, Target};
use super::resources::RESOURCES;
use super::status::ApiError;

/// The issuer (`iss`) of the tokens: kubeadm's `--service-account-issuer`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The API server's audience (`--api-audiences`, defaulting to the issuer): a TokenRequest
/// without audiences gets it.
pub const API_AUDIENCE: &str = ISSUER;
/// The shortest token lifetime a TokenRequest may ask for (upstream `MinTokenAgeSec`).
pub const MIN_TOKEN_SECONDS: i64 = 600;
/// The longest (upstream `MaxTokenAgeSec`, 2^32 s).
pub const MAX_TOKEN_SECONDS: i64 = 1 << 32;
/// `spec.expirationSeconds` when unset (`SetDefaults_TokenRequestSpec`).
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// The lifetime ServiceAccount admission asks for (`WarnOnlyBoundTokenExpirationSeconds`): the
/// token of a pod-bound request of it for the API audience is extended to a year
/// (`--service-account-extend-token-expiration`, on by default) with a `warnafter` claim.
pub const WARN_ONLY_SECONDS: i64 = 3607;
/// The extended lifetime (`ExpirationExtensionSeconds`, 24 × 365 h).
pub const EXTENDED_SECONDS: i64 = 24 * 365 * 3600;

fn key() -> &'static EcdsaKeyPair {
    static KEY: OnceLock<EcdsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generating a P-256 key")
    })
}

/// The key ID in the JWT header, as upstream's `keyIDFromPublicKey` a base64url SHA-256 of the
/// public key (of its raw point here, of its DER form upstream).
fn key_id() -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(key().public_key().as_ref()))
}

fn res_index(kind: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.kind == kind)
}

/// What the namespace-scoped controllers make in a new namespace: the `default`
/// ServiceAccount (the serviceaccount controller) and, where ConfigMaps are served and the
/// server has a CA, `kube-root-ca.crt` (root-ca-cert-publisher). Upstream's controllers do it
/// asynchronously; here it is done with the namespace's creation.
pub fn namespace_created(shared: &Shared, ns: &str) {
    if let Some(sa) = res_index("ServiceAccount") {
        let t = Target {
            res: sa,
            ns: Some(ns.to_string()),
            name: None,
            sub: None,
        };
        let body =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        let _ = handler::create(shared, &t, &Query::new(), body.to_string().as_bytes());
    }
    if let Some(ca) = root_ca() {
        publish_root_ca(shared, ns, ca);
    }
}

/// The cluster CA that `kube-root-ca.crt` publishes: none while the stand-in speaks plain HTTP
/// (set with [`set_root_ca`] by the HTTPS stand-in).
fn root_ca() -> Option<&'static str> {
    ROOT_CA.get().map(String::as_str)
}

static ROOT_CA: OnceLock<String> = OnceLock::new();

/// The PEM of the CA the stand-in serves with; namespaces created afterwards get a
/// `kube-root-ca.crt` ConfigMap carrying it (where ConfigMaps are served).
pub fn set_root_ca(pem: String) {
    let _ = ROOT_CA.set(pem);
}

/// root-ca-cert-publisher: `kube-root-ca.crt` with `ca.crt` in `ns` (when ConfigMaps are
/// served).
fn publish_root_ca(shared: &Shared, ns: &str, ca: &str) {
    let Some(cm) = res_index("ConfigMap") else {
        return;
    };
    let t = Target {
        res: cm,
        ns: Some(ns.to_string()),
        name: None,
        sub: None,
    };
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt",
            "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": ca}});
    let _ = handler::create(shared, &t, &Query::new(), body.to_string().as_bytes());
}

fn tr_invalid(field: &str, value: Value, detail: &str, name: &str) -> ApiError {
    let value = match &value {
        Value::String(s) => format!("\"{s}\""),
        v => v.to_string(),
    };
    let msg = format!("Invalid value: {value}: {detail}");
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "TokenRequest.authentication.k8s.io \"{name}\" is invalid: {field}: {msg}"
        ),
        details: Some(
            json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest",
            "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": field}]}),
        ),
    }
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `POST serviceaccounts/<name>/token`, in JSON or (what kubectl's typed client sends)
/// protobuf.
pub fn token_request(
    shared: &Shared,
    t: &Target,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let sa_res = t.resource();
    if sa_res.kind != "ServiceAccount" {
        return Err(ApiError::no_route());
    }
    let name = t.name.clone().ok_or_else(ApiError::method_not_allowed)?;
    let ns = t.ns.clone().ok_or_else(ApiError::no_route)?;
    let cannot = |e: String| {
        ApiError::bad_request(format!(
            "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: {e}"
        ))
    };
    let raw: Value = if content_type.starts_with(PROTOBUF) {
        proto::token_request(body).map_err(|e| cannot(e.to_string()))?
    } else {
        serde_json::from_slice(body).map_err(|e| cannot(e.to_string()))?
    };
    let mut req: TokenRequest = serde_json::from_value(raw).map_err(|e| cannot(e.to_string()))?;
    let meta_name = req.metadata.name.clone().unwrap_or_default();
    if !meta_name.is_empty() && meta_name != name {
        return Err(tr_invalid(
            "metadata.name",
            json!(meta_name),
            "must match the service account name if specified",
            &name,
        ));
    }
    let meta_ns = req.metadata.namespace.clone().unwrap_or_default();
    if !meta_ns.is_empty() && meta_ns != ns {
        return Err(tr_invalid(
            "metadata.namespace",
            json!(meta_ns),
            "must match the service account namespace if specified",
            &name,
        ));
    }
    let store = shared.lock();
    let sa = store
        .get(&(t.res, ns.clone(), name.clone()))
        .cloned()
        .ok_or_else(|| ApiError::not_found(sa_res, &name))?;
    if req.spec.audiences.is_empty() {
        req.spec.audiences = vec![API_AUDIENCE.to_string()];
    }
    let expiration = *req
        .spec
        .expiration_seconds
        .get_or_insert(DEFAULT_TOKEN_SECONDS);
    req.metadata.name = Some(name.clone());
    req.metadata.namespace = Some(ns.clone());
    let now = jiff::Timestamp::now();
    req.metadata.creation_timestamp = k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    req.status = None;
    if expiration < MIN_TOKEN_SECONDS {
        return Err(tr_invalid(
            "spec.expirationSeconds",
            json!(expiration),
            "may not specify a duration less than 10 minutes",
            "",
        ));
    }
    if expiration > MAX_TOKEN_SECONDS {
        return Err(tr_invalid(
            "spec.expirationSeconds",
            json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
            "",
        ));
    }
    // The bound object: a Pod (with its node), a Node or a Secret of the namespace.
    let mut pod: Option<Value> = None;
    let mut node: Option<Value> = None;
    let mut secret: Option<Value> = None;
    if let Some(r) = &req.spec.bound_object_ref {
        let api_version = r.api_version.clone().unwrap_or_default();
        let kind = r.kind.clone().unwrap_or_default();
        let ref_name = r.name.clone().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let served = |k: &str| res_index(k).filter(|_| group.is_empty() && kind == k);
        let (found, uid) = if let Some(i) = served("Pod") {
            let p = store
                .get(&(i, ns.clone(), ref_name.clone()))
                .cloned()
                .ok_or_else(|| ApiError::not_found(&RESOURCES[i], &ref_name))?;
            // ServiceAccount admission sets an unset name to `default`; the stand-in has none
            let pod_sa = p["spec"]["serviceAccountName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            if pod_sa != name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                )));
            }
            if let (Some(n), Some(ni)) = (
                p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()),
                res_index("Node"),
            ) {
                node = store.get(&(ni, String::new(), n.to_string())).cloned();
            }
            let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
            pod = Some(p);
            (true, uid)
        } else if let Some(i) = served("Node") {
            let n = store
                .get(&(i, String::new(), ref_name.clone()))
                .cloned()
                .ok_or_else(|| ApiError::not_found(&RESOURCES[i], &ref_name))?;
            let uid = n["metadata"]["uid"].as_str().unwrap_or("").to_string();
            node = Some(n);
            (true, uid)
        } else if let Some(i) = served("Secret") {
            let s = store
                .get(&(i, ns.clone(), ref_name.clone()))
                .cloned()
                .ok_or_else(|| ApiError::not_found(&RESOURCES[i], &ref_name))?;
            let uid = s["metadata"]["uid"].as_str().unwrap_or("").to_string();
            secret = Some(s);
            (true, uid)
        } else {
            (false, String::new())
        };
        if !found {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
        if let Some(want) = r.uid.as_deref().filter(|u| !u.is_empty()) {
            if want != uid {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!(
                        "Operation cannot be fulfilled on {kind} \"{ref_name}\": the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                    details: Some(json!({"name": ref_name, "kind": kind})),
                });
            }
        }
    }
    drop(store);

    // token.Claims: the registered claims and the private `kubernetes.io` ones.
    let mut exp = expiration;
    let mut warn_after = None;
    if pod.is_some()
        && expiration == WARN_ONLY_SECONDS
        && req.spec.audiences.iter().any(|a| a == API_AUDIENCE)
    {
        warn_after = Some(now.as_second() + expiration);
        exp = EXTENDED_SECONDS;
    }
    let obj_ref = |o: &Value| json!({"name": o["metadata"]["name"], "uid": o["metadata"]["uid"]});
    let mut k8s = json!({
        "namespace": ns,
        "serviceaccount": obj_ref(&sa),
    });
    if let Some(p) = &pod {
        k8s["pod"] = obj_ref(p);
    }
    if let Some(n) = &node {
        k8s["node"] = obj_ref(n);
    }
    if let Some(s) = &secret {
        k8s["secret"] = obj_ref(s);
    }
    if let Some(w) = warn_after {
        k8s["warnafter"] = json!(w);
    }
    let iat = now.as_second();
    let claims = json!({
        "iss": ISSUER,
        "aud": req.spec.audiences,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "exp": iat + exp,
        "iat": iat,
        "nbf": iat,
        "jti": new_uid(),
        "kubernetes.io": k8s,
    });
    let token = sign(&claims);
    let expires = jiff::Timestamp::from_second(iat + expiration)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut out = serde_json::to_value(&req).map_err(|e| ApiError::bad_request(e.to_string()))?;
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["kind"] = json!("TokenRequest");
    out["status"] = json!({"token": token, "expirationTimestamp": rfc3339(expires)});
    Ok(Reply {
        code: 201,
        body: out,
        warnings: Vec::new(),
    })
}

/// A compact JWS (ES256) of `claims`.
fn sign(claims: &Value) -> String {
    let header = json!({"alg": "ES256", "kid": key_id()});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key()
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .expect("signing with a P-256 key");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// The claims of `token` when it is a JWT this process's stand-in signed (what an API server's
/// authenticator checks first), `None` otherwise. Expiry is not checked.
pub fn verify(token: &str) -> Option<Value> {
    let (input, sig) = token.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key().public_key().as_ref())
        .verify(input.as_bytes(), &sig)
        .ok()?;
    let (header, claims) = input.split_once('.')?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header["alg"] != "ES256" {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

/// The protobuf content type of Kubernetes objects.
pub(super) const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The TokenRequest of a protobuf body: the `k8s\0` magic, a `runtime.Unknown` envelope and
/// the `authentication.k8s.io/v1` TokenRequest message (`generated.proto`), read as JSON; the
/// wire-format readers are shared with [`super::csr`].
pub(super) mod proto {
    use serde_json::{json, Value};

    /// One field: number and value (a varint, or the bytes of a length-delimited field).
    pub(in super::super) enum Field<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Other,
    }

    /// The object's message inside a body: the `k8s\0` magic and the `runtime.Unknown`
    /// envelope's `raw`.
    pub(in super::super) fn unwrap(body: &[u8]) -> Result<&[u8], &'static str> {
        let envelope = body.strip_prefix(b"k8s\0").ok_or("no protobuf magic")?;
        let mut raw = None;
        for (n, f) in fields(envelope)? {
            if n == 2 {
                raw = Some(message(&f)?);
            }
        }
        raw.ok_or("no object in the envelope")
    }

    fn varint(b: &mut &[u8]) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= u64::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }

    pub(in super::super) fn fields(mut b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, &'static str> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b)?;
            let field = match key & 7 {
                0 => Field::Varint(varint(&mut b)?),
                2 => {
                    let len = usize::try_from(varint(&mut b)?).map_err(|_| "bad length")?;
                    if len > b.len() {
                        return Err("truncated field");
                    }
                    let (v, rest) = b.split_at(len);
                    b = rest;
                    Field::Bytes(v)
                }
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    b = b.get(n..).ok_or("truncated field")?;
                    Field::Other
                }
                _ => return Err("unsupported wire type"),
            };
            out.push((key >> 3, field));
        }
        Ok(out)
    }

    pub(in super::super) fn string(f: &Field<'_>) -> Result<String, &'static str> {
        match f {
            Field::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8"),
            _ => Err("a string field is not length-delimited"),
        }
    }

    pub(in super::super) fn message<'a>(f: &Field<'a>) -> Result<&'a [u8], &'static str> {
        match f {
            Field::Bytes(b) => Ok(b),
            _ => Err("a message field is not length-delimited"),
        }
    }

    /// Decodes the body.
    pub(super) fn token_request(body: &[u8]) -> Result<Value, &'static str> {
        let mut tr = json!({"metadata": {}, "spec": {}});
        for (n, f) in fields(unwrap(body)?)? {
            match n {
                1 => {
                    for (m, g) in fields(message(&f)?)? {
                        match m {
                            1 => tr["metadata"]["name"] = json!(string(&g)?),
                            3 => tr["metadata"]["namespace"] = json!(string(&g)?),
                            _ => {}
                        }
                    }
                }
                2 => {
                    let mut audiences = Vec::new();
                    for (m, g) in fields(message(&f)?)? {
                        match (m, &g) {
                            (1, _) => audiences.push(string(&g)?),
                            (4, Field::Varint(v)) => {
                                tr["spec"]["expirationSeconds"] = json!(*v as i64)
                            }
                            (3, _) => {
                                let mut r = json!({});
                                for (k, h) in fields(message(&g)?)? {
                                    let name = match k {
                                        1 => "kind",
                                        2 => "apiVersion",
                                        3 => "name",
                                        4 => "uid",
                                        _ => continue,
                                    };
                                    r[name] = json!(string(&h)?);
                                }
                                tr["spec"]["boundObjectRef"] = r;
                            }
                            _ => {}
                        }
                    }
                    tr["spec"]["audiences"] = json!(audiences);
                }
                _ => {}
            }
        }
        Ok(tr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_tampering_is_caught() {
        let claims = json!({"sub": "system:serviceaccount:a:b", "exp": 1});
        let token = sign(&claims);
        assert_eq!(verify(&token), Some(claims));
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(json!({"sub": "x"}).to_string());
        parts[1] = &other;
        assert_eq!(verify(&parts.join(".")), None);
    }

    #[test]
    fn a_protobuf_token_request_decodes() {
        // k8s\0 + Unknown{typeMeta, raw: TokenRequest{metadata{name "sa"},
        // spec{audiences ["a"], expirationSeconds 600, boundObjectRef{kind Pod, name p}}}}
        let bound = [&[0x0a, 3][..], b"Pod", &[0x1a, 1], b"p"].concat();
        let spec = [
            &[0x0a, 1][..],
            b"a",
            &[0x20, 0xd8, 0x04],
            &[0x1a, bound.len() as u8],
            &bound,
        ]
        .concat();
        let meta = [&[0x0a, 2][..], b"sa"].concat();
        let tr = [
            &[0x0a, meta.len() as u8][..],
            &meta,
            &[0x12, spec.len() as u8],
            &spec,
        ]
        .concat();
        let body = [&b"k8s\0"[..], &[0x0a, 0], &[0x12, tr.len() as u8], &tr].concat();
        let v = proto::token_request(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "sa");
        assert_eq!(v["spec"]["audiences"], json!(["a"]));
        assert_eq!(v["spec"]["expirationSeconds"], 600);
        assert_eq!(
            v["spec"]["boundObjectRef"],
            json!({"kind": "Pod", "name": "p"})
        );
        assert!(proto::token_request(b"k8s\0\x12\x05ab").is_err());
    }
}
