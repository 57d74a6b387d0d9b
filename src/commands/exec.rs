//! `kubenode exec POD [-c C] -- CMD ARGS...`: runs a command in a container and exits with its code.

use std::io::Write;
use std::time::Duration;

use kubenode_kubelet::api::{ContainerRef, ExecRequest};

use super::AgentRef;

/// Options of `kubenode exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The pod's name.
    pub pod: String,
    /// The container (may be left out when the pod has one).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Kill the command after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Runs `kubenode exec`; the process exits with the command's exit code.
pub async fn run(args: ExecArgs) -> anyhow::Result<()> {
    let request = ExecRequest {
        target: ContainerRef {
            namespace: args.namespace,
            pod: args.pod,
            container: args.container,
        },
        command: args.command,
        timeout: Duration::from_secs(args.timeout),
    };
    let answer = args.agent.client().exec(&request).await?;
    std::io::stdout().write_all(answer.stdout.as_bytes())?;
    std::io::stderr().write_all(answer.stderr.as_bytes())?;
    if answer.exit_code != 0 {
        std::process::exit(answer.exit_code);
    }
    Ok(())
}
