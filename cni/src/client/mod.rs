//! The CNI client: what libcni does for a container runtime. Loads the node's network, runs its
//! plugin chain (ADD in order with `prevResult`, DEL in reverse with the cached ADD result,
//! CHECK, STATUS, GC), caches results on disk and serialises operations per container.

mod cache;
mod exec;
mod lock;
mod ops;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use cache::{CacheEntry, ResultCache};
pub use exec::{find_plugin, ExecError, ExecFuture, PluginExec, PluginRequest, ProcessExec};

use crate::spec::{ConfigError, NetworkConfigList, ResultError};

/// Where the client finds networks and plugins and keeps its state.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Network configurations (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Plugin directories, searched in order (`/opt/cni/bin`).
    pub bin_dirs: Vec<PathBuf>,
    /// Result cache and lock files (`/var/lib/cni`).
    pub cache_dir: PathBuf,
    /// Limit for one plugin run; the plugin is killed when it is exceeded.
    pub timeout: Duration,
    /// Run plugins inside this network namespace (a path such as `/run/netns/node1`) rather
    /// than the caller's: for an agent whose "node" is itself a namespace.
    pub plugin_netns: Option<PathBuf>,
}

impl CniConfig {
    /// The conventional node layout: `/etc/cni/net.d`, `/opt/cni/bin`, `/var/lib/cni`, 2 minutes.
    pub fn node_defaults() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into()],
            cache_dir: "/var/lib/cni".into(),
            timeout: Duration::from_secs(120),
            plugin_netns: None,
        }
    }
}

/// One container's attachment to the network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attachment {
    /// The sandbox's container id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`).
    pub container_id: String,
    /// The pod's network namespace (`CNI_NETNS`).
    pub netns_path: PathBuf,
    /// The interface name in the pod (`CNI_IFNAME`), usually `eth0`.
    pub ifname: String,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `K8S_POD_NAME`.
    pub pod_name: String,
    /// `K8S_POD_UID`.
    pub pod_uid: String,
    /// Capability arguments (`portMappings`, `bandwidth`, ...), passed as `runtimeConfig` to the
    /// plugins that declare them.
    pub capability_args: Map<String, Value>,
}

/// A client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The network configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config directory holds no network.
    #[error("no CNI network configured in {0}")]
    NoNetwork(PathBuf),
    /// A plugin executable is missing.
    #[error("CNI plugin {plugin:?} of network {network} not found in {dirs:?}")]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// The network.
        network: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
    /// The attachment is not valid.
    #[error("invalid attachment: {0}")]
    InvalidAttachment(String),
    /// The attachment asks for a capability (e.g. `portMappings` for host ports) that no plugin
    /// of the network declares: the plugins would never see it, so ADD refuses to run rather
    /// than attach the container without it.
    #[error("CNI network {network:?} ({}) has no plugin with the {capability:?} capability{}", .config.display(), capability_hint(.capability))]
    CapabilityNotSupported {
        /// The capability.
        capability: String,
        /// The network.
        network: String,
        /// The network's configuration file.
        config: PathBuf,
    },
    /// A plugin failed.
    #[error("{op} of container {container_id} on network {network}: {source}")]
    Plugin {
        /// ADD, DEL, CHECK, ...
        op: String,
        /// The container.
        container_id: String,
        /// The network.
        network: String,
        /// What the plugin did.
        #[source]
        source: Box<ExecError>,
    },
    /// A plugin's stdout was not a result.
    #[error("reading the result of CNI plugin {plugin} for container {container_id}: {reason}")]
    BadResult {
        /// The plugin type.
        plugin: String,
        /// The container.
        container_id: String,
        /// What was wrong.
        reason: String,
    },
    /// The final result could not be parsed.
    #[error(transparent)]
    Result(#[from] ResultError),
    /// CHECK needs a cached ADD result and there is none.
    #[error(
        "no cached ADD result for container {container_id} interface {ifname} on network {network}"
    )]
    NotAttached {
        /// The container.
        container_id: String,
        /// The interface.
        ifname: String,
        /// The network.
        network: String,
    },
    /// Reading or writing the cache or a lock failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Several teardown steps failed; each is listed.
    #[error("{} errors: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<ClientError>),
}

