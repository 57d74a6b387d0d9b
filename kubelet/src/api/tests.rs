//! The API end to end over a real unix socket and TCP port, with a fixed view.

use std::io::Seek;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};

use super::*;
use crate::testing;

struct FixedView {
    pods: Vec<Pod>,
    log: PathBuf,
    execs: Mutex<Vec<ExecRequest>>,
}

impl NodeView for FixedView {
    fn pods(&self) -> Vec<Pod> {
        self.pods.clone()
    }
    fn events(&self) -> Vec<Event> {
        vec![Event {
            reason: Some("Started".into()),
            ..Default::default()
        }]
    }
    fn container_log(&self, target: &ContainerRef, previous: bool) -> Result<PathBuf, ApiError> {
        let pod = self
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&target.pod))
            .ok_or_else(|| ApiError::NotFound(format!("pod {} not found", target.pod)))?;
        pick_container(pod, target.container.as_deref())?;
        Ok(if previous {
            self.log.with_extension("prev")
        } else {
            self.log.clone()
        })
    }
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ApiError>> {
        Box::pin(async move {
            let out = request.command.join(" ");
            self.execs.lock().unwrap().push(request);
            Ok(ExecResponse {
                exit_code: 3,
                stdout: out,
                stderr: String::new(),
            })
        })
    }
}

fn pod(name: &str, containers: &[&str]) -> Pod {
    testing::pod()
        .name(name)
        .namespace("default")
        .containers(containers.iter().map(|c| testing::container(c)))
        .build()
}

fn target(pod: &str, container: Option<&str>) -> ContainerRef {
    ContainerRef {
        namespace: "default".into(),
        pod: pod.into(),
        container: container.map(String::from),
    }
}

#[tokio::test]
async fn socket_serves_pods_events_logs_and_exec() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    std::fs::write(&log, "t1 stdout F one\nt2 stdout P tw\nt3 stdout F o\n").unwrap();
    std::fs::write(log.with_extension("prev"), "t0 stderr F before\n").unwrap();
    let view = Arc::new(FixedView {
        pods: vec![pod("web", &["app"]), pod("two", &["a", "b"])],
        log: log.clone(),
        execs: Mutex::new(Vec::new()),
    });
    let socket = dir.path().join("run/kubenode.sock");
    let task = serve_unix(&socket, view.clone()).await.unwrap();
    let mode = std::fs::metadata(&socket)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap();
    assert_eq!(mode & 0o777, 0o600);
    let client = ApiClient::new(&socket);

    let pods = client.pods().await.unwrap();
    assert_eq!(pods.len(), 2);
    assert_eq!(
        client.events().await.unwrap()[0].reason.as_deref(),
        Some("Started")
    );

    let mut out = Vec::new();
    client
        .logs(&target("web", None), "tailLines=1", |b| {
            out.extend_from_slice(b)
        })
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "two\n");
    let mut out = Vec::new();
    client
        .logs(&target("web", Some("app")), "previous=true", |b| {
            out.extend_from_slice(b)
        })
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "before\n");

    let err = client
        .logs(&target("two", None), "", |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("choose one of: [a b]"), "{err}");
    let err = client
        .logs(&target("nope", None), "", |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pod nope not found"), "{err}");

    let answer = client
        .exec(&ExecRequest {
            target: target("web", None),
            command: vec!["echo".into(), "hi".into()],
            timeout: Duration::from_secs(2),
        })
        .await
        .unwrap();
    assert_eq!((answer.exit_code, answer.stdout.as_str()), (3, "echo hi"));
    assert_eq!(
        view.execs.lock().unwrap()[0].timeout,
        Duration::from_secs(2)
    );
    task.abort();
}

#[tokio::test]
async fn follow_streams_appended_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    std::fs::write(&log, "t1 stdout F first\n").unwrap();
    let view = Arc::new(FixedView {
        pods: vec![pod("web", &["app"])],
        log: log.clone(),
        execs: Mutex::new(Vec::new()),
    });
    let socket = dir.path().join("kubenode.sock");
    let task = serve_unix(&socket, view).await.unwrap();
    let client = ApiClient::new(&socket);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let follower = tokio::spawn(async move {
        client
            .logs(&target("web", None), "follow=true", move |b| {
                let _ = tx.send(b.to_vec());
            })
            .await
    });
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut appended = false;
    while !seen.contains("second\n") && tokio::time::Instant::now() < deadline {
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        if seen.contains("first\n") && !appended {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(b"t2 stdout P sec\n").unwrap();
            f.write_all(b"t3 stdout F ond\n").unwrap();
            appended = true;
        }
    }
    assert_eq!(seen, "first\nsecond\n");
    follower.abort();
    task.abort();
}

