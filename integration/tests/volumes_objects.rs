//! configMap, secret and downwardAPI volumes end to end, through the binary (`TestAgent`), with
//! the ConfigMaps and Secrets as `kind: ConfigMap` / `kind: Secret` documents of the manifest
//! directory (the static pods' objects): a file of a ConfigMap read by a container; a Secret
//! with mode 0400 (`stat` inside the container) on a tmpfs, its value in neither the agent's
//! log nor the events; a downwardAPI volume with the pod's labels; a required source missing
//! (`FailedMount` with upstream's message, the pod waits) and an optional one (an empty
//! volume), the pod starting once the source appears; a ConfigMap update seen by the running
//! container (not through its subPath mount); the secret's tmpfs gone with the pod.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use kubenode_integration::pods::{
    all_running, exec_sh as exec, phase, pod_yaml, uid, waiting_message, waiting_reason, with_agent,
};
use kubenode_integration::{privileged, run_tests, TestAgent};

fn main() {
    run_tests(vec![
        privileged("config_map_file", config_map_file),
        privileged("secret_mode_0400", secret_mode_0400),
        privileged("downward_api_labels", downward_api_labels),
        privileged(
            "optional_and_required_sources",
            optional_and_required_sources,
        ),
        privileged(
            "update_seen_by_running_container",
            update_seen_by_running_container,
        ),
        privileged(
            "secret_tmpfs_removed_with_pod",
            secret_tmpfs_removed_with_pod,
        ),
    ])
}

/// A `kind: ConfigMap` document of the default namespace.
fn config_map(name: &str, data: &[(&str, &str)]) -> String {
    let data: Vec<String> = data.iter().map(|(k, v)| format!("  {k}: {v:?}")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n{}\n",
        data.join("\n")
    )
}

/// A `kind: Secret` document (`data` base64-encoded, as the API keeps it).
fn secret(name: &str, data: &[(&str, &str)]) -> String {
    let data: Vec<String> = data
        .iter()
        .map(|(k, v)| format!("  {k}: {}", base64(v.as_bytes())))
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\ntype: Opaque\ndata:\n{}\n",
        data.join("\n")
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Mount points (from this process's mountinfo) at or below `dir`: `(target, fstype)`.
fn mounts_below(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.display().to_string();
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let target = fields.get(4)?.to_string();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?.to_string();
            target.starts_with(&dir).then_some((target, fstype))
        })
        .collect()
}

/// Runs `script` in the container until its output (trimmed) is `want`, for at most
/// `timeout`.
fn wait_exec(
    agent: &TestAgent,
    pod: &str,
    script: &str,
    want: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let (code, out) = exec(agent, pod, "c", script)?;
        if code == 0 && out.trim() == want {
            return Ok(());
        }
        last = out;
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("{script}: wanted {want:?} within {timeout:?}, last output {last:?}")
}

const SLEEPER: &str = r#"    command: ["sleep", "3600"]"#;

pub(crate) fn config_map_file() -> anyhow::Result<()> {
    with_agent("vcm", |agent| {
        agent.write_manifest(
            "cm.yaml",
            &config_map("app-config", &[("greeting", "hello"), ("other", "x")]),
        )?;
        let yaml = pod_yaml(
            "cmpod",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: cfg, configMap: {{name: app-config, items: [{{key: greeting, path: conf/greeting.txt}}]}}}}
  containers:
  - name: c
    image: IMAGE
{SLEEPER}
    volumeMounts: [{{name: cfg, mountPath: /etc/config}}]
"#
            ),
        );
        agent.write_manifest("cmpod.yaml", &yaml)?;
        let name = agent.pod_name("cmpod");
        agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "cat /etc/config/conf/greeting.txt; echo; ls /etc/config; if touch /etc/config/x 2>/dev/null; then echo writable; fi",
        )?;
        ensure!(code == 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        ensure!(lines.first() == Some(&"hello"), "{out}");
        ensure!(
            lines.get(1) == Some(&"conf"),
            "only the item is there: {out}"
        );
        ensure!(!out.contains("writable"), "the volume is read-only: {out}");
        Ok(())
    })
}

