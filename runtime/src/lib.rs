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
//!
//! The kubelet's sequence for one pod:
//!
//! ```text
//! Runtime::new(RuntimeConfig { root_dir, run_dir, log_dir, runtime_path, shim_binary, .. })
//! runtime.recover()                                  // once, at start
//! let sb = runtime.create_sandbox(&SandboxConfig { pod, cgroup_parent, .. })?;
//! CNI ADD on sb.netns_path                           // the kubelet's job
//! runtime.start_sandbox(&sb.id)?;                    // pause holds net/ipc/uts
//! let id = runtime.create_container(&sb.id, &ContainerConfig { container, image, restart_count, mounts, .. })?;
//! runtime.start_container(&id)?;
//! runtime.container_status(&id)? / exec(&id, cmd, timeout)? / stop_container(&id, grace, signal)?
//! runtime.remove_container(&id)?;
//! CNI DEL; runtime.stop_and_remove_sandbox(&sb.id)?;
//! ```

mod container;
mod error;
mod fsutil;
pub mod host;
pub mod image;
pub mod oci;
mod runtime;
mod sandbox;
pub mod shim;
mod signal;
pub mod spec;
mod store;
pub mod testing;

#[cfg(test)]
mod runtime_tests;

pub use container::{ContainerConfig, ContainerState, ContainerStatus, ExecResult, ImageRef};
pub use error::{ErrorList, RuntimeError};
pub use host::Host;
pub use oci::OciRuntime;
pub use runtime::{default_shim_binary, Runtime, RuntimeConfig};
pub use sandbox::{Sandbox, SandboxConfig, SandboxOptions, SandboxState};
pub use shim::ShimLauncher;
pub use signal::{KillScope, Signal};

/// The name of the exit record a shim writes in its sandbox's or container's directory (see
/// [`Runtime::exit_record_dirs`]): written to a temporary name, then renamed to this one.
pub const EXIT_RECORD: &str = store::EXIT;
