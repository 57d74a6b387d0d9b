# Helpers for a VM test script: /etc/vm/test.sh starts with `. /etc/vm/lib.sh` (the kit adds it).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# pass STEP [DETAILS]: reports a passed step.
pass() { echo "KNVM:PASS $1 ${2:+$2 }(uptime $(cut -d" " -f1 /proc/uptime) s)"; }

# fail STEP WHY: reports a failed step and ends the script.
fail() {
  echo "KNVM:FAIL $1: $2 (uptime $(cut -d" " -f1 /proc/uptime) s)"
  exit 99
}

# wait_for SECONDS CMD...: runs CMD about once a second until it succeeds; fails after SECONDS.
wait_for() {
  n=$1
  shift
  i=0
  while [ "$i" -lt "$n" ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
    i=$((i + 1))
  done
  return 1
}

# kubenode ARGS...: the installed CLI, each call bounded to 60 s (busybox `timeout`). A CLI call
# to an agent that stopped answering must fail, not hang the guest's script: `wait_for` counts
# attempts, and one hung attempt would outlast the host's deadline with nothing in the report.
# The agent itself is started by its full path and is not bounded.
kubenode() { timeout 60 /usr/local/bin/kubenode "$@"; }

# show TITLE FILE: prints the last 40 lines of FILE, for the host's failure report.
show() {
  echo "----- $1 -----"
  tail -n 40 "$2" 2>&1
  echo "----- end of $1 -----"
}
