//! TLS bootstrap and client certificate rotation, as upstream's kubelet does them with
//! `--bootstrap-kubeconfig` and `rotateCertificates` (what `kubeadm join` sets up):
//!
//! - At start ([`start`]), the `--kubeconfig` file is checked as upstream's
//!   `isClientConfigStillValid` does: missing, unreadable, or its client certificate unusable or
//!   expired → a new kubeconfig is written at once (server and CA from the bootstrap kubeconfig,
//!   user `default-auth` with `client-certificate`/`client-key` =
//!   `<root>/pki/kubelet-client-current.pem`, as `writeKubeconfigFromBootstrapping`) and the
//!   certificate is requested in the background. The agent starts meanwhile (static pods run; the
//!   API tasks retry until the certificate is there).
//! - The request ([`request_certificate`]): a new ECDSA P-256 key, a CSR `CN=system:node:<node>,
//!   O=system:nodes`, a `certificates.k8s.io/v1` CertificateSigningRequest (`generateName:
//!   csr-`, signer `kubernetes.io/kube-apiserver-client-kubelet`, usages `digital signature`,
//!   `client auth`), then a watch of it until `status.certificate` (or Denied/Failed), at most
//!   15 min (upstream's `certificateWaitTimeout`). The pair goes to the [`Store`], then to the
//!   running clients ([`Identity`]).
//! - Rotation: when 70-90 % (jittered) of the certificate's lifetime has passed, the same
//!   request with the current certificate as the identity (a `system:nodes` renewal); with no
//!   valid certificate (none yet, or it expired while the server was away), with the bootstrap
//!   kubeconfig's credentials. Failures are logged and retried with kube-rs's backoff, for ever:
//!   the agent and its pods never stop for it (upstream's kubelet exits after 5 min without a
//!   valid certificate; kubenode keeps its pods running and keeps trying).
//! - Crash safety: the kubeconfig is written first, by rename; the pair by rename, then the
//!   symlink by rename. A kill at any point leaves either the old valid pair or none, and the
//!   next start requests again (an orphaned CSR stays in the API, as upstream's would).
//!
//! A kubeconfig that is valid and whose certificate is not the store's (e.g. one kubeadm wrote
//! with embedded data), or that authenticates without a client certificate, is used as it is:
//! TLS bootstrap is skipped and nothing is rotated.
//!
//! With `rotateCertificates: false` (upstream's default; kubeadm sets true) bootstrap happens as
//! above but nothing is rotated: the certificate manager stops once a valid certificate is
//! installed (upstream's `LoadClientCert` without a certificate manager); an expired one is
//! replaced at the next start, as upstream's.
//!
//! Not done: a bootstrap kubeconfig without a certificate authority
//! (`insecure-skip-tls-verify`: refused at start), exec/auth-provider credentials in the
//! bootstrap kubeconfig beyond what kube-rs reads, the kubelet's serving certificate
//! (`serverTLSBootstrap`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::certificate::{self, CertInfo, Identity, Store};

/// The signer of kubelet client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// How long a CSR is waited for (upstream's `certificateWaitTimeout`).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A bootstrap that cannot start (the bootstrap kubeconfig is unusable, the kubeconfig cannot
/// be written), or one request that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BootstrapError(pub String);

fn err(e: impl std::fmt::Display) -> BootstrapError {
    BootstrapError(e.to_string())
}

/// What [`start`] was given.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `--kubeconfig`: where the node's credentials are (or will be written).
    pub kubeconfig: PathBuf,
    /// `--bootstrap-kubeconfig`.
    pub bootstrap_kubeconfig: PathBuf,
    /// `<root>/pki`.
    pub cert_dir: PathBuf,
    /// The node's name.
    pub node_name: String,
    /// `rotateCertificates`: rotate the certificate before it expires. Without it the
    /// certificate is only bootstrapped (upstream's `LoadClientCert`, no certificate manager).
    pub rotate: bool,
}

/// The outcome of [`start`]: the client the node's tasks use and what to log once.
pub struct Started {
    /// The API client (rotating its certificate when bootstrap manages it).
    pub client: kube::Client,
    /// The start-up log line.
    pub message: String,
    /// Whether a first certificate is being requested in the background.
    pub bootstrapping: bool,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("message", &self.message)
            .field("bootstrapping", &self.bootstrapping)
            .finish_non_exhaustive()
    }
}

/// The state of the `--kubeconfig` file.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    /// Not there.
    Missing,
    /// Unreadable, or its client certificate unusable or not valid now.
    Unusable(String),
    /// It authenticates without a client certificate (a token, or nothing).
    NoClientCert,
    /// Valid now; `managed`: its certificate is the store's current pair.
    Valid { managed: bool },
}

