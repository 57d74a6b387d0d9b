//! What Prometheus scrapes of a node on :10250 besides `/metrics` (docs/architecture.md, "The
//! kubelet's HTTPS server"): kube-prometheus's kubelet ServiceMonitor scrapes `/metrics`,
//! `/metrics/cadvisor` and `/metrics/probes`. With a client CA and `AlwaysAllow`, a pod with a
//! readiness probe running, curl from the node's network namespace with a certificate of the CA:
//!
//! - `/metrics/cadvisor` has the pod's container's CPU, memory and start time under cAdvisor's
//!   names and labels (`container`, `id`, `image`, `name`, `namespace`, `pod`, `cpu="total"`),
//!   sampled series with a timestamp, the pod's network counters on its sandbox with an
//!   `interface` label, and `container_scrape_error 0`;
//! - `/metrics/probes` counts the container's successful readiness probes
//!   (`prober_probe_total`) and has `process_start_time_seconds` and the duration histogram,
//!   and nothing of `/metrics`' other families; `/metrics` keeps the probe counter too;
//! - both refuse a request without credentials (401).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::agent::with_config_agent;
use kubenode_integration::apiserver::tls::Ca;
use kubenode_integration::pods::{all_running, pod_yaml};
use kubenode_integration::{curl_kubelet, privileged, run_tests, unique_tag, TestDir};

fn main() {
    run_tests(vec![privileged(
        "kubelet_metrics_cadvisor_and_probes",
        scrape,
    )])
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
    timestamp: Option<i64>,
}

/// The samples of a Prometheus (0.0.4 or OpenMetrics) text body. Label values here hold no
/// `",` or `}`.
fn samples(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, rest) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => line.split_once(' ').with_context(|| line.to_string())?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let mut labels = BTreeMap::new();
                for pair in l
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair.split_once("=\"").with_context(|| line.to_string())?;
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n, labels)
            }
            None => (series, BTreeMap::new()),
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no value: {line}"))?;
        let timestamp = fields.next().map(|t| t.parse()).transpose()?;
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
            timestamp,
        });
    }
    Ok(out)
}

fn find<'a>(
    all: &'a [Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> impl Iterator<Item = &'a Sample> {
    let name = name.to_string();
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.iter().filter(move |s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v.as_str()))
    })
}

