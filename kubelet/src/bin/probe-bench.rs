//! probe-bench: the prober's cost at density.
//!
//! Runs `--containers N` containers' worth of probes with period 1 s against local servers on
//! 127.0.0.1 (each container: an httpGet liveness probe and a tcpSocket readiness probe, so
//! 2 N probes/s), then `--exec N` containers with an exec liveness probe. The servers run in a
//! child process (this binary with `serve`), so the CPU measured with `getrusage` around the
//! window is the prober's own. Exec probes fork `/bin/true` instead of `runc exec` (the runtime
//! is not involved), which prices the prober's side of an exec probe, not runc's.
//!
//! Prints the prober's CPU as a share of one core, probes completed per second, and probe
//! latency p50/p99 per mechanism. Then the floor: the same connections, at the same rate, made
//! by a plain blocking client on one thread (connect, request, read to the end, close; connect,
//! close), which is what the kernel charges for them whoever makes them.
//!
//! Ctrl-C (SIGINT) or SIGTERM stops it and its server process; it then exits with 130.

#[path = "bench/args.rs"]
mod args;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, Pod, PodSpec, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubenode_kubelet::backoff::SystemClock;
use kubenode_kubelet::events::Recorder;
use kubenode_kubelet::prober::metrics::Mechanism;
use kubenode_kubelet::prober::{BoxFuture, ExecOutcome, HostError, Kill, ProbeHost, Prober};
use kubenode_runtime::{ContainerState, ContainerStatus};

#[path = "bench/interrupt.rs"]
mod interrupt;

/// Server ports of each kind in the child.
const PORTS: usize = 8;

#[derive(Debug)]
struct ForkHost;

impl ProbeHost for ForkHost {
    fn exec(
        &self,
        _id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutcome, HostError> {
        let out = Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .map_err(|e| HostError::Other(format!("running {}: {e}", cmd[0])))?;
        Ok(ExecOutcome {
            exit_code: out.status.code().unwrap_or(128),
            output: out.stdout,
            timed_out: false,
        })
    }
    fn kill(&self, _request: Kill) -> BoxFuture<Result<(), HostError>> {
        Box::pin(async { Err(HostError::Other("the benchmark kills nothing".into())) })
    }
}

/// CPU used: user and system time of this process, and of its waited-for children.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    user: Duration,
    system: Duration,
    children: Duration,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(o.user),
            system: self.system.saturating_sub(o.system),
            children: self.children.saturating_sub(o.children),
        }
    }
}

fn cpu() -> Cpu {
    let get = |who| {
        // SAFETY: getrusage writes into the zeroed struct we own.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `u` is a valid, writable rusage.
        unsafe { libc::getrusage(who, &mut u) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        (tv(u.ru_utime), tv(u.ru_stime))
    };
    let (user, system) = get(libc::RUSAGE_SELF);
    let (cu, cs) = get(libc::RUSAGE_CHILDREN);
    Cpu {
        user,
        system,
        children: cu + cs,
    }
}

/// CPU used by the calling thread so far: (user, system).
fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(u.ru_utime), tv(u.ru_stime))
}

