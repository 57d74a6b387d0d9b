//! The objects pods reference beyond themselves (issue 17): ConfigMaps, Secrets and
//! service-account tokens, for the `configMap`, `secret` and `projected` volumes, the
//! `configMapKeyRef`/`secretKeyRef`/`envFrom` environment and `imagePullSecrets`.
//!
//! A pod's objects come from its own source, as upstream's kubelet reads them through the API
//! server only for the pods bound to it: a static pod (`kubernetes.io/config.source: file`)
//! reads the `ConfigMap` and `Secret` documents of the manifest directory ([`FileObjects`], in
//! both modes); an API pod reads the API server's objects through the [`Backend`] that cluster
//! mode installs with [`Objects::set_api`]. Without one (standalone mode) an API pod cannot
//! exist.
//!
//! Consumers register the pods that run ([`Objects::register_pod`]) so that a backend keeps
//! exactly the referenced objects current (upstream's watch-based manager), read them with
//! [`Objects::config_map`] and [`Objects::secret`], and follow [`Objects::changes`] to refresh
//! what they derived (volume contents). Service-account tokens come from the
//! [`TokenSource`] of cluster mode ([`Objects::set_tokens`]).
//!
//! Secret bytes never leave this module's values: errors name the object, never its content.

pub mod api;
pub mod tokens;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use tokio::sync::watch;

/// What reading a referenced object can fail with. The messages are upstream's (the kubelet's
/// managers build `NotFound` errors on the `configmap` and `secret` resources), as they appear
/// in `FailedMount` events and `CreateContainerConfigError` messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The object does not exist (in the pod's namespace).
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// The object's name.
        name: String,
    },
    /// The object could not be read now (no API server, cache not synced, request failed);
    /// the caller retries at its next pass.
    #[error("{0}")]
    Unavailable(String),
}

impl ObjectError {
    /// A missing ConfigMap.
    pub fn config_map_not_found(name: &str) -> Self {
        ObjectError::NotFound {
            kind: "configmap",
            name: name.to_string(),
        }
    }

    /// A missing Secret.
    pub fn secret_not_found(name: &str) -> Self {
        ObjectError::NotFound {
            kind: "secret",
            name: name.to_string(),
        }
    }

    /// Whether the object is known not to exist (an `optional` reference is then skipped).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ObjectError::NotFound { .. })
    }
}

/// A source of ConfigMaps and Secrets for the pods of one kind of source.
pub trait Backend: Send + Sync + fmt::Debug {
    /// `pod` runs (or its spec changed): keep the objects it references current.
    fn register_pod(&self, pod: &Pod);
    /// `pod` is gone: stop keeping what only it referenced.
    fn unregister_pod(&self, pod: &Pod);
    /// The ConfigMap `name` of `namespace`.
    fn config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<ConfigMap>, ObjectError>>;
    /// The Secret `name` of `namespace`.
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Secret>, ObjectError>>;
    /// The objects it keeps now (the CLI lists them); none by default.
    fn list(&self) -> (Vec<Arc<ConfigMap>>, Vec<Arc<Secret>>) {
        (Vec::new(), Vec::new())
    }
}

/// A service-account token as TokenRequest returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expiration: k8s_openapi::jiff::Timestamp,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Service-account tokens bound to a pod (cluster mode's TokenRequest).
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A token for `pod`'s service account, bound to the pod (name and UID), for `audience`
    /// (`None`: the API server's) valid `expiration_seconds`; cached and refreshed by the
    /// source as upstream's token manager (80 % of the TTL or 24 h).
    fn token<'a>(
        &'a self,
        pod: &'a Pod,
        audience: Option<&'a str>,
        expiration_seconds: i64,
    ) -> BoxFuture<'a, Result<Token, ObjectError>>;
    /// `pod` is gone: forget its tokens.
    fn forget_pod(&self, uid: &str);
}

