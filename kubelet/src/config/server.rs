//! The kubelet's HTTPS server on port 10250: upstream's KubeletConfiguration keys `enableServer`,
//! `address`, `port`, `tlsCertFile`, `tlsPrivateKeyFile`, `serverTLSBootstrap`,
//! `authentication` and `authorization` (with their v1beta1 defaults: anonymous off, webhook
//! token authentication on with a 2 min cache, `Webhook` authorization cached 5 min allowed /
//! 30 s denied), `tlsMinVersion` and `tlsCipherSuites` (upstream's names, checked as
//! component-base's `TLSVersion` and `TLSCipherSuites`, then against what rustls implements),
//! `streamingConnectionIdleTimeout` (default 4 h; `0` is the default, as upstream's
//! defaulting), and the flags that override them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default port of the kubelet's HTTPS server (`port`).
pub const DEFAULT_PORT: u16 = 10250;
/// Default token review cache (`authentication.webhook.cacheTTL`).
pub const DEFAULT_AUTHN_CACHE_TTL: Duration = Duration::from_secs(120);
/// Default cache of allowed SubjectAccessReviews (`authorization.webhook.cacheAuthorizedTTL`).
pub const DEFAULT_AUTHZ_ALLOWED_TTL: Duration = Duration::from_secs(300);
/// Default cache of denied SubjectAccessReviews (`authorization.webhook.cacheUnauthorizedTTL`).
pub const DEFAULT_AUTHZ_DENIED_TTL: Duration = Duration::from_secs(30);

/// The file's `authentication` (upstream's `KubeletAuthentication`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the upstream key of the same name"
)]
pub struct AuthenticationFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509File>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<AuthnWebhookFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<AnonymousFile>,
}

/// `authentication.x509`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the upstream key of the same name"
)]
pub struct X509File {
    #[serde(rename = "clientCAFile", skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}

/// `authentication.webhook`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the upstream key of the same name"
)]
pub struct AuthnWebhookFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(rename = "cacheTTL", skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<String>,
}

/// `authentication.anonymous`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the upstream key of the same name"
)]
pub struct AnonymousFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// The file's `authorization` (upstream's `KubeletAuthorization`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the upstream key of the same name"
)]
pub struct AuthorizationFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<AuthzWebhookFile>,
}

/// `authorization.webhook`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the upstream key of the same name"
)]
pub struct AuthzWebhookFile {
    #[serde(rename = "cacheAuthorizedTTL", skip_serializing_if = "Option::is_none")]
    pub cache_authorized_ttl: Option<String>,
    #[serde(
        rename = "cacheUnauthorizedTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_unauthorized_ttl: Option<String>,
}

/// `authorization.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Every authenticated request is allowed (only when configured).
    AlwaysAllow,
    /// A `SubjectAccessReview` to the API server decides (the default).
    Webhook,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "AlwaysAllow" => Ok(AuthorizationMode::AlwaysAllow),
            "Webhook" => Ok(AuthorizationMode::Webhook),
            other => Err(format!(
                "{other:?}: must be one of \"AlwaysAllow\", \"Webhook\""
            )),
        }
    }
}

impl std::fmt::Display for AuthorizationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthorizationMode::AlwaysAllow => "AlwaysAllow",
            AuthorizationMode::Webhook => "Webhook",
        })
    }
}

