//! The one-machine lab in its cluster variant (issue 16): the stand-in API server in its own
//! namespace on the lab network (the control plane's address), the lab's three nodes
//! provisioned by `vagrant/scripts/node` as in the standalone lab, each agent joined to the
//! stand-in with `--kubeconfig` instead of reading the lab's manifests. Driven with the real
//! `kubectl`: the three Nodes turn Ready; a web pod bound to each node runs with an address
//! from that node's pod CIDR; the `web` Service and its EndpointSlice (written by the test, the
//! EndpointSlice controller's job) reach all three pods by ClusterIP from every node and by
//! NodePort on every node's address, each node's proxy programming from the API alone.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use kubenode_integration::apiserver::ApiServer;
use kubenode_integration::cluster::{kubectl_in, running_in_api, wait_for};
use kubenode_integration::kubectl;
use kubenode_integration::lab::{backends_seen, vagrant_dir, Lab, WEB_CLUSTER_IP, WEB_NODE_PORT};
use kubenode_integration::pods::pod_ip;
use kubenode_integration::{privileged, run_tests, unique_tag, veth, LeakGuard, Netns, TestDir};

fn main() {
    let missing = !kubectl::present();
    if missing {
        eprintln!("note: `kubectl` is not installed: the cluster lab test is skipped");
    }
    run_tests(vec![privileged(
        "three_nodes_join_the_standin_and_serve_a_service_from_the_api",
        three_nodes_joined,
    )
    .with_ignored_flag(missing)])
}

/// The control plane's address on the lab network (the VM lab's control-plane VM).
const CONTROL_PLANE_IP: &str = "192.168.56.10";
/// The stand-in's port (kube-apiserver's).
const API_PORT: u16 = 6443;

/// The stand-in in its own namespace on the lab bridge, and the admin kubeconfig for it.
struct ControlPlane {
    // The server goes before its namespace.
    _server: ApiServer,
    ns: Netns,
    kubeconfig: PathBuf,
    home: TestDir,
}

impl ControlPlane {
    fn start(tag: &str, lab: &Netns) -> anyhow::Result<ControlPlane> {
        let ns = Netns::new(&format!("{tag}-cp"))?;
        let port = format!("{tag}vcp");
        veth(Some(lab), &port, Some(&ns), "eth1")?;
        lab.ip(&["link", "set", &port, "master", "br0"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{CONTROL_PLANE_IP}/24"),
            "dev",
            "eth1",
        ])?;
        let listen = format!("{CONTROL_PLANE_IP}:{API_PORT}").parse()?;
        let server = ns.run_in(|| ApiServer::start(listen))??;
        let home = TestDir::new(&format!("{tag}-cp"))?;
        let kubeconfig = home.join("admin.conf");
        server.write_kubeconfig(&kubeconfig)?;
        Ok(ControlPlane {
            _server: server,
            ns,
            kubeconfig,
            home,
        })
    }

    /// kubectl from the control plane's namespace.
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<Result<String, String>> {
        kubectl_in(&self.ns.path(), self.home.path(), &self.kubeconfig, args)
    }

    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl(args)?
            .map_err(|e| anyhow::anyhow!("kubectl {args:?} failed: {e}"))
    }

    fn apply(&self, name: &str, yaml: &str) -> anyhow::Result<()> {
        let file = self.home.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml)?;
        self.ok(&["create", "-f", &file.to_string_lossy()])?;
        Ok(())
    }
}

/// The lab's web pod (`vagrant/manifests/lab/web.yaml`) as an API pod bound to `node`.
fn web_pod(node: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(vagrant_dir().join("manifests/lab/web.yaml"))?;
    let text = text.replacen("  name: web\n", &format!("  name: web-{node}\n"), 1);
    let spec = "spec:\n";
    ensure!(text.contains(spec), "web.yaml has no spec");
    Ok(text.replacen(spec, &format!("spec:\n  nodeName: {node}\n"), 1))
}

