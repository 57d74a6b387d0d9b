//! Exec round trip through the kubelet's HTTPS port against `runc exec` alone, in one run: a
//! standalone `kubenode agent` (client CA, `authorization.mode: AlwaysAllow`) with one busybox
//! pod; `--runs N` (default 50) times each, after 5 warm-up runs of each:
//!
//! - **:10250**: a new TCP connection, TLS with a client certificate, the WebSocket handshake
//!   of `/exec/default/<pod>/c?command=true&output=1&error=1` (`v5.channel.k8s.io`), the
//!   session read to its close (the `Success` status), as a client of the kubelet does it;
//! - **runc exec**: `runc --root <agent's> exec <container> true`, what the kubelet runs for
//!   it.
//!
//! Prints p50 and p90 of each and the ratio of the p50s (issue 18's target: at most 1.2).
//!
//! Run as root: `cargo run --release -p kubenode-integration --bin exec-bench` (build the
//! `kubenode` binary in the same profile first). Ctrl-C (SIGINT) or SIGTERM stops it and
//! removes its pod, agent and node before it exits with 130.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use kubenode_integration::agent::NODE_IP;
use kubenode_integration::apiserver::podlogs::KubeletClient;
use kubenode_integration::apiserver::tls::Ca;
use kubenode_integration::{bench_arg, interrupt, unique_tag, TestAgent};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WARMUP: usize = 5;

fn main() {
    let result = interrupt::install().and_then(|()| bench());
    interrupt::exit("exec-bench", result)
}

/// The `p`-th percentile (nearest rank) of sorted `v`.
fn percentile(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench() -> anyhow::Result<()> {
    let runs = bench_arg("--runs", 50) as usize;
    TestAgent::with_client_ca(&unique_tag("exb"), |agent, ca| measure(agent, ca, runs))
}

fn measure(agent: &TestAgent, ca: &Ca, runs: usize) -> anyhow::Result<()> {
    agent.write_manifest(
        "x.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [\"sleep\", \"3600\"]\n",
            agent.image
        ),
    )?;
    let pod = agent.pod_name("x");
    agent.wait_pod(
        &pod,
        Duration::from_secs(120),
        "running",
        kubenode_integration::pods::all_running,
    )?;
    // the container's runc id: the one whose CRI annotation names container `c`
    let root = agent.dir.join("run").join("runc");
    let id = kubenode_integration::runc_list(&root)?
        .iter()
        .find(|c| c["annotations"]["io.kubernetes.cri.container-name"] == "c")
        .and_then(|c| c["id"].as_str())
        .context("no runc container named c")?
        .to_string();
    let client = KubeletClient::new(ca)?;
    let path = format!("/exec/default/{pod}/c?command=true&output=1&error=1");
    let (mut api, mut runc) = agent.node.run_in(|| -> anyhow::Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut api = Vec::with_capacity(runs);
        let mut runc = Vec::with_capacity(runs);
        for i in 0..WARMUP + runs {
            interrupt::check()?;
            // alternate, so that both see the same machine
            let t = Instant::now();
            rt.block_on(exec_once(&client, &path))?;
            let api_time = t.elapsed();
            let t = Instant::now();
            let st = std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["exec", &id, "true"])
                .status()?;
            let runc_time = t.elapsed();
            ensure!(st.success(), "runc exec true: {st}");
            if i >= WARMUP {
                api.push(api_time);
                runc.push(runc_time);
            }
        }
        Ok((api, runc))
    })??;
    api.sort();
    runc.sort();
    let (a50, a90) = (percentile(&api, 50.0), percentile(&api, 90.0));
    let (r50, r90) = (percentile(&runc, 50.0), percentile(&runc, 90.0));
    println!("exec of `true`, {runs} runs each (after {WARMUP} warm-up runs):");
    println!(
        "  through :10250 (TLS client certificate, WebSocket v5): p50 {:.2} ms  p90 {:.2} ms",
        ms(a50),
        ms(a90)
    );
    println!(
        "  runc exec alone:                                       p50 {:.2} ms  p90 {:.2} ms",
        ms(r50),
        ms(r90)
    );
    println!(
        "  ratio of p50s: {:.2} (target: at most 1.2)",
        a50.as_secs_f64() / r50.as_secs_f64()
    );
    agent.remove_manifest("x.yaml")?;
    agent.wait_gone(&pod, Duration::from_secs(60))?;
    Ok(())
}

/// One exec of `true` through :10250: connect, TLS, WebSocket handshake, the session to its
/// close; the final status must be `Success`.
async fn exec_once(client: &KubeletClient, path: &str) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(format!("{NODE_IP}:10250")).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(NODE_IP.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(client.tls_config())
        .connect(name, tcp)
        .await?;
    let mut req = format!("wss://{NODE_IP}:10250{path}").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await?;
    let mut status = Vec::new();
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Binary(b) if b.first() == Some(&3) => status.extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&status).context("final status")?;
    if v["status"] != "Success" {
        bail!("exec true: {v}");
    }
    Ok(())
}
