//! Tests of the configMap, secret, downwardAPI and projected volumes: their payloads (against
//! upstream's cases and messages) and their set-up, update and teardown by the volume
//! manager, on real directories (and a real tmpfs as root).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::ByteString;

use super::atomic_writer::DATA_DIR;
use super::projection::{self, format_map, pod_payloads, Kind};
use super::testing::{Call, RecordingMounter};
use super::{Mounter, VolumeManager};
use crate::node::downward::NodeCapacity;
use crate::objects::{Backend, ObjectError, Objects, Token, TokenSource};

const NODE: NodeCapacity = NodeCapacity {
    cpu_millis: 2000,
    memory: 4 << 30,
    ephemeral_storage: 100 << 30,
};

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A static pod (its objects are the manifest directory's) with these volumes (YAML).
fn pod(volumes: &str) -> Pod {
    pod_from(volumes, "file", "")
}

fn pod_from(volumes: &str, source: &str, security: &str) -> Pod {
    let text = format!(
        r#"
metadata:
  name: web
  namespace: default
  uid: uid-1
  labels: {{app: web, tier: "front\"end"}}
  annotations: {{kubernetes.io/config.source: {source}, note: "a\nb"}}
spec:
  {security}
  containers:
  - name: app
    image: busybox
    resources: {{limits: {{memory: 64Mi, cpu: 500m}}, requests: {{cpu: 250m}}}}
  volumes: {volumes}
"#
    );
    serde_yaml_ng::from_str(&text).unwrap()
}

fn objects() -> Objects {
    let o = Objects::new();
    o.set_files(
        vec![cm("cfg", &[("a.conf", "A"), ("b.conf", "B")])],
        vec![secret(
            "creds",
            &[("password", "hunter2"), ("user", "admin")],
        )],
    );
    o
}

async fn payload(pod: &Pod, objects: &Objects) -> BTreeMap<String, (String, u32)> {
    let mut all = pod_payloads(pod, objects, &NODE).await;
    assert_eq!(all.len(), 1);
    let (_, p) = all.drain().next().unwrap();
    p.unwrap()
        .into_iter()
        .map(|(k, f)| (k, (String::from_utf8(f.data).unwrap(), f.mode)))
        .collect()
}

async fn payload_error(pod: &Pod, objects: &Objects) -> String {
    let mut all = pod_payloads(pod, objects, &NODE).await;
    let (_, p) = all.drain().next().unwrap();
    p.unwrap_err().to_string()
}

fn files(pairs: &[(&str, &str, u32)]) -> BTreeMap<String, (String, u32)> {
    pairs
        .iter()
        .map(|(k, v, m)| (k.to_string(), (v.to_string(), *m)))
        .collect()
}

#[tokio::test]
async fn config_map_keys_items_modes_and_missing_keys() {
    let o = objects();
    let all = pod("[{name: v, configMap: {name: cfg}}]");
    assert_eq!(
        payload(&all, &o).await,
        files(&[("a.conf", "A", 0o644), ("b.conf", "B", 0o644)])
    );
    let items = pod(
        "[{name: v, configMap: {name: cfg, defaultMode: 0o440, items: [{key: a.conf, path: conf/a}, {key: b.conf, path: b, mode: 0o600}]}}]",
    );
    assert_eq!(
        payload(&items, &o).await,
        files(&[("conf/a", "A", 0o440), ("b", "B", 0o600)])
    );
    let missing_key = pod("[{name: v, configMap: {name: cfg, items: [{key: nope, path: x}]}}]");
    assert_eq!(
        payload_error(&missing_key, &o).await,
        "configmap references non-existent config key: nope"
    );
    let optional_key =
        pod("[{name: v, configMap: {name: cfg, optional: true, items: [{key: nope, path: x}, {key: a.conf, path: a}]}}]");
    assert_eq!(
        payload(&optional_key, &o).await,
        files(&[("a", "A", 0o644)])
    );
    let missing = pod("[{name: v, configMap: {name: other}}]");
    assert_eq!(
        payload_error(&missing, &o).await,
        "configmap \"other\" not found"
    );
    let optional = pod("[{name: v, configMap: {name: other, optional: true}}]");
    assert!(payload(&optional, &o).await.is_empty());
}

#[tokio::test]
async fn secret_keys_modes_and_missing_keys() {
    let o = objects();
    let p = pod("[{name: v, secret: {secretName: creds, defaultMode: 0o400}}]");
    assert_eq!(
        payload(&p, &o).await,
        files(&[("password", "hunter2", 0o400), ("user", "admin", 0o400)])
    );
    let p = pod("[{name: v, secret: {secretName: creds, items: [{key: nope, path: x}]}}]");
    assert_eq!(
        payload_error(&p, &o).await,
        "secret references non-existent secret key: nope"
    );
    let p = pod("[{name: v, secret: {secretName: gone}}]");
    let e = payload_error(&p, &o).await;
    assert_eq!(e, "secret \"gone\" not found");
    let p = pod("[{name: v, secret: {secretName: gone, optional: true}}]");
    assert!(payload(&p, &o).await.is_empty());
}

#[test]
fn labels_are_formatted_as_upstreams_format_map() {
    let m = BTreeMap::from([
        ("b".to_string(), "two words".to_string()),
        ("a".to_string(), "say \"hi\"\n\\".to_string()),
    ]);
    assert_eq!(
        format_map(&m),
        "a=\"say \\\"hi\\\"\\n\\\\\"\nb=\"two words\""
    );
    assert_eq!(format_map(&BTreeMap::new()), "");
}

#[tokio::test]
async fn downward_api_fields_and_resources() {
    let o = objects();
    let p = pod(r#"[{name: v, downwardAPI: {items: [
            {path: name, fieldRef: {fieldPath: metadata.name}},
            {path: ns, fieldRef: {fieldPath: metadata.namespace}},
            {path: uid, fieldRef: {fieldPath: metadata.uid}},
            {path: labels, fieldRef: {fieldPath: metadata.labels}},
            {path: meta/app, fieldRef: {fieldPath: "metadata.labels['app']"}, mode: 0o400},
            {path: note, fieldRef: {fieldPath: "metadata.annotations['note']"}},
            {path: cpu, resourceFieldRef: {containerName: app, resource: limits.cpu, divisor: 1m}},
            {path: mem, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}},
            {path: req, resourceFieldRef: {containerName: app, resource: requests.memory}}
        ]}}]"#);
    assert_eq!(
        payload(&p, &o).await,
        files(&[
            ("name", "web", 0o644),
            ("ns", "default", 0o644),
            ("uid", "uid-1", 0o644),
            ("labels", "app=\"web\"\ntier=\"front\\\"end\"", 0o644),
            ("meta/app", "web", 0o400),
            ("note", "a\nb", 0o644),
            ("cpu", "500", 0o644),
            ("mem", "64", 0o644),
            ("req", "0", 0o644),
        ])
    );
    let p = pod(r#"[{name: v, downwardAPI: {items: [
            {path: a, fieldRef: {fieldPath: spec.nodeName}},
            {path: b, resourceFieldRef: {containerName: nope, resource: limits.cpu}}
        ]}}]"#);
    assert_eq!(
        payload_error(&p, &o).await,
        "[unsupported fieldPath: spec.nodeName, container nope not found]"
    );
}

