//! Layer snapshots: each layer unpacked once into
//! `<root>/snapshots/<diff_id hex>/fs`, in overlay-lowerdir form, verified
//! against its `diff_id`, and committed by renaming a temp directory. The
//! content of a layer's directory depends only on the layer (whiteouts are
//! overlay markers, not deletions), so every image sharing a layer shares
//! its snapshot.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::Descriptor;

use super::blobs::emit;
use super::digest::{hex_of, HashingReader};
use super::error::{ImageError, Result};
use super::fsutil::{remove_any, sync_dir};
use super::special::SpecialFiles;
use super::store::ImageStore;
use super::unpack::unpack_layer;
use super::{ProgressFn, PullEvent};

/// The largest uncompressed layer unpacked by default: 32 GiB. A gzip stream can expand about
/// a thousandfold, so a small blob can otherwise fill the disk before its `diff_id` is checked
/// (the CVE-2023-25153 class); the largest real layers (GPU toolkits) stay well below this.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 32 << 30;

impl ImageStore {
    /// Sets the largest uncompressed layer this store unpacks (default
    /// [`DEFAULT_MAX_LAYER_SIZE`]); a bigger one fails its pull with an error naming it.
    pub fn set_max_layer_size(&mut self, bytes: u64) {
        self.max_layer_size = bytes;
    }

    /// The `fs` directory of the snapshot of layer `diff_id`.
    pub(crate) fn snapshot_fs(&self, reference: &str, diff_id: &str) -> Result<PathBuf> {
        let hex = hex_of(diff_id).map_err(|_| ImageError::InvalidManifest {
            reference: reference.to_string(),
            what: "config",
            reason: format!("unsupported diff_id {diff_id}"),
        })?;
        Ok(self.snapshots_dir().join(hex).join("fs"))
    }

    /// Makes the snapshot of `layer` (stored at `blob`) present, unpacking
    /// it unless it already is; concurrent callers unpack it once.
    pub(crate) async fn ensure_snapshot(
        &self,
        blob: &Path,
        layer: &Descriptor,
        diff_id: &str,
        reference: &str,
        progress: &Option<ProgressFn>,
    ) -> Result<PathBuf> {
        let fs = self.snapshot_fs(reference, diff_id)?;
        let dir = fs.parent().expect("snapshot fs has a parent").to_path_buf();
        let hex = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let _lock = self.locks().key(&format!("snapshot-{hex}")).await?;
        if fs.is_dir() {
            emit(
                progress,
                PullEvent::LayerReused {
                    diff_id: diff_id.into(),
                },
            );
            return Ok(fs);
        }
        let tmp = self.snapshots_dir().join(format!(".tmp-{hex}"));
        remove_any(&tmp).map_err(ImageError::io("removing stale snapshot", &tmp))?;
        let job = UnpackJob {
            blob: blob.to_path_buf(),
            tmp: tmp.clone(),
            layer: layer.digest().to_string(),
            diff_id: diff_id.to_string(),
            reference: reference.to_string(),
            specials: self.specials(),
            preserve_owner: self.preserve_owner(),
            max_size: self.max_layer_size,
        };
        let result = tokio::task::spawn_blocking(move || job.run())
            .await
            .unwrap_or_else(|e| {
                Err(ImageError::io("unpacking layer", &tmp)(
                    std::io::Error::other(e),
                ))
            });
        let result = result.and_then(|()| {
            std::fs::rename(&tmp, &dir).map_err(ImageError::io("committing snapshot", &dir))?;
            sync_dir(&self.snapshots_dir()).map_err(ImageError::io("syncing", self.snapshots_dir()))
        });
        if let Err(e) = result {
            if let Err(rm) = remove_any(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %rm, "removing failed snapshot");
            }
            return Err(e);
        }
        tracing::debug!(image = reference, %diff_id, "unpacked layer");
        emit(
            progress,
            PullEvent::LayerUnpacked {
                diff_id: diff_id.into(),
            },
        );
        Ok(fs)
    }
}

struct UnpackJob {
    blob: PathBuf,
    tmp: PathBuf,
    layer: String,
    diff_id: String,
    reference: String,
    specials: Arc<dyn SpecialFiles>,
    preserve_owner: bool,
    max_size: u64,
}

/// A reader that fails once more than `left` bytes came through it, and says so in `exceeded`
/// (the tar crate reports a failed entry without its cause).
struct Capped<R> {
    inner: R,
    left: u64,
    exceeded: Arc<std::sync::atomic::AtomicBool>,
}

fn too_large(max: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "the uncompressed layer is larger than the {max}-byte limit"
    ))
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other("layer size limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl UnpackJob {
    fn run(self) -> Result<()> {
        let fs = self.tmp.join("fs");
        let unpack_err = |source| ImageError::Unpack {
            reference: self.reference.clone(),
            layer: self.layer.clone(),
            path: fs.clone(),
            source,
        };
        std::fs::create_dir_all(&fs).map_err(ImageError::io("creating snapshot", &fs))?;
        let reader = self.open_uncompressed().map_err(unpack_err)?;
        let exceeded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hashing = HashingReader::new(Capped {
            inner: reader,
            left: self.max_size,
            exceeded: exceeded.clone(),
        });
        let max = self.max_size;
        let capped_err = |e| {
            if exceeded.load(std::sync::atomic::Ordering::Relaxed) {
                unpack_err(too_large(max))
            } else {
                unpack_err(e)
            }
        };
        unpack_layer(
            &mut hashing,
            &fs,
            self.specials.as_ref(),
            self.preserve_owner,
        )
        .map_err(capped_err)?;
        let actual = hashing.drain_and_finish().map_err(capped_err)?;
        if actual != self.diff_id {
            return Err(ImageError::DiffIdMismatch {
                reference: self.reference,
                layer: self.layer,
                diff_id: self.diff_id,
                actual,
            });
        }
        let dir = std::fs::File::open(&self.tmp)
            .map_err(ImageError::io("opening snapshot", &self.tmp))?;
        nix::unistd::syncfs(&dir)
            .map_err(|e| ImageError::io("syncing snapshot", &self.tmp)(e.into()))
    }

    /// The blob as a plain tar stream: gzip is recognised by its magic bytes
    /// (some registries mislabel layers), anything else is taken as tar.
    fn open_uncompressed(&self) -> std::io::Result<Box<dyn Read + Send>> {
        let mut file = std::fs::File::open(&self.blob)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic)?;
        let file = std::fs::File::open(&self.blob)?;
        match &magic[..n] {
            [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::new(file),
            ))),
            [0x28, 0xb5, 0x2f, 0xfd] => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "zstd-compressed layers are not supported",
            )),
            _ => Ok(Box::new(std::io::BufReader::new(file))),
        }
    }
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
