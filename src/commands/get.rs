//! `kubenode get`: talks to the local agent's socket.

/// Options of `kubenode get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Arguments, kubectl-style.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `kubenode get`.
pub async fn run(_args: GetArgs) -> anyhow::Result<()> {
    super::not_implemented("get")
}
