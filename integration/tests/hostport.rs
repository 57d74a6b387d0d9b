//! `ports[].hostPort` on pod-network pods, end to end: the agent passes the pod's host ports to
//! its CNI chain as `portMappings`, and the reference `portmap` plugin (Debian's
//! containernetworking-plugins) forwards the node's port to the pod with real iptables rules in
//! the node namespace.
//!
//! A client namespace on a veth to the node reaches `NODE_IP:hostPort` (portmap's PREROUTING
//! DNAT), and so does the node itself (its OUTPUT DNAT, also on 127.0.0.1 through portmap's
//! `snat` masquerade). A second pod asking for the same port is rejected at admission with
//! upstream's `NodePorts` reason while the first keeps serving, and so is a host-network pod
//! whose container port is the same; the running pod keeps its port
//! across an agent restart. Removing the pod removes its rules, also when the pod's manifest is
//! removed while the agent is down (the orphan's CNI DEL takes the mappings from the CNI cache),
//! and also when the agent died in the middle of the pod's CNI ADD, after portmap had run.
//! A network without a plugin that takes `portMappings` fails the sandbox with a message that
//! names the portmap plugin instead of running the pod without its port.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::agent::{in_node, NODE_IP};
use kubenode_integration::pods::{all_running, container_id, phase, pod_yaml, status, with_agent};
use kubenode_integration::{ip_addr_add, privileged, run_tests, veth, Netns, TestAgent};

fn main() {
    run_tests(vec![
        privileged(
            "hostport_reachable_conflicts_rejected_rules_removed",
            reachable_conflicts_rejected_rules_removed,
        ),
        privileged(
            "hostport_without_portmap_fails_the_sandbox",
            without_portmap_fails_the_sandbox,
        ),
        privileged(
            "hostport_rules_removed_after_a_crash_in_the_middle_of_add",
            crash_in_the_middle_of_add,
        ),
    ])
}

const PORTMAP: &str = "/usr/lib/cni/portmap";

/// A web pod answering `hello from <pod name>` on container port 80, published on `host_port`.
fn web(agent: &TestAgent, name: &str, host_port: u16) -> String {
    pod_yaml(
        name,
        &agent.image,
        &format!(
            r#"  containers:
  - name: httpd
    image: IMAGE
    command: ["sh", "-c", "mkdir -p /www; echo hello from $(hostname) > /www/index.html; exec httpd -f -p 80 -h /www"]
    ports: [{{containerPort: 80, hostPort: {host_port}, name: http}}]
"#
        ),
    )
}

/// A client: its own namespace on a veth to the node (10.250.9.2 ↔ 10.250.9.1), routed to
/// the node's address, like a machine on the node's network.
fn client(agent: &TestAgent) -> anyhow::Result<Netns> {
    let tag = agent.node_name();
    let ns = Netns::new(&format!("{tag}-cl"))?;
    let node_if = format!("{tag}h");
    veth(Some(&ns), "eth0", Some(&agent.node), &node_if)?;
    ip_addr_add(Some(&ns), "eth0", "10.250.9.2/24")?;
    ip_addr_add(Some(&agent.node), &node_if, "10.250.9.1/24")?;
    ns.ip(&["route", "add", "default", "via", "10.250.9.1"])?;
    Ok(ns)
}

/// `curl` of `url` in `ns` (the node when `None`): the body, or the error it printed.
fn fetch(
    agent: &TestAgent,
    ns: Option<&Netns>,
    url: &str,
) -> anyhow::Result<Result<String, String>> {
    let argv = ["curl", "-fsS", "-m", "3", url];
    let out = match ns {
        Some(ns) => ns.exec_timeout(&argv, Duration::from_secs(10))?,
        None => agent.node.exec_timeout(&argv, Duration::from_secs(10))?,
    };
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    })
}

