//! The one-machine lab: the Vagrant lab's three nodes (`vagrant/nodes`) as network namespaces on
//! a lab bridge, provisioned by the Vagrant lab's own scripts (`vagrant/scripts/node`) and each
//! running its own `kubenode agent` with the configuration those scripts wrote.
//!
//! The lab bridge lives in its own namespace (the "lab", standing in for the hypervisor's
//! host-only network and host, 192.168.56.1); nothing touches the machine's own network. Each
//! node namespace has one interface, `eth1` (the name it has in a VM), with its lab address.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{run_ok, veth, Netns, TestAgent, TestDir};

/// The lab side's address on the lab bridge (the hypervisor host's address in the VM lab).
pub const LAB_HOST_IP: &str = "192.168.56.1";
/// The lab `web` Service's fixed ClusterIP (`vagrant/manifests/lab/web-svc.yaml`).
pub const WEB_CLUSTER_IP: &str = "10.96.0.80";
/// The lab `web` Service's NodePort.
pub const WEB_NODE_PORT: u16 = 30080;
/// The image every lab pod uses (imported by `vagrant/scripts/node-image`).
pub const LAB_IMAGE: &str = "kubenode.local/busybox:1.0";

/// One line of `vagrant/nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node name (`node1`).
    pub name: String,
    /// Its address on the lab network.
    pub ip: String,
    /// Its pod CIDR.
    pub pod_cidr: String,
}

/// The repository's `vagrant/` folder.
pub fn vagrant_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vagrant")
}

/// Parses `vagrant/nodes`: `name address podCIDR` lines, `#` comments.
pub fn parse_nodes(text: &str) -> anyhow::Result<Vec<NodeSpec>> {
    let mut nodes = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, ip, pod_cidr] = f.as_slice() else {
            bail!("vagrant/nodes: expected `name address podCIDR`, got {line:?}");
        };
        nodes.push(NodeSpec {
            name: name.to_string(),
            ip: ip.to_string(),
            pod_cidr: pod_cidr.to_string(),
        });
    }
    Ok(nodes)
}

