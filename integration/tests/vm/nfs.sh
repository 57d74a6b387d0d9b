# NFS end to end: mount -t nfs from the guest, then pods with nfs volumes (read-write,
# readOnly, a missing export). Set by the host: IMAGE, READ_TOKEN (in the export's file
# token), GUEST_TOKEN and POD_TOKEN (written into the export, checked by the host).
mkdir -p /mnt/nfs
mount -v -t nfs 10.0.2.2:/export /mnt/nfs >/tmp/mount.log 2>&1 || { cat /tmp/mount.log; fail nfs-mount "mount -t nfs 10.0.2.2:/export failed"; }
grep -qx "$READ_TOKEN" /mnt/nfs/token || fail nfs-mount "the host's token is not in /mnt/nfs/token"
echo "$GUEST_TOKEN" >/mnt/nfs/from-guest || fail nfs-mount "writing /mnt/nfs/from-guest failed"
cat /tmp/mount.log
how=$(grep ' /mnt/nfs ' /proc/mounts)
umount /mnt/nfs || fail nfs-mount "umount failed"
pass nfs-mount "$how"
import_image
start_agent
pod=nfs-reader-$(hostname)
cat >"$manifests/nfs.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: nfs-reader
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: share
    nfs:
      server: 10.0.2.2
      path: /export
  containers:
  - name: reader
    image: $IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'cat /data/token && echo "$POD_TOKEN" >/data/from-pod && sync && sleep 3600']
    volumeMounts:
    - name: share
      mountPath: /data
EOF
wait_running "$pod" pod-running
read_it() { kubenode logs "$pod" -c reader >/tmp/reader.log 2>&1; grep -qx "$READ_TOKEN" /tmp/reader.log; }
# The container's first line is the file or cat's error: stop waiting at either.
said() { read_it || grep -q "can't open" /tmp/reader.log; }
wait_for 30 said; read_it || { kubenode logs "$pod" -c reader; fail pod-read "the pod's output lacks the host's token"; }
pass pod-read
grep -q ' nfs4\? ' /proc/mounts || fail volume-mounted "no nfs mount in /proc/mounts while the pod runs"
pass volume-mounted "$(grep ' nfs4\? ' /proc/mounts)"

# readOnly: the volume is mounted ro and the pod's write is refused.
ro_pod=nfs-ro-$(hostname)
cat >"$manifests/nfs-ro.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: nfs-ro
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: share-ro
    nfs:
      server: 10.0.2.2
      path: /export
      readOnly: true
  containers:
  - name: reader
    image: $IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'cat /data/token; if echo x >/data/ro-write; then echo WRITE-OK; else echo WRITE-REFUSED; fi; sleep 3600']
    volumeMounts:
    - name: share-ro
      mountPath: /data
EOF
# A missing export path: the mount fails, the pod does not start, an event carries the server's
# error and no mount point is left.
bad_pod=nfs-bad-$(hostname)
cat >"$manifests/nfs-bad.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: nfs-bad
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: missing
    nfs:
      server: 10.0.2.2
      path: /export/no-such-dir
  containers:
  - name: c
    image: $IMAGE
    imagePullPolicy: Never
    command: [sleep, "3600"]
    volumeMounts:
    - name: missing
      mountPath: /data
EOF
wait_running "$ro_pod" ro-running
ro_said() { kubenode logs "$ro_pod" -c reader >/tmp/ro.log 2>&1; grep -q WRITE- /tmp/ro.log; }
wait_for 30 ro_said
cat /tmp/ro.log
grep -qx "$READ_TOKEN" /tmp/ro.log || fail read-only "the read-only pod did not read the token"
grep -qx WRITE-REFUSED /tmp/ro.log || fail read-only "the read-only pod could write"
grep -q 'share-ro nfs4\? ro,' /proc/mounts || { grep nfs /proc/mounts; fail read-only "share-ro is not mounted ro"; }
pass read-only
failed_mount() { kubenode get events -A >/tmp/events 2>&1; grep FailedMount /tmp/events | grep -q missing; }
wait_for 60 failed_mount || { cat /tmp/events; fail failed-mount "no FailedMount event for volume missing"; }
grep FailedMount /tmp/events
running "$bad_pod" && fail failed-mount "pod $bad_pod runs without its volume"
# The agent retries every 2 s, making the mount point for each attempt: between attempts it
# must be gone (sampled for ~4 s), and never mounted.
absent=0
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  ls -d "$root_dir"/pods/*/volumes/kubernetes.io~nfs/missing >/dev/null 2>&1 || absent=$((absent + 1))
  if grep -q 'kubernetes.io~nfs/missing ' /proc/mounts; then fail failed-mount "the missing export is mounted"; fi
  sleep 0.2
done
[ "$absent" -gt 0 ] || fail failed-mount "the failed mount's mount point stayed in all 20 samples"
kubenode get events -A -o json >/tmp/events.json 2>&1
grep -i 'no such file' /tmp/events.json || fail failed-mount "no event carries the server's error (No such file or directory)"
pass failed-mount "absent in $absent of 20 samples"

rm "$manifests/nfs.yaml" "$manifests/nfs-ro.yaml" "$manifests/nfs-bad.yaml"
for p in "$pod" "$ro_pod" "$bad_pod"; do
  wait_for 60 gone "$p" || fail volume-unmounted "pod $p still listed 60 s after its manifest went"
done
if grep ' nfs4\? ' /proc/mounts; then fail volume-unmounted "an nfs mount is left after the pods went"; fi
if ls -d "$root_dir"/pods/*/volumes/kubernetes.io~nfs/* 2>/dev/null; then fail volume-unmounted "an nfs mount point is left"; fi
pass volume-unmounted