/// A container whose instance runs until `running` is cleared.
struct ExitingView {
    fixed: FixedView,
    running: std::sync::atomic::AtomicBool,
}

impl NodeView for ExitingView {
    fn pods(&self) -> Vec<Pod> {
        self.fixed.pods()
    }
    fn events(&self) -> Vec<Event> {
        Vec::new()
    }
    fn container_log(&self, target: &ContainerRef, previous: bool) -> Result<PathBuf, ApiError> {
        self.fixed.container_log(target, previous)
    }
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ApiError>> {
        self.fixed.exec(request)
    }
    fn container_instance(&self, _: &ContainerRef) -> Result<ContainerInstance, ApiError> {
        let running = self.running.load(std::sync::atomic::Ordering::SeqCst);
        Ok(ContainerInstance {
            id: "c1".into(),
            running,
            state: if running { "running" } else { "exited" }.into(),
            log_path: self.fixed.log.clone(),
            attach_socket: None,
            stdin: false,
            stdin_once: false,
            tty: false,
        })
    }
}

#[tokio::test]
async fn follow_ends_when_the_container_exits() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    std::fs::write(&log, "t1 stdout F first\n").unwrap();
    let view = Arc::new(ExitingView {
        fixed: FixedView {
            pods: vec![pod("web", &["app"])],
            log: log.clone(),
            execs: Mutex::new(Vec::new()),
        },
        running: true.into(),
    });
    let socket = dir.path().join("kubenode.sock");
    let task = serve_unix(&socket, view.clone()).await.unwrap();
    let client = ApiClient::new(&socket);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let mut follower = tokio::spawn(async move {
        client
            .logs(&target("web", None), "follow=true", move |b| {
                let _ = tx.send(b.to_vec());
            })
            .await
    });
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, b"first\n");
    // Still following while the container runs.
    assert!(
        tokio::time::timeout(Duration::from_millis(600), &mut follower)
            .await
            .is_err(),
        "the follow ended while the container ran"
    );
    // Its last words, then it exits: they are sent and the follow ends.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"t2 stdout F last\n").unwrap();
    }
    view.running
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let ended = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follow did not end after the container exited");
    ended.unwrap().unwrap();
    let mut rest = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        rest.extend(chunk);
    }
    assert_eq!(String::from_utf8_lossy(&rest), "last\n");
    task.abort();
}

#[tokio::test]
async fn read_only_port_serves_only_healthz_and_pods() {
    let view = Arc::new(FixedView {
        pods: vec![pod("web", &["app"])],
        log: PathBuf::from("/nonexistent"),
        execs: Mutex::new(Vec::new()),
    });
    let (addr, task) = serve_tcp("127.0.0.1:0".parse().unwrap(), view)
        .await
        .unwrap();
    let get = |path: &'static str| async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut s, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", "x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(get("/healthz").await, (200, "ok".to_string()));
    let (status, body) = get("/pods").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    assert_eq!(get("/events").await.0, 404);
    assert_eq!(get("/exec").await.0, 404);
    // No debugging handler on the unauthenticated port: logs are for the root-only socket.
    assert_eq!(get("/containerLogs/default/web").await.0, 404);
    assert_eq!(get("/containerLogs/default/web/app").await.0, 404);
    assert_eq!(get("/services").await.0, 404);
    assert_eq!(get("/configmaps").await.0, 404);
    assert_eq!(get("/secrets").await.0, 404);
    for metrics in ["/metrics", "/metrics/cadvisor", "/metrics/probes"] {
        assert_eq!(get(metrics).await.0, 404, "{metrics}");
    }
    task.abort();
}

#[test]
fn config_maps_and_secrets_are_served_without_values() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::ByteString;
    let cm = ConfigMap {
        data: Some([("mode".to_string(), "fast".to_string())].into()),
        binary_data: Some([("blob".to_string(), ByteString(vec![1, 2]))].into()),
        ..Default::default()
    };
    let served = serde_json::to_string(&without_values(&cm)).unwrap();
    assert!(
        served.contains("\"mode\":\"\"") && served.contains("\"blob\":\"\""),
        "{served}"
    );
    let secret = Secret {
        type_: Some("Opaque".into()),
        data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
        string_data: Some([("user".to_string(), "root".to_string())].into()),
        ..Default::default()
    };
    let served = serde_json::to_string(&without_values(&secret)).unwrap();
    assert!(served.contains("\"password\":\"\""), "{served}");
    assert!(
        !served.contains("aHVudGVyMg") && !served.contains("root"),
        "{served}"
    );
}

