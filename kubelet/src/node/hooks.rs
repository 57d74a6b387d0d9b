//! Lifecycle hooks (`postStart`, `preStop`) as the kubelet's handler runner runs them (k/k
//! `pkg/kubelet/lifecycle/handlers.go`): `exec` in the container through the runtime, `httpGet`
//! from the node to the pod, `sleep` on the node. A failure is upstream's message, which the
//! caller puts in the waiting state (`PostStartHookError`) or the log; the events carry no
//! detail, as upstream's (the output may hold secrets).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod};

use kubenode_runtime::ExecResult;

use crate::events::{ObjectRef, Recorder};
use crate::prober::http::{get, headers_with_agent, lifecycle_user_agent, probe_url, HttpError};

use super::runtime::AsyncRuntime;

/// The bound of a hook that upstream runs without one (a `postStart` exec or GET): about a
/// century. The hook ends when the pod is deleted instead (the worker stops waiting for it and
/// the container, with the command it runs, is stopped).
pub(in crate::node) const NO_TIMEOUT: Duration = Duration::from_secs(u32::MAX as u64);

/// Where a hook runs.
#[derive(Debug, Clone, Copy)]
pub(in crate::node) struct Target<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    /// The runtime's ID of the instance.
    pub container_id: &'a str,
    /// The pod's IP (the node's on the host network): where an `httpGet` without `host` goes.
    pub pod_ip: &'a str,
}

/// `name_namespace(uid)`, as upstream's `format.Pod`.
pub(crate) fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Runs `handler` for `target`, an `exec` or `httpGet` bounded by `timeout`, a `sleep` for its
/// seconds (the caller bounds it, or drops it to cancel it). `Err` is upstream's message:
/// `Exec lifecycle hook ([cmd]) for Container "c" in Pod "p_ns(uid)" failed - error: ...,
/// message: "<output>"` and the like.
pub(in crate::node) async fn run(
    runtime: &AsyncRuntime,
    events: &Recorder,
    target: Target<'_>,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    let exec = |cmd: Vec<String>| async move {
        runtime
            .exec_capped(
                target.container_id,
                cmd,
                timeout,
                crate::prober::MAX_EXEC_OUTPUT,
            )
            .await
            .map_err(|e| e.to_string())
    };
    run_with(exec, events, target, handler, timeout).await
}

