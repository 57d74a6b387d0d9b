//! Container confinement the kubelet decides before a container is created: which seccomp
//! profile it runs under (`seccomp`), and AppArmor, from pod admission on this host to the
//! profile name put into the container's spec (`apparmor`); and whether this node can run a
//! pod in its own user namespace (`userns`).

pub mod apparmor;
pub mod seccomp;
pub mod userns;

pub use apparmor::{AppArmorHost, SystemAppArmor};
pub use seccomp::{deprecated_annotation_warnings, seccomp_profile};
