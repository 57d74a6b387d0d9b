//! Container images: pulling from OCI distribution registries, importing
//! OCI layouts and archives, a content-addressed store with every digest
//! verified, and per-layer snapshots ready to be overlayfs lowerdirs.
//!
//! The kubelet uses [`ImageStore`]:
//!
//! ```no_run
//! # async fn f() -> Result<(), kubenode_runtime::image::ImageError> {
//! use kubenode_runtime::image::{PullPolicy, ImageStore, PullOptions};
//! let store = ImageStore::open("/var/lib/kubenode")?;
//! let policy = PullPolicy::resolve(None, "busybox:1.36").expect("a known policy");
//! let image = store.ensure("busybox:1.36", policy, &PullOptions::default()).await?;
//! // image.layers: bottom layer first; overlay wants them reversed in lowerdir=.
//! # Ok(()) }
//! ```
//!
//! Errors carry [`ImageError::kubelet_reason`] (`InvalidImageName` or
//! `ErrImagePull`); [`default_pull_policy`] is the API server's defaulting.

mod auth;
mod blobs;
mod digest;
mod error;
mod fsutil;
mod gc;
mod import;
mod index;
mod lock;
mod policy;
mod pull;
mod reference;
mod snapshot;
mod source;
mod special;
mod store;
mod store_usage;
mod unpack;
pub mod untrusted;

use std::path::PathBuf;
use std::sync::Arc;

pub use auth::{Keyring, NodeCredentialDirs};
pub use error::{ImageError, Result};
pub use gc::{select_for_gc, GcCandidate, PruneReport, StoredImage};
pub use oci_spec::image::ImageConfiguration;
pub use policy::{default_pull_policy, PullPolicy};
pub use reference::ImageReference;
pub use store::ImageStore;
pub use store_usage::ImageUser;

/// An image present in the local store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The canonical reference it is stored under
    /// (`docker.io/library/busybox:1.36`).
    pub reference: String,
    /// The digest of its (platform-specific) manifest, `sha256:...`: the
    /// image ID kubenode reports.
    pub manifest_digest: String,
    /// The image configuration (entrypoint, env, user, ...).
    pub config: ImageConfiguration,
    /// The snapshot `fs` directory of every layer, bottom layer first. They
    /// are never written after unpacking: use them as overlay lowerdirs
    /// (`lowerdir=` lists the top layer first).
    pub layers: Vec<PathBuf>,
    /// Compressed size: config plus layers, as the manifest declares.
    pub size: u64,
}

/// A progress callback; called from the pulling task, keep it quick.
pub type ProgressFn = Arc<dyn Fn(&PullEvent) + Send + Sync>;

/// Options of one pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Registries (`host:port`, as in references) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// A docker-style `config.json` with credentials (`auths`); anonymous
    /// when `None`.
    pub auth_config_path: Option<PathBuf>,
    /// Credentials tried first (the pod's `imagePullSecrets`), in order.
    pub keyrings: Vec<Keyring>,
    /// Where the node's own credentials are read at each pull (after the keyrings and the
    /// auth file), as upstream's kubelet reads `config.json`/`.dockercfg`; `None`: not read.
    pub node_credentials: Option<NodeCredentialDirs>,
    /// Called with progress events.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("insecure_registries", &self.insecure_registries)
            .field("auth_config_path", &self.auth_config_path)
            .field("keyrings", &self.keyrings)
            .field("node_credentials", &self.node_credentials)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What a pull is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The reference resolved to a manifest.
    Resolved {
        /// Canonical reference.
        reference: String,
        /// The platform manifest's digest.
        manifest_digest: String,
        /// Number of layers.
        layers: usize,
        /// Compressed size of config and layers.
        size: u64,
    },
    /// A blob was already in the store.
    BlobPresent {
        /// Its digest.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// Bytes of a blob received so far.
    BlobProgress {
        /// Its digest.
        digest: String,
        /// Bytes received.
        done: u64,
        /// Bytes expected.
        total: u64,
    },
    /// A blob was fetched and verified.
    BlobFetched {
        /// Its digest.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// A layer's snapshot already existed.
    LayerReused {
        /// The layer's diff_id.
        diff_id: String,
    },
    /// A layer was unpacked and verified against its diff_id.
    LayerUnpacked {
        /// The layer's diff_id.
        diff_id: String,
    },
}

#[cfg(test)]
mod tests;
