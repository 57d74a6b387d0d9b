//! Proves the harness itself: a real registry, a real image, real runc in a fresh netns.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use kubenode_integration::{
    build_busybox_image, privileged, push_image, run, run_tests, unique_tag, LeakGuard, Netns,
    TestDir, TestRegistry, Trial,
};
use serde_json::json;
use sha2::{Digest, Sha256};

fn main() {
    run_tests(vec![
        Trial::test("unique_tags_are_unique_and_short", unique_tags),
        privileged("registry_image_runc_smoke", registry_image_runc_smoke),
        privileged(
            "leak_guard_sees_a_leftover_netns",
            leak_guard_sees_leftovers,
        ),
        privileged(
            "leak_guard_sees_hand_made_pod_cgroups",
            leak_guard_sees_hand_made_pod_cgroups,
        ),
        privileged(
            "leak_guard_sees_pod_cgroups_until_the_pod_is_gone",
            leak_guard_sees_pod_cgroups,
        ),
    ])
}

fn unique_tags() -> Result<(), libtest_mimic::Failed> {
    let a = unique_tag("t");
    let b = unique_tag("t");
    if a == b || a.len() > 8 {
        return Err(format!("tags {a} {b}").into());
    }
    Ok(())
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn registry_image_runc_smoke() -> anyhow::Result<()> {
    let tag = unique_tag("hs");
    let guard = LeakGuard::new(&tag);
    let dir = TestDir::new(&tag)?;
    let registry = TestRegistry::start(None)?;
    let image = build_busybox_image(&dir.join("image"))?;
    let reference = push_image(&registry, &image, "busybox", "latest")?;
    ensure!(reference == format!("{}/busybox:latest", registry.host()));

    // The manifest over plain HTTP, as any client would fetch it.
    let mut resp = ureq::get(format!("{}/v2/busybox/manifests/latest", registry.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()?;
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.body_mut().read_to_vec()?;
    ensure!(
        sha256(&body) == image.manifest_digest,
        "manifest digest mismatch"
    );
    ensure!(
        header_digest == image.manifest_digest,
        "Docker-Content-Digest {header_digest}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&body)?;
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .context("no layer")?;
    ensure!(layer_digest == image.layer_digest);

    // The layer blob, verified, unpacked into a bundle's rootfs.
    let mut resp = ureq::get(format!(
        "{}/v2/busybox/blobs/{layer_digest}",
        registry.url()
    ))
    .call()?;
    let layer = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()?;
    ensure!(
        sha256(&layer) == image.layer_digest,
        "layer digest mismatch"
    );
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&layer[..]).read_to_end(&mut tar_bytes)?;
    ensure!(sha256(&tar_bytes) == image.diff_id, "diff_id mismatch");
    let bundle = dir.join("bundle");
    tar::Archive::new(&tar_bytes[..]).unpack(bundle.join("rootfs"))?;

    // runc in a fresh netns: `true` succeeds, a failing command's code comes back, and the
    // container sees only the namespace's loopback.
    let netns = Netns::new(&format!("{tag}-n"))?;
    let runc_root = dir.join("runc");
    let run_in_container = |id: &str, args: &[&str]| -> anyhow::Result<(i32, String)> {
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec(args, &netns.path().to_string_lossy()))?,
        )?;
        let out = run(
            Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(id),
            Duration::from_secs(30),
        )?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let (code, _) = run_in_container(&format!("{tag}-true"), &["/bin/busybox", "true"])?;
    ensure!(code == 0, "busybox true exited {code}");
    let (code, _) = run_in_container(&format!("{tag}-exit"), &["/bin/sh", "-c", "exit 7"])?;
    ensure!(code == 7, "exit 7 came back as {code}");
    let (code, links) = run_in_container(&format!("{tag}-ip"), &["/bin/ip", "-o", "link"])?;
    ensure!(code == 0, "ip link exited {code}");
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    if names != ["lo"] {
        bail!("container in a fresh netns sees links {names:?}");
    }
    let guard = guard.runc_root(&runc_root);
    drop(netns);
    drop(registry);
    drop(dir);
    guard.check()
}

/// A minimal runtime spec: the given process, a fresh mount/pid/ipc/uts namespace, the given netns.
fn spec(args: &[&str], netns: &str) -> serde_json::Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_NET_ADMIN", "CAP_KILL"],
                "effective": ["CAP_NET_ADMIN", "CAP_KILL"],
                "permitted": ["CAP_NET_ADMIN", "CAP_KILL"]
            },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "smoke",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
                { "type": "network", "path": netns }
            ],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    })
}

