//! `GET /metrics/cadvisor`: the container metrics the kubelet serves from its embedded cAdvisor
//! (google/cadvisor `metrics/prometheus.go`, labelled by the kubelet's
//! `containerPrometheusLabelsFunc`), made from the same [`Collection`] as `/stats/summary` and
//! `/metrics/resource` — no second collector.
//!
//! What cAdvisor does and this does alike:
//! - every series has the base labels `container`, `id` (the cgroup path), `image`, `name`
//!   (the runtime's container ID), `namespace`, `pod`, empty when unknown (Prometheus wants one
//!   label set per family); the kubelet's labels function adds no `container_label_*` or
//!   `container_env_*` labels (cAdvisor's default function would);
//! - one "container" per cgroup: the root (`id="/"`, every other label empty), each pod cgroup
//!   (`pod` and `namespace` set, `container`, `image`, `name` empty: what the kubelet's
//!   `GetPodByCgroupfs` gives), each running container, and the pod's sandbox (pause)
//!   container, which alone carries the pod's network counters, as cAdvisor's containerd
//!   handler reports them (`io.cri-containerd.kind=sandbox`; containerd's sandbox has no
//!   `io.kubernetes.container.name` label, so `container=""`);
//! - sampled metrics carry the sample's time in milliseconds; spec metrics
//!   (`container_start_time_seconds`, `container_spec_*`) and `container_scrape_error` none;
//! - the CPU counter has `cpu="total"` (the kubelet leaves per-CPU usage out); network counters
//!   an `interface` label, loopback and `veth*`/`docker*` left out;
//! - `container_spec_memory_limit_bytes` is 0 without a limit (cAdvisor's `specMemoryValue`);
//! - families in name order, series in label-value order, labels in name order, values as Go's
//!   `strconv.FormatFloat(v, 'g', -1, 64)` writes them (client_golang's text format 0.0.4).
//!
//! Served: the families of [`FAMILIES`]. Not served (kubenode does not measure them): per-CPU
//! and user/system CPU, CFS throttling, load average, `container_memory_{swap,mapped_file,
//! max_usage_bytes,failcnt,failures_total,kernel_usage}`, `container_fs_*` and
//! `container_blkio_*`, network packets and drops, `container_tasks_state`, `container_threads*`,
//! `container_processes`, `container_sockets`, `container_file_descriptors`, `container_ulimits_soft`,
//! `container_oom_events_total`, `container_pressure_*`, `container_spec_cpu_*`,
//! `container_spec_memory_{swap,reservation}_limit_bytes`, the pause container's CPU and
//! memory, and the machine collector's `machine_*` families.

use std::collections::BTreeMap;
use std::fmt::Write;

use jiff::Timestamp;

