//! Cluster mode, pods from the API server: a real `kubenode agent --kubeconfig` in its own node
//! namespace against the stand-in API server (served inside that namespace), driven with the
//! real `kubectl` as a user would: pods bound to the node run and their status reaches the
//! API; deletion is graceful and ends with the kubelet's DELETE; another node's pods are not
//! run; refused fields and admission rejections show as `Failed` with their reason; an agent
//! SIGKILL adopts the pod; a stand-in outage changes nothing running and the status catches up;
//! `kubectl debug` adds an ephemeral container, which kubenode does not run yet: its status and
//! an event say so, and the pod runs on, also after an agent restart.
//! Every wait is bounded; pods are deleted and the agent cleaned up even on failure.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::cluster::{
    api_pod_yaml, running_in_api, with_cluster, with_cluster_args,
};
use kubenode_integration::pods::{all_running, container_id, phase, restarts, status};
use kubenode_integration::{privileged, run_tests};

use kubenode_integration::kubectl;

fn main() {
    let missing = !kubectl::present();
    if missing {
        eprintln!("note: `kubectl` is not installed: the cluster pod tests are skipped (install the kubectl package)");
    }
    let t = |name: &str, f: fn() -> anyhow::Result<()>| {
        let trial = privileged(name, f);
        if missing {
            trial.with_ignored_flag(true)
        } else {
            trial
        }
    };
    run_tests(vec![
        t(
            "api_pod_runs_reports_status_and_is_deleted_gracefully",
            run_and_delete,
        ),
        t(
            "refused_field_out_of_cpu_and_no_execute_taint_are_failed_in_the_api",
            rejections,
        ),
        t(
            "crash_looping_pod_has_one_backoff_event_whose_count_rises",
            backoff_event,
        ),
        t(
            "agent_sigkill_adopts_and_outage_catches_up",
            restart_and_outage,
        ),
        t(
            "static_pod_gets_a_mirror_pod_recreated_after_delete",
            mirror_pods,
        ),
        t(
            "restart_without_the_api_keeps_api_pods_and_finishes_a_deletion",
            restart_without_api,
        ),
        t(
            "kubectl_debug_is_refused_visibly_and_the_pod_runs_on",
            debug_refused,
        ),
    ])
}

fn run_and_delete() -> anyhow::Result<()> {
    with_cluster("cp", |c| {
        let node = c.agent.node_name().to_string();
        let image = c.agent.image.clone();
        // A long grace period the deletion's own overrides.
        c.create(
            "web",
            &api_pod_yaml(
                "web",
                &node,
                &image,
                "trap 'exit 0' TERM; while true; do sleep 0.2; done",
                "",
            )
            .replace(
                "terminationGracePeriodSeconds: 1",
                "terminationGracePeriodSeconds: 60",
            ),
        )?;
        c.create(
            "elsewhere",
            &api_pod_yaml("elsewhere", "another-node", &image, "sleep 3600", ""),
        )?;
        let pod = c.wait_api("web", Duration::from_secs(60), "Running", running_in_api)?;
        let ip = status(&pod).pod_ip.clone().context("no podIP in the API")?;
        ensure!(ip.starts_with("10.244.1."), "pod IP {ip}");
        // The API name and UID are kept: the node runs the API's pod, not a copy.
        let local = c.agent.pod("web")?.context("the agent does not list web")?;
        ensure!(local.metadata.uid == pod.metadata.uid);
        // kubectl's wide table shows it Running with its IP on this node.
        let wide = c.ok(&["get", "pods", "-o", "wide"])?;
        let row = wide
            .lines()
            .find(|l| l.starts_with("web "))
            .context(wide.clone())?;
        ensure!(
            row.contains("Running") && row.contains(&ip) && row.contains(&node),
            "{wide}"
        );
        // Only changes are written: over more than one 10 s re-check of an idle pod, its
        // resourceVersion stays.
        let rv = |p: &Pod| p.metadata.resource_version.clone();
        let before = c.wait_api("web", Duration::from_secs(30), "settled", |p| {
            running_in_api(p)
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|x| x.type_ == "Ready" && x.status == "True"))
        })?;
        std::thread::sleep(Duration::from_secs(12));
        let after = c.api_pod("web")?.context("web gone")?;
        ensure!(
            rv(&after) == rv(&before),
            "status rewritten without a change: {:?} -> {:?}",
            before.status,
            after.status
        );
        // Another node's pod is not run (and gets no status from this node).
        ensure!(c.agent.pod("elsewhere")?.is_none());
        let other = c.api_pod("elsewhere")?.context("elsewhere gone")?;
        ensure!(
            other.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running"),
            "{:?}",
            other.status
        );
        // Graceful deletion: a deletionTimestamp, the agent stops the pod within the
        // deletion's grace period (the container exits on SIGTERM), then its DELETE removes it.
        c.ok(&["delete", "pod", "web", "--grace-period=5", "--wait=false"])?;
        c.wait_api_gone("web", Duration::from_secs(60))?;
        c.agent.wait_gone("web", Duration::from_secs(30))?;
        ensure!(
            c.agent.log().contains("deleted from the API"),
            "the agent did not send the final DELETE"
        );
        c.ok(&["delete", "pod", "elsewhere", "--grace-period=0", "--force"])?;

        // A force delete (gone from the API at once) stops the pod at once, not after its
        // own grace period (a container that ignores SIGTERM, with ten minutes of grace).
        c.create(
            "stubborn",
            &api_pod_yaml(
                "stubborn",
                &node,
                &image,
                "trap '' TERM; while true; do sleep 0.2; done",
                "",
            )
            .replace(
                "terminationGracePeriodSeconds: 1",
                "terminationGracePeriodSeconds: 600",
            ),
        )?;
        c.wait_api(
            "stubborn",
            Duration::from_secs(60),
            "Running",
            running_in_api,
        )?;
        c.ok(&["delete", "pod", "stubborn", "--grace-period=0", "--force"])?;
        c.agent.wait_gone("stubborn", Duration::from_secs(60))?;
        Ok(())
    })
}

