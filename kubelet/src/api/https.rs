//! The kubelet's HTTPS server (upstream's port 10250): TLS with the [`ServingCert`], every
//! request authenticated and authorized by [`Auth`] before it is routed. Routes: `/healthz`,
//! `/pods` and `/containerLogs/{ns}/{pod}/{container}` (the shared router), and here
//! `/runningpods/`, `/logs/` (the node's log directory, as upstream's `http.FileServer` of
//! `/var/log/`), `/configz`, `POST /run/...`, and the streams of [`super::stream`] (`/exec`,
//! `/attach`, `/portForward`); `/stats/summary`, `/metrics/resource` and `/metrics` are the
//! shared router's (the stats collector and the metrics registry).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::auth::{Auth, RequestClientCert};
use super::router::{canonical_path, handle, json, text, Body, Listener};
use super::server::ServeLimits;
use super::tls::ServingCert;
use super::NodeView;

/// The node's log directory `/logs/` serves (upstream's `/var/log/`).
pub const NODE_LOG_DIR: &str = "/var/log";

/// What the HTTPS server serves besides the [`NodeView`].
#[derive(Debug)]
pub struct HttpsServer {
    /// Who may do what.
    pub auth: Auth,
    /// The serving certificate (replaced on rotation).
    pub cert: Arc<ServingCert>,
    /// The directory of `/logs/`.
    pub node_log_dir: PathBuf,
    /// `/configz`'s `kubeletconfig`.
    pub configz: serde_json::Value,
    /// A streaming session (`/exec`, `/attach`, `/portForward`) with no message either way
    /// for this long is closed (upstream's `streamingConnectionIdleTimeout`, default
    /// [`super::stream::DEFAULT_IDLE_TIMEOUT`]); also the limit of a `/run` command.
    pub stream_idle_timeout: Duration,
    /// `tlsMinVersion`.
    pub tls_min_version: crate::config::server::TlsVersion,
    /// `tlsCipherSuites` (checked; empty: rustls's defaults).
    pub tls_cipher_suites: Vec<String>,
}

/// Binds `addr` and serves HTTPS until the task is aborted: the bound address and the task.
/// The TLS handshake and the request head together must arrive within
/// `limits.header_read_timeout`; at most `limits.max_connections` connections are served at
/// once (the others wait in the listen backlog).
pub async fn serve_https(
    addr: SocketAddr,
    view: Arc<dyn NodeView>,
    server: Arc<HttpsServer>,
    limits: ServeLimits,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let (provider, versions) =
        super::tls::server_crypto(server.tls_min_version, &server.tls_cipher_suites)
            .map_err(std::io::Error::other)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(std::io::Error::other)?
        .with_client_cert_verifier(RequestClientCert::new())
        .with_cert_resolver(server.cert.clone());
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "kubelet HTTPS server listening; {}", server.auth.describe());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // `clientCAFile` looked at as the serving certificate's files (upstream's
    // `DynamicFileCAContent`), for as long as the server runs.
    let ca_watch = server.auth.client_ca_file().map(|file| {
        let s = server.clone();
        tokio::spawn(super::tls::watch(
            vec![file.to_path_buf()],
            "clientCAFile",
            "client CA",
            move |bytes| {
                s.auth
                    .set_client_ca(&bytes[0])
                    .map_err(crate::cluster::certificate::CertError::Invalid)
            },
        ))
    });
    let task = tokio::spawn(async move {
        let _ca_watch = ca_watch.map(AbortOnDrop);
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the HTTPS port");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // as Go's net/http (TCP_NODELAY on every connection): stream frames and small
            // responses go out at once
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY on an HTTPS connection");
            }
            let acceptor = acceptor.clone();
            let view = view.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let _slot = permit;
                let tls =
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let peer: Arc<Vec<CertificateDer<'static>>> = Arc::new(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default(),
                );
                let service = hyper::service::service_fn(move |req| {
                    serve(view.clone(), server.clone(), peer.clone(), req)
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(error = %e, "HTTPS connection ended with an error");
                }
            });
        }
    });
    Ok((bound, task))
}

