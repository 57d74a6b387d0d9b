//! Streaming exec on the kubelet's HTTPS port (docs/architecture.md, "Streaming"), with the
//! HTTPS stand-in as the API server and a pod it created:
//!
//! - `kubectl exec` (WebSocket v5 to the stand-in, which speaks SPDY/3.1 to the kubelet as
//!   upstream's stream translator): `echo hi` prints `hi`; `sh -c 'exit 3'` exits 3; `-i cat`
//!   echoes its stdin and ends when stdin does; `-ti` (under a pseudo-terminal) gets a terminal
//!   and its exit code;
//! - the same with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` (kubectl speaks SPDY/3.1, proxied
//!   as an upgrade);
//! - `kubectl port-forward` (WebSocket tunnelling SPDY/3.1, and with
//!   `KUBECTL_PORT_FORWARD_WEBSOCKETS=false` plain SPDY/3.1): an HTTP request through it;
//! - a SPDY/3.1 client (`kubenode_spdy`) straight to :10250: exec without a TTY (stdout and
//!   stderr apart, the v4 Status with exit code 3), with stdin closed by FIN, with a TTY (a
//!   resize reaches the terminal), port-forward (`portforward.k8s.io`), and an unknown
//!   protocol refused with 403;
//! - a WebSocket client straight to :10250 with the API server's kubelet client certificate:
//!   without a TTY (stdout and stderr apart, the first empty message, the final Status with
//!   reason `NonZeroExitCode` and cause `ExitCode` 3; stdin closed by v5's close signal; the
//!   base64 subprotocol), with a TTY (a resize reaches the container's terminal: `stty size`;
//!   the exit code of the shell), an unknown subprotocol refused and a non-WebSocket request
//!   refused with 400;
//! - port-forward over WebSocket straight to :10250 (`v4.channel.k8s.io`): the port prefix on
//!   both channels, an HTTP request through the data channel to an httpd on the pod's
//!   loopback.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::{SinkExt, StreamExt};
use kubenode_integration::agent::{with_config_agent, NODE_IP};
use kubenode_integration::apiserver::podlogs::KubeletClient;
use kubenode_integration::cluster::{kubelet_api_https, HttpsStandIn};
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
    kubectl_env(agent, kubeconfig, home, args, stdin, &[])
}

