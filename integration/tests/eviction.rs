//! Node-pressure eviction end to end, in cluster mode (upstream never evicts static pods, and
//! kubenode's file pods are static): a real `kubenode agent --kubeconfig` against the stand-in
//! API server, driven with the real `kubectl`.
//!
//! No disk or memory is filled: a BestEffort pod runs, then the agent is SIGKILLed and started
//! again with `--eviction-hard nodefs.available<99%`, a threshold any real file system with
//! more than 1 % of it in use crosses. Then DiskPressure shows in the Node's status, the pod is
//! evicted (Failed, reason `Evicted`, upstream's message, the `DisruptionTarget` condition, an
//! `Evicted` event, in the API with upstream's annotations), it stays so after another SIGKILL and restart (its container not started
//! again), and a new pod is refused at admission. Every wait is bounded; the cluster fixture
//! deletes the pods and cleans up the agent even on failure.

use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::cluster::{api_pod_yaml, running_in_api, wait_for, with_cluster};
use kubenode_integration::kubectl;
use kubenode_integration::pods::{phase, status};
use kubenode_integration::{privileged, run_tests};

fn main() {
    let missing = !kubectl::present();
    if missing {
        eprintln!("note: `kubectl` is not installed: the eviction test is skipped (install the kubectl package)");
    }
    let trial = privileged(
        "disk_pressure_evicts_a_best_effort_pod_for_good_and_refuses_new_pods",
        disk_pressure,
    );
    run_tests(vec![if missing {
        trial.with_ignored_flag(true)
    } else {
        trial
    }])
}

/// The eviction message's beginning for a nodefs threshold of 99 %.
const LOW_ON_DISK: &str = "The node was low on resource: ephemeral-storage. Threshold quantity: ";

fn evicted(p: &Pod) -> bool {
    let st = status(p);
    phase(p) == "Failed" && st.reason.as_deref() == Some("Evicted")
}

fn disk_pressure() -> anyhow::Result<()> {
    with_cluster("ev", |c| {
        let node = c.agent.node_name().to_string();
        let image = c.agent.image.clone();
        // BestEffort: no requests or limits.
        c.create(
            "victim",
            &api_pod_yaml(
                "victim",
                &node,
                &image,
                "trap 'exit 0' TERM; while true; do sleep 0.2; done",
                "",
            ),
        )?;
        c.wait_api("victim", Duration::from_secs(60), "Running", running_in_api)?;

        // The node's disk "fills": a threshold above what is available.
        c.agent.kill();
        c.agent
            .extra_args
            .extend(["--eviction-hard".to_string(), "nodefs.available<99%".into()]);
        c.agent.spawn()?;

        let pod = c.wait_api("victim", Duration::from_secs(90), "evicted", evicted)?;
        let st = status(&pod);
        let message = st.message.clone().unwrap_or_default();
        ensure!(message.starts_with(LOW_ON_DISK), "{message}");
        ensure!(message.contains(", available: "), "{message}");
        let disruption = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionTarget")
            .context("no DisruptionTarget condition")?;
        ensure!(
            disruption.status == "True"
                && disruption.reason.as_deref() == Some("TerminationByKubelet")
                && disruption.message.as_deref() == Some(message.as_str()),
            "{disruption:?}"
        );
        // Its container was killed.
        let local = c.agent.wait_pod(
            "victim",
            Duration::from_secs(30),
            "container stopped",
            |p| kubenode_integration::pods::terminated(p, "c").is_some(),
        )?;
        ensure!(evicted(&local), "{:?}", local.status);
        // The Evicted event, with the same message, and the node's EvictionThresholdMet.
        let events = c.agent.events()?;
        ensure!(
            events.iter().any(|e| e.reason.as_deref() == Some("Evicted")
                && e.type_.as_deref() == Some("Warning")
                && e.message.as_deref() == Some(message.as_str())),
            "no Evicted event: {events:?}"
        );
        // In the API (kubectl get events) the Evicted Event carries upstream's annotations.
        let annotations = wait_for(
            "the Evicted Event in the API",
            Duration::from_secs(30),
            || {
                let json = c.ok(&["get", "events", "-o", "json"])?;
                let list: serde_json::Value = serde_json::from_str(&json)?;
                Ok(list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["involvedObject"]["name"] == "victim" && e["reason"] == "Evicted")
                    .map(|e| e["metadata"]["annotations"].clone()))
            },
        )?;
        ensure!(
            annotations["starved_resource"] == "ephemeral-storage"
                && annotations["offending_containers"].is_string()
                && annotations["offending_containers_usage"].is_string(),
            "{annotations}"
        );
        ensure!(
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some("EvictionThresholdMet")
                    && e.message.as_deref() == Some("Attempting to reclaim ephemeral-storage")),
            "no EvictionThresholdMet event"
        );
        // DiskPressure in the Node's status, with upstream's reason.
        let reason = wait_for("DiskPressure in the Node", Duration::from_secs(60), || {
            let out = c.ok(&[
                "get",
                "node",
                &node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"DiskPressure\")].status} {.status.conditions[?(@.type==\"DiskPressure\")].reason}",
            ])?;
            Ok(out.starts_with("True ").then_some(out))
        })?;
        ensure!(reason == "True KubeletHasDiskPressure", "{reason}");

        // A new pod is refused while the pressure lasts.
        c.create(
            "late",
            &api_pod_yaml("late", &node, &image, "sleep 3600", ""),
        )?;
        let late = c.wait_api("late", Duration::from_secs(60), "refused", evicted)?;
        ensure!(
            status(&late).message.as_deref()
                == Some("Pod was rejected: The node had condition: [DiskPressure]. "),
            "{:?}",
            status(&late)
        );

        // SIGKILL and restart: the evicted pod stays evicted, with the same message, and its
        // container is not started again.
        c.agent.kill();
        c.agent.spawn()?;
        let local = c
            .agent
            .wait_pod("victim", Duration::from_secs(30), "known again", evicted)?;
        ensure!(
            status(&local).message.as_deref() == Some(message.as_str()),
            "{:?}",
            local.status
        );
        std::thread::sleep(Duration::from_secs(3));
        let local = c.agent.pod("victim")?.context("victim gone")?;
        ensure!(
            evicted(&local) && kubenode_integration::pods::terminated(&local, "c").is_some(),
            "{:?}",
            local.status
        );
        let pod = c.api_pod("victim")?.context("victim gone from the API")?;
        ensure!(
            evicted(&pod) && status(&pod).message.as_deref() == Some(message.as_str()),
            "{:?}",
            pod.status
        );
        Ok(())
    })
}
