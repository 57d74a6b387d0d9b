//! The privileged end-to-end test harness shared by every kubenode test in `integration/tests/`.
//!
//! Everything here uses the real thing: Debian's `docker-registry` on loopback, network namespaces
//! made with `ip netns`, images built from `busybox-static`. Each test names what it creates with a
//! [`unique_tag`], and a [`LeakGuard`] checks at the end that nothing carrying that tag survives.
//! Every external command runs with a timeout ([`run`]), and every helper that creates something
//! removes it on drop, also when the test fails or panics.
//!
//! Privileged tests are libtest-mimic trials made with [`privileged`]: they run when the process is
//! root (CI always is) and are reported as `ignored` otherwise, with the reason printed once.

pub mod agent;
pub mod apiserver;
pub mod cluster;
mod cmd;
mod curl;
mod guard;
mod image;
pub mod interrupt;
pub mod kubectl;
pub mod lab;
mod netns;
pub mod pods;
mod registry;
pub mod soak;
mod trials;
pub mod vm;

pub use agent::TestAgent;
pub use cmd::{run, run_ok, runc_list, sh, Spawned};
pub use curl::{curl_kubelet, KubeletReply};
pub use guard::LeakGuard;
pub use image::{
    build_busybox_image, build_busybox_image_with, busybox_rootfs, derive_image, push_image,
    ImageLayout,
};
pub use netns::{ip_addr_add, link_up, veth, Netns};
pub use registry::{TestRegistry, REGISTRY_PASSWORD, REGISTRY_USER};
pub use trials::{is_root, privileged, run_tests, Trial};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A CNI plugin for chaining after another: ADD fails while `$GATE` exists, waits (at most
/// 60 s) while `$HANG` exists after touching `$HANG.started`, and otherwise passes the previous
/// result on.
const GATE_PLUGIN: &str = r#"#!/bin/sh
in=$(cat)
if [ "$CNI_COMMAND" = ADD ] && [ -e "$GATE" ]; then
  echo '{"cniVersion":"1.0.0","code":11,"msg":"the test gate is closed"}'
  exit 1
fi
if [ "$CNI_COMMAND" = ADD ] && [ -e "$HANG" ]; then
  touch "$HANG.started"
  i=0
  while [ -e "$HANG" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
fi
if [ "$CNI_COMMAND" = ADD ] || [ "$CNI_COMMAND" = CHECK ]; then
  printf '%s' "$in" | jq -c .prevResult
fi
if [ "$CNI_COMMAND" = VERSION ]; then
  echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}'
fi
"#;

/// Writes the gate plugin ([`GATE_PLUGIN`]) to `plugin` (mode 0755), closed while `gate` exists
/// and holding ADD while `hang` exists.
pub fn write_gate_plugin(plugin: &Path, gate: &Path, hang: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let script = GATE_PLUGIN
        .replace("$GATE", &gate.to_string_lossy())
        .replace("$HANG", &hang.to_string_lossy());
    std::fs::write(plugin, script)?;
    std::fs::set_permissions(plugin, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A bench's numeric option `name VALUE` from the command line (`--runs 20`), or `default`
/// when it is absent or not a number.
pub fn bench_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A short tag unique to this process and call, e.g. `cn3f9a1`: `prefix` (keep it ≤ 3 chars) plus
/// 4–5 characters, so `<tag>` fits in a 15-character interface name with room for a suffix.
pub fn unique_tag(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503);
    format!("{prefix}{:05x}", seed & 0xf_ffff)
}

/// A temporary directory `/tmp/kn-<tag>`, removed (after unmounting anything below it) on drop.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `/tmp/kn-<tag>` (empty; an old one with the same name is removed first).
    pub fn new(tag: &str) -> anyhow::Result<TestDir> {
        let path = PathBuf::from(format!("/tmp/kn-{tag}"));
        if path.exists() {
            guard::unmount_below(&path);
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(TestDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        guard::unmount_below(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The `kubenode` binary of this build (`target/<profile>/kubenode`, next to the test binary's
/// `deps/` folder). Panics with a clear message when it has not been built.
pub fn kubenode_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test binaries live in `target/<profile>/deps`, bench binaries in `target/<profile>`.
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("kubenode"))
        .collect();
    candidates
        .iter()
        .find(|b| b.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
            "{} is missing: build it first with `cargo build --bin kubenode` (scripts/test does)",
            candidates[0].display()
        )
        })
}
