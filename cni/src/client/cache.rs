//! The on-disk result cache, in libcni's layout and JSON shape:
//! `<cache-dir>/results/<network>-<containerid>-<ifname>`, mode 0600 in a 0700 directory, holding
//! `{"kind":"cniCacheV1","containerId","config","ifName","networkName","netns","cniArgs","capabilityArgs","result"}`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Always `cniCacheV1`.
    pub kind: String,
    /// The container id.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The network config list as loaded, base64 (Go's `[]byte` encoding).
    #[serde(default)]
    pub config: String,
    /// Interface name in the container.
    #[serde(rename = "ifName")]
    pub if_name: String,
    /// The network's name.
    #[serde(rename = "networkName")]
    pub network_name: String,
    /// The netns path given at ADD.
    #[serde(default)]
    pub netns: String,
    /// `CNI_ARGS` as key/value pairs.
    #[serde(rename = "cniArgs", default)]
    pub cni_args: Vec<[String; 2]>,
    /// The capability arguments given at ADD.
    #[serde(rename = "capabilityArgs", default)]
    pub capability_args: Map<String, Value>,
    /// The final ADD result.
    pub result: Value,
}

/// The result cache directory.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    /// The cache under `cache_dir` (`/var/lib/cni` by default: entries go in `results/`).
    pub fn new(cache_dir: &Path) -> Self {
        ResultCache {
            dir: cache_dir.join("results"),
        }
    }

    fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{network}-{container_id}-{ifname}"))
    }

    /// Writes an entry atomically and durably (temp file, fsync, rename, fsync of the directory).
    pub fn put(&self, entry: &CacheEntry) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let data = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        kubenode_fsutil::write_atomic_mode(&path, &data, 0o600)
    }

    /// Reads an entry; `Ok(None)` when there is none.
    pub fn get(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> std::io::Result<Option<CacheEntry>> {
        match std::fs::read(self.path(network, container_id, ifname)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes an entry (absent is fine).
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(network, container_id, ifname)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable entry of `network` (for GC).
    pub fn list(&self, network: &str) -> Vec<CacheEntry> {
        let prefix = format!("{network}-");
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
            .filter(|e| e.network_name == network)
            .collect()
    }
}

/// Standard base64 with padding (how Go's encoding/json writes `[]byte`).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn put_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        let entry = CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: "c1".into(),
            config: base64(b"{}"),
            if_name: "eth0".into(),
            network_name: "kn".into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![["K8S_POD_NAME".into(), "p".into()]],
            capability_args: Map::new(),
            result: serde_json::json!({"cniVersion":"1.0.0"}),
        };
        assert!(cache.get("kn", "c1", "eth0").unwrap().is_none());
        cache.put(&entry).unwrap();
        let path = dir.path().join("results/kn-c1-eth0");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["kind"], "cniCacheV1");
        assert_eq!(raw["containerId"], "c1");
        assert_eq!(cache.get("kn", "c1", "eth0").unwrap().unwrap(), entry);
        assert_eq!(cache.list("kn").len(), 1);
        assert!(cache.list("other").is_empty());
        cache.remove("kn", "c1", "eth0").unwrap();
        cache.remove("kn", "c1", "eth0").unwrap();
        assert!(cache.get("kn", "c1", "eth0").unwrap().is_none());
    }
}
