//! The HTTP, HTTPS, TCP and gRPC mechanisms against servers on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, HTTPGetAction, HTTPHeader};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::prober::Outcome;

#[test]
fn grpc_messages_encode_and_decode() {
    assert_eq!(
        &crate::prober::grpc::encode_request("")[..],
        [0, 0, 0, 0, 0]
    );
    assert_eq!(
        &crate::prober::grpc::encode_request("db")[..],
        [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
    );
    assert_eq!(
        crate::prober::grpc::decode_status(&[0, 0, 0, 0, 2, 0x08, 1]),
        Some(1)
    );
    assert_eq!(
        crate::prober::grpc::decode_status(&[0, 0, 0, 0, 0]),
        Some(0)
    );
    // An unknown length-delimited field before the status is skipped.
    assert_eq!(
        crate::prober::grpc::decode_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 2]),
        Some(2)
    );
    assert_eq!(
        crate::prober::grpc::decode_status(&[0, 0, 0, 0, 9, 0x08]),
        None
    );
}

/// A grpc.health.v1 server over h2c: service "" is SERVING, "db" NOT_SERVING, "slow" never
/// answers, anything else is Unimplemented (trailers-only).
async fn health_server() -> u16 {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        assert_eq!(req.headers()["content-type"], "application/grpc");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let service =
                            String::from_utf8_lossy(body.get(7..).unwrap_or_default()).into_owned();
                        let mut trailers = hyper::HeaderMap::new();
                        let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> =
                            match service.as_str() {
                                "" | "db" => {
                                    let status = if service.is_empty() { 1 } else { 2 };
                                    trailers.insert("grpc-status", "0".parse().unwrap());
                                    vec![
                                        Ok(Frame::data(bytes::Bytes::from(vec![
                                            0, 0, 0, 0, 2, 0x08, status,
                                        ]))),
                                        Ok(Frame::trailers(trailers)),
                                    ]
                                }
                                "slow" => {
                                    tokio::time::sleep(Duration::from_secs(5)).await;
                                    vec![]
                                }
                                _ => {
                                    trailers.insert("grpc-status", "12".parse().unwrap());
                                    trailers
                                        .insert("grpc-message", "unknown service".parse().unwrap());
                                    vec![Ok(Frame::trailers(trailers))]
                                }
                            };
                        let body = StreamBody::new(futures::stream::iter(frames));
                        let mut resp = hyper::Response::new(body);
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn grpc_health_checks() {
    let port = health_server().await;
    let check = |service: &str| {
        let action = k8s_openapi::api::core::v1::GRPCAction {
            port: i32::from(port),
            service: (!service.is_empty()).then(|| service.to_string()),
        };
        async move { crate::prober::grpc::probe(&action, "127.0.0.1", Duration::from_secs(1)).await }
    };
    assert_eq!(check("").await, Outcome::Success("service healthy".into()));
    assert_eq!(
        check("db").await,
        Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    assert_eq!(
        check("other").await,
        Outcome::Failure("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service".into())
    );
    assert_eq!(
        check("slow").await,
        Outcome::Failure("timeout: health rpc did not complete within 1s".into())
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let action = k8s_openapi::api::core::v1::GRPCAction {
        port: i32::from(closed),
        service: None,
    };
    assert_eq!(
        crate::prober::grpc::probe(&action, "127.0.0.1", Duration::from_secs(1)).await,
        Outcome::Failure(format!(
            "error: failed to connect service at \"127.0.0.1:{closed}\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
}

// ---- mechanisms against loopback servers ----

/// Serves `responses` (raw HTTP) one per connection; returns the port and the requests seen.
async fn serve(responses: Vec<String>) -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for r in responses {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let r = r.replace("PORT", &port.to_string());
            let _ = s.write_all(r.as_bytes()).await;
        }
    });
    (port, seen)
}

fn http_action(port: u16, path: &str) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(i32::from(port)),
        ..Default::default()
    }
}

fn resp(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

async fn http(action: &HTTPGetAction) -> Outcome {
    let c = Container {
        name: "c".into(),
        ports: Some(vec![ContainerPort {
            name: Some("web".into()),
            container_port: 1,
            ..Default::default()
        }]),
        ..Default::default()
    };
    crate::prober::http::probe(action, &c, "127.0.0.1", Duration::from_secs(1)).await
}

#[tokio::test]
async fn http_sends_headers_and_judges_status() {
    let (port, seen) = serve(vec![resp("200 OK", "", "fine"), resp("500 Oops", "", "")]).await;
    let mut a = http_action(port, "healthz");
    a.http_headers = Some(vec![HTTPHeader {
        name: "X-Probe".into(),
        value: "yes".into(),
    }]);
    assert_eq!(http(&a).await, Outcome::Success("fine".into()));
    assert_eq!(
        http(&a).await,
        Outcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    let req = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(req.starts_with("get /healthz http/1.1\r\n"), "{req}");
    for h in [
        "x-probe: yes",
        "user-agent: kube-probe/1.34",
        "accept: */*",
        "connection: close",
    ] {
        assert!(req.contains(h), "{h} missing in {req}");
    }
    assert!(req.contains(&format!("host: 127.0.0.1:{port}")), "{req}");
}

/// An HTTPS server with a self-signed certificate (`testdata/`, CN probe-test.invalid, made with
/// openssl) answering one request.
#[tokio::test]
async fn https_accepts_any_certificate() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cert = CertificateDer::from(include_bytes!("../testdata/cert.der").to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        include_bytes!("../testdata/key.der").to_vec(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(s).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tls.read(&mut buf).await.unwrap();
        tls.write_all(resp("200 OK", "", "secure").as_bytes())
            .await
            .unwrap();
        let _ = tls.shutdown().await;
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let mut a = http_action(port, "/tls");
    a.scheme = Some("HTTPS".into());
    assert_eq!(http(&a).await, Outcome::Success("secure".into()));
    assert!(server.await.unwrap().starts_with("GET /tls HTTP/1.1\r\n"));
}

#[tokio::test]
async fn http_redirects_same_host_followed_other_host_warns() {
    let (port, seen) = serve(vec![
        resp("302 Found", "location: /next\r\n", ""),
        resp("200 OK", "", "arrived"),
        resp(
            "301 Moved",
            "location: http://example.invalid/x\r\n",
            "gone",
        ),
    ])
    .await;
    let a = http_action(port, "/start");
    assert_eq!(http(&a).await, Outcome::Success("arrived".into()));
    assert!(seen.lock().unwrap()[1].starts_with("GET /next "));
    assert_eq!(
        http(&a).await,
        Outcome::Warning("Probe terminated redirects, Response body: gone".into())
    );
}

#[tokio::test]
async fn http_redirect_loops_stop_after_ten() {
    let loops = (0..11)
        .map(|_| resp("302 Found", "location: /again\r\n", ""))
        .collect();
    let (port, seen) = serve(loops).await;
    let out = http(&http_action(port, "/")).await;
    assert!(
        matches!(&out, Outcome::Failure(m) if m.ends_with("stopped after 10 redirects")),
        "{out:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 11);
}

#[tokio::test]
async fn http_body_is_capped_and_slow_servers_time_out() {
    let big = "x".repeat(50 * 1024);
    let (port, _) = serve(vec![resp("200 OK", "", &big)]).await;
    let Outcome::Success(body) = http(&http_action(port, "/")).await else {
        panic!("expected success");
    };
    assert_eq!(body.len(), crate::prober::http::MAX_BODY);
    // A listener that never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let out = http(&http_action(port, "/slow")).await;
    assert_eq!(
        out,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    );
}

#[tokio::test]
async fn named_ports_and_closed_ports() {
    let a = HTTPGetAction {
        port: IntOrString::String("nope".into()),
        ..Default::default()
    };
    assert!(matches!(http(&a).await, Outcome::Error(m) if m.contains("couldn't find port")));
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = k8s_openapi::api::core::v1::TCPSocketAction {
        port: IntOrString::Int(i32::from(closed)),
        host: None,
    };
    let out = crate::prober::tcp::probe(
        &t,
        &Container::default(),
        "127.0.0.1",
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        out,
        Outcome::Failure(format!(
            "dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = Container {
        ports: Some(vec![ContainerPort {
            name: Some("svc".into()),
            container_port: i32::from(open.local_addr().unwrap().port()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let t = k8s_openapi::api::core::v1::TCPSocketAction {
        port: IntOrString::String("svc".into()),
        host: None,
    };
    assert_eq!(
        crate::prober::tcp::probe(&t, &c, "127.0.0.1", Duration::from_secs(1)).await,
        Outcome::Success(String::new())
    );
}
