//! `kubenode logs`: talks to the local agent's socket.

/// Options of `kubenode logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Arguments, kubectl-style.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `kubenode logs`.
pub async fn run(_args: LogsArgs) -> anyhow::Result<()> {
    super::not_implemented("logs")
}
