//! kube-proxy's health server (`healthzBindAddress`, default `0.0.0.0:10256`): `/healthz` and
//! `/livez`, as upstream's `ProxyHealthServer` answers them; and the kubelet's health port
//! (`127.0.0.1:10248`, [`spawn_kubelet`]).
//!
//! The proxy is healthy unless an input has waited longer than the health timeout (2 ×
//! `syncPeriod`, as kube-proxy sets it) without reaching the rules: a proxy with nothing to do
//! stays healthy, one whose syncs fail or stall turns unhealthy. `/healthz` also requires the
//! node to be eligible (its Node not being deleted, cluster mode); `/livez` does not. Both
//! answer JSON: 200 with `lastUpdated` = `currentTime`, or 503 with the last sync's time.
//! A failure to bind is logged and retried every 5 s (kube-proxy without
//! `bindAddressHardFail`), so the proxy runs on even when the port is taken.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kubenode_proxy::ProxyHealth;

use crate::proxy_api::NodeState;

/// kube-proxy's default `healthzBindAddress`.
pub const DEFAULT_BIND_ADDRESS: &str = "0.0.0.0:10256";
/// How long a failed bind waits before the next try (upstream's 5 s).
const RETRY: Duration = Duration::from_secs(5);

/// What the health server judges by.
#[derive(Clone, Debug)]
pub struct Health {
    /// The running proxy's timestamps.
    pub proxy: ProxyHealth,
    /// The node's eligibility (always eligible standalone).
    pub node: Arc<NodeState>,
    /// Longest wait of a pending input while healthy (2 × `syncPeriod`).
    pub timeout: Duration,
}

impl Health {
    /// `(healthy, lastUpdated)` of the proxy alone (upstream `isHealthy`).
    fn proxy_healthy(&self, now: SystemTime) -> (bool, Option<SystemTime>) {
        let (last, pending) = self.proxy.times();
        let late =
            pending.is_some_and(|p| now.duration_since(p).unwrap_or_default() >= self.timeout);
        (!late, last)
    }

