//! A reusable kit for tests that need a real kernel of their own (NFS, which this machine's
//! kernel lacks) or a whole machine (installing kubenode as an operator does): a Debian kernel
//! package fetched once into a cache ([`Kernel`]), an initramfs builder ([`Initramfs`]), qemu
//! under TCG with a hard timeout and the serial console as the result channel ([`Vm`]), a
//! userspace NFSv4 server on the host's loopback ([`NfsServer`]), and a ready kubenode guest
//! ([`KubenodeGuest`]).
//!
//! The guest reports through console markers (`KNVM:PASS step`, `KNVM:FAIL step: why`,
//! `KNVM:DONE`), printed by the helpers of `lib.sh`; the host judges them ([`GuestRun`]).
//! Under TCG a Debian kernel reaches userspace in about 9 s.

mod guest;
mod initramfs;
mod kernel;
mod lock;
mod nfs;
mod qemu;

pub use guest::{
    repo_root, GuestRun, Install, KubenodeGuest, GUEST_MODULES, IMAGE_LAYOUT, IMAGE_REF,
};
pub use initramfs::{shared_libraries, Initramfs, MODULE_LIST};
pub use kernel::{cache_dir, current_package, Kernel};
pub use lock::FileLock;
pub use nfs::{NfsServer, EXPORT_PATH, NFS_ADDR};
pub use qemu::{parse_markers, Markers, Vm, VmConfig};

/// Why VM tests cannot run here, if they cannot: qemu is not installed, or no kernel package is
/// cached and apt cannot name one. Checked without downloading anything.
pub fn unavailable() -> Option<String> {
    if let Some(why) = qemu::qemu_missing() {
        return Some(why);
    }
    if !crate::is_root() {
        return Some("not root".into());
    }
    if let Err(e) = current_package() {
        let cached = std::fs::read_dir(cache_dir())
            .map(|d| d.flatten().any(|e| e.path().join(".complete").exists()))
            .unwrap_or(false);
        if !cached {
            return Some(format!("no kernel package: {e:#}"));
        }
    }
    None
}
