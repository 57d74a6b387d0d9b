//! Unit tests of the store with an in-memory image source.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use oci_spec::image::Descriptor;

use super::digest::sha256_of;
use super::error::Result;
use super::source::{BlobSink, ImageSource};
use super::special::OverlaySpecialFiles;
use super::*;

/// Serves manifests and blobs from memory and records every fetch.
#[derive(Default)]
pub(super) struct MemorySource {
    top: String,
    docs: HashMap<String, Vec<u8>>,
    fetches: Mutex<Vec<String>>,
}

impl ImageSource for MemorySource {
    async fn fetch_manifest(&self, digest: Option<&str>) -> Result<Vec<u8>> {
        let digest = digest.unwrap_or(&self.top);
        self.fetches
            .lock()
            .unwrap()
            .push(format!("manifest {digest}"));
        self.docs
            .get(digest)
            .cloned()
            .ok_or_else(|| ImageError::NotFound {
                reference: "test".into(),
                detail: format!("no manifest {digest}"),
            })
    }

    async fn fetch_blob(&self, descriptor: &Descriptor, sink: &mut BlobSink) -> Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let digest = descriptor.digest().to_string();
        self.fetches.lock().unwrap().push(format!("blob {digest}"));
        tokio::task::yield_now().await;
        let data = self.docs.get(&digest).expect("blob exists");
        sink.write_all(data)
            .await
            .map_err(ImageError::io("writing blob", digest))?;
        Ok(())
    }
}

impl MemorySource {
    fn blob_fetches(&self) -> usize {
        self.fetches
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.starts_with("blob"))
            .count()
    }
}

pub(super) struct TestLayer {
    gz: Vec<u8>,
    diff_id: String,
}

pub(super) fn layer(files: &[(&str, &[u8])]) -> TestLayer {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    TestLayer {
        gz: gz.finish().unwrap(),
        diff_id: sha256_of(&tar),
    }
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256_of(data), "size": data.len()})
}

/// An image of `layers`; returns the source serving it and the manifest digest.
pub(super) fn image(
    layers: &[&TestLayer],
    diff_ids: Option<Vec<String>>,
) -> (MemorySource, String) {
    let diff_ids = diff_ids.unwrap_or_else(|| layers.iter().map(|l| l.diff_id.clone()).collect());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": source::OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &l.gz)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let digest = sha256_of(&manifest);
    let mut docs = HashMap::new();
    docs.insert(sha256_of(&config), config);
    for l in layers {
        docs.insert(sha256_of(&l.gz), l.gz.clone());
    }
    docs.insert(digest.clone(), manifest);
    (
        MemorySource {
            top: digest.clone(),
            docs,
            fetches: Mutex::default(),
        },
        digest,
    )
}

pub(super) fn store(root: &Path) -> ImageStore {
    ImageStore::with_special_files(root, Arc::new(OverlaySpecialFiles), false).unwrap()
}

fn recorder() -> (ProgressFn, Arc<Mutex<Vec<PullEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        Arc::new(move |e: &PullEvent| sink.lock().unwrap().push(e.clone())),
        events,
    )
}

pub(super) fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    v.sort();
    v
}

const NAME: &str = "example.com/app:1";

#[tokio::test]
async fn ingest_stores_unpacks_and_second_time_is_a_no_op() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let (l1, l2) = (
        layer(&[("bin/tool", b"tool")]),
        layer(&[("etc/conf", b"conf")]),
    );
    let (source, digest) = image(&[&l1, &l2], None);
    let image = store.ingest(&source, NAME, None, &None).await.unwrap();
    assert_eq!(image.manifest_digest, digest);
    assert_eq!(image.layers.len(), 2);
    assert_eq!(
        std::fs::read(image.layers[0].join("bin/tool")).unwrap(),
        b"tool"
    );
    assert_eq!(
        std::fs::read(image.layers[1].join("etc/conf")).unwrap(),
        b"conf"
    );
    assert!(image.layers[0].ends_with(format!("snapshots/{}/fs", &l1.diff_id[7..])));
    assert_eq!(
        image
            .config
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap(),
        &vec!["sh".to_string()]
    );
    assert_eq!(source.blob_fetches(), 3);

    let got = store.get("example.com/app:1").unwrap().unwrap();
    assert_eq!(got.manifest_digest, digest);
    assert_eq!(got.layers, image.layers);
    assert_eq!(got.size, image.size);
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(store.get("example.com/app:2").unwrap().is_none());

    let (progress, events) = recorder();
    store
        .ingest(&source, NAME, None, &Some(progress))
        .await
        .unwrap();
    assert_eq!(source.blob_fetches(), 3, "nothing fetched again");
    let events = events.lock().unwrap();
    assert!(events.iter().all(|e| !matches!(
        e,
        PullEvent::BlobFetched { .. } | PullEvent::LayerUnpacked { .. }
    )));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, PullEvent::LayerReused { .. }))
            .count(),
        2
    );
}

