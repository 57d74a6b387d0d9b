//! A real `kubenode agent` in its own "node" network namespace, with its own directories and a
//! registry holding the busybox test image, driven the way a user drives it: manifests in, the
//! CLI and real traffic out.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::Value;

use crate::{
    build_busybox_image, kubenode_bin, push_image, run, run_ok, Netns, TestDir, TestRegistry,
};

/// The node's own address (on an interface inside the node namespace).
pub const NODE_IP: &str = "10.250.0.10";
/// The node's pod CIDR.
pub const POD_CIDR: &str = "10.244.1.0/24";

/// An agent under test. Dropping it removes every manifest, waits (bounded) for the pods to go,
/// stops the agent and removes what is left by force.
#[derive(Debug)]
pub struct TestAgent {
    tag: String,
    node_name: String,
    /// `kubenode agent` arguments when someone else configured the node (see
    /// [`TestAgent::start_prepared`]); `None`: the test defaults below.
    args: Option<Vec<String>>,
    /// The agent's node namespace.
    pub node: Netns,
    /// Its directories: `root`, `run`, `logs`, `manifests`, `cni` below it.
    pub dir: TestDir,
    registry: Option<TestRegistry>,
    layout: Option<crate::ImageLayout>,
    /// `127.0.0.1:<port>/busybox:latest`, reachable from the node.
    pub image: String,
    /// Flags added to the test defaults on the next [`TestAgent::spawn`] (e.g. after
    /// [`TestAgent::kill`]).
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl TestAgent {
    /// The tag the agent's names carry (its node name, namespaces, directories).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Builds the node namespace, the registry and image, and starts the agent.
    pub fn start(tag: &str) -> anyhow::Result<TestAgent> {
        TestAgent::start_with_config(tag, None)
    }

    /// Runs `f` with an agent whose :10250 takes client certificates of a fresh CA (given to
    /// `f` to sign the client's) and authorizes every request (`AlwaysAllow`), as the benches
    /// measure it; the CA's directory is removed afterwards.
    pub fn with_client_ca<T>(
        tag: &str,
        f: impl FnOnce(&TestAgent, &crate::apiserver::tls::Ca) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let ca = crate::apiserver::tls::Ca::generate()?;
        let dir = std::env::temp_dir().join(format!("kubenode-{tag}-ca"));
        std::fs::create_dir_all(&dir)?;
        let result = (|| {
            let ca_file = dir.join("ca.crt");
            std::fs::write(&ca_file, &ca.cert_pem)?;
            let config = format!(
                "authentication:\n  x509:\n    clientCAFile: {}\nauthorization:\n  mode: AlwaysAllow\n",
                ca_file.display()
            );
            let agent = TestAgent::start_with_config(tag, Some(&config))?;
            f(&agent, &ca)
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Like [`TestAgent::start`], with a KubeletConfiguration file (its `kind`/`apiVersion`
    /// header is added) passed as `--config`.
    pub fn start_with_config(tag: &str, config: Option<&str>) -> anyhow::Result<TestAgent> {
        let dir = TestDir::new(tag)?;
        let node = Netns::new(&format!("{tag}-node"))?;
        // This kernel has no dummy interfaces: a veth pair inside the namespace carries the
        // node's address instead.
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
        if let Some(body) = config {
            std::fs::write(
                dir.join("config.yaml"),
                format!(
                    "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}"
                ),
            )?;
        }
        let mut agent = TestAgent {
            tag: tag.to_string(),
            node_name: tag.to_string(),
            args: None,
            node,
            dir,
            registry: Some(registry),
            layout: Some(layout),
            image,
            extra_args: Vec::new(),
            child: None,
        };
        agent.spawn()?;
        Ok(agent)
    }

    /// Starts `kubenode agent <args>` in `node`, whose network and directories (the layout of
    /// [`TestAgent::dir`]) someone else prepared, e.g. the one-machine lab with the Vagrant
    /// lab's scripts. `node_name` is the name the agent's configuration gives the node; `image`
    /// the reference its pods use. No registry: [`TestAgent::push_tag`] fails.
    pub fn start_prepared(
        tag: &str,
        node_name: &str,
        node: Netns,
        dir: TestDir,
        image: &str,
        args: Vec<String>,
    ) -> anyhow::Result<TestAgent> {
        let mut agent = TestAgent {
            tag: tag.to_string(),
            node_name: node_name.to_string(),
            args: Some(args),
            node,
            dir,
            registry: None,
            layout: None,
            image: image.to_string(),
            extra_args: Vec::new(),
            child: None,
        };
        agent.spawn()?;
        Ok(agent)
    }

    /// Pushes the test image under another tag; returns its reference.
    pub fn push_tag(&self, tag: &str) -> anyhow::Result<String> {
        let layout = self.layout.as_ref().context("no image layout")?;
        self.push_layout(layout, "busybox", tag)
    }

    /// Pushes another image layout (see [`crate::derive_image`]) to the node's registry as
    /// `<name>:<tag>`; returns its reference.
    pub fn push_layout(
        &self,
        layout: &crate::ImageLayout,
        name: &str,
        tag: &str,
    ) -> anyhow::Result<String> {
        let registry = self.registry.as_ref().context("registry gone")?;
        self.node
            .run_in(|| push_image(registry, layout, name, tag))?
    }

    /// The agent's base image layout (the one [`TestAgent::push_tag`] pushes).
    pub fn layout(&self) -> Option<&crate::ImageLayout> {
        self.layout.as_ref()
    }

    /// The agent's process ID (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The node name (the test's tag, unless prepared otherwise).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The static pod name of manifest pod `name`: `<name>-<node>`.
    pub fn pod_name(&self, name: &str) -> String {
        format!("{name}-{}", self.node_name)
    }

    /// Starts the agent process (again, after [`TestAgent::kill`]).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))?;
        // nsenter --net changes only the network namespace: unlike `ip netns exec` it keeps the
        // host's /sys, so the agent sees the cgroup hierarchies.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.node.path().display()))
            .arg(kubenode_bin())
            .arg("agent");
        if let Some(args) = &self.args {
            cmd.args(args);
        } else {
            self.default_args(&mut cmd);
        }
        // Upstream's default thresholds include disk ones (nodefs.available<10%,
        // imagefs.available<15%): on a test machine whose disk happens to be that full, every
        // test's pods would be refused with DiskPressure. Tests keep the memory threshold only,
        // unless they set thresholds of their own (the eviction tests).
        let config = std::fs::read_to_string(self.dir.join("config.yaml")).unwrap_or_default();
        let own = cmd
            .get_args()
            .any(|a| a.to_string_lossy().starts_with("--eviction-hard"))
            || config.contains("evictionHard:");
        if !own {
            cmd.args(["--eviction-hard", "memory.available<100Mi"]);
        }
        let child = cmd
            // KUBENODE_TEST_LOG (e.g. `debug`) raises the agent's log level for a debugging run.
            .env(
                "KUBENODE_LOG",
                std::env::var("KUBENODE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kubenode agent")?;
        self.child = Some(child);
        // The socket answers after the runtime's recovery, which waits (30 s at most each) for
        // a shim of the last run still in `runtime create`: a SIGKILL in the middle of a busy
        // node's work (the kill-churn soak, on a loaded machine) can make that take a while.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("kubenode agent exited ({status}):\n{}", self.log());
            }
            if self
                .kubenode(&["get", "pods", "-A"])
                .is_ok_and(|o| o.status.success())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("kubenode agent did not answer within 60 s:\n{}", self.log())
    }

    /// The arguments of the next [`TestAgent::spawn`] after `agent`: the test defaults with
    /// [`TestAgent::extra_args`], or those set by [`TestAgent::set_args`].
    pub fn argv(&self) -> Vec<String> {
        if let Some(args) = &self.args {
            return args.clone();
        }
        let mut cmd = Command::new("kubenode");
        self.default_args(&mut cmd);
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// Replaces the arguments of the next [`TestAgent::spawn`] (after `agent`; `None`: the
    /// test defaults again), e.g. [`TestAgent::argv`] without a flag.
    pub fn set_args(&mut self, args: Option<Vec<String>>) {
        self.args = args;
    }

    /// The test defaults: flags for [`TestAgent::start_with_config`]'s node.
    fn default_args(&self, cmd: &mut Command) {
        let d = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        cmd.args(if self.dir.join("config.yaml").exists() {
            vec!["--config".to_string(), d("config.yaml")]
        } else {
            Vec::new()
        })
        .args(["--node-name", &self.tag, "--node-ip", NODE_IP])
        .args([
            "--root-dir",
            &d("root"),
            "--run-dir",
            &d("run"),
            "--log-dir",
            &d("logs"),
        ])
        .args(["--manifest-dir", &d("manifests")])
        .args([
            "--cni-conf-dir",
            &d("cni/net.d"),
            "--cni-bin-dir",
            &d("cni/bin"),
        ])
        .args([
            "--pod-cidr",
            POD_CIDR,
            "--cluster-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/16",
        ])
        .args([
            "--insecure-registry",
            self.image.split('/').next().unwrap_or_default(),
        ])
        .args(&self.extra_args);
    }

    /// SIGKILLs the agent (pods keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Writes a manifest file (atomically: write then rename, as editors and tools do).
    pub fn write_manifest(&self, file: &str, text: &str) -> anyhow::Result<()> {
        let tmp = self.dir.join(format!("manifests/.{file}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.dir.join("manifests").join(file))?;
        Ok(())
    }

    /// Removes a manifest file.
    pub fn remove_manifest(&self, file: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.dir.join("manifests").join(file))?;
        Ok(())
    }

    /// Runs the kubenode CLI against this agent.
    pub fn kubenode(&self, args: &[&str]) -> anyhow::Result<Output> {
        let run_dir = self.dir.join("run");
        run(
            Command::new(kubenode_bin())
                .args(args)
                .env("KUBENODE_RUN_DIR", run_dir),
            Duration::from_secs(60),
        )
    }

    /// The CLI's stdout; a non-zero exit is an error.
    pub fn kubenode_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubenode(args)?;
        if !out.status.success() {
            bail!(
                "kubenode {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubenode image --root-dir <this agent's root> ARGS` (the image store opened directly, as
    /// the command does): whether it succeeded, and its stdout then stderr.
    pub fn image_cli(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let out = run(
            Command::new(kubenode_bin())
                .arg("image")
                .arg("--root-dir")
                .arg(self.dir.join("root"))
                .args(args),
            Duration::from_secs(60),
        )?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// Every pod, as `kubenode get pods -A -o json` prints them.
    pub fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        let pods: Vec<Pod> = self.get_list(&["pods", "-A"])?;
        for p in &pods {
            crate::LeakGuard::track_pod(&self.tag, p.metadata.uid.as_deref().unwrap_or(""));
        }
        Ok(pods)
    }

    /// Records every pod the agent has a directory for (`root/pods/<uid>`) with the leak guard.
    fn track_pod_dirs(&self) {
        for e in std::fs::read_dir(self.dir.join("root/pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            crate::LeakGuard::track_pod(&self.tag, &e.file_name().to_string_lossy());
        }
    }

    /// The pod named `name` (full static pod name), if present.
    pub fn pod(&self, name: &str) -> anyhow::Result<Option<Pod>> {
        Ok(self
            .pods()?
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name)))
    }

    /// Waits (polling every 100 ms) until `pred` holds for pod `name`; returns the pod.
    pub fn wait_pod(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Pod) -> bool,
    ) -> anyhow::Result<Pod> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(p) = self.pod(name)? {
                if pred(&p) {
                    return Ok(p);
                }
                last = Some(p);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "pod {name}: {what} not reached within {timeout:?}; last seen: {}\nagent log:\n{}",
            last.map(|p| serde_json::to_string_pretty(&p.status).unwrap_or_default())
                .unwrap_or_else(|| "<absent>".into()),
            tail(&self.log(), 40)
        )
    }

    /// Waits until pod `name` is gone.
    pub fn wait_gone(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.pod(name)?.is_none() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("pod {name} still present after {timeout:?}")
    }

    /// Events as `kubenode get events -A -o json` prints them.
    pub fn events(&self) -> anyhow::Result<Vec<Event>> {
        self.get_list(&["events", "-A"])
    }

    /// The `items` of `kubenode get WHAT… -o json` (a kubectl-style `kind: List`, which
    /// `k8s_openapi::List` refuses: it wants `PodList` and the like), each read as a `T`.
    pub fn get_list<T: k8s_openapi::serde::de::DeserializeOwned>(
        &self,
        what: &[&str],
    ) -> anyhow::Result<Vec<T>> {
        let args = [&["get"], what, &["-o", "json"]].concat();
        let out = self.kubenode_ok(&args)?;
        let kind = what.join(" ");
        let mut list: Value = serde_json::from_str(&out)
            .with_context(|| format!("`kubenode get {kind} -o json` printed no JSON: {out}"))?;
        let items = match list["items"].take() {
            Value::Null => Value::Array(vec![]),
            items => items,
        };
        serde_json::from_value(items)
            .with_context(|| format!("`kubenode get {kind} -o json`: items: {out}"))
    }

    fn force_cleanup(&self) {
        let runc_root = self.dir.join("run/runc");
        if let Ok(list) = crate::runc_list(&runc_root) {
            for id in list.iter().filter_map(|c| c["id"].as_str()) {
                let _ = run(
                    Command::new("runc")
                        .arg("--root")
                        .arg(&runc_root)
                        .args(["delete", "-f", id]),
                    Duration::from_secs(10),
                );
            }
        }
        crate::guard::kill_tagged(&self.tag);
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.track_pod_dirs();
        if self.child.is_none() {
            let _ = self.spawn();
        }
        if let Ok(entries) = std::fs::read_dir(self.dir.join("manifests")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            match self.pods() {
                Ok(p) if p.is_empty() => break,
                Err(_) => break,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        self.kill();
        self.force_cleanup();
        drop(self.registry.take());
    }
}

/// Runs `f` with a fresh agent started with the KubeletConfiguration `config`, printing the
/// agent's log when `f` fails, then checks for leaks.
pub fn with_config_agent(
    prefix: &str,
    config: Option<&str>,
    f: impl FnOnce(&mut TestAgent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tag = crate::unique_tag(prefix);
    let guard = crate::LeakGuard::new(&tag);
    let result = {
        let mut agent = TestAgent::start_with_config(&tag, config)?;
        let r = f(&mut agent);
        if r.is_err() || std::env::var_os("KUBENODE_TEST_SHOW_LOG").is_some() {
            eprintln!("--- agent log ({tag}) ---\n{}", tail(&agent.log(), 80));
        }
        r
    };
    result?;
    guard.check()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Path of the kubenode binary, for tests that want to name it.
pub fn bin() -> PathBuf {
    kubenode_bin()
}

/// Runs `argv` in the node namespace and returns stdout; a non-zero exit is an error.
pub fn in_node(agent: &TestAgent, argv: &[&str]) -> anyhow::Result<String> {
    let out = run_ok(&mut agent.node.command(argv), Duration::from_secs(30))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
