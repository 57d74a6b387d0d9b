//! Privileged end-to-end tests of the proxy: real iptables (nf_tables) rules in a "node" network
//! namespace, pods as namespaces with small servers that answer with their own name, clients as
//! other namespaces, real TCP and UDP traffic.
//!
//! Topology of one [`Lab`] (all addresses inside namespaces this test creates):
//! ```text
//!   client c1 192.168.77.2 ─┐                ┌─ pod p1 10.180.1.2 (veth, /24 per pod)
//!   client c2 192.168.78.2 ─┤ node  (rules)  ├─ pod p2 10.180.2.2
//!   remote r  10.200.0.2   ─┘ 192.168.77.1   └─ pod p3 10.180.3.2
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kubenode_integration::pods::with_agent;
use kubenode_integration::{
    ip_addr_add, kubenode_bin, privileged, run_tests, unique_tag, veth, LeakGuard, Netns,
};
use kubenode_proxy::conntrack::ConntrackTool;
use kubenode_proxy::iptables::{Firewall, IptablesFirewall};
use kubenode_proxy::{Proxy, ProxyConfig};
use serde_json::json;

fn main() {
    run_tests(vec![
        privileged(
            "proxy_clusterip_spread_affinity_multiport",
            clusterip_spread_affinity_multiport,
        ),
        privileged(
            "proxy_nodeport_hairpin_selectorless_reject",
            nodeport_hairpin_selectorless_reject,
        ),
        privileged(
            "proxy_readiness_and_udp_endpoint_change",
            readiness_and_udp_endpoint_change,
        ),
        privileged("proxy_cleanup_restores_tables", cleanup_restores_tables),
        privileged(
            "proxy_hostile_names_do_not_break_restores",
            hostile_names_do_not_break_restores,
        ),
        privileged(
            "proxy_manifest_with_bad_namespace_is_refused_and_later_services_apply",
            manifest_with_bad_namespace_is_refused,
        ),
        privileged(
            "proxy_10k_services_programmed_last_bucket_answers",
            services_10k_programmed_and_last_bucket_answers,
        ),
    ])
}

const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `f` on a new thread that has joined network namespace `ns` (never on a runner thread).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> anyhow::Result<T> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns(2) on a valid namespace fd; it changes only this (new) thread's netns.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        ensure!(rc == 0, "setns {path}: {}", std::io::Error::last_os_error());
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

/// Servers in a pod namespace answering their pod name on TCP `ports` and UDP 5353, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, name: &str, ports: &[u16]) -> anyhow::Result<Server> {
        let (name, ports, path) = (name.to_string(), ports.to_vec(), format!("/run/netns/{ns}"));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let setup = || -> anyhow::Result<(Vec<TcpListener>, UdpSocket)> {
                let file = std::fs::File::open(&path)?;
                // SAFETY: setns(2) on a valid namespace fd; only this server thread moves.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
                let mut ls = Vec::new();
                for p in &ports {
                    let l = TcpListener::bind(("0.0.0.0", *p))?;
                    l.set_nonblocking(true)?;
                    ls.push(l);
                }
                let udp = UdpSocket::bind("0.0.0.0:5353")?;
                udp.set_nonblocking(true)?;
                Ok((ls, udp))
            };
            let (listeners, udp) = match setup() {
                Ok(v) => {
                    let _ = ready_tx.send(Ok(()));
                    v
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut buf = [0u8; 512];
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut idle = true;
                for l in &listeners {
                    if let Ok((mut s, _)) = l.accept() {
                        idle = false;
                        let _ = s.write_all(format!("{name}\n").as_bytes());
                    }
                }
                if let Ok((_, from)) = udp.recv_from(&mut buf) {
                    idle = false;
                    let _ = udp.send_to(name.as_bytes(), from);
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("server did not start")??;
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

/// One TCP request: the server's name, or the connect error.
fn tcp_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.trim().to_string())
}

/// `n` TCP requests from namespace `ns`; counts answers per server name.
fn requests(ns: &str, addr: &str, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let addr: SocketAddr = addr.parse()?;
    in_netns(ns, move || -> anyhow::Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let who = tcp_get(addr).with_context(|| format!("request {i} to {addr}"))?;
            *counts.entry(who).or_insert(0) += 1;
        }
        Ok(counts)
    })?
}

