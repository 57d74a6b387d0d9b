//! Privileged end-to-end test of the proxy in cluster mode: `kubenode proxy --kubeconfig` takes
//! Services and EndpointSlices from the stand-in API server (`kubenode_integration::apiserver`),
//! driven with the real `kubectl`; the test plays the EndpointSlice controller.
//!
//! Everything runs in network namespaces this test creates:
//! ```text
//!   client c 192.168.81.2 ── node n (stand-in on 127.0.0.1, kubenode proxy, rules) ── pod p 10.181.1.2
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::apiserver::ApiServer;
use kubenode_integration::{
    ip_addr_add, kubenode_bin, privileged, run_tests, unique_tag, veth, LeakGuard, Netns, TestDir,
};

use kubenode_integration::kubectl::{self, KUBECTL};
const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn main() {
    let missing = !kubectl::present();
    if missing {
        eprintln!("note: `kubectl` is not installed: the cluster proxy test is skipped (install the kubectl package)");
    }
    run_tests(vec![privileged(
        "cluster_proxy_services_and_slices_from_the_api",
        services_and_slices_from_the_api,
    )
    .with_ignored_flag(missing)])
}

/// A server in a pod namespace answering its name on TCP `port`, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, name: &str, port: u16) -> anyhow::Result<Server> {
        let listener = ns.run_in(|| TcpListener::bind(("0.0.0.0", port)))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, name) = (stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(format!("{name}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
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

/// The `kubenode proxy` process, killed when dropped.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One TCP request from `ns`: the server's name, or the error.
fn tcp_get(ns: &Netns, addr: &str) -> anyhow::Result<std::io::Result<String>> {
    let addr: SocketAddr = addr.parse()?;
    ns.run_in(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out.trim().to_string())
    })
}

/// `GET path` over HTTP/1.0 from `ns`: status code and body.
fn http_get(ns: &Netns, addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let addr: SocketAddr = addr.parse()?;
    let path = path.to_string();
    let raw = ns.run_in(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {raw:?}"))?;
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Ok((code, body))
}

/// The node's iptables rules (nf_tables), without the dated comment lines.
fn node_rules(node: &Netns) -> anyhow::Result<String> {
    let out = node.exec(&["iptables-nft-save"])?;
    ensure!(out.status.success(), "iptables-nft-save failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Waits (30 s at most) until `check` gives `Some`.
fn wait_for<T>(
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
    log: &std::path::Path,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            bail!(
                "{what}: not within 30 s; proxy log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn services_and_slices_from_the_api() -> anyhow::Result<()> {
    let tag = unique_tag("cpx");
    let guard = LeakGuard::new(&tag);
    let dir = TestDir::new(&tag)?;
    let node = Netns::new(&format!("{tag}n"))?;
    let pod = Netns::new(&format!("{tag}p"))?;
    let client = Netns::new(&format!("{tag}c"))?;
    node.sh("sysctl -qw net.ipv4.ip_forward=1")?;
    veth(Some(&node), &format!("{tag}p"), Some(&pod), "eth0")?;
    ip_addr_add(Some(&node), &format!("{tag}p"), "10.181.1.1/24")?;
    ip_addr_add(Some(&pod), "eth0", "10.181.1.2/24")?;
    pod.ip(&["route", "add", "default", "via", "10.181.1.1"])?;
    veth(Some(&node), &format!("{tag}c"), Some(&client), "eth0")?;
    ip_addr_add(Some(&node), &format!("{tag}c"), "192.168.81.1/24")?;
    ip_addr_add(Some(&client), "eth0", "192.168.81.2/24")?;
    client.ip(&["route", "add", "default", "via", "192.168.81.1"])?;
    node.ip(&["route", "add", "default", "via", "192.168.81.2"])?;
    let pod2 = Netns::new(&format!("{tag}q"))?;
    veth(Some(&node), &format!("{tag}q"), Some(&pod2), "eth0")?;
    ip_addr_add(Some(&node), &format!("{tag}q"), "10.181.2.1/24")?;
    ip_addr_add(Some(&pod2), "eth0", "10.181.2.2/24")?;
    pod2.ip(&["route", "add", "default", "via", "10.181.2.1"])?;
    let _backend = Server::start(&pod, "p1", 8080)?;
    let _backend2 = Server::start(&pod2, "p2", 8080)?;

    // The stand-in listens inside the node's namespace, where the proxy and kubectl run.
    let mut server = node.run_in(|| ApiServer::start("127.0.0.1:0".parse().expect("addr")))??;
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let kubectl = |args: &[&str]| -> anyhow::Result<String> {
        let mut cmd = node.command(&[KUBECTL]);
        cmd.args(kubectl::common_args(&kubeconfig, dir.path()))
            .args(args);
        kubectl::outcome(&mut cmd, dir.path())?
            .map_err(|e| anyhow::anyhow!("kubectl {args:?}: {e}"))
    };
    let create = |name: &str, doc: &str| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, doc)?;
        kubectl(&["create", "-f", path.to_str().context("path")?])
    };
    // The proxy's Node, whose primary address (InternalIP) alone accepts NodePorts
    // (`--nodeport-addresses primary`).
    create(
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: node1}\n",
    )?;
    kubectl(&[
        "patch",
        "node",
        "node1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"addresses":[{"type":"InternalIP","address":"192.168.81.1"},{"type":"Hostname","address":"node1"}]}}"#,
    ])?;
    create(
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
         spec: {type: NodePort, clusterIP: 10.96.50.10, ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30090}]}\n",
    )?;
    create(
        "web-slice.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-abcde, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\n\
         endpoints: [{addresses: [10.181.1.2], nodeName: node1, conditions: {ready: true}}]\n\
         ports: [{name: http, port: 8080, protocol: TCP}]\n",
    )?;
    // A Service meant for another proxy, and its slice: not this proxy's business.
    create(
        "other.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: other, labels: {service.kubernetes.io/service-proxy-name: elsewhere}}\n\
         spec: {clusterIP: 10.96.50.11, ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: other-1, labels: {kubernetes.io/service-name: other, service.kubernetes.io/service-proxy-name: elsewhere}}\n\
         addressType: IPv4\nendpoints: [{addresses: [10.181.1.99]}]\nports: [{name: http, port: 8080, protocol: TCP}]\n",
    )?;

    let log = dir.join("proxy.log");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    let mut cmd = node.command(&[&kubenode_bin().to_string_lossy(), "proxy"]);
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--manifest-dir")
        .arg(&manifests)
        .arg("--state-file")
        .arg(dir.join("allocations.json"))
        .args([
            "--hostname-override",
            "node1",
            "--iptables-mode",
            "nft",
            "--cluster-cidr",
            "10.181.0.0/16",
            // The namespace's own port: no other test's proxy can hold it.
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--nodeport-addresses",
            "primary",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    let proxy = Proxy(cmd.spawn().context("starting kubenode proxy")?);

    // The Service from the API reaches the backend its EndpointSlice names.
    let who = wait_for(
        "request to the ClusterIP 10.96.50.10:80",
        || Ok(tcp_get(&client, "10.96.50.10:80")?.ok()),
        &log,
    )?;
    ensure!(who == "p1", "answered by {who:?}");
    // The NodePort on the node's primary address; the pod-side address takes none.
    let who = tcp_get(&client, "192.168.81.1:30090")?.context("NodePort on the primary IP")?;
    ensure!(who == "p1", "NodePort answered by {who:?}");
    let rules = node_rules(&node)?;
    let jumps: Vec<&str> = rules
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SERVICES") && l.ends_with("-j KUBE-NODEPORTS"))
        .collect();
    ensure!(
        jumps.len() == 1 && jumps[0].starts_with("-A KUBE-SERVICES -d 192.168.81.1/32 "),
        "NodePorts not limited to the primary IP:\n{rules}"
    );
    ensure!(
        !rules.contains("10.96.50.11") && !rules.contains("10.181.1.99"),
        "a Service labelled for another proxy was programmed:\n{rules}"
    );

    // Health: kube-proxy's JSON, 200 while the rules are current.
    let (code, body) = http_get(&node, "127.0.0.1:10256", "/healthz")?;
    ensure!(code == 200, "/healthz {code}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).context(body.clone())?;
    ensure!(
        json["nodeEligible"] == true && json["lastUpdated"] == json["currentTime"],
        "/healthz body: {body}"
    );
    let (code, body) = http_get(&node, "127.0.0.1:10256", "/livez")?;
    ensure!(
        code == 200 && body.contains("lastUpdated"),
        "/livez {code}: {body}"
    );

    // The API server goes away: the rules stay and keep serving. Its watch history is
    // compacted meanwhile, past the proxy's last version (a Service the proxy does not watch
    // moved it on), so the proxy's next watch gets 410 Gone and relists: the same objects, so
    // nothing is handed over and no rule is rewritten.
    create(
        "third.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: third, labels: {service.kubernetes.io/service-proxy-name: elsewhere}}\n\
         spec: {clusterIP: 10.96.50.12, ports: [{name: http, port: 80}]}\n",
    )?;
    let count = |needle: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    };
    let syncs = count("synced proxy rules");
    let rules_before = node_rules(&node)?;
    server.pause();
    server.compact();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        let who =
            tcp_get(&client, "10.96.50.10:80")?.context("request while the API server is away")?;
        ensure!(
            who == "p1",
            "answered by {who:?} while the API server is away"
        );
    }
    node.run_in(|| server.resume())??;
    wait_for(
        "a relist of Services and EndpointSlices after 410 Gone",
        || Ok((count("relisted from the API server") >= 2).then_some(())),
        &log,
    )?;
    let text = std::fs::read_to_string(&log)?;
    for line in text
        .lines()
        .filter(|l| l.contains("relisted from the API server"))
    {
        ensure!(
            line.contains("changed=0") && line.contains("removed=0"),
            "a relist of unchanged objects handed something over: {line}"
        );
    }
    let rules_after = node_rules(&node)?;
    ensure!(
        count("synced proxy rules") == syncs && rules_after == rules_before,
        "the relist rewrote rules: {syncs} syncs before, {} after; rules before:\n{}\nafter:\n{}\nlog:\n{}",
        count("synced proxy rules"),
        rules_before,
        rules_after,
        std::fs::read_to_string(&log)?
    );

    // ProxyTerminatingEndpoints: p1 terminating but still serving, p2 ready in another slice:
    // only p2 answers; when p2's slice goes, p1 takes the traffic rather than nobody.
    create(
        "web-slice-2.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-fghij, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\n\
         endpoints: [{addresses: [10.181.2.2], nodeName: node2, conditions: {ready: true}}]\n\
         ports: [{name: http, port: 8080, protocol: TCP}]\n",
    )?;
    kubectl(&[
        "patch",
        "endpointslice",
        "web-abcde",
        "--type=merge",
        "-p",
        r#"{"endpoints":[{"addresses":["10.181.1.2"],"nodeName":"node1","conditions":{"ready":false,"serving":true,"terminating":true}}]}"#,
    ])?;
    let answers = |n: usize| -> anyhow::Result<Vec<String>> {
        (0..n)
            .map(|_| Ok(tcp_get(&client, "10.96.50.10:80")?.unwrap_or_default()))
            .collect()
    };
    wait_for(
        "only the ready endpoint p2 answering",
        || Ok(answers(10)?.iter().all(|w| w == "p2").then_some(())),
        &log,
    )?;
    kubectl(&["delete", "endpointslice", "web-fghij"])?;
    wait_for(
        "the terminating endpoint p1 answering once no endpoint is ready",
        || Ok(answers(5)?.iter().all(|w| w == "p1").then_some(())),
        &log,
    )?;

    // The controller removes the slice: the Service has no endpoint, a request is refused.
    kubectl(&["delete", "endpointslice", "web-abcde"])?;
    wait_for(
        "refusal after the EndpointSlice was deleted",
        || {
            Ok(match tcp_get(&client, "10.96.50.10:80")? {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            })
        },
        &log,
    )?;
    let rules = node_rules(&node)?;
    ensure!(
        !rules.contains("10.181.1.2:8080"),
        "the deleted endpoint is still programmed:\n{rules}"
    );

    // The Service itself goes: its ClusterIP leaves the rules.
    kubectl(&["delete", "service", "web"])?;
    wait_for(
        "the deleted Service's rules to go",
        || Ok((!node_rules(&node)?.contains("10.96.50.10")).then_some(())),
        &log,
    )?;

    drop(proxy);
    drop(server);
    drop((client, pod, pod2, node));
    drop(dir);
    guard.check()
}
