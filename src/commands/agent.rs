//! `kubenode agent` and `kubenode kubelet`: the node agent.
//!
//! Resolves the configuration (file, then flags), recovers the runtime's view from disk, makes
//! sure the node has a pod network, then runs the static-pod source, the pod workers, the node
//! API, in cluster mode (a kubeconfig) the Node, Lease and event tasks, and (for `agent`) the
//! proxy until SIGINT/SIGTERM. Stopping the agent leaves every pod
//! running: the next start adopts them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net};
use kubenode_kubelet::config::{self as kconfig, Config, Overrides};
use kubenode_kubelet::node::{Kubelet, KubeletDeps};

/// Which roles the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// Kubelet and proxy.
    All,
    /// The kubelet alone.
    Kubelet,
}

/// Options of `kubenode agent` / `kubenode kubelet`; flags override the configuration file.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Configuration file (KubeletConfiguration-shaped YAML; default /etc/kubenode/config.yaml
    /// when it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    // The flags that override the file; their help is on the fields of `Overrides`.
    #[command(flatten)]
    pub overrides: Overrides,
    // Upstream kubelet flags that kubeadm's systemd drop-in passes.
    #[command(flatten)]
    pub kubelet: KubeletFlags,
}

/// Flags of upstream's kubelet that kubeadm's systemd drop-in passes (`10-kubeadm.conf`:
/// `--bootstrap-kubeconfig`, `--kubeconfig`, `--config`, then `kubeadm-flags.env`) that
/// kubenode has no equivalent for; `--config`, `--node-ip` and `--hostname-override` are
/// kubenode's own.
#[derive(clap::Args, Debug, Default)]
pub struct KubeletFlags {
    /// The TLS bootstrap kubeconfig of a node joining a cluster (a bootstrap token): when the
    /// `--kubeconfig` file is missing or its client certificate unusable or expired, the agent
    /// requests a client certificate (a CertificateSigningRequest), writes it to
    /// `<root>/pki/kubelet-client-current.pem` and the kubeconfig that names it, and, with
    /// `--rotate-certificates` (`rotateCertificates: true`), rotates it before it expires.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Upstream's CRI endpoint: accepted, reported as not supported at start (kubenode runs
    /// containers itself through an OCI runtime, `--runtime`).
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,
    /// Upstream's pause image: accepted, reported as not supported at start (kubenode's pause
    /// is built into its binary).
    #[arg(long, value_name = "IMAGE")]
    pub pod_infra_container_image: Option<String>,
}

impl KubeletFlags {
    /// `--bootstrap-kubeconfig` against the effective kubeconfig: TLS bootstrap writes the
    /// node's credentials to `--kubeconfig`, so one is needed (upstream's kubelet refuses the
    /// same). `Ok(Some(paths))`: bootstrap (or rotation) is managed for this node.
    pub fn check_bootstrap(
        &self,
        kubeconfig: Option<&Path>,
        config: &Config,
    ) -> anyhow::Result<Option<kubenode_kubelet::cluster::bootstrap::Paths>> {
        let Some(bootstrap) = &self.bootstrap_kubeconfig else {
            return Ok(None);
        };
        let Some(kubeconfig) = kubeconfig else {
            anyhow::bail!(
                "--bootstrap-kubeconfig {}: TLS bootstrap writes the node's credentials to the                  kubeconfig: give its path with --kubeconfig FILE (or `kubeconfig:` in the                  configuration file)",
                bootstrap.display()
            );
        };
        // Refused before anything is made, as upstream's kubelet refuses a bootstrap kubeconfig
        // it cannot load when it has to bootstrap.
        if !kubeconfig.exists() {
            if let Err(e) = std::fs::metadata(bootstrap) {
                anyhow::bail!(
                    "--bootstrap-kubeconfig {}: the kubeconfig {} does not exist and the \
                     bootstrap kubeconfig cannot be read for TLS bootstrap: {e}",
                    bootstrap.display(),
                    kubeconfig.display()
                );
            }
        }
        Ok(Some(kubenode_kubelet::cluster::bootstrap::Paths {
            kubeconfig: kubeconfig.to_path_buf(),
            bootstrap_kubeconfig: bootstrap.clone(),
            cert_dir: config.root_dir.join("pki"),
            node_name: config.node_name.clone(),
            rotate: config.rotate_certificates,
        }))
    }

