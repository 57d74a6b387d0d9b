//! Cluster mode: the node as a member of a Kubernetes control plane (issue 16).
//!
//! With a kubeconfig (`--kubeconfig`), the agent talks to an API server through kube-rs
//! ([`connect`]): it registers its Node and keeps its status and Lease current, runs the pods
//! bound to it beside the static pods of the manifest directory, reports their status and
//! events, and the proxy takes Services and EndpointSlices from the API. Without one the node
//! is standalone, exactly as before. Semantics and constants are upstream's kubelet's and
//! kube-proxy's (`../shared/reference/cluster.md` for the team).
//!
//! Here: [`node`] (registration and status), [`lease`] (the heartbeat), [`events`] (the
//! recorder's events to the API server), [`pods`] (the pods bound to the node, merged with the
//! file source), [`status`] (their status written back, and the final DELETE of a graceful
//! deletion) and [`mirror`] (the static pods' mirror pods). Each runs as its own task started
//! by the agent and retries on its own; none ever stops the agent or a pod. The proxy's API
//! source is the binary's (`src/proxy_api.rs`): the proxy crate uses no other crate of ours.

pub mod bootstrap;
pub mod certificate;
pub mod events;
pub mod lease;
pub mod mirror;
pub mod node;
pub mod pods;
pub mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

/// `connect`'s limit on establishing a connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong reaching the API server's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be read or is not a usable kubeconfig.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// kube-rs could not build a client from the configuration (TLS material, URL).
    #[error("kubeconfig {path}: {source}")]
    Client {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::Error,
    },
}

/// The `User-Agent` of every request: upstream's kubelet's shape
/// (`kubelet/v1.34.x (linux/amd64) kubernetes/<commit>`) with kubenode in place of the build.
pub fn user_agent() -> String {
    format!(
        "kubenode/v{} ({}/{}) kubenode",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        crate::config::node_labels::goarch(),
    )
}

/// A client for the API server named by the kubeconfig at `path` (its current context, as
/// client-go reads it: certificates, tokens and the server's CA from the file or the files it
/// names).
pub async fn connect(path: &Path) -> Result<kube::Client, ClusterError> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|source| ClusterError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|source| ClusterError::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    if let Ok(agent) = HeaderValue::from_str(&user_agent()) {
        config
            .headers
            .push((HeaderName::from_static("user-agent"), agent));
    }
    kube::Client::try_from(config).map_err(|source| ClusterError::Client {
        path: path.to_owned(),
        source,
    })
}
