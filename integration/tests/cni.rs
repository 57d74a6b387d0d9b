//! The CNI client and kubenode-bridge on real network namespaces. Each test's "node" is its own
//! namespace (the bridge, the plugins' iptables rules and sysctls live there); pods are namespaces
//! attached by the plugins. The client runs every plugin inside the node namespace.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use kubenode_cni::client::{ExecError, PluginExec, PluginRequest, ProcessExec};
use kubenode_cni::{Attachment, CniClient, CniConfig};
use kubenode_integration::{
    ip_addr_add, link_up, privileged, run_tests, unique_tag, veth, LeakGuard, Netns, TestDir,
};
use serde_json::json;

fn main() {
    run_tests(vec![
        privileged("cni_reference_plugins_add_check_del", || {
            suite(Plugin::Reference)
        }),
        privileged("cni_kubenode_bridge_add_check_del", || {
            suite(Plugin::Kubenode)
        }),
        privileged("cni_kubenode_bridge_50_concurrent_adds", concurrent_adds),
        privileged("cni_kubenode_bridge_two_nodes_no_nat", two_nodes),
        privileged("cni_kubenode_bridge_status_and_gc", status_and_gc),
        privileged("cni_default_network_end_to_end", default_network),
        privileged("cni_kubenode_bridge_dual_stack", dual_stack),
    ])
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Plugin {
    Reference,
    Kubenode,
    /// kubenode-bridge alone, spec 1.1.0 (STATUS and GC).
    KubenodeOnly,
    /// kubenode-bridge alone, dual-stack (`fd00:10:244:9::/64` besides the IPv4 pod CIDR).
    KubenodeDualStack,
}

/// The plugin binary: the kubenode binary (argv[0] dispatch) or the cni crate's standalone
/// kubenode-bridge, whichever of them answers VERSION and was built last.
fn kubenode_bridge_target() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary lives in target/<profile>/deps")?;
    ["kubenode", "kubenode-bridge"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|p| p.exists() && answers_version(p))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .with_context(|| {
            format!(
                "neither kubenode nor kubenode-bridge is built in {}: `cargo build --workspace --bins`",
                dir.display()
            )
        })
}

/// Whether `bin`, run as kubenode-bridge, answers VERSION (an old kubenode build may not).
fn answers_version(bin: &Path) -> bool {
    let mut cmd = std::process::Command::new(bin);
    cmd.env("CNI_COMMAND", "VERSION");
    if bin.ends_with("kubenode") {
        cmd.arg("cni-plugin");
    }
    kubenode_integration::run(&mut cmd, Duration::from_secs(10))
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("supportedVersions"))
}

/// One "node": a namespace, a CNI config/bin/cache layout in a test dir and a client.
struct Node {
    ns: Netns,
    dir: TestDir,
    client: Arc<CniClient>,
    data_dir: PathBuf,
}

