//! `kubenode image`: pull, list, remove and import images in the local store
//! under `--root-dir`, directly (no running agent needed).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kubenode_runtime::image::{ImageStore, PullEvent, PullOptions};

use crate::print::images::{image_line, images_table, TerminalProgress};

/// Options of `kubenode image`.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// kubenode's state directory; images live in `<root-dir>/images` and
    /// `<root-dir>/snapshots`.
    #[arg(long, global = true, default_value = kubenode_kubelet::config::DEFAULT_ROOT_DIR)]
    pub root_dir: PathBuf,
    /// A registry reached over plain HTTP instead of HTTPS (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT", global = true)]
    pub insecure_registries: Vec<String>,
    /// A docker-style `config.json` with registry credentials (`auths`).
    #[arg(long, value_name = "PATH", global = true)]
    pub auth_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// The `kubenode image` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image from its registry (`busybox:1.36`, `host:5000/x@sha256:...`).
    Pull {
        /// The image reference.
        reference: String,
    },
    /// List images: reference, manifest digest (image ID), compressed size.
    Ls,
    /// Remove an image (and every blob and layer no other image or container uses). Refused
    /// while a container created from it exists (running or exited).
    Rm {
        /// The image reference.
        reference: String,
        /// Remove it even though containers use it: they are named on stderr; their layers
        /// stay until they are removed, and a restart of them pulls the image again.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Remove every image no container uses (running or exited), with the blobs and layers
    /// nothing else references: what the agent's image garbage collection would take, without
    /// its age and disk-usage thresholds.
    Prune,
    /// Import the tagged images of an OCI layout directory or OCI archive tar.
    Import {
        /// The layout directory or archive.
        path: PathBuf,
    },
}

/// Runs an image subcommand.
pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    let store = ImageStore::open(&args.root_dir)
        .with_context(|| format!("opening the image store under {}", args.root_dir.display()))?;
    match args.command {
        ImageCommand::Pull { reference } => {
            let progress = std::io::stderr().is_terminal().then(TerminalProgress::new);
            let options = PullOptions {
                insecure_registries: args.insecure_registries,
                auth_config_path: args.auth_file,
                progress: progress.map(|p| Arc::new(move |e: &PullEvent| p.update(e)) as _),
                ..Default::default()
            };
            let image = store.pull(&reference, &options).await?;
            println!("{}", image_line(&image));
        }
        ImageCommand::Ls => print!("{}", images_table(&store.list()?)),
        ImageCommand::Rm { reference, force } => {
            let users = store.remove_with(&reference, force).await?;
            for user in &users {
                eprintln!(
                    "warning: {reference} is still used by {user}: its layers stay until that container is removed, and a restart of it pulls the image again"
                );
            }
            println!("removed {reference}");
        }
        ImageCommand::Prune => {
            let report = store.prune().await?;
            for (reference, _) in &report.removed {
                println!("removed {reference}");
            }
            println!(
                "{} image(s) removed, {} in use kept, {} bytes freed",
                report.removed.len(),
                report.in_use.len(),
                report.bytes_freed
            );
        }
        ImageCommand::Import { path } => {
            for image in store.import(&path).await? {
                println!("{}", image_line(&image));
            }
        }
    }
    Ok(())
}
