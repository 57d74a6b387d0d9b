//! Cluster mode's Node and Lease end to end: a real `kubenode agent` whose configuration file
//! names a kubeconfig (`kubeconfig:`) for the stand-in API server, checked with the real
//! `kubectl`. The agent starts while the server is not there yet and runs its static pod; once
//! the server serves, the node registers and turns Ready (`kubectl get nodes`), `kubectl
//! describe node` shows its capacity, allocatable, conditions, addresses and system info, and
//! its Lease in `kube-node-lease` is renewed, the kubelet's events (the pods' and the Node's)
//! are core/v1 Events, a repeated one with its count; with the server stopped for a while the
//! pod keeps running and the agent keeps going, and after the server returns the Lease is
//! renewed again. Then: NotReady without the pod network and Ready again; a restart with
//! kubeadm's `--bootstrap-kubeconfig` (skipped: the kubeconfig exists) adopts the Node without
//! moving its Ready transition; without a configured pod CIDR the node waits NotReady until
//! `kubectl patch node` assigns `spec.podCIDR`, whose default network the agent then writes;
//! a missing kubeconfig stops the start.
//!
//! The stand-in listens on the loopback of the node's network namespace (the agent's own), so
//! kubectl runs there too. Privileged (the agent runs real pods); skipped without kubectl.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::agent::with_config_agent;
use kubenode_integration::apiserver::ApiServer;
use kubenode_integration::pods::{all_running, pod_yaml};
use kubenode_integration::{privileged, run_tests, unique_tag, TestDir, Trial};
use serde_json::Value;

use kubenode_integration::cluster::{kubectl_in, some_port, wait_for};
use kubenode_integration::kubectl;

fn main() {
    let missing = !kubectl::present();
    if missing {
        eprintln!("note: `kubectl` is not installed: the cluster-mode Node tests are skipped (install the kubectl package)");
    }
    run_tests(vec![
        privileged(
            "node_registers_turns_ready_and_renews_its_lease_across_an_api_outage",
            node_ready_and_lease,
        )
        .with_ignored_flag(missing || !kubenode_integration::is_root()),
        Trial::test(
            "lease_conflict_and_event_writes_against_the_standin",
            || lease_conflict_and_events().map_err(|e| format!("{e:#}").into()),
        ),
    ])
}