use super::cgroup::MemorySample;
use super::types::{CpuStats, MemoryStats, NetworkStats};
use super::{Collection, PodTarget};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every family served: name, type, cAdvisor's HELP.
pub const FAMILIES: [(&str, &str, &str); 13] = [
    (
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
    ),
    (
        "container_last_seen",
        "gauge",
        "Last time a container was seen by the exporter",
    ),
    (
        "container_memory_cache",
        "gauge",
        "Number of bytes of page cache memory.",
    ),
    ("container_memory_rss", "gauge", "Size of RSS in bytes."),
    (
        "container_memory_usage_bytes",
        "gauge",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
    ),
    (
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set in bytes.",
    ),
    (
        "container_network_receive_bytes_total",
        "counter",
        "Cumulative count of bytes received",
    ),
    (
        "container_network_receive_errors_total",
        "counter",
        "Cumulative count of errors encountered while receiving",
    ),
    (
        "container_network_transmit_bytes_total",
        "counter",
        "Cumulative count of bytes transmitted",
    ),
    (
        "container_network_transmit_errors_total",
        "counter",
        "Cumulative count of errors encountered while transmitting",
    ),
    (
        "container_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    ),
    (
        "container_spec_memory_limit_bytes",
        "gauge",
        "Memory limit for the container.",
    ),
    (
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds.",
    ),
];

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (what client_golang's text
/// encoder uses): the shortest digits that read back, in exponent form when the exponent is
/// below -4 or at least 6 (`8.388608e+06`, `1e-05`), else plain (`2.5`, `100000`).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` is the shortest round-trip form too: `8.388608e6`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

/// One cAdvisor "container" (a cgroup) and its base labels.
struct Subject<'a> {
    id: String,
    container: &'a str,
    image: &'a str,
    name: &'a str,
    namespace: &'a str,
    pod: &'a str,
}

/// Series of every family by name: (sorted labels, value, timestamp in ms).
type Series = Vec<(Vec<(&'static str, String)>, f64, Option<i64>)>;

#[derive(Default)]
struct Out {
    families: BTreeMap<&'static str, Series>,
}

impl Out {
    fn push(
        &mut self,
        family: &'static str,
        who: &Subject<'_>,
        extra: Option<(&'static str, &str)>,
        value: f64,
        at: Option<Timestamp>,
    ) {
        let mut labels = vec![
            ("container", who.container.to_string()),
            ("id", who.id.clone()),
            ("image", who.image.to_string()),
            ("name", who.name.to_string()),
            ("namespace", who.namespace.to_string()),
            ("pod", who.pod.to_string()),
        ];
        if let Some((k, v)) = extra {
            labels.push((k, v.to_string()));
        }
        labels.sort_by_key(|l| l.0);
        self.families.entry(family).or_default().push((
            labels,
            value,
            at.map(|t| t.as_millisecond()),
        ));
    }

    fn cpu(&mut self, who: &Subject<'_>, cpu: &Option<CpuStats>) {
        if let Some(c) = cpu {
            // cAdvisor reports the total only once it is above zero.
            if let Some(ns) = c.usage_core_nano_seconds.filter(|&ns| ns > 0) {
                let v = ns as f64 / 1e9;
                self.push(
                    "container_cpu_usage_seconds_total",
                    who,
                    Some(("cpu", "total")),
                    v,
                    Some(c.time),
                );
            }
        }
    }

    fn memory(
        &mut self,
        who: &Subject<'_>,
        stats: &Option<MemoryStats>,
        raw: Option<MemorySample>,
    ) {
        let (Some(m), Some(raw)) = (stats, raw) else {
            return;
        };
        let t = Some(m.time);
        self.push("container_memory_cache", who, None, raw.cache as f64, t);
        self.push("container_memory_rss", who, None, raw.rss as f64, t);
        self.push(
            "container_memory_usage_bytes",
            who,
            None,
            raw.usage as f64,
            t,
        );
        self.push(
            "container_memory_working_set_bytes",
            who,
            None,
            raw.working_set() as f64,
            t,
        );
        let limit = raw.limit.unwrap_or(0);
        self.push(
            "container_spec_memory_limit_bytes",
            who,
            None,
            limit as f64,
            None,
        );
    }

    fn network(&mut self, who: &Subject<'_>, net: &Option<NetworkStats>) {
        let Some(n) = net else { return };
        let t = Some(n.time);
        for i in &n.interfaces {
            let iface = Some(("interface", i.name.as_str()));
            for (family, v) in [
                ("container_network_receive_bytes_total", i.rx_bytes),
                ("container_network_receive_errors_total", i.rx_errors),
                ("container_network_transmit_bytes_total", i.tx_bytes),
                ("container_network_transmit_errors_total", i.tx_errors),
            ] {
                if let Some(v) = v {
                    self.push(family, who, iface, v as f64, t);
                }
            }
        }
    }

    fn seen(&mut self, who: &Subject<'_>, now: Timestamp) {
        self.push(
            "container_last_seen",
            who,
            None,
            now.as_second() as f64,
            Some(now),
        );
    }

    fn started(&mut self, who: &Subject<'_>, at: Timestamp) {
        self.push(
            "container_start_time_seconds",
            who,
            None,
            at.as_second() as f64,
            None,
        );
    }

    fn render(mut self, scrape_error: bool) -> String {
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let series = if name == "container_scrape_error" {
                vec![(Vec::new(), f64::from(u8::from(scrape_error)), None)]
            } else {
                match self.families.remove(name) {
                    Some(s) => s,
                    None => continue,
                }
            };
            let mut series = series;
            series.sort_by(|a, b| {
                let va = a.0.iter().map(|l| l.1.as_str());
                let vb = b.0.iter().map(|l| l.1.as_str());
                va.cmp(vb).then(a.2.cmp(&b.2))
            });
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value, ts) in series {
                out.push_str(name);
                if !labels.is_empty() {
                    let inner: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    let _ = write!(out, "{{{}}}", inner.join(","));
                }
                let _ = write!(out, " {}", go_float(value));
                if let Some(ts) = ts {
                    let _ = write!(out, " {ts}");
                }
                out.push('\n');
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A cgroup path as cAdvisor names it: absolute, `/` for the root.
fn cgroup_id(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

/// The cAdvisor metrics of a collection round of `targets` (`collection` made from them, in
/// their order); `scrape_error` when the round failed (`collection` is then empty).
pub fn render(
    targets: &[PodTarget],
    collection: &Collection,
    now: Timestamp,
    scrape_error: bool,
) -> String {
    let mut out = Out::default();
    let node = &collection.summary.node;
    let root = Subject {
        id: "/".into(),
        container: "",
        image: "",
        name: "",
        namespace: "",
        pod: "",
    };
    out.cpu(&root, &node.cpu);
    out.memory(&root, &node.memory, collection.node_memory);
    out.network(&root, &node.network);
    out.started(&root, node.start_time);
    out.seen(&root, now);
    for ((target, stats), raw) in targets
        .iter()
        .zip(&collection.summary.pods)
        .zip(&collection.pods)
    {
        let pod = Subject {
            id: cgroup_id(&target.cgroup),
            container: "",
            image: "",
            name: "",
            namespace: &target.pod_ref.namespace,
            pod: &target.pod_ref.name,
        };
        out.cpu(&pod, &stats.cpu);
        out.memory(&pod, &stats.memory, raw.memory);
        out.started(&pod, stats.start_time);
        out.seen(&pod, now);
        if let Some(netns) = &target.netns_cgroup {
            let sandbox = Subject {
                id: cgroup_id(netns),
                container: "",
                image: "",
                name: &target.sandbox_id,
                namespace: &target.pod_ref.namespace,
                pod: &target.pod_ref.name,
            };
            if stats.network.is_some() {
                out.network(&sandbox, &stats.network);
                out.seen(&sandbox, now);
            }
        }
        for ((c, cs), craw) in target
            .containers
            .iter()
            .zip(&stats.containers)
            .zip(&raw.containers)
        {
            let who = Subject {
                id: cgroup_id(&c.cgroup),
                container: &c.name,
                image: &c.image,
                name: &c.id,
                namespace: &target.pod_ref.namespace,
                pod: &target.pod_ref.name,
            };
            out.cpu(&who, &cs.cpu);
            out.memory(&who, &cs.memory, *craw);
            out.started(&who, c.start_time);
            out.seen(&who, now);
        }
    }
    out.render(scrape_error)
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_families_in_name_order;
    use super::super::types::*;
    use super::super::{ContainerTarget, PodSamples};
    use super::*;

    #[test]
    fn go_float_formats() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (2.5, "2.5"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (8_388_608.0, "8.388608e+06"),
            (1_796_454_000.0, "1.796454e+09"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-9, "1.5e-09"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    /// `(name, labels, value text, timestamp)` of each sample line, checking that every sample
    /// follows its family's `# HELP` and `# TYPE`.
    type Parsed = (String, BTreeMap<String, String>, String, Option<i64>);

    fn parse(text: &str) -> Vec<Parsed> {
        let mut family = String::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, rest) = match line.rfind('}') {
                Some(i) => (&line[..=i], line[i + 1..].trim()),
                None => line.split_once(' ').unwrap(),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (
                    n,
                    l.trim_end_matches('}')
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").unwrap();
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect(),
                ),
                None => (series, BTreeMap::new()),
            };
            assert_eq!(name, family, "{line}");
            let mut it = rest.split(' ');
            let value = it.next().unwrap().to_string();
            let ts = it.next().map(|t| t.parse().unwrap());
            out.push((name.to_string(), labels, value, ts));
        }
        out
    }

    #[test]
    fn renders_cadvisor_names_labels_and_values() {
        let t: Timestamp = "2026-12-05T08:00:00.5Z".parse().unwrap();
        let cpu = |ns| {
            Some(CpuStats {
                time: t,
                usage_nano_cores: None,
                usage_core_nano_seconds: Some(ns),
            })
        };
        let mem = Some(MemoryStats {
            time: t,
            available_bytes: None,
            usage_bytes: Some(10_000_000),
            working_set_bytes: Some(8_388_608),
            rss_bytes: Some(6_000_000),
            page_faults: None,
            major_page_faults: None,
        });
        let raw = MemorySample {
            usage: 10_000_000,
            inactive_file: 1_611_392,
            rss: 6_000_000,
            cache: 4096,
            page_faults: 0,
            major_page_faults: 0,
            limit: Some(134_217_728),
        };
        let started: Timestamp = "2026-12-05T07:00:00Z".parse().unwrap();
        let target = PodTarget {
            volumes: Vec::new(),
            pod_ref: PodReference {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
            },
            start_time: started,
            cgroup: "/kubepods/burstable/podu1".into(),
            netns_cgroup: Some("/kubepods/burstable/podu1/sb1".into()),
            sandbox_id: "sb1".into(),
            containers: vec![ContainerTarget {
                writable_layer: None,
                name: "app".into(),
                id: "c1".into(),
                image: "docker.io/library/busybox:1.36".into(),
                start_time: started,
                cgroup: "kubepods/burstable/podu1/c1".into(),
                log_path: "/dev/null".into(),
            }],
        };
        let net = Some(NetworkStats {
            time: t,
            default: InterfaceStats::default(),
            interfaces: vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: Some(1500),
                rx_errors: Some(0),
                tx_bytes: Some(700),
                tx_errors: Some(1),
            }],
        });
        let collection = Collection {
            summary: Summary {
                node: NodeStats {
                    start_time: started,
                    cpu: cpu(7_000_000_000),
                    ..Default::default()
                },
                pods: vec![PodStats {
                    pod_ref: target.pod_ref.clone(),
                    start_time: started,
                    cpu: cpu(3_000_000_000),
                    memory: mem,
                    network: net,
                    containers: vec![ContainerStats {
                        name: "app".into(),
                        start_time: started,
                        cpu: cpu(2_500_000_000),
                        memory: mem,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
            node_memory: None,
            pods: vec![PodSamples {
                memory: Some(MemorySample { limit: None, ..raw }),
                containers: vec![Some(raw)],
            }],
        };
        let now: Timestamp = "2026-12-05T08:00:01Z".parse().unwrap();
        let text = render(std::slice::from_ref(&target), &collection, now, false);
        let samples = parse(&text);
        let find = |name: &str, id: &str| {
            samples
                .iter()
                .find(|s| s.0 == name && s.1["id"] == id)
                .unwrap_or_else(|| panic!("{name}{{id={id}}} missing in\n{text}"))
        };
        let ctr = "/kubepods/burstable/podu1/c1";
        let c = find("container_cpu_usage_seconds_total", ctr);
        assert_eq!(c.2, "2.5");
        assert_eq!(c.3, Some(t.as_millisecond()));
        let labels: Vec<(&str, &str)> = c.1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            labels,
            [
                ("container", "app"),
                ("cpu", "total"),
                ("id", ctr),
                ("image", "docker.io/library/busybox:1.36"),
                ("name", "c1"),
                ("namespace", "default"),
                ("pod", "web"),
            ]
        );
        assert_eq!(
            find("container_memory_working_set_bytes", ctr).2,
            "8.388608e+06"
        );
        assert_eq!(find("container_memory_usage_bytes", ctr).2, "1e+07");
        assert_eq!(find("container_memory_rss", ctr).2, "6e+06");
        assert_eq!(find("container_memory_cache", ctr).2, "4096");
        let limit = find("container_spec_memory_limit_bytes", ctr);
        assert_eq!((limit.2.as_str(), limit.3), ("1.34217728e+08", None));
        let start = find("container_start_time_seconds", ctr);
        assert_eq!((start.2.as_str(), start.3), ("1.796454e+09", None));
        assert_eq!(
            find("container_last_seen", ctr).2,
            go_float(now.as_second() as f64)
        );
        // The pod cgroup: pod and namespace, no container, image or name; no limit is 0.
        let pod = find(
            "container_cpu_usage_seconds_total",
            "/kubepods/burstable/podu1",
        );
        assert_eq!(
            (pod.1["container"].as_str(), pod.1["pod"].as_str()),
            ("", "web")
        );
        assert_eq!((pod.1["image"].as_str(), pod.1["name"].as_str()), ("", ""));
        assert_eq!(pod.2, "3");
        assert_eq!(
            find(
                "container_spec_memory_limit_bytes",
                "/kubepods/burstable/podu1"
            )
            .2,
            "0"
        );
        // The network is the sandbox's, with an interface label.
        let sb = "/kubepods/burstable/podu1/sb1";
        let rx = find("container_network_receive_bytes_total", sb);
        assert_eq!(rx.2, "1500");
        assert_eq!(rx.1["interface"], "eth0");
        assert_eq!(
            (rx.1["name"].as_str(), rx.1["container"].as_str()),
            ("sb1", "")
        );
        assert_eq!(find("container_network_transmit_errors_total", sb).2, "1");
        assert!(!samples
            .iter()
            .any(|s| s.0.starts_with("container_network") && s.1["id"] != sb));
        // The root.
        assert_eq!(find("container_cpu_usage_seconds_total", "/").2, "7");
        // No timestamp on the error gauge; families in name order, each once.
        assert!(text.contains("\ncontainer_scrape_error 0\n"));
        assert_families_in_name_order(&text);
        assert!(text.contains(
            "# HELP container_memory_usage_bytes Current memory usage in bytes, including all memory regardless of when it was accessed\n# TYPE container_memory_usage_bytes gauge\n"
        ));
        let failed = render(&[], &Collection::default(), now, true);
        assert!(failed.contains("\ncontainer_scrape_error 1\n"), "{failed}");
    }
}
