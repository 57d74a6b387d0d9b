//! Which containers use the store's images and layers, read from the container records the
//! runtime keeps under the same root (`<root>/containers/*/meta.json`): the CLI process sees
//! the agent's containers without asking the agent.
//!
//! Two rules come from it (upstream's image GC and `docker rmi` follow the same ones: an
//! image any container still has, running or exited, is not removed without force):
//! - removing an image a container was created from is refused unless forced, naming the
//!   containers and their pods;
//! - garbage collection never deletes a snapshot a container record lists as a layer, forced
//!   or not: those snapshots are lowerdirs of a mounted overlay.

use std::collections::HashSet;
use std::path::Path;

use super::reference::ImageReference;
use super::store::ImageStore;
use crate::store::{containers_dir, scan, ContainerMeta};

/// A container that uses an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    /// The runtime's container id.
    pub container_id: String,
    /// The container's name in its pod.
    pub container: String,
    /// `namespace/name` of its pod.
    pub pod: String,
}

impl std::fmt::Display for ImageUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "container {} of pod {} (id {})",
            self.container,
            self.pod,
            &self.container_id[..self.container_id.len().min(12)]
        )
    }
}

/// One container record, as far as images are concerned.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub user: ImageUser,
    /// The canonical reference it was created from (the name as given when it does not parse).
    pub image: String,
    /// The snapshot directory names (`<diff_id hex>`) of its layers; `None` for a record
    /// written before the layers were recorded.
    pub snapshots: Option<Vec<String>>,
}

fn snapshot_name(layer: &Path) -> Option<String> {
    // `<root>/snapshots/<hex>/fs`
    layer
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
}

impl ImageStore {
    /// Every container record under this store's root.
    pub(crate) fn container_records(&self) -> Vec<Record> {
        let (metas, _) = scan::<ContainerMeta>(&containers_dir(self.root()));
        metas
            .into_iter()
            .map(|m| Record {
                image: ImageReference::parse(&m.image)
                    .map(|r| r.to_string())
                    .unwrap_or_else(|_| m.image.clone()),
                snapshots: (!m.layers.is_empty())
                    .then(|| m.layers.iter().filter_map(|l| snapshot_name(l)).collect()),
                user: ImageUser {
                    container_id: m.id,
                    container: m.name,
                    pod: m.pod.full_name(),
                },
            })
            .collect()
    }

    /// The containers created from the image stored as `name` (canonical), sorted by pod.
    pub(crate) fn users_of(records: &[Record], name: &str) -> Vec<ImageUser> {
        let mut users: Vec<ImageUser> = records
            .iter()
            .filter(|r| r.image == name)
            .map(|r| r.user.clone())
            .collect();
        users.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
        users
    }

