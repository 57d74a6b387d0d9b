//! `GET /metrics/resource`: upstream's resource metrics (the `[STABLE]` set metrics-server
//! scrapes) in the Prometheus text format 0.0.4, from a [`Summary`], each sample with its
//! sample's time in milliseconds, metrics in name order, labels `container`, `namespace`, `pod`.

use std::fmt::Write;

use jiff::Timestamp;

use super::types::{CpuStats, MemoryStats, Summary};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64, Timestamp)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn cpu_seconds(c: &Option<CpuStats>) -> Option<(f64, Timestamp)> {
    let c = c.as_ref()?;
    Some((c.usage_core_nano_seconds? as f64 / 1e9, c.time))
}

fn working_set(m: &Option<MemoryStats>) -> Option<(f64, Timestamp)> {
    let m = m.as_ref()?;
    Some((m.working_set_bytes? as f64, m.time))
}

/// The resource metrics of `summary`; `scrape_error` is 1 when `error` (the summary could not
/// be made and `summary` is empty).
pub fn render(summary: &Summary, error: bool) -> String {
    let mut ctr_cpu = Family::new(
        "container_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    );
    let mut ctr_mem = Family::new(
        "container_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    );
    let mut ctr_start = Family::new(
        "container_start_time_seconds",
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    );
    let mut node_cpu = Family::new(
        "node_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    );
    let mut node_mem = Family::new(
        "node_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the node in bytes",
    );
    let mut pod_cpu = Family::new(
        "pod_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    );
    let mut pod_mem = Family::new(
        "pod_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
    );
    if let Some((v, t)) = cpu_seconds(&summary.node.cpu) {
        node_cpu.samples.push((String::new(), v, t));
    }
    if let Some((v, t)) = working_set(&summary.node.memory) {
        node_mem.samples.push((String::new(), v, t));
    }
    for p in &summary.pods {
        let (ns, pod) = (p.pod_ref.namespace.as_str(), p.pod_ref.name.as_str());
        let pl = labels(&[("namespace", ns), ("pod", pod)]);
        if let Some((v, t)) = cpu_seconds(&p.cpu) {
            pod_cpu.samples.push((pl.clone(), v, t));
        }
        if let Some((v, t)) = working_set(&p.memory) {
            pod_mem.samples.push((pl, v, t));
        }
        for c in &p.containers {
            let cl = labels(&[("container", &c.name), ("namespace", ns), ("pod", pod)]);
            if let Some((v, t)) = cpu_seconds(&c.cpu) {
                ctr_cpu.samples.push((cl.clone(), v, t));
            }
            if let Some((v, t)) = working_set(&c.memory) {
                ctr_mem.samples.push((cl.clone(), v, t));
                let start = c.start_time.as_nanosecond() as f64 / 1e9;
                ctr_start.samples.push((cl, start, t));
            }
        }
    }
    let mut out = String::new();
    for f in [
        ctr_cpu, ctr_mem, ctr_start, node_cpu, node_mem, pod_cpu, pod_mem,
    ] {
        if f.samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (l, v, t) in f.samples {
            let _ = writeln!(out, "{}{l} {v} {}", f.name, t.as_millisecond());
        }
    }
    out.push_str(
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n\
         # TYPE scrape_error gauge\n",
    );
    let _ = writeln!(out, "scrape_error {}", u8::from(error));
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_families_in_name_order;
    use super::super::types::*;
    use super::*;

    /// Parses the text format back: (name, labels, value, timestamp) per sample, checking that
    /// every sample's family was declared by `# TYPE` before it.
    type Sample = (String, Vec<(String, String)>, f64, Option<i64>);

    pub(crate) fn parse(text: &str) -> Vec<Sample> {
        let mut typed = std::collections::HashSet::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, rest) = match line.find('}') {
                Some(i) => (&line[..=i], line[i + 1..].trim()),
                None => line.split_once(' ').unwrap(),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => {
                    let l = l.trim_end_matches('}');
                    let pairs = l
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").unwrap();
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), pairs)
                }
                None => (series.to_string(), Vec::new()),
            };
            assert!(typed.contains(&name), "{name} has no # TYPE before it");
            let mut it = rest.split_whitespace();
            let value: f64 = it.next().unwrap().parse().unwrap();
            let ts = it.next().map(|t| t.parse().unwrap());
            out.push((name, labels, value, ts));
        }
        out
    }

    #[test]
    fn renders_and_parses_back() {
        let t: Timestamp = "2026-12-05T08:00:00.5Z".parse().unwrap();
        let cpu = Some(CpuStats {
            time: t,
            usage_nano_cores: Some(5),
            usage_core_nano_seconds: Some(2_500_000_000),
        });
        let mem = Some(MemoryStats {
            time: t,
            available_bytes: None,
            usage_bytes: Some(10),
            working_set_bytes: Some(4096),
            rss_bytes: None,
            page_faults: None,
            major_page_faults: None,
        });
        let summary = Summary {
            node: NodeStats {
                cpu,
                memory: mem,
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "u".into(),
                },
                cpu,
                memory: mem,
                containers: vec![ContainerStats {
                    name: "app".into(),
                    start_time: "2026-12-05T07:00:00Z".parse().unwrap(),
                    cpu,
                    memory: mem,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let text = render(&summary, false);
        let samples = parse(&text);
        let get = |name: &str| samples.iter().find(|s| s.0 == name).unwrap();
        let c = get("container_cpu_usage_seconds_total");
        assert_eq!(c.2, 2.5);
        assert_eq!(c.3, Some(t.as_millisecond()));
        assert_eq!(
            c.1,
            vec![
                ("container".into(), "app".into()),
                ("namespace".into(), "default".into()),
                ("pod".into(), "web".into())
            ]
        );
        assert_eq!(get("container_memory_working_set_bytes").2, 4096.0);
        assert_eq!(get("container_start_time_seconds").2, 1_796_454_000.0);
        assert_eq!(get("node_cpu_usage_seconds_total").2, 2.5);
        assert_eq!(get("pod_memory_working_set_bytes").1.len(), 2);
        assert_eq!(get("scrape_error").2, 0.0);
        assert_eq!(get("scrape_error").3, None);
        // Families in name order, as upstream's registry gathers them.
        assert_families_in_name_order(&text);
        assert!(render(&Summary::default(), true).ends_with("scrape_error 1\n"));
    }
}
