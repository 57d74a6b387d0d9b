//! portforward-bench: the throughput of port-forward's SPDY/3.1 data path on loopback, as the
//! kubelet forwards (issue 18's target: ≥ 1 GB/s for one stream; 100 concurrent streams).
//!
//! What runs: a TCP source on 127.0.0.1 standing in for the pod's port (each connection gets
//! `--mib` MiB, then closes); a `kubenode-spdy` server connection that, for each `data` stream
//! of a port-forward pair, connects to the source and copies it onto the stream in 64 KiB reads
//! as the kubelet's `stream/spdy.rs` does; and a `kubenode-spdy` client that opens the pairs
//! (`error` and `data` streams, `port` and `requestID` headers, as kubectl) and reads each data
//! stream to its end. Between the two SPDY ends plain TCP, or with `--tls` TLS as on the
//! kubelet's port 10250 (rustls with aws-lc-rs, TLS 1.3, a P-256 serving certificate; the
//! pod's network namespace and the API server's hop are not in the measurement). Prints
//! bytes/s for one stream, then for `--streams` concurrent ones (default 100) on one
//! connection, each with the CPU time the whole process spent (source, both SPDY ends and
//! TLS: all on this machine) per GiB, which a loaded machine changes less than the rate.
//!
//! Run: `cargo run --release -p kubenode-integration --bin portforward-bench [-- --mib N
//! --streams S --tls]` (a debug build measures the debug build). Needs no privileges.

use std::time::Instant;

use anyhow::Context;
use kubenode_integration::apiserver::tls::Ca;
use kubenode_spdy::{Config, Connection, Role, StreamWriter};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name}: not a number")),
        None => Ok(default),
    }
}

/// The pod's port: every connection gets `bytes`, then EOF.
async fn source(bytes: usize) -> anyhow::Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x5au8; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// The kubelet's copy of the pod's side onto the data stream (`stream/spdy.rs`'s `forward`).
async fn pod_to_stream(mut pod: tokio::net::TcpStream, w: &StreamWriter) {
    let _ = w.copy_from(&mut pod).await;
}

/// The kubelet's side: each complete pair's data stream gets the source's bytes.
async fn kubelet_side(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    let (sock, _) = listener.accept().await?;
    sock.set_nodelay(true)?;
    match tls {
        Some(acceptor) => serve(acceptor.accept(sock).await?).await,
        None => serve(sock).await,
    }
}

async fn serve<T>(io: T) -> anyhow::Result<()>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (conn, mut incoming) = Connection::start(io, Role::Server, Config::default());
    while let Some(stream) = incoming.recv().await {
        if stream.header("streamType") != Some("data") {
            // the error stream stays open and empty
            continue;
        }
        let port: u16 = stream.header("port").unwrap_or("0").parse()?;
        tokio::spawn(async move {
            let (_, w) = stream.split();
            let Ok(pod) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let _ = pod.set_nodelay(true);
            pod_to_stream(pod, &w).await;
            w.close().await;
        });
    }
    conn.close().await;
    Ok(())
}

/// Opens `streams` pairs at once and reads every data stream to its end: the bytes read.
async fn forward(
    conn: &Connection,
    port: u16,
    streams: usize,
    first_id: usize,
) -> anyhow::Result<usize> {
    let mut tasks = Vec::new();
    for i in 0..streams {
        let conn = conn.clone();
        let id = (first_id + i).to_string();
        tasks.push(tokio::spawn(async move {
            let headers = |t: &str| {
                vec![
                    ("streamtype".to_string(), t.to_string()),
                    ("port".to_string(), port.to_string()),
                    ("requestid".to_string(), id.clone()),
                ]
            };
            let _error = conn.open_stream(headers("error")).await?;
            let data = conn.open_stream(headers("data")).await?;
            let (mut r, _) = data.split();
            let mut total = 0usize;
            while let Some(d) = r.read().await {
                total += d.len();
            }
            Ok::<_, std::io::Error>(total)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

/// The CPU time (user and system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

fn rate(bytes: usize, secs: f64, cpu: f64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    format!(
        "{:.0} MB/s ({:.2} GiB/s); CPU {:.2} s per GiB",
        bytes as f64 / secs / 1e6,
        gib / secs,
        cpu / gib
    )
}

/// The TLS of both ends: the kubelet's (a serving certificate for 127.0.0.1) and a client
/// trusting its CA.
fn tls() -> anyhow::Result<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector)> {
    let ca = Ca::generate()?;
    let server = ca.server_config(&ca.serving()?)?;
    let client = ca.verifying_client("bench", &[])?;
    Ok((
        tokio_rustls::TlsAcceptor::from(server),
        tokio_rustls::TlsConnector::from(client),
    ))
}

/// The client's end of the SPDY connection to `addr`.
async fn client(
    addr: std::net::SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
) -> anyhow::Result<Connection> {
    let sock = tokio::net::TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    Ok(match tls {
        Some(c) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
            Connection::start(
                c.connect(name, sock).await?,
                Role::Client,
                Config::default(),
            )
            .0
        }
        None => Connection::start(sock, Role::Client, Config::default()).0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib = arg("--mib", 1024)?;
    let streams = arg("--streams", 100)?;
    let with_tls = std::env::args().any(|a| a == "--tls");
    let (acceptor, connector) = match with_tls {
        true => {
            let (a, c) = tls()?;
            (Some(a), Some(c))
        }
        false => (None, None),
    };
    let port = source(mib << 20).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(kubelet_side(listener, acceptor));
    let conn = client(addr, connector).await?;
    println!(
        "port-forward over SPDY/3.1 on loopback, {} ({} build): {mib} MiB per stream",
        if with_tls { "TLS" } else { "plain TCP" },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let got = forward(&conn, port, 1, 0).await?;
    anyhow::ensure!(got == mib << 20, "one stream: {got} bytes");
    println!(
        "1 stream: {}",
        rate(got, t.elapsed().as_secs_f64(), cpu_seconds() - cpu)
    );
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let got = forward(&conn, port, streams, 1).await?;
    anyhow::ensure!(
        got == streams * (mib << 20),
        "{streams} streams: {got} bytes"
    );
    println!(
        "{streams} concurrent streams: {} in total",
        rate(got, t.elapsed().as_secs_f64(), cpu_seconds() - cpu)
    );
    conn.close().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    Ok(())
}
