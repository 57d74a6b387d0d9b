//! `kubectl logs -f` against a kubenode node through the HTTPS stand-in (which proxies
//! `pods/log?follow=true` to the node's :10250 with its kubelet client certificate;
//! `kubectl logs` and `--tail` are in `kubelet_server.rs`):
//!
//! - a container printing a numbered line every 0.3 s: the follow prints the log from its
//!   start, in order, without gaps, and then lines written after it was already streaming;
//! - the container exits (`restartPolicy: Never`, told to stop through `kubectl exec`): the
//!   follow prints its last line and ends, exit code 0, as upstream's (the kubelet stops
//!   following a container that no longer runs);
//! - a follow of a container killed with its pod (`kubectl delete pod`) ends too.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use kubenode_integration::cluster::{kubelet_api_https, HttpsStandIn};
use kubenode_integration::{
    kubectl, privileged, run_tests, unique_tag, Spawned, TestAgent, TestDir,
};

fn main() {
    run_tests(vec![privileged("kubectl_logs_follow", follow)])
}

/// The numbers of the lines `line N` in `text`, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok())
        .collect()
}

/// `kubectl logs -f POD` in the node's namespace, as a spawned process: the common arguments
/// but their `--request-timeout` (a follow is one long request; kubectl has no timeout by
/// default, and the test bounds its waits).
fn follow_cmd(agent: &TestAgent, standin: &HttpsStandIn, pod: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", agent.node.path().display()))
        .arg(kubectl::KUBECTL)
        .args(
            kubectl::common_args(&standin.kubeconfig, &standin.home)
                .into_iter()
                .filter(|a| !a.to_string_lossy().starts_with("--request-timeout")),
        )
        .args(["logs", "-f", pod])
        .env_remove("KUBECONFIG")
        .env("HOME", &standin.home)
        .stdin(Stdio::null());
    cmd
}

fn follow() -> anyhow::Result<()> {
    let certs = TestDir::new(&unique_tag("klogs"))?;
    kubenode_integration::agent::with_config_agent("kl", None, |agent| {
        let standin = HttpsStandIn::start(agent, certs.path(), kubelet_api_https())?;
        standin.join(agent, &standin.kubeconfig)?;
        let k = |args: &[&str]| standin.kubectl(agent, args);
        let pod = |name: &str, restart: &str| -> anyhow::Result<()> {
            let manifest = certs.join(format!("{name}.yaml"));
            std::fs::write(
                &manifest,
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {}\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    args: [\"/bin/sh\", \"-c\", \"i=0; while [ ! -e /tmp/stop ]; do echo line $i; i=$((i+1)); sleep 0.3; done; echo last-line\"]\n",
                    agent.node_name(),
                    agent.image
                ),
            )?;
            if let Err(e) = k(&["create", "-f", &manifest.display().to_string()])? {
                bail!("kubectl create {name}: {e}");
            }
            Ok(())
        };
        pod("counter", "Never")?;
        pod("doomed", "Always")?;
        let outcome = scenarios(agent, &standin);
        for name in ["counter", "doomed"] {
            let _ = k(&["delete", "pod", name, "--wait=false"]);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent
            .pods()?
            .iter()
            .any(|p| matches!(p.metadata.name.as_deref(), Some("counter" | "doomed")))
        {
            ensure!(Instant::now() < deadline, "the test's pods are still there");
            std::thread::sleep(Duration::from_millis(500));
        }
        outcome?;
        drop(standin);
        Ok(())
    })
}

fn scenarios(agent: &TestAgent, standin: &HttpsStandIn) -> anyhow::Result<()> {
    let k = |args: &[&str]| standin.kubectl(agent, args);
    // Both containers run and have logged a few lines.
    for name in ["counter", "doomed"] {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(out) = k(&["logs", name])? {
                if numbers(&out).len() >= 3 {
                    break;
                }
            }
            ensure!(Instant::now() < deadline, "{name} logs nothing");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    let mut f = Spawned::spawn(follow_cmd(agent, standin, "counter"))?;
    f.wait_for("kubectl logs -f counter", |out, _| numbers(out).len() >= 3)?;
    // The follow is streaming; the last line logged now is `now`: a later one must come.
    let now = match k(&["logs", "counter"])? {
        Ok(out) => *numbers(&out).last().unwrap_or(&0),
        Err(e) => bail!("kubectl logs counter: {e}"),
    };
    f.wait_for("a line written after the follow started", |out, _| {
        numbers(out).last().is_some_and(|&n| n >= now + 2)
    })?;
    let seen = numbers(&f.out());
    ensure!(seen.first() == Some(&0), "not from the start: {seen:?}");
    ensure!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missing or repeated: {seen:?}"
    );

    // The container exits: the follow ends with its last line.
    if let Err(e) = k(&["exec", "counter", "--", "touch", "/tmp/stop"])? {
        bail!("kubectl exec touch: {e}");
    }
    let code = f.wait_exit("kubectl logs -f counter after the container exited")?;
    let out = f.out();
    ensure!(
        code == 0 && out.ends_with("last-line\n"),
        "kubectl logs -f counter: exit {code}, stdout {out:?}, stderr {:?}",
        f.err()
    );
    let seen = numbers(&out);
    ensure!(
        seen.first() == Some(&0) && seen.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missing or repeated: {seen:?}"
    );

    // A container killed with its pod ends its follow too.
    let mut f = Spawned::spawn(follow_cmd(agent, standin, "doomed"))?;
    f.wait_for("kubectl logs -f doomed", |out, _| numbers(out).len() >= 3)?;
    if let Err(e) = k(&["delete", "pod", "doomed", "--wait=false"])? {
        bail!("kubectl delete pod doomed: {e}");
    }
    let code = f.wait_exit("kubectl logs -f doomed after its pod was deleted")?;
    ensure!(
        code == 0,
        "kubectl logs -f doomed: exit {code}, stderr {:?}",
        f.err()
    );
    Ok(())
}