/// A token source handing out `token-<n>` (n counts the calls), recording its arguments.
#[derive(Debug, Default)]
struct FakeTokens {
    calls: Mutex<Vec<(Option<String>, i64)>>,
    fixed: Mutex<Option<String>>,
}

impl TokenSource for FakeTokens {
    fn token<'a>(
        &'a self,
        _pod: &'a Pod,
        audience: Option<&'a str>,
        expiration_seconds: i64,
    ) -> BoxFuture<'a, Result<Token, ObjectError>> {
        let mut calls = self.calls.lock().unwrap();
        calls.push((audience.map(String::from), expiration_seconds));
        let token = self
            .fixed
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("token-{}", calls.len()));
        Box::pin(async move {
            Ok(Token {
                token,
                expiration: k8s_openapi::jiff::Timestamp::now(),
            })
        })
    }

    fn forget_pod(&self, _uid: &str) {}
}

/// The API server's objects for API pods.
#[derive(Debug, Default)]
struct FakeApi {
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
}

impl Backend for FakeApi {
    fn register_pod(&self, _pod: &Pod) {}
    fn unregister_pod(&self, _pod: &Pod) {}
    fn config_map<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<ConfigMap>, ObjectError>> {
        let got = self.config_maps.lock().unwrap().get(name).cloned();
        Box::pin(async move {
            got.map(Arc::new)
                .ok_or_else(|| ObjectError::config_map_not_found(name))
        })
    }
    fn secret<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Secret>, ObjectError>> {
        Box::pin(async move { Err(ObjectError::secret_not_found(name)) })
    }
}

