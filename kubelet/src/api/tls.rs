//! The HTTPS server's serving certificate, as upstream's kubelet chooses it:
//!
//! - `tlsCertFile`/`tlsPrivateKeyFile` when given, looked at again every
//!   [`RELOAD_INTERVAL`] and reloaded when they change (upstream's
//!   `ReloadKubeletServerCertificate`, on by default since 1.31);
//! - with `serverTLSBootstrap: true`, a certificate from a `kubernetes.io/kubelet-serving`
//!   CertificateSigningRequest (subject `O=system:nodes, CN=system:node:<node>`, SANs the
//!   hostname and node IPs, usages `digital signature`, `server auth`), kept in
//!   `<root>/pki/kubelet-server-<ts>.pem` with the `kubelet-server-current.pem` link (the
//!   client certificate's [`Store`]) and rotated at 70-90 % of its lifetime; each new pair is
//!   installed in the [`ServingCert`] resolver, so a rotation needs no restart (new handshakes
//!   get it; open connections keep theirs);
//! - otherwise a self-signed pair, `<root>/pki/kubelet.crt` and `kubelet.key`, reused while
//!   readable, else made as upstream's `cert.GenerateSelfSignedCertKey`: a CA
//!   `<host>-ca@<unix time>` and a certificate `<host>@<unix time>` it signs, both valid one year,
//!   the certificate file holding the certificate then the CA. The key is ECDSA P-256 (upstream:
//!   RSA 2048); the SANs are the hostname and the node IP (upstream: the hostname only).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::cluster::certificate::{self, CertError, Pair, Store};

/// The serving pair's name prefix in the certificate directory (upstream's `kubelet-server`).
pub const SERVING_PREFIX: &str = "kubelet-server";
/// The signer of kubelet serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The certificate every new TLS handshake presents; replaced on rotation.
#[derive(Debug, Default)]
pub struct ServingCert {
    current: RwLock<Option<(Pair, Arc<rustls::sign::CertifiedKey>)>>,
}

impl ServingCert {
    /// No certificate yet (handshakes fail until one is set).
    pub fn new() -> Arc<ServingCert> {
        Arc::new(ServingCert::default())
    }

    /// Installs `pair` for the next handshakes.
    pub fn set(&self, pair: Pair) -> Result<(), CertError> {
        let key = pair.certified_key()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((pair, key));
        Ok(())
    }

    /// The current pair.
    pub fn current(&self) -> Option<Pair> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(p, _)| p.clone())
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, k)| k.clone())
    }
}

fn invalid(e: impl std::fmt::Display) -> CertError {
    CertError::Invalid(e.to_string())
}

/// The TLS parameters of the HTTPS server (`tlsMinVersion`, `tlsCipherSuites`, checked by
/// [`crate::config::server::check_cipher_suites`]): rustls's aws-lc-rs provider keeping, when
/// suites are named, the TLS 1.2 suites named (and all of TLS 1.3's, which neither Go nor
/// rustls lets a server turn off), and the protocol versions from the minimum up.
pub fn server_crypto(
    min: crate::config::server::TlsVersion,
    suites: &[String],
) -> Result<
    (
        rustls::crypto::CryptoProvider,
        &'static [&'static rustls::SupportedProtocolVersion],
    ),
    String,
> {
    use crate::config::server::{TlsVersion, TLS12_CIPHER_SUITES, TLS13_CIPHER_SUITES};
    use rustls::CipherSuite as C;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !suites.is_empty() {
        let mut wanted = Vec::new();
        for name in suites {
            if TLS13_CIPHER_SUITES.contains(&name.as_str()) {
                continue;
            }
            let iana = TLS12_CIPHER_SUITES
                .iter()
                .find(|(u, _)| u == name)
                .map(|(_, i)| *i)
                .ok_or_else(|| format!("tlsCipherSuites: {name}: not a TLS 1.2 suite of rustls"))?;
            wanted.push(match iana {
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
                    C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                }
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
                    C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                }
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
                    C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
                }
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
                    C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                }
                other => return Err(format!("tlsCipherSuites: {other}: unknown to rustls")),
            });
        }
        provider.cipher_suites.retain(|s| match s {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => wanted.contains(&s.suite()),
        });
    }
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    let versions: &'static [&'static rustls::SupportedProtocolVersion] = match min {
        TlsVersion::Tls12 => rustls::ALL_VERSIONS,
        TlsVersion::Tls13 => &TLS13_ONLY,
    };
    Ok((provider, versions))
}

