//! The static-pod file source (upstream `pkg/kubelet/config/file*.go`):
//! every file of the manifest directory not starting with `.`, sorted, not
//! recursed, at most 10 MiB, YAML or JSON, one or more documents each
//! (also `kind: List`). Pods become static pods (name `<name>-<node>`, UID
//! from a content hash, config annotations, API defaults, validated);
//! Services, Endpoints and EndpointSlices are collected for the proxy, ConfigMaps and Secrets
//! (validated as the API server does) for the static pods that reference them. A bad file or
//! document yields a [`SourceError`] and the rest still load.
//!
//! Each read produces a full [`Snapshot`]; the consumer diffs by pod UID:
//! a content change is a new UID (replace), an identical rewrite is the
//! same UID (nothing to do), a vanished UID is a removal. A [`Watcher`]
//! keeps each file's parsed objects in a [`ManifestCache`] and parses only
//! files whose `stat` changed; it can also hand out [`ServiceChanges`], the
//! Services and Endpoints that changed, for the proxy.

mod decode;
mod defaults;
mod diff;
mod octal;
mod read;
#[cfg(test)]
mod tests;
mod watch;

pub use defaults::{apply_pod_defaults, default_pull_policy, make_static_pod, static_pod_uid};
pub use diff::{diff_pods, PodChanges, ServiceChanges};
pub use read::{
    read_dir_snapshot, read_dir_snapshot_at, read_manifest_bytes, ManifestCache, NamedRead,
};
pub use watch::{watch, Watcher};

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Files larger than this are refused (upstream `maxConfigLength`).
pub const MAX_MANIFEST_SIZE: u64 = 10 << 20;
/// Annotation holding the pod's content hash (= its UID).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation naming the pod's source (`file`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation with the time the agent first saw the pod (RFC 3339, nanoseconds).
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// Annotation marking a mirror pod (set by the API source, never by files).
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The source name of this source.
pub const FILE_SOURCE: &str = "file";

/// Everything one read of the manifest directory found. Its `Debug` shows the Secrets' names
/// and keys, never their values.
#[derive(Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Valid static pods, in file order (in cluster mode, then the API's pods). Shared: a pod
    /// unchanged from one snapshot to the next is the same allocation in the snapshots the
    /// kubelet keeps and in its worker's channel, not a copy each.
    pub pods: Vec<Arc<Pod>>,
    /// Services, for the proxy.
    pub services: Vec<Service>,
    /// Endpoints, for the proxy (selector-less Services).
    pub endpoints: Vec<Endpoints>,
    /// EndpointSlices (`discovery.k8s.io/v1`), for the proxy: each names its Service with the
    /// `kubernetes.io/service-name` label.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// ConfigMaps, for the static pods that reference them (issue 17). Shared: the watcher
    /// hands over the same allocation while the documents are unchanged, so that consumers
    /// ([`crate::objects::Objects::set_files`]) see "no change" by pointer.
    pub config_maps: Arc<Vec<ConfigMap>>,
    /// Secrets, for the static pods that reference them (issue 17); shared as `config_maps`.
    pub secrets: Arc<Vec<Secret>>,
    /// One record per problem; the objects above are unaffected.
    pub errors: Vec<SourceError>,
    /// A source has not delivered its first full list yet (in cluster mode, the API source
    /// before its first list: upstream's sources not ready): pods missing from `pods` may
    /// still be wanted, so the kubelet tears down no orphan. Always `false` from the file
    /// source alone.
    pub incomplete: bool,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets: Vec<_> = self.secrets.iter().map(crate::objects::Redacted).collect();
        f.debug_struct("Snapshot")
            .field("pods", &self.pods)
            .field("services", &self.services)
            .field("endpoints", &self.endpoints)
            .field("endpoint_slices", &self.endpoint_slices)
            .field("config_maps", &self.config_maps)
            .field("secrets", &secrets)
            .field("errors", &self.errors)
            .field("incomplete", &self.incomplete)
            .finish()
    }
}

/// One problem with one file or document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    /// The file.
    pub file: PathBuf,
    /// 0-based document index in the file, when the problem is inside one.
    pub document: Option<usize>,
    /// Field path inside the document (`spec.containers[0].image`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl SourceError {
    pub(crate) fn file(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            document: None,
            field: None,
            reason: reason.into(),
        }
    }
}

/// Records every error of a snapshot as a `Warning` event
/// `InvalidManifest` on the node, so that `kubenode get events` shows it.
pub fn record_errors(recorder: &crate::events::Recorder, node_name: &str, errors: &[SourceError]) {
    let node = crate::events::ObjectRef::node(node_name);
    for e in errors {
        recorder.warning(
            &node,
            crate::events::reason::INVALID_MANIFEST,
            e.to_string(),
        );
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(d) = self.document {
            write!(f, " (document {d})")?;
        }
        f.write_str(": ")?;
        if let Some(p) = &self.field {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.reason)
    }
}
