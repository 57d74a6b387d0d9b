//! `kubenode cni-plugin` (or argv[0] `kubenode-bridge`): kubenode's own CNI plugin.

/// Runs the plugin per the CNI spec (environment + stdin); returns the process exit code.
pub fn run() -> i32 {
    kubenode_cni::plugin::main()
}
