//! Registry credentials: docker-style configurations
//! (`config.json`'s `{"auths": {"host:port": {"auth": base64("user:pass")}}}`, the legacy
//! `.dockercfg`'s `{"host": {...}}`), kept in a [`Keyring`] that matches them against images as
//! upstream's kubelet credential keyring (`pkg/credentialprovider/keyring.go`) does.
//!
//! Matching, as upstream: a credential's key is its URL without scheme, with `/v1/` or `/v2/`
//! dropped from its path (`https://index.docker.io/v1/` → `index.docker.io`); it matches an
//! image (`registry/repository`) when the ports are equal, the host has as many dot-separated
//! labels, each label matches as a glob (`*.example.com`, `?`, `[...]`), and the key's path is a
//! string prefix of the image's. Keys are tried in reverse lexical order (so
//! `quay.io/coreos` before `quay.io`), every credential of every matching key in turn; Docker
//! Hub images (`busybox`, `docker.io/...`, a first part without `.` or `:`) fall back to the
//! `index.docker.io` credentials. Credentials never appear in `Debug` output or errors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

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

/// Upstream's `defaultRegistryHost`: where Docker Hub's credentials are keyed.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// Credentials matched against images as upstream's `BasicDockerKeyring`.
#[derive(Default, Clone)]
pub struct Keyring {
    /// Keys, reverse-sorted (more specific paths first).
    index: Vec<String>,
    creds: BTreeMap<String, Vec<RegistryAuth>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.index.iter()).finish()
    }
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Adds the entries of a `config.json` document (`{"auths": {...}}`: a
    /// `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`); a malformed document is
    /// an error naming what is wrong (never a credential).
    pub fn add_config_json(&mut self, json: &[u8]) -> std::result::Result<(), String> {
        let file: ConfigFile = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        self.add(file.auths)
    }

    /// Adds the entries of a legacy `.dockercfg` document (`{"host": {...}}`: a
    /// `kubernetes.io/dockercfg` Secret's `.dockercfg`).
    pub fn add_dockercfg(&mut self, json: &[u8]) -> std::result::Result<(), String> {
        let entries: HashMap<String, AuthEntry> =
            serde_json::from_slice(json).map_err(|e| e.to_string())?;
        self.add(entries)
    }

    fn add(&mut self, entries: HashMap<String, AuthEntry>) -> std::result::Result<(), String> {
        for (location, entry) in entries {
            let auth = if let Some(token) = entry.registrytoken.filter(|t| !t.is_empty()) {
                RegistryAuth::Bearer(token)
            } else if let Some(encoded) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| format!("`auth` of {location} is not base64: {e}"))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| format!("`auth` of {location} is not UTF-8"))?;
                let (user, pass) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("`auth` of {location} is not `user:password`"))?;
                RegistryAuth::Basic(user.to_string(), pass.to_string())
            } else if let (Some(user), Some(pass)) = (entry.username, entry.password) {
                RegistryAuth::Basic(user, pass)
            } else {
                continue;
            };
            let key = credential_key(&location);
            self.creds.entry(key.clone()).or_default().push(auth);
            if !self.index.contains(&key) {
                self.index.push(key);
            }
        }
        self.index.sort_by(|a, b| b.cmp(a));
        Ok(())
    }

    /// Whether it holds no credential.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The credentials for `image` (`registry/repository`, as [`ImageReference`] normalizes
    /// it), in the order to try them; empty: pull anonymously.
    ///
    /// [`ImageReference`]: super::ImageReference
    pub fn lookup(&self, image: &str) -> Vec<RegistryAuth> {
        let mut out = Vec::new();
        for key in &self.index {
            if urls_match(key, image) {
                out.extend(self.creds[key].iter().cloned());
            }
        }
        if out.is_empty() && is_default_registry_match(image) {
            if let Some(hub) = self.creds.get(DEFAULT_REGISTRY_HOST) {
                out.extend(hub.iter().cloned());
            }
        }
        out
    }

    /// Reads the node's own credentials as upstream's kubelet does: the first valid
    /// `config.json` of `dirs.config_json`, else the first valid `.dockercfg` of
    /// `dirs.dockercfg` ([`NodeCredentialDirs::search`]). None found: an empty keyring.
    pub fn read_node(dirs: &NodeCredentialDirs) -> Keyring {
        for dir in &dirs.config_json {
            let path = dir.join("config.json");
            if let Ok(bytes) = std::fs::read(&path) {
                let mut k = Keyring::new();
                match k.add_config_json(&bytes) {
                    Ok(()) => return k,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring an invalid registry credentials file")
                    }
                }
            }
        }
        for dir in &dirs.dockercfg {
            let path = dir.join(".dockercfg");
            if let Ok(bytes) = std::fs::read(&path) {
                let mut k = Keyring::new();
                match k.add_dockercfg(&bytes) {
                    Ok(()) => return k,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring an invalid registry credentials file")
                    }
                }
            }
        }
        Keyring::new()
    }
}