/// The volume ServiceAccount admission adds to every API pod.
const KUBE_API_ACCESS: &str = r#"[{name: kube-api-access-x7k2p, projected: {defaultMode: 420, sources: [
    {serviceAccountToken: {expirationSeconds: 3607, path: token}},
    {configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}},
    {downwardAPI: {items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]}}
]}}]"#;

fn api_objects() -> (Objects, Arc<FakeTokens>) {
    let o = Objects::new();
    let tokens = Arc::new(FakeTokens::default());
    o.set_tokens(tokens.clone());
    let api = FakeApi::default();
    api.config_maps.lock().unwrap().insert(
        "kube-root-ca.crt".into(),
        cm("kube-root-ca.crt", &[("ca.crt", "CA")]),
    );
    o.set_api(Arc::new(api));
    (o, tokens)
}

#[tokio::test]
async fn the_kube_api_access_volume_of_every_cluster_pod() {
    let (o, tokens) = api_objects();
    let p = pod_from(KUBE_API_ACCESS, "api", "");
    assert_eq!(
        payload(&p, &o).await,
        files(&[
            ("token", "token-1", 0o644),
            ("ca.crt", "CA", 0o644),
            ("namespace", "default", 0o644)
        ])
    );
    assert_eq!(*tokens.calls.lock().unwrap(), vec![(None, 3607)]);
    // With an fsGroup (or a common runAsUser, then its owner) the token is 0600.
    let p = pod_from(KUBE_API_ACCESS, "api", "securityContext: {fsGroup: 2000}");
    assert_eq!(payload(&p, &o).await["token"].1, 0o600);
    let p = pod_from(KUBE_API_ACCESS, "api", "securityContext: {runAsUser: 1000}");
    let all = pod_payloads(&p, &o, &NODE).await;
    let token = &all["kube-api-access-x7k2p"].as_ref().unwrap()["token"];
    assert_eq!((token.mode, token.fs_user), (0o600, Some(1000)));
    // An audience and the default expiration.
    let p = pod_from(
        "[{name: v, projected: {sources: [{serviceAccountToken: {path: t, audience: vault}}]}}]",
        "api",
        "",
    );
    payload(&p, &o).await;
    assert_eq!(
        tokens.calls.lock().unwrap().last().cloned(),
        Some((Some("vault".into()), projection::DEFAULT_TOKEN_EXPIRATION))
    );
}

#[tokio::test]
async fn projected_sources_errors_and_cluster_trust_bundles() {
    let o = objects();
    let p = pod(r#"[{name: v, projected: {defaultMode: 0o400, sources: [
            {configMap: {name: cfg, items: [{key: a.conf, path: a}]}},
            {secret: {name: creds, items: [{key: user, path: u, mode: 0o440}]}},
            {downwardAPI: {items: [{path: n, fieldRef: {fieldPath: metadata.name}}]}},
            {configMap: {name: absent, optional: true}}
        ]}}]"#);
    assert_eq!(
        payload(&p, &o).await,
        files(&[
            ("a", "A", 0o400),
            ("u", "admin", 0o440),
            ("n", "web", 0o400)
        ])
    );
    let p = pod(r#"[{name: v, projected: {sources: [
            {configMap: {name: absent}}, {secret: {name: gone}},
            {clusterTrustBundle: {name: b, path: ca.pem}}
        ]}}]"#);
    let e = payload_error(&p, &o).await;
    assert!(
        e.starts_with("[configmap \"absent\" not found, secret \"gone\" not found, clusterTrustBundle projections are not supported by kubenode"),
        "{e}"
    );
    // A static pod has no service-account token.
    let p = pod("[{name: v, projected: {sources: [{serviceAccountToken: {path: t}}]}}]");
    assert!(payload_error(&p, &o).await.contains("static pod"));
}

