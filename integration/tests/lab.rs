//! The labs of issue 9, end to end: the install script and the systemd unit (`deploy/`), the
//! agent's readiness notification, and the one-machine lab: the Vagrant lab's three nodes as
//! network namespaces, provisioned by `vagrant/scripts/*`, proving pod-to-pod traffic across
//! nodes without NAT, a Service spanning the nodes (ClusterIP from every node, NodePort on every
//! node's address) and an agent SIGKILLed and restarted under traffic without losing a pod.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::lab::{curl_in, Lab};
use kubenode_integration::{
    kubenode_bin, privileged, run, run_ok, run_tests, unique_tag, LeakGuard, Netns, TestDir, Trial,
};
use serde_json::Value;

fn main() {
    run_tests(vec![
        Trial::test("install_script_layout_idempotence_and_unit", || {
            install_script().map_err(|e| format!("{e:#}").into())
        }),
        Trial::test("lab_and_exercise_manifests_are_valid", || {
            manifests_valid().map_err(|e| format!("{e:#}").into())
        }),
        privileged(
            "agent_notifies_systemd_ready_after_api_and_stopping",
            notify_ready,
        ),
        privileged(
            "three_node_lab_pods_services_and_agent_restart",
            three_nodes,
        ),
    ])
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------------------------------------
// deploy/install and deploy/kubenode.service

fn install_script() -> anyhow::Result<()> {
    let dir = TestDir::new(&unique_tag("ins"))?;
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins)?;
    let write_bin = |name: &str, body: &str| -> anyhow::Result<()> {
        let p = bins.join(name);
        std::fs::write(&p, body)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    write_bin("kubenode", "#!/bin/sh\necho kubenode v1\n")?;
    write_bin("kubenode-shim", "#!/bin/sh\necho shim v1\n")?;
    let root = dir.join("root");
    let install = |extra: &[&str]| -> anyhow::Result<String> {
        let out = run_ok(
            Command::new(repo().join("deploy/install"))
                .arg("--root")
                .arg(&root)
                .arg("--bin-dir")
                .arg(&bins)
                .args(extra),
            Duration::from_secs(30),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let first = install(&[])?;
    ensure!(
        first.contains("not enabled"),
        "with --root the service is not enabled: {first}"
    );

    let at = |p: &str| root.join(p.trim_start_matches('/'));
    ensure!(std::fs::read(at("/usr/local/bin/kubenode"))? == std::fs::read(bins.join("kubenode"))?);
    ensure!(
        std::fs::read(at("/usr/local/bin/kubenode-shim"))?
            == std::fs::read(bins.join("kubenode-shim"))?
    );
    for bin in ["/usr/local/bin/kubenode", "/usr/local/bin/kubenode-shim"] {
        let mode = std::fs::metadata(at(bin))?.permissions().mode() & 0o777;
        ensure!(mode == 0o755, "{bin} has mode {mode:o}");
    }
    // The link the agent itself checks at start (cni::ensure_default_network_with links
    // <cniBinDir>/kubenode-bridge to the running binary).
    ensure!(
        std::fs::read_link(at("/opt/cni/bin/kubenode-bridge"))?
            == Path::new("/usr/local/bin/kubenode")
    );
    for (installed, source) in [
        ("/etc/kubenode/config.yaml", "deploy/config.yaml"),
        ("/etc/default/kubenode", "deploy/kubenode.env"),
        (
            "/etc/systemd/system/kubenode.service",
            "deploy/kubenode.service",
        ),
    ] {
        ensure!(
            std::fs::read(at(installed))? == std::fs::read(repo().join(source))?,
            "{installed} is not {source}"
        );
    }
    ensure!(at("/etc/kubenode/manifests").is_dir());

    // The shipped config file is one the agent accepts, and its paths agree with the layout.
    let config = kubenode_kubelet::config::ConfigFile::load(&at("/etc/kubenode/config.yaml"))?;
    ensure!(config.cni_bin_dir.as_deref() == Some("/opt/cni/bin"));
    ensure!(config.static_pod_path.as_deref() == Some("/etc/kubenode/manifests"));

    // Idempotent: the operator's config and env file stay, a new binary replaces the old one.
    std::fs::write(at("/etc/kubenode/config.yaml"), "# the operator's\n")?;
    std::fs::write(
        at("/etc/default/kubenode"),
        "KUBENODE_ARGS=\"--node-ip=1.2.3.4\"\n",
    )?;
    write_bin("kubenode", "#!/bin/sh\necho kubenode v2\n")?;
    let second = install(&["--no-enable"])?;
    ensure!(second.contains("kept"), "second run: {second}");
    ensure!(std::fs::read_to_string(at("/etc/kubenode/config.yaml"))? == "# the operator's\n");
    ensure!(std::fs::read_to_string(at("/etc/default/kubenode"))?.contains("1.2.3.4"));
    ensure!(std::fs::read_to_string(at("/usr/local/bin/kubenode"))?.contains("v2"));
    let third = install(&[])?;
    ensure!(
        !third.contains("installed"),
        "a third run with nothing new changes nothing: {third}"
    );

    // A missing binary is refused before anything is touched.
    std::fs::remove_file(bins.join("kubenode-shim"))?;
    let refused = run(
        Command::new(repo().join("deploy/install"))
            .arg("--root")
            .arg(dir.join("other"))
            .arg("--bin-dir")
            .arg(&bins),
        Duration::from_secs(30),
    )?;
    ensure!(!refused.status.success() && !dir.join("other").exists());

    // The unit as systemd reads it: no unknown keys, no bad values (ExecStart pointed at the
    // real binary, which systemd-analyze wants to exist).
    let unit = std::fs::read_to_string(repo().join("deploy/kubenode.service"))?;
    for needed in [
        "Type=notify",
        "Restart=always",
        "RestartSec=10",
        "KillMode=process",
        "After=network-online.target",
        "Wants=network-online.target",
        "EnvironmentFile=-/etc/default/kubenode",
        "$KUBENODE_ARGS",
    ] {
        ensure!(unit.contains(needed), "the unit lacks {needed}");
    }
    let verify_dir = dir.join("verify");
    std::fs::create_dir_all(&verify_dir)?;
    std::fs::write(
        verify_dir.join("kubenode.service"),
        unit.replace("/usr/local/bin/kubenode", &kubenode_bin().to_string_lossy()),
    )?;
    let out = run(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(verify_dir.join("kubenode.service")),
        Duration::from_secs(30),
    )
    .context("systemd-analyze (package systemd) is needed to check the unit")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// vagrant/manifests: what the agent reads from them

fn manifests_valid() -> anyhow::Result<()> {
    use kubenode_kubelet::source::read_dir_snapshot;
    let names = |snap: &kubenode_kubelet::source::Snapshot| -> Vec<String> {
        snap.pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    };
    let lab = read_dir_snapshot(&repo().join("vagrant/manifests/lab"), "node1");
    ensure!(
        lab.errors.is_empty(),
        "vagrant/manifests/lab: {:?}",
        lab.errors
    );
    ensure!(names(&lab) == ["web-node1"], "lab pods: {:?}", names(&lab));
    let svc = &lab.services[..];
    ensure!(svc.len() == 1, "lab services: {svc:?}");
    let spec = svc[0].spec.as_ref().context("web has a spec")?;
    ensure!(spec.cluster_ip.as_deref() == Some(CLUSTER_IP) && spec.selector.is_none());

    let ex = read_dir_snapshot(&repo().join("vagrant/manifests/exercises"), "node1");
    ensure!(
        ex.errors.is_empty(),
        "vagrant/manifests/exercises: {:?}",
        ex.errors
    );
    let mut pods = names(&ex);
    pods.sort();
    ensure!(
        pods == [
            "blog-frontend-node1",
            "greeter-node1",
            "hello-node1",
            "probed-node1",
            "shared-node1",
            "shop-backend-node1",
            "shop-frontend-node1"
        ],
        "exercise pods: {pods:?}"
    );
    ensure!(
        ex.services.len() == 1,
        "exercise services: {:?}",
        ex.services
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// READY=1 / STOPPING=1

fn notify_ready() -> anyhow::Result<()> {
    let tag = unique_tag("ntf");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let node = Netns::new(&format!("{tag}-node"))?;
        let socket_path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path)?;
        socket.set_read_timeout(Some(Duration::from_secs(30)))?;
        let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", node.path().display()))
            .arg(kubenode_bin())
            .args(["agent", "--node-name", "notify", "--node-ip", "127.0.0.1"])
            .args(["--root-dir", &d("root"), "--run-dir", &d("run")])
            .args(["--log-dir", &d("logs"), "--manifest-dir", &d("manifests")])
            .args([
                "--cni-conf-dir",
                &d("cni/net.d"),
                "--cni-bin-dir",
                &d("cni/bin"),
            ])
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log"))?)
            .spawn()?;
        let result = (|| -> anyhow::Result<()> {
            let mut buf = [0u8; 1024];
            let n = socket
                .recv(&mut buf)
                .context("no notification from the agent within 30 s")?;
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            ensure!(
                msg.lines().any(|l| l == "READY=1"),
                "first message: {msg:?}"
            );
            // Ready means serving: both APIs answer at once, without retrying.
            let cli = run(
                Command::new(kubenode_bin())
                    .args(["get", "pods", "-A"])
                    .env("KUBENODE_RUN_DIR", dir.join("run")),
                Duration::from_secs(10),
            )?;
            ensure!(
                cli.status.success(),
                "the node API socket does not answer after READY=1"
            );
            let health = curl_in(&node, "http://127.0.0.1:10255/healthz")?;
            ensure!(
                health.as_deref() == Some("ok"),
                "the read-only port after READY=1: {health:?}"
            );
            // SAFETY: kill(2) on the child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let n = socket
                .recv(&mut buf)
                .context("no STOPPING=1 after SIGTERM")?;
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            ensure!(
                msg.lines().any(|l| l == "STOPPING=1"),
                "on SIGTERM: {msg:?}"
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    ensure!(status.success(), "the agent exited with {status}");
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            bail!("the agent did not exit within 15 s of SIGTERM")
        })();
        let _ = child.kill();
        let _ = child.wait();
        result
            .with_context(|| std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default())?;
    }
    guard.check()
}

// ---------------------------------------------------------------------------------------------
// The one-machine lab

/// The `web` Service's fixed ClusterIP and NodePort (vagrant/manifests/lab/web-svc.yaml).
const CLUSTER_IP: &str = "10.96.0.80";
const NODE_PORT: u16 = 30080;

fn pod_ip(p: &Value) -> String {
    p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && !pod_ip(p).is_empty()
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|c| c["state"]["running"].is_object()))
}

/// The uid, container IDs and restart counts of a pod: what must not change when the agent
/// restarts.
fn identity(p: &Value) -> String {
    let containers: Vec<String> = p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{}={}/{}", c["name"], c["containerID"], c["restartCount"]))
        .collect();
    format!("{} {}", p["metadata"]["uid"], containers.join(","))
}

/// `<client address> <pod name>` as the web pods' /cgi-bin/ip answers.
fn split_answer(body: &str) -> anyhow::Result<(String, String)> {
    let mut f = body.split_whitespace();
    match (f.next(), f.next()) {
        (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
        _ => bail!("unexpected answer {body:?}"),
    }
}

/// Requests `url` from `ns` until every name in `want` answered (bounded); returns who did.
fn backends_seen(
    ns: &Netns,
    url: &str,
    want: &BTreeSet<String>,
) -> anyhow::Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..60 {
        if Instant::now() > deadline || seen.is_superset(want) {
            break;
        }
        match curl_in(ns, url)? {
            Some(body) => {
                seen.insert(split_answer(&body)?.1);
            }
            None => std::thread::sleep(Duration::from_millis(300)),
        }
    }
    Ok(seen)
}

fn three_nodes() -> anyhow::Result<()> {
    let tag = unique_tag("lab");
    let guard = LeakGuard::new(&tag);
    {
        let lab = Lab::start(&tag)?;
        let web: Vec<String> = lab.nodes.iter().map(|n| n.pod_name("web")).collect();
        let mut web_pods = Vec::new();
        for (node, name) in lab.nodes.iter().zip(&web) {
            web_pods.push(node.wait_pod(name, Duration::from_secs(90), "Running", running)?);
        }
        let web_ips: Vec<String> = web_pods.iter().map(pod_ip).collect();
        for (ip, spec) in web_ips.iter().zip(&lab.specs) {
            let prefix = spec.pod_cidr.trim_end_matches("0/24");
            ensure!(
                ip.starts_with(prefix),
                "{ip} is not in {}'s pod CIDR {}",
                spec.name,
                spec.pod_cidr
            );
        }

        // Pod to pod across nodes, no NAT: the server sees the client pod's own address.
        let n1 = &lab.nodes[0];
        n1.write_manifest(
            "client.yaml",
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  \
                 terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    \
                 image: {}\n    command: [sleep, '3600']\n",
                n1.image
            ),
        )?;
        let client = n1.wait_pod(
            &n1.pod_name("client"),
            Duration::from_secs(60),
            "Running",
            running,
        )?;
        let client_ip = pod_ip(&client);
        for (ip, name) in web_ips.iter().zip(&web).skip(1) {
            let body = n1.kubenode_ok(&[
                "exec",
                &n1.pod_name("client"),
                "--",
                "wget",
                "-qO-",
                &format!("http://{ip}:8080/cgi-bin/ip"),
            ])?;
            let (seen_as, answered_by) = split_answer(&body)?;
            ensure!(
                seen_as == client_ip && &answered_by == name,
                "client {client_ip} on node1 -> {name} at {ip}: the server saw {seen_as} ({body:?})"
            );
            println!("  pod to pod: {client_ip} (node1) -> {ip} ({name}) seen as {seen_as}");
        }

        // The Endpoints of `web` from every node's /pods, written on every node.
        lab.sync_endpoints()?;
        let want: BTreeSet<String> = web.iter().cloned().collect();
        for node in &lab.nodes {
            let text = std::fs::read_to_string(node.dir.join("manifests/web-endpoints.yaml"))?;
            let json: String = text.lines().filter(|l| !l.starts_with('#')).collect();
            let ep: Value = serde_json::from_str(&json)?;
            let addrs = ep["subsets"][0]["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let got: BTreeSet<(String, String)> = addrs
                .iter()
                .map(|a| {
                    (
                        a["ip"].as_str().unwrap_or_default().into(),
                        a["nodeName"].as_str().unwrap_or_default().into(),
                    )
                })
                .collect();
            let expected: BTreeSet<(String, String)> = web_ips
                .iter()
                .cloned()
                .zip(lab.specs.iter().map(|s| s.name.clone()))
                .collect();
            ensure!(
                got == expected,
                "{}: endpoints {got:?}, expected {expected:?}",
                node.node_name()
            );
            ensure!(ep["subsets"][0]["ports"][0]["port"] == 8080);
        }
        let again = lab.script(0, "sync-endpoints", &["web", "app=web", "http:8080"])?;
        ensure!(
            !again.contains("changed"),
            "a second sync with nothing new rewrote the file"
        );

        // The ClusterIP from every node reaches the pods of all three nodes.
        for node in &lab.nodes {
            let seen = backends_seen(
                &node.node,
                &format!("http://{CLUSTER_IP}/cgi-bin/ip"),
                &want,
            )?;
            ensure!(
                seen == want,
                "ClusterIP from {}: answered by {seen:?}, expected {want:?}",
                node.node_name()
            );
            println!(
                "  ClusterIP {CLUSTER_IP} from {}: {seen:?}",
                node.node_name()
            );
        }
        // The NodePort on every node's address, from the lab (the VM host's place).
        for spec in &lab.specs {
            let url = format!("http://{}:{NODE_PORT}/cgi-bin/ip", spec.ip);
            let seen = backends_seen(&lab.lab, &url, &want)?;
            ensure!(
                seen == want,
                "NodePort {url}: answered by {seen:?}, expected {want:?}"
            );
            println!("  NodePort {url}: {seen:?}");
        }

        // Provisioning again (`vagrant provision`) changes nothing: same config, image, routes.
        let routes = lab.nodes[0].node.ip(&["route"])?;
        let again = lab.script(0, "node", &["node1"])?;
        ensure!(
            !again.contains("changed") && again.contains("already"),
            "re-provisioning node1: {again}"
        );
        ensure!(
            lab.nodes[0].node.ip(&["route"])? == routes,
            "re-provisioning changed the routes"
        );

        exercises_on_node3(&lab)?;
        agent_restart_under_traffic(lab, &web, &web_ips)?;
    }
    guard.check()
}

/// The walk-through's exercises 1, 2 and 4 (vagrant/README.md) on node3, as written there.
/// (3 and 5 need probes and volumes, issues 6 and 7.)
fn exercises_on_node3(lab: &Lab) -> anyhow::Result<()> {
    let n3 = &lab.nodes[2];
    let dir = repo().join("vagrant/manifests/exercises");
    for f in ["1-pod.yaml", "2-labels.yaml", "4-service.yaml"] {
        n3.write_manifest(f, &std::fs::read_to_string(dir.join(f))?)?;
    }
    for pod in [
        "hello",
        "shop-frontend",
        "shop-backend",
        "blog-frontend",
        "greeter",
    ] {
        n3.wait_pod(
            &n3.pod_name(pod),
            Duration::from_secs(60),
            "Running",
            running,
        )?;
    }
    let names = |selector: &str| -> anyhow::Result<BTreeSet<String>> {
        Ok(n3
            .kubenode_ok(&["get", "pods", "-l", selector, "-o", "name"])?
            .lines()
            .map(str::to_string)
            .collect())
    };
    ensure!(
        names("tier=frontend")?
            == BTreeSet::from([
                "pod/blog-frontend-node3".into(),
                "pod/shop-frontend-node3".into()
            ])
    );
    ensure!(
        names("env in (dev),tier!=backend")? == BTreeSet::from(["pod/shop-frontend-node3".into()])
    );
    let url = format!("http://{}:30081/", lab.specs[2].ip);
    let mut body = None;
    for _ in 0..30 {
        body = lab.curl_from_lab(&url)?;
        if body.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    ensure!(
        body.as_deref() == Some("greetings from greeter-node3"),
        "greeter NodePort {url}: {body:?}"
    );
    for f in ["1-pod.yaml", "2-labels.yaml", "4-service.yaml"] {
        n3.remove_manifest(f)?;
    }
    println!("  exercises 1, 2, 4 on node3: pods, selectors, greeter NodePort ok");
    Ok(())
}

/// One probe's results over time: (when, ok).
type Samples = Arc<Mutex<Vec<(Instant, bool)>>>;

fn agent_restart_under_traffic(
    mut lab: Lab,
    web: &[String],
    web_ips: &[String],
) -> anyhow::Result<()> {
    let before: Vec<Value> = lab.nodes[1].pods()?;
    let ids_before: BTreeSet<String> = before.iter().map(identity).collect();
    ensure!(before.len() == 1, "node2 runs only web: {before:?}");

    // Two clients, each a bounded loop: the lab host at node2's NodePort, and node1 straight at
    // node2's web pod.
    let stop = Arc::new(AtomicBool::new(false));
    let lab_ns = lab.lab.name().to_string();
    let node1_ns = lab.nodes[0].node.name().to_string();
    let probes = [
        (
            lab_ns,
            format!("http://{}:{NODE_PORT}/cgi-bin/ip", lab.specs[1].ip),
        ),
        (node1_ns, format!("http://{}:8080/cgi-bin/ip", web_ips[1])),
    ];
    let mut threads = Vec::new();
    let mut samples: Vec<Samples> = Vec::new();
    for (ns, url) in probes.clone() {
        let s: Samples = Arc::default();
        samples.push(s.clone());
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            for _ in 0..400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ok = run(
                    Command::new("nsenter")
                        .arg(format!("--net=/run/netns/{ns}"))
                        .args(["curl", "-fsS", "-m", "3", &url]),
                    Duration::from_secs(5),
                )
                .is_ok_and(|o| o.status.success());
                s.lock().unwrap().push((Instant::now(), ok));
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let killed_at = Instant::now();
    lab.nodes[1].kill();
    std::thread::sleep(Duration::from_secs(4));
    let restarted_at = Instant::now();
    let restarted = lab.nodes[1].spawn();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    restarted?;

    for ((_, url), s) in probes.iter().zip(&samples) {
        let s = s.lock().unwrap();
        let count = |from: Instant, to: Instant| {
            let w: Vec<bool> = s
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .map(|(_, ok)| *ok)
                .collect();
            (w.iter().filter(|ok| **ok).count(), w.len())
        };
        let far = Instant::now() + Duration::from_secs(3600);
        let (ok_dead, n_dead) = count(killed_at, restarted_at);
        let (ok_after, n_after) = count(restarted_at, far);
        let (ok_all, n_all) = count(killed_at - Duration::from_secs(3600), far);
        println!(
            "  {url}: {ok_all}/{n_all} ok; while node2's agent was dead {ok_dead}/{n_dead}; after its restart {ok_after}/{n_after}"
        );
        ensure!(
            n_dead > 0 && ok_dead > 0,
            "{url}: no request succeeded while the agent was dead"
        );
        // The agent's restart disturbs no traffic: the pods, their network and the Service
        // rules live on without it, and the new agent keeps the rules as they were.
        ensure!(
            n_after > 0 && ok_all == n_all,
            "{url}: {} of {n_all} requests failed across the agent's kill and restart",
            n_all - ok_all
        );
    }

    // No pod lost: the restarted agent adopted the same pod (uid, containers, restart counts).
    let after = lab.nodes[1].wait_pod(&web[1], Duration::from_secs(30), "Running", running)?;
    std::thread::sleep(Duration::from_secs(2));
    let ids_after: BTreeSet<String> = lab.nodes[1].pods()?.iter().map(identity).collect();
    ensure!(
        ids_after == ids_before,
        "node2's pods changed across the agent restart: {ids_before:?} -> {ids_after:?}"
    );
    ensure!(
        pod_ip(&after) == web_ips[1],
        "web on node2 changed its address"
    );
    println!("  node2 after the restart: {ids_after:?}");
    drop(lab);
    Ok(())
}
