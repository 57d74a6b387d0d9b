//! The store's index of references: `<root>/images/index.json`, an OCI image
//! index whose entries carry the canonical reference in
//! `org.opencontainers.image.ref.name` (so `<root>/images` is itself a valid
//! OCI image layout that skopeo or umoci can read). Written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{ImageError, Result};
use super::fsutil::write_atomic;
use super::source::layout::REF_NAME;

#[derive(Serialize, Deserialize)]
struct IndexFile {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: String,
    manifests: Vec<Entry>,
}

/// One reference: the image manifest it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// References → manifest entries.
pub(crate) type Refs = BTreeMap<String, Entry>;

#[derive(Debug)]
pub(crate) struct RefIndex {
    path: PathBuf,
}

impl RefIndex {
    pub(crate) fn new(images_dir: &Path) -> RefIndex {
        RefIndex {
            path: images_dir.join("index.json"),
        }
    }

    /// All references (a missing index is an empty store).
    pub(crate) fn load(&self) -> Result<Refs> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Refs::new()),
            Err(e) => return Err(ImageError::io("reading image index", &self.path)(e)),
        };
        let file: IndexFile = serde_json::from_slice(&data).map_err(|e| {
            ImageError::io("parsing image index", &self.path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e,
            ))
        })?;
        Ok(file
            .manifests
            .into_iter()
            .filter_map(|e| e.annotations.get(REF_NAME).cloned().map(|name| (name, e)))
            .collect())
    }

    /// Replaces the index with `refs`. Call with the `index` key lock held.
    pub(crate) fn save(&self, refs: &Refs) -> Result<()> {
        let file = IndexFile {
            schema_version: 2,
            media_type: super::source::OCI_INDEX.into(),
            manifests: refs
                .iter()
                .map(|(name, e)| {
                    let mut e = e.clone();
                    e.annotations.insert(REF_NAME.into(), name.clone());
                    e
                })
                .collect(),
        };
        let data = serde_json::to_vec_pretty(&file).expect("index serializes");
        write_atomic(&self.path, &data).map_err(ImageError::io("writing image index", &self.path))
    }
}
