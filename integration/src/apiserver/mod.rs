//! A stand-in Kubernetes API server for the tests: objects in memory, upstream's API machinery
//! for what a kubelet, kube-proxy and `kubectl` use, so that real clients can be pointed at it
//! (kubectl 1.32 is, in `tests/apiserver.rs`; kube-rs is the client it is meant for and is not
//! exercised against it yet). No registry we reach ships kube-apiserver; this is the peer the
//! cluster-mode tests (issue 16) run against, kept small so that it can be checked line by line
//! against upstream.
//!
//! # Faithful (upstream behaviour, reasons and messages)
//! - Discovery: `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>` (legacy documents;
//!   kubectl falls back to them from aggregated discovery), `/version`, `/healthz`,
//!   `/livez`, `/readyz`.
//! - Resources: namespaces, nodes (+status), pods (+status), events, services (+status),
//!   endpoints, configmaps, secrets (`stringData` merged into `data` on create), serviceaccounts
//!   (core/v1); leases (coordination.k8s.io/v1); endpointslices (discovery.k8s.io/v1).
//!   Every write is decoded as the `k8s-openapi` type: a body that does not decode is a 400
//!   `<Kind> in version "v1" cannot be handled as a <Kind>: ...`; unknown fields are dropped,
//!   and with `fieldValidation=Strict` (what `kubectl create` sends) rejected with
//!   `strict decoding error: unknown field "..."`, with `Warn` (the default) returned as
//!   `Warning` headers.
//! - One global `resourceVersion` (etcd's revision); `uid`, `creationTimestamp`, `generation`
//!   set on create (generation bumped when `spec` changes); an update that changes nothing writes
//!   nothing. 404 NotFound, 409 AlreadyExists, 409 Conflict on a stale
//!   `metadata.resourceVersion` or a UID precondition, 422 Invalid, as `Status` objects.
//! - Lists with `metadata.resourceVersion`; watches ([`watch`]) with `resourceVersion`,
//!   `allowWatchBookmarks`, `timeoutSeconds`, `sendInitialEvents` (streaming lists), 410 Expired
//!   as an ERROR event when the version is older than the retained history, 504 `Too large
//!   resource version` when newer than the store; field selectors with upstream's per-kind
//!   labels (an unsupported label is a 400 `field label not supported: ...`) and label
//!   selectors.
//! - PATCH: merge, JSON and strategic merge patch ([`patch`], merge keys from upstream's tags).
//! - The status subresource changes only `status`; PUT and PATCH of the main resource keep the
//!   stored `status` of kinds that have the subresource. Pods are created `Pending` with their
//!   QoS class and the spec defaults a kubelet reads, and the `DefaultTolerationSeconds`
//!   admission plugin's two `NoExecute` tolerations (not-ready, unreachable: 300 s) on create
//!   and update ([`resources::default_toleration_seconds`]); nodes may register with a status. A pod's
//!   spec is immutable but for what `ValidatePodUpdate` allows (images, ...; the 422 carries
//!   upstream's message without its spec diff). A pod that is unscheduled or terminated is
//!   deleted at once whatever grace period is asked, as upstream.
//! - DELETE with `gracePeriodSeconds` and `preconditions`: a pod bound to a node is deleted
//!   gracefully (`deletionTimestamp` + `deletionGracePeriodSeconds`, generation bumped) and
//!   stays until a DELETE with grace 0; finalizers hold any object until they are removed.
//! - ServiceAccounts ([`serviceaccounts`]): a `default` one in every namespace (the
//!   serviceaccount controller's, made with the namespace), `serviceaccounts/<name>/token`
//!   (TokenRequest, JSON or protobuf bodies) with upstream's validation (expirationSeconds ≥
//!   600 and ≤ 2^32, default 3600; the service account must exist; a bound Pod, Node or
//!   Secret must exist with the given UID, a Pod must run as that service account) and
//!   errors, an ES256 JWT with upstream's claims (`iss`, `aud` defaulting to the API
//!   audience, `sub`, `exp`, `iat`, `nbf`, `jti`, `kubernetes.io` with namespace, pod, node,
//!   serviceaccount, `warnafter` for admission's extended 3607 s tokens) and
//!   `status.expirationTimestamp`; `kube-root-ca.crt` in every namespace once ConfigMaps are
//!   served and a CA is set ([`serviceaccounts::set_root_ca`]).
//! - `pods/<name>/binding` (what a scheduler posts): sets `spec.nodeName` and the PodScheduled
//!   condition; 409 when the pod is already bound or being deleted.
//! - [`ApiServer::requests`] counts every request received under upstream's
//!   `apiserver_request_total` labels (verb, resource, subresource), for `cluster-bench`.
//! - For fault tests, [`ApiServer::pause`] closes the port and every connection and keeps the
//!   objects, [`ApiServer::resume`] serves them again on the same address.
//! - Server-side Tables for `kubectl get` ([`table`]) of every served kind, as upstream's
//!   printers compute them. Discovery carries the `all` category of pods and services
//!   (`kubectl get all`).
//!
//! - HTTPS mode ([`Options::https`], `kn-apiserver --https`): TLS with a test CA ([`tls`],
//!   generated or given) and a serving certificate for `127.0.0.1`/`::1`/`localhost`;
//!   authentication as kube-apiserver's ([`auth`]): client certificates verified against the CA
//!   (`CN` user, `O` groups; their validity checked again at each request), bootstrap tokens
//!   (`bootstrap-token-<id>` Secrets of type `bootstrap.kubernetes.io/token`,
//!   `usage-bootstrap-authentication`, `expiration`, `auth-extra-groups`; user
//!   `system:bootstrap:<id>`, groups `system:bootstrappers` + the extra ones), static tokens (a
//!   test's admin), `system:authenticated` for all; 401 `Unauthorized` otherwise. Plain HTTP
//!   mode (the default) is unchanged: no authentication, every request allowed.
//! - Secrets (core/v1; `stringData` merged into `data` on create, `type` defaulted to
//!   `Opaque`); CertificateSigningRequests (`certificates.k8s.io/v1`, `csr`): create, get, list,
//!   watch, the `/approval` subresource (changes only the conditions) and `/status`, the
//!   requester written into `spec.username`/`groups` on create, `spec.request`, `signerName`,
//!   `usages` and `expirationSeconds` validated, `kubectl get csr`'s table ([`csr`]); an
//!   `/approval` update also in protobuf (what `kubectl certificate approve` sends).
//! - TokenReview and SubjectAccessReview ([`reviews`]), what a kubelet's HTTPS server asks:
//!   tokens checked as the stand-in's own authenticators check them (service-account JWTs
//!   too); access decided by a written-down policy (`system:masters` and
//!   [`HttpsOptions::allowed_subjects`] allowed, everyone else denied).
//! - In HTTPS mode, `pods/<name>/log` through the node's kubelet ([`podlogs`]): its
//!   `daemonEndpoints` port on its InternalIP, with a `kube-apiserver-kubelet-client`
//!   certificate of the CA, the kubelet's serving certificate not verified (kubeadm's default)
//!   unless [`HttpsOptions::kubelet_certificate_authority`] asks for it to be verified against
//!   the cluster CA and the address connected to.
//! - In HTTPS mode, `metrics.k8s.io/v1beta1` ([`metrics`]): metrics-server's aggregated API
//!   (`nodes`, `pods`; list with selectors and get), from scrapes of every kubelet's
//!   `/metrics/resource` every `metric_resolution` (default 15 s), usage computed as
//!   metrics-server's storage does (CPU the rate between the last two cumulative points);
//!   listed in `/apis` discovery, so `kubectl top node` and `kubectl top pod` work.
//! - In HTTPS mode, kube-controller-manager's csrapproving and csrsigning controllers for
//!   `kubernetes.io/kube-apiserver-client-kubelet` and `kubernetes.io/kubelet-serving`
//!   ([`csr`]; a serving CSR is never auto-approved, as upstream: `kubectl certificate
//!   approve` it): auto-approval (`AutoApproved`,
//!   upstream's messages) of valid kubelet client CSRs from `system:bootstrappers` (`nodeclient`)
//!   and of self renewals from `system:nodes` (`selfnodeclient`); signing with the CA for
//!   min(`expirationSeconds` (at least 10 min), the cluster signing duration, default one year),
//!   `notBefore` backdated 5 min (configurable for short test certificates).
//!
//! # Not (yet)
//! - Authorization beyond one rule: a `system:bootstrappers` identity may only read discovery
//!   and create/get/list/watch CSRs (403 with RBAC's message otherwise); any other
//!   authenticated user may do anything (no RBAC roles or bindings, no Node authorizer, no
//!   NodeRestriction admission). Anonymous requests are refused (`--anonymous-auth=false`).
//!   The approver's SubjectAccessReview is that fixed rule too (kubeadm's bindings: `nodeclient`
//!   for the bootstrappers, `selfnodeclient` for `system:nodes`).
//! - Other CSR signers (`kube-apiserver-client`, custom ones) stay pending;
//!   no `Denied` by a controller; CSR approval conditions are not validated (upstream refuses
//!   e.g. both Approved and Denied). Secrets: no `stringData` merge on update, no immutability,
//!   no printer (the default `Name`/`Created At` table). The `pods/log`/`exec` subresources; no TLS session tickets or client-certificate revocation.
//! - Service-account tokens: TokenRequest issues them, nothing checks them (no TokenReview);
//!   no OIDC discovery documents, no `--service-account-max-token-expiration`.
//! - Aggregated discovery; OpenAPI beyond what kubectl's validation reads ([`openapi`]: no
//!   schemas, so `kubectl explain` fails and kubectl validates through `fieldValidation`);
//!   protobuf; `limit`/`continue` paging (a list is always complete, which upstream allows);
//!   `resourceVersion`/`resourceVersionMatch` on lists (a list is always the latest state); YAML
//!   request bodies; server-side apply and `managedFields`; `deletecollection`; the `/watch/`
//!   path prefix.
//! - Admission and controllers: no namespace controller (a deleted namespace goes at once, its
//!   objects stay), no ServiceAccount admission (no `kube-api-access-*` volume and no
//!   `serviceAccountName` defaulting: a TokenRequest bound to a pod without one treats it as
//!   `default`, what admission would have set), no ClusterIP allocation, no garbage collector,
//!   no scheduler, no node lifecycle controller.
//! - Defaulting beyond the pod and Service fields listed in [`resources`]; validation beyond
//!   decoding, object names (RFC 1123 / DNS-1035 as upstream) and the pod spec's immutability.

