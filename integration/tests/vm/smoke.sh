# VM smoke: kubenode as installed, started as the unit starts it, runs a pod that
# answers on its IP. Set by the host: IMAGE, TOKEN.
[ -x /usr/local/bin/kubenode ] && [ -L /opt/cni/bin/kubenode-bridge ] || fail installed "kubenode or its CNI link missing"
pass installed
import_image
start_agent
pod=web-$(hostname)
cat >"$manifests/web.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: $IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && echo $TOKEN > /www/index.html && exec httpd -f -p 8080 -h /www']
EOF
wait_running "$pod" pod-running
ip=$(pod_ip "$pod")
# busybox's static wget crashes on this glibc; an HTTP/1.0 request through nc does the job.
get() { printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$ip" 8080; }
answers() { get >/tmp/body && grep -q "^$TOKEN" /tmp/body; }
wait_for 30 answers || {
  get; ip addr; ip route; iptables-save; kubenode logs "$pod"
  show "agent log" /var/log/kubenode.log
  fail pod-answers "no answer with the token from http://$ip:8080/"
}
pass pod-answers
rm "$manifests/web.yaml"
wait_for 60 gone "$pod" || fail pod-removed "pod $pod still listed 60 s after its manifest went"
pass pod-removed
# Not on a terminal (as under systemd, where stderr is the journal): plain text, no ANSI codes.
[ -s /var/log/kubenode.log ] || fail log-plain "the agent wrote no log"
if grep -q "$(printf '\033')" /var/log/kubenode.log; then fail log-plain "ANSI escape codes in the agent's log"; fi
pass log-plain
