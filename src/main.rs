//! The `kubenode` binary: parse the command line, start logging, dispatch to one subcommand.

mod commands;
mod healthz;
mod logging;
mod memory;
mod notify;
mod preflight;
mod print;
mod proxy_api;
mod wiring;

use std::ffi::OsString;
use std::path::Path;

use clap::{Parser, Subcommand};

/// kubenode: the kubelet and kube-proxy of one Kubernetes node, in one binary.
#[derive(Parser, Debug)]
#[command(name = "kubenode", version = commands::version::VERSION_LINE, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node agent: kubelet and proxy in one process (the normal way to run a node).
    Agent(commands::agent::AgentArgs),
    /// Run the kubelet role alone.
    Kubelet(commands::agent::AgentArgs),
    /// Run the proxy role alone (Services through iptables NAT).
    Proxy(commands::proxy::ProxyArgs),
    /// List objects known to the local agent (pods, events, services, endpoints).
    Get(commands::get::GetArgs),
    /// Show one object in detail.
    Describe(commands::describe::DescribeArgs),
    /// Print a container's logs.
    Logs(commands::logs::LogsArgs),
    /// Show CPU and memory use of pods or of the node, as `kubectl top`.
    Top(commands::top::TopArgs),
    /// Run a command in a running container (`-i` stdin, `-t` a terminal), as `kubectl exec`.
    Exec(commands::exec::ExecArgs),
    /// Forward local ports to a pod, as `kubectl port-forward`.
    PortForward(commands::port_forward::PortForwardArgs),
    /// Stream a running container's output until it exits.
    Attach(commands::attach::AttachArgs),
    /// Manage the local image store (pull, ls, rm, import).
    Image(commands::image::ImageArgs),
    /// Print the version and the git commit.
    Version,
    /// Run kubenode's own CNI plugin (the same as invoking the binary as `kubenode-bridge`).
    CniPlugin,
    /// The per-container monitor (started by the agent, not by people).
    #[command(hide = true)]
    Shim,
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Entry points that must not start a tokio runtime or write logs to stdout: the CNI
    // plugin (its stdout is the CNI result) and the shim (a tiny per-container process).
    let argv0 = args.first().map(Path::new).and_then(Path::file_name);
    if argv0.is_some_and(|n| n == "kubenode-bridge") {
        std::process::exit(commands::cni_plugin::run());
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some("cni-plugin") => std::process::exit(commands::cni_plugin::run()),
        Some("shim") => std::process::exit(commands::shim::run(args)),
        _ => {}
    }

    let cli = Cli::parse();
    // Still single-threaded: children must not inherit systemd's notification socket.
    notify::take_socket_from_env();
    if let Err(err) = logging::init() {
        eprintln!("kubenode: {err:#}");
        std::process::exit(1);
    }
    if let Err(err) = run(cli) {
        eprintln!("kubenode: {err:#}");
        std::process::exit(1);
    }
}

/// Upper bound of tokio's blocking pool: runtime calls (runc, mounts) run there, one per pod
/// worker at a time; more threads only cost memory.
const MAX_BLOCKING_THREADS: usize = 16;

fn run(cli: Cli) -> anyhow::Result<()> {
    memory::limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kubenode")
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()?;
    if matches!(
        cli.command,
        Command::Agent(_) | Command::Kubelet(_) | Command::Proxy(_)
    ) {
        rt.spawn(memory::trim_periodically());
    }
    rt.block_on(async move {
        match cli.command {
            Command::Agent(args) => commands::agent::run(args, commands::agent::Roles::All).await,
            Command::Kubelet(args) => {
                commands::agent::run(args, commands::agent::Roles::Kubelet).await
            }
            Command::Proxy(args) => commands::proxy::run(args).await,
            Command::Get(args) => commands::get::run(args).await,
            Command::Describe(args) => commands::describe::run(args).await,
            Command::Logs(args) => commands::logs::run(args).await,
            Command::Exec(args) => commands::exec::run(args).await,
            Command::Attach(args) => commands::attach::run(args).await,
            Command::PortForward(args) => commands::port_forward::run(args).await,
            Command::Top(args) => commands::top::run(args).await,
            Command::Image(args) => commands::image::run(args).await,
            Command::Version => commands::version::run(),
            // Dispatched in main() before the runtime starts; unreachable through clap.
            Command::CniPlugin | Command::Shim => {
                unreachable!("dispatched before argument parsing")
            }
        }
    })
}
