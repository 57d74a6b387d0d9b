//! `GET /metrics`: the kubelet's own metrics, with upstream's names, labels and buckets
//! (`pkg/kubelet/metrics`, `pkg/kubelet/prober`, `pkg/proxy/metrics`), counted where the events
//! happen (pod workers, the PLEG relist, the runtime calls, the prober, the proxy's sync) into
//! one process-wide [`KubeletMetrics`] ([`metrics()`]) and encoded by `prometheus-client` in
//! the OpenMetrics text format, which Prometheus scrapes as it scrapes a kubelet.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`KubeletMetrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels as `(name, value)` pairs, in the order upstream declares them.
pub type Labels = Vec<(&'static str, String)>;

/// Upstream's `metrics.DefBuckets`.
const DEF_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `kubelet_pod_start_duration_seconds`'s buckets.
const POD_START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The kubelet's (and the proxy's) metrics.
pub struct KubeletMetrics {
    registry: Registry,
    /// `/metrics/probes`: upstream's prober registry (`process_start_time_seconds`,
    /// `prober_probe_total`, `prober_probe_duration_seconds`), sharing the probe families with
    /// [`KubeletMetrics::registry`].
    probes_registry: Registry,
    pod_start: Histogram,
    pleg_relist: Histogram,
    running_pods: Gauge,
    running_containers: Family<Labels, Gauge>,
    runtime_ops: Family<Labels, Counter>,
    runtime_errors: Family<Labels, Counter>,
    runtime_durations: HistogramFamily,
    probes: Family<Labels, Counter>,
    probe_durations: HistogramFamily,
    /// Each pod's probe label sets (prometheus-client cannot list a family's), so that
    /// [`KubeletMetrics::forget_pod_probes`] removes them: a node that churns pods must not
    /// keep a series per pod it ever probed.
    probe_series: std::sync::Mutex<HashMap<String, HashSet<(Labels, Labels)>>>,
    proxy_sync: Histogram,
    proxy_rules: Family<Labels, Gauge>,
}

impl std::fmt::Debug for KubeletMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletMetrics").finish_non_exhaustive()
    }
}

fn runtime_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

/// `prober_probe_duration_seconds` sets no buckets upstream: client_golang's `DefBuckets`.
fn probe_buckets() -> Histogram {
    Histogram::new(DEF_BUCKETS)
}

/// This process's start time in seconds since the epoch (0 when `/proc` cannot tell).
fn process_start_time() -> f64 {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    crate::stats::proc::process_start_time(&read("/proc/self/stat"), &read("/proc/stat"))
        .unwrap_or(0.0)
}

