//! `kubenode describe`: talks to the local agent's socket.

/// Options of `kubenode describe`.
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// Arguments, kubectl-style.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `kubenode describe`.
pub async fn run(_args: DescribeArgs) -> anyhow::Result<()> {
    super::not_implemented("describe")
}