/// The guard must fail when something is left: otherwise every test's final check proves nothing.
fn leak_guard_sees_leftovers() -> anyhow::Result<()> {
    let tag = unique_tag("lg");
    let guard = LeakGuard::new(&tag);
    guard.check().context("clean before")?;
    let ns = Netns::new(&format!("{tag}-x"))?;
    let leftovers = guard.leftovers();
    ensure!(
        leftovers.iter().any(|l| l.starts_with("netns:")),
        "guard missed a netns: {leftovers:?}"
    );
    drop(ns);
    guard.check()
}

/// Pod cgroups are named by the pod's UID (`/kubepods/<qos>/pod<uid>`), not by the test's tag:
/// the guard must still see those of the test's agent, in every hierarchy, while its pod runs,
/// and nothing once the agent removed the pod.
fn leak_guard_sees_pod_cgroups() -> anyhow::Result<()> {
    use kubenode_integration::pods::{all_running, pod_yaml, uid};
    let tag = unique_tag("lc");
    let guard = LeakGuard::new(&tag);
    {
        let agent = kubenode_integration::TestAgent::start(&tag)?;
        let body =
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
        agent.write_manifest("p.yaml", &pod_yaml("p", &agent.image, body))?;
        let name = agent.pod_name("p");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        let uid = uid(&pod);
        ensure!(!uid.is_empty(), "pod without a uid");
        let cgroup = format!("/kubepods/besteffort/pod{uid}");
        let while_running = guard.leftovers();
        let hierarchies: &[&str] = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            &[""]
        } else {
            &["/memory", "/pids"]
        };
        for hierarchy in hierarchies {
            let dir = format!("/sys/fs/cgroup{hierarchy}{cgroup}");
            ensure!(
                Path::new(&dir).is_dir(),
                "the running pod has no cgroup {dir}"
            );
            ensure!(
                while_running.iter().any(|l| l.ends_with(dir.as_str())),
                "the guard misses the running pod's cgroup {dir}: {while_running:?}"
            );
        }
        agent.remove_manifest("p.yaml")?;
        agent.wait_gone(&name, Duration::from_secs(45))?;
    }
    guard.check()
}

/// Removes the cgroup directories it holds when dropped (also when the test fails).
struct Cgroups(Vec<String>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Pod cgroups made by hand, as an agent names them: one with the tag in its name, one named
/// by the UID of a pod the test's agent ran. The guard lists both, and its failing check removes
/// the tracked pod's so that the machine stays clean.
fn leak_guard_sees_hand_made_pod_cgroups() -> anyhow::Result<()> {
    let tag = unique_tag("lp");
    let guard = LeakGuard::new(&tag);
    guard.check().context("clean before")?;
    let hierarchy = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/pids"
    };
    let named = format!("{hierarchy}/kubepods/besteffort/pod{tag}");
    let uid = format!(
        "{:032x}",
        std::process::id() as u128 * 0x9e37_79b9 + tag.len() as u128
    );
    let by_uid = format!("{hierarchy}/kubepods/burstable/pod{uid}");
    let made = Cgroups(vec![named.clone(), by_uid.clone()]);
    for dir in &made.0 {
        std::fs::create_dir_all(dir).with_context(|| format!("making cgroup {dir}"))?;
    }
    LeakGuard::track_pod(&format!("{tag}-node"), &uid);
    let found = guard.leftovers();
    for dir in [&named, &by_uid] {
        ensure!(
            found.iter().any(|l| l.ends_with(dir.as_str())),
            "the guard missed {dir}: {found:?}"
        );
    }
    let err = match guard.check() {
        Ok(()) => bail!("the check passed with leftover pod cgroups"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains(&named) && err.contains(&by_uid),
        "the failure does not list both: {err}"
    );
    ensure!(
        !Path::new(&by_uid).exists(),
        "the failing check did not remove the tracked pod's cgroup"
    );
    drop(made);
    guard.check()
}