fn node(
    tag: &str,
    suffix: &str,
    plugin: Plugin,
    pod_cidr: &str,
    cluster_cidr: &str,
) -> anyhow::Result<Node> {
    let ns = Netns::new(&format!("{tag}{suffix}"))?;
    let dir = TestDir::new(&format!("{tag}{suffix}"))?;
    let (conf, bin, data_dir) = (dir.join("net.d"), dir.join("bin"), dir.join("networks"));
    std::fs::create_dir_all(&conf)?;
    std::fs::create_dir_all(&bin)?;
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        symlink(Path::new("/usr/lib/cni").join(p), bin.join(p))?;
    }
    let bridge = format!("{tag}br");
    let list = match plugin {
        Plugin::Reference => json!({"cniVersion":"1.0.0","name":"ref","plugins":[
            {"type":"bridge","bridge":bridge,"isGateway":true,"ipMasq":false,"hairpinMode":true,
             "ipam":{"type":"host-local","ranges":[[{"subnet":pod_cidr}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":data_dir}},
            {"type":"loopback"},
            {"type":"portmap","capabilities":{"portMappings":true}}]}),
        Plugin::Kubenode => {
            symlink(kubenode_bridge_target()?, bin.join("kubenode-bridge"))?;
            json!({"cniVersion":"1.0.0","name":"kn","plugins":[
                {"type":"kubenode-bridge","bridge":bridge,"podCIDR":pod_cidr,"clusterCIDR":cluster_cidr,"dataDir":data_dir},
                {"type":"portmap","capabilities":{"portMappings":true}}]})
        }
        Plugin::KubenodeOnly => {
            symlink(kubenode_bridge_target()?, bin.join("kubenode-bridge"))?;
            json!({"cniVersion":"1.1.0","name":"kn","plugins":[
                {"type":"kubenode-bridge","bridge":bridge,"podCIDR":pod_cidr,"clusterCIDR":cluster_cidr,"dataDir":data_dir}]})
        }
        Plugin::KubenodeDualStack => {
            symlink(kubenode_bridge_target()?, bin.join("kubenode-bridge"))?;
            json!({"cniVersion":"1.1.0","name":"kn","plugins":[
                {"type":"kubenode-bridge","bridge":bridge,"podCIDRs":[pod_cidr,"fd00:10:244:9::/64"],
                 "clusterCIDRs":[cluster_cidr,"fd00:10:244::/48"],"dataDir":data_dir}]})
        }
    };
    std::fs::write(
        conf.join("10-test.conflist"),
        serde_json::to_vec_pretty(&list)?,
    )?;
    let client = CniClient::new(CniConfig {
        conf_dir: conf,
        bin_dirs: vec![bin],
        cache_dir: dir.join("cache"),
        timeout: Duration::from_secs(30),
        plugin_netns: Some(ns.path()),
    })?;
    Ok(Node {
        ns,
        dir,
        client: Arc::new(client),
        data_dir,
    })
}

fn attachment(id: &str, pod: &Netns) -> Attachment {
    Attachment {
        container_id: id.into(),
        netns_path: pod.path(),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: id.into(),
        pod_uid: format!("uid-{id}"),
        ..Default::default()
    }
}

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// One echo request with a 1 s wait; up to 3 tries (a loaded machine may drop the first one
/// while neighbour resolution runs).
fn ping(from: &Netns, ip: IpAddr) -> anyhow::Result<()> {
    let applet = if ip.is_ipv6() { "ping6" } else { "ping" };
    let mut last = String::new();
    for _ in 0..3 {
        let out = from.exec_timeout(
            &["busybox", applet, "-c1", "-W1", &ip.to_string()],
            Duration::from_secs(5),
        )?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stdout).to_string();
    }
    bail!("ping {ip} from {} failed 3 times: {last}", from.name())
}

/// Addresses still reserved in an allocation directory (files named by an IP).
fn reservations(data_dir: &Path) -> Vec<String> {
    walk(data_dir)
        .into_iter()
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect()
}

fn walk(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                vec![e.file_name().to_string_lossy().to_string()]
            }
        })
        .collect()
}