/// The ConfigMap and Secret documents of the manifest directory, by namespace and name.
#[derive(Default)]
pub struct FileObjects {
    config_maps: HashMap<(String, String), Arc<ConfigMap>>,
    secrets: HashMap<(String, String), Arc<Secret>>,
}

impl fmt::Debug for FileObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: values may be Secret bytes.
        let mut cms: Vec<&(String, String)> = self.config_maps.keys().collect();
        let mut secrets: Vec<&(String, String)> = self.secrets.keys().collect();
        cms.sort();
        secrets.sort();
        f.debug_struct("FileObjects")
            .field("config_maps", &cms)
            .field("secrets", &secrets)
            .finish()
    }
}

fn key(namespace: Option<&str>, name: Option<&str>) -> (String, String) {
    (
        namespace.unwrap_or("default").to_string(),
        name.unwrap_or_default().to_string(),
    )
}

/// The manifest directory's ConfigMaps and Secrets as a snapshot carries them.
type FileLists = (Arc<Vec<ConfigMap>>, Arc<Vec<Secret>>);

/// Every pod's ConfigMaps, Secrets and tokens, from the pod's own source.
pub struct Objects {
    files: Mutex<Arc<FileObjects>>,
    /// The file source's lists `files` was made from (the same allocations while the
    /// documents are unchanged).
    files_from: Mutex<FileLists>,
    api: OnceLock<Arc<dyn Backend>>,
    tokens: OnceLock<Arc<dyn TokenSource>>,
    changes: Notifier,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects")
            .field("api", &self.api.get().is_some())
            .field("tokens", &self.tokens.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Objects {
    fn default() -> Self {
        Objects::new()
    }
}

impl Objects {
    /// Objects of the manifest directory only (none until [`Objects::set_files`]).
    pub fn new() -> Self {
        Objects {
            files: Mutex::new(Arc::new(FileObjects::default())),
            files_from: Mutex::default(),
            api: OnceLock::new(),
            tokens: OnceLock::new(),
            changes: Notifier(watch::channel(0).0),
        }
    }

    /// Cluster mode: the API pods' objects come from `backend` (set once).
    pub fn set_api(&self, backend: Arc<dyn Backend>) {
        if self.api.set(backend).is_err() {
            tracing::warn!("objects: API backend set twice; keeping the first");
        }
    }

    /// Cluster mode: service-account tokens come from `tokens` (set once).
    pub fn set_tokens(&self, tokens: Arc<dyn TokenSource>) {
        if self.tokens.set(tokens).is_err() {
            tracing::warn!("objects: token source set twice; keeping the first");
        }
    }

    /// The manifest directory's ConfigMaps and Secrets now (a full read replaces the last);
    /// [`Objects::changes`] fires when any differs. The lists the last call gave (the same
    /// allocations: the file source keeps them while its documents are unchanged) cost
    /// nothing; equal ones a comparison; only changed ones are copied.
    pub fn set_files(
        &self,
        config_maps: impl Into<Arc<Vec<ConfigMap>>>,
        secrets: impl Into<Arc<Vec<Secret>>>,
    ) {
        let (config_maps, secrets) = (config_maps.into(), secrets.into());
        let mut from = crate::node::lock(&self.files_from, "objects");
        if Arc::ptr_eq(&from.0, &config_maps) && Arc::ptr_eq(&from.1, &secrets) {
            return;
        }
        if *from.0 == *config_maps && *from.1 == *secrets {
            *from = (config_maps, secrets);
            return;
        }
        let mut next = FileObjects::default();
        for cm in config_maps.iter() {
            let k = key(
                cm.metadata.namespace.as_deref(),
                cm.metadata.name.as_deref(),
            );
            next.config_maps.insert(k, Arc::new(cm.clone()));
        }
        for s in secrets.iter() {
            let k = key(s.metadata.namespace.as_deref(), s.metadata.name.as_deref());
            next.secrets.insert(k, Arc::new(s.clone()));
        }
        *from = (config_maps, secrets);
        let mut files = crate::node::lock(&self.files, "objects");
        let same = files.config_maps.len() == next.config_maps.len()
            && files.secrets.len() == next.secrets.len()
            && next
                .config_maps
                .iter()
                .all(|(k, v)| files.config_maps.get(k).is_some_and(|o| **o == **v))
            && next
                .secrets
                .iter()
                .all(|(k, v)| files.secrets.get(k).is_some_and(|o| **o == **v));
        if !same {
            *files = Arc::new(next);
            drop(files);
            self.changes.notify();
        }
    }

    /// A handle that backends call when an object they keep changed.
    pub fn notifier(&self) -> Notifier {
        self.changes.clone()
    }

    /// Fires (the value changes) whenever any object of any source changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.0.subscribe()
    }

    /// `pod` runs: its backend keeps what it references current.
    pub fn register_pod(&self, pod: &Pod) {
        if let Some(api) = self.backend_of(pod) {
            api.register_pod(pod);
        }
    }

    /// `pod` is gone.
    pub fn unregister_pod(&self, pod: &Pod) {
        if let Some(api) = self.backend_of(pod) {
            api.unregister_pod(pod);
        }
        if let (Some(tokens), Some(uid)) = (self.tokens.get(), pod.metadata.uid.as_deref()) {
            tokens.forget_pod(uid);
        }
    }

    /// The API backend for an API pod, `None` for a static pod (the files).
    fn backend_of(&self, pod: &Pod) -> Option<&Arc<dyn Backend>> {
        if is_file_pod(pod) {
            None
        } else {
            self.api.get()
        }
    }

    fn no_api() -> ObjectError {
        ObjectError::Unavailable("the node is not connected to an API server".into())
    }

    /// The ConfigMap `name` of `pod`'s namespace, from `pod`'s source.
    pub async fn config_map(&self, pod: &Pod, name: &str) -> Result<Arc<ConfigMap>, ObjectError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        if is_file_pod(pod) {
            let files = crate::node::lock(&self.files, "objects").clone();
            return files
                .config_maps
                .get(&(ns.to_string(), name.to_string()))
                .cloned()
                .ok_or_else(|| ObjectError::config_map_not_found(name));
        }
        match self.api.get() {
            Some(api) => api.config_map(ns, name).await,
            None => Err(Self::no_api()),
        }
    }

