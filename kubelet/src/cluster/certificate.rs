//! The kubelet's client certificate: where it is kept, when it is rotated, and the API client
//! that always presents the current one.
//!
//! - [`Store`]: upstream's certificate file store (`certificate.NewFileStore("kubelet-client",
//!   <root>/pki, ...)`): each certificate with its key in `kubelet-client-<ts>.pem` (0600,
//!   written to a temporary file and renamed), `kubelet-client-current.pem` a symlink to the
//!   newest, swapped atomically (a new symlink renamed over the old one). A crash leaves either
//!   the old pair current or the new one.
//! - [`rotation_deadline`]: upstream's certificate manager's `nextRotationDeadline`: `notBefore`
//!   plus 70-90 % (jittered) of the certificate's lifetime.
//! - [`Identity`] and [`rotating_client`]: a kube-rs [`kube::Client`] on kube-rs's own service
//!   stack (base URI, headers, hyper's pooled client) whose TLS connector asks [`Identity`] for
//!   the client certificate at each handshake; a rotation installs the new pair and closes every
//!   open connection (upstream's `UpdateTransport` closes them too: the API server checks a
//!   client certificate's validity at each request, so a connection made with the old one must
//!   not outlive it). Requests in flight fail and are retried by their task; watches re-watch.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};

use jiff::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The pair's name prefix in the certificate directory (upstream's `kubelet-client`).
pub const PAIR_PREFIX: &str = "kubelet-client";

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a usable PEM certificate and key.
    #[error("{0}")]
    Invalid(String),
}

/// What the agent reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// `CN`.
    pub common_name: String,
    /// `O`s.
    pub organizations: Vec<String>,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
}

impl CertInfo {
    /// Whether the certificate is valid at `now`.
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Reads the first certificate of a PEM text.
pub fn parse_cert(pem: &[u8]) -> Result<CertInfo, CertError> {
    let der = CertificateDer::from_pem_slice(pem)
        .map_err(|e| CertError::Invalid(format!("no PEM certificate: {e}")))?;
    parse_cert_der(&der)
}

/// Reads a DER certificate.
pub fn parse_cert_der(der: &[u8]) -> Result<CertInfo, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::Invalid(format!("parsing the certificate: {e}")))?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let ts = |secs: i64| {
        Timestamp::from_second(secs)
            .map_err(|e| CertError::Invalid(format!("certificate validity: {e}")))
    };
    Ok(CertInfo {
        common_name,
        organizations,
        not_before: ts(cert.validity().not_before.timestamp())?,
        not_after: ts(cert.validity().not_after.timestamp())?,
    })
}

/// A certificate with its key, as the store keeps it (one PEM text, certificate first).
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate (and chain) and the private key, PEM.
    pub pem: String,
    /// What the certificate says.
    pub info: CertInfo,
}

impl Pair {
    /// A pair from PEM text holding a certificate and a private key.
    pub fn from_pem(text: &str) -> Result<Pair, CertError> {
        let info = parse_cert(text.as_bytes())?;
        PrivateKeyDer::from_pem_slice(text.as_bytes())
            .map_err(|e| CertError::Invalid(format!("no PEM private key: {e}")))?;
        Ok(Pair {
            pem: text.to_string(),
            info,
        })
    }

