//! ConfigMaps and Secrets as container environment, end to end (issue 17): static pods read the
//! manifest directory's `ConfigMap` and `Secret` documents; API pods the API server's (the
//! stand-in, driven with the real `kubectl`); a pod whose ConfigMap is missing waits with
//! `CreateContainerConfigError` until it appears; a Secret's value never reaches the agent's
//! log, the events or the pod's directory.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use kubenode_integration::cluster::{with_cluster, Cluster};
use kubenode_integration::kubectl;
use kubenode_integration::pods::{
    all_running, phase, pod_yaml, waiting_message, waiting_reason, with_agent,
};
use kubenode_integration::{privileged, run_tests, TestAgent};

fn main() {
    let no_kubectl = !kubectl::present();
    if no_kubectl {
        eprintln!("note: `kubectl` is not installed: the cluster test is skipped");
    }
    let cluster = privileged(
        "api_pod_env_from_api_configmap_and_secret",
        api_pod_env_from_api_objects,
    );
    let access = privileged(
        "api_pod_with_the_service_account_volume_admission_adds",
        api_pod_with_service_account_volume,
    );
    run_tests(vec![
        privileged(
            "static_pod_env_from_manifest_objects",
            static_pod_env_from_manifest_objects,
        ),
        if no_kubectl {
            cluster.with_ignored_flag(true)
        } else {
            cluster
        },
        access.with_ignored_flag(no_kubectl),
    ])
}

/// How long an API pod may take to reach a state.
const WAIT: Duration = Duration::from_secs(90);

/// A value that appears nowhere but in the Secret.
const SECRET_VALUE: &str = "s3cr3t-Value-7f1e";

/// The pod's logs once they contain `want` (bounded wait).
fn logs_with(agent: &TestAgent, pod: &str, want: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = agent.kubenode_ok(&["logs", pod])?;
        if logs.contains(want) || Instant::now() > deadline {
            return Ok(logs);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file below `dir` (symlinks not followed) whose content contains `needle`.
fn files_containing(dir: &Path, needle: &[u8], out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        if ft.is_dir() {
            files_containing(&path, needle, out);
        } else if ft.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    out.push(path.display().to_string());
                }
            }
        }
    }
}

fn static_pod_env_from_manifest_objects() -> anyhow::Result<()> {
    with_agent("koe", |agent| {
        let b64 = base64_of(SECRET_VALUE);
        let objects = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-config}}\ndata:\n  mode: fast\n  level: \"3\"\n  log.format: json\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\ndata:\n  password: {b64}\nstringData:\n  user: admin\n"
        );
        agent.write_manifest("objects.yaml", &objects)?;
        let body = r#"  containers:
  - name: c
    image: IMAGE
    # The process's own environment (a shell drops names that are not identifiers), then its
    # first argument, expanded by the kubelet.
    command: ["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ | sort; echo \"$0\"; sleep 3600", "ARGS $(MODE) $$(MODE) $(NOPE)"]
    envFrom:
    - configMapRef: {name: app-config}
      prefix: CFG_
    - secretRef: {name: creds}
      prefix: S_
    - configMapRef: {name: absent, optional: true}
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: app-config, key: mode}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: OPTIONAL_MISSING
      valueFrom: {configMapKeyRef: {name: app-config, key: nope, optional: true}}
    - name: CFG_level
      value: "overridden-$(CFG_mode)"
"#;
        agent.write_manifest("env.yaml", &pod_yaml("env", &agent.image, body))?;
        let name = agent.pod_name("env");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let logs = logs_with(agent, &name, "ARGS")?;
        for want in [
            "MODE=fast".to_string(),
            "CFG_mode=fast".into(),
            "CFG_log.format=json".into(),
            // env wins over envFrom, and expands against it.
            "CFG_level=overridden-fast".into(),
            "S_user=admin".into(),
            format!("S_password={SECRET_VALUE}"),
            format!("PASSWORD={SECRET_VALUE}"),
            // `$$` escapes, an unknown reference stays as it is.
            "ARGS fast $(MODE) $(NOPE)".into(),
        ] {
            ensure!(
                logs.lines().any(|l| l == want),
                "{want:?} missing from the container's output:\n{logs}"
            );
        }
        ensure!(
            !logs.contains("OPTIONAL_MISSING"),
            "an optional missing key set a variable:\n{logs}"
        );

        // A required ConfigMap that does not exist yet: the container waits, with upstream's
        // reason and message, until the ConfigMap's file appears.
        let late = r#"  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "echo LATE=$LATE; sleep 3600"]
    env:
    - name: LATE
      valueFrom: {configMapKeyRef: {name: late, key: k}}