fn rejections() -> anyhow::Result<()> {
    // The node registers with a NoExecute taint: the pods rejected for another reason are
    // rejected for that one first (upstream's order), the taint rejects the others that do not
    // tolerate it.
    with_cluster_args(
        "cr",
        &["--register-with-taints", "spot=true:NoExecute"],
        |c| {
            let node = c.agent.node_name().to_string();
            let image = c.agent.image.clone();
            // `lifecycle.stopSignal` is a field kubenode does not implement.
            let stop = api_pod_yaml("stopsig", &node, &image, "sleep 3600", "").replace(
                "    command:",
                "    lifecycle: {stopSignal: SIGUSR1}\n    command:",
            );
            c.create("stopsig", &stop)?;
            let failed = |p: &Pod| phase(p) == "Failed";
            let pod = c.wait_api("stopsig", Duration::from_secs(60), "Failed", failed)?;
            let st = status(&pod);
            ensure!(st.reason.as_deref() == Some("UnsupportedPodSpec"), "{st:?}");
            let message = st.message.clone().unwrap_or_default();
            ensure!(
                message.starts_with("Pod was rejected: ")
                    && message.contains("spec.containers[0].lifecycle.stopSignal"),
                "{message}"
            );
            // More CPU than the node has: OutOfcpu, as upstream's admission words it.
            let big = api_pod_yaml("big", &node, &image, "sleep 3600", "").replace(
                "    command:",
                "    resources: {requests: {cpu: \"64\"}}\n    command:",
            );
            c.create("big", &big)?;
            let pod = c.wait_api("big", Duration::from_secs(60), "Failed", failed)?;
            let st = status(&pod);
            ensure!(st.reason.as_deref() == Some("OutOfcpu"), "{st:?}");
            let message = st.message.clone().unwrap_or_default();
            ensure!(
                message.starts_with(
                    "Pod was rejected: Node didn't have enough resource: cpu, requested: 64000"
                ),
                "{message}"
            );
            // A node selector this node does not match: NodeAffinity.
            let picky = api_pod_yaml(
                "picky",
                &node,
                &image,
                "sleep 3600",
                "  nodeSelector: {disk: ssd}\n",
            );
            c.create("picky", &picky)?;
            let pod = c.wait_api("picky", Duration::from_secs(60), "Failed", failed)?;
            let st = status(&pod);
            ensure!(st.reason.as_deref() == Some("NodeAffinity"), "{st:?}");
            ensure!(
            st.message.as_deref()
                == Some("Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"),
            "{st:?}"
        );
            // kubectl's table shows the reason.
            let table = c.ok(&["get", "pods"])?;
            ensure!(table.contains("OutOfcpu"), "{table}");
            // A Failed pod is deleted at once (the API server waits for no kubelet).
            c.ok(&["delete", "pod", "big", "--wait=false"])?;
            c.wait_api_gone("big", Duration::from_secs(30))?;

            // The node's NoExecute taint: a pod without a toleration is rejected as upstream's
            // kubelet words it (`TaintToleration`); one that tolerates it runs.
            let taints = c.ok(&["get", "node", &node, "-o", "jsonpath={.spec.taints}"])?;
            ensure!(taints.contains("NoExecute"), "{taints}");
            c.create(
                "intolerant",
                &api_pod_yaml("intolerant", &node, &image, "sleep 3600", ""),
            )?;
            let pod = c.wait_api("intolerant", Duration::from_secs(60), "Failed", failed)?;
            let st = status(&pod);
            ensure!(st.reason.as_deref() == Some("TaintToleration"), "{st:?}");
            ensure!(
            st.message.as_deref()
                == Some("Pod was rejected: Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"),
            "{st:?}"
        );
            c.create(
                "tolerant",
                &api_pod_yaml(
                    "tolerant",
                    &node,
                    &image,
                    "sleep 3600",
                    "  tolerations: [{key: spot, operator: Exists, effect: NoExecute}]\n",
                ),
            )?;
            c.wait_api(
                "tolerant",
                Duration::from_secs(60),
                "Running",
                running_in_api,
            )?;
            // kubectl describe lists its toleration and the two DefaultTolerationSeconds
            // admission adds (the API server's, as upstream's), sorted by key.
            let described = c.ok(&["describe", "pod", "tolerant"])?;
            let tolerations: Vec<&str> = described
                .lines()
                .skip_while(|l| !l.starts_with("Tolerations:"))
                .take_while(|l| !l.starts_with("Events:"))
                .map(|l| l.trim_start_matches("Tolerations:").trim())
                .collect();
            ensure!(
                tolerations
                    == [
                        "node.kubernetes.io/not-ready:NoExecute op=Exists for 300s",
                        "node.kubernetes.io/unreachable:NoExecute op=Exists for 300s",
                        "spot:NoExecute op=Exists",
                    ],
                "{described}"
            );
            Ok(())
        },
    )
}

