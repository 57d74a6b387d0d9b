//! Importing images for offline nodes from an OCI image layout directory
//! or an `oci-archive` tar, tagged by their `org.opencontainers.image.ref.name`
//! (or containerd's `io.containerd.image.name`) annotation.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{ImageError, Result};
use super::fsutil::remove_any;
use super::reference::ImageReference;
use super::source::layout::{extract_archive, is_layout_dir, tagged_entries, LayoutSource};
use super::store::ImageStore;
use super::Image;

static IMPORTS: AtomicU64 = AtomicU64::new(0);

impl ImageStore {
    /// Imports every tagged image of the layout directory or archive at
    /// `path`, verifying all digests as a pull does. Short names resolve as
    /// in a pull (`bb:1` → `docker.io/library/bb:1`).
    pub async fn import(&self, path: &Path) -> Result<Vec<Image>> {
        if is_layout_dir(path) {
            return self.import_layout(path, path).await;
        }
        let n = IMPORTS.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .tmp_dir()
            .join(format!("import-{}-{n}", std::process::id()));
        remove_any(&dir).map_err(ImageError::io("removing", &dir))?;
        std::fs::create_dir_all(&dir).map_err(ImageError::io("creating", &dir))?;
        let (archive, dest) = (path.to_path_buf(), dir.clone());
        let extracted = tokio::task::spawn_blocking(move || extract_archive(&archive, &dest))
            .await
            .unwrap_or_else(|e| {
                Err(ImageError::Import {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            });
        let result = match extracted {
            Ok(()) => self.import_layout(&dir, path).await,
            Err(e) => Err(e),
        };
        if let Err(e) = remove_any(&dir) {
            tracing::warn!(path = %dir.display(), error = %e, "removing extracted archive");
        }
        result
    }

    async fn import_layout(&self, layout: &Path, origin: &Path) -> Result<Vec<Image>> {
        let entries = tagged_entries(layout)?;
        if entries.is_empty() {
            return Err(ImageError::Import {
                path: origin.to_path_buf(),
                reason: "no image in it carries an org.opencontainers.image.ref.name annotation"
                    .into(),
            });
        }
        let mut images = Vec::new();
        for (tag, digest) in entries {
            let name = ImageReference::parse(&tag)
                .map_err(|e| ImageError::Import {
                    path: origin.to_path_buf(),
                    reason: e.to_string(),
                })?
                .to_string();
            let source = LayoutSource::new(layout, &digest, &name);
            let image = self.ingest(&source, &name, Some(&digest), &None).await?;
            tracing::info!(image = %name, digest = %image.manifest_digest, from = %origin.display(), "imported image");
            images.push(image);
        }
        Ok(images)
    }
}
