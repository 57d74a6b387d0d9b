//! Probes end to end: a real `kubenode agent` probing busybox containers over exec, HTTP (busybox
//! `httpd` with CGI scripts that check headers, fail, sleep and redirect) and TCP, observed
//! through the CLI (status, events, endpoints) and real traffic through a ClusterIP.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kubenode_integration::agent::in_node;
use kubenode_integration::pods::{container, pod_yaml, state, status, with_agent};
use kubenode_integration::{privileged, run_tests, TestAgent};

fn main() {
    run_tests(vec![
        privileged("exec_liveness_restarts_with_events", exec_liveness),
        privileged("http_liveness_header_then_500_restarts", http_liveness),
        privileged("tcp_readiness_waits_for_the_port", tcp_readiness),
        privileged("startup_probe_protects_and_kills", startup_probe),
        privileged("timeouts_redirects_named_and_closed_ports", http_edge_cases),
        privileged("readiness_drives_service_endpoints", readiness_endpoints),
    ])
}

fn running(p: &Pod, name: &str) -> bool {
    state(p, name).running.is_some()
}

fn restarts(p: &Pod, name: &str) -> i32 {
    container(p, name).map_or(0, |c| c.restart_count)
}

/// Container `name`'s `ready`, if the pod reports the container.
fn ready(p: &Pod, name: &str) -> Option<bool> {
    container(p, name).map(|c| c.ready)
}

/// Container `name`'s `started`, if the pod reports it.
fn started(p: &Pod, name: &str) -> Option<bool> {
    container(p, name)?.started
}

fn condition(p: &Pod, type_: &str) -> bool {
    status(p)
        .conditions
        .as_deref()
        .is_some_and(|a| a.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// `(message, count)` of the events with `reason` about pod `pod`.
fn events(agent: &TestAgent, pod: &str, reason: &str) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(agent
        .events()?
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some(pod)
        })
        .map(|e| (e.message.unwrap_or_default(), e.count.map_or(1, i64::from)))
        .collect())
}

