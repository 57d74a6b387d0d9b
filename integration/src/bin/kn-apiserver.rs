//! `kn-apiserver`: the stand-in API server of the tests, for labs and manual checks.
//!
//! `kn-apiserver --listen 127.0.0.1:PORT --kubeconfig-out FILE [--history N]` serves until
//! SIGINT/SIGTERM; point `kubectl --kubeconfig FILE` at it. `--https` serves HTTPS with a
//! generated CA (or `--ca-cert FILE --ca-key FILE`), authentication and the CSR controllers;
//! `--token TOKEN,USER[,GROUP...]` adds a static token (the first is the kubeconfig's),
//! `--ca-out FILE` writes the CA certificate, `--cluster-signing-duration SECONDS` limits the
//! certificates the signer issues, `--metric-resolution SECONDS` sets how often the kubelets
//! are scraped for `metrics.k8s.io` (`kubectl top`; default 15), and
//! `--kubelet-certificate-authority` verifies the kubelets' serving certificates against the
//! CA. See `kubenode_integration::apiserver`
//! for what it implements and what it does not.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use kubenode_integration::apiserver::{ApiServer, HttpsOptions, Options};

fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut kubeconfig: Option<PathBuf> = None;
    let mut opts = Options::default();
    let mut https: Option<HttpsOptions> = None;
    let mut ca_files: (Option<PathBuf>, Option<PathBuf>) = (None, None);
    let mut ca_out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--listen" => listen = value("--listen")?.parse().context("--listen")?,
            "--kubeconfig-out" => kubeconfig = Some(value("--kubeconfig-out")?.into()),
            "--history" => opts.history = value("--history")?.parse().context("--history")?,
            "--https" => {
                https.get_or_insert_with(HttpsOptions::default);
            }
            "--ca-cert" => ca_files.0 = Some(value("--ca-cert")?.into()),
            "--ca-key" => ca_files.1 = Some(value("--ca-key")?.into()),
            "--ca-out" => ca_out = Some(value("--ca-out")?.into()),
            "--token" => {
                let v = value("--token")?;
                let mut parts = v.split(',').map(str::to_string);
                let (Some(token), Some(user)) = (parts.next(), parts.next()) else {
                    bail!("--token: want TOKEN,USER[,GROUP...], got {v:?}");
                };
                https
                    .get_or_insert_with(HttpsOptions::default)
                    .static_tokens
                    .push((token, user, parts.collect()));
            }
            "--cluster-signing-duration" => {
                let secs: u64 = value("--cluster-signing-duration")?
                    .parse()
                    .context("--cluster-signing-duration (seconds)")?;
                https
                    .get_or_insert_with(HttpsOptions::default)
                    .signing
                    .duration = std::time::Duration::from_secs(secs);
            }
            "--metric-resolution" => {
                let secs: u64 = value("--metric-resolution")?
                    .parse()
                    .context("--metric-resolution (seconds)")?;
                if secs == 0 {
                    bail!("--metric-resolution: must be at least 1 second");
                }
                https
                    .get_or_insert_with(HttpsOptions::default)
                    .metric_resolution = Some(std::time::Duration::from_secs(secs));
            }
            "--kubelet-certificate-authority" => {
                https
                    .get_or_insert_with(HttpsOptions::default)
                    .kubelet_certificate_authority = true;
            }
            "-h" | "--help" => {
                println!(
                    "usage: kn-apiserver --listen ADDR:PORT [--kubeconfig-out FILE] [--history N] \
                     [--https [--ca-cert FILE --ca-key FILE] [--ca-out FILE] \
                     [--token TOKEN,USER[,GROUP...]] [--cluster-signing-duration SECONDS] \
                     [--metric-resolution SECONDS] [--kubelet-certificate-authority]]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    match (&ca_files, &mut https) {
        ((Some(cert), Some(key)), Some(h)) => {
            h.ca = Some((
                std::fs::read_to_string(cert).with_context(|| format!("{}", cert.display()))?,
                std::fs::read_to_string(key).with_context(|| format!("{}", key.display()))?,
            ))
        }
        ((None, None), _) => {}
        ((Some(_), Some(_)), None) => bail!("--ca-cert and --ca-key need --https"),
        _ => bail!("--ca-cert and --ca-key go together"),
    }
    opts.https = https;
    let server =
        ApiServer::start_with(listen, opts).with_context(|| format!("listening on {listen}"))?;
    if let Some(path) = &kubeconfig {
        server
            .write_kubeconfig(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &ca_out {
        let pem = server.ca_pem().context("--ca-out needs --https")?;
        std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("kn-apiserver: serving {}", server.url());
    wait_for_signal()?;
    drop(server);
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
