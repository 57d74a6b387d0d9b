//! cluster-bench: the targets of cluster mode (issue 16), measured against the stand-in API
//! server with a real agent (`kubenode agent --kubeconfig`) in its own node namespace.
//!
//! 1. Pod start from the API: a pod created in the API already bound to the node
//!    (`spec.nodeName`) → `Running` and `Ready` in the API, as the stand-in's store has it (read
//!    in-process every millisecond), over `--runs N` pods (default 20), one at a time; and,
//!    interleaved with them on the same agent, the standalone start of the same pod (a manifest
//!    written into the static-pod directory → Running with its container started in the
//!    read-only port's `/pods`, polled every 2 ms). Prints p50/p99 of both and the ratio of the
//!    p50s (target ≤ 1.3).
//! 2. Steady state: with `--pods P` API pods running (default 100) and things settled, the
//!    requests the agent makes to the API server over `--window S` seconds (default 60), as the
//!    stand-in counts them (a watch is one request however long it streams); the rate (target
//!    ≤ 0.2 req/s) and the requests by verb and resource.
//! 3. The agent's RSS (`VmRSS`, anonymous and file-backed) with those pods, after the window
//!    (target ≤ 40 MiB); and its CPU (`utime + stime`) to start them and over the window.
//!    Then `GET /stats/summary` with those pods (issue 18: ≤ 20 ms with 100 pods), 30 times (`--summaries N`)
//!    on the agent's socket: p50/p99 and the agent's CPU per request.
//!
//! 4. `--objects` instead (issue 17): `--pods P` API pods (default 100), each with the projected
//!    `kube-api-access-*` volume exactly as ServiceAccount admission writes it (a
//!    TokenRequest token, `kube-root-ca.crt`, the namespace) and a `configMap` volume, created
//!    one at a time: created → Running and Ready in the API, p50/p90; then the agent's CPU
//!    (`/proc/<pid>/stat` utime + stime) over `--window S` s while it keeps them current, and
//!    after one change of the ConfigMap: until every pod's file shows it, and the CPU over the
//!    window that follows.
//!
//! Pods are created and deleted with HTTP requests to the stand-in (from inside the node
//! namespace, where it serves); the bench makes none during the window.
//!
//! Run as root: `cargo run -p kubenode-integration --bin cluster-bench [-- --runs N --pods P
//! --window S]` (it uses the `kubenode` binary of the same profile). Ctrl-C (SIGINT) or SIGTERM
//! stops it at the next step and removes what it made (API pods, pods, agent, node namespace,
//! directories) before it exits with 130. `CLUSTER_BENCH_TAG=TAG` names everything it makes
//! after TAG (default: a fresh tag).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kubenode_integration::apiserver::ApiServer;
use kubenode_integration::{bench_arg, interrupt, unique_tag, TestAgent};
use serde_json::{json, Value};

fn static_pod_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// The same pod as [`static_pod_yaml`], bound to `node`, for the API.
fn api_pod(name: &str, node: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}],
        },
    })
}

