//! The CLI's side of the node API socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Pod, Secret, Service};
use serde::de::DeserializeOwned;

use super::{ContainerRef, ExecRequest, ExecResponse};

/// Errors talking to the local agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is not there or refuses connections: no agent runs with this run dir.
    #[error("cannot reach the kubenode agent at {socket} (is `kubenode agent` running with the same --run-dir?)")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// HTTP-level failure.
    #[error("talking to the kubenode agent: {0}")]
    Http(#[from] hyper::Error),
    /// The agent answered with an error.
    #[error("{0}")]
    Api(String),
    /// The answer did not parse.
    #[error("decoding the agent's answer: {0}")]
    Decode(#[from] serde_json::Error),
    /// The agent took longer than the bound for this call.
    #[error("the kubenode agent at {socket} did not answer within {after:?} ({what})")]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// What was waited for.
        what: &'static str,
        /// The bound.
        after: Duration,
    },
}

/// The bound on connecting to the agent and on its HTTP handshake: a live agent accepts at
/// once, so this only ends a wait on an agent that stopped answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound on a whole read-only request (`get`, `describe`, events, ...). Exec and followed
/// logs are not bounded: they last as long as the command or the container.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the agent's unix socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

/// A list object as the API returns it.
#[derive(serde::Deserialize)]
struct List<T> {
    items: Vec<T>,
}

impl ApiClient {
    /// A client for the socket at `socket` (`<run-dir>/kubenode.sock`).
    pub fn new(socket: impl Into<PathBuf>) -> ApiClient {
        ApiClient {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let connect = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
            Ok::<_, ClientError>(http1::handshake(TokioIo::new(stream)).await?)
        };
        let (mut sender, conn) = self.bounded(CONNECT_TIMEOUT, "connecting", connect).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "kubenode")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Api(format!("building request: {e}")))?;
        let resp = sender.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let text = resp.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            return Err(ClientError::Api(if text.is_empty() {
                status.to_string()
            } else {
                text
            }));
        }
        Ok(resp)
    }

    /// Runs `fut` for at most `after`.
    async fn bounded<T>(
        &self,
        after: Duration,
        what: &'static str,
        fut: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(after, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                socket: self.socket.clone(),
                what,
                after,
            })?
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.bounded(REQUEST_TIMEOUT, "a read request", async {
            let resp = self.send(Method::GET, path, Vec::new()).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(serde_json::from_slice(&body)?)
        })
        .await
    }

    /// `GET /pods`.
    pub async fn pods(&self) -> Result<Vec<Pod>, ClientError> {
        Ok(self.get::<List<Pod>>("/pods").await?.items)
    }

    /// `GET /events`.
    pub async fn events(&self) -> Result<Vec<Event>, ClientError> {
        Ok(self.get::<List<Event>>("/events").await?.items)
    }

    /// `GET /services`.
    pub async fn services(&self) -> Result<Vec<Service>, ClientError> {
        Ok(self.get::<List<Service>>("/services").await?.items)
    }

    /// `GET /configmaps` (keys only, no values).
    pub async fn config_maps(&self) -> Result<Vec<ConfigMap>, ClientError> {
        Ok(self.get::<List<ConfigMap>>("/configmaps").await?.items)
    }

    /// `GET /secrets` (keys only, no values).
    pub async fn secrets(&self) -> Result<Vec<Secret>, ClientError> {
        Ok(self.get::<List<Secret>>("/secrets").await?.items)
    }

    /// `GET /endpoints`.
    pub async fn endpoints(&self) -> Result<Vec<Endpoints>, ClientError> {
        Ok(self.get::<List<Endpoints>>("/endpoints").await?.items)
    }

    /// `GET /stats/summary`.
    pub async fn stats_summary(&self) -> Result<crate::stats::types::Summary, ClientError> {
        self.get("/stats/summary").await
    }

    /// A text answer: `GET /metrics` or `GET /metrics/resource`.
    pub async fn text(&self, path: &str) -> Result<String, ClientError> {
        self.bounded(REQUEST_TIMEOUT, "a read request", async {
            let resp = self.send(Method::GET, path, Vec::new()).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
        .await
    }

    /// `POST /exec`.
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecResponse, ClientError> {
        let body = serde_json::to_vec(request)?;
        let resp = self.send(Method::POST, "/exec", body).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }

    /// `GET /attach/{ns}/{pod}/{container}?output=1&error=1` over WebSocket
    /// (`v5.channel.k8s.io`): calls `out(channel, data)` with each chunk of the container's
    /// standard output (channel 1) and error (channel 2) as it arrives, until the container
    /// exits (`Ok`) or the agent ends the session with a failure (`Err` with its message).
    pub async fn attach(
        &self,
        target: &ContainerRef,
        mut out: impl FnMut(u8, &[u8]),
    ) -> Result<(), ClientError> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
        let container = target.container.as_deref().unwrap_or_default();
        let url = format!(
            "ws://kubenode/attach/{}/{}/{container}?output=1&error=1",
            target.namespace, target.pod
        );
        let connect = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
            let mut req = url
                .into_client_request()
                .map_err(|e| ClientError::Api(format!("building request: {e}")))?;
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                hyper::header::HeaderValue::from_static(
                    crate::api::stream::channel::Protocol::V5.name(),
                ),
            );
            tokio_tungstenite::client_async(req, stream)
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(resp) => {
                        let body = resp.body().as_deref().unwrap_or_default();
                        let text = String::from_utf8_lossy(body).trim().to_string();
                        ClientError::Api(if text.is_empty() {
                            resp.status().to_string()
                        } else {
                            text
                        })
                    }
                    other => ClientError::Api(format!("attaching: {other}")),
                })
        };
        let (mut ws, _) = self.bounded(CONNECT_TIMEOUT, "connecting", connect).await?;
        let mut status = Vec::new();
        while let Some(msg) = ws.next().await {
            let msg = msg.map_err(|e| ClientError::Api(format!("attach session: {e}")))?;
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.split_first() {
                Some((&crate::api::stream::channel::ERROR, rest)) => status.extend_from_slice(rest),
                Some((&ch, rest)) if !rest.is_empty() => out(ch, rest),
                _ => {}
            }
        }
        if status.is_empty() {
            return Err(ClientError::Api(
                "the attach session ended without a status".into(),
            ));
        }
        let status: serde_json::Value = serde_json::from_slice(&status)?;
        if status["status"] == "Success" {
            Ok(())
        } else {
            Err(ClientError::Api(
                status["message"]
                    .as_str()
                    .unwrap_or("attach failed")
                    .to_string(),
            ))
        }
    }

    /// `GET /containerLogs/...`: calls `out` with each chunk as it arrives (with `follow`, until
    /// the container's log ends or the agent closes the stream).
    pub async fn logs(
        &self,
        target: &ContainerRef,
        query: &str,
        mut out: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let mut path = format!("/containerLogs/{}/{}", target.namespace, target.pod);
        if let Some(c) = &target.container {
            path.push('/');
            path.push_str(c);
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        let mut body = self.send(Method::GET, &path, Vec::new()).await?.into_body();
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                out(data);
            }
        }
        Ok(())
    }
}