    /// The start-up warnings for the flags kubenode accepts without acting on them.
    pub fn unsupported_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.container_runtime_endpoint.is_some() {
            out.push(
                "not supported by kubenode: --container-runtime-endpoint (kubenode runs \
                 containers itself through an OCI runtime, --runtime, not through a CRI endpoint)"
                    .to_owned(),
            );
        }
        if self.pod_infra_container_image.is_some() {
            out.push(
                "not supported by kubenode: --pod-infra-container-image (kubenode's pause is \
                 built into its binary)"
                    .to_owned(),
            );
        }
        out
    }
}

/// Runs the agent with the given roles until SIGINT or SIGTERM.
pub async fn run(args: AgentArgs, roles: Roles) -> anyhow::Result<()> {
    let file = args.config.clone().or_else(|| {
        // The default file is read only when it exists.
        let default = PathBuf::from(kconfig::DEFAULT_CONFIG_FILE);
        default.exists().then_some(default)
    });
    let config = Config::resolve(file.as_deref(), &args.overrides)?;
    let bootstrap = args
        .kubelet
        .check_bootstrap(config.kubeconfig.as_deref(), &config)?;
    tracing::info!(
        node = %config.node_name,
        node_ip = %config.node_ip,
        rule = ?config.node_ip_rule,
        root = %config.root_dir.display(),
        run = %config.run_dir.display(),
        "starting kubenode {}",
        super::version::VERSION_LINE
    );
    // Once, at start: what the configuration asks for that kubenode does not do.
    if let Some(path) = &file {
        for key in &config.unsupported_keys {
            tracing::warn!(file = %path.display(), "{}", kconfig::unsupported_warning(key));
        }
    }
    for warning in args.kubelet.unsupported_warnings() {
        tracing::warn!("{warning}");
    }
    let self_exe = std::env::current_exe().context("locating the kubenode binary")?;
    // Refuse at once, with the cause and the fix, on a host where no pod could run.
    let shim = kubenode_runtime::default_shim_binary();
    crate::preflight::check_agent(
        &crate::preflight::LinuxHost,
        &crate::preflight::AgentPlan {
            runtime: &config.runtime,
            shim: &shim,
            exe: &self_exe,
            dirs: vec![
                ("--root-dir", config.root_dir.as_path()),
                ("--run-dir", config.run_dir.as_path()),
                ("--log-dir", config.log_dir.as_path()),
            ],
            fail_swap_on: config.fail_swap_on,
            proxy: roles == Roles::All,
        },
    )?;

    let mut rc =
        kubenode_runtime::RuntimeConfig::new(&config.root_dir, &config.run_dir, &config.log_dir);
    rc.runtime_path = config.runtime.clone();
    rc.shim_binary = shim;
    rc.log_max_size = config.container_log_max_size;
    rc.log_max_files = config.container_log_max_files;
    let runtime = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let runtime = kubenode_runtime::Runtime::new(rc)?;
        // What recovery could not remove stays recorded (a sandbox kept not ready, a
        // directory left for the next start) and is retried; the node starts anyway, as a
        // node that refused to start over one stuck cgroup would stop every pod.
        if let Err(e) = runtime.recover() {
            tracing::warn!(error = %e, "recovering the runtime's state: some half-made objects are left to retry");
        }
        Ok(runtime)
    })
    .await??;
    tracing::info!(
        sandboxes = runtime.list_sandboxes().len(),
        containers = runtime.list_containers(None).len(),
        "recovered the runtime's state"
    );
    let images = Arc::new(kubenode_runtime::image::ImageStore::open(&config.root_dir)?);

    // The node's own allocation store, so several agents can share a host; portmap from
    // Debian's containernetworking-plugins is chained when installed.
    let system_plugins = PathBuf::from(kconfig::SYSTEM_CNI_BIN_DIR);
    if let Some(pod_cidr) = &config.pod_cidr {
        ensure_default_network(&config, *pod_cidr, &self_exe)?;
    }
    let cni = kubenode_cni::CniClient::new(kubenode_cni::CniConfig {
        conf_dir: config.cni_conf_dir.clone(),
        bin_dirs: vec![config.cni_bin_dir.clone(), system_plugins],
        cache_dir: config.root_dir.join(kconfig::CNI_CACHE_DIR),
        timeout: Duration::from_secs(120),
        plugin_netns: None,
    })?;

    // The node's own registry credentials: `config.json`/`.dockercfg` where upstream's kubelet
    // looks (read at each pull), after the pods' pull secrets.
    let pull = kubenode_runtime::image::PullOptions {
        insecure_registries: config.insecure_registries.clone(),
        node_credentials: Some(kubenode_runtime::image::NodeCredentialDirs::search(
            &config.root_dir,
        )),
        ..Default::default()
    };
    let objects = Arc::new(kubenode_kubelet::objects::Objects::new());
    let deps = KubeletDeps {
        runtime: Arc::new(runtime),
        images: images.clone(),
        cni: Arc::new(cni),
        pull,
        clock: Arc::new(kubenode_kubelet::backoff::SystemClock),
        objects: objects.clone(),
    };
    let manifest_dir = config.manifest_dir.clone();
    let period = config.file_check_frequency;
    let node_name = config.node_name.clone();
    let socket = config.socket_path();
    let read_only = config.read_only;
    let kubelet = Kubelet::new(config.clone(), deps);
    // Image garbage collection every 5 minutes, as upstream's kubelet.
    tokio::spawn(kubenode_kubelet::image_gc::run(
        images.clone(),
        config.root_dir.clone(),
        config.image_gc,
        kubelet.events().clone(),
        node_name.clone(),
    ));

    // Cluster mode: a client for the API server (reading the kubeconfig only; an unreachable
    // server never stops the start, every task retries with backoff), the Node and its Lease.
    // With --bootstrap-kubeconfig, TLS bootstrap and certificate rotation run in the
    // background (the client presents the current certificate).
    let cluster: Option<kube::Client> = match (&config.kubeconfig, bootstrap) {
        (Some(path), Some(paths)) => {
            let started = kubenode_kubelet::cluster::bootstrap::start(paths).await?;
            tracing::info!("{}", started.message);
            tracing::info!(kubeconfig = %path.display(), "cluster mode: joining the API server");
            Some(started.client)
        }
        (Some(path), None) => {
            let client = kubenode_kubelet::cluster::connect(path).await?;
            tracing::info!(kubeconfig = %path.display(), "cluster mode: joining the API server");
            Some(client)
        }
        (None, _) => None,
    };
    if let Some(client) = &cluster {
        // Service-account tokens of the API pods' projected volumes (TokenRequest).
        objects.set_tokens(Arc::new(
            kubenode_kubelet::objects::tokens::TokenManager::new(client.clone()),
        ));
        // Events: the recorder also queues every occurrence for the API server.
        let (events_tx, events_rx) =
            tokio::sync::mpsc::channel(kubenode_kubelet::events::SINK_QUEUE);
        kubelet.events().set_sink(events_tx);
        // The API pods' ConfigMaps and Secrets: watched per referenced object.
        let objects = kubelet.objects();
        objects.set_api(Arc::new(kubenode_kubelet::objects::api::ApiObjects::new(
            client.clone(),
            objects.notifier(),
        )));
        tokio::spawn(kubenode_kubelet::cluster::events::run(
            client.clone(),
            events_rx,
        ));
        start_node_tasks(
            client.clone(),
            &config,
            images.clone(),
            self_exe.clone(),
            kubelet.events().clone(),
            {
                let kubelet = kubelet.clone();
                Arc::new(move |taints| kubelet.set_node_taints(taints))
            },
            {
                let eviction = kubelet.eviction().clone();
                Arc::new(move || eviction.conditions())
            },
        );
    }

    let view: Arc<dyn kubenode_kubelet::api::NodeView> = kubelet.clone();
    let _socket_task = kubenode_kubelet::api::serve_unix(&socket, view.clone())
        .await
        .with_context(|| format!("serving the node API on {}", socket.display()))?;
    if let Some(addr) = config.healthz {
        crate::healthz::spawn_kubelet(addr);
    }
    if let Some(addr) = read_only {
        kubenode_kubelet::api::serve_tcp(addr, view.clone())
            .await
            .with_context(|| format!("serving the read-only port on {addr}"))?;
    }
    if let Some(server) = &config.server {
        start_https(&config, server, cluster.clone(), view)
            .await
            .with_context(|| format!("serving the kubelet's HTTPS port on {}", server.listen))?;
    }

    // The proxy takes the Services and Endpoints that changed straight from the source.
    let mut watcher =
        kubenode_kubelet::source::Watcher::new(manifest_dir.clone(), node_name.clone(), period);
    if roles == Roles::All {
        match &cluster {
            // Cluster mode: Services and EndpointSlices from the API server too, and
            // kube-proxy's health server on its default address.
            Some(client) => {
                let (changes, node) = crate::wiring::with_api_source(
                    client.clone(),
                    &node_name,
                    watcher.subscribe_changes(),
                );
                let health =
                    crate::healthz::parse_bind_address(crate::healthz::DEFAULT_BIND_ADDRESS)
                        .map_err(anyhow::Error::msg)?
                        .0
                        .map(|addr| (addr, node));
                crate::wiring::start_for_agent_with(&config, kubelet.clone(), changes, health)?;
            }
            None => crate::wiring::start_for_agent(
                &config,
                kubelet.clone(),
                watcher.subscribe_changes(),
            )?,
        }
    }
    // systemd (Type=notify): the node API and the read-only port answer from here on.
    crate::notify::ready(&format!("serving node {node_name}"));

    std::fs::create_dir_all(&manifest_dir)
        .with_context(|| format!("creating {}", manifest_dir.display()))?;
    let (snapshot_tx, snapshots) = tokio::sync::mpsc::channel(4);
    tokio::spawn(watcher.run(snapshot_tx));
    // Cluster mode: the API server's pods merged with the file pods, and their status written
    // back.
    let snapshots = match cluster {
        Some(client) => {
            let (merged, api_pods) = kubenode_kubelet::cluster::pods::start(
                client.clone(),
                node_name.clone(),
                snapshots,
            );
            tokio::spawn(kubenode_kubelet::cluster::status::run(
                client,
                kubelet.clone(),
                api_pods,
            ));
            merged
        }
        None => snapshots,
    };
    let kubelet_task = tokio::spawn(kubelet.run(snapshots));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping (pods keep running)"),
        _ = term.recv() => tracing::info!("terminated; stopping (pods keep running)"),
        r = kubelet_task => { r?; }
    }
    crate::notify::stopping();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Writes the default pod network (kubenode-bridge) for `pod_cidr` when the CNI configuration
