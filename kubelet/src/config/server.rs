//! The kubelet's HTTPS server on port 10250: upstream's KubeletConfiguration keys `enableServer`,
//! `address`, `port`, `tlsCertFile`, `tlsPrivateKeyFile`, `serverTLSBootstrap`,
//! `authentication` and `authorization` (with their v1beta1 defaults: anonymous off, webhook
//! token authentication on with a 2 min cache, `Webhook` authorization cached 5 min allowed /
//! 30 s denied), and the flags that override them.

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
