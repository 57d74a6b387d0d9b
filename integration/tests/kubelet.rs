//! The kubelet end to end, from the user's side: a real `kubenode agent` in its own node
//! namespace, manifests written into its directory, observed through the CLI and real traffic.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Event};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubenode_integration::agent::in_node;
use kubenode_integration::pods::{
    all_running, container, container_id, phase, pod_ip, pod_yaml, restarts, state, status,
    terminated, waiting_reason, with_agent,
};
use kubenode_integration::{privileged, run_tests, unique_tag, LeakGuard, TestAgent};
use serde_json::Value;

fn main() {
    run_tests(vec![
        privileged("web_pod_serves_its_ip_and_shares_localhost", web_pod),
        privileged("restart_policies_and_crash_back_off", restart_policies),
        privileged("init_containers_in_order_and_failure", init_containers),
        privileged("grace_period_then_sigkill_and_cleanup", grace_period),
        privileged(
            "manifest_edit_replaces_and_removal_cleans_up",
            edit_and_remove,
        ),
        privileged(
            "bad_manifests_and_missing_images_do_not_disturb_others",
            bad_input,
        ),
        privileged("agent_sigkill_then_restart_adopts_pods", agent_restart),
        privileged(
            "failed_pod_network_leaves_nothing_then_retries",
            failed_network,
        ),
        privileged(
            "agent_killed_during_pod_network_setup_recreates_the_sandbox",
            killed_during_network,
        ),
        privileged(
            "service_env_host_network_and_field_refs",
            env_and_host_network,
        ),
        privileged("termination_message_and_max_pods", termination_and_max_pods),
        privileged(
            "active_deadline_kills_the_pod_deadline_exceeded",
            active_deadline,
        ),
        privileged(
            "a_pod_past_its_deadline_stays_failed_after_an_agent_restart",
            deadline_survives_restart,
        ),
    ])
}

