//! One manifest file's bytes through the static-pod file source: YAML/JSON decoding of every
//! document (and `kind: List`), API defaults, the static-pod transformation and validation of
//! pods, Services, Endpoints, EndpointSlices, ConfigMaps and Secrets
//! (`kubenode_kubelet::source::read_manifest_bytes`, what a read of the manifest directory does
//! with one file). Invariants: no panic; every pod it yields validates again; the read is
//! deterministic.
#![no_main]

use kubenode_fuzz::{seen_at, MANIFEST_PATH, NODE};
use kubenode_kubelet::source::read_manifest_bytes;
use kubenode_kubelet::validation::validate_pod;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new(MANIFEST_PATH);
    let snap = read_manifest_bytes(path, data, NODE, seen_at());
    for pod in &snap.pods {
        if let Err(e) = validate_pod(pod) {
            panic!("a pod the source accepted fails validation: {e:?}");
        }
    }
    assert_eq!(
        snap,
        read_manifest_bytes(path, data, NODE, seen_at()),
        "two reads of the same bytes differ"
    );
});