/// Where the node's own registry credentials are searched, in order.
#[derive(Debug, Clone, Default)]
pub struct NodeCredentialDirs {
    /// Directories holding a `config.json`.
    pub config_json: Vec<PathBuf>,
    /// Directories holding a legacy `.dockercfg`.
    pub dockercfg: Vec<PathBuf>,
}

impl NodeCredentialDirs {
    /// The directories upstream's kubelet searches (`DefaultDockerConfigJSONPaths`,
    /// `DefaultDockercfgPaths`): the kubelet's root directory first (kubenode's `root_dir`,
    /// then `/var/lib/kubelet` where that differs, so a node set up for upstream's kubelet
    /// works), then the working directory, `$HOME/.docker` (`$HOME` for `.dockercfg`) and
    /// `/.docker` (`/`).
    pub fn search(root_dir: &Path) -> NodeCredentialDirs {
        let mut preferred = vec![root_dir.to_path_buf()];
        let kubelet = PathBuf::from("/var/lib/kubelet");
        if root_dir != kubelet {
            preferred.push(kubelet);
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
        let mut json = preferred.clone();
        json.extend([cwd.clone(), home.join(".docker"), PathBuf::from("/.docker")]);
        let mut cfg = preferred;
        cfg.extend([cwd, home, PathBuf::from("/")]);
        NodeCredentialDirs {
            config_json: json,
            dockercfg: cfg,
        }
    }
}

/// A credential location as a keyring key: no scheme, `/v1/` or `/v2/` dropped, no trailing
/// `/` (upstream's `BasicDockerKeyring.Add`).
fn credential_key(location: &str) -> String {
    let l = location.trim();
    let l = l
        .strip_prefix("https://")
        .or_else(|| l.strip_prefix("http://"))
        .unwrap_or(l);
    let (host, path) = match l.find('/') {
        Some(i) => (&l[..i], &l[i..]),
        None => (l, ""),
    };
    let path = if path.starts_with("/v2/") || path.starts_with("/v1/") {
        &path[3..]
    } else {
        path
    };
    if path.is_empty() || path == "/" {
        host.to_string()
    } else {
        format!("{host}{path}")
    }
}

/// `(host labels, port, path)` of a schemeless URL.
fn split_url(u: &str) -> (Vec<&str>, &str, &str) {
    let (host, path) = match u.find('/') {
        Some(i) => (&u[..i], &u[i..]),
        None => (u, ""),
    };
    let (host, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p),
        _ => (host, ""),
    };
    (host.split('.').collect(), port, path)
}

/// Upstream's `URLsMatchStr(glob, target)`.
fn urls_match(glob: &str, target: &str) -> bool {
    let (glob_parts, glob_port, glob_path) = split_url(glob);
    let (target_parts, target_port, target_path) = split_url(target);
    glob_port == target_port
        && glob_parts.len() == target_parts.len()
        && target_path.starts_with(glob_path)
        && glob_parts
            .iter()
            .zip(&target_parts)
            .all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()))
}