    /// The rustls form: the chain and the signing key.
    pub(crate) fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, CertError> {
        let text = &self.pem;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| CertError::Invalid(format!("reading the certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
            .map_err(|e| CertError::Invalid(format!("reading the private key: {e}")))?;
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
            .map_err(|e| CertError::Invalid(format!("the private key: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        // A certificate with another pair's key would fail every handshake: refused here, where
        // the files are named. (`Unknown`: the key cannot say; none of aws-lc-rs's.)
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(CertError::Invalid(format!(
                    "the private key does not belong to the certificate: {e}"
                )))
            }
        }
        Ok(Arc::new(certified))
    }
}

/// Upstream's file store of one certificate pair in a directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    prefix: &'static str,
}

impl Store {
    /// The store of `<dir>/kubelet-client-*.pem`.
    pub fn new(dir: &Path) -> Store {
        Store::with_prefix(dir, PAIR_PREFIX)
    }

    /// The store of `<dir>/<prefix>-*.pem` (`kubelet-server` for the serving certificate).
    pub fn with_prefix(dir: &Path, prefix: &'static str) -> Store {
        Store {
            dir: dir.to_path_buf(),
            prefix,
        }
    }

    /// `<dir>/kubelet-client-current.pem`, what the kubeconfig names.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// The current pair (`None`: there is none yet).
    pub fn current(&self) -> Result<Option<Pair>, CertError> {
        let path = self.current_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Pair::from_pem(&text).map(Some).map_err(|e| match e {
                CertError::Invalid(why) => CertError::Invalid(format!("{}: {why}", path.display())),
                other => other,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CertError::Io { path, source }),
        }
    }

    /// Writes a new pair as `kubelet-client-<now>.pem` (0600) and makes it current; returns its
    /// path.
    pub fn update(
        &self,
        cert_pem: &str,
        key_pem: &str,
        now: Timestamp,
    ) -> Result<PathBuf, CertError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CertError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let ts = now.strftime("%Y-%m-%d-%H-%M-%S").to_string();
        let prefix = self.prefix;
        let file = self.dir.join(format!("{prefix}-{ts}.pem"));
        let tmp = self.dir.join(format!(".{prefix}-{ts}.pem.tmp"));
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            let text = format!("{}\n{}", cert_pem.trim_end(), key_pem.trim_end());
            f.write_all(text.as_bytes()).map_err(io(&tmp))?;
            f.write_all(b"\n").map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &file).map_err(io(&file))?;
        let updated = self.dir.join(format!("{prefix}-updated.pem"));
        let _ = std::fs::remove_file(&updated);
        std::os::unix::fs::symlink(&file, &updated).map_err(io(&updated))?;
        let current = self.current_path();
        std::fs::rename(&updated, &current).map_err(io(&current))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(file)
    }
}

/// Upstream's `nextRotationDeadline`: `notBefore + (0.7 + 0.2 * jitter) * (notAfter -
/// notBefore)`, `jitter` in `[0, 1)`.
pub fn rotation_deadline(info: &CertInfo, jitter: f64) -> Timestamp {
    let total = info.not_after.as_millisecond() - info.not_before.as_millisecond();
    let offset = total * 7 / 10 + (total as f64 * 0.2 * jitter.clamp(0.0, 1.0)) as i64;
    Timestamp::from_millisecond(info.not_before.as_millisecond() + offset).unwrap_or(info.not_after)
}

/// A uniformly random number in `[0, 1)` (for the rotation deadline's jitter).
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// The client certificate every new TLS connection presents (none while there is none yet),
/// and the open connections to close when it changes.
#[derive(Debug, Default)]
pub struct Identity {
    current: RwLock<Option<(Pair, Arc<rustls::sign::CertifiedKey>)>>,
    conns: Arc<Mutex<Vec<Weak<OwnedFd>>>>,
}

impl Identity {
    /// No certificate yet.
    pub fn new() -> Arc<Identity> {
        Arc::new(Identity::default())
    }

    /// Installs `pair` for the next connections and closes the open ones.
    pub fn set(&self, pair: Pair) -> Result<(), CertError> {
        let key = pair.certified_key()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((pair, key));
        self.close_connections();
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

    /// Shuts down every open connection (its reads and writes fail; the client reconnects
    /// with the current certificate).
    fn close_connections(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for c in conns.iter().filter_map(Weak::upgrade) {
            let _ = nix::sys::socket::shutdown(c.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }
}

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, k)| k.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

type TcpIo = hyper_util::rt::TokioIo<tokio::net::TcpStream>;

/// hyper's TCP connector, each connection registered with [`Identity`] to be closed on
/// rotation (upstream's `connrotation.Dialer`).
#[derive(Debug, Clone)]
struct TrackingConnector {
    inner: hyper_util::client::legacy::connect::HttpConnector,
    conns: Arc<Mutex<Vec<Weak<OwnedFd>>>>,
}

/// A tracked TCP connection: holds a duplicate of its socket (the tracker's handle to shut
/// it down) for as long as the connection lives.
#[derive(Debug)]
struct Tracked {
    io: TcpIo,
    _handle: Option<Arc<OwnedFd>>,
}

impl tower::Service<hyper::Uri> for TrackingConnector {
    type Response = Tracked;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Tracked, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let conns = self.conns.clone();
        Box::pin(async move {
            let io = connecting.await?;
            let handle = io.inner().as_fd().try_clone_to_owned().ok().map(Arc::new);
            if let Some(h) = &handle {
                let mut list = conns.lock().unwrap_or_else(|e| e.into_inner());
                list.retain(|w| w.strong_count() > 0);
                list.push(Arc::downgrade(h));
            }
            Ok(Tracked {
                io,
                _handle: handle,
            })
        })
    }
}

impl hyper::rt::Read for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for Tracked {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.io.connected()
    }
}