/// Aborts its task when dropped (with the server's task that holds it).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(
    view: Arc<dyn NodeView>,
    server: Arc<HttpsServer>,
    peer: Arc<Vec<CertificateDer<'static>>>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Before anything else, as Go's `http.ServeMux` in front of upstream's filters: a path
    // that is not clean is redirected to its clean form, so that the path authorized below is
    // the path routed below.
    let path = match canonical_path(req.method(), req.uri()) {
        Ok(p) => p.to_string(),
        Err(answer) => return Ok(answer),
    };
    let Some(user) = server.auth.authenticate(&peer, req.headers_mut()).await else {
        return Ok(text(StatusCode::UNAUTHORIZED, "Unauthorized".into()));
    };
    if let Err(r) = server.auth.authorize(&user, req.method(), &path).await {
        return Ok(text(r.status, r.body));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = match (req.method(), segments.as_slice()) {
        (&Method::GET, ["configz"]) => {
            json(&serde_json::json!({ "kubeletconfig": server.configz }))
        }
        (&Method::GET, ["runningpods", ..]) => json(&running_pods(view.as_ref())),
        (&Method::GET | &Method::POST, ["exec", rest @ ..]) => {
            return Ok(
                super::stream::serve_exec(view, rest, req, server.stream_idle_timeout).await,
            );
        }
        (&Method::GET | &Method::POST, ["attach", rest @ ..]) => {
            return Ok(super::stream::attach::serve_attach(
                view,
                rest,
                req,
                server.stream_idle_timeout,
            )
            .await);
        }
        (&Method::POST, ["run", rest @ ..]) => {
            let query = req.uri().query().unwrap_or("").to_string();
            run(view, rest, &query, server.stream_idle_timeout).await
        }
        (&Method::GET | &Method::POST, ["portForward", rest @ ..]) => {
            return Ok(super::stream::serve_port_forward(
                view,
                rest,
                req,
                server.stream_idle_timeout,
            )
            .await);
        }
        (&Method::GET, ["logs", ..]) => {
            let raw = path.strip_prefix("/logs").unwrap_or("");
            node_log(&server.node_log_dir, raw).await
        }
        // The shared router reads the same path: `req`'s, found clean above.
        _ => return handle(view, Listener::Https, req).await,
    };
    Ok(answer)
}

/// `POST /run/{ns}/{pod}[/{uid}]/{container}?cmd=...` (upstream's `getRun`): the command (the
/// `cmd` value split at each space, as upstream) runs in the container and its output comes
/// back, stdout then stderr, as upstream's `RunInContainer` (typed `application/json`, as
/// upstream's `writeJSONResponse`, whatever the output is; no body for no output). An unknown
/// pod is 404 `pod does not exist`; a failure, a non-zero exit included (`command '<cmd>'
/// exited with <code>: <stderr>`, the CRI client's text), is 500 with its message. Upstream
/// gives the command no time limit; here it is killed after `limit` (the streaming idle
/// timeout).
async fn run(
    view: Arc<dyn NodeView>,
    segments: &[&str],
    query: &str,
    limit: Duration,
) -> Response<Body> {
    let (ns, pod, container) = match segments {
        [ns, pod, container] | [ns, pod, _, container] => (*ns, *pod, *container),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
    };
    let exists = view.pods().iter().any(|p| {
        p.metadata.namespace.as_deref().unwrap_or("default") == ns
            && p.metadata.name.as_deref() == Some(pod)
    });
    if !exists {
        return text(StatusCode::NOT_FOUND, "pod does not exist".into());
    }
    let cmd = super::stream::query_value(query, "cmd").unwrap_or_default();
    let command: Vec<String> = cmd.split(' ').map(str::to_string).collect();
    let request = super::ExecRequest {
        target: super::ContainerRef {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: Some(container.to_string()),
        },
        command: command.clone(),
        timeout: limit,
    };
    match view.exec(request).await {
        Ok(out) if out.exit_code == 0 => {
            let mut data = out.stdout.into_bytes();
            data.extend_from_slice(out.stderr.as_bytes());
            if data.is_empty() {
                return text(StatusCode::OK, String::new());
            }
            let mut resp = Response::new(http_body_util::Full::new(Bytes::from(data)).boxed());
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Ok(out) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "command '{}' exited with {}: {}",
                command.join(" "),
                out.exit_code,
                out.stderr
            ),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `/runningpods/`: a PodList of the pods with a running container, each with its name,
/// namespace, UID and containers' names and images only (upstream lists the runtime's pods so).
fn running_pods(view: &dyn NodeView) -> serde_json::Value {
    let items: Vec<serde_json::Value> = view
        .pods()
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                })
        })
        .map(|p| {
            let containers: Vec<serde_json::Value> = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                .map(|c| serde_json::json!({"name": c.name, "image": c.image, "resources": {}}))
                .collect();
            serde_json::json!({
                "metadata": {
                    "name": p.metadata.name,
                    "namespace": p.metadata.namespace,
                    "uid": p.metadata.uid,
                    "creationTimestamp": null,
                },
                "spec": {"containers": containers},
                "status": {},
            })
        })
        .collect();
    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

