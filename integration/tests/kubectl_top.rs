//! `kubectl top node` and `kubectl top pod` against a kubenode node, through the HTTPS
//! stand-in's `metrics.k8s.io/v1beta1` (metrics-server's API, scraping the node's
//! `/metrics/resource` on :10250 with the API server's kubelet client certificate): a pod
//! burning CPU and holding some memory shows up with non-zero CPU and memory, and so does the
//! node; the raw NodeMetrics and PodMetrics objects have metrics-server's shape.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::agent::with_config_agent;
use kubenode_integration::apiserver::HttpsOptions;
use kubenode_integration::cluster::{kubelet_api_https, HttpsStandIn};
use kubenode_integration::{privileged, run_tests, unique_tag, TestDir};

fn main() {
    run_tests(vec![privileged("kubectl_top_node_and_pod", top)])
}

/// The quantity `kubectl top` prints (`250m`, `12Mi`) as a number of its unit.
fn amount(cell: &str, unit: &str) -> anyhow::Result<u64> {
    cell.strip_suffix(unit)
        .with_context(|| format!("{cell:?} is not in {unit}"))?
        .parse()
        .with_context(|| format!("{cell:?}"))
}

/// The row of `name` in a `kubectl top` table (header checked), as its cells.
fn row(out: &str, header: &[&str], name: &str) -> anyhow::Result<Option<Vec<String>>> {
    let mut lines = out.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    ensure!(head == header, "header {head:?} in {out:?}");
    Ok(lines
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name)))
}

fn top() -> anyhow::Result<()> {
    let certs = TestDir::new(&unique_tag("ktop"))?;
    with_config_agent("ktop", None, |agent| {
        let https = HttpsOptions {
            // metrics-server's smallest allowed resolution, to keep the test short
            metric_resolution: Some(Duration::from_secs(10)),
            ..kubelet_api_https()
        };
        let standin = HttpsStandIn::start(agent, certs.path(), https)?;
        standin.join(agent, &standin.kubeconfig)?;
        let agent = &*agent;
        let k = |args: &[&str]| standin.kubectl(agent, args);
        let node = agent.node_name().to_string();
        // A shell holding 8 MB in a variable (anonymous memory: working set) and spinning.
        let manifest = certs.join("burn.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: burn\n  namespace: default\n  labels:\n    app: burn\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    args: [\"/bin/sh\", \"-c\", \"x=$(head -c 8000000 /dev/zero | tr '\\\\0' a); while :; do :; done\"]\n",
                agent.image
            ),
        )?;
        if let Err(e) = k(&["create", "-f", &manifest.display().to_string()])? {
            bail!("kubectl create: {e}");
        }
        let outcome = (|| -> anyhow::Result<()> {
            // metrics-server needs two scrapes of a running container: a bounded wait
            let deadline = Instant::now() + Duration::from_secs(120);
            let node_row = loop {
                let got = k(&["top", "node"])?;
                if let Ok(out) = &got {
                    let header = ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"];
                    if let Some(r) = row(out, &header, &node)? {
                        if r[1] != "<unknown>" {
                            break r;
                        }
                    }
                }
                if Instant::now() > deadline {
                    bail!("kubectl top node: {got:?}");
                }
                std::thread::sleep(Duration::from_secs(1));
            };
            ensure!(amount(&node_row[1], "m")? > 0, "node CPU: {node_row:?}");
            ensure!(amount(&node_row[3], "Mi")? > 0, "node memory: {node_row:?}");
            ensure!(node_row[2].ends_with('%') && node_row[4].ends_with('%'));

            let pod_row = loop {
                let got = k(&["top", "pod", "-l", "app=burn"])?;
                if let Ok(out) = &got {
                    if let Some(r) = row(out, &["NAME", "CPU(cores)", "MEMORY(bytes)"], "burn")? {
                        // the pod's first window may start before the loop spun up
                        if amount(&r[1], "m")? > 0 {
                            break r;
                        }
                    }
                }
                if Instant::now() > deadline {
                    bail!("kubectl top pod -l app=burn: {got:?}");
                }
                std::thread::sleep(Duration::from_secs(1));
            };
            ensure!(amount(&pod_row[2], "Mi")? > 0, "pod memory: {pod_row:?}");
            eprintln!("kubectl top node: {node_row:?}; kubectl top pod: {pod_row:?}");

            // by name, with its containers
            let out = k(&["top", "pod", "burn", "--containers"])?
                .map_err(|e| anyhow::anyhow!("kubectl top pod burn --containers: {e}"))?;
            let header = ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"];
            let r = row(&out, &header, "burn")?.with_context(|| out.clone())?;
            ensure!(r[1] == "main", "{out}");
            let out = k(&["top", "node", &node])?
                .map_err(|e| anyhow::anyhow!("kubectl top node {node}: {e}"))?;
            ensure!(out.contains(&node), "{out}");
            // a selector nothing matches: no pod, kubectl's message
            match k(&["top", "pod", "-l", "app=none"])? {
                Ok(out) => ensure!(out.trim().is_empty(), "{out:?}"),
                Err(e) => ensure!(e.contains("No resources found"), "{e}"),
            }

            // the objects, as metrics-server serves them
            let raw = k(&[
                "get",
                "--raw",
                &format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}"),
            ])?
            .map_err(|e| anyhow::anyhow!("get --raw nodes/{node}: {e}"))?;
            let v: serde_json::Value = serde_json::from_str(&raw)?;
            ensure!(
                v["kind"] == "NodeMetrics" && v["metadata"]["name"] == node,
                "{v}"
            );
            ensure!(
                v["usage"]["cpu"].is_string() && v["usage"]["memory"].is_string(),
                "{v}"
            );
            ensure!(
                v["window"].as_str().is_some_and(|w| w.ends_with('s')),
                "{v}"
            );
            let raw = k(&[
                "get",
                "--raw",
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
            ])?
            .map_err(|e| anyhow::anyhow!("get --raw pods: {e}"))?;
            let v: serde_json::Value = serde_json::from_str(&raw)?;
            ensure!(v["kind"] == "PodMetricsList", "{v}");
            let item = v["items"]
                .as_array()
                .and_then(|i| i.iter().find(|p| p["metadata"]["name"] == "burn"))
                .with_context(|| format!("no burn in {v}"))?;
            ensure!(item["metadata"]["labels"]["app"] == "burn", "{item}");
            ensure!(item["containers"][0]["name"] == "main", "{item}");
            match k(&[
                "get",
                "--raw",
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
            ])? {
                Ok(out) => bail!("a pod that does not exist has metrics: {out}"),
                Err(e) => ensure!(e.contains("NotFound") || e.contains("not found"), "{e}"),
            }
            Ok(())
        })();
        // the API pod goes before the agent does (its cgroups with it)
        if let Err(e) = k(&["delete", "pod", "burn", "--wait=false"])? {
            bail!("kubectl delete: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent
            .pods()?
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("burn"))
        {
            ensure!(Instant::now() < deadline, "the pod burn is still there");
            std::thread::sleep(Duration::from_millis(500));
        }
        outcome?;
        drop(standin);
        Ok(())
    })
}