/// Waits until an event with `reason` about `pod` whose message satisfies `pred` exists.
fn wait_event(
    agent: &TestAgent,
    pod: &str,
    reason: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> anyhow::Result<(String, i64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = events(agent, pod, reason)?;
        if let Some(e) = found.iter().find(|(m, _)| pred(m)) {
            return Ok(e.clone());
        }
        if Instant::now() > deadline {
            bail!("no matching {reason} event for {pod} within {timeout:?}; seen: {found:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn exec_liveness() -> anyhow::Result<()> {
    with_agent("pe", |agent| {
        let yaml = pod_yaml(
            "liveness-exec",
            &agent.image,
            r#"  containers:
  - name: liveness
    image: IMAGE
    args: ["/bin/sh", "-c", "touch /tmp/healthy; sleep 5; rm -f /tmp/healthy; sleep 600"]
    livenessProbe:
      exec:
        command: ["cat", "/tmp/healthy"]
      initialDelaySeconds: 2
      periodSeconds: 2
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo stopped by the probe > /dev/termination-log"]
"#,
        );
        agent.write_manifest("pod.yaml", &yaml)?;
        let name = agent.pod_name("liveness-exec");
        let first = agent.wait_pod(&name, Duration::from_secs(60), "running", |p| {
            running(p, "liveness")
        })?;
        ensure!(restarts(&first, "liveness") == 0);
        ensure!(
            ready(&first, "liveness") == Some(true),
            "no readiness probe: ready"
        );
        let restarted = agent.wait_pod(&name, Duration::from_secs(40), "restarted", |p| {
            restarts(p, "liveness") >= 1 && running(p, "liveness")
        })?;
        // The kill ran the preStop hook, as upstream's killContainer does.
        ensure!(
            container(&restarted, "liveness").and_then(|c| c
                .last_state
                .as_ref()?
                .terminated
                .as_ref()?
                .message
                .as_deref())
                == Some("stopped by the probe\n"),
            "{restarted:?}"
        );
        let (msg, count) = wait_event(agent, &name, "Unhealthy", Duration::from_secs(5), |m| {
            m.starts_with("Liveness probe failed: ")
        })?;
        ensure!(
            msg.contains("/tmp/healthy") && msg.contains("No such file or directory"),
            "{msg}"
        );
        ensure!(
            count >= 3,
            "three failures before the kill, counted: {count}"
        );
        wait_event(agent, &name, "Killing", Duration::from_secs(5), |m| {
            m == "Container liveness failed liveness probe, will be restarted"
        })?;
        let text = agent.kubenode_ok(&["describe", "pod", &name])?;
        ensure!(
            text.contains("    Liveness:       exec [cat /tmp/healthy] delay=2s timeout=1s period=2s #success=1 #failure=3\n      Last failure: cat: can't open '/tmp/healthy': No such file or directory ("),
            "{text}"
        );
        Ok(())
    })
}

/// A CGI script for busybox httpd: `body` is shell producing the response (CGI headers, or a
/// full `HTTP/1.1` status line for anything but 200).
fn cgi(name: &str, body: &str) -> String {
    format!(
        "cat > /www/cgi-bin/{name} <<'EOF'\n#!/bin/sh\n{body}\nEOF\nchmod +x /www/cgi-bin/{name}\n"
    )
}

/// The container command: write CGI scripts, then (after `delay` seconds) serve on 8080.
fn httpd_command(scripts: &[String], delay: u32) -> String {
    let mut s = String::from("mkdir -p /www/cgi-bin\n");
    for script in scripts {
        s.push_str(script);
    }
    s.push_str(&format!("sleep {delay}\nexec httpd -f -p 8080 -h /www\n"));
    // As a YAML block scalar indented under `- |`.
    s.lines()
        .map(|l| format!("      {l}\n"))
        .collect::<String>()
}

const OK: &str = r"printf 'Content-Type: text/plain\r\n\r\nok\n'";
const FAIL_500: &str =
    r"printf 'HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nbroken\n'";

fn http_liveness() -> anyhow::Result<()> {
    with_agent("ph", |agent| {
        let healthz = cgi(
            "healthz",
            &format!(
                "if [ \"$HTTP_X_CUSTOM_HEADER\" = Awesome ] && [ ! -e /tmp/broken ]; then {OK}; else {FAIL_500}; fi"
            ),
        );
        let yaml = pod_yaml(
            "liveness-http",
            &agent.image,
            &format!(
                r#"  containers:
  - name: web
    image: IMAGE
    command:
    - sh
    - -c
    - |
{}    livenessProbe:
      httpGet:
        path: /cgi-bin/healthz
        port: 8080
        httpHeaders:
        - name: X-Custom-Header
          value: Awesome
      periodSeconds: 1
      failureThreshold: 2
"#,
                httpd_command(&[healthz], 0)
            ),
        );
        agent.write_manifest("pod.yaml", &yaml)?;
        let name = agent.pod_name("liveness-http");
        agent.wait_pod(&name, Duration::from_secs(60), "running", |p| {
            running(p, "web")
        })?;
        // The server answers 500 without the header: 4 s without a failure show it was sent.
        std::thread::sleep(Duration::from_secs(4));
        let pod = agent.pod(&name)?.context("pod gone")?;
        ensure!(restarts(&pod, "web") == 0, "{pod:?}");
        // (A first probe may have found the port not open yet: that is not a 500.)
        let unhealthy = events(agent, &name, "Unhealthy")?;
        ensure!(
            !unhealthy.iter().any(|(m, _)| m.contains("statuscode")),
            "{unhealthy:?}"
        );
        agent.kubenode_ok(&["exec", &name, "--", "touch", "/tmp/broken"])?;
        agent.wait_pod(&name, Duration::from_secs(30), "restarted", |p| {
            restarts(p, "web") >= 1 && running(p, "web")
        })?;
        let (_, count) = wait_event(agent, &name, "Unhealthy", Duration::from_secs(5), |m| {
            m == "Liveness probe failed: HTTP probe failed with statuscode: 500"
        })?;
        ensure!(count >= 2, "{count}");
        wait_event(agent, &name, "Killing", Duration::from_secs(5), |m| {
            m == "Container web failed liveness probe, will be restarted"
        })?;
        // The new instance has no /tmp/broken: it stays up.
        std::thread::sleep(Duration::from_secs(3));
        let pod = agent.pod(&name)?.context("pod gone")?;
        ensure!(
            restarts(&pod, "web") == 1 && running(&pod, "web"),
            "{pod:?}"
        );
        Ok(())
    })
}

fn tcp_readiness() -> anyhow::Result<()> {
    with_agent("pt", |agent| {
        // The server starts when the test opens the gate (/tmp/open), not after a delay the
        // test would race: liveness tolerates 30 failures, far more than the test needs.
        let yaml = pod_yaml(
            "goproxy",
            &agent.image,
            &format!(
                r#"  containers:
  - name: goproxy
    image: IMAGE
    command:
    - sh
    - -c
    - |
{}    ports: [{{containerPort: 8080}}]
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {{port: 8080}}
      initialDelaySeconds: 2
      periodSeconds: 1
      failureThreshold: 30
"#,
                httpd_command(
                    &["until [ -e /tmp/open ]; do sleep 0.1; done\n".to_string()],
                    0
                )
            ),
        );
        agent.write_manifest("pod.yaml", &yaml)?;
        let name = agent.pod_name("goproxy");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", |p| {
            running(p, "goproxy")
        })?;
        let ip = status(&pod).pod_ip.clone().context("podIP")?;
        // Until the port opens the pod is Running but not Ready, and readiness says why.
        wait_event(agent, &name, "Unhealthy", Duration::from_secs(30), |m| {
            m.starts_with("Readiness probe failed: dial tcp")
        })?;
        let p = agent.pod(&name)?.context("pod gone")?;
        ensure!(
            !condition(&p, "Ready") && ready(&p, "goproxy") == Some(false),
            "Ready before its port opened: {p:?}"
        );
        agent.kubenode_ok(&["exec", &name, "--", "touch", "/tmp/open"])?;
        let p = agent.wait_pod(&name, Duration::from_secs(20), "Ready", |p| {
            condition(p, "Ready") && condition(p, "ContainersReady")
        })?;
        ensure!(ready(&p, "goproxy") == Some(true));
        // The port is open now, from the node.
        in_node(
            agent,
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                &format!("http://{ip}:8080/"),
            ],
        )?;
        let refused = events(agent, &name, "Unhealthy")?;
        ensure!(
            refused.iter().any(|(m, _)| m
                == &format!(
                    "Readiness probe failed: dial tcp {ip}:8080: connect: connection refused"
                )),
            "{refused:?}"
        );
        std::thread::sleep(Duration::from_secs(3));
        let p = agent.pod(&name)?.context("pod gone")?;
        ensure!(restarts(&p, "goproxy") == 0, "never restarted: {p:?}");
        ensure!(events(agent, &name, "Killing")?.is_empty());
        Ok(())
    })
}