    /// The Secret `name` of `pod`'s namespace, from `pod`'s source.
    pub async fn secret(&self, pod: &Pod, name: &str) -> Result<Arc<Secret>, ObjectError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        if is_file_pod(pod) {
            let files = crate::node::lock(&self.files, "objects").clone();
            return files
                .secrets
                .get(&(ns.to_string(), name.to_string()))
                .cloned()
                .ok_or_else(|| ObjectError::secret_not_found(name));
        }
        match self.api.get() {
            Some(api) => api.secret(ns, name).await,
            None => Err(Self::no_api()),
        }
    }

    /// A service-account token for `pod` (a `serviceAccountToken` projection). Static pods and
    /// standalone nodes have none: upstream's API server refuses mirror pods that reference
    /// service-account tokens, and there is no API server to ask.
    pub async fn service_account_token(
        &self,
        pod: &Pod,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<Token, ObjectError> {
        if is_file_pod(pod) {
            return Err(ObjectError::Unavailable(
                "a static pod cannot use a service account token (no TokenRequest for pods that \
                 are not in the API)"
                    .into(),
            ));
        }
        match self.tokens.get() {
            Some(t) => t.token(pod, audience, expiration_seconds).await,
            None => Err(Self::no_api()),
        }
    }

    /// Every object known now: the manifest directory's, then the API backend's (each sorted by
    /// namespace and name).
    pub fn list(&self) -> (Vec<Arc<ConfigMap>>, Vec<Arc<Secret>>) {
        let files = self.files();
        let (mut cms, mut secrets) = (files.config_maps(), files.secrets());
        if let Some(api) = self.api.get() {
            let (c, s) = api.list();
            cms.extend(c);
            secrets.extend(s);
        }
        (cms, secrets)
    }

    /// The file source's objects now (the CLI lists them).
    pub fn files(&self) -> Arc<FileObjects> {
        crate::node::lock(&self.files, "objects").clone()
    }
}

