//! Pulling: resolve the reference to one image manifest (choosing this
//! host's platform from an index), then make its config, layers and
//! snapshots present, verifying every digest on the way, and finally point
//! the reference at it. Shared by registry pulls and layout imports.

use std::path::PathBuf;

use futures::{StreamExt as _, TryStreamExt as _};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use oci_client::secrets::RegistryAuth;

use super::auth::{Credentials, Keyring};
use super::blobs::emit;
use super::digest::sha256_of;
use super::error::{ImageError, Result};
use super::index::Entry;
use super::reference::ImageReference;
use super::source::registry::RegistrySource;
use super::source::{
    host_platform, select_platform, ImageSource, DOCKER_LIST, OCI_INDEX, OCI_MANIFEST,
};
use super::store::{parse, ImageStore};
use super::{Image, ProgressFn, PullEvent, PullOptions, PullPolicy};

/// Layers fetched and unpacked at the same time.
const PARALLEL_LAYERS: usize = 3;

const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// The largest manifest or image config accepted: 4 MiB, containerd's limit on manifests
/// (real ones are a few KiB; a config with a long history some hundred KiB).
const MAX_METADATA_SIZE: u64 = 4 << 20;

impl ImageStore {
    /// Pulls `reference` from its registry (always asking the registry what
    /// the tag points to; content already present is not fetched again).
    /// Concurrent pulls of the same image, in this process or others,
    /// fetch and unpack each blob once.
    pub async fn pull(&self, reference: &str, options: &PullOptions) -> Result<Image> {
        let parsed = ImageReference::parse(reference)?;
        let mut credentials = Credentials::from_keyrings(options.keyrings.clone());
        if let Some(path) = &options.auth_config_path {
            credentials.extend(Credentials::load(path)?);
        }
        if let Some(dirs) = &options.node_credentials {
            credentials.extend(Credentials::from_keyrings(vec![Keyring::read_node(dirs)]));
        }
        // Upstream's kubelet: every matching credential in turn until one pulls, anonymous
        // when none matches; when all fail, the errors of every attempt.
        let mut auths =
            credentials.lookup(&format!("{}/{}", parsed.registry(), parsed.repository()));
        if auths.is_empty() {
            auths.push(RegistryAuth::Anonymous);
        }
        let name = parsed.to_string();
        let tries = auths.len();
        let mut errors = Vec::new();
        for (i, auth) in auths.into_iter().enumerate() {
            let source = RegistrySource::new(&parsed, &options.insecure_registries, auth);
            tracing::info!(image = %name, credential = i + 1, of = tries, "pulling image");
            match self
                .ingest(&source, &name, parsed.digest(), &options.progress)
                .await
            {
                Ok(image) => {
                    tracing::info!(image = %name, digest = %image.manifest_digest, size = image.size, "pulled image");
                    return Ok(image);
                }
                Err(e) => {
                    if i + 1 < tries {
                        tracing::info!(image = %name, credential = i + 1, error = %e, "pull failed; trying the next credential");
                    }
                    errors.push(e);
                }
            }
        }
        Err(ImageError::of_attempts(errors))
    }

