//! The node's default network: when the CNI config directory holds no network, kubenode writes
//! one for its own plugin (plus `portmap` for `hostPort`s when that plugin is installed) from the
//! node's pod CIDR, and links `kubenode-bridge` in the plugin directory to the kubenode binary.

use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use kubenode_fsutil::IoError;
use serde_json::json;

use crate::spec::{ConfigError, NetworkConfigList};

/// The file name of the written network.
pub const DEFAULT_CONFLIST_NAME: &str = "10-kubenode.conflist";

/// The network name of the written network.
pub const DEFAULT_NETWORK_NAME: &str = "kubenode";

/// Writing the default network failed.
#[derive(Debug, thiserror::Error)]
pub enum DefaultNetworkError {
    /// The existing configuration could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or link could not be written.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// What the default network looks like beyond the pod CIDR (see [`ensure_default_network_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultNetwork {
    /// The node's pod CIDR.
    pub pod_cidr: Option<Ipv4Net>,
    /// The cluster's pod CIDR (masquerade of traffic leaving it).
    pub cluster_cidr: Option<Ipv4Net>,
    /// The allocation store (`dataDir`); the plugin's default `/var/lib/cni/networks` when
    /// `None`. Give each agent its own when several share a host.
    pub data_dir: Option<PathBuf>,
    /// Bridge and veth MTU; the plugin's default (1500) when `None`.
    pub mtu: Option<u32>,
    /// Directories where `portmap` may be installed besides `bin_dir` (it is chained when found
    /// in any of them; the client must search the same directories).
    pub extra_bin_dirs: Vec<PathBuf>,
}

/// Installs `<bin_dir>/kubenode-bridge` → `self_exe` (replacing a link that points elsewhere) and,
/// if `conf_dir` has no network, writes [`DEFAULT_CONFLIST_NAME`] for kubenode-bridge with
/// `pod_cidr` and `cluster_cidr` (+ `portmap` if `<bin_dir>/portmap` exists). Returns whether the
/// conflist was written.
pub fn ensure_default_network(
    conf_dir: &Path,
    bin_dir: &Path,
    pod_cidr: Ipv4Net,
    cluster_cidr: Option<Ipv4Net>,
    self_exe: &Path,
) -> Result<bool, DefaultNetworkError> {
    let net = DefaultNetwork {
        pod_cidr: Some(pod_cidr),
        cluster_cidr,
        ..Default::default()
    };
    ensure_default_network_with(conf_dir, bin_dir, &net, self_exe)
}