impl FileObjects {
    /// The ConfigMaps, sorted by namespace and name.
    pub fn config_maps(&self) -> Vec<Arc<ConfigMap>> {
        let mut v: Vec<_> = self.config_maps.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, o)| o.clone()).collect()
    }

    /// The Secrets, sorted by namespace and name.
    pub fn secrets(&self) -> Vec<Arc<Secret>> {
        let mut v: Vec<_> = self.secrets.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, o)| o.clone()).collect()
    }
}

/// Signals [`Objects::changes`] from a backend.
#[derive(Debug, Clone)]
pub struct Notifier(watch::Sender<u64>);

impl Notifier {
    /// An object changed.
    pub fn notify(&self) {
        self.0.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// The bytes of `key` in `secret`'s `data`. Only `data` counts: `stringData` is write-only in
/// the API (the API server merges it into `data`), and the manifest directory's decoder merges
/// it the same way (`source::decode`).
pub fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
}

/// A Secret for `Debug` output: its namespace, name, type and keys, never its values.
pub struct Redacted<'a>(pub &'a Secret);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let keys: Vec<&String> = s.data.iter().flat_map(|d| d.keys()).collect();
        f.debug_struct("Secret")
            .field("namespace", &s.metadata.namespace)
            .field("name", &s.metadata.name)
            .field("type", &s.type_)
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

/// Whether `pod` is a static pod of the manifest directory.
pub fn is_file_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::source::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s == crate::source::FILE_SOURCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn cm(ns: &str, name: &str, k: &str, v: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
            ..Default::default()
        }
    }

    fn pod(ns: &str, source: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some("p".into()),
                uid: Some("u".into()),
                annotations: Some(BTreeMap::from([(
                    crate::source::CONFIG_SOURCE_ANNOTATION.to_string(),
                    source.to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_static_pod_reads_the_files_of_its_namespace() {
        let objects = Objects::new();
        let mut changes = objects.changes();
        objects.set_files(
            vec![cm("a", "cfg", "k", "1"), cm("b", "cfg", "k", "2")],
            vec![],
        );
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let got = objects.config_map(&pod("b", "file"), "cfg").await.unwrap();
        assert_eq!(got.data.as_ref().unwrap()["k"], "2");
        let err = objects
            .config_map(&pod("c", "file"), "cfg")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "configmap \"cfg\" not found");
        assert!(err.is_not_found());
        let err = objects.secret(&pod("a", "file"), "s").await.unwrap_err();
        assert_eq!(err.to_string(), "secret \"s\" not found");
        // The same objects again: no change signalled; a changed value: one.
        objects.set_files(
            vec![cm("b", "cfg", "k", "2"), cm("a", "cfg", "k", "1")],
            vec![],
        );
        assert!(!changes.has_changed().unwrap());
        objects.set_files(vec![cm("a", "cfg", "k", "3")], vec![]);
        assert!(changes.has_changed().unwrap());
    }

    #[tokio::test]
    async fn an_api_pod_without_an_api_server_is_unavailable_not_missing() {
        let objects = Objects::new();
        objects.set_files(vec![cm("default", "cfg", "k", "1")], vec![]);
        let err = objects
            .config_map(&pod("default", "api"), "cfg")
            .await
            .unwrap_err();
        assert!(!err.is_not_found(), "{err}");
        let err = objects
            .service_account_token(&pod("default", "file"), None, 3607)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("static pod"), "{err}");
    }
}