    /// The status and JSON body of `path` at `now` (`None`: not a health path).
    pub fn answer(&self, path: &str, now: SystemTime) -> Option<(StatusCode, String)> {
        let (healthy, last) = self.proxy_healthy(now);
        let current = go_time(now);
        match path {
            "/healthz" => {
                let eligible = self.node.eligible();
                let ok = healthy && eligible;
                let last = if ok {
                    current.clone()
                } else {
                    last.map(go_time).unwrap_or_else(zero_time)
                };
                Some((
                    status(ok),
                    format!(
                        r#"{{"lastUpdated": {last:?},"currentTime": {current:?}, "nodeEligible": {eligible}}}"#
                    ),
                ))
            }
            "/livez" => {
                let last = if healthy {
                    current.clone()
                } else {
                    last.map(go_time).unwrap_or_else(zero_time)
                };
                Some((
                    status(healthy),
                    format!(r#"{{"lastUpdated": {last:?},"currentTime": {current:?}}}"#),
                ))
            }
            _ => None,
        }
    }
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A time as Go's `time.Time.String()` prints it in UTC (`2006-01-02 15:04:05.999999999 +0000
/// UTC`, trailing zeros of the fraction dropped), without the monotonic clock reading.
fn go_time(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let mut s = ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = ts.subsec_nanosecond();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

/// Go's zero `time.Time`, printed.
fn zero_time() -> String {
    "0001-01-01 00:00:00 +0000 UTC".to_string()
}

/// Serves `health` on `addr` until the process ends; binding is retried every 5 s.
pub fn spawn(addr: SocketAddr, health: Health) {
    serve(addr, "proxy health server", move |path| {
        respond(health.answer(path, SystemTime::now()), "application/json")
    });
}

/// The kubelet's health port (`healthzBindAddress`:`healthzPort`, upstream's
/// `127.0.0.1:10248`; what `kubeadm join` waits on): plain HTTP, `/healthz` answering `ok` while
/// the agent's runtime serves requests (upstream's `ping` check; its `syncloop` check has no
/// counterpart: kubenode's pod loop is event-driven, not a ticking loop that could stall
/// unseen). Binding is retried every 5 s, as upstream retries, so a taken port stops nothing.
pub fn spawn_kubelet(addr: SocketAddr) {
    serve(addr, "kubelet health server", |path| {
        let answer = (path == "/healthz").then(|| (StatusCode::OK, "ok".to_string()));
        respond(answer, "text/plain; charset=utf-8")
    });
}

/// Serves `answer(path)` on `addr` until the process ends; binding is retried every 5 s.
fn serve(
    addr: SocketAddr,
    what: &'static str,
    answer: impl Fn(&str) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
) {
    tokio::spawn(async move {
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::error!(address = %addr, error = %e, "{what} failed; retrying in 5s");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        tracing::info!(address = %addr, "{what} listening");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let resp = answer(req.uri().path());
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(HEADER_TIMEOUT)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// How long a request's head may take (a client that sends nothing is dropped).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn respond(answer: Option<(StatusCode, String)>, content_type: &str) -> Response<Full<Bytes>> {
    let mut resp = match answer {
        Some((code, body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = code;
            r.headers_mut()
                .insert("content-type", content_type.parse().expect("header"));
            r
        }
        None => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r.headers_mut().insert(
                "content-type",
                "text/plain; charset=utf-8".parse().expect("header"),
            );
            r
        }
    };
    resp.headers_mut()
        .insert("x-content-type-options", "nosniff".parse().expect("header"));
    resp
}

/// `--healthz-bind-address`: where the server listens (`None`: off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindAddress(pub Option<SocketAddr>);

/// `--healthz-bind-address`: an address and port, or empty to turn the server off.
pub fn parse_bind_address(s: &str) -> Result<BindAddress, String> {
    if s.is_empty() {
        return Ok(BindAddress(None));
    }
    s.parse::<SocketAddr>()
        .map(|a| BindAddress(Some(a)))
        .map_err(|e| format!("`{s}`: expected IP:PORT (or empty to disable): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubenode_proxy::conntrack::RecordingConntrack;
    use kubenode_proxy::iptables::MemoryFirewall;
    use kubenode_proxy::{Proxy, ProxyConfig};

    /// Waits (10 s at most) until the proxy has `n` failed syncs.
    fn failures(handle: &kubenode_proxy::ProxyHandle, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while handle.status().failures < n {
            assert!(std::time::Instant::now() < deadline, "no failed sync");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn unhealthy_when_an_input_waits_too_long_or_the_node_goes() {
        let fw = Arc::new(MemoryFirewall::new());
        let mut cfg = ProxyConfig::new("n1", "10.96.0.0/16".parse().unwrap());
        cfg.min_sync_period = Duration::from_millis(10);
        cfg.sync_period = Duration::from_secs(3600);
        let proxy = Proxy::new(cfg, fw.clone(), Arc::new(RecordingConntrack::default())).unwrap();
        let handle = proxy.spawn();
        let node = Arc::new(NodeState::default());
        let health = Health {
            proxy: handle.health(),
            node: node.clone(),
            timeout: Duration::from_secs(60),
        };
        let json = |path: &str, at: SystemTime| {
            let (code, body) = health.answer(path, at).unwrap();
            (
                code.as_u16(),
                serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            )
        };
        // At start, nothing pending: healthy, lastUpdated is the current time.
        let now = SystemTime::now();
        let (code, body) = json("/healthz", now);
        assert_eq!(code, 200);
        assert_eq!(body["nodeEligible"], true);
        assert_eq!(body["lastUpdated"], body["currentTime"]);
        assert!(health.answer("/metrics", now).is_none());

        // Every sync fails: the input stays pending.
        fw.fail_next_restores(1000);
        handle.update_services(vec![]);
        handle.update_endpoints(vec![]);
        failures(&handle, 1);
        handle.sync_now();
        failures(&handle, 2);
        let (last, pending) = handle.health().times();
        assert!(pending.is_some() && last.is_some());
        let now = SystemTime::now();
        assert_eq!(json("/healthz", now).0, 200, "not late yet");
        let late = now + Duration::from_secs(61);
        let (code, body) = json("/healthz", late);
        assert_eq!(code, 503);
        assert_eq!(body["lastUpdated"], go_time(last.unwrap()).as_str());
        assert_eq!(body["currentTime"], go_time(late).as_str());
        assert_eq!(json("/livez", late).0, 503);

        // A node being deleted: /healthz says so, /livez does not care.
        node.set_eligible(false);
        let (code, body) = json("/healthz", now);
        assert_eq!(
            (code, &body["nodeEligible"]),
            (503, &serde_json::json!(false))
        );
        let (code, body) = json("/livez", now);
        assert_eq!(code, 200);
        assert!(body.get("nodeEligible").is_none());
        handle.shutdown();
    }

    #[test]
    fn go_time_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(go_time(t), "2023-11-14 22:13:20.12 +0000 UTC");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(go_time(t), "2023-11-14 22:13:20 +0000 UTC");
        assert_eq!(parse_bind_address("").unwrap(), BindAddress(None));
        assert!(parse_bind_address("10256").is_err());
    }
}
