//! `kubenode attach POD [-c C] [-i] [-t]`: a running container's output, live, and with `-i`
//! our input to its standard input, with `-t` through its terminal, as `kubectl attach`.

use std::io::IsTerminal;

use kubenode_kubelet::api::stream::ExecOptions;
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
    /// Pass standard input to the container (which must have `stdin: true`).
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Use the container's terminal: only with `-i`, when standard input is a terminal and the
    /// container has `tty: true` (as kubectl's; otherwise without one).
    #[arg(short = 't', long)]
    pub tty: bool,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Runs `kubenode attach`: the container's standard output to ours, its standard error to
/// ours, from now until the container exits (or, with `-i` and a container without
/// `stdinOnce`, until our input ends).
pub async fn run(args: AttachArgs) -> anyhow::Result<()> {
    let client = args.agent.client();
    let pods = client.pods().await?;
    let pod = super::find_pod(&pods, &args.namespace, &args.pod)
        .ok_or_else(|| anyhow::anyhow!("pod {}/{} not found", args.namespace, args.pod))?;
    let container = pick_container(pod, args.container.as_deref())?;
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| kubenode_kubelet::pod_containers(s).find(|c| c.name == container));
    let has = |f: fn(&k8s_openapi::api::core::v1::Container) -> Option<bool>| {
        spec.and_then(f) == Some(true)
    };
    // kubectl attach's checks, with its words
    let mut tty = args.tty && args.stdin;
    if tty && !has(|c| c.tty) {
        eprintln!("error: Unable to use a TTY - container {container} did not allocate one");
        tty = false;
    } else if tty && !std::io::stdin().is_terminal() {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
        tty = false;
    }
    if args.stdin || tty {
        eprintln!("If you don't see a command prompt, try pressing enter.");
    }
    let opts = ExecOptions {
        target: ContainerRef {
            namespace: args.namespace,
            pod: args.pod,
            container: Some(container),
        },
        command: Vec::new(),
        stdin: args.stdin,
        stdout: true,
        stderr: !tty,
        tty,
    };
    let (input, raw) = super::exec::interactive(opts.stdin, tty).await?;
    let mut output = super::StreamOutput::default();
    let code = client
        .attach_stream(&opts, input, |channel, data| output.write(channel, data))
        .await;
    drop(raw);
    output.finish()?;
    match code? {
        0 => Ok(()),
        code => anyhow::bail!("attach ended with exit code {code}"),
    }
}
