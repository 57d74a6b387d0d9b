//! The kubelet's HTTPS server on :10250 (docs/architecture.md, "The kubelet's HTTPS server"),
//! driven with curl from the node's network namespace:
//!
//! - standalone, with a client CA and `authorization.mode: AlwaysAllow`: a certificate the CA
//!   signed gets `/pods`, `/containerLogs` of a running pod, `/runningpods/`, `/configz`,
//!   `/logs/`; no credentials, a certificate of another CA and a bearer token (nothing to review
//!   it) are 401 `Unauthorized`; path traversal in `/logs/` is refused; a path that is not
//!   clean (`//stats/summary`, `/logs/../..`) is a 301 to its clean form, credentials or not,
//!   as Go's `ServeMux` in front of upstream's filters; the client CA file is reloaded when it
//!   changes (a certificate of a CA added to it let in); 1000 idle connections
//!   to the port do not stop a pod from starting, and the port serves again after them;
//! - cluster mode against the HTTPS stand-in: a token the TokenReview rejects is 401, the
//!   admin's token (`system:masters`, the scheme `bearer` in any case) and a certificate of the
//!   allowed subject are let in, a user the SubjectAccessReview denies gets 403 with upstream's
//!   message; `//stats/summary` is redirected and, followed, authorized as `stats`.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use kubenode_integration::agent::{tail, with_config_agent, NODE_IP};
use kubenode_integration::apiserver::tls::Ca;
use kubenode_integration::cluster::{kubelet_api_https, HttpsStandIn, ADMIN_TOKEN};
use kubenode_integration::pods::{all_running, pod_yaml};
use kubenode_integration::{
    curl_kubelet, privileged, run_tests, unique_tag, KubeletReply, TestAgent, TestDir,
};

fn main() {
    run_tests(vec![
        privileged("https_standalone_client_certificates", standalone),
        privileged("https_cluster_token_and_access_reviews", cluster),
    ])
}

/// Writes a client certificate `CN=user, O=groups` of `ca` to `<dir>/<name>.crt`/`.key`.
fn client_cert(
    ca: &Ca,
    dir: &TestDir,
    name: &str,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<(String, String)> {
    let now = jiff::Timestamp::now();
    let pair = ca.client(
        user,
        groups,
        now - jiff::SignedDuration::from_secs(300),
        now + jiff::SignedDuration::from_hours(1),
    )?;
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&crt, &pair.cert_pem)?;
    std::fs::write(&key, &pair.key_pem)?;
    Ok((crt.display().to_string(), key.display().to_string()))
}

/// `path` is answered 301 to `to` (Go's `ServeMux` before the kubelet's filters).
fn expect_redirect(agent: &TestAgent, path: &str, extra: &[&str], to: &str) -> anyhow::Result<()> {
    let got = curl_kubelet(agent, path, extra)?;
    let got = (got.status, got.redirect);
    let want = (301, format!("https://{NODE_IP}:10250{to}"));
    ensure!(got == want, "{path}: {got:?}, wanted {want:?}");
    Ok(())
}

/// The body of `got` when its status is `code`.
fn expect(got: KubeletReply, code: u16, what: &str) -> anyhow::Result<String> {
    ensure!(
        got.status == code,
        "{what}: status {} (wanted {code}): {}",
        got.status,
        got.body
    );
    Ok(got.body)
}

fn web_pod(agent: &TestAgent, name: &str) -> anyhow::Result<String> {
    let yaml = pod_yaml(
        name,
        &agent.image,
        "  containers:\n  - name: main\n    image: IMAGE\n    args: [\"/bin/sh\", \"-c\", \"echo line-one; echo line-two; sleep 3600\"]\n",
    );
    agent.write_manifest(&format!("{name}.yaml"), &yaml)?;
    let full = agent.pod_name(name);
    agent.wait_pod(&full, Duration::from_secs(90), "running", all_running)?;
    Ok(full)
}