/// The event correlator in cluster mode: a crash-looping container's repeated `BackOff` is one
/// Event in the API whose `count` rises (PATCHed), not a new Event per occurrence.
fn backoff_event() -> anyhow::Result<()> {
    with_cluster("cev", |c| {
        let node = c.agent.node_name().to_string();
        let image = c.agent.image.clone();
        c.create(
            "crashy",
            &api_pod_yaml("crashy", &node, &image, "exit 1", ""),
        )?;
        // The BackOff events about the pod, as kubectl lists them.
        let backoffs = || -> anyhow::Result<Vec<(String, i64)>> {
            let json = c.ok(&["get", "events", "-o", "json"])?;
            let list: serde_json::Value = serde_json::from_str(&json)?;
            Ok(list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["involvedObject"]["name"] == "crashy" && e["reason"] == "BackOff")
                .map(|e| {
                    (
                        e["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        e["count"].as_i64().unwrap_or(0),
                    )
                })
                .collect())
        };
        let deadline = Instant::now() + Duration::from_secs(150);
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = backoffs()?;
            if last.iter().any(|(_, count)| *count >= 3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        ensure!(
            last.len() == 1 && last[0].1 >= 3,
            "expected one BackOff Event counting up to 3 or more: {last:?}"
        );
        // kubectl's table shows it with its count.
        let table = c.ok(&["get", "events"])?;
        ensure!(
            table.contains("Back-off restarting failed container c in pod crashy"),
            "{table}"
        );
        Ok(())
    })
}

fn restart_and_outage() -> anyhow::Result<()> {
    with_cluster("cs", |c| {
        let node = c.agent.node_name().to_string();
        let image = c.agent.image.clone();
        c.create(
            "keep",
            &api_pod_yaml(
                "keep",
                &node,
                &image,
                "while [ ! -f /tmp/stop ]; do sleep 0.2; done; rm /tmp/stop; exit 3",
                "",
            ),
        )?;
        let pod = c.wait_api("keep", Duration::from_secs(60), "Running", running_in_api)?;
        let id = container_id(&pod, "c")
            .context("no containerID")?
            .to_string();

        // SIGKILL the agent and start it again: the pod is adopted, not restarted.
        c.agent.kill();
        c.agent.spawn()?;
        let local = c
            .agent
            .wait_pod("keep", Duration::from_secs(30), "Running", all_running)?;
        ensure!(
            container_id(&local, "c") == Some(id.as_str()),
            "restarted: {local:?}"
        );
        ensure!(restarts(&local, "c") == Some(0));
        std::thread::sleep(Duration::from_secs(2));
        let pod = c.api_pod("keep")?.context("keep gone")?;
        ensure!(container_id(&pod, "c") == Some(id.as_str()) && restarts(&pod, "c") == Some(0));

        // The API server goes away: the pod keeps running; its container exits and is
        // restarted meanwhile; once the server is back the API catches up (the same
        // container: nothing restarted by the relist).
        c.server.pause();
        c.agent
            .kubenode_ok(&["exec", "keep", "-c", "c", "--", "touch", "/tmp/stop"])?;
        let local = c
            .agent
            .wait_pod("keep", Duration::from_secs(60), "restarted", |p| {
                restarts(p, "c") == Some(1) && all_running(p)
            })?;
        let restarted = container_id(&local, "c").map(str::to_string);
        std::thread::sleep(Duration::from_secs(3));
        ensure!(c.agent.pod("keep")?.is_some_and(|p| all_running(&p)));
        // The versions the agent's watch was at expire meanwhile: on return its watch gets
        // 410 Gone and relists, which restarts nothing.
        c.server.compact();
        c.agent.node.run_in(|| c.server.resume())??;
        let pod = c.wait_api("keep", Duration::from_secs(60), "caught up", |p| {
            restarts(p, "c") == Some(1) && running_in_api(p)
        })?;
        ensure!(container_id(&pod, "c").map(str::to_string) == restarted);
        Ok(())
    })
}

fn mirror_pods() -> anyhow::Result<()> {
    with_cluster("cm", |c| {
        let node = c.agent.node_name().to_string();
        // The Node the mirror pods are owned by (the agent registers it in cluster mode; created
        // here when it is not there, so this test stands alone).
        if c.api_node_uid(&node)?.is_none() {
            c.create(
                "node",
                &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n"),
            )?;
        }
        let node_uid = c.api_node_uid(&node)?.context("no Node")?;
        let yaml = kubenode_integration::pods::pod_yaml(
            "st",
            &c.agent.image,
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n",
        );
        c.agent.write_manifest("st.yaml", &yaml)?;
        let name = c.agent.pod_name("st");
        let local = c
            .agent
            .wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let hash = local.metadata.uid.clone().context("no UID")?;
        let id = container_id(&local, "c")
            .context("no container")?
            .to_string();
        // The mirror pod: the static pod's name, the hash, the Node as controller, and the
        // static pod's status.
        let mirror = c.wait_api(&name, Duration::from_secs(60), "Running", running_in_api)?;
        let ann = mirror.metadata.annotations.clone().unwrap_or_default();
        ensure!(
            ann.get("kubernetes.io/config.mirror") == Some(&hash),
            "{ann:?}"
        );
        ensure!(ann.get("kubernetes.io/config.source").map(String::as_str) == Some("file"));
        let owner = mirror.metadata.owner_references.clone().unwrap_or_default();
        ensure!(
            owner.len() == 1
                && owner[0].kind == "Node"
                && owner[0].uid == node_uid
                && owner[0].controller == Some(true),
            "{owner:?}"
        );
        ensure!(container_id(&mirror, "c") == Some(id.as_str()));
        // Deleted by a user: recreated (a new UID); the static pod never stopped.
        let first = mirror.metadata.uid.clone();
        c.ok(&["delete", "pod", &name, "--wait=false"])?;
        c.wait_api(&name, Duration::from_secs(60), "recreated", |p| {
            p.metadata.uid != first && p.metadata.deletion_timestamp.is_none()
        })?;
        let local = c.agent.pod(&name)?.context("static pod gone")?;
        ensure!(container_id(&local, "c") == Some(id.as_str()) && restarts(&local, "c") == Some(0));
        // Agent SIGKILLed and restarted: the mirror pod is found, not duplicated nor replaced.
        let second = c.api_pod(&name)?.context("mirror gone")?;
        c.agent.kill();
        c.agent.spawn()?;
        c.agent
            .wait_pod(&name, Duration::from_secs(30), "Running", all_running)?;
        std::thread::sleep(Duration::from_secs(2));
        let after = c.api_pod(&name)?.context("mirror gone after the restart")?;
        ensure!(
            after.metadata.uid == second.metadata.uid,
            "mirror pod replaced by a restart"
        );
        // The manifest edited: a new static pod (new hash), whose mirror replaces the old.
        let edited = yaml.replace("labels: {", "labels: {edited: \"yes\", ");
        ensure!(edited != yaml, "{yaml}");
        c.agent.write_manifest("st.yaml", &edited)?;
        let new_hash = c
            .agent
            .wait_pod(&name, Duration::from_secs(60), "replaced", |p| {
                p.metadata.uid.as_deref() != Some(hash.as_str()) && all_running(p)
            })?
            .metadata
            .uid
            .context("no UID")?;
        c.wait_api(&name, Duration::from_secs(60), "the new mirror", |p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/config.mirror"))
                == Some(&new_hash)
                && running_in_api(p)
        })?;
        // The manifest removed: the static pod stops and its mirror pod goes.
        c.agent.remove_manifest("st.yaml")?;
        c.agent.wait_gone(&name, Duration::from_secs(30))?;
        c.wait_api_gone(&name, Duration::from_secs(30))?;
        Ok(())
    })
}

