//! kubenode's CNI support: a CNI 1.x client (what libcni does for a container runtime) and
//! `kubenode-bridge`, kubenode's own bridge plugin.
//!
//! - [`CniClient`] loads the node's network configuration, runs the plugin chain for ADD, CHECK,
//!   DEL, STATUS and GC, caches ADD results on disk the way libcni does and never runs two
//!   operations on one container at once.
//! - [`plugin::main`] is the plugin's entry point (argv[0] `kubenode-bridge`, or
//!   `kubenode cni-plugin`): it reads the CNI environment and stdin and prints spec JSON.
//! - [`ensure_default_network`] writes a conflist for kubenode-bridge when a node has none.

pub mod client;
mod default_network;
pub mod plugin;
pub mod spec;

#[cfg(test)]
mod golden;

pub use client::{Attachment, ClientError, CniClient, CniConfig};
pub use default_network::{
    ensure_default_network, ensure_default_network_with, DefaultNetwork, DefaultNetworkError,
    DEFAULT_CONFLIST_NAME,
};
pub use spec::{CniResult, PluginErrorReply};
