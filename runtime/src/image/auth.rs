//! Registry credentials from a docker-style `config.json`
//! (`{"auths": {"host:port": {"auth": base64("user:pass")}}}`), the format
//! the kubelet, docker and podman read.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::error::{ImageError, Result};

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Credentials per registry host.
#[derive(Default)]
pub(crate) struct Credentials {
    by_host: HashMap<String, RegistryAuth>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_host.keys()).finish()
    }
}

impl Credentials {
    /// Reads `path`; a missing or malformed file is an error.
    pub(crate) fn load(path: &Path) -> Result<Credentials> {
        let bad = |reason: String| ImageError::AuthConfig {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let file: ConfigFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let mut by_host = HashMap::new();
        for (key, entry) in file.auths {
            let auth = if let Some(token) = entry.registrytoken.filter(|t| !t.is_empty()) {
                RegistryAuth::Bearer(token)
            } else if let Some(encoded) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| bad(format!("`auth` of {key} is not base64: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| bad(format!("`auth` of {key} is not UTF-8")))?;
                let (user, pass) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad(format!("`auth` of {key} is not `user:password`")))?;
                RegistryAuth::Basic(user.to_string(), pass.to_string())
            } else if let (Some(user), Some(pass)) = (entry.username, entry.password) {
                RegistryAuth::Basic(user, pass)
            } else {
                continue;
            };
            by_host.insert(normalize_host(&key), auth);
        }
        Ok(Credentials { by_host })
    }

    /// The credentials for `registry` (as in a reference), or anonymous.
    pub(crate) fn for_registry(&self, registry: &str) -> RegistryAuth {
        self.by_host
            .get(&normalize_host(registry))
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

/// `https://index.docker.io/v1/` → `docker.io`, `http://h:5000/x` → `h:5000`.
fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_username_password_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{basic}"}},
                "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                "http://tok.example:443/v2/": {{"registrytoken": "T"}},
                "empty.example": {{}}
            }}}}"#
            ),
        )
        .unwrap();
        let creds = Credentials::load(&path).unwrap();
        assert_eq!(
            creds.for_registry("docker.io"),
            RegistryAuth::Basic("alice".into(), "s3:cret".into())
        );
        assert_eq!(
            creds.for_registry("127.0.0.1:5000"),
            RegistryAuth::Basic("bob".into(), "pw".into())
        );
        assert_eq!(
            creds.for_registry("tok.example:443"),
            RegistryAuth::Bearer("T".into())
        );
        assert_eq!(creds.for_registry("empty.example"), RegistryAuth::Anonymous);
        assert_eq!(creds.for_registry("other:1"), RegistryAuth::Anonymous);
    }

    #[test]
    fn malformed_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths": {"h": {"auth": "!!!"}}}"#).unwrap();
        assert!(matches!(
            Credentials::load(&path),
            Err(ImageError::AuthConfig { .. })
        ));
        assert!(matches!(
            Credentials::load(&dir.path().join("missing")),
            Err(ImageError::AuthConfig { .. })
        ));
    }
}