/// Reads from `stream` until EOF or an error (the server closed it), bounded by `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.is_ok()
}

#[tokio::test]
async fn half_sent_request_head_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let view = Arc::new(FixedView {
        pods: vec![pod("web", &["app"])],
        log: PathBuf::from("/nonexistent"),
        execs: Mutex::new(Vec::new()),
    });
    let limits = ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    };
    let (addr, task) = serve_tcp_with("127.0.0.1:0".parse().unwrap(), view, limits)
        .await
        .unwrap();
    // A slowloris client: half a request head, then nothing.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /pods HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // A client that connects and never sends anything.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The wait is bounded only so that a server without the timeout fails the test.
    assert!(
        closed_within(&mut slow, Duration::from_secs(20)).await,
        "the server kept a half-sent request head open"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(20)).await,
        "the server kept a silent connection open"
    );
    task.abort();
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let view = Arc::new(FixedView {
        pods: vec![pod("web", &["app"])],
        log: PathBuf::from("/nonexistent"),
        execs: Mutex::new(Vec::new()),
    });
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(60),
        max_connections: 2,
    };
    let (addr, task) = serve_tcp_with("127.0.0.1:0".parse().unwrap(), view, limits)
        .await
        .unwrap();
    let holders = [
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    ];
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // Both slots are held: the third connection is not served while they are.
    let early = tokio::time::timeout(Duration::from_millis(700), third.read_to_end(&mut answer))
        .await
        .is_ok();
    assert!(
        !early && answer.is_empty(),
        "a connection over the limit was served: {:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(holders);
    tokio::time::timeout(Duration::from_secs(20), third.read_to_end(&mut answer))
        .await
        .expect("served once a slot is free")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    task.abort();
}

#[tokio::test]
async fn tail_of_a_huge_log_reads_only_its_end() {
    // A 1 TiB log (sparse: a hole, then 20 CRI lines): more than any machine could read into
    // memory, so only a reader that starts from the end can answer.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&log).unwrap();
        f.set_len(1 << 40).unwrap();
        f.seek(std::io::SeekFrom::End(0)).unwrap();
        f.write_all(b"\n").unwrap();
        for i in 0..20 {
            writeln!(f, "2026-11-28T01:00:{i:02}.000000000Z stdout F line {i}").unwrap();
        }
    }
    let view = Arc::new(FixedView {
        pods: vec![pod("web", &["app"])],
        log: log.clone(),
        execs: Mutex::new(Vec::new()),
    });
    let socket = dir.path().join("kubenode.sock");
    let task = serve_unix(&socket, view).await.unwrap();
    let client = ApiClient::new(&socket);
    let mut out = Vec::new();
    client
        .logs(&target("web", None), "tailLines=10", |b| {
            out.extend_from_slice(b)
        })
        .await
        .unwrap();
    let want: String = (10..20).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), want);

    // limitBytes and sinceTime (escaped, as kubectl sends it) read forward from the tail too.
    let mut out = Vec::new();
    client
        .logs(
            &target("web", None),
            "tailLines=5&sinceTime=2026-11-28T01%3A00%3A17Z&limitBytes=12",
            |b| out.extend_from_slice(b),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "line 17\nline");
    task.abort();
}

/// An agent that accepts the connection and never answers makes a read request fail with a
/// timeout that names the socket, instead of hanging the CLI (the clock is tokio's paused
/// one: the 60 s pass at once).
#[tokio::test(start_paused = true)]
async fn a_silent_agent_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kubenode.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let held = tokio::spawn(async move {
        // Accept and hold the connection open without a byte of answer.
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(stream);
    });
    let err = ApiClient::new(&socket).pods().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                what: "a read request",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("did not answer within 60s"),
        "{err}"
    );
    held.abort();
}

/// A view with one pod whose container's instance runs until `running` is cleared.
struct AttachView {
    pods: Vec<Pod>,
    log: PathBuf,
    running: std::sync::atomic::AtomicBool,
}