pub(crate) fn secret_mode_0400() -> anyhow::Result<()> {
    const VALUE: &str = "s3cr3t-value-7f1c";
    with_agent("vsec", |agent| {
        agent.write_manifest("s.yaml", &secret("db-creds", &[("password", VALUE)]))?;
        // `0400` as every example writes it: YAML 1.1's octal, as upstream reads manifests.
        let yaml = pod_yaml(
            "secpod",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: creds, secret: {{secretName: db-creds, defaultMode: 0400}}}}
  containers:
  - name: c
    image: IMAGE
{SLEEPER}
    volumeMounts: [{{name: creds, mountPath: /etc/creds}}]
"#
            ),
        );
        agent.write_manifest("secpod.yaml", &yaml)?;
        let name = agent.pod_name("secpod");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "stat -L -c %a /etc/creds/password; cat /etc/creds/password",
        )?;
        ensure!(code == 0, "{out}");
        ensure!(out.lines().collect::<Vec<_>>() == ["400", VALUE], "{out}");
        let vol = agent
            .dir
            .join("root/pods")
            .join(uid(&pod))
            .join("volumes/kubernetes.io~secret/creds");
        let mounts = mounts_below(&vol);
        ensure!(
            mounts
                .iter()
                .any(|(t, fs)| Path::new(t) == vol && fs == "tmpfs"),
            "the secret volume is a tmpfs: {mounts:?}"
        );
        let log = agent.log();
        ensure!(
            !log.contains(VALUE),
            "the secret's value is in the agent log"
        );
        let events = agent.kubenode_ok(&["get", "events", "-A", "-o", "json"])?;
        ensure!(
            !events.contains(VALUE),
            "the secret's value is in the events"
        );
        let pods = agent.kubenode_ok(&["get", "pods", "-A", "-o", "json"])?;
        ensure!(!pods.contains(VALUE), "the secret's value is in the pods");
        Ok(())
    })
}

pub(crate) fn downward_api_labels() -> anyhow::Result<()> {
    with_agent("vdapi", |agent| {
        let yaml = pod_yaml(
            "dapi",
            &agent.image,
            &format!(
                r#"  volumes:
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: mem, resourceFieldRef: {{containerName: c, resource: limits.memory, divisor: 1Mi}}}}
  containers:
  - name: c
    image: IMAGE
{SLEEPER}
    resources: {{limits: {{memory: 64Mi}}}}
    volumeMounts: [{{name: info, mountPath: /etc/podinfo}}]
"#
            ),
        );
        agent.write_manifest("dapi.yaml", &yaml)?;
        let name = agent.pod_name("dapi");
        agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "cat /etc/podinfo/labels; echo; cat /etc/podinfo/name; echo; cat /etc/podinfo/mem",
        )?;
        ensure!(code == 0, "{out}");
        ensure!(out.contains("app=\"dapi\""), "{out}");
        ensure!(out.contains(&name), "{out}");
        ensure!(out.trim_end().ends_with("64"), "{out}");
        Ok(())
    })
}

pub(crate) fn optional_and_required_sources() -> anyhow::Result<()> {
    with_agent("vopt", |agent| {
        let yaml = pod_yaml(
            "waits",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: req, configMap: {{name: late}}}}
  - {{name: opt, secret: {{secretName: never, optional: true}}}}
  containers:
  - name: c
    image: IMAGE
{SLEEPER}
    volumeMounts: [{{name: req, mountPath: /req}}, {{name: opt, mountPath: /opt}}]
"#
            ),
        );
        agent.write_manifest("waits.yaml", &yaml)?;
        let name = agent.pod_name("waits");
        let want = "MountVolume.SetUp failed for volume \"req\" : configmap \"late\" not found";
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = agent.events()?;
            if events.iter().any(|e| {
                e.reason.as_deref() == Some("FailedMount") && e.message.as_deref() == Some(want)
            }) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no FailedMount event {want:?}: {events:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let pod = agent.pod(&name)?;
        ensure!(
            !pod.as_ref().is_some_and(all_running),
            "the pod started without its volume"
        );
        // As upstream: Pending, the container ContainerCreating (no message), in /pods and
        // in `kubenode get pods` and `describe pod`.
        let pod = agent.wait_pod(&name, Duration::from_secs(30), "ContainerCreating", |p| {
            waiting_reason(p, "c") == Some("ContainerCreating")
        })?;
        ensure!(phase(&pod) == "Pending", "phase {}", phase(&pod));
        ensure!(
            waiting_message(&pod, "c").is_none(),
            "{:?}",
            waiting_message(&pod, "c")
        );
        let table = agent.kubenode_ok(&["get", "pods"])?;
        ensure!(
            table
                .lines()
                .any(|l| l.starts_with(&name) && l.contains(" ContainerCreating ")),
            "{table}"
        );
        let described = agent.kubenode_ok(&["describe", "pod", &name])?;
        ensure!(
            described
                .contains("    State:          Waiting\n      Reason:       ContainerCreating\n"),
            "{described}"
        );
        ensure!(
            !agent
                .events()?
                .iter()
                .any(|e| e.message.as_deref().is_some_and(|m| m.contains("\"opt\""))),
            "the optional volume failed"
        );
        // The ConfigMap appears: the pod starts.
        agent.write_manifest("late.yaml", &config_map("late", &[("k", "v")]))?;
        agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "cat /req/k; echo; ls -A /opt | grep -v '^\\.\\.' | wc -l",
        )?;
        ensure!(
            code == 0 && out.lines().collect::<Vec<_>>() == ["v", "0"],
            "{out}"
        );
        Ok(())
    })
}

