//! Streaming exec on the kubelet's HTTPS port (docs/architecture.md, "Streaming"), with the
//! HTTPS stand-in as the API server and a pod it created:
//!
//! - `kubectl exec` (WebSocket v5 through the stand-in's `pods/exec` proxy): `echo hi` prints
//!   `hi`; `sh -c 'exit 3'` exits 3; `-i cat` echoes its stdin and ends when stdin does;
//! - a WebSocket client straight to :10250 with the API server's kubelet client certificate:
//!   without a TTY (stdout and stderr apart, the first empty message, the final Status with
//!   reason `NonZeroExitCode` and cause `ExitCode` 3; stdin closed by v5's close signal; the
//!   base64 subprotocol), with a TTY (a resize reaches the container's terminal: `stty size`;
//!   the exit code of the shell), an unknown subprotocol refused and a non-WebSocket request
//!   refused with 400;
//! - port-forward over WebSocket straight to :10250 (`v4.channel.k8s.io`): the port prefix on
//!   both channels, an HTTP request through the data channel to an httpd on the pod's
//!   loopback. (`kubectl port-forward` tunnels SPDY/3.1 over WebSocket, which kubenode's kubelet
//!   does not speak: not tested.)

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::{SinkExt, StreamExt};
use kubenode_integration::agent::{with_config_agent, NODE_IP};
use kubenode_integration::apiserver::podlogs::KubeletClient;
use kubenode_integration::apiserver::{ApiServer, HttpsOptions, Options};
use kubenode_integration::{kubectl, privileged, run_tests, unique_tag, TestAgent, TestDir};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    run_tests(vec![privileged("kubelet_streaming_exec", exec)])
}

/// What a session brought back: each channel's bytes, the messages in order, the error
/// channel's text.
#[derive(Debug, Default)]
struct Session {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    error: Vec<u8>,
    first: Option<(u8, usize)>,
}

/// Runs `kubectl ARGS` in the node's namespace with `stdin`: its exit code, stdout and stderr.
fn kubectl_run(
    agent: &TestAgent,
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<(i32, String, String)> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", agent.node.path().display()))
        .arg(kubectl::KUBECTL)
        .args(kubectl::common_args(kubeconfig, home))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("spawning kubectl")?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)?;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out?,
        Err(_) => {
            let _ = nix_kill(pid);
            bail!("kubectl {args:?} did not finish");
        }
    };
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    // SAFETY: kill(2) with a pid of our own child.
    if unsafe { libc::kill(pid as i32, libc::SIGKILL) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A TLS connection to the node's :10250 with the API server's kubelet client certificate.
async fn connect_kubelet(
    agent: &TestAgent,
    client: &KubeletClient,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let addr: std::net::SocketAddr = format!("{NODE_IP}:10250").parse()?;
    let tcp = agent
        .node
        .run_in(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)))??;
    tcp.set_nonblocking(true)?;
    let tcp = tokio::net::TcpStream::from_std(tcp)?;
    let name = rustls::pki_types::ServerName::try_from(NODE_IP.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(client.tls_config())
        .connect(name, tcp)
        .await?)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Opens `/exec/...?query` with `protocol`: the socket and the negotiated subprotocol.
async fn open(
    agent: &TestAgent,
    client: &KubeletClient,
    path: &str,
    protocol: &str,
) -> anyhow::Result<(Ws, String)> {
    let tls = connect_kubelet(agent, client).await?;
    let mut req = format!("wss://{NODE_IP}:10250{path}").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let (ws, resp) = tokio_tungstenite::client_async(req, tls).await?;
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ws, chosen))
}

/// Reads the session to its close, decoding the binary or base64 channel protocol.
async fn collect(ws: &mut Ws, base64: bool) -> anyhow::Result<Session> {
    use base64::Engine;
    let mut s = Session::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("the session did not end: {s:?}"),
            Ok(None) => break,
            Ok(Some(m)) => m?,
        };
        let (ch, data) = match msg {
            Message::Binary(b) if !base64 => {
                let Some((&ch, d)) = b.split_first() else {
                    continue;
                };
                (ch, d.to_vec())
            }
            Message::Text(t) if base64 => {
                let t = t.as_bytes();
                let Some((&ch, d)) = t.split_first() else {
                    continue;
                };
                (
                    ch - b'0',
                    base64::engine::general_purpose::STANDARD.decode(d)?,
                )
            }
            Message::Close(_) => break,
            other => bail!("unexpected message {other:?}"),
        };
        s.first.get_or_insert((ch, data.len()));
        match ch {
            1 => s.stdout.extend(data),
            2 => s.stderr.extend(data),
            3 => s.error.extend(data),
            _ => bail!("output on channel {ch}"),
        }
    }
    Ok(s)
}

fn status(s: &Session) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(&s.error)
        .with_context(|| format!("error channel: {:?}", String::from_utf8_lossy(&s.error)))
}

