//! TLS bootstrap end to end, as `kubeadm join` sets it up: the stand-in API server in HTTPS
//! mode (its CA, a bootstrap token Secret in `kube-system`, the CSR approving and signing
//! controllers), a real `kubenode agent` given only `--bootstrap-kubeconfig` and the path of a
//! `--kubeconfig` that does not exist yet, and the real `kubectl` with the admin's token.
//!
//! First with a wrong bootstrap token: no CSR, no Node, the failure logged and retried while
//! the agent keeps running; a SIGKILL then (mid-bootstrap: the kubeconfig written, no
//! certificate) and a restart that bootstraps again. Then the bootstrap kubeconfig is fixed (no
//! restart): a CSR from
//! `system:bootstrap:<id>` is approved and issued (`kubectl get csr`), the certificate is written
//! to `<root>/pki/kubelet-client-<ts>.pem` (0600) behind the `kubelet-client-current.pem`
//! symlink with `CN=system:node:<node>, O=system:nodes`, the kubeconfig names it, and the Node
//! registers and turns Ready. With a 30 s signing duration (and no backdating) the certificate
//! is rotated by the node itself (a second CSR from `system:node:<node>`, a new symlink target)
//! and the Lease keeps being renewed after the first certificate expired (the stand-in checks
//! a client certificate's validity at each request, as kube-apiserver does). A SIGKILL and
//! restart then finds a valid bootstrapped kubeconfig and goes on rotating.
//!
//! The stand-in listens on the loopback of the node's network namespace (the agent's own), so
//! kubectl runs there too. Privileged (the agent runs real pods); skipped without kubectl.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::agent::with_config_agent;
use kubenode_integration::apiserver::csr::Signing;
use kubenode_integration::apiserver::{ApiServer, HttpsOptions, Options};
use kubenode_integration::cluster::{kubectl_in, some_port, wait_for};
use kubenode_integration::kubectl;
use kubenode_integration::{privileged, run_tests, unique_tag, TestDir};
use serde_json::Value;

const TOKEN_ID: &str = "abcdef";
const TOKEN_SECRET: &str = "0123456789abcdef";
const ADMIN_TOKEN: &str = "kn-admin-token-for-tests";

fn main() {
    let missing = !kubectl::present();
    if missing {
        eprintln!("note: `kubectl` is not installed: the TLS bootstrap tests are skipped (install the kubectl package)");
    }
    run_tests(vec![
        privileged(
            "bootstrap_token_csr_certificate_node_ready_and_rotation",
            bootstrap_and_rotation,
        )
        .with_ignored_flag(missing || !kubenode_integration::is_root()),
        kubenode_integration::Trial::test("in_process_bootstrap_and_rotation", || {
            in_process().map_err(|e| format!("{e:#}").into())
        }),
    ])
}

