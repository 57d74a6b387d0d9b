//! Resolving the effective configuration: defaults, then the file, then
//! explicit flags.

use super::*;
use crate::validation::quantity::Quantity;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Values given explicitly on the command line; each `Some` (or non-empty
/// list) wins over the file and the defaults.
///
/// These are the command-line flags themselves (`kubenode agent` flattens them): each field's
/// doc comment is its `--help` text, its flag the field's name in kebab case unless named.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Overrides {
    /// This node's name (default: the hostname).
    // `--hostname-override` is upstream's flag: kubeadm writes it when the node name is not the
    // hostname.
    #[arg(long, visible_alias = "hostname-override")]
    pub node_name: Option<String>,
    /// This node's IP (default: chosen by the documented rule, logged at start).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Persistent state (images, snapshots, pods).
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// Volatile state (runtime state, sockets, netns).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Container logs.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Static pod manifests (also Services and Endpoints).
    #[arg(long)]
    pub manifest_dir: Option<PathBuf>,
    /// This node's pod CIDR (for the default network).
    #[arg(long, value_parser = parse_cidr)]
    pub pod_cidr: Option<IpNet>,
    /// The cluster's pod network.
    #[arg(long, value_parser = parse_cidr)]
    pub cluster_cidr: Option<IpNet>,
    /// The Service ClusterIP range.
    #[arg(long, value_parser = parse_cidr)]
    pub service_cidr: Option<IpNet>,
    /// The read-only HTTP port (0 turns it off).
    #[arg(long)]
    pub read_only_port: Option<u16>,
    /// The read-only port's address.
    #[arg(long)]
    pub read_only_address: Option<IpAddr>,
    /// The health port (`/healthz`; 0 turns it off; upstream's 10248).
    #[arg(long)]
    pub healthz_port: Option<u16>,
    /// The health port's address (upstream's `127.0.0.1`).
    #[arg(long)]
    pub healthz_bind_address: Option<IpAddr>,
    /// The address of the HTTPS server (upstream's `--address`, the file's `address`;
    /// default 0.0.0.0).
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// The port of the HTTPS server (upstream's `--port`, the file's `port`; default 10250).
    #[arg(long)]
    pub port: Option<u16>,
    /// The HTTPS server's certificate (`tlsCertFile`; default: a self-signed one in
    /// `<root>/pki`).
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The key of `--tls-cert-file` (`tlsPrivateKeyFile`).
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Client certificates signed by this CA bundle authenticate to the HTTPS server
    /// (`authentication.x509.clientCAFile`).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Requests without credentials are let in as `system:anonymous`
    /// (`authentication.anonymous.enabled`; default false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub anonymous_auth: Option<bool>,
    /// Bearer tokens are checked with a TokenReview (`authentication.webhook.enabled`;
    /// default true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub authentication_token_webhook: Option<bool>,
    /// `AlwaysAllow` or `Webhook` (SubjectAccessReview; the default) (`authorization.mode`).
    #[arg(long, value_name = "MODE")]
    pub authorization_mode: Option<String>,
    /// The lowest TLS version the HTTPS server accepts: `VersionTLS12` (the default) or
    /// `VersionTLS13` (`tlsMinVersion`).
    #[arg(long, value_name = "VERSION")]
    pub tls_min_version: Option<String>,
    /// The TLS 1.2 cipher suites of the HTTPS server, upstream's (IANA) names separated by
    /// commas (`tlsCipherSuites`; default: rustls's). TLS 1.3's are always all on.
    #[arg(long, value_name = "SUITE,...", value_delimiter = ',')]
    pub tls_cipher_suites: Vec<String>,
    /// A streaming session (exec, attach, port-forward) with no message either way for this
    /// long is closed (`streamingConnectionIdleTimeout`; default 4h).
    #[arg(long, value_name = "DURATION")]
    pub streaming_connection_idle_timeout: Option<String>,
    /// A registry (`HOST:PORT`) spoken to over plain HTTP; repeatable.
    // Given at least once, the flags replace the file's whole list.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// CNI network configurations.
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugins.
    #[arg(long)]
    pub cni_bin_dir: Option<PathBuf>,
    /// The OCI runtime binary (runc, or a path).
    #[arg(long)]
    pub runtime: Option<PathBuf>,
    /// The mount program for NFS volumes (default: `mount` from PATH).
    // Upstream's flag name; the file's key is `mounterPath`.
    #[arg(
        long = "experimental-mounter-path",
        value_name = "EXPERIMENTAL_MOUNTER_PATH"
    )]
    pub mounter_path: Option<PathBuf>,
    /// Run containers that name no seccomp profile under the runtime's default profile
    /// (`seccompDefault`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub seccomp_default: Option<bool>,
    /// Labels for this node besides the kubelet's own (`kubernetes.io/hostname`, `os`,
    /// `arch`): `KEY=VALUE` pairs separated by commas, repeatable; upstream's flag (no file key).
    #[arg(long = "node-labels", value_name = "KEY=VALUE,...")]
    pub node_labels: Vec<String>,
    /// The kubeconfig of the API server this node joins (cluster mode; without one the node is
    /// standalone). Upstream's flag; the file's key is kubenode's `kubeconfig`.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Taints the Node registers with in cluster mode: `<key>[=<value>]:<effect>` separated by
    /// commas, repeatable (upstream's flag; the file's `registerWithTaints`).
    #[arg(long = "register-with-taints", value_name = "KEY=VALUE:EFFECT,...")]
    pub register_with_taints: Vec<String>,
    /// Resources reserved for the Kubernetes daemons: `RESOURCE=QUANTITY` separated by commas
    /// (cpu, memory, ephemeral-storage, pid), repeatable; replaces the file's `kubeReserved`.
    #[arg(long = "kube-reserved", value_name = "RESOURCE=QUANTITY,...")]
    pub kube_reserved: Vec<String>,
    /// Resources reserved for the system's daemons, as `--kube-reserved`; replaces the file's
    /// `systemReserved`.
    #[arg(long = "system-reserved", value_name = "RESOURCE=QUANTITY,...")]
    pub system_reserved: Vec<String>,
    /// Hard eviction thresholds: `SIGNAL<VALUE` separated by commas (`memory.available<100Mi`,
    /// `nodefs.available<10%`), repeatable; replaces the file's `evictionHard`. The eviction
    /// manager enforces them, and they are kept back from the allocatable resources.
    #[arg(long = "eviction-hard", value_name = "SIGNAL<VALUE,...")]
    pub eviction_hard: Vec<String>,
    /// With `--bootstrap-kubeconfig`, rotate the bootstrapped client certificate before it
    /// expires (`rotateCertificates`; upstream's default is false, kubeadm sets true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub rotate_certificates: Option<bool>,
}

