//! The HTTPS server's serving certificate from `tlsCertFile`/`tlsPrivateKeyFile` is reloaded
//! when the files change, without a restart (upstream's `ReloadKubeletServerCertificate`), and
//! a pair that cannot be used leaves the current one serving.
//!
//! With `serverTLSBootstrap: true` against the HTTPS stand-in, the node asks for its serving
//! certificate with a `kubernetes.io/kubelet-serving` CSR as the node's user, with upstream's
//! usages and the node's name and IP as SANs; nothing approves it on its own (upstream's
//! approver does not), and until an admin does, :10250 listens but completes no handshake
//! (upstream: "no serving certificate available for the kubelet"). After `kubectl certificate
//! approve`, :10250 presents the cluster CA's certificate for the node, verified by curl for the
//! node's IP and name, and `kubectl logs` works through an API server that verifies it
//! (`--kubelet-certificate-authority`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::agent::{with_config_agent, NODE_IP};
use kubenode_integration::apiserver::HttpsOptions;
use kubenode_integration::cluster::{kubelet_api_https, HttpsStandIn, ADMIN_TOKEN};
use kubenode_integration::{privileged, run, run_tests, unique_tag, TestAgent, TestDir};

fn main() {
    run_tests(vec![
        privileged("https_tls_cert_file_is_reloaded_on_change", reloaded),
        privileged(
            "https_serving_certificate_from_an_approved_kubelet_serving_csr",
            serving_csr,
        ),
    ])
}

/// A self-signed pair `CN=<cn>` written to `crt`/`key` by rename, as a certificate manager
/// (cert-manager, a renewal script) replaces them.
fn write_pair(dir: &TestDir, crt: &Path, key: &Path, cn: &str) -> anyhow::Result<()> {
    let (tmp_crt, tmp_key) = (dir.join("new.crt"), dir.join("new.key"));
    let out = run(
        std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .arg("-subj")
            .arg(format!("/CN={cn}"))
            .arg("-addext")
            .arg(format!("subjectAltName=IP:{NODE_IP}"))
            .arg("-keyout")
            .arg(&tmp_key)
            .arg("-out")
            .arg(&tmp_crt),
        Duration::from_secs(30),
    )?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp_key, key)?;
    std::fs::rename(&tmp_crt, crt)?;
    Ok(())
}

/// The subject the HTTPS port presents (curl -v prints the server certificate).
fn served_subject(agent: &TestAgent) -> anyhow::Result<String> {
    let url = format!("https://{NODE_IP}:10250/healthz");
    let out = run(
        &mut agent
            .node
            .command(&["curl", "-skv", "--max-time", "20", "-o", "/dev/null", &url]),
        Duration::from_secs(30),
    )?;
    let text = String::from_utf8_lossy(&out.stderr);
    Ok(text
        .lines()
        .find_map(|l| l.trim().strip_prefix("*  subject: "))
        .unwrap_or_default()
        .to_string())
}