fn restart_without_api() -> anyhow::Result<()> {
    with_cluster("cu", |c| {
        let node = c.agent.node_name().to_string();
        let image = c.agent.image.clone();
        c.create(
            "api",
            &api_pod_yaml(
                "api",
                &node,
                &image,
                "trap 'exit 0' TERM; while true; do sleep 0.2; done",
                "",
            ),
        )?;
        let pod = c.wait_api("api", Duration::from_secs(60), "Running", running_in_api)?;
        let id = container_id(&pod, "c")
            .context("no containerID")?
            .to_string();

        // Agent SIGKILLed and restarted while the API server is unreachable: a static pod
        // still starts, and the API pod found running is not torn down.
        c.server.pause();
        c.agent.kill();
        c.agent.spawn()?;
        let yaml = kubenode_integration::pods::pod_yaml(
            "st",
            &image,
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n",
        );
        c.agent.write_manifest("st.yaml", &yaml)?;
        c.agent.wait_pod(
            &c.agent.pod_name("st"),
            Duration::from_secs(60),
            "Running",
            all_running,
        )?;
        c.agent.node.run_in(|| c.server.resume())??;
        let pod = c.wait_api("api", Duration::from_secs(60), "adopted", |p| {
            c.agent.pod("api").ok().flatten().is_some() && container_id(p, "c").is_some()
        })?;
        ensure!(
            container_id(&pod, "c") == Some(id.as_str()) && restarts(&pod, "c") == Some(0),
            "the API pod was restarted: {:?}",
            pod.status
        );
        let local = c.agent.pod("api")?.context("api not adopted")?;
        ensure!(container_id(&local, "c") == Some(id.as_str()));

        // Deleted while the agent is down: the restarted agent terminates it and sends the
        // final DELETE.
        c.agent.kill();
        c.ok(&["delete", "pod", "api", "--grace-period=5", "--wait=false"])?;
        ensure!(
            c.api_pod("api")?
                .is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
            "the API server removed the pod without its kubelet"
        );
        c.agent.spawn()?;
        c.wait_api_gone("api", Duration::from_secs(60))?;
        c.agent.wait_gone("api", Duration::from_secs(30))?;
        c.agent.remove_manifest("st.yaml")?;
        c.agent
            .wait_gone(&c.agent.pod_name("st"), Duration::from_secs(30))?;
        Ok(())
    })
}