impl Default for KubeletMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl KubeletMetrics {
    /// Every metric registered, all at zero.
    pub fn new() -> KubeletMetrics {
        let mut r = Registry::default();
        let pod_start = Histogram::new(POD_START_BUCKETS);
        register(
            &mut r,
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            pod_start.clone(),
        );
        let pleg_relist = Histogram::new(DEF_BUCKETS);
        register(
            &mut r,
            "kubelet_pleg_relist_duration_seconds",
            "Duration in seconds for relisting pods in PLEG.",
            pleg_relist.clone(),
        );
        let running_pods = Gauge::default();
        register(
            &mut r,
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            running_pods.clone(),
        );
        let running_containers = Family::<Labels, Gauge>::default();
        register(
            &mut r,
            "kubelet_running_containers",
            "Number of containers currently running",
            running_containers.clone(),
        );
        let runtime_ops = Family::<Labels, Counter>::default();
        register(
            &mut r,
            "kubelet_runtime_operations",
            "Cumulative number of runtime operations by operation type.",
            runtime_ops.clone(),
        );
        let runtime_errors = Family::<Labels, Counter>::default();
        register(
            &mut r,
            "kubelet_runtime_operations_errors",
            "Cumulative number of runtime operation errors by operation type.",
            runtime_errors.clone(),
        );
        let runtime_durations: HistogramFamily = Family::new_with_constructor(runtime_buckets);
        register(
            &mut r,
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type.",
            runtime_durations.clone(),
        );
        let probes = Family::<Labels, Counter>::default();
        register(
            &mut r,
            "prober_probe",
            "Cumulative number of a liveness, readiness or startup probe for a container by result.",
            probes.clone(),
        );
        let probe_durations: HistogramFamily = Family::new_with_constructor(probe_buckets);
        register(
            &mut r,
            "prober_probe_duration_seconds",
            "Duration in seconds for a probe response.",
            probe_durations.clone(),
        );
        // Upstream's `/metrics/probes` registry; the HELP texts carry the stability level as
        // component-base writes them there.
        let mut p = Registry::default();
        let start = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start.set(process_start_time());
        register(
            &mut p,
            "process_start_time_seconds",
            "[ALPHA] Start time of the process since unix epoch in seconds.",
            start,
        );
        register(
            &mut p,
            "prober_probe",
            "[BETA] Cumulative number of a liveness, readiness or startup probe for a container by result.",
            probes.clone(),
        );
        register(
            &mut p,
            "prober_probe_duration_seconds",
            "[ALPHA] Duration in seconds for a probe response.",
            probe_durations.clone(),
        );
        let proxy_sync = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        register(
            &mut r,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            proxy_sync.clone(),
        );
        let proxy_rules = Family::<Labels, Gauge>::default();
        register(
            &mut r,
            "kubeproxy_sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            proxy_rules.clone(),
        );
        KubeletMetrics {
            registry: r,
            probes_registry: p,
            pod_start,
            pleg_relist,
            running_pods,
            running_containers,
            runtime_ops,
            runtime_errors,
            runtime_durations,
            probes,
            probe_durations,
            probe_series: Default::default(),
            proxy_sync,
            proxy_rules,
        }
    }

    /// A pod ran for the first time, `since` after the kubelet first saw it.
    pub fn pod_started(&self, since: Duration) {
        self.pod_start.observe(since.as_secs_f64());
    }

    /// One PLEG relist took `took`; it found `pods` ready sandboxes and containers in each
    /// state (upstream's `created`, `running`, `exited`, `unknown`).
    pub fn relisted(&self, took: Duration, pods: usize, containers: &[(&'static str, usize)]) {
        self.pleg_relist.observe(took.as_secs_f64());
        self.running_pods.set(pods as i64);
        for (state, n) in containers {
            self.running_containers
                .get_or_create(&vec![("container_state", state.to_string())])
                .set(*n as i64);
        }
    }

    /// One runtime operation (upstream's CRI method names, `run_podsandbox`, `create_container`,
    /// ...) took `took`, failing when `failed`.
    pub fn runtime_operation(&self, operation: &str, took: Duration, failed: bool) {
        let l = vec![("operation_type", operation.to_string())];
        self.runtime_ops.get_or_create(&l).inc();
        self.runtime_durations
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        if failed {
            self.runtime_errors.get_or_create(&l).inc();
        }
    }

    /// One probe of `probe_type` (`Liveness`, `Readiness`, `Startup`) of a container ended with
    /// `result` (`successful`, `failed`, `unknown`) after `took`. As upstream's worker, the
    /// duration is observed for a successful or unknown result, not for a failure.
    pub fn probed(&self, probe: &ProbeLabels<'_>, result: &str, took: Duration) {
        let base = |extra: Option<&str>| {
            let mut l: Labels = vec![("probe_type", probe.probe_type.to_string())];
            if let Some(r) = extra {
                l.push(("result", r.to_string()));
            }
            l.extend([
                ("container", probe.container.to_string()),
                ("pod", probe.pod.to_string()),
                ("namespace", probe.namespace.to_string()),
            ]);
            l
        };
        let mut counted = base(Some(result));
        counted.push(("pod_uid", probe.pod_uid.to_string()));
        let timed = base(None);
        self.probes.get_or_create(&counted).inc();
        if result != "failed" {
            self.probe_durations
                .get_or_create(&timed)
                .observe(took.as_secs_f64());
        }
        self.probe_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(probe.pod_uid.to_string())
            .or_default()
            .insert((counted, timed));
    }

    /// Forgets the probe series of a pod that is gone (upstream deletes them with the worker).
    pub fn forget_pod_probes(&self, pod_uid: &str) {
        let gone = self
            .probe_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
        for (counted, timed) in gone.into_iter().flatten() {
            self.probes.remove(&counted);
            self.probe_durations.remove(&timed);
        }
    }

    /// The proxy synced its rules in `took`, leaving `rules` rules per table (`nat`, `filter`).
    pub fn proxy_synced(&self, took: Duration, rules: &[(&str, usize)]) {
        self.proxy_sync.observe(took.as_secs_f64());
        for (table, n) in rules {
            self.proxy_rules
                .get_or_create(&vec![("table", table.to_string())])
                .set(*n as i64);
        }
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        encode_registry(&self.registry)
    }

    /// `/metrics/probes`: the probe metrics and the process start time, in the OpenMetrics
    /// text format.
    pub fn encode_probes(&self) -> String {
        encode_registry(&self.probes_registry)
    }
}

/// Registers `metric` with upstream's HELP text: prometheus-client ends every HELP with a
/// period, so one already there is left to it (no `..`).
fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    registry.register(name, help.strip_suffix('.').unwrap_or(help), metric);
}

fn encode_registry(registry: &Registry) -> String {
    let mut out = String::new();
    if encode(&mut out, registry).is_err() {
        // Writing to a String cannot fail; an encoder bug must not pass silently.
        tracing::error!("encoding the kubelet's metrics failed");
    }
    out
}

/// Which probe [`KubeletMetrics::probed`] counts.
#[derive(Debug, Clone, Copy)]
pub struct ProbeLabels<'a> {
    /// `Liveness`, `Readiness` or `Startup`.
    pub probe_type: &'a str,
    /// Container name.
    pub container: &'a str,
    /// Pod name.
    pub pod: &'a str,
    /// Pod namespace.
    pub namespace: &'a str,
    /// Pod UID.
    pub pod_uid: &'a str,
}