/// The effective settings of the HTTPS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `address:port` (default `0.0.0.0:10250`).
    pub listen: SocketAddr,
    /// `tlsCertFile` (with `tlsPrivateKeyFile`): the serving certificate from files.
    pub tls_cert_file: Option<PathBuf>,
    /// `tlsPrivateKeyFile`.
    pub tls_private_key_file: Option<PathBuf>,
    /// `serverTLSBootstrap`: the serving certificate from a `kubelet-serving` CSR.
    pub server_tls_bootstrap: bool,
    /// `authentication.x509.clientCAFile`.
    pub client_ca_file: Option<PathBuf>,
    /// `authentication.webhook.enabled` (default true).
    pub webhook_authentication: bool,
    /// `authentication.webhook.cacheTTL` (default 2 min).
    pub authentication_cache_ttl: Duration,
    /// `authentication.anonymous.enabled` (default false).
    pub anonymous: bool,
    /// `authorization.mode` (default `Webhook`).
    pub authorization_mode: AuthorizationMode,
    /// `authorization.webhook.cacheAuthorizedTTL` (default 5 min).
    pub cache_authorized_ttl: Duration,
    /// `authorization.webhook.cacheUnauthorizedTTL` (default 30 s).
    pub cache_unauthorized_ttl: Duration,
    /// `tlsMinVersion` (default TLS 1.2, upstream's `DefaultTLSVersion`).
    pub tls_min_version: TlsVersion,
    /// `tlsCipherSuites`: upstream's names, each one rustls implements, in the file's order
    /// (empty: rustls's defaults).
    pub tls_cipher_suites: Vec<String>,
    /// `streamingConnectionIdleTimeout` (default 4 h): a streaming session (exec, attach,
    /// port-forward) with no message either way for this long is closed.
    pub streaming_connection_idle_timeout: Duration,
}

/// Default `streamingConnectionIdleTimeout` (upstream's defaulting of v1beta1).
pub const DEFAULT_STREAMING_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// A `tlsMinVersion` kubenode's TLS library (rustls) implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `VersionTLS12`.
    Tls12,
    /// `VersionTLS13`.
    Tls13,
}

impl TlsVersion {
    /// Upstream's name.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "VersionTLS12",
            TlsVersion::Tls13 => "VersionTLS13",
        }
    }
}

/// Parses `tlsMinVersion` as component-base's `TLSVersion`: `""` is the default (TLS 1.2),
/// `VersionTLS12`/`VersionTLS13` as named; `VersionTLS10`/`VersionTLS11` are upstream's but
/// rustls implements neither (an error saying so); anything else is upstream's
/// `unknown tls version "X"`.
pub fn parse_tls_version(name: &str) -> Result<TlsVersion, String> {
    match name {
        "" | "VersionTLS12" => Ok(TlsVersion::Tls12),
        "VersionTLS13" => Ok(TlsVersion::Tls13),
        "VersionTLS10" | "VersionTLS11" => Err(format!(
            "{name:?}: kubenode's TLS library (rustls) does not implement TLS 1.0 or 1.1; \
             use VersionTLS12 or VersionTLS13"
        )),
        other => Err(format!("unknown tls version {other:?}")),
    }
}

/// The TLS 1.3 suites: upstream accepts their names, but Go (and rustls) always enables all
/// three for TLS 1.3 (they are not configurable).
pub const TLS13_CIPHER_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The TLS 1.2 suites rustls implements, by upstream's (IANA) name: upstream's names for them,
/// with the two legacy ChaCha20 names component-base keeps.
pub const TLS12_CIPHER_SUITES: [(&str, &str); 8] = [
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// The suites upstream knows (Go's `CipherSuites` and `InsecureCipherSuites`) that rustls does
/// not implement: CBC, RSA key exchange, RC4, 3DES.
const UPSTREAM_ONLY_CIPHER_SUITES: [&str; 16] = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// Checks `tlsCipherSuites` as component-base's `TLSCipherSuites` (a name upstream does not
/// know is its `Cipher suite X not supported or doesn't exist`), then refuses a name upstream
/// knows but rustls does not implement, naming the suites it does. The names come back as
/// given.
pub fn check_cipher_suites(names: &[String]) -> Result<Vec<String>, String> {
    for n in names {
        let n = n.as_str();
        if TLS13_CIPHER_SUITES.contains(&n) || TLS12_CIPHER_SUITES.iter().any(|(u, _)| *u == n) {
            continue;
        }
        if UPSTREAM_ONLY_CIPHER_SUITES.contains(&n) {
            let offered: Vec<&str> = TLS12_CIPHER_SUITES
                .iter()
                .take(6)
                .map(|(u, _)| *u)
                .chain(TLS13_CIPHER_SUITES)
                .collect();
            return Err(format!(
                "{n}: not implemented by kubenode's TLS library (rustls), which offers {}",
                offered.join(", ")
            ));
        }
        return Err(format!("Cipher suite {n} not supported or doesn't exist"));
    }
    Ok(names.to_vec())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            tls_cert_file: None,
            tls_private_key_file: None,
            server_tls_bootstrap: false,
            client_ca_file: None,
            webhook_authentication: true,
            authentication_cache_ttl: DEFAULT_AUTHN_CACHE_TTL,
            anonymous: false,
            authorization_mode: AuthorizationMode::Webhook,
            cache_authorized_ttl: DEFAULT_AUTHZ_ALLOWED_TTL,
            cache_unauthorized_ttl: DEFAULT_AUTHZ_DENIED_TTL,
            tls_min_version: TlsVersion::Tls12,
            tls_cipher_suites: Vec::new(),
            streaming_connection_idle_timeout: DEFAULT_STREAMING_IDLE_TIMEOUT,
        }
    }
}