/// The node, three pods, two clients and a remote server, wired up; a proxy writing into the node.
struct Lab {
    node: Netns,
    pods: Vec<Netns>,
    clients: Vec<Netns>,
    remote: Netns,
    proxy: Proxy,
}

impl Lab {
    fn new(tag: &str) -> anyhow::Result<Lab> {
        let node = Netns::new(&format!("{tag}n"))?;
        node.sh("sysctl -qw net.ipv4.ip_forward=1")?;
        let mut pods = Vec::new();
        for i in 1..=3 {
            let pod = Netns::new(&format!("{tag}p{i}"))?;
            let nif = format!("{tag}p{i}");
            veth(Some(&node), &nif, Some(&pod), "eth0")?;
            ip_addr_add(Some(&node), &nif, &format!("10.180.{i}.1/24"))?;
            ip_addr_add(Some(&pod), "eth0", &format!("10.180.{i}.2/24"))?;
            pod.ip(&["route", "add", "default", "via", &format!("10.180.{i}.1")])?;
            pods.push(pod);
        }
        let mut clients = Vec::new();
        for (i, net) in [(1, 77), (2, 78)] {
            let c = Netns::new(&format!("{tag}c{i}"))?;
            let nif = format!("{tag}c{i}");
            veth(Some(&node), &nif, Some(&c), "eth0")?;
            ip_addr_add(Some(&node), &nif, &format!("192.168.{net}.1/24"))?;
            ip_addr_add(Some(&c), "eth0", &format!("192.168.{net}.2/24"))?;
            c.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("192.168.{net}.1"),
            ])?;
            clients.push(c);
        }
        let remote = Netns::new(&format!("{tag}r"))?;
        veth(Some(&node), &format!("{tag}r"), Some(&remote), "eth0")?;
        ip_addr_add(Some(&node), &format!("{tag}r"), "10.200.0.1/24")?;
        ip_addr_add(Some(&remote), "eth0", "10.200.0.2/24")?;
        remote.ip(&["route", "add", "default", "via", "10.200.0.1"])?;
        // A node has a default route; without one, unknown ClusterIPs fail routing before FORWARD.
        node.ip(&["route", "add", "default", "via", "10.200.0.2"])?;

        let mut cfg = ProxyConfig::new("node1", "172.30.0.0/16".parse()?);
        cfg.rules.cluster_cidr = Some("10.180.0.0/16".parse()?);
        let fw = IptablesFirewall::in_netns("nft", node.name())?;
        let proxy = Proxy::new(
            cfg,
            Arc::new(fw),
            Arc::new(ConntrackTool::in_netns(node.name())),
        )?;
        Ok(Lab {
            node,
            pods,
            clients,
            remote,
            proxy,
        })
    }

    fn pod_ns(&self, i: usize) -> String {
        self.pods[i - 1].name().to_string()
    }

    fn client_ns(&self, i: usize) -> String {
        self.clients[i - 1].name().to_string()
    }

    fn sync(&mut self) -> anyhow::Result<()> {
        self.proxy.sync()?;
        let errors = self.proxy.status().errors;
        ensure!(errors.is_empty(), "service errors: {errors:?}");
        Ok(())
    }
}

fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).expect("service")
}

