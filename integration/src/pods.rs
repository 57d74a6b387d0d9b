//! Reading pods as `/pods` and the CLI return them (JSON), and running a test against a fresh
//! agent: the helpers every end-to-end pod test uses.

use serde_json::Value;

use crate::{unique_tag, LeakGuard, TestAgent};

/// The pod's `status.phase` (empty when absent).
pub fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

/// The pod's `metadata.uid` (empty when absent).
pub fn uid(p: &Value) -> String {
    p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The status of container `name` (`Null` when absent).
pub fn container<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Phase `Running` with every container running.
pub fn all_running(p: &Value) -> bool {
    phase(p) == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|c| c["state"]["running"].is_object()))
}

/// `kubenode exec POD -c C -- sh -c SCRIPT`: the exit code and stdout + stderr.
pub fn exec_sh(
    agent: &TestAgent,
    pod: &str,
    container: &str,
    script: &str,
) -> anyhow::Result<(i32, String)> {
    let out = agent.kubenode(&["exec", pod, "-c", container, "--", "sh", "-c", script])?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Runs `f` with a fresh agent (tagged `prefix…`); prints the agent's log when `f` fails (or
/// when `KUBENODE_TEST_SHOW_LOG` is set), then checks that nothing tagged survives the agent's
/// teardown.
pub fn with_agent(
    prefix: &str,
    f: impl FnOnce(&mut TestAgent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tag = unique_tag(prefix);
    let guard = LeakGuard::new(&tag);
    let result = {
        let mut agent = TestAgent::start(&tag)?;
        let r = f(&mut agent);
        if r.is_err() || std::env::var_os("KUBENODE_TEST_SHOW_LOG").is_some() {
            eprintln!(
                "--- agent log ({tag}) ---\n{}",
                crate::agent::tail(&agent.log(), 80)
            );
        }
        r
    };
    result?;
    guard.check()
}

/// A pod manifest named `name`, labelled `app: <name>`, whose indented `body` (`containers:` and
/// the rest of the spec) says `IMAGE` for `image`. A 1 s grace period unless the body sets its
/// own (a shell as PID 1 ignores SIGTERM, so removal would otherwise take 30 s).
pub fn pod_yaml(name: &str, image: &str, body: &str) -> String {
    let grace = if body.contains("terminationGracePeriodSeconds") {
        ""
    } else {
        "  terminationGracePeriodSeconds: 1\n"
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n{grace}{}",
        body.replace("IMAGE", image)
    )
}