#[test]
fn fs_user_is_the_common_run_as_user() {
    let p = |security: &str, containers: &str| -> Pod {
        serde_yaml_ng::from_str(&format!(
            "metadata: {{name: p}}\nspec: {{securityContext: {security}, containers: {containers}}}"
        ))
        .unwrap()
    };
    assert_eq!(
        projection::fs_user_of(&p("{runAsUser: 7}", "[{name: a}, {name: b}]")),
        Some(7)
    );
    assert_eq!(
        projection::fs_user_of(&p(
            "{runAsUser: 7}",
            "[{name: a}, {name: b, securityContext: {runAsUser: 8}}]"
        )),
        None
    );
    assert_eq!(
        projection::fs_user_of(&p(
            "{}",
            "[{name: a, securityContext: {runAsUser: 8}}, {name: b}]"
        )),
        None
    );
    assert_eq!(
        projection::fs_user_of(&p("{}", "[{name: a, securityContext: {runAsUser: 8}}]")),
        Some(8)
    );
}

// The volume manager.

fn manager(root: &Path, m: &Arc<RecordingMounter>) -> VolumeManager {
    VolumeManager::new(&root.join("pods"), m.clone()).with_node_memory(1 << 30)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const THREE: &str = r#"[
    {name: cfg, configMap: {name: cfg}},
    {name: creds, secret: {secretName: creds, defaultMode: 0o400}},
    {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
]"#;

#[tokio::test]
async fn set_up_writes_each_volume_and_mounts_secrets_on_a_tmpfs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let o = objects();
    let p = pod(THREE);
    let payloads = pod_payloads(&p, &o, &NODE).await;
    vm.set_up_pod_with(&p, &payloads).unwrap();
    let vols = vm.pod_dir("uid-1").join("volumes");
    let cfg = vols.join("kubernetes.io~configmap/cfg");
    assert_eq!(read(&cfg.join("a.conf")), "A");
    assert_eq!(
        std::fs::read_link(cfg.join("a.conf")).unwrap(),
        Path::new("..data/a.conf")
    );
    // The volume root is the wrapped emptyDir's 0777 directory.
    assert_eq!(std::fs::metadata(&cfg).unwrap().mode() & 0o7777, 0o777);
    let creds = vols.join("kubernetes.io~secret/creds");
    assert_eq!(read(&creds.join("password")), "hunter2");
    assert_eq!(
        std::fs::metadata(creds.join("password")).unwrap().mode() & 0o7777,
        0o400
    );
    let info = vols.join("kubernetes.io~downward-api/info");
    assert_eq!(
        read(&info.join("labels")),
        "app=\"web\"\ntier=\"front\\\"end\""
    );
    // Only the secret is a tmpfs.
    let mounts: Vec<_> = m
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Mount { target, fstype, .. } => Some((target, fstype)),
            _ => None,
        })
        .collect();
    assert_eq!(mounts, vec![(creds.clone(), "tmpfs".to_string())]);
    assert!(vm
        .pod_dir("uid-1")
        .join("plugins/kubernetes.io~empty-dir/wrapped_creds/ready")
        .is_file());
    // Mounted read-only into containers, as upstream.
    assert_eq!(
        vm.volume_path(
            "uid-1",
            &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0]
        ),
        Some((cfg.clone(), true))
    );
}

