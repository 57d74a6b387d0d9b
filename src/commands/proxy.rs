//! `kubenode proxy`: kube-proxy's role alone.

/// Options of `kubenode proxy`.
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {}

/// Runs the proxy role.
pub async fn run(_args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("kubenode proxy: not implemented yet")
}
