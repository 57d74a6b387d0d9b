//! Requests to answers, shared by both listeners.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::logs::{tail_start, LineSplitter, LogOptions, LogStream, BLOCK};
use super::{ApiError, ContainerRef, ExecRequest, NodeView};

/// The body every route answers with.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Largest `POST /exec` body accepted.
const MAX_REQUEST: usize = 1 << 20;

/// Which listener a request came in on. The read-only port is unauthenticated: like upstream's
/// read-only server it serves no debugging handler (no logs, exec, run, attach), only
/// `/healthz` and `/pods`; the HTTPS server (its requests authenticated and authorized before
/// they get here) adds `/containerLogs`; everything else needs the root-only socket, which also
/// serves the HTTPS port's streams (`/exec/...`, `/attach/...`, `/portForward/...`) to the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    ReadOnly,
    Socket,
    Https,
}

/// The stats summary, collected on a blocking thread: it reads every pod's cgroup files and
/// statfs's its volumes, which must not hold up the runtime's async workers.
async fn stats_summary(view: Arc<dyn NodeView>) -> Result<crate::stats::types::Summary, ApiError> {
    tokio::task::spawn_blocking(move || view.stats_summary())
        .await
        .map_err(|e| ApiError::Internal(format!("collecting stats: {e}")))?
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
        (&Method::GET, ["configmaps"], Listener::Socket) => Ok(json(&serde_json::json!({
            "kind": "ConfigMapList",
            "apiVersion": "v1",
            "metadata": {},
            "items": view.config_maps(),
        }))),
        (&Method::GET, ["secrets"], Listener::Socket) => Ok(json(&serde_json::json!({
            "kind": "SecretList",
            "apiVersion": "v1",
            "metadata": {},
            "items": view.secrets(),
        }))),
        (&Method::GET, ["endpoints"], Listener::Socket) => Ok(json(&serde_json::json!({
            "kind": "EndpointsList",
            "apiVersion": "v1",
            "metadata": {},
            "items": view.endpoints(),
        }))),
        (
            &Method::GET,
            ["containerLogs", ns, pod, rest @ ..],
            Listener::Socket | Listener::Https,
        ) if rest.len() <= 1 => {
            let target = ContainerRef {
                namespace: ns.to_string(),
                pod: pod.to_string(),
                container: rest.first().map(|c| c.to_string()),
            };
            container_logs(view, target, &query).await
        }
        (&Method::GET, ["stats", "summary"], Listener::Socket | Listener::Https) => {
            Ok(json(&stats_summary(view).await?))
        }
        (&Method::GET, ["metrics", "resource"], Listener::Socket | Listener::Https) => {
            let (summary, error) = match stats_summary(view).await {
                Ok(s) => (s, false),
                Err(e) => {
                    tracing::warn!(error = %e, "collecting resource metrics");
                    (Default::default(), true)
                }
            };
            let body = crate::stats::resource::render(&summary, error);
            Ok(typed(body, crate::stats::resource::CONTENT_TYPE))
        }
        (&Method::GET, ["metrics", "cadvisor"], Listener::Socket | Listener::Https) => {
            // Reads every pod's cgroup files: off the async workers, as the summary.
            let body = tokio::task::spawn_blocking(move || view.cadvisor_metrics())
                .await
                .map_err(|e| ApiError::Internal(format!("collecting cAdvisor metrics: {e}")))??;
            Ok(typed(body, crate::stats::cadvisor::CONTENT_TYPE))
        }
        (&Method::GET, ["metrics", "probes"], Listener::Socket | Listener::Https) => {
            Ok(typed(view.probe_metrics(), crate::metrics::CONTENT_TYPE))
        }
        (&Method::GET, ["metrics"], Listener::Socket | Listener::Https) => {
            Ok(typed(view.metrics(), crate::metrics::CONTENT_TYPE))
        }
        (&Method::GET | &Method::POST, ["attach", rest @ ..], Listener::Socket) => {
            Ok(super::stream::attach::serve_attach(
                view,
                rest,
                req,
                super::stream::DEFAULT_IDLE_TIMEOUT,
            )
            .await)
        }
        // `kubenode exec -i/-t` and `kubenode port-forward`: the HTTPS port's streaming
        // handlers (`POST /exec` with no path below it is the run-to-completion exec above)
        (&Method::GET | &Method::POST, ["exec", rest @ ..], Listener::Socket)
            if !rest.is_empty() =>
        {
            Ok(
                super::stream::serve_exec(view, rest, req, super::stream::DEFAULT_IDLE_TIMEOUT)
                    .await,
            )
        }
        (&Method::GET | &Method::POST, ["portForward", rest @ ..], Listener::Socket) => Ok(
            super::stream::serve_port_forward(view, rest, req, super::stream::DEFAULT_IDLE_TIMEOUT)
                .await,
        ),
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

/// `%XX` escapes of a query value decoded (kubectl escapes the `:` of `sinceTime`).
fn unescape(v: &str) -> Result<String, ApiError> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::BadRequest(format!("invalid escape in {v:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::BadRequest(format!("{v:?} is not UTF-8")))
}

/// Parses the query of `/containerLogs` (the kubelet's `PodLogOptions` names), with the API
/// server's checks of `ValidatePodLogOptions`.
fn parse_log_query(query: &str) -> Result<LogQuery, ApiError> {
    let mut q = LogQuery::default();
    let mut since_seconds: Option<i64> = None;
    let mut since_time: Option<k8s_openapi::jiff::Timestamp> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        let v = unescape(v)?;
        let v = v.as_str();
        let flag = || match v {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::BadRequest(format!("{k}: invalid boolean {v:?}"))),
        };
        let number = || {
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("{k}: invalid number {v:?}")))
        };
        match k {
            "follow" => q.follow = flag()?,
            "previous" => q.previous = flag()?,
            "timestamps" => q.opts.timestamps = flag()?,
            "tailLines" => q.opts.tail_lines = Some(usize::try_from(number()?).unwrap_or(0)),
            "limitBytes" => {
                let n = number()?;
                if n < 1 {
                    return Err(ApiError::BadRequest(format!(
                        "limitBytes: Invalid value: {n}: must be greater than 0"
                    )));
                }
                q.opts.limit_bytes = Some(n as u64);
            }
            "sinceSeconds" => {
                let n = number()?;
                if n < 1 {
                    return Err(ApiError::BadRequest(format!(
                        "sinceSeconds: Invalid value: {n}: must be greater than 0"
                    )));
                }
                since_seconds = Some(n);
            }
            "sinceTime" => {
                since_time = Some(v.parse().map_err(|e| {
                    ApiError::BadRequest(format!("sinceTime: invalid RFC 3339 time {v:?}: {e}"))
                })?)
            }
            _ => {}
        }
    }
    q.opts.since = match (since_time, since_seconds) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            ))
        }
        (Some(t), None) => Some(t),
        (None, Some(s)) => {
            let now = crate::backoff::Clock::now(&crate::backoff::SystemClock);
            Some(
                now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s))
                    .unwrap_or(k8s_openapi::jiff::Timestamp::MIN),
            )
        }
        (None, None) => None,
    };
    Ok(q)
}