impl NodeView for AttachView {
    fn pods(&self) -> Vec<Pod> {
        self.pods.clone()
    }
    fn events(&self) -> Vec<Event> {
        Vec::new()
    }
    fn container_log(&self, _: &ContainerRef, _: bool) -> Result<PathBuf, ApiError> {
        Ok(self.log.clone())
    }
    fn exec(&self, _: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ApiError>> {
        Box::pin(async { Err(ApiError::Internal("no exec here".into())) })
    }
    fn container_instance(&self, target: &ContainerRef) -> Result<ContainerInstance, ApiError> {
        let pod = self
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&target.pod))
            .ok_or_else(|| ApiError::NotFound(format!("pod {} not found", target.pod)))?;
        pick_container(pod, target.container.as_deref())?;
        let running = self.running.load(std::sync::atomic::Ordering::SeqCst);
        Ok(ContainerInstance {
            id: "c1".into(),
            running,
            state: if running { "running" } else { "exited" }.into(),
            log_path: self.log.clone(),
            attach_socket: None,
            stdin: false,
            stdin_once: false,
            tty: false,
        })
    }
}

/// `kubenode attach`'s path: the socket's `/attach` streams the lines written after it
/// attached, each on its stream's channel, and ends with `Success` when the container stops;
/// a container that is not running is refused with containerd's text.
#[tokio::test]
async fn socket_attach_streams_new_lines_until_the_container_exits() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    std::fs::write(&log, "2026-01-01T00:00:00Z stdout F before\n").unwrap();
    let view = Arc::new(AttachView {
        pods: vec![pod("web", &["app"])],
        log: log.clone(),
        running: std::sync::atomic::AtomicBool::new(true),
    });
    let socket = dir.path().join("run/kubenode.sock");
    let task = serve_unix(&socket, view.clone()).await.unwrap();
    let client = ApiClient::new(&socket);
    let got: Arc<Mutex<Vec<(u8, String)>>> = Arc::default();
    let attach = {
        let got = got.clone();
        let client = client.clone();
        tokio::spawn(async move {
            client
                .attach(&target("web", Some("app")), |ch, d| {
                    got.lock()
                        .unwrap()
                        .push((ch, String::from_utf8_lossy(d).into_owned()))
                })
                .await
        })
    };
    let mut w = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while got.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing streamed");
        writeln!(w, "2026-01-01T00:00:01Z stdout F line {i}").unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writeln!(w, "2026-01-01T00:00:02Z stderr F to stderr").unwrap();
    writeln!(w, "2026-01-01T00:00:02Z stdout F last").unwrap();
    view.running
        .store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), attach)
        .await
        .expect("the attach did not end")
        .unwrap()
        .unwrap();
    let got = got.lock().unwrap().clone();
    let stdout: String = got
        .iter()
        .filter(|(c, _)| *c == 1)
        .map(|(_, t)| t.as_str())
        .collect();
    let stderr: String = got
        .iter()
        .filter(|(c, _)| *c == 2)
        .map(|(_, t)| t.as_str())
        .collect();
    assert!(!stdout.contains("before"), "{stdout:?}");
    assert!(stdout.ends_with("last\n"), "{stdout:?}");
    assert_eq!(stderr, "to stderr\n");
    // not running: refused before the upgrade
    let err = client
        .attach(&target("web", Some("app")), |_, _| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("container is in CONTAINER_EXITED state"),
        "{err}"
    );
    task.abort();
}

/// A view whose one container has a shim attach socket (`socket`), with `stdin`, `stdinOnce`
/// and `tty` as given.
struct LiveView {
    pods: Vec<Pod>,
    socket: PathBuf,
    stdin: bool,
    stdin_once: bool,
    tty: bool,
}

