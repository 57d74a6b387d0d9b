//! Mount propagation and the nfs plugin through a configured mount program.

use std::time::{Duration, Instant};

use anyhow::ensure;
use kubenode_integration::{unique_tag, LeakGuard, TestAgent, TestDir};

use super::{
    all_running, exec, pod_yaml, remove_and_check, uid, waiting_message, waiting_reason, with_agent,
};

fn mount(args: &[&str]) -> anyhow::Result<()> {
    kubenode_integration::run_ok(
        std::process::Command::new("mount").args(args),
        Duration::from_secs(10),
    )?;
    Ok(())
}

/// Bidirectional: a privileged container's mount shows up on the host; HostToContainer: a
/// host mount made after the start shows up in the container; None: it does not. The source
/// is made a shared mount first (this host's `/` is private), and a private source is refused
/// for HostToContainer with containerd's message.
pub(crate) fn propagation() -> anyhow::Result<()> {
    with_agent("vp", |agent| {
        let shared = agent.dir.join("shared");
        let private = agent.dir.join("private");
        std::fs::create_dir_all(&shared)?;
        std::fs::create_dir_all(&private)?;
        let s = shared.display().to_string();
        mount(&["--bind", &s, &s])?;
        mount(&["--make-rshared", &s])?;
        let p = private.display().to_string();
        mount(&["--bind", &p, &p])?;
        mount(&["--make-private", &p])?;
        let yaml = pod_yaml(
            "prop",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: shared, hostPath: {{path: {s}, type: Directory}}}}
  containers:
  - name: bi
    image: IMAGE
    securityContext: {{privileged: true}}
    command: ["sh", "-c", "mkdir -p /bi/from-container && mount -t tmpfs -o size=1m tmpfs /bi/from-container && echo hi > /bi/from-container/f; sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /bi, mountPropagation: Bidirectional}}]
  - name: slave
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: shared, mountPath: /h2c, mountPropagation: HostToContainer}}
    - {{name: shared, mountPath: /none}}
"#
            ),
        );
        agent.write_manifest("prop.yaml", &yaml)?;
        let name = agent.pod_name("prop");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !shared.join("from-container/f").exists() {
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(
            std::fs::read_to_string(shared.join("from-container/f"))
                .ok()
                .as_deref()
                == Some("hi\n"),
            "the container's mount did not reach the host (Bidirectional)"
        );
        std::fs::create_dir_all(shared.join("from-host"))?;
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            &format!("{s}/from-host"),
        ])?;
        std::fs::write(shared.join("from-host/g"), "from the host\n")?;
        let (code, out) = exec(agent, &name, "slave", "cat /h2c/from-host/g")?;
        ensure!(
            code == 0 && out.contains("from the host"),
            "HostToContainer: {out}"
        );
        let (code, out) = exec(agent, &name, "slave", "cat /none/from-host/g")?;
        ensure!(
            code != 0,
            "a host mount propagated into a None mount: {out}"
        );

        let refused = pod_yaml(
            "noprop",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: private, hostPath: {{path: {p}, type: Directory}}}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts: [{{name: private, mountPath: /p, mountPropagation: HostToContainer}}]
"#
            ),
        );
        agent.write_manifest("noprop.yaml", &refused)?;
        let bad = agent.pod_name("noprop");
        let waiting = agent.wait_pod(&bad, Duration::from_secs(30), "refused", |p| {
            waiting_reason(p, "c") == Some("CreateContainerConfigError")
        })?;
        let message = waiting_message(&waiting, "c")
            .unwrap_or_default()
            .to_string();
        ensure!(
            message.contains(&format!(
                "path \"{p}\" is mounted on \"{p}\" but it is not a shared or slave mount"
            )),
            "{message}"
        );
        remove_and_check(agent, "prop.yaml", &name, &uid(&pod))?;
        remove_and_check(agent, "noprop.yaml", &bad, &uid(&waiting))
    })
}