#[tokio::test]
async fn concurrent_ingests_fetch_and_unpack_once() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(store(root.path()));
    let l1 = layer(&[("a", b"1")]);
    let (source, _) = image(&[&l1], None);
    let source = Arc::new(source);
    let (progress, events) = recorder();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (store, source, progress) = (store.clone(), source.clone(), Some(progress.clone()));
            tokio::spawn(async move {
                store
                    .ingest(source.as_ref(), NAME, None, &progress)
                    .await
                    .map(|i| i.layers)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(source.blob_fetches(), 2, "config and layer fetched once");
    let unpacked = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PullEvent::LayerUnpacked { .. }))
        .count();
    assert_eq!(unpacked, 1);
}

#[tokio::test]
async fn a_tampered_blob_is_rejected_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let l1 = layer(&[("a", b"1")]);
    let (mut source, _) = image(&[&l1], None);
    let layer_digest = sha256_of(&l1.gz);
    let mut bad = l1.gz.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    source.docs.insert(layer_digest.clone(), bad);
    let err = store.ingest(&source, NAME, None, &None).await.unwrap_err();
    match &err {
        ImageError::DigestMismatch {
            digest, reference, ..
        } => {
            assert_eq!(digest, &layer_digest);
            assert_eq!(reference, NAME);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains(&layer_digest));
    assert_eq!(err.kubelet_reason(), "ErrImagePull");
    assert!(dir_entries(&root.path().join("images/tmp")).is_empty());
    assert!(!root
        .path()
        .join("images/blobs/sha256")
        .join(&layer_digest[7..])
        .exists());
    assert!(dir_entries(&root.path().join("snapshots")).is_empty());
    assert!(
        dir_entries(&root.path().join("images/blobs/sha256")).is_empty(),
        "the config fetched is discarded too"
    );
    assert!(store.get(NAME).unwrap().is_none());
}

#[tokio::test]
async fn a_wrong_diff_id_is_rejected_and_leaves_no_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let l1 = layer(&[("a", b"1")]);
    let wrong = sha256_of(b"something else");
    let (source, _) = image(&[&l1], Some(vec![wrong.clone()]));
    let err = store.ingest(&source, NAME, None, &None).await.unwrap_err();
    assert!(
        matches!(&err, ImageError::DiffIdMismatch { diff_id, actual, .. } if diff_id == &wrong && actual == &l1.diff_id),
        "{err}"
    );
    assert!(dir_entries(&root.path().join("snapshots")).is_empty());
    assert!(dir_entries(&root.path().join("images/blobs/sha256")).is_empty());
    assert!(store.get(NAME).unwrap().is_none());
}

#[tokio::test]
async fn an_index_resolves_to_the_host_platform_and_pins_are_checked() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let l1 = layer(&[("a", b"1")]);
    let (mut source, manifest_digest) = image(&[&l1], None);
    let manifest = source.docs[&manifest_digest].clone();
    let (os, arch) = source::host_platform();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": source::OCI_INDEX,
        "manifests": [
            {"mediaType": source::OCI_MANIFEST, "digest": sha256_of(b"other"), "size": 5, "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": source::OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(), "platform": {"os": os, "architecture": arch}},
        ]
    }))
    .unwrap();
    let index_digest = sha256_of(&index);
    source.docs.insert(index_digest.clone(), index);
    source.top = index_digest.clone();
    let image = store
        .ingest(&source, NAME, Some(&index_digest), &None)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, manifest_digest);

    let err = store
        .ingest(&source, NAME, Some(&manifest_digest), &None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::DigestMismatch { ref digest, .. } if digest == &manifest_digest),
        "{err}"
    );
}

