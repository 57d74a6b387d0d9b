//! Network configuration lists (`.conflist`) and single-plugin configs (`.conf`, `.json`), and the
//! per-plugin stdin the runtime builds from them.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{version_at_least, SUPPORTED_VERSIONS};

/// Why a network configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config directory could not be read.
    #[error("reading CNI config directory {dir}: {source}")]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A config file could not be read.
    #[error("reading CNI config {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid.
    #[error("invalid CNI config {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A network configuration list: the network's name and version and its plugin chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network's name (`name`).
    pub name: String,
    /// The spec version the runtime uses with this network (the highest of `cniVersions` this
    /// crate supports, else `cniVersion`).
    pub cni_version: String,
    /// `disableCheck`: CHECK is a no-op.
    pub disable_check: bool,
    /// `disableGC`: GC is a no-op.
    pub disable_gc: bool,
    /// The plugin configurations, in chain order, as written.
    pub plugins: Vec<Map<String, Value>>,
    /// The file the list came from.
    pub source: PathBuf,
}

impl NetworkConfigList {
    /// Parses a `.conflist` document.
    pub fn from_conflist(bytes: &[u8], source: &Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: source.to_path_buf(),
            reason,
        };
        let doc: Map<String, Value> = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not a JSON object: {e}")))?;
        let name = str_field(&doc, "name").ok_or_else(|| invalid("missing \"name\"".into()))?;
        let plugins = match doc.get("plugins") {
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .map(|p| match p {
                    Value::Object(m) if str_field(m, "type").is_some() => Ok(m.clone()),
                    _ => Err(invalid("every plugin needs a string \"type\"".into())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(invalid("\"plugins\" must be a non-empty list".into())),
        };
        let cni_version =
            pick_version(&doc).ok_or_else(|| invalid("missing \"cniVersion\"".into()))?;
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check: doc
                .get("disableCheck")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            disable_gc: doc
                .get("disableGC")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            plugins,
            source: source.to_path_buf(),
        })
    }

