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
