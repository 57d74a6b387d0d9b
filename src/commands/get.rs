//! `kubenode get pods|events`: kubectl's tables, or the objects as JSON/YAML.

use crate::cli::{pods, print_list, table, AgentRef, Output};

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
                    let rows: Vec<_> = items
                        .iter()
                        .map(|p| pods::row(p, now, args.all_namespaces, wide))
                        .collect();
                    print!(
                        "{}",
                        table::render(&pods::header(args.all_namespaces, wide), &rows)
                    );
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
                    let mut header = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
                    if args.all_namespaces {
                        header.insert(0, "NAMESPACE");
                    }
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|e| {
                            let last = e
                                .last_timestamp
                                .as_ref()
                                .or(e.first_timestamp.as_ref())
                                .map(|t| &t.0);
                            let obj = &e.involved_object;
                            let mut r = vec![
                                crate::cli::age::age(last, now),
                                e.type_.clone().unwrap_or_else(|| "Normal".into()),
                                e.reason.clone().unwrap_or_default(),
                                format!(
                                    "{}/{}",
                                    obj.kind.clone().unwrap_or_default().to_lowercase(),
                                    obj.name.clone().unwrap_or_default()
                                ),
                                e.message.clone().unwrap_or_default(),
                            ];
                            if args.all_namespaces {
                                r.insert(0, obj.namespace.clone().unwrap_or_default());
                            }
                            r
                        })
                        .collect();
                    print!("{}", table::render(&header, &rows));
                    Ok(())
                }
            }
        }
        other => anyhow::bail!(
            "the server doesn't have a resource type \"{other}\" (kubenode knows pods and events)"
        ),
    }
}
