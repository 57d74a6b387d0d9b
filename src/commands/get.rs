//! `kubenode get pods|events`: kubectl's tables, or the objects as JSON/YAML.

use kubenode_kubelet::events::{event_row, EVENT_COLUMNS};
use kubenode_kubelet::status::{pod_row, POD_COLUMNS, POD_WIDE_COLUMNS};

use crate::cli::{print_list, table, AgentRef, Output};

/// Options of `kubenode get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// What to list: pods (po), events (ev).
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
    let now = crate::cli::now();
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
                    crate::cli::print_value(&items[0], o)
                }
                Some(o @ (Output::Json | Output::Yaml)) => print_list(&items, o),
                Some(Output::Name) => {
                    for p in &items {
                        println!("pod/{}", p.metadata.name.clone().unwrap_or_default());
                    }
                    Ok(())
                }
                other => {
                    if items.is_empty() {
                        eprintln!("No resources found in {} namespace.", args.namespace);
                        return Ok(());
                    }
                    let wide = other == Some(Output::Wide);
                    let mut header: Vec<&str> = POD_COLUMNS.to_vec();
                    if wide {
                        header.extend(POD_WIDE_COLUMNS);
                    }
                    if args.all_namespaces {
                        header.insert(0, "NAMESPACE");
                    }
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|p| {
                            let r = pod_row(p, now);
                            let mut cells = vec![r.name, r.ready, r.status, r.restarts, r.age];
                            if wide {
                                cells.extend([r.ip, r.node, r.nominated_node, r.readiness_gates]);
                            }
                            if args.all_namespaces {
                                cells.insert(0, r.namespace);
                            }
                            cells
                        })
                        .collect();
                    print!("{}", table::render(&header, &rows));
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
                    let mut header: Vec<&str> = EVENT_COLUMNS.to_vec();
                    if args.all_namespaces {
                        header.insert(0, "NAMESPACE");
                    }
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|e| {
                            let r = event_row(e, now);
                            let mut cells =
                                vec![r.last_seen, r.type_, r.reason, r.object, r.message];
                            if args.all_namespaces {
                                cells.insert(
                                    0,
                                    e.involved_object.namespace.clone().unwrap_or_default(),
                                );
                            }
                            cells
                        })
                        .collect();
                    print!("{}", table::render(&header, &rows));
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
                    let wide = other == Some(Output::Wide);
                    let mut header = vec!["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"];
                    if wide {
                        header.push("SELECTOR");
                    }
                    if args.all_namespaces {
                        header.insert(0, "NAMESPACE");
                    }
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|s| {
                            let mut cells = crate::cli::services::service_row(s, now, wide);
                            if args.all_namespaces {
                                cells.insert(0, s.metadata.namespace.clone().unwrap_or_default());
                            }
                            cells
                        })
                        .collect();
                    print!("{}", table::render(&header, &rows));
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
                    let mut header = vec!["NAME", "ENDPOINTS"];
                    if args.all_namespaces {
                        header.insert(0, "NAMESPACE");
                    }
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|e| {
                            let mut cells = vec![
                                e.metadata.name.clone().unwrap_or_default(),
                                crate::cli::services::format_endpoints(e),
                            ];
                            if args.all_namespaces {
                                cells.insert(0, e.metadata.namespace.clone().unwrap_or_default());
                            }
                            cells
                        })
                        .collect();
                    print!("{}", table::render(&header, &rows));
                    Ok(())
                }
            }
        }
        other => anyhow::bail!(
            "the server doesn't have a resource type \"{other}\" (kubenode knows pods, events, services and endpoints)"
        ),
    }
}