/// The kubelet's bootstrap in-process against an HTTPS stand-in (unprivileged): the client
/// `bootstrap::start` returns works once the certificate is issued, and keeps working across
/// rotations (30 s certificates).
fn in_process() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Node, Secret};
    use kube::api::{Api, PostParams};
    let server = ApiServer::start_with(
        "127.0.0.1:0".parse()?,
        Options {
            https: Some(HttpsOptions {
                ca: None,
                static_tokens: vec![(
                    ADMIN_TOKEN.into(),
                    "kubernetes-admin".into(),
                    vec!["system:masters".into()],
                )],
                signing: Signing {
                    duration: Duration::from_secs(30),
                    backdate: Duration::ZERO,
                },
                ..HttpsOptions::default()
            }),
            ..Options::default()
        },
    )?;
    let dir = TestDir::new(&unique_tag("cbip"))?;
    let admin = dir.join("admin.conf");
    server.write_kubeconfig(&admin)?;
    let bootstrap = dir.join("bootstrap-kubelet.conf");
    std::fs::write(
        &bootstrap,
        server.kubeconfig_with_token(Some(&format!("{TOKEN_ID}.{TOKEN_SECRET}"))),
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let admin = kubenode_kubelet::cluster::connect(&admin).await?;
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("bootstrap-token-{TOKEN_ID}"), "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {"token-id": TOKEN_ID, "token-secret": TOKEN_SECRET,
                "usage-bootstrap-authentication": "true"},
        }))?;
        Api::<Secret>::namespaced(admin.clone(), "kube-system")
            .create(&PostParams::default(), &secret)
            .await?;
        // The bootstrap token authenticates, and may only use CSRs.
        let token_client = kubenode_kubelet::cluster::connect(&bootstrap).await?;
        match Api::<Node>::all(token_client)
            .list(&Default::default())
            .await
        {
            Err(kube::Error::Api(s)) => ensure!(
                s.code == 403
                    && s.message
                        == format!(
                            "nodes is forbidden: User \"system:bootstrap:{TOKEN_ID}\" cannot \
                             list resource \"nodes\" in API group \"\" at the cluster scope"
                        ),
                "{s:?}"
            ),
            other => bail!("a bootstrap token listed nodes: {other:?}"),
        }
        let started = kubenode_kubelet::cluster::bootstrap::start(
            kubenode_kubelet::cluster::bootstrap::Paths {
                kubeconfig: dir.join("kubelet.conf"),
                bootstrap_kubeconfig: bootstrap.clone(),
                cert_dir: dir.join("pki"),
                node_name: "n1".into(),
                rotate: true,
            },
        )
        .await?;
        ensure!(started.bootstrapping, "{}", started.message);
        let nodes: Api<Node> = Api::all(started.client.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut ok_since: Option<Instant> = None;
        let mut last_err = String::new();
        let first = dir.join("pki/kubelet-client-current.pem");
        let mut first_target = None;
        loop {
            match nodes.list(&Default::default()).await {
                Ok(_) => {
                    ok_since.get_or_insert_with(Instant::now);
                    if first_target.is_none() {
                        first_target = std::fs::read_link(&first).ok();
                    }
                }
                Err(e) => last_err = e.to_string(),
            }
            let rotated = first_target.is_some() && std::fs::read_link(&first).ok() != first_target;
            // past a rotation and past the first certificate's end
            if rotated && ok_since.is_some_and(|t| t.elapsed() > Duration::from_secs(35)) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no rotation with a working client: last error {last_err}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // the client kept working: the last request succeeds
        nodes.list(&Default::default()).await?;
        anyhow::Ok(())
    })
}

/// One row of `kubectl get csr`: name, signer, requestor, condition.
#[derive(Debug, Clone)]
struct CsrRow {
    name: String,
    signer: String,
    requestor: String,
    condition: String,
}

fn csr_rows(out: &str) -> Vec<CsrRow> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| CsrRow {
                name: f[0].to_string(),
                signer: f[2].to_string(),
                requestor: f[3].to_string(),
                condition: f[5].to_string(),
            })
        })
        .collect()
}

