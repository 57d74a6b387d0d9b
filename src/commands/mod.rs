//! One module per subcommand; each is a thin layer over the library crates.

pub mod agent;
pub mod attach;
pub mod cni_plugin;
pub mod describe;
pub mod exec;
pub mod get;
pub mod image;
pub mod logs;
pub mod port_forward;
pub mod proxy;
pub mod shim;
pub mod top;
pub mod version;

use std::path::PathBuf;

use kubenode_kubelet::api::ApiClient;
use kubenode_kubelet::config::{DEFAULT_RUN_DIR, SOCKET_FILE};

/// Where to find the agent: shared by every CLI subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentRef {
    /// The agent's run dir; its socket is `<run-dir>/kubenode.sock`.
    #[arg(long, env = "KUBENODE_RUN_DIR", default_value = DEFAULT_RUN_DIR, global = true)]
    pub run_dir: PathBuf,
}

impl AgentRef {
    /// A client of the agent's socket.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.run_dir.join(SOCKET_FILE))
    }
}

/// The pod `namespace/name` among `pods` (a pod without a namespace is in `default`).
pub(crate) fn find_pod<'a>(
    pods: &'a [k8s_openapi::api::core::v1::Pod],
    namespace: &str,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::Pod> {
    pods.iter().find(|p| {
        p.metadata.name.as_deref() == Some(name)
            && p.metadata.namespace.as_deref().unwrap_or("default") == namespace
    })
}

/// [`find_pod`], or kubectl's error when the pod is not there
/// (`pods "NAME" not found in namespace NS`).
pub(crate) fn get_pod<'a>(
    pods: &'a [k8s_openapi::api::core::v1::Pod],
    namespace: &str,
    name: &str,
) -> anyhow::Result<&'a k8s_openapi::api::core::v1::Pod> {
    find_pod(pods, namespace, name)
        .ok_or_else(|| anyhow::anyhow!("pods {name:?} not found in namespace {namespace}"))
}

/// A stream session's output written to ours as it comes: channel 2 to stderr, the others to
/// stdout, each flushed. The first write error is kept and writing stops (a reader that went
/// away, a closed pipe, is not an error).
#[derive(Debug, Default)]
pub(crate) struct StreamOutput {
    error: Option<std::io::Error>,
}

impl StreamOutput {
    /// Writes `data` of `channel`.
    pub(crate) fn write(&mut self, channel: u8, data: &[u8]) {
        use std::io::Write;
        if self.error.is_some() {
            return;
        }
        let written = if channel == 2 {
            let mut e = std::io::stderr().lock();
            e.write_all(data).and_then(|()| e.flush())
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(data).and_then(|()| o.flush())
        };
        self.error = written.err();
    }

    /// The write error, if any but a closed pipe.
    pub(crate) fn finish(self) -> std::io::Result<()> {
        match self.error {
            Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
            _ => Ok(()),
        }
    }
}
