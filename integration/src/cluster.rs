//! Cluster-mode test fixtures: an agent joined to a stand-in API server that serves inside the
//! agent's node namespace, driven with the real `kubectl` as a user would, and the small waits
//! the cluster tests share. Every wait is bounded; pods are deleted and the agent cleaned up
//! even when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::core::v1::Pod;

use crate::apiserver::{ApiServer, HttpsOptions, Options};
use crate::kubectl::{self, KUBECTL};
use crate::pods::{all_running, phase};
use crate::{unique_tag, LeakGuard, TestAgent};

/// An agent joined to a stand-in API server that serves inside the agent's node namespace.
pub struct Cluster {
    // Dropped first: pods deleted, then the agent goes (its Drop removes what is left).
    /// The agent, started with `--kubeconfig`.
    pub agent: TestAgent,
    /// The stand-in.
    pub server: ApiServer,
    /// A kubeconfig for the stand-in (its admin user).
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// kubectl in the node's namespace: Ok(stdout) on success, Err(stderr) on failure.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Result<String, String>> {
        kubectl_in(
            &self.agent.node.path(),
            self.agent.dir.path(),
            &self.kubeconfig,
            args,
        )
    }

    /// kubectl that must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        match self.kubectl(args)? {
            Ok(out) => Ok(out),
            Err(e) => bail!("kubectl {args:?} failed: {e}"),
        }
    }

    /// `kubectl create -f` of `yaml` (written to the test dir as `<name>.yaml`).
    pub fn create(&self, name: &str, yaml: &str) -> anyhow::Result<()> {
        let file = self.agent.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml)?;
        self.ok(&["create", "-f", &file.to_string_lossy()])?;
        Ok(())
    }

    /// The pod `name` as the API server has it (`None`: not found).
    pub fn api_pod(&self, name: &str) -> anyhow::Result<Option<Pod>> {
        match self.kubectl(&["get", "pod", name, "-o", "json"])? {
            Ok(json) => Ok(Some(serde_json::from_str(&json)?)),
            Err(e) if e.contains("NotFound") || e.contains("not found") => Ok(None),
            Err(e) => bail!("kubectl get pod {name}: {e}"),
        }
    }

    /// Waits (at most `timeout`) until the API's pod `name` satisfies `ok`.
    pub fn wait_api(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&Pod) -> bool,
    ) -> anyhow::Result<Pod> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.api_pod(name)?;
            if let Some(p) = &last {
                if ok(p) {
                    return Ok(p.clone());
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "pod {name} in the API not {what} within {timeout:?}; last: {:?}",
            last.map(|p| p.status)
        )
    }

    /// The UID of Node `name` in the API (`None`: not there).
    pub fn api_node_uid(&self, name: &str) -> anyhow::Result<Option<String>> {
        match self.kubectl(&["get", "node", name, "-o", "jsonpath={.metadata.uid}"])? {
            Ok(uid) => Ok(Some(uid)),
            Err(e) if e.contains("NotFound") || e.contains("not found") => Ok(None),
            Err(e) => bail!("kubectl get node {name}: {e}"),
        }
    }

    /// Waits (bounded) until the pod `name` is gone from the API.
    pub fn wait_api_gone(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.api_pod(name)?.is_none() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!("pod {name} still in the API after {timeout:?}")
    }

    /// Deletes every pod left in the API at once and waits (bounded) for the agent to have
    /// nothing running.
    pub fn delete_all(&self) {
        let _ = self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.agent.pods().is_ok_and(|p| p.is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.delete_all();
    }
}

/// Runs `f` with an agent joined to a fresh stand-in, printing the agent's log when `f` fails
/// (or `KUBENODE_TEST_SHOW_LOG` is set), then checks for leaks.
pub fn with_cluster(
    prefix: &str,
    f: impl FnOnce(&mut Cluster) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    with_cluster_args(prefix, &[], f)
}

/// As [`with_cluster`], the agent given `args` besides its kubeconfig.
pub fn with_cluster_args(
    prefix: &str,
    args: &[&str],
    f: impl FnOnce(&mut Cluster) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tag = unique_tag(prefix);
    let guard = LeakGuard::new(&tag);
    let result = {
        let mut agent = TestAgent::start(&tag)?;
        let (server, kubeconfig) = join_standin(&mut agent, args)?;
        let mut cluster = Cluster {
            agent,
            server,
            kubeconfig,
        };
        let r = f(&mut cluster);
        if r.is_err() || std::env::var_os("KUBENODE_TEST_SHOW_LOG").is_some() {
            eprintln!(
                "--- agent log ({tag}) ---\n{}",
                crate::agent::tail(&cluster.agent.log(), 80)
            );
        }
        r
    };
    result?;
    guard.check()
}