impl ClientError {
    /// The plugin's verbatim error reply, when a plugin answered with one.
    pub fn plugin_reply(&self) -> Option<&crate::spec::PluginErrorReply> {
        match self {
            ClientError::Plugin { source, .. } => match source.as_ref() {
                ExecError::Plugin { reply, .. } => Some(reply),
                _ => None,
            },
            ClientError::Multiple(list) => list.iter().find_map(ClientError::plugin_reply),
            _ => None,
        }
    }
}

/// The versions one plugin supports (its VERSION answer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct VersionInfo {
    /// The version the plugin answered in.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Every version it supports.
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

/// The CNI client. Cheap to share (`Arc`) between pod workers.
#[derive(Debug)]
pub struct CniClient {
    config: CniConfig,
    exec: Arc<dyn PluginExec>,
    cache: ResultCache,
    locks: lock::ContainerLocks,
    gc_lock: tokio::sync::RwLock<()>,
}

impl CniClient {
    /// A client that spawns plugin processes (inside `config.plugin_netns` when set).
    pub fn new(config: CniConfig) -> Result<Self, ClientError> {
        let exec =
            ProcessExec::new(config.timeout, config.plugin_netns.as_deref()).map_err(|source| {
                ClientError::Io {
                    what: format!("opening plugin netns {:?}", config.plugin_netns),
                    source,
                }
            })?;
        Ok(Self::with_exec(config, Arc::new(exec)))
    }

    /// A client with another way to run plugins (tests).
    pub fn with_exec(config: CniConfig, exec: Arc<dyn PluginExec>) -> Self {
        CniClient {
            cache: ResultCache::new(&config.cache_dir),
            locks: lock::ContainerLocks::new(&config.cache_dir),
            gc_lock: tokio::sync::RwLock::new(()),
            config,
            exec,
        }
    }

    /// The configuration this client uses.
    pub fn config(&self) -> &CniConfig {
        &self.config
    }

    /// The network the next operation will use (the first in the config directory).
    pub fn network(&self) -> Result<NetworkConfigList, ClientError> {
        NetworkConfigList::load_first(&self.config.conf_dir)?
            .ok_or_else(|| ClientError::NoNetwork(self.config.conf_dir.clone()))
    }

    fn plugin_path(&self, net: &NetworkConfigList, index: usize) -> Result<PathBuf, ClientError> {
        let ty = net.plugin_type(index);
        find_plugin(ty, &self.config.bin_dirs).ok_or_else(|| ClientError::PluginNotFound {
            plugin: ty.to_string(),
            network: net.name.clone(),
            dirs: self.config.bin_dirs.clone(),
        })
    }

    fn cni_path(&self) -> String {
        self.config
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn validate(att: &Attachment) -> Result<(), ClientError> {
    let id_ok = att
        .container_id
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && att
            .container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !id_ok {
        return Err(ClientError::InvalidAttachment(format!(
            "container id {:?} must match [A-Za-z0-9][A-Za-z0-9_.-]*",
            att.container_id
        )));
    }
    if att.ifname.is_empty() || att.ifname.len() > 15 || att.ifname.contains(['/', ' ', ':']) {
        return Err(ClientError::InvalidAttachment(format!(
            "interface name {:?} is not a valid Linux interface name",
            att.ifname
        )));
    }
    Ok(())
}

/// What provides a capability, for [`ClientError::CapabilityNotSupported`].
fn capability_hint(capability: &str) -> &'static str {
    match capability {
        "portMappings" => {
            ": the pod's hostPorts need the portmap plugin (containernetworking-plugins) chained with \"capabilities\": {\"portMappings\": true}"
        }
        _ => "",
    }
}

fn netns_str(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests;
