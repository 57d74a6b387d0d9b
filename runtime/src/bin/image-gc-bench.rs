//! Image garbage collection benchmark: imports N one-layer images (50 by default, each with its
//! own layer) into a fresh store, then times `ImageStore::prune` removing them all with their
//! blobs and snapshots (issue 19's target: 50 unused images in ≤ 2 s). Prints the import and
//! prune times and the bytes freed.
//!
//! `image-gc-bench [--images N]`. Everything it makes is under `/tmp/kngcbench-<pid>`, removed
//! at the end or after an error.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kubenode_runtime::image::ImageStore;
use serde_json::json;
use sha2::{Digest as _, Sha256};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Removes the bench directory when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI layout tagging `count` images `kubenode.test/gc-<i>:1`, each one layer of a distinct
/// 64 KiB file.
fn layout(dir: &Path, count: usize) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut manifests = Vec::new();
    for i in 0..count {
        let body = format!("{i:>16}").repeat(4096);
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("gc-{i}"))?;
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
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": layer.len()}],
        }))?;
        for data in [&layer, &config, &manifest] {
            std::fs::write(blobs.join(&sha256(data)[7..]), data)?;
        }
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": format!("kubenode.test/gc-{i}:1")}
        }));
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests}))?,
    )?;
    Ok(())
}

fn images_arg() -> Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut n = 50;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--images" => n = args.next().ok_or("--images needs a number")?.parse()?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: image-gc-bench [--images N]"
                )
                .into())
            }
        }
    }
    Ok(n)
}

async fn bench() -> Result<()> {
    let n = images_arg()?;
    let dir = Dir(PathBuf::from(format!(
        "/tmp/kngcbench-{}",
        std::process::id()
    )));
    layout(&dir.0.join("layout"), n)?;
    let store = ImageStore::open(dir.0.join("root"))?;
    let started = Instant::now();
    let imported = store.import(&dir.0.join("layout")).await?;
    let import = started.elapsed();
    let started = Instant::now();
    let report = store.prune().await?;
    let prune = started.elapsed();
    let snapshots = std::fs::read_dir(dir.0.join("root/snapshots"))?.count();
    let blobs = std::fs::read_dir(dir.0.join("root/images/blobs/sha256"))?.count();
    println!(
        "images imported: {} in {:.1} ms",
        imported.len(),
        import.as_secs_f64() * 1e3
    );
    println!(
        "prune: {} unused images removed in {:.1} ms (target ≤ 2000 ms), {} bytes freed; {} snapshots and {} blobs left",
        report.removed.len(),
        prune.as_secs_f64() * 1e3,
        report.bytes_freed,
        snapshots,
        blobs
    );
    if report.removed.len() != n || snapshots != 0 || blobs != 0 {
        return Err("prune left images, snapshots or blobs behind".into());
    }
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(bench()) {
        eprintln!("image-gc-bench: {e}");
        std::process::exit(1);
    }
}
