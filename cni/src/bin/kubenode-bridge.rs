//! kubenode-bridge as a standalone executable (the kubenode binary dispatches to the same code
//! by argv[0]); used by the cni tests and benchmark without building the whole agent.

fn main() {
    std::process::exit(kubenode_cni::plugin::main());
}