impl NodeView for LiveView {
    fn pods(&self) -> Vec<Pod> {
        self.pods.clone()
    }
    fn events(&self) -> Vec<Event> {
        Vec::new()
    }
    fn container_log(&self, _: &ContainerRef, _: bool) -> Result<PathBuf, ApiError> {
        Err(ApiError::Internal("no log here".into()))
    }
    fn exec(&self, _: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ApiError>> {
        Box::pin(async { Err(ApiError::Internal("no exec here".into())) })
    }
    fn container_instance(&self, _: &ContainerRef) -> Result<ContainerInstance, ApiError> {
        Ok(ContainerInstance {
            id: "c1".into(),
            running: true,
            state: "running".into(),
            log_path: PathBuf::from("/nonexistent"),
            attach_socket: Some(self.socket.clone()),
            stdin: self.stdin,
            stdin_once: self.stdin_once,
            tty: self.tty,
        })
    }
}

/// A stand-in shim on `socket`: records the frames of its one client, answers each STDIN
/// frame with `got <data>` on stdout and each RESIZE with `size WxH`, and closes (the container
/// exited) after the frame kind `close_after`.
async fn fake_shim(
    socket: PathBuf,
    close_after: u8,
) -> tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>> {
    use kubenode_runtime::shim::attach as wire;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut frames = wire::Decoder::default();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return seen;
            }
            frames.feed(&buf[..n]);
            while let Some((kind, data)) = frames.next_frame().unwrap() {
                let mut out = Vec::new();
                match kind {
                    wire::STDIN => {
                        let text = format!("got {}", String::from_utf8_lossy(&data));
                        wire::encode(&mut out, wire::STDOUT, text.as_bytes());
                    }
                    wire::RESIZE => {
                        let (w, h) = wire::parse_resize(&data).unwrap();
                        wire::encode(&mut out, wire::STDOUT, format!("size {w}x{h}").as_bytes());
                    }
                    _ => {}
                }
                conn.write_all(&out).await.unwrap();
                seen.push((kind, data));
                if kind == close_after {
                    return seen;
                }
            }
        }
    })
}

