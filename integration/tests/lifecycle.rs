//! Lifecycle hooks end to end: `postStart` (exec, httpGet) and `preStop.sleep` against a real
//! agent and runc. The containers and hooks leave marks in a hostPath directory, and the test
//! answers them, so each check is an order of observable states, never a timing.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use k8s_openapi::api::core::v1::Event;
use kubenode_integration::pods::{
    all_running, container, phase, pod_yaml, restarts, state, uid, with_agent,
};
use kubenode_integration::{privileged, run_tests, TestAgent};

fn main() {
    run_tests(vec![
        privileged(
            "post_start_exec_runs_before_the_pod_is_running",
            post_start_exec,
        ),
        privileged(
            "failed_post_start_kills_and_restarts_the_container",
            post_start_failure,
        ),
        privileged(
            "post_start_http_get_reaches_a_server_in_the_pod",
            post_start_http,
        ),
        privileged("pre_stop_sleep_holds_the_stop_signal", pre_stop_sleep),
        privileged(
            "a_pod_held_by_its_post_start_sleep_can_be_deleted",
            post_start_sleep_then_delete,
        ),
        privileged(
            "a_manifest_restored_while_its_pod_terminates_runs_again",
            restored_while_terminating,
        ),
        privileged(
            "a_replaced_static_pod_starts_after_the_old_one_is_gone",
            replaced_waits_for_old,
        ),
        privileged(
            "a_static_pod_changed_while_the_agent_was_down_starts_after_the_old_sandbox_is_removed",
            changed_while_down_waits_for_orphan,
        ),
    ])
}

