//! The node API: what the agent serves about its pods.
//!
//! Three listeners share one router:
//! - the **read-only HTTP port** (kubelet's `--read-only-port` / `readOnlyPort`; off by default
//!   as upstream's KubeletConfiguration, usually 10255 when turned on, on `127.0.0.1` unless
//!   `address` says otherwise), unauthenticated, serving only `/healthz` and `/pods` (a `v1`
//!   PodList with status, as the kubelet's);
//! - a **unix socket** under the run dir (mode 0600, root only) for kubenode's CLI, serving the
//!   same plus `/containerLogs/{namespace}/{pod}/{container}`, `/events`, `/services`,
//!   `/endpoints`, `/configmaps`, `/secrets` (their keys, never their values), `POST /exec`
//!   (run to completion), the streams of the HTTPS port over WebSocket or SPDY/3.1
//!   (`/exec/...`: `kubenode exec -i/-t`, `/attach/...`: `kubenode attach`,
//!   `/portForward/...`: `kubenode port-forward`; their client is [`ApiClient`]),
//!   and the resource usage and metrics upstream's authenticated port serves:
//!   `/stats/summary`, `/metrics/resource`, `/metrics/cadvisor`, `/metrics/probes` and
//!   `/metrics`;
//! - the kubelet's **HTTPS server** (`address`:`port`, default `0.0.0.0:10250`, [`https`]):
//!   every request authenticated and authorized ([`auth`]) as upstream's, serving `/healthz`,
//!   `/pods`, `/containerLogs/...`, `/runningpods/`, `/logs/`, `/configz`, `/stats/summary`,
//!   `/metrics/resource`, `/metrics/cadvisor`, `/metrics/probes` and `/metrics`, with the serving certificate of [`tls`], `/exec`,
//!   `/attach` and `/portForward` over WebSocket ([`stream`]) and `POST /run`.
//!
//! Every listener closes a connection whose request head does not arrive within a timeout
//! (slowloris) and serve a bounded number of connections at once (see [`ServeLimits`]); logs are
//! streamed from the file, never read whole.
//!
//! The agent's state reaches the router through the [`NodeView`] trait, so the API knows nothing
//! of pod workers and can be tested with a fixed view.

pub mod auth;
mod client;
pub mod https;
mod logs;
mod router;
mod server;
pub mod stream;
pub mod tls;

pub use client::{ApiClient, ClientError, StreamInput};
pub use https::{serve_https, HttpsServer, NODE_LOG_DIR};
pub use logs::{read_cri_log, render, tail_start, CriLine, LogOptions, LogStream};
pub use server::{serve_tcp, serve_tcp_with, serve_unix, serve_unix_with, ServeLimits};

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Pod, Secret, Service};
use serde::{Deserialize, Serialize};

/// A boxed future, for the one async method of [`NodeView`].
pub type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the agent exposes to the node API.
pub trait NodeView: Send + Sync + 'static {
    /// Every pod the node runs, with its current status.
    fn pods(&self) -> Vec<Pod>;
    /// Recent events, oldest first.
    fn events(&self) -> Vec<Event>;
    /// The CRI log file of a container: its current instance, or the one before when `previous`.
    fn container_log(&self, target: &ContainerRef, previous: bool) -> Result<PathBuf, ApiError>;
    /// Runs a command in a running container.
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ApiError>>;
    /// The runtime's command line that runs `command` in a running container with the
    /// caller's standard streams (and, with `tty`, the caller's terminal): the streaming exec
    /// of the HTTPS port's `/exec` spawns it and waits for it.
    fn exec_command(
        &self,
        target: &ContainerRef,
        command: &[String],
        tty: bool,
    ) -> Result<std::process::Command, ApiError> {
        let _ = (target, command, tty);
        Err(ApiError::BadRequest(
            "this node cannot stream a command's input and output".into(),
        ))
    }
    /// The current instance of a container: its runtime ID, state and CRI log file, which
    /// `/attach` follows.
    fn container_instance(&self, target: &ContainerRef) -> Result<ContainerInstance, ApiError> {
        let _ = target;
        Err(ApiError::BadRequest(
            "this node cannot attach to containers".into(),
        ))
    }
    /// The network namespace of a pod with a sandbox (`None`: the host's, for a host-network
    /// pod) and its UID: where `/portForward` connects.
    fn pod_network(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<(Option<PathBuf>, String), ApiError> {
        let _ = (namespace, pod);
        Err(ApiError::BadRequest(
            "this node cannot forward ports".into(),
        ))
    }
    /// The Services the node knows, with allocated ClusterIPs and NodePorts.
    fn services(&self) -> Vec<Service> {
        Vec::new()
    }
    /// The Services' endpoints, as the proxy resolved them.
    fn endpoints(&self) -> Vec<Endpoints> {
        Vec::new()
    }
    /// The ConfigMaps the node knows, their values removed (see [`without_values`]).
    fn config_maps(&self) -> Vec<ConfigMap> {
        Vec::new()
    }
    /// The Secrets the node knows, their values removed (see [`without_values`]).
    fn secrets(&self) -> Vec<Secret> {
        Vec::new()
    }
    /// Resource usage of the node, its pods and containers (`GET /stats/summary`; also the
    /// source of `GET /metrics/resource`).
    fn stats_summary(&self) -> Result<crate::stats::types::Summary, ApiError> {
        Err(ApiError::NotFound("this node collects no stats".into()))
    }
    /// The agent's own metrics in the OpenMetrics text format (`GET /metrics`).
    fn metrics(&self) -> String {
        crate::metrics::metrics().encode()
    }
    /// cAdvisor's container metrics of the node and its pods (`GET /metrics/cadvisor`), from
    /// the same collection as [`NodeView::stats_summary`].
    fn cadvisor_metrics(&self) -> Result<String, ApiError> {
        Err(ApiError::NotFound("this node collects no stats".into()))
    }
    /// The prober's metrics and the process start time (`GET /metrics/probes`).
    fn probe_metrics(&self) -> String {
        crate::metrics::metrics().encode_probes()
    }
}

