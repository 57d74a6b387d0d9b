//! The state root against local users and against its own garbage, end to end with a real
//! agent: a host user reaches nothing under the root (no setuid binary or device node of an
//! image, no pod directory) while a pod running as a non-root user works; `kubenode image rm`
//! refuses an image a running pod uses and says which; a crash-looping container keeps only
//! the current and the previous instance's logs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use kubenode_integration::pods::{all_running, exec_sh, pod_yaml, restarts, uid, with_agent};
use kubenode_integration::{privileged, run, run_tests};
use serde_json::json;
use sha2::{Digest as _, Sha256};

fn main() {
    run_tests(vec![
        privileged(
            "host_users_reach_nothing_under_the_root_while_a_non_root_pod_works",
            private_root,
        ),
        privileged(
            "image_rm_refuses_an_image_a_running_pod_uses",
            image_rm_in_use,
        ),
        privileged(
            "a_crash_looping_container_keeps_only_the_current_and_previous_logs",
            crash_loop_logs,
        ),
    ])
}

const TIMEOUT: Duration = Duration::from_secs(60);
const NOBODY: &str = "65534";

/// Runs `argv` as the unprivileged host user nobody (no groups).
fn as_nobody(argv: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = run(
        Command::new("setpriv")
            .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
            .args(argv),
        Duration::from_secs(20),
    )?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI layout of a one-layer image holding what a host user must never reach: a setuid-root
/// copy of busybox (`bin/id`) and a world-writable character device (`dev/kn-null`, 1:3, the
/// same device as /dev/null). Tagged `kn-special:1`. Returns the layout and the layer's
/// diff_id hex (its snapshot's directory name).
fn special_image(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let mut tar = tar::Builder::new(Vec::new());
    let busybox = std::fs::read("/bin/busybox").context("reading /bin/busybox")?;
    let header = || {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    for d in ["bin/", "dev/"] {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path(d)?;
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        tar.append(&h, std::io::empty())?;
    }
    let mut h = header();
    h.set_path("bin/id")?;
    h.set_mode(0o4755);
    h.set_size(busybox.len() as u64);
    h.set_cksum();
    tar.append(&h, busybox.as_slice())?;
    let mut h = header();
    h.set_entry_type(tar::EntryType::Char);
    h.set_path("dev/kn-null")?;
    h.set_mode(0o666);
    h.set_device_major(1)?;
    h.set_device_minor(3)?;
    h.set_size(0);
    h.set_cksum();
    tar.append(&h, std::io::empty())?;
    let layer = tar.into_inner()?;
    let diff_id = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/id"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": layer.len()}],
    }))?;
    let layout = dir.join("special-layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for data in [&layer, &config, &manifest] {
        std::fs::write(blobs.join(&sha256(data)[7..]), data)?;
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(&manifest), "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": "kn-special:1"}
            }]
        }))?,
    )?;
    Ok((layout, diff_id[7..].to_string()))
}

