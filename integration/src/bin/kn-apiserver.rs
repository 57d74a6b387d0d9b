//! `kn-apiserver`: the stand-in API server of the tests, for labs and manual checks.
//!
//! `kn-apiserver --listen 127.0.0.1:PORT --kubeconfig-out FILE [--history N]` serves until
//! SIGINT/SIGTERM; point `kubectl --kubeconfig FILE` at it. See `kubenode_integration::apiserver`
//! for what it implements and what it does not.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use kubenode_integration::apiserver::{ApiServer, Options};

fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut kubeconfig: Option<PathBuf> = None;
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--listen" => listen = value("--listen")?.parse().context("--listen")?,
            "--kubeconfig-out" => kubeconfig = Some(value("--kubeconfig-out")?.into()),
            "--history" => opts.history = value("--history")?.parse().context("--history")?,
            "-h" | "--help" => {
                println!(
                    "usage: kn-apiserver --listen ADDR:PORT [--kubeconfig-out FILE] [--history N]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let server =
        ApiServer::start_with(listen, opts).with_context(|| format!("listening on {listen}"))?;
    if let Some(path) = &kubeconfig {
        server
            .write_kubeconfig(path)
            .with_context(|| format!("writing {}", path.display()))?;
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
