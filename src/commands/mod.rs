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