/// `filepath.Match` on one host label: `*` (any run), `?` (any one byte), `[...]` classes
/// (`^`/`!` negation, ranges), `\` escapes. A malformed pattern matches nothing, as upstream
/// (which treats the error as no match).
fn glob_match(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|i| glob_match(rest, &t[i..])),
        Some((b'?', rest)) => !t.is_empty() && glob_match(rest, &t[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return false;
            };
            let (class, after) = (&rest[..end], &rest[end + 1..]);
            let Some((&c, t_rest)) = t.split_first() else {
                return false;
            };
            let (negate, class) = match class.split_first() {
                Some((b'^' | b'!', r)) => (true, r),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_match(after, t_rest)
        }
        Some((b'\\', rest)) => match (rest.split_first(), t.split_first()) {
            (Some((pc, pr)), Some((tc, tr))) => pc == tc && glob_match(pr, tr),
            _ => false,
        },
        Some((pc, rest)) => t.first() == Some(pc) && glob_match(rest, &t[1..]),
    }
}

/// Upstream's `isDefaultRegistryMatch`: the image is on Docker Hub.
fn is_default_registry_match(image: &str) -> bool {
    let (first, rest) = match image.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (image, None),
    };
    if first.is_empty() {
        return false;
    }
    rest.is_none() || first == "docker.io" || !first.contains(['.', ':'])
}

/// Credentials of a pull: the keyrings in order (the pod's pull secrets, then the node's),
/// plus an explicit auth file.
#[derive(Default)]
pub(crate) struct Credentials {
    keyrings: Vec<Keyring>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keyrings.iter()).finish()
    }
}