fn startup_probe() -> anyhow::Result<()> {
    with_agent("ps", |agent| {
        let body = |script: &str, threshold: u32| {
            format!(
                r#"  containers:
  - name: app
    image: IMAGE
    command: ["sh", "-c", "{script}"]
    startupProbe:
      exec: {{command: ["cat", "/tmp/started"]}}
      failureThreshold: {threshold}
      periodSeconds: 1
    livenessProbe:
      exec: {{command: ["cat", "/tmp/started"]}}
      failureThreshold: 1
      periodSeconds: 1
"#
            )
        };
        agent.write_manifest(
            "slow.yaml",
            &pod_yaml(
                "slow",
                &agent.image,
                &body("sleep 6; touch /tmp/started; sleep 600", 30),
            ),
        )?;
        agent.write_manifest(
            "never.yaml",
            &pod_yaml("never", &agent.image, &body("sleep 600", 3)),
        )?;
        let slow = agent.pod_name("slow");
        let never = agent.pod_name("never");
        let p = agent.wait_pod(&slow, Duration::from_secs(60), "running", |p| {
            running(p, "app")
        })?;
        ensure!(
            started(&p, "app") == Some(false) && ready(&p, "app") == Some(false),
            "{p:?}"
        );
        let p = agent.wait_pod(&slow, Duration::from_secs(30), "started", |p| {
            started(p, "app") == Some(true)
        })?;
        ensure!(
            ready(&p, "app") == Some(true),
            "no readiness probe: ready once started"
        );
        ensure!(
            restarts(&p, "app") == 0,
            "the liveness probe was held back: {p:?}"
        );
        agent.wait_pod(
            &never,
            Duration::from_secs(30),
            "killed and restarted",
            |p| restarts(p, "app") >= 1,
        )?;
        wait_event(agent, &never, "Killing", Duration::from_secs(5), |m| {
            m == "Container app failed startup probe, will be restarted"
        })?;
        let (_, count) = wait_event(agent, &never, "Unhealthy", Duration::from_secs(5), |m| {
            m.starts_with("Startup probe failed: ")
        })?;
        ensure!(count >= 3, "{count}");
        let liveness = events(agent, &never, "Unhealthy")?;
        ensure!(
            !liveness.iter().any(|(m, _)| m.starts_with("Liveness")),
            "liveness ran before startup succeeded: {liveness:?}"
        );
        let p = agent.pod(&slow)?.context("pod gone")?;
        ensure!(restarts(&p, "app") == 0, "{p:?}");
        Ok(())
    })
}

