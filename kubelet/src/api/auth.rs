//! Who may use the HTTPS server, as upstream's kubelet decides (`pkg/kubelet/server/auth.go`,
//! `BuildAuth` in `cmd/kubelet/app/auth.go`):
//!
//! - **Authentication**, in order (upstream's `DelegatingAuthenticatorConfig.New`): a client
//!   certificate (verified at each request against `authentication.x509.clientCAFile`, chain
//!   and validity; user = `CN`, groups = `O`; the file is reloaded when it changes, see
//!   [`Auth::set_client_ca`]), then, when `authentication.webhook.enabled`, a bearer token from
//!   `Authorization: Bearer <token>` (the scheme in any case, upstream's `bearertoken`) or from
//!   the WebSocket subprotocol `base64url.bearer.authorization.k8s.io.<token>` (upstream's
//!   `websocket.NewProtocolAuthenticator`; removed from the offered subprotocols once accepted),
//!   each by a `TokenReview` to the API server (answers cached `cacheTTL`, default 2 min);
//!   without the webhook a token is no credential at all, as upstream ignores it. An
//!   authenticated user gets the group `system:authenticated` (upstream's
//!   `NewAuthenticatedGroupAdder`). Credentials given and rejected are a 401 even when
//!   anonymous requests are on (upstream's `union.NewFailOnError`). No credentials:
//!   `system:anonymous` in `system:unauthenticated` when `authentication.anonymous.enabled`,
//!   else 401. The TLS handshake itself accepts any client certificate (it checks only that the
//!   client holds its key), so that a certificate of another CA is answered 401 as upstream's,
//!   not a failed handshake.
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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
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

/// The user of requests without credentials (upstream's `user.Anonymous`).
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of every authenticated user (upstream's `user.AllAuthenticated`).
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group of [`ANONYMOUS`] (upstream's `user.AllUnauthenticated`).
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The WebSocket subprotocol that carries a bearer token, base64url without padding after it
/// (upstream's `bearerProtocolPrefix`).
pub const BEARER_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

impl UserInfo {
    fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS.into(),
            uid: String::new(),
            groups: vec![ALL_UNAUTHENTICATED.into()],
            extra: BTreeMap::new(),
        }
    }

    /// upstream's `AuthenticatedGroupAdder`: [`ALL_AUTHENTICATED`] added unless the user is
    /// [`ANONYMOUS`] or already in it or in [`ALL_UNAUTHENTICATED`].
    fn with_authenticated_group(mut self) -> UserInfo {
        if self.name != ANONYMOUS
            && !self
                .groups
                .iter()
                .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED)
        {
            self.groups.push(ALL_AUTHENTICATED.into());
        }
        self
    }
}

