//! The content-addressed blob store, `<root>/images/blobs/sha256/<hex>`:
//! fetching a blob from a source exactly once, verifying digest and size,
//! and never leaving a partial file under its final name.

use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use super::digest::{hex_of, sha256_of};
use super::error::{ImageError, Result};
use super::fsutil::{remove_any, sync_dir, write_atomic};
use super::source::{BlobSink, ImageSource};
use super::store::ImageStore;
use super::{ProgressFn, PullEvent};

impl ImageStore {
    /// The path of blob `digest` (which must be `sha256:<hex>`).
    pub(crate) fn blob_path(&self, reference: &str, digest: &str) -> Result<PathBuf> {
        let hex = hex_of(digest).map_err(|_| ImageError::InvalidManifest {
            reference: reference.to_string(),
            what: "descriptor",
            reason: format!("unsupported digest {digest}"),
        })?;
        Ok(self.blobs_dir().join(hex))
    }

    /// Reads blob `digest` and checks that it still hashes to its name.
    pub(crate) fn read_blob(&self, reference: &str, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(reference, digest)?;
        let data = std::fs::read(&path).map_err(ImageError::io("reading blob", &path))?;
        let actual = sha256_of(&data);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                reference: reference.into(),
                digest: digest.into(),
                actual,
            });
        }
        Ok(data)
    }

    /// Stores already-verified `data` as blob `digest` (manifests).
    pub(crate) fn put_blob(&self, reference: &str, digest: &str, data: &[u8]) -> Result<()> {
        let path = self.blob_path(reference, digest)?;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == data.len() as u64) {
            return Ok(());
        }
        write_atomic(&path, data).map_err(ImageError::io("writing blob", &path))
    }

    /// Makes blob `descriptor` present, fetching it from `source` unless it
    /// already is; concurrent callers (threads or processes) fetch it once.
    pub(crate) async fn ensure_blob<S: ImageSource>(
        &self,
        source: &S,
        descriptor: &Descriptor,
        reference: &str,
        progress: &Option<ProgressFn>,
    ) -> Result<PathBuf> {
        let digest = descriptor.digest().to_string();
        let size = descriptor.size();
        let path = self.blob_path(reference, &digest)?;
        let hex = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let _lock = self.locks().key(&format!("blob-{hex}")).await?;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            emit(progress, PullEvent::BlobPresent { digest, size });
            return Ok(path);
        }
        // Under the lock, a temp file of this name is a crashed fetch's leftover.
        let tmp = self.tmp_dir().join(&hex);
        remove_any(&tmp).map_err(ImageError::io("removing stale download", &tmp))?;
        let result = self
            .fetch_into(source, descriptor, reference, &tmp, progress)
            .await;
        match result {
            Ok(()) => {
                std::fs::rename(&tmp, &path).map_err(ImageError::io("committing blob", &path))?;
                sync_dir(&self.blobs_dir()).map_err(ImageError::io("syncing", self.blobs_dir()))?;
                tracing::debug!(image = reference, %digest, size, "fetched blob");
                emit(progress, PullEvent::BlobFetched { digest, size });
                Ok(path)
            }
            Err(e) => {
                if let Err(rm) = remove_any(&tmp) {
                    tracing::warn!(path = %tmp.display(), error = %rm, "removing failed download");
                }
                Err(e)
            }
        }
    }

    async fn fetch_into<S: ImageSource>(
        &self,
        source: &S,
        descriptor: &Descriptor,
        reference: &str,
        tmp: &Path,
        progress: &Option<ProgressFn>,
    ) -> Result<()> {
        let digest = descriptor.digest().to_string();
        let size = descriptor.size();
        let file = tokio::fs::File::create(tmp)
            .await
            .map_err(ImageError::io("creating download", tmp))?;
        let mut sink = BlobSink::new(file, &digest, size, progress.clone());
        source.fetch_blob(descriptor, &mut sink).await?;
        let (actual, len) = sink
            .finish()
            .await
            .map_err(ImageError::io("writing download", tmp))?;
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                reference: reference.into(),
                digest,
                actual,
            });
        }
        if len != size {
            return Err(ImageError::DigestMismatch {
                reference: reference.into(),
                digest,
                actual: format!("{len} bytes where the manifest says {size}"),
            });
        }
        Ok(())
    }
}

pub(crate) fn emit(progress: &Option<ProgressFn>, event: PullEvent) {
    if let Some(progress) = progress {
        progress(&event);
    }
}
