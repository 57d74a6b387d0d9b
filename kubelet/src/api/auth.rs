//! Who may use the HTTPS server, as upstream's kubelet decides (`pkg/kubelet/server/auth.go`,
//! `BuildAuth` in `cmd/kubelet/app/auth.go`):
//!
//! - **Authentication**, in order: a client certificate (verified at each request against
//!   `authentication.x509.clientCAFile`, chain and validity; user = `CN`, groups = `O`), then an
//!   `Authorization: Bearer` token (a `TokenReview` to the API server when
//!   `authentication.webhook.enabled`, answers cached `cacheTTL`, default 2 min). Credentials
//!   given and rejected are a 401 even when anonymous requests are on (upstream's
//!   `union.NewFailOnError`). No credentials: `system:anonymous` in `system:unauthenticated`
//!   when `authentication.anonymous.enabled`, else 401. The TLS handshake itself accepts any
//!   client certificate (it checks only that the client holds its key), so that a certificate of
//!   another CA is answered 401 as upstream's, not a failed handshake.
//! - **Authorization**: [`request_attributes`] (upstream's `GetRequestAttributes` with
//!   `KubeletFineGrainedAuthz`, on by default since 1.33) gives one or two subresources; the
//!   request passes when any is allowed. `AlwaysAllow` allows all; `Webhook` asks a
//!   `SubjectAccessReview` (allowed answers cached `cacheAuthorizedTTL`, 5 min, denied ones
//!   `cacheUnauthorizedTTL`, 30 s). Denied: 403 `Forbidden (user=<u>, verb=<v>,
//!   resource=nodes, subresource(s)=[<s> ...])`.
//! - **Standalone** (no API server): tokens cannot be reviewed (a bearer token is a 401) and
//!   `Webhook` authorization denies everything (a 403); only a client certificate with
//!   `authorization.mode: AlwaysAllow`, or anonymous requests explicitly allowed, get in.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

use crate::config::server::{AuthorizationMode, ServerConfig};

/// An authenticated user (upstream's `user.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The name.
    pub name: String,
    /// The UID, when the authenticator gives one.
    pub uid: String,
    /// The groups.
    pub groups: Vec<String>,
    /// Extra attributes (from a TokenReview).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }
}

/// upstream's `isSubpath`: `path` is `prefix` or below it.
fn is_subpath(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The verb of an HTTP method (upstream: `""` for any other method).
pub fn verb(method: &hyper::Method) -> &'static str {
    match *method {
        hyper::Method::POST => "create",
        hyper::Method::GET => "get",
        hyper::Method::PUT => "update",
        hyper::Method::PATCH => "patch",
        hyper::Method::DELETE => "delete",
        _ => "",
    }
}

/// The subresources of `nodes/<node>` a request to `path` is authorized against, in order
/// (upstream's `GetRequestAttributes` with `KubeletFineGrainedAuthz`): the fine-grained one
/// (`pods`, `healthz`, `configz`, `statusz`) if any, then `stats`, `metrics`, `log`,
/// `checkpoint` or `proxy`.
pub fn request_attributes(path: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if is_subpath(path, "/pods") {
        out.push("pods");
    } else if is_subpath(path, "/healthz") {
        out.push("healthz");
    } else if is_subpath(path, "/configz") {
        out.push("configz");
    } else if is_subpath(path, "/statusz") {
        out.push("statusz");
    } else if is_subpath(path, "/runningpods/") {
        out.push("pods");
    }
    out.push(if is_subpath(path, "/stats/") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs/") {
        "log"
    } else if is_subpath(path, "/checkpoint/") {
        "checkpoint"
    } else {
        "proxy"
    });
    out
}

/// A map whose entries expire; at most [`TtlCache::MAX`] entries (full: expired ones are
/// dropped, then everything).
#[derive(Debug)]
struct TtlCache<V> {
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    const MAX: usize = 4096;

