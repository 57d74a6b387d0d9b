//! A kubenode test VM: an initramfs with busybox, the kernel modules kubenode's runtime, CNI,
//! proxy and NFS volumes need, runc, iptables (nft) with its extensions, util-linux `mount` with
//! `mount.nfs`, the test image as an OCI layout, and kubenode installed the way an operator
//! installs it (`deploy/install --root`, or a minimal copy when the script is absent). A test
//! adds a shell script (`/etc/vm/test.sh`) and boots it; the script's markers are the result.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::initramfs::Initramfs;
use super::kernel::Kernel;
use super::qemu::{Markers, Vm, VmConfig};
use crate::cmd::run_ok;
use crate::{build_busybox_image, kubenode_bin};

/// The test image's name inside the guest (imported from an OCI layout, never pulled).
pub const IMAGE_REF: &str = "kubenode.test/busybox:vm";
/// Where the guest finds the test image's OCI layout.
pub const IMAGE_LAYOUT: &str = "/opt/vmtest/image";

/// Modules the guest loads at boot, besides their dependencies: the NIC, overlay snapshots,
/// veth + bridge for CNI, the netfilter pieces iptables-nft and kube-proxy's rules use, NFS.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "overlay",
    "veth",
    "bridge",
    "br_netfilter",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_reject_ipv4",
    "xt_comment",
    "xt_conntrack",
    "xt_addrtype",
    "xt_tcpudp",
    "xt_recent",
    "xt_mark",
    "xt_MASQUERADE",
    "xt_statistic",
    "xt_nat",
    "xt_multiport",
    "xt_physdev",
    "ipt_REJECT",
    "nfsv4",
];

const INIT: &str = include_str!("init.sh");
const LIB: &str = include_str!("lib.sh");
const XTABLES_LIBS: &str = "/usr/lib/x86_64-linux-gnu/xtables";
const IPTABLES_NAMES: &[&str] = &[
    "iptables",
    "iptables-save",
    "iptables-restore",
    "iptables-nft",
    "iptables-nft-save",
    "iptables-nft-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
    "ip6tables-nft",
    "ip6tables-nft-save",
    "ip6tables-nft-restore",
];

/// How kubenode got into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// `deploy/install --root <guest> --bin-dir <stripped binaries> --no-enable`.
    DeployScript,
    /// `deploy/install` is absent: the binaries and the CNI link copied by the kit.
    Minimal,
}

/// A guest under construction.
#[derive(Debug)]
pub struct KubenodeGuest {
    /// The guest's tree.
    pub fs: Initramfs,
    kernel: Kernel,
    /// How kubenode was installed.
    pub install: Install,
}

/// What a boot produced.
#[derive(Debug)]
pub struct GuestRun {
    /// The markers the guest printed.
    pub markers: Markers,
    /// The whole serial console.
    pub console: String,
    /// Boot to power-off.
    pub elapsed: Duration,
}

impl GuestRun {
    /// Ok when no step failed and every step of `steps` passed; otherwise an error naming what
    /// failed or is missing, with the console's tail.
    pub fn expect_passed(&self, steps: &[&str]) -> anyhow::Result<()> {
        let missing: Vec<&&str> = steps
            .iter()
            .filter(|s| !self.markers.passed.iter().any(|p| p == *s))
            .collect();
        if self.markers.failed.is_empty() && missing.is_empty() {
            return Ok(());
        }
        bail!(
            "guest steps failed: {:?}; not passed: {missing:?}; passed: {:?}\nconsole tail:\n{}",
            self.markers.failed,
            self.markers.passed,
            crate::agent::tail(&self.console, 200)
        )
    }
}

/// The repository's root (the integration crate's parent directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

impl KubenodeGuest {
    /// Builds the guest tree in `/tmp/kn-<tag>`: base system, modules, runc, iptables, NFS
    /// client tools, the test image, and kubenode installed (see [`Install`]).
    pub fn build(tag: &str, kernel: &Kernel) -> anyhow::Result<KubenodeGuest> {
        let fs = Initramfs::new(tag)?;
        base_system(&fs)?;
        fs.add_modules(kernel, GUEST_MODULES)?;
        // modules.dep for the guest's `modprobe` (the unit's ExecStartPre lines use it).
        run_ok(
            Command::new("depmod")
                .arg("-b")
                .arg(fs.root())
                .arg(&kernel.version),
            Duration::from_secs(60),
        )?;
        runtime_tools(&fs)?;
        test_image(&fs)?;
        let install = install_kubenode(&fs)?;
        fs.write("/init", INIT, 0o755)?;
        fs.write("/etc/vm/lib.sh", LIB, 0o644)?;
        Ok(KubenodeGuest {
            fs,
            kernel: kernel.clone(),
            install,
        })
    }

    /// Sets the script `/init` runs once the network is up (`lib.sh` is sourced first).
    pub fn set_test_script(&self, script: &str) -> anyhow::Result<()> {
        self.fs.write(
            "/etc/vm/test.sh",
            &format!("#!/bin/sh\n. /etc/vm/lib.sh\n{script}"),
            0o755,
        )
    }