pub(crate) fn update_seen_by_running_container() -> anyhow::Result<()> {
    with_agent("vupd", |agent| {
        agent.write_manifest("cm.yaml", &config_map("live", &[("level", "info")]))?;
        let yaml = pod_yaml(
            "upd",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: cfg, configMap: {{name: live}}}}
  containers:
  - name: c
    image: IMAGE
{SLEEPER}
    volumeMounts: [{{name: cfg, mountPath: /cfg}}, {{name: cfg, mountPath: /pinned/level, subPath: level}}]
"#
            ),
        );
        agent.write_manifest("upd.yaml", &yaml)?;
        let name = agent.pod_name("upd");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        wait_exec(
            agent,
            &name,
            "cat /cfg/level",
            "info",
            Duration::from_secs(10),
        )?;
        agent.write_manifest("cm.yaml", &config_map("live", &[("level", "debug")]))?;
        // Upstream's bound: the sync period and the cache TTL (about a minute).
        wait_exec(
            agent,
            &name,
            "cat /cfg/level",
            "debug",
            Duration::from_secs(90),
        )?;
        // A subPath mount keeps what it had, as upstream.
        wait_exec(
            agent,
            &name,
            "cat /pinned/level",
            "info",
            Duration::from_secs(5),
        )?;
        // The container was not restarted for it.
        let now = agent.pod(&name)?.unwrap_or_default();
        ensure!(
            kubenode_integration::pods::restarts(&now, "c") == Some(0) && uid(&now) == uid(&pod),
            "the pod was restarted"
        );
        Ok(())
    })
}

pub(crate) fn secret_tmpfs_removed_with_pod() -> anyhow::Result<()> {
    with_agent("vsecrm", |agent| {
        agent.write_manifest("s.yaml", &secret("tls", &[("key", "private")]))?;
        let yaml = pod_yaml(
            "tlspod",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: tls, secret: {{secretName: tls}}}}
  - name: both
    projected:
      sources:
      - {{secret: {{name: tls, items: [{{key: key, path: tls.key}}]}}}}
      - {{downwardAPI: {{items: [{{path: namespace, fieldRef: {{fieldPath: metadata.namespace}}}}]}}}}
  containers:
  - name: c
    image: IMAGE
{SLEEPER}
    volumeMounts: [{{name: tls, mountPath: /tls}}, {{name: both, mountPath: /both}}]
"#
            ),
        );
        agent.write_manifest("tlspod.yaml", &yaml)?;
        let name = agent.pod_name("tlspod");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "cat /tls/key; echo; cat /both/tls.key; echo; cat /both/namespace",
        )?;
        ensure!(
            code == 0 && out.lines().collect::<Vec<_>>() == ["private", "private", "default"],
            "{out}"
        );
        let pod_dir = agent.dir.join("root/pods").join(uid(&pod));
        let tmpfs: Vec<_> = mounts_below(&pod_dir)
            .into_iter()
            .filter(|(t, fs)| fs == "tmpfs" && t.contains("/volumes/"))
            .collect();
        ensure!(tmpfs.len() == 2, "secret and projected on tmpfs: {tmpfs:?}");
        agent.remove_manifest("tlspod.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(45))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while pod_dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = mounts_below(&pod_dir);
        ensure!(
            left.is_empty(),
            "still mounted after the pod went: {left:?}"
        );
        ensure!(!pod_dir.exists(), "{} left behind", pod_dir.display());
        Ok(())
    })
}