pub mod auth;
pub mod csr;
mod discovery;
mod ephemeral;
pub mod handler;
pub mod metrics;
pub mod openapi;
pub mod patch;
mod podexec;
pub mod podlogs;
pub mod resources;
pub mod reviews;
pub mod selector;
pub mod serviceaccounts;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod watch;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use handler::{parse_query, parse_target, Reply, Shared, Want};
use status::ApiError;
use store::Store;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Settings of a stand-in.
#[derive(Debug, Clone)]
pub struct Options {
    /// Changes kept for watches (the watch cache's window); older versions answer 410.
    pub history: usize,
    /// Interval between bookmarks on watches that allow them (upstream: about a minute).
    pub bookmark_interval: Duration,
    /// `Some`: serve HTTPS with authentication and authorization, and run the CSR
    /// controllers; `None`: plain HTTP, every request anonymous and allowed.
    pub https: Option<HttpsOptions>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            history: 1000,
            bookmark_interval: Duration::from_secs(60),
            https: None,
        }
    }
}

/// The HTTPS mode's settings.
#[derive(Debug, Clone, Default)]
pub struct HttpsOptions {
    /// The cluster CA (certificate, key; PEM); `None`: one is generated.
    pub ca: Option<(String, String)>,
    /// Static bearer tokens (`--token-auth-file`): token, user, groups.
    pub static_tokens: Vec<(String, String, Vec<String>)>,
    /// The CSR signing controller's settings.
    pub signing: csr::Signing,
    /// Users and groups every SubjectAccessReview allows (besides `system:masters`), see
    /// [`reviews`].
    pub allowed_subjects: Vec<String>,
    /// How often the kubelets' `/metrics/resource` are scraped for `metrics.k8s.io`
    /// (metrics-server's `--metric-resolution`); `None`: its default, 15 s ([`metrics`]).
    pub metric_resolution: Option<Duration>,
    /// Verify kubelets' serving certificates against the cluster CA when proxying to them
    /// (`pods/log`, `exec`, `attach`, `portforward`): kube-apiserver's
    /// `--kubelet-certificate-authority` set to the cluster CA. `false`: not verified, kubeadm's
    /// default.
    pub kubelet_certificate_authority: bool,
}