#[tokio::test]
async fn remove_collects_only_unshared_content() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let (shared, own) = (layer(&[("shared", b"s")]), layer(&[("own", b"o")]));
    let (a, _) = image(&[&shared], None);
    let (b, _) = image(&[&shared, &own], None);
    let ia = store
        .ingest(&a, "example.com/a:1", None, &None)
        .await
        .unwrap();
    let ib = store
        .ingest(&b, "example.com/b:1", None, &None)
        .await
        .unwrap();
    assert_eq!(ia.layers[0], ib.layers[0]);
    store.remove("example.com/b:1").await.unwrap();
    assert!(ia.layers[0].is_dir());
    assert!(!ib.layers[1].exists());
    assert!(!root
        .path()
        .join("images/blobs/sha256")
        .join(&sha256_of(&own.gz)[7..])
        .exists());
    assert!(store.get("example.com/a:1").unwrap().is_some());
    let err = store.remove("example.com/b:1").await.unwrap_err();
    assert!(matches!(err, ImageError::NotPresent { .. }), "{err}");
    store.remove("example.com/a:1").await.unwrap();
    assert!(dir_entries(&root.path().join("snapshots")).is_empty());
    assert!(dir_entries(&root.path().join("images/blobs/sha256")).is_empty());
    assert!(store.list().unwrap().is_empty());
}

/// Writes `source` as an OCI layout tagged `tag` into `dir`.
fn write_layout(source: &MemorySource, tag: &str, dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for (digest, data) in &source.docs {
        std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), data).unwrap();
    }
    let top = &source.docs[&source.top];
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": source::OCI_MANIFEST, "digest": source.top, "size": top.len(),
         "annotations": {"org.opencontainers.image.ref.name": tag}},
        {"mediaType": source::OCI_MANIFEST, "digest": source.top, "size": top.len()},
    ]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[tokio::test]
async fn import_reads_layouts_and_archives() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let l1 = layer(&[("bin/x", b"x")]);
    let (source, digest) = image(&[&l1], None);
    write_layout(&source, "bb:1", &work.path().join("layout"));
    let images = store.import(&work.path().join("layout")).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].reference, "docker.io/library/bb:1");
    assert_eq!(images[0].manifest_digest, digest);

    write_layout(&source, "example.com/tools/bb:2", &work.path().join("l2"));
    let archive = work.path().join("bb.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    tar.append_dir_all(".", work.path().join("l2")).unwrap();
    tar.finish().unwrap();
    drop(tar);
    let images = store.import(&archive).await.unwrap();
    assert_eq!(images[0].reference, "example.com/tools/bb:2");
    assert!(store.get("example.com/tools/bb:2").unwrap().is_some());
    assert!(dir_entries(&root.path().join("images/tmp")).is_empty());

    let err = store
        .import(&work.path().join("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Import { .. }), "{err}");
}

#[test]
fn invalid_references_are_typed() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let err = store.get("UPPER/case").unwrap_err();
    assert_eq!(err.kubelet_reason(), "InvalidImageName");
}

#[tokio::test]
async fn ensure_follows_the_pull_policy_without_touching_the_network_when_present() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let l1 = layer(&[("a", b"1")]);
    let (source, digest) = image(&[&l1], None);
    // Unreachable: any network access fails fast.
    let options = PullOptions {
        insecure_registries: vec!["127.0.0.1:1".into()],
        ..Default::default()
    };
    let name = "127.0.0.1:1/app:1";

    let err = store
        .ensure(name, PullPolicy::Never, &options)
        .await
        .unwrap_err();
    assert_eq!(err.kubelet_reason(), "ErrImageNeverPull", "{err}");
    let err = store
        .ensure(name, PullPolicy::IfNotPresent, &options)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err}");

    store.ingest(&source, name, None, &None).await.unwrap();
    for policy in [PullPolicy::Never, PullPolicy::IfNotPresent] {
        assert_eq!(
            store
                .ensure(name, policy, &options)
                .await
                .unwrap()
                .manifest_digest,
            digest
        );
    }
    let err = store
        .ensure(name, PullPolicy::Always, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Unreachable { .. }),
        "Always asks the registry: {err}"
    );
    assert!(
        store.get(name).unwrap().is_some(),
        "a failed re-pull keeps the image"
    );
}

