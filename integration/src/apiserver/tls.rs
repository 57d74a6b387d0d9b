//! The stand-in's HTTPS mode: a cluster CA (generated for the test, or given as PEM), a serving
//! certificate for `127.0.0.1`/`localhost` signed by it, and the rustls server configuration
//! that asks for (but does not require) a client certificate, as kube-apiserver's
//! `--client-ca-file` does. The CA also signs the CSRs the signing controller issues
//! ([`super::csr`]), as kube-controller-manager's `--cluster-signing-cert-file`/`-key-file`
//! (kubeadm gives it the cluster CA).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The cluster CA: its certificate (PEM and DER) and key.
#[derive(Debug)]
pub struct Ca {
    /// The CA certificate, PEM (what kubeconfigs carry as `certificate-authority-data`).
    pub cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 key.
    pub key_pem: String,
}

fn tls_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

fn offset(t: jiff::Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl Ca {
    /// A new self-signed CA (`CN=kubernetes`, as kubeadm names its cluster CA), valid ten years
    /// from now.
    pub fn generate() -> std::io::Result<Ca> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        let now = jiff::Timestamp::now();
        params.not_before = offset(now - jiff::SignedDuration::from_secs(3600));
        params.not_after = offset(now + jiff::SignedDuration::from_hours(24 * 3650));
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key).map_err(tls_err)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// The CA given as PEM (certificate, key).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> std::io::Result<Ca> {
        let key = KeyPair::from_pem(key_pem).map_err(tls_err)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(tls_err)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
        })
    }

    /// The CA's key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    fn issuer(&self) -> std::io::Result<Issuer<'static, &KeyPair>> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(tls_err)
    }

    /// Signs `params` (its validity, subject, usages as given) for the public key of `key`.
    fn sign(
        &self,
        mut params: CertificateParams,
        key: &impl rcgen::PublicKeyData,
    ) -> std::io::Result<String> {
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(key, &self.issuer()?).map_err(tls_err)?;
        Ok(cert.pem())
    }

    /// A serving certificate for `127.0.0.1`, `::1` and `localhost` (the `kube-apiserver`
    /// certificate of a test cluster), valid one year.
    pub fn serving(&self) -> std::io::Result<Pair> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            SanType::DnsName("localhost".try_into().map_err(tls_err)?),
            SanType::DnsName("kubernetes".try_into().map_err(tls_err)?),
            SanType::DnsName("kubernetes.default.svc".try_into().map_err(tls_err)?),
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = jiff::Timestamp::now();
        params.not_before = offset(now - jiff::SignedDuration::from_secs(300));
        params.not_after = offset(now + jiff::SignedDuration::from_hours(24 * 365));
        Ok(Pair {
            cert_pem: self.sign(params, &key)?,
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate `CN=user, O=groups` valid from `not_before` to `not_after` (for an
    /// admin kubeconfig, or a test that needs a certificate the CSR path did not make).
    pub fn client(
        &self,
        user: &str,
        groups: &[&str],
        not_before: jiff::Timestamp,
        not_after: jiff::Timestamp,
    ) -> std::io::Result<Pair> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(user, groups);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        Ok(Pair {
            cert_pem: self.sign(params, &key)?,
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for the public key of the PEM CSR `request` with the CSR's subject
    /// and subjectAltNames, the given key usages (upstream's names: `digital signature`, `key encipherment`,
    /// `client auth`, `server auth`, ...) and validity, as the CSR signing controller does (the
    /// request's other extensions are not copied: the usages come from the CSR object's spec).
    pub fn sign_request(
        &self,
        request: &str,
        usages: &[String],
        not_before: jiff::Timestamp,
        not_after: jiff::Timestamp,
    ) -> Result<String, String> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(request)
            .map_err(|e| format!("unable to parse csr: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = csr.params.distinguished_name.clone();
        // upstream's authority copies the request's DNS, IP, email and URI SANs
        params.subject_alt_names = csr.params.subject_alt_names.clone();
        for u in usages {
            match u.as_str() {
                "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "client auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                other => return Err(format!("unsupported key usage: {other}")),
            }
        }
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        self.sign(params, &csr.public_key)
            .map_err(|e| e.to_string())
    }

    /// A TLS client presenting a certificate `CN=user, O=groups` of this CA (valid one year)
    /// and verifying the server's certificate against this CA and the name or address
    /// connected to: kube-apiserver's kubelet client with `--kubelet-certificate-authority`.
    pub fn verifying_client(
        &self,
        user: &str,
        groups: &[&str],
    ) -> std::io::Result<Arc<rustls::ClientConfig>> {
        let now = jiff::Timestamp::now();
        let pair = self.client(
            user,
            groups,
            now - jiff::SignedDuration::from_secs(300),
            now + jiff::SignedDuration::from_hours(24 * 365),
        )?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(tls_err)?;
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(tls_err)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).map_err(tls_err)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls_err)?;
        Ok(Arc::new(config))
    }

    /// The CA certificate's `notAfter` (a signed certificate never outlives it).
    pub fn not_after(&self) -> jiff::Timestamp {
        x509_parser::parse_x509_certificate(&self.cert_der)
            .ok()
            .and_then(|(_, c)| {
                jiff::Timestamp::from_second(c.validity().not_after.timestamp()).ok()
            })
            .unwrap_or(jiff::Timestamp::MAX)
    }

    /// The rustls server configuration: `serving` as the server's certificate, client
    /// certificates verified against this CA when offered (none is required: a bearer token
    /// authenticates too).
    pub fn server_config(&self, serving: &Pair) -> std::io::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).map_err(tls_err)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(tls_err)?;
        let chain =
            vec![CertificateDer::from_pem_slice(serving.cert_pem.as_bytes()).map_err(tls_err)?];
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(tls_err)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// `CN=user, O=group...`.
pub fn subject(user: &str, groups: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    dn.push(DnType::CommonName, user);
    dn
}
