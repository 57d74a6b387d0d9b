//! Requests to answers, shared by both listeners.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::logs::{render, LogOptions};
use super::{ApiError, ContainerRef, ExecRequest, NodeView};

/// The body every route answers with.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Largest `POST /exec` body accepted.
const MAX_REQUEST: usize = 1 << 20;

/// Which listener a request came in on. The read-only port is unauthenticated: like upstream's
/// read-only server it serves no debugging handler (no logs, exec, run, attach), only
/// `/healthz` and `/pods`; everything else needs the root-only socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    ReadOnly,
    Socket,
}

pub(crate) async fn handle(
    view: Arc<dyn NodeView>,
    listener: Listener,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let answer = route(view, listener, req).await;
    Ok(answer.unwrap_or_else(|e| text(e.status(), format!("{e}\n"))))
}

async fn route(
    view: Arc<dyn NodeView>,
    listener: Listener,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice(), listener) {
        (&Method::GET, ["healthz"], _) => Ok(text(StatusCode::OK, "ok".into())),
        (&Method::GET, ["pods"], _) => {
            let list = serde_json::json!({
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {},
                "items": view.pods(),
            });
            Ok(json(&list))
        }
        (&Method::GET, ["events"], Listener::Socket) => {
            let list = serde_json::json!({
                "kind": "EventList",
                "apiVersion": "v1",
                "metadata": {},
                "items": view.events(),
            });
            Ok(json(&list))
        }
        (&Method::GET, ["services"], Listener::Socket) => Ok(json(&serde_json::json!({
            "kind": "ServiceList",
            "apiVersion": "v1",
            "metadata": {},
            "items": view.services(),
        }))),
        (&Method::GET, ["endpoints"], Listener::Socket) => Ok(json(&serde_json::json!({
            "kind": "EndpointsList",
            "apiVersion": "v1",
            "metadata": {},
            "items": view.endpoints(),
        }))),
        (&Method::GET, ["containerLogs", ns, pod, rest @ ..], Listener::Socket)
            if rest.len() <= 1 =>
        {
            let target = ContainerRef {
                namespace: ns.to_string(),
                pod: pod.to_string(),
                container: rest.first().map(|c| c.to_string()),
            };
            container_logs(view, target, &query).await
        }
        (&Method::POST, ["exec"], Listener::Socket) => {
            let body = Limited::read(req.into_body(), MAX_REQUEST).await?;
            let exec: ExecRequest = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("exec request: {e}")))?;
            let answer = view.exec(exec).await?;
            Ok(json(&answer))
        }
        _ => Err(ApiError::NotFound(format!(
            "no such API path: {} {path}",
            req.method()
        ))),
    }
}

/// Query flags of `/containerLogs`.
#[derive(Debug, Default, PartialEq, Eq)]
struct LogQuery {
    follow: bool,
    previous: bool,
    opts: LogOptions,
}

fn parse_log_query(query: &str) -> Result<LogQuery, ApiError> {
    let mut q = LogQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        let flag = || match v {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::BadRequest(format!("{k}: invalid boolean {v:?}"))),
        };
        match k {
            "follow" => q.follow = flag()?,
            "previous" => q.previous = flag()?,
            "timestamps" => q.opts.timestamps = flag()?,
            "tailLines" => {
                let n: i64 = v.parse().map_err(|_| {
                    ApiError::BadRequest(format!("tailLines: invalid number {v:?}"))
                })?;
                q.opts.tail_lines = Some(usize::try_from(n).unwrap_or(0));
            }
            _ => {}
        }
    }
    Ok(q)
}

async fn container_logs(
    view: Arc<dyn NodeView>,
    target: ContainerRef,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let q = parse_log_query(query)?;
    let path = view.container_log(&target, q.previous)?;
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "reading {}: {e}",
                path.display()
            )))
        }
    };
    // Only complete raw lines are rendered now; a follower continues from the rest.
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut first = render(&data[..complete], &q.opts).concat();
    if !q.follow || q.previous {
        first = render(&data, &q.opts).concat();
        return Ok(Response::new(Full::new(Bytes::from(first)).boxed()));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let _ = tx.try_send(Bytes::from(first));
    tokio::spawn(follow(
        view,
        target,
        path,
        complete as u64,
        q.opts.timestamps,
        tx,
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
}

/// Streams what is appended to `path` until the client goes away or the container's current log
/// changes (a restart) or disappears (the pod is gone).
async fn follow(
    view: Arc<dyn NodeView>,
    target: ContainerRef,
    path: std::path::PathBuf,
    mut offset: u64,
    timestamps: bool,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let opts = LogOptions {
        timestamps,
        tail_lines: None,
    };
    let mut carry: Vec<u8> = Vec::new();
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        if tx.is_closed() {
            return;
        }
        let mut chunk = Vec::new();
        if let Ok(mut f) = tokio::fs::File::open(&path).await {
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0; // truncated or rotated in place: start over
                carry.clear();
            }
            if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                let _ = f.read_to_end(&mut chunk).await;
            }
        }
        offset += chunk.len() as u64;
        carry.extend_from_slice(&chunk);
        if let Some(end) = carry.iter().rposition(|b| *b == b'\n') {
            let ready: Vec<u8> = carry.drain(..=end).collect();
            let out = render(&ready, &opts).concat();
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
        }
        match view.container_log(&target, false) {
            Ok(p) if p == path => {}
            _ => return,
        }
    }
}

/// Reads a request body up to a limit.
struct Limited;

impl Limited {
    async fn read(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
        let limited = http_body_util::Limited::new(body, limit);
        limited
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding JSON: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_query_flags() {
        let q = parse_log_query("follow=true&tailLines=5&timestamps&previous=false").unwrap();
        assert!(q.follow && !q.previous && q.opts.timestamps);
        assert_eq!(q.opts.tail_lines, Some(5));
        assert_eq!(
            parse_log_query("tailLines=-1").unwrap().opts.tail_lines,
            Some(0)
        );
        assert!(parse_log_query("tailLines=x").is_err());
        assert!(parse_log_query("follow=maybe").is_err());
    }
}
