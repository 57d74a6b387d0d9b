# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file
# Sourced by vagrant/scripts/*: the lab's constants, the node table and kubenode's directories.
#
# A Vagrant VM uses the standard directories. The one-machine lab runs the same scripts inside a
# node's network namespace with LAB_STATE_DIR set: every directory of that node is then below it
# (root/, run/, logs/, manifests/, cni/net.d, cni/bin, etc/kubenode/config.yaml,
# etc/default/kubenode), and KUBENODE_BIN names the binary under test.

lab_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
repo_dir=$(dirname "$lab_dir")

LAB_CLUSTER_CIDR=10.244.0.0/16
LAB_SERVICE_CIDR=10.96.0.0/12
LAB_IMAGE=kubenode.local/busybox:1.0
LAB_READ_ONLY_PORT=10255
# The cluster variant's control plane (vagrant/scripts/control-plane) and its Kubernetes minor.
LAB_CONTROL_PLANE_NAME="cp"
LAB_CONTROL_PLANE_IP=192.168.56.10
LAB_K8S_MINOR=v1.32

kubenode=${KUBENODE_BIN:-/usr/local/bin/kubenode}
if [[ -n ${LAB_STATE_DIR:-} ]]; then
  state=$LAB_STATE_DIR
  config_file=$state/etc/kubenode/config.yaml
  default_file=$state/etc/default/kubenode
  root_dir=$state/root
  run_dir=$state/run
  log_dir=$state/logs
  manifest_dir=$state/manifests
  cni_conf_dir=$state/cni/net.d
  cni_bin_dir=$state/cni/bin
else
  config_file=/etc/kubenode/config.yaml
  default_file=/etc/default/kubenode
  root_dir=/var/lib/kubenode
  run_dir=/run/kubenode
  log_dir=/var/log/pods
  manifest_dir=/etc/kubenode/manifests
  cni_conf_dir=/etc/cni/net.d
  cni_bin_dir=/opt/cni/bin
fi

# Prints the node table without comments: `name address podCIDR` lines.
lab_nodes() { grep -Ev '^[[:space:]]*(#|$)' "$lab_dir/nodes"; }

# NAME -> sets node_name, node_ip, pod_cidr; fails for a name not in the table.
lab_node() {
  local name ip cidr
  while read -r name ip cidr; do
    if [[ $name == "$1" ]]; then
      node_name=$name node_ip=$ip pod_cidr=$cidr
      return 0
    fi
  done < <(lab_nodes)
  echo "${0##*/}: no node named '$1' in $lab_dir/nodes" >&2
  return 1
}

# Writes stdin to FILE through a temporary file and a rename, only when the content changed.
# Prints "changed" when it wrote.
write_if_changed() {
  local file=$1 tmp
  mkdir -p "$(dirname "$file")"
  tmp=$(dirname "$file")/.$(basename "$file").tmp.$$
  cat >"$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$file"
    echo changed
  fi
}

# Installs packages from upstream's Kubernetes repository (pkgs.k8s.io, $LAB_K8S_MINOR) and
# Debian's (containerd): the cluster variant's control plane and the nodes' kubeadm.
install_k8s_packages() {
  local keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
  export DEBIAN_FRONTEND=noninteractive
  if [[ ! -f $keyring ]]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends ca-certificates curl gpg
    mkdir -p /etc/apt/keyrings
    curl -fsSL "https://pkgs.k8s.io/core:/stable:/$LAB_K8S_MINOR/deb/Release.key" | gpg --dearmor -o "$keyring"
    echo "deb [signed-by=$keyring] https://pkgs.k8s.io/core:/stable:/$LAB_K8S_MINOR/deb/ /" \
      >/etc/apt/sources.list.d/kubernetes.list
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "$@"
  apt-mark hold "$@" >/dev/null
}