fn web_pod() -> anyhow::Result<()> {
    with_agent("kw", |agent| {
        let yaml = pod_yaml(
            "web",
            &agent.image,
            r#"  containers:
  - name: httpd
    image: IMAGE
    command: ["sh", "-c", "echo hello from $(hostname) > /var/www/index.html; exec httpd -f -p 8080 -h /var/www"]
    ports: [{containerPort: 8080, name: http}]
  - name: side
    image: IMAGE
    command: ["sh", "-c", "until wget -q -O- http://127.0.0.1:8080/; do sleep 0.2; done; sleep 3600"]
"#,
        );
        agent.write_manifest("web.yaml", &yaml)?;
        let name = agent.pod_name("web");
        let pod = agent.wait_pod(
            &name,
            Duration::from_secs(60),
            "Running with both containers",
            all_running,
        )?;
        let ip = status(&pod).pod_ip.clone().context("no podIP")?;
        ensure!(
            ip.starts_with("10.244.1."),
            "pod IP {ip} outside the node's pod CIDR"
        );
        ensure!(status(&pod).host_ip.as_deref() == Some(kubenode_integration::agent::NODE_IP));
        ensure!(status(&pod).qos_class.as_deref() == Some("BestEffort"));
        let ready = status(&pod).conditions.as_deref().context("conditions")?;
        for c in [
            "PodReadyToStartContainers",
            "Initialized",
            "ContainersReady",
            "Ready",
            "PodScheduled",
        ] {
            ensure!(
                ready.iter().any(|x| x.type_ == c && x.status == "True"),
                "condition {c} not True: {ready:?}"
            );
        }
        // Real traffic from the node to the pod IP.
        let body = in_node(
            agent,
            &[
                "busybox",
                "wget",
                "-q",
                "-O-",
                &format!("http://{ip}:8080/"),
            ],
        )?;
        ensure!(
            body.trim() == format!("hello from {name}"),
            "served {body:?}"
        );
        // The side container reached the web server over the pod's localhost: its log says so.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut logs = String::new();
        while Instant::now() < deadline && !logs.contains("hello from") {
            logs = agent.kubenode_ok(&["logs", &name, "-c", "side"])?;
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            logs.trim() == format!("hello from {name}"),
            "side logs {logs:?}"
        );
        // exec: stdout and exit code come back.
        let out =
            agent.kubenode_ok(&["exec", &name, "-c", "httpd", "--", "cat", "/etc/hostname"])?;
        ensure!(out.trim() == name, "hostname {out:?}");
        // Both containers are in the pod's network, IPC and UTS namespaces, not the host's.
        for kind in ["net", "ipc", "uts"] {
            let link = format!("/proc/self/ns/{kind}");
            let of = |c: &str| -> anyhow::Result<String> {
                Ok(agent
                    .kubenode_ok(&["exec", &name, "-c", c, "--", "readlink", &link])?
                    .trim()
                    .to_string())
            };
            let (web, side) = (of("httpd")?, of("side")?);
            let host = std::fs::read_link(&link)?.to_string_lossy().into_owned();
            ensure!(
                web == side && web != host,
                "{kind} namespaces: httpd {web}, side {side}, host {host}"
            );
        }
        let failed = agent.kubenode(&["exec", &name, "-c", "httpd", "--", "sh", "-c", "exit 3"])?;
        ensure!(
            failed.status.code() == Some(3),
            "exec exit code {:?}",
            failed.status
        );
        let hosts =
            agent.kubenode_ok(&["exec", &name, "-c", "httpd", "--", "cat", "/etc/hosts"])?;
        ensure!(hosts.contains(&format!("{ip}\t{name}")), "hosts {hosts}");
        let table = agent.kubenode_ok(&["get", "pods", "-o", "wide"])?;
        ensure!(table.starts_with("NAME"), "table {table}");
        ensure!(
            table.contains(&name)
                && table.contains("2/2")
                && table.contains("Running")
                && table.contains(&ip),
            "table {table}"
        );
        let describe = agent.kubenode_ok(&["describe", "pod", &name])?;
        ensure!(
            describe.contains("Started container httpd"),
            "describe {describe}"
        );
        // A static pod tolerates every NoExecute taint (the file source's default, as
        // upstream's), and describe lists it as kubectl does.
        ensure!(
            describe.lines().any(|l| l
                .strip_prefix("Tolerations:")
                .is_some_and(|t| t.trim() == ":NoExecute op=Exists")),
            "describe {describe}"
        );
        agent.remove_manifest("web.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(45))
    })
}

fn restart_policies() -> anyhow::Result<()> {
    with_agent("kr", |agent| {
        let one = |policy: &str, script: &str| {
            format!(
                "  restartPolicy: {policy}\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sh\", \"-c\", \"{script}\"]\n"
            )
        };
        agent.write_manifest(
            "never.yaml",
            &pod_yaml("never", &agent.image, &one("Never", "echo bye; exit 7")),
        )?;
        agent.write_manifest(
            "onfail.yaml",
            &pod_yaml("onfail", &agent.image, &one("OnFailure", "exit 0")),
        )?;
        agent.write_manifest(
            "always.yaml",
            &pod_yaml("always", &agent.image, &one("Always", "echo run; exit 1")),
        )?;

        let never = agent.wait_pod(
            &agent.pod_name("never"),
            Duration::from_secs(60),
            "Failed",
            |p| phase(p) == "Failed",
        )?;
        let t = terminated(&never, "c");
        ensure!(
            t.is_some_and(|t| t.exit_code == 7 && t.reason.as_deref() == Some("Error")),
            "never: {t:?}"
        );
        ensure!(restarts(&never, "c") == Some(0));
        let onfail = agent.wait_pod(
            &agent.pod_name("onfail"),
            Duration::from_secs(60),
            "Succeeded",
            |p| phase(p) == "Succeeded",
        )?;
        ensure!(terminated(&onfail, "c").and_then(|t| t.reason.as_deref()) == Some("Completed"));

        // Always: the first restart is immediate, the next waits out a 10 s back-off.
        let name = agent.pod_name("always");
        let first = agent.wait_pod(&name, Duration::from_secs(60), "restartCount 1", |p| {
            restarts(p, "c") >= Some(1)
        })?;
        let first_finish = last_terminated(&first, "c").and_then(|t| t.finished_at.clone());
        let waiting = agent.wait_pod(&name, Duration::from_secs(30), "CrashLoopBackOff", |p| {
            waiting_reason(p, "c") == Some("CrashLoopBackOff")
        })?;
        let msg = state(&waiting, "c")
            .waiting
            .as_ref()
            .and_then(|w| w.message.clone())
            .unwrap_or_default();
        ensure!(
            msg.starts_with("back-off 10s restarting failed container=c pod="),
            "message {msg}"
        );
        let second = agent.wait_pod(&name, Duration::from_secs(40), "restartCount 2", |p| {
            restarts(p, "c") >= Some(2)
        })?;
        let started = (state(&second, "c").running.as_ref())
            .and_then(|r| r.started_at.clone())
            .or(terminated(&second, "c").and_then(|t| t.started_at.clone()))
            .or(last_terminated(&second, "c").and_then(|t| t.started_at.clone()));
        let gap = secs_between(first_finish.as_ref(), started.as_ref())?;
        ensure!(
            gap >= 9.0,
            "second restart only {gap:.1}s after the first restart's previous finish"
        );
        let previous = agent.kubenode_ok(&["logs", &name, "--previous"])?;
        ensure!(previous.trim() == "run", "previous logs {previous:?}");
        let events = agent.events()?;
        ensure!(
            events
                .iter()
                .any(|e| is(e, "BackOff") && e.involved_object.name.as_deref() == Some(&name)),
            "no BackOff event"
        );
        Ok(())
    })
}

/// Seconds from `a` to `b`; a missing timestamp is an error.
fn secs_between(a: Option<&Time>, b: Option<&Time>) -> anyhow::Result<f64> {
    let (a, b) = (a.context("no start time")?, b.context("no end time")?);
    Ok(b.0.duration_since(a.0).as_secs_f64())
}

/// How container `name` terminated the time before its current state, if it did.
fn last_terminated<'a>(
    p: &'a k8s_openapi::api::core::v1::Pod,
    name: &str,
) -> Option<&'a ContainerStateTerminated> {
    container(p, name)?.last_state.as_ref()?.terminated.as_ref()
}

/// Whether event `e` has reason `reason`.
fn is(e: &Event, reason: &str) -> bool {
    e.reason.as_deref() == Some(reason)
}

