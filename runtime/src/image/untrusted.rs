//! The checks a pull or an import runs on bytes that come from a registry or an archive, as
//! entry points of their own: the image fuzz targets (`fuzz/fuzz_targets/image_json.rs`,
//! `image_tar.rs`) call them with arbitrary input. Each is the same code the store runs, not a
//! copy.

use std::io::Read;
use std::path::Path;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::error::Result;
use super::source::{DOCKER_LIST, OCI_INDEX};
use super::special::OverlaySpecialFiles;
use super::store::parse;

/// What [`check_manifest_document`] found in a top-level manifest document.
#[derive(Debug)]
pub enum ManifestDocument {
    /// An index (or Docker manifest list) and the entry chosen for `os/arch`, if any.
    Index {
        /// The parsed index.
        index: Box<ImageIndex>,
        /// The digest of the entry a pull on `os/arch` would fetch next.
        chosen: Option<String>,
    },
    /// An image manifest, with the image's size (config and layers).
    Manifest {
        /// The parsed manifest.
        manifest: Box<ImageManifest>,
        /// Config and layer sizes added up.
        size: u64,
    },
}

/// What a pull does with a manifest document it fetched: its media type from `schemaVersion`
/// and `mediaType` (or its shape), then an index's platform choice for `os/arch`, or an image
/// manifest's layer media types and size limits. `name` is the reference errors name.
pub fn check_manifest_document(
    name: &str,
    bytes: &[u8],
    os: &str,
    arch: &str,
) -> Result<ManifestDocument> {
    let kind = super::pull::manifest_kind(name, bytes)?;
    if kind == OCI_INDEX || kind == DOCKER_LIST {
        let index: ImageIndex = parse(name, "index", bytes)?;
        let chosen =
            super::source::select_platform(&index, os, arch).map(|d| d.digest().to_string());
        return Ok(ManifestDocument::Index {
            index: Box::new(index),
            chosen,
        });
    }
    let (manifest, size) = super::pull::check_manifest(name, bytes)?;
    Ok(ManifestDocument::Manifest {
        manifest: Box::new(manifest),
        size,
    })
}

/// What a pull does with an image config: parsed, and one `rootfs.diff_ids` entry per layer of
/// `manifest`.
pub fn check_config(
    name: &str,
    manifest: &ImageManifest,
    bytes: &[u8],
) -> Result<ImageConfiguration> {
    super::pull::check_config(name, manifest, bytes)
}

/// Unpacks the uncompressed layer `tar` into the existing, empty directory `dest` as a snapshot
/// is made: overlayfs whiteouts and opaque markers, device nodes, no ownership kept. Nothing is
/// created outside `dest`.
pub fn unpack_layer(tar: impl Read, dest: &Path) -> std::io::Result<()> {
    super::unpack::unpack_layer(tar, dest, &OverlaySpecialFiles, false)
}

/// Unpacks the `oci-archive` tar (optionally gzip-compressed) at `archive` into the empty
/// directory `dest`, as `kubenode image import` does before reading it as a layout: regular
/// files and directories only, confined to `dest`.
pub fn extract_archive(archive: &Path, dest: &Path) -> Result<()> {
    super::source::layout::extract_archive(archive, dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageError;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn an_index_chooses_the_platform_and_a_manifest_checks_its_layers() {
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 1,
             "platform": {"os": "linux", "architecture": "arm64"}}]});
        let bytes = serde_json::to_vec(&index).unwrap();
        match check_manifest_document("x", &bytes, "linux", "arm64").unwrap() {
            ManifestDocument::Index { chosen, .. } => assert_eq!(chosen.as_deref(), Some(DIGEST)),
            other => panic!("{other:?}"),
        }
        let manifest = serde_json::json!({"schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 1},
            "layers": [{"mediaType": "application/zip", "digest": DIGEST, "size": 1}]});
        let err = check_manifest_document(
            "x",
            &serde_json::to_vec(&manifest).unwrap(),
            "linux",
            "amd64",
        )
        .unwrap_err();
        assert!(
            matches!(err, ImageError::UnsupportedMediaType { .. }),
            "{err}"
        );
    }

    /// Sizes are untrusted: layers whose sizes add up past `u64::MAX` are an invalid manifest,
    /// not an overflow (the sum was unchecked).
    #[test]
    fn layer_sizes_that_overflow_are_an_invalid_manifest() {
        let layer = |size: u64| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": DIGEST, "size": size})
        };
        let manifest = |layers: Vec<serde_json::Value>| {
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": DIGEST, "size": 2},
                "layers": layers}))
            .unwrap()
        };
        let bytes = manifest(vec![layer(u64::MAX - 3), layer(1)]);
        match check_manifest_document("x", &bytes, "linux", "amd64").unwrap() {
            ManifestDocument::Manifest { size, .. } => assert_eq!(size, u64::MAX),
            other => panic!("{other:?}"),
        }
        for layers in [
            vec![layer(u64::MAX - 3), layer(2)],
            vec![layer(u64::MAX), layer(u64::MAX)],
        ] {
            let err =
                check_manifest_document("x", &manifest(layers), "linux", "amd64").unwrap_err();
            assert!(
                matches!(
                    err,
                    ImageError::InvalidManifest {
                        what: "manifest",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}
