//! Building a guest's initramfs: a directory tree filled with files, binaries (with every shared
//! library `ldd` lists), kernel modules (with their dependencies, in load order), packed as a
//! `newc` cpio archive the kernel unpacks into its root filesystem.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::kernel::Kernel;
use crate::cmd::run_ok;
use crate::TestDir;

/// The file listing the guest's modules, one path (relative to `/`) a line, in load order.
pub const MODULE_LIST: &str = "etc/vm/modules";

/// An initramfs under construction in `/tmp/kn-<tag>/root`, removed on drop.
#[derive(Debug)]
pub struct Initramfs {
    dir: TestDir,
}

fn rel(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

impl Initramfs {
    /// An empty tree with the top-level directories a Linux userland expects.
    pub fn new(tag: &str) -> anyhow::Result<Initramfs> {
        let dir = TestDir::new(tag)?;
        let fs = Initramfs { dir };
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "etc/vm", "proc", "sys", "dev",
            "run", "tmp", "var/lib", "var/log", "root", "mnt",
        ] {
            std::fs::create_dir_all(fs.root().join(d))?;
        }
        std::fs::set_permissions(
            fs.root().join("tmp"),
            std::fs::Permissions::from_mode(0o1777),
        )?;
        Ok(fs)
    }

    /// The tree's root directory (the guest's `/`).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The scratch directory next to the tree (for the archive, logs, ...).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The host path of guest path `guest` (absolute or relative).
    pub fn path(&self, guest: impl AsRef<Path>) -> PathBuf {
        self.root().join(rel(guest.as_ref()))
    }

    /// Writes `contents` to guest path `guest` with permission bits `mode`.
    pub fn write(&self, guest: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
        let dst = self.path(guest);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dst, contents).with_context(|| format!("writing {}", dst.display()))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// A symbolic link at guest path `guest` pointing to `target`.
    pub fn symlink(&self, target: &str, guest: &str) -> anyhow::Result<()> {
        let dst = self.path(guest);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&dst);
        symlink(target, &dst).with_context(|| format!("linking {} -> {target}", dst.display()))
    }

    /// Copies host file `src` (following links) to guest path `guest`, keeping its mode.
    pub fn copy(&self, src: &Path, guest: &str) -> anyhow::Result<()> {
        let dst = self.path(guest);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&dst);
        std::fs::copy(src, &dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        Ok(())
    }

    /// Copies a directory tree `src` to guest path `guest` (`cp -a`).
    pub fn copy_tree(&self, src: &Path, guest: &str) -> anyhow::Result<()> {
        let dst = self.path(guest);
        std::fs::create_dir_all(&dst)?;
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(&dst),
            Duration::from_secs(120),
        )?;
        Ok(())
    }

    /// Copies executable `src` to guest path `guest` (stripped of debug information when
    /// `strip`, which makes a debug Rust binary ~6x smaller) and the shared libraries it needs.
    pub fn add_binary(&self, src: &Path, guest: &str, strip: bool) -> anyhow::Result<()> {
        let dst = self.path(guest);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&dst);
        if strip {
            run_ok(
                Command::new("strip")
                    .arg("--strip-debug")
                    .arg("-o")
                    .arg(&dst)
                    .arg(src),
                Duration::from_secs(120),
            )
            .with_context(|| format!("strip {} (apt-get install binutils)", src.display()))?;
        } else {
            self.copy(src, guest)?;
        }
        self.add_libraries_of(src)
    }

    /// Copies every shared library `ldd src` lists to the same path in the guest. A static
    /// binary needs none.
    pub fn add_libraries_of(&self, src: &Path) -> anyhow::Result<()> {
        for lib in shared_libraries(src)? {
            let guest = lib.to_string_lossy().into_owned();
            if !self.path(&guest).exists() {
                self.copy(&lib, &guest)?;
            }
        }
        Ok(())
    }

    /// Copies the modules `names` need (dependencies included) into `lib/modules/<version>` and
    /// lists them in load order in [`MODULE_LIST`] (appending to what is listed already).
    pub fn add_modules(&self, kernel: &Kernel, names: &[&str]) -> anyhow::Result<()> {
        let files = kernel.modules_for(names)?;
        let list_path = self.path(MODULE_LIST);
        let mut list = std::fs::read_to_string(&list_path).unwrap_or_default();
        for file in files {
            let in_tree = file.strip_prefix(&kernel.root).with_context(|| {
                format!("{} is outside {}", file.display(), kernel.root.display())
            })?;
            let guest = in_tree.to_string_lossy().into_owned();
            if !list.lines().any(|l| l == guest) {
                self.copy(&file, &guest)?;
                list.push_str(&guest);
                list.push('\n');
            }
        }
        std::fs::write(&list_path, list)?;
        Ok(())
    }

    /// Packs the tree into an uncompressed `newc` cpio archive at `scratch/initrd.cpio`.
    pub fn pack(&self) -> anyhow::Result<PathBuf> {
        let out = self.dir.join("initrd.cpio");
        let script = format!(
            "cd '{}' && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 > '{}'",
            self.root().display(),
            out.display()
        );
        run_ok(
            Command::new("sh").arg("-c").arg(&script),
            Duration::from_secs(180),
        )
        .context("packing the initramfs (apt-get install cpio)")?;
        Ok(out)
    }
}

/// The shared libraries (absolute paths, the dynamic loader included) that `ldd` lists for `bin`.
pub fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = crate::cmd::run(Command::new("ldd").arg(bin), Duration::from_secs(30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // `not a dynamic executable`: static, nothing to copy.
        if text.contains("not a dynamic")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("ldd {}: {line}", bin.display());
        }
        // `libx.so.1 => /lib/.../libx.so.1 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_of_a_dynamic_binary_lists_libc_and_the_loader() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("libc.so")));
        assert!(libs
            .iter()
            .any(|l| l.to_string_lossy().contains("ld-linux")));
    }

    #[test]
    fn ldd_of_a_static_binary_lists_nothing() {
        assert!(shared_libraries(Path::new("/bin/busybox"))
            .unwrap()
            .is_empty());
    }
}
