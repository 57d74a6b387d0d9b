//! The container runtime of kubenode: OCI specs from Kubernetes containers,
//! the OCI runtime driver (runc by default), the per-container shim, pod
//! sandboxes (a network namespace plus a built-in pause container) and the
//! recovery of all of it from disk after an agent restart.
//!
//! The kubelet uses [`Runtime`]; everything else is an implementation detail
//! except the traits at the OS boundary ([`OciRuntime`], [`Host`],
//! [`ShimLauncher`]) and their recording test implementations in [`testing`].
//!
//! All [`Runtime`] methods block (they run external commands); call them from
//! `tokio::task::spawn_blocking` in async code.

mod container;
mod error;
mod fsutil;
pub mod host;
pub mod image;
pub mod oci;
mod runtime;
mod sandbox;
pub mod shim;
pub mod spec;
mod store;
pub mod testing;

pub use container::{ContainerConfig, ContainerState, ContainerStatus, ExecResult, ImageRef};
pub use error::{ErrorList, RuntimeError};
pub use host::Host;
pub use oci::OciRuntime;
pub use runtime::{Runtime, RuntimeConfig};
pub use sandbox::{Sandbox, SandboxConfig, SandboxState};
pub use shim::ShimLauncher;
