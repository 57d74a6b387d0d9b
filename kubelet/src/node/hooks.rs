//! Lifecycle hooks' HTTP action (`preStop.httpGet`): a GET from the node to the pod, as the
//! kubelet sends it (k/k pkg/kubelet/lifecycle/handlers.go). The exec action runs through the
//! runtime.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Resolves a hook's or probe's port: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| {
                    format!(
                        "couldn't find port {name:?} in container {}",
                        container.name
                    )
                })?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {n}"))
}

/// Sends the hook's GET to `host` (or the action's own `host`) within `timeout`; success is a
/// status below 400 (any 2xx/3xx, as upstream's hook runner treats it).
pub async fn http_get(
    action: &HTTPGetAction,
    container: &Container,
    pod_ip: &str,
    timeout: Duration,
) -> Result<u16, String> {
    let scheme = action.scheme.as_deref().unwrap_or("HTTP");
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "scheme {scheme} is not supported for lifecycle hooks yet"
        ));
    }
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    let port = resolve_port(&action.port, container)?;
    let path = action
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req =
            hyper::Request::get(&path).header(hyper::header::HOST, format!("{host}:{port}"));
        for h in action.http_headers.iter().flatten() {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok::<u16, String>(resp.status().as_u16())
    };
    let status = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("GET http://{host}:{port}{path} timed out after {timeout:?}"))??;
    if status >= 400 {
        return Err(format!(
            "GET http://{host}:{port}{path} returned HTTP {status}"
        ));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ContainerPort;
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

    #[test]
    fn named_and_numeric_ports() {
        let c = container();
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert_eq!(resolve_port(&IntOrString::String("82".into()), &c), Ok(82));
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
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
        let err = http_get(&action, &container(), "127.0.0.1", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("HTTP 500"), "{err}");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /shutdown HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.to_ascii_lowercase().contains("x-why: drain"),
            "{request}"
        );
    }
}
