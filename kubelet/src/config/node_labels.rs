//! The node's labels, as upstream's kubelet sets them on its Node (`initialNode` in
//! `pkg/kubelet/kubelet_node_status.go`): `kubernetes.io/hostname`, `kubernetes.io/os` and
//! `kubernetes.io/arch` (and their `beta.` forms), then the `--node-labels` flag's, which win.
//! The flag is parsed as upstream's `MapStringString` (`k=v` pairs separated by commas,
//! repeatable) and checked as upstream's `ValidateKubeletFlags`: keys are qualified names,
//! values label values, and a key in the `kubernetes.io` or `k8s.io` namespaces must be one a
//! kubelet may set on its own Node (`k8s.io/kubelet/pkg/apis/well_known_labels.go`).

use crate::validation::names::{label_value_errors, qualified_name_errors};
use std::collections::{BTreeMap, BTreeSet};

/// `kubernetes.io/hostname`.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// `kubernetes.io/os`.
pub const LABEL_OS: &str = "kubernetes.io/os";
/// `kubernetes.io/arch`.
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// `beta.kubernetes.io/os`, still set by upstream's kubelet.
pub const LABEL_OS_BETA: &str = "beta.kubernetes.io/os";
/// `beta.kubernetes.io/arch`, still set by upstream's kubelet.
pub const LABEL_ARCH_BETA: &str = "beta.kubernetes.io/arch";

/// The `kubernetes.io` labels `--node-labels` may set (upstream's `kubeletLabels`, sorted).
const KUBELET_LABELS: &[&str] = &[
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// The label namespaces (and their subdomains) `--node-labels` may use (upstream's
/// `kubeletLabelNamespaces`).
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// This machine's architecture under Go's name (`GOARCH`), which Kubernetes labels use.
pub fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "loongarch64" => "loong64",
        // s390x, riscv64, mips, mips64 are the same in both.
        other => other,
    }
}