/// Restarts the running `agent` joined to a new stand-in that serves in the agent's node
/// namespace (its kubeconfig written to the agent's directory), with `args` besides
/// `--kubeconfig`; returns the stand-in and that kubeconfig.
pub fn join_standin(agent: &mut TestAgent, args: &[&str]) -> anyhow::Result<(ApiServer, PathBuf)> {
    agent.kill();
    let server = agent
        .node
        .run_in(|| ApiServer::start("127.0.0.1:0".parse().expect("address")))??;
    let kubeconfig = agent.dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    agent.extra_args = vec![
        "--kubeconfig".into(),
        kubeconfig.to_string_lossy().into_owned(),
    ];
    agent.extra_args.extend(args.iter().map(|a| a.to_string()));
    agent.spawn()?;
    Ok((server, kubeconfig))
}

/// The bearer token of the HTTPS stand-in's `kubernetes-admin` (group `system:masters`) in
/// [`kubelet_api_https`].
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// The HTTPS stand-in as kube-apiserver towards a kubelet's :10250: the admin's token, and the
/// subject of the API server's kubelet client certificate (`kube-apiserver-kubelet-client`)
/// allowed by its SubjectAccessReview.
pub fn kubelet_api_https() -> HttpsOptions {
    HttpsOptions {
        static_tokens: vec![(
            ADMIN_TOKEN.into(),
            "kubernetes-admin".into(),
            vec!["system:masters".into()],
        )],
        allowed_subjects: vec!["kube-apiserver-kubelet-client".into()],
        ..HttpsOptions::default()
    }
}

/// An HTTPS stand-in serving in an agent's node namespace, its CA and an admin kubeconfig
/// written beside the test's files, and a `HOME` for kubectl.
#[derive(Debug)]
pub struct HttpsStandIn {
    /// The stand-in.
    pub server: ApiServer,
    /// Its CA certificate (`ca.crt`): the agent's `--client-ca-file`.
    pub ca_file: PathBuf,
    /// A kubeconfig with the admin's token (`kubelet.conf`).
    pub kubeconfig: PathBuf,
    /// kubectl's `HOME`.
    pub home: PathBuf,
}

impl HttpsStandIn {
    /// Starts the stand-in with `https` in `agent`'s node namespace (a free loopback port),
    /// writing its files to `dir`.
    pub fn start(agent: &TestAgent, dir: &Path, https: HttpsOptions) -> anyhow::Result<Self> {
        let opts = Options {
            https: Some(https),
            ..Options::default()
        };
        let server = agent
            .node
            .run_in(|| ApiServer::start_with("127.0.0.1:0".parse().expect("address"), opts))?
            .map_err(|e| anyhow::anyhow!("starting the stand-in in the node's namespace: {e}"))?;
        let kubeconfig = dir.join("kubelet.conf");
        server.write_kubeconfig(&kubeconfig)?;
        let ca_file = dir.join("ca.crt");
        let ca = server
            .ca_pem()
            .ok_or_else(|| anyhow::anyhow!("the stand-in has no CA"))?;
        std::fs::write(&ca_file, ca)?;
        let home = dir.join("home");
        std::fs::create_dir_all(&home)?;
        Ok(HttpsStandIn {
            server,
            ca_file,
            kubeconfig,
            home,
        })
    }

    /// The stand-in's CA, to issue client certificates.
    pub fn ca(&self) -> &crate::apiserver::tls::Ca {
        &self.server.secure().expect("an HTTPS stand-in").ca
    }

    /// Restarts `agent` as a node of the stand-in: `--kubeconfig node_kubeconfig` and its
    /// :10250 trusting the stand-in's client certificates (`--client-ca-file`).
    pub fn join(&self, agent: &mut TestAgent, node_kubeconfig: &Path) -> anyhow::Result<()> {
        agent.kill();
        agent.extra_args = vec![
            "--kubeconfig".into(),
            node_kubeconfig.display().to_string(),
            "--client-ca-file".into(),
            self.ca_file.display().to_string(),
        ];
        agent.spawn()
    }

    /// kubectl as the admin in `agent`'s node namespace: Ok(stdout) or Err(stderr).
    pub fn kubectl(
        &self,
        agent: &TestAgent,
        args: &[&str],
    ) -> anyhow::Result<Result<String, String>> {
        kubectl_in(&agent.node.path(), &self.home, &self.kubeconfig, args)
    }
}

/// kubectl against `kubeconfig`, run in the network namespace `netns` with `HOME` = `home`
/// (30 s at most): Ok(stdout) on success, Err(stderr) on failure.
pub fn kubectl_in(
    netns: &Path,
    home: &Path,
    kubeconfig: &Path,
    args: &[&str],
) -> anyhow::Result<Result<String, String>> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .arg(KUBECTL)
        .args(kubectl::common_args(kubeconfig, home))
        .args(args);
    kubectl::outcome(&mut cmd, home)
}

/// A pod bound to `node` running `command` in `image`, with `extra` spec lines.
pub fn api_pod_yaml(name: &str, node: &str, image: &str, command: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
{extra}  containers:
  - name: c
    image: {image}
    command: [\"sh\", \"-c\", {command:?}]
"
    )
}

/// Whether the API's pod is Running with every container running.
pub fn running_in_api(p: &Pod) -> bool {
    phase(p) == "Running" && all_running(p)
}

/// Polls `f` every 500 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A port for a stand-in: free on the host, and any port is free in a node's new network
/// namespace.
pub fn some_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