/// [`kubectl_run`] with `env` set.
fn kubectl_env(
    agent: &TestAgent,
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> anyhow::Result<(i32, String, String)> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", agent.node.path().display()))
        .arg(kubectl::KUBECTL)
        .args(kubectl::common_args(kubeconfig, home))
        .args(args)
        .envs(env.iter().copied())
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
    let certs = TestDir::new(&unique_tag("kstream"))?;
    with_config_agent("kx", None, |agent| {
        let standin = HttpsStandIn::start(agent, certs.path(), kubelet_api_https())?;
        let (kubeconfig, home) = (standin.kubeconfig.clone(), standin.home.clone());
        let ca = standin.ca();
        standin.join(agent, &kubeconfig)?;
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
        // kubectl speaking SPDY/3.1 to the stand-in (proxied as an upgrade)
        let spdy = [("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")];
        let got = kubectl_env(
            agent,
            &kubeconfig,
            &home,
            &[
                "exec",
                "apiexec",
                "--",
                "sh",
                "-c",
                "echo over-spdy; exit 3",
            ],
            None,
            &spdy,
        )?;
        ensure!(
            got.0 == 3 && got.1 == "over-spdy\n",
            "SPDY kubectl exec: {got:?}"
        );
        let got = kubectl_env(
            agent,
            &kubeconfig,
            &home,
            &["exec", "-i", "apiexec", "--", "cat"],
            Some(b"spdy stdin\n"),
            &spdy,
        )?;
        ensure!(
            got.0 == 0 && got.1 == "spdy stdin\n",
            "SPDY kubectl exec -i cat: {got:?}"
        );
        // a terminal: kubectl -ti under a pseudo-terminal (script), both ways of speaking
        for env in [&[][..], &spdy[..]] {
            let got = kubectl_tty(agent, &kubeconfig, &home, env)?;
            ensure!(
                got.0 == 5 && got.1.contains("/dev/pts/"),
                "kubectl exec -ti {env:?}: {got:?}"
            );
        }

        // straight to :10250
        let client = KubeletClient::new(ca)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut outcome = rt.block_on(direct(agent, &client));
        if outcome.is_ok() {
            outcome = rt.block_on(direct_spdy(agent, &client));
        }
        if outcome.is_ok() {
            outcome = kubectl_port_forward(agent, &kubeconfig, &home, &[]);
        }
        if outcome.is_ok() {
            outcome = kubectl_port_forward(
                agent,
                &kubeconfig,
                &home,
                &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")],
            );
        }
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
        drop(standin);
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
    // neither a WebSocket nor a SPDY upgrade: 400
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

/// `kubectl exec -ti apiexec -- sh -c 'tty; exit 5'` under a pseudo-terminal (`script`), with
/// `env`: its exit code and output.
fn kubectl_tty(
    agent: &TestAgent,
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(i32, String, String)> {
    let mut line = vec![
        "nsenter".to_string(),
        format!("--net={}", agent.node.path().display()),
        kubectl::KUBECTL.to_string(),
    ];
    line.extend(
        kubectl::common_args(kubeconfig, home)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    line.extend(
        ["exec", "-ti", "apiexec", "--", "sh", "-c", "tty; exit 5"]
            .iter()
            .map(|a| a.to_string()),
    );
    let quoted: Vec<String> = line
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &quoted.join(" "), "/dev/null"])
        .envs(env.iter().copied())
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().context("spawning script")?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out?,
        Err(_) => {
            let _ = nix_kill(pid);
            bail!("kubectl exec -ti did not finish");
        }
    };
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `kubectl port-forward pod/apiexec :8080` (with `env`) and an HTTP request through it to
/// the httpd [`direct`] started.
fn kubectl_port_forward(
    agent: &TestAgent,
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    use std::io::{BufRead, Read};
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", agent.node.path().display()))
        .arg(kubectl::KUBECTL)
        .args(kubectl::common_args(kubeconfig, home))
        .args(["port-forward", "pod/apiexec", ":8080"])
        .envs(env.iter().copied())
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning kubectl port-forward")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let result = (|| -> anyhow::Result<()> {
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        let port: u16 = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .context("kubectl port-forward printed no port")?;
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                break rest.split_whitespace().next().context("no port")?.parse()?;
            }
        };
        for round in 0..3 {
            let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
            let mut s = agent.node.run_in(|| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            })??;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut page = String::new();
            s.read_to_string(&mut page)?;
            ensure!(
                page.starts_with("HTTP/1.") && page.contains("pf-hello"),
                "round {round} through kubectl port-forward {env:?}: {page:?}"
            );
        }
        Ok(())
    })();
    let _ = nix_kill(pid);
    let out = child.wait_with_output();
    result.with_context(|| format!("kubectl port-forward {env:?}: {out:?}"))
}

type SpdyConn = kubenode_spdy::Connection;

/// A SPDY/3.1 upgrade of `path` on :10250 offering `protocols`: the connection and the
/// protocol chosen, or the refusal's status and body.
async fn spdy_open(
    agent: &TestAgent,
    client: &KubeletClient,
    path: &str,
    protocols: &[&str],
) -> anyhow::Result<Result<(SpdyConn, String), (u16, String)>> {
    let tls = connect_kubelet(agent, client).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn.with_upgrades());
    let mut req = hyper::Request::post(path)
        .header("Host", NODE_IP)
        .header("Connection", "Upgrade")
        .header("Upgrade", "SPDY/3.1");
    for p in protocols {
        req = req.header("X-Stream-Protocol-Version", *p);
    }
    let mut resp = sender
        .send_request(req.body(http_body_util::Empty::<bytes::Bytes>::new())?)
        .await?;
    if resp.status() != 101 {
        use http_body_util::BodyExt;
        let status = resp.status().as_u16();
        let accepted = resp
            .headers()
            .get_all("X-Accepted-Stream-Protocol-Versions")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let body = resp.into_body().collect().await?.to_bytes();
        return Ok(Err((
            status,
            format!("{accepted}|{}", String::from_utf8_lossy(&body)),
        )));
    }
    let chosen = resp
        .headers()
        .get("X-Stream-Protocol-Version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let io = hyper::upgrade::on(&mut resp).await?;
    let (conn, _) = kubenode_spdy::Connection::start(
        hyper_util::rt::TokioIo::new(io),
        kubenode_spdy::Role::Client,
        kubenode_spdy::Config::default(),
    );
    Ok(Ok((conn, chosen)))
}

