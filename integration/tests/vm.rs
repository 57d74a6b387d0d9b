//! kubenode in a real VM (qemu, TCG, a Debian kernel): installed as an operator installs it and
//! started with the systemd unit's command line (issue 9), and a pod with an `nfs` volume served
//! by nfs-ganesha on the host's loopback (issue 7; this machine's kernel has no NFS client).
//! The guest's shell script reports steps on the serial console; the host judges them and checks
//! what reached the NFS export. Skipped, with the reason printed, only where qemu cannot run.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Context};
use kubenode_integration::vm::{
    self, Initramfs, Install, Kernel, KubenodeGuest, NfsServer, Vm, VmConfig,
};
use kubenode_integration::{privileged, run_tests, unique_tag, LeakGuard, Trial};

/// One VM at a time: the machine has 2 cores and TCG is CPU-bound.
static ONE_VM: Mutex<()> = Mutex::new(());
/// A guest that has not finished by then is killed.
const VM_TIMEOUT: Duration = Duration::from_secs(240);

fn main() {
    let trials = vec![
        privileged("vm_smoke_install_and_run_a_pod", || {
            let tag = unique_tag("vms");
            leak_checked(&[&tag], smoke(&tag))
        }),
        privileged("vm_kit_timeout_kills_qemu", || {
            let tag = unique_tag("vmt");
            leak_checked(&[&tag], timeout_kills_qemu(&tag))
        }),
        privileged("vm_nfs_volume_end_to_end", || {
            let (tag, nfs_tag) = (unique_tag("vmn"), unique_tag("nfs"));
            leak_checked(&[&tag, &nfs_tag], nfs_volume(&tag, &nfs_tag))
        }),
    ];
    let trials: Vec<Trial> = match vm::unavailable() {
        Some(why) => {
            eprintln!("note: VM tests skipped: {why}");
            trials
                .into_iter()
                .map(|t| t.with_ignored_flag(true))
                .collect()
        }
        None => trials,
    };
    run_tests(trials)
}

/// A token that differs between runs and tests (tag + clock).
fn token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{what}-{}-{nanos:x}", unique_tag("t"))
}

/// Shell functions shared by the guest scripts: import the test image into the agent's root
/// directory, start the agent with the unit's command line, wait for a pod.
const AGENT_FNS: &str = r#"
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
"#;

/// The test's result, then (also after a failure) the check that qemu and ganesha are gone
/// (no process carries a tag) and so are the guest's and the export's directories.
fn leak_checked(tags: &[&str], result: anyhow::Result<()>) -> anyhow::Result<()> {
    let mut leaks = Vec::new();
    for tag in tags {
        if let Err(e) = LeakGuard::new(tag).check() {
            leaks.push(format!("{e:#}"));
        }
        let dir = std::path::PathBuf::from(format!("/tmp/kn-{tag}"));
        if dir.exists() {
            leaks.push(format!("{} is left", dir.display()));
        }
    }
    match (result, leaks.is_empty()) {
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => anyhow::bail!("{}", leaks.join("\n")),
        (Err(e), true) => Err(e),
        (Err(e), false) => Err(e.context(format!("and also: {}", leaks.join("\n")))),
    }
}

fn boot(guest: &KubenodeGuest, script: &str) -> anyhow::Result<vm::GuestRun> {
    guest.set_test_script(&format!("{AGENT_FNS}\n{script}"))?;
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let run = guest.run(VM_TIMEOUT)?;
    eprintln!(
        "guest finished in {:.1} s (kubenode installed by {:?}):",
        run.elapsed.as_secs_f64(),
        guest.install
    );
    for line in run.console.lines().filter(|l| l.contains("KNVM:")) {
        eprintln!("  {}", line.trim_end());
    }
    Ok(run)
}