/// Whether a pod (as JSON) is `Running` with a `Ready` condition that is `True`.
fn running_and_ready(pod: &Value) -> bool {
    let status = &pod["status"];
    status["phase"] == "Running"
        && status["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Whether a pod (as JSON) is `Running` with every container started.
fn running(pod: &Value) -> bool {
    let status = &pod["status"];
    status["phase"] == "Running"
        && status["containerStatuses"].as_array().is_some_and(|cs| {
            !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
        })
}

/// An agent joined to a stand-in that serves inside the agent's node namespace, and the API
/// pods the bench created (deleted on drop, before the agent goes).
struct Cluster {
    // Dropped first (after `Drop::drop` deleted the API pods): the agent removes its pods.
    agent: TestAgent,
    server: ApiServer,
    api_pods: Vec<String>,
}

impl Cluster {
    fn start(tag: &str) -> anyhow::Result<Cluster> {
        // The read-only port is off by default; the static pods' start is seen in its /pods.
        let mut agent = TestAgent::start_with_config(tag, Some("readOnlyPort: 10255\n"))?;
        // Restarted with the kubeconfig of a stand-in that serves in the node's namespace.
        let (server, _kubeconfig) = kubenode_integration::cluster::join_standin(&mut agent, &[])?;
        let cluster = Cluster {
            agent,
            server,
            api_pods: Vec::new(),
        };
        let node = cluster.agent.node_name().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster.server.object("nodes", "", &node).is_none() {
            interrupt::check()?;
            if Instant::now() > deadline {
                bail!("the agent did not register Node {node} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// Sends `method` `path` (with a JSON `body`) to the stand-in from inside the node
    /// namespace; a 404 is `Ok(false)`.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<bool> {
        let url = format!("{}{path}", self.server.url());
        self.agent.node.run_in(|| -> anyhow::Result<bool> {
            let result = match (method, body) {
                ("POST", Some(b)) => ureq::post(&url)
                    .header("Content-Type", "application/json")
                    .send(serde_json::to_vec(b)?),
                ("DELETE", None) => ureq::delete(&url).call(),
                ("PATCH", Some(b)) => ureq::patch(&url)
                    .header("Content-Type", "application/merge-patch+json")
                    .send(serde_json::to_vec(b)?),
                _ => bail!("unsupported request {method} {path}"),
            };
            match result {
                Ok(_) => Ok(true),
                Err(ureq::Error::StatusCode(404)) => Ok(false),
                Err(e) => Err(anyhow::anyhow!("{method} {path}: {e}")),
            }
        })?
    }

    /// Creates API pods `names` bound to the node (one request each).
    fn create(&mut self, names: &[String]) -> anyhow::Result<()> {
        self.create_with(names, api_pod)
    }

    /// Creates API pods `names` made by `make(name, node, image)`.
    fn create_with(
        &mut self,
        names: &[String],
        make: fn(&str, &str, &str) -> Value,
    ) -> anyhow::Result<()> {
        let node = self.agent.node_name().to_string();
        for n in names {
            interrupt::check()?;
            self.api_pods.push(n.clone());
            self.request(
                "POST",
                "/api/v1/namespaces/default/pods",
                Some(&make(n, &node, &self.agent.image)),
            )?;
        }
        Ok(())
    }

    /// Force-deletes API pod `name` (grace period 0: gone from the API at once).
    fn delete(&mut self, name: &str) -> anyhow::Result<()> {
        self.request(
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{name}?gracePeriodSeconds=0"),
            None,
        )?;
        self.api_pods.retain(|n| n != name);
        Ok(())
    }

    /// Waits (bounded by `limit`) until every API pod in `names` is Running and Ready in the
    /// stand-in's store; returns when each became so, from `start`.
    fn wait_api_ready(
        &self,
        names: &[String],
        start: Instant,
        limit: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut done: Vec<Option<Duration>> = vec![None; names.len()];
        while done.iter().any(Option::is_none) {
            interrupt::check()?;
            let now = start.elapsed();
            if now > limit {
                bail!(
                    "API pods not Running and Ready after {limit:?}: {}",
                    pending(names, &done)
                );
            }
            for (n, d) in names.iter().zip(done.iter_mut()) {
                if d.is_none()
                    && self
                        .server
                        .object("pods", "default", n)
                        .is_some_and(|p| running_and_ready(&p))
                {
                    *d = Some(now);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(done.into_iter().flatten().collect())
    }

    /// Polls `/pods` on the node's read-only port every 2 ms until `name` runs every container
    /// (`present`) or is gone (`!present`); returns the time it took from `start`.
    fn wait_local(
        &self,
        name: &str,
        present: bool,
        start: Instant,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        self.agent.node.run_in(|| -> anyhow::Result<Duration> {
            loop {
                interrupt::check()?;
                if start.elapsed() > limit {
                    let what = if present { "Running" } else { "gone" };
                    bail!("pod {name} not {what} in /pods after {limit:?}");
                }
                let body = ureq::get("http://127.0.0.1:10255/pods")
                    .call()?
                    .body_mut()
                    .read_to_string()?;
                let list: Value = serde_json::from_str(&body)?;
                let now = start.elapsed();
                let pod = list["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|p| p["metadata"]["name"] == name));
                if (present && pod.is_some_and(running)) || (!present && pod.is_none()) {
                    return Ok(now);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })?
    }

    /// One API pod: created → Running and Ready in the API; then deleted and gone from the
    /// node.
    fn api_start(&mut self, name: &str) -> anyhow::Result<Duration> {
        let names = [name.to_string()];
        let t = Instant::now();
        self.create(&names)?;
        let took = self.wait_api_ready(&names, t, Duration::from_secs(60))?[0];
        self.delete(name)?;
        self.wait_local(name, false, Instant::now(), Duration::from_secs(60))?;
        Ok(took)
    }

    /// One static pod: manifest written → Running in `/pods`; then its manifest removed and
    /// the pod gone from the node.
    fn static_start(&self, name: &str) -> anyhow::Result<Duration> {
        let file = format!("{name}.yaml");
        let full = self.agent.pod_name(name);
        let t = Instant::now();
        self.agent
            .write_manifest(&file, &static_pod_yaml(name, &self.agent.image))?;
        let took = self.wait_local(&full, true, t, Duration::from_secs(60))?;
        self.agent.remove_manifest(&file)?;
        self.wait_local(&full, false, Instant::now(), Duration::from_secs(60))?;
        Ok(took)
    }
}

impl Drop for Cluster {
    /// Deletes the API pods left and waits (bounded) until the node runs none of them; the
    /// agent's own drop then removes the static pods, the agent and the node.
    fn drop(&mut self) {
        for n in std::mem::take(&mut self.api_pods) {
            let _ = self.request(
                "DELETE",
                &format!("/api/v1/namespaces/default/pods/{n}?gracePeriodSeconds=0"),
                None,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.agent.pods() {
                Ok(p)
                    if p.iter()
                        .all(|p| p.metadata.namespace.as_deref() != Some("default")) =>
                {
                    break
                }
                Err(_) => break,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

fn pending(names: &[String], done: &[Option<Duration>]) -> String {
    names
        .iter()
        .zip(done)
        .filter(|(_, d)| d.is_none())
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))
        .with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

/// [`api_pod`] with the projected `kube-api-access-*` volume as ServiceAccount admission adds
/// it and a `configMap` volume of `bench-cfg`.
fn objects_pod(name: &str, node: &str, image: &str) -> Value {
    let mut pod = api_pod(name, node, image);
    pod["spec"]["volumes"] = json!([
        {"name": "kube-api-access-bench", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}},
        {"name": "cfg", "configMap": {"name": "bench-cfg"}}
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "kube-api-access-bench", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true},
        {"name": "cfg", "mountPath": "/etc/cfg"}
    ]);
    pod
}

/// The agent's CPU time so far (`utime + stime` of `/proc/<pid>/stat`).
fn cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// `--objects`: the issue-17 bench (see the module doc, 4.).
fn objects_bench(c: &mut Cluster, pid: u32, many: usize, window: u64) -> anyhow::Result<()> {
    let cm = |level: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "bench-cfg", "namespace": "default"}, "data": {"level": level}})
    };
    c.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&cm("info")),
    )?;
    // The stand-in publishes `kube-root-ca.crt` only when it has a CA (HTTPS): make it here.
    if c.server
        .object("configmaps", "default", "kube-root-ca.crt")
        .is_none()
    {
        c.request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
                "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nbench\n-----END CERTIFICATE-----\n"}})),
        )?;
    }
    // Warm the image store (pull latency is not part of the set-up).
    c.api_start("warm-api")?;
    let mut took = Vec::new();
    let names: Vec<String> = (0..many).map(|i| format!("o{i}")).collect();
    for n in &names {
        let one = [n.clone()];
        let t = Instant::now();
        c.create_with(&one, objects_pod)?;
        took.push(c.wait_api_ready(&one, t, Duration::from_secs(120))?[0]);
    }
    took.sort();
    println!(
        "{many} API pods with a kube-api-access projected volume and a configMap volume, one at a time (created → Running and Ready in the API): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.9)),
        ms(percentile(&took, 1.0))
    );
    interrupt::sleep(Duration::from_secs(15))?;
    let before = cpu(pid)?;
    interrupt::sleep(Duration::from_secs(window))?;
    let steady = cpu(pid)? - before;
    println!(
        "agent CPU keeping {many} pods' volumes current over {window} s: {:.2} s ({:.2} % of one core)",
        steady.as_secs_f64(),
        steady.as_secs_f64() * 100.0 / window as f64
    );
    // One ConfigMap change: until every pod's file has it, and the CPU of the window after.
    let uids: Vec<String> = names
        .iter()
        .filter_map(|n| c.server.object("pods", "default", n))
        .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
        .collect();
    let before = cpu(pid)?;
    let t = Instant::now();
    c.request(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/bench-cfg",
        Some(&json!({"data": {"level": "debug"}})),
    )?;
    let file = |uid: &str| {
        c.agent
            .dir
            .join("root/pods")
            .join(uid)
            .join("volumes/kubernetes.io~configmap/cfg/level")
    };
    loop {
        interrupt::check()?;
        let seen = uids
            .iter()
            .filter(|u| std::fs::read_to_string(file(u)).is_ok_and(|v| v == "debug"))
            .count();
        if seen == uids.len() {
            break;
        }
        if t.elapsed() > Duration::from_secs(180) {
            bail!(
                "{seen} of {} pods saw the ConfigMap change within 180 s",
                uids.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let propagated = t.elapsed();
    let rest = Duration::from_secs(window).saturating_sub(propagated);
    interrupt::sleep(rest)?;
    let after_change = cpu(pid)? - before;
    println!(
        "one ConfigMap change: in all {} pods' files after {:.0} ms; agent CPU over the {} s from the change: {:.2} s",
        uids.len(),
        ms(propagated),
        t.elapsed().as_secs(),
        after_change.as_secs_f64()
    );
    Ok(())
}

fn main() {
    let result = interrupt::install().and_then(|()| bench());
    interrupt::exit("cluster-bench", result)
}

/// The whole bench; everything it makes is owned by the cluster, dropped on the way out.
fn bench() -> anyhow::Result<()> {
    let runs = bench_arg("--runs", 20).max(1) as usize;
    let many = bench_arg("--pods", 100).max(1) as usize;
    let window = bench_arg("--window", 60).max(1);
    let tag = std::env::var("CLUSTER_BENCH_TAG").unwrap_or_else(|_| unique_tag("kcb"));
    let mut c = Cluster::start(&tag)?;
    let pid = c.agent.pid().context("agent pid")?;
    if std::env::args().any(|a| a == "--objects") {
        return objects_bench(&mut c, pid, many, window);
    }

    // Warm the image store and both paths (pull latency is not part of pod start).
    c.api_start("warm-api")?;
    c.static_start("warm-static")?;

    // Interleaved, one pod at a time on an otherwise empty node; which goes first alternates.
    let (mut api, mut local) = (Vec::new(), Vec::new());
    for i in 0..runs {
        interrupt::check()?;
        if i % 2 == 0 {
            api.push(c.api_start(&format!("a{i}"))?);
            local.push(c.static_start(&format!("s{i}"))?);
        } else {
            local.push(c.static_start(&format!("s{i}"))?);
            api.push(c.api_start(&format!("a{i}"))?);
        }
    }
    api.sort();
    local.sort();
    let (api50, local50) = (percentile(&api, 0.5), percentile(&local, 0.5));
    println!(
        "API pod start ({runs} pods, created bound to the node → Running and Ready in the API): p50 {:.1} ms, p99 {:.1} ms",
        ms(api50),
        ms(percentile(&api, 0.99))
    );
    println!(
        "static pod start ({runs} pods, manifest written → Running in /pods): p50 {:.1} ms, p99 {:.1} ms",
        ms(local50),
        ms(percentile(&local, 0.99))
    );
    println!(
        "ratio API/static (p50): {:.2} (target ≤ 1.3)",
        api50.as_secs_f64() / local50.as_secs_f64()
    );

    // Steady state with `many` API pods.
    let names: Vec<String> = (0..many).map(|i| format!("m{i}")).collect();
    let cpu_start = cpu(pid)?;
    let t = Instant::now();
    c.create(&names)?;
    let all = c
        .wait_api_ready(&names, t, Duration::from_secs(600))?
        .into_iter()
        .max()
        .unwrap_or_default();
    let cpu_started = cpu(pid)? - cpu_start;
    println!(
        "{many} API pods: all Running and Ready in the API {:.0} ms after the first create; agent CPU {:.2} s",
        ms(all),
        cpu_started.as_secs_f64()
    );
    // Settled: past a node status pass, a lease renewal and the status manager's writes.
    interrupt::sleep(Duration::from_secs(15))?;
    let before = c.server.requests();
    let cpu_before = cpu(pid)?;
    interrupt::sleep(Duration::from_secs(window))?;
    let after = c.server.requests();
    let cpu_window = cpu(pid)? - cpu_before;
    let rss = status_kib(pid, "VmRSS")?;
    let (anon, file) = (status_kib(pid, "RssAnon")?, status_kib(pid, "RssFile")?);
    let diff: BTreeMap<&String, u64> = after
        .iter()
        .map(|(k, n)| (k, n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: u64 = diff.values().sum();
    println!(
        "requests to the API server with {many} pods over {window} s: {total} ({:.3} req/s; target ≤ 0.2)",
        total as f64 / window as f64
    );
    for (k, n) in &diff {
        println!("  {k}: {n}");
    }
    println!(
        "agent CPU with {many} pods over {window} s: {:.2} s ({:.2} % of one core)",
        cpu_window.as_secs_f64(),
        cpu_window.as_secs_f64() * 100.0 / window as f64
    );
    println!(
        "agent RSS with {many} pods: {:.1} MiB (anonymous {:.1}, file {:.1}; target ≤ 40 MiB)",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    stats_summary(&c, pid, many)
}

/// `GET /stats/summary` from the agent with `many` pods running (issue 18's target: ≤ 20 ms
/// with 100 pods): `--summaries` (30) requests one after another on the agent's socket (the
/// handler :10250 serves, without its TLS and authorization), each timed from the request's
/// first byte to the response's last; p50, p99, the body's size and the agent's CPU per
/// request.
fn stats_summary(c: &Cluster, pid: u32, many: usize) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let summaries = bench_arg("--summaries", 30).max(1) as usize;
    let socket = c
        .agent
        .dir
        .join("run")
        // kubenode_kubelet::config::SOCKET_FILE (the library does not depend on the kubelet)
        .join("kubenode.sock");
    let mut times = Vec::new();
    let mut bytes = 0;
    let cpu_before = cpu(pid)?;
    for _ in 0..summaries {
        interrupt::check()?;
        let mut s = std::os::unix::net::UnixStream::connect(&socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let t = Instant::now();
        s.write_all(
            b"GET /stats/summary HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )?;
        let mut response = Vec::new();
        s.read_to_end(&mut response)?;
        times.push(t.elapsed());
        let text = String::from_utf8_lossy(&response);
        if !text.starts_with("HTTP/1.1 200") {
            bail!("GET /stats/summary: {}", text.lines().next().unwrap_or(""));
        }
        let pods = text.matches("\"podRef\"").count();
        if pods < many {
            bail!("GET /stats/summary: {pods} pods in the summary, not {many} or more");
        }
        bytes = response.len();
    }
    let cpu_each = (cpu(pid)? - cpu_before) / summaries as u32;
    times.sort();
    println!(
        "GET /stats/summary with {many} pods ({summaries} requests on the agent's socket, {} KiB each): p50 {:.1} ms, p99 {:.1} ms, agent CPU {:.1} ms per request (target ≤ 20 ms)",
        bytes / 1024,
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(cpu_each)
    );
    Ok(())
}
