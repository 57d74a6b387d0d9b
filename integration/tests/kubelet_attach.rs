//! Attach and run on the kubelet's HTTPS port (docs/architecture.md, "Streaming"), with the
//! HTTPS stand-in as the API server, and the server's TLS and idle settings from the
//! KubeletConfiguration (`tlsMinVersion: VersionTLS13`, `streamingConnectionIdleTimeout: 20s`):
//!
//! - `kubectl attach` (WebSocket through the stand-in's `pods/attach`) to a pod printing lines
//!   sees lines written after it attached (not the log's start), stdout and stderr apart;
//!   `kubectl attach -i` streams the same (the container has no stdin: the input is
//!   discarded, as containerd does);
//! - a container that exits ends `kubectl attach`, `kubenode attach` and a WebSocket client
//!   straight to :10250 (the latter gets the first empty message, its lines on their channels
//!   and `Success`); attaching to the exited container is refused with containerd's text; a
//!   `tty` attach streams stdout only (upstream drops stderr and uses the container's `tty`);
//! - a quiet attach session is closed after the idle timeout;
//! - `POST /run` with `curl --cert` returns the command's output, a failing command is 500 with
//!   the CRI client's text, an unknown pod 404;
//! - a TLS 1.2 client is refused, TLS 1.3 served;
//! - a container with `stdin`/`stdinOnce` and one with a terminal (`attach_stdin_and_tty`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::{SinkExt, StreamExt};
use kubenode_integration::agent::{bin, with_config_agent, NODE_IP};
use kubenode_integration::apiserver::podlogs::KubeletClient;
use kubenode_integration::cluster::{kubelet_api_https, HttpsStandIn};
use kubenode_integration::{
    curl_kubelet, kubectl, privileged, run, run_tests, unique_tag, Spawned, TestAgent, TestDir,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    run_tests(vec![privileged("kubelet_attach_and_run", attach)])
}