/// The token of an `Authorization` header as upstream's `bearertoken` authenticator reads it:
/// the value trimmed, split at spaces into at most three parts, the first `bearer` in any
/// case, the token the second (so `Bearer  tok`, with two spaces, has none).
fn bearer_token(headers: &hyper::HeaderMap) -> Option<String> {
    let value = headers.get(hyper::header::AUTHORIZATION)?;
    // Not ASCII: still a credential (it is refused by the review), never none at all.
    let value = String::from_utf8_lossy(value.as_bytes());
    let mut parts = value.trim().splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// Whether the headers ask for a WebSocket (upstream's `wsstream.IsWebSocketRequest`: the first
/// `Upgrade` is `websocket` in any case, the first `Connection` lists `upgrade`). The
/// streaming endpoints ([`super::stream`]) ask it too.
pub(crate) fn is_websocket(headers: &hyper::HeaderMap) -> bool {
    let first = |n| {
        headers
            .get(n)
            .map(|v: &hyper::header::HeaderValue| {
                String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase()
            })
            .unwrap_or_default()
    };
    first(hyper::header::UPGRADE) == "websocket"
        && first(hyper::header::CONNECTION)
            .split(',')
            .any(|t| t.trim() == "upgrade")
}

/// A token offered as a WebSocket subprotocol.
#[derive(Debug, PartialEq, Eq)]
struct ProtocolToken {
    token: String,
    /// The other subprotocols offered, in order: what the request offers once the token is
    /// accepted.
    others: Vec<String>,
}

/// The token of a [`BEARER_PROTOCOL_PREFIX`] subprotocol of a WebSocket request, as upstream's
/// `ProtocolAuthenticator` reads it: `Ok(None)` when there is none (or the request is no
/// WebSocket); an error (a 401) for two of them, a token that is not base64url or not UTF-8,
/// or a token that is the only subprotocol offered (there would be none left to answer with).
fn protocol_token(headers: &hyper::HeaderMap) -> Result<Option<ProtocolToken>, &'static str> {
    use base64::Engine;
    if !is_websocket(headers) {
        return Ok(None);
    }
    // Go's `base64.RawURLEncoding`: no padding, trailing bits not checked
    const RAW_URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let mut token = String::new();
    let mut saw_token = false;
    let mut others = Vec::new();
    for value in headers.get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL) {
        let value = String::from_utf8_lossy(value.as_bytes());
        for protocol in value.split(',').map(str::trim) {
            let Some(encoded) = protocol.strip_prefix(BEARER_PROTOCOL_PREFIX) else {
                others.push(protocol.to_string());
                continue;
            };
            if saw_token {
                return Err("multiple base64.bearer.authorization tokens specified");
            }
            saw_token = true;
            let decoded = RAW_URL
                .decode(encoded)
                .map_err(|_| "invalid base64.bearer.authorization token encoding")?;
            token = String::from_utf8(decoded)
                .map_err(|_| "invalid base64.bearer.authorization token")?;
        }
    }
    if !token.is_empty() && others.is_empty() {
        return Err("missing additional subprotocol");
    }
    Ok((!token.is_empty()).then_some(ProtocolToken { token, others }))
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
    /// `clientCAFile`.
    client_ca_file: Option<PathBuf>,
    /// The verifier of its CAs (replaced when the file changes).
    client_ca: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
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
            .field("client_ca_file", &self.client_ca_file)
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
                Some(
                    client_verifier(&pem)
                        .map_err(|e| format!("clientCAFile {}: {e}", path.display()))?,
                )
            }
        };
        Ok(Auth {
            node: node.to_string(),
            client_ca_file: config.client_ca_file.clone(),
            client_ca: RwLock::new(client_ca),
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

    /// `clientCAFile`, when client certificates are authenticated.
    pub fn client_ca_file(&self) -> Option<&Path> {
        self.client_ca_file.as_deref()
    }

    /// Replaces the client CAs with the certificates of `pem` (`clientCAFile`'s new content;
    /// upstream's `DynamicFileCAContent`): the next requests' certificates are verified against
    /// them. Content without a certificate, or with one that does not parse, is an error and
    /// the current CAs stay. No effect when no `clientCAFile` is configured.
    pub fn set_client_ca(&self, pem: &[u8]) -> Result<(), String> {
        if self.client_ca_file.is_none() {
            return Ok(());
        }
        let verifier = client_verifier(pem)?;
        *self.client_ca.write().unwrap_or_else(|e| e.into_inner()) = Some(verifier);
        Ok(())
    }

    fn client_ca(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.client_ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the server will accept, one line for the start-up log.
    pub fn describe(&self) -> String {
        let mut authn = Vec::new();
        if self.client_ca_file.is_some() {
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

    /// Authenticates a request from its connection's client certificates and its headers
    /// (`Authorization`, and a WebSocket's `Sec-WebSocket-Protocol`): the user, or `None` (a
    /// 401). An accepted token is taken out of the headers as upstream does: the
    /// `Authorization` header removed, the token's subprotocol dropped from those offered.
    pub async fn authenticate(
        &self,
        peer: &[CertificateDer<'static>],
        headers: &mut hyper::HeaderMap,
    ) -> Option<UserInfo> {
        let mut rejected = false;
        if let Some((end, intermediates)) = peer.split_first() {
            // No client CA: a certificate authenticates nobody (upstream has no x509
            // authenticator then); the request goes on as if it had none.
            if let Some(v) = self.client_ca() {
                match v.verify_client_cert(end, intermediates, UnixTime::now()) {
                    Ok(_) => {
                        if let Ok(info) = crate::cluster::certificate::parse_cert_der(end) {
                            let user = UserInfo {
                                name: info.common_name,
                                uid: String::new(),
                                groups: info.organizations,
                                extra: BTreeMap::new(),
                            };
                            return Some(user.with_authenticated_group());
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
        // Without the webhook upstream has no token authenticator: a token is no credential.
        if self.webhook_authentication {
            if let Some(token) = bearer_token(headers) {
                match self.review_token(&token).await {
                    Some(u) => {
                        headers.remove(hyper::header::AUTHORIZATION);
                        return Some(u.with_authenticated_group());
                    }
                    None => rejected = true,
                }
            }
            match protocol_token(headers) {
                Ok(None) => {}
                Ok(Some(offered)) => match self.review_token(&offered.token).await {
                    Some(u) => {
                        headers.remove(hyper::header::SEC_WEBSOCKET_PROTOCOL);
                        if let Ok(v) =
                            hyper::header::HeaderValue::from_str(&offered.others.join(","))
                        {
                            headers.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, v);
                        }
                        return Some(u.with_authenticated_group());
                    }
                    None => rejected = true,
                },
                Err(e) => {
                    tracing::debug!("WebSocket bearer token rejected: {e}");
                    rejected = true;
                }
            }
        }
        if !rejected && self.anonymous {
            return Some(UserInfo::anonymous());
        }
        None
    }

    async fn review_token(&self, token: &str) -> Option<UserInfo> {
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

    /// The `SubjectAccessReview` of `user`'s `verb` on `nodes/<node>/<sub>`.
    fn access_review(&self, user: &UserInfo, verb: &str, sub: &str) -> SubjectAccessReview {
        SubjectAccessReview {
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
        }
    }

    async fn allowed(&self, user: &UserInfo, verb: &str, sub: &str) -> Result<bool, String> {
        match self.mode {
            AuthorizationMode::AlwaysAllow => return Ok(true),
            AuthorizationMode::Webhook => {}
        }
        let Some(client) = &self.client else {
            return Ok(false);
        };
        let review = self.access_review(user, verb, sub);
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

/// The verifier of client certificates against the CAs of `pem` (at least one certificate,
/// each of which parses).
fn client_verifier(pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(der.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| e.to_string())
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
            ("/metrics/probes", &["metrics"]),
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
        assert_eq!(a.authenticate(&[], &mut headers(&[])).await, None);
        assert_eq!(a.authenticate(&[], &mut bearer("Bearer abc")).await, None);
        let a = Auth::new(&server(AuthorizationMode::Webhook, true), "n1", None).unwrap();
        let anon = a.authenticate(&[], &mut headers(&[])).await.unwrap();
        assert_eq!(anon.name, "system:anonymous");
        // upstream's group adder leaves the anonymous user alone
        assert_eq!(anon.groups, ["system:unauthenticated"]);
        // a token given and not accepted is a 401 even with anonymous requests on
        assert_eq!(a.authenticate(&[], &mut bearer("Bearer abc")).await, None);
        // without the webhook a token is no credential (upstream has no token authenticator)
        let mut config = server(AuthorizationMode::Webhook, true);
        config.webhook_authentication = false;
        let a = Auth::new(&config, "n1", None).unwrap();
        let anon = a
            .authenticate(&[], &mut bearer("Bearer abc"))
            .await
            .unwrap();
        assert_eq!(anon.name, "system:anonymous");
        let a = Auth::new(&server(AuthorizationMode::Webhook, true), "n1", None).unwrap();
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

    fn headers(pairs: &[(&'static str, &str)]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, hyper::header::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn bearer(value: &str) -> hyper::HeaderMap {
        headers(&[("authorization", value)])
    }

    /// upstream's `bearertoken` authenticator (`SplitN(auth, " ", 3)`, scheme compared
    /// lowercased, an empty second part no token).
    #[test]
    fn bearer_scheme_in_any_case_as_upstream() {
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("BeArEr abc", Some("abc")),
            ("  Bearer abc  ", Some("abc")),
            ("Bearer abc def", Some("abc")),
            ("Bearer  abc", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("", None),
        ] {
            assert_eq!(bearer_token(&bearer(value)).as_deref(), want, "{value:?}");
        }
        assert_eq!(bearer_token(&headers(&[])), None);
    }

    fn websocket(protocols: &[&str]) -> hyper::HeaderMap {
        let mut h = headers(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ]);
        for p in protocols {
            h.append(
                hyper::header::SEC_WEBSOCKET_PROTOCOL,
                hyper::header::HeaderValue::from_str(p).unwrap(),
            );
        }
        h
    }

    fn protocol_of(token: &str) -> String {
        use base64::Engine;
        format!(
            "{BEARER_PROTOCOL_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
        )
    }

    /// upstream's `websocket.ProtocolAuthenticator` (`protocol_test.go`'s cases).
    #[test]
    fn websocket_protocol_token_as_upstream() {
        let tok = protocol_of("my-token?/");
        let found = |others: &[&str]| {
            Ok(Some(ProtocolToken {
                token: "my-token?/".into(),
                others: others.iter().map(|s| s.to_string()).collect(),
            }))
        };
        assert_eq!(
            protocol_token(&websocket(&[&format!("{tok}, v5.channel.k8s.io")])),
            found(&["v5.channel.k8s.io"])
        );
        // the header may repeat; the others keep their order
        assert_eq!(
            protocol_token(&websocket(&[
                "v5.channel.k8s.io",
                &tok,
                "v4.channel.k8s.io"
            ])),
            found(&["v5.channel.k8s.io", "v4.channel.k8s.io"])
        );
        assert_eq!(protocol_token(&websocket(&["v5.channel.k8s.io"])), Ok(None));
        assert_eq!(protocol_token(&websocket(&[])), Ok(None));
        // an empty token is none
        assert_eq!(
            protocol_token(&websocket(&[&format!(
                "{BEARER_PROTOCOL_PREFIX}, v5.channel.k8s.io"
            )])),
            Ok(None)
        );
        // not a WebSocket request: not looked at
        let mut h = websocket(&[&format!("{tok}, v5.channel.k8s.io")]);
        h.remove(hyper::header::UPGRADE);
        assert_eq!(protocol_token(&h), Ok(None));
        for (protocols, why) in [
            (vec![tok.clone()], "missing additional subprotocol"),
            (
                vec![format!("{tok},{tok},v5.channel.k8s.io")],
                "multiple base64.bearer.authorization tokens specified",
            ),
            (
                vec![format!(
                    "{BEARER_PROTOCOL_PREFIX}not*base64, v5.channel.k8s.io"
                )],
                "invalid base64.bearer.authorization token encoding",
            ),
            (
                // padding is not base64url as upstream decodes it (`RawURLEncoding`)
                vec![format!("{BEARER_PROTOCOL_PREFIX}YQ==, v5.channel.k8s.io")],
                "invalid base64.bearer.authorization token encoding",
            ),
            (
                vec![format!("{BEARER_PROTOCOL_PREFIX}_w, v5.channel.k8s.io")],
                "invalid base64.bearer.authorization token",
            ),
        ] {
            let refs: Vec<&str> = protocols.iter().map(String::as_str).collect();
            assert_eq!(protocol_token(&websocket(&refs)), Err(why), "{protocols:?}");
        }
    }

    /// A CA and certificates it signs.
    struct TestCa {
        pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl TestCa {
        fn new(name: &str) -> TestCa {
            use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, name);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let pem = p.self_signed(&key).unwrap().pem();
            TestCa {
                pem,
                issuer: rcgen::Issuer::new(p, key),
            }
        }

        fn client(&self, user: &str, groups: &[&str]) -> Vec<CertificateDer<'static>> {
            use rcgen::{CertificateParams, DnType, KeyPair};
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, user);
            for g in groups {
                p.distinguished_name.push(DnType::OrganizationName, *g);
            }
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            vec![p.signed_by(&key, &self.issuer).unwrap().der().clone()]
        }
    }

    /// An API server answering TokenReviews (`token` is user `bob` in `g1`; `sa-token` a user
    /// already in `system:authenticated`) and SubjectAccessReviews (allowed), recording the
    /// reviews' specs.
    fn api_server() -> (kube::Client, Arc<Mutex<Vec<serde_json::Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let service = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            let record = record.clone();
            async move {
                use http_body_util::BodyExt;
                let path = req.uri().path().to_string();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut review: serde_json::Value = serde_json::from_slice(&body).unwrap();
                record.lock().unwrap().push(review["spec"].clone());
                review["status"] = if path.ends_with("/tokenreviews") {
                    match review["spec"]["token"].as_str() {
                        Some("token") => serde_json::json!({"authenticated": true,
                            "user": {"username": "bob", "groups": ["g1"]}}),
                        Some("sa-token") => serde_json::json!({"authenticated": true,
                            "user": {"username": "sa", "groups": ["system:authenticated"]}}),
                        _ => serde_json::json!({"authenticated": false}),
                    }
                } else {
                    serde_json::json!({"allowed": true})
                };
                let body = http_body_util::Full::new(bytes::Bytes::from(review.to_string()));
                Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    fn client_ca_config(dir: &Path, pem: &str) -> ServerConfig {
        let file = dir.join("ca.crt");
        std::fs::write(&file, pem).unwrap();
        ServerConfig {
            client_ca_file: Some(file),
            ..server(AuthorizationMode::Webhook, false)
        }
    }

    /// upstream's `AuthenticatedGroupAdder` around the x509, bearer and WebSocket protocol
    /// authenticators: the group reaches the SubjectAccessReview.
    #[tokio::test]
    async fn authenticated_users_are_in_system_authenticated() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("client-ca");
        let (client, seen) = api_server();
        let a = Auth::new(&client_ca_config(dir.path(), &ca.pem), "n1", Some(client)).unwrap();
        let alice = a
            .authenticate(&ca.client("alice", &["dev"]), &mut headers(&[]))
            .await
            .unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", ALL_AUTHENTICATED]);
        let mut h = bearer("bearer token");
        let bob = a.authenticate(&[], &mut h).await.unwrap();
        assert_eq!(
            (bob.name.as_str(), bob.groups.as_slice()),
            (
                "bob",
                &["g1".to_string(), ALL_AUTHENTICATED.to_string()][..]
            )
        );
        assert!(
            h.get(hyper::header::AUTHORIZATION).is_none(),
            "the token stays in the request"
        );
        let sa = a
            .authenticate(&[], &mut bearer("Bearer sa-token"))
            .await
            .unwrap();
        assert_eq!(sa.groups, [ALL_AUTHENTICATED], "not added twice");
        // the WebSocket subprotocol: the same user, the token's protocol no longer offered
        let mut h = websocket(&[&format!("v5.channel.k8s.io, {}", protocol_of("token"))]);
        let ws = a.authenticate(&[], &mut h).await.unwrap();
        assert_eq!(ws, bob);
        let offered: Vec<_> = h
            .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .collect();
        assert_eq!(offered, ["v5.channel.k8s.io"]);
        // a rejected token in either place is a 401
        assert_eq!(a.authenticate(&[], &mut bearer("Bearer nope")).await, None);
        let mut h = websocket(&[&format!("v5.channel.k8s.io, {}", protocol_of("nope"))]);
        assert_eq!(a.authenticate(&[], &mut h).await, None);
        // the SubjectAccessReviews carry the group
        seen.lock().unwrap().clear();
        a.authorize(&alice, &hyper::Method::GET, "/stats/summary")
            .await
            .unwrap();
        a.authorize(&bob, &hyper::Method::POST, "/exec/ns/p/c")
            .await
            .unwrap();
        let specs = seen.lock().unwrap().clone();
        assert_eq!(specs.len(), 2, "{specs:?}");
        assert_eq!(specs[0]["user"], "alice");
        assert_eq!(
            specs[0]["groups"],
            serde_json::json!(["dev", "system:authenticated"])
        );
        assert_eq!(specs[0]["resourceAttributes"]["subresource"], "stats");
        assert_eq!(
            specs[1]["groups"],
            serde_json::json!(["g1", "system:authenticated"])
        );
    }

    /// `clientCAFile` changed: a certificate of a CA added to it is accepted, through the
    /// reload mechanism of the serving certificate; content that is no CA keeps the current
    /// ones.
    #[tokio::test]
    async fn client_ca_file_changes_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (TestCa::new("old-ca"), TestCa::new("new-ca"));
        let config = client_ca_config(dir.path(), &old.pem);
        let file = config.client_ca_file.clone().unwrap();
        let a = Auth::new(&config, "n1", None).unwrap();
        let (by_old, by_new) = (old.client("o", &[]), new.client("n", &[]));
        assert!(a.authenticate(&by_old, &mut headers(&[])).await.is_some());
        assert_eq!(a.authenticate(&by_new, &mut headers(&[])).await, None);
        let mut seen = super::super::tls::FilesSeen::default();
        let reload = |seen: &mut super::super::tls::FilesSeen| {
            super::super::tls::reload_changed(&[file.as_path()], seen, |b| {
                a.set_client_ca(&b[0])
                    .map_err(crate::cluster::certificate::CertError::Invalid)
            })
        };
        assert!(reload(&mut seen).unwrap(), "the first look installs");
        assert!(!reload(&mut seen).unwrap(), "unchanged");
        std::fs::write(&file, format!("{}{}", old.pem, new.pem)).unwrap();
        assert!(reload(&mut seen).unwrap());
        let n = a.authenticate(&by_new, &mut headers(&[])).await.unwrap();
        assert_eq!(n.name, "n");
        assert!(a.authenticate(&by_old, &mut headers(&[])).await.is_some());
        // a half-written or emptied file: refused, the CAs stay
        std::fs::write(&file, "").unwrap();
        let err = reload(&mut seen).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        assert!(a.authenticate(&by_new, &mut headers(&[])).await.is_some());
        // only the new CA: the old one's certificates are refused
        std::fs::write(&file, &new.pem).unwrap();
        assert!(reload(&mut seen).unwrap());
        assert_eq!(a.authenticate(&by_old, &mut headers(&[])).await, None);
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
