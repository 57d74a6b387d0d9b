//! `kubenode top pods|node`: kubectl top's tables from the Summary API (CPU as millicores,
//! `5m`; memory as MiB, `12Mi`; a node's percentages of its allocatable).

use kubenode_kubelet::stats::types::{CpuStats, MemoryStats, NodeStats, PodStats};

use super::table::render;

/// Millicores, as kubectl prints a CPU quantity's `MilliValue()`.
pub fn cpu(nano_cores: u64) -> String {
    format!("{}m", nano_cores / 1_000_000)
}

/// MiB, as kubectl prints a memory quantity (`Value() / 1Mi`).
pub fn memory(bytes: u64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

fn usage(cpu: &Option<CpuStats>, mem: &Option<MemoryStats>) -> Option<(u64, u64)> {
    Some((
        cpu.as_ref()?.usage_nano_cores?,
        mem.as_ref()?.working_set_bytes?,
    ))
}

/// A pod's usage as metrics-server reports it: the sum of its containers' (`None` until every
/// container has a CPU rate).
pub fn pod_usage(p: &PodStats) -> Option<(u64, u64)> {
    p.containers.iter().try_fold((0, 0), |(c, m), ctr| {
        let (cc, cm) = usage(&ctr.cpu, &ctr.memory)?;
        Some((c + cc, m + cm))
    })
}

/// `kubectl top pod` (`all_namespaces`: a NAMESPACE column; `containers`: one row per
/// container). Pods without a CPU rate yet are left out, as metrics-server leaves them out.
pub fn pods_table(pods: &[PodStats], all_namespaces: bool, containers: bool) -> String {
    let mut pods: Vec<&PodStats> = pods.iter().collect();
    pods.sort_by(|a, b| {
        (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name))
    });
    let mut rows = Vec::new();
    for p in pods {
        let Some((c, m)) = pod_usage(p) else {
            continue;
        };
        let ns = all_namespaces.then(|| p.pod_ref.namespace.clone());
        if containers {
            for ctr in &p.containers {
                let (c, m) = usage(&ctr.cpu, &ctr.memory).unwrap_or_default();
                let mut row: Vec<String> = ns.iter().cloned().collect();
                row.extend([p.pod_ref.name.clone(), ctr.name.clone(), cpu(c), memory(m)]);
                rows.push(row);
            }
        } else {
            let mut row: Vec<String> = ns.iter().cloned().collect();
            row.extend([p.pod_ref.name.clone(), cpu(c), memory(m)]);
            rows.push(row);
        }
    }
    let mut header = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
    }
    if containers {
        header.extend(["POD", "NAME"]);
    } else {
        header.push("NAME");
    }
    header.extend(["CPU(cores)", "MEMORY(bytes)"]);
    render(&header, &rows)
}

/// `kubectl top node`: usage and its share of the node's allocatable CPU (millicores) and
/// memory (bytes).
pub fn node_table(node: &NodeStats, allocatable_milli_cpu: u64, allocatable_memory: u64) -> String {
    let header = ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"];
    let Some((c, m)) = usage(&node.cpu, &node.memory) else {
        return render(&header, &[]);
    };
    let pct = |used: u64, of: u64| match of {
        0 => "<unknown>".to_string(),
        of => format!("{}%", used.saturating_mul(100) / of),
    };
    let milli = c / 1_000_000;
    let row = vec![
        node.node_name.clone(),
        cpu(c),
        pct(milli, allocatable_milli_cpu),
        memory(m),
        pct(m, allocatable_memory),
    ];
    render(&header, &[row])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubenode_kubelet::stats::types::{ContainerStats, PodReference};

    fn stats(nano: u64, ws: u64) -> (Option<CpuStats>, Option<MemoryStats>) {
        let time = jiff::Timestamp::UNIX_EPOCH;
        (
            Some(CpuStats {
                time,
                usage_nano_cores: Some(nano),
                usage_core_nano_seconds: Some(1),
            }),
            Some(MemoryStats {
                time,
                available_bytes: None,
                usage_bytes: None,
                working_set_bytes: Some(ws),
                rss_bytes: None,
                page_faults: None,
                major_page_faults: None,
            }),
        )
    }

    fn pod(name: &str, ctrs: &[(&str, u64, u64)]) -> PodStats {
        PodStats {
            pod_ref: PodReference {
                name: name.into(),
                namespace: "default".into(),
                uid: name.into(),
            },
            containers: ctrs
                .iter()
                .map(|(n, c, m)| {
                    let (cpu, memory) = stats(*c, *m);
                    ContainerStats {
                        name: n.to_string(),
                        cpu,
                        memory,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pods_like_kubectl_top() {
        let pods = vec![
            pod(
                "web",
                &[("a", 3_000_000, 10 << 20), ("b", 2_500_000, 2 << 20)],
            ),
            pod("db", &[("c", 999_999, 1 << 19)]),
        ];
        assert_eq!(
            pods_table(&pods, false, false),
            "NAME   CPU(cores)   MEMORY(bytes)\ndb     0m           0Mi\nweb    5m           12Mi\n"
        );
        let out = pods_table(&pods, true, true);
        assert!(
            out.starts_with("NAMESPACE   POD   NAME   CPU(cores)   MEMORY(bytes)\n"),
            "{out}"
        );
        assert!(
            out.contains("default     web   b      2m           2Mi\n"),
            "{out}"
        );
        // A pod whose containers have no rate yet is not listed.
        let mut fresh = pod("new", &[("x", 1, 1)]);
        fresh.containers[0].cpu.as_mut().unwrap().usage_nano_cores = None;
        assert_eq!(
            pods_table(&[fresh], false, false),
            "NAME   CPU(cores)   MEMORY(bytes)\n"
        );
    }

    #[test]
    fn node_like_kubectl_top() {
        let (cpu, memory) = stats(250_000_000, 512 << 20);
        let node = NodeStats {
            node_name: "n1".into(),
            cpu,
            memory,
            ..Default::default()
        };
        assert_eq!(
            node_table(&node, 2000, 2048 << 20),
            "NAME   CPU(cores)   CPU(%)   MEMORY(bytes)   MEMORY(%)\nn1     250m         12%      512Mi           25%\n"
        );
    }
}
