//! `kubenode logs POD [-c C] [-f] [-p] [--tail N] [--timestamps]`.

use std::io::Write;

use kubenode_kubelet::api::ContainerRef;

use super::AgentRef;

/// Options of `kubenode logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The pod's name.
    pub pod: String,
    /// The container (may be left out when the pod has one).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Keep streaming new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// The previous instance of the container.
    #[arg(short, long)]
    pub previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    pub timestamps: bool,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Runs `kubenode logs`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let target = ContainerRef {
        namespace: args.namespace,
        pod: args.pod,
        container: args.container,
    };
    let mut query = Vec::new();
    if args.follow {
        query.push("follow=true".to_string());
    }
    if args.previous {
        query.push("previous=true".to_string());
    }
    if args.timestamps {
        query.push("timestamps=true".to_string());
    }
    if args.tail >= 0 {
        query.push(format!("tailLines={}", args.tail));
    }
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    args.agent
        .client()
        .logs(&target, &query.join("&"), |chunk| {
            if write_err.is_none() {
                if let Err(e) = stdout.write_all(chunk).and_then(|()| stdout.flush()) {
                    write_err = Some(e);
                }
            }
        })
        .await?;
    match write_err {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