fn http_edge_cases() -> anyhow::Result<()> {
    with_agent("px", |agent| {
        let scripts = [
            cgi("ok", OK),
            cgi(
                "redirect",
                r"printf 'HTTP/1.1 302 Found\r\nLocation: /cgi-bin/ok\r\n\r\n'",
            ),
            cgi(
                "away",
                r"printf 'HTTP/1.1 302 Found\r\nLocation: http://elsewhere.invalid/\r\n\r\nmoved\n'",
            ),
            cgi("slow", &format!("sleep 3; {OK}")),
        ];
        let readiness = |name: &str, probe: &str| {
            format!(
                "  - name: {name}\n    image: IMAGE\n    command: [\"sleep\", \"600\"]\n    readinessProbe:\n{probe}      periodSeconds: 1\n"
            )
        };
        let yaml = pod_yaml(
            "edges",
            &agent.image,
            &format!(
                r#"  containers:
  - name: web
    image: IMAGE
    command:
    - sh
    - -c
    - |
{}    ports: [{{containerPort: 8080, name: http}}]
    readinessProbe:
      httpGet: {{path: /cgi-bin/redirect, port: http}}
      periodSeconds: 1
{}{}{}"#,
                httpd_command(&scripts, 0),
                readiness("away", "      httpGet: {path: /cgi-bin/away, port: 8080}\n"),
                readiness(
                    "slow",
                    "      httpGet: {path: /cgi-bin/slow, port: 8080}\n      timeoutSeconds: 1\n"
                ),
                readiness("closed", "      tcpSocket: {port: 9999}\n"),
            ),
        );
        agent.write_manifest("pod.yaml", &yaml)?;
        let name = agent.pod_name("edges");
        let p = agent.wait_pod(&name, Duration::from_secs(60), "web and away ready", |p| {
            ready(p, "web") == Some(true) && ready(p, "away") == Some(true)
        })?;
        let ip = status(&p).pod_ip.clone().context("podIP")?;
        wait_event(agent, &name, "ProbeWarning", Duration::from_secs(10), |m| {
            m == "Readiness probe warning: Probe terminated redirects, Response body: moved\n"
        })?;
        wait_event(agent, &name, "Unhealthy", Duration::from_secs(10), |m| {
            m == format!("Readiness probe failed: Get \"http://{ip}:8080/cgi-bin/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
        })?;
        wait_event(agent, &name, "Unhealthy", Duration::from_secs(10), |m| {
            m == format!("Readiness probe failed: dial tcp {ip}:9999: connect: connection refused")
        })?;
        let p = agent.pod(&name)?.context("pod gone")?;
        ensure!(ready(&p, "slow") == Some(false), "{p:?}");
        ensure!(ready(&p, "closed") == Some(false), "{p:?}");
        ensure!(
            !condition(&p, "Ready") && !condition(&p, "ContainersReady"),
            "{p:?}"
        );
        ensure!(
            ["web", "away", "slow", "closed"]
                .iter()
                .all(|c| restarts(&p, c) == 0),
            "readiness never restarts: {p:?}"
        );
        Ok(())
    })
}

/// `(ready, not ready)` addresses of Endpoints `name`.
fn endpoint_ips(agent: &TestAgent, name: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let list: Vec<Endpoints> = agent.get_list(&["endpoints", name])?;
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in list.into_iter().flat_map(|e| e.subsets.unwrap_or_default()) {
        for (addresses, into) in [
            (subset.addresses, &mut ready),
            (subset.not_ready_addresses, &mut not_ready),
        ] {
            into.extend(addresses.unwrap_or_default().into_iter().map(|a| a.ip));
        }
    }
    Ok((ready, not_ready))
}

/// One GET through the ClusterIP from the node: `Some(body)` or `None` when refused.
fn via_cluster_ip(agent: &TestAgent) -> Option<String> {
    in_node(
        agent,
        &[
            "curl",
            "-s",
            "--max-time",
            "2",
            "http://10.96.0.50/cgi-bin/ok",
        ],
    )
    .ok()
}

fn readiness_endpoints() -> anyhow::Result<()> {
    with_agent("pr", |agent| {
        // Locally generated traffic to a ClusterIP needs a route before the NAT rules apply.
        agent
            .node
            .ip(&["route", "add", "10.96.0.0/12", "dev", "node0"])?;
        let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  clusterIP: 10.96.0.50\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}\n";
        agent.write_manifest("svc.yaml", svc)?;
        let yaml = pod_yaml(
            "web",
            &agent.image,
            &format!(
                r#"  containers:
  - name: web
    image: IMAGE
    command:
    - sh
    - -c
    - |
{}    readinessProbe:
      exec: {{command: ["cat", "/tmp/ready"]}}
      periodSeconds: 1
      failureThreshold: 1
"#,
                httpd_command(&[cgi("ok", OK)], 0)
            ),
        );
        agent.write_manifest("pod.yaml", &yaml)?;
        let name = agent.pod_name("web");
        let p = agent.wait_pod(&name, Duration::from_secs(60), "running", |p| {
            running(p, "web")
        })?;
        let ip = status(&p).pod_ip.clone().context("podIP")?;
        let wait_endpoints = |want_ready: bool| -> anyhow::Result<()> {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let (ready, not_ready) = endpoint_ips(agent, "web")?;
                let ok = if want_ready {
                    ready.contains(&ip) && !not_ready.contains(&ip)
                } else {
                    not_ready.contains(&ip) && !ready.contains(&ip)
                };
                if ok {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("endpoints never became ready={want_ready}: ready {ready:?}, not ready {not_ready:?}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        wait_endpoints(false)?;
        ensure!(
            via_cluster_ip(agent).is_none(),
            "traffic to a not-ready pod"
        );
        agent.kubenode_ok(&["exec", &name, "--", "touch", "/tmp/ready"])?;
        wait_endpoints(true)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut body = None;
        while body.is_none() && Instant::now() < deadline {
            body = via_cluster_ip(agent);
            std::thread::sleep(Duration::from_millis(300));
        }
        ensure!(body.as_deref() == Some("ok\n"), "{body:?}");
        agent.kubenode_ok(&["exec", &name, "--", "rm", "/tmp/ready"])?;
        wait_endpoints(false)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while via_cluster_ip(agent).is_some() {
            ensure!(
                Instant::now() < deadline,
                "traffic still reaches the not-ready pod"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let p = agent.pod(&name)?.context("pod gone")?;
        ensure!(restarts(&p, "web") == 0 && !condition(&p, "Ready"), "{p:?}");
        Ok(())
    })
}
