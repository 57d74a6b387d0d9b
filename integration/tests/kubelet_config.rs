//! The kubelet configuration on a real network stack: the node IP rule,
//! read by `SystemHost` inside a node's own network namespace (as when
//! several agents share one host); and a node configured the way `kubeadm join`
//! configures a kubelet (its config.yaml and its flags).
//!
//! The node IP test re-runs this binary inside the namespace (`ip netns exec`) with
//! `KN_NODE_IP_CHILD` set, so that no test thread ever changes namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context};
use kubenode_integration::agent::{tail, NODE_IP, POD_CIDR};
use kubenode_integration::pods::phase;
use kubenode_integration::{
    build_busybox_image, ip_addr_add, kubenode_bin, link_up, privileged, push_image, run,
    run_tests, unique_tag, veth, LeakGuard, Netns, TestAgent, TestDir, TestRegistry,
};
use kubenode_kubelet::config::{Config, Overrides};

const CHILD_ENV: &str = "KN_NODE_IP_CHILD";

fn main() {
    if let Ok(pod_cidr) = std::env::var(CHILD_ENV) {
        child(&pod_cidr);
    }
    run_tests(vec![
        privileged("node_ip_rule_in_a_node_netns", node_ip_rule),
        privileged("kubeadm_join_config_and_flags", kubeadm_node),
    ])
}