/// The effective configuration of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Node name (lower case; static pods get `-<nodeName>` appended).
    pub node_name: String,
    /// The node IP.
    pub node_ip: IpAddr,
    /// How [`Config::node_ip`] was chosen.
    pub node_ip_rule: NodeIpRule,
    /// State directory (images, snapshots, `pods/<uid>/...`).
    pub root_dir: PathBuf,
    /// Runtime directory (runc root, shim sockets, `kubenode.sock`).
    pub run_dir: PathBuf,
    /// Container logs (`<ns>_<pod>_<uid>/<container>/<n>.log`).
    pub log_dir: PathBuf,
    /// Static pod directory (`staticPodPath`).
    pub manifest_dir: PathBuf,
    /// Full re-read period of the manifest directory.
    pub file_check_frequency: Duration,
    /// Pod resync period.
    pub sync_frequency: Duration,
    /// Pods admitted at most.
    pub max_pods: u32,
    /// This node's pod CIDR.
    pub pod_cidr: Option<IpNet>,
    /// The cluster's pod network.
    pub cluster_cidr: Option<IpNet>,
    /// The Service ClusterIP range.
    pub service_cidr: Option<IpNet>,
    /// NodePort range.
    pub service_node_port_range: PortRange,
    /// Cluster DNS servers for `ClusterFirst` pods.
    pub cluster_dns: Vec<IpAddr>,
    /// Cluster domain.
    pub cluster_domain: String,
    /// Host resolver file for `dnsPolicy: Default`.
    pub resolv_conf: PathBuf,
    /// Read-only HTTP API address, `None` when the port is 0 (the default, as upstream's
    /// KubeletConfiguration). When a port is set, the address defaults to `127.0.0.1`
    /// (upstream's `address` default is `0.0.0.0`).
    pub read_only: Option<SocketAddr>,
    /// The health port (`healthzBindAddress`:`healthzPort`, upstream's `127.0.0.1:10248`),
    /// `None` when the port is 0: plain HTTP, `/healthz` only, as the kubelet's.
    pub healthz: Option<SocketAddr>,
    /// The HTTPS server on port 10250 (`None`: `enableServer: false`).
    pub server: Option<super::server::ServerConfig>,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// CNI configuration directory.
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directory.
    pub cni_bin_dir: PathBuf,
    /// OCI runtime binary.
    pub runtime: PathBuf,
    /// Container log rotation size in bytes.
    pub container_log_max_size: u64,
    /// Container log files kept per container.
    pub container_log_max_files: u32,
    /// Refuse to start while the host has swap on (`failSwapOn`; upstream's
    /// KubeletConfiguration default is true).
    pub fail_swap_on: bool,
    /// The mount program for NFS volumes (`None`: `mount` from `PATH`); upstream's
    /// `--experimental-mounter-path`, kubenode's `mounterPath` key.
    pub mounter_path: Option<PathBuf>,
    /// Most processes (pids) a pod may have, set on the pod cgroup's pids controller
    /// (`podPidsLimit`; `None` for upstream's -1, no limit).
    pub pod_pids_limit: Option<u64>,
    /// Unsafe sysctls pods may set besides the safe ones (`allowedUnsafeSysctls`: names,
    /// or `prefix*` patterns), each checked to be namespaced.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// `RuntimeDefault` is the seccomp profile of containers that name none (`seccompDefault`,
    /// `--seccomp-default`; upstream's default is false).
    pub seccomp_default: bool,
    /// The file's upstream KubeletConfiguration keys that kubenode does not act on, in file
    /// order ([`ConfigFile::unsupported`]); the agent reports each once at start.
    pub unsupported_keys: Vec<String>,
    /// The node's labels: upstream's kubelet's own (`kubernetes.io/hostname` = the node name,
    /// `kubernetes.io/os`, `kubernetes.io/arch` and their `beta.` forms), then `--node-labels`.
    /// Admission matches pods' `nodeSelector` and required node affinity against them.
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// The kubeconfig of the API server (`--kubeconfig`, kubenode's `kubeconfig` key): `Some`
    /// is cluster mode (docs/architecture.md, "Cluster mode"), `None` standalone.
    pub kubeconfig: Option<PathBuf>,
    /// The taints the Node registers with (`--register-with-taints`, `registerWithTaints`;
    /// set at registration only, as upstream).
    pub register_with_taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// Image garbage collection (`imageGCHighThresholdPercent`, `imageGCLowThresholdPercent`,
    /// `imageMinimumGCAge`).
    pub image_gc: crate::image_gc::ImageGcPolicy,
    /// What is kept back from the pods (`kubeReserved`, `systemReserved`, `evictionHard`):
    /// allocatable = capacity less these (`node/capacity.rs`).
    pub node_allocatable: reserved::NodeAllocatable,
    /// `enforceNodeAllocatable` (`pods`, upstream's default, or `none`).
    pub enforce_node_allocatable: Vec<String>,
    /// Node-pressure eviction (`evictionHard`, `evictionSoft`, `evictionSoftGracePeriod`,
    /// `evictionMinimumReclaim`, `evictionPressureTransitionPeriod`,
    /// `evictionMaxPodGracePeriod`), what [`crate::eviction`] enforces.
    pub eviction: crate::eviction::EvictionConfig,
    /// Rotate the bootstrapped client certificate (`rotateCertificates`,
    /// `--rotate-certificates`; upstream's default false): without it TLS bootstrap still
    /// happens, but the certificate is used until it expires.
    pub rotate_certificates: bool,
}

