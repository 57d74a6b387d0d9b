//! `pods/<name>/exec`, `pods/<name>/attach` and `pods/<name>/portforward` as kube-apiserver
//! serves them to a WebSocket
//! client (kubectl 1.30 and later): the pod's node is looked up as for `pods/log`
//! ([`super::podlogs`]), the `PodExecOptions` of the query become the kubelet's
//! (`command` repeated, `input`/`output`/`error`/`tty` = `1`), and the upgrade request goes to
//! `https://<node>:<port>/exec/<ns>/<pod>/<container>` with the API server's kubelet client
//! certificate. The kubelet's `101 Switching Protocols` (its subprotocol and accept key) goes
//! back to the client and the two upgraded connections are then copied both ways. (Upstream's
//! API server translates WebSocket to SPDY/3.1 for the kubelet; kubenode's kubelet speaks
//! WebSocket itself, so the stand-in passes the frames through.) A request that is not a
//! WebSocket upgrade is 400 `Upgrade request required`, as upstream's.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::Response;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use super::handler::Shared;
use super::podlogs::{kubelet_target, KubeletClient};
use super::status::ApiError;
use super::Body;

/// The WebSocket headers passed to the kubelet and back.
const REQUEST_HEADERS: [hyper::header::HeaderName; 3] = [
    hyper::header::SEC_WEBSOCKET_KEY,
    hyper::header::SEC_WEBSOCKET_VERSION,
    hyper::header::SEC_WEBSOCKET_PROTOCOL,
];

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

/// `key=value` pairs of a raw query, decoded (`+` is a space), repeated keys kept.
fn query_pairs(raw: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    match b
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
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

/// The kubelet's query for `PodExecOptions`/`PodAttachOptions` (upstream's `streamParams`).
fn kubelet_query(pairs: &[(String, String)]) -> String {
    let on = |v: &str| matches!(v, "true" | "1");
    let mut q = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "stdin" if on(v) => q.push("input=1".to_string()),
            "stdout" if on(v) => q.push("output=1".to_string()),
            "stderr" if on(v) => q.push("error=1".to_string()),
            "tty" if on(v) => q.push("tty=1".to_string()),
            "command" => q.push(format!("command={}", escape(v))),
            _ => {}
        }
    }
    q.join("&")
}

/// A streaming request to the API server: the pod, the subresource, the raw query and the
/// headers.
#[derive(Debug, Clone, Copy)]
pub struct StreamRequest<'a> {
    /// The pod's namespace.
    pub ns: &'a str,
    /// The pod's name.
    pub name: &'a str,
    /// `exec`, `attach` or `portforward`.
    pub sub: &'a str,
    /// The query, still escaped (repeated keys kept).
    pub raw_query: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
}

/// Serves `pods/<name>/<sub>` (`exec`, `attach` or `portforward`: `ports` become the
/// kubelet's `port` on `/portForward/<ns>/<pod>`) through the node's kubelet: `raw_query` is
/// the request's, `headers` its headers and `upgrade` its connection once upgraded.
pub async fn proxy(
    shared: &Shared,
    client: &KubeletClient,
    req: StreamRequest<'_>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<Body> {
    let StreamRequest {
        ns,
        name,
        sub,
        raw_query,
        headers,
    } = req;
    let Some(upgrade) = upgrade else {
        return error_reply(ApiError::bad_request("Upgrade request required"));
    };
    let pairs = query_pairs(raw_query);
    let mut query = super::handler::Query::new();
    if let Some((_, c)) = pairs.iter().find(|(k, _)| k == "container") {
        query.insert("container".into(), c.clone());
    }
    if sub == "portforward" {
        // upstream's PodPortForwardOptions: `ports`, passed on as the kubelet's `port`
        let ports: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "ports")
            .map(|(_, v)| format!("port={}", escape(v)))
            .collect();
        let host = match kubelet_target(shared, ns, name, &query) {
            Ok(Some((host, _))) => host,
            Ok(None) => {
                return error_reply(ApiError::bad_request(format!(
                    "pod {name} does not have a host assigned"
                )))
            }
            Err(e) => return error_reply(e),
        };
        let path = format!("/portForward/{ns}/{name}?{}", ports.join("&"));
        return relay(client, &host, &path, headers, upgrade).await;
    }
    let (host, container) = match kubelet_target(shared, ns, name, &query) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return error_reply(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )))
        }
        Err(e) => return error_reply(e),
    };
    let path = format!("/{sub}/{ns}/{name}/{container}?{}", kubelet_query(&pairs));
    relay(client, &host, &path, headers, upgrade).await
}

/// Sends the upgrade to the kubelet and, once both sides switched, copies both ways.
async fn relay(
    client: &KubeletClient,
    host: &str,
    path: &str,
    headers: &HeaderMap,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    match connect(client, host, path, headers).await {
        Ok((resp, None)) => resp,
        Ok((resp, Some(kubelet))) => {
            tokio::spawn(async move {
                let (Ok(kubelet), Ok(user)) = (kubelet.await, upgrade.await) else {
                    return;
                };
                let mut kubelet = TokioIo::new(kubelet);
                let mut user = TokioIo::new(user);
                let _ = tokio::io::copy_bidirectional(&mut user, &mut kubelet).await;
            });
            resp
        }
        Err(e) => error_reply(ApiError {
            code: 500,
            reason: "InternalError",
            message: format!("error dialing backend: {e}"),
            details: None,
        }),
    }
}

type Upgrading = hyper::upgrade::OnUpgrade;

/// Sends the upgrade request to the kubelet: the answer for the client, and the kubelet's
/// connection to be upgraded when it answered 101.
async fn connect(
    client: &KubeletClient,
    host: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<(Response<Body>, Option<Upgrading>), Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tokio::net::TcpStream::connect(host).await?;
    let ip = host
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(host);
    let tls = tokio_rustls::TlsConnector::from(client.tls.clone())
        .connect(ServerName::try_from(ip.to_string())?, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = hyper::Request::get(path)
        .header("Host", host)
        .header("User-Agent", "kn-apiserver")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "websocket");
    for h in &REQUEST_HEADERS {
        for v in headers.get_all(h) {
            req = req.header(h, v);
        }
    }
    let mut resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for h in [
        hyper::header::CONNECTION,
        hyper::header::UPGRADE,
        hyper::header::SEC_WEBSOCKET_ACCEPT,
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        hyper::header::CONTENT_TYPE,
    ] {
        if let Some(v) = resp.headers().get(&h) {
            out = out.header(h, v);
        }
    }
    if status == hyper::StatusCode::SWITCHING_PROTOCOLS {
        let upgrading = hyper::upgrade::on(&mut resp);
        return Ok((out.body(Empty::new().boxed_unsync())?, Some(upgrading)));
    }
    // the kubelet's refusal, bounded
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !out
        .headers_ref()
        .is_some_and(|h| h.contains_key(hyper::header::CONTENT_TYPE))
    {
        out = out.header(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    Ok((
        out.body(http_body_util::Full::new(body).boxed_unsync())?,
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_become_the_kubelets_query() {
        let pairs = query_pairs(
            "command=sh&command=-c&command=exit+3&container=main&stdin=true&stdout=true&stderr=false&tty=false",
        );
        assert_eq!(
            kubelet_query(&pairs),
            "command=sh&command=-c&command=exit%203&input=1&output=1"
        );
    }
}