/// The HTTPS mode's state: the CA, the TLS configuration, the authenticators.
#[derive(Debug)]
pub struct Secure {
    /// The cluster CA (serving certificate, client certificates, CSR signing).
    pub ca: Arc<tls::Ca>,
    tls: Arc<rustls::ServerConfig>,
    authn: auth::Authenticator,
    signing: csr::Signing,
    admin_token: Option<String>,
    allowed_subjects: Vec<String>,
    kubelet_client: podlogs::KubeletClient,
    /// metrics-server's client, scrape period and storage ([`metrics`]).
    metrics_client: Arc<podlogs::KubeletClient>,
    metric_resolution: Duration,
    metrics: Arc<Mutex<metrics::Storage>>,
}

impl Secure {
    fn new(o: &HttpsOptions) -> std::io::Result<Secure> {
        let ca = match &o.ca {
            Some((cert, key)) => tls::Ca::from_pem(cert, key)?,
            None => tls::Ca::generate()?,
        };
        let serving = ca.serving()?;
        let tls = ca.server_config(&serving)?;
        let mut authn = auth::Authenticator::default();
        for (token, user, groups) in &o.static_tokens {
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            authn.add_static_token(token, user, &groups);
        }
        let kubelet_client = if o.kubelet_certificate_authority {
            podlogs::KubeletClient {
                tls: ca.verifying_client("kube-apiserver-kubelet-client", &["system:masters"])?,
            }
        } else {
            podlogs::KubeletClient::new(&ca)?
        };
        let metrics_client = Arc::new(podlogs::KubeletClient::new(&ca)?);
        Ok(Secure {
            ca: Arc::new(ca),
            tls,
            authn,
            signing: o.signing,
            admin_token: o.static_tokens.first().map(|t| t.0.clone()),
            allowed_subjects: o.allowed_subjects.clone(),
            kubelet_client,
            metrics_client,
            metric_resolution: o.metric_resolution.unwrap_or(metrics::DEFAULT_RESOLUTION),
            metrics: Arc::default(),
        })
    }
}