/// The event's message (empty when absent).
fn message(e: &Event) -> &str {
    e.message.as_deref().unwrap_or_default()
}

fn init_containers() -> anyhow::Result<()> {
    with_agent("ki", |agent| {
        let ok = r#"  initContainers:
  - name: first
    image: IMAGE
    command: ["sh", "-c", "sleep 1; echo first"]
  - name: second
    image: IMAGE
    command: ["sh", "-c", "echo second"]
  containers:
  - name: app
    image: IMAGE
    command: ["sleep", "3600"]
"#;
        let bad = r#"  restartPolicy: Never
  initContainers:
  - name: broken
    image: IMAGE
    command: ["sh", "-c", "exit 3"]
  containers:
  - name: app
    image: IMAGE
    command: ["sleep", "3600"]
"#;
        agent.write_manifest("ok.yaml", &pod_yaml("ok", &agent.image, ok))?;
        agent.write_manifest("bad.yaml", &pod_yaml("bad", &agent.image, bad))?;
        let name = agent.pod_name("ok");
        let pending = agent.wait_pod(
            &name,
            Duration::from_secs(60),
            "Init:0/2 while the first runs",
            |p| {
                (status(p).init_container_statuses.as_deref())
                    .and_then(|s| s.first()?.state.as_ref())
                    .is_some_and(|s| s.running.is_some())
            },
        )?;
        ensure!(
            phase(&pending) == "Pending",
            "phase while initializing: {}",
            phase(&pending)
        );
        ensure!(waiting_reason(&pending, "app") == Some("PodInitializing"));
        let table = agent.kubenode_ok(&["get", "pods", &name])?;
        ensure!(table.contains("Init:0/2"), "table {table}");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        // Order: each init container started after the previous one finished, the app last.
        let pod = agent.pod(&name)?.context("pod")?;
        let inits = (status(&pod).init_container_statuses.as_deref()).context("init statuses")?;
        let t = |c: &ContainerStatus| c.state.as_ref().and_then(|s| s.terminated.clone());
        ensure!(
            inits
                .iter()
                .all(|c| t(c).and_then(|t| t.reason) == Some("Completed".into())),
            "{inits:?}"
        );
        let (first, second) = (t(&inits[0]), t(&inits[1]));
        ensure!(
            secs_between(
                first.as_ref().and_then(|t| t.finished_at.as_ref()),
                second.as_ref().and_then(|t| t.started_at.as_ref())
            )? >= 0.0,
            "second started before first finished"
        );
        let app_started = state(&pod, "app")
            .running
            .as_ref()
            .and_then(|r| r.started_at.as_ref());
        ensure!(
            secs_between(
                second.as_ref().and_then(|t| t.finished_at.as_ref()),
                app_started
            )? >= 0.0,
            "app started before init finished"
        );
        ensure!(agent.kubenode_ok(&["logs", &name, "-c", "first"])?.trim() == "first");

        let bad = agent.wait_pod(
            &agent.pod_name("bad"),
            Duration::from_secs(60),
            "Failed",
            |p| phase(p) == "Failed",
        )?;
        let init = (status(&bad).init_container_statuses.as_deref()).and_then(|s| s.first());
        ensure!(
            init.and_then(|c| c.state.as_ref()?.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 3),
            "{init:?}"
        );
        ensure!(
            state(&bad, "app").running.is_none(),
            "app ran after a failed init container"
        );
        let table = agent.kubenode_ok(&["get", "pods", &agent.pod_name("bad")])?;
        ensure!(table.contains("Init:Error"), "table {table}");
        Ok(())
    })
}