fn private_root() -> anyhow::Result<()> {
    with_agent("ks", |agent| {
        let root = agent.dir.join("root");
        // The test directory itself is open to everyone: only kubenode's modes protect it.
        for p in [agent.dir.path(), root.as_path()] {
            if let Some(parent) = p.parent() {
                let m = std::fs::metadata(parent)?.permissions().mode();
                ensure!(
                    m & 0o001 != 0,
                    "{} is not traversable by others",
                    parent.display()
                );
            }
        }
        let yaml = pod_yaml(
            "nonroot",
            &agent.image,
            r#"  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: c
    image: IMAGE
    volumeMounts: [{name: data, mountPath: /data}]
    command: ["sh", "-c", "id -u > /data/who; cat /etc/hosts > /dev/null && echo started; exec sleep 3600"]
"#,
        );
        agent.write_manifest("nonroot.yaml", &yaml)?;
        let name = agent.pod_name("nonroot");
        let pod = agent.wait_pod(&name, TIMEOUT, "Running", all_running)?;
        let (code, out) = exec_sh(
            agent,
            &name,
            "c",
            "id -u; cat /data/who; grep -c nonroot /etc/hosts; cat /etc/resolv.conf >/dev/null && echo resolv; echo hi > /data/f && cat /data/f; ls /bin/sh >/dev/null && echo rootfs",
        )?;
        ensure!(code == 0, "exec as the pod's user failed: {out}");
        let lines: Vec<&str> = out.lines().collect();
        ensure!(
            lines.len() >= 6
                && lines[0] == "1000"
                && lines[1] == "1000"
                && lines[2] != "0"
                && lines[3] == "resolv"
                && lines[4] == "hi"
                && lines[5] == "rootfs",
            "the non-root pod could not use its rootfs, volume and /etc files: {out:?}"
        );
        let logs = agent.kubenode_ok(&["logs", &name])?;
        ensure!(logs.trim() == "started", "logs {logs:?}");

        // An image carrying a setuid-root binary and a 0666 device node, in the agent's store.
        let (layout, hex) = special_image(agent.dir.path())?;
        let (ok, out) = agent.image_cli(&["import", &layout.to_string_lossy()])?;
        ensure!(ok, "import: {out}");
        let fs = root.join("snapshots").join(&hex).join("fs");
        let suid = fs.join("bin/id");
        let dev = fs.join("dev/kn-null");
        // As root they are what the layer says: the fixture is real.
        ensure!(
            std::fs::metadata(&suid)?.permissions().mode() & 0o7777 == 0o4755,
            "setuid bit not kept by the unpacker"
        );
        {
            use std::os::unix::fs::FileTypeExt as _;
            ensure!(std::fs::metadata(&dev)?.file_type().is_char_device());
        }

        let uid = uid(&pod);
        let pod_dir = root.join("pods").join(&uid);
        // Through a shell: setpriv itself still holds root's capabilities while it execs, so
        // the lookup of its own program is privileged; the shell's exec is the user's.
        let run_suid = format!("{} -u", suid.display());
        let write_dev = format!("echo x > {}", dev.display());
        let checks: Vec<(&str, Vec<&str>)> = vec![
            (
                "run the image's setuid binary",
                vec!["/bin/sh", "-c", run_suid.as_str()],
            ),
            (
                "open the image's device node",
                vec!["/bin/sh", "-c", write_dev.as_str()],
            ),
        ];
        let root_s = root.to_string_lossy().into_owned();
        let pods_s = root.join("pods").to_string_lossy().into_owned();
        let snaps_s = root.join("snapshots").to_string_lossy().into_owned();
        let hosts_s = pod_dir.join("etc-hosts").to_string_lossy().into_owned();
        let list_checks: Vec<(&str, Vec<&str>)> = vec![
            ("list the state root", vec!["ls", root_s.as_str()]),
            ("list the pods", vec!["ls", pods_s.as_str()]),
            ("list the snapshots", vec!["ls", snaps_s.as_str()]),
            ("read a pod's /etc/hosts", vec!["cat", hosts_s.as_str()]),
        ];
        let mut reached = Vec::new();
        for (what, argv) in checks.iter().chain(&list_checks) {
            let (ok, out) = as_nobody(argv)?;
            if ok || !out.contains("Permission denied") {
                reached.push(format!("{what}: ok={ok} {out:?}"));
            }
        }
        ensure!(
            reached.is_empty(),
            "an unprivileged host user could:\n{}",
            reached.join("\n")
        );

        // The pod still runs: nothing above took anything away from it.
        let (code, out) = exec_sh(agent, &name, "c", "cat /data/f")?;
        ensure!(code == 0 && out.trim() == "hi", "after: {out}");
        Ok(())
    })
}