"#;
        agent.write_manifest("late.yaml", &pod_yaml("late", &agent.image, late))?;
        let late_name = agent.pod_name("late");
        let pod = agent.wait_pod(
            &late_name,
            Duration::from_secs(60),
            "CreateContainerConfigError",
            |p| waiting_reason(p, "c") == Some("CreateContainerConfigError"),
        )?;
        ensure!(
            waiting_message(&pod, "c") == Some("configmap \"late\" not found"),
            "message: {:?}",
            waiting_message(&pod, "c")
        );
        let events = agent.events()?;
        ensure!(
            events.iter().any(|e| e.reason.as_deref() == Some("Failed")
                && e.message.as_deref() == Some("Error: configmap \"late\" not found")
                && e.involved_object.name.as_deref() == Some(late_name.as_str())),
            "no Failed event for the missing ConfigMap: {events:#?}"
        );
        // The ConfigMap exists but lacks the key: upstream's other message.
        agent.write_manifest(
            "late-cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {other: x}\n",
        )?;
        agent.wait_pod(&late_name, Duration::from_secs(60), "the missing-key message", |p| {
            waiting_message(p, "c") == Some("couldn't find key k in ConfigMap default/late")
        })?;
        agent.write_manifest(
            "late-cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {k: arrived}\n",
        )?;
        agent.wait_pod(&late_name, Duration::from_secs(60), "Running", all_running)?;
        let logs = logs_with(agent, &late_name, "LATE=")?;
        ensure!(logs.contains("LATE=arrived"), "{logs}");

        // An invalid Secret is reported by file and field, without its value; the rest load.
        agent.write_manifest(
            "bad-secret.yaml",
            &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: bad}}\ntype: kubernetes.io/dockerconfigjson\nstringData: {{other: {SECRET_VALUE}}}\n"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = agent.events()?;
            if events.iter().any(|e| {
                e.reason.as_deref() == Some("InvalidManifest")
                    && e.message.as_deref().is_some_and(|m| {
                        m.contains("bad-secret.yaml") && m.contains("data[.dockerconfigjson]: Required value")
                    })
            }) {
                break;
            }
            ensure!(Instant::now() < deadline, "no InvalidManifest event for bad-secret.yaml: {events:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }

        // The CLI lists names, key counts and types, never values.
        let cms = agent.kubenode_ok(&["get", "configmaps"])?;
        let row = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        };
        ensure!(cms.starts_with("NAME"), "{cms}");
        ensure!(
            row(&cms, "app-config").is_some_and(|r| r[1] == "3"),
            "get configmaps:\n{cms}"
        );
        let secrets = agent.kubenode_ok(&["get", "secrets"])?;
        ensure!(
            row(&secrets, "creds").is_some_and(|r| r[1] == "Opaque" && r[2] == "2"),
            "get secrets:\n{secrets}"
        );
        ensure!(
            agent.kubenode(&["get", "secrets", "-o", "json"])?.status.code() != Some(0),
            "get secrets -o json printed the secrets"
        );

        // The Secret's value is nowhere but in the container: not in the agent's log, not in
        // the events, not in the pod directories (logs excepted: the container printed it).
        let log = agent.log();
        ensure!(!log.contains(SECRET_VALUE), "the agent log holds the secret");
        let events = agent.kubenode_ok(&["get", "events", "-A", "-o", "json"])?;
        ensure!(!events.contains(SECRET_VALUE), "the events hold the secret");
        let describe = agent.kubenode_ok(&["describe", "pod", &name])?;
        ensure!(!describe.contains(SECRET_VALUE), "describe shows the secret");
        let pods_json = agent.kubenode_ok(&["get", "pods", "-o", "json"])?;
        ensure!(!pods_json.contains(SECRET_VALUE), "the pods' JSON holds the secret");
        let mut found = vec![];
        files_containing(&agent.dir.join("root").join("pods"), SECRET_VALUE.as_bytes(), &mut found);
        ensure!(found.is_empty(), "pod directory files hold the secret: {found:?}");
        Ok(())
    })
    .context("static pod env from manifest objects")
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn api_pod_env_from_api_objects() -> anyhow::Result<()> {
    with_cluster("koc", |c| api_pod_env(c))
}

