//! httpGet probes (k/k `pkg/probe/http`): a GET from the node to the pod IP (or `host`), one
//! connection per attempt (no keep-alive), default headers `User-Agent: kube-probe/<major>.<minor>`
//! and `Accept: */*` unless the probe sets them (an empty value removes one), redirects to the
//! same host followed up to 10 times (any other redirect is a success with a warning), the body
//! read up to 10 KiB, success for 200-399, HTTPS without certificate verification.
//!
//! The request side (URL, headers, one GET) is shared with lifecycle hooks' `httpGet`
//! (`node::hooks`), as upstream's `pkg/probe/http` serves both.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, HTTPHeader};
use tokio::io::{AsyncRead, AsyncWrite};

use super::port::resolve_port;
use super::tcp::{join_host_port, os_error};
use super::Outcome;

/// Body bytes read from a response (upstream's `maxRespBodyLength`).
pub(crate) const MAX_BODY: usize = 10 * 1024;
/// Redirects followed before giving up (Go's http client default).
const MAX_REDIRECTS: usize = 10;

k8s_openapi::k8s_if_1_33! { const USER_AGENT: &str = "kube-probe/1.33"; }
k8s_openapi::k8s_if_1_34! { const USER_AGENT: &str = "kube-probe/1.34"; }
k8s_openapi::k8s_if_1_35! { const USER_AGENT: &str = "kube-probe/1.35"; }
k8s_openapi::k8s_if_1_36! { const USER_AGENT: &str = "kube-probe/1.36"; }
k8s_openapi::k8s_if_1_37! { const USER_AGENT: &str = "kube-probe/1.37"; }

/// `kube-probe/1.<minor>` for the Kubernetes version kubenode is built against (the
/// `k8s-openapi` feature).
pub fn user_agent() -> &'static str {
    USER_AGENT
}

/// The `User-Agent` of lifecycle hooks' requests (upstream's `kube-lifecycle/<major>.<minor>`).
pub(crate) fn lifecycle_user_agent() -> String {
    USER_AGENT.replace("kube-probe/", "kube-lifecycle/")
}

/// A probe URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}{}",
            join_host_port(&self.host, self.port),
            self.path
        )
    }
}

impl Url {
    /// Resolves a `Location` header against this URL.
    pub fn join(&self, location: &str) -> Option<Url> {
        if let Some((scheme, rest)) = location.split_once("://") {
            let https = match scheme.to_ascii_lowercase().as_str() {
                "http" => false,
                "https" => true,
                _ => return None,
            };
            return Some(authority_and_path(https, rest));
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Some(authority_and_path(self.https, rest));
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let path_only = self.path.split('?').next().unwrap_or("/");
            let dir = &path_only[..path_only.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Some(Url {
            path,
            ..self.clone()
        })
    }
}

fn authority_and_path(https: bool, rest: &str) -> Url {
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').unwrap_or((v6, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        (h.to_string(), port.unwrap_or(default_port))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().unwrap_or(default_port)),
            None => (authority.to_string(), default_port),
        }
    };
    Url {
        https,
        host,
        port,
        path,
    }
}

/// The request headers: the probe's own, then the defaults it did not name; a header the
/// probe set to an empty value is left out.
pub(crate) fn request_headers(custom: &[HTTPHeader]) -> Vec<(String, String)> {
    headers_with_agent(custom, user_agent())
}

/// [`request_headers`] with another default `User-Agent` (lifecycle hooks send
/// `kube-lifecycle/<major>.<minor>`).
pub(crate) fn headers_with_agent(custom: &[HTTPHeader], agent: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = custom
        .iter()
        .filter(|h| !h.value.is_empty())
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let named = |n: &str| custom.iter().any(|h| h.name.eq_ignore_ascii_case(n));
    if !named("User-Agent") {
        out.push(("User-Agent".into(), agent.into()));
    }
    if !named("Accept") {
        out.push(("Accept".into(), "*/*".into()));
    }
    out
}

/// Builds the probe's URL from the action, the container (named ports) and the pod IP.
pub(crate) fn probe_url(
    action: &HTTPGetAction,
    container: &Container,
    pod_ip: &str,
) -> Result<Url, String> {
    let port = resolve_port(&action.port, container)?;
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    let path = action.path.clone().unwrap_or_default();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    Ok(Url {
        https: action
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https")),
        host,
        port,
        path,
    })
}