/// A ConfigMap or Secret as the node API serves it: metadata, type and keys, each value
/// replaced by an empty one. The API never serves a value: `kubenode get` prints names and key
/// counts only.
pub trait WithoutValues {
    /// The object with empty values.
    fn without_values(&self) -> Self;
}

impl WithoutValues for ConfigMap {
    fn without_values(&self) -> Self {
        let mut c = self.clone();
        for v in c.data.iter_mut().flat_map(|d| d.values_mut()) {
            v.clear();
        }
        for v in c.binary_data.iter_mut().flat_map(|d| d.values_mut()) {
            v.0.clear();
        }
        c
    }
}

impl WithoutValues for Secret {
    fn without_values(&self) -> Self {
        let mut s = self.clone();
        for v in s.data.iter_mut().flat_map(|d| d.values_mut()) {
            v.0.clear();
        }
        s.string_data = None;
        s
    }
}

/// `o` with its values removed.
pub fn without_values<T: WithoutValues>(o: &T) -> T {
    o.without_values()
}

/// A container of a pod, as the API addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name; `None` picks the pod's only container (an error when there are several).
    pub container: Option<String>,
}

/// A container's current instance (see [`NodeView::container_instance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInstance {
    /// The runtime's container ID (a restart makes a new one).
    pub id: String,
    /// Its process runs.
    pub running: bool,
    /// Its state, lowercase: `created`, `running`, `exited` or `unknown`.
    pub state: String,
    /// The CRI log file the shim writes its output to.
    pub log_path: PathBuf,
    /// The shim's attach socket, for a container with `stdin` or `tty` (its live streams).
    pub attach_socket: Option<PathBuf>,
    /// The container has a standard input (`stdin`).
    pub stdin: bool,
    /// `stdinOnce`.
    pub stdin_once: bool,
    /// The container has a terminal (`tty`).
    pub tty: bool,
}

/// `POST /exec` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The container.
    pub target: ContainerRef,
    /// Command and arguments.
    pub command: Vec<String>,
    /// Killed after this long.
    #[serde(with = "secs")]
    pub timeout: Duration,
}

/// `POST /exec` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResponse {
    /// Exit code (128 + signal for a signal, as a shell reports it).
    pub exit_code: i32,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
}

/// An error the API answers with: the status code and one clear line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 404: no such pod or container.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 500: the agent failed to do it.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> hyper::StatusCode {
        match self {
            ApiError::NotFound(_) => hyper::StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => hyper::StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => hyper::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Resolves which container of `pod` a request means: the named one, or the only one.
pub fn pick_container(pod: &Pod, wanted: Option<&str>) -> Result<String, ApiError> {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let all: Vec<&str> = spec
        .into_iter()
        .flat_map(crate::pod_containers)
        .map(|c| c.name.as_str())
        .collect();
    match wanted {
        Some(c) if all.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::NotFound(format!(
            "container {c} is not valid for pod {}",
            name(pod)
        ))),
        None => {
            let apps: Vec<&str> = spec
                .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
                .unwrap_or_default();
            match apps.as_slice() {
                [one] => Ok(one.to_string()),
                _ => Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    name(pod),
                    apps.join(" ")
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests;