fn scrape() -> anyhow::Result<()> {
    let certs = TestDir::new(&unique_tag("kmcert"))?;
    let ca = Ca::generate()?;
    let ca_file = certs.join("ca.crt");
    std::fs::write(&ca_file, &ca.cert_pem)?;
    let now = jiff::Timestamp::now();
    let pair = ca.client(
        "prometheus",
        &[],
        now - jiff::SignedDuration::from_secs(300),
        now + jiff::SignedDuration::from_hours(1),
    )?;
    let (crt, key) = (certs.join("p.crt"), certs.join("p.key"));
    std::fs::write(&crt, &pair.cert_pem)?;
    std::fs::write(&key, &pair.key_pem)?;
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let with_cert = ["--cert", crt.as_str(), "--key", key.as_str()];
    let config = format!(
        "authentication:\n  x509:\n    clientCAFile: {}\nauthorization:\n  mode: AlwaysAllow\n",
        ca_file.display()
    );
    with_config_agent("km", Some(&config), |agent| {
        let yaml = pod_yaml(
            "probed",
            &agent.image,
            "  containers:\n  - name: main\n    image: IMAGE\n    args: [\"/bin/sh\", \"-c\", \"x=$(head -c 4000000 /dev/zero | tr '\\\\0' a); while :; do sleep 1; done\"]\n    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n",
        );
        agent.write_manifest("probed.yaml", &yaml)?;
        let pod = agent.pod_name("probed");
        agent.wait_pod(&pod, Duration::from_secs(90), "running", all_running)?;
        let get = |path: &str| -> anyhow::Result<String> {
            let got = curl_kubelet(agent, path, &with_cert)?;
            ensure!(
                got.status == 200,
                "{path}: status {}: {}",
                got.status,
                got.body
            );
            Ok(got.body)
        };

        // The probe counter, as upstream's /metrics/probes registry serves it.
        let ours = [
            ("probe_type", "Readiness"),
            ("container", "main"),
            ("pod", pod.as_str()),
            ("namespace", "default"),
        ];
        let deadline = Instant::now() + Duration::from_secs(60);
        let probes = loop {
            let body = get("/metrics/probes")?;
            let all = samples(&body)?;
            let mut counted = ours.to_vec();
            counted.push(("result", "successful"));
            if find(&all, "prober_probe_total", &counted).any(|s| s.value >= 1.0) {
                break body;
            }
            if Instant::now() > deadline {
                bail!("no successful readiness probe of {pod} counted: {body}");
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let all = samples(&probes)?;
        let counted = find(&all, "prober_probe_total", &ours)
            .next()
            .context("prober_probe_total")?;
        ensure!(
            counted.labels.get("pod_uid").is_some_and(|u| !u.is_empty()),
            "{counted:?}"
        );
        ensure!(
            find(&all, "prober_probe_duration_seconds_count", &ours).any(|s| s.value >= 1.0),
            "{probes}"
        );
        ensure!(
            find(
                &all,
                "prober_probe_duration_seconds_bucket",
                &[("le", "0.005")]
            )
            .next()
            .is_some(),
            "upstream's DefBuckets: {probes}"
        );
        let start = find(&all, "process_start_time_seconds", &[])
            .next()
            .context("process_start_time_seconds")?;
        ensure!(
            start.value > 1e9 && start.value <= jiff::Timestamp::now().as_second() as f64,
            "{start:?}"
        );
        ensure!(!probes.contains("kubelet_"), "{probes}");
        let metrics = get("/metrics")?;
        ensure!(
            metrics.contains("prober_probe_total{probe_type=\"Readiness\""),
            "/metrics keeps the probe counter: {metrics}"
        );

        // The container's series in cAdvisor's names and labels.
        let deadline = Instant::now() + Duration::from_secs(60);
        let cadvisor = loop {
            let body = get("/metrics/cadvisor")?;
            let all = samples(&body)?;
            let ctr = [("container", "main"), ("pod", pod.as_str())];
            if find(&all, "container_memory_working_set_bytes", &ctr).any(|s| s.value > 0.0) {
                break body;
            }
            if Instant::now() > deadline {
                bail!("no working set of {pod}/main: {body}");
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let all = samples(&cadvisor)?;
        let ctr = [
            ("container", "main"),
            ("pod", pod.as_str()),
            ("namespace", "default"),
        ];
        let cpu = find(&all, "container_cpu_usage_seconds_total", &ctr)
            .next()
            .with_context(|| format!("no CPU of {pod}/main: {cadvisor}"))?;
        ensure!(
            cpu.labels.get("cpu").map(String::as_str) == Some("total"),
            "{cpu:?}"
        );
        ensure!(cpu.value > 0.0 && cpu.timestamp.is_some(), "{cpu:?}");
        let keys: Vec<&str> = cpu.labels.keys().map(String::as_str).collect();
        ensure!(
            keys == [
                "container",
                "cpu",
                "id",
                "image",
                "name",
                "namespace",
                "pod"
            ],
            "{cpu:?}"
        );
        let id = cpu.labels["id"].clone();
        let runtime_id = cpu.labels["name"].clone();
        ensure!(
            id.starts_with("/") && !runtime_id.is_empty() && id.ends_with(&runtime_id),
            "the id is the container's cgroup, ending in its runtime ID: {cpu:?}"
        );
        ensure!(!cpu.labels["image"].is_empty(), "{cpu:?}");
        for family in [
            "container_memory_rss",
            "container_memory_usage_bytes",
            "container_memory_cache",
            "container_spec_memory_limit_bytes",
            "container_last_seen",
        ] {
            ensure!(
                find(&all, family, &ctr).next().is_some(),
                "no {family} of {pod}/main: {cadvisor}"
            );
        }
        let rss = find(&all, "container_memory_rss", &ctr)
            .next()
            .context("rss")?;
        ensure!(
            rss.value >= 4_000_000.0,
            "the 4 MB the shell holds: {rss:?}"
        );
        let started = find(&all, "container_start_time_seconds", &ctr)
            .next()
            .context("container_start_time_seconds")?;
        ensure!(
            started.timestamp.is_none()
                && (now.as_second() - 600) as f64 <= started.value
                && started.value <= jiff::Timestamp::now().as_second() as f64,
            "{started:?}"
        );
        // The pod cgroup: pod and namespace, no container.
        ensure!(
            find(
                &all,
                "container_cpu_usage_seconds_total",
                &[("container", ""), ("pod", pod.as_str()), ("image", "")]
            )
            .any(|s| s.labels["id"] != id && id.starts_with(&s.labels["id"])),
            "no pod cgroup series of {pod}: {cadvisor}"
        );
        // The pod's network on its sandbox (not the container), by interface.
        let rx = find(
            &all,
            "container_network_receive_bytes_total",
            &[("pod", pod.as_str()), ("interface", "eth0")],
        )
        .next()
        .with_context(|| format!("no network of {pod}: {cadvisor}"))?;
        ensure!(
            rx.labels["container"].is_empty()
                && rx.labels["name"] != runtime_id
                && !rx.labels["name"].is_empty(),
            "{rx:?}"
        );
        ensure!(
            cadvisor.contains("\ncontainer_scrape_error 0\n"),
            "{cadvisor}"
        );

        for path in ["/metrics/cadvisor", "/metrics/probes"] {
            let got = curl_kubelet(agent, path, &[])?;
            ensure!(
                got.status == 401,
                "{path} without credentials: {} {}",
                got.status,
                got.body
            );
        }
        Ok(())
    })
}