fn suite(plugin: Plugin) -> anyhow::Result<()> {
    let tag = unique_tag("cn");
    let guard = LeakGuard::new(&tag);
    {
        let n = node(&tag, "n", plugin, "10.244.1.0/24", "10.244.0.0/16")?;
        let (p1, p2) = (
            Netns::new(&format!("{tag}a"))?,
            Netns::new(&format!("{tag}b"))?,
        );
        let rt = rt()?;
        let mut a1 = attachment(&format!("{tag}-1"), &p1);
        a1.capability_args = serde_json::from_value(
            json!({"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}),
        )?;
        let a2 = attachment(&format!("{tag}-2"), &p2);
        let r1 = rt.block_on(n.client.add(&a1))?;
        let r2 = rt.block_on(n.client.add(&a2))?;
        let (ip1, ip2) = (r1.pod_ips()[0], r2.pod_ips()[0]);
        ensure!(ip1 != ip2, "distinct pod IPs");
        ensure!(
            r1.gateway() == Some("10.244.1.1".parse()?),
            "gateway {:?}",
            r1.gateway()
        );
        // Debian's portmap (plugins 1.1.1) fails CHECK on IPv4-only pods ("could not check ipv6
        // dnat", fixed upstream later), so CHECK runs over the chain without it.
        let conf = n.dir.join("net.d/10-test.conflist");
        let full = std::fs::read(&conf)?;
        let mut list: serde_json::Value = serde_json::from_slice(&full)?;
        list["plugins"]
            .as_array_mut()
            .context("plugins")?
            .retain(|p| p["type"] != "portmap");
        std::fs::write(&conf, serde_json::to_vec(&list)?)?;
        let checks = rt
            .block_on(n.client.check(&a1))
            .and(rt.block_on(n.client.check(&a2)));
        std::fs::write(&conf, &full)?;
        checks?;
        ping(&p1, ip2)?;
        ping(&p2, ip1)?;
        ping(&n.ns, ip1)?;
        let dnat = n.ns.sh("iptables -t nat -S")?;
        ensure!(
            dnat.contains("18080"),
            "portmap got the port mapping via runtimeConfig: {dnat}"
        );
        if plugin == Plugin::Kubenode {
            let nat = n.ns.sh("iptables -t nat -S POSTROUTING")?;
            ensure!(
                nat.contains("-s 10.244.0.0/16 ! -d 10.244.0.0/16")
                    && nat.matches("MASQUERADE").count() == 1,
                "{nat}"
            );
            let missing = Attachment {
                netns_path: "/run/netns/does-not-exist".into(),
                ..attachment(&format!("{tag}-x"), &p1)
            };
            let e = rt
                .block_on(n.client.add(&missing))
                .expect_err("ADD into a missing netns fails");
            let reply = e.plugin_reply().context("a spec error reply")?;
            ensure!(
                reply.code == 4 && reply.msg.contains("does-not-exist"),
                "{e}"
            );
            // The plugin itself (not through the client, which would tear down after a failed
            // ADD): a second ADD of the same interface fails and leaves the first one intact.
            let exec = ProcessExec::new(Duration::from_secs(30), Some(&n.ns.path()))?;
            let list = n.client.network()?;
            let req = PluginRequest {
                command: "ADD".into(),
                container_id: a1.container_id.clone(),
                netns: p1.path().display().to_string(),
                ifname: "eth0".into(),
                path: n.dir.join("bin").display().to_string(),
                stdin: list.plugin_stdin(0, None, &Default::default()),
                ..Default::default()
            };
            match rt.block_on(exec.exec(&n.dir.join("bin/kubenode-bridge"), &req)) {
                Err(ExecError::Plugin { reply, .. }) if reply.code == 103 => {}
                other => bail!("second ADD of eth0: {other:?}"),
            }
            ping(&n.ns, ip1)?;
        }
        // The bridge keeps its MAC address when a port goes: unpinned, it follows the lowest port
        // address, so deleting that pod would leave the other pods' gateway entry pointing
        // nowhere. Delete first the pod whose host veth the bridge's address came from (if any).
        let mut order = [&a1, &a2];
        let mut bridge_mac = String::new();
        if plugin == Plugin::Kubenode {
            bridge_mac = n.ns.sh("ip -o link show type bridge")?;
            bridge_mac = bridge_mac
                .split_once("link/ether ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .context("the bridge's MAC address")?
                .to_string();
            let host_mac = |r: &kubenode_cni::CniResult| {
                r.interfaces
                    .iter()
                    .find(|i| i.sandbox.is_none() && i.name.starts_with("veth"))
                    .and_then(|i| i.mac.clone())
            };
            if host_mac(&r2).as_deref() == Some(bridge_mac.as_str()) {
                order = [&a2, &a1];
            }
        }
        // DEL frees the address even when the pod's namespace is already gone.
        drop(p2);
        for (i, a) in order.into_iter().enumerate() {
            if i == 1 && plugin == Plugin::Kubenode {
                let now = n.ns.sh("ip -o link show type bridge")?;
                ensure!(
                    now.contains(&format!("link/ether {bridge_mac} ")),
                    "the bridge's MAC address changed from {bridge_mac} when a pod went: {now}"
                );
            }
            rt.block_on(n.client.del(a))?;
            rt.block_on(n.client.del(a))?;
        }
        let links = n.ns.sh("ip -o link show")?;
        ensure!(!links.contains("veth"), "veths left: {links}");
        ensure!(
            reservations(&n.data_dir).is_empty(),
            "reservations left: {:?}",
            reservations(&n.data_dir)
        );
        let nat = n.ns.sh("iptables -t nat -S")?;
        // portmap's shared CNI-HOSTPORT-* chains stay by design; per-pod rules and ours must not.
        ensure!(
            !nat.contains("kubenode-bridge") && !nat.contains("18080"),
            "nat rules left: {nat}"
        );
        ensure!(
            walk(&n.dir.join("cache/results")).is_empty(),
            "cache entries left"
        );
        ensure!(
            walk(&n.dir.join("cache/locks")).is_empty(),
            "lock files left: {:?}",
            walk(&n.dir.join("cache/locks"))
        );
        drop((p1, n));
    }
    guard.check()
}

fn concurrent_adds() -> anyhow::Result<()> {
    const PODS: usize = 50;
    let tag = unique_tag("cc");
    let guard = LeakGuard::new(&tag);
    {
        let n = node(
            &tag,
            "n",
            Plugin::Kubenode,
            "10.244.2.0/24",
            "10.244.0.0/16",
        )?;
        let pods: Vec<Netns> = (0..PODS)
            .map(|i| Netns::new(&format!("{tag}p{i}")))
            .collect::<anyhow::Result<_>>()?;
        let atts: Vec<Attachment> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| attachment(&format!("{tag}-{i}"), p))
            .collect();
        let rt = rt()?;
        let results = rt.block_on(futures_join(atts.iter().map(|a| {
            let (c, a) = (n.client.clone(), a.clone());
            async move { c.add(&a).await }
        })));
        let mut ips = HashSet::new();
        for r in results {
            ips.insert(r?.pod_ips()[0]);
        }
        ensure!(
            ips.len() == PODS,
            "{} distinct addresses for {PODS} pods",
            ips.len()
        );
        for ip in &ips {
            ping(&n.ns, *ip)?;
        }
        let dels = rt.block_on(futures_join(atts.iter().map(|a| {
            let (c, a) = (n.client.clone(), a.clone());
            async move { c.del(&a).await }
        })));
        for d in dels {
            d?;
        }
        rt.block_on(n.client.del(&atts[0]))?;
        let links = n.ns.sh("ip -o link show")?;
        ensure!(!links.contains("veth"), "veths left: {links}");
        ensure!(reservations(&n.data_dir).is_empty(), "reservations left");
        let nat = n.ns.sh("iptables -t nat -S POSTROUTING")?;
        ensure!(!nat.contains("MASQUERADE"), "masquerade rule left: {nat}");
        drop((pods, n));
    }
    guard.check()
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

/// Accepts one connection inside `netns` (on a dedicated thread that setns'es there) and answers
/// with the peer address it sees.
fn echo_peer_in(
    netns: &Netns,
    port: u16,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<String>>> {
    let file = std::fs::File::open(netns.path())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || -> anyhow::Result<String> {
        // SAFETY: setns on this dedicated thread only; the fd is valid for the call.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        listener.set_nonblocking(true)?;
        tx.send(()).ok();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false)?;
                    let line = format!("peer={} local={}\n", peer.ip(), s.local_addr()?.ip());
                    s.write_all(line.as_bytes())?;
                    let mut sink = [0u8; 64];
                    let _ = s.read(&mut sink);
                    return Ok(line.trim().to_string());
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .context("echo server did not start")?;
    Ok(handle)
}

fn two_nodes() -> anyhow::Result<()> {
    let tag = unique_tag("c2");
    let guard = LeakGuard::new(&tag);
    {
        let a = node(
            &tag,
            "A",
            Plugin::Kubenode,
            "10.244.10.0/24",
            "10.244.0.0/16",
        )?;
        let b = node(
            &tag,
            "B",
            Plugin::Kubenode,
            "10.244.20.0/24",
            "10.244.0.0/16",
        )?;
        veth(
            Some(&a.ns),
            &format!("{tag}u"),
            Some(&b.ns),
            &format!("{tag}u"),
        )?;
        ip_addr_add(Some(&a.ns), &format!("{tag}u"), "192.168.77.1/24")?;
        ip_addr_add(Some(&b.ns), &format!("{tag}u"), "192.168.77.2/24")?;
        link_up(Some(&a.ns), &format!("{tag}u"))?;
        link_up(Some(&b.ns), &format!("{tag}u"))?;
        a.ns.sh("ip route add 10.244.20.0/24 via 192.168.77.2")?;
        b.ns.sh("ip route add 10.244.10.0/24 via 192.168.77.1")?;
        let (pa, pb) = (
            Netns::new(&format!("{tag}pa"))?,
            Netns::new(&format!("{tag}pb"))?,
        );
        let rt = rt()?;
        let (att_a, att_b) = (
            attachment(&format!("{tag}-a"), &pa),
            attachment(&format!("{tag}-b"), &pb),
        );
        let ip_a = rt.block_on(a.client.add(&att_a))?.pod_ips()[0];
        let ip_b = rt.block_on(b.client.add(&att_b))?.pod_ips()[0];
        ping(&pa, ip_b)?;
        let server = echo_peer_in(&pb, 18081)?;
        let out = pa.exec_timeout(
            &[
                "sh",
                "-c",
                &format!("echo hi | busybox nc -w 3 {ip_b} 18081"),
            ],
            Duration::from_secs(10),
        )?;
        let seen = server
            .join()
            .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
        ensure!(
            seen == format!("peer={ip_a} local={ip_b}"),
            "server saw {seen:?}"
        );
        let client_saw = String::from_utf8_lossy(&out.stdout);
        ensure!(
            client_saw.contains(&format!("local={ip_b}")),
            "client got {client_saw:?}"
        );
        rt.block_on(a.client.del(&att_a))?;
        rt.block_on(b.client.del(&att_b))?;
        drop((pa, pb, a, b));
    }
    guard.check()
}

fn status_and_gc() -> anyhow::Result<()> {
    let tag = unique_tag("cg");
    let guard = LeakGuard::new(&tag);
    {
        let n = node(
            &tag,
            "n",
            Plugin::KubenodeOnly,
            "10.244.3.0/24",
            "10.244.0.0/16",
        )?;
        let (p1, p2) = (
            Netns::new(&format!("{tag}a"))?,
            Netns::new(&format!("{tag}b"))?,
        );
        let rt = rt()?;
        rt.block_on(n.client.status())?;
        let versions = rt.block_on(n.client.versions())?;
        ensure!(
            versions[0]
                .1
                .supported_versions
                .iter()
                .any(|v| v == "1.1.0"),
            "{versions:?}"
        );
        let (keep, stale) = (
            attachment(&format!("{tag}-k"), &p1),
            attachment(&format!("{tag}-s"), &p2),
        );
        let ip_keep = rt.block_on(n.client.add(&keep))?.pod_ips()[0];
        rt.block_on(n.client.add(&stale))?;
        ensure!(reservations(&n.data_dir).len() == 2, "two reservations");
        rt.block_on(n.client.gc(std::slice::from_ref(&keep)))?;
        ensure!(
            reservations(&n.data_dir) == [ip_keep.to_string()],
            "{:?}",
            reservations(&n.data_dir)
        );
        let links = n.ns.sh("ip -o link show type veth")?;
        ensure!(
            links.lines().count() == 1,
            "only the kept pod's veth is left: {links}"
        );
        let pod_links = p2.sh("ip -o link show")?;
        ensure!(
            !pod_links.contains("eth0"),
            "the stale pod lost its interface: {pod_links}"
        );
        ping(&n.ns, ip_keep)?;
        rt.block_on(n.client.del(&keep))?;
        ensure!(reservations(&n.data_dir).is_empty(), "reservations left");
        drop((p1, p2, n));
    }
    guard.check()
}

fn default_network() -> anyhow::Result<()> {
    let tag = unique_tag("cd");
    let guard = LeakGuard::new(&tag);
    {
        let n = node(
            &tag,
            "n",
            Plugin::Reference,
            "10.244.4.0/24",
            "10.244.0.0/16",
        )?;
        std::fs::remove_file(n.dir.join("net.d/10-test.conflist"))?;
        let bin = n.dir.join("bin");
        let written = kubenode_cni::ensure_default_network(
            &n.dir.join("net.d"),
            &bin,
            "10.244.4.0/24".parse()?,
            Some("10.244.0.0/16".parse()?),
            &kubenode_bridge_target()?,
        )?;
        ensure!(written, "the default network was written");
        let mut list: serde_json::Value = serde_json::from_slice(&std::fs::read(
            n.dir
                .join("net.d")
                .join(kubenode_cni::DEFAULT_CONFLIST_NAME),
        )?)?;
        ensure!(
            list["plugins"][1]["type"] == "portmap",
            "portmap is chained: {list}"
        );
        // Keep the test's allocations and bridge inside its own directory and namespace.
        list["plugins"][0]["dataDir"] = json!(n.data_dir);
        list["plugins"][0]["bridge"] = json!(format!("{tag}br"));
        std::fs::write(
            n.dir
                .join("net.d")
                .join(kubenode_cni::DEFAULT_CONFLIST_NAME),
            serde_json::to_vec(&list)?,
        )?;
        let pod = Netns::new(&format!("{tag}a"))?;
        let att = attachment(&format!("{tag}-1"), &pod);
        let rt = rt()?;
        let result = rt.block_on(n.client.add(&att))?;
        ensure!(
            result.gateway() == Some("10.244.4.1".parse()?),
            "{result:?}"
        );
        ping(&n.ns, result.pod_ips()[0])?;
        rt.block_on(n.client.del(&att))?;
        drop((pod, n));
    }
    guard.check()
}

fn dual_stack() -> anyhow::Result<()> {
    let tag = unique_tag("c6");
    let guard = LeakGuard::new(&tag);
    {
        let n = node(
            &tag,
            "n",
            Plugin::KubenodeDualStack,
            "10.244.9.0/24",
            "10.244.0.0/16",
        )?;
        let (p1, p2) = (
            Netns::new(&format!("{tag}a"))?,
            Netns::new(&format!("{tag}b"))?,
        );
        let rt = rt()?;
        let (a1, a2) = (
            attachment(&format!("{tag}-1"), &p1),
            attachment(&format!("{tag}-2"), &p2),
        );
        let r1 = rt.block_on(n.client.add(&a1))?;
        let r2 = rt.block_on(n.client.add(&a2))?;
        ensure!(
            r1.pod_ips().len() == 2 && r1.pod_ips()[1].is_ipv6(),
            "{r1:?}"
        );
        rt.block_on(n.client.check(&a1))?;
        for ip in r2.pod_ips() {
            ping(&p1, ip)?;
        }
        ping(&n.ns, r1.pod_ips()[1])?;
        let nat6 = n.ns.sh("ip6tables -t nat -S POSTROUTING")?;
        ensure!(
            nat6.contains("-s fd00:10:244::/48 ! -d fd00:10:244::/48"),
            "{nat6}"
        );
        for a in [&a1, &a2] {
            rt.block_on(n.client.del(a))?;
        }
        ensure!(reservations(&n.data_dir).is_empty(), "reservations left");
        let nat6 = n.ns.sh("ip6tables -t nat -S POSTROUTING")?;
        ensure!(!nat6.contains("kubenode-bridge"), "{nat6}");
        drop((p1, p2, n));
    }
    guard.check()
}