/// [`ensure_default_network`] with the data directory, MTU and portmap search path spelled out.
/// Writes nothing (but still installs the link) when `net.pod_cidr` is `None`.
pub fn ensure_default_network_with(
    conf_dir: &Path,
    bin_dir: &Path,
    net: &DefaultNetwork,
    self_exe: &Path,
) -> Result<bool, DefaultNetworkError> {
    std::fs::create_dir_all(bin_dir).map_err(IoError::with("creating", bin_dir))?;
    let link = bin_dir.join("kubenode-bridge");
    if std::fs::read_link(&link).ok().as_deref() != Some(self_exe) {
        let tmp = bin_dir.join(".kubenode-bridge.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(self_exe, &tmp).map_err(IoError::with("linking", &tmp))?;
        std::fs::rename(&tmp, &link).map_err(IoError::with("installing", &link))?;
        tracing::info!(link = %link.display(), target = %self_exe.display(), "installed kubenode-bridge");
    }
    let Some(pod_cidr) = net.pod_cidr else {
        return Ok(false);
    };
    if NetworkConfigList::load_first(conf_dir)?.is_some() {
        return Ok(false);
    }
    let mut bridge = json!({
        "type": "kubenode-bridge",
        "bridge": crate::plugin::DEFAULT_BRIDGE,
        "podCIDR": pod_cidr.trunc().to_string(),
        "hairpinMode": true,
    });
    if let Some(c) = net.cluster_cidr {
        bridge["clusterCIDR"] = json!(c.trunc().to_string());
    }
    if let Some(d) = &net.data_dir {
        bridge["dataDir"] = json!(d);
    }
    if let Some(mtu) = net.mtu {
        bridge["mtu"] = json!(mtu);
    }
    let mut plugins = vec![bridge];
    if std::iter::once(bin_dir)
        .chain(net.extra_bin_dirs.iter().map(PathBuf::as_path))
        .any(|d| d.join("portmap").exists())
    {
        plugins
            .push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    let doc = json!({"cniVersion": "1.0.0", "name": DEFAULT_NETWORK_NAME, "plugins": plugins});
    std::fs::create_dir_all(conf_dir).map_err(IoError::with("creating", conf_dir))?;
    let path = conf_dir.join(DEFAULT_CONFLIST_NAME);
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    kubenode_fsutil::write_atomic(&path, text.as_bytes())
        .map_err(IoError::with("writing", &path))?;
    tracing::info!(path = %path.display(), pod_cidr = %pod_cidr, "wrote the default CNI network");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_links_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let (conf, bin) = (dir.path().join("net.d"), dir.path().join("bin"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("portmap"), "").unwrap();
        let exe = Path::new("/usr/bin/kubenode");
        let written = ensure_default_network(
            &conf,
            &bin,
            "10.244.1.0/24".parse().unwrap(),
            Some("10.244.0.0/16".parse().unwrap()),
            exe,
        )
        .unwrap();
        assert!(written);
        let text = std::fs::read_to_string(conf.join(DEFAULT_CONFLIST_NAME)).unwrap();
        crate::golden::assert_golden("default-network.conflist", &text);
        assert_eq!(
            std::fs::read_link(bin.join("kubenode-bridge")).unwrap(),
            exe
        );
        let list = NetworkConfigList::load_first(&conf).unwrap().unwrap();
        assert_eq!(list.name, DEFAULT_NETWORK_NAME);
        assert_eq!(list.plugin_type(0), "kubenode-bridge");
        assert_eq!(list.plugin_type(1), "portmap");
        assert_eq!(list.plugins[0]["podCIDR"], "10.244.1.0/24");
        assert_eq!(list.plugins[0]["clusterCIDR"], "10.244.0.0/16");
        let stdin = list.plugin_stdin(0, None, &Default::default());
        crate::plugin::BridgeConf::parse(&stdin).unwrap();
        // A second call (or any existing network) leaves the config alone but fixes the link.
        let other = Path::new("/opt/kubenode");
        assert!(
            !ensure_default_network(&conf, &bin, "10.9.0.0/24".parse().unwrap(), None, other)
                .unwrap()
        );
        assert_eq!(
            std::fs::read_link(bin.join("kubenode-bridge")).unwrap(),
            other
        );
        assert_eq!(
            NetworkConfigList::load_first(&conf)
                .unwrap()
                .unwrap()
                .plugins[0]["podCIDR"],
            "10.244.1.0/24"
        );
    }

    #[test]
    fn with_data_dir_mtu_and_portmap_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let (conf, bin, extra) = (
            dir.path().join("net.d"),
            dir.path().join("bin"),
            dir.path().join("lib-cni"),
        );
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("portmap"), "").unwrap();
        let exe = Path::new("/usr/bin/kubenode");
        let mut net = DefaultNetwork {
            data_dir: Some("/var/lib/kubenode/cni/networks".into()),
            mtu: Some(1450),
            ..Default::default()
        };
        assert!(
            !ensure_default_network_with(&conf, &bin, &net, exe).unwrap(),
            "no pod CIDR: no network"
        );
        assert!(std::fs::symlink_metadata(bin.join("kubenode-bridge")).is_ok());
        net.pod_cidr = Some("10.244.7.0/24".parse().unwrap());
        net.extra_bin_dirs = vec![extra];
        assert!(ensure_default_network_with(&conf, &bin, &net, exe).unwrap());
        let list = NetworkConfigList::load_first(&conf).unwrap().unwrap();
        assert_eq!(list.plugins[0]["dataDir"], "/var/lib/kubenode/cni/networks");
        assert_eq!(list.plugins[0]["mtu"], 1450);
        assert_eq!(list.plugin_type(1), "portmap");
    }
}
