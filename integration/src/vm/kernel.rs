//! A Debian kernel for test VMs: the current `linux-image-<abi>-amd64` package, fetched with
//! `apt-get download`, unpacked and `depmod`ed once into a cache directory that survives test
//! runs, and asked (`modprobe --show-depends`) which module files a set of modules needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cmd::{run, run_ok};

/// Where kernels are cached between runs (override with `KUBENODE_TEST_CACHE`).
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/kubenode-test";
/// The metapackage whose dependency names the current kernel image package.
const META_PACKAGE: &str = "linux-image-amd64";
const APT_TIMEOUT: Duration = Duration::from_secs(300);

/// The cache directory in use.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("KUBENODE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
}

/// An unpacked, `depmod`ed kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The package name, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// The module directory's version, e.g. `6.1.0-56-amd64`.
    pub version: String,
    /// The unpacked package (`boot/`, `lib/modules/<version>/`).
    pub root: PathBuf,
}

/// The kernel image package `linux-image-amd64` depends on (`apt-cache depends`, no download).
pub fn current_package() -> anyhow::Result<String> {
    let out = run_ok(
        Command::new("apt-cache").args(["depends", META_PACKAGE]),
        Duration::from_secs(60),
    )
    .context("asking apt-cache which kernel linux-image-amd64 depends on")?;
    let text = String::from_utf8_lossy(&out.stdout);
    kernel_dependency(&text)
        .with_context(|| format!("no linux-image-*-amd64 dependency in: {text}"))
}

/// The `linux-image-<abi>-amd64` dependency in `apt-cache depends linux-image-amd64` output.
fn kernel_dependency(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_string)
}

/// A package already unpacked in the cache (the newest one), for machines that cannot reach
/// the Debian mirror any more.
fn cached_package() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache_dir())
        .ok()?
        .flatten()
        .filter(|e| e.path().join(".complete").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("linux-image-"))
        .collect();
    names.sort();
    names.pop()
}

impl Kernel {
    /// The current kernel package, from the cache or downloaded (`apt-get download`, which needs
    /// a prior `apt-get update`) and unpacked into it. Concurrent callers are serialized by a
    /// lock file in the cache directory.
    pub fn fetch() -> anyhow::Result<Kernel> {
        let mut package = match current_package() {
            Ok(p) => p,
            Err(e) => cached_package().with_context(|| format!("{e:#}; and nothing cached"))?,
        };
        let cache = cache_dir();
        std::fs::create_dir_all(&cache)
            .with_context(|| format!("creating the kernel cache {}", cache.display()))?;
        let _lock = super::lock::FileLock::acquire(&cache.join(".lock"))?;
        let mut root = cache.join(&package);
        if !root.join(".complete").exists() {
            match unpack(&package, &cache, &root) {
                Ok(()) => prune(&cache, &package),
                // A newer kernel that cannot be fetched (mirror unreachable): the cached one
                // still tests the same code.
                Err(e) => {
                    let cached = cached_package().with_context(|| format!("{e:#}"))?;
                    progress(&format!("{e:#}; using the cached {cached}"));
                    root = cache.join(&cached);
                    package = cached;
                }
            }
        }
        let version = package
            .strip_prefix("linux-image-")
            .unwrap_or(&package)
            .to_string();
        if !root.join("lib/modules").join(&version).is_dir() {
            bail!("{} has no lib/modules/{version}", root.display());
        }
        Ok(Kernel {
            package,
            version,
            root,
        })
    }

    /// The kernel image (`boot/vmlinuz-<version>`).
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.version))
    }

    /// `lib/modules/<version>` of the unpacked package.
    pub fn module_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }

    /// The module files `names` need, dependencies first, each once; modules built into the
    /// kernel are skipped. An unknown module name is an error.
    pub fn modules_for(&self, names: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = Vec::new();
        for name in names {
            let out = run(
                Command::new("modprobe").arg("-d").arg(&self.root).args([
                    "-S",
                    &self.version,
                    "--show-depends",
                    name,
                ]),
                Duration::from_secs(30),
            )?;
            if !out.status.success() {
                bail!(
                    "modprobe --show-depends {name} for {}: {}",
                    self.version,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // `insmod /path/x.ko [params]` or `builtin x`.
                if let Some(path) = line.strip_prefix("insmod ") {
                    let path = PathBuf::from(path.split_whitespace().next().unwrap_or_default());
                    if !files.contains(&path) {
                        files.push(path);
                    }
                }
            }
        }
        Ok(files)
    }
}

/// Downloads `package` into `cache` and unpacks it into `root` (through a temporary directory,
/// marked complete only after `depmod` succeeded).
fn unpack(package: &str, cache: &Path, root: &Path) -> anyhow::Result<()> {
    let debs = |cache: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(cache)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&format!("{package}_")))
                            && p.extension().is_some_and(|e| e == "deb")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if debs(cache).is_empty() {
        progress(&format!("downloading {package} into {}", cache.display()));
        run_ok(
            Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(cache),
            APT_TIMEOUT,
        )
        .with_context(|| format!("apt-get download {package} (did `apt-get update` run?)"))?;
    }
    let deb = debs(cache)
        .pop()
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let partial = cache.join(format!(".{package}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let _ = std::fs::remove_dir_all(root);
    run_ok(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial),
        APT_TIMEOUT,
    )
    .with_context(|| format!("unpacking {}", deb.display()))?;
    let version = package.strip_prefix("linux-image-").unwrap_or(package);
    run_ok(
        Command::new("depmod").arg("-b").arg(&partial).arg(version),
        Duration::from_secs(120),
    )
    .context("depmod (apt-get install kmod)")?;
    std::fs::rename(&partial, root)
        .with_context(|| format!("renaming {} to {}", partial.display(), root.display()))?;
    std::fs::write(root.join(".complete"), package)?;
    // The unpacked tree is what is used; the package can be downloaded again if needed.
    let _ = std::fs::remove_file(&deb);
    Ok(())
}

/// Removes other kernel packages (and their unpacked trees) from the cache: apt moved on.
fn prune(cache: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name == keep || name.starts_with(&format!("{keep}_"));
        if name.starts_with("linux-image-") && !ours {
            let path = e.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Progress lines for slow, one-time steps (the harness has no logger; tests print to stderr).
fn progress(msg: &str) {
    eprintln!("vm: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_dependency_is_read_from_apt_cache_output() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n  Breaks: x\n";
        assert_eq!(
            kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            kernel_dependency("linux-image-amd64\n  Depends: libc6\n"),
            None
        );
    }
}
