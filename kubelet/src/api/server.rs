//! The two listeners: the read-only TCP port and the CLI's unix socket.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::router::{handle, Listener};
use super::NodeView;

/// How much one listener gives its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A connection whose request head (request line and headers) has not fully arrived this
    /// long after the server started waiting for it is closed: a slow or idle client cannot hold
    /// a connection open by trickling bytes (slowloris) or by sending nothing. This also bounds
    /// an idle keep-alive connection. hyper's own default, 30 s.
    pub header_read_timeout: Duration,
    /// Connections served at once. Past this, new connections wait in the listen backlog until
    /// one ends; each listener has its own count, so the read-only port cannot starve the CLI.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// Binds the read-only port and serves it until the task is aborted. Returns the bound address
/// (useful with port 0) and the serving task.
pub async fn serve_tcp(
    addr: SocketAddr,
    view: Arc<dyn NodeView>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    serve_tcp_with(addr, view, ServeLimits::default()).await
}

/// [`serve_tcp`] with explicit limits.
pub async fn serve_tcp_with(
    addr: SocketAddr,
    view: Arc<dyn NodeView>,
    limits: ServeLimits,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "read-only node API listening");
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let task = tokio::spawn(async move {
        loop {
            // Take a slot before accepting: at the limit, clients queue in the backlog.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    spawn_conn(stream, view.clone(), Listener::ReadOnly, limits, permit)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the read-only port");
                    // e.g. EMFILE: do not spin on an error that persists.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((bound, task))
}

/// Binds the CLI's unix socket at `path` (a stale socket file is replaced; mode 0600, so only
/// root can talk to the agent) and serves it until the task is aborted.
pub async fn serve_unix(path: &Path, view: Arc<dyn NodeView>) -> std::io::Result<JoinHandle<()>> {
    serve_unix_with(path, view, ServeLimits::default()).await
}

/// [`serve_unix`] with explicit limits.
pub async fn serve_unix_with(
    path: &Path,
    view: Arc<dyn NodeView>,
    limits: ServeLimits,
) -> std::io::Result<JoinHandle<()>> {
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
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    Ok(tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    spawn_conn(stream, view.clone(), Listener::Socket, limits, permit)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the node API socket");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

fn spawn_conn<S>(
    stream: S,
    view: Arc<dyn NodeView>,
    listener: Listener,
    limits: ServeLimits,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _slot = permit; // freed when the connection ends
        let service = service_fn(move |req| handle(view.clone(), listener, req));
        if let Err(e) = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades() // the socket's `/exec`, `/attach`, `/portForward` are upgrades
            .await
        {
            tracing::debug!(error = %e, "node API connection ended with an error");
        }
    });
}
