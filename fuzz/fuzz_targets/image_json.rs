//! Image manifest, index and config JSON as a pull checks them
//! (`kubenode_runtime::image::untrusted`): the document's media type, an index's platform
//! choice, an image manifest's layer media types and size limits, and the config against the
//! manifest. The input is the manifest document, then optionally a NUL byte and the config
//! (JSON text never holds a raw NUL); without one the same bytes are tried as the config.
//! Invariant: no panic.
#![no_main]

use kubenode_runtime::image::untrusted::{check_config, check_manifest_document, ManifestDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (manifest, config) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    for (os, arch) in [("linux", "amd64"), ("linux", "arm64")] {
        match check_manifest_document("registry.example/fuzz:1", manifest, os, arch) {
            Ok(ManifestDocument::Manifest { manifest, .. }) => {
                let _ = check_config("registry.example/fuzz:1", &manifest, config);
            }
            Ok(ManifestDocument::Index { index, chosen }) => {
                if let Some(digest) = chosen {
                    assert!(
                        index
                            .manifests()
                            .iter()
                            .any(|d| d.digest().to_string() == digest),
                        "the chosen digest {digest} is not in the index"
                    );
                }
            }
            Err(_) => {}
        }
    }
});