/// [`run`] with `exec` running a command in the container.
async fn run_with<F: std::future::Future<Output = Result<ExecResult, String>>>(
    exec: impl FnOnce(Vec<String>) -> F,
    events: &Recorder,
    target: Target<'_>,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    let Target { pod, container, .. } = target;
    let who = format!(
        "for Container {:?} in Pod {:?}",
        container.name,
        format_pod(pod)
    );
    if let Some(e) = &handler.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let (error, output) = match exec(cmd.clone()).await {
            Ok(out) if out.exit_code == 0 && !out.timed_out => return Ok(()),
            Ok(out) => {
                let error = if out.timed_out {
                    format!("command '{}' timed out after {timeout:?}", cmd.join(" "))
                } else {
                    format!(
                        "command '{}' exited with {}: {}",
                        cmd.join(" "),
                        out.exit_code,
                        String::from_utf8_lossy(&out.stderr)
                    )
                };
                let mut output = out.stdout;
                output.extend_from_slice(&out.stderr);
                (error, output)
            }
            Err(e) => (e, Vec::new()),
        };
        return Err(format!(
            "Exec lifecycle hook ([{}]) {who} failed - error: {error}, message: {:?}",
            cmd.join(" "),
            String::from_utf8_lossy(&output)
        ));
    }
    if let Some(action) = &handler.http_get {
        return match http_get(action, container, target.pod_ip, timeout).await {
            Ok(HookResponse::FellBackToHttp(_)) => {
                events.warning(
                    &ObjectRef::pod(pod),
                    "LifecycleHTTPFallback",
                    format!(
                        "request to HTTPS lifecycle hook {} got HTTP response, retry with HTTP succeeded",
                        action
                            .host
                            .as_deref()
                            .filter(|h| !h.is_empty())
                            .unwrap_or(target.pod_ip)
                    ),
                );
                Ok(())
            }
            Ok(HookResponse::Answered(_)) => Ok(()),
            Err(e) => Err(format!(
                "HTTP lifecycle hook ({}) {who} failed - error: {e}",
                action.path.as_deref().unwrap_or_default()
            )),
        };
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    // `tcpSocket` (refused by validation) or no handler at all.
    Err(format!("Cannot run handler: invalid handler: {handler:?}"))
}

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

    fn pod() -> Pod {
        crate::testing::pod()
            .name("web")
            .namespace("shop")
            .uid("u-1")
            .build()
    }

    fn recorder() -> Recorder {
        Recorder::new(
            "n1",
            std::sync::Arc::new(crate::backoff::TestClock::new(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
        )
    }

    fn exec_handler(cmd: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(k8s_openapi::api::core::v1::ExecAction {
                command: Some(cmd.iter().map(ToString::to_string).collect()),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exec_hook_failures_carry_upstreams_message() {
        let (p, c) = (pod(), container());
        let target = Target {
            pod: &p,
            container: &c,
            container_id: "id",
            pod_ip: "10.0.0.2",
        };
        let events = recorder();
        let handler = exec_handler(&["sh", "-c", "echo oops; exit 3"]);
        let failed = |code: i32, timed_out: bool| {
            move |cmd: Vec<String>| async move {
                assert_eq!(cmd, ["sh", "-c", "echo oops; exit 3"]);
                Ok(ExecResult {
                    exit_code: code,
                    stdout: b"oops\n".to_vec(),
                    stderr: b"bad\n".to_vec(),
                    timed_out,
                })
            }
        };
        let err = run_with(failed(3, false), &events, target, &handler, NO_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "Exec lifecycle hook ([sh -c echo oops; exit 3]) for Container \"c\" in Pod \"web_shop(u-1)\" failed - error: command 'sh -c echo oops; exit 3' exited with 3: bad\n, message: \"oops\\nbad\\n\""
        );
        assert_eq!(
            run_with(failed(0, false), &events, target, &handler, NO_TIMEOUT).await,
            Ok(())
        );
        let timed_out = run_with(
            failed(137, true),
            &events,
            target,
            &handler,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(
            timed_out.contains("error: command 'sh -c echo oops; exit 3' timed out after 2s"),
            "{timed_out}"
        );
        let runtime_error = run_with(
            |_| async { Err("container not running".to_string()) },
            &events,
            target,
            &handler,
            NO_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(
            runtime_error.ends_with("failed - error: container not running, message: \"\""),
            "{runtime_error}"
        );
    }

    #[tokio::test]
    async fn http_hook_failures_carry_upstreams_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let (p, c) = (pod(), container());
        let target = Target {
            pod: &p,
            container: &c,
            container_id: "id",
            pod_ip: "127.0.0.1",
        };
        let handler = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/started".into()),
                port: IntOrString::Int(i32::from(port)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let no_exec = |_: Vec<String>| async { unreachable!("not an exec hook") };
        let err = run_with(
            no_exec,
            &recorder(),
            target,
            &handler,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        let want = format!("HTTP lifecycle hook (/started) for Container \"c\" in Pod \"web_shop(u-1)\" failed - error: Get \"http://127.0.0.1:{port}/started\": ");
        assert!(err.starts_with(&want), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hook_sleeps_and_an_unknown_handler_fails() {
        let (p, c) = (pod(), container());
        let target = Target {
            pod: &p,
            container: &c,
            container_id: "id",
            pod_ip: "10.0.0.2",
        };
        let events = recorder();
        let no_exec = |_: Vec<String>| async { unreachable!("not an exec hook") };
        let handler = LifecycleHandler {
            sleep: Some(k8s_openapi::api::core::v1::SleepAction { seconds: 5 }),
            ..Default::default()
        };
        let started = tokio::time::Instant::now();
        assert_eq!(
            run_with(no_exec, &events, target, &handler, NO_TIMEOUT).await,
            Ok(())
        );
        // Virtual time: exactly the hook's seconds went by.
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // Bounded by the caller (a preStop's grace period): cut there.
        let cut = tokio::time::timeout(
            Duration::from_secs(2),
            run_with(no_exec, &events, target, &handler, NO_TIMEOUT),
        )
        .await;
        assert!(cut.is_err());
        let tcp = LifecycleHandler {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::Int(80),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = run_with(no_exec, &events, target, &tcp, NO_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            err.starts_with("Cannot run handler: invalid handler: "),
            "{err}"
        );
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