impl Credentials {
    /// Reads the `config.json`-style file at `path`; a missing or malformed file is an error.
    pub(crate) fn load(path: &Path) -> Result<Credentials> {
        let bad = |reason: String| ImageError::AuthConfig {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut k = Keyring::new();
        k.add_config_json(&text).map_err(bad)?;
        Ok(Credentials { keyrings: vec![k] })
    }

    /// `keyrings` in order.
    pub(crate) fn from_keyrings(keyrings: Vec<Keyring>) -> Credentials {
        Credentials { keyrings }
    }

    /// Appends the credentials of `other`.
    pub(crate) fn extend(&mut self, other: Credentials) {
        self.keyrings.extend(other.keyrings);
    }

    /// Every credential for `image` (`registry/repository`) in the order to try them (upstream's
    /// `UnionDockerKeyring`); empty: anonymous.
    pub(crate) fn lookup(&self, image: &str) -> Vec<RegistryAuth> {
        self.keyrings.iter().flat_map(|k| k.lookup(image)).collect()
    }

    /// The first credential for `registry` (a host, as in a reference), or anonymous.
    #[cfg(test)]
    pub(crate) fn for_registry(&self, registry: &str) -> RegistryAuth {
        self.lookup(&format!("{registry}/x"))
            .into_iter()
            .next()
            .unwrap_or(RegistryAuth::Anonymous)
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

    fn basic(u: &str) -> RegistryAuth {
        RegistryAuth::Basic(u.into(), "pw".into())
    }

    fn keyring(entries: &[(&str, &str)]) -> Keyring {
        let auths: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(k, u)| {
                (
                    k.to_string(),
                    serde_json::json!({"username": u, "password": "pw"}),
                )
            })
            .collect();
        let mut k = Keyring::new();
        k.add_config_json(serde_json::json!({ "auths": auths }).to_string().as_bytes())
            .unwrap();
        k
    }

    #[test]
    fn keyring_matches_as_upstreams() {
        // upstream keyring_test.go's cases
        let k = keyring(&[
            ("quay.io", "broad"),
            ("quay.io/coreos", "narrow"),
            ("*.gcr.io", "glob"),
            ("https://registry.example:5000/v2/", "ported"),
            ("https://index.docker.io/v1/", "hub"),
        ]);
        // the more specific path first, then the host
        assert_eq!(
            k.lookup("quay.io/coreos/etcd"),
            [basic("narrow"), basic("broad")]
        );
        // the path is a string prefix, as upstream's strings.HasPrefix
        assert_eq!(
            k.lookup("quay.io/coreosx/etcd"),
            [basic("narrow"), basic("broad")]
        );
        assert_eq!(k.lookup("quay.io/other/x"), [basic("broad")]);
        assert_eq!(k.lookup("eu.gcr.io/p/app"), [basic("glob")]);
        // a glob label matches one label only
        assert!(k.lookup("gcr.io/p/app").is_empty());
        assert!(k.lookup("a.b.gcr.io/p/app").is_empty());
        // the port must be equal
        assert_eq!(k.lookup("registry.example:5000/app"), [basic("ported")]);
        assert!(k.lookup("registry.example/app").is_empty());
        assert!(k.lookup("registry.example:5001/app").is_empty());
        // Docker Hub images fall back to index.docker.io's credentials
        assert_eq!(k.lookup("docker.io/library/busybox"), [basic("hub")]);
        assert_eq!(k.lookup("busybox"), [basic("hub")]);
        assert_eq!(k.lookup("user/app"), [basic("hub")]);
        assert!(k.lookup("localhost:5000/app").is_empty());
        assert!(k.lookup("example.com/app").is_empty());
    }

    #[test]
    fn glob_labels_as_filepath_match() {
        assert!(glob_match(b"*", b"abc"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[^a-c]x", b"bx"));
        assert!(glob_match(b"[!a-c]x", b"dx"));
        assert!(!glob_match(b"[ab", b"a"));
        assert!(!glob_match(b"a*c", b"abd"));
    }

    #[test]
    fn keys_lose_scheme_and_version_path() {
        assert_eq!(
            credential_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(credential_key("http://h:5000/v2/"), "h:5000");
        assert_eq!(credential_key("h:5000/ns/"), "h:5000/ns/");
        assert_eq!(credential_key("quay.io/"), "quay.io");
    }

    #[test]
    fn dockercfg_and_node_files_in_upstreams_order() {
        let mut k = Keyring::new();
        let basic64 = base64::engine::general_purpose::STANDARD.encode("old:pw");
        k.add_dockercfg(
            format!(r#"{{"127.0.0.1:5000": {{"auth": "{basic64}", "email": "e"}}}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(k.lookup("127.0.0.1:5000/app"), [basic("old")]);
        // A malformed secret is an error that carries no credential.
        let err = Keyring::new()
            .add_config_json(br#"{"auths": {"h": {"auth": "c2VjcmV0"}}}"#)
            .unwrap_err();
        assert!(
            !err.contains("secret") && !err.contains("c2VjcmV0"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join("config.json"),
            r#"{"auths": {"reg:1": {"username": "json", "password": "pw"}}}"#,
        )
        .unwrap();
        std::fs::write(
            a.join(".dockercfg"),
            r#"{"reg:1": {"username": "cfg", "password": "pw"}}"#,
        )
        .unwrap();
        let dirs = NodeCredentialDirs {
            config_json: vec![a.clone(), b.clone()],
            dockercfg: vec![a.clone()],
        };
        // any config.json before any .dockercfg
        assert_eq!(Keyring::read_node(&dirs).lookup("reg:1/x"), [basic("json")]);
        std::fs::write(b.join("config.json"), "{not json").unwrap();
        assert_eq!(Keyring::read_node(&dirs).lookup("reg:1/x"), [basic("cfg")]);
        let none = NodeCredentialDirs::default();
        assert!(Keyring::read_node(&none).is_empty());
        let search = NodeCredentialDirs::search(Path::new("/var/lib/kubenode"));
        assert_eq!(search.config_json[0], Path::new("/var/lib/kubenode"));
        assert_eq!(search.config_json[1], Path::new("/var/lib/kubelet"));
        assert_eq!(search.config_json.last().unwrap(), Path::new("/.docker"));
        assert_eq!(search.dockercfg.last().unwrap(), Path::new("/"));
    }
}