    /// What the kubelet does before creating a container: the image under
    /// `policy` (`Always` pulls, `IfNotPresent` pulls when missing, `Never`
    /// fails with [`ImageError::NeverPull`] when missing).
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
        options: &PullOptions,
    ) -> Result<Image> {
        if policy != PullPolicy::Always {
            if let Some(image) = self.get(reference)? {
                return Ok(image);
            }
            if policy == PullPolicy::Never {
                let reference = ImageReference::parse(reference)?.to_string();
                return Err(ImageError::NeverPull { reference });
            }
        }
        self.pull(reference, options).await
    }

    /// Stores the image `source` serves under `name`. `pinned` is the digest
    /// the top-level manifest must have, if the reference names one. On
    /// failure, content fetched for it that no image uses is discarded.
    pub(crate) async fn ingest<S: ImageSource>(
        &self,
        source: &S,
        name: &str,
        pinned: Option<&str>,
        progress: &Option<ProgressFn>,
    ) -> Result<Image> {
        let result = self.ingest_locked(source, name, pinned, progress).await;
        if result.is_err() {
            self.discard_unused().await;
        }
        result
    }

    async fn ingest_locked<S: ImageSource>(
        &self,
        source: &S,
        name: &str,
        pinned: Option<&str>,
        progress: &Option<ProgressFn>,
    ) -> Result<Image> {
        let _store = self.locks().store_shared().await?;
        let (manifest_bytes, manifest_digest, media_type) =
            resolve_manifest(source, name, pinned).await?;
        let (manifest, size) = check_manifest(name, &manifest_bytes)?;
        emit(
            progress,
            PullEvent::Resolved {
                reference: name.into(),
                manifest_digest: manifest_digest.clone(),
                layers: manifest.layers().len(),
                size,
            },
        );

        let config_path = self
            .ensure_blob(source, manifest.config(), name, progress)
            .await?;
        let config_bytes = crate::host::saferead::open_regular(&config_path)
            .and_then(|mut f| {
                crate::host::saferead::read_capped(&mut f, &config_path, MAX_METADATA_SIZE)
            })
            .map_err(|e| {
                ImageError::io("reading config", &config_path)(std::io::Error::other(e))
            })?;
        let config = check_config(name, &manifest, &config_bytes)?;
        let diff_ids = config.rootfs().diff_ids();

        // Futures collected first: a closure inside the stream would make the
        // pull future's `Send` unprovable (rust-lang/rust#102211).
        let jobs: Vec<_> = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| self.ensure_layer(source, layer, diff_id, name, progress))
            .collect();
        let layers: Vec<PathBuf> = futures::stream::iter(jobs)
            .buffered(PARALLEL_LAYERS)
            .try_collect()
            .await?;

        self.put_blob(name, &manifest_digest, &manifest_bytes)?;
        let entry = Entry {
            media_type,
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            annotations: Default::default(),
        };
        self.set_ref(name, entry).await?;
        Ok(Image {
            reference: name.to_string(),
            manifest_digest,
            config,
            layers,
            size,
        })
    }
}

impl ImageStore {
    async fn ensure_layer<S: ImageSource>(
        &self,
        source: &S,
        layer: &Descriptor,
        diff_id: &str,
        name: &str,
        progress: &Option<ProgressFn>,
    ) -> Result<PathBuf> {
        let blob = self.ensure_blob(source, layer, name, progress).await?;
        self.ensure_snapshot(&blob, layer, diff_id, name, progress)
            .await
    }
}

/// Parses an image manifest (not an index) and checks what a pull needs of it: supported layer
/// media types, and the manifest and its config within [`MAX_METADATA_SIZE`]. Returns it with
/// the image's size (config and layers).
pub(crate) fn check_manifest(name: &str, bytes: &[u8]) -> Result<(ImageManifest, u64)> {
    let manifest: ImageManifest = parse(name, "manifest", bytes)?;
    for layer in manifest.layers() {
        let media_type = layer.media_type().to_string();
        if !LAYER_TYPES.contains(&media_type.as_str()) {
            return Err(ImageError::UnsupportedMediaType {
                reference: name.into(),
                media_type,
            });
        }
    }
    let size = image_size(&manifest).ok_or_else(|| ImageError::InvalidManifest {
        reference: name.into(),
        what: "manifest",
        reason: "the config and layer sizes add up to more than 2^64 bytes".into(),
    })?;
    if bytes.len() as u64 > MAX_METADATA_SIZE || manifest.config().size() > MAX_METADATA_SIZE {
        return Err(ImageError::InvalidManifest {
            reference: name.into(),
            what: "manifest",
            reason: format!(
                "manifest ({} bytes) or config ({} bytes) is larger than {MAX_METADATA_SIZE} bytes",
                bytes.len(),
                manifest.config().size()
            ),
        });
    }
    Ok((manifest, size))
}

