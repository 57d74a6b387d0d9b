//! `kubenode get pods|events|services|endpoints|configmaps|secrets`: kubectl's tables, or the
//! objects as JSON/YAML (ConfigMaps and Secrets as tables and names only: the agent never
//! serves their values).

use super::AgentRef;
use crate::print::get::{self as tables, Layout};
use crate::print::{print_list, print_value, Output};

/// Options of `kubenode get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// What to list: pods (po), events (ev), services (svc), endpoints (ep), configmaps (cm),
    /// secrets.
    pub resource: String,
    /// One object's name.
    pub name: Option<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// Label selector (`app=web`, `tier!=db`, `env in (a,b)`, `key`, `!key`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Runs `kubenode get`.
pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let client = args.agent.client();
    let now = crate::print::now();
    let layout = |output: Option<Output>| Layout {
        wide: output == Some(Output::Wide),
        all_namespaces: args.all_namespaces,
    };
    let in_scope =
        |ns: Option<&str>| args.all_namespaces || ns.unwrap_or("default") == args.namespace;
    match args.resource.as_str() {
        "pods" | "pod" | "po" => {
            let selector = args
                .selector
                .as_deref()
                .map(kubenode_kubelet::selector::Selector::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("invalid label selector: {e}"))?;
            let mut items: Vec<_> = client
                .pods()
                .await?
                .into_iter()
                .filter(|p| in_scope(p.metadata.namespace.as_deref()))
                .filter(|p| args.name.is_none() || p.metadata.name == args.name)
                .filter(|p| {
                    selector
                        .as_ref()
                        .is_none_or(|s| s.matches_opt(p.metadata.labels.as_ref()))
                })
                .collect();
            items.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            if let (Some(name), true) = (&args.name, items.is_empty()) {
                anyhow::bail!("pods \"{name}\" not found");
            }
            match args.output {
                Some(o @ (Output::Json | Output::Yaml)) if args.name.is_some() => {
                    print_value(&items[0], o)
                }
                Some(o @ (Output::Json | Output::Yaml)) => print_list(&items, o),
                Some(Output::Name) => {
                    print!("{}", tables::pod_names(&items));
                    Ok(())
                }
                other => {
                    if items.is_empty() {
                        eprintln!("No resources found in {} namespace.", args.namespace);
                        return Ok(());
                    }
                    print!("{}", tables::pods(&items, now, layout(other)));
                    Ok(())
                }
            }
        }
        "events" | "event" | "ev" => {
            let items: Vec<_> = client
                .events()
                .await?
                .into_iter()
                .filter(|e| {
                    in_scope(
                        e.metadata
                            .namespace
                            .as_deref()
                            .or(e.involved_object.namespace.as_deref()),
                    )
                })
                .collect();
            match args.output {
                Some(o @ (Output::Json | Output::Yaml)) => print_list(&items, o),
                _ => {
                    if items.is_empty() {
                        eprintln!("No events found in {} namespace.", args.namespace);
                        return Ok(());
                    }
                    print!("{}", tables::events(&items, now, layout(None)));
                    Ok(())
                }
            }
        }
        "services" | "service" | "svc" => {
            let items: Vec<_> = client
                .services()
                .await?
                .into_iter()
                .filter(|s| in_scope(s.metadata.namespace.as_deref()))
                .filter(|s| args.name.is_none() || s.metadata.name == args.name)
                .collect();
            match args.output {
                Some(o @ (Output::Json | Output::Yaml)) => print_list(&items, o),
                other => {
                    print!("{}", tables::services(&items, now, layout(other)));
                    Ok(())
                }
            }
        }
        "endpoints" | "endpoint" | "ep" => {
            let items: Vec<_> = client
                .endpoints()
                .await?
                .into_iter()
                .filter(|e| in_scope(e.metadata.namespace.as_deref()))
                .filter(|e| args.name.is_none() || e.metadata.name == args.name)
                .collect();
            match args.output {
                Some(o @ (Output::Json | Output::Yaml)) => print_list(&items, o),
                _ => {
                    print!("{}", tables::endpoints(&items, layout(None)));
                    Ok(())
                }
            }
        }
        "configmaps" | "configmap" | "cm" => {
            let items: Vec<_> = client
                .config_maps()
                .await?
                .into_iter()
                .filter(|c| in_scope(c.metadata.namespace.as_deref()))
                .filter(|c| args.name.is_none() || c.metadata.name == args.name)
                .collect();
            if let (Some(name), true) = (&args.name, items.is_empty()) {
                anyhow::bail!("configmaps \"{name}\" not found");
            }
            let names = items.iter().map(|c| c.metadata.name.clone().unwrap_or_default());
            keys_only(args.output, "configmap", names, || {
                tables::config_maps(&items, now, layout(None))
            }, &args.namespace)
        }
        "secrets" | "secret" => {
            let items: Vec<_> = client
                .secrets()
                .await?
                .into_iter()
                .filter(|s| in_scope(s.metadata.namespace.as_deref()))
                .filter(|s| args.name.is_none() || s.metadata.name == args.name)
                .collect();
            if let (Some(name), true) = (&args.name, items.is_empty()) {
                anyhow::bail!("secrets \"{name}\" not found");
            }
            let names = items.iter().map(|s| s.metadata.name.clone().unwrap_or_default());
            keys_only(args.output, "secret", names, || {
                tables::secrets(&items, now, layout(None))
            }, &args.namespace)
        }
        other => anyhow::bail!(
            "the server doesn't have a resource type \"{other}\" (kubenode knows pods, events, services, endpoints, configmaps and secrets)"
        ),
    }
}

/// Prints ConfigMaps or Secrets: the table, or `-o name`; never their values (`-o json|yaml`
/// is refused: the agent does not serve them).
fn keys_only(
    output: Option<Output>,
    kind: &str,
    names: impl Iterator<Item = String>,
    table: impl FnOnce() -> String,
    namespace: &str,
) -> anyhow::Result<()> {
    match output {
        Some(Output::Json | Output::Yaml) => anyhow::bail!(
            "kubenode prints the names and key counts of {kind}s only, never their values (no -o json|yaml)"
        ),
        Some(Output::Name) => {
            for n in names {
                println!("{kind}/{n}");
            }
            Ok(())
        }
        _ => {
            let text = table();
            if text.lines().count() <= 1 {
                eprintln!("No resources found in {namespace} namespace.");
                return Ok(());
            }
            print!("{text}");
            Ok(())
        }
    }
}
