//! `kubenode image`: pull, list, remove and import images in the local store
//! under `--root-dir`, directly (no running agent needed).

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kubenode_runtime::image::{ImageStore, PullEvent, PullOptions};

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
            };
            let image = store.pull(&reference, &options).await?;
            println!(
                "{} {} {}",
                image.reference,
                image.manifest_digest,
                human_size(image.size)
            );
        }
        ImageCommand::Ls => {
            let rows: Vec<[String; 3]> = store
                .list()?
                .into_iter()
                .map(|i| [i.reference, i.manifest_digest, human_size(i.size)])
                .collect();
            print_table(["REF", "DIGEST", "SIZE"], &rows);
        }
        ImageCommand::Rm { reference, force } => {
            let users = store.remove_with(&reference, force).await?;
            for user in &users {
                eprintln!(
                    "warning: {reference} is still used by {user}: its layers stay until that container is removed, and a restart of it pulls the image again"
                );
            }
            println!("removed {reference}");
        }
        ImageCommand::Import { path } => {
            for image in store.import(&path).await? {
                println!(
                    "{} {} {}",
                    image.reference,
                    image.manifest_digest,
                    human_size(image.size)
                );
            }
        }
    }
    Ok(())
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("   ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Sizes as `crictl images` shows them (decimal units, 4 significant digits).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 1000.0 {
        0
    } else {
        3 - value.max(1.0).log10().floor() as usize
    };
    let s = format!("{value:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[unit])
}

/// Per-blob progress lines on a terminal, redrawn in place.
struct TerminalProgress {
    state: Mutex<ProgressState>,
}

struct ProgressState {
    rows: Vec<(String, String)>,
    drawn: usize,
    last: Option<Instant>,
}

impl TerminalProgress {
    fn new() -> Self {
        TerminalProgress {
            state: Mutex::new(ProgressState {
                rows: Vec::new(),
                drawn: 0,
                last: None,
            }),
        }
    }

    fn update(&self, event: &PullEvent) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (key, text, force) = match event {
            PullEvent::Resolved {
                reference,
                manifest_digest,
                ..
            } => (
                reference.clone(),
                format!("resolved {}", short(manifest_digest)),
                true,
            ),
            PullEvent::BlobPresent { digest, .. } => {
                (digest.clone(), "already present".to_string(), true)
            }
            PullEvent::BlobProgress {
                digest,
                done,
                total,
            } => (
                digest.clone(),
                format!("downloading {} / {}", human_size(*done), human_size(*total)),
                false,
            ),
            PullEvent::BlobFetched { digest, size } => (
                digest.clone(),
                format!("downloaded {}", human_size(*size)),
                true,
            ),
            PullEvent::LayerReused { .. } | PullEvent::LayerUnpacked { .. } => return,
        };
        match st.rows.iter_mut().find(|(k, _)| *k == key) {
            Some(row) => row.1 = text,
            None => st.rows.push((key, text)),
        }
        if force
            || st
                .last
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            st.last = Some(Instant::now());
            let mut out = std::io::stderr().lock();
            if st.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", st.drawn);
            }
            for (key, text) in &st.rows {
                let _ = writeln!(out, "\r\x1b[2K{}: {text}", short(key));
            }
            st.drawn = st.rows.len();
        }
    }
}

fn short(digest: &str) -> &str {
    match digest.strip_prefix("sha256:") {
        Some(hex) => &hex[..hex.len().min(12)],
        None => digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_084_233), "1.084MB");
        assert_eq!(human_size(4_300_000), "4.3MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
    }
}
