//! `kubenode image`: manage the local image store.

/// Options of `kubenode image`.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {}

/// Runs an image subcommand.
pub async fn run(_args: ImageArgs) -> anyhow::Result<()> {
    anyhow::bail!("kubenode image: not implemented yet")
}
