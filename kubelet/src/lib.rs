//! The kubelet half of kubenode: pod sources, validation, status, restart
//! back-off, label selectors, events and the node API.
//!
//! Most modules here are container-free building blocks: each is pure
//! logic (or has a small trait at its OS boundary) so that it can be unit
//! tested without root. The pod worker, which drives the runtime and CNI,
//! builds on them.

pub mod api;
pub mod backoff;
pub mod cluster;
pub mod config;
pub mod duration;
pub mod events;
pub mod eviction;
pub mod image_gc;
pub mod metrics;
pub mod node;
pub mod objects;
pub mod prober;
pub mod security;
pub mod selector;
pub mod source;
pub mod stats;
pub mod status;
#[cfg(test)]
mod testing;
pub mod validation;
pub mod volume;

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// The containers the kubelet runs for a pod spec, in start order: the init containers (their
/// sidecars among them), then the app containers. Ephemeral containers are not run.
pub fn pod_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}
