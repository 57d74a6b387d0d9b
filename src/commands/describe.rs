//! `kubenode describe pod NAME`.

use super::AgentRef;
use crate::print::describe::describe_pod;

/// Options of `kubenode describe`.
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// The kind: pod (po).
    pub resource: String,
    /// The pod's name.
    pub name: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Runs `kubenode describe`.
pub async fn run(args: DescribeArgs) -> anyhow::Result<()> {
    if !matches!(args.resource.as_str(), "pod" | "pods" | "po") {
        anyhow::bail!("kubenode describes pods only, not {:?}", args.resource);
    }
    let client = args.agent.client();
    let pods = client.pods().await?;
    let pod = super::get_pod(&pods, &args.namespace, &args.name)?;
    let events: Vec<_> = client
        .events()
        .await?
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(&args.name)
                && e.involved_object.namespace.as_deref().unwrap_or("default") == args.namespace
        })
        .collect();
    print!("{}", describe_pod(pod, &events, crate::print::now()));
    Ok(())
}
