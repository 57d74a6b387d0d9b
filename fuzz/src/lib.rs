//! What kubenode's fuzz targets share: the fixed inputs around the fuzzed bytes, the private
//! root of the tar target ([`jail`]) and a checker of `iptables-restore` input ([`restore`]).
//! The targets themselves (`fuzz_targets/`) call the crates' public APIs, never copies of their
//! code.

pub mod jail;
pub mod restore;

use k8s_openapi::jiff::Timestamp;

/// The path the manifest targets read their bytes as (in the agent's default directory).
pub const MANIFEST_PATH: &str = "/etc/kubernetes/manifests/fuzz.yaml";
/// The node the manifest targets read for.
pub const NODE: &str = "node1";

/// A fixed `config.seen` time, so that two reads of the same bytes are equal.
pub fn seen_at() -> Timestamp {
    Timestamp::from_second(1_700_000_000).expect("a valid time")
}
