//! Lifecycle hooks' HTTP action (`preStop.httpGet`): a GET from the node to the pod, as the
//! kubelet sends it (k/k pkg/kubelet/lifecycle/handlers.go). The exec action runs through the
//! runtime.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction};

use crate::prober::http::{get, headers_with_agent, lifecycle_user_agent, probe_url, HttpError};

/// What a hook's GET came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResponse {
    /// The server answered (any status: upstream's hook runner does not judge it).
    Answered(u16),
    /// An `HTTPS` hook whose TLS handshake failed was answered over plain HTTP instead, as
    /// upstream falls back (with a `LifecycleHTTPFallback` warning event).
    FellBackToHttp(u16),
}

/// Sends the hook's GET to `pod_ip` (or the action's own `host`) within `timeout`, as the
/// kubelet's hook runner does (k/k `pkg/kubelet/lifecycle/handlers.go`): headers as probes set
/// them with `User-Agent: kube-lifecycle/<major>.<minor>`, HTTPS without certificate
/// verification, and only a failed request is an error; the response's status is not judged.
pub async fn http_get(
    action: &HTTPGetAction,
    container: &Container,
    pod_ip: &str,
    timeout: Duration,
) -> Result<HookResponse, String> {
    let url = probe_url(action, container, pod_ip)?;
    let headers = headers_with_agent(
        action.http_headers.as_deref().unwrap_or_default(),
        &lifecycle_user_agent(),
    );
    let attempt = async {
        match get(&url, &headers).await {
            Ok((status, _, _)) => Ok(HookResponse::Answered(status.as_u16())),
            Err(e @ HttpError::Tls(_)) if url.https => {
                let mut plain = url.clone();
                plain.https = false;
                let plain_headers: Vec<_> = headers
                    .iter()
                    .filter(|(n, _)| !n.eq_ignore_ascii_case("authorization"))
                    .cloned()
                    .collect();
                match get(&plain, &plain_headers).await {
                    Ok((status, _, _)) => Ok(HookResponse::FellBackToHttp(status.as_u16())),
                    Err(_) => Err(format!("Get \"{url}\": {e}")),
                }
            }
            Err(e) => Err(format!("Get \"{url}\": {e}")),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("Get \"{url}\": timed out after {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ContainerPort;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn container() -> Container {
        Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn get_reaches_the_server_with_path_and_headers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let action = HTTPGetAction {
            path: Some("/shutdown".into()),
            port: IntOrString::Int(i32::from(port)),
            http_headers: Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
                name: "X-Why".into(),
                value: "drain".into(),
            }]),
            ..Default::default()
        };
        let answered = http_get(&action, &container(), "127.0.0.1", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            answered,
            HookResponse::Answered(500),
            "the status is not judged"
        );
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /shutdown HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("x-why: drain"), "{request}");
        assert!(lower.contains("user-agent: kube-lifecycle/1."), "{request}");
    }

    #[tokio::test]
    async fn https_hook_falls_back_to_plain_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            // The TLS ClientHello, answered in plain HTTP; then the plain retry.
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                requests.push(buf[..n].to_vec());
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
            requests
        });
        let action = HTTPGetAction {
            path: Some("/drain".into()),
            port: IntOrString::Int(i32::from(port)),
            scheme: Some("HTTPS".into()),
            ..Default::default()
        };
        let answered = http_get(&action, &container(), "127.0.0.1", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answered, HookResponse::FellBackToHttp(204));
        let requests = server.await.unwrap();
        assert_eq!(requests[0][0], 0x16, "first a TLS handshake record");
        assert!(requests[1].starts_with(b"GET /drain HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let action = HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        };
        let err = http_get(&action, &container(), "127.0.0.1", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("connection refused"), "{err}");
    }
}