/// The cluster and user of a kubeconfig's current context.
fn current(kc: &Kubeconfig) -> Result<(kube::config::Cluster, kube::config::AuthInfo), String> {
    let ctx_name = kc
        .current_context
        .clone()
        .or_else(|| kc.contexts.first().map(|c| c.name.clone()))
        .ok_or("no current-context")?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| format!("context {ctx_name:?} not found"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| format!("cluster {:?} not found", ctx.cluster))?;
    let user = ctx.user.clone().unwrap_or_default();
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.clone())
        .unwrap_or_default();
    Ok((cluster, auth))
}

fn check_existing(path: &Path, store: &Store, now: Timestamp) -> Existing {
    if !path.exists() {
        return Existing::Missing;
    }
    let kc = match Kubeconfig::read_from(path) {
        Ok(kc) => kc,
        Err(e) => return Existing::Unusable(e.to_string()),
    };
    let auth = match current(&kc) {
        Ok((_, auth)) => auth,
        Err(e) => return Existing::Unusable(e),
    };
    let (pem, managed) = if let Some(file) = &auth.client_certificate {
        match std::fs::read(file) {
            Ok(pem) => (pem, Path::new(file) == store.current_path()),
            Err(e) => return Existing::Unusable(format!("client certificate {file}: {e}")),
        }
    } else if let Some(data) = &auth.client_certificate_data {
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
            Ok(pem) => (pem, false),
            Err(e) => return Existing::Unusable(format!("client-certificate-data: {e}")),
        }
    } else {
        return Existing::NoClientCert;
    };
    match certificate::parse_cert(&pem) {
        Err(e) => Existing::Unusable(e.to_string()),
        Ok(info) if now > info.not_after => Existing::Unusable(format!(
            "the client certificate expired at {}",
            info.not_after
        )),
        Ok(info) if now < info.not_before => Existing::Unusable(format!(
            "the client certificate is not valid before {}",
            info.not_before
        )),
        Ok(_) => Existing::Valid { managed },
    }
}

/// The kubeconfig upstream's `writeKubeconfigFromBootstrapping` writes: the bootstrap
/// kubeconfig's server and CA (its file, else its data), the pair file as client certificate
/// and key.
pub fn node_kubeconfig(bootstrap: &Kubeconfig, pem_path: &Path) -> Result<Kubeconfig, String> {
    use kube::config::{AuthInfo, Cluster, Context, NamedAuthInfo, NamedCluster, NamedContext};
    let (b, _) = current(bootstrap)?;
    let server = b
        .server
        .clone()
        .ok_or("the current cluster has no server")?;
    let pem = pem_path.display().to_string();
    Ok(Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: "default-cluster".into(),
            cluster: Some(Cluster {
                server: Some(server),
                insecure_skip_tls_verify: b.insecure_skip_tls_verify,
                certificate_authority_data: if b.certificate_authority.is_some() {
                    None
                } else {
                    b.certificate_authority_data.clone()
                },
                certificate_authority: b.certificate_authority.clone(),
                ..Cluster::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "default-auth".into(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(pem.clone()),
                client_key: Some(pem),
                ..AuthInfo::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "default-context".into(),
            context: Some(Context {
                cluster: "default-cluster".into(),
                user: Some("default-auth".into()),
                namespace: Some("default".into()),
                extensions: None,
                other: Default::default(),
            }),
            other: Default::default(),
        }],
        current_context: Some("default-context".into()),
        ..Kubeconfig::default()
    })
}