fn exit_code_of(v: &serde_json::Value) -> Option<&str> {
    (v["status"] == "Failure" && v["reason"] == "NonZeroExitCode")
        .then(|| {
            v["details"]["causes"]
                .as_array()?
                .iter()
                .find(|c| c["reason"] == "ExitCode")?["message"]
                .as_str()
        })
        .flatten()
}

fn exec() -> anyhow::Result<()> {
    const ADMIN: &str = "admin-token-0123456789";
    let certs = TestDir::new(&unique_tag("kstream"))?;
    with_config_agent("kx", None, |agent| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let opts = Options {
            https: Some(HttpsOptions {
                static_tokens: vec![(
                    ADMIN.into(),
                    "kubernetes-admin".into(),
                    vec!["system:masters".into()],
                )],
                allowed_subjects: vec!["kube-apiserver-kubelet-client".into()],
                ..HttpsOptions::default()
            }),
            ..Options::default()
        };
        let server = agent
            .node
            .run_in(|| ApiServer::start_with(addr, opts))?
            .context("starting the stand-in in the node's namespace")?;
        let kubeconfig = certs.join("kubelet.conf");
        server.write_kubeconfig(&kubeconfig)?;
        let ca = server.secure().context("no CA")?.ca.clone();
        let ca_file = certs.join("ca.crt");
        std::fs::write(&ca_file, server.ca_pem().context("no CA")?)?;
        agent.kill();
        agent.extra_args = vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--client-ca-file".into(),
            ca_file.display().to_string(),
        ];
        agent.spawn()?;
        let home = certs.join("home");
        std::fs::create_dir_all(&home)?;
        let manifest = certs.join("apiexec.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: apiexec\n  namespace: default\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    args: [\"/bin/sh\", \"-c\", \"sleep 3600\"]\n",
                agent.node_name(),
                agent.image
            ),
        )?;
        let k = |args: &[&str], stdin: Option<&[u8]>| {
            kubectl_run(agent, &kubeconfig, &home, args, stdin)
        };
        let (code, _, err) = k(&["create", "-f", &manifest.display().to_string()], None)?;
        ensure!(code == 0, "kubectl create: {err}");
        // kubectl exec through the stand-in, once the container runs
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got = k(&["exec", "apiexec", "--", "echo", "hi"], None)?;
            if got.0 == 0 {
                ensure!(got.1 == "hi\n", "kubectl exec echo hi: {got:?}");
                break;
            }
            if Instant::now() > deadline {
                bail!("kubectl exec echo hi: {got:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let got = k(&["exec", "apiexec", "--", "sh", "-c", "exit 3"], None)?;
        ensure!(got.0 == 3, "kubectl exec exit 3: {got:?}");
        let got = k(
            &["exec", "-i", "apiexec", "--", "cat"],
            Some(b"hello through stdin\n"),
        )?;
        ensure!(
            got.0 == 0 && got.1 == "hello through stdin\n",
            "kubectl exec -i cat: {got:?}"
        );
        let got = k(
            &["exec", "apiexec", "--", "sh", "-c", "echo to-err >&2"],
            None,
        )?;
        ensure!(
            got.0 == 0 && got.2.contains("to-err") && got.1.is_empty(),
            "{got:?}"
        );

        // straight to :10250
        let client = KubeletClient::new(&ca)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let outcome = rt.block_on(direct(agent, &client));
        // the API pod goes before the agent does (its cgroups with it)
        let (code, _, err) = k(&["delete", "pod", "apiexec", "--wait=false"], None)?;
        ensure!(code == 0, "kubectl delete: {err}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent
            .pods()?
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("apiexec"))
        {
            ensure!(Instant::now() < deadline, "the pod apiexec is still there");
            std::thread::sleep(Duration::from_millis(500));
        }
        outcome?;
        drop(server);
        Ok(())
    })
}