/// The Lease and event tasks in-process against a stand-in (unprivileged): a Lease someone
/// else wrote (409 on the next renewal) is read again and renewed; an event is POSTed, a repeat
/// PATCHed with its count, and a repeat whose event the server no longer has POSTed again.
fn lease_conflict_and_events() -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Event;
    use kube::api::{Api, DeleteParams, PostParams};
    use kubenode_kubelet::cluster::{events, lease};
    use kubenode_kubelet::events::{ObjectRef, Recorder};

    let server = ApiServer::start("127.0.0.1:0".parse()?)?;
    let dir = TestDir::new(&unique_tag("cnl"))?;
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = kubenode_kubelet::cluster::connect(&kubeconfig).await?;
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let poll = |what: &'static str| {
            let deadline = Instant::now() + Duration::from_secs(40);
            move || -> anyhow::Result<()> {
                ensure!(Instant::now() < deadline, "timed out waiting for {what}");
                Ok(())
            }
        };

        let renewals = tokio::spawn(lease::run(client.clone(), "n1".into()));
        let check = poll("the lease");
        let first = loop {
            if let Some(l) = leases.get_opt("n1").await? {
                break l;
            }
            check()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Someone else writes it: our next update carries a stale resourceVersion (409).
        let mut other = first.clone();
        other.spec.as_mut().context("spec")?.holder_identity = Some("someone-else".into());
        let written = leases.replace("n1", &PostParams::default(), &other).await?;
        let check = poll("the lease renewed after the conflict");
        loop {
            let l = leases.get("n1").await?;
            let spec = l.spec.clone().context("spec")?;
            if l.metadata.resource_version != written.metadata.resource_version
                && spec.holder_identity.as_deref() == Some("n1")
            {
                break;
            }
            check()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        renewals.abort();

        // Events.
        let recorder = Recorder::new(
            "n1",
            std::sync::Arc::new(kubenode_kubelet::backoff::SystemClock),
        );
        let (tx, rx) = tokio::sync::mpsc::channel(kubenode_kubelet::events::SINK_QUEUE);
        recorder.set_sink(tx);
        let writer = tokio::spawn(events::run(client.clone(), rx));
        let api: Api<Event> = Api::namespaced(client.clone(), "default");
        let node = ObjectRef::node("n1");
        let count_of = |want: i32, what: &'static str| {
            let api = api.clone();
            async move {
                let check = poll(what);
                loop {
                    let list = api.list(&Default::default()).await?;
                    if let Some(e) = list
                        .items
                        .into_iter()
                        .find(|e| e.reason.as_deref() == Some("TestReason"))
                        .filter(|e| e.count == Some(want))
                    {
                        return anyhow::Ok(e);
                    }
                    check()?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        recorder.warning(&node, "TestReason", "something happened");
        let posted = count_of(1, "the event POSTed").await?;
        ensure!(
            posted.source.as_ref().and_then(|s| s.host.as_deref()) == Some("n1")
                && posted.reporting_instance.as_deref() == Some("n1")
                && posted.involved_object.kind.as_deref() == Some("Node"),
            "{posted:?}"
        );
        recorder.warning(&node, "TestReason", "something happened");
        let patched = count_of(2, "the repeat PATCHed").await?;
        ensure!(
            patched.metadata.uid == posted.metadata.uid,
            "the repeat is a new object: {patched:?}"
        );
        api.delete(
            posted.metadata.name.as_deref().context("name")?,
            &DeleteParams::default(),
        )
        .await?;
        recorder.warning(&node, "TestReason", "something happened");
        let reposted = count_of(3, "the repeat of a deleted event POSTed").await?;
        ensure!(reposted.metadata.uid != posted.metadata.uid, "{reposted:?}");
        writer.abort();
        anyhow::Ok(())
    })
}

fn node_ready_and_lease() -> anyhow::Result<()> {
    let api_dir = TestDir::new(&unique_tag("cnapi"))?;
    let port = some_port()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let kubeconfig = api_dir.join("kubeconfig");
    // The kubeconfig the stand-in writes, for the address it will serve on.
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kn-standin\n  cluster:\n    server: http://{addr}\nusers:\n- name: kn-node\n  user: {{}}\ncontexts:\n- name: kn-standin\n  context:\n    cluster: kn-standin\n    user: kn-node\ncurrent-context: kn-standin\n"
        ),
    )?;
    let config = format!(
        "kubeconfig: {}\nregisterWithTaints: [{{key: example.com/dedicated, value: test, effect: NoSchedule}}]\n",
        kubeconfig.display()
    );
    let home = api_dir.path().to_path_buf();
    with_config_agent("cnode", Some(&config), |agent| {
        let node = agent.node_name().to_string();
        let netns = agent.node.path();
        let k = |args: &[&str]| kubectl_in(&netns, &home, &kubeconfig, args);
        let ok = |args: &[&str]| -> anyhow::Result<String> {
            match k(args)? {
                Ok(out) => Ok(out),
                Err(e) => bail!("kubectl {args:?}: {e}"),
            }
        };

        // No API server yet: the agent runs, its static pod too, and it keeps trying.
        agent.write_manifest(
            "web.yaml",
            &pod_yaml(
                "web",
                &agent.image,
                "  containers:\n  - name: c\n    image: IMAGE\n    command: [sleep, \"3600\"]\n",
            ),
        )?;
        let web = agent.pod_name("web");
        agent.wait_pod(&web, Duration::from_secs(60), "Running", all_running)?;
        // A container that keeps failing: its repeated events are aggregated (count).
        agent.write_manifest(
            "crash.yaml",
            &pod_yaml(
                "crash",
                &agent.image,
                "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"false\"]\n",
            ),
        )?;
        let crash = agent.pod_name("crash");
        wait_for(
            "a failed registration in the log",
            Duration::from_secs(30),
            || {
                Ok(agent
                    .log()
                    .contains("registering the node with the API server")
                    .then_some(()))
            },
        )?;

        // The API server appears, on the node's loopback.
        let mut server = agent
            .node
            .run_in(|| ApiServer::start(addr))?
            .context("starting the stand-in in the node's namespace")?;
        wait_for(
            "the node Ready in kubectl get nodes",
            Duration::from_secs(90),
            || {
                let Ok(out) = k(&["get", "nodes", "--no-headers"])? else {
                    return Ok(None);
                };
                Ok(out
                    .lines()
                    .any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.first() == Some(&node.as_str()) && f.get(1) == Some(&"Ready")
                    })
                    .then_some(()))
            },
        )?;
        let describe = ok(&["describe", "node", &node])?;
        for want in [
            "Capacity:",
            "Allocatable:",
            "Conditions:",
            "MemoryPressure   False",
            "KubeletHasSufficientMemory",
            "KubeletHasNoDiskPressure",
            "KubeletHasSufficientPID",
            "KubeletReady",
            "kubelet is posting ready status",
            "InternalIP:  10.250.0.10",
            &format!("Hostname:    {node}"),
            "pods:               110",
            "Operating System:           linux",
            "Container Runtime Version:  runc://",
            "Kubelet Version:            v1.34.0-kubenode.",
            "kubernetes.io/os=linux",
            "Taints:             example.com/dedicated=test:NoSchedule",
            &format!("kubernetes.io/hostname={node}"),
        ] {
            ensure!(
                describe.contains(want),
                "describe node lacks {want:?}:\n{describe}"
            );
        }
        let n: Value = serde_json::from_str(&ok(&["get", "node", &node, "-o", "json"])?)?;
        ensure!(
            n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250,
            "daemonEndpoints: {}",
            n["status"]["daemonEndpoints"]
        );
        ensure!(
            n["status"]["images"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n.as_str() == Some(agent.image.as_str()))))),
            "the pod's image is not in status.images: {}",
            n["status"]["images"]
        );
        let node_uid = n["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();

        // The Lease: held by the node, 40 s, owned by the Node, renewed.
        let lease = || -> anyhow::Result<Option<Value>> {
            match k(&["get", "lease", "-n", "kube-node-lease", &node, "-o", "json"])? {
                Ok(out) => Ok(Some(serde_json::from_str(&out)?)),
                Err(_) => Ok(None),
            }
        };
        let first = wait_for("the node lease", Duration::from_secs(30), lease)?;
        ensure!(
            first["spec"]["holderIdentity"] == node.as_str()
                && first["spec"]["leaseDurationSeconds"] == 40,
            "lease: {first}"
        );
        let owned =
            wait_for("the lease's owner", Duration::from_secs(30), || {
                Ok(lease()?
                    .filter(|l| l["metadata"]["ownerReferences"][0]["uid"] == node_uid.as_str()))
            })?;
        ensure!(
            owned["metadata"]["ownerReferences"][0]["kind"] == "Node",
            "lease: {owned}"
        );
        let renew = |l: &Value| {
            l["spec"]["renewTime"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let seen = renew(&owned);
        let renewed = wait_for("a lease renewal", Duration::from_secs(40), || {
            Ok(lease()?.map(|l| renew(&l)).filter(|r| *r != seen))
        })?;
        ensure!(
            ok(&["get", "lease", "-n", "kube-node-lease"])?.contains(&node),
            "kubectl get lease does not list the node"
        );

        // The kubelet's events, as core/v1 Events: the static pod's, with the container's
        // fieldPath and the kubelet as source; a repeated one with its count.
        let events = || -> anyhow::Result<Vec<Value>> {
            let out = ok(&["get", "events", "-n", "default", "-o", "json"])?;
            let list: Value = serde_json::from_str(&out)?;
            Ok(list["items"].as_array().cloned().unwrap_or_default())
        };
        let started = wait_for(
            "the Started event of the static pod",
            Duration::from_secs(60),
            || {
                Ok(events()?.into_iter().find(|e| {
                    e["reason"] == "Started" && e["involvedObject"]["name"] == web.as_str()
                }))
            },
        )?;
        ensure!(
            started["involvedObject"]["fieldPath"] == "spec.containers{c}"
                && started["involvedObject"]["kind"] == "Pod"
                && started["source"]["component"] == "kubelet"
                && started["source"]["host"] == node.as_str()
                && started["reportingComponent"] == "kubelet"
                && started["reportingInstance"] == node.as_str()
                && started["type"] == "Normal",
            "event: {started}"
        );
        let repeated = wait_for(
            "an aggregated event of the failing pod",
            Duration::from_secs(90),
            || {
                Ok(events()?.into_iter().find(|e| {
                    e["involvedObject"]["name"] == crash.as_str() && e["count"].as_i64() >= Some(2)
                }))
            },
        )?;
        ensure!(
            repeated["firstTimestamp"] != repeated["lastTimestamp"],
            "an aggregated event keeps its first time: {repeated}"
        );
        // The Node's own: "Starting kubelet." and its conditions' (NodeReady, ...).
        for (reason, message) in [
            ("Starting", "Starting kubelet.".to_string()),
            ("NodeReady", format!("Node {node} status is now: NodeReady")),
            (
                "NodeHasSufficientMemory",
                format!("Node {node} status is now: NodeHasSufficientMemory"),
            ),
        ] {
            wait_for(
                &format!("the node's {reason} event"),
                Duration::from_secs(30),
                || {
                    Ok(events()?
                        .into_iter()
                        .find(|e| {
                            e["reason"] == reason
                                && e["involvedObject"]["kind"] == "Node"
                                && e["involvedObject"]["name"] == node.as_str()
                                && e["message"] == message.as_str()
                        })
                        .map(|_| ()))
                },
            )?;
        }
        let listed = ok(&["get", "events", "-n", "default"])?;
        ensure!(
            listed.contains(&format!("pod/{web}")),
            "kubectl get events:\n{listed}"
        );

        // The API server goes away for a while: the pod keeps running, the agent keeps going.
        let failures = || agent.log().matches("renewing the node lease").count();
        let before = failures();
        server.pause();
        std::thread::sleep(Duration::from_secs(15));
        agent.wait_pod(&web, Duration::from_secs(10), "Running", all_running)?;
        ensure!(
            failures() > before,
            "no failed lease renewal while the server was away"
        );
        agent
            .node
            .run_in(|| server.resume())?
            .context("resuming the stand-in")?;
        wait_for(
            "a lease renewal after the outage",
            Duration::from_secs(60),
            || Ok(lease()?.map(|l| renew(&l)).filter(|r| *r != renewed)),
        )?;
        let out = ok(&["get", "nodes", "--no-headers"])?;
        ensure!(
            out.lines()
                .any(|l| l.split_whitespace().take(2).eq([node.as_str(), "Ready"])),
            "{out}"
        );
        agent.wait_pod(&web, Duration::from_secs(10), "Running", all_running)?;

        // The pod network goes away: NotReady with upstream's reason and message; back: Ready.
        let ready = || -> anyhow::Result<Value> {
            let n: Value = serde_json::from_str(&ok(&["get", "node", &node, "-o", "json"])?)?;
            Ok(n["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
                .unwrap_or_default())
        };
        let conflist = agent.dir.join("cni/net.d/10-kubenode.conflist");
        let network = std::fs::read(&conflist).context("the default network's conflist")?;
        std::fs::remove_file(&conflist)?;
        let not_ready = wait_for("the node NotReady", Duration::from_secs(40), || {
            let r = ready()?;
            Ok((r["status"] == "False").then_some(r))
        });
        std::fs::write(&conflist, &network)?;
        let not_ready = not_ready?;
        ensure!(
            not_ready["reason"] == "KubeletNotReady"
                && not_ready["message"]
                    .as_str()
                    .is_some_and(|m| m
                        .starts_with("container runtime network not ready: NetworkReady=false")),
            "Ready: {not_ready}"
        );
        let back = wait_for("the node Ready again", Duration::from_secs(40), || {
            let r = ready()?;
            Ok((r["status"] == "True").then_some(r))
        })?;
        ensure!(back["reason"] == "KubeletReady", "Ready: {back}");

        // A restart (with kubeadm's --bootstrap-kubeconfig: the kubeconfig exists, so bootstrap
        // is skipped) adopts the Node without moving its Ready transition.
        agent.kill();
        agent.extra_args = vec![
            "--bootstrap-kubeconfig".into(),
            home.join("bootstrap-kubelet.conf").display().to_string(),
        ];
        agent.spawn()?;
        wait_for("the Node adopted", Duration::from_secs(60), || {
            Ok(agent
                .log()
                .contains("the node exists in the API server: adopting it")
                .then_some(()))
        })?;
        ensure!(
            agent.log().contains("TLS bootstrap skipped"),
            "no bootstrap warning"
        );
        let seen = renew(&lease()?.context("lease")?);
        wait_for(
            "a lease renewal after the restart",
            Duration::from_secs(40),
            || Ok(lease()?.map(|l| renew(&l)).filter(|r| *r != seen)),
        )?;
        let after = ready()?;
        ensure!(
            after["status"] == "True" && after["lastTransitionTime"] == back["lastTransitionTime"],
            "Ready moved on the restart: {back} -> {after}"
        );
        agent.wait_pod(&web, Duration::from_secs(30), "Running", all_running)?;

        // No pod CIDR configured and no network: NotReady until the control plane assigns
        // `spec.podCIDR`; then the default network for it is written, and the node is Ready.
        agent.kill();
        let mut argv = agent.argv();
        let at = argv
            .iter()
            .position(|a| a == "--pod-cidr")
            .context("no --pod-cidr in the test defaults")?;
        argv.drain(at..at + 2);
        agent.set_args(Some(argv));
        std::fs::remove_file(&conflist)?;
        let assigned = (|| -> anyhow::Result<()> {
            agent.spawn()?;
            wait_for(
                "the node NotReady without a network",
                Duration::from_secs(40),
                || Ok((ready()?["status"] == "False").then_some(())),
            )?;
            ok(&[
                "patch",
                "node",
                &node,
                "-p",
                r#"{"spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"]}}"#,
            ])?;
            let written = wait_for(
                "the default network for the assigned pod CIDR",
                Duration::from_secs(30),
                || Ok(std::fs::read_to_string(&conflist).ok()),
            )?;
            ensure!(written.contains("10.244.1.0/24"), "{written}");
            wait_for(
                "the node Ready with the assigned pod CIDR",
                Duration::from_secs(40),
                || Ok((ready()?["status"] == "True").then_some(())),
            )
        })();
        if !conflist.exists() {
            std::fs::write(&conflist, &network)?;
        }
        assigned?;
        agent.kill();
        agent.set_args(None);
        agent.extra_args = Vec::new();
        agent.spawn()?;

        // A kubeconfig that is not there stops the start, naming it.
        agent.kill();
        agent.extra_args = vec!["--kubeconfig".into(), "/nonexistent/kubelet.conf".into()];
        let err = agent
            .spawn()
            .err()
            .context("the agent started without its kubeconfig")?;
        ensure!(
            format!("{err:#}").contains("kubeconfig /nonexistent/kubelet.conf"),
            "{err:#}"
        );
        // Back to the good configuration, so that the teardown removes the pods.
        agent.extra_args = Vec::new();
        agent.spawn()?;
        drop(server);
        Ok(())
    })
}
