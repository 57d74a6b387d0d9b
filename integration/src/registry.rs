//! A real OCI distribution registry (Debian's `docker-registry`) on loopback.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::netns::Netns;
use crate::TestDir;

/// A `docker-registry serve` on `127.0.0.1:<free port>` with storage in a temporary directory;
/// stopped and its storage removed on drop. Started inside a [`Netns`] it serves that namespace's
/// loopback (a node agent inside the namespace cannot reach the host's loopback).
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    port: u16,
    dir: TestDir,
    auth: bool,
}

/// The user of [`TestRegistry::start_with_auth`].
pub const REGISTRY_USER: &str = "kn";
/// Its password.
pub const REGISTRY_PASSWORD: &str = "kubenode-pw";
/// `kn:kubenode-pw` as bcrypt (cost 5), the registry's htpasswd file.
const HTPASSWD: &str = "kn:$2b$05$1LGjc/6lirrwtf2/KZc/I.gFJX53GIxyoKu4ONDZjiR0VeRpvTC56\n";

impl TestRegistry {
    /// Starts the registry and waits (≤ 15 s) until `GET /v2/` answers.
    pub fn start(netns: Option<&Netns>) -> anyhow::Result<TestRegistry> {
        TestRegistry::start_with(netns, false)
    }

    /// Starts a registry that requires HTTP basic auth ([`REGISTRY_USER`] / [`REGISTRY_PASSWORD`],
    /// distribution's `htpasswd` auth) and waits until `GET /v2/` answers 401.
    pub fn start_with_auth(netns: Option<&Netns>) -> anyhow::Result<TestRegistry> {
        TestRegistry::start_with(netns, true)
    }

    fn start_with(netns: Option<&Netns>, auth: bool) -> anyhow::Result<TestRegistry> {
        let port = free_port()?;
        let dir = TestDir::new(&crate::unique_tag("reg"))?;
        let config = dir.join("config.yml");
        let auth_config = if auth {
            std::fs::write(dir.join("htpasswd"), HTPASSWD)?;
            format!(
                "auth:\n  htpasswd: {{realm: kubenode-test, path: {}}}\n",
                dir.join("htpasswd").display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  \
                 delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_config}",
                dir.join("data").display()
            ),
        )?;
        let log = File::create(dir.join("registry.log"))?;
        let mut cmd = match netns {
            Some(ns) => ns.command(&["docker-registry", "serve"]),
            None => Command::new("docker-registry"),
        };
        if netns.is_none() {
            cmd.arg("serve");
        }
        let child = cmd
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let mut reg = TestRegistry {
            child,
            port,
            dir,
            auth,
        };
        reg.wait_ready(netns)?;
        Ok(reg)
    }

    fn wait_ready(&mut self, netns: Option<&Netns>) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/v2/", self.port);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
                bail!("docker-registry exited ({status}): {log}");
            }
            // 200, or 401 from a registry that requires auth
            let want = if self.auth { "401" } else { "200" };
            let curl = [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "1",
                &url,
            ];
            let ok = match netns {
                None => std::process::Command::new(curl[0])
                    .args(&curl[1..])
                    .output()
                    .is_ok_and(|o| o.stdout == want.as_bytes()),
                Some(ns) => ns
                    .exec_timeout(&curl, Duration::from_secs(3))
                    .is_ok_and(|o| o.stdout == want.as_bytes()),
            };
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("docker-registry did not answer {url} within 15 s")
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The registry's storage root (`docker/registry/v2/...` below it), for tampering tests.
    pub fn storage_dir(&self) -> std::path::PathBuf {
        self.dir.join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port that was free on the host's loopback a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