/// An attach to a container with a shim attach socket, as containerd's `ContainerIO.Attach`:
/// - `stdin` without `stdinOnce`: the client's input reaches the container, and the end of it
///   ends the session (`Success`) while the container runs on;
/// - `stdin` and `stdinOnce`, no terminal: the end of the client's input closes the
///   container's stdin, and the session goes on until the container's output ends;
/// - a terminal without `stdin`: the client's input changes nothing (not even its end), its
///   resizes reach the terminal, and the session ends with the container.
#[tokio::test]
async fn live_attach_follows_containerds_rules() {
    use kubenode_runtime::shim::attach as wire;
    let collect =
        |got: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
    for (stdin, stdin_once, tty, close_after) in [
        (true, false, false, u8::MAX),
        (true, true, false, wire::STDIN_CLOSE),
        (false, false, true, wire::RESIZE),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let shim_socket = dir.path().join("attach");
        let shim = fake_shim(shim_socket.clone(), close_after).await;
        let view = Arc::new(LiveView {
            pods: vec![pod("web", &["app"])],
            socket: shim_socket,
            stdin,
            stdin_once,
            tty,
        });
        let socket = dir.path().join("run/kubenode.sock");
        let task = serve_unix(&socket, view).await.unwrap();
        let client = ApiClient::new(&socket);
        let opts = stream::ExecOptions {
            target: target("web", Some("app")),
            command: Vec::new(),
            stdin: true,
            stdout: true,
            stderr: !tty,
            tty,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let got: Arc<Mutex<Vec<u8>>> = Arc::default();
        let session = {
            let got = got.clone();
            tokio::spawn(async move {
                client
                    .attach_stream(&opts, rx, |_, d| got.lock().unwrap().extend_from_slice(d))
                    .await
            })
        };
        tx.send(StreamInput::Stdin(b"hello".to_vec()))
            .await
            .unwrap();
        if stdin {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !collect(&got).contains("got hello") {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no echo: {:?}",
                    collect(&got)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tx.send(StreamInput::StdinClosed).await.unwrap();
        if tty {
            tx.send(StreamInput::Resize(stream::channel::TerminalSize {
                width: 100,
                height: 30,
            }))
            .await
            .unwrap();
        }
        let code = tokio::time::timeout(Duration::from_secs(30), session)
            .await
            .expect("the session did not end")
            .unwrap()
            .unwrap();
        assert_eq!(code, 0, "{stdin} {stdin_once} {tty}");
        if !stdin_once {
            // the session ended first; the stand-in shim sees its client go
            drop(tx);
        }
        let seen = tokio::time::timeout(Duration::from_secs(30), shim)
            .await
            .expect("the shim's client did not end")
            .unwrap();
        let kinds: Vec<u8> = seen.iter().map(|(k, _)| *k).collect();
        match (stdin, stdin_once, tty) {
            (true, false, false) => {
                assert_eq!(kinds, [wire::STDIN, wire::STDIN_CLOSE]);
                assert_eq!(collect(&got), "got hello");
            }
            (true, true, false) => {
                assert_eq!(kinds, [wire::STDIN, wire::STDIN_CLOSE]);
                assert_eq!(collect(&got), "got hello");
            }
            _ => {
                // no stdin: nothing of the client's input, and its end did not end the session:
                // the resize sent after it reached the terminal
                assert_eq!(kinds, [wire::RESIZE]);
                assert_eq!(collect(&got), "size 100x30");
            }
        }
        task.abort();
    }
}

/// A view whose containers are the host (exec runs the command here) and whose pods' network
/// is the host's loopback: the CLI's streaming client against the socket's handlers.
struct HostView {
    pods: Vec<Pod>,
}

impl NodeView for HostView {
    fn pods(&self) -> Vec<Pod> {
        self.pods.clone()
    }
    fn events(&self) -> Vec<Event> {
        Vec::new()
    }
    fn container_log(&self, _: &ContainerRef, _: bool) -> Result<PathBuf, ApiError> {
        Err(ApiError::NotFound("no logs here".into()))
    }
    fn exec(&self, _: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ApiError>> {
        Box::pin(async { Err(ApiError::Internal("no exec here".into())) })
    }
    fn exec_command(
        &self,
        _: &ContainerRef,
        command: &[String],
        _: bool,
    ) -> Result<std::process::Command, ApiError> {
        let mut c = std::process::Command::new(&command[0]);
        c.args(&command[1..]);
        Ok(c)
    }
    fn pod_network(&self, _: &str, pod: &str) -> Result<(Option<PathBuf>, String), ApiError> {
        if pod == "web" {
            Ok((None, "uid-1".into()))
        } else {
            Err(ApiError::NotFound(format!("pod {pod} not found")))
        }
    }
}

/// `kubenode exec -i` and `kubenode port-forward`'s paths: the socket's `/exec/...` takes
/// stdin and its end and returns the exit code apart from stdout and stderr; its
/// `/portForward/...` copies a local connection to a server and back, and reports a refused
/// port with upstream's message.
#[tokio::test]
async fn socket_exec_stream_and_port_forward() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/kubenode.sock");
    let task = serve_unix(
        &socket,
        Arc::new(HostView {
            pods: vec![pod("web", &["app"])],
        }),
    )
    .await
    .unwrap();
    let client = ApiClient::new(&socket);

    let opts = stream::ExecOptions {
        target: target("web", Some("app")),
        command: vec!["sh".into(), "-c".into(), "cat; echo e >&2; exit 3".into()],
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(StreamInput::Stdin(b"hi\n".to_vec())).await.unwrap();
    tx.send(StreamInput::StdinClosed).await.unwrap();
    let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
    let code = tokio::time::timeout(
        Duration::from_secs(30),
        client.exec_stream(&opts, rx, |ch, d| got.push((ch, d.to_vec()))),
    )
    .await
    .expect("the exec did not end")
    .unwrap();
    assert_eq!(code, 3);
    let on = |c: u8| -> Vec<u8> {
        got.iter()
            .filter(|(ch, _)| *ch == c)
            .flat_map(|(_, d)| d.clone())
            .collect()
    };
    assert_eq!(on(1), b"hi\n");
    assert_eq!(on(2), b"e\n");

    // a server standing in for the pod's: one line in, its echo out, then closed
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut c, _) = server.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 64];
        while !buf.ends_with(b"\n") {
            let n = c.read(&mut b).await.unwrap();
            assert!(n > 0, "the forward closed early");
            buf.extend_from_slice(&b[..n]);
        }
        c.write_all(b"echo: ").await.unwrap();
        c.write_all(&buf).await.unwrap();
    });
    let (local, mut user) = tokio::io::duplex(1024);
    let forward = {
        let client = client.clone();
        tokio::spawn(async move { client.port_forward("default", "web", port, local).await })
    };
    user.write_all(b"ping\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), user.read_to_end(&mut answer))
        .await
        .expect("no answer through the forward")
        .unwrap();
    assert_eq!(answer, b"echo: ping\n");
    forward.await.unwrap().unwrap();

    // nothing listens there any more: the agent's error comes back
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (local, _user) = tokio::io::duplex(1024);
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        client.port_forward("default", "web", closed, local),
    )
    .await
    .expect("the refused forward did not end")
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "error forwarding port {closed} to pod web, uid uid-1: "
        )),
        "{err}"
    );
    let (local, _user) = tokio::io::duplex(1024);
    let err = client
        .port_forward("default", "nope", port, local)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pod nope not found"), "{err}");
    task.abort();
}