/// `kubectl ARGS` in the node's namespace.
fn kubectl_cmd(
    agent: &TestAgent,
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", agent.node.path().display()))
        .arg(kubectl::KUBECTL)
        .args(kubectl::common_args(kubeconfig, home))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

/// Runs `kubectl ARGS` to its end: exit code, stdout, stderr.
fn kubectl_run(
    agent: &TestAgent,
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<(i32, String, String)> {
    let out = run(
        &mut kubectl_cmd(agent, kubeconfig, home, args),
        Duration::from_secs(90),
    )?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The numbers of the lines `<word> N` in `text`.
fn numbers(text: &str, word: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(word)?.trim().parse().ok())
        .collect()
}

fn attach() -> anyhow::Result<()> {
    let certs = TestDir::new(&unique_tag("kattach"))?;
    let config = "tlsMinVersion: VersionTLS13\nstreamingConnectionIdleTimeout: 20s\n";
    with_config_agent("ka", Some(config), |agent| {
        let standin = HttpsStandIn::start(agent, certs.path(), kubelet_api_https())?;
        let (kubeconfig, home) = (standin.kubeconfig.clone(), standin.home.clone());
        let ca = standin.ca();
        let now = jiff::Timestamp::now();
        let pair = ca.client(
            "kube-apiserver-kubelet-client",
            &[],
            now - jiff::SignedDuration::from_secs(300),
            now + jiff::SignedDuration::from_hours(1),
        )?;
        let (crt, key) = (certs.join("client.crt"), certs.join("client.key"));
        std::fs::write(&crt, &pair.cert_pem)?;
        std::fs::write(&key, &pair.key_pem)?;
        standin.join(agent, &kubeconfig)?;
        let pod = |name: &str, restart: &str, script: &str| -> anyhow::Result<()> {
            let manifest = certs.join(format!("{name}.yaml"));
            std::fs::write(
                &manifest,
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {}\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    args: [\"/bin/sh\", \"-c\", {script:?}]\n",
                    agent.node_name(),
                    agent.image
                ),
            )?;
            let (code, _, err) = kubectl_run(
                agent,
                &kubeconfig,
                &home,
                &["create", "-f", &manifest.display().to_string()],
            )?;
            ensure!(code == 0, "kubectl create {name}: {err}");
            Ok(())
        };
        pod(
            "ticker",
            "Always",
            "i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.2; done",
        )?;
        pod(
            "finite",
            "Never",
            "while [ ! -e /tmp/go ]; do sleep 0.1; done; sleep 1; \
             for i in 1 2 3; do echo fin $i; sleep 0.3; done; echo done-err >&2",
        )?;
        pod("quiet", "Always", "sleep 3600")?;
        let k = server_paths(&kubeconfig, &home);
        let outcome = scenarios(agent, &k, ca, &crt, &key)
            .and_then(|()| attach_stdin_and_tty(agent, &k, ca, certs.path()));
        // the API pods go before the agent does (their cgroups with them)
        for name in [
            "ticker", "finite", "quiet", "reader", "term", "term2", "cli",
        ] {
            let _ = kubectl_run(
                agent,
                &kubeconfig,
                &home,
                &["delete", "pod", name, "--wait=false"],
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent.pods()?.iter().any(|p| {
            matches!(
                p.metadata.name.as_deref(),
                Some("ticker" | "finite" | "quiet" | "reader" | "term" | "term2" | "cli")
            )
        }) {
            ensure!(Instant::now() < deadline, "the test's pods are still there");
            std::thread::sleep(Duration::from_millis(500));
        }
        outcome?;
        drop(standin);
        Ok(())
    })
}

/// The kubeconfig and HOME kubectl runs with.
struct Kubectl<'a> {
    kubeconfig: &'a std::path::Path,
    home: &'a std::path::Path,
}

fn server_paths<'a>(kubeconfig: &'a std::path::Path, home: &'a std::path::Path) -> Kubectl<'a> {
    Kubectl { kubeconfig, home }
}

fn scenarios(
    agent: &TestAgent,
    k: &Kubectl<'_>,
    ca: &kubenode_integration::apiserver::tls::Ca,
    crt: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<()> {
    let kc = |args: &[&str]| kubectl_run(agent, k.kubeconfig, k.home, args);
    // the ticker runs and has written a few lines
    let deadline = Instant::now() + Duration::from_secs(90);
    let before = loop {
        let (code, out, _) = kc(&["logs", "ticker"])?;
        let n = numbers(&out, "tick ");
        if code == 0 && n.len() >= 5 {
            break *n.last().unwrap_or(&0);
        }
        ensure!(
            Instant::now() < deadline,
            "the ticker did not start: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // kubectl attach: new lines only, stdout and stderr apart
    let a = Spawned::spawn(kubectl_cmd(
        agent,
        k.kubeconfig,
        k.home,
        &["attach", "ticker"],
    ))?;
    a.wait_for("kubectl attach ticker", |out, err| {
        numbers(out, "tick ").len() >= 3 && numbers(err, "tock ").len() >= 3
    })?;
    let seen = numbers(&a.out(), "tick ");
    ensure!(
        seen[0] > before,
        "attach printed old lines: first {} after {before} was logged",
        seen[0]
    );
    ensure!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missing or repeated: {seen:?}"
    );
    ensure!(numbers(&a.out(), "tock ").is_empty(), "stderr on stdout");
    drop(a);
    // -i: the container has no stdin; its output streams all the same
    let mut cmd = kubectl_cmd(agent, k.kubeconfig, k.home, &["attach", "-i", "ticker"]);
    cmd.stdin(Stdio::piped());
    let mut a = Spawned::spawn(cmd)?;
    if let Some(mut stdin) = a.child.stdin.take() {
        use std::io::Write;
        stdin.write_all(b"ignored input\n")?;
    }
    a.wait_for("kubectl attach -i ticker", |out, _| {
        numbers(out, "tick ").len() >= 3
    })?;
    drop(a);

    // the finite pod: three attachers, then the container prints and exits
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, phase, _) = kc(&["get", "pod", "finite", "-o", "jsonpath={.status.phase}"])?;
        if phase == "Running" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "finite is not running: {phase:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut via_kubectl = Spawned::spawn(kubectl_cmd(
        agent,
        k.kubeconfig,
        k.home,
        &["attach", "finite"],
    ))?;
    let mut cli = Command::new(bin());
    cli.args(["attach", "finite"])
        .env("KUBENODE_RUN_DIR", agent.dir.join("run"))
        .stdin(Stdio::null());
    let mut via_cli = Spawned::spawn(cli)?;
    let client = KubeletClient::new(ca)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut ws, proto) = rt.block_on(open(
        agent,
        &client,
        "/attach/default/finite/main?output=1&error=1",
        "v5.channel.k8s.io",
    ))?;
    ensure!(proto == "v5.channel.k8s.io", "{proto}");
    let (mut tty_ws, _) = rt.block_on(open(
        agent,
        &client,
        "/attach/default/finite/main?input=1&output=1&error=1&tty=1",
        "v5.channel.k8s.io",
    ))?;
    rt.block_on(tty_ws.send(Message::binary(b"\x00to nowhere\n".to_vec())))?;
    via_kubectl.wait_for("kubectl attach finite", |_, err| {
        err.contains("If you don't see a command prompt")
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let (code, _, err) = kc(&["exec", "finite", "--", "touch", "/tmp/go"])?;
    ensure!(code == 0, "kubectl exec touch: {err}");
    let s = rt.block_on(collect(&mut ws))?;
    ensure!(s.first == Some((1, 0)), "first message: {s:?}");
    ensure!(
        s.stdout == b"fin 1\nfin 2\nfin 3\n" && s.stderr == b"done-err\n",
        "{s:?}"
    );
    let st: serde_json::Value = serde_json::from_slice(&s.error)
        .with_context(|| format!("status {:?}", String::from_utf8_lossy(&s.error)))?;
    ensure!(st["status"] == "Success", "{st}");
    let s = rt.block_on(collect(&mut tty_ws))?;
    ensure!(
        s.stdout == b"fin 1\nfin 2\nfin 3\n" && s.stderr.is_empty(),
        "tty attach: {s:?}"
    );
    let code = via_kubectl.wait_exit("kubectl attach finite")?;
    ensure!(
        code == 0 && via_kubectl.out().contains("fin 3") && via_kubectl.err().contains("done-err"),
        "kubectl attach finite: {code} {:?} {:?}",
        via_kubectl.out(),
        via_kubectl.err()
    );
    let code = via_cli.wait_exit("kubenode attach finite")?;
    ensure!(
        code == 0 && via_cli.out() == "fin 1\nfin 2\nfin 3\n" && via_cli.err() == "done-err\n",
        "kubenode attach finite: {code} {:?} {:?}",
        via_cli.out(),
        via_cli.err()
    );
    // the container exited: attaching is refused before the upgrade
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt.block_on(open(
            agent,
            &client,
            "/attach/default/finite/main?output=1",
            "v5.channel.k8s.io",
        )) {
            Err(e) => {
                let text = format!("{e:#}");
                ensure!(
                    text.contains("500") && text.contains("container is in CONTAINER_EXITED state"),
                    "{text}"
                );
                break;
            }
            Ok((mut ws, _)) => {
                // raced the exit: this session ends at once
                let _ = rt.block_on(collect(&mut ws));
                ensure!(
                    Instant::now() < deadline,
                    "attach to an exited container accepted"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }

    // the idle timeout (20s) closes a quiet session
    let (mut quiet, _) = rt.block_on(open(
        agent,
        &client,
        "/attach/default/quiet/main?output=1&error=1",
        "v5.channel.k8s.io",
    ))?;
    let ended = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, quiet.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    });
    ensure!(ended, "the idle attach session was not closed");

    // /run with a client certificate
    let cert = [
        "--cert",
        crt.to_str().unwrap_or(""),
        "--key",
        key.to_str().unwrap_or(""),
    ];
    let got = curl_kubelet(
        agent,
        "/run/default/ticker/main?cmd=echo+ran+ok",
        &[&cert[..], &["-X", "POST"]].concat(),
    )?;
    ensure!(
        got.status == 200 && got.body == "ran ok\n",
        "/run echo: {got:?}"
    );
    let got = curl_kubelet(
        agent,
        "/run/default/ticker/main?cmd=sh+-c+false",
        &[&cert[..], &["-X", "POST"]].concat(),
    )?;
    ensure!(
        got.status == 500 && got.body.starts_with("command 'sh -c false' exited with 1"),
        "/run false: {got:?}"
    );
    let got = curl_kubelet(
        agent,
        "/run/default/nosuchpod/main?cmd=true",
        &[&cert[..], &["-X", "POST"]].concat(),
    )?;
    ensure!(
        got.status == 404 && got.body == "pod does not exist",
        "/run unknown pod: {got:?}"
    );
    // tlsMinVersion: VersionTLS13: a TLS 1.2 client is refused
    let got = curl_kubelet(
        agent,
        "/healthz",
        &[&cert[..], &["--tls-max", "1.2"]].concat(),
    )?;
    ensure!(
        got.exit_code != 0 && got.status == 0,
        "a TLS 1.2 client was served: {got:?}"
    );
    let got = curl_kubelet(agent, "/healthz", &[&cert[..], &["--tlsv1.3"]].concat())?;
    ensure!(got.status == 200, "a TLS 1.3 client: {got:?}");
    Ok(())
}

/// A container with `stdin` and `stdinOnce`, and one with `stdin` and `tty`:
/// - `kubectl attach -i` (WebSocket to the stand-in, SPDY from it to the kubelet) feeds the
///   first its input; when kubectl's input ends, the container's stdin closes (`stdinOnce`
///   without a terminal), so it reads to its end, exits 0, and kubectl ends with it;
/// - `kubenode attach -i` twice into a container without `stdinOnce`: each session ends with
///   its input, the container's stdin stays open, also for a session after an agent restart;
/// - `kubectl attach -it` from a terminal (script's) types into a shell that exits 7;
/// - a WebSocket client straight to :10250 with `tty=1` sizes the second's terminal (resize
///   channel), types into it, and sees the shell's answer and `Success` when it exits.
fn attach_stdin_and_tty(
    agent: &mut TestAgent,
    k: &Kubectl<'_>,
    ca: &kubenode_integration::apiserver::tls::Ca,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let kc = |args: &[&str]| kubectl_run(agent, k.kubeconfig, k.home, args);
    for (name, extra, script) in [
        (
            "reader",
            "    stdin: true\n    stdinOnce: true\n",
            "while read l; do echo \"got $l\"; done; echo eof; echo eof-err >&2",
        ),
        (
            "term",
            "    stdin: true\n    stdinOnce: true\n    tty: true\n",
            "exec /bin/sh",
        ),
        (
            "term2",
            "    stdin: true\n    stdinOnce: true\n    tty: true\n",
            "exec /bin/sh",
        ),
        (
            "cli",
            "    stdin: true\n",
            "while read l; do echo \"got $l\"; done; echo eof",
        ),
    ] {
        let manifest = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {}\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n{extra}    args: [\"/bin/sh\", \"-c\", {script:?}]\n",
                agent.node_name(),
                agent.image
            ),
        )?;
        let (code, out, err) = kc(&["create", "-f", &manifest.display().to_string()])?;
        ensure!(code == 0, "kubectl create {name}: {out} {err}");
    }
    let phase = |name: &str| -> anyhow::Result<String> {
        Ok(kc(&["get", "pod", name, "-o", "jsonpath={.status.phase}"])?.1)
    };
    let exited_7 = |name: &str| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, code, _) = kc(&[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
            ])?;
            if code == "7" {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{name}'s exit code: {code:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    for name in ["reader", "term", "term2", "cli"] {
        while phase(name)? != "Running" {
            ensure!(
                Instant::now() < deadline,
                "{name} is not running: {:?}",
                kc(&["get", "pods", "-o", "wide"])?
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    // kubectl attach -i: the input reaches the container, its end closes the container's stdin
    let mut cmd = kubectl_cmd(agent, k.kubeconfig, k.home, &["attach", "-i", "reader"]);
    cmd.stdin(Stdio::piped());
    let mut a = Spawned::spawn(cmd)?;
    {
        use std::io::Write;
        let mut stdin = a.child.stdin.take().context("kubectl's stdin")?;
        stdin.write_all(b"alpha\nbeta\n")?;
    }
    let code = a.wait_exit("kubectl attach -i reader")?;
    ensure!(
        code == 0 && a.out().contains("got alpha\ngot beta\neof\n") && a.err().contains("eof-err"),
        "kubectl attach -i reader: {code} {:?} {:?}",
        a.out(),
        a.err()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while phase("reader")? != "Succeeded" {
        ensure!(
            Instant::now() < deadline,
            "reader did not end: {}",
            phase("reader")?
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, logs, _) = kc(&["logs", "reader"])?;
    ensure!(
        logs.contains("got alpha\ngot beta\neof\n"),
        "reader's log: {logs:?}"
    );

    // kubenode attach -i, to a container without stdinOnce: the end of our input ends the
    // session, not the container's stdin (containerd's rule), so a second session can type
    let run_dir = agent.dir.join("run");
    let cli_types = |word: &str| -> anyhow::Result<()> {
        let mut cli = Command::new(bin());
        cli.args(["attach", "-i", "cli"])
            .env("KUBENODE_RUN_DIR", &run_dir)
            .stdin(Stdio::piped());
        let mut a = Spawned::spawn(cli)?;
        let mut stdin = a.child.stdin.take().context("kubenode's stdin")?;
        {
            use std::io::Write;
            stdin.write_all(format!("{word}\n").as_bytes())?;
        }
        let want = format!("got {word}\n");
        a.wait_for("kubenode attach -i cli", |out, _| out.contains(&want))?;
        // the end of our input ends the session
        drop(stdin);
        let code = a.wait_exit("kubenode attach -i cli")?;
        ensure!(
            code == 0 && !a.out().contains("eof"),
            "kubenode attach -i cli: {code} {:?} {:?}",
            a.out(),
            a.err()
        );
        Ok(())
    };
    cli_types("one")?;
    cli_types("two")?;
    ensure!(phase("cli")? == "Running", "cli stopped: {}", phase("cli")?);

    // kubectl attach -it on a terminal of its own (script's): SPDY with a terminal from the
    // stand-in to the kubelet; what is typed reaches the shell, its answer comes back
    let inner = kubectl_cmd(agent, k.kubeconfig, k.home, &["attach", "-it", "term2"]);
    let line: Vec<String> = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &line.join(" "), "/dev/null"])
        .env_remove("KUBECONFIG")
        .env("HOME", k.home)
        .stdin(Stdio::piped());
    let mut a = Spawned::spawn(cmd)?;
    let mut typed = a.child.stdin.take().context("script's stdin")?;
    a.wait_for("kubectl attach -it term2", |out, _| {
        out.contains("If you don't see a command prompt")
    })?;
    {
        use std::io::Write;
        typed.write_all(b"echo hi-$((6*7)); exit 7\n")?;
    }
    a.wait_for("the shell's answer", |out, _| out.contains("hi-42"))?;
    exited_7("term2")?;
    a.wait_exit("kubectl attach -it term2")?;
    drop(typed);

    // a terminal over WebSocket, with a resize
    let client = KubeletClient::new(ca)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut ws, _) = rt.block_on(open(
        agent,
        &client,
        "/attach/default/term/main?input=1&output=1&tty=1",
        "v5.channel.k8s.io",
    ))?;
    rt.block_on(async {
        ws.send(Message::binary(
            b"\x04{\"Width\":100,\"Height\":30}".to_vec(),
        ))
        .await?;
        ws.send(Message::binary(b"\x00stty size; exit 7\n".to_vec()))
            .await
    })?;
    let s = rt.block_on(collect(&mut ws))?;
    let out = String::from_utf8_lossy(&s.stdout);
    ensure!(out.contains("30 100"), "the terminal's size: {out:?}");
    ensure!(s.stderr.is_empty(), "stderr on a terminal: {s:?}");
    let st: serde_json::Value = serde_json::from_slice(&s.error)
        .with_context(|| format!("status {:?}", String::from_utf8_lossy(&s.error)))?;
    ensure!(st["status"] == "Success", "{st}");
    exited_7("term")?;
    // the agent restarts: the container's shim kept its stdin and serves it to the new agent
    agent.kill();
    agent.spawn()?;
    // the restarted agent lists the API's pods and adopts the running container first: until
    // then neither exec nor attach finds it
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent
        .kubenode(&["exec", "cli", "--", "true"])?
        .status
        .success()
    {
        ensure!(
            Instant::now() < deadline,
            "cli's container is not found again after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cli_types("three")?;
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Opens `path` over WebSocket with `protocol` straight to :10250 with the API server's
/// kubelet client certificate: the socket and the negotiated subprotocol.
async fn open(
    agent: &TestAgent,
    client: &KubeletClient,
    path: &str,
    protocol: &str,
) -> anyhow::Result<(Ws, String)> {
    let addr: std::net::SocketAddr = format!("{NODE_IP}:10250").parse()?;
    let tcp = agent
        .node
        .run_in(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)))??;
    tcp.set_nonblocking(true)?;
    let tcp = tokio::net::TcpStream::from_std(tcp)?;
    let name = rustls::pki_types::ServerName::try_from(NODE_IP.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(client.tls_config())
        .connect(name, tcp)
        .await?;
    let mut req = format!("wss://{NODE_IP}:10250{path}").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let (ws, resp) = match tokio_tungstenite::client_async(req, tls).await {
        Ok(r) => r,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            bail!(
                "refused: {} {}",
                resp.status().as_u16(),
                String::from_utf8_lossy(body)
            );
        }
        Err(e) => return Err(e.into()),
    };
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ws, chosen))
}

/// What a session brought back.
#[derive(Debug, Default)]
struct Session {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    error: Vec<u8>,
    first: Option<(u8, usize)>,
}

/// Reads a binary-protocol session to its close.
async fn collect(ws: &mut Ws) -> anyhow::Result<Session> {
    let mut s = Session::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("the session did not end: {s:?}"),
            Ok(None) => break,
            Ok(Some(m)) => m?,
        };
        let b = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            other => bail!("unexpected message {other:?}"),
        };
        let Some((&ch, d)) = b.split_first() else {
            continue;
        };
        s.first.get_or_insert((ch, d.len()));
        match ch {
            1 => s.stdout.extend_from_slice(d),
            2 => s.stderr.extend_from_slice(d),
            3 => s.error.extend_from_slice(d),
            _ => bail!("output on channel {ch}"),
        }
    }
    Ok(s)
}