/// Inside the namespace: resolve the configuration and print `<ip> <rule>`.
fn child(pod_cidr: &str) -> ! {
    let overrides = Overrides {
        node_name: Some("node-a".into()),
        pod_cidr: Some(pod_cidr.parse().expect("pod CIDR")),
        ..Overrides::default()
    };
    match Config::resolve(None, &overrides) {
        Ok(cfg) => {
            println!("{} {}", cfg.node_ip, cfg.node_ip_rule);
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

fn resolve_in(ns: &Netns, pod_cidr: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("test binary path is not UTF-8")?;
    let mut cmd = ns.command(&[exe]);
    cmd.env(CHILD_ENV, pod_cidr);
    let out = run(&mut cmd, Duration::from_secs(30))?;
    ensure!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn node_ip_rule() -> anyhow::Result<()> {
    let tag = unique_tag("kc");
    let guard = LeakGuard::new(&tag);
    {
        let ns = Netns::new(&tag)?;
        let (p, q, r, s) = (
            format!("{tag}p"),
            format!("{tag}q"),
            format!("{tag}r"),
            format!("{tag}s"),
        );
        // p: a pod-network bridge address (excluded); q: a plain uplink.
        veth(Some(&ns), &p, Some(&ns), &q)?;
        ip_addr_add(Some(&ns), &p, "10.244.7.1/24")?;
        ip_addr_add(Some(&ns), &q, "10.88.0.3/24")?;
        for i in [&p, &q] {
            link_up(Some(&ns), i)?;
        }
        let got = resolve_in(&ns, "10.244.7.0/24")?;
        ensure!(
            got.starts_with(&format!("10.88.0.3 first global address of {q}")),
            "no default route: {got}"
        );

        // r holds the default route: it wins over interface order.
        veth(Some(&ns), &r, Some(&ns), &s)?;
        ip_addr_add(Some(&ns), &r, "10.77.0.2/24")?;
        for i in [&r, &s] {
            link_up(Some(&ns), i)?;
        }
        ns.ip(&["route", "add", "default", "via", "10.77.0.1", "dev", &r])?;
        let got = resolve_in(&ns, "10.244.7.0/24")?;
        ensure!(
            got.starts_with(&format!(
                "10.77.0.2 first global address of {r}, the default-route interface"
            )),
            "default route: {got}"
        );
    }
    guard.check()
}

/// `/var/lib/kubelet/config.yaml` as `kubeadm join` v1.32 writes it.
const KUBEADM_CONFIG: &str =
    include_str!("../../kubelet/src/config/testdata/kubeadm-v1.32-config.yaml");

/// What the agent must report, once each, for that file and kubeadm's flags.
const EXPECTED_UNSUPPORTED: &[&str] = &[
    "cgroupDriver",
    "containerRuntimeEndpoint",
    "cpuManagerReconcilePeriod",
    "crashLoopBackOff",
    "httpCheckFrequency",
    "imageMaximumGCAge",
    "logging",
    "memorySwap",
    "nodeStatusReportFrequency",
    "nodeStatusUpdateFrequency",
    "runtimeRequestTimeout",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "volumeStatsAggPeriod",
    "--container-runtime-endpoint",
    "--pod-infra-container-image",
];

/// How many times the log reports each key as not supported.
fn unsupported_reports(log: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once("not supported by kubenode: ") {
            let key = rest.split_whitespace().next().unwrap_or_default();
            *seen.entry(key.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

/// A node set up as kubeadm sets up a kubelet: its config.yaml and the flags of its systemd
/// drop-in. With the kubeconfig flags, no kubeconfig written yet and no bootstrap kubeconfig
/// the agent refuses to start (it has nothing to bootstrap with); without them it starts, reports every key and flag it does not act on once, and runs a
/// pod with the file's cluster DNS settings.
fn kubeadm_node() -> anyhow::Result<()> {
    let tag = unique_tag("ka");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let node = Netns::new(&format!("{tag}-node"))?;
        node.ip(&[
            "link", "add", "node0", "type", "veth", "peer", "name", "node0p",
        ])?;
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "node0"])?;
        node.ip(&["link", "set", "node0p", "up"])?;
        node.ip(&["link", "set", "node0", "up"])?;
        let registry = TestRegistry::start(Some(&node))?;
        let layout = build_busybox_image(&dir.join("image"))?;
        let image = node.run_in(|| push_image(&registry, &layout, "busybox", "latest"))??;
        for d in ["manifests", "root", "run", "logs", "cni/net.d", "cni/bin"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let config = dir.join("config.yaml");
        std::fs::write(&config, KUBEADM_CONFIG)?;
        let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
        // kubeadm's kubeadm-flags.env, then the test node's directories and network (the
        // file's staticPodPath, /etc/kubernetes/manifests, is the host's: the flag wins).
        let mut args: Vec<String> = vec![
            format!("--config={}", config.display()),
            "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock".into(),
            "--pod-infra-container-image=registry.k8s.io/pause:3.10".into(),
            format!("--hostname-override={tag}"),
            format!("--node-ip={NODE_IP}"),
        ];
        for (flag, path) in [
            ("--root-dir", "root"),
            ("--run-dir", "run"),
            ("--log-dir", "logs"),
            ("--manifest-dir", "manifests"),
            ("--cni-conf-dir", "cni/net.d"),
            ("--cni-bin-dir", "cni/bin"),
        ] {
            args.extend([flag.to_owned(), d(path)]);
        }
        args.extend(
            [
                "--pod-cidr",
                POD_CIDR,
                "--cluster-cidr",
                "10.244.0.0/16",
                "--service-cidr",
                "10.96.0.0/16",
                "--insecure-registry",
                image.split('/').next().unwrap_or_default(),
            ]
            .map(String::from),
        );

        // kubeadm's clientCAFile (/etc/kubernetes/pki/ca.crt) is the host's: a test CA instead
        // (the HTTPS server refuses to start without its client CA, as upstream's).
        let client_ca = dir.join("ca.crt");
        std::fs::write(
            &client_ca,
            &kubenode_integration::apiserver::tls::Ca::generate()?.cert_pem,
        )?;
        args.push(format!("--client-ca-file={}", client_ca.display()));

        // With the drop-in's kubeconfig flags, no kubeconfig (bootstrap would write it) and no
        // bootstrap kubeconfig: refused before anything is made.
        let mut refused = node.command(&[kubenode_bin().to_str().context("binary path")?, "agent"]);
        refused
            .args([
                "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
                "--kubeconfig=/etc/kubernetes/kubelet.conf",
            ])
            .args(&args);
        let out = run(&mut refused, Duration::from_secs(30))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && stderr.contains(
                    "--bootstrap-kubeconfig /etc/kubernetes/bootstrap-kubelet.conf: the \
                     kubeconfig /etc/kubernetes/kubelet.conf does not exist and the bootstrap \
                     kubeconfig cannot be read for TLS bootstrap"
                ),
            "with --kubeconfig: {:?}, stderr:\n{stderr}",
            out.status
        );
        ensure!(
            !dir.join("run/kubenode.sock").exists() && !dir.join("root/pods").exists(),
            "the refused agent left state behind"
        );

        // Without them: the agent starts.
        let agent = TestAgent::start_prepared(&tag, &tag, node, dir, &image, args)?;
        let check = || -> anyhow::Result<()> {
            let name = "dns";
            agent.write_manifest(
                "dns.yaml",
                &format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  \
                     - name: c\n    image: {image}\n    command: [sleep, \"3600\"]\n"
                ),
            )?;
            let pod = agent.pod_name(name);
            agent.wait_pod(&pod, Duration::from_secs(60), "Running", |p| {
                phase(p) == "Running"
            })?;
            // clusterDNS and clusterDomain of kubeadm's file, in the pod (dnsPolicy ClusterFirst).
            let resolv = agent.kubenode_ok(&["exec", &pod, "--", "cat", "/etc/resolv.conf"])?;
            ensure!(
                resolv.contains("nameserver 10.96.0.10")
                    && resolv.contains("default.svc.cluster.local svc.cluster.local cluster.local"),
                "the pod's resolv.conf: {resolv}"
            );
            // The health port kubeadm's file names (and `kubeadm join` waits on) answers.
            let health =
                kubenode_integration::lab::curl_in(&agent.node, "http://127.0.0.1:10248/healthz")?;
            ensure!(
                health.as_deref() == Some("ok"),
                "127.0.0.1:10248/healthz: {health:?}"
            );
            // Each unsupported key and flag reported once (also after the pod's start and the
            // manifest directory's re-reads).
            let log = agent.log();
            let seen = unsupported_reports(&log);
            let expected: BTreeMap<String, usize> = EXPECTED_UNSUPPORTED
                .iter()
                .map(|k| ((*k).to_owned(), 1))
                .collect();
            ensure!(
                seen == expected,
                "reported: {seen:?}\nagent log:\n{}",
                tail(&log, 60)
            );
            // kubeadm's authentication and authorization are acted on: the HTTPS server says
            // what it accepts (standalone here: no API server for the webhooks)
            ensure!(
                log.lines()
                    .any(|l| l.contains("kubelet HTTPS server listening")
                        && l.contains("authentication: client certificates, no bearer tokens")
                        && l.contains("authorization: Webhook without an API server")),
                "the HTTPS server's start-up line:\n{}",
                tail(&log, 60)
            );
            agent.remove_manifest("dns.yaml")?;
            agent.wait_gone(&pod, Duration::from_secs(60))
        };
        let r = check();
        if r.is_err() {
            eprintln!("--- agent log ({tag}) ---\n{}", tail(&agent.log(), 80));
        }
        drop(agent);
        drop(registry);
        r?;
    }
    guard.check()
}