/// The kit's hard timeout: a guest that never finishes is killed, with the console in the error.
fn timeout_kills_qemu(tag: &str) -> anyhow::Result<()> {
    let kernel = Kernel::fetch()?;
    let fs = Initramfs::new(tag)?;
    kubenode_integration::busybox_rootfs(&fs.root())?;
    fs.write(
        "/init",
        "#!/bin/sh\nbusybox mount -t devtmpfs devtmpfs /dev\nexec >/dev/console 2>&1\n\
         echo 'KNVM:PASS boot'\nwhile :; do sleep 1; done\n",
        0o755,
    )?;
    let cfg = VmConfig {
        kernel: kernel.vmlinuz(),
        initrd: fs.pack()?,
        console_log: fs.scratch().join("console.log"),
        memory_mib: 256,
        cpus: 1,
        append: "quiet".into(),
        timeout: Duration::from_secs(30),
    };
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let mut vm = Vm::boot(&cfg)?;
    let err = match vm.wait() {
        Ok(m) => anyhow::bail!("a guest that never finishes finished: {m:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("did not finish within 30s"),
        "unexpected error: {err}"
    );
    ensure!(
        err.contains("KNVM:PASS boot"),
        "the error lacks the console: {err}"
    );
    ensure!(
        vm.elapsed() < Duration::from_secs(40),
        "wait() returned after {:?}",
        vm.elapsed()
    );
    let leftovers = LeakGuard::new(tag).leftovers();
    ensure!(
        leftovers.is_empty(),
        "qemu survives wait()'s timeout: {leftovers:?}"
    );
    Ok(())
}

/// Issue 9: kubenode installed into the guest's root with `deploy/install --root` and started
/// with the unit's command line runs a busybox httpd pod that is Running and answers on its IP.
fn smoke(tag: &str) -> anyhow::Result<()> {
    let kernel = Kernel::fetch()?;
    let guest = KubenodeGuest::build(tag, &kernel)?;
    if guest.install == Install::Minimal {
        eprintln!(
            "note: deploy/install is absent: kubenode was installed by the kit's minimal copy"
        );
    }
    let token = token("smoke");
    let script = format!(
        r#"
TOKEN={token}
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
    image: {image}
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && echo $TOKEN > /www/index.html && exec httpd -f -p 8080 -h /www']
EOF
wait_running "$pod" pod-running
ip=$(pod_ip "$pod")
# busybox's static wget crashes on this glibc; an HTTP/1.0 request through nc does the job.
get() {{ printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$ip" 8080; }}
answers() {{ get >/tmp/body && grep -q "^$TOKEN" /tmp/body; }}
wait_for 30 answers || {{
  get; ip addr; ip route; iptables-save; kubenode logs "$pod"
  show "agent log" /var/log/kubenode.log
  fail pod-answers "no answer with the token from http://$ip:8080/"
}}
pass pod-answers
rm "$manifests/web.yaml"
wait_for 60 gone "$pod" || fail pod-removed "pod $pod still listed 60 s after its manifest went"
pass pod-removed
"#,
        image = vm::IMAGE_REF
    );
    let run = boot(&guest, &script)?;
    if guest.install == Install::DeployScript {
        run.expect_passed(&["agent-from-unit"])?;
    }
    run.expect_passed(&[
        "boot",
        "network",
        "installed",
        "image-import",
        "agent-start",
        "pod-running",
        "pod-answers",
        "pod-removed",
    ])
}

/// Issue 7: ganesha on the host's loopback exports a directory; in the guest, `mount -t nfs`
/// works, then a pod with an `nfs` volume reads the host's file and writes one the host finds.
fn nfs_volume(tag: &str, nfs_tag: &str) -> anyhow::Result<()> {
    let kernel = Kernel::fetch()?;
    let guest = KubenodeGuest::build(tag, &kernel)?;
    let read_token = token("host");
    let guest_token = token("guest");
    let pod_token = token("pod");
    let script = format!(
        r#"
mkdir -p /mnt/nfs
mount -v -t nfs 10.0.2.2:/export /mnt/nfs >/tmp/mount.log 2>&1 || {{ cat /tmp/mount.log; fail nfs-mount "mount -t nfs 10.0.2.2:/export failed"; }}
grep -qx {read_token} /mnt/nfs/token || fail nfs-mount "the host's token is not in /mnt/nfs/token"
echo {guest_token} >/mnt/nfs/from-guest || fail nfs-mount "writing /mnt/nfs/from-guest failed"
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
    image: {image}
    imagePullPolicy: Never
    command: [sh, -c, 'cat /data/token && echo {pod_token} >/data/from-pod && sync && sleep 3600']
    volumeMounts:
    - name: share
      mountPath: /data
EOF
wait_running "$pod" pod-running
read_it() {{ kubenode logs "$pod" -c reader >/tmp/reader.log 2>&1; grep -qx {read_token} /tmp/reader.log; }}
# The container's first line is the file or cat's error: stop waiting at either.
said() {{ read_it || grep -q "can't open" /tmp/reader.log; }}
wait_for 30 said; read_it || {{ kubenode logs "$pod" -c reader; fail pod-read "the pod's output lacks the host's token"; }}
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
    image: {image}
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
    image: {image}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    volumeMounts:
    - name: missing
      mountPath: /data
EOF
wait_running "$ro_pod" ro-running
ro_said() {{ kubenode logs "$ro_pod" -c reader >/tmp/ro.log 2>&1; grep -q WRITE- /tmp/ro.log; }}
wait_for 30 ro_said
cat /tmp/ro.log
grep -qx {read_token} /tmp/ro.log || fail read-only "the read-only pod did not read the token"
grep -qx WRITE-REFUSED /tmp/ro.log || fail read-only "the read-only pod could write"
grep -q 'share-ro nfs4\? ro,' /proc/mounts || {{ grep nfs /proc/mounts; fail read-only "share-ro is not mounted ro"; }}
pass read-only
failed_mount() {{ kubenode get events -A >/tmp/events 2>&1; grep FailedMount /tmp/events | grep -q missing; }}
wait_for 60 failed_mount || {{ cat /tmp/events; fail failed-mount "no FailedMount event for volume missing"; }}
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
"#,
        image = vm::IMAGE_REF
    );
    let nfs = NfsServer::start(nfs_tag)?;
    std::fs::write(nfs.export_dir().join("token"), format!("{read_token}\n"))?;
    let run = boot(&guest, &script).with_context(|| format!("ganesha log:\n{}", nfs.log()))?;
    let read = |f: &str| std::fs::read_to_string(nfs.export_dir().join(f)).unwrap_or_default();
    let result = run.expect_passed(&[
        "boot",
        "network",
        "nfs-mount",
        "image-import",
        "agent-start",
        "pod-running",
        "pod-read",
        "volume-mounted",
        "ro-running",
        "read-only",
        "failed-mount",
        "volume-unmounted",
    ]);
    ensure!(
        read("from-guest").trim() == guest_token,
        "the guest's write through mount -t nfs did not reach the export (from-guest: {:?})",
        read("from-guest")
    );
    result?;
    ensure!(
        !nfs.export_dir().join("ro-write").exists(),
        "the read-only pod's write reached the export"
    );
    ensure!(
        read("from-pod").trim() == pod_token,
        "the pod's write did not reach the host's export (from-pod: {:?})",
        read("from-pod")
    );
    Ok(())
}