fn standalone() -> anyhow::Result<()> {
    let certs = TestDir::new(&unique_tag("kscert"))?;
    let ca = Ca::generate()?;
    let other = Ca::generate()?;
    let ca_file = certs.join("ca.crt");
    std::fs::write(&ca_file, &ca.cert_pem)?;
    let good = client_cert(
        &ca,
        &certs,
        "good",
        "kube-apiserver-kubelet-client",
        &["system:masters"],
    )?;
    let foreign = client_cert(&other, &certs, "foreign", "intruder", &["system:masters"])?;
    let config = format!(
        "authentication:\n  x509:\n    clientCAFile: {}\nauthorization:\n  mode: AlwaysAllow\n",
        ca_file.display()
    );
    with_config_agent("ks", Some(&config), |agent| {
        let pod = web_pod(agent, "web")?;
        let with_good = ["--cert", good.0.as_str(), "--key", good.1.as_str()];
        // a certificate of the client CA: let in
        let body = expect(
            curl_kubelet(agent, "/pods", &with_good)?,
            200,
            "/pods with a client certificate",
        )?;
        let list: serde_json::Value = serde_json::from_str(&body)?;
        ensure!(list["kind"] == "PodList", "{body}");
        ensure!(body.contains(&pod), "/pods lacks {pod}: {body}");
        let path = format!("/containerLogs/default/{pod}/main");
        let logs = wait_body(agent, &path, &with_good, |b| b.contains("line-two"))?;
        ensure!(logs == "line-one\nline-two\n", "{logs:?}");
        let last = expect(
            curl_kubelet(agent, &format!("{path}?tailLines=1"), &with_good)?,
            200,
            "tailLines",
        )?;
        ensure!(last == "line-two\n", "{last:?}");
        let ts = expect(
            curl_kubelet(
                agent,
                &format!("{path}?timestamps=true&sinceSeconds=3600"),
                &with_good,
            )?,
            200,
            "timestamps",
        )?;
        ensure!(
            ts.lines().count() == 2 && ts.contains(" line-one"),
            "{ts:?}"
        );
        let body = expect(
            curl_kubelet(agent, "/runningpods/", &with_good)?,
            200,
            "/runningpods/",
        )?;
        ensure!(body.contains(&pod), "{body}");
        let body = expect(
            curl_kubelet(agent, "/configz", &with_good)?,
            200,
            "/configz",
        )?;
        let cfg: serde_json::Value = serde_json::from_str(&body)?;
        ensure!(
            cfg["kubeletconfig"]["authorization"]["mode"] == "AlwaysAllow",
            "{body}"
        );
        expect(
            curl_kubelet(agent, "/healthz", &with_good)?,
            200,
            "/healthz",
        )?;
        // The stats and metrics of the shared router, through the same authentication.
        let metrics = expect(
            curl_kubelet(agent, "/metrics", &with_good)?,
            200,
            "/metrics",
        )?;
        ensure!(metrics.contains("kubelet_running_pods"), "{metrics}");
        let summary = expect(
            curl_kubelet(agent, "/stats/summary", &with_good)?,
            200,
            "/stats/summary",
        )?;
        let summary: serde_json::Value = serde_json::from_str(&summary)?;
        ensure!(
            summary["pods"]
                .as_array()
                .is_some_and(|pods| pods.iter().any(|p| p["podRef"]["name"] == pod.as_str())),
            "{summary}"
        );
        let resource = expect(
            curl_kubelet(agent, "/metrics/resource", &with_good)?,
            200,
            "/metrics/resource",
        )?;
        ensure!(
            resource.contains("pod_memory_working_set_bytes"),
            "{resource}"
        );
        expect(
            curl_kubelet(agent, "/metrics", &[])?,
            401,
            "/metrics without credentials",
        )?;
        // /logs/: the node's log directory, and nothing outside it
        let listing = expect(curl_kubelet(agent, "/logs/", &with_good)?, 200, "/logs/")?;
        ensure!(listing.contains("<pre>"), "{listing}");
        expect_redirect(agent, "/logs", &with_good, "/logs/")?;
        // `..` is cleaned away by the redirect (as Go's ServeMux), never served under /logs/
        expect_redirect(agent, "/logs/../../etc/passwd", &with_good, "/etc/passwd")?;
        let got = curl_kubelet(agent, "/etc/passwd", &with_good)?;
        ensure!(
            got.status == 404 && !got.body.contains("root:"),
            "/etc/passwd: {got:?}"
        );
        // A path that is not clean is redirected before authentication and authorization, so
        // the path authorized is the path served: `//stats/summary` is never authorized as
        // `proxy` and served as stats.
        for (path, to) in [
            ("//stats/summary", "/stats/summary"),
            ("//metrics", "/metrics"),
            ("//logs/", "/logs/"),
            ("/./pods?x=1", "/pods?x=1"),
        ] {
            expect_redirect(agent, path, &with_good, to)?;
            expect_redirect(agent, path, &[], to)?;
        }
        for bad in [
            "/logs/..%2f..%2fetc%2fpasswd",
            "/logs/%2e%2e/%2e%2e/etc/passwd",
        ] {
            let got = curl_kubelet(agent, bad, &with_good)?;
            ensure!(
                got.status == 400 && !got.body.contains("root:"),
                "{bad}: {got:?}"
            );
        }
        // refused: no credentials, another CA's certificate, a token nobody can review
        for (what, extra) in [
            ("no credentials", vec![]),
            (
                "another CA",
                vec!["--cert", foreign.0.as_str(), "--key", foreign.1.as_str()],
            ),
            (
                "a bearer token",
                vec!["-H", "Authorization: Bearer abcdef.0123456789abcdef"],
            ),
        ] {
            let body = expect(curl_kubelet(agent, "/pods", &extra)?, 401, what)?;
            ensure!(body == "Unauthorized", "{what}: {body:?}");
        }
        // clientCAFile reloaded on change (upstream's DynamicFileCAContent): the other CA added
        // to it, its certificate is let in without a restart, and the first CA's still is
        std::fs::write(&ca_file, format!("{}{}", ca.cert_pem, other.cert_pem))?;
        let with_foreign = ["--cert", foreign.0.as_str(), "--key", foreign.1.as_str()];
        let body = wait_body(agent, "/pods", &with_foreign, |b| b.contains(&pod))?;
        ensure!(body.contains("PodList"), "{body}");
        expect(
            curl_kubelet(agent, "/healthz", &with_good)?,
            200,
            "the first CA after the reload",
        )?;
        ensure!(
            agent.log().contains("client CA reloaded from clientCAFile"),
            "{}",
            tail(&agent.log(), 30)
        );
        idle_connections(agent, &with_good)
    })
}

