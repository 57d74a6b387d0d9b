//! `kubenode attach POD [-c C]`: a running container's output, live, until it exits (as
//! `kubectl attach`; kubenode's containers have no stdin and no terminal, so output only).

use kubenode_kubelet::api::{pick_container, ContainerRef};

use super::AgentRef;

/// Options of `kubenode attach`.
#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// The pod's name.
    pub pod: String,
    /// The container (may be left out when the pod has one).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Runs `kubenode attach`: the container's standard output to ours, its standard error to
/// ours, from now until the container exits.
pub async fn run(args: AttachArgs) -> anyhow::Result<()> {
    let client = args.agent.client();
    let pods = client.pods().await?;
    let pod = super::find_pod(&pods, &args.namespace, &args.pod)
        .ok_or_else(|| anyhow::anyhow!("pod {}/{} not found", args.namespace, args.pod))?;
    let container = pick_container(pod, args.container.as_deref())?;
    let target = ContainerRef {
        namespace: args.namespace,
        pod: args.pod,
        container: Some(container),
    };
    let mut output = super::StreamOutput::default();
    client
        .attach(&target, |channel, data| output.write(channel, data))
        .await?;
    Ok(output.finish()?)
}