/// `kubectl debug POD --image=… --target=c` (the `ephemeralcontainers` subresource): kubenode
/// does not run ephemeral containers yet. The container's status waits with
/// `CreateContainerConfigError` and a message saying so, a `Failed` event on
/// `spec.ephemeralContainers{NAME}` says the same, and the pod runs on untouched; after an
/// agent SIGKILL and restart it is adopted, not rejected for the field.
fn debug_refused() -> anyhow::Result<()> {
    with_cluster("cdbg", |c| {
        let node = c.agent.node_name().to_string();
        let image = c.agent.image.clone();
        c.create("dbg", &api_pod_yaml("dbg", &node, &image, "sleep 3600", ""))?;
        let pod = c.wait_api("dbg", Duration::from_secs(60), "Running", running_in_api)?;
        let id = container_id(&pod, "c")
            .context("no containerID")?
            .to_string();
        // without -i kubectl only adds the container and names it
        let out = c.ok(&["debug", "dbg", &format!("--image={image}"), "--target=c"])?;
        let debugger = out
            .split_whitespace()
            .find(|w| w.starts_with("debugger-"))
            .map(|w| w.trim_end_matches('.').to_string())
            .with_context(|| format!("no debugger name in {out:?}"))?;
        let waiting = |p: &Pod| {
            status(p)
                .ephemeral_container_statuses
                .as_ref()
                .and_then(|s| s.iter().find(|s| s.name == debugger))
                .and_then(|s| s.state.as_ref()?.waiting.clone())
                .is_some_and(|w| {
                    w.reason.as_deref() == Some("CreateContainerConfigError")
                        && w.message
                            .as_deref()
                            .is_some_and(|m| m.contains("does not run ephemeral containers"))
                })
        };
        let pod = c.wait_api("dbg", Duration::from_secs(60), "debugger waiting", waiting)?;
        ensure!(running_in_api(&pod), "{:?}", status(&pod));
        ensure!(container_id(&pod, "c") == Some(id.as_str()) && restarts(&pod, "c") == Some(0));
        let spec = pod.spec.as_ref().context("no spec")?;
        let eph = spec.ephemeral_containers.as_deref().unwrap_or_default();
        ensure!(
            eph.len() == 1
                && eph[0].target_container_name.as_deref() == Some("c")
                && eph[0].image_pull_policy.is_some(),
            "{eph:?}"
        );
        // the event, on the ephemeral container
        let field = format!("spec.ephemeralContainers{{{debugger}}}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list: serde_json::Value =
                serde_json::from_str(&c.ok(&["get", "events", "-o", "json"])?)?;
            let found = list["items"].as_array().into_iter().flatten().any(|e| {
                e["involvedObject"]["name"] == "dbg"
                    && e["involvedObject"]["fieldPath"] == field.as_str()
                    && e["reason"] == "Failed"
                    && e["type"] == "Warning"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("does not run ephemeral containers"))
            });
            if found {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no Failed event on {field}: {list}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        // only the subresource adds them: a pod created with one is refused, as upstream
        let born = api_pod_yaml("born", &node, &image, "sleep 3600", "").replace(
            "  containers:",
            &format!("  ephemeralContainers:\n  - {{name: d, image: {image}}}\n  containers:"),
        );
        let file = c.agent.dir.join("born.yaml");
        std::fs::write(&file, born)?;
        match c.kubectl(&["create", "-f", &file.to_string_lossy()])? {
            Err(e)
                if e.contains("spec.ephemeralContainers: Forbidden: cannot be set on create") => {}
            other => anyhow::bail!("a pod created with an ephemeral container: {other:?}"),
        }
        // an agent restart adopts the pod; the field does not fail it
        c.agent.kill();
        c.agent.spawn()?;
        let local = c
            .agent
            .wait_pod("dbg", Duration::from_secs(30), "Running", all_running)?;
        ensure!(container_id(&local, "c") == Some(id.as_str()), "{local:?}");
        std::thread::sleep(Duration::from_secs(2));
        let pod = c.api_pod("dbg")?.context("dbg gone")?;
        ensure!(
            running_in_api(&pod) && waiting(&pod) && container_id(&pod, "c") == Some(id.as_str()),
            "{:?}",
            status(&pod)
        );
        Ok(())
    })
}
