//! Snapshots as overlay lowerdirs, for real: a two-layer image whose upper
//! layer deletes a file, a directory and hides a directory's lower content
//! (OCI whiteouts) is imported, then mounted with overlayfs the way a
//! container's rootfs is. Needs root (mknod, trusted.* xattrs, mount);
//! skipped otherwise.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use kubenode_runtime::image::ImageStore;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use sha2::{Digest as _, Sha256};

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// (gzip'd tar, diff_id) of `entries`: (path, Some(content)) is a file,
/// (path, None) a directory.
fn layer(entries: &[(&str, Option<&[u8]>)]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match content {
            Some(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), sha256(&tar))
}

/// Writes an OCI layout holding one image of `layers`, tagged `tag`.
fn write_layout(dir: &Path, layers: &[(Vec<u8>, String)], tag: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let digest = sha256(data);
        std::fs::write(blobs.join(&digest[7..]), data).unwrap();
        serde_json::json!({"digest": digest, "size": data.len()})
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
    }))
    .unwrap();
    let mut config_desc = put(&config);
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|(gz, _)| {
            let mut d = put(gz);
            d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
            d
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc, "layers": layer_descs,
    }))
    .unwrap();
    let mut manifest_desc = put(&manifest);
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    manifest_desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest_desc]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Unmounts on drop, also when an assertion fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_work_as_overlay_lowerdirs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (mknod, trusted.* xattrs, mount)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bottom = layer(&[
        ("etc", None),
        ("etc/keep", Some(b"keep")),
        ("etc/gone", Some(b"gone")),
        ("olddir", None),
        ("olddir/file", Some(b"x")),
        ("opq", None),
        ("opq/lower", Some(b"lower")),
    ]);
    let top = layer(&[
        ("etc/.wh.gone", Some(b"")),
        (".wh.olddir", Some(b"")),
        ("opq/.wh..wh..opq", Some(b"")),
        ("opq/upper", Some(b"upper")),
    ]);
    write_layout(
        &tmp.path().join("layout"),
        &[bottom, top],
        "kubenode.test/whiteouts:1",
    );
    let store = ImageStore::open(tmp.path().join("root")).unwrap();
    let images = store.import(&tmp.path().join("layout")).await.unwrap();
    let image = &images[0];
    assert_eq!(image.layers.len(), 2);
    assert!(
        !image.layers[1].join("etc/.wh.gone").exists(),
        "whiteout markers are not materialized"
    );

    let (mnt, upper, work) = (
        tmp.path().join("mnt"),
        tmp.path().join("upper"),
        tmp.path().join("work"),
    );
    for d in [&mnt, &upper, &work] {
        std::fs::create_dir(d).unwrap();
    }
    // lowerdir lists the top layer first.
    let lower: Vec<String> = image
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .unwrap();
    let _mounted = Mounted(mnt.clone());

    assert_eq!(std::fs::read(mnt.join("etc/keep")).unwrap(), b"keep");
    assert!(
        !mnt.join("etc/gone").exists(),
        "a whiteout hides the lower file"
    );
    assert!(
        !mnt.join("olddir").exists(),
        "a whiteout hides the lower directory"
    );
    assert_eq!(std::fs::read(mnt.join("opq/upper")).unwrap(), b"upper");
    assert!(
        !mnt.join("opq/lower").exists(),
        "an opaque directory hides lower children"
    );
    std::fs::write(mnt.join("etc/new"), b"container write").unwrap();
    assert!(
        upper.join("etc/new").is_file(),
        "writes land in the container's upperdir"
    );
    assert!(!image.layers[0].join("etc/new").exists() && !image.layers[1].join("etc/new").exists());
}