/// Writes `kc` to `path` (0600, by rename).
pub fn write_kubeconfig(path: &Path, kc: &Kubeconfig) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_yaml_ng::to_string(kc).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| err(format!("writing {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

async fn kube_config(path: &Path) -> Result<kube::Config, BootstrapError> {
    let kc = Kubeconfig::read_from(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    config.connect_timeout = Some(super::CONNECT_TIMEOUT);
    // the identity is the rotating one, never the file's
    config.auth_info = Default::default();
    if let Ok(agent) = hyper::header::HeaderValue::from_str(&super::user_agent()) {
        config
            .headers
            .push((hyper::header::HeaderName::from_static("user-agent"), agent));
    }
    Ok(config)
}

/// Starts TLS bootstrap and rotation for the node (see the module's doc): the client to use,
/// and the rotation task spawned when the certificate is the store's.
pub async fn start(p: Paths) -> Result<Started, BootstrapError> {
    let store = Store::new(&p.cert_dir);
    let now = Timestamp::now();
    let existing = check_existing(&p.kubeconfig, &store, now);
    let kubeconfig = p.kubeconfig.display().to_string();
    let bootstrap = p.bootstrap_kubeconfig.display().to_string();
    let kubeconfig_path = p.kubeconfig.clone();
    let plain = |message: String| async move {
        let client = super::connect(&kubeconfig_path).await.map_err(err)?;
        Ok(Started {
            client,
            message,
            bootstrapping: false,
        })
    };
    let reason = match existing {
        Existing::NoClientCert => {
            return plain(format!(
                "--bootstrap-kubeconfig {bootstrap}: the kubeconfig {kubeconfig} exists and \
                 authenticates without a client certificate: TLS bootstrap skipped, nothing to \
                 rotate"
            ))
            .await
        }
        Existing::Valid { managed: false } => {
            return plain(format!(
                "--bootstrap-kubeconfig {bootstrap}: the kubeconfig {kubeconfig} has a valid \
                 client certificate: TLS bootstrap skipped (the certificate is not the \
                 bootstrapped one in {}: it is not rotated)",
                p.cert_dir.display()
            ))
            .await
        }
        Existing::Valid { managed: true } => None,
        Existing::Missing => Some("does not exist".to_string()),
        Existing::Unusable(why) => Some(format!("is not usable ({why})")),
    };
    if reason.is_some() {
        let b = Kubeconfig::read_from(&p.bootstrap_kubeconfig)
            .map_err(|e| err(format!("--bootstrap-kubeconfig {bootstrap}: {e}")))?;
        let kc = node_kubeconfig(&b, &store.current_path())
            .map_err(|e| err(format!("--bootstrap-kubeconfig {bootstrap}: {e}")))?;
        write_kubeconfig(&p.kubeconfig, &kc)?;
    }
    let identity = Identity::new();
    // the store's pair first, as upstream's certificate manager: a valid one is used at once
    if let Ok(Some(pair)) = store.current() {
        if pair.info.valid_at(now) {
            identity.set(pair).map_err(err)?;
        }
    }
    let config = kube_config(&p.kubeconfig).await?;
    let client = certificate::rotating_client(&config, identity.clone()).map_err(err)?;
    let bootstrapping = identity.current().is_none();
    let message = match &reason {
        Some(why) => format!(
            "the kubeconfig {kubeconfig} {why}: wrote it for the certificate {}; {}",
            store.current_path().display(),
            if bootstrapping {
                format!("TLS bootstrap with {bootstrap} in the background")
            } else {
                "the current certificate is valid".to_string()
            }
        ),
        None => format!(
            "--bootstrap-kubeconfig {bootstrap}: the kubeconfig {kubeconfig} is valid: TLS \
             bootstrap skipped"
        ),
    };
    let message = format!(
        "{message}; client certificate rotation {}",
        if p.rotate {
            "on"
        } else {
            "off (rotateCertificates is false)"
        }
    );
    tokio::spawn(run(
        identity,
        store,
        client.clone(),
        p.bootstrap_kubeconfig.clone(),
        p.node_name.clone(),
        p.rotate,
    ));
    Ok(Started {
        client,
        message,
        bootstrapping,
    })
}

/// The certificate manager: requests a certificate when there is no valid one, and, with
/// `rotate`, again at each rotation deadline (never returning); without `rotate` it returns
/// once a valid certificate is there.
async fn run(
    identity: Arc<Identity>,
    store: Store,
    client: kube::Client,
    bootstrap_kubeconfig: PathBuf,
    node: String,
    rotate: bool,
) {
    use kube::runtime::watcher::DefaultBackoff;
    let mut backoff = DefaultBackoff::default();
    loop {
        let now = Timestamp::now();
        let valid = identity.current().filter(|p| p.info.valid_at(now));
        if !needs_request(valid.is_some(), rotate) {
            tracing::info!(
                expires = ?valid.map(|p| p.info.not_after),
                "client certificate valid; not rotated (rotateCertificates is false)"
            );
            return;
        }
        if let Some(pair) = &valid {
            let deadline = certificate::rotation_deadline(&pair.info, certificate::jitter());
            if deadline > now {
                let wait = Duration::from_millis(
                    (deadline.as_millisecond() - now.as_millisecond()) as u64,
                );
                tracing::info!(
                    expires = %pair.info.not_after,
                    rotation_deadline = %deadline,
                    "client certificate valid: waiting {:?} for its rotation deadline",
                    wait
                );
                tokio::time::sleep(wait).await;
            }
        }
        // a valid certificate renews itself (system:nodes); without one, the bootstrap
        // credentials
        let still_valid = identity
            .current()
            .is_some_and(|p| p.info.valid_at(Timestamp::now()));
        let (requester, how) = if still_valid {
            (Ok(client.clone()), "rotating")
        } else {
            (
                super::connect(&bootstrap_kubeconfig).await.map_err(err),
                "bootstrapping",
            )
        };
        let result = match requester {
            Ok(c) => request_certificate(&c, &node).await,
            Err(e) => Err(e),
        };
        let installed = result.and_then(|(cert, key)| {
            let file = store.update(&cert, &key, Timestamp::now()).map_err(err)?;
            let pair = store
                .current()
                .map_err(err)?
                .ok_or_else(|| err("the written certificate is not current"))?;
            let info: CertInfo = pair.info.clone();
            identity.set(pair).map_err(err)?;
            Ok((file, info))
        });
        match installed {
            Ok((file, info)) => {
                tracing::info!(
                    file = %file.display(),
                    subject = %format!("CN={}, O={}", info.common_name, info.organizations.join(",")),
                    expires = %info.not_after,
                    "{how} the client certificate: new certificate installed"
                );
                backoff = DefaultBackoff::default();
            }
            Err(e) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!("{how} the client certificate failed: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Whether the certificate manager requests a certificate (now, or at the rotation deadline):
/// always without a valid one (bootstrap), with one only when rotating.
fn needs_request(valid: bool, rotate: bool) -> bool {
    !valid || rotate
}

/// A new key and CSR for `system:node:<node>`, created and waited for (approval and
/// certificate, at most [`WAIT_TIMEOUT`]): the certificate and the key, PEM.
pub async fn request_certificate(
    client: &kube::Client,
    node: &str,
) -> Result<(String, String), BootstrapError> {
    request_certificate_for(
        client,
        node,
        SIGNER,
        &["digital signature", "client auth"],
        &[],
    )
    .await
}

/// As [`request_certificate`], for the signer `signer` with `usages` and the subject
/// alternative names `sans` (the serving certificate's `kubernetes.io/kubelet-serving`).
pub async fn request_certificate_for(
    client: &kube::Client,
    node: &str,
    signer: &str,
    usages: &[&str],
    sans: &[rcgen::SanType],
) -> Result<(String, String), BootstrapError> {
    use kube::api::{Api, PostParams};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans.to_vec();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(err)?;
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("csr-".into()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|e| err(format!("creating the CertificateSigningRequest: {e}")))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(
        csr = %name,
        "created the CertificateSigningRequest for system:node:{node} ({signer}): waiting for \
         its approval and certificate"
    );
    let cert = wait_for_certificate(&api, &name).await?;
    Ok((cert, key.serialize_pem()))
}

fn condition<'a>(csr: &'a CertificateSigningRequest, kind: &str) -> Option<&'a str> {
    csr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| c.message.as_deref().unwrap_or(""))
}

/// Watches the CSR `name` until it carries a certificate (its PEM), is denied or failed
/// (an error with the condition's message), or [`WAIT_TIMEOUT`] passes.
async fn wait_for_certificate(
    api: &kube::Api<CertificateSigningRequest>,
    name: &str,
) -> Result<String, BootstrapError> {
    use kube::runtime::wait::await_condition;
    let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
    let done = |csr: Option<&CertificateSigningRequest>| {
        csr.is_none_or(|c| {
            condition(c, "Denied").is_some()
                || condition(c, "Failed").is_some()
                || c.status
                    .as_ref()
                    .and_then(|s| s.certificate.as_ref())
                    .is_some_and(|b| !b.0.is_empty())
        })
    };
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(err(format!(
                "timed out after {WAIT_TIMEOUT:?} waiting for the CertificateSigningRequest {name} \
                 to be approved and issued"
            )));
        }
        let slice = (deadline - now).min(Duration::from_secs(30));
        match tokio::time::timeout(slice, await_condition(api.clone(), name, done)).await {
            Ok(Ok(None)) => {
                return Err(err(format!(
                    "the CertificateSigningRequest {name} was deleted before it was issued"
                )))
            }
            Ok(Ok(Some(csr))) => {
                if let Some(m) = condition(&csr, "Denied") {
                    return Err(err(format!(
                        "the CertificateSigningRequest {name} was denied: {m}"
                    )));
                }
                if let Some(m) = condition(&csr, "Failed") {
                    return Err(err(format!(
                        "the CertificateSigningRequest {name} failed: {m}"
                    )));
                }
                let pem = csr
                    .status
                    .and_then(|s| s.certificate)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .unwrap_or_default();
                return Ok(pem);
            }
            Ok(Err(e)) => {
                tracing::warn!(csr = %name, "watching the CertificateSigningRequest: {e}; watching again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => {
                let csr = api.get_opt(name).await.ok().flatten();
                let approved = csr
                    .as_ref()
                    .is_some_and(|c| condition(c, "Approved").is_some());
                tracing::info!(
                    csr = %name,
                    approved,
                    "still waiting for the CertificateSigningRequest's certificate"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTSTRAP: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: Q0E=\ncontexts:\n- name: tls-bootstrap-token-user@kubernetes\n  context:\n    cluster: c\n    user: tls-bootstrap-token-user\ncurrent-context: tls-bootstrap-token-user@kubernetes\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: abcdef.0123456789abcdef\n";

    /// A request happens without a valid certificate (bootstrap), or with one only when
    /// rotating.
    #[test]
    fn requests_only_to_bootstrap_unless_rotating() {
        assert!(
            needs_request(false, false),
            "bootstrap with rotateCertificates false"
        );
        assert!(needs_request(false, true));
        assert!(needs_request(true, true), "rotation");
        assert!(!needs_request(true, false), "no rotation");
    }

    /// `rotateCertificates: false`: with a valid certificate the manager returns at once,
    /// sending nothing (its client points at a port nothing listens on) and leaving the store
    /// as it was.
    #[tokio::test]
    async fn without_rotation_a_valid_certificate_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let now = Timestamp::now().as_second();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 60).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(now + 3600).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let store = Store::new(&dir.path().join("pki"));
        store
            .update(&cert.pem(), &key.serialize_pem(), Timestamp::now())
            .unwrap();
        let pair = store.current().unwrap().unwrap();
        let identity = Identity::new();
        identity.set(pair.clone()).unwrap();
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        // Bounded so that a regression fails instead of hanging; no timing is asserted.
        tokio::time::timeout(
            Duration::from_secs(60),
            run(
                identity.clone(),
                Store::new(&dir.path().join("pki")),
                client,
                dir.path().join("no-bootstrap.conf"),
                "n1".into(),
                false,
            ),
        )
        .await
        .expect("the certificate manager returned");
        assert_eq!(
            identity.current().unwrap().info.not_after,
            pair.info.not_after
        );
        let files = std::fs::read_dir(dir.path().join("pki")).unwrap().count();
        assert_eq!(files, 2, "one pair and the current link");
    }

    #[test]
    fn writes_the_kubeconfig_upstream_writes_after_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("bootstrap-kubelet.conf");
        std::fs::write(&b, BOOTSTRAP).unwrap();
        let bootstrap = Kubeconfig::read_from(&b).unwrap();
        let pem = dir.path().join("pki/kubelet-client-current.pem");
        let kc = node_kubeconfig(&bootstrap, &pem).unwrap();
        let out = dir.path().join("kubelet.conf");
        write_kubeconfig(&out, &kc).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = Kubeconfig::read_from(&out).unwrap();
        let (cluster, auth) = current(&back).unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        assert_eq!(auth.client_certificate.as_deref(), pem.to_str());
        assert_eq!(auth.client_key.as_deref(), pem.to_str());
        assert!(auth.token.is_none());
        assert_eq!(back.current_context.as_deref(), Some("default-context"));
        // it has no usable certificate yet: bootstrap is needed
        let store = Store::new(&dir.path().join("pki"));
        let now = Timestamp::now();
        assert!(matches!(
            check_existing(&out, &store, now),
            Existing::Unusable(_)
        ));
        assert_eq!(
            check_existing(&dir.path().join("nope"), &store, now),
            Existing::Missing
        );
        assert_eq!(check_existing(&b, &store, now), Existing::NoClientCert);
        // with the store's pair it is valid and managed
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.not_before =
            time::OffsetDateTime::from_unix_timestamp(now.as_second() - 60).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(now.as_second() + 60).unwrap();
        let cert = params.self_signed(&key).unwrap();
        store
            .update(&cert.pem(), &key.serialize_pem(), now)
            .unwrap();
        assert_eq!(
            check_existing(&out, &store, now),
            Existing::Valid { managed: true }
        );
        // and expired later
        let later = Timestamp::from_second(now.as_second() + 120).unwrap();
        assert!(matches!(
            check_existing(&out, &store, later),
            Existing::Unusable(why) if why.contains("expired")
        ));
    }
}
