//! The image store under a root directory: opening it, looking images up,
//! listing them and removing them (with garbage collection of blobs and
//! snapshots no remaining image and no container uses).
//!
//! ```text
//! <root>/images/oci-layout, index.json     an OCI image layout of everything pulled
//! <root>/images/blobs/sha256/<hex>         manifests, configs, compressed layers
//! <root>/images/tmp/, locks/               downloads in progress, lock files
//! <root>/snapshots/<diff_id hex>/fs        one unpacked layer, an overlay lowerdir
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::error::{ImageError, Result};
use super::fsutil::{remove_any, write_atomic};
use super::index::{Entry, RefIndex, Refs};
use super::lock::Locks;
use super::reference::ImageReference;
use super::special::{OverlaySpecialFiles, SpecialFiles};
use super::store_usage::ImageUser;
use super::Image;

/// The local image store. Cheap to share (`Arc`) between tasks; several
/// processes may open the same root at once.
pub struct ImageStore {
    root: PathBuf,
    index: RefIndex,
    locks: Locks,
    specials: Arc<dyn SpecialFiles>,
    preserve_owner: bool,
    /// Largest uncompressed layer unpacked (see `snapshot.rs`).
    pub(crate) max_layer_size: u64,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root_dir`
    /// (`/var/lib/kubenode` on a node).
    pub fn open(root_dir: impl AsRef<Path>) -> Result<ImageStore> {
        let preserve_owner = nix::unistd::geteuid().is_root();
        ImageStore::with_special_files(
            root_dir.as_ref(),
            Arc::new(OverlaySpecialFiles),
            preserve_owner,
        )
    }

    pub(crate) fn with_special_files(
        root: &Path,
        specials: Arc<dyn SpecialFiles>,
        preserve_owner: bool,
    ) -> Result<ImageStore> {
        let images = root.join("images");
        // Only root may enter the store: snapshots hold the images' setuid binaries, file
        // capabilities and device nodes as the layers ship them (containerd made its root
        // and snapshot directories 0700 after CVE-2021-41103). Existing stores are tightened.
        for dir in [root.to_path_buf(), images.clone(), root.join("snapshots")] {
            crate::fsutil::ensure_dir(&dir, crate::fsutil::PRIVATE_DIR_MODE)
                .map_err(ImageError::io("creating store directory", &dir))?;
        }
        for dir in [
            images.join("blobs/sha256"),
            images.join("tmp"),
            images.join("locks"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(ImageError::io("creating store directory", &dir))?;
        }
        let layout = images.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(ImageError::io("writing", &layout))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            index: RefIndex::new(&images),
            locks: Locks::new(images.join("locks")),
            specials,
            preserve_owner,
            max_layer_size: super::snapshot::DEFAULT_MAX_LAYER_SIZE,
        })
    }

    /// The image `reference` names, if it is fully present locally (index
    /// entry, manifest, config and every layer snapshot).
    pub fn get(&self, reference: &str) -> Result<Option<Image>> {
        let name = ImageReference::parse(reference)?.to_string();
        let refs = self.index.load()?;
        match refs.get(&name) {
            Some(entry) => self.load_image(&name, entry),
            None => Ok(None),
        }
    }

    /// Every image in the store, sorted by reference. Images whose content
    /// is damaged or incomplete are left out (with a warning).
    pub fn list(&self) -> Result<Vec<Image>> {
        let refs = self.index.load()?;
        let mut images = Vec::new();
        for (name, entry) in &refs {
            match self.load_image(name, entry) {
                Ok(Some(image)) => images.push(image),
                Ok(None) => tracing::warn!(image = %name, "image incomplete in the store"),
                Err(e) => {
                    tracing::warn!(image = %name, error = %e, "image unreadable in the store")
                }
            }
        }
        Ok(images)
    }

    /// Removes `reference` from the store, then deletes every blob and
    /// snapshot no remaining image and no container uses. Refused
    /// ([`ImageError::InUse`]) while a container created from it exists.
    pub async fn remove(&self, reference: &str) -> Result<()> {
        self.remove_with(reference, false).await.map(|_| ())
    }

    /// [`ImageStore::remove`]; with `force`, an image containers were created
    /// from is removed too, and those containers are returned (their layers
    /// stay until they are gone: a forced removal never pulls a mounted
    /// lowerdir away).
    pub async fn remove_with(&self, reference: &str, force: bool) -> Result<Vec<ImageUser>> {
        let name = ImageReference::parse(reference)?.to_string();
        let _store = self.locks.store_exclusive().await?;
        let _index = self.locks.key("index").await?;
        let mut refs = self.index.load()?;
        if !refs.contains_key(&name) {
            return Err(ImageError::NotPresent { reference: name });
        }
        let records = self.container_records();
        let users = ImageStore::users_of(&records, &name);
        if !users.is_empty() && !force {
            return Err(ImageError::InUse {
                reference: name,
                users: users.iter().map(ToString::to_string).collect(),
            });
        }
        refs.remove(&name);
        self.index.save(&refs)?;
        for user in &users {
            tracing::warn!(image = %name, %user, "removed an image a container still uses (forced); its layers stay until the container is removed");
        }
        tracing::info!(image = %name, "removed image");
        self.collect_garbage(&refs);
        Ok(users)
    }

    /// After a failed pull or import: deletes what it fetched or unpacked
    /// that no image uses, unless other pulls are running (they might need it;
    /// a later `remove` collects it then).
    pub(crate) async fn discard_unused(&self) {
        let Some(_store) = self.locks.try_store_exclusive() else {
            return;
        };
        let Ok(_index) = self.locks.key("index").await else {
            return;
        };
        match self.index.load() {
            Ok(refs) => {
                self.collect_garbage(&refs);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the image index; skipping garbage collection")
            }
        }
    }

    /// Points `name` at `entry` in the index (no write if unchanged).
    pub(crate) async fn set_ref(&self, name: &str, entry: Entry) -> Result<()> {
        let _index = self.locks.key("index").await?;
        let mut refs = self.index.load()?;
        if refs.get(name).is_some_and(|e| e.digest == entry.digest) {
            return Ok(());
        }
        refs.insert(name.to_string(), entry);
        self.index.save(&refs)
    }

    pub(crate) fn load_image(&self, name: &str, entry: &Entry) -> Result<Option<Image>> {
        let (manifest, config) = match self.read_manifest_and_config(name, &entry.digest) {
            Ok(mc) => mc,
            Err(ImageError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut layers = Vec::new();
        for diff_id in config.rootfs().diff_ids() {
            let fs = self.snapshot_fs(name, diff_id)?;
            if !fs.is_dir() {
                return Ok(None);
            }
            layers.push(fs);
        }
        // A stored manifest passed `check_manifest`, whose sum fits; saturate all the same.
        let size = super::pull::image_size(&manifest).unwrap_or(u64::MAX);
        Ok(Some(Image {
            reference: name.to_string(),
            manifest_digest: entry.digest.clone(),
            config,
            layers,
            size,
        }))
    }

    pub(crate) fn read_manifest_and_config(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<(ImageManifest, ImageConfiguration)> {
        let manifest: ImageManifest = parse(name, "manifest", &self.read_blob(name, digest)?)?;
        let config_digest = manifest.config().digest().to_string();
        let config: ImageConfiguration =
            parse(name, "config", &self.read_blob(name, &config_digest)?)?;
        Ok((manifest, config))
    }

    /// Deletes what no image in `refs` uses. Runs under the exclusive store
    /// lock, so no pull is midway. Failures are logged and skipped. Returns the
    /// bytes freed (blocks of the blobs and snapshots deleted).
    pub(crate) fn collect_garbage(&self, refs: &Refs) -> u64 {
        let mut keep_blobs = HashSet::new();
        let remaining: HashSet<String> = refs.keys().cloned().collect();
        // Layers of existing containers stay, whatever the index says (`None`: unknown,
        // so no snapshot is deleted).
        let in_use = ImageStore::snapshots_in_use(&self.container_records(), &remaining);
        let sweep_snapshots = in_use.is_some();
        let mut keep_snapshots = in_use.unwrap_or_default();
        for (name, entry) in refs {
            let (manifest, config) = match self.read_manifest_and_config(name, &entry.digest) {
                Ok(mc) => mc,
                Err(e) => {
                    tracing::warn!(image = %name, error = %e, "cannot read image; skipping garbage collection");
                    return 0;
                }
            };
            keep_blobs.insert(entry.digest.trim_start_matches("sha256:").to_string());
            keep_blobs.insert(manifest.config().digest().digest().to_string());
            keep_blobs.extend(
                manifest
                    .layers()
                    .iter()
                    .map(|l| l.digest().digest().to_string()),
            );
            keep_snapshots.extend(
                config
                    .rootfs()
                    .diff_ids()
                    .iter()
                    .map(|d| d.trim_start_matches("sha256:").to_string()),
            );
        }
        let sweep = |dir: PathBuf, keep: &HashSet<String>| -> u64 {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return 0;
            };
            let mut freed = 0;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if keep.contains(&name) {
                    continue;
                }
                let size = super::gc::disk_usage(&entry.path());
                match remove_any(&entry.path()) {
                    Ok(()) => {
                        freed += size;
                        tracing::debug!(path = %entry.path().display(), "garbage-collected")
                    }
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "garbage collection")
                    }
                }
            }
            freed
        };
        let mut freed = sweep(self.blobs_dir(), &keep_blobs);
        if sweep_snapshots {
            freed += sweep(self.snapshots_dir(), &keep_snapshots);
        }
        // Archives being extracted for an import (outside the store lock)
        // belong to live processes: keep those.
        let live_imports: HashSet<String> = std::fs::read_dir(self.tmp_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|name| import_owner_alive(name))
            .collect();
        sweep(self.tmp_dir(), &live_imports);
        let keep_locks: HashSet<String> = ["store.lock", "index.lock"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sweep(self.root.join("images/locks"), &keep_locks);
        freed
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("images/blobs/sha256")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("images/tmp")
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub(crate) fn index(&self) -> &RefIndex {
        &self.index
    }

    pub(crate) fn locks(&self) -> &Locks {
        &self.locks
    }

    pub(crate) fn specials(&self) -> Arc<dyn SpecialFiles> {
        self.specials.clone()
    }

    pub(crate) fn preserve_owner(&self) -> bool {
        self.preserve_owner
    }
}

/// Whether `name` is an `import-<pid>-<n>` directory of a running process.
fn import_owner_alive(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("import-") else {
        return false;
    };
    let pid = rest.split('-').next().unwrap_or_default();
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && Path::new("/proc").join(pid).exists()
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    name: &str,
    what: &'static str,
    data: &[u8],
) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| ImageError::InvalidManifest {
        reference: name.to_string(),
        what,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::import_owner_alive;

    #[test]
    fn only_live_processes_own_import_directories() {
        assert!(import_owner_alive(&format!(
            "import-{}-3",
            std::process::id()
        )));
        assert!(!import_owner_alive("import-4294967295-0"));
        assert!(!import_owner_alive("import--0"));
        assert!(!import_owner_alive(&"ab".repeat(32)));
    }
}