fn grace_period() -> anyhow::Result<()> {
    with_agent("kg", |agent| {
        // The containers leave marks in a hostPath directory: what they were sent, and that
        // they lived on after it. (The marks outlive the pod; timings would not be checks.)
        let marks = agent.dir.join("marks");
        let body = r#"  terminationGracePeriodSeconds: 3
  volumes:
  - name: marks
    hostPath: {path: MARKS, type: DirectoryOrCreate}
  containers:
  - name: stubborn
    image: IMAGE
    command: ["sh", "-c", "trap 'touch /marks/term' TERM; while true; do if [ -e /marks/term ]; then echo x >> /marks/after-term; fi; sleep 0.1; done"]
    volumeMounts: [{name: marks, mountPath: /marks}]
"#
        .replace("MARKS", &marks.to_string_lossy());
        agent.write_manifest("g.yaml", &pod_yaml("g", &agent.image, &body))?;
        let name = agent.pod_name("g");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        agent.remove_manifest("g.yaml")?;
        // The loop never ends by itself: the pod can only go through SIGKILL.
        agent.wait_gone(&name, Duration::from_secs(30))?;
        ensure!(
            marks.join("term").exists(),
            "the container was not sent SIGTERM before it was killed"
        );
        ensure!(
            std::fs::read_to_string(marks.join("after-term")).is_ok_and(|t| !t.is_empty()),
            "the container was killed at once after SIGTERM, without its grace period"
        );
        let events = agent.events()?;
        ensure!(
            events
                .iter()
                .any(|e| is(e, "Killing") && message(e) == "Stopping container stubborn"),
            "no Killing event"
        );
        // The image's STOPSIGNAL replaces SIGTERM: a shell that traps SIGQUIT (and marks which
        // signal came) ends at once instead of waiting out its 30 s grace period.
        let base = agent.layout().context("the agent's image")?.clone();
        let dir = kubenode_integration::TestDir::new(&unique_tag("kq"))?;
        let quit = kubenode_integration::derive_image(&base, dir.path(), |c| {
            c["config"]["StopSignal"] = "SIGQUIT".into();
        })?;
        let quit_image = agent.push_layout(&quit, "quitter", "1")?;
        let body = r#"  terminationGracePeriodSeconds: 30
  volumes:
  - name: marks
    hostPath: {path: MARKS, type: DirectoryOrCreate}
  containers:
  - name: quitter
    image: IMAGE
    command: ["sh", "-c", "trap 'touch /marks/quit; exit 0' QUIT; trap 'touch /marks/quitter-term' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{name: marks, mountPath: /marks}]
"#
        .replace("MARKS", &marks.to_string_lossy());
        agent.write_manifest("q.yaml", &pod_yaml("q", &quit_image, &body))?;
        let qname = agent.pod_name("q");
        agent.wait_pod(&qname, Duration::from_secs(60), "Running", all_running)?;
        agent.remove_manifest("q.yaml")?;
        agent.wait_gone(&qname, Duration::from_secs(40))?;
        ensure!(
            marks.join("quit").exists() && !marks.join("quitter-term").exists(),
            "the STOPSIGNAL pod was not sent SIGQUIT (SIGTERM: {})",
            marks.join("quitter-term").exists()
        );
        // A preStop httpGet runs before the stop: against a port nobody listens on, it fails
        // with an event (no detail, as upstream: the detail is in the log), and the pod still
        // goes.
        let hooked = r#"  containers:
  - name: web
    image: IMAGE
    command: ["httpd", "-f", "-p", "8080"]
    lifecycle:
      preStop:
        httpGet: {path: /drain, port: 9999}
"#;
        agent.write_manifest("h.yaml", &pod_yaml("h", &agent.image, hooked))?;
        let hname = agent.pod_name("h");
        agent.wait_pod(&hname, Duration::from_secs(60), "Running", all_running)?;
        agent.remove_manifest("h.yaml")?;
        agent.wait_gone(&hname, Duration::from_secs(30))?;
        let events = agent.events()?;
        ensure!(
            events
                .iter()
                .any(|e| is(e, "FailedPreStopHook") && message(e) == "PreStopHook failed"),
            "no FailedPreStopHook event: {events:?}"
        );
        ensure!(
            agent
                .log()
                .contains("HTTP lifecycle hook (/drain) for Container ")
                && agent.log().contains(":9999/drain"),
            "no hook failure in the log"
        );
        Ok(())
    })
}

fn edit_and_remove() -> anyhow::Result<()> {
    with_agent("ke", |agent| {
        let body = |msg: &str| {
            format!("  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sh\", \"-c\", \"echo {msg}; sleep 3600\"]\n")
        };
        agent.write_manifest("p.yaml", &pod_yaml("p", &agent.image, &body("one")))?;
        let name = agent.pod_name("p");
        let first = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let uid1 = first.metadata.uid.clone().unwrap_or_default();
        // An identical rewrite changes nothing.
        agent.write_manifest("p.yaml", &pod_yaml("p", &agent.image, &body("one")))?;
        std::thread::sleep(Duration::from_secs(2));
        let same = agent
            .pod(&name)?
            .context("pod vanished on an identical rewrite")?;
        ensure!(
            same.metadata.uid.as_deref() == Some(uid1.as_str()),
            "identical rewrite replaced the pod"
        );
        ensure!(
            container_id(&same, "c") == container_id(&first, "c"),
            "container restarted"
        );
        // A content change replaces it (a new UID).
        agent.write_manifest("p.yaml", &pod_yaml("p", &agent.image, &body("two")))?;
        let second = agent.wait_pod(
            &name,
            Duration::from_secs(60),
            "replaced and Running",
            |p| p.metadata.uid.as_deref() != Some(uid1.as_str()) && all_running(p),
        )?;
        ensure!((second.metadata.annotations.as_ref())
            .is_some_and(|a| a.contains_key("kubernetes.io/config.hash")));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut logs = String::new();
        while Instant::now() < deadline && logs.trim() != "two" {
            logs = agent.kubenode_ok(&["logs", &name])?;
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(logs.trim() == "two", "logs after the edit: {logs:?}");
        // The old pod terminates (within its 2 s grace) and leaves the list.
        let deadline = Instant::now() + Duration::from_secs(15);
        while agent.pods()?.len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(agent.pods()?.len() == 1, "old pod still listed");
        // Removal stops and removes everything of the pod.
        agent.remove_manifest("p.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(30))?;
        let root = agent.dir.join("root/pods");
        let left: Vec<_> = std::fs::read_dir(&root)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        ensure!(left.is_empty(), "pod directories left: {left:?}");
        let netns: Vec<_> = std::fs::read_dir(agent.dir.join("run/netns"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        ensure!(netns.is_empty(), "netns left: {netns:?}");
        let links = in_node(agent, &["ip", "-o", "link"])?;
        ensure!(!links.contains("veth"), "veths left in the node: {links}");
        Ok(())
    })
}

fn bad_input() -> anyhow::Result<()> {
    with_agent("kb", |agent| {
        let good =
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
        agent.write_manifest("good.yaml", &pod_yaml("good", &agent.image, good))?;
        let name = agent.pod_name("good");
        let before = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        agent.write_manifest(
            "broken.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n",
        )?;
        agent.write_manifest("badname.yaml", &pod_yaml("Bad_Name", &agent.image, good))?;
        agent.write_manifest("badport.yaml", &pod_yaml("badport", &agent.image, "  containers:\n  - name: c\n    image: IMAGE\n    ports: [{containerPort: 70000}]\n"))?;
        let missing = format!(
            "{}/nosuch:1.0",
            agent.image.split('/').next().unwrap_or_default()
        );
        agent.write_manifest(
            "missing.yaml",
            &pod_yaml(
                "missing",
                &missing,
                "  containers:\n  - name: c\n    image: IMAGE\n",
            ),
        )?;

        let miss = agent.wait_pod(
            &agent.pod_name("missing"),
            Duration::from_secs(60),
            "ErrImagePull or ImagePullBackOff",
            |p| {
                matches!(
                    waiting_reason(p, "c"),
                    Some("ErrImagePull" | "ImagePullBackOff")
                )
            },
        )?;
        ensure!(phase(&miss) == "Pending");
        agent.wait_pod(
            &agent.pod_name("missing"),
            Duration::from_secs(30),
            "ImagePullBackOff",
            |p| waiting_reason(p, "c") == Some("ImagePullBackOff"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut events = Vec::new();
        let want = |events: &[Event], file: &str, text: &str| {
            events.iter().any(|e| {
                let m = message(e);
                m.contains(file) && m.contains(text)
            })
        };
        while Instant::now() < deadline {
            events = agent.events()?;
            if want(&events, "broken.yaml", "")
                && want(&events, "badname.yaml", "metadata.name")
                && want(&events, "badport.yaml", "70000")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            want(&events, "broken.yaml", ""),
            "no event names broken.yaml: {events:?}"
        );
        ensure!(
            want(&events, "badname.yaml", "metadata.name"),
            "no event for the bad name"
        );
        ensure!(
            want(
                &events,
                "badport.yaml",
                "spec.containers[0].ports[0].containerPort"
            ),
            "no event for the bad port"
        );
        ensure!(
            events
                .iter()
                .any(|e| is(e, "Failed") && message(e).contains("nosuch")),
            "no pull failure event"
        );
        ensure!(
            agent.pod(&agent.pod_name("badport"))?.is_none(),
            "an invalid pod was run"
        );
        // The good pod was never disturbed.
        let after = agent.pod(&name)?.context("good pod gone")?;
        ensure!(container_id(&after, "c") == container_id(&before, "c"));
        ensure!(restarts(&after, "c") == Some(0));
        for f in ["broken.yaml", "badname.yaml", "badport.yaml"] {
            agent.remove_manifest(f)?;
        }
        Ok(())
    })
}

fn agent_restart() -> anyhow::Result<()> {
    with_agent("ka", |agent| {
        let body = "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sh\", \"-c\", \"echo up; sleep 3600\"]\n";
        let crash = "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sh\", \"-c\", \"sleep 1; exit 1\"]\n";
        agent.write_manifest("p.yaml", &pod_yaml("p", &agent.image, body))?;
        agent.write_manifest("c.yaml", &pod_yaml("c", &agent.image, crash))?;
        let name = agent.pod_name("p");
        let before = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let crashed = agent.wait_pod(
            &agent.pod_name("c"),
            Duration::from_secs(60),
            "one restart",
            |p| restarts(p, "c") >= Some(1),
        )?;
        let restarts_before = restarts(&crashed, "c").unwrap_or(0);
        agent.kill();
        // Containers keep running without the agent.
        let ip = pod_ip(&before).to_string();
        in_node(agent, &["busybox", "ping", "-c1", "-W2", &ip])
            .context("pod unreachable while the agent is down")?;
        agent.spawn()?;
        let after = agent.wait_pod(&name, Duration::from_secs(30), "Running again", all_running)?;
        ensure!(
            container_id(&after, "c") == container_id(&before, "c"),
            "the pod's container was restarted"
        );
        ensure!(restarts(&after, "c") == Some(0));
        ensure!(status(&after).pod_ip.as_deref() == Some(ip.as_str()));
        let crashed = agent.wait_pod(
            &agent.pod_name("c"),
            Duration::from_secs(30),
            "restart count kept",
            |p| restarts(p, "c") >= Some(restarts_before),
        )?;
        ensure!(restarts(&crashed, "c") >= Some(restarts_before));
        ensure!(agent.kubenode_ok(&["logs", &name])?.trim() == "up");
        Ok(())
    })
}

fn env_and_host_network() -> anyhow::Result<()> {
    with_agent("kn", |agent| {
        let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: redis-primary\nspec:\n  clusterIP: 10.96.0.11\n  selector: {app: redis}\n  ports:\n  - {name: redis, port: 6379, targetPort: 6379}\n";
        agent.write_manifest("svc.yaml", svc)?;
        // The Service must be known before the pod's container starts: wait until the agent
        // lists it (bounded; a sleep would race the manifest watcher on a busy machine).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent
            .kubenode_ok(&["get", "services"])?
            .lines()
            .any(|l| l.starts_with("redis-primary "))
        {
            ensure!(
                Instant::now() < deadline,
                "the agent did not list Service redis-primary within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let env = r#"  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "env | sort; sleep 3600"]
    env:
    - name: MY_POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: MY_NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: GREETING
      value: "hi $(MY_NODE)"
    - name: MEM_LIMIT_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    resources: {limits: {memory: 64Mi}}
"#;
        agent.write_manifest("env.yaml", &pod_yaml("env", &agent.image, env))?;
        let name = agent.pod_name("env");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let ip = pod_ip(&pod).to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut logs = String::new();
        while Instant::now() < deadline && !logs.contains("MY_NODE") {
            logs = agent.kubenode_ok(&["logs", &name])?;
            std::thread::sleep(Duration::from_millis(200));
        }
        for want in [
            "REDIS_PRIMARY_SERVICE_HOST=10.96.0.11".to_string(),
            "REDIS_PRIMARY_SERVICE_PORT=6379".into(),
            "REDIS_PRIMARY_SERVICE_PORT_REDIS=6379".into(),
            "REDIS_PRIMARY_PORT=tcp://10.96.0.11:6379".into(),
            "REDIS_PRIMARY_PORT_6379_TCP_ADDR=10.96.0.11".into(),
            format!("MY_POD_IP={ip}"),
            format!("MY_NODE={}", agent.node_name()),
            format!("GREETING=hi {}", agent.node_name()),
            "MEM_LIMIT_MI=64".into(),
        ] {
            ensure!(
                logs.lines().any(|l| l == want),
                "{want} missing from the environment:\n{logs}"
            );
        }

        // The Service and its endpoints, as the proxy allocated and resolved them.
        let redis = "  containers:\n  - name: redis\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n    ports: [{containerPort: 6379}]\n";
        agent.write_manifest("redis.yaml", &pod_yaml("redis", &agent.image, redis))?;
        let rpod = agent.wait_pod(
            &agent.pod_name("redis"),
            Duration::from_secs(60),
            "Running",
            all_running,
        )?;
        let rip = pod_ip(&rpod).to_string();
        let services = agent.kubenode_ok(&["get", "services"])?;
        ensure!(
            services
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()[..5]
                    == [
                        "redis-primary",
                        "ClusterIP",
                        "10.96.0.11",
                        "<none>",
                        "6379/TCP"
                    ]),
            "get services:\n{services}"
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut eps = String::new();
        while Instant::now() < deadline && !eps.contains(&format!("{rip}:6379")) {
            eps = agent.kubenode_ok(&["get", "endpoints", "redis-primary"])?;
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            eps.contains(&format!("{rip}:6379")),
            "get endpoints:\n{eps}"
        );

        let host = "  hostNetwork: true\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
        agent.write_manifest("host.yaml", &pod_yaml("host", &agent.image, host))?;
        let hname = agent.pod_name("host");
        let pod = agent.wait_pod(&hname, Duration::from_secs(60), "Running", all_running)?;
        ensure!(
            status(&pod).pod_ip.as_deref() == Some(kubenode_integration::agent::NODE_IP),
            "hostNetwork pod IP {:?}",
            status(&pod).pod_ip
        );
        let links = agent.kubenode_ok(&["exec", &hname, "--", "ip", "-o", "addr"])?;
        ensure!(
            links.contains(kubenode_integration::agent::NODE_IP),
            "hostNetwork pod does not see the node's address: {links}"
        );
        Ok(())
    })
}

fn termination_and_max_pods() -> anyhow::Result<()> {
    let tag = unique_tag("km");
    let guard = LeakGuard::new(&tag);
    {
        let agent = TestAgent::start_with_config(&tag, Some("maxPods: 2\n"))?;
        let msg = "  restartPolicy: Never\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sh\", \"-c\", \"echo 'disk on fire' > /dev/termination-log; exit 2\"]\n";
        agent.write_manifest("a.yaml", &pod_yaml("a", &agent.image, msg))?;
        let a = agent.wait_pod(
            &agent.pod_name("a"),
            Duration::from_secs(60),
            "Failed",
            |p| phase(p) == "Failed",
        )?;
        let t = terminated(&a, "c");
        ensure!(
            t.is_some_and(|t| t.message.as_deref() == Some("disk on fire\n") && t.exit_code == 2),
            "terminated: {t:?}"
        );
        let sleeper =
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
        agent.write_manifest("b.yaml", &pod_yaml("b", &agent.image, sleeper))?;
        agent.wait_pod(
            &agent.pod_name("b"),
            Duration::from_secs(60),
            "Running",
            all_running,
        )?;
        // The finished pod `a` takes no place (upstream counts the active pods only): `c` runs
        // beside `b`, and a third running pod is one too many.
        agent.write_manifest("c.yaml", &pod_yaml("c", &agent.image, sleeper))?;
        agent.wait_pod(
            &agent.pod_name("c"),
            Duration::from_secs(60),
            "Running",
            all_running,
        )?;
        agent.write_manifest("d.yaml", &pod_yaml("d", &agent.image, sleeper))?;
        let c = agent.wait_pod(
            &agent.pod_name("d"),
            Duration::from_secs(30),
            "rejected",
            |p| phase(p) == "Failed",
        )?;
        ensure!(
            status(&c).reason.as_deref() == Some("OutOfpods"),
            "status {:?}",
            c.status
        );
        let message = status(&c).message.as_deref().unwrap_or_default();
        ensure!(
            message.starts_with("Pod was rejected: Node didn't have enough resource: pods"),
            "message {message}"
        );
        ensure!(
            container(&c, "c").is_none(),
            "a rejected pod ran a container"
        );
    }
    guard.check()
}

/// Restarts the agent with the gate plugin chained after the network it wrote at its first
/// start. Returns the gate and hang file paths (neither exists yet).
fn install_gate(agent: &mut TestAgent) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    agent.kill();
    let net_d = agent.dir.join("cni/net.d");
    let conf = std::fs::read_dir(&net_d)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "conflist"))
        .context("the agent wrote no conflist")?;
    let mut list: Value = serde_json::from_slice(&std::fs::read(&conf)?)?;
    list["plugins"]
        .as_array_mut()
        .context("plugins")?
        .push(serde_json::json!({"type": "kn-gate"}));
    std::fs::write(&conf, serde_json::to_vec_pretty(&list)?)?;
    let gate = agent.dir.join("cni/closed");
    let hang = agent.dir.join("cni/hang");
    let plugin = agent.dir.join("cni/bin/kn-gate");
    kubenode_integration::write_gate_plugin(&plugin, &gate, &hang)?;
    agent.spawn()?;
    Ok((gate, hang))
}

/// Whether a container of the agent's runc root is running.
fn runc_running(agent: &TestAgent) -> anyhow::Result<bool> {
    Ok(
        kubenode_integration::runc_list(&agent.dir.join("run/runc"))?
            .iter()
            .any(|c| c["status"] == "running"),
    )
}

/// The pinned namespace files under the agent's run dir.
fn namespace_files(agent: &TestAgent) -> Vec<String> {
    ["netns", "ipcns", "utsns"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(agent.dir.join("run").join(d))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect()
}

/// The agent is SIGKILLed while CNI ADD of a new pod hangs (its pause container started, its
/// container maybe created): after the restart that sandbox is not adopted without a network
/// but recreated, the old one's namespaces and address released, and the pod comes up.
fn killed_during_network() -> anyhow::Result<()> {
    with_agent("kk", |agent| {
        let (_, hang) = install_gate(agent)?;
        std::fs::write(&hang, b"")?;
        let yaml = pod_yaml(
            "hung",
            &agent.image,
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n",
        );
        agent.write_manifest("hung.yaml", &yaml)?;
        let started = hang.with_extension("started");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !started.exists() {
            ensure!(
                Instant::now() < deadline,
                "the CNI ADD never reached the gate"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let pause come up while ADD hangs (its three namespaces pinned, its container
        // running), then kill the agent in the middle of the ADD.
        let deadline = Instant::now() + Duration::from_secs(30);
        while namespace_files(agent).len() < 3 || !runc_running(agent)? {
            ensure!(
                Instant::now() < deadline,
                "the sandbox did not come up while ADD hung: namespace files {:?}",
                namespace_files(agent)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent.kill();
        let before = namespace_files(agent);
        ensure!(
            before.len() == 3,
            "namespace files of the first sandbox: {before:?}"
        );
        std::fs::remove_file(&hang)?;
        agent.spawn()?;
        let name = agent.pod_name("hung");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let ip = pod_ip(&pod).to_string();
        ensure!(ip.starts_with("10.244.1."), "pod IP {ip:?}");
        in_node(agent, &["busybox", "ping", "-c1", "-W2", &ip])
            .context("the recreated pod is not reachable")?;
        ensure!(
            agent.log().contains("recreating the sandbox"),
            "the agent did not say it recreated the sandbox"
        );
        let after = namespace_files(agent);
        ensure!(
            after.len() == 3 && after.iter().all(|f| !before.contains(f)),
            "namespace files: before {before:?}, after {after:?}"
        );
        // Nothing of the first sandbox's address is left allocated: one address in use.
        let allocated: Vec<String> = std::fs::read_dir(agent.dir.join("root/cni/networks"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("10.244."))
            .collect();
        ensure!(
            allocated == [ip.clone()],
            "allocated addresses {allocated:?}, pod {ip}"
        );
        agent.remove_manifest("hung.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(45))
    })
}

/// The pod network fails while the sandbox comes up (pause starting, the container being
/// created meanwhile): a FailedCreatePodSandBox event with the plugin's message, the pod stays
/// Pending with nothing of the sandbox left (no container, no namespace file), and once the
/// network works the retry brings the pod up.
fn failed_network() -> anyhow::Result<()> {
    with_agent("kn", |agent| {
        let (gate, _) = install_gate(agent)?;
        std::fs::write(&gate, b"")?;
        let yaml = pod_yaml(
            "gated",
            &agent.image,
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n",
        );
        agent.write_manifest("gated.yaml", &yaml)?;
        let name = agent.pod_name("gated");
        let deadline = Instant::now() + Duration::from_secs(30);
        let message = loop {
            let failed = agent.events()?.into_iter().find(|e| {
                is(e, "FailedCreatePodSandBox")
                    && e.involved_object.name.as_deref() == Some(name.as_str())
            });
            if let Some(e) = failed {
                break message(&e).to_string();
            }
            ensure!(
                Instant::now() < deadline,
                "no FailedCreatePodSandBox event; events: {:?}",
                agent.events()?
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        ensure!(
            message.contains("setting up the pod network")
                && message.contains("the test gate is closed"),
            "event message {message:?}"
        );
        let pod = agent.pod(&name)?.context("pod not listed")?;
        ensure!(phase(&pod) == "Pending", "phase {}", phase(&pod));
        // Between attempts nothing of the sandbox remains: no OCI container (pause or the
        // one created while the network was failing), no pinned namespace.
        let runc_ids = || -> anyhow::Result<Vec<String>> {
            Ok(
                kubenode_integration::runc_list(&agent.dir.join("run/runc"))?
                    .iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_string))
                    .collect(),
            )
        };
        // An attempt may be under way: poll (bounded) for a moment between attempts with
        // nothing left. A failed attempt that leaks never gets there.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leftovers = runc_ids()?;
            let pinned = namespace_files(agent);
            if leftovers.is_empty() && pinned.is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "left after a failed sandbox: runc {leftovers:?}, namespace files {pinned:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The network works again: the next attempt (5 s later at most) brings the pod up.
        std::fs::remove_file(&gate)?;
        agent.wait_pod(&name, Duration::from_secs(30), "Running", all_running)?;
        agent.remove_manifest("gated.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(45))
    })
}

/// `activeDeadlineSeconds`: past it the pod is Failed with upstream's reason and message and
/// its container no longer runs (restartPolicy Always does not bring it back).
fn active_deadline() -> anyhow::Result<()> {
    with_agent("kd", |agent| {
        let body = "  activeDeadlineSeconds: 2\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
        agent.write_manifest("deadline.yaml", &pod_yaml("deadline", &agent.image, body))?;
        let name = agent.pod_name("deadline");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Failed", |p| {
            phase(p) == "Failed"
                && status(p).container_statuses.as_deref().is_some_and(|a| {
                    a.iter()
                        .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_none()))
                })
        })?;
        let st = status(&pod);
        ensure!(
            st.reason.as_deref() == Some("DeadlineExceeded"),
            "reason {:?}",
            st.reason
        );
        ensure!(
            st.message.as_deref()
                == Some("Pod was active on the node longer than the specified deadline"),
            "message {:?}",
            st.message
        );
        Ok(())
    })
}

/// A pod killed for good stays so across an agent restart (upstream's status manager and API
/// server keep a Failed phase; a Failed pod is never restarted): with `restartPolicy: Always`,
/// the pod the restarted agent adopts is Failed with the same reason and message at once, its
/// container is not started again, and the pod is not killed a second time (no new
/// `DeadlineExceeded` event).
fn deadline_survives_restart() -> anyhow::Result<()> {
    with_agent("kr", |agent| {
        let body = "  activeDeadlineSeconds: 2\n  restartPolicy: Always\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
        agent.write_manifest("deadline.yaml", &pod_yaml("deadline", &agent.image, body))?;
        let name = agent.pod_name("deadline");
        let failed = |p: &k8s_openapi::api::core::v1::Pod| {
            phase(p) == "Failed"
                && status(p).reason.as_deref() == Some("DeadlineExceeded")
                && terminated(p, "c").is_some()
        };
        let before = agent.wait_pod(&name, Duration::from_secs(60), "Failed", failed)?;
        let id = container_id(&before, "c")
            .context("no container id")?
            .to_owned();
        let count = restarts(&before, "c");

        agent.kill();
        agent.spawn()?;
        let after = agent.wait_pod(
            &name,
            Duration::from_secs(60),
            "Failed after the restart",
            failed,
        )?;
        let st = status(&after);
        ensure!(
            st.message.as_deref()
                == Some("Pod was active on the node longer than the specified deadline"),
            "message {:?}",
            st.message
        );
        ensure!(
            container_id(&after, "c") == Some(id.as_str()),
            "the container was replaced: {:?}",
            after.status
        );
        ensure!(
            restarts(&after, "c") == count,
            "restart count {:?}, was {count:?}",
            restarts(&after, "c")
        );
        // Killed once, by the first agent: the restarted one has nothing to kill.
        let events = agent.events()?;
        ensure!(
            !events
                .iter()
                .any(|e| is(e, "DeadlineExceeded")
                    && e.involved_object.name.as_deref() == Some(&name)),
            "the restarted agent killed the pod again: {events:?}"
        );
        // No container of the pod runs in the runtime (only the sandbox's pause).
        let list = kubenode_integration::runc_list(&agent.dir.join("run/runc"))?;
        let short = id.rsplit("://").next().unwrap_or(&id);
        let running: Vec<&Value> = list
            .iter()
            .filter(|c| c["id"].as_str() == Some(short) && c["status"] == "running")
            .collect();
        ensure!(running.is_empty(), "container c runs again: {running:?}");
        agent.remove_manifest("deadline.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(45))
    })
}