/// The file form of `s`'s authentication settings (for `to_file`, `/configz`).
pub fn authentication_file(s: &ServerConfig) -> AuthenticationFile {
    AuthenticationFile {
        x509: Some(X509File {
            client_ca_file: s.client_ca_file.as_ref().map(|p| p.display().to_string()),
        }),
        webhook: Some(AuthnWebhookFile {
            enabled: Some(s.webhook_authentication),
            cache_ttl: Some(crate::duration::format_duration(s.authentication_cache_ttl)),
        }),
        anonymous: Some(AnonymousFile {
            enabled: Some(s.anonymous),
        }),
    }
}

/// The file form of `s`'s authorization settings.
pub fn authorization_file(s: &ServerConfig) -> AuthorizationFile {
    AuthorizationFile {
        mode: Some(s.authorization_mode.to_string()),
        webhook: Some(AuthzWebhookFile {
            cache_authorized_ttl: Some(crate::duration::format_duration(s.cache_authorized_ttl)),
            cache_unauthorized_ttl: Some(crate::duration::format_duration(
                s.cache_unauthorized_ttl,
            )),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_versions_as_component_base() {
        assert_eq!(parse_tls_version(""), Ok(TlsVersion::Tls12));
        assert_eq!(parse_tls_version("VersionTLS12"), Ok(TlsVersion::Tls12));
        assert_eq!(parse_tls_version("VersionTLS13"), Ok(TlsVersion::Tls13));
        assert_eq!(
            parse_tls_version("VersionTLS14"),
            Err("unknown tls version \"VersionTLS14\"".into())
        );
        assert_eq!(
            parse_tls_version("tls13"),
            Err("unknown tls version \"tls13\"".into())
        );
        for old in ["VersionTLS10", "VersionTLS11"] {
            let e = parse_tls_version(old).unwrap_err();
            assert!(e.contains("does not implement TLS 1.0 or 1.1"), "{e}");
            assert!(e.contains(old), "{e}");
        }
    }

    #[test]
    fn cipher_suites_as_component_base_then_rustls() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = names(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "TLS_AES_128_GCM_SHA256",
        ]);
        assert_eq!(check_cipher_suites(&ok), Ok(ok.clone()));
        assert_eq!(check_cipher_suites(&[]), Ok(vec![]));
        assert_eq!(
            check_cipher_suites(&names(&["TLS_FOO"])),
            Err("Cipher suite TLS_FOO not supported or doesn't exist".into())
        );
        let e = check_cipher_suites(&names(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_RSA_WITH_AES_128_CBC_SHA",
        ]))
        .unwrap_err();
        assert!(
            e.starts_with("TLS_RSA_WITH_AES_128_CBC_SHA: not implemented by kubenode's TLS"),
            "{e}"
        );
        // upstream's names are case-sensitive
        assert!(check_cipher_suites(&names(&["tls_aes_128_gcm_sha256"])).is_err());
    }
}