/// The image's size: its config's and layers' sizes added up, `None` when the (untrusted)
/// sizes overflow a `u64`.
pub(crate) fn image_size(manifest: &ImageManifest) -> Option<u64> {
    manifest
        .layers()
        .iter()
        .try_fold(manifest.config().size(), |sum, l| sum.checked_add(l.size()))
}

/// Parses an image config and checks it against its `manifest`: one `rootfs.diff_ids` entry
/// per layer.
pub(crate) fn check_config(
    name: &str,
    manifest: &ImageManifest,
    bytes: &[u8],
) -> Result<ImageConfiguration> {
    let config: ImageConfiguration = parse(name, "config", bytes)?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::InvalidManifest {
            reference: name.into(),
            what: "config",
            reason: format!(
                "{} diff_ids for {} layers in the manifest",
                diff_ids.len(),
                manifest.layers().len()
            ),
        });
    }
    Ok(config)
}

/// Fetches the top-level manifest, checks it against `pinned`, and follows
/// an index to this host's platform. Returns (bytes, digest, media type).
async fn resolve_manifest<S: ImageSource>(
    source: &S,
    name: &str,
    pinned: Option<&str>,
) -> Result<(Vec<u8>, String, String)> {
    let top = source.fetch_manifest(None).await?;
    let top_digest = sha256_of(&top);
    if let Some(pinned) = pinned {
        if pinned != top_digest {
            return Err(ImageError::DigestMismatch {
                reference: name.into(),
                digest: pinned.into(),
                actual: top_digest,
            });
        }
    }
    let kind = manifest_kind(name, &top)?;
    if kind != OCI_INDEX && kind != DOCKER_LIST {
        return Ok((top, top_digest, kind));
    }
    let index: ImageIndex = parse(name, "index", &top)?;
    let (os, arch) = host_platform();
    let chosen =
        select_platform(&index, os, arch).ok_or_else(|| ImageError::NoMatchingPlatform {
            reference: name.into(),
            platform: format!("{os}/{arch}"),
        })?;
    let digest = chosen.digest().to_string();
    let bytes = source.fetch_manifest(Some(&digest)).await?;
    let actual = sha256_of(&bytes);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            reference: name.into(),
            digest,
            actual,
        });
    }
    let kind = manifest_kind(name, &bytes)?;
    if kind == OCI_INDEX || kind == DOCKER_LIST {
        return Err(ImageError::InvalidManifest {
            reference: name.into(),
            what: "index",
            reason: format!("platform entry {digest} is another index"),
        });
    }
    tracing::debug!(image = name, index = %top_digest, manifest = %digest, platform = %format!("{os}/{arch}"), "selected platform");
    Ok((bytes, digest, kind))
}

/// The media type of a manifest document: its `mediaType`, or inferred
/// from its shape when absent (OCI allows that).
pub(crate) fn manifest_kind(name: &str, data: &[u8]) -> Result<String> {
    let value: serde_json::Value = parse(name, "manifest", data)?;
    let schema = value.get("schemaVersion").and_then(|v| v.as_u64());
    if schema != Some(2) {
        return Err(ImageError::UnsupportedMediaType {
            reference: name.into(),
            media_type: format!(
                "manifest schemaVersion {}",
                schema.map_or("missing".into(), |s| s.to_string())
            ),
        });
    }
    if let Some(media_type) = value.get("mediaType").and_then(|v| v.as_str()) {
        return match media_type {
            OCI_MANIFEST | OCI_INDEX | DOCKER_LIST | super::source::DOCKER_MANIFEST => {
                Ok(media_type.to_string())
            }
            other => Err(ImageError::UnsupportedMediaType {
                reference: name.into(),
                media_type: other.into(),
            }),
        };
    }
    Ok(if value.get("manifests").is_some() {
        OCI_INDEX
    } else {
        OCI_MANIFEST
    }
    .to_string())
}