#[tokio::test]
async fn a_missing_source_fails_with_upstreams_message_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let o = objects();
    let p = pod(
        "[{name: cfg, configMap: {name: x}}, {name: opt, configMap: {name: y, optional: true}}, {name: s, secret: {secretName: z}}]",
    );
    let payloads = pod_payloads(&p, &o, &NODE).await;
    let errors: Vec<String> = vm
        .set_up_pod_with(&p, &payloads)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        vec![
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"x\" not found",
            "MountVolume.SetUp failed for volume \"s\" : secret \"z\" not found",
        ]
    );
    let vols = vm.pod_dir("uid-1").join("volumes");
    assert!(!vols.join("kubernetes.io~configmap/cfg").exists());
    assert!(!vols.join("kubernetes.io~secret/s").exists());
    assert!(
        m.calls().is_empty(),
        "no tmpfs for a secret that is missing"
    );
    // The optional one is an empty volume.
    let opt = vols.join("kubernetes.io~configmap/opt");
    assert!(opt.join(DATA_DIR).is_dir());
    assert!(!vm.is_set_up("uid-1"));
    // The objects appear: the next pass sets the pod up.
    o.set_files(
        vec![cm("x", &[("k", "v")])],
        vec![secret("z", &[("k", "s")])],
    );
    let payloads = pod_payloads(&p, &o, &NODE).await;
    vm.set_up_pod_with(&p, &payloads).unwrap();
    assert_eq!(read(&vols.join("kubernetes.io~configmap/cfg/k")), "v");
    assert!(vm.is_set_up("uid-1"));
}

#[tokio::test]
async fn updates_rewrite_only_what_changed_and_subpaths_keep_theirs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let o = objects();
    let mut p = pod(THREE);
    let payloads = pod_payloads(&p, &o, &NODE).await;
    vm.set_up_pod_with(&p, &payloads).unwrap();
    let cfg = vm
        .pod_dir("uid-1")
        .join("volumes/kubernetes.io~configmap/cfg");
    let data_before = std::fs::read_link(cfg.join(DATA_DIR)).unwrap();

    // A subPath of a key is the key's file in the current data directory.
    let c: k8s_openapi::api::core::v1::Container = serde_yaml_ng::from_str(
        "{name: app, volumeMounts: [{name: cfg, mountPath: /etc/a.conf, subPath: a.conf}, {name: cfg, mountPath: /etc/cfg}]}",
    )
    .unwrap();
    let mounts = vm.container_mounts(&p, &c).unwrap();
    assert!(mounts.iter().all(|b| b.readonly), "{mounts:?}");
    let bound = m
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Bind { source, .. } => Some(source),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(bound.len(), 1, "{:?}", m.calls());

    // Nothing changed: nothing written.
    let (updated, errors) = vm.update_contents(&p, &pod_payloads(&p, &o, &NODE).await);
    assert!(updated.is_empty() && errors.is_empty());
    assert_eq!(std::fs::read_link(cfg.join(DATA_DIR)).unwrap(), data_before);

    // A changed ConfigMap (one key changed, one removed) and new labels.
    o.set_files(
        vec![cm("cfg", &[("a.conf", "A2")])],
        vec![secret(
            "creds",
            &[("password", "hunter2"), ("user", "admin")],
        )],
    );
    p.metadata.labels = Some(BTreeMap::from([("app".into(), "web2".into())]));
    let (mut updated, errors) = vm.update_contents(&p, &pod_payloads(&p, &o, &NODE).await);
    updated.sort();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(updated, vec!["cfg", "info"]);
    assert_eq!(read(&cfg.join("a.conf")), "A2");
    assert!(!cfg.join("b.conf").exists());
    assert!(std::fs::symlink_metadata(cfg.join("b.conf")).is_err());
    let info = vm
        .pod_dir("uid-1")
        .join("volumes/kubernetes.io~downward-api/info");
    assert_eq!(read(&info.join("labels")), "app=\"web2\"");

    // A source that went away: an error, and the last contents stay.
    o.set_files(vec![], vec![secret("creds", &[("password", "x")])]);
    let (_, errors) = vm.update_contents(&p, &pod_payloads(&p, &o, &NODE).await);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["MountVolume.SetUp failed for volume \"cfg\" : configmap \"cfg\" not found"]
    );
    assert_eq!(read(&cfg.join("a.conf")), "A2");
}

#[tokio::test]
async fn fs_group_owns_the_contents_read_only() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let o = objects();
    let p = pod_from(
        "[{name: creds, secret: {secretName: creds, defaultMode: 0o400}}]",
        "file",
        "securityContext: {fsGroup: 2345}",
    );
    vm.set_up_pod_with(&p, &pod_payloads(&p, &o, &NODE).await)
        .unwrap();
    let dir = vm
        .pod_dir("uid-1")
        .join("volumes/kubernetes.io~secret/creds");
    let meta = std::fs::metadata(dir.join("password")).unwrap();
    // 0400 plus upstream's roMask for the group.
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o440, 2345));
    let root = std::fs::metadata(&dir).unwrap();
    assert_eq!((root.mode() & 0o2000, root.gid()), (0o2000, 2345));
}