fn wait_subject(agent: &TestAgent, want: &str) -> anyhow::Result<()> {
    // The agent looks at the files every 10 s: a bounded wait, no timing asserted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = served_subject(agent)?;
        if got.contains(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the HTTPS port presents {got:?}, not {want}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn reloaded() -> anyhow::Result<()> {
    let dir = TestDir::new(&unique_tag("ksrel"))?;
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    write_pair(&dir, &crt, &key, "first-serving")?;
    let config = format!(
        "tlsCertFile: {}\ntlsPrivateKeyFile: {}\nauthorization:\n  mode: AlwaysAllow\n",
        crt.display(),
        key.display()
    );
    with_config_agent("ksr", Some(&config), |agent| {
        wait_subject(agent, "CN=first-serving")?;
        write_pair(&dir, &crt, &key, "second-serving")?;
        wait_subject(agent, "CN=second-serving")?;
        // A key that does not belong to the certificate: refused, the second pair stays.
        let (_, other_key) = (dir.join("x.crt"), dir.join("x.key"));
        write_pair(&dir, &dir.join("x.crt"), &other_key, "third")?;
        std::fs::copy(&other_key, &key)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agent
            .log()
            .contains("tlsCertFile changed but cannot be used")
        {
            ensure!(
                Instant::now() < deadline,
                "no warning about the mismatched pair:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let got = served_subject(agent)?;
        ensure!(got.contains("CN=second-serving"), "{got:?}");
        Ok(())
    })
}

/// curl from the node's namespace: its exit code, stdout and stderr (`-v`: the handshake).
fn curl(agent: &TestAgent, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let mut argv = vec!["curl", "-sv", "--max-time", "20"];
    argv.extend_from_slice(args);
    let out = run(&mut agent.node.command(&argv), Duration::from_secs(30))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn serving_csr() -> anyhow::Result<()> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let certs = TestDir::new(&unique_tag("kscsr"))?;
    with_config_agent("kscsr", None, |agent| {
        let https = HttpsOptions {
            kubelet_certificate_authority: true,
            ..kubelet_api_https()
        };
        let standin = HttpsStandIn::start(agent, certs.path(), https)?;
        let (server, ca) = (&standin.server, standin.ca());
        let ca_pem = server.ca_pem().context("no CA")?.to_string();
        // the node's kubeconfig after a join: its client certificate system:node:<node>
        let node = agent.node_name().to_string();
        let now = jiff::Timestamp::now();
        let pair = ca.client(
            &format!("system:node:{node}"),
            &["system:nodes"],
            now - jiff::SignedDuration::from_secs(300),
            now + jiff::SignedDuration::from_hours(24),
        )?;
        let kubelet_conf = certs.join("node.conf");
        std::fs::write(
            &kubelet_conf,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
                server.url(),
                b64(&ca_pem),
                b64(&pair.cert_pem),
                b64(&pair.key_pem)
            ),
        )?;
        // read at the agent's next start
        std::fs::write(
            agent.dir.join("config.yaml"),
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nserverTLSBootstrap: true\n",
        )?;
        standin.join(agent, &kubelet_conf)?;
        let ca_file = &standin.ca_file;
        let k = |args: &[&str]| standin.kubectl(agent, args);

        // the node's serving CSR, pending
        let deadline = Instant::now() + Duration::from_secs(60);
        let csr = loop {
            if let Ok(out) = k(&["get", "csr", "-o", "json"])? {
                let list: serde_json::Value = serde_json::from_str(&out)?;
                let found = list["items"].as_array().and_then(|items| {
                    items
                        .iter()
                        .find(|c| c["spec"]["signerName"] == "kubernetes.io/kubelet-serving")
                        .cloned()
                });
                if let Some(c) = found {
                    break c;
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no kubelet-serving CSR:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        let name = csr["metadata"]["name"].as_str().unwrap_or("").to_string();
        ensure!(
            csr["spec"]["username"] == format!("system:node:{node}"),
            "{csr}"
        );
        ensure!(
            csr["spec"]["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == "system:nodes")),
            "{csr}"
        );
        // upstream's kubelet asks for these with an ECDSA key (RSA adds key encipherment)
        ensure!(
            csr["spec"]["usages"] == serde_json::json!(["digital signature", "server auth"]),
            "{csr}"
        );
        let request = base64::engine::general_purpose::STANDARD
            .decode(csr["spec"]["request"].as_str().unwrap_or(""))?;
        let text = String::from_utf8(request)?;
        let der = base64::engine::general_purpose::STANDARD.decode(
            text.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )?;
        use x509_parser::prelude::FromDer;
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der)?;
        let subject = req.certification_request_info.subject.to_string();
        ensure!(
            subject.contains(&format!("CN=system:node:{node}"))
                && subject.contains("O=system:nodes"),
            "{subject}"
        );
        let mut sans = Vec::new();
        for ext in req.requested_extensions().into_iter().flatten() {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(s) = ext {
                for n in &s.general_names {
                    match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            sans.push(d.to_string())
                        }
                        x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                            sans.push(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
                        }
                        _ => {}
                    }
                }
            }
        }
        ensure!(
            sans.contains(&node) && sans.iter().any(|s| s == NODE_IP),
            "SANs {sans:?}"
        );
        let table = k(&["get", "csr", &name])?.map_err(|e| anyhow::anyhow!("get csr: {e}"))?;
        ensure!(
            table.contains("kubernetes.io/kubelet-serving")
                && table.contains(&format!("system:node:{node}"))
                && table.contains("Pending"),
            "{table}"
        );

        // pending: the port listens but no handshake completes (curl: 35, not 7), and no
        // controller approves it (one pass runs at least every 5 s: wait past one)
        std::thread::sleep(Duration::from_secs(6));
        let url = format!("https://{NODE_IP}:10250/healthz");
        let got = curl(agent, &["-k", &url])?;
        ensure!(got.0 == 35, "while pending, curl: {got:?}");
        let table = k(&["get", "csr", &name])?.map_err(|e| anyhow::anyhow!("get csr: {e}"))?;
        ensure!(
            table.contains("Pending") && !table.contains("Approved"),
            "{table}"
        );

        if let Err(e) = k(&["certificate", "approve", &name])? {
            bail!("kubectl certificate approve: {e}");
        }
        // issued, then installed without a restart: curl verifies it for the node's IP
        let bearer = format!("Authorization: Bearer {ADMIN_TOKEN}");
        let ca_arg = ca_file.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(90);
        let verbose = loop {
            let got = curl(agent, &["--cacert", &ca_arg, "-H", &bearer, &url])?;
            if got.0 == 0 && got.1 == "ok" {
                break got.2;
            }
            ensure!(
                Instant::now() < deadline,
                "the approved certificate is not served: {got:?}\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        ensure!(
            verbose.contains(&format!("CN=system:node:{node}"))
                && verbose.contains("issuer: CN=kubernetes"),
            "{verbose}"
        );
        // and for its name
        let resolve = format!("{node}:10250:{NODE_IP}");
        let by_name = format!("https://{node}:10250/healthz");
        let got = curl(
            agent,
            &[
                "--cacert",
                &ca_arg,
                "--resolve",
                &resolve,
                "-H",
                &bearer,
                &by_name,
            ],
        )?;
        ensure!(got.0 == 0 && got.1 == "ok", "by name: {got:?}");
        let table = k(&["get", "csr", &name])?.map_err(|e| anyhow::anyhow!("get csr: {e}"))?;
        ensure!(table.contains("Approved,Issued"), "{table}");

        // kubectl logs through an API server that verifies the kubelet's certificate
        let manifest = certs.join("csrlog.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: csrlog\n  namespace: default\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    args: [\"/bin/sh\", \"-c\", \"echo verified-one; sleep 3600\"]\n",
                agent.image
            ),
        )?;
        if let Err(e) = k(&["create", "-f", &manifest.display().to_string()])? {
            bail!("kubectl create: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        let outcome = loop {
            match k(&["logs", "csrlog"])? {
                Ok(out) if out.contains("verified-one") => break Ok(()),
                other if Instant::now() > deadline => {
                    break Err(anyhow::anyhow!("kubectl logs csrlog: {other:?}"))
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        if let Err(e) = k(&["delete", "pod", "csrlog", "--wait=false"])? {
            bail!("kubectl delete: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent
            .pods()?
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("csrlog"))
        {
            ensure!(Instant::now() < deadline, "the pod csrlog is still there");
            std::thread::sleep(Duration::from_millis(500));
        }
        outcome?;
        drop(standin);
        Ok(())
    })
}