/// Why a `/logs/` path is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogPathError {
    /// `..`, `.`, an encoded slash or a bad escape: 400.
    Invalid,
    /// Not there, or it leaves the directory through a symlink: 404.
    NotFound,
}

/// Resolves the raw (still escaped) path after `/logs` under `root`: refuses `..` and `.`
/// segments, encoded slashes (`%2F`, `%5C`) and NUL, and anything whose real path (symlinks
/// followed) is not under `root`'s real path.
pub(crate) fn resolve_log_path(root: &Path, raw: &str) -> Result<PathBuf, LogPathError> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return Err(LogPathError::Invalid);
    }
    let mut rel = PathBuf::new();
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(seg).ok_or(LogPathError::Invalid)?;
        if seg == ".."
            || seg == "."
            || seg.contains('/')
            || seg.contains('\\')
            || seg.contains('\0')
        {
            return Err(LogPathError::Invalid);
        }
        rel.push(seg);
    }
    let real_root = root.canonicalize().map_err(|_| LogPathError::NotFound)?;
    let real = real_root
        .join(&rel)
        .canonicalize()
        .map_err(|_| LogPathError::NotFound)?;
    if !real.starts_with(&real_root) {
        return Err(LogPathError::NotFound);
    }
    Ok(real)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// `/logs/<path>`: a directory listing (as Go's `http.FileServer`, names sorted, directories
/// with a trailing `/`) or the file's content, streamed.
async fn node_log(root: &Path, raw: &str) -> Response<Body> {
    let path = match resolve_log_path(root, raw) {
        Ok(p) => p,
        Err(LogPathError::Invalid) => {
            return text(StatusCode::BAD_REQUEST, "invalid URL path\n".into())
        }
        Err(LogPathError::NotFound) => {
            return text(StatusCode::NOT_FOUND, "404 page not found\n".into())
        }
    };
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        Err(_) => return text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
    };
    if meta.is_dir() {
        if !raw.ends_with('/') {
            let mut resp = text(StatusCode::MOVED_PERMANENTLY, String::new());
            // `/logs`: to `/logs/` (Go's `ServeMux` for the `/logs/` pattern); a directory
            // below it: relative, as Go's `http.FileServer`
            let location = match raw.rsplit('/').next().unwrap_or_default() {
                "" => "/logs/".to_string(),
                base => format!("{base}/"),
            };
            if let Ok(v) = hyper::header::HeaderValue::from_str(&location) {
                resp.headers_mut().insert(hyper::header::LOCATION, v);
            }
            return resp;
        }
        let mut names: Vec<String> = match std::fs::read_dir(&path) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| {
                    let mut n = e.file_name().to_string_lossy().into_owned();
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        n.push('/');
                    }
                    n
                })
                .collect(),
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        };
        names.sort();
        let mut body = String::from(
            "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n",
        );
        for n in names {
            let e = html_escape(&n);
            body.push_str(&format!("<a href=\"{e}\">{e}</a>\n"));
        }
        body.push_str("</pre>\n");
        let mut resp = text(StatusCode::OK, body);
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return resp;
    }
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let stream = futures::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(buf))),
                    Some(file),
                ))
            }
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("log");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("syslog"), "x").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("syslog"), root.join("in")).unwrap();
        let real = root.canonicalize().unwrap();
        assert_eq!(resolve_log_path(&root, "/").unwrap(), real);
        assert_eq!(
            resolve_log_path(&root, "/syslog").unwrap(),
            real.join("syslog")
        );
        assert_eq!(resolve_log_path(&root, "/sub/").unwrap(), real.join("sub"));
        assert_eq!(resolve_log_path(&root, "/in").unwrap(), real.join("syslog"));
        for bad in [
            "/../secret",
            "/sub/../../secret",
            "/%2e%2e/secret",
            "/..%2fsecret",
            "/..%2Fsecret",
            "/sub%5c..%5c..%5csecret",
            "/./syslog",
            "/syslog%00",
            "/%zz",
        ] {
            assert_eq!(
                resolve_log_path(&root, bad),
                Err(LogPathError::Invalid),
                "{bad}"
            );
        }
        assert_eq!(resolve_log_path(&root, "/out"), Err(LogPathError::NotFound));
        assert_eq!(
            resolve_log_path(&root, "/nope"),
            Err(LogPathError::NotFound)
        );
    }
}
