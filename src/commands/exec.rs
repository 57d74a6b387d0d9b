//! `kubenode exec`: talks to the local agent's socket.

/// Options of `kubenode exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Arguments, kubectl-style.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `kubenode exec`.
pub async fn run(_args: ExecArgs) -> anyhow::Result<()> {
    super::not_implemented("exec")
}
