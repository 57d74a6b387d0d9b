//! The proxy's data path with many Services, run as root: `--services N` (default 10,000)
//! ClusterIP Services programmed by the real proxy (iptables, nf_tables backend) in a "node"
//! network namespace, then TCP connection rates from one pod namespace to another, straight to
//! the pod IP and through the ClusterIP of the last Service (the last bucket: the longest
//! first-packet path through the NAT chains), alternating, `--rounds R` (default 8) rounds of
//! `--conns C` (default 250) connections each. Prints the sync time, both rates and their ratio
//! (target: the ClusterIP path at 95 % of the direct rate or better).
//!
//! `cargo build --release -p kubenode-integration --bin proxy-datapath-bench`, then
//! `target/release/proxy-datapath-bench`. Everything it makes lives in three network namespaces
//! named after its tag, removed at the end, after an error, or on Ctrl-C (SIGINT) or SIGTERM
//! (exit status 130).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::{Pod, Service};
use kubenode_integration::{interrupt, ip_addr_add, unique_tag, veth, Netns};
use kubenode_proxy::conntrack::ConntrackTool;
use kubenode_proxy::iptables::IptablesFirewall;
use kubenode_proxy::{Proxy, ProxyConfig};
use serde_json::json;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .with_context(|| format!("{name} takes a positive number")),
    }
}

/// A blocking TCP server in namespace `ns` answering `name` on `port` (no polling delay before
/// `accept`), until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, name: &str, port: u16) -> anyhow::Result<Server> {
        let (name, path) = (name.to_string(), ns.path());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let listener = (|| -> anyhow::Result<TcpListener> {
                let file = std::fs::File::open(&path)?;
                // SAFETY: setns(2) on an open namespace fd; only this server thread moves.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
                Ok(TcpListener::bind(("0.0.0.0", port))?)
            })();
            let listener = match listener {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop2.load(Ordering::Relaxed) {
                let mut fd = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll(2) on one valid pollfd; wakes at least every 100 ms for `stop`.
                if unsafe { libc::poll(&mut fd, 1, 100) } > 0 {
                    if let Ok((mut s, _)) = listener.accept() {
                        let _ = s.write_all(name.as_bytes());
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .context("the server did not start")??;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tcp_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Connections per second from `ns` to `addr` over `n` connections, each answered by `want`.
fn rate(ns: &Netns, addr: &str, n: usize, want: &str) -> anyhow::Result<f64> {
    let addr: SocketAddr = addr.parse()?;
    ns.run_in(|| -> anyhow::Result<f64> {
        let t = Instant::now();
        for i in 0..n {
            if i % 50 == 0 {
                interrupt::check()?;
            }
            let who = tcp_get(addr).with_context(|| format!("connection {i} to {addr}"))?;
            ensure!(who == want, "{addr} answered {who:?}");
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    })?
}

fn service(i: usize) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("s{i:05}"), "namespace": "default"},
        "spec": {"clusterIP": cluster_ip(i), "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080}]}}))?)
}

/// The ClusterIP of Service `i`: 172.30.0.1 onwards, 250 per /24.
fn cluster_ip(i: usize) -> String {
    format!("172.30.{}.{}", i / 250, i % 250 + 1)
}

fn web_pod() -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": "p1", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"podIP": "10.180.1.2", "conditions": [{"type": "Ready", "status": "True"}]}
    }))?)
}

fn main() {
    let result = interrupt::install().and_then(|()| bench());
    interrupt::exit("proxy-datapath-bench", result)
}

/// The whole bench; the namespaces (and with them every rule and link) go when it returns.
fn bench() -> anyhow::Result<()> {
    let services = arg("--services", 10_000)?;
    ensure!(
        services <= 250 * 256,
        "--services: at most {} fit in 172.30.0.0/16",
        250 * 256
    );
    let rounds = arg("--rounds", 8)?;
    let conns = arg("--conns", 250)?;
    let tag = unique_tag("pdb");
    // node <-> pod1 (the server) and node <-> pod2 (the client), a /24 each.
    let node = Netns::new(&format!("{tag}n"))?;
    node.sh("sysctl -qw net.ipv4.ip_forward=1")?;
    let mut pods = Vec::new();
    for i in 1..=2 {
        interrupt::check()?;
        let pod = Netns::new(&format!("{tag}p{i}"))?;
        let nif = format!("{tag}p{i}");
        veth(Some(&node), &nif, Some(&pod), "eth0")?;
        ip_addr_add(Some(&node), &nif, &format!("10.180.{i}.1/24"))?;
        ip_addr_add(Some(&pod), "eth0", &format!("10.180.{i}.2/24"))?;
        pod.ip(&["route", "add", "default", "via", &format!("10.180.{i}.1")])?;
        pods.push(pod);
    }
    let _server = Server::start(&pods[0], "p1", 8080)?;

    let mut cfg = ProxyConfig::new("node1", "172.30.0.0/16".parse()?);
    cfg.rules.cluster_cidr = Some("10.180.0.0/16".parse()?);
    let mut proxy = Proxy::new(
        cfg,
        Arc::new(IptablesFirewall::in_netns("nft", node.name())?),
        Arc::new(ConntrackTool::in_netns(node.name())),
    )?;
    proxy.update_services((0..services).map(service).collect::<Result<_, _>>()?);
    proxy.update_pods(vec![web_pod()?]);
    interrupt::check()?;
    let t = Instant::now();
    proxy.sync()?;
    let sync = t.elapsed();
    let errors = proxy.status().errors;
    ensure!(errors.is_empty(), "service errors: {errors:?}");

    let last = format!("{}:80", cluster_ip(services - 1));
    // From a pod (no masquerade on either path), alternating so that drift hits both alike.
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        direct.push(rate(&pods[1], "10.180.1.2:8080", conns, "p1")?);
        via.push(rate(&pods[1], &last, conns, "p1")?);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (d, v) = (mean(&direct), mean(&via));
    println!("proxy data path: {services} ClusterIP Services, {rounds} rounds of {conns} connections per path");
    println!(
        "  full sync of {services} Services: {:.0} ms",
        sync.as_secs_f64() * 1000.0
    );
    println!("  direct to the pod IP:          {d:.0} connections/s");
    println!("  through ClusterIP {last}: {v:.0} connections/s");
    println!("  ratio ClusterIP/direct: {:.3} (target >= 0.95)", v / d);
    Ok(())
}
