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
//! With `--upload` the bytes go the other way (the client writes `--mib` MiB on each data
//! stream, the pod's port counts them). Under TLS the client reads its socket 64 KiB at a
//! time (`kubenode_spdy::ReadAhead`, as Go's `crypto/tls` in the API server reads whole
//! records); `--small-reads` leaves it rustls' own 4 KiB reads, for comparison. The kubelet's
//! side reads as the kubelet's :10250 does (rustls' reads).
//!
//! Run: `cargo run --release -p kubenode-integration --bin portforward-bench [-- --mib N
//! --streams S --tls --upload --small-reads]` (a debug build measures the debug build).
//! Needs no privileges.
//!
//! `--through-agent` measures kubenode's own port-forward instead, as the API server reaches
//! it: a standalone `kubenode agent` (client CA, `authorization.mode: AlwaysAllow`) with a
//! busybox pod whose httpd serves two files of zeros on the pod's loopback (`--mib`, default
//! 512, and `--mib-each`, default 32); each forwarded connection is a TLS connection to the
//! agent's :10250 with a client certificate, an upgrade of `/portForward/default/<pod>`, an
//! HTTP/1.0 GET through the forwarded connection and the response read to its end. Both of
//! the kubelet's protocols: SPDY/3.1 (`portforward.k8s.io`: one connection, a stream pair
//! per forwarded connection, as kubectl through the API server) and WebSocket
//! (`v4.channel.k8s.io`: a connection per forwarded one); one connection, then `--streams`
//! (100) at once (`--streams 0`: not); `--rounds` (1) times; `--only spdy|websocket` one
//! protocol. CPU per GiB: this process's and the agent's (the
//! pod's httpd, which sends with `sendfile`, is not counted); the agent's peak resident size
//! during each measurement (`VmHWM`, reset before it). Run as root, with the
//! `kubenode` binary built in the same profile; Ctrl-C removes the pod and the agent.

use std::time::Instant;

use anyhow::Context;
use kubenode_integration::apiserver::tls::Ca;
use kubenode_integration::interrupt;
use kubenode_spdy::{Config, Connection, ReadAhead, Role, StreamReader, StreamWriter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// `--upload`: the pod's port taking what it is sent; every connection reads to its end,
/// then answers the byte count (8 bytes, little-endian) and closes.
async fn sink() -> anyhow::Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&total.to_le_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// The kubelet's copy between a data stream and the pod's side (`stream/spdy.rs`'s
/// `forward`): the stream's data to the pod, the pod's onto the stream; the pod's side ending
/// ends it.
async fn pod_to_stream(pod: tokio::net::TcpStream, r: StreamReader, w: &StreamWriter) {
    let (mut pr, mut pw) = pod.into_split();
    let upstream = async move {
        let mut r = r;
        while let Some(d) = r.read().await {
            pw.write_all(&d).await?;
        }
        pw.shutdown().await
    };
    tokio::select! {
        _ = w.copy_from(&mut pr) => {}
        _ = async { let _ = upstream.await; std::future::pending::<()>().await } => {}
    }
}

/// The client's socket under TLS: large reads unless `--small-reads` (rustls' own 4 KiB
/// reads).
fn socket<T>(io: T) -> ReadAhead<T> {
    ReadAhead::new(io)
}

fn small_reads() -> bool {
    std::env::args().any(|a| a == "--small-reads")
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
            let (r, w) = stream.split();
            let Ok(pod) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let _ = pod.set_nodelay(true);
            pod_to_stream(pod, r, &w).await;
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
    upload: Option<usize>,
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
            let (mut r, w) = data.split();
            if let Some(bytes) = upload {
                // as kubectl: what it reads of the local connection (here 64 KiB at a time)
                let chunk = vec![0x5au8; kubenode_spdy::COPY_CHUNK];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    w.write(&chunk[..n]).await?;
                    left -= n;
                }
                w.close().await;
                // the sink's count
                let got = r.read_to_end(64).await;
                let count: [u8; 8] = got.as_slice().try_into().map_err(|_| {
                    std::io::Error::other(format!("the sink answered {} bytes", got.len()))
                })?;
                return Ok::<_, std::io::Error>(u64::from_le_bytes(count) as usize);
            }
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
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

pub(crate) fn rate(bytes: usize, secs: f64, cpu: f64) -> String {
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
        Some(c) if small_reads() => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
            Connection::start(
                c.connect(name, sock).await?,
                Role::Client,
                Config::default(),
            )
            .0
        }
        Some(c) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
            Connection::start(
                c.connect(name, socket(sock)).await?,
                Role::Client,
                Config::default(),
            )
            .0
        }
        None => Connection::start(sock, Role::Client, Config::default()).0,
    })
}

