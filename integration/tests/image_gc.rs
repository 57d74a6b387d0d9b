//! Image garbage collection end to end with a real agent: `kubenode image prune` removes every
//! image no container uses, with their blobs and layer snapshots, and never the image of a
//! running pod. Prints how long pruning 50 unused images took (issue 19's target: ≤ 2 s;
//! printed, not asserted).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use kubenode_integration::pods::{all_running, exec_sh, pod_yaml, with_agent};
use kubenode_integration::{privileged, run_tests};
use serde_json::json;
use sha2::{Digest as _, Sha256};

fn main() {
    run_tests(vec![privileged(
        "image_prune_removes_unused_images_and_their_content_never_a_used_one",
        prune,
    )])
}

const TIMEOUT: Duration = Duration::from_secs(60);
/// Unused images imported before the prune.
const UNUSED: usize = 50;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI layout tagging `count` one-layer images `kn-gc-<i>:1`, each layer a distinct file.
/// Returns the layout and every layer's diff_id hex (its snapshot's directory name) and every
/// blob's hex.
fn layout(
    dir: &Path,
    count: usize,
) -> anyhow::Result<(std::path::PathBuf, Vec<String>, Vec<String>)> {
    let layout = dir.join("gc-layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut manifests = Vec::new();
    let mut snapshots = Vec::new();
    let mut blob_names = Vec::new();
    for i in 0..count {
        let mut tar = tar::Builder::new(Vec::new());
        let body = format!("image {i}\n").repeat(64);
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("kn-gc-{i}"))?;
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(body.len() as u64);
        h.set_cksum();
        tar.append(&h, body.as_bytes())?;
        let layer = tar.into_inner()?;
        let diff_id = sha256(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/kn-gc"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": layer.len()}],
        }))?;
        for data in [&layer, &config, &manifest] {
            let hex = sha256(data)[7..].to_string();
            std::fs::write(blobs.join(&hex), data)?;
            blob_names.push(hex);
        }
        snapshots.push(diff_id[7..].to_string());
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": format!("kubenode.test/kn-gc-{i}:1")}
        }));
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests}))?,
    )?;
    Ok((layout, snapshots, blob_names))
}

fn prune() -> anyhow::Result<()> {
    with_agent("kg", |agent| {
        let yaml = pod_yaml(
            "used",
            &agent.image,
            "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n",
        );
        agent.write_manifest("used.yaml", &yaml)?;
        let name = agent.pod_name("used");
        agent.wait_pod(&name, TIMEOUT, "Running", all_running)?;

        let (layout, snapshots, blobs) = layout(agent.dir.path(), UNUSED)?;
        let (ok, out) = agent.image_cli(&["import", &layout.to_string_lossy()])?;
        ensure!(ok, "import failed: {out}");
        let root = agent.dir.join("root");
        for s in &snapshots {
            ensure!(
                root.join("snapshots").join(s).is_dir(),
                "snapshot {s} missing after import"
            );
        }

        let started = Instant::now();
        let (ok, out) = agent.image_cli(&["prune"])?;
        let took = started.elapsed();
        ensure!(ok, "prune failed: {out}");
        println!("image prune: {UNUSED} unused images removed in {took:?} (CLI process included)");
        ensure!(
            out.contains(&format!("{UNUSED} image(s) removed, 1 in use kept")),
            "prune summary: {out}"
        );
        ensure!(out.contains("removed kubenode.test/kn-gc-0:1"), "{out}");
        ensure!(
            !out.contains("removed 127.0.0.1"),
            "the used image was removed: {out}"
        );

        let (ok, listed) = agent.image_cli(&["ls"])?;
        ensure!(
            ok && listed.contains("busybox:latest"),
            "used image gone: {listed}"
        );
        ensure!(!listed.contains("kn-gc-"), "unused images left: {listed}");
        for s in &snapshots {
            ensure!(
                !root.join("snapshots").join(s).exists(),
                "snapshot {s} left"
            );
        }
        let left: Vec<&String> = blobs
            .iter()
            .filter(|b| root.join("images/blobs/sha256").join(b).exists())
            .collect();
        ensure!(left.is_empty(), "blobs left: {left:?}");

        // The pod runs on, its rootfs whole.
        let (code, out) = exec_sh(agent, &name, "c", "ls /bin/busybox && echo alive")?;
        ensure!(
            code == 0 && out.contains("alive"),
            "pod after the prune: {out}"
        );

        // Once the pod is gone, its image is unused: the next prune takes it.
        agent.remove_manifest("used.yaml")?;
        agent.wait_gone(&name, TIMEOUT)?;
        // (Its container records go shortly after the pod: bounded retries.)
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (ok, out) = agent.image_cli(&["prune"])?;
            ensure!(ok, "second prune: {out}");
            if out.contains("1 image(s) removed") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the pod's image is never pruned: {out}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let snaps = std::fs::read_dir(root.join("snapshots"))
            .context("snapshots")?
            .count();
        ensure!(
            snaps == 0,
            "{snaps} snapshot(s) left after pruning everything"
        );
        Ok(())
    })
}
