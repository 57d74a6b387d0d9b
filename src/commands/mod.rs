//! One module per subcommand; each is a thin layer over the library crates.

pub mod agent;
pub mod cni_plugin;
pub mod describe;
pub mod exec;
pub mod get;
pub mod image;
pub mod logs;
pub mod proxy;
pub mod shim;
pub mod version;

/// The error of a subcommand that is designed but not built yet: a clear line and a non-zero exit.
pub fn not_implemented(what: &str) -> anyhow::Result<()> {
    anyhow::bail!("`kubenode {what}` is not implemented yet")
}
