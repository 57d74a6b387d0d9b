//! Test images built from Debian's `busybox-static`: a rootfs, an OCI image layout, and a push to
//! a [`TestRegistry`] through the distribution HTTP API.

use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cmd::run_ok;
use crate::registry::TestRegistry;

const BUSYBOX: &str = "/bin/busybox";
/// Media types of what we build.
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An OCI image layout directory holding one image, tagged `latest`.
#[derive(Debug, Clone)]
pub struct ImageLayout {
    /// The layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`).
    pub layout_dir: PathBuf,
    /// `sha256:...` of the manifest (the image ID).
    pub manifest_digest: String,
    /// `sha256:...` of the image config.
    pub config_digest: String,
    /// `sha256:...` of the gzip'd layer.
    pub layer_digest: String,
    /// `sha256:...` of the uncompressed layer tar (the config's `rootfs.diff_ids[0]`).
    pub diff_id: String,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Fills `dir` with a busybox rootfs: `/bin/busybox`, a link per applet in `/bin`, `/etc/passwd`
/// and `/etc/group` (root, nobody), and the usual empty directories.
pub fn busybox_rootfs(dir: &Path) -> anyhow::Result<()> {
    let applets = run_ok(Command::new(BUSYBOX).arg("--list"), Duration::from_secs(10))
        .context("listing busybox applets (apt-get install busybox-static)")?;
    for d in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "root", "var/www", "usr/bin",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace() {
        if applet != "busybox" {
            let link = dir.join("bin").join(applet);
            if !link.exists() {
                symlink("busybox", link)?;
            }
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// Builds a one-layer busybox image (CMD `["sh"]`) as an OCI image layout in `dir`.
pub fn build_busybox_image(dir: &Path) -> anyhow::Result<ImageLayout> {
    build_busybox_image_with(dir, |_| Ok(()))
}

/// Like [`build_busybox_image`], with `edit` changing the rootfs before it is packed (e.g. a
/// hostile `/etc/passwd`: a symlink, a FIFO, a device node).
pub fn build_busybox_image_with(
    dir: &Path,
    edit: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<ImageLayout> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    busybox_rootfs(&rootfs)?;
    edit(&rootfs)?;

    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", &rootfs)?;
    let layer_tar = tar.into_inner()?;
    let diff_id = sha256(&layer_tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer_tar)?;
    let layer = gz.finish()?;
    let layer_digest = sha256(&layer);

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/"
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": "kubenode-integration busybox_rootfs" }]
    });
    write_layout(
        &dir.join("layout"),
        &layer,
        &layer_digest,
        &diff_id,
        &config,
    )
}

/// A copy of `base` (same layer) in `dir` whose image config `edit` changed, e.g.
/// `|c| c["config"]["StopSignal"] = "SIGQUIT".into()`.
pub fn derive_image(
    base: &ImageLayout,
    dir: &Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> anyhow::Result<ImageLayout> {
    let blob = |digest: &str| {
        base.layout_dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let layer = std::fs::read(blob(&base.layer_digest))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&base.config_digest))?)?;
    edit(&mut config);
    write_layout(
        &dir.join("layout"),
        &layer,
        &base.layer_digest,
        &base.diff_id,
        &config,
    )
}

/// Writes a one-layer image (manifest, config, layer) as an OCI image layout tagged `latest`.
fn write_layout(
    layout_dir: &Path,
    layer: &[u8],
    layer_digest: &str,
    diff_id: &str,
    config: &serde_json::Value,
) -> anyhow::Result<ImageLayout> {
    let config = serde_json::to_vec(config)?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": LAYER_TYPE, "digest": layer_digest, "size": layer.len() }]
    }))?;
    let manifest_digest = sha256(&manifest);

    let blobs = layout_dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for (digest, data) in [
        (layer_digest, layer),
        (config_digest.as_str(), config.as_slice()),
        (manifest_digest.as_str(), manifest.as_slice()),
    ] {
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), data)?;
    }
    std::fs::write(
        layout_dir.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    std::fs::write(
        layout_dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST_TYPE,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": "latest" }
            }]
        }))?,
    )?;
    Ok(ImageLayout {
        layout_dir: layout_dir.to_path_buf(),
        manifest_digest,
        config_digest,
        layer_digest: layer_digest.to_string(),
        diff_id: diff_id.to_string(),
    })
}

/// Pushes the layout's image to `registry` as `<name>:<tag>` through the distribution API
/// (monolithic blob uploads, then the manifest). Returns `127.0.0.1:<port>/<name>:<tag>`.
pub fn push_image(
    registry: &TestRegistry,
    layout: &ImageLayout,
    name: &str,
    tag: &str,
) -> anyhow::Result<String> {
    let base = registry.url();
    let blob = |digest: &str| -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(
            layout
                .layout_dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )?)
    };
    for digest in [&layout.layer_digest, &layout.config_digest] {
        let resp = ureq::post(format!("{base}/v2/{name}/blobs/uploads/"))
            .send_empty()
            .with_context(|| format!("starting the upload of {digest}"))?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("upload answer without Location")?
            .to_string();
        let location = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        ureq::put(format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(&blob(digest)?[..])
            .with_context(|| format!("uploading blob {digest}"))?;
    }
    let manifest = blob(&layout.manifest_digest)?;
    let resp = ureq::put(format!("{base}/v2/{name}/manifests/{tag}"))
        .header("Content-Type", MANIFEST_TYPE)
        .send(&manifest[..])
        .context("pushing the manifest")?;
    let pushed = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if pushed != layout.manifest_digest {
        bail!(
            "registry stored manifest {pushed:?}, expected {}",
            layout.manifest_digest
        );
    }
    Ok(format!("{}/{name}:{tag}", registry.host()))
}
