//! kubectl's output, in one place: the tables of `kubenode get` and `kubenode image ls`, the
//! layout of `kubenode describe`, and objects as JSON, YAML or `kind/name`.

pub mod describe;
pub mod get;
pub mod images;
pub mod services;
pub mod table;
pub mod top;

/// The current time as a Kubernetes timestamp.
pub fn now() -> k8s_openapi::jiff::Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(0);
    k8s_openapi::jiff::Timestamp::new(secs, 0).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// `-o` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The table with extra columns.
    Wide,
    /// The objects as JSON.
    Json,
    /// The objects as YAML.
    Yaml,
    /// `kind/name` per line.
    Name,
}

/// Prints objects as a `v1` List in JSON or YAML.
pub fn print_list<T: serde::Serialize>(items: &[T], output: Output) -> anyhow::Result<()> {
    let list =
        serde_json::json!({ "apiVersion": "v1", "kind": "List", "metadata": {}, "items": items });
    print_value(&list, output)
}

/// Prints one value in JSON (indented, as kubectl does) or YAML.
pub fn print_value<T: serde::Serialize>(value: &T, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}