/// The nfs plugin through the binary with `mounterPath` set to a stand-in for `mount` (this
/// kernel has no NFS; the VM test covers the real thing): it logs its arguments and binds
/// `<exports><path>` for `SERVER:<path>` (remounting read-only for `-o ro`), and fails like
/// mount.nfs for server 10.9.9.9. The pod reads the "server's" file, its write lands in the
/// export, a readOnly volume is mounted with `-o ro`, a failed mount reports the program's
/// output and leaves no mount point, and removing the pods leaves the export's files alone.
pub(crate) fn nfs_fake_server() -> anyhow::Result<()> {
    let tag = unique_tag("vn");
    let guard = LeakGuard::new(&tag);
    let result = (|| -> anyhow::Result<()> {
        let tools = TestDir::new(&format!("{tag}t"))?;
        let exports = tools.join("exports");
        std::fs::create_dir_all(exports.join("data"))?;
        std::fs::write(exports.join("data/hello"), "from the server\n")?;
        let calls = tools.join("mount-calls");
        let program = tools.join("fake-mount");
        std::fs::write(
            &program,
            format!(
                r#"#!/bin/sh
echo "$*" >> {calls}
opts=""
while [ $# -gt 2 ]; do
  case "$1" in
    -t) shift 2 ;;
    -o) opts="$2"; shift 2 ;;
    *) shift ;;
  esac
done
src="$1"; dir="$2"; server="${{src%%:*}}"; path="${{src#*:}}"
if [ "$server" = "10.9.9.9" ]; then
  echo "mount.nfs: Connection timed out" >&2
  exit 32
fi
mount --bind "{exports}$path" "$dir" || exit 32
case ",$opts," in *,ro,*) mount -o remount,bind,ro "$dir" || exit 32 ;; esac
"#,
                calls = calls.display(),
                exports = exports.display()
            ),
        )?;
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let agent = TestAgent::start_with_config(
            &tag,
            Some(&format!("mounterPath: {}\n", program.display())),
        )?;
        let r = (|| -> anyhow::Result<()> {
            let yaml = pod_yaml(
                "nfs",
                &agent.image,
                r#"  volumes:
  - {name: data, nfs: {server: 10.1.2.3, path: /data}}
  - {name: ro, nfs: {server: 10.1.2.3, path: /data, readOnly: true}}
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "echo from the pod > /data/from-pod; sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}, {name: ro, mountPath: /ro}]
"#,
            );
            agent.write_manifest("nfs.yaml", &yaml)?;
            let name = agent.pod_name("nfs");
            let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
            let (code, out) = exec(&agent, &name, "c", "cat /data/hello /ro/hello")?;
            ensure!(
                code == 0 && out.matches("from the server").count() == 2,
                "{out}"
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !exports.join("data/from-pod").exists() {
                std::thread::sleep(Duration::from_millis(100));
            }
            ensure!(
                std::fs::read_to_string(exports.join("data/from-pod"))? == "from the pod\n",
                "the pod's write did not reach the export"
            );
            let (code, out) = exec(&agent, &name, "c", "echo x > /ro/nope")?;
            ensure!(code != 0 && out.contains("Read-only file system"), "{out}");
            let pod_dir = agent.dir.join("root/pods").join(uid(&pod));
            let vols = pod_dir.join("volumes/kubernetes.io~nfs");
            let logged = std::fs::read_to_string(&calls)?;
            ensure!(
                logged.contains(&format!(
                    "-t nfs 10.1.2.3:/data {}",
                    vols.join("data").display()
                )) && logged.contains(&format!(
                    "-t nfs -o ro 10.1.2.3:/data {}",
                    vols.join("ro").display()
                )),
                "mount program arguments: {logged}"
            );
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&vols)?.permissions());
            ensure!(
                mode & 0o777 == 0o750,
                "mount point parent mode {:o}",
                mode & 0o777
            );

            let bad = pod_yaml(
                "nfsbad",
                &agent.image,
                r#"  volumes:
  - {name: gone, nfs: {server: 10.9.9.9, path: /x}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts: [{name: gone, mountPath: /gone}]
"#,
            );
            agent.write_manifest("nfsbad.yaml", &bad)?;
            let bad_name = agent.pod_name("nfsbad");
            let waiting =
                agent.wait_pod(&bad_name, Duration::from_secs(30), "FailedMount", |p| {
                    waiting_reason(p, "c") == Some("ContainerCreating")
                })?;
            // ContainerCreating from the start (upstream); the mount's failure comes later.
            let deadline = Instant::now() + Duration::from_secs(240);
            loop {
                let events = agent.events()?;
                if events.iter().any(|e| e.reason.as_deref() == Some("FailedMount")
                    && e.message.as_deref().is_some_and(|m| m.starts_with("MountVolume.SetUp failed for volume \"gone\" : mount failed: exit status: 32")
                        && m.contains("Output: mount.nfs: Connection timed out")))
                {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "no FailedMount event with the server's error: {events:#?}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            let bad_dir = agent
                .dir
                .join("root/pods")
                .join(uid(&waiting))
                .join("volumes/kubernetes.io~nfs/gone");
            ensure!(!bad_dir.exists(), "a failed mount left its mount point");
            remove_and_check(&agent, "nfs.yaml", &name, &uid(&pod))?;
            remove_and_check(&agent, "nfsbad.yaml", &bad_name, &uid(&waiting))?;
            ensure!(
                exports.join("data/hello").exists() && exports.join("data/from-pod").exists(),
                "the export's files were removed with the pod"
            );
            Ok(())
        })();
        if r.is_err() {
            eprintln!(
                "--- agent log ({tag}) ---\n{}",
                kubenode_integration::agent::tail(&agent.log(), 80)
            );
        }
        drop(agent);
        r
    })();
    result?;
    guard.check()
}
