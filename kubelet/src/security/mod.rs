//! Container confinement the kubelet decides before a container is created: which seccomp
//! profile it runs under (`seccomp`), and AppArmor, from pod admission on this host to the
//! profile name put into the container's spec (`apparmor`).

pub mod apparmor;
pub mod seccomp;

pub use apparmor::{AppArmorHost, SystemAppArmor};
pub use seccomp::{deprecated_annotation_warnings, seccomp_profile};