fn image_rm_in_use() -> anyhow::Result<()> {
    with_agent("kr", |agent| {
        let yaml = pod_yaml(
            "user",
            &agent.image,
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n",
        );
        agent.write_manifest("user.yaml", &yaml)?;
        let name = agent.pod_name("user");
        agent.wait_pod(&name, TIMEOUT, "Running", all_running)?;

        let (ok, out) = agent.image_cli(&["rm", &agent.image])?;
        ensure!(!ok, "removing an image a running pod uses succeeded: {out}");
        ensure!(
            out.contains(&format!("pod default/{name}")) && out.contains("in use"),
            "the refusal does not name the pod: {out}"
        );
        let (ok, out) = agent.image_cli(&["ls"])?;
        ensure!(
            ok && out.contains("busybox:latest"),
            "image gone after a refusal: {out}"
        );
        // The pod keeps running and its rootfs is whole.
        let (code, out) = exec_sh(agent, &name, "c", "ls /bin/busybox && echo alive")?;
        ensure!(
            code == 0 && out.contains("alive"),
            "pod after the refused rm: {out}"
        );

        // --force names what it breaks and proceeds; the running container keeps its layers.
        let other = agent.push_tag("forced")?;
        let yaml = pod_yaml(
            "forced",
            &other,
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n",
        );
        agent.write_manifest("forced.yaml", &yaml)?;
        let forced = agent.pod_name("forced");
        agent.wait_pod(&forced, TIMEOUT, "Running", all_running)?;
        let (ok, out) = agent.image_cli(&["rm", "--force", &other])?;
        ensure!(ok, "forced rm failed: {out}");
        ensure!(
            out.contains(&format!("pod default/{forced}")),
            "the forced rm does not say what it breaks: {out}"
        );
        let (code, out) = exec_sh(agent, &forced, "c", "ls /bin/busybox && echo alive")?;
        ensure!(
            code == 0 && out.contains("alive"),
            "pod after the forced rm: {out}"
        );

        // Once the pods are gone, removal works.
        agent.remove_manifest("user.yaml")?;
        agent.remove_manifest("forced.yaml")?;
        agent.wait_gone(&name, TIMEOUT)?;
        agent.wait_gone(&forced, TIMEOUT)?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (ok, out) = agent.image_cli(&["rm", &agent.image])?;
            if ok {
                break;
            }
            // The pod is gone from the API a moment before its records are.
            if Instant::now() > deadline {
                bail!("rm after the pod went: {out}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let snapshots = std::fs::read_dir(agent.dir.join("root/snapshots"))?.count();
        ensure!(
            snapshots == 0,
            "{snapshots} snapshots left after the last image went"
        );
        Ok(())
    })
}

/// The instance numbers of the files in `dir` named `<n><suffix>...` (`None`: no such dir).
fn instances(dir: &Path, suffix: &str) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (n, rest) = name.split_at(name.find(|c: char| !c.is_ascii_digit())?);
            rest.starts_with(suffix).then(|| n.parse().ok()).flatten()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn crash_loop_logs() -> anyhow::Result<()> {
    with_agent("kg", |agent| {
        let yaml = pod_yaml(
            "crash",
            &agent.image,
            "  containers:\n  - name: c\n    image: IMAGE\n    terminationMessagePolicy: File\n    command: [\"sh\", \"-c\", \"echo run-$(cat /proc/sys/kernel/random/uuid); echo bye > /dev/termination-log; exit 1\"]\n",
        );
        agent.write_manifest("crash.yaml", &yaml)?;
        let name = agent.pod_name("crash");
        // Restarts 1 (at once), 2 (10 s back-off), 3 (20 s): four instances have existed.
        let pod = agent.wait_pod(&name, Duration::from_secs(90), "restartCount 3", |p| {
            restarts(p, "c") >= Some(3)
        })?;
        let uid = uid(&pod);
        let log_dir = agent
            .dir
            .join("logs")
            .join(format!("default_{name}_{uid}"))
            .join("c");
        let term_dir = agent.dir.join("root/pods").join(&uid).join("containers/c");
        // The pass after the newest instance appeared prunes; bound the wait.
        let deadline = Instant::now() + Duration::from_secs(15);
        let (mut logs, mut terms, mut current);
        loop {
            let pod = agent.pod(&name)?.context("pod gone")?;
            current = restarts(&pod, "c").map_or(0, |n| u64::try_from(n).unwrap_or(0));
            logs = instances(&log_dir, ".log");
            terms = instances(&term_dir, "-termination-log");
            let wanted = [current - 1, current];
            let ok = |v: &[u64]| v.iter().all(|n| wanted.contains(n));
            if (ok(&logs) && ok(&terms)) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        ensure!(
            logs.iter().all(|n| *n + 1 >= current) && logs.contains(&(current - 1)),
            "restartCount {current}: log files of instances {logs:?} in {} (want only {} and {})",
            log_dir.display(),
            current - 1,
            current
        );
        ensure!(
            terms.iter().all(|n| *n + 1 >= current),
            "restartCount {current}: termination files of instances {terms:?}"
        );
        // `logs -p` still reads the previous instance.
        let previous = agent.kubenode_ok(&["logs", &name, "--previous"])?;
        ensure!(
            previous.trim().starts_with("run-"),
            "previous logs {previous:?}"
        );
        let prev_file = std::fs::read_to_string(log_dir.join(format!("{}.log", current - 1)))?;
        ensure!(
            prev_file.contains(previous.trim()),
            "logs -p is not the previous instance's: {previous:?} vs {prev_file:?}"
        );
        Ok(())
    })
}
