//! The tables of `kubenode get pods|events|services|endpoints|configmaps|secrets` (kubectl's
//! columns; the rows
//! of pods and events come from the kubelet's `status` and `events` modules, which the node
//! API's own views share).

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kubenode_kubelet::events::{event_row, EVENT_COLUMNS};
use kubenode_kubelet::status::{pod_row, POD_COLUMNS, POD_WIDE_COLUMNS};

use super::services::{format_endpoints, service_row};
use super::table;

/// How a table is laid out: `-o wide` columns, and a NAMESPACE column first with `-A`.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The extra columns of `-o wide`.
    pub wide: bool,
    /// Every namespace: a NAMESPACE column first.
    pub all_namespaces: bool,
}

/// Puts the NAMESPACE column in front when every namespace is listed.
fn with_namespace(layout: Layout, header: &mut Vec<&str>, rows: &mut [Vec<String>], ns: &[String]) {
    if layout.all_namespaces {
        header.insert(0, "NAMESPACE");
        for (cells, ns) in rows.iter_mut().zip(ns) {
            cells.insert(0, ns.clone());
        }
    }
}

/// `kubenode get pods`.
pub fn pods(items: &[Pod], now: Timestamp, layout: Layout) -> String {
    let mut header: Vec<&str> = POD_COLUMNS.to_vec();
    if layout.wide {
        header.extend(POD_WIDE_COLUMNS);
    }
    let (mut rows, ns): (Vec<Vec<String>>, Vec<String>) = items
        .iter()
        .map(|p| {
            let r = pod_row(p, now);
            let mut cells = vec![r.name, r.ready, r.status, r.restarts, r.age];
            if layout.wide {
                cells.extend([r.ip, r.node, r.nominated_node, r.readiness_gates]);
            }
            (cells, r.namespace)
        })
        .unzip();
    with_namespace(layout, &mut header, &mut rows, &ns);
    table::render(&header, &rows)
}

/// `kubenode get pods -o name`.
pub fn pod_names(items: &[Pod]) -> String {
    items
        .iter()
        .map(|p| format!("pod/{}\n", p.metadata.name.clone().unwrap_or_default()))
        .collect()
}

/// `kubenode get events` (no wide columns).
pub fn events(items: &[Event], now: Timestamp, layout: Layout) -> String {
    let mut header: Vec<&str> = EVENT_COLUMNS.to_vec();
    let (mut rows, ns): (Vec<Vec<String>>, Vec<String>) = items
        .iter()
        .map(|e| {
            let r = event_row(e, now);
            let cells = vec![r.last_seen, r.type_, r.reason, r.object, r.message];
            (
                cells,
                e.involved_object.namespace.clone().unwrap_or_default(),
            )
        })
        .unzip();
    with_namespace(layout, &mut header, &mut rows, &ns);
    table::render(&header, &rows)
}

/// `kubenode get services`.
pub fn services(items: &[Service], now: Timestamp, layout: Layout) -> String {
    let mut header = vec![
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    if layout.wide {
        header.push("SELECTOR");
    }
    let (mut rows, ns): (Vec<Vec<String>>, Vec<String>) = items
        .iter()
        .map(|s| {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            (service_row(s, now, layout.wide), ns)
        })
        .unzip();
    with_namespace(layout, &mut header, &mut rows, &ns);
    table::render(&header, &rows)
}

fn age(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    now: Timestamp,
) -> String {
    meta.creation_timestamp.as_ref().map_or_else(
        || "<unknown>".into(),
        |t| kubenode_kubelet::status::human_duration(now.as_second() - t.0.as_second()),
    )
}

/// `kubenode get configmaps`: NAME DATA AGE, as kubectl's `printConfigMap` (DATA counts the
/// keys of `data` and `binaryData`; values are never printed).
pub fn config_maps(items: &[ConfigMap], now: Timestamp, layout: Layout) -> String {
    let mut header = vec!["NAME", "DATA", "AGE"];
    let (mut rows, ns): (Vec<Vec<String>>, Vec<String>) = items
        .iter()
        .map(|c| {
            let n = c.data.as_ref().map_or(0, |d| d.len())
                + c.binary_data.as_ref().map_or(0, |d| d.len());
            let cells = vec![
                c.metadata.name.clone().unwrap_or_default(),
                n.to_string(),
                age(&c.metadata, now),
            ];
            (cells, c.metadata.namespace.clone().unwrap_or_default())
        })
        .unzip();
    with_namespace(layout, &mut header, &mut rows, &ns);
    table::render(&header, &rows)
}

/// `kubenode get secrets`: NAME TYPE DATA AGE, as kubectl's `printSecret` (never a value).
pub fn secrets(items: &[Secret], now: Timestamp, layout: Layout) -> String {
    let mut header = vec!["NAME", "TYPE", "DATA", "AGE"];
    let (mut rows, ns): (Vec<Vec<String>>, Vec<String>) = items
        .iter()
        .map(|s| {
            let cells = vec![
                s.metadata.name.clone().unwrap_or_default(),
                s.type_.clone().unwrap_or_default(),
                s.data.as_ref().map_or(0, |d| d.len()).to_string(),
                age(&s.metadata, now),
            ];
            (cells, s.metadata.namespace.clone().unwrap_or_default())
        })
        .unzip();
    with_namespace(layout, &mut header, &mut rows, &ns);
    table::render(&header, &rows)
}

/// `kubenode get endpoints` (no wide columns).
pub fn endpoints(items: &[Endpoints], layout: Layout) -> String {
    let mut header = vec!["NAME", "ENDPOINTS"];
    let (mut rows, ns): (Vec<Vec<String>>, Vec<String>) = items
        .iter()
        .map(|e| {
            let cells = vec![
                e.metadata.name.clone().unwrap_or_default(),
                format_endpoints(e),
            ];
            (cells, e.metadata.namespace.clone().unwrap_or_default())
        })
        .unzip();
    with_namespace(layout, &mut header, &mut rows, &ns);
    table::render(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints_in(ns: &str, name: &str) -> Endpoints {
        let mut e = Endpoints::default();
        e.metadata.namespace = Some(ns.into());
        e.metadata.name = Some(name.into());
        e
    }

    #[test]
    fn every_namespace_puts_the_namespace_column_first() {
        let items = [
            endpoints_in("default", "web"),
            endpoints_in("kube-system", "dns"),
        ];
        let one = Layout {
            wide: false,
            all_namespaces: false,
        };
        assert_eq!(
            endpoints(&items, one),
            "NAME   ENDPOINTS\nweb    <none>\ndns    <none>\n"
        );
        let all = Layout {
            all_namespaces: true,
            ..one
        };
        assert_eq!(
            endpoints(&items, all),
            "NAMESPACE     NAME   ENDPOINTS\ndefault       web    <none>\nkube-system   dns    <none>\n"
        );
    }

    #[test]
    fn pod_names_are_kind_slash_name() {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        assert_eq!(pod_names(&[p.clone(), p]), "pod/web\npod/web\n");
        assert_eq!(pod_names(&[]), "");
    }
}