/// A kube-rs client for `config`'s server (its CA, headers and timeouts) whose client
/// certificate is `identity`'s current one at each new connection (the configuration's own
/// credentials are not used).
pub fn rotating_client(
    config: &kube::Config,
    identity: Arc<Identity>,
) -> Result<kube::Client, CertError> {
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;
    let invalid =
        |what: &str, e: &dyn std::fmt::Display| CertError::Invalid(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| invalid("the cluster's certificate authority", &e))?;
    }
    if roots.is_empty() {
        return Err(CertError::Invalid(
            "the kubeconfig names no certificate authority for the API server".into(),
        ));
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity.clone());
    // No session resumption (client-go has no session cache either): a resumed session keeps
    // the identity of the one it resumes, so a new connection would not present a new
    // certificate.
    tls.resumption = rustls::client::Resumption::disabled();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let tracking = TrackingConnector {
        inner: http,
        conns: identity.conns.clone(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tracking);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .auth_layer()
                .map_err(|e| invalid("credentials", &e))?,
        )
        .layer(
            config
                .extra_headers_layer()
                .map_err(|e| invalid("headers", &e))?,
        )
        .map_err(
            |e: hyper_util::client::legacy::Error| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(e)
            },
        )
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(nb: i64, na: i64) -> CertInfo {
        CertInfo {
            common_name: "system:node:n1".into(),
            organizations: vec!["system:nodes".into()],
            not_before: Timestamp::from_second(nb).unwrap(),
            not_after: Timestamp::from_second(na).unwrap(),
        }
    }

    #[test]
    fn rotation_deadline_is_70_to_90_percent_of_the_lifetime() {
        // a one-year certificate from a fixed time
        let start = 1_700_000_000;
        let year = 365 * 24 * 3600;
        let c = info(start, start + year);
        assert_eq!(
            rotation_deadline(&c, 0.0).as_second(),
            start + year * 7 / 10
        );
        let mid = rotation_deadline(&c, 0.5).as_second() - (start + year * 8 / 10);
        assert!(mid.abs() <= 1, "{mid}");
        let last = rotation_deadline(&c, 0.999_999).as_second();
        assert!(
            last <= start + (year as f64 * 0.9) as i64
                && last > start + (year as f64 * 0.89) as i64
        );
        // 30 s: between 21 and 27 s
        let short = info(start, start + 30);
        assert_eq!(
            rotation_deadline(&short, 0.0).as_millisecond(),
            (start * 1000) + 21_000
        );
        assert_eq!(
            rotation_deadline(&short, 1.0).as_millisecond(),
            (start * 1000) + 27_000
        );
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    fn test_pair(cn: &str, nb: i64, na: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_before = time::OffsetDateTime::from_unix_timestamp(nb).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(na).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn store_writes_timestamped_pairs_and_swaps_the_current_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("pki"));
        assert!(store.current().unwrap().is_none());
        let (c1, k1) = test_pair("system:node:n1", 1_700_000_000, 1_800_000_000);
        let t1 = Timestamp::from_second(1_700_000_100).unwrap();
        let f1 = store.update(&c1, &k1, t1).unwrap();
        assert_eq!(
            f1.file_name().unwrap().to_str().unwrap(),
            format!("kubelet-client-{}.pem", t1.strftime("%Y-%m-%d-%H-%M-%S"))
        );
        assert_eq!(
            std::fs::metadata(&f1).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let cur = store.current().unwrap().unwrap();
        assert_eq!(cur.info.common_name, "system:node:n1");
        assert_eq!(cur.info.organizations, ["system:nodes"]);
        assert_eq!(cur.info.not_after.as_second(), 1_800_000_000);
        assert_eq!(std::fs::read_link(store.current_path()).unwrap(), f1);
        let (c2, k2) = test_pair("system:node:n1", 1_700_000_000, 1_900_000_000);
        let f2 = store
            .update(&c2, &k2, Timestamp::from_second(1_700_000_200).unwrap())
            .unwrap();
        assert_ne!(f1, f2);
        assert_eq!(std::fs::read_link(store.current_path()).unwrap(), f2);
        assert_eq!(
            store.current().unwrap().unwrap().info.not_after.as_second(),
            1_900_000_000
        );
        // the pair is usable as a TLS identity
        let id = Identity::new();
        id.set(store.current().unwrap().unwrap()).unwrap();
        assert!(id.current().is_some());
        // no temporary or link file left behind
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("pki"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