fn three_nodes_joined() -> anyhow::Result<()> {
    let tag = unique_tag("clab");
    let guard = LeakGuard::new(&tag);
    let result = (|| -> anyhow::Result<()> {
        let mut control_plane: Option<ControlPlane> = None;
        let started = Lab::start_with(&tag, |lab, _spec, dir| {
            if control_plane.is_none() {
                control_plane = Some(ControlPlane::start(&tag, lab)?);
            }
            let cp = control_plane.as_ref().context("control plane")?;
            // The API server is the source of pods and Services: not the lab's manifests.
            for f in ["web.yaml", "web-svc.yaml"] {
                std::fs::remove_file(dir.join("manifests").join(f))
                    .with_context(|| format!("{f} in the node's manifest directory"))?;
            }
            let kubeconfig = dir.join("kubelet.conf");
            std::fs::copy(&cp.kubeconfig, &kubeconfig)?;
            Ok(vec![
                "--kubeconfig".into(),
                kubeconfig.to_string_lossy().into_owned(),
            ])
        });
        // The lab (its agents first) goes before the control plane.
        let lab = started?;
        let cp = control_plane.as_ref().context("control plane")?;
        let outcome = run_lab(&lab, cp);
        if outcome.is_err() {
            for node in &lab.nodes {
                eprintln!(
                    "--- agent log ({}) ---\n{}",
                    node.node_name(),
                    kubenode_integration::agent::tail(&node.log(), 60)
                );
            }
        }
        // Pods deleted in the API while the agents run, so each removes its own.
        let _ = cp.kubectl(&["delete", "pods", "--all", "--grace-period=0", "--force"]);
        for node in &lab.nodes {
            let _ = wait_for("the node's pods gone", Duration::from_secs(30), || {
                Ok(node.pods().is_ok_and(|p| p.is_empty()).then_some(()))
            });
        }
        drop(lab);
        outcome
    })();
    result?;
    guard.check()
}

fn run_lab(lab: &Lab, cp: &ControlPlane) -> anyhow::Result<()> {
    let names: Vec<String> = lab.specs.iter().map(|s| s.name.clone()).collect();

    // Every node registers and turns Ready (its CNI configuration written by provisioning).
    wait_for("three Ready nodes", Duration::from_secs(90), || {
        let out = cp.ok(&["get", "nodes", "--no-headers"])?;
        let ready = out
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count();
        Ok((ready == names.len()).then_some(()))
    })?;
    println!("{}", cp.ok(&["get", "nodes", "-o", "wide"])?);

    // A web pod bound to each node, with an address from that node's pod CIDR.
    for name in &names {
        cp.apply(&format!("web-{name}"), &web_pod(name)?)?;
    }
    let mut ips = Vec::new();
    for spec in &lab.specs {
        let pod = format!("web-{}", spec.name);
        let p = wait_for(&format!("{pod} Running"), Duration::from_secs(120), || {
            let json = cp.ok(&["get", "pod", &pod, "-o", "json"])?;
            let p: k8s_openapi::api::core::v1::Pod = serde_json::from_str(&json)?;
            Ok(running_in_api(&p).then_some(p))
        })?;
        let ip = pod_ip(&p).to_string();
        let prefix = spec.pod_cidr.trim_end_matches("0/24");
        ensure!(
            ip.starts_with(prefix),
            "{pod}: {ip} is not in {}'s pod CIDR {}",
            spec.name,
            spec.pod_cidr
        );
        ips.push((spec.name.clone(), pod, ip));
    }
    println!("{}", cp.ok(&["get", "pods", "-o", "wide"])?);

    // The `web` Service from the API, and its EndpointSlice as the controller would write it.
    let svc = std::fs::read_to_string(vagrant_dir().join("manifests/lab/web-svc.yaml"))?;
    cp.apply("web-svc", &svc)?;
    let endpoints: String = ips
        .iter()
        .map(|(node, _, ip)| {
            format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: {node}\n")
        })
        .collect();
    cp.apply(
        "web-slice",
        &format!(
            "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-lab
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {{name: http, port: 8080, protocol: TCP}}
endpoints:
{endpoints}"
        ),
    )?;

    let want: BTreeSet<String> = ips.iter().map(|(_, pod, _)| pod.clone()).collect();
    // ClusterIP from every node.
    for node in &lab.nodes {
        let url = format!("http://{WEB_CLUSTER_IP}/cgi-bin/ip");
        let seen = backends_seen(&node.node, &url, &want)?;
        ensure!(
            seen == want,
            "ClusterIP {WEB_CLUSTER_IP} from {}: answered by {seen:?}, want {want:?}",
            node.node_name()
        );
    }
    // NodePort on every node's address, from the lab network.
    for spec in &lab.specs {
        let url = format!("http://{}:{WEB_NODE_PORT}/cgi-bin/ip", spec.ip);
        let seen = backends_seen(&lab.lab, &url, &want)?;
        ensure!(
            seen == want,
            "NodePort {url}: answered by {seen:?}, want {want:?}"
        );
    }
    println!(
        "  ClusterIP and NodePort on {} nodes reach {} pods",
        lab.nodes.len(),
        want.len()
    );
    Ok(())
}
