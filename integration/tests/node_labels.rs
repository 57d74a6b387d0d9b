//! Node labels and node-affinity admission end to end, against a real agent and runc: the
//! node's own labels (`kubernetes.io/os`, `kubernetes.io/hostname`) admit a pod that selects
//! them; a pod selecting a label the node lacks is rejected (phase `Failed`, reason
//! `NodeAffinity`, upstream's message and a warning event) and gets no container; after a
//! restart with `--node-labels disktype=ssd` the same pod runs, and the first pod is adopted,
//! not restarted; restarted without the label, the agent rejects the running pod and removes
//! its container, as upstream's kubelet kills a running pod it does not admit. A `kubernetes.io` label `--node-labels` may not set stops the agent with
//! upstream's message.

use std::time::Duration;

use anyhow::{ensure, Context};
use kubenode_integration::pods::{
    all_running, container_id, phase, pod_yaml, restarts, status, with_agent,
};
use kubenode_integration::{privileged, run_tests};

fn main() {
    run_tests(vec![privileged(
        "node_selector_matches_the_nodes_labels_and_node_labels_flag",
        node_selector_and_node_labels,
    )])
}

const MESSAGE: &str =
    "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector";

/// The containers runc knows under the agent's runc root.
fn runc_ids(agent: &kubenode_integration::TestAgent) -> anyhow::Result<Vec<String>> {
    Ok(
        kubenode_integration::runc_list(&agent.dir.join("run/runc"))?
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect(),
    )
}

fn node_selector_and_node_labels() -> anyhow::Result<()> {
    with_agent("nlab", |agent| {
        let node = agent.node_name().to_string();
        // The kubelet's own labels: the OS and (by a node selector term on both the hostname
        // label and the node's name field) this node.
        let linux = pod_yaml(
            "linux",
            &agent.image,
            &format!(
                r#"  nodeSelector: {{kubernetes.io/os: linux}}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]
          matchFields: [{{key: metadata.name, operator: In, values: [{node}]}}]
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
"#
            ),
        );
        agent.write_manifest("linux.yaml", &linux)?;
        let ssd = pod_yaml(
            "ssd",
            &agent.image,
            r#"  nodeSelector: {disktype: ssd}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
"#,
        );
        agent.write_manifest("ssd.yaml", &ssd)?;

        let linux_name = agent.pod_name("linux");
        let running =
            agent.wait_pod(&linux_name, Duration::from_secs(60), "Running", all_running)?;
        let first_id = container_id(&running, "c")
            .context("no container id")?
            .to_string();

        let ssd_name = agent.pod_name("ssd");
        let pod = agent.wait_pod(&ssd_name, Duration::from_secs(30), "rejected", |p| {
            phase(p) == "Failed"
        })?;
        ensure!(
            status(&pod).reason.as_deref() == Some("NodeAffinity"),
            "reason: {:?}",
            pod.status
        );
        let want = format!("Pod was rejected: {MESSAGE}");
        ensure!(
            status(&pod).message.as_deref() == Some(want.as_str()),
            "message: {:?}",
            status(&pod).message
        );
        ensure!(
            status(&pod)
                .container_statuses
                .as_deref()
                .unwrap_or_default()
                .iter()
                .all(|c| c.container_id.is_none()),
            "a rejected pod got a container: {:?}",
            pod.status
        );
        let events = agent.events()?;
        ensure!(
            events.iter().any(|e| {
                e.reason.as_deref() == Some("NodeAffinity")
                    && e.type_.as_deref() == Some("Warning")
                    && e.involved_object.name.as_deref() == Some(ssd_name.as_str())
                    && e.message.as_deref() == Some(MESSAGE)
            }),
            "no NodeAffinity event for {ssd_name}: {events:?}"
        );

        // The node gets the label: the pod is admitted on the agent's restart.
        agent.kill();
        agent.extra_args = vec!["--node-labels".into(), "disktype=ssd,rack=r1".into()];
        agent.spawn()?;
        let ssd_running =
            agent.wait_pod(&ssd_name, Duration::from_secs(60), "Running", all_running)?;
        let ssd_id = container_id(&ssd_running, "c")
            .context("no container id")?
            .trim_start_matches("kubenode://")
            .to_string();
        ensure!(
            runc_ids(agent)?.contains(&ssd_id),
            "runc does not list {ssd_id}"
        );
        let adopted =
            agent.wait_pod(&linux_name, Duration::from_secs(30), "Running", all_running)?;
        ensure!(
            container_id(&adopted, "c") == Some(first_id.as_str())
                && restarts(&adopted, "c") == Some(0),
            "the matching pod was restarted: {:?}",
            adopted.status
        );

        // The label gone again: the running pod is rejected on the restart, and its container
        // is removed (a Failed pod keeps none), while the other pod is adopted again.
        agent.kill();
        agent.extra_args = Vec::new();
        agent.spawn()?;
        let pod = agent.wait_pod(&ssd_name, Duration::from_secs(30), "rejected", |p| {
            phase(p) == "Failed"
        })?;
        ensure!(
            status(&pod).reason.as_deref() == Some("NodeAffinity"),
            "reason: {:?}",
            pod.status
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while runc_ids(agent)?.contains(&ssd_id) {
            ensure!(
                std::time::Instant::now() < deadline,
                "the rejected pod's container {ssd_id} still exists"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let adopted =
            agent.wait_pod(&linux_name, Duration::from_secs(30), "Running", all_running)?;
        ensure!(
            container_id(&adopted, "c") == Some(first_id.as_str()),
            "the matching pod was restarted: {:?}",
            adopted.status
        );

        // A kubernetes.io label outside the kubelet's set: the agent does not start.
        agent.kill();
        agent.extra_args = vec![
            "--node-labels".into(),
            "node-role.kubernetes.io/worker=".into(),
        ];
        let err = agent.spawn().err().context("the agent started")?;
        let text = format!("{err:#}");
        ensure!(
            text.contains("unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [node-role.kubernetes.io/worker]"),
            "{text}"
        );
        // Back to a good configuration so that the teardown removes the pods.
        agent.extra_args = vec!["--node-labels".into(), "disktype=ssd".into()];
        agent.spawn()?;
        Ok(())
    })
}
