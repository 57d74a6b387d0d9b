//! Reading images from an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/<alg>/<hex>`), and unpacking an `oci-archive` tar
//! into one.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};

use super::{BlobSink, ImageSource};
use crate::image::digest::hex_of;
use crate::image::error::{ImageError, Result};

/// Annotation naming an entry of `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation carrying the full image name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One manifest (or index) of a layout.
pub(crate) struct LayoutSource {
    dir: PathBuf,
    top: String,
    reference: String,
}

impl LayoutSource {
    /// The image whose top-level manifest is `top` in the layout at `dir`;
    /// `reference` is only for messages.
    pub(crate) fn new(dir: &Path, top: &str, reference: &str) -> Self {
        LayoutSource {
            dir: dir.to_path_buf(),
            top: top.to_string(),
            reference: reference.to_string(),
        }
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = hex_of(digest).map_err(|_| ImageError::InvalidManifest {
            reference: self.reference.clone(),
            what: "descriptor",
            reason: format!("unsupported digest {digest}"),
        })?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    fn missing(&self, digest: &str, e: std::io::Error) -> ImageError {
        ImageError::NotFound {
            reference: self.reference.clone(),
            detail: format!("blob {digest} in layout {}: {e}", self.dir.display()),
        }
    }
}

impl ImageSource for LayoutSource {
    async fn fetch_manifest(&self, digest: Option<&str>) -> Result<Vec<u8>> {
        let digest = digest.unwrap_or(&self.top);
        let path = self.blob_path(digest)?;
        tokio::fs::read(&path)
            .await
            .map_err(|e| self.missing(digest, e))
    }

    async fn fetch_blob(&self, descriptor: &Descriptor, sink: &mut BlobSink) -> Result<()> {
        let digest = descriptor.digest().to_string();
        let path = self.blob_path(&digest)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.missing(&digest, e))?;
        tokio::io::copy(&mut file, sink)
            .await
            .map_err(ImageError::io("copying blob", &path))?;
        Ok(())
    }
}

/// The tagged entries of the layout at `dir`: (name, top-level digest).
/// The name is containerd's full image name if present, else the
/// `org.opencontainers.image.ref.name` annotation; untagged entries are skipped.
pub(crate) fn tagged_entries(dir: &Path) -> Result<Vec<(String, String)>> {
    let bad = |reason: String| ImageError::Import {
        path: dir.to_path_buf(),
        reason,
    };
    let layout = std::fs::read_to_string(dir.join("oci-layout"))
        .map_err(|e| bad(format!("not an OCI image layout (oci-layout: {e})")))?;
    let layout: serde_json::Value =
        serde_json::from_str(&layout).map_err(|e| bad(format!("oci-layout: {e}")))?;
    if layout
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(bad("oci-layout has no imageLayoutVersion".into()));
    }
    let index =
        std::fs::read(dir.join("index.json")).map_err(|e| bad(format!("index.json: {e}")))?;
    let index: ImageIndex =
        serde_json::from_slice(&index).map_err(|e| bad(format!("index.json: {e}")))?;
    let mut entries = Vec::new();
    for descriptor in index.manifests() {
        let annotations = descriptor.annotations().clone().unwrap_or_default();
        let name = annotations
            .get(CONTAINERD_NAME)
            .or_else(|| annotations.get(REF_NAME));
        match name {
            Some(name) => entries.push((name.clone(), descriptor.digest().to_string())),
            None => {
                tracing::warn!(layout = %dir.display(), digest = %descriptor.digest(), "skipping untagged image")
            }
        }
    }
    Ok(entries)
}

/// Whether `path` is an OCI layout directory (else it is taken as an archive).
pub(crate) fn is_layout_dir(path: &Path) -> bool {
    path.is_dir()
}

/// Unpacks the `oci-archive` tar (optionally gzip-compressed) at `archive`
/// into the empty directory `dest`. Entries are confined to `dest`.
pub(crate) fn extract_archive(archive: &Path, dest: &Path) -> Result<()> {
    let bad = |reason: String| ImageError::Import {
        path: archive.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(archive).map_err(|e| bad(e.to_string()))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| bad(e.to_string()))?;
    let file = std::fs::File::open(archive).map_err(|e| bad(e.to_string()))?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(false);
    tar.set_preserve_ownerships(false);
    for entry in tar
        .entries()
        .map_err(|e| bad(format!("reading archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("reading archive: {e}")))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        entry
            .unpack_in(dest)
            .map_err(|e| bad(format!("extracting archive: {e}")))?;
    }
    Ok(())
}
