//! The HTTPS server's serving certificate from `tlsCertFile`/`tlsPrivateKeyFile` is reloaded
//! when the files change, without a restart (upstream's `ReloadKubeletServerCertificate`), and
//! a pair that cannot be used leaves the current one serving.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use kubenode_integration::agent::{with_config_agent, NODE_IP};
use kubenode_integration::{privileged, run, run_tests, unique_tag, TestAgent, TestDir};

fn main() {
    run_tests(vec![privileged(
        "https_tls_cert_file_is_reloaded_on_change",
        reloaded,
    )])
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
