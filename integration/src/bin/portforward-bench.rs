//! portforward-bench: the throughput of port-forward's SPDY/3.1 data path on loopback, as the
//! kubelet forwards (issue 18's target: ≥ 1 GB/s for one stream; 100 concurrent streams).
//!
//! What runs: a TCP source on 127.0.0.1 standing in for the pod's port (each connection gets
//! `--mib` MiB, then closes); a `kubenode-spdy` server connection that, for each `data` stream
//! of a port-forward pair, connects to the source and copies it onto the stream in 64 KiB reads
//! as the kubelet's `stream/spdy.rs` does; and a `kubenode-spdy` client that opens the pairs
//! (`error` and `data` streams, `port` and `requestID` headers, as kubectl) and reads each data
//! stream to its end. Plain TCP between the two SPDY ends (the kubelet's TLS and the pod's
//! network namespace are not in the measurement). Prints bytes/s for one stream, then for
//! `--streams` concurrent ones (default 100) on one connection.
//!
//! Run: `cargo run --release -p kubenode-integration --bin portforward-bench [-- --mib N
//! --streams S]` (a debug build measures the debug build). Needs no privileges.

use std::time::Instant;

use anyhow::Context;
use kubenode_spdy::{Config, Connection, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The kubelet's side: each complete pair's data stream gets the source's bytes.
async fn kubelet_side(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let (sock, _) = listener.accept().await?;
    sock.set_nodelay(true)?;
    let (conn, mut incoming) = Connection::start(sock, Role::Server, Config::default());
    while let Some(stream) = incoming.recv().await {
        if stream.header("streamType") != Some("data") {
            // the error stream stays open and empty
            continue;
        }
        let port: u16 = stream.header("port").unwrap_or("0").parse()?;
        tokio::spawn(async move {
            let (_, w) = stream.split();
            let Ok(mut pod) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match pod.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if w.write(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
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

fn rate(bytes: usize, secs: f64) -> String {
    format!(
        "{:.0} MB/s ({:.2} GiB/s)",
        bytes as f64 / secs / 1e6,
        bytes as f64 / secs / (1u64 << 30) as f64
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib = arg("--mib", 1024)?;
    let streams = arg("--streams", 100)?;
    let port = source(mib << 20).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(kubelet_side(listener));
    let sock = tokio::net::TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let (conn, _) = Connection::start(sock, Role::Client, Config::default());
    println!(
        "port-forward over SPDY/3.1 on loopback ({} build): {mib} MiB per stream",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let t = Instant::now();
    let got = forward(&conn, port, 1, 0).await?;
    anyhow::ensure!(got == mib << 20, "one stream: {got} bytes");
    println!("1 stream: {}", rate(got, t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let got = forward(&conn, port, streams, 1).await?;
    anyhow::ensure!(
        got == streams * (mib << 20),
        "{streams} streams: {got} bytes"
    );
    println!(
        "{streams} concurrent streams: {} in total",
        rate(got, t.elapsed().as_secs_f64())
    );
    conn.close().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    Ok(())
}