/// `KUBENODE_ARGS` of an EnvironmentFile, split as systemd splits an unquoted `$VAR`.
pub fn env_file_args(text: &str) -> Vec<String> {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("KUBENODE_ARGS="))
        .map(|v| {
            v.trim_matches('"')
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The running lab. Dropping it stops every node (its pods first) and removes the namespaces.
#[derive(Debug)]
pub struct Lab {
    /// The nodes, in `vagrant/nodes` order (dropped before the lab namespace).
    pub nodes: Vec<TestAgent>,
    /// Their specs, same order.
    pub specs: Vec<NodeSpec>,
    /// The lab namespace with the bridge and [`LAB_HOST_IP`].
    pub lab: Netns,
}

impl Lab {
    /// Builds the lab network, provisions every node with `vagrant/scripts/node` and starts
    /// the agents. `tag` names everything (node `i` uses `<tag>n<i>`).
    pub fn start(tag: &str) -> anyhow::Result<Lab> {
        Lab::start_with(tag, |_, _, _| Ok(Vec::new()))
    }

    /// [`Lab::start`], with `before_agent` called for every node once it is provisioned and
    /// before its agent starts: it gets the lab namespace, the node and its directory, may
    /// change what provisioning wrote, and returns arguments added to the agent's.
    pub fn start_with(
        tag: &str,
        mut before_agent: impl FnMut(&Netns, &NodeSpec, &TestDir) -> anyhow::Result<Vec<String>>,
    ) -> anyhow::Result<Lab> {
        let specs = parse_nodes(&std::fs::read_to_string(vagrant_dir().join("nodes"))?)?;
        let lab = Netns::new(&format!("{tag}-lab"))?;
        lab.ip(&["link", "add", "br0", "type", "bridge"])?;
        lab.ip(&["addr", "add", &format!("{LAB_HOST_IP}/24"), "dev", "br0"])?;
        lab.ip(&["link", "set", "br0", "up"])?;
        let mut prepared = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let node_tag = format!("{tag}n{}", i + 1);
            let node = Netns::new(&node_tag)?;
            let port = format!("{tag}v{}", i + 1);
            veth(Some(&lab), &port, Some(&node), "eth1")?;
            lab.ip(&["link", "set", &port, "master", "br0"])?;
            node.ip(&["addr", "add", &format!("{}/24", spec.ip), "dev", "eth1"])?;
            let dir = TestDir::new(&node_tag)?;
            prepared.push((node_tag, node, dir));
        }
        let mut nodes = Vec::new();
        for ((node_tag, node, dir), spec) in prepared.into_iter().zip(&specs) {
            let out = run_ok(
                &mut in_ns_with_lab_env(&node, &dir, "node", &[&spec.name]),
                Duration::from_secs(120),
            )
            .with_context(|| format!("provisioning {}", spec.name))?;
            tracing_line(&spec.name, &out.stdout);
            let env = std::fs::read_to_string(dir.join("etc/default/kubenode"))
                .context("the env file node-config writes")?;
            let mut args = vec![
                "--config".to_string(),
                dir.join("etc/kubenode/config.yaml")
                    .to_string_lossy()
                    .into_owned(),
            ];
            args.extend(env_file_args(&env));
            args.extend(before_agent(&lab, spec, &dir)?);
            nodes.push(TestAgent::start_prepared(
                &node_tag, &spec.name, node, dir, LAB_IMAGE, args,
            )?);
        }
        Ok(Lab { nodes, specs, lab })
    }

    /// Runs a `vagrant/scripts/` script inside node `i`'s namespace with its directories;
    /// returns stdout.
    pub fn script(&self, i: usize, script: &str, args: &[&str]) -> anyhow::Result<String> {
        let node = &self.nodes[i];
        let out = run_ok(
            &mut in_ns_with_lab_env(&node.node, &node.dir, script, args),
            Duration::from_secs(60),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `vagrant/scripts/sync-endpoints web app=web http:8080` on every node, as the VMs'
    /// timer does.
    pub fn sync_endpoints(&self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.script(i, "sync-endpoints", &["web", "app=web", "http:8080"])?;
        }
        Ok(())
    }

    /// `curl` from the lab namespace (the VM host's view); `Ok(None)` when it fails.
    pub fn curl_from_lab(&self, url: &str) -> anyhow::Result<Option<String>> {
        curl_in(&self.lab, url)
    }
}

/// `curl -fsS -m 3 URL` in `ns`: the body, or `None` when the request failed.
pub fn curl_in(ns: &Netns, url: &str) -> anyhow::Result<Option<String>> {
    let out = crate::run(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .args(["curl", "-fsS", "-m", "3", url]),
        Duration::from_secs(10),
    )?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// `<client address> <pod name>` as the web pods' /cgi-bin/ip answers.
pub fn split_answer(body: &str) -> anyhow::Result<(String, String)> {
    let mut f = body.split_whitespace();
    match (f.next(), f.next()) {
        (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
        _ => bail!("unexpected answer {body:?}"),
    }
}

/// Requests `url` from `ns` until every name in `want` answered (bounded); returns who did.
pub fn backends_seen(
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

/// `vagrant/scripts/<script> args...` inside `ns`, with the node's directories below `dir`.
fn in_ns_with_lab_env(ns: &Netns, dir: &TestDir, script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .arg(vagrant_dir().join("scripts").join(script))
        .args(args)
        .env("LAB_STATE_DIR", dir.path())
        .env("KUBENODE_BIN", crate::kubenode_bin())
        .env("KUBENODE_SYSTEMD", "0");
    cmd
}

fn tracing_line(node: &str, stdout: &[u8]) {
    for line in String::from_utf8_lossy(stdout).lines() {
        println!("  [{node}] {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ruby -c` on the Vagrantfile, `bash -n` and shellcheck on every lab script: the VMs
    /// cannot boot here, their files can be checked (scripts/install-deps --test installs ruby
    /// and shellcheck; a machine without them checks what it can and says so).
    #[test]
    fn vagrant_files_are_clean() {
        let dir = vagrant_dir();
        let have = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let check = |cmd: &mut Command| {
            let out = cmd.output().expect("running the checker");
            assert!(
                out.status.success(),
                "{cmd:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let mut scripts: Vec<PathBuf> = std::fs::read_dir(dir.join("scripts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        scripts.sort();
        assert!(scripts.len() >= 8, "{scripts:?}");
        for script in &scripts {
            check(Command::new("bash").arg("-n").arg(script));
        }
        if have("ruby") {
            check(Command::new("ruby").arg("-c").arg(dir.join("Vagrantfile")));
        } else {
            eprintln!("note: no ruby: the Vagrantfile's syntax is not checked");
        }
        if have("shellcheck") {
            // From the repository root, so that `source` lines resolve as written.
            check(
                Command::new("shellcheck")
                    .arg("-x")
                    .args(&scripts)
                    .current_dir(dir.join("..")),
            );
        } else {
            eprintln!("note: no shellcheck: the lab scripts are only parsed (bash -n)");
        }
    }

    #[test]
    fn parses_the_node_table() {
        let nodes = parse_nodes(
            "# c\n\nn1 192.168.56.11 10.244.1.0/24\n  n2 192.168.56.12   10.244.2.0/24\n",
        )
        .unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].name, "n2");
        assert_eq!(nodes[1].ip, "192.168.56.12");
        assert_eq!(nodes[1].pod_cidr, "10.244.2.0/24");
        assert!(parse_nodes("n1 192.168.56.11\n").is_err());
    }

    #[test]
    fn the_lab_table_is_the_one_the_vagrantfile_reads() {
        let nodes =
            parse_nodes(&std::fs::read_to_string(vagrant_dir().join("nodes")).unwrap()).unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2", "node3"]);
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(n.ip, format!("192.168.56.1{}", i + 1));
            assert_eq!(n.pod_cidr, format!("10.244.{}.0/24", i + 1));
        }
    }

    #[test]
    fn env_file_args_split_like_systemd() {
        let text = "# c\nKUBENODE_ARGS=\"--node-ip=1.2.3.4  --insecure-registry=h:5000\"\nKUBENODE_LOG=info\n";
        assert_eq!(
            env_file_args(text),
            ["--node-ip=1.2.3.4", "--insecure-registry=h:5000"]
        );
        assert!(env_file_args("KUBENODE_ARGS=\"\"\n").is_empty());
        assert!(env_file_args("OTHER=1\n").is_empty());
    }
}