/// The load average of the last minute (`/proc/loadavg`), printed with each measurement.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let result = if std::env::args().any(|a| a == "--through-agent") {
        interrupt::install().and_then(|()| agent::bench())
    } else {
        tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(loopback()))
    };
    interrupt::exit("portforward-bench", result)
}

async fn loopback() -> anyhow::Result<()> {
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
    let upload = std::env::args().any(|a| a == "--upload");
    let port = match upload {
        true => sink().await?,
        false => source(mib << 20).await?,
    };
    let up = upload.then_some(mib << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(kubelet_side(listener, acceptor));
    let conn = client(addr, connector).await?;
    println!(
        "port-forward over SPDY/3.1 on loopback, {}{} ({} build): {mib} MiB per stream {}; load {}",
        if with_tls { "TLS" } else { "plain TCP" },
        if with_tls && small_reads() {
            " (4 KiB reads)"
        } else {
            ""
        },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if upload { "to the pod" } else { "from the pod" },
        load()
    );
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let got = forward(&conn, port, 1, 0, up).await?;
    anyhow::ensure!(got == mib << 20, "one stream: {got} bytes");
    println!(
        "1 stream: {}",
        rate(got, t.elapsed().as_secs_f64(), cpu_seconds() - cpu)
    );
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let got = forward(&conn, port, streams, 1, up).await?;
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

/// `--through-agent`: port-forward through a standalone `kubenode agent`'s HTTPS port, as the
/// API server reaches it, to a busybox httpd in a pod serving a file of zeros.
mod agent {
    use std::time::{Duration, Instant};

    use anyhow::{bail, ensure, Context};
    use futures::{SinkExt, StreamExt};
    use kubenode_integration::agent::NODE_IP;
    use kubenode_integration::apiserver::podlogs::KubeletClient;
    use kubenode_integration::apiserver::tls::Ca;
    use kubenode_integration::{interrupt, unique_tag, TestAgent};
    use kubenode_spdy::{Config, Connection, ReadAhead, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    use super::{arg, cpu_seconds, load, rate};

    /// The pod's port (httpd on its loopback).
    const PORT: u16 = 8080;

    /// Which of the kubelet's two port-forward protocols.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Proto {
        /// SPDY/3.1 `portforward.k8s.io`: one connection, a stream pair per forwarded one.
        Spdy,
        /// WebSocket `v4.channel.k8s.io`: a connection per forwarded one.
        WebSocket,
    }

    pub fn bench() -> anyhow::Result<()> {
        let one = arg("--mib", 512)?;
        let each = arg("--mib-each", 32)?;
        let streams = arg("--streams", 100)?;
        let rounds = arg("--rounds", 1)?;
        let only = only()?;
        TestAgent::with_client_ca(&unique_tag("pfb"), |agent, ca| {
            measure(agent, ca, one, each, streams, rounds, only)
        })
    }

    /// `--only spdy|websocket` measures one protocol (both by default).
    fn only() -> anyhow::Result<Option<Proto>> {
        let args: Vec<String> = std::env::args().collect();
        let Some(i) = args.iter().position(|a| a == "--only") else {
            return Ok(None);
        };
        match args.get(i + 1).map(String::as_str) {
            Some("spdy") => Ok(Some(Proto::Spdy)),
            Some("websocket") => Ok(Some(Proto::WebSocket)),
            other => bail!("--only takes spdy or websocket, not {other:?}"),
        }
    }

    fn measure(
        agent: &TestAgent,
        ca: &Ca,
        one: usize,
        each: usize,
        streams: usize,
        rounds: usize,
        only: Option<Proto>,
    ) -> anyhow::Result<()> {
        agent.write_manifest(
            "pf.yaml",
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pf\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [\"sh\", \"-c\", \"mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/one bs=1048576 count={one} 2>/dev/null && dd if=/dev/zero of=/tmp/www/each bs=1048576 count={each} 2>/dev/null && exec httpd -f -p 127.0.0.1:{PORT} -h /tmp/www\"]\n",
                agent.image
            ),
        )?;
        let pod = agent.pod_name("pf");
        agent.wait_pod(
            &pod,
            Duration::from_secs(120),
            "running",
            kubenode_integration::pods::all_running,
        )?;
        let client = KubeletClient::new(ca)?;
        let pid = agent.pid().context("the agent is not running")?;
        agent.node.run_in(|| -> anyhow::Result<()> {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                // httpd writes its files first: wait (bounded) until it serves the small one
                let t = Instant::now();
                loop {
                    interrupt::check()?;
                    match forward(&client, &pod, Proto::Spdy, 1, "each", each << 20).await {
                        Ok(_) => break,
                        Err(e) if t.elapsed() > Duration::from_secs(120) => {
                            bail!("the pod's httpd never answered: {e:#}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
                let suite = tls_connect(&client)
                    .await?
                    .get_ref()
                    .1
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default();
                println!(
                    "port-forward through the agent's :10250 (TLS, client certificate, {suite} as \
                     with Go's client) to a pod's httpd on its loopback ({} build); CPU: this \
                     client's and the agent's",
                    if cfg!(debug_assertions) { "debug" } else { "release" }
                );
                for round in 1..=rounds {
                    for proto in [Proto::Spdy, Proto::WebSocket] {
                        if only.is_some_and(|p| p != proto) {
                            continue;
                        }
                        for (n, file, size) in [(1, "one", one), (streams, "each", each)] {
                            // `--streams 0`: one stream only
                            if n == 0 {
                                continue;
                            }
                            interrupt::check()?;
                            let before = load();
                            reset_peak_rss(pid)?;
                            let (t, cpu) = (Instant::now(), cpu_seconds() + agent_cpu(pid)?);
                            let got =
                                forward(&client, &pod, proto, n, file, size << 20).await?;
                            let secs = t.elapsed().as_secs_f64();
                            let cpu = cpu_seconds() + agent_cpu(pid)? - cpu;
                            println!(
                                "round {round}, {proto:?}, {n} stream(s) of {size} MiB (load {before}): {}; agent peak RSS {:.1} MiB",
                                rate(got, secs, cpu),
                                peak_rss_kib(pid)? as f64 / 1024.0
                            );
                        }
                    }
                }
                Ok(())
            })
        })??;
        agent.remove_manifest("pf.yaml")?;
        agent.wait_gone(&pod, Duration::from_secs(60))?;
        Ok(())
    }

    /// Starts the agent's peak resident size (`VmHWM`) afresh from its present size.
    fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .context("resetting the agent's VmHWM")
    }

    /// The agent's peak resident size (`VmHWM`) in KiB.
    fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmHWM in /proc/PID/status")
    }

    /// The CPU time (user and system) the agent's process has used, in seconds.
    fn agent_cpu(pid: u32) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // the fields after the command (which may hold spaces) in parentheses
        let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15, here 12 and 13 (from the state, field 3)
        let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / hz)
    }

    /// A client's TLS connection (large socket reads under rustls, as Go's `crypto/tls` in
    /// the API server reads whole records).
    type TlsStream = tokio_rustls::client::TlsStream<ReadAhead<tokio::net::TcpStream>>;

    async fn tls_connect(client: &KubeletClient) -> anyhow::Result<TlsStream> {
        let tcp = tokio::net::TcpStream::connect(format!("{NODE_IP}:10250")).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(NODE_IP.to_string())?;
        Ok(tokio_rustls::TlsConnector::from(client.tls_config())
            .connect(name, ReadAhead::new(tcp))
            .await?)
    }

    /// `n` forwarded connections at once, each fetching `/file` (`size` bytes) from the pod's
    /// httpd: the bytes of the bodies.
    async fn forward(
        client: &KubeletClient,
        pod: &str,
        proto: Proto,
        n: usize,
        file: &str,
        size: usize,
    ) -> anyhow::Result<usize> {
        let request = format!("GET /{file} HTTP/1.0\r\n\r\n").into_bytes();
        let mut tasks = Vec::new();
        match proto {
            Proto::Spdy => {
                let conn = spdy_connect(client, pod).await?;
                for i in 0..n {
                    let (conn, request) = (conn.clone(), request.clone());
                    tasks.push(tokio::spawn(
                        async move { spdy_fetch(&conn, i, &request).await },
                    ));
                }
                let total = collect(tasks, size).await;
                conn.close().await;
                total
            }
            Proto::WebSocket => {
                for _ in 0..n {
                    let (client, request) = (client.clone(), request.clone());
                    let pod = pod.to_string();
                    tasks.push(tokio::spawn(async move {
                        ws_fetch(tls_connect(&client).await?, &pod, &request).await
                    }));
                }
                collect(tasks, size).await
            }
        }
    }

    async fn collect(
        tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<u8>>>>,
        size: usize,
    ) -> anyhow::Result<usize> {
        let mut total = 0;
        for t in tasks {
            let got = t.await??;
            total += body_len(&got, size)?;
        }
        Ok(total)
    }

    /// The body's length of a fetch's result ([`Counter::done`]), which must be `size`.
    fn body_len(got: &[u8], size: usize) -> anyhow::Result<usize> {
        let (len, head) = counted(got)?;
        ensure!(
            len == size,
            "a body of {len} bytes, not {size}: {}",
            String::from_utf8_lossy(head)
        );
        Ok(len)
    }

    /// A fetch's result: 8 bytes of body length, then the response's head.
    fn counted(got: &[u8]) -> anyhow::Result<(usize, &[u8])> {
        ensure!(got.len() >= 8, "no response");
        let len = u64::from_le_bytes(got[..8].try_into()?) as usize;
        Ok((len, &got[8..]))
    }

    /// Counts a response's bytes as they come: the head (up to its blank line) kept, the
    /// body's length counted.
    #[derive(Default)]
    struct Counter {
        head: Vec<u8>,
        body: usize,
        in_body: bool,
    }

    impl Counter {
        fn feed(&mut self, d: &[u8]) {
            if self.in_body {
                self.body += d.len();
                return;
            }
            self.head.extend_from_slice(d);
            if let Some(i) = self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                self.body = self.head.len() - i - 4;
                self.head.truncate(i + 4);
                self.in_body = true;
            } else if self.head.len() > 64 * 1024 {
                // not HTTP: keep the start for the error
                self.head.truncate(1024);
                self.in_body = true;
            }
        }
        fn done(self, error: &[u8]) -> Vec<u8> {
            let mut out = (self.body as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&self.head);
            out.extend_from_slice(error);
            out
        }
    }

    /// A SPDY/3.1 `portforward.k8s.io` connection, upgraded as the API server does it.
    async fn spdy_connect(client: &KubeletClient, pod: &str) -> anyhow::Result<Connection> {
        let mut tls = tls_connect(client).await?;
        let req = format!(
            "POST /portForward/default/{pod} HTTP/1.1\r\nHost: {NODE_IP}:10250\r\n\
             Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await?;
        tls.flush().await?;
        // the answer's head, a byte at a time: nothing of the SPDY session is read with it
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            ensure!(head.len() < 16 * 1024, "an answer head too long");
            head.push(tls.read_u8().await?);
        }
        ensure!(
            head.starts_with(b"HTTP/1.1 101"),
            "the upgrade was refused: {}",
            String::from_utf8_lossy(&head)
        );
        Ok(Connection::start(tls, Role::Client, Config::default()).0)
    }

    /// One forwarded connection over SPDY: the pair, the request, the response to its end.
    async fn spdy_fetch(conn: &Connection, id: usize, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        let headers = |t: &str| {
            vec![
                ("streamtype".to_string(), t.to_string()),
                ("port".to_string(), PORT.to_string()),
                ("requestid".to_string(), id.to_string()),
            ]
        };
        let error = conn.open_stream(headers("error")).await?;
        let data = conn.open_stream(headers("data")).await?;
        let (mut r, w) = data.split();
        w.write(request).await?;
        let mut counter = Counter::default();
        while let Some(d) = r.read().await {
            counter.feed(&d);
        }
        w.close().await;
        let (mut er, ew) = error.split();
        ew.close().await;
        let err = er.read_to_end(4096).await;
        Ok(counter.done(&err))
    }

    /// One forwarded connection over WebSocket `v4.channel.k8s.io`: the data channel (0)
    /// carries the request and the response, each channel's first message is the port.
    async fn ws_fetch(tls: TlsStream, pod: &str, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut req = format!("wss://{NODE_IP}:10250/portForward/default/{pod}?port={PORT}")
            .into_client_request()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse()?);
        let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await?;
        let mut msg = vec![0u8];
        msg.extend_from_slice(request);
        ws.send(Message::binary(msg)).await?;
        let mut counter = Counter::default();
        let mut error = Vec::new();
        let mut seen = [false; 2];
        while let Some(m) = ws.next().await {
            let b = match m? {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = b.split_first() else {
                continue;
            };
            let ch = usize::from(ch).min(1);
            if !seen[ch] {
                // the port, two bytes little-endian
                seen[ch] = true;
                continue;
            }
            match ch {
                0 => counter.feed(rest),
                _ => error.extend_from_slice(rest),
            }
        }
        Ok(counter.done(&error))
    }
}
