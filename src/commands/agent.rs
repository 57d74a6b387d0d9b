//! `kubenode agent` and `kubenode kubelet`: the node agent.

/// Which roles the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// Kubelet and proxy.
    All,
    /// The kubelet alone.
    Kubelet,
}

/// Options of `kubenode agent` / `kubenode kubelet`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Configuration file (KubeletConfiguration-shaped YAML).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Runs the agent with the given roles.
pub async fn run(_args: AgentArgs, roles: Roles) -> anyhow::Result<()> {
    super::not_implemented(if roles == Roles::All {
        "agent"
    } else {
        "kubelet"
    })
}