    /// Parses a single-plugin `.conf` document, wrapped as a one-plugin list (as libcni's
    /// `ConfListFromConf` does). A `.conf` that has `plugins` is read as a list.
    pub fn from_conf(bytes: &[u8], source: &Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: source.to_path_buf(),
            reason,
        };
        let doc: Map<String, Value> = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not a JSON object: {e}")))?;
        if doc.contains_key("plugins") {
            return Self::from_conflist(bytes, source);
        }
        let name = str_field(&doc, "name").ok_or_else(|| invalid("missing \"name\"".into()))?;
        if str_field(&doc, "type").is_none() {
            return Err(invalid("missing \"type\"".into()));
        }
        let cni_version =
            pick_version(&doc).ok_or_else(|| invalid("missing \"cniVersion\"".into()))?;
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check: false,
            disable_gc: false,
            plugins: vec![doc],
            source: source.to_path_buf(),
        })
    }

    /// Loads the first network of `dir` by file name among `*.conflist`, `*.conf` and `*.json`
    /// (libcni's `ConfFiles` order). Files that do not parse are skipped with a warning, as CRI-O
    /// does; `Ok(None)` when the directory has no valid network (or does not exist).
    pub fn load_first(dir: &Path) -> Result<Option<Self>, ConfigError> {
        for path in config_files(dir)? {
            let bytes = std::fs::read(&path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let parsed = if path.extension().is_some_and(|e| e == "conflist") {
                Self::from_conflist(&bytes, &path)
            } else {
                Self::from_conf(&bytes, &path)
            };
            match parsed {
                Ok(list) => return Ok(Some(list)),
                Err(e) => tracing::warn!(error = %e, "skipping invalid CNI config"),
            }
        }
        Ok(None)
    }

    /// The `type` of plugin `index` (its executable's name).
    pub fn plugin_type(&self, index: usize) -> &str {
        self.plugins[index]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Whether a plugin of the chain declares capability `cap` (`"capabilities": {cap: true}`),
    /// and so gets the runtime's `runtimeConfig` for it.
    pub fn has_capability(&self, cap: &str) -> bool {
        self.plugins.iter().any(|p| {
            p.get("capabilities")
                .and_then(|c| c.get(cap))
                .and_then(Value::as_bool)
                == Some(true)
        })
    }

    /// The stdin for plugin `index`: its config with `name` and `cniVersion` of the list, the
    /// `prevResult` (if any) and `runtimeConfig` = the capabilities it declares that the runtime
    /// provides in `runtime_config`.
    pub fn plugin_stdin(
        &self,
        index: usize,
        prev_result: Option<&Value>,
        runtime_config: &Map<String, Value>,
    ) -> Vec<u8> {
        let mut conf = self.plugins[index].clone();
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        let caps = conf.remove("capabilities");
        let mut rc = Map::new();
        if let Some(Value::Object(caps)) = &caps {
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = runtime_config.get(cap) {
                        rc.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        if let Some(caps) = caps {
            conf.insert("capabilities".into(), caps);
        }
        serde_json::to_vec(&conf).unwrap_or_default()
    }
}

fn str_field(doc: &Map<String, Value>, key: &str) -> Option<String> {
    doc.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `cniVersions` (1.1.0): the highest version we support; else `cniVersion`.
fn pick_version(doc: &Map<String, Value>) -> Option<String> {
    let listed = doc
        .get("cniVersions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let best = listed
        .filter_map(Value::as_str)
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .max_by(
            |a, b| match (version_at_least(a, b), version_at_least(b, a)) {
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Equal,
            },
        );
    best.map(str::to_string)
        .or_else(|| str_field(doc, "cniVersion"))
}

fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries =
        kubenode_fsutil::read_dir_if_present(dir).map_err(|source| ConfigError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loads_first_valid_file_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-broken.conflist"), b"{").unwrap();
        std::fs::write(
            dir.path().join("10-b.conf"),
            br#"{"cniVersion":"0.4.0","name":"single","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("05-a.conflist"),
            br#"{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0","9.9.9"],"name":"kn","disableCheck":true,
                 "plugins":[{"type":"kubenode-bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("01-ignored.txt"), b"x").unwrap();
        let list = NetworkConfigList::load_first(dir.path()).unwrap().unwrap();
        assert_eq!(list.name, "kn");
        assert_eq!(list.cni_version, "1.1.0");
        assert!(list.disable_check);
        assert_eq!(list.plugin_type(1), "portmap");
    }

    #[test]
    fn wraps_single_conf_and_handles_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(NetworkConfigList::load_first(dir.path()).unwrap().is_none());
        assert!(NetworkConfigList::load_first(&dir.path().join("missing"))
            .unwrap()
            .is_none());
        std::fs::write(
            dir.path().join("10-b.conf"),
            br#"{"cniVersion":"0.4.0","name":"single","type":"bridge"}"#,
        )
        .unwrap();
        let list = NetworkConfigList::load_first(dir.path()).unwrap().unwrap();
        assert_eq!(
            (
                list.name.as_str(),
                list.cni_version.as_str(),
                list.plugins.len()
            ),
            ("single", "0.4.0", 1)
        );
    }

    #[test]
    fn rejects_lists_without_plugins_or_types() {
        let p = Path::new("x.conflist");
        let e = NetworkConfigList::from_conflist(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
            p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("non-empty"), "{e}");
        let e = NetworkConfigList::from_conflist(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
            p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("type"), "{e}");
    }

    #[test]
    fn plugin_stdin_injects_name_version_prev_result_and_runtime_config() {
        let list = NetworkConfigList::from_conflist(
            br#"{"cniVersion":"1.0.0","name":"kn","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true,"bandwidth":true}}]}"#,
            Path::new("x"),
        )
        .unwrap();
        let mut rc = Map::new();
        rc.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        rc.insert("mac".into(), json!("aa:bb:cc:dd:ee:ff"));
        let prev = json!({"cniVersion":"1.0.0","ips":[]});
        let stdin: Value = serde_json::from_slice(&list.plugin_stdin(1, Some(&prev), &rc)).unwrap();
        assert_eq!(stdin["name"], "kn");
        assert_eq!(stdin["cniVersion"], "1.0.0");
        assert_eq!(stdin["prevResult"], prev);
        assert_eq!(
            stdin["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
        let first: Value = serde_json::from_slice(&list.plugin_stdin(0, None, &rc)).unwrap();
        assert!(first.get("runtimeConfig").is_none() && first.get("prevResult").is_none());
        assert!(list.has_capability("portMappings") && list.has_capability("bandwidth"));
        assert!(!list.has_capability("mac"));
    }
}