/// The subject and validity of the certificate in a PEM file.
fn cert_of(path: &Path) -> anyhow::Result<(String, Vec<String>, i64, i64)> {
    use rustls::pki_types::pem::PemObject;
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&text)
        .with_context(|| format!("no certificate in {}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_string();
    let orgs = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    ensure!(
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&text).is_ok(),
        "{} holds no private key",
        path.display()
    );
    Ok((
        cn,
        orgs,
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

fn bootstrap_and_rotation() -> anyhow::Result<()> {
    let api_dir = TestDir::new(&unique_tag("cbapi"))?;
    let home = api_dir.path().to_path_buf();
    let port = some_port()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let admin = api_dir.join("admin.conf");
    let bootstrap = api_dir.join("bootstrap-kubelet.conf");
    let node_kubeconfig: PathBuf = api_dir.join("kubelet.conf");
    with_config_agent("cboot", None, |agent| {
        let node = agent.node_name().to_string();
        let netns = agent.node.path();
        let k = |args: &[&str]| kubectl_in(&netns, &home, &admin, args);
        let ok = |args: &[&str]| -> anyhow::Result<String> {
            match k(args)? {
                Ok(out) => Ok(out),
                Err(e) => bail!("kubectl {args:?}: {e}"),
            }
        };
        // The stand-in, HTTPS, on the node's loopback: a 30 s signing duration, no backdating
        // (with upstream's 5 min a 30 s certificate would be due for rotation at once).
        let opts = Options {
            https: Some(HttpsOptions {
                ca: None,
                static_tokens: vec![(
                    ADMIN_TOKEN.into(),
                    "kubernetes-admin".into(),
                    vec!["system:masters".into()],
                )],
                signing: Signing {
                    duration: Duration::from_secs(30),
                    backdate: Duration::ZERO,
                },
                ..HttpsOptions::default()
            }),
            ..Options::default()
        };
        let server = agent
            .node
            .run_in(|| ApiServer::start_with(addr, opts))?
            .context("starting the stand-in in the node's namespace")?;
        server.write_kubeconfig(&admin)?;
        // kubeadm's bootstrap token, as `kubeadm token create` writes it.
        let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24))
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let secret = api_dir.join("token.yaml");
        std::fs::write(
            &secret,
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{TOKEN_ID}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {TOKEN_ID}\n  token-secret: {TOKEN_SECRET}\n  expiration: \"{expiration}\"\n  usage-bootstrap-authentication: \"true\"\n  usage-bootstrap-signing: \"true\"\n  auth-extra-groups: system:bootstrappers:kubeadm:default-node-token\n"
            ),
        )?;
        ok(&["create", "-f", &secret.display().to_string()])?;

        // A wrong token first: refused, logged, retried; the agent keeps running.
        std::fs::write(
            &bootstrap,
            server.kubeconfig_with_token(Some(&format!("{TOKEN_ID}.ffffffffffffffff"))),
        )?;
        agent.kill();
        agent.extra_args = vec![
            "--kubeconfig".into(),
            node_kubeconfig.display().to_string(),
            "--bootstrap-kubeconfig".into(),
            bootstrap.display().to_string(),
            // kubeadm's rotateCertificates: true (upstream's default is false).
            "--rotate-certificates".into(),
        ];
        agent.spawn()?;
        let failures = || {
            agent
                .log()
                .matches("bootstrapping the client certificate failed")
                .count()
        };
        wait_for(
            "two failed bootstrap attempts in the log",
            Duration::from_secs(60),
            || Ok((failures() >= 2).then_some(())),
        )?;
        let log = agent.log();
        ensure!(
            log.contains("Unauthorized"),
            "the failure does not say Unauthorized:\n{}",
            kubenode_integration::agent::tail(&log, 20)
        );
        ensure!(
            ok(&["get", "nodes", "-o", "name"])?.trim().is_empty(),
            "a node registered without credentials"
        );
        ensure!(
            ok(&["get", "csr", "-o", "name"])?.trim().is_empty(),
            "a CSR was created with a wrong token"
        );
        ensure!(
            agent.kubenode(&["get", "pods", "-A"])?.status.success(),
            "the agent stopped"
        );

        // A SIGKILL mid-bootstrap (the kubeconfig written, no certificate yet): the next start
        // finds the kubeconfig unusable and bootstraps again.
        ensure!(
            node_kubeconfig.exists(),
            "the kubeconfig is not written before the certificate"
        );
        agent.kill();
        agent.spawn()?;
        wait_for(
            "the restarted agent bootstrapping again",
            Duration::from_secs(60),
            || {
                Ok(agent
                    .log()
                    .contains("is not usable (client certificate")
                    .then_some(()))
            },
        )?;

        // The right token, no restart: CSR approved and issued, certificate, kubeconfig, Node.
        std::fs::write(
            &bootstrap,
            server.kubeconfig_with_token(Some(&format!("{TOKEN_ID}.{TOKEN_SECRET}"))),
        )?;
        let bootstrap_user = format!("system:bootstrap:{TOKEN_ID}");
        let first = wait_for(
            "the bootstrap CSR Approved,Issued in kubectl get csr",
            Duration::from_secs(90),
            || {
                let Ok(out) = k(&["get", "csr", "--no-headers"])? else {
                    return Ok(None);
                };
                Ok(csr_rows(&out)
                    .into_iter()
                    .find(|r| r.requestor == bootstrap_user && r.condition == "Approved,Issued"))
            },
        )?;
        ensure!(
            first.signer == "kubernetes.io/kube-apiserver-client-kubelet",
            "{first:?}"
        );
        let csr: Value = serde_json::from_str(&ok(&["get", "csr", &first.name, "-o", "json"])?)?;
        let approved = &csr["status"]["conditions"][0];
        ensure!(
            approved["type"] == "Approved"
                && approved["reason"] == "AutoApproved"
                && approved["message"]
                    == "Auto approving kubelet client certificate after SubjectAccessReview.",
            "approval: {approved}"
        );
        ensure!(
            csr["spec"]["usages"] == serde_json::json!(["digital signature", "client auth"])
                && csr["spec"]["groups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|g| g == "system:bootstrappers")),
            "spec: {}",
            csr["spec"]
        );

        let pki = agent.dir.join("root/pki");
        let current = pki.join("kubelet-client-current.pem");
        let first_target = wait_for(
            "kubelet-client-current.pem",
            Duration::from_secs(30),
            || Ok(std::fs::read_link(&current).ok()),
        )?;
        let name = first_target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        ensure!(
            name.starts_with("kubelet-client-20")
                && name.ends_with(".pem")
                && first_target.starts_with(&pki),
            "symlink target {}",
            first_target.display()
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first_target)?.permissions().mode() & 0o777;
            ensure!(
                mode == 0o600,
                "{} has mode {mode:o}",
                first_target.display()
            );
        }
        let (cn, orgs, _, first_not_after) = cert_of(&first_target)?;
        ensure!(
            cn == format!("system:node:{node}") && orgs == ["system:nodes"],
            "subject CN={cn}, O={orgs:?}"
        );
        let written = std::fs::read_to_string(&node_kubeconfig)?;
        ensure!(
            written.contains(&format!("client-certificate: {}", current.display()))
                && written.contains(&format!("client-key: {}", current.display()))
                && written.contains(&format!("server: https://{addr}"))
                && !written.contains(TOKEN_SECRET),
            "kubeconfig:\n{written}"
        );

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

        // Rotation: the node renews with its own certificate.
        let node_user = format!("system:node:{node}");
        let renewal = wait_for(
            "a renewal CSR from the node Approved,Issued",
            Duration::from_secs(90),
            || {
                let Ok(out) = k(&["get", "csr", "--no-headers"])? else {
                    return Ok(None);
                };
                Ok(csr_rows(&out)
                    .into_iter()
                    .find(|r| r.requestor == node_user && r.condition == "Approved,Issued"))
            },
        )?;
        let csr: Value = serde_json::from_str(&ok(&["get", "csr", &renewal.name, "-o", "json"])?)?;
        ensure!(
            csr["status"]["conditions"][0]["message"]
                == "Auto approving self kubelet client certificate after SubjectAccessReview.",
            "renewal approval: {}",
            csr["status"]["conditions"]
        );
        wait_for(
            "a new kubelet-client-current.pem target",
            Duration::from_secs(30),
            || {
                Ok(std::fs::read_link(&current)
                    .ok()
                    .filter(|t| *t != first_target))
            },
        )?;

        // The Lease is renewed after the first certificate expired.
        let renew_time = || -> anyhow::Result<Option<i64>> {
            let Ok(out) = k(&["get", "lease", "-n", "kube-node-lease", &node, "-o", "json"])?
            else {
                return Ok(None);
            };
            let l: Value = serde_json::from_str(&out)?;
            Ok(l["spec"]["renewTime"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second()))
        };
        wait_for(
            "a lease renewal after the first certificate expired",
            Duration::from_secs(90),
            || Ok(renew_time()?.filter(|t| *t > first_not_after + 5)),
        )?;
        ensure!(
            agent
                .log()
                .contains("rotating the client certificate: new certificate installed"),
            "no rotation in the log"
        );

        // SIGKILL and restart: the bootstrapped kubeconfig is valid, rotation goes on.
        agent.kill();
        agent.spawn()?;
        let before = std::fs::read_link(&current)?;
        wait_for(
            "a rotation after the restart",
            Duration::from_secs(90),
            || Ok(std::fs::read_link(&current).ok().filter(|t| *t != before)),
        )?;
        let (_, _, _, latest_not_after) = cert_of(&current)?;
        wait_for(
            "a lease renewal with the restarted agent's certificate",
            Duration::from_secs(60),
            || Ok(renew_time()?.filter(|t| *t > latest_not_after - 25)),
        )?;
        let _ = server;
        Ok(())
    })
}