static METRICS: LazyLock<KubeletMetrics> = LazyLock::new(KubeletMetrics::new);

/// The process's metrics.
pub fn metrics() -> &'static KubeletMetrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(name, labels, value)` of every sample line, checking each belongs to a `# TYPE`d family.
    fn parse(text: &str) -> Vec<(String, String, f64)> {
        let mut families: Vec<String> = Vec::new();
        let mut out = Vec::new();
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.push(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            assert!(
                families.iter().any(|f| name.starts_with(f.as_str())),
                "{name}: no family"
            );
            out.push((name.to_string(), labels.to_string(), value.parse().unwrap()));
        }
        out
    }

    #[test]
    fn upstream_names_and_labels() {
        let m = KubeletMetrics::new();
        m.pod_started(Duration::from_millis(1500));
        m.relisted(
            Duration::from_millis(3),
            2,
            &[("running", 3), ("exited", 1)],
        );
        m.runtime_operation("create_container", Duration::from_millis(20), false);
        m.runtime_operation("create_container", Duration::from_millis(30), true);
        let probe = ProbeLabels {
            probe_type: "Readiness",
            container: "app",
            pod: "web",
            namespace: "default",
            pod_uid: "u1",
        };
        m.probed(&probe, "successful", Duration::from_millis(2));
        let gone = ProbeLabels {
            pod: "old",
            pod_uid: "u0",
            ..probe
        };
        m.probed(&gone, "failed", Duration::from_millis(2));
        m.forget_pod_probes("u0");
        assert!(!m.encode().contains("pod=\"old\""), "{}", m.encode());
        m.proxy_synced(Duration::from_millis(4), &[("nat", 12), ("filter", 3)]);
        let samples = parse(&m.encode());
        let value = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|s| s.0 == name && s.1 == labels)
                .unwrap_or_else(|| panic!("{name}{{{labels}}} missing"))
                .2
        };
        assert_eq!(value("kubelet_running_pods", ""), 2.0);
        assert_eq!(
            value("kubelet_running_containers", "container_state=\"running\""),
            3.0
        );
        assert_eq!(
            value(
                "kubelet_runtime_operations_total",
                "operation_type=\"create_container\""
            ),
            2.0
        );
        assert_eq!(
            value(
                "kubelet_runtime_operations_errors_total",
                "operation_type=\"create_container\""
            ),
            1.0
        );
        assert_eq!(
            value(
                "kubelet_runtime_operations_duration_seconds_count",
                "operation_type=\"create_container\""
            ),
            2.0
        );
        assert_eq!(value("kubelet_pod_start_duration_seconds_count", ""), 1.0);
        assert_eq!(
            value("kubelet_pod_start_duration_seconds_bucket", "le=\"1.0\""),
            0.0
        );
        assert_eq!(
            value("kubelet_pod_start_duration_seconds_bucket", "le=\"2.0\""),
            1.0
        );
        assert_eq!(value("kubelet_pleg_relist_duration_seconds_count", ""), 1.0);
        assert_eq!(
            value(
                "prober_probe_total",
                "probe_type=\"Readiness\",result=\"successful\",container=\"app\",pod=\"web\",namespace=\"default\",pod_uid=\"u1\""
            ),
            1.0
        );
        assert_eq!(
            value(
                "prober_probe_duration_seconds_count",
                "probe_type=\"Readiness\",container=\"app\",pod=\"web\",namespace=\"default\""
            ),
            1.0
        );
        assert_eq!(
            value("kubeproxy_sync_proxy_rules_iptables_total", "table=\"nat\""),
            12.0
        );
        assert_eq!(
            value("kubeproxy_sync_proxy_rules_duration_seconds_count", ""),
            1.0
        );
    }

    #[test]
    fn probes_endpoint_as_upstream_registers_it() {
        let m = KubeletMetrics::new();
        let probe = ProbeLabels {
            probe_type: "Liveness",
            container: "app",
            pod: "web",
            namespace: "default",
            pod_uid: "u1",
        };
        m.probed(&probe, "successful", Duration::from_millis(3));
        m.probed(&probe, "failed", Duration::from_millis(3));
        m.probed(&probe, "unknown", Duration::from_millis(30));
        m.runtime_operation("create_container", Duration::from_millis(20), false);
        let text = m.encode_probes();
        let samples = parse(&text);
        let value = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|s| s.0 == name && s.1 == labels)
                .unwrap_or_else(|| panic!("{name}{{{labels}}} missing in\n{text}"))
                .2
        };
        let counted = |result: &str| {
            format!(
                "probe_type=\"Liveness\",result=\"{result}\",container=\"app\",pod=\"web\",namespace=\"default\",pod_uid=\"u1\""
            )
        };
        for result in ["successful", "failed", "unknown"] {
            assert_eq!(value("prober_probe_total", &counted(result)), 1.0);
        }
        let timed = "probe_type=\"Liveness\",container=\"app\",pod=\"web\",namespace=\"default\"";
        // Upstream observes the duration of successful and unknown results only.
        assert_eq!(value("prober_probe_duration_seconds_count", timed), 2.0);
        // client_golang's DefBuckets: 3 ms is under the first (5 ms), 30 ms under 50 ms.
        let bucket = |le: &str| {
            value(
                "prober_probe_duration_seconds_bucket",
                &format!("le=\"{le}\",{timed}"),
            )
        };
        assert_eq!(bucket("0.005"), 1.0);
        assert_eq!(bucket("0.025"), 1.0);
        assert_eq!(bucket("0.05"), 2.0);
        assert_eq!(bucket("10.0"), 2.0);
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.0 == "prober_probe_duration_seconds_bucket")
                .count(),
            12,
            "11 DefBuckets and +Inf"
        );
        let start = value("process_start_time_seconds", "");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(start > 1e9 && start <= now, "{start}");
        assert!(text.contains(
            "# HELP prober_probe [BETA] Cumulative number of a liveness, readiness or startup probe for a container by result.\n"
        ));
        assert!(text.contains(
            "# HELP process_start_time_seconds [ALPHA] Start time of the process since unix epoch in seconds.\n"
        ));
        // Only the prober's registry: none of /metrics' other families.
        assert!(!text.contains("kubelet_"), "{text}");
        // /metrics keeps the same probe families (shared counters).
        assert!(m
            .encode()
            .contains(&format!("prober_probe_total{{{}}} 1", counted("failed"))));
    }
}