pub(super) async fn probe(
    action: &HTTPGetAction,
    container: &Container,
    pod_ip: &str,
    timeout: Duration,
) -> Outcome {
    let url = match probe_url(action, container, pod_ip) {
        Ok(u) => u,
        Err(e) => return Outcome::Error(e),
    };
    let headers = request_headers(action.http_headers.as_deref().unwrap_or_default());
    let first = url.to_string();
    match tokio::time::timeout(timeout, get_following(url, &headers)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!(
            "Get \"{first}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// GETs `url`, following same-host redirects, and judges the final response.
async fn get_following(url: Url, headers: &[(String, String)]) -> Outcome {
    let original_host = url.host.clone();
    let mut url = url;
    let mut hops = 0;
    loop {
        let (status, location, body) = match get(&url, headers).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failure(format!("Get \"{url}\": {e}")),
        };
        let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        if let (true, Some(next)) = (redirect, location.and_then(|l| url.join(&l))) {
            if next.host == original_host {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Outcome::Failure(format!(
                        "Get \"{next}\": stopped after {MAX_REDIRECTS} redirects"
                    ));
                }
                url = next;
                continue;
            }
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let code = status.as_u16();
        return if (200..300).contains(&code) {
            Outcome::Success(body)
        } else if (300..400).contains(&code) {
            Outcome::Warning(format!("Probe terminated redirects, Response body: {body}"))
        } else {
            Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
}

pub(crate) type Response = (StatusCode, Option<String>, Vec<u8>);

/// Why a GET got no response. Each variant prints the text probes and hooks have always
/// shown (Go's wording where upstream has one), so events and statuses read the same.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The TCP connection failed.
    #[error("dial tcp {addr}: connect: {}", os_error(.source))]
    Dial {
        /// `host:port` as dialled.
        addr: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// The probe TLS configuration could not be built.
    #[error("{0}")]
    TlsConfig(String),
    /// The host is not a valid TLS server name.
    #[error("invalid TLS server name {host}: {source}")]
    ServerName {
        /// The URL's host.
        host: String,
        /// Why rustls refused it.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// The TLS handshake failed (a hook then retries over plain HTTP).
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// A header of the action is not a valid HTTP header.
    #[error("invalid header {name}: {value:?}")]
    Header {
        /// The header's name.
        name: String,
        /// Its value.
        value: String,
    },
    /// The request could not be built.
    #[error("{0}")]
    Request(String),
    /// The HTTP exchange failed before a response arrived.
    #[error("{0}")]
    Http(hyper::Error),
    /// The connection failed while the body was read.
    #[error("reading the body: {0}")]
    Body(hyper::Error),
}

/// One GET on a new connection: status, `Location`, the first [`MAX_BODY`] bytes of the body.
pub(crate) async fn get(url: &Url, headers: &[(String, String)]) -> Result<Response, HttpError> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| HttpError::Dial {
            addr: join_host_port(&url.host, url.port),
            source,
        })?;
    if !url.https {
        return exchange(tcp, url, headers).await;
    }
    let connector = super::tls::connector().map_err(HttpError::TlsConfig)?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|source| {
        HttpError::ServerName {
            host: url.host.clone(),
            source,
        }
    })?;
    let tls = connector.connect(name, tcp).await.map_err(HttpError::Tls)?;
    exchange(tls, url, headers).await
}

/// One request and response on `stream`. The connection is driven in this task (no spawned
/// task per probe) and dropped once the response body is read or capped.
async fn exchange<S>(
    stream: S,
    url: &Url,
    headers: &[(String, String)],
) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(HttpError::Http)?;
    let mut conn = std::pin::pin!(conn);
    let mut conn_done = false;
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(HttpError::Header {
                name: name.clone(),
                value: value.clone(),
            });
        };
        map.append(n, v);
    }
    if !map.contains_key(hyper::header::HOST) {
        let host = join_host_port(&url.host, url.port);
        map.insert(
            hyper::header::HOST,
            HeaderValue::from_str(&host).map_err(|e| HttpError::Request(e.to_string()))?,
        );
    }
    map.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    let mut req = hyper::Request::get(url.path.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| HttpError::Request(e.to_string()))?;
    *req.headers_mut() = map;
    let mut send = std::pin::pin!(sender.send_request(req));
    let resp = loop {
        tokio::select! {
            biased;
            r = &mut send => break r.map_err(HttpError::Http)?,
            r = &mut conn, if !conn_done => {
                conn_done = true;
                r.map_err(HttpError::Http)?;
            }
        }
    };
    let status = resp.status();
    let location = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut body = resp.into_body();
    let mut data = Vec::new();
    while data.len() < MAX_BODY {
        let frame = tokio::select! {
            biased;
            f = body.frame() => f,
            r = &mut conn, if !conn_done => {
                conn_done = true;
                r.map_err(HttpError::Body)?;
                continue;
            }
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk);
                }
            }
            Some(Err(e)) => return Err(HttpError::Body(e)),
            None => break,
        }
    }
    data.truncate(MAX_BODY);
    Ok((status, location, data))
}

#[cfg(test)]
mod tests {
    use super::HttpError;

    #[test]
    fn errors_print_the_texts_events_and_statuses_show() {
        let refused = HttpError::Dial {
            addr: "[fd00::1]:80".into(),
            source: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(
            refused.to_string(),
            "dial tcp [fd00::1]:80: connect: connection refused"
        );
        let tls = HttpError::Tls(std::io::Error::other("received corrupt message"));
        assert_eq!(tls.to_string(), "tls: received corrupt message");
        let header = HttpError::Header {
            name: "X-A".into(),
            value: "b\n".into(),
        };
        assert_eq!(header.to_string(), "invalid header X-A: \"b\\n\"");
    }
}