/// Opens a stream of `stream_type` (and `extra` headers).
async fn spdy_stream(
    conn: &SpdyConn,
    stream_type: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<kubenode_spdy::Stream> {
    let mut h = vec![("streamtype".to_string(), stream_type.to_string())];
    h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    Ok(conn.open_stream(h).await?)
}

/// Reads a stream to its end, bounded in time.
async fn drain(s: Option<kubenode_spdy::Stream>) -> anyhow::Result<Vec<u8>> {
    let Some(s) = s else { return Ok(Vec::new()) };
    let (mut r, _) = s.split();
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(1 << 20))
        .await
        .context("a SPDY stream did not end")
}

/// SPDY/3.1 straight to :10250 (exec with and without a TTY, stdin's FIN, port-forward, a
/// refused protocol).
async fn direct_spdy(agent: &TestAgent, client: &KubeletClient) -> anyhow::Result<()> {
    let base = "/exec/default/apiexec/main";
    // no TTY: stdout and stderr apart, the exit code in v4's Status
    let (conn, proto) = spdy_open(
        agent,
        client,
        &format!("{base}?command=sh&command=-c&command=echo+out%3B+echo+err+%3E%262%3B+exit+3&output=1&error=1"),
        &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"],
    )
    .await?
    .map_err(|e| anyhow::anyhow!("SPDY exec refused: {e:?}"))?;
    ensure!(proto == "v4.channel.k8s.io", "{proto}");
    let error = spdy_stream(&conn, "error", &[]).await?;
    let stdout = spdy_stream(&conn, "stdout", &[]).await?;
    let stderr = spdy_stream(&conn, "stderr", &[]).await?;
    let (e, o, r) = tokio::join!(drain(Some(error)), drain(Some(stdout)), drain(Some(stderr)));
    let (e, o, r) = (e?, o?, r?);
    ensure!(o == b"out\n" && r == b"err\n", "{o:?} {r:?}");
    let st: serde_json::Value = serde_json::from_slice(&e)
        .with_context(|| format!("error stream: {:?}", String::from_utf8_lossy(&e)))?;
    ensure!(exit_code_of(&st) == Some("3"), "{st}");
    tokio::time::timeout(Duration::from_secs(30), conn.closed())
        .await
        .context("the kubelet did not close the SPDY connection")?;
    // stdin: its FIN closes the command's stdin
    let (conn, _) = spdy_open(
        agent,
        client,
        &format!("{base}?command=cat&input=1&output=1"),
        &["v4.channel.k8s.io"],
    )
    .await?
    .map_err(|e| anyhow::anyhow!("SPDY exec refused: {e:?}"))?;
    let error = spdy_stream(&conn, "error", &[]).await?;
    let stdin = spdy_stream(&conn, "stdin", &[]).await?;
    let stdout = spdy_stream(&conn, "stdout", &[]).await?;
    let (_, w) = stdin.split();
    w.write(b"spdy line\n").await?;
    w.close().await;
    let (e, o) = tokio::join!(drain(Some(error)), drain(Some(stdout)));
    let (e, o) = (e?, o?);
    ensure!(o == b"spdy line\n", "{:?}", String::from_utf8_lossy(&o));
    let st: serde_json::Value = serde_json::from_slice(&e)?;
    ensure!(st["status"] == "Success", "{st}");
    // a TTY: a resize reaches the terminal, the shell's exit code comes back
    let (conn, _) = spdy_open(
        agent,
        client,
        &format!("{base}?command=sh&input=1&output=1&tty=1"),
        &["v4.channel.k8s.io"],
    )
    .await?
    .map_err(|e| anyhow::anyhow!("SPDY exec refused: {e:?}"))?;
    let error = spdy_stream(&conn, "error", &[]).await?;
    let stdin = spdy_stream(&conn, "stdin", &[]).await?;
    let stdout = spdy_stream(&conn, "stdout", &[]).await?;
    let resize = spdy_stream(&conn, "resize", &[]).await?;
    resize
        .writer()
        .write(br#"{"Width":100,"Height":40}"#)
        .await?;
    let (_, stdin_w) = stdin.split();
    let (mut out_r, _) = stdout.split();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut next_ask = tokio::time::Instant::now();
    while !String::from_utf8_lossy(&out).contains("40 100") {
        if tokio::time::Instant::now() >= next_ask {
            stdin_w.write(b"stty size\n").await?;
            next_ask = tokio::time::Instant::now() + Duration::from_secs(1);
        }
        match tokio::time::timeout(Duration::from_millis(200), out_r.read()).await {
            Ok(Some(d)) => out.extend_from_slice(&d),
            Err(_) => {}
            Ok(None) => bail!("tty session ended: {:?}", String::from_utf8_lossy(&out)),
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no `40 100` from stty: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    stdin_w.write(b"exit 3\n").await?;
    let rest = tokio::time::timeout(Duration::from_secs(60), out_r.read_to_end(1 << 20)).await;
    ensure!(rest.is_ok(), "the tty's stdout did not end");
    let e = drain(Some(error)).await?;
    let st: serde_json::Value = serde_json::from_slice(&e)?;
    ensure!(exit_code_of(&st) == Some("3"), "{st}");
    // port-forward: a stream pair to the httpd direct() started
    let (conn, proto) = spdy_open(
        agent,
        client,
        "/portForward/default/apiexec",
        &["portforward.k8s.io"],
    )
    .await?
    .map_err(|e| anyhow::anyhow!("SPDY port-forward refused: {e:?}"))?;
    ensure!(proto == "portforward.k8s.io", "{proto}");
    for request in ["0", "1"] {
        let hdr = [("port", "8080"), ("requestid", request)];
        let error = spdy_stream(&conn, "error", &hdr).await?;
        let data = spdy_stream(&conn, "data", &hdr).await?;
        data.writer()
            .write(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let (e, d) = tokio::join!(drain(Some(error)), drain(Some(data)));
        let (e, d) = (e?, d?);
        let page = String::from_utf8_lossy(&d);
        ensure!(
            page.starts_with("HTTP/1.") && page.contains("pf-hello"),
            "request {request}: {page:?} {:?}",
            String::from_utf8_lossy(&e)
        );
        ensure!(e.is_empty(), "{:?}", String::from_utf8_lossy(&e));
    }
    // a port nothing listens on: the error stream says so
    let hdr = [("port", "8099"), ("requestid", "2")];
    let error = spdy_stream(&conn, "error", &hdr).await?;
    let data = spdy_stream(&conn, "data", &hdr).await?;
    let (e, _) = tokio::join!(drain(Some(error)), drain(Some(data)));
    let e = String::from_utf8_lossy(&e?).into_owned();
    ensure!(
        e.starts_with("error forwarding port 8099 to pod apiexec, uid "),
        "{e:?}"
    );
    conn.close().await;
    // an unknown protocol: 403 naming the server's
    let refused = spdy_open(
        agent,
        client,
        &format!("{base}?command=true&output=1"),
        &["v9.channel.k8s.io"],
    )
    .await?;
    match refused {
        Err((403, text)) => ensure!(
            text.contains("v4.channel.k8s.io") && text.contains("unable to negotiate protocol"),
            "{text}"
        ),
        Err(other) => bail!("unknown protocol: {other:?}"),
        Ok(_) => bail!("an unknown protocol was accepted"),
    }
    Ok(())
}