#[tokio::test]
async fn an_agent_restart_adopts_the_written_volumes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let o = objects();
    let p = pod(THREE);
    manager(tmp.path(), &m)
        .set_up_pod_with(&p, &pod_payloads(&p, &o, &NODE).await)
        .unwrap();
    let cfg = tmp
        .path()
        .join("pods/uid-1/volumes/kubernetes.io~configmap/cfg");
    let data = std::fs::read_link(cfg.join(DATA_DIR)).unwrap();
    // A new manager (the next agent run) with the tmpfs still mounted.
    let vm = manager(tmp.path(), &m);
    vm.set_up_pod_with(&p, &pod_payloads(&p, &o, &NODE).await)
        .unwrap();
    assert_eq!(std::fs::read_link(cfg.join(DATA_DIR)).unwrap(), data);
    let mounts = m
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Mount { .. }))
        .count();
    assert_eq!(mounts, 1, "the secret's tmpfs is reused");
}

/// As root, with the real mounter: the secret's bytes are on a tmpfs only, and the teardown
/// unmounts it and removes everything.
#[tokio::test]
async fn a_real_secret_tmpfs_is_torn_down_with_the_pod() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mounter: Arc<dyn Mounter> = Arc::new(super::SystemMounter::new(None));
    let vm = VolumeManager::new(&tmp.path().join("pods"), mounter.clone());
    let o = objects();
    let p = pod(THREE);
    let payloads = pod_payloads(&p, &o, &NODE).await;
    let result = vm.set_up_pod_with(&p, &payloads);
    let creds = vm
        .pod_dir("uid-1")
        .join("volumes/kubernetes.io~secret/creds");
    let on_tmpfs = mounter
        .mount_points()
        .unwrap()
        .iter()
        .any(|m| m.target == creds && m.fstype == "tmpfs");
    let content = std::fs::read_to_string(creds.join("password")).ok();
    let teardown = vm.tear_down_pod("uid-1");
    result.unwrap();
    teardown.unwrap();
    assert!(on_tmpfs);
    assert_eq!(content.as_deref(), Some("hunter2"));
    assert!(!vm.pod_dir("uid-1").exists());
    assert!(!mounter
        .mount_points()
        .unwrap()
        .iter()
        .any(|m| m.target.starts_with(tmp.path())));
}

#[test]
fn kinds_and_plugin_directories() {
    let v = |yaml: &str| -> k8s_openapi::api::core::v1::Volume {
        serde_yaml_ng::from_str(yaml).unwrap()
    };
    assert_eq!(
        Kind::of(&v("{name: a, configMap: {name: x}}")),
        Some(Kind::ConfigMap)
    );
    assert_eq!(Kind::of(&v("{name: a, emptyDir: {}}")), None);
    assert!(Kind::Secret.in_memory() && Kind::Projected.in_memory());
    assert!(!Kind::ConfigMap.in_memory() && !Kind::DownwardApi.in_memory());
    assert_eq!(Kind::DownwardApi.plugin_dir(), "kubernetes.io~downward-api");
}

/// A configMap volume is on disk and counts towards the pod's `ephemeral-storage` limit, as
/// upstream's `localEphemeralVolumeNames`.
#[tokio::test]
async fn config_map_volumes_count_towards_the_pods_local_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let o = Objects::new();
    let big = "x".repeat(64 << 10);
    o.set_files(vec![cm("cfg", &[("big", &big)])], vec![]);
    let mut p = pod("[{name: cfg, configMap: {name: cfg}}]");
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.resources
        .as_mut()
        .unwrap()
        .limits
        .as_mut()
        .unwrap()
        .insert(
            "ephemeral-storage".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("16Ki".into()),
        );
    vm.set_up_pod_with(&p, &pod_payloads(&p, &o, &NODE).await)
        .unwrap();
    let message = vm.local_storage_exceeded(&p, &[]);
    assert!(
        message.as_deref().is_some_and(|m| m.contains("16Ki")),
        "{message:?}"
    );
}