fn invalid(file: &Path, key: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::InvalidValue {
        file: file.into(),
        key: key.into(),
        reason: reason.to_string(),
    }
}

fn parse_opt<T: std::str::FromStr>(
    v: Option<&str>,
    file: &Path,
    key: &str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    parse_opt_with(str::parse::<T>, v, file, key)
}

/// As [`parse_opt`], with the parser `parse`.
fn parse_opt_with<T, E: std::fmt::Display>(
    parse: impl Fn(&str) -> Result<T, E>,
    v: Option<&str>,
    file: &Path,
    key: &str,
) -> Result<Option<T>, ConfigError> {
    v.map(|s| parse(s).map_err(|e| invalid(file, key, e)))
        .transpose()
}

impl Config {
    /// Resolves the configuration of this host: defaults, then `file` if
    /// given, then `overrides`.
    pub fn resolve(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::resolve_with(file, overrides, &SystemHost)
    }

    /// As [`Config::resolve`], reading host facts from `host`.
    pub fn resolve_with(
        file: Option<&Path>,
        overrides: &Overrides,
        host: &dyn Host,
    ) -> Result<Self, ConfigError> {
        let cfg = match file {
            Some(f) => ConfigFile::load(f)?,
            None => ConfigFile::default(),
        };
        Self::from_parts(
            &cfg,
            file.unwrap_or(Path::new("(defaults)")),
            overrides,
            host,
        )
    }