async fn container_logs(
    view: Arc<dyn NodeView>,
    target: ContainerRef,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let q = parse_log_query(query)?;
    let path = view.container_log(&target, q.previous)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "reading {}: {e}",
                path.display()
            )))
        }
    };
    let follow = q.follow && !q.previous;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        if let Err(e) = stream_log(view, target, &path, file, q.opts, follow, tx).await {
            tracing::debug!(path = %path.display(), error = %e, "streaming a container log");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
}

/// Streams a container log to `tx` in blocks: from the start of the last `tail_lines` lines
/// (found reading backwards) to the end, then, when following, what is appended until the
/// client goes away, the container exits (its log read to the end), or its current log changes
/// (a restart) or disappears (the pod is gone). Memory stays a few blocks whatever the file's
/// size; the channel's bound makes a slow client slow the reading down.
async fn stream_log(
    view: Arc<dyn NodeView>,
    target: ContainerRef,
    path: &std::path::Path,
    mut file: Option<tokio::fs::File>,
    opts: LogOptions,
    follow: bool,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut offset = 0u64;
    if let (Some(n), Some(f)) = (opts.tail_lines, file.as_mut()) {
        // Backwards reading is a few blocking seeks and reads: done off the async workers.
        let len = f.metadata().await?.len();
        let mut std_file = f.try_clone().await?.into_std().await;
        offset = tokio::task::spawn_blocking(move || tail_start(&mut std_file, len, n))
            .await
            .map_err(std::io::Error::other)??;
    }
    let mut stream = LogStream::new(opts);
    let mut split = LineSplitter::default();
    let mut buf = vec![0u8; BLOCK];
    let mut exited = false;
    loop {
        if let Some(f) = file.as_mut() {
            if f.metadata().await?.len() < offset {
                offset = 0; // truncated or rotated in place: start over
                split.reset();
            }
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            loop {
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                offset += n as u64;
                let mut out = Vec::new();
                split.feed(&buf[..n], &mut stream, &mut out);
                if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                    return Ok(());
                }
                if stream.done() {
                    return Ok(());
                }
            }
        }
        if !follow || exited {
            let mut out = Vec::new();
            split.finish(&mut stream, &mut out);
            if !out.is_empty() {
                let _ = tx.send(Bytes::from(out)).await;
            }
            return Ok(());
        }
        // As upstream's kubelet (`waitLogs`), follow while the container runs: one that
        // exited has its log read to the end once more (what it wrote before exiting) and
        // ends the follow; one that restarted (a new current log) or is gone ends it now.
        match view.container_instance(&target) {
            Ok(i) if i.log_path != path => return Ok(()),
            Ok(i) if !i.running => {
                exited = true;
                continue;
            }
            Ok(_) => {}
            // A view that cannot tell the instance: the current log's path decides.
            Err(_) => match view.container_log(&target, false) {
                Ok(p) if p == path => {}
                _ => return Ok(()),
            },
        }
        tokio::time::sleep(FOLLOW_POLL).await;
        if tx.is_closed() {
            return Ok(());
        }
        file = match tokio::fs::File::open(path).await {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
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

/// Go's `cleanPath` (`net/http`'s `ServeMux`): `p` rooted and cleaned as `path.Clean` does
/// (runs of slashes as one, `.` segments dropped, each `..` with the segment before it, a `..`
/// at the root dropped), its trailing slash kept.
pub(crate) fn clean_path(p: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in p.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let mut clean = format!("/{}", kept.join("/"));
    if p.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// The path of a request the HTTPS server serves, or the answer instead: what Go's
/// `http.ServeMux`, in front of upstream kubelet's authentication and authorization filters,
/// does before any of them runs. A path that is not clean ([`clean_path`] of the raw, still
/// escaped path, as Go's since 1.22) is a 301 to the clean path with the query (Go's
/// `http.Redirect`: for GET a small HTML body, for GET and HEAD `text/html`); a request target
/// that is not a path (`*`) is a 400. Unlike Go's, CONNECT requests are cleaned too.
#[allow(clippy::result_large_err, reason = "the error is the response to send")]
pub(crate) fn canonical_path<'a>(
    method: &Method,
    uri: &'a hyper::Uri,
) -> Result<&'a str, Response<Body>> {
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(text(StatusCode::BAD_REQUEST, String::new()));
    }
    let clean = clean_path(path);
    if clean == path {
        return Ok(path);
    }
    let location = match uri.query() {
        Some(q) if !q.is_empty() => format!("{clean}?{q}"),
        _ => clean,
    };
    let body = if method == Method::GET {
        format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            super::https::html_escape(&location)
        )
    } else {
        String::new()
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = hyper::header::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(hyper::header::LOCATION, v);
    }
    if method == Method::GET || method == Method::HEAD {
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    Err(resp)
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A 200 answer with `body` of `content_type`.
fn typed(body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::OK, body);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// A JSON answer (500 when `value` cannot be encoded).
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
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

    /// Go's `cleanPath` (`net/http/server.go`) and `path.Clean`'s cases.
    #[test]
    fn clean_path_as_go() {
        for (path, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/stats/summary", "/stats/summary"),
            ("//stats/summary", "/stats/summary"),
            ("/stats//summary", "/stats/summary"),
            ("/./stats/summary", "/stats/summary"),
            ("/x/../stats/summary", "/stats/summary"),
            ("/../stats", "/stats"),
            ("/logs/", "/logs/"),
            ("//logs/", "/logs/"),
            ("/logs/../../etc/passwd", "/etc/passwd"),
            ("/logs/sub/..", "/logs"),
            ("/logs/sub/../", "/logs/"),
            ("/a/./", "/a/"),
            ("/a/.", "/a"),
            ("/a//", "/a/"),
            ("/..", "/"),
            ("/../", "/"),
            ("/%2e%2e/x", "/%2e%2e/x"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
        ] {
            assert_eq!(clean_path(path), want, "{path}");
        }
    }

    /// Whatever the HTTPS server authorizes is the path it routes: a path that is not clean is
    /// answered with a redirect before authentication and authorization, a clean one is
    /// returned as it is.
    #[test]
    fn unclean_paths_are_redirected_before_authorization() {
        let go = |method: Method, uri: &str| -> Result<String, (StatusCode, String, String)> {
            let uri: hyper::Uri = uri.parse().unwrap();
            match canonical_path(&method, &uri) {
                Ok(p) => Ok(p.to_string()),
                Err(r) => {
                    let location = r
                        .headers()
                        .get(hyper::header::LOCATION)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    let ct = r
                        .headers()
                        .get(hyper::header::CONTENT_TYPE)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    Err((r.status(), location, ct))
                }
            }
        };
        for path in ["/stats/summary", "/logs/", "/pods", "/metrics", "/"] {
            assert_eq!(go(Method::GET, path), Ok(path.to_string()));
        }
        assert_eq!(
            go(Method::GET, "/containerLogs/ns/p/c?tailLines=1"),
            Ok("/containerLogs/ns/p/c".to_string())
        );
        let html = "text/html; charset=utf-8".to_string();
        for (path, location) in [
            ("//stats/summary", "/stats/summary"),
            ("//metrics", "/metrics"),
            ("//logs/", "/logs/"),
            ("/./stats/summary", "/stats/summary"),
            ("/pods/../stats/summary", "/stats/summary"),
            (
                "//containerLogs/ns/p/c?follow=true",
                "/containerLogs/ns/p/c?follow=true",
            ),
        ] {
            assert_eq!(
                go(Method::GET, path),
                Err((
                    StatusCode::MOVED_PERMANENTLY,
                    location.to_string(),
                    html.clone()
                )),
                "{path}"
            );
        }
        assert_eq!(
            go(Method::POST, "//exec/ns/p/c?command=id"),
            Err((
                StatusCode::MOVED_PERMANENTLY,
                "/exec/ns/p/c?command=id".into(),
                String::new()
            ))
        );
        assert_eq!(
            go(Method::OPTIONS, "*"),
            Err((
                StatusCode::BAD_REQUEST,
                String::new(),
                "text/plain; charset=utf-8".into()
            ))
        );
    }

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
        let q = parse_log_query("limitBytes=10&sinceTime=2026-11-28T01%3A00%3A17Z").unwrap();
        assert_eq!(q.opts.limit_bytes, Some(10));
        assert_eq!(q.opts.since, Some("2026-11-28T01:00:17Z".parse().unwrap()));
        let q = parse_log_query("sinceSeconds=60").unwrap();
        assert!(q.opts.since.is_some());
        for (bad, why) in [
            (
                "limitBytes=0",
                "limitBytes: Invalid value: 0: must be greater than 0",
            ),
            (
                "sinceSeconds=0",
                "sinceSeconds: Invalid value: 0: must be greater than 0",
            ),
            (
                "sinceSeconds=5&sinceTime=2026-11-28T01:00:00Z",
                "at most one of",
            ),
            ("sinceTime=yesterday", "sinceTime: invalid RFC 3339 time"),
            ("sinceTime=%zz", "invalid escape"),
        ] {
            let err = parse_log_query(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(parse_log_query("follow=maybe").is_err());
    }
}