/// The kernel's price of the probes' connections: every second, `per_second` HTTP exchanges
/// (same request as an httpGet probe, on a new connection, read to the end) and as many TCP
/// connects, from one thread with blocking sockets. Returns the thread's (user, system) CPU.
fn floor(
    http_ports: &[i32],
    tcp_ports: &[i32],
    per_second: usize,
    window: Duration,
) -> (Duration, Duration) {
    use std::io::Read;
    let begin = std::time::Instant::now();
    let before = thread_cpu();
    let mut buf = [0u8; 4096];
    while begin.elapsed() < window && !interrupt::interrupted() {
        let second = std::time::Instant::now();
        for i in 0..per_second {
            let port = http_ports[i % http_ports.len()] as u16;
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let request = format!(
                    "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nuser-agent: {}\r\naccept: */*\r\nconnection: close\r\n\r\n",
                    kubenode_kubelet::prober::user_agent()
                );
                let _ = s.write_all(request.as_bytes());
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }
            let port = tcp_ports[i % tcp_ports.len()] as u16;
            drop(std::net::TcpStream::connect(("127.0.0.1", port)));
        }
        if let Some(rest) = Duration::from_secs(1).checked_sub(second.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let after = thread_cpu();
    (after.0 - before.0, after.1 - before.1)
}

fn share(d: Duration, window: Duration) -> f64 {
    d.as_secs_f64() / window.as_secs_f64() * 100.0
}

async fn serve() {
    let mut ports = Vec::new();
    for _ in 0..PORTS {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(l.local_addr().unwrap().port());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    }
    for _ in 0..PORTS {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(l.local_addr().unwrap().port());
        tokio::spawn(async move {
            loop {
                let _ = l.accept().await;
            }
        });
    }
    let line: Vec<String> = ports.iter().map(u16::to_string).collect();
    println!("{}", line.join(" "));
    std::io::stdout().flush().unwrap();
    // Until the parent closes our stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    })
    .await;
}

fn probe(period: i32) -> Probe {
    Probe {
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

fn pod(i: usize, c: Container) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(format!("bench-{i}"));
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(format!("uid-{i}"));
    p.spec = Some(PodSpec {
        containers: vec![c],
        ..Default::default()
    });
    p
}

fn instance(i: usize) -> ContainerStatus {
    ContainerStatus {
        id: format!("c{i}"),
        sandbox_id: "s".into(),
        name: "app".into(),
        restart_count: 0,
        image: "bench".into(),
        state: ContainerState::Running,
        pid: None,
        exit_code: None,
        reason: None,
        message: None,
        created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        started_at: None,
        finished_at: None,
        log_path: Default::default(),
    }
}

fn report(prober: &Prober, m: Mechanism, label: &str, window: Duration) {
    let h = prober.durations().of(m);
    let ms = |q| {
        h.quantile(q)
            .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
    };
    println!(
        "  {label}: {:.0} probes/s, latency p50 {} ms, p99 {} ms",
        h.count() as f64 / window.as_secs_f64(),
        ms(0.5),
        ms(0.99)
    );
}

/// Runs the probes of `pods` for `window` after `warmup`; returns the CPU used in the window
/// (an error when a signal cut it short).
async fn measure(
    prober: &Prober,
    pods: &[Pod],
    first: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Cpu, interrupt::Interrupted> {
    for (i, p) in pods.iter().enumerate() {
        prober.sync_pod(p, "127.0.0.1", &[instance(first + i)]);
    }
    let mut slept = interrupt::sleep(warmup).await;
    for m in [Mechanism::Exec, Mechanism::Http, Mechanism::Tcp] {
        prober.durations().of(m).reset();
    }
    let before = cpu();
    if slept.is_ok() {
        slept = interrupt::sleep(window).await;
    }
    let used = cpu() - before;
    for p in pods {
        prober.remove_pod(p.metadata.uid.as_deref().unwrap_or_default());
    }
    slept.map(|()| used)
}

/// The server child process, killed and reaped when dropped (also after a panic).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
            .block_on(serve());
        return;
    }
    interrupt::install().expect("catching SIGINT and SIGTERM");
    let containers = args::number("--containers", 750);
    let execs = args::number("--exec", 50);
    let window = Duration::from_secs(args::number("--seconds", 20) as u64);
    let warmup = Duration::from_secs(3);

    let mut child = Server(
        Command::new(std::env::current_exe().expect("own path"))
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the server process"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reading the server's ports");
    let ports: Vec<i32> = line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(ports.len(), 2 * PORTS, "server ports: {line}");
    let (http_ports, tcp_ports) = ports.split_at(PORTS);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let clock = Arc::new(SystemClock);
        let events = Recorder::new("bench", clock.clone());
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let prober = Prober::new(
            Arc::new(ForkHost),
            events.clone(),
            clock,
            Box::new(move |_| {
                w.fetch_add(1, Ordering::Relaxed);
            }),
        );
        // Let the first-probe jitter window of a fresh prober pass: all probes start at once,
        // the worst case for bunching.
        if interrupt::sleep(Duration::from_millis(1100)).await.is_err() {
            return;
        }

        let net: Vec<Pod> = (0..containers)
            .map(|i| {
                let mut live = probe(1);
                live.http_get = Some(HTTPGetAction {
                    path: Some("/healthz".into()),
                    port: IntOrString::Int(http_ports[i % PORTS]),
                    ..Default::default()
                });
                let mut ready = probe(1);
                ready.tcp_socket = Some(TCPSocketAction {
                    port: IntOrString::Int(tcp_ports[i % PORTS]),
                    host: None,
                });
                pod(
                    i,
                    Container {
                        name: "app".into(),
                        liveness_probe: Some(live),
                        readiness_probe: Some(ready),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let Ok(used) = measure(&prober, &net, 0, warmup, window).await else {
            return;
        };
        let secs = window.as_secs_f64();
        println!(
            "http+tcp: {containers} containers, {} probes/s nominal (period 1 s), {secs:.0} s window",
            2 * containers
        );
        println!(
            "  prober CPU: {:.2} % of one core ({:.2} % user, {:.2} % kernel: sockets, TCP handshakes, loopback delivery)",
            share(used.user + used.system, window),
            share(used.user, window),
            share(used.system, window),
        );
        report(&prober, Mechanism::Http, "httpGet", window);
        report(&prober, Mechanism::Tcp, "tcpSocket", window);
        let failures = events.list().len();
        println!("  events (failures): {failures}");
        let (http, tcp) = (http_ports.to_vec(), tcp_ports.to_vec());
        let (user, system) =
            tokio::task::spawn_blocking(move || floor(&http, &tcp, containers, window))
                .await
                .expect("floor thread");
        if interrupt::interrupted() {
            return;
        }
        let floor_total = share(user + system, window);
        println!(
            "  floor, the same connections from a plain blocking client: {floor_total:.2} % of one core ({:.2} % user, {:.2} % kernel)",
            share(user, window),
            share(system, window),
        );
        println!(
            "  prober above the floor: {:.2} % of one core",
            share(used.user + used.system, window) - floor_total
        );

        if execs > 0 {
            let exec: Vec<Pod> = (0..execs)
                .map(|i| {
                    let mut live = probe(1);
                    live.exec = Some(ExecAction {
                        command: Some(vec!["/bin/true".into()]),
                    });
                    pod(
                        containers + i,
                        Container {
                            name: "app".into(),
                            liveness_probe: Some(live),
                            ..Default::default()
                        },
                    )
                })
                .collect();
            let Ok(used) = measure(&prober, &exec, containers, warmup, window).await else {
                return;
            };
            println!("exec (fork of /bin/true, not runc): {execs} containers, {execs} probes/s nominal");
            println!(
                "  prober CPU: {:.2} % of one core ({:.2} % user) + {:.2} % in the commands",
                share(used.user + used.system, window),
                share(used.user, window),
                share(used.children, window),
            );
            report(&prober, Mechanism::Exec, "exec", window);
        }
        println!("  pod worker wake-ups: {}", wakes.load(Ordering::Relaxed));
    });
    drop(child);
    if interrupt::interrupted() {
        eprintln!("probe-bench: interrupted; its server process is stopped");
        std::process::exit(interrupt::EXIT_INTERRUPTED);
    }
}