/// The labels upstream's kubelet gives its node, `hostname` being the node's (lower-case) name.
pub fn default_labels(hostname: &str) -> BTreeMap<String, String> {
    [
        (LABEL_HOSTNAME, hostname),
        (LABEL_OS, "linux"),
        (LABEL_ARCH, goarch()),
        (LABEL_OS_BETA, "linux"),
        (LABEL_ARCH_BETA, goarch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The values of `--node-labels` (each `k=v[,k=v...]`, the flag repeatable) as a map, as
/// upstream's `MapStringString`: pairs trimmed, empty ones skipped, a later key wins.
pub fn parse_node_labels(values: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for value in values {
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: malformed pair, expect string=string"))?;
            map.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    Ok(map)
}

/// The namespace (prefix) of a label key, "" when it has none.
fn namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_domain(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// Upstream's `IsKubeletLabel`.
fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|d| in_domain(namespace(key), d))
}

/// Checks `--node-labels` as upstream's `ValidateKubeletFlags`, with its messages.
pub fn validate_node_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    let unknown: BTreeSet<&str> = labels
        .keys()
        .map(String::as_str)
        .filter(|k| {
            let ns = namespace(k);
            (in_domain(ns, "kubernetes.io") || in_domain(ns, "k8s.io")) && !is_kubelet_label(k)
        })
        .collect();
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown.into_iter().collect();
        return Err(format!(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [{}]\n\
             --node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix \
             ({}) or be in the specifically allowed set ({})",
            list.join(" "),
            KUBELET_LABEL_NAMESPACES.join(", "),
            KUBELET_LABELS.join(", ")
        ));
    }
    let mut invalid: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (k, v) in labels {
        let errs = qualified_name_errors(k);
        if !errs.is_empty() {
            invalid.entry(k).or_default().extend(errs);
        }
        let errs = label_value_errors(v);
        if !errs.is_empty() {
            invalid.entry(v).or_default().extend(errs);
        }
    }
    if invalid.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = invalid
        .into_iter()
        .map(|(what, errs)| format!("'{what}' - {}", errs.join(", ")))
        .collect();
    Err(format!("invalid node labels: {}", parts.join("; ")))
}

/// The node's labels: [`default_labels`], then `extra` (from `--node-labels`) over them.
pub fn node_labels(hostname: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = default_labels(hostname);
    for (k, v) in extra {
        if let Some(old) = labels.get(k).filter(|old| *old != v) {
            tracing::info!(label = %k, value = %v, default = %old, "the node label will overwrite default setting");
        }
        labels.insert(k.clone(), v.clone());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_label_set_of_upstreams_initial_node() {
        let arch = goarch();
        assert!(
            ["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "loong64"]
                .contains(&arch),
            "{arch} is not a GOARCH name"
        );
        if cfg!(target_arch = "x86_64") {
            assert_eq!(arch, "amd64");
        }
        assert_eq!(
            node_labels("node-a", &map(&[("disktype", "ssd")])),
            map(&[
                ("beta.kubernetes.io/arch", arch),
                ("beta.kubernetes.io/os", "linux"),
                ("disktype", "ssd"),
                ("kubernetes.io/arch", arch),
                ("kubernetes.io/hostname", "node-a"),
                ("kubernetes.io/os", "linux"),
            ])
        );
        // --node-labels wins over the defaults, as upstream.
        assert_eq!(
            node_labels("node-a", &map(&[("kubernetes.io/hostname", "other")]))
                ["kubernetes.io/hostname"],
            "other"
        );
    }

    #[derive(Debug)]
    struct Host;

    impl crate::config::Host for Host {
        fn hostname(&self) -> std::io::Result<String> {
            Ok("Node-A".into())
        }
        fn interfaces(&self) -> std::io::Result<Vec<crate::config::InterfaceInfo>> {
            Ok(vec![])
        }
        fn default_route_interface(&self) -> std::io::Result<Option<String>> {
            Ok(None)
        }
    }

    /// `--node-labels` reaches the configuration's label set; a bad one stops the agent with
    /// upstream's message.
    #[test]
    fn node_labels_flag_in_the_configuration() {
        use crate::config::{Config, Overrides};
        let flags = |labels: &[&str]| Overrides {
            node_ip: Some("192.0.2.10".parse().unwrap()),
            node_labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let c = Config::resolve_with(None, &flags(&[]), &Host).unwrap();
        assert_eq!(c.node_labels, default_labels("node-a"));
        let c = Config::resolve_with(None, &flags(&["disktype=ssd,rack=r1"]), &Host).unwrap();
        assert_eq!(c.node_labels["disktype"], "ssd");
        assert_eq!(c.node_labels["rack"], "r1");
        assert_eq!(c.node_labels["kubernetes.io/hostname"], "node-a");
        let e = Config::resolve_with(None, &flags(&["kubernetes.io/role=x"]), &Host)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--node-labels: unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [kubernetes.io/role]"),
            "{e}"
        );
    }

    #[test]
    fn node_labels_flag_parses_as_upstreams_map_string_string() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_node_labels(&v(&["a=1, b = 2,,", "c=", "a=3"])).unwrap(),
            map(&[("a", "3"), ("b", "2"), ("c", "")])
        );
        assert_eq!(parse_node_labels(&v(&[])).unwrap(), map(&[]));
        assert_eq!(
            parse_node_labels(&v(&["a=1,b"])).unwrap_err(),
            "\"b\": malformed pair, expect string=string"
        );
    }

    #[test]
    fn node_labels_validated_as_upstream() {
        for ok in [
            map(&[("disktype", "ssd"), ("example.com/rack", "r1")]),
            map(&[("node.kubernetes.io/instance-type", "m5")]),
            map(&[("role.node.kubernetes.io/worker", "")]),
            map(&[
                ("kubelet.kubernetes.io/x", "y"),
                ("topology.kubernetes.io/zone", "a"),
            ]),
            map(&[
                ("kubernetes.io/hostname", "h"),
                ("beta.kubernetes.io/arch", "amd64"),
            ]),
            map(&[("notkubernetes.io/x", "y")]),
        ] {
            assert_eq!(validate_node_labels(&ok), Ok(()), "{ok:?}");
        }
        let allowed = "--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix (kubelet.kubernetes.io, node.kubernetes.io) or be in the specifically allowed set (beta.kubernetes.io/arch, beta.kubernetes.io/instance-type, beta.kubernetes.io/os, failure-domain.beta.kubernetes.io/region, failure-domain.beta.kubernetes.io/zone, kubernetes.io/arch, kubernetes.io/hostname, kubernetes.io/os, node.kubernetes.io/instance-type, topology.kubernetes.io/region, topology.kubernetes.io/zone)";
        assert_eq!(
            validate_node_labels(&map(&[
                ("node-role.kubernetes.io/master", ""),
                ("k8s.io/x", "y"),
                ("a.k8s.io/x", "y"),
                ("disktype", "ssd"),
            ])),
            Err(format!("unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [a.k8s.io/x k8s.io/x node-role.kubernetes.io/master]\n{allowed}"))
        );
        assert_eq!(
            validate_node_labels(&map(&[("bad key", "ok"), ("k", "bad value!")])),
            Err("invalid node labels: 'bad key' - name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'); 'bad value!' - a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
        );
    }
}