/// Fetches `url` until it answers `want` (the server may still be starting): up to 20 tries.
fn expect_body(agent: &TestAgent, ns: Option<&Netns>, url: &str, want: &str) -> anyhow::Result<()> {
    let mut last = Err(String::new());
    for _ in 0..20 {
        last = fetch(agent, ns, url)?;
        if last.as_deref() == Ok(want) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!(
        "{url} from {}: {last:?}, want {want:?}",
        ns.map_or("the node", |n| n.name())
    )
}

/// The node's nat table as `iptables -t nat -S` prints it.
fn nat(agent: &TestAgent) -> anyhow::Result<String> {
    in_node(agent, &["iptables", "-t", "nat", "-S"])
}

/// Waits until the node's nat table holds no rule for `port` and no per-pod `CNI-DN-` chain
/// (portmap's shared `CNI-HOSTPORT-*` chains stay, empty, by portmap's design).
fn wait_rules_gone(agent: &TestAgent, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let table = nat(agent)?;
        let left: Vec<&str> = table
            .lines()
            .filter(|l| l.contains(&port.to_string()) || l.contains("CNI-DN-"))
            .collect();
        if left.is_empty() {
            let dnat = in_node(agent, &["iptables", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])?;
            ensure!(
                dnat.trim() == "-N CNI-HOSTPORT-DNAT",
                "CNI-HOSTPORT-DNAT still has rules: {dnat}"
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("portmap rules for {port} left: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reachable_conflicts_rejected_rules_removed() -> anyhow::Result<()> {
    ensure!(
        std::path::Path::new(PORTMAP).exists(),
        "{PORTMAP} is missing: install containernetworking-plugins"
    );
    with_agent("hp", |agent| {
        let conflist = std::fs::read_to_string(agent.dir.join("cni/net.d/10-kubenode.conflist"))?;
        ensure!(
            conflist.contains("\"portmap\""),
            "portmap is not chained: {conflist}"
        );
        agent.write_manifest("web.yaml", &web(agent, "web", 18080))?;
        let name = agent.pod_name("web");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let first_id = container_id(&pod, "httpd")
            .context("container id")?
            .to_string();
        let want = format!("hello from {name}");
        let cl = client(agent)?;
        let url = format!("http://{NODE_IP}:18080/");
        // From another machine (portmap's PREROUTING DNAT) and from the node itself (OUTPUT),
        // on the node's address and on localhost (portmap's snat masquerade).
        expect_body(agent, Some(&cl), &url, &want)?;
        expect_body(agent, None, &url, &want)?;
        expect_body(agent, None, "http://127.0.0.1:18080/", &want)?;
        let table = nat(agent)?;
        ensure!(
            table.contains("CNI-DN-") && table.contains("--dport 18080"),
            "no portmap rules for 18080: {table}"
        );

        // The same port again: rejected at admission, as upstream's NodePorts predicate.
        agent.write_manifest("web2.yaml", &web(agent, "web2", 18080))?;
        let name2 = agent.pod_name("web2");
        let rejected = |p: &k8s_openapi::api::core::v1::Pod| {
            phase(p) == "Failed" && status(p).reason.as_deref() == Some("NodePorts")
        };
        let second = agent.wait_pod(&name2, Duration::from_secs(30), "rejected", rejected)?;
        let message = status(&second).message.clone().unwrap_or_default();
        ensure!(
            message
                == "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
            "message {message:?}"
        );
        ensure!(
            status(&second).container_statuses.is_none() && status(&second).pod_ip.is_none(),
            "the rejected pod ran: {:?}",
            second.status
        );
        ensure!(
            agent
                .events()?
                .iter()
                .any(|e| e.reason.as_deref() == Some("NodePorts")
                    && e.involved_object.name.as_deref() == Some(name2.as_str())
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("didn't have free ports"))),
            "no NodePorts event for {name2}"
        );
        // A host-network pod's container ports are host ports (hostPort defaults to
        // containerPort): it conflicts too.
        agent.write_manifest(
            "hostnet.yaml",
            &pod_yaml(
                "hostnet",
                &agent.image,
                "  hostNetwork: true\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n    ports: [{containerPort: 18080}]\n",
            ),
        )?;
        let hostnet = agent.pod_name("hostnet");
        agent.wait_pod(&hostnet, Duration::from_secs(30), "rejected", rejected)?;
        agent.remove_manifest("hostnet.yaml")?;
        agent.wait_gone(&hostnet, Duration::from_secs(45))?;
        expect_body(agent, Some(&cl), &url, &want)?;

        // An agent restart: the running pod is adopted with its port, the other stays rejected.
        agent.kill();
        agent.spawn()?;
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        ensure!(
            container_id(&pod, "httpd") == Some(first_id.as_str()),
            "the pod was restarted: {:?}",
            pod.status
        );
        agent.wait_pod(&name2, Duration::from_secs(30), "rejected again", rejected)?;
        expect_body(agent, Some(&cl), &url, &want)?;

        // Removing the pod removes its rules: the port answers no more.
        agent.remove_manifest("web.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(45))?;
        wait_rules_gone(agent, 18080)?;
        let after = fetch(agent, Some(&cl), &url)?;
        ensure!(after.is_err(), "{url} still answers: {after:?}");
        agent.remove_manifest("web2.yaml")?;
        agent.wait_gone(&name2, Duration::from_secs(45))?;

        // A pod removed while the agent is down is an orphan at the next start: its CNI DEL has
        // no pod spec to take the mappings from, and gets them from the CNI cache.
        agent.write_manifest("web3.yaml", &web(agent, "web3", 18081))?;
        let name3 = agent.pod_name("web3");
        agent.wait_pod(&name3, Duration::from_secs(60), "Running", all_running)?;
        let url3 = format!("http://{NODE_IP}:18081/");
        expect_body(agent, Some(&cl), &url3, &format!("hello from {name3}"))?;
        agent.kill();
        agent.remove_manifest("web3.yaml")?;
        agent.spawn()?;
        agent.wait_gone(&name3, Duration::from_secs(45))?;
        wait_rules_gone(agent, 18081)?;
        let after = fetch(agent, Some(&cl), &url3)?;
        ensure!(after.is_err(), "{url3} still answers: {after:?}");
        // The orphan's removal ends with its sandbox (namespaces, pod cgroup, state): wait for
        // it, or the test's end would kill the agent half-way and leave the pod cgroup behind.
        let removed = format!("pod=default/{name3}");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !agent
            .log()
            .lines()
            .any(|l| l.contains("sandbox removed") && l.contains(&removed))
        {
            ensure!(
                std::time::Instant::now() < deadline,
                "the orphan {name3}'s sandbox was not removed within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(cl);
        Ok(())
    })
}

fn without_portmap_fails_the_sandbox() -> anyhow::Result<()> {
    with_agent("hq", |agent| {
        // The node's network without portmap, as when the default network was written before
        // the plugin was installed.
        let path = agent.dir.join("cni/net.d/10-kubenode.conflist");
        let mut list: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        list["plugins"]
            .as_array_mut()
            .context("plugins")?
            .retain(|p| p["type"] != "portmap");
        std::fs::write(&path, serde_json::to_vec_pretty(&list)?)?;
        agent.write_manifest("web.yaml", &web(agent, "web", 18082))?;
        let name = agent.pod_name("web");
        let deadline = Instant::now() + Duration::from_secs(60);
        let message = loop {
            let found = agent.events()?.into_iter().find_map(|e| {
                (e.reason.as_deref() == Some("FailedCreatePodSandBox")
                    && e.involved_object.name.as_deref() == Some(name.as_str()))
                .then(|| e.message.unwrap_or_default())
            });
            if let Some(m) = found {
                break m;
            }
            ensure!(
                Instant::now() < deadline,
                "no FailedCreatePodSandBox event for {name}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        ensure!(
            message.contains("has no plugin with the \"portMappings\" capability")
                && message.contains("portmap plugin"),
            "event message {message:?}"
        );
        let pod = agent.pod(&name)?.context("pod")?;
        ensure!(
            phase(&pod) == "Pending" && !all_running(&pod),
            "the pod runs without its host port: {:?}",
            pod.status
        );
        let table = nat(agent)?;
        ensure!(!table.contains("18082"), "rules for 18082: {table}");
        agent.remove_manifest("web.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(45))
    })
}

/// The agent is killed while the pod's CNI ADD is past portmap (its rules are in) but not
/// finished, and the pod's manifest is removed before the agent starts again: the sandbox is an
/// orphan, its DEL has no pod spec and no ADD result, and still removes portmap's rules with the
/// mappings the CNI client cached before the chain ran.
fn crash_in_the_middle_of_add() -> anyhow::Result<()> {
    with_agent("hc", |agent| {
        agent.kill();
        let path = agent.dir.join("cni/net.d/10-kubenode.conflist");
        let mut list: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        list["plugins"]
            .as_array_mut()
            .context("plugins")?
            .push(serde_json::json!({"type": "kn-hang"}));
        std::fs::write(&path, serde_json::to_vec_pretty(&list)?)?;
        let hang = agent.dir.join("cni/hang");
        let plugin = agent.dir.join("cni/bin/kn-hang");
        // The gate stays open (`cni/closed` is never made): only the hold is used.
        kubenode_integration::write_gate_plugin(&plugin, &agent.dir.join("cni/closed"), &hang)?;
        std::fs::write(&hang, b"")?;
        agent.spawn()?;
        agent.write_manifest("web.yaml", &web(agent, "web", 18083))?;
        let started = hang.with_extension("started");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !started.exists() {
            ensure!(
                Instant::now() < deadline,
                "the CNI ADD never reached the hanging plugin"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let table = nat(agent)?;
        ensure!(
            table.contains("--dport 18083"),
            "portmap ran before the hang: {table}"
        );
        agent.kill();
        std::fs::remove_file(&hang)?;
        agent.remove_manifest("web.yaml")?;
        agent.spawn()?;
        wait_rules_gone(agent, 18083)?;
        // The orphan's teardown goes on after its DEL (containers, pause, cgroup).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent.log().contains("sandbox removed") {
            ensure!(
                Instant::now() < deadline,
                "the orphan sandbox was not removed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let results = agent.dir.join("root/cni/results");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(&results).is_ok_and(|mut d| d.next().is_some()) {
            ensure!(
                Instant::now() < deadline,
                "CNI cache entries left in {}",
                results.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
}
