//! `kubenode top pods|node`: CPU and memory use from the agent's Summary API, as `kubectl top`
//! prints them.

use super::AgentRef;
use crate::print::top::{node_table, pods_table};

/// Options of `kubenode top`.
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// `pods` (`pod`, `po`) or `node` (`nodes`, `no`).
    pub resource: String,
    /// Only this pod.
    pub name: Option<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// One row per container.
    #[arg(long)]
    pub containers: bool,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Upstream's default hard eviction threshold for memory, which allocatable leaves out.
const EVICTION_MEMORY: u64 = 100 << 20;

/// Runs `kubenode top`.
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let summary = args.agent.client().stats_summary().await?;
    match args.resource.as_str() {
        "pods" | "pod" | "po" => {
            let pods: Vec<_> = summary
                .pods
                .into_iter()
                .filter(|p| args.all_namespaces || p.pod_ref.namespace == args.namespace)
                .filter(|p| args.name.as_ref().is_none_or(|n| &p.pod_ref.name == n))
                .collect();
            if let (Some(name), true) = (&args.name, pods.is_empty()) {
                anyhow::bail!("pods \"{name}\" not found in namespace {}", args.namespace);
            }
            print!(
                "{}",
                pods_table(&pods, args.all_namespaces, args.containers)
            );
        }
        "node" | "nodes" | "no" => {
            // The node's allocatable as its kubelet reports it: every online CPU, memory less
            // the eviction threshold (kubenode reserves nothing else).
            // SAFETY: sysconf reads a constant of the system; it has no memory effects.
            let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as u64;
            let memory = summary
                .node
                .memory
                .and_then(|m| Some(m.available_bytes? + m.working_set_bytes?))
                .unwrap_or(0)
                .saturating_sub(EVICTION_MEMORY);
            print!("{}", node_table(&summary.node, cpus * 1000, memory));
        }
        other => anyhow::bail!("kubenode top shows pods or node, not {other:?}"),
    }
    Ok(())
}
