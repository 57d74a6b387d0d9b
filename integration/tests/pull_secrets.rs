//! `imagePullSecrets` end to end (issue 17 item 5): a real `kubenode agent` and a private
//! registry on the node's loopback that requires basic auth. A pod whose pull secret is missing
//! gets upstream's `FailedToRetrieveImagePullSecret` warning, its pull goes on anonymously and
//! fails with the registry's 401 (`ErrImagePull`, then `ImagePullBackOff`); a pod whose
//! `kubernetes.io/dockerconfigjson` Secret is in the manifest directory runs. The password
//! never shows in the agent's log, the events or the pods' status.
//!
//! The second half needs the manifest directory's `kind: Secret` documents (the objects
//! source of issue 17 item 1).

use std::time::Duration;

use anyhow::{ensure, Context};
use base64::Engine as _;
use kubenode_integration::pods::{
    all_running, pod_yaml, waiting_message, waiting_reason, with_agent,
};
use kubenode_integration::{
    privileged, run_tests, TestAgent, TestRegistry, REGISTRY_PASSWORD, REGISTRY_USER,
};

fn main() {
    run_tests(vec![
        privileged(
            "a_missing_pull_secret_is_a_warning_and_the_anonymous_pull_a_401",
            missing_pull_secret,
        ),
        privileged(
            "a_pull_secret_of_the_manifest_directory_pulls_from_the_private_registry",
            pull_secret_from_the_manifest_directory,
        ),
    ])
}

/// Starts the auth registry in the agent's node, pushes the busybox image as
/// `private/busybox:1` and restarts the agent with the registry marked insecure.
fn private_image(agent: &mut TestAgent) -> anyhow::Result<(TestRegistry, String)> {
    let registry = TestRegistry::start_with_auth(Some(&agent.node))?;
    let layout = agent.layout().context("the agent's image layout")?;
    let reference = format!("{}/private/busybox:1", registry.host());
    let creds = format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}");
    let out = agent.node.exec_timeout(
        &[
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci:{}:latest", layout.layout_dir.display()),
            &format!("docker://{reference}"),
        ],
        Duration::from_secs(60),
    )?;
    ensure!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.kill();
    agent.extra_args = vec!["--insecure-registry".into(), registry.host()];
    agent.spawn()?;
    Ok((registry, reference))
}

const BODY: &str = "  imagePullSecrets:\n  - name: SECRET\n  containers:\n  - name: app\n    image: IMAGE\n    command: [sleep, '3600']\n";

fn missing_pull_secret() -> anyhow::Result<()> {
    with_agent("kps", |agent| {
        let (_registry, reference) = private_image(agent)?;
        let body = BODY;

        // The secret is missing: a warning, an anonymous pull, the registry's 401.
        agent.write_manifest(
            "nosecret.yaml",
            &pod_yaml("nosecret", &reference, &body.replace("SECRET", "absent")),
        )?;
        let name = agent.pod_name("nosecret");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "ErrImagePull", |p| {
            matches!(
                waiting_reason(p, "app"),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })?;
        let message = waiting_message(&pod, "app").unwrap_or_default().to_string();
        ensure!(message.contains(&reference), "{message}");
        ensure!(
            message.contains("401") || message.contains("nauthorized"),
            "{message}"
        );
        let events = agent.events()?;
        let warned = events.iter().any(|e| {
            e.reason.as_deref() == Some("FailedToRetrieveImagePullSecret")
                && e.type_.as_deref() == Some("Warning")
                && e.message.as_deref()
                    == Some("Unable to retrieve some image pull secrets (absent); attempting to pull the image may not succeed.")
        });
        ensure!(
            warned,
            "no FailedToRetrieveImagePullSecret event: {events:#?}"
        );
        agent.remove_manifest("nosecret.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(30))?;
        Ok(())
    })
}

fn pull_secret_from_the_manifest_directory() -> anyhow::Result<()> {
    with_agent("kpt", |agent| {
        let (_registry, reference) = private_image(agent)?;
        let body = BODY;
        // The secret is in the manifest directory: the pull is authenticated and the pod runs.
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"));
        let host = reference.split('/').next().unwrap_or_default();
        let config = format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#);
        let data = base64::engine::general_purpose::STANDARD.encode(config);
        agent.write_manifest(
            "regcred.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: default\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {data}\n"
            ),
        )?;
        agent.write_manifest(
            "withsecret.yaml",
            &pod_yaml("withsecret", &reference, &body.replace("SECRET", "regcred")),
        )?;
        let name = agent.pod_name("withsecret");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;

        // The password is nowhere the agent writes about pods.
        let events = serde_json::to_string(&agent.events()?)?;
        let pods = serde_json::to_string(&agent.pods()?)?;
        for (what, text) in [("log", agent.log()), ("events", events), ("pods", pods)] {
            ensure!(
                !text.contains(REGISTRY_PASSWORD),
                "the password is in the {what}"
            );
            ensure!(
                !text.contains(&auth),
                "the encoded credentials are in the {what}"
            );
        }
        agent.remove_manifest("withsecret.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(30))?;
        agent.remove_manifest("regcred.yaml")?;
        Ok(())
    })
}