async fn direct(agent: &TestAgent, client: &KubeletClient) -> anyhow::Result<()> {
    let base = "/exec/default/apiexec/main";
    // no TTY: stdout and stderr apart, the exit code in the final Status
    let (mut ws, proto) = open(
        agent,
        client,
        &format!("{base}?command=sh&command=-c&command=echo+out%3B+echo+err+%3E%262%3B+exit+3&output=1&error=1"),
        "v5.channel.k8s.io, v4.channel.k8s.io",
    )
    .await?;
    ensure!(proto == "v5.channel.k8s.io", "{proto}");
    let s = collect(&mut ws, false).await?;
    ensure!(s.first == Some((1, 0)), "first message: {s:?}");
    ensure!(s.stdout == b"out\n" && s.stderr == b"err\n", "{s:?}");
    let st = status(&s)?;
    ensure!(exit_code_of(&st) == Some("3"), "{st}");
    // stdin, closed by v5's close signal
    let (mut ws, _) = open(
        agent,
        client,
        &format!("{base}?command=cat&input=1&output=1"),
        "v5.channel.k8s.io",
    )
    .await?;
    ws.send(Message::binary(b"\x00line one\n".to_vec())).await?;
    ws.send(Message::binary(vec![255u8, 0])).await?;
    let s = collect(&mut ws, false).await?;
    ensure!(s.stdout == b"line one\n", "{s:?}");
    ensure!(status(&s)?["status"] == "Success", "{s:?}");
    // the base64 subprotocol
    let (mut ws, proto) = open(
        agent,
        client,
        &format!("{base}?command=echo&command=b64&output=1"),
        "v4.base64.channel.k8s.io",
    )
    .await?;
    ensure!(proto == "v4.base64.channel.k8s.io", "{proto}");
    let s = collect(&mut ws, true).await?;
    ensure!(s.stdout == b"b64\n", "{s:?}");
    ensure!(status(&s)?["status"] == "Success", "{s:?}");
    // a TTY: a resize reaches the container's terminal, the shell's exit code comes back
    let (mut ws, _) = open(
        agent,
        client,
        &format!("{base}?command=sh&input=1&output=1&tty=1"),
        "v5.channel.k8s.io",
    )
    .await?;
    ws.send(Message::binary(
        b"\x04{\"Width\":100,\"Height\":40}".to_vec(),
    ))
    .await?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut next_ask = tokio::time::Instant::now();
    while !String::from_utf8_lossy(&out).contains("40 100") {
        if tokio::time::Instant::now() >= next_ask {
            ws.send(Message::binary(b"\x00stty size\n".to_vec()))
                .await?;
            next_ask = tokio::time::Instant::now() + Duration::from_secs(1);
        }
        match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b.first() == Some(&1) => {
                out.extend_from_slice(&b[1..])
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => bail!(
                "tty session ended: {other:?} {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no `40 100` from stty: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    ws.send(Message::binary(b"\x00exit 3\n".to_vec())).await?;
    let s = collect(&mut ws, false).await?;
    let st = status(&s)?;
    ensure!(exit_code_of(&st) == Some("3"), "{st}");
    ensure!(s.stderr.is_empty(), "a TTY has no stderr: {s:?}");
    // port-forward: an httpd on the pod's loopback, a request through the data channel
    let (mut ws, _) = open(
        agent,
        client,
        &format!("{base}?command=sh&command=-c&command=mkdir+-p+%2Ftmp%2Fwww+%26%26+echo+pf-hello+%3E+%2Ftmp%2Fwww%2Findex.html+%26%26+httpd+-p+127.0.0.1%3A8080+-h+%2Ftmp%2Fwww&output=1&error=1"),
        "v5.channel.k8s.io",
    )
    .await?;
    let s = collect(&mut ws, false).await?;
    ensure!(status(&s)?["status"] == "Success", "starting httpd: {s:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let page = loop {
        let (mut ws, proto) = open(
            agent,
            client,
            "/portForward/default/apiexec?port=8080",
            "v4.channel.k8s.io",
        )
        .await?;
        ensure!(proto == "v4.channel.k8s.io", "{proto}");
        ws.send(Message::binary(
            b"\x00GET / HTTP/1.0\r\nHost: localhost\r\n\r\n".to_vec(),
        ))
        .await?;
        let (mut data, mut errors, mut prefixes) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => bail!("port-forward did not end: {data:?} {errors:?}"),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break,
                Ok(Some(m)) => m?,
            };
            let Message::Binary(b) = msg else { continue };
            let Some((&ch, rest)) = b.split_first() else {
                continue;
            };
            // each channel's first message is the port, little-endian
            if !prefixes.contains(&ch) {
                ensure!(
                    rest == 8080u16.to_le_bytes(),
                    "channel {ch} prefix {rest:?}"
                );
                prefixes.push(ch);
                continue;
            }
            match ch {
                0 => data.extend_from_slice(rest),
                1 => errors.extend_from_slice(rest),
                _ => bail!("port-forward output on channel {ch}"),
            }
        }
        ensure!(prefixes.len() == 2, "{prefixes:?}");
        let text = String::from_utf8_lossy(&data).into_owned();
        if text.contains("pf-hello") {
            break text;
        }
        // httpd may not listen yet: the error channel says the connection was refused
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{text:?} {:?}",
            String::from_utf8_lossy(&errors)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    ensure!(page.starts_with("HTTP/1."), "{page:?}");
    // an unknown subprotocol: the handshake is refused
    let refused = open(
        agent,
        client,
        &format!("{base}?command=true&output=1"),
        "v9.channel.k8s.io",
    )
    .await;
    ensure!(refused.is_err(), "an unknown subprotocol was accepted");
    // not a WebSocket upgrade (SPDY): 400 naming what is spoken
    let tls = connect_kubelet(agent, client).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            hyper::Request::post(format!("{base}?command=true&output=1"))
                .header("Host", NODE_IP)
                .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
                .body(http_body_util::Empty::<bytes::Bytes>::new())?,
        )
        .await?;
    ensure!(resp.status() == 400, "{:?}", resp.status());
    Ok(())
}
