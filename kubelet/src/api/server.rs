//! The two listeners: the read-only TCP port and the CLI's unix socket.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::router::{handle, Listener};
use super::NodeView;

/// Binds the read-only port and serves it until the task is aborted. Returns the bound address
/// (useful with port 0) and the serving task.
pub async fn serve_tcp(
    addr: SocketAddr,
    view: Arc<dyn NodeView>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "read-only node API listening");
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => spawn_conn(stream, view.clone(), Listener::ReadOnly),
                Err(e) => tracing::warn!(error = %e, "accepting on the read-only port"),
            }
        }
    });
    Ok((bound, task))
}

/// Binds the CLI's unix socket at `path` (a stale socket file is replaced; mode 0600, so only
/// root can talk to the agent) and serves it until the task is aborted.
pub async fn serve_unix(path: &Path, view: Arc<dyn NodeView>) -> std::io::Result<JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %path.display(), "node API socket listening");
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => spawn_conn(stream, view.clone(), Listener::Socket),
                Err(e) => tracing::warn!(error = %e, "accepting on the node API socket"),
            }
        }
    }))
}

fn spawn_conn<S>(stream: S, view: Arc<dyn NodeView>, listener: Listener)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |req| handle(view.clone(), listener, req));
        if let Err(e) = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(error = %e, "node API connection ended with an error");
        }
    });
}