/// The pair of `tlsCertFile` and `tlsPrivateKeyFile`.
pub fn from_files(cert: &Path, key: &Path) -> Result<Pair, CertError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CertError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let text = format!("{}\n{}", read(cert)?.trim_end(), read(key)?);
    Pair::from_pem(&text)
        .map_err(|e| CertError::Invalid(format!("{} and {}: {e}", cert.display(), key.display())))
}

/// How often [`watch_files`] looks at `tlsCertFile` and `tlsPrivateKeyFile`, and
/// [`watch`] at any files (`clientCAFile` too).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// What [`reload_changed`] last installed (the files' bytes) or last refused.
#[derive(Debug, Default)]
pub struct FilesSeen {
    bytes: Option<Vec<Vec<u8>>>,
}

/// Reads `paths` and, when their bytes differ from what `seen` holds, passes them to `install`:
/// `Ok(true)` when it installed them, `Ok(false)` when nothing changed, an error when a file
/// cannot be read or `install` refused the content (what was installed before stays; the same
/// content is not offered again, so a bad one is reported once and a half-written one is
/// retried when it changes).
pub fn reload_changed(
    paths: &[&Path],
    seen: &mut FilesSeen,
    install: impl FnOnce(&[Vec<u8>]) -> Result<(), CertError>,
) -> Result<bool, CertError> {
    let bytes = paths
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|source| CertError::Io {
                path: p.to_path_buf(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if seen.bytes.as_ref() == Some(&bytes) {
        return Ok(false);
    }
    // Remembered before installing, so that a bad content is reported once, not at every look.
    install(seen.bytes.insert(bytes))?;
    Ok(true)
}

/// Installs the pair of `cert` and `key` in `serving` when the files changed
/// ([`reload_changed`]; upstream's kubelet reloads `tlsCertFile` on change, its
/// `ReloadKubeletServerCertificate`). A pair that does not parse or does not match its key is
/// an error and the current certificate stays.
pub fn reload_files(
    cert: &Path,
    key: &Path,
    serving: &ServingCert,
    seen: &mut FilesSeen,
) -> Result<bool, CertError> {
    reload_changed(&[cert, key], seen, |_| serving.set(from_files(cert, key)?))
}

/// Looks at `paths` every [`RELOAD_INTERVAL`] and passes changed content to `install`
/// ([`reload_changed`]; the content at start is the baseline), logging what happened as `what`
/// (`"serving certificate"`) of `key` (`"tlsCertFile"`). Never returns.
pub async fn watch<F>(paths: Vec<PathBuf>, key: &'static str, what: &'static str, install: F)
where
    F: Fn(&[Vec<u8>]) -> Result<(), CertError> + Send + Sync + 'static,
{
    let install = Arc::new(install);
    let mut seen = FilesSeen::default();
    if let Ok(bytes) = paths.iter().map(std::fs::read).collect() {
        seen.bytes = Some(bytes);
    }
    let paths = Arc::new(paths);
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (p, f) = (paths.clone(), install.clone());
        let looked = tokio::task::spawn_blocking(move || {
            let refs: Vec<&Path> = p.iter().map(PathBuf::as_path).collect();
            let r = reload_changed(&refs, &mut seen, |b| f(b));
            (r, seen)
        })
        .await;
        match looked {
            Ok((result, back)) => {
                seen = back;
                match result {
                    Ok(true) => {
                        tracing::info!(file = %paths[0].display(), "{what} reloaded from {key}")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        "{key} changed but cannot be used ({e}); keeping the current {what}"
                    ),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading the {what} panicked");
                return;
            }
        }
    }
}

/// Looks at `cert` and `key` every [`RELOAD_INTERVAL`] and installs a changed pair
/// ([`reload_files`]); new handshakes get it, open connections keep theirs. Never returns.
pub async fn watch_files(cert: PathBuf, key: PathBuf, serving: Arc<ServingCert>) {
    let (c, k) = (cert.clone(), key.clone());
    watch(
        vec![cert, key],
        "tlsCertFile",
        "serving certificate",
        move |_| serving.set(from_files(&c, &k)?),
    )
    .await
}

/// `<dir>/kubelet.crt` and `<dir>/kubelet.key`: reused when both are readable and valid,
/// else generated and written (0600 key, 0644 certificate, by rename).
pub fn self_signed(dir: &Path, host: &str, ips: &[IpAddr]) -> Result<(Pair, PathBuf), CertError> {
    let crt = dir.join("kubelet.crt");
    let key = dir.join("kubelet.key");
    if let Ok(pair) = from_files(&crt, &key) {
        return Ok((pair, crt));
    }
    let (cert_pem, key_pem) = generate_self_signed(host, ips)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_file(&key, key_pem.as_bytes(), 0o600).map_err(io(&key))?;
    write_file(&crt, cert_pem.as_bytes(), 0o644).map_err(io(&crt))?;
    Ok((from_files(&crt, &key)?, crt))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn sans(host: &str, ips: &[IpAddr]) -> Result<Vec<SanType>, CertError> {
    let mut out = Vec::new();
    match host.parse::<IpAddr>() {
        Ok(ip) => out.push(SanType::IpAddress(ip)),
        Err(_) => out.push(SanType::DnsName(host.try_into().map_err(invalid)?)),
    }
    for ip in ips {
        if !out.contains(&SanType::IpAddress(*ip)) {
            out.push(SanType::IpAddress(*ip));
        }
    }
    Ok(out)
}

/// upstream's `GenerateSelfSignedCertKey`: the certificate and its CA (PEM, certificate
/// first) and the key.
fn generate_self_signed(host: &str, ips: &[IpAddr]) -> Result<(String, String), CertError> {
    let now = time::OffsetDateTime::now_utc();
    let year = time::Duration::days(365);
    let unix = now.unix_timestamp();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(invalid)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("{host}-ca@{unix}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    ca.not_before = now - time::Duration::minutes(5);
    ca.not_after = now + year;
    let ca_cert = ca.self_signed(&ca_key).map_err(invalid)?;
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(invalid)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, format!("{host}@{unix}"));
    p.subject_alt_names = sans(host, ips)?;
    p.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + year;
    let cert = p.signed_by(&key, &issuer).map_err(invalid)?;
    Ok((
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    ))
}

/// `serverTLSBootstrap`: installs the stored serving pair when valid, then requests one
/// (`kubernetes.io/kubelet-serving`) whenever there is no valid pair or its rotation deadline
/// passed; failures are retried with kube-rs's backoff. Never returns.
pub async fn run_server_tls_bootstrap(
    client: kube::Client,
    cert_dir: PathBuf,
    node: String,
    ips: Vec<IpAddr>,
    serving: Arc<ServingCert>,
) {
    use kube::runtime::watcher::DefaultBackoff;
    let store = Store::with_prefix(&cert_dir, SERVING_PREFIX);
    if let Ok(Some(pair)) = store.current() {
        if pair.info.valid_at(jiff::Timestamp::now()) {
            if let Err(e) = serving.set(pair) {
                tracing::warn!("the stored serving certificate: {e}");
            }
        }
    }
    let mut backoff = DefaultBackoff::default();
    loop {
        let now = jiff::Timestamp::now();
        if let Some(pair) = serving.current().filter(|p| p.info.valid_at(now)) {
            let deadline = certificate::rotation_deadline(&pair.info, certificate::jitter());
            if deadline > now {
                let wait = Duration::from_millis(
                    (deadline.as_millisecond() - now.as_millisecond()) as u64,
                );
                tracing::info!(expires = %pair.info.not_after, rotation_deadline = %deadline,
                    "serving certificate valid: waiting {wait:?} for its rotation deadline");
                tokio::time::sleep(wait).await;
            }
        }
        let result = async {
            let sans = sans(&node, &ips).map_err(|e| e.to_string())?;
            let (cert, key) = crate::cluster::bootstrap::request_certificate_for(
                &client,
                &node,
                SERVING_SIGNER,
                &["digital signature", "server auth"],
                &sans,
            )
            .await
            .map_err(|e| e.to_string())?;
            let file = store
                .update(&cert, &key, jiff::Timestamp::now())
                .map_err(|e| e.to_string())?;
            let pair = store
                .current()
                .map_err(|e| e.to_string())?
                .ok_or("the written certificate is not current")?;
            serving.set(pair).map_err(|e| e.to_string())?;
            Ok::<_, String>(file)
        }
        .await;
        match result {
            Ok(file) => {
                tracing::info!(file = %file.display(), "serving certificate installed");
                backoff = DefaultBackoff::default();
            }
            Err(e) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(
                    "requesting the serving certificate failed: {e}; retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let (pair, crt) = self_signed(dir.path(), "node-a", &[ip]).unwrap();
        assert_eq!(crt, dir.path().join("kubelet.crt"));
        assert!(pair.info.common_name.starts_with("node-a@"));
        let text = std::fs::read_to_string(&crt).unwrap();
        assert_eq!(
            text.matches("BEGIN CERTIFICATE").count(),
            2,
            "certificate and CA"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("kubelet.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, _) = self_signed(dir.path(), "node-a", &[ip]).unwrap();
        assert_eq!(again.pem, pair.pem);
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names = format!("{:?}", san.value.general_names);
        assert!(
            names.contains("node-a") && names.contains("10, 0, 0, 5"),
            "{names}"
        );
        let serving = ServingCert::new();
        serving.set(pair).unwrap();
        assert!(serving.current().is_some());
    }

    #[test]
    fn tls_parameters_from_the_configuration() {
        use crate::config::server::TlsVersion;
        use rustls::CipherSuite as C;
        let suites = |p: &rustls::crypto::CryptoProvider| -> Vec<C> {
            p.cipher_suites.iter().map(|s| s.suite()).collect()
        };
        let (all, versions) = server_crypto(TlsVersion::Tls12, &[]).unwrap();
        assert_eq!(
            suites(&all),
            suites(&rustls::crypto::aws_lc_rs::default_provider())
        );
        assert_eq!(versions.len(), 2);
        let (_, versions) = server_crypto(TlsVersion::Tls13, &[]).unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].version, rustls::ProtocolVersion::TLSv1_3);
        // TLS 1.2 suites as named (the legacy ChaCha20 name too), TLS 1.3's all kept
        let (p, _) = server_crypto(
            TlsVersion::Tls12,
            &[
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string(),
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".to_string(),
                "TLS_AES_128_GCM_SHA256".to_string(),
            ],
        )
        .unwrap();
        let got = suites(&p);
        assert!(got.contains(&C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384));
        assert!(got.contains(&C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256));
        assert!(!got.contains(&C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256));
        for s in [
            C::TLS13_AES_128_GCM_SHA256,
            C::TLS13_AES_256_GCM_SHA384,
            C::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            assert!(got.contains(&s), "{s:?}");
        }
    }

    #[test]
    fn changed_files_are_reloaded_and_a_bad_pair_keeps_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let write = |host: &str| {
            let (c, k) = generate_self_signed(host, &[]).unwrap();
            std::fs::write(&crt, c).unwrap();
            std::fs::write(&key, k).unwrap();
        };
        let serving = ServingCert::new();
        let mut seen = FilesSeen::default();
        let cn = |s: &ServingCert| s.current().unwrap().info.common_name;
        write("first");
        assert!(reload_files(&crt, &key, &serving, &mut seen).unwrap());
        assert!(cn(&serving).starts_with("first@"));
        assert!(!reload_files(&crt, &key, &serving, &mut seen).unwrap());
        write("second");
        assert!(reload_files(&crt, &key, &serving, &mut seen).unwrap());
        assert!(cn(&serving).starts_with("second@"));
        // A certificate with another pair's key: refused once, the current one stays.
        let (_, other_key) = generate_self_signed("third", &[]).unwrap();
        std::fs::write(&key, other_key).unwrap();
        assert!(reload_files(&crt, &key, &serving, &mut seen).is_err());
        assert!(!reload_files(&crt, &key, &serving, &mut seen).unwrap());
        assert!(cn(&serving).starts_with("second@"));
        std::fs::write(&crt, "not a certificate").unwrap();
        assert!(reload_files(&crt, &key, &serving, &mut seen).is_err());
        assert!(cn(&serving).starts_with("second@"));
    }
}