/// Waits until `path` exists.
fn wait_file(agent: &TestAgent, path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!(
                "{} not made within {timeout:?}; agent log:\n{}",
                path.display(),
                kubenode_integration::agent::tail(&agent.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The events with `reason` about pod `pod`.
fn events(agent: &TestAgent, pod: &str, reason: &str) -> anyhow::Result<Vec<Event>> {
    Ok(agent
        .events()?
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some(pod)
        })
        .collect())
}

fn message(e: &Event) -> &str {
    e.message.as_deref().unwrap_or_default()
}

/// Waits (30 s at most) for the kubelet to begin stopping container `app` of pod `pod` (its
/// `Killing` event).
fn wait_stopping_app(agent: &TestAgent, pod: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !events(agent, pod, "Killing")?
        .iter()
        .any(|e| message(e) == "Stopping container app")
    {
        ensure!(Instant::now() < deadline, "no Killing event");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The `volumes:` part of a spec with the hostPath `marks` directory at `dir`.
fn marks_volume(dir: &Path) -> String {
    format!(
        "  volumes:\n  - name: marks\n    hostPath: {{path: {}, type: DirectoryOrCreate}}\n",
        dir.display()
    )
}

/// The hook runs after the container started and before the pod counts it as running: the
/// hook waits for the test, and meanwhile the pod is still Pending with no running container;
/// what the hook wrote is what the container then prints.
fn post_start_exec() -> anyhow::Result<()> {
    with_agent("lp", |agent| {
        let marks = agent.dir.join("marks");
        let body = format!(
            r#"{}  containers:
  - name: app
    image: IMAGE
    command: ["sh", "-c", "while [ ! -e /tmp/hook ]; do sleep 0.1; done; cat /tmp/hook; exec sleep 3600"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "touch /marks/hook-running; while [ ! -e /marks/release ]; do sleep 0.1; done; echo written by postStart > /tmp/hook"]
"#,
            marks_volume(&marks)
        );
        agent.write_manifest("p.yaml", &pod_yaml("p", &agent.image, &body))?;
        let name = agent.pod_name("p");
        wait_file(agent, &marks.join("hook-running"), Duration::from_secs(60))?;
        // The hook runs: the container runs in the runtime, but the pod waits for the hook.
        let during = agent
            .pod(&name)?
            .context("pod absent while its hook runs")?;
        ensure!(
            phase(&during) == "Pending" && state(&during, "app").running.is_none(),
            "running before its postStart hook completed: {:?}",
            during.status
        );
        ensure!(
            events(agent, &name, "Started")?.len() == 1,
            "no Started event before the hook"
        );
        std::fs::write(marks.join("release"), b"")?;
        let running = agent.wait_pod(&name, Duration::from_secs(30), "Running", all_running)?;
        ensure!(restarts(&running, "app") == Some(0), "{:?}", running.status);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut logs = String::new();
        while Instant::now() < deadline && logs.trim().is_empty() {
            logs = agent.kubenode_ok(&["logs", &name])?;
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(logs.trim() == "written by postStart", "logs: {logs:?}");
        Ok(())
    })
}

/// A hook that fails gives `FailedPostStartHook` (no detail, as upstream), the container is
/// killed as any kill (`Killing` with `FailedPostStartHook`, its preStop hook runs) and the
/// restart policy restarts it; the hook's output is in upstream's message in the log.
fn post_start_failure() -> anyhow::Result<()> {
    with_agent("lf", |agent| {
        let marks = agent.dir.join("marks");
        let body = format!(
            r#"{}  containers:
  - name: app
    image: IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "if [ -e /marks/failed-once ]; then exit 0; fi; touch /marks/failed-once; echo oops; exit 3"]
      preStop:
        exec:
          command: ["touch", "/marks/pre-stop-ran"]
"#,
            marks_volume(&marks)
        );
        agent.write_manifest("f.yaml", &pod_yaml("f", &agent.image, &body))?;
        let name = agent.pod_name("f");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "restarted", |p| {
            restarts(p, "app").is_some_and(|r| r >= 1) && all_running(p)
        })?;
        ensure!(
            restarts(&pod, "app") == Some(1),
            "one failure, one restart: {:?}",
            pod.status
        );
        ensure!(
            container(&pod, "app")
                .and_then(|c| c.last_state.as_ref()?.terminated.as_ref())
                .is_some(),
            "the killed instance is not the last state: {:?}",
            pod.status
        );
        let failed = events(agent, &name, "FailedPostStartHook")?;
        ensure!(
            failed.len() == 1
                && message(&failed[0]) == "PostStartHook failed"
                && failed[0].type_.as_deref() == Some("Warning"),
            "{failed:?}"
        );
        let killing = events(agent, &name, "Killing")?;
        ensure!(
            killing.iter().any(|e| message(e) == "FailedPostStartHook"),
            "{killing:?}"
        );
        ensure!(
            marks.join("pre-stop-ran").exists(),
            "the kill did not run the preStop hook"
        );
        let log = agent.log();
        ensure!(
            log.contains("Exec lifecycle hook ([sh -c if [ -e /marks/failed-once ]; then exit 0; fi; touch /marks/failed-once; echo oops; exit 3]) for Container ")
                && log.contains("failed - error: command 'sh -c if [ -e /marks/failed-once ]")
                && log.contains("exited with 3: , message: ")
                && log.contains("oops"),
            "no upstream message in the log:\n{}",
            kubenode_integration::agent::tail(&log, 40)
        );
        Ok(())
    })
}

/// The hook's GET goes to the pod's IP: a server in a container started before (whose own
/// postStart hook holds the pod until it serves) records it.
fn post_start_http() -> anyhow::Result<()> {
    with_agent("lh", |agent| {
        let marks = agent.dir.join("marks");
        let body = format!(
            r#"{}  containers:
  - name: server
    image: IMAGE
    volumeMounts: [{{name: marks, mountPath: /marks}}]
    command:
    - sh
    - -c
    - |
      mkdir -p /www/cgi-bin
      printf '#!/bin/sh\necho "$REQUEST_METHOD $REQUEST_URI $HTTP_USER_AGENT" >> /marks/requests\nprintf "Content-Type: text/plain\\r\\n\\r\\nok\\n"\n' > /www/cgi-bin/started
      printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nok\\n"\n' > /www/cgi-bin/ready
      chmod +x /www/cgi-bin/started /www/cgi-bin/ready
      exec httpd -f -p 8080 -h /www
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "until wget -q -O /dev/null http://127.0.0.1:8080/cgi-bin/ready; do sleep 0.1; done"]
  - name: app
    image: IMAGE
    command: ["sleep", "3600"]
    lifecycle:
      postStart:
        httpGet: {{path: /cgi-bin/started, port: 8080}}
"#,
            marks_volume(&marks)
        );
        agent.write_manifest("h.yaml", &pod_yaml("h", &agent.image, &body))?;
        let name = agent.pod_name("h");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        ensure!(
            restarts(&pod, "app") == Some(0),
            "the hook failed: {:?}",
            pod.status
        );
        let requests =
            std::fs::read_to_string(marks.join("requests")).context("the server got no request")?;
        let lines: Vec<&str> = requests.lines().collect();
        ensure!(
            lines.len() == 1 && lines[0].starts_with("GET /cgi-bin/started kube-lifecycle/1."),
            "{requests:?}"
        );
        ensure!(events(agent, &name, "FailedPostStartHook")?.is_empty());
        Ok(())
    })
}

/// `preStop.sleep` holds the stop signal: after the kubelet began stopping the container
/// (its `Killing` event), the container still runs, sees what the test does then, and only
/// afterwards gets SIGTERM. Without the sleep, SIGTERM comes with the `Killing` event, before
/// the test can answer.
fn pre_stop_sleep() -> anyhow::Result<()> {
    with_agent("ls", |agent| {
        let marks = agent.dir.join("marks");
        let body = format!(
            r#"  terminationGracePeriodSeconds: 30
{}  containers:
  - name: app
    image: IMAGE
    command: ["sh", "-c", "trap 'if [ -e /marks/saw-go ]; then touch /marks/term-after-go; else touch /marks/term-before-go; fi; exit 0' TERM; while true; do if [ -e /marks/go ]; then touch /marks/saw-go; fi; sleep 0.1; done"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
    lifecycle:
      preStop:
        sleep: {{seconds: 10}}
"#,
            marks_volume(&marks)
        );
        agent.write_manifest("s.yaml", &pod_yaml("s", &agent.image, &body))?;
        let name = agent.pod_name("s");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        agent.remove_manifest("s.yaml")?;
        wait_stopping_app(agent, &name)?;
        std::fs::write(marks.join("go"), b"")?;
        agent.wait_gone(&name, Duration::from_secs(40))?;
        ensure!(
            !marks.join("term-before-go").exists(),
            "SIGTERM came before the preStop sleep ended"
        );
        ensure!(
            marks.join("saw-go").exists() && marks.join("term-after-go").exists(),
            "the container did not live on after the Killing event, then get SIGTERM"
        );
        Ok(())
    })
}

/// A `postStart` sleep holds the pod (started, not running) for its seconds, here an hour; the
/// pod's deletion ends the wait instead of waiting it out, and the container is stopped.
fn post_start_sleep_then_delete() -> anyhow::Result<()> {
    with_agent("ld", |agent| {
        let body = r#"  terminationGracePeriodSeconds: 3600
  containers:
  - name: app
    image: IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      postStart:
        sleep: {seconds: 3600}
"#;
        agent.write_manifest("d.yaml", &pod_yaml("d", &agent.image, body))?;
        let name = agent.pod_name("d");
        let deadline = Instant::now() + Duration::from_secs(60);
        while events(agent, &name, "Started")?.is_empty() {
            ensure!(Instant::now() < deadline, "the container never started");
            std::thread::sleep(Duration::from_millis(100));
        }
        let held = agent
            .pod(&name)?
            .context("pod absent while its hook runs")?;
        ensure!(
            phase(&held) == "Pending" && state(&held, "app").running.is_none(),
            "running while its postStart sleep runs: {:?}",
            held.status
        );
        agent.remove_manifest("d.yaml")?;
        // An hour's sleep and an hour's grace: only the ended wait and SIGTERM let it go.
        agent.wait_gone(&name, Duration::from_secs(40))?;
        ensure!(
            events(agent, &name, "FailedPostStartHook")?.is_empty(),
            "a deletion is not a hook failure"
        );
        Ok(())
    })
}

/// A manifest removed and then written back with the same content (the same static pod UID)
/// while the pod is still terminating: once the old incarnation is gone the pod runs again,
/// as upstream's pod workers restart a pod whose UID is wanted again (`restartRequested`).
/// The container holds SIGTERM until the test says so, so the order is certain: removed,
/// Killing, restored, released, running again (a second start in the marks).
fn restored_while_terminating() -> anyhow::Result<()> {
    with_agent("lr", |agent| {
        let marks = agent.dir.join("marks");
        let body = format!(
            r#"  terminationGracePeriodSeconds: 60
{}  containers:
  - name: app
    image: IMAGE
    command: ["sh", "-c", "echo start >> /marks/starts; trap 'while [ ! -e /marks/go ]; do sleep 0.1; done; exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
"#,
            marks_volume(&marks)
        );
        let manifest = pod_yaml("r", &agent.image, &body);
        let starts = || {
            std::fs::read_to_string(marks.join("starts"))
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        agent.write_manifest("r.yaml", &manifest)?;
        let name = agent.pod_name("r");
        let first = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        ensure!(starts() == 1, "starts before the removal: {}", starts());
        agent.remove_manifest("r.yaml")?;
        wait_stopping_app(agent, &name)?;
        // Back, byte for byte, while the container still holds its SIGTERM.
        agent.write_manifest("r.yaml", &manifest)?;
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(marks.join("go"), b"")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while starts() < 2 {
            ensure!(
                Instant::now() < deadline,
                "the restored pod did not start again (starts: {}); agent log:\n{}",
                starts(),
                kubenode_integration::agent::tail(&agent.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let again = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        ensure!(
            again.metadata.uid == first.metadata.uid,
            "the same manifest is the same pod UID"
        );
        Ok(())
    })
}

/// A static pod's manifest replaced by other content (a new UID, the same name) while the old
/// pod's container holds its SIGTERM: the new pod stays Pending, its container not started,
/// until the old one has stopped and is gone (upstream's static pod start gate). The
/// containers write to a shared hostPath log, so the order is certain: `start-1`, `stop-1`,
/// then `start-2`; without the gate the new container starts beside the old one.
fn replaced_waits_for_old() -> anyhow::Result<()> {
    with_agent("lg", |agent| {
        let marks = agent.dir.join("marks");
        let manifest = |version: u32| {
            let body = format!(
                r#"  terminationGracePeriodSeconds: 60
{}  containers:
  - name: app
    image: IMAGE
    env: [{{name: VERSION, value: "{version}"}}]
    command: ["sh", "-c", "echo start-$VERSION >> /marks/log; trap 'while [ ! -e /marks/go ]; do sleep 0.1; done; echo stop-$VERSION >> /marks/log; exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
"#,
                marks_volume(&marks)
            );
            pod_yaml("g", &agent.image, &body)
        };
        let lines = || marks_log(&marks);
        agent.write_manifest("g.yaml", &manifest(1))?;
        let name = agent.pod_name("g");
        let old = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let old_uid = uid(&old);
        agent.write_manifest("g.yaml", &manifest(2))?;
        wait_stopping_app(agent, &name)?;
        // The new pod's worker looked at the gate and waits.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent.log().contains("static pod waits to start") {
            ensure!(
                Instant::now() < deadline,
                "the new pod did not wait; agent log:\n{}",
                kubenode_integration::agent::tail(&agent.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let pods = agent.pods()?;
        let new = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&name) && uid(p) != old_uid)
            .context("the new pod is not listed")?;
        let new_uid = uid(new);
        ensure!(
            phase(new) == "Pending"
                && container(new, "app")
                    .is_none_or(|c| c.state.as_ref().is_none_or(|s| s.running.is_none())),
            "the new pod runs while the old one terminates: {:?}",
            new.status
        );
        ensure!(
            lines() == ["start-1"],
            "log while the old pod stops: {:?}",
            lines()
        );
        // The old container may stop now; the new one starts once the old pod is gone.
        std::fs::write(marks.join("go"), b"")?;
        let running =
            agent.wait_pod(&name, Duration::from_secs(60), "the new pod Running", |p| {
                uid(p) == new_uid && all_running(p)
            })?;
        ensure!(
            !agent.pods()?.iter().any(|p| uid(p) == old_uid),
            "the old pod is still listed beside {}",
            uid(&running)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines().len() < 3 {
            ensure!(Instant::now() < deadline, "log: {:?}", lines());
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(
            lines() == ["start-1", "stop-1", "start-2"],
            "the new container started before the old one stopped: {:?}",
            lines()
        );
        Ok(())
    })
}

/// A static pod's manifest changed while the agent was down (a new UID, the same name): on the
/// restart the old pod's sandbox is an orphan, removed once the manifest directory is read,
/// and the new pod starts only after it is gone. Both pods share the host's PID namespace; the
/// old container ignores SIGTERM (so it lives until the SIGKILL that ends the orphan's short
/// grace period), and the new container looks for the old one's processes when it starts and
/// notes whether they were there (without the gate it starts beside them: the soak's case).
fn changed_while_down_waits_for_orphan() -> anyhow::Result<()> {
    with_agent("lo", |agent| {
        let marks = agent.dir.join("marks");
        let tag = agent.tag().to_string();
        let image = agent.image.clone();
        let manifest = |version: u32| {
            let previous = version - 1;
            // The previous version's processes; `[n]` keeps the pattern from matching the
            // command that holds it.
            let body = format!(
                r#"  terminationGracePeriodSeconds: 2
  hostPID: true
{}  containers:
  - name: app
    image: IMAGE
    command: ["sh", "-c", "if ps | grep -q 'gate-{tag}-[{previous}]'; then echo beside-old >> /marks/log; fi; echo start-{version} >> /marks/log; trap '' TERM; while true; do sleep 0.1; done # gate-{tag}-{version}"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
"#,
                marks_volume(&marks)
            );
            pod_yaml("o", &image, &body)
        };
        let lines = || marks_log(&marks);
        agent.write_manifest("o.yaml", &manifest(1))?;
        let name = agent.pod_name("o");
        let old = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let old_uid = uid(&old);
        ensure!(lines() == ["start-1"], "log: {:?}", lines());
        agent.kill();
        agent.write_manifest("o.yaml", &manifest(2))?;
        agent.spawn()?;
        agent.wait_pod(&name, Duration::from_secs(60), "the new pod Running", |p| {
            uid(p) != old_uid && all_running(p)
        })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines().len() < 2 {
            ensure!(Instant::now() < deadline, "log: {:?}", lines());
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(
            lines() == ["start-1", "start-2"],
            "the new container started beside the old one: {:?}",
            lines()
        );
        ensure!(
            agent.log().contains("is being removed"),
            "the new pod never waited for the old sandbox; agent log:\n{}",
            kubenode_integration::agent::tail(&agent.log(), 40)
        );
        Ok(())
    })
}

/// The lines the test's containers appended to `log` in the shared marks directory.
fn marks_log(marks: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(marks.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
