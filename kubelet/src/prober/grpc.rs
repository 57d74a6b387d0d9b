//! grpc probes (k/k `pkg/probe/grpc`): `grpc.health.v1.Health/Check` over plaintext HTTP/2 to
//! the pod IP and the probe's numeric port, with the probe's `service`; `SERVING` is success,
//! everything else (connect errors, RPC errors, other statuses) is a failure. The two protobuf
//! messages involved have one field each, so they are encoded by hand.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::GRPCAction;

use super::tcp::{join_host_port, os_error};
use super::Outcome;

/// Response bytes read (a health response is a few bytes).
const MAX_RESPONSE: usize = 64 * 1024;

/// `HealthCheckRequest { service }` framed as a gRPC message.
pub(crate) fn encode_request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + msg.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(msg.len() as u32);
    framed.put_slice(&msg);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The `status` of a framed `HealthCheckResponse` (0 when absent, as protobuf defaults).
pub(crate) fn decode_status(framed: &[u8]) -> Option<u64> {
    let len = u32::from_be_bytes(framed.get(1..5)?.try_into().ok()?) as usize;
    let msg = framed.get(5..5 + len)?;
    let mut at = 0;
    let mut status = 0;
    while at < msg.len() {
        let tag = varint(msg, &mut at)?;
        match tag & 7 {
            0 => {
                let v = varint(msg, &mut at)?;
                if tag >> 3 == 1 {
                    status = v;
                }
            }
            1 => at += 8,
            2 => at += varint(msg, &mut at)? as usize,
            5 => at += 4,
            _ => return None,
        }
    }
    Some(status)
}

fn status_name(s: u64) -> String {
    match s {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(code as usize).copied().unwrap_or("Unknown")
}

enum RpcError {
    Status { code: u32, message: String },
    Other(String),
}

pub(super) async fn probe(action: &GRPCAction, pod_ip: &str, timeout: Duration) -> Outcome {
    let Some(port) = u16::try_from(action.port).ok().filter(|p| *p > 0) else {
        return Outcome::Error(format!("invalid port {}", action.port));
    };
    let addr = join_host_port(pod_ip, port);
    let service = action.service.clone().unwrap_or_default();
    let secs = timeout.as_secs();
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((pod_ip, port))
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", os_error(&e)))?;
        // HTTP/2 writes several small frames: no Nagle delay between them.
        let _ = tcp.set_nodelay(true);
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())
    };
    let (mut sender, conn) = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at \"{addr}\": {e}"
            ))
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service \"{addr}\" within {secs}s: context deadline exceeded"
            ))
        }
    };
    let conn = tokio::spawn(conn);
    let rpc = async {
        let req = hyper::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", super::http::user_agent())
            .header("grpc-timeout", format!("{secs}S"))
            .body(Full::new(encode_request(&service)))
            .map_err(|e| RpcError::Other(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| RpcError::Other(e.to_string()))?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(RpcError::Other(format!(
                "unexpected HTTP status code received from server: {}",
                resp.status().as_u16()
            )));
        }
        let (parts, body) = resp.into_parts();
        let collected = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| RpcError::Other(e.to_string()))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let field = |name: &str| {
            trailers
                .get(name)
                .or_else(|| parts.headers.get(name))
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        let code = field("grpc-status")
            .and_then(|c| c.parse::<u32>().ok())
            .unwrap_or(2);
        if code != 0 {
            let message = field("grpc-message").unwrap_or_default();
            return Err(RpcError::Status { code, message });
        }
        decode_status(&collected.to_bytes())
            .ok_or_else(|| RpcError::Other("malformed HealthCheckResponse".into()))
    };
    let outcome = match tokio::time::timeout(timeout, rpc).await {
        Ok(Ok(1)) => Outcome::Success("service healthy".into()),
        Ok(Ok(s)) => Outcome::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            status_name(s)
        )),
        Ok(Err(RpcError::Status { code: 12, message })) => Outcome::Failure(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
        )),
        Ok(Err(RpcError::Status { code: 4, .. })) | Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {secs}s"
        )),
        Ok(Err(RpcError::Status { code, message })) => Outcome::Failure(format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {message}",
            code_name(code)
        )),
        Ok(Err(RpcError::Other(e))) => {
            Outcome::Failure(format!("error: health rpc probe failed: {e}"))
        }
    };
    conn.abort();
    outcome
}