    fn new() -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: String, value: V, ttl: Duration) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            let now = Instant::now();
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= Self::MAX {
                map.clear();
            }
        }
        map.insert(key, (Instant::now() + ttl, value));
    }
}

/// Why a request is refused: the status and upstream's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403 or 500.
    pub status: hyper::StatusCode,
    /// The body (upstream's text).
    pub body: String,
}

/// The authenticator and authorizer of one server.
pub struct Auth {
    node: String,
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
    /// The API server, in cluster mode.
    client: Option<kube::Client>,
    webhook_authentication: bool,
    anonymous: bool,
    mode: AuthorizationMode,
    authn_ttl: Duration,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    tokens: TtlCache<Option<UserInfo>>,
    decisions: TtlCache<bool>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("node", &self.node)
            .field("client_ca", &self.client_ca.is_some())
            .field("api_server", &self.client.is_some())
            .field("anonymous", &self.anonymous)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The authenticator and authorizer of `config` for `node`; `client` is the API server in
    /// cluster mode. Fails when the client CA file cannot be read.
    pub fn new(
        config: &ServerConfig,
        node: &str,
        client: Option<kube::Client>,
    ) -> Result<Auth, String> {
        let client_ca = match &config.client_ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("clientCAFile {}: {e}", path.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                use rustls::pki_types::pem::PemObject;
                for der in CertificateDer::pem_slice_iter(&pem) {
                    let der = der.map_err(|e| format!("clientCAFile {}: {e}", path.display()))?;
                    roots
                        .add(der)
                        .map_err(|e| format!("clientCAFile {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "clientCAFile {}: no PEM certificate in it",
                        path.display()
                    ));
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| format!("clientCAFile {}: {e}", path.display()))?;
                Some(v)
            }
        };
        Ok(Auth {
            node: node.to_string(),
            client_ca,
            client,
            webhook_authentication: config.webhook_authentication,
            anonymous: config.anonymous,
            mode: config.authorization_mode,
            authn_ttl: config.authentication_cache_ttl,
            allowed_ttl: config.cache_authorized_ttl,
            denied_ttl: config.cache_unauthorized_ttl,
            tokens: TtlCache::new(),
            decisions: TtlCache::new(),
        })
    }

    /// What the server will accept, one line for the start-up log.
    pub fn describe(&self) -> String {
        let mut authn = Vec::new();
        if self.client_ca.is_some() {
            authn.push("client certificates");
        }
        match (self.webhook_authentication, self.client.is_some()) {
            (true, true) => authn.push("bearer tokens (TokenReview)"),
            (true, false) => authn.push("no bearer tokens (no API server to review them)"),
            _ => {}
        }
        if self.anonymous {
            authn.push("anonymous");
        }
        let authz = match (self.mode, self.client.is_some()) {
            (AuthorizationMode::AlwaysAllow, _) => "AlwaysAllow".to_string(),
            (AuthorizationMode::Webhook, true) => "Webhook (SubjectAccessReview)".to_string(),
            (AuthorizationMode::Webhook, false) => {
                "Webhook without an API server: every request is denied".to_string()
            }
        };
        format!(
            "authentication: {}; authorization: {authz}",
            if authn.is_empty() {
                "none (every request is 401)".to_string()
            } else {
                authn.join(", ")
            }
        )
    }

    /// Authenticates a request from its connection's client certificates and its
    /// `Authorization` header: the user, or `None` (a 401).
    pub async fn authenticate(
        &self,
        peer: &[CertificateDer<'static>],
        authorization: Option<&str>,
    ) -> Option<UserInfo> {
        let mut rejected = false;
        if let Some((end, intermediates)) = peer.split_first() {
            // No client CA: a certificate authenticates nobody (upstream has no x509
            // authenticator then); the request goes on as if it had none.
            if let Some(v) = &self.client_ca {
                match v.verify_client_cert(end, intermediates, UnixTime::now()) {
                    Ok(_) => {
                        if let Ok(info) = crate::cluster::certificate::parse_cert_der(end) {
                            return Some(UserInfo {
                                name: info.common_name,
                                uid: String::new(),
                                groups: info.organizations,
                                extra: BTreeMap::new(),
                            });
                        }
                        rejected = true;
                    }
                    Err(e) => {
                        tracing::debug!("client certificate rejected: {e}");
                        rejected = true;
                    }
                }
            }
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let Some(token) = token {
            match self.review_token(token).await {
                Some(u) => return Some(u),
                None => rejected = true,
            }
        }
        if !rejected && self.anonymous {
            return Some(UserInfo::anonymous());
        }
        None
    }

    async fn review_token(&self, token: &str) -> Option<UserInfo> {
        if !self.webhook_authentication {
            return None;
        }
        let client = self.client.as_ref()?;
        if let Some(cached) = self.tokens.get(token) {
            return cached;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
        match api.create(&kube::api::PostParams::default(), &review).await {
            Ok(r) => {
                let status = r.status.unwrap_or_default();
                let user = status
                    .authenticated
                    .unwrap_or(false)
                    .then(|| status.user.unwrap_or_default())
                    .map(|u| UserInfo {
                        name: u.username.unwrap_or_default(),
                        uid: u.uid.unwrap_or_default(),
                        groups: u.groups.unwrap_or_default(),
                        extra: u.extra.unwrap_or_default(),
                    });
                self.tokens
                    .put(token.to_string(), user.clone(), self.authn_ttl);
                user
            }
            Err(e) => {
                // not cached: the next request asks again
                tracing::warn!("TokenReview failed: {e}");
                None
            }
        }
    }

    /// Authorizes `user`'s `method` on `path`: `Ok` or the refusal (403, or 500 when the
    /// SubjectAccessReview failed).
    pub async fn authorize(
        &self,
        user: &UserInfo,
        method: &hyper::Method,
        path: &str,
    ) -> Result<(), Refusal> {
        let verb = verb(method);
        let subresources = request_attributes(path);
        for sub in &subresources {
            match self.allowed(user, verb, sub).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    let msg = format!(
                        "Authorization error (user={}, verb={verb}, resource=nodes, \
                         subresource={sub})",
                        user.name
                    );
                    tracing::error!("{msg}: {e}");
                    return Err(Refusal {
                        status: hyper::StatusCode::INTERNAL_SERVER_ERROR,
                        body: msg,
                    });
                }
            }
        }
        let msg = format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])",
            user.name,
            subresources.join(" ")
        );
        tracing::debug!("{msg}");
        Err(Refusal {
            status: hyper::StatusCode::FORBIDDEN,
            body: msg,
        })
    }

    async fn allowed(&self, user: &UserInfo, verb: &str, sub: &str) -> Result<bool, String> {
        match self.mode {
            AuthorizationMode::AlwaysAllow => return Ok(true),
            AuthorizationMode::Webhook => {}
        }
        let Some(client) = &self.client else {
            return Ok(false);
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(sub.to_string()),
                    name: Some(self.node.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let key = serde_json::to_string(&review.spec).map_err(|e| e.to_string())?;
        if let Some(d) = self.decisions.get(&key) {
            return Ok(d);
        }
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| format!("SubjectAccessReview: {e}"))?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let ttl = if allowed {
            self.allowed_ttl
        } else {
            self.denied_ttl
        };
        self.decisions.put(key, allowed, ttl);
        Ok(allowed)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The TLS side of client certificates: asks for one, accepts any (the chain is checked per
/// request by [`Auth::authenticate`]), and verifies the handshake signature, so the client
/// holds the certificate's key.
#[derive(Debug)]
pub struct RequestClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl RequestClientCert {
    /// The verifier.
    pub fn new() -> Arc<RequestClientCert> {
        Arc::new(RequestClientCert {
            provider: provider(),
        })
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// upstream's `GetRequestAttributes` (pkg/kubelet/server/auth.go, KubeletFineGrainedAuthz
    /// on) and its method-to-verb mapping.
    #[test]
    fn request_attributes_as_upstream() {
        for (path, want) in [
            ("/pods", &["pods", "proxy"][..]),
            ("/pods/", &["pods", "proxy"]),
            ("/podsx", &["proxy"]),
            ("/runningpods/", &["pods", "proxy"]),
            ("/runningpods", &["pods", "proxy"]),
            ("/healthz", &["healthz", "proxy"]),
            ("/healthz/ping", &["healthz", "proxy"]),
            ("/configz", &["configz", "proxy"]),
            ("/statusz", &["statusz", "proxy"]),
            ("/stats/summary", &["stats"]),
            ("/stats", &["stats"]),
            ("/metrics", &["metrics"]),
            ("/metrics/cadvisor", &["metrics"]),
            ("/metrics/resource", &["metrics"]),
            ("/metricsx", &["proxy"]),
            ("/logs/", &["log"]),
            ("/logs/syslog", &["log"]),
            ("/logs", &["log"]),
            ("/checkpoint/ns/pod/c", &["checkpoint"]),
            ("/spec/", &["proxy"]),
            ("/containerLogs/ns/pod/c", &["proxy"]),
            ("/exec/ns/pod/c", &["proxy"]),
            ("/attach/ns/pod/c", &["proxy"]),
            ("/portForward/ns/pod", &["proxy"]),
            ("/run/ns/pod/c", &["proxy"]),
            ("/", &["proxy"]),
        ] {
            assert_eq!(request_attributes(path), want, "{path}");
        }
        use hyper::Method;
        for (m, v) in [
            (Method::GET, "get"),
            (Method::POST, "create"),
            (Method::PUT, "update"),
            (Method::PATCH, "patch"),
            (Method::DELETE, "delete"),
            (Method::HEAD, ""),
            (Method::OPTIONS, ""),
        ] {
            assert_eq!(verb(&m), v, "{m}");
        }
    }

    fn server(mode: AuthorizationMode, anonymous: bool) -> ServerConfig {
        ServerConfig {
            anonymous,
            authorization_mode: mode,
            ..ServerConfig::default()
        }
    }

    #[tokio::test]
    async fn standalone_needs_credentials_and_denies_webhook() {
        let a = Auth::new(&server(AuthorizationMode::Webhook, false), "n1", None).unwrap();
        assert_eq!(a.authenticate(&[], None).await, None);
        assert_eq!(a.authenticate(&[], Some("Bearer abc")).await, None);
        let a = Auth::new(&server(AuthorizationMode::Webhook, true), "n1", None).unwrap();
        let anon = a.authenticate(&[], None).await.unwrap();
        assert_eq!(anon.name, "system:anonymous");
        assert_eq!(anon.groups, ["system:unauthenticated"]);
        // a token given and not accepted is a 401 even with anonymous requests on
        assert_eq!(a.authenticate(&[], Some("Bearer abc")).await, None);
        let r = a
            .authorize(&anon, &hyper::Method::GET, "/pods")
            .await
            .unwrap_err();
        assert_eq!(r.status, hyper::StatusCode::FORBIDDEN);
        assert_eq!(
            r.body,
            "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[pods proxy])"
        );
        let a = Auth::new(&server(AuthorizationMode::AlwaysAllow, true), "n1", None).unwrap();
        assert!(a
            .authorize(&anon, &hyper::Method::POST, "/exec/a/b/c")
            .await
            .is_ok());
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let c: TtlCache<bool> = TtlCache::new();
        c.put("a".into(), true, Duration::from_secs(60));
        c.put("b".into(), false, Duration::ZERO);
        assert_eq!(c.get("a"), Some(true));
        assert_eq!(c.get("b"), None);
        for i in 0..TtlCache::<bool>::MAX + 10 {
            c.put(format!("k{i}"), true, Duration::from_secs(60));
        }
        assert!(c.map.lock().unwrap().len() <= TtlCache::<bool>::MAX);
    }
}
