//! The kubelet half of kubenode: pod sources, pod workers, status and the node API.

pub mod api;
