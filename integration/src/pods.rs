//! Reading pods as `/pods` and the CLI return them (typed: k8s-openapi's `Pod`), and running a test against a fresh
//! agent: the helpers every end-to-end pod test uses.

use std::sync::LazyLock;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};

use crate::{unique_tag, LeakGuard, TestAgent};

/// The pod's status (an empty one when absent).
pub fn status(p: &Pod) -> &PodStatus {
    static EMPTY: LazyLock<PodStatus> = LazyLock::new(PodStatus::default);
    p.status.as_ref().unwrap_or(&EMPTY)
}

/// The pod's `status.phase` (empty when absent).
pub fn phase(p: &Pod) -> &str {
    status(p).phase.as_deref().unwrap_or_default()
}

/// The pod's `metadata.uid` (empty when absent).
pub fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// The pod's `status.podIP` (empty when absent).
pub fn pod_ip(p: &Pod) -> &str {
    status(p).pod_ip.as_deref().unwrap_or_default()
}

/// The status of container `name`, if the pod reports one.
pub fn container<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    status(p)
        .container_statuses
        .as_deref()?
        .iter()
        .find(|c| c.name == name)
}

/// The state of container `name` (an empty state when the container or its state is absent).
pub fn state<'a>(p: &'a Pod, name: &str) -> &'a ContainerState {
    static EMPTY: LazyLock<ContainerState> = LazyLock::new(ContainerState::default);
    container(p, name)
        .and_then(|c| c.state.as_ref())
        .unwrap_or(&EMPTY)
}

/// The reason container `name` is waiting, if it is.
pub fn waiting_reason<'a>(p: &'a Pod, name: &str) -> Option<&'a str> {
    state(p, name).waiting.as_ref()?.reason.as_deref()
}

/// The message of container `name`'s waiting state, if it is waiting with one.
pub fn waiting_message<'a>(p: &'a Pod, name: &str) -> Option<&'a str> {
    state(p, name).waiting.as_ref()?.message.as_deref()
}

/// How container `name` terminated, if it did.
pub fn terminated<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStateTerminated> {
    state(p, name).terminated.as_ref()
}

/// The container ID of container `name`, if the pod reports one.
pub fn container_id<'a>(p: &'a Pod, name: &str) -> Option<&'a str> {
    container(p, name)?.container_id.as_deref()
}

/// The restart count of container `name`, if the pod reports the container.
pub fn restarts(p: &Pod, name: &str) -> Option<i32> {
    container(p, name).map(|c| c.restart_count)
}

/// Phase `Running` with every container running.
pub fn all_running(p: &Pod) -> bool {
    phase(p) == "Running"
        && status(p).container_statuses.as_deref().is_some_and(|a| {
            !a.is_empty()
                && a.iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
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