    /// Packs the initramfs, boots it (1.5 GiB, one CPU) and waits for the guest to finish or
    /// `timeout`; qemu is gone when this returns. One CPU: with two, the emulated (TCG) guest
    /// once stalled with both CPUs reported in soft lockup in two runc processes.
    pub fn run(&self, timeout: Duration) -> anyhow::Result<GuestRun> {
        let initrd = self.fs.pack()?;
        let cfg = VmConfig {
            kernel: self.kernel.vmlinuz(),
            initrd,
            console_log: self.fs.scratch().join("console.log"),
            memory_mib: 1536,
            cpus: 1,
            append: "quiet loglevel=3".into(),
            timeout,
        };
        let mut vm = Vm::boot(&cfg)?;
        let markers = vm.wait()?;
        Ok(GuestRun {
            markers,
            console: vm.console(),
            elapsed: vm.elapsed(),
        })
    }
}

/// busybox with its applets, `/etc` basics for the guest network (10.0.2.15, DNS 10.0.2.3).
fn base_system(fs: &Initramfs) -> anyhow::Result<()> {
    crate::busybox_rootfs(&fs.root())?;
    fs.write(
        "/etc/hosts",
        "127.0.0.1 localhost\n10.0.2.15 kubenode-vm\n",
        0o644,
    )?;
    fs.write("/etc/hostname", "kubenode-vm\n", 0o644)?;
    // Where Debian's kmod puts it (a unit's `ExecStartPre=/sbin/modprobe ...`).
    fs.symlink("/bin/busybox", "/sbin/modprobe")?;
    fs.write("/etc/resolv.conf", "nameserver 10.0.2.3\n", 0o644)?;
    fs.write(
        "/etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files dns\n",
        0o644,
    )?;
    Ok(())
}

/// runc, iptables-nft (every name kubenode may call, and the extensions it loads), util-linux
/// `mount`/`umount` with `mount.nfs` (the helper a kubelet's `mount -t nfs` runs), and the
/// reference CNI `portmap` plugin kubenode chains when installed.
fn runtime_tools(fs: &Initramfs) -> anyhow::Result<()> {
    fs.add_binary(Path::new("/usr/sbin/runc"), "/usr/sbin/runc", false)?;
    fs.add_binary(
        Path::new("/usr/sbin/xtables-nft-multi"),
        "/usr/sbin/xtables-nft-multi",
        false,
    )?;
    for name in IPTABLES_NAMES {
        fs.symlink("xtables-nft-multi", &format!("/usr/sbin/{name}"))?;
    }
    fs.copy_tree(Path::new(XTABLES_LIBS), XTABLES_LIBS)?;
    for ext in std::fs::read_dir(XTABLES_LIBS)
        .with_context(|| format!("reading {XTABLES_LIBS} (apt-get install iptables)"))?
    {
        fs.add_libraries_of(&ext?.path())?;
    }
    for (src, dst) in [
        ("/usr/bin/mount", "/usr/bin/mount"),
        ("/usr/bin/umount", "/usr/bin/umount"),
        ("/sbin/mount.nfs", "/sbin/mount.nfs"),
    ] {
        fs.add_binary(Path::new(src), dst, false)
            .with_context(|| format!("{src} (apt-get install mount nfs-common)"))?;
    }
    for link in ["mount.nfs4", "umount.nfs", "umount.nfs4"] {
        fs.symlink("mount.nfs", &format!("/sbin/{link}"))?;
    }
    fs.copy(Path::new("/etc/netconfig"), "/etc/netconfig")?;
    std::fs::create_dir_all(fs.path("/var/lib/nfs"))?;
    let portmap = Path::new("/usr/lib/cni/portmap");
    if portmap.exists() {
        fs.add_binary(portmap, "/usr/lib/cni/portmap", false)?;
    }
    Ok(())
}

/// The busybox test image as an OCI layout at [`IMAGE_LAYOUT`], tagged [`IMAGE_REF`].
fn test_image(fs: &Initramfs) -> anyhow::Result<()> {
    let work = fs.scratch().join("image");
    let layout = build_busybox_image(&work)?;
    let index_path = layout.layout_dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
        serde_json::Value::String(IMAGE_REF.into());
    std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
    fs.copy_tree(&layout.layout_dir, IMAGE_LAYOUT)?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// Stages stripped `kubenode` and `kubenode-shim` and installs them into the guest with
/// `deploy/install` when the repository has it, else by a minimal copy.
fn install_kubenode(fs: &Initramfs) -> anyhow::Result<Install> {
    let bin = kubenode_bin();
    let shim = bin.with_file_name("kubenode-shim");
    if !shim.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --workspace --bins`",
            shim.display()
        );
    }
    let staged = fs.scratch().join("bin");
    std::fs::create_dir_all(&staged)?;
    for (src, name) in [(&bin, "kubenode"), (&shim, "kubenode-shim")] {
        run_ok(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(staged.join(name))
                .arg(src),
            Duration::from_secs(120),
        )
        .with_context(|| format!("strip {} (apt-get install binutils)", src.display()))?;
        fs.add_libraries_of(src)?;
    }
    let script = repo_root().join("deploy/install");
    let how = if script.is_file() {
        run_ok(
            Command::new(&script)
                .arg("--root")
                .arg(fs.root())
                .arg("--bin-dir")
                .arg(&staged)
                .arg("--no-enable"),
            Duration::from_secs(120),
        )
        .context("deploy/install into the guest's root")?;
        Install::DeployScript
    } else {
        fs.copy(&staged.join("kubenode"), "/usr/local/bin/kubenode")?;
        fs.copy(
            &staged.join("kubenode-shim"),
            "/usr/local/bin/kubenode-shim",
        )?;
        fs.symlink("/usr/local/bin/kubenode", "/opt/cni/bin/kubenode-bridge")?;
        Install::Minimal
    };
    std::fs::remove_dir_all(&staged)?;
    Ok(how)
}