fn api_pod_with_service_account_volume() -> anyhow::Result<()> {
    with_cluster("kot", |c| service_account_volume(c))
}

fn api_pod_env(c: &Cluster) -> anyhow::Result<()> {
    let node = c.agent.node_name().to_string();
    // kubectl's typed `create configmap|secret` sends protobuf, which the stand-in does not
    // speak: kubectl builds the objects (`--dry-run=client`) and creates them as JSON.
    let from_kubectl = |name: &str, args: &[&str]| -> anyhow::Result<()> {
        let yaml = c.ok(&[args, &["--dry-run=client", "-o", "yaml"]].concat())?;
        c.create(name, &yaml)
    };
    from_kubectl(
        "app-config",
        &[
            "create",
            "configmap",
            "app-config",
            "--from-literal=mode=cluster",
            "--from-literal=level=5",
        ],
    )?;
    let password = format!("--from-literal=password={SECRET_VALUE}");
    from_kubectl(
        "creds",
        &["create", "secret", "generic", "creds", &password],
    )?;
    let tables = c.ok(&["get", "configmaps,secrets"])?;
    ensure!(
        !tables.contains(SECRET_VALUE),
        "kubectl get secrets printed the value"
    );
    let pod = |name: &str, env: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [\"sh\", \"-c\", \"tr '\\\\0' '\\\\n' < /proc/1/environ | sort; sleep 3600\"]\n{env}",
            c.agent.image
        )
    };
    c.create(
        "env",
        &pod(
            "env",
            "    envFrom: [{configMapRef: {name: app-config}, prefix: CFG_}]\n    env:\n    - {name: MODE, valueFrom: {configMapKeyRef: {name: app-config, key: mode}}}\n    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}\n",
        ),
    )?;
    c.wait_api("env", WAIT, "Running", |p| {
        phase(p) == "Running" && all_running(p)
    })?;
    let logs = logs_with(&c.agent, "env", "PASSWORD")?;
    for want in [
        "MODE=cluster".to_string(),
        "CFG_level=5".into(),
        "CFG_mode=cluster".into(),
        format!("PASSWORD={SECRET_VALUE}"),
    ] {
        ensure!(logs.lines().any(|l| l == want), "{want:?} missing:\n{logs}");
    }
    // A ConfigMap created after the pod: CreateContainerConfigError in the API, then Running.
    c.create(
        "later",
        &pod(
            "later",
            "    env:\n    - {name: LATE, valueFrom: {configMapKeyRef: {name: later, key: k}}}\n",
        ),
    )?;
    let p = c.wait_api("later", WAIT, "CreateContainerConfigError", |p| {
        waiting_reason(p, "c") == Some("CreateContainerConfigError")
    })?;
    ensure!(
        waiting_message(&p, "c") == Some("configmap \"later\" not found"),
        "{:?}",
        waiting_message(&p, "c")
    );
    from_kubectl(
        "later-cm",
        &["create", "configmap", "later", "--from-literal=k=arrived"],
    )?;
    c.wait_api("later", WAIT, "Running", |p| {
        phase(p) == "Running" && all_running(p)
    })?;
    let logs = logs_with(&c.agent, "later", "LATE=")?;
    ensure!(logs.lines().any(|l| l == "LATE=arrived"), "{logs}");
    // The node lists what it watches, never a value.
    let cms = c.agent.kubenode_ok(&["get", "configmaps"])?;
    ensure!(cms.lines().any(|l| l.starts_with("app-config ")), "{cms}");
    let secrets = c.agent.kubenode_ok(&["get", "secrets"])?;
    ensure!(
        secrets.lines().any(|l| l.starts_with("creds ")),
        "{secrets}"
    );
    ensure!(
        !c.agent.log().contains(SECRET_VALUE),
        "the agent log holds the secret"
    );
    let events = c.ok(&["get", "events", "-o", "json"])?;
    ensure!(
        !events.contains(SECRET_VALUE),
        "the API's events hold the secret"
    );
    let mut found = vec![];
    files_containing(
        &c.agent.dir.join("root").join("pods"),
        SECRET_VALUE.as_bytes(),
        &mut found,
    );
    ensure!(
        found.is_empty(),
        "pod directory files hold the secret: {found:?}"
    );
    Ok(())
}