/// directory has none.
fn ensure_default_network(config: &Config, pod_cidr: IpNet, self_exe: &Path) -> anyhow::Result<()> {
    let network = kubenode_cni::DefaultNetwork {
        pod_cidr: Some(ipv4(pod_cidr).context("pod CIDR")?),
        cluster_cidr: config
            .cluster_cidr
            .map(ipv4)
            .transpose()
            .context("cluster CIDR")?,
        data_dir: Some(config.root_dir.join(kconfig::CNI_NETWORKS_DIR)),
        mtu: None,
        extra_bin_dirs: vec![PathBuf::from(kconfig::SYSTEM_CNI_BIN_DIR)],
    };
    if kubenode_cni::ensure_default_network_with(
        &config.cni_conf_dir,
        &config.cni_bin_dir,
        &network,
        self_exe,
    )? {
        tracing::info!(dir = %config.cni_conf_dir.display(), "wrote the default pod network (kubenode-bridge)");
    }
    Ok(())
}

/// Starts the Node (registration and status) and Lease tasks of cluster mode. A pod CIDR the
/// control plane assigns (`spec.podCIDR`) becomes the default network's when none was
/// configured.
fn start_node_tasks(
    client: kube::Client,
    config: &Config,
    images: Arc<kubenode_runtime::image::ImageStore>,
    self_exe: PathBuf,
    events: kubenode_kubelet::events::Recorder,
    on_taints: Arc<dyn Fn(Vec<k8s_openapi::api::core::v1::Taint>) + Send + Sync>,
    pressure: Arc<dyn Fn() -> Vec<kubenode_kubelet::eviction::Pressure> + Send + Sync>,
) {
    use kubenode_kubelet::cluster::{lease, node};
    let network_config = config.clone();
    let on_pod_cidr = Arc::new(move |cidr: &str| {
        if network_config.pod_cidr.is_some() {
            tracing::info!(
                assigned = cidr,
                "the configured pod CIDR stays the pod network's"
            );
            return;
        }
        let result = kconfig::parse_cidr(cidr)
            .map_err(anyhow::Error::from)
            .and_then(|net| ensure_default_network(&network_config, net, &self_exe));
        if let Err(e) = result {
            tracing::warn!(pod_cidr = cidr, error = %format!("{e:#}"), "the default pod network for the assigned pod CIDR");
        }
    });
    let config_for_node = config.clone();
    let node_client = client.clone();
    tokio::spawn(async move {
        // `<runtime> --version` runs a process: off the async threads.
        let runtime = config_for_node.runtime.clone();
        let info = tokio::task::spawn_blocking(move || node::SystemInfo::of_host(&runtime))
            .await
            .unwrap_or_default();
        let deps = node::NodeDeps {
            info,
            config: config_for_node,
            images,
            on_pod_cidr,
            on_taints,
            events,
            pressure,
        };
        node::run(node_client, deps).await;
    });
    tokio::spawn(lease::run(client, config.node_name.clone()));
}

