//! kubenode-bridge, kubenode's own CNI plugin.
