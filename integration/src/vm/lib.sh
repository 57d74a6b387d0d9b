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

# show TITLE FILE: prints the last 40 lines of FILE, for the host's failure report.
show() {
  echo "----- $1 -----"
  tail -n 40 "$2" 2>&1
  echo "----- end of $1 -----"
}