/// What ServiceAccount admission makes of every pod in a real cluster: the projected
/// `kube-api-access-*` volume (a token bound to the pod through TokenRequest, the cluster CA
/// from `kube-root-ca.crt`, the namespace) at the well-known path, read by the container.
fn service_account_volume(c: &Cluster) -> anyhow::Result<()> {
    let node = c.agent.node_name().to_string();
    // root-ca-cert-publisher's ConfigMap (the stand-in publishes it only in its HTTPS mode).
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBtestCAbytesNotARealCertificate\n-----END CERTIFICATE-----";
    c.create(
        "root-ca",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kube-root-ca.crt}}\ndata:\n  ca.crt: {ca:?}\n"),
    )?;
    let script = "cd /var/run/secrets/kubernetes.io/serviceaccount && echo NS=$(cat namespace) && \
                  echo TOKEN=$(cat token) && echo CA=$(sed -n 2p ca.crt) && \
                  (touch x 2>/dev/null && echo WRITABLE || echo READONLY); sleep 3600";
    c.create(
        "sa",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: sa}}\nspec:\n  nodeName: {node}\n  serviceAccountName: default\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [\"sh\", \"-c\", {script:?}]\n    volumeMounts:\n    - {{name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}}\n  volumes:\n  - name: kube-api-access-x7k2p\n    projected:\n      defaultMode: 420\n      sources:\n      - serviceAccountToken: {{expirationSeconds: 3607, path: token}}\n      - configMap: {{name: kube-root-ca.crt, items: [{{key: ca.crt, path: ca.crt}}]}}\n      - downwardAPI: {{items: [{{path: namespace, fieldRef: {{apiVersion: v1, fieldPath: metadata.namespace}}}}]}}\n",
            c.agent.image
        ),
    )?;
    let p = c.wait_api("sa", WAIT, "Running", |p| {
        phase(p) == "Running" && all_running(p)
    })?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let logs = logs_with(&c.agent, "sa", "READONLY")?;
    ensure!(logs.lines().any(|l| l == "NS=default"), "{logs}");
    ensure!(
        logs.lines()
            .any(|l| l == "CA=MIIBtestCAbytesNotARealCertificate"),
        "{logs}"
    );
    ensure!(logs.lines().any(|l| l == "READONLY"), "{logs}");
    let token = logs
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN="))
        .context("no token line")?;
    let claims = token.split('.').nth(1).context("token is not a JWT")?;
    let claims: serde_json::Value = {
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims)?)?
    };
    ensure!(
        claims["sub"] == "system:serviceaccount:default:default",
        "{claims}"
    );
    ensure!(claims["kubernetes.io"]["pod"]["name"] == "sa", "{claims}");
    ensure!(
        claims["kubernetes.io"]["pod"]["uid"] == uid.as_str(),
        "{claims}"
    );
    ensure!(
        !c.agent.log().contains(token),
        "the agent log holds the pod's token"
    );
    Ok(())
}