/// Pod `p<i>` with IP 10.180.<i>.2, label app=`app`, container ports web=8080, metrics=9090.
fn pod(i: usize, apps: &[&str], ready: bool) -> Pod {
    let labels: serde_json::Map<String, serde_json::Value> = apps
        .iter()
        .map(|a| (format!("app-{a}"), json!("yes")))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}"), "namespace": "default", "labels": labels},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x", "ports": [
            {"name": "web", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
        "status": {"podIP": format!("10.180.{i}.2"),
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .expect("pod")
}

fn clusterip_spread_affinity_multiport() -> anyhow::Result<()> {
    let tag = unique_tag("px");
    let guard = LeakGuard::new(&tag);
    let mut lab = Lab::new(&tag)?;
    let _servers: Vec<Server> = (1..=3)
        .map(|i| Server::start(&lab.pod_ns(i), &format!("p{i}"), &[8080, 9090]))
        .collect::<Result<_, _>>()?;
    lab.proxy.update_services(vec![
        service(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.10", "selector": {"app-web": "yes"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "metrics", "port": 81, "targetPort": 9090}]}})),
        service(json!({"metadata": {"name": "sticky", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.11", "selector": {"app-web": "yes"}, "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "ports": [{"port": 80, "targetPort": 8080}]}})),
    ]);
    lab.proxy
        .update_pods((1..=3).map(|i| pod(i, &["web"], true)));
    lab.sync()?;

    // Spread: 240 connections over 3 endpoints; each gets a fair share (expected 80, > 40).
    let counts = requests(&lab.client_ns(1), "172.30.0.10:80", 240)?;
    ensure!(
        counts.len() == 3 && counts.values().all(|c| *c > 40),
        "uneven spread: {counts:?}"
    );
    // Multi-port: the second port reaches the metrics server of every pod too.
    let counts = requests(&lab.client_ns(1), "172.30.0.10:81", 60)?;
    ensure!(
        counts.keys().all(|k| k.starts_with('p')) && counts.len() >= 2,
        "metrics port: {counts:?}"
    );
    // Affinity: each client is pinned to one pod.
    for c in 1..=2 {
        let counts = requests(&lab.client_ns(c), "172.30.0.11:80", 30)?;
        ensure!(counts.len() == 1, "client {c} not pinned: {counts:?}");
    }
    // A pod (in-cluster source) reaches the ClusterIP too.
    let counts = requests(&lab.pod_ns(2), "172.30.0.10:80", 30)?;
    ensure!(counts.values().sum::<usize>() == 30, "{counts:?}");
    drop(lab);
    guard.check()
}

fn nodeport_hairpin_selectorless_reject() -> anyhow::Result<()> {
    let tag = unique_tag("px");
    let guard = LeakGuard::new(&tag);
    let mut lab = Lab::new(&tag)?;
    let _s1 = Server::start(&lab.pod_ns(1), "p1", &[8080])?;
    let _s2 = Server::start(&lab.pod_ns(2), "p2", &[8080])?;
    let _remote = Server::start(lab.remote.name(), "remote", &[7000])?;
    lab.proxy.update_services(vec![
        service(
            json!({"metadata": {"name": "np", "namespace": "default"}, "spec": {
            "type": "NodePort", "clusterIP": "172.30.0.20", "selector": {"app-np": "yes"},
            "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}}),
        ),
        service(
            json!({"metadata": {"name": "self", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.21", "selector": {"app-self": "yes"},
            "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
        service(
            json!({"metadata": {"name": "ext", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.22", "ports": [{"name": "x", "port": 80}]}}),
        ),
        service(
            json!({"metadata": {"name": "empty", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.23", "selector": {"app-none": "yes"}, "ports": [{"port": 80}]}}),
        ),
        service(json!({"metadata": {"name": "extip", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.24", "selector": {"app-np": "yes"}, "externalIPs": ["203.0.113.7"],
            "ports": [{"port": 80, "targetPort": 8080}]}})),
        service(json!({"metadata": {"name": "local", "namespace": "default"}, "spec": {
            "type": "NodePort", "clusterIP": "172.30.0.25", "externalTrafficPolicy": "Local",
            "ports": [{"name": "x", "port": 80, "nodePort": 30081}]}})),
        service(json!({"metadata": {"name": "sliced", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.26", "ports": [{"name": "x", "port": 80}]}})),
        service(json!({"metadata": {"name": "intlocal", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.27", "internalTrafficPolicy": "Local",
            "ports": [{"name": "x", "port": 80}]}})),
        service(json!({"metadata": {"name": "intremote", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.28", "internalTrafficPolicy": "Local",
            "ports": [{"name": "x", "port": 80}]}})),
    ]);
    // Endpoints from two EndpointSlices: the remote one ready, a pod not ready (no traffic).
    let slice = |name: &str, ip: &str, port: u16, ready: bool| {
        serde_json::from_value::<k8s_openapi::api::discovery::v1::EndpointSlice>(json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "sliced"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}],
            "ports": [{"name": "x", "port": port, "protocol": "TCP"}]}))
    };
    lab.proxy.update_endpoint_slices(vec![
        slice("sliced-a", "10.200.0.2", 7000, true)?,
        slice("sliced-b", "10.180.1.2", 8080, false)?,
    ]);
    let eps: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "ext", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "10.200.0.2"}], "ports": [{"name": "x", "port": 7000}]}]}))?;
    let remote_only: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "local", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "10.200.0.2", "nodeName": "node2"}], "ports": [{"name": "x", "port": 7000}]}]}))?;
    let endpoints = |name: &str, subsets: serde_json::Value| {
        serde_json::from_value::<Endpoints>(json!({
            "metadata": {"name": name, "namespace": "default"}, "subsets": subsets}))
    };
    let int_local = endpoints(
        "intlocal",
        json!([{"addresses": [{"ip": "10.180.1.2", "nodeName": "node1"}], "ports": [{"name": "x", "port": 8080}]},
               {"addresses": [{"ip": "10.200.0.2", "nodeName": "node2"}], "ports": [{"name": "x", "port": 7000}]}]),
    )?;
    let int_remote = endpoints(
        "intremote",
        json!([{"addresses": [{"ip": "10.200.0.2", "nodeName": "node2"}], "ports": [{"name": "x", "port": 7000}]}]),
    )?;
    lab.proxy
        .update_endpoints(vec![eps, remote_only, int_local, int_remote]);
    lab.proxy
        .update_pods(vec![pod(1, &["np", "self"], true), pod(2, &["np"], true)]);
    lab.sync()?;

    // NodePort through the node's address on the client's link.
    let counts = requests(&lab.client_ns(1), "192.168.77.1:30080", 40)?;
    ensure!(counts.len() == 2, "nodeport answers: {counts:?}");
    // Hairpin: p1 reaches itself through its Service (answer comes back masqueraded).
    let counts = requests(&lab.pod_ns(1), "172.30.0.21:80", 10)?;
    ensure!(counts.get("p1") == Some(&10), "hairpin: {counts:?}");
    // Selector-less Service with manual Endpoints outside the cluster.
    let counts = requests(&lab.client_ns(2), "172.30.0.22:80", 10)?;
    ensure!(
        counts.get("remote") == Some(&10),
        "selector-less: {counts:?}"
    );
    // A Service whose endpoints are EndpointSlices: only the ready endpoint answers.
    let counts = requests(&lab.client_ns(2), "172.30.0.26:80", 10)?;
    ensure!(
        counts.get("remote") == Some(&10),
        "EndpointSlice endpoints: {counts:?}"
    );
    // An external IP routed to the node.
    let counts = requests(&lab.client_ns(1), "203.0.113.7:80", 20)?;
    ensure!(
        counts.values().sum::<usize>() == 20 && counts.keys().all(|k| k.starts_with('p')),
        "external IP: {counts:?}"
    );
    // externalTrafficPolicy: Local without a local endpoint: external traffic is dropped, while
    // the ClusterIP still reaches the remote endpoint.
    let dropped = in_netns(&lab.client_ns(1), || {
        tcp_get("192.168.77.1:30081".parse().expect("addr"))
    })?;
    ensure!(
        matches!(&dropped, Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock),
        "Local NodePort without local endpoints answered: {dropped:?}"
    );
    let counts = requests(&lab.client_ns(1), "172.30.0.25:80", 5)?;
    ensure!(
        counts.get("remote") == Some(&5),
        "Local policy ClusterIP: {counts:?}"
    );
    // internalTrafficPolicy: Local: the ClusterIP reaches this node's endpoint only (never the
    // remote one), and a Service whose endpoints are all elsewhere drops its ClusterIP traffic.
    let counts = requests(&lab.client_ns(2), "172.30.0.27:80", 20)?;
    ensure!(
        counts.get("p1") == Some(&20),
        "internal Local policy ClusterIP: {counts:?}"
    );
    let dropped = in_netns(&lab.client_ns(2), || {
        tcp_get("172.30.0.28:80".parse().expect("addr"))
    })?;
    ensure!(
        matches!(&dropped, Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock),
        "internal Local ClusterIP without local endpoints answered: {dropped:?}"
    );
    // No endpoints: a refusal (REJECT), not a hang: a dropped SYN would end in a timeout
    // error after IO_TIMEOUT instead.
    let res = in_netns(&lab.client_ns(1), || {
        tcp_get("172.30.0.23:80".parse().expect("addr"))
    })?;
    match res {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => bail!("expected a refusal, got {other:?}"),
    }
    drop(lab);
    guard.check()
}

fn readiness_and_udp_endpoint_change() -> anyhow::Result<()> {
    let tag = unique_tag("px");
    let guard = LeakGuard::new(&tag);
    let mut lab = Lab::new(&tag)?;
    let _servers: Vec<Server> = (1..=2)
        .map(|i| Server::start(&lab.pod_ns(i), &format!("p{i}"), &[8080]))
        .collect::<Result<_, _>>()?;
    lab.proxy.update_services(vec![
        service(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.30", "selector": {"app-web": "yes"}, "ports": [{"port": 80, "targetPort": 8080}]}})),
        service(json!({"metadata": {"name": "dns", "namespace": "default"}, "spec": {
            "clusterIP": "172.30.0.31", "selector": {"app-dns": "yes"},
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]}})),
    ]);
    lab.proxy
        .update_pods(vec![pod(1, &["web", "dns"], true), pod(2, &["web"], true)]);
    lab.sync()?;
    let counts = requests(&lab.client_ns(1), "172.30.0.30:80", 40)?;
    ensure!(counts.len() == 2, "both ready pods answer: {counts:?}");

    // UDP from one socket (one conntrack entry) reaches p1.
    let client = lab.client_ns(1);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (atx, arx) = std::sync::mpsc::channel::<anyhow::Result<String>>();
    let udp_thread = std::thread::spawn(move || {
        let r = in_netns(&client, move || -> anyhow::Result<()> {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(IO_TIMEOUT))?;
            let mut buf = [0u8; 64];
            for _ in 0..2 {
                if rx.recv_timeout(Duration::from_secs(60)).is_err() {
                    break;
                }
                let answer = (|| -> anyhow::Result<String> {
                    sock.send_to(b"who", "172.30.0.31:53")?;
                    let (n, _) = sock.recv_from(&mut buf)?;
                    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
                })();
                let _ = atx.send(answer);
            }
            Ok(())
        });
        if let Ok(Err(e)) | Err(e) = r {
            eprintln!("udp client: {e:#}");
        }
    });
    tx.send(())?;
    let first = arx.recv_timeout(Duration::from_secs(10))??;
    ensure!(first == "p1", "first datagram answered by {first}");

    // p1 goes not-ready, p2 takes DNS over: no new TCP connection reaches p1, and the next
    // datagram from the same socket reaches p2 (stale flow deleted).
    lab.proxy.update_pods(vec![
        pod(1, &["web", "dns"], false),
        pod(2, &["web", "dns"], true),
    ]);
    lab.sync()?;
    let counts = requests(&lab.client_ns(1), "172.30.0.30:80", 40)?;
    ensure!(
        counts.get("p2") == Some(&40),
        "not-ready p1 still got connections: {counts:?}"
    );
    tx.send(())?;
    let second = arx.recv_timeout(Duration::from_secs(10))??;
    ensure!(
        second == "p2",
        "after the endpoint change the datagram went to {second}"
    );
    let _ = udp_thread.join();
    drop(lab);
    guard.check()
}

/// `iptables-save` of every table without comments and counters.
fn tables(ns: &Netns) -> anyhow::Result<String> {
    let out = ns.exec(&["iptables-nft-save"])?;
    ensure!(
        out.status.success(),
        "iptables-save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn cleanup_restores_tables() -> anyhow::Result<()> {
    let tag = unique_tag("px");
    let guard = LeakGuard::new(&tag);
    let mut lab = Lab::new(&tag)?;
    // Other software's rules, including a chain named like kube-proxy's per-service chains.
    lab.node.sh(
        "iptables -t nat -N OTHER-POSTROUTING && iptables -t nat -A OTHER-POSTROUTING -s 10.9.0.0/16 -j MASQUERADE \
         && iptables -t nat -A POSTROUTING -j OTHER-POSTROUTING && iptables -A INPUT -p tcp --dport 22 -j ACCEPT \
         && iptables -t mangle -A PREROUTING -j MARK --set-mark 7",
    )?;
    let before = tables(&lab.node)?;
    // Backend detection: a fresh namespace with nft rules is nft, and detecting creates no
    // legacy tables (asking iptables-legacy for a table by name would).
    let fw = IptablesFirewall::in_netns("auto", lab.node.name())?;
    ensure!(
        fw.mode() == kubenode_proxy::iptables::IptablesMode::Nft,
        "detected {}",
        fw.mode()
    );
    let legacy = lab.node.exec(&["iptables-legacy-save"])?;
    ensure!(
        legacy.stdout.is_empty(),
        "detection created legacy tables: {}",
        String::from_utf8_lossy(&legacy.stdout)
    );
    lab.proxy.update_services(vec![service(
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
        "type": "NodePort", "clusterIP": "172.30.0.40", "selector": {"app-web": "yes"},
        "sessionAffinity": "ClientIP", "ports": [{"port": 80, "targetPort": 8080}]}}),
    )]);
    lab.proxy.update_pods(vec![pod(1, &["web"], true)]);
    lab.sync()?;
    let during = tables(&lab.node)?;
    ensure!(
        during.contains("KUBE-SVCS-172.30.0.0") && during != before,
        "rules not installed"
    );

    let bin = kubenode_bin();
    let out = lab.node.exec(&[
        &bin.to_string_lossy(),
        "proxy",
        "--cleanup",
        "--iptables-mode",
        "nft",
    ])?;
    ensure!(
        out.status.success(),
        "kubenode proxy --cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = tables(&lab.node)?;
    ensure!(
        after == before,
        "tables differ after cleanup:\n--- before\n{before}\n--- after\n{after}"
    );
    // A second cleanup has nothing to do and succeeds.
    let out = lab.node.exec(&[
        &bin.to_string_lossy(),
        "proxy",
        "--cleanup",
        "--iptables-mode",
        "nft",
    ])?;
    ensure!(out.status.success(), "second cleanup failed");
    drop(lab);
    guard.check()
}