/// The IPv4 block `net`, as written: the default network is IPv4 only.
fn ipv4(net: IpNet) -> anyhow::Result<Ipv4Net> {
    match net {
        IpNet::V4(v4) => Ok(v4),
        IpNet::V6(_) => {
            anyhow::bail!("{net} is not an IPv4 CIDR (the default network is IPv4 only)")
        }
    }
}

/// The kubelet's HTTPS server (docs/architecture.md, "The kubelet's HTTPS server"): its serving
/// certificate from `tlsCertFile`/`tlsPrivateKeyFile`, a `kubelet-serving` CSR
/// (`serverTLSBootstrap`, cluster mode only) or self-signed in `<root>/pki`; then the listener.
async fn start_https(
    config: &Config,
    server: &kconfig::server::ServerConfig,
    client: Option<kube::Client>,
    view: Arc<dyn kubenode_kubelet::api::NodeView>,
) -> anyhow::Result<()> {
    use kubenode_kubelet::api::{self, tls};
    let cert = tls::ServingCert::new();
    let cert_dir = config.root_dir.join("pki");
    match (&server.tls_cert_file, &server.tls_private_key_file) {
        (Some(c), Some(k)) => {
            cert.set(tls::from_files(c, k)?)?;
            tracing::info!(cert = %c.display(), "serving certificate from tlsCertFile");
            tokio::spawn(tls::watch_files(c.clone(), k.clone(), cert.clone()));
        }
        _ if server.server_tls_bootstrap => {
            let Some(client) = &client else {
                anyhow::bail!(
                    "serverTLSBootstrap: true requests the serving certificate from the API \
                     server: it needs a kubeconfig (--kubeconfig)"
                );
            };
            tokio::spawn(tls::run_server_tls_bootstrap(
                client.clone(),
                cert_dir,
                config.node_name.clone(),
                vec![config.node_ip],
                cert.clone(),
            ));
        }
        _ => {
            let (pair, path) = tls::self_signed(&cert_dir, &config.node_name, &[config.node_ip])?;
            cert.set(pair)?;
            tracing::info!(cert = %path.display(), "self-signed serving certificate");
        }
    }
    let auth =
        api::auth::Auth::new(server, &config.node_name, client).map_err(anyhow::Error::msg)?;
    let mut configz = serde_json::to_value(config.to_file())?;
    if let Some(m) = configz.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    let https = Arc::new(api::HttpsServer {
        auth,
        cert,
        node_log_dir: PathBuf::from(api::NODE_LOG_DIR),
        configz,
        stream_idle_timeout: server.streaming_connection_idle_timeout,
        tls_min_version: server.tls_min_version,
        tls_cipher_suites: server.tls_cipher_suites.clone(),
    });
    if server.tls_min_version == kconfig::server::TlsVersion::Tls13
        && !server.tls_cipher_suites.is_empty()
    {
        // upstream's kubelet says the same (InitializeTLS)
        tracing::warn!("TLS 1.3 cipher suites are not configurable, ignoring tlsCipherSuites");
    }
    // Upstream's server caps no connections; 2048 at once (each an fd and a small task until
    // the 30 s handshake and head timeout) keep 1000 idle clients from filling the listen
    // backlog.
    let limits = api::ServeLimits {
        max_connections: 2048,
        ..api::ServeLimits::default()
    };
    api::serve_https(server.listen, view, https, limits).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    /// The kubelet command line of kubeadm's systemd drop-in (`10-kubeadm.conf`), with
    /// `kubeadm-flags.env` as `kubeadm join` v1.32 writes it and a typical
    /// `KUBELET_EXTRA_ARGS`.
    const KUBEADM_ARGV: &[&str] = &[
        "kubelet",
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
        "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
        "--pod-infra-container-image=registry.k8s.io/pause:3.10",
        "--hostname-override=worker-1",
        "--node-ip=192.168.56.12",
    ];

    #[test]
    fn kubeadm_command_line_parses() {
        let a = Cli::try_parse_from(KUBEADM_ARGV).unwrap().args;
        assert_eq!(
            a.config.as_deref(),
            Some(std::path::Path::new("/var/lib/kubelet/config.yaml"))
        );
        assert_eq!(a.overrides.node_name.as_deref(), Some("worker-1"));
        assert_eq!(a.overrides.node_ip, Some("192.168.56.12".parse().unwrap()));
        assert_eq!(
            a.kubelet.container_runtime_endpoint.as_deref(),
            Some("unix:///var/run/containerd/containerd.sock")
        );
        assert_eq!(
            a.kubelet.unsupported_warnings(),
            [
                "not supported by kubenode: --container-runtime-endpoint (kubenode runs \
                 containers itself through an OCI runtime, --runtime, not through a CRI endpoint)",
                "not supported by kubenode: --pod-infra-container-image (kubenode's pause is \
                 built into its binary)",
            ]
        );
        assert_eq!(
            a.overrides.kubeconfig.as_deref(),
            Some(Path::new("/etc/kubernetes/kubelet.conf"))
        );
        // Bootstrap needs the kubeconfig's path (where the credentials go), and the bootstrap
        // kubeconfig when the kubeconfig does not exist yet.
        let config = Config::resolve(None, &a.overrides).unwrap();
        let e = a
            .kubelet
            .check_bootstrap(Some(Path::new("/nonexistent/kubelet.conf")), &config)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "--bootstrap-kubeconfig /etc/kubernetes/bootstrap-kubelet.conf: the kubeconfig \
                 /nonexistent/kubelet.conf does not exist and the bootstrap kubeconfig cannot be \
                 read for TLS bootstrap: "
            ),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("kn-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubelet.conf");
        std::fs::write(&kubeconfig, "").unwrap();
        let paths = a
            .kubelet
            .check_bootstrap(Some(&kubeconfig), &config)
            .unwrap()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(paths.cert_dir, config.root_dir.join("pki"));
        assert_eq!(paths.node_name, "worker-1");
        assert_eq!(
            paths.bootstrap_kubeconfig,
            Path::new("/etc/kubernetes/bootstrap-kubelet.conf")
        );
        let e = a
            .kubelet
            .check_bootstrap(None, &config)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--bootstrap-kubeconfig /etc/kubernetes/bootstrap-kubelet.conf: ")
                && e.contains("--kubeconfig FILE"),
            "{e}"
        );
    }

    #[test]
    fn without_kubeconfig_nothing_is_refused_or_reported() {
        let a = Cli::try_parse_from(["agent", "--node-name", "n1"])
            .unwrap()
            .args;
        let config = Config::resolve(None, &a.overrides).unwrap();
        assert!(a.kubelet.check_bootstrap(None, &config).unwrap().is_none());
        assert_eq!(a.overrides.kubeconfig, None);
        assert!(a.kubelet.unsupported_warnings().is_empty());
        // A flag neither kubenode nor this list knows is still a usage error.
        let e = Cli::try_parse_from(["agent", "--container-runtime=remote"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    }
}