    /// The snapshots garbage collection must keep for the containers, or `None` when a record
    /// does not say which layers it uses and its image is no longer in `remaining` (then no
    /// snapshot may be deleted).
    pub(crate) fn snapshots_in_use(
        records: &[Record],
        remaining: &HashSet<String>,
    ) -> Option<HashSet<String>> {
        let mut keep = HashSet::new();
        for r in records {
            match &r.snapshots {
                Some(s) => keep.extend(s.iter().cloned()),
                // Its image still in the index keeps its layers anyway.
                None if remaining.contains(&r.image) => {}
                None => {
                    tracing::warn!(
                        user = %r.user,
                        image = %r.image,
                        "a container record without its layers uses an image no longer in the store; keeping every snapshot"
                    );
                    return None;
                }
            }
        }
        Some(keep)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::tests::{dir_entries, image, layer, store};
    use super::super::ImageError;
    use crate::spec::PodInfo;
    use crate::store::ContainerMeta;

    /// Writes the record of a container of pod `default/<pod>` created from `image` with
    /// `layers`, as the runtime does.
    fn record(root: &std::path::Path, id: &str, pod: &str, image: &str, layers: &[PathBuf]) {
        let dir = crate::store::containers_dir(root).join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let meta = ContainerMeta {
            id: id.into(),
            sandbox_id: "sb".into(),
            name: "app".into(),
            pod: PodInfo {
                namespace: "default".into(),
                name: pod.into(),
                uid: "u".into(),
                hostname: pod.into(),
            },
            restart_count: 0,
            image: image.into(),
            layers: layers.to_vec(),
            log_path: "/dev/null".into(),
            cgroups_path: "/x".into(),
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            complete: true,
            pid: 0,
            shim_pid: 0,
            started_at: None,
            start_error: None,
        };
        crate::fsutil::write_json(&dir.join("meta.json"), &meta).unwrap();
    }

    #[tokio::test]
    async fn removing_an_image_a_container_uses_is_refused_naming_the_pod() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let l = layer(&[("bin/app", b"x")]);
        let (source, _) = image(&[&l], None);
        let img = store
            .ingest(&source, "example.com/app:1", None, &None)
            .await
            .unwrap();
        // The pod names the image without the registry's canonical form differences.
        record(root.path(), "c1", "web", "example.com/app:1", &img.layers);

        let err = store.remove("example.com/app:1").await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ImageError::InUse { .. }), "{msg}");
        assert!(msg.contains("pod default/web"), "{msg}");
        assert!(store.get("example.com/app:1").unwrap().is_some());
        assert!(img.layers[0].is_dir());

        // The container goes: removal works and collects the layer.
        std::fs::remove_dir_all(crate::store::containers_dir(root.path()).join("c1")).unwrap();
        store.remove("example.com/app:1").await.unwrap();
        assert!(dir_entries(&root.path().join("snapshots")).is_empty());
    }

    #[tokio::test]
    async fn forced_removal_names_the_users_and_keeps_their_layers() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let l = layer(&[("bin/app", b"y")]);
        let (source, _) = image(&[&l], None);
        let img = store
            .ingest(&source, "example.com/app:2", None, &None)
            .await
            .unwrap();
        record(root.path(), "c2", "api", "example.com/app:2", &img.layers);

        let users = store.remove_with("example.com/app:2", true).await.unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].pod, "default/api");
        assert!(store.get("example.com/app:2").unwrap().is_none());
        // The running container's lowerdir survives the forced removal.
        assert!(img.layers[0].is_dir());

        // Once the container is gone the next collection takes the layer.
        std::fs::remove_dir_all(crate::store::containers_dir(root.path()).join("c2")).unwrap();
        let (other, _) = image(&[&layer(&[("o", b"o")])], None);
        store
            .ingest(&other, "example.com/other:1", None, &None)
            .await
            .unwrap();
        store.remove("example.com/other:1").await.unwrap();
        assert!(dir_entries(&root.path().join("snapshots")).is_empty());
    }

    #[tokio::test]
    async fn a_layer_of_a_retagged_image_stays_while_a_container_uses_it() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let (v1, _) = image(&[&layer(&[("v", b"1")])], None);
        let (v2, _) = image(&[&layer(&[("v", b"2")])], None);
        let old = store
            .ingest(&v1, "example.com/app:latest", None, &None)
            .await
            .unwrap();
        record(
            root.path(),
            "c3",
            "old",
            "example.com/app:latest",
            &old.layers,
        );
        // The tag moves on; the old container still runs on v1's layer.
        store
            .ingest(&v2, "example.com/app:latest", None, &None)
            .await
            .unwrap();
        let (unrelated, _) = image(&[&layer(&[("u", b"u")])], None);
        store
            .ingest(&unrelated, "example.com/u:1", None, &None)
            .await
            .unwrap();
        store.remove("example.com/u:1").await.unwrap();
        assert!(
            old.layers[0].is_dir(),
            "the running container's layer was collected"
        );
    }

    #[tokio::test]
    async fn prune_removes_every_unused_image_and_its_content_only() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let (used_src, _) = image(&[&layer(&[("u", b"used")])], None);
        let (a_src, _) = image(&[&layer(&[("a", b"a")])], None);
        let (b_src, _) = image(&[&layer(&[("b", b"b")])], None);
        let used = store
            .ingest(&used_src, "example.com/used:1", None, &None)
            .await
            .unwrap();
        let a = store
            .ingest(&a_src, "example.com/a:1", None, &None)
            .await
            .unwrap();
        store
            .ingest(&b_src, "example.com/b:1", None, &None)
            .await
            .unwrap();
        record(root.path(), "c9", "web", "example.com/used:1", &used.layers);
        let blobs_before = dir_entries(&root.path().join("images/blobs/sha256")).len();

        let report = store.prune().await.unwrap();
        let removed: Vec<&str> = report.removed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(removed, ["example.com/a:1", "example.com/b:1"]);
        assert_eq!(report.in_use, ["example.com/used:1"]);
        assert!(report.bytes_freed > 0);
        assert!(store.get("example.com/used:1").unwrap().is_some());
        assert!(used.layers[0].is_dir());
        assert!(!a.layers[0].exists());
        assert_eq!(dir_entries(&root.path().join("snapshots")).len(), 1);
        // Three blobs (manifest, config, layer) per removed image.
        assert_eq!(
            dir_entries(&root.path().join("images/blobs/sha256")).len(),
            blobs_before - 6
        );
        let users = store.images_with_users().unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].users[0].pod, "default/web");

        // Nothing left to prune, but what an interrupted pull left unreferenced is swept.
        let orphan = root
            .path()
            .join("images/blobs/sha256")
            .join("ab".repeat(32));
        std::fs::write(&orphan, b"left by an interrupted pull").unwrap();
        let r = store.prune().await.unwrap();
        assert!(r.removed.is_empty());
        assert!(!orphan.exists());
        // Naming a used or gone image removes nothing.
        let r = store
            .remove_unused(&["example.com/used:1".into(), "example.com/a:1".into()])
            .await
            .unwrap();
        assert!(r.removed.is_empty());
        assert_eq!(r.in_use, ["example.com/used:1"]);
    }
}
