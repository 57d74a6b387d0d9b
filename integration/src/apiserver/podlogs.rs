//! `GET /api/v1/namespaces/<ns>/pods/<name>/log`, as kube-apiserver serves it: the pod's node
//! is looked up, and the request goes to that node's kubelet,
//! `GET https://<address>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<container>`
//! with the log options of the query, authenticated with the API server's kubelet client
//! certificate (`CN=kube-apiserver-kubelet-client, O=system:masters`, signed by the cluster
//! CA: kubeadm's `apiserver-kubelet-client.crt`). The address is the first of the Node's
//! `InternalIP`, `ExternalIP`, `Hostname` (kubeadm's `--kubelet-preferred-address-types`); the
//! kubelet's serving certificate is not verified (no `--kubelet-certificate-authority`, kubeadm's
//! default). The kubelet's answer, status and body, is streamed back. HTTPS mode only.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::Response;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::Value;

use super::handler::{Query, Shared};
use super::resources::RESOURCES;
use super::status::ApiError;
use super::tls::Ca;
use super::Body;

/// The API server's TLS client for kubelets.
#[derive(Debug, Clone)]
pub struct KubeletClient {
    pub(super) tls: Arc<rustls::ClientConfig>,
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl KubeletClient {
    /// A client presenting a `kube-apiserver-kubelet-client` certificate of `ca` (valid one
    /// year).
    pub fn new(ca: &Ca) -> std::io::Result<KubeletClient> {
        let now = jiff::Timestamp::now();
        let pair = ca.client(
            "kube-apiserver-kubelet-client",
            &["system:masters"],
            now - jiff::SignedDuration::from_secs(300),
            now + jiff::SignedDuration::from_hours(24 * 365),
        )?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())
            .map_err(std::io::Error::other)?;
        let provider = Arc::new(go_client_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_client_auth_cert(chain, key)
            .map_err(std::io::Error::other)?;
        Ok(KubeletClient { tls: Arc::new(tls) })
    }

    /// The TLS client configuration (the certificate, no server verification), for tests
    /// that talk to a kubelet as the API server does.
    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }
}

/// rustls' aws-lc-rs provider with its cipher suites in the order Go's `crypto/tls` client
/// (the API server's) offers them on a CPU with AES instructions: AES-128-GCM first, then
/// ChaCha20-Poly1305, then AES-256-GCM (rustls' own order puts AES-256 first). The kubelet's
/// rustls server takes the client's order, so this is the suite a kubelet serves the real API
/// server with.
fn go_client_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as S;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| match s.suite() {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        S::TLS13_AES_256_GCM_SHA384 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
        _ => 5,
    };
    // a stable sort: ECDSA before RSA within a rank, as both orders have it
    provider.cipher_suites.sort_by_key(rank);
    provider
}

fn get(shared: &Shared, plural: &str, ns: &str, name: &str) -> Result<Value, ApiError> {
    let res = RESOURCES
        .iter()
        .position(|r| r.plural == plural)
        .ok_or_else(ApiError::no_route)?;
    shared
        .lock()
        .get(&(res, ns.to_string(), name.to_string()))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&RESOURCES[res], name))
}

/// The kubelet's URL path and query for the log of pod `ns/name` (`query`: the request's).
fn location(
    shared: &Shared,
    ns: &str,
    name: &str,
    query: &Query,
) -> Result<Option<(String, String)>, ApiError> {
    let Some((host, container)) = kubelet_target(shared, ns, name, query)? else {
        return Ok(None);
    };
    let q: Vec<String> = query
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "follow"
                    | "previous"
                    | "timestamps"
                    | "sinceSeconds"
                    | "sinceTime"
                    | "tailLines"
                    | "limitBytes"
            )
        })
        .map(|(k, v)| format!("{k}={}", escape(v)))
        .collect();
    let mut path = format!("/containerLogs/{ns}/{name}/{container}");
    if !q.is_empty() {
        path.push('?');
        path.push_str(&q.join("&"));
    }
    Ok(Some((host, path)))
}

/// The kubelet (`host:port`) of pod `ns/name` and the container a request means (`query`'s
/// `container`, or the pod's only one); `None` while the pod has no node.
pub(super) fn kubelet_target(
    shared: &Shared,
    ns: &str,
    name: &str,
    query: &Query,
) -> Result<Option<(String, String)>, ApiError> {
    let pod = get(shared, "pods", ns, name)?;
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let wanted = query.get("container").cloned();
    let container = match wanted {
        Some(c) => c,
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        // upstream: a pod not yet scheduled has no log (an empty answer)
        return Ok(None);
    };
    let node = get(shared, "nodes", "", node_name)?;
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a["type"] == *t)
                .and_then(|a| a["address"].as_str())
        })
        .ok_or_else(|| {
            ApiError::bad_request("no preferred addresses found; known addresses: []")
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap_or(10250);
    let host = if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    Ok(Some((host, container)))
}

fn escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error_reply(e: ApiError) -> Response<Body> {
    Response::builder()
        .status(e.code)
        .header("Content-Type", "application/json")
        .body(
            http_body_util::Full::new(Bytes::from(
                serde_json::to_vec(&e.to_status()).unwrap_or_default(),
            ))
            .boxed_unsync(),
        )
        .expect("valid response")
}

/// Serves `pods/<name>/log` through the node's kubelet.
pub async fn proxy(
    shared: &Shared,
    client: &KubeletClient,
    ns: &str,
    name: &str,
    query: &Query,
) -> Response<Body> {
    let (host, path) = match location(shared, ns, name, query) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Response::builder()
                .status(200)
                .header("Content-Type", "text/plain")
                .body(Empty::new().boxed_unsync())
                .expect("valid response")
        }
        Err(e) => return error_reply(e),
    };
    match fetch(client, &host, &path).await {
        Ok(resp) => resp,
        Err(e) => error_reply(ApiError {
            code: 500,
            reason: "InternalError",
            message: format!("Get \"https://{host}{path}\": {e}"),
            details: None,
        }),
    }
}

async fn fetch(
    client: &KubeletClient,
    host: &str,
    path: &str,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tokio::net::TcpStream::connect(host).await?;
    let ip = host
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(host);
    let server_name = ServerName::try_from(ip.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(client.tls.clone())
        .connect(server_name, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(path)
        .header("Host", host)
        .header("User-Agent", "kn-apiserver")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(hyper::header::HeaderValue::from_static("text/plain"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let mut body = resp.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Ok(Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))?)
}

#[cfg(test)]
mod tests {
    /// The stand-in offers AES-128-GCM first, as Go's client on AES hardware; every suite of
    /// rustls' provider is still offered.
    #[test]
    fn the_kubelet_client_offers_suites_in_gos_order() {
        use rustls::CipherSuite as S;
        let all = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
        let ours: Vec<S> = super::go_client_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            ours[..3],
            [
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS13_AES_256_GCM_SHA384
            ]
        );
        assert_eq!(ours.len(), all.len());
    }
}
