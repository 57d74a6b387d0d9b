//! The standalone proxy's client of a kubelet's read-only port (`--kubelet-url`): one
//! `GET /pods` per poll over a fresh HTTP/1.1 connection (hyper), with timeouts and a size cap.

use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Bound of connecting, of the answer's head, and of each wait for more of its body.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read: a node's pod list is far smaller.
const MAX_BODY: usize = 64 << 20;

/// `GET <path>` from an `http://host:port` URL; returns the body of a 200 answer.
pub async fn get(url: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let hostport = url
        .strip_prefix("http://")
        .with_context(|| format!("--kubelet-url {url}: only http://host:port is supported"))?
        .trim_end_matches('/');
    let addr = tokio::net::lookup_host(hostport)
        .await
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("resolving {hostport}"))?;
    let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {TIMEOUT:?}"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("connecting to {url}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection is driven until the answer has been read, then dropped with `sender`.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(path)
        .header(HOST, hostport)
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .with_context(|| format!("GET {url}{path}: no answer within {TIMEOUT:?}"))?
        .with_context(|| format!("GET {url}{path}"))?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "GET {url}{path}: {:?} {}",
        response.version(),
        response.status()
    );
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = tokio::time::timeout(TIMEOUT, body.frame())
        .await
        .with_context(|| format!("GET {url}{path}: the answer stalled for {TIMEOUT:?}"))?
    {
        if let Some(data) = frame
            .with_context(|| format!("GET {url}{path}"))?
            .data_ref()
        {
            anyhow::ensure!(
                out.len() + data.len() <= MAX_BODY,
                "GET {url}{path}: the answer is larger than {MAX_BODY} bytes"
            );
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A server that answers one connection with `answer` and hands back the request head.
    async fn serve_once(answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before the end of its request");
                head.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
            String::from_utf8(head).unwrap()
        });
        (url, task)
    }

    #[tokio::test]
    async fn returns_the_body_of_a_200_answer() {
        let (url, server) =
            serve_once("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"items\":[]}\n").await;
        let body = super::get(&url, "/pods").await.unwrap();
        assert_eq!(body, b"{\"items\":[]}\n");
        let head = server.await.unwrap().to_lowercase();
        assert!(head.starts_with("get /pods http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\naccept: application/json\r\n"), "{head}");
    }

    #[tokio::test]
    async fn reads_a_body_that_ends_at_close() {
        let (url, server) = serve_once("HTTP/1.0 200 OK\r\n\r\n{\"items\":[]}").await;
        assert_eq!(super::get(&url, "/pods").await.unwrap(), b"{\"items\":[]}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn another_status_is_an_error_naming_it() {
        let (url, server) = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        let err = format!("{:#}", super::get(&url, "/pods").await.unwrap_err());
        assert!(err.contains("/pods: HTTP/1.1 404 Not Found"), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn only_plain_http_urls() {
        let err = format!(
            "{:#}",
            super::get("https://127.0.0.1:10250", "/pods")
                .await
                .unwrap_err()
        );
        assert!(err.contains("only http://host:port is supported"), "{err}");
    }
}