#[tokio::test]
async fn a_blob_longer_than_its_descriptor_is_cut_off() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let l1 = layer(&[("a", b"1")]);
    let (mut source, _) = image(&[&l1], None);
    let layer_digest = sha256_of(&l1.gz);
    let mut long = l1.gz.clone();
    long.extend(vec![0u8; 8 << 20]);
    source.docs.insert(layer_digest.clone(), long);
    let err = store.ingest(&source, NAME, None, &None).await.unwrap_err();
    assert!(
        err.to_string().contains("larger than its declared size"),
        "{err}"
    );
    assert!(dir_entries(&root.path().join("images/tmp")).is_empty());
}

#[tokio::test]
async fn an_oversized_config_is_refused_before_it_is_fetched() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let l1 = layer(&[("a", b"1")]);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Labels": {"pad": "x".repeat(5 << 20)}},
        "rootfs": {"type": "layers", "diff_ids": [l1.diff_id]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": source::OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &l1.gz)],
    }))
    .unwrap();
    let digest = sha256_of(&manifest);
    let source = MemorySource {
        top: digest.clone(),
        docs: HashMap::from([
            (sha256_of(&config), config),
            (sha256_of(&l1.gz), l1.gz.clone()),
            (digest, manifest),
        ]),
        fetches: Mutex::default(),
    };
    let err = store.ingest(&source, NAME, None, &None).await.unwrap_err();
    assert!(
        err.to_string().contains("larger than 4194304 bytes"),
        "{err}"
    );
    assert_eq!(source.blob_fetches(), 0);
}

#[tokio::test]
async fn a_layer_that_unpacks_past_the_limit_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut store = store(root.path());
    store.set_max_layer_size(4096);
    let l1 = layer(&[("big", &[b'z'; 20_000])]);
    let (source, _) = image(&[&l1], None);
    let err = store.ingest(&source, NAME, None, &None).await.unwrap_err();
    assert!(
        err.to_string().contains("larger than the 4096-byte limit"),
        "{err}"
    );
    assert!(dir_entries(&root.path().join("snapshots")).is_empty());
    assert!(store.get(NAME).unwrap().is_none());
}

#[tokio::test]
async fn every_failed_credential_is_reported_as_upstreams_aggregate() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path());
    let keyring = |json: &str| {
        let mut k = Keyring::new();
        k.add_config_json(json.as_bytes()).unwrap();
        k
    };
    // Two credentials match; the registry is unreachable, so both attempts fail.
    let options = PullOptions {
        insecure_registries: vec!["127.0.0.1:1".into()],
        keyrings: vec![
            keyring(r#"{"auths": {"127.0.0.1:1": {"username": "a", "password": "pw1"}}}"#),
            keyring(r#"{"auths": {"127.0.0.1:1/app": {"username": "b", "password": "pw2"}}}"#),
        ],
        ..Default::default()
    };
    let err = store.pull("127.0.0.1:1/app:1", &options).await.unwrap_err();
    let ImageError::Attempts { errors } = &err else {
        panic!("not every attempt: {err}");
    };
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(matches!(errors[0], ImageError::Unreachable { .. }), "{err}");
    // The same message twice is shown once, without brackets (NewAggregate).
    assert_eq!(err.to_string(), errors[0].to_string());
    assert_eq!(err.kubelet_reason(), "ErrImagePull");
    // Distinct messages: all of them, in order, in brackets.
    let two = ImageError::of_attempts(vec![
        ImageError::NotPresent {
            reference: "a".into(),
        },
        ImageError::NotFound {
            reference: "b".into(),
            detail: "manifest unknown".into(),
        },
    ]);
    assert_eq!(
        two.to_string(),
        "[image `a` is not present in the local store, image `b` not found: manifest unknown]"
    );
    // One attempt: its own error.
    let one = ImageError::of_attempts(vec![ImageError::NotPresent {
        reference: "a".into(),
    }]);
    assert!(matches!(one, ImageError::NotPresent { .. }), "{one}");
}
