//! `kubenode version`.

/// `<version> (commit <sha>)`, also used by `--version`.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KUBENODE_GIT_COMMIT"),
    ")"
);

/// Prints the version and the git commit the binary was built from.
pub fn run() -> anyhow::Result<()> {
    println!("kubenode {VERSION_LINE}");
    Ok(())
}