/// A running stand-in API server: its own tokio runtime on a thread, stopped on drop.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    secure: Option<Arc<Secure>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `listen` (port 0: any free port) and serves with default options.
    pub fn start(listen: SocketAddr) -> std::io::Result<ApiServer> {
        ApiServer::start_with(listen, Options::default())
    }

    /// Binds `listen` and serves with `opts`.
    pub fn start_with(listen: SocketAddr, opts: Options) -> std::io::Result<ApiServer> {
        let secure = opts
            .https
            .as_ref()
            .map(Secure::new)
            .transpose()?
            .map(Arc::new);
        let std_listener = std::net::TcpListener::bind(listen)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(opts.history)),
            address: addr.to_string(),
            bookmark_interval: opts.bookmark_interval,
            requests: Mutex::new(BTreeMap::new()),
            csr_written: tokio::sync::Notify::new(),
        });
        handler::bootstrap(&shared);
        let mut server = ApiServer {
            addr,
            shared,
            secure,
            stop: None,
            thread: None,
        };
        server.serve(std_listener)?;
        Ok(server)
    }

    fn serve(&mut self, std_listener: std::net::TcpListener) -> std::io::Result<()> {
        std_listener.set_nonblocking(true)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kn-apiserver")
            .enable_all()
            .build()?;
        let serving = self.shared.clone();
        let secure = self.secure.clone();
        let thread = std::thread::Builder::new()
            .name("kn-apiserver".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("kn-apiserver: {e}");
                            return;
                        }
                    };
                    if let Some(sec) = &secure {
                        tokio::spawn(csr::run_controllers(
                            serving.clone(),
                            sec.ca.clone(),
                            sec.signing,
                        ));
                        tokio::spawn(metrics::run_scraper(
                            serving.clone(),
                            sec.metrics_client.clone(),
                            sec.metrics.clone(),
                            sec.metric_resolution,
                        ));
                    }
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = accept_loop(listener, serving, secure) => {}
                    }
                });
                // ends every connection, open watches included
                rt.shutdown_timeout(Duration::from_secs(1));
            })?;
        self.stop = Some(stop_tx);
        self.thread = Some(thread);
        Ok(())
    }

    /// Stops serving (the port is closed, open connections and watches end) and keeps the
    /// objects: an API server that went away, for fault tests. [`ApiServer::resume`] serves
    /// the same store on the same address again.
    pub fn pause(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Serves again on the same address after [`ApiServer::pause`] (a no-op while serving).
    pub fn resume(&mut self) -> std::io::Result<()> {
        if self.thread.is_some() {
            return Ok(());
        }
        let listener = std::net::TcpListener::bind(self.addr)?;
        self.serve(listener)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, or `https://<addr>` in HTTPS mode.
    pub fn url(&self) -> String {
        match self.secure {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The cluster CA's certificate (PEM) in HTTPS mode.
    pub fn ca_pem(&self) -> Option<&str> {
        self.secure.as_ref().map(|s| s.ca.cert_pem.as_str())
    }

    /// The HTTPS mode's state (its CA signs test certificates).
    pub fn secure(&self) -> Option<&Secure> {
        self.secure.as_deref()
    }

    /// A kubeconfig for this server: in plain HTTP mode without credentials (it does not
    /// authenticate), in HTTPS mode with the CA and the first static token (the admin's).
    pub fn kubeconfig(&self) -> String {
        let token = self.secure.as_ref().and_then(|s| s.admin_token.clone());
        self.kubeconfig_with_token(token.as_deref())
    }

    /// A kubeconfig for this server whose user authenticates with `token` (e.g. a bootstrap
    /// token: kubeadm's `bootstrap-kubelet.conf`); in HTTPS mode with the CA's data.
    pub fn kubeconfig_with_token(&self, token: Option<&str>) -> String {
        use base64::Engine;
        let ca = match self.ca_pem() {
            Some(pem) => format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            ),
            None => String::new(),
        };
        let user = match token {
            Some(t) => format!("\n    token: {t}"),
            None => " {}".to_string(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kn-standin\n  cluster:\n    server: {}{ca}\nusers:\n- name: kn-admin\n  user:{user}\ncontexts:\n- name: kn-standin\n  context:\n    cluster: kn-standin\n    user: kn-admin\n    namespace: default\ncurrent-context: kn-standin\n",
            self.url()
        )
    }

    /// Writes [`ApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv()
    }

    /// How many watches are open (for a test to know a client's watch has started).
    pub fn watch_count(&self) -> usize {
        self.shared.lock().watch_count()
    }

    /// The requests received so far, counted by upstream's `apiserver_request_total` labels:
    /// `VERB resource[/subresource]` (`PUT leases`, `PATCH pods/status`, `WATCH pods`; a watch
    /// is one request however long it streams), or `VERB /path` for the other paths.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The stored object `name` of the resource `plural` (core or any served group) in
    /// namespace `ns` (`""` for a cluster-scoped one), as a GET would return it; read in-process,
    /// without a request.
    pub fn object(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let res = resources::RESOURCES
            .iter()
            .position(|r| r.plural == plural)?;
        self.shared
            .lock()
            .get(&(res, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Drops the whole watch history (as an etcd compaction): a watch from any earlier version
    /// gets 410 Expired.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.pause();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    secure: Option<Arc<Secure>>,
) {
    let acceptor = secure
        .as_ref()
        .map(|s| tokio_rustls::TlsAcceptor::from(s.tls.clone()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let secure = secure.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(serve(shared, None, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                return;
            };
            // A handshake that fails (an unknown CA, a client certificate the CA did not
            // sign, or expired) closes the connection, as Go's TLS server does.
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| auth::PeerCert::from_der(c));
            let conn = Arc::new(Conn { secure, peer });
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(serve(shared, Some(conn), req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// An HTTPS connection: the server's authenticators and the client's verified certificate.
#[derive(Debug)]
struct Conn {
    secure: Option<Arc<Secure>>,
    peer: Option<auth::PeerCert>,
}

fn verb_of(method: &Method, named: bool, watching: bool) -> &'static str {
    match *method {
        Method::GET if named => "get",
        Method::GET if watching => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

fn full(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache, private")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("valid response")
}

fn json_reply(reply: Reply) -> Response<Body> {
    let mut resp = full(
        reply.code,
        "application/json",
        serde_json::to_vec(&reply.body).unwrap_or_default(),
    );
    for w in reply.warnings {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&w) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

fn error_reply(e: ApiError) -> Response<Body> {
    full(
        e.code,
        "application/json",
        serde_json::to_vec(&e.to_status()).unwrap_or_default(),
    )
}

fn ok_json(v: Value) -> Response<Body> {
    json_reply(Reply {
        code: 200,
        body: v,
        warnings: Vec::new(),
    })
}

/// One request (`conn`: its HTTPS connection; `None` in plain HTTP mode, anonymous).
async fn serve(
    shared: Arc<Shared>,
    conn: Option<Arc<Conn>>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let q = parse_query(&raw_query);
    // A WebSocket or SPDY/3.1 upgrade (pods/exec, attach, portforward): its connection, taken
    // before the body.
    let is_upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.eq_ignore_ascii_case("websocket") || v.to_ascii_lowercase().contains("spdy/3.1")
        });
    let upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    let headers = req.headers().clone();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let accept = header("accept");
    let content_type = header("content-type");
    let authorization = header("authorization");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error_reply(ApiError::bad_request(format!("reading body: {e}"))),
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let watching = matches!(q.get("watch").map(String::as_str), Some("1" | "true"));
    let label = handler::request_label(method.as_str(), &path, &segs, watching);
    *shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(label)
        .or_default() += 1;
    let target = parse_target(&segs);
    // HTTPS mode: authentication, then authorization.
    let mut identity = None;
    if let Some(Conn {
        secure: Some(sec),
        peer,
    }) = conn.as_deref()
    {
        let id = match sec
            .authn
            .authenticate(peer.as_ref(), &authorization, &shared.lock())
        {
            Ok(id) => id,
            Err(e) => return error_reply(e),
        };
        let streaming = target
            .as_ref()
            .is_some_and(|t| matches!(t.sub.as_deref(), Some("exec" | "attach" | "portforward")));
        let attrs = auth::Attributes {
            // upstream (AuthorizePodWebsocketUpgradeCreatePermission, on since 1.31): a
            // WebSocket GET of pods/exec, attach or portforward needs `create`
            verb: if streaming {
                "create"
            } else {
                verb_of(
                    &method,
                    target.as_ref().is_some_and(|t| t.name.is_some()),
                    watching,
                )
            },
            resource: target
                .as_ref()
                .map(|t| (t.resource().group, t.resource().plural)),
            subresource: target.as_ref().and_then(|t| t.sub.as_deref()),
            namespace: target.as_ref().and_then(|t| t.ns.as_deref()),
            name: target
                .as_ref()
                .and_then(|t| t.name.as_deref())
                .unwrap_or(""),
        };
        if let Err(e) = auth::authorize(&id, &attrs) {
            return error_reply(e);
        }
        identity = Some(id);
    }
    let secure_state = conn.as_deref().and_then(|c| c.secure.as_deref());
    if method == Method::GET {
        // metrics.k8s.io: metrics-server's aggregated API, HTTPS mode only
        if let (Some(sec), ["apis", metrics::GROUP, rest @ ..]) = (secure_state, segs.as_slice()) {
            return match rest {
                [] => ok_json(metrics::api_group()),
                [metrics::VERSION] => ok_json(metrics::resource_list()),
                [metrics::VERSION, rest @ ..] => {
                    if let Some(id) = &identity {
                        let plural = if rest.contains(&"pods") {
                            "pods"
                        } else {
                            "nodes"
                        };
                        let attrs = auth::Attributes {
                            verb: if rest.len() % 2 == 0 { "get" } else { "list" },
                            resource: Some((metrics::GROUP, plural)),
                            subresource: None,
                            namespace: None,
                            name: "",
                        };
                        if let Err(e) = auth::authorize(id, &attrs) {
                            return error_reply(e);
                        }
                    }
                    metrics::serve(&shared, &sec.metrics, rest, &q)
                        .map_or_else(error_reply, ok_json)
                }
                _ => error_reply(ApiError::no_route()),
            };
        }
        match segs.as_slice() {
            ["version"] => return ok_json(discovery::version()),
            ["healthz"] | ["livez"] | ["readyz"] => {
                return full(200, "text/plain; charset=utf-8", b"ok".to_vec())
            }
            ["api"] => return ok_json(discovery::api_versions(&shared.address)),
            ["apis"] => {
                let mut doc = discovery::api_group_list();
                if let (Some(_), Some(groups)) = (secure_state, doc["groups"].as_array_mut()) {
                    groups.push(metrics::group_doc());
                }
                return ok_json(doc);
            }
            ["api", v] => {
                return discovery::resource_list("", v)
                    .map_or_else(|| error_reply(ApiError::no_route()), ok_json)
            }
            ["apis", g] => {
                return discovery::api_group(g)
                    .map_or_else(|| error_reply(ApiError::no_route()), ok_json)
            }
            ["apis", g, v] => {
                return discovery::resource_list(g, v)
                    .map_or_else(|| error_reply(ApiError::no_route()), ok_json)
            }
            ["openapi", "v3"] => return ok_json(openapi::root()),
            ["openapi", "v3", "api", v] => {
                return openapi::group_version("", v)
                    .map_or_else(|| error_reply(ApiError::no_route()), ok_json)
            }
            ["openapi", "v3", "apis", g, v] => {
                return openapi::group_version(g, v)
                    .map_or_else(|| error_reply(ApiError::no_route()), ok_json)
            }
            _ => {}
        }
    }
    if method == Method::POST {
        let secure = conn.as_deref().and_then(|c| c.secure.as_deref());
        match segs.as_slice() {
            ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => {
                let none = auth::Authenticator::default();
                let authn = secure.map_or(&none, |s| &s.authn);
                let r = reviews::token_review(authn, &shared.lock(), identity.as_ref(), &body);
                return r.map_or_else(error_reply, json_reply);
            }
            ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
                let allowed = secure.map_or(&[][..], |s| s.allowed_subjects.as_slice());
                let r = reviews::subject_access_review(allowed, identity.as_ref(), &body);
                return r.map_or_else(error_reply, json_reply);
            }
            _ => {}
        }
    }
    let Some(t) = target else {
        return error_reply(ApiError::no_route());
    };
    let is_csr = t.resource().kind == "CertificateSigningRequest";
    let body = if is_csr && method == Method::POST && t.name.is_none() {
        match csr::prepare_create(&body, identity.as_ref()) {
            Ok(b) => Bytes::from(b),
            Err(e) => return error_reply(e),
        }
    } else if is_csr
        && method == Method::PUT
        && t.sub.as_deref() == Some("approval")
        && content_type.starts_with(serviceaccounts::PROTOBUF)
    {
        let key = (t.res, String::new(), t.name.clone().unwrap_or_default());
        let Some(stored) = shared.lock().get(&key).cloned() else {
            return error_reply(ApiError::not_found(t.resource(), &key.2));
        };
        match csr::approval_from_protobuf(&stored, &body) {
            Ok(b) => Bytes::from(b),
            Err(e) => return error_reply(e),
        }
    } else {
        body
    };
    if method == Method::GET && t.sub.as_deref() == Some("log") && t.resource().kind == "Pod" {
        let secure = conn.as_deref().and_then(|c| c.secure.as_deref());
        let (Some(sec), Some(ns), Some(name)) = (secure, t.ns.as_deref(), t.name.as_deref()) else {
            return error_reply(ApiError::no_route());
        };
        return podlogs::proxy(&shared, &sec.kubelet_client, ns, name, &q).await;
    }
    if matches!(method, Method::GET | Method::POST)
        && matches!(t.sub.as_deref(), Some("exec" | "attach" | "portforward"))
        && t.resource().kind == "Pod"
    {
        let secure = conn.as_deref().and_then(|c| c.secure.as_deref());
        let (Some(sec), Some(ns), Some(name), Some(sub)) =
            (secure, t.ns.as_deref(), t.name.as_deref(), t.sub.as_deref())
        else {
            return error_reply(ApiError::no_route());
        };
        let req = podexec::StreamRequest {
            ns,
            name,
            sub,
            raw_query: &raw_query,
            headers: &headers,
        };
        return podexec::proxy(&shared, &sec.kubelet_client, req, upgrade).await;
    }
    let want = Want::from(&accept, &q);
    let result = match method {
        Method::GET if t.name.is_none() && watching => {
            return match watch::start(shared, &t, &q, want) {
                Ok(rx) => stream_reply(rx),
                Err(e) => error_reply(e),
            }
        }
        Method::GET if t.name.is_none() => handler::list(&shared, &t, &q, want),
        Method::GET => handler::get(&shared, &t, want),
        Method::POST if t.sub.as_deref() == Some("binding") => handler::bind(&shared, &t, &body),
        Method::POST if t.sub.as_deref() == Some("token") => {
            serviceaccounts::token_request(&shared, &t, &content_type, &body)
        }
        Method::POST => handler::create(&shared, &t, &q, &body),
        Method::PUT => handler::update(&shared, &t, &q, &body),
        Method::PATCH => handler::patch(&shared, &t, &q, &content_type, &body),
        Method::DELETE => handler::delete(&shared, &t, &q, &body),
        _ => Err(ApiError::method_not_allowed()),
    };
    if is_csr && result.is_ok() && method != Method::GET {
        shared.csr_written.notify_one();
    }
    match result {
        Ok(r) => json_reply(r),
        Err(e) => error_reply(e),
    }
}

fn stream_reply(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .expect("valid response")
}