    /// Resolves from an already parsed file; `file` names it in errors.
    pub fn from_parts(
        cfg: &ConfigFile,
        file: &Path,
        o: &Overrides,
        host: &dyn Host,
    ) -> Result<Self, ConfigError> {
        let flags = Path::new("(flags)");
        // As upstream's defaulting (SetDefaults_KubeletConfiguration): a zero duration is
        // unset, and kubeadm writes `0s` for every duration it leaves to the kubelet.
        let dur =
            |v: &Option<String>, key: &str, default: Duration| -> Result<Duration, ConfigError> {
                let d = match v {
                    Some(s) => parse_duration(s).map_err(|e| invalid(file, key, e))?,
                    None => default,
                };
                Ok(if d.is_zero() { default } else { d })
            };
        let path = |flag: &Option<PathBuf>, key: &Option<String>, default: &str| -> PathBuf {
            flag.clone()
                .or_else(|| key.as_ref().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(default))
        };

        let node_name = match o.node_name.clone().or_else(|| cfg.node_name.clone()) {
            Some(n) => n,
            None => host.hostname().map_err(|source| ConfigError::Host {
                what: "the hostname",
                source,
            })?,
        }
        .trim()
        .to_lowercase();
        if node_name.is_empty() || !crate::validation::names::is_dns1123_subdomain(&node_name) {
            return Err(invalid(
                if o.node_name.is_some() { flags } else { file },
                "nodeName",
                format!("{node_name:?} is not a valid DNS-1123 subdomain"),
            ));
        }

        let node_labels = node_labels::parse_node_labels(&o.node_labels)
            .and_then(|extra| node_labels::validate_node_labels(&extra).map(|()| extra))
            .map_err(|e| invalid(flags, "--node-labels", e))?;
        let node_labels = node_labels::node_labels(&node_name, &node_labels);

        let register_with_taints = if o.register_with_taints.is_empty() {
            let taints = cfg.register_with_taints.clone().unwrap_or_default();
            for t in &taints {
                taints::check_taint(t, &t.key)
                    .map_err(|e| invalid(file, "registerWithTaints", e))?;
            }
            taints
        } else {
            taints::parse_taints(&o.register_with_taints)
                .map_err(|e| invalid(flags, "--register-with-taints", e))?
        };

        let pod_cidr = match o.pod_cidr {
            Some(c) => Some(c),
            None => parse_opt_with(parse_cidr, cfg.pod_cidr.as_deref(), file, "podCIDR")?,
        };
        let cluster_cidr = match o.cluster_cidr {
            Some(c) => Some(c),
            None => parse_opt_with(parse_cidr, cfg.cluster_cidr.as_deref(), file, "clusterCIDR")?,
        };
        let service_cidr = match o.service_cidr {
            Some(c) => Some(c),
            None => parse_opt_with(parse_cidr, cfg.service_cidr.as_deref(), file, "serviceCIDR")?,
        };

        let explicit_ip = match o.node_ip {
            Some(ip) => Some(ip),
            None => parse_opt::<IpAddr>(cfg.node_ip.as_deref(), file, "nodeIP")?,
        };
        let (node_ip, node_ip_rule) = match explicit_ip {
            Some(ip) => (ip, NodeIpRule::Explicit),
            None => {
                let ifs = host.interfaces().map_err(|source| ConfigError::Host {
                    what: "the interfaces",
                    source,
                })?;
                let dr = host
                    .default_route_interface()
                    .map_err(|source| ConfigError::Host {
                        what: "the default route",
                        source,
                    })?;
                let excluded: Vec<IpNet> = pod_cidr
                    .iter()
                    .chain(cluster_cidr.iter())
                    .copied()
                    .collect();
                choose_node_ip(&ifs, dr.as_deref(), &excluded).ok_or_else(|| {
                    ConfigError::NodeIp(
                        "no up, non-loopback interface has a global address; pass --node-ip".into(),
                    )
                })?
            }
        };
        tracing::info!(node_ip = %node_ip, rule = %node_ip_rule, "node IP chosen");

        let cluster_dns = cfg
            .cluster_dns
            .iter()
            .flatten()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|e| invalid(file, "clusterDNS", format!("{s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let port = o
            .read_only_port
            .or(cfg.read_only_port)
            .unwrap_or(DEFAULT_READ_ONLY_PORT);
        let address = match o.read_only_address {
            Some(a) => a,
            None => parse_opt::<IpAddr>(cfg.address.as_deref(), file, "address")?
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        let read_only = (port != 0).then_some(SocketAddr::new(address, port));
        let healthz_port = o
            .healthz_port
            .or(cfg.healthz_port)
            .unwrap_or(DEFAULT_HEALTHZ_PORT);
        let healthz_address = match o.healthz_bind_address {
            Some(a) => a,
            None => parse_opt::<IpAddr>(
                cfg.healthz_bind_address.as_deref(),
                file,
                "healthzBindAddress",
            )?
            .unwrap_or(IpAddr::V4(DEFAULT_HEALTHZ_BIND_ADDRESS)),
        };
        let healthz = (healthz_port != 0).then_some(SocketAddr::new(healthz_address, healthz_port));
        let server = if cfg.enable_server.unwrap_or(true) {
            Some(resolve_server(cfg, file, o, &dur)?)
        } else {
            None
        };

        let log_size_text = cfg
            .container_log_max_size
            .as_deref()
            .unwrap_or(DEFAULT_CONTAINER_LOG_MAX_SIZE);
        let log_size =
            Quantity::parse(log_size_text).map_err(|e| invalid(file, "containerLogMaxSize", e))?;
        if log_size.value() <= 0 {
            return Err(invalid(
                file,
                "containerLogMaxSize",
                "must be greater than zero",
            ));
        }
        let log_files = cfg
            .container_log_max_files
            .unwrap_or(DEFAULT_CONTAINER_LOG_MAX_FILES);
        if log_files < 2 {
            return Err(invalid(file, "containerLogMaxFiles", "must be at least 2"));
        }
        // Upstream's defaulting: 0 is unset.
        let max_pods = match cfg.max_pods.unwrap_or(0) {
            0 => DEFAULT_MAX_PODS,
            n => n,
        };
        let pod_pids_limit = match cfg.pod_pids_limit.unwrap_or(DEFAULT_POD_PIDS_LIMIT) {
            -1 => None,
            n if n > 0 => Some(n as u64),
            n => {
                return Err(invalid(
                    file,
                    "podPidsLimit",
                    format!("{n}: must be -1 (no limit) or greater than zero"),
                ))
            }
        };
        let allowed_unsafe_sysctls = cfg.allowed_unsafe_sysctls.clone().unwrap_or_default();
        if let Err(e) =
            crate::validation::sysctl::SysctlAllowlist::new(&allowed_unsafe_sysctls, None)
        {
            return Err(invalid(file, "allowedUnsafeSysctls", e));
        }
        let cluster_domain = cfg
            .cluster_domain
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.into());
        if !crate::validation::names::is_dns1123_subdomain(&cluster_domain) {
            return Err(invalid(
                file,
                "clusterDomain",
                format!("{cluster_domain:?} is not a valid DNS-1123 subdomain"),
            ));
        }

        let image_gc = crate::image_gc::ImageGcPolicy {
            high_threshold_percent: cfg
                .image_gc_high_threshold_percent
                .unwrap_or(crate::image_gc::DEFAULT_HIGH_THRESHOLD_PERCENT),
            low_threshold_percent: cfg
                .image_gc_low_threshold_percent
                .unwrap_or(crate::image_gc::DEFAULT_LOW_THRESHOLD_PERCENT),
            min_age: dur(
                &cfg.image_minimum_gc_age,
                "imageMinimumGCAge",
                crate::image_gc::DEFAULT_MIN_AGE,
            )?,
        };
        image_gc
            .validate()
            .map_err(|(key, reason)| invalid(file, key, reason))?;

        let flag_or_file = |flag: &[String],
                            file_value: &Option<std::collections::BTreeMap<String, String>>,
                            name: &str,
                            separator: char|
         -> Result<
            Option<std::collections::BTreeMap<String, String>>,
            ConfigError,
        > {
            if flag.is_empty() {
                Ok(file_value.clone())
            } else {
                reserved::parse_flag_map(flag, separator)
                    .map(Some)
                    .map_err(|e| invalid(flags, name, e))
            }
        };
        let kube_reserved =
            flag_or_file(&o.kube_reserved, &cfg.kube_reserved, "--kube-reserved", '=')?;
        let system_reserved = flag_or_file(
            &o.system_reserved,
            &cfg.system_reserved,
            "--system-reserved",
            '=',
        )?;
        let eviction_hard =
            flag_or_file(&o.eviction_hard, &cfg.eviction_hard, "--eviction-hard", '<')?;
        let node_allocatable = reserved::NodeAllocatable::new(
            kube_reserved.unwrap_or_default(),
            system_reserved.unwrap_or_default(),
            reserved::effective_eviction_hard(
                eviction_hard.as_ref(),
                cfg.merge_default_eviction_settings.unwrap_or(false),
            ),
        )
        .map_err(|(key, e)| {
            let (source, key) = match key {
                "kubeReserved" if !o.kube_reserved.is_empty() => (flags, "--kube-reserved"),
                "systemReserved" if !o.system_reserved.is_empty() => (flags, "--system-reserved"),
                "evictionHard" if !o.eviction_hard.is_empty() => (flags, "--eviction-hard"),
                _ => (file, key),
            };
            invalid(source, key, e)
        })?;
        let empty = std::collections::BTreeMap::new();
        let eviction = crate::eviction::EvictionConfig::parse(
            &node_allocatable.eviction_hard_list,
            cfg.eviction_soft.as_ref().unwrap_or(&empty),
            cfg.eviction_soft_grace_period.as_ref().unwrap_or(&empty),
            cfg.eviction_minimum_reclaim.as_ref().unwrap_or(&empty),
            dur(
                &cfg.eviction_pressure_transition_period,
                "evictionPressureTransitionPeriod",
                crate::eviction::thresholds::DEFAULT_PRESSURE_TRANSITION_PERIOD,
            )?,
            i64::from(cfg.eviction_max_pod_grace_period.unwrap_or(0)),
        )
        .map_err(|(key, e)| match key {
            "evictionHard" if !o.eviction_hard.is_empty() => invalid(flags, "--eviction-hard", e),
            _ => invalid(file, key, e),
        })?;
        let enforce_node_allocatable = cfg
            .enforce_node_allocatable
            .clone()
            .unwrap_or_else(|| vec!["pods".to_string()]);
        reserved::check_enforce_node_allocatable(&enforce_node_allocatable)
            .map_err(|e| invalid(file, "enforceNodeAllocatable", e))?;

        Ok(Self {
            node_name,
            node_ip,
            node_ip_rule,
            root_dir: path(&o.root_dir, &cfg.root_dir, DEFAULT_ROOT_DIR),
            run_dir: path(&o.run_dir, &cfg.run_dir, DEFAULT_RUN_DIR),
            log_dir: path(&o.log_dir, &cfg.log_dir, DEFAULT_LOG_DIR),
            manifest_dir: path(&o.manifest_dir, &cfg.static_pod_path, DEFAULT_MANIFEST_DIR),
            file_check_frequency: dur(
                &cfg.file_check_frequency,
                "fileCheckFrequency",
                DEFAULT_FILE_CHECK_FREQUENCY,
            )?,
            sync_frequency: dur(&cfg.sync_frequency, "syncFrequency", DEFAULT_SYNC_FREQUENCY)?,
            max_pods,
            pod_cidr,
            cluster_cidr,
            service_cidr,
            service_node_port_range: cfg
                .service_node_port_range
                .as_deref()
                .unwrap_or(DEFAULT_SERVICE_NODE_PORT_RANGE)
                .parse()
                .map_err(|e| invalid(file, "serviceNodePortRange", e))?,
            cluster_dns,
            cluster_domain,
            resolv_conf: cfg
                .resolv_conf
                .clone()
                .map_or_else(|| DEFAULT_RESOLV_CONF.into(), PathBuf::from),
            read_only,
            healthz,
            server,
            insecure_registries: if o.insecure_registries.is_empty() {
                cfg.insecure_registries.clone().unwrap_or_default()
            } else {
                o.insecure_registries.clone()
            },
            cni_conf_dir: path(&o.cni_conf_dir, &cfg.cni_conf_dir, DEFAULT_CNI_CONF_DIR),
            cni_bin_dir: path(&o.cni_bin_dir, &cfg.cni_bin_dir, DEFAULT_CNI_BIN_DIR),
            runtime: path(&o.runtime, &cfg.runtime, DEFAULT_RUNTIME),
            container_log_max_size: log_size.value() as u64,
            container_log_max_files: log_files,
            fail_swap_on: cfg.fail_swap_on.unwrap_or(DEFAULT_FAIL_SWAP_ON),
            mounter_path: o
                .mounter_path
                .clone()
                .or_else(|| cfg.mounter_path.as_ref().map(PathBuf::from)),
            pod_pids_limit,
            allowed_unsafe_sysctls,
            seccomp_default: o.seccomp_default.or(cfg.seccomp_default).unwrap_or(false),
            unsupported_keys: cfg.unsupported.clone(),
            node_labels,
            kubeconfig: o
                .kubeconfig
                .clone()
                .or_else(|| cfg.kubeconfig.as_ref().map(PathBuf::from)),
            register_with_taints,
            image_gc,
            node_allocatable,
            enforce_node_allocatable,
            eviction,
            rotate_certificates: o
                .rotate_certificates
                .or(cfg.rotate_certificates)
                .unwrap_or(false),
        })
    }

    /// The soft (`hard` false) or hard eviction thresholds as a map of signal to `f(threshold)`.
    fn eviction_list(
        &self,
        hard: bool,
        f: impl Fn(&crate::eviction::Threshold) -> String,
    ) -> std::collections::BTreeMap<String, String> {
        self.eviction
            .thresholds
            .iter()
            .filter(|t| t.is_hard() == hard)
            .map(|t| (t.signal.as_str().to_string(), f(t)))
            .collect()
    }

    /// The configuration as a complete KubeletConfiguration file (durations
    /// printed the Go way), e.g. for a `configz` view.
    pub fn to_file(&self) -> ConfigFile {
        let s = |p: &Path| Some(p.display().to_string());
        ConfigFile {
            api_version: Some(API_VERSION.into()),
            kind: Some(KIND.into()),
            static_pod_path: s(&self.manifest_dir),
            file_check_frequency: Some(format_duration(self.file_check_frequency)),
            sync_frequency: Some(format_duration(self.sync_frequency)),
            max_pods: Some(self.max_pods),
            pod_cidr: self.pod_cidr.map(|c| c.to_string()),
            cluster_dns: Some(self.cluster_dns.iter().map(ToString::to_string).collect()),
            cluster_domain: Some(self.cluster_domain.clone()),
            read_only_port: Some(self.read_only.map_or(0, |a| a.port())),
            healthz_port: Some(self.healthz.map_or(0, |a| a.port())),
            healthz_bind_address: self.healthz.map(|a| a.ip().to_string()),
            address: self
                .server
                .as_ref()
                .map(|s| s.listen.ip().to_string())
                .or_else(|| self.read_only.map(|a| a.ip().to_string())),
            enable_server: Some(self.server.is_some()),
            port: self.server.as_ref().map(|s| s.listen.port()),
            tls_cert_file: self
                .server
                .as_ref()
                .and_then(|s| s.tls_cert_file.as_deref())
                .and_then(s),
            tls_private_key_file: self
                .server
                .as_ref()
                .and_then(|s| s.tls_private_key_file.as_deref())
                .and_then(s),
            server_tls_bootstrap: self.server.as_ref().map(|s| s.server_tls_bootstrap),
            authentication: self.server.as_ref().map(super::server::authentication_file),
            authorization: self.server.as_ref().map(super::server::authorization_file),
            tls_min_version: self
                .server
                .as_ref()
                .map(|s| s.tls_min_version.name().to_string()),
            tls_cipher_suites: self.server.as_ref().map(|s| s.tls_cipher_suites.clone()),
            streaming_connection_idle_timeout: self
                .server
                .as_ref()
                .map(|s| format_duration(s.streaming_connection_idle_timeout)),
            resolv_conf: s(&self.resolv_conf),
            container_log_max_size: Some(self.container_log_max_size.to_string()),
            container_log_max_files: Some(self.container_log_max_files),
            fail_swap_on: Some(self.fail_swap_on),
            node_name: Some(self.node_name.clone()),
            node_ip: Some(self.node_ip.to_string()),
            root_dir: s(&self.root_dir),
            run_dir: s(&self.run_dir),
            log_dir: s(&self.log_dir),
            cluster_cidr: self.cluster_cidr.map(|c| c.to_string()),
            service_cidr: self.service_cidr.map(|c| c.to_string()),
            service_node_port_range: Some(self.service_node_port_range.to_string()),
            insecure_registries: Some(self.insecure_registries.clone()),
            cni_conf_dir: s(&self.cni_conf_dir),
            cni_bin_dir: s(&self.cni_bin_dir),
            runtime: s(&self.runtime),
            mounter_path: self.mounter_path.as_deref().and_then(s),
            pod_pids_limit: Some(self.pod_pids_limit.map_or(-1, |n| n as i64)),
            allowed_unsafe_sysctls: Some(self.allowed_unsafe_sysctls.clone()),
            seccomp_default: Some(self.seccomp_default),
            kubeconfig: self.kubeconfig.as_deref().and_then(s),
            register_with_taints: Some(self.register_with_taints.clone()),
            image_minimum_gc_age: Some(format_duration(self.image_gc.min_age)),
            image_gc_high_threshold_percent: Some(self.image_gc.high_threshold_percent),
            image_gc_low_threshold_percent: Some(self.image_gc.low_threshold_percent),
            kube_reserved: Some(self.node_allocatable.kube_reserved_list.clone()),
            system_reserved: Some(self.node_allocatable.system_reserved_list.clone()),
            eviction_hard: Some(self.node_allocatable.eviction_hard_list.clone()),
            merge_default_eviction_settings: Some(false),
            eviction_soft: Some(self.eviction_list(false, |t| t.text.clone())),
            eviction_soft_grace_period: Some(
                self.eviction_list(false, |t| format_duration(t.grace_period)),
            ),
            eviction_pressure_transition_period: Some(format_duration(
                self.eviction.pressure_transition_period,
            )),
            eviction_max_pod_grace_period: Some(
                i32::try_from(self.eviction.max_pod_grace_period_seconds).unwrap_or(i32::MAX),
            ),
            eviction_minimum_reclaim: None,
            enforce_node_allocatable: Some(self.enforce_node_allocatable.clone()),
            rotate_certificates: Some(self.rotate_certificates),
            unsupported: Vec::new(),
        }
    }

    /// The unix socket of the operator's CLI: `<runDir>/kubenode.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.run_dir.join(SOCKET_FILE)
    }
}

/// Reads a duration key with its default (a zero duration is the default).
type DurationKey<'a> =
    dyn Fn(&Option<String>, &str, Duration) -> Result<Duration, ConfigError> + 'a;

/// The HTTPS server's settings: the file's keys with upstream's v1beta1 defaults, then flags.
fn resolve_server(
    cfg: &ConfigFile,
    file: &Path,
    o: &Overrides,
    dur: &DurationKey<'_>,
) -> Result<super::server::ServerConfig, ConfigError> {
    use super::server::*;
    let flags = Path::new("(flags)");
    let d_idle = || DEFAULT_STREAMING_IDLE_TIMEOUT;
    let d = ServerConfig::default();
    let address = match o.address {
        Some(a) => a,
        None => {
            parse_opt::<IpAddr>(cfg.address.as_deref(), file, "address")?.unwrap_or(d.listen.ip())
        }
    };
    // upstream's defaulting: 0 is unset
    let port = match o.port {
        Some(0) => {
            return Err(invalid(
                flags,
                "--port",
                "0: must be between 1 and 65535, inclusive",
            ))
        }
        Some(p) => p,
        None => match cfg.port.unwrap_or(0) {
            0 => DEFAULT_PORT,
            p => p,
        },
    };
    let tls_cert_file = o
        .tls_cert_file
        .clone()
        .or_else(|| cfg.tls_cert_file.as_ref().map(PathBuf::from));
    let tls_private_key_file = o
        .tls_private_key_file
        .clone()
        .or_else(|| cfg.tls_private_key_file.as_ref().map(PathBuf::from));
    if tls_cert_file.is_some() != tls_private_key_file.is_some() {
        return Err(invalid(
            file,
            if tls_cert_file.is_some() {
                "tlsPrivateKeyFile"
            } else {
                "tlsCertFile"
            },
            "tlsCertFile and tlsPrivateKeyFile must be given together",
        ));
    }
    let authn = cfg.authentication.clone().unwrap_or_default();
    let authz = cfg.authorization.clone().unwrap_or_default();
    let authorization_mode = match &o.authorization_mode {
        Some(m) => m
            .parse()
            .map_err(|e| invalid(flags, "--authorization-mode", e))?,
        None => match authz.mode.as_deref() {
            None | Some("") => d.authorization_mode,
            Some(m) => m
                .parse()
                .map_err(|e| invalid(file, "authorization.mode", e))?,
        },
    };
    let webhook = authn.webhook.clone().unwrap_or_default();
    let authz_webhook = authz.webhook.clone().unwrap_or_default();
    let tls_min_version = match &o.tls_min_version {
        Some(v) => parse_tls_version(v).map_err(|e| invalid(flags, "--tls-min-version", e))?,
        None => parse_tls_version(cfg.tls_min_version.as_deref().unwrap_or(""))
            .map_err(|e| invalid(file, "tlsMinVersion", e))?,
    };
    let tls_cipher_suites = if o.tls_cipher_suites.is_empty() {
        check_cipher_suites(cfg.tls_cipher_suites.as_deref().unwrap_or_default())
            .map_err(|e| invalid(file, "tlsCipherSuites", e))?
    } else {
        check_cipher_suites(&o.tls_cipher_suites)
            .map_err(|e| invalid(flags, "--tls-cipher-suites", e))?
    };
    let streaming_connection_idle_timeout = match &o.streaming_connection_idle_timeout {
        Some(v) => {
            let d = crate::duration::parse_duration(v)
                .map_err(|e| invalid(flags, "--streaming-connection-idle-timeout", e))?;
            if d.is_zero() {
                d_idle()
            } else {
                d
            }
        }
        None => dur(
            &cfg.streaming_connection_idle_timeout,
            "streamingConnectionIdleTimeout",
            d_idle(),
        )?,
    };
    Ok(ServerConfig {
        listen: SocketAddr::new(address, port),
        tls_cert_file,
        tls_private_key_file,
        server_tls_bootstrap: cfg.server_tls_bootstrap.unwrap_or(false),
        client_ca_file: o.client_ca_file.clone().or_else(|| {
            authn
                .x509
                .as_ref()
                .and_then(|x| x.client_ca_file.as_ref())
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
        }),
        webhook_authentication: o
            .authentication_token_webhook
            .or(webhook.enabled)
            .unwrap_or(d.webhook_authentication),
        authentication_cache_ttl: dur(
            &webhook.cache_ttl,
            "authentication.webhook.cacheTTL",
            d.authentication_cache_ttl,
        )?,
        anonymous: o
            .anonymous_auth
            .or(authn.anonymous.as_ref().and_then(|a| a.enabled))
            .unwrap_or(d.anonymous),
        authorization_mode,
        cache_authorized_ttl: dur(
            &authz_webhook.cache_authorized_ttl,
            "authorization.webhook.cacheAuthorizedTTL",
            d.cache_authorized_ttl,
        )?,
        cache_unauthorized_ttl: dur(
            &authz_webhook.cache_unauthorized_ttl,
            "authorization.webhook.cacheUnauthorizedTTL",
            d.cache_unauthorized_ttl,
        )?,
        tls_min_version,
        tls_cipher_suites,
        streaming_connection_idle_timeout,
    })
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
