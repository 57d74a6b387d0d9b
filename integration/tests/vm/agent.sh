# Sourced into every VM test script (after lib.sh): the agent as an operator runs it.
unit=/etc/systemd/system/kubenode.service
config=/etc/kubenode/config.yaml
conf() { [ -f "$config" ] && sed -n "s/^$1: *//p" "$config" | tail -n 1; }
root_dir=$(conf rootDir); root_dir=${root_dir:-/var/lib/kubenode}
manifests=$(conf staticPodPath); manifests=${manifests:-/etc/kubenode/manifests}
mkdir -p "$manifests"

import_image() {
  kubenode image import --root-dir "$root_dir" /opt/vmtest/image >/tmp/import.log 2>&1 ||
    { cat /tmp/import.log; fail image-import "kubenode image import failed"; }
  pass image-import
}

# The unit's EnvironmentFile, ExecStartPre and ExecStart lines, as systemd would run them
# (without systemd: an initramfs has none); the kit's minimal install has no unit.
start_agent() {
  if [ -f "$unit" ]; then
    envfile=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$unit" | tail -n 1)
    if [ -n "$envfile" ] && [ -f "$envfile" ]; then set -a; . "$envfile"; set +a; fi
    while read -r pre; do
      [ -n "$pre" ] || continue
      case $pre in
        -*) eval "${pre#-}" || true ;;
        *) eval "$pre" || fail agent-start "ExecStartPre $pre failed" ;;
      esac
    done <<EOF
$(sed -n 's/^ExecStartPre=//p' "$unit")
EOF
    cmd=$(sed -n 's/^ExecStart=//p' "$unit" | tail -n 1)
    [ -n "$cmd" ] || fail agent-start "no ExecStart in $unit"
    # The limits the unit sets that change what the agent does (it clamps rlimits to its own).
    nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit" | tail -n 1)
    if [ -n "$nofile" ]; then ulimit -n "$nofile" || fail agent-start "LimitNOFILE=$nofile"; fi
    oom=$(sed -n 's/^OOMScoreAdjust=//p' "$unit" | tail -n 1)
    if [ -n "$oom" ]; then echo "$oom" >/proc/self/oom_score_adj || fail agent-start "OOMScoreAdjust=$oom"; fi
    pass agent-from-unit "$cmd"
  else
    cmd="/usr/local/bin/kubenode agent --pod-cidr 10.244.1.0/24"
  fi
  echo "starting the agent: $cmd"
  eval "$cmd" >/var/log/kubenode.log 2>&1 &
  wait_for 60 kubenode get pods -A ||
    { show "agent log" /var/log/kubenode.log; fail agent-start "the agent's API did not answer within 60 s"; }
  pass agent-start
}

pod_json() { kubenode get pods "$1" -o json 2>/dev/null; }
running() { pod_json "$1" | grep -q '"phase": *"Running"'; }
gone() { ! kubenode get pods -A | grep -q "$1"; }
pod_ip() { pod_json "$1" | sed -n 's/.*"podIP": *"\([0-9.]*\)".*/\1/p' | head -n 1; }

# wait_running POD STEP: waits (120 s) for phase Running.
wait_running() {
  wait_for 120 running "$1" || {
    kubenode get pods -A; kubenode describe pod "$1"; show "agent log" /var/log/kubenode.log
    fail "$2" "pod $1 not Running within 120 s"
  }
  pass "$2"
}