/// Polls `path` until `pred` holds for the body (bounded).
fn wait_body(
    agent: &TestAgent,
    path: &str,
    extra: &[&str],
    pred: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = curl_kubelet(agent, path, extra)?;
        if got.status == 200 && pred(&got.body) {
            return Ok(got.body);
        }
        if Instant::now() > deadline {
            bail!("{path}: {} {:?}", got.status, got.body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// 1000 idle TCP connections to the HTTPS port: a pod still starts while they are open (the
/// agent's work does not wait on the port), and once they are gone the port answers again.
fn idle_connections(agent: &TestAgent, with_good: &[&str]) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = format!("{NODE_IP}:10250").parse()?;
    let conns: Vec<TcpStream> = agent.node.run_in(|| {
        (0..1000)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
            .collect::<Result<Vec<_>, _>>()
    })??;
    ensure!(conns.len() == 1000);
    let second = web_pod(agent, "second")?;
    ensure!(
        agent.pod(&second)?.is_some_and(|p| all_running(&p)),
        "the second pod is not running"
    );
    drop(conns);
    let body = wait_body(agent, "/healthz", with_good, |b| b == "ok")?;
    ensure!(body == "ok");
    Ok(())
}

fn cluster() -> anyhow::Result<()> {
    const VIEWER: &str = "viewer-token-0123456789";
    let certs = TestDir::new(&unique_tag("kccert"))?;
    with_config_agent("kc", None, |agent| {
        let mut https = kubelet_api_https();
        https
            .static_tokens
            .push((VIEWER.into(), "viewer".into(), vec![]));
        let standin = HttpsStandIn::start(agent, certs.path(), https)?;
        let ca = standin.ca();
        let allowed = client_cert(ca, &certs, "allowed", "kube-apiserver-kubelet-client", &[])?;
        let denied = client_cert(ca, &certs, "denied", "somebody", &["developers"])?;
        standin.join(agent, &standin.kubeconfig)?;
        let pod = web_pod(agent, "web")?;
        let admin = format!("Authorization: Bearer {ADMIN_TOKEN}");
        let body = wait_body(agent, "/pods", &["-H", &admin], |b| b.contains(&pod))?;
        ensure!(body.contains("PodList"));
        let path = format!("/containerLogs/default/{pod}/main");
        let logs = wait_body(
            agent,
            &path,
            &["--cert", &allowed.0, "--key", &allowed.1],
            |b| b.contains("line-two"),
        )?;
        ensure!(logs.contains("line-one"), "{logs}");
        let body = expect(
            curl_kubelet(agent, "/pods", &["-H", "Authorization: Bearer not-a-token"])?,
            401,
            "a token the TokenReview rejects",
        )?;
        ensure!(body == "Unauthorized", "{body:?}");
        // the scheme in any case, as upstream's bearertoken authenticator
        let lower = format!("Authorization: bearer {ADMIN_TOKEN}");
        let body = expect(
            curl_kubelet(agent, "/pods", &["-H", &lower])?,
            200,
            "bearer",
        )?;
        ensure!(body.contains(&pod), "{body}");
        let viewer = format!("Authorization: Bearer {VIEWER}");
        let body = expect(
            curl_kubelet(agent, "/pods", &["-H", &viewer])?,
            403,
            "a denied user",
        )?;
        ensure!(
            body
                == "Forbidden (user=viewer, verb=get, resource=nodes, subresource(s)=[pods proxy])",
            "{body:?}"
        );
        let body = expect(
            curl_kubelet(agent, &path, &["--cert", &denied.0, "--key", &denied.1])?,
            403,
            "a denied certificate",
        )?;
        ensure!(
            body == "Forbidden (user=somebody, verb=get, resource=nodes, subresource(s)=[proxy])",
            "{body:?}"
        );
        let body = expect(
            curl_kubelet(agent, "/stats/summary", &["-X", "POST", "-H", &viewer])?,
            403,
            "stats",
        )?;
        ensure!(
            body == "Forbidden (user=viewer, verb=create, resource=nodes, subresource(s)=[stats])",
            "{body:?}"
        );
        // `//stats/summary` is redirected, never authorized as `proxy` (what a user allowed
        // only nodes/proxy would have been let in with before): followed, it is judged as
        // `stats`, for the denied user and the allowed certificate alike
        expect_redirect(agent, "//stats/summary", &["-H", &viewer], "/stats/summary")?;
        let body = expect(
            curl_kubelet(agent, "//stats/summary", &["-L", "-H", &viewer])?,
            403,
            "//stats/summary followed",
        )?;
        ensure!(
            body == "Forbidden (user=viewer, verb=get, resource=nodes, subresource(s)=[stats])",
            "{body:?}"
        );
        let with_allowed = ["--cert", allowed.0.as_str(), "--key", allowed.1.as_str()];
        expect_redirect(agent, "//stats/summary", &with_allowed, "/stats/summary")?;
        let mut followed = with_allowed.to_vec();
        followed.push("-L");
        let summary = expect(
            curl_kubelet(agent, "//stats/summary", &followed)?,
            200,
            "followed",
        )?;
        ensure!(summary.contains("podRef"), "{summary}");
        // `kubectl logs` of an API pod: the stand-in proxies pods/log to the node's :10250 with
        // its kubelet client certificate
        let k = |args: &[&str]| standin.kubectl(agent, args);
        let manifest = certs.join("apilog.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: apilog\n  namespace: default\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    args: [\"/bin/sh\", \"-c\", \"echo api-one; echo api-two; sleep 3600\"]\n",
                agent.node_name(),
                agent.image
            ),
        )?;
        if let Err(e) = k(&["create", "-f", &manifest.display().to_string()])? {
            bail!("kubectl create: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        let logs = loop {
            match k(&["logs", "apilog"])? {
                Ok(out) if out.contains("api-two") => break out,
                other if Instant::now() > deadline => bail!("kubectl logs apilog: {other:?}"),
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        ensure!(logs == "api-one\napi-two\n", "{logs:?}");
        match k(&["logs", "apilog", "-c", "main", "--tail=1"])? {
            Ok(out) => ensure!(out == "api-two\n", "{out:?}"),
            Err(e) => bail!("kubectl logs --tail=1: {e}"),
        }
        if let Err(e) = k(&["delete", "pod", "apilog", "--wait=false"])? {
            bail!("kubectl delete: {e}");
        }
        let log = agent.log();
        ensure!(
            log.contains("kubelet HTTPS server listening"),
            "{}",
            tail(&log, 30)
        );
        drop(standin);
        Ok(())
    })
}