/// Services whose names the API server would refuse reach the proxy (the library takes any
/// `Service`): a quote, a newline carrying a rule, 200-character names. The real
/// iptables-restore still accepts every sync, nothing is injected, and a valid Service added
/// afterwards is programmed and answers.
fn hostile_names_do_not_break_restores() -> anyhow::Result<()> {
    let tag = unique_tag("px");
    let guard = LeakGuard::new(&tag);
    let mut lab = Lab::new(&tag)?;
    let _s1 = Server::start(&lab.pod_ns(1), "p1", &[8080])?;
    let long_ns = "n".repeat(200);
    let long_name = "s".repeat(200);
    let hostile = vec![
        service(
            json!({"metadata": {"name": "web", "namespace": "bad\"ns"}, "spec": {
            "clusterIP": "172.30.0.50", "ports": [{"port": 80}]}}),
        ),
        service(
            json!({"metadata": {"name": "web", "namespace": "a\n-A INPUT -j DROP\n#"}, "spec": {
            "clusterIP": "172.30.0.51", "ports": [{"name": "x\\\"y", "port": 80}]}}),
        ),
        service(
            json!({"metadata": {"name": long_name, "namespace": long_ns}, "spec": {
            "clusterIP": "172.30.0.52", "type": "NodePort", "selector": {"app-web": "yes"},
            "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
    ];
    lab.proxy.update_services(hostile.clone());
    lab.proxy.sync().context("a sync with hostile names")?;

    let mut all = hostile;
    all.push(service(
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
        "clusterIP": "172.30.0.53", "selector": {"app-web": "yes"},
        "ports": [{"port": 80, "targetPort": 8080}]}}),
    ));
    lab.proxy.update_services(all);
    lab.proxy.update_pods(vec![pod(1, &["web"], true)]);
    lab.proxy
        .sync()
        .context("the sync after a valid Service was added")?;
    let counts = requests(&lab.client_ns(1), "172.30.0.53:80", 5)?;
    ensure!(
        counts.get("p1") == Some(&5),
        "the valid Service does not answer: {counts:?}"
    );
    let rules = tables(&lab.node)?;
    ensure!(
        !rules.lines().any(|l| l.trim() == "-A INPUT -j DROP"),
        "a rule was injected into INPUT:\n{rules}"
    );
    ensure!(
        rules.contains("bad_ns/web has no endpoints"),
        "the quoted name is not shown made harmless:\n{rules}"
    );
    drop(lab);
    guard.check()
}

/// Every `-A` rule of the node's tables (nft and legacy backends), for presence checks.
fn node_rules(node: &Netns) -> anyhow::Result<String> {
    let mut all = String::new();
    for save in ["iptables-nft-save", "iptables-legacy-save"] {
        let out = node.exec(&[save])?;
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(all)
}

/// Through a real agent and its manifest directory: a Service whose namespace holds a quote is
/// refused when the file is read, with an event naming the file and `metadata.namespace`, and a
/// valid Service written after it is programmed (once, one such Service stopped every later
/// restore).
fn manifest_with_bad_namespace_is_refused() -> anyhow::Result<()> {
    with_agent("pxm", |agent| {
        agent.write_manifest(
            "bad.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: 'bad\"ns'\n\
             spec:\n  clusterIP: 10.96.0.60\n  ports:\n  - {port: 80}\n",
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let event = loop {
            let found = agent.events()?.into_iter().find_map(|e| {
                let msg = e.message.unwrap_or_default();
                (msg.contains("bad.yaml") && msg.contains("metadata.namespace")).then_some(msg)
            });
            if let Some(msg) = found {
                break msg;
            }
            ensure!(
                Instant::now() < deadline,
                "no event names bad.yaml and metadata.namespace: {:?}",
                agent.events()?
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        ensure!(
            event.contains("Invalid value: \"bad\\\"ns\"") && event.contains("RFC 1123 label"),
            "event: {event}"
        );

        agent.write_manifest(
            "good.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n\
             spec:\n  clusterIP: 10.96.0.61\n  ports:\n  - {port: 80}\n",
        )?;
        // A Service whose endpoint is an EndpointSlice of the manifest directory.
        agent.write_manifest(
            "sliced.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: sliced}\n\
             spec: {clusterIP: 10.96.0.62, ports: [{name: http, port: 80}]}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {name: sliced-1, labels: {kubernetes.io/service-name: sliced}}\n\
             addressType: IPv4\nendpoints: [{addresses: [10.244.77.7]}]\n\
             ports: [{name: http, port: 8080}]\n",
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rules = node_rules(&agent.node)?;
            if rules.contains("10.96.0.61") && rules.contains("10.244.77.7:8080") {
                ensure!(
                    !rules.contains("10.96.0.60"),
                    "the refused Service was programmed:\n{rules}"
                );
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the valid Service was never programmed:\n{rules}\n--- agent log\n{}",
                kubenode_integration::agent::tail(&agent.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })
}

/// 10,000 Services programmed in one sync: no Service error, every ClusterIP's rule is in the
/// node's tables, and a ClusterIP in the last bucket (the longest first-packet path) and one in
/// the first both reach the pod. The connection rate through that path against straight to the
/// pod is a figure, printed by `proxy-datapath-bench`, not a check here.
fn services_10k_programmed_and_last_bucket_answers() -> anyhow::Result<()> {
    let tag = unique_tag("px");
    let guard = LeakGuard::new(&tag);
    let mut lab = Lab::new(&tag)?;
    let _server = Server::start(&lab.pod_ns(1), "p1", &[8080])?;
    let ip = |i: usize| format!("172.30.{}.{}", i / 250, i % 250 + 1);
    let services: Vec<Service> = (0..10_000)
        .map(|i| {
            service(
                json!({"metadata": {"name": format!("s{i:05}"), "namespace": "default"}, "spec": {
                "clusterIP": ip(i), "selector": {"app-web": "yes"},
                "ports": [{"port": 80, "targetPort": 8080}]}}),
            )
        })
        .collect();
    lab.proxy.update_services(services);
    lab.proxy.update_pods(vec![pod(1, &["web"], true)]);
    lab.sync()?;
    let rules = tables(&lab.node)?;
    let destinations: std::collections::HashSet<&str> = rules
        .split_whitespace()
        .filter_map(|w| w.strip_suffix("/32"))
        .collect();
    let missing: Vec<String> = (0..10_000)
        .map(ip)
        .filter(|a| !destinations.contains(a.as_str()))
        .take(5)
        .collect();
    ensure!(
        missing.is_empty(),
        "ClusterIPs without a rule (first 5): {missing:?}"
    );
    // From a pod (no masquerade): the last bucket's last Service, the first one, and the pod.
    for addr in ["172.30.39.250:80", "172.30.0.1:80", "10.180.1.2:8080"] {
        let counts = requests(&lab.pod_ns(2), addr, 20)?;
        ensure!(counts.get("p1") == Some(&20), "{addr}: {counts:?}");
    }
    drop(lab);
    guard.check()
}
