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
