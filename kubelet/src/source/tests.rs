//! Reading manifest directories from temporary directories.

use super::*;
use k8s_openapi::jiff::Timestamp;
use std::path::Path;
use std::time::Duration;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    ports: [{containerPort: 80, name: http}]\n";

fn at() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

fn read(d: &Path) -> Snapshot {
    read_dir_snapshot_at(d, "Node1", at())
}

#[test]
fn static_pod_shape() {
    let d = dir_with(&[("web.yaml", POD)]);
    let s = read(d.path());
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let pod = &s.pods[0];
    let m = &pod.metadata;
    assert_eq!(m.name.as_deref(), Some("web-node1"));
    assert_eq!(m.namespace.as_deref(), Some("default"));
    let uid = m.uid.clone().unwrap();
    assert_eq!(uid.len(), 32);
    let ann = m.annotations.as_ref().unwrap();
    assert_eq!(ann[CONFIG_HASH_ANNOTATION], uid);
    assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "file");
    assert_eq!(ann[CONFIG_SEEN_ANNOTATION], "2023-11-14T22:13:20Z");
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("node1"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.enable_service_links, Some(true));
    let tol = &spec.tolerations.as_ref().unwrap()[0];
    assert_eq!(
        (tol.operator.as_deref(), tol.effect.as_deref()),
        (Some("Exists"), Some("NoExecute"))
    );
    let c = &spec.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    assert_eq!(
        c.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
}

#[test]
fn uid_follows_content_node_and_path() {
    let d = dir_with(&[("web.yaml", POD)]);
    let uid = |s: &Snapshot| s.pods[0].metadata.uid.clone().unwrap();
    let a = uid(&read(d.path()));
    // Same content rewritten: same UID, also with a later seen time.
    std::fs::write(d.path().join("web.yaml"), POD).unwrap();
    assert_eq!(
        uid(&read_dir_snapshot_at(
            d.path(),
            "node1",
            Timestamp::from_second(1_800_000_000).unwrap()
        )),
        a
    );
    // Formatting-only change of the YAML: same object, same UID.
    std::fs::write(
        d.path().join("web.yaml"),
        POD.replace("{app: web}", "\n    app: web"),
    )
    .unwrap();
    assert_eq!(uid(&read(d.path())), a);
    // Content change: new UID.
    std::fs::write(
        d.path().join("web.yaml"),
        POD.replace("busybox", "busybox:1.36"),
    )
    .unwrap();
    let b = uid(&read(d.path()));
    assert_ne!(a, b);
    // Other node, other path: other UID.
    assert_ne!(uid(&read_dir_snapshot_at(d.path(), "node2", at())), b);
    std::fs::rename(d.path().join("web.yaml"), d.path().join("web2.yaml")).unwrap();
    assert_ne!(uid(&read(d.path())), b);
}

#[test]
fn listing_rules() {
    let d = dir_with(&[
        (".hidden.yaml", POD),
        ("b.yaml", &POD.replace("name: web", "name: b")),
        (
            "a.json",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"i:1"}]}}"#,
        ),
        ("c.yaml.bak", &POD.replace("name: web", "name: c")),
    ]);
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::fs::write(d.path().join("sub/x.yaml"), POD).unwrap();
    let big = "#".repeat((MAX_MANIFEST_SIZE + 1) as usize);
    std::fs::write(d.path().join("z-big.yaml"), big).unwrap();
    let s = read(d.path());
    let names: Vec<_> = s
        .pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, vec!["a-node1", "b-node1", "c-node1"]);
    assert_eq!(s.errors.len(), 1);
    assert!(s.errors[0].reason.contains("10 MiB"), "{}", s.errors[0]);
    // A missing directory is simply empty; a single file path works.
    assert_eq!(read(&d.path().join("missing")), Snapshot::default());
    assert_eq!(read(&d.path().join("b.yaml")).pods.len(), 1);
}

#[test]
fn bad_documents_do_not_stop_others() {
    let multi = format!(
        "{POD}---\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80}}]\n\
         ---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: ext, namespace: infra}}\nsubsets: [{{addresses: [{{ip: 10.0.0.1}}], ports: [{{port: 53}}]}}]\n",
        POD.replace("name: web", "name: Bad_Name").replace("containerPort: 80", "containerPort: 70000")
    );
    let d = dir_with(&[
        ("1-multi.yaml", &multi),
        (
            "2-broken.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n",
        ),
        (
            "3-noimage.yaml",
            &POD.replace("    image: busybox\n", "")
                .replace("name: web", "name: noimage"),
        ),
        ("4-ok.yaml", &POD.replace("name: web", "name: ok")),
    ]);
    let s = read(d.path());
    let names: Vec<_> = s
        .pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, vec!["web-node1", "ok-node1"]);
    assert_eq!(s.services.len(), 1);
    let svc = s.services[0].spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    let port = &svc.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(s.endpoints[0].metadata.namespace.as_deref(), Some("infra"));
    let errs: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
    let f = |n: &str| d.path().join(n).display().to_string();
    assert!(errs.contains(&format!(
        "{} (document 1): spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        f("1-multi.yaml")
    )), "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.starts_with(&format!(
            "{} (document 1): metadata.name: Invalid value: \"Bad_Name-node1\"",
            f("1-multi.yaml")
        ))),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with(&format!(
            "{} (document 0): invalid YAML or JSON",
            f("2-broken.yaml")
        ))),
        "{errs:#?}"
    );
    assert!(
        errs.contains(&format!(
            "{} (document 0): spec.containers[0].image: Required value",
            f("3-noimage.yaml")
        )),
        "{errs:#?}"
    );
    let e = s
        .errors
        .iter()
        .find(|e| e.file.ends_with("3-noimage.yaml"))
        .unwrap();
    assert_eq!(
        (e.document, e.field.as_deref()),
        (Some(0), Some("spec.containers[0].image"))
    );
}

#[test]
fn lists_and_duplicates() {
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: one}\n  spec: {containers: [{name: c, image: i}]}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: two}\n  spec: {containers: [{name: c, image: i, ports: [{containerPort: 0}]}]}\n";
    let d = dir_with(&[
        ("a.yaml", list),
        ("b.yaml", &POD.replace("name: web", "name: one")),
    ]);
    let s = read(d.path());
    assert_eq!(s.pods.len(), 1);
    let errs: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].ends_with(
            "(document 0): items[1].spec.containers[0].ports[0].containerPort: Required value"
        ),
        "{errs:#?}"
    );
    assert!(
        errs[1].contains("duplicate pod name \"default/one-node1\""),
        "{errs:#?}"
    );
}

#[test]
fn watcher_keeps_seen_time() {
    let d = dir_with(&[("web.yaml", POD)]);
    let clock = crate::backoff::TestClock::at_secs(1_700_000_000);
    let mut w = Watcher::with_clock(
        d.path().into(),
        "n".into(),
        Duration::from_secs(20),
        std::sync::Arc::new(clock.clone()),
    );
    let seen = |s: &Snapshot| {
        s.pods[0].metadata.annotations.as_ref().unwrap()[CONFIG_SEEN_ANNOTATION].clone()
    };
    let first = w.read_once();
    clock.advance(Duration::from_secs(30));
    let second = w.read_once();
    assert_eq!(first, second);
    std::fs::write(
        d.path().join("web.yaml"),
        POD.replace("busybox", "busybox:2"),
    )
    .unwrap();
    let third = w.read_once();
    assert_eq!(seen(&third), "2023-11-14T22:13:50Z");
}

#[tokio::test]
async fn watch_delivers_changes_promptly() {
    let d = tempfile::tempdir().unwrap();
    let mut rx = watch(d.path().into(), "n".into(), Duration::from_secs(3600));
    async fn recv(rx: &mut tokio::sync::mpsc::Receiver<Snapshot>) -> Snapshot {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("snapshot in time")
            .expect("open")
    }
    assert!(recv(&mut rx).await.pods.is_empty());
    // Write atomically (temp file then rename), as a careful operator does.
    std::fs::write(d.path().join(".web.tmp"), POD).unwrap();
    std::fs::rename(d.path().join(".web.tmp"), d.path().join("web.yaml")).unwrap();
    let s = recv(&mut rx).await;
    assert_eq!(s.pods.len(), 1);
    let uid = s.pods[0].metadata.uid.clone();
    std::fs::write(
        d.path().join("web.yaml"),
        POD.replace("busybox", "busybox:2"),
    )
    .unwrap();
    let s = recv(&mut rx).await;
    assert_ne!(s.pods[0].metadata.uid, uid);
    std::fs::remove_file(d.path().join("web.yaml")).unwrap();
    assert!(recv(&mut rx).await.pods.is_empty());
}

#[test]
fn invalid_services_and_endpoints_are_reported() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 70000}]}\n---\n\
                apiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets: [{addresses: [{ip: nope}], ports: [{port: 5432}]}]\n";
    let d = dir_with(&[("svc.yaml", text)]);
    let s = read(d.path());
    assert!(s.services.is_empty() && s.endpoints.is_empty());
    let errs: Vec<String> = s
        .errors
        .iter()
        .map(|e| format!("{:?} {}", e.document, e.field.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        errs,
        vec![
            "Some(0) spec.ports[0].port",
            // targetPort defaults to port, so it is out of range as well.
            "Some(0) spec.ports[0].targetPort",
            "Some(1) subsets[0].addresses[0].ip"
        ]
    );
}

#[test]
fn services_and_endpoints_keep_their_first_read_as_creation_time() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n\
                apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: [{addresses: [{ip: 10.244.1.5}], ports: [{port: 80}]}]\n";
    let d = dir_with(&[("svc.yaml", text)]);
    let clock = crate::backoff::TestClock::at_secs(1_700_000_000);
    let mut w = Watcher::with_clock(
        d.path().into(),
        "n".into(),
        Duration::from_secs(20),
        std::sync::Arc::new(clock.clone()),
    );
    let created = |s: &Snapshot| {
        (
            s.services[0].metadata.creation_timestamp.clone(),
            s.endpoints[0].metadata.creation_timestamp.clone(),
        )
    };
    let first = created(&w.read_once());
    assert_eq!(
        first.0.as_ref().map(|t| t.0.to_string()).as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    assert_eq!(first.0, first.1);
    clock.advance(Duration::from_secs(30));
    assert_eq!(created(&w.read_once()), first, "a re-read keeps the time");
    std::fs::remove_file(d.path().join("svc.yaml")).unwrap();
    assert!(w.read_once().services.is_empty());
    std::fs::write(d.path().join("svc.yaml"), text).unwrap();
    let again = created(&w.read_once());
    assert_ne!(again, first, "a Service written again is a new object");
}

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n---\n\
                   apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: [{addresses: [{ip: 10.244.1.5}], ports: [{port: 80}]}]\n";

/// A read time long after every file's last change: no file is racy.
fn later() -> std::time::SystemTime {
    std::time::SystemTime::now() + Duration::from_secs(3600)
}

fn cached_read(c: &mut ManifestCache, d: &Path) -> Snapshot {
    c.read(d, "node1", at(), later())
}

fn pod_names(s: &Snapshot) -> Vec<String> {
    s.pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

#[test]
fn cache_parses_only_changed_files() {
    let d = dir_with(&[
        ("a.yaml", &POD.replace("name: web", "name: a")),
        ("b.yaml", &POD.replace("name: web", "name: b")),
        ("svc.yaml", SVC),
    ]);
    let mut c = ManifestCache::new();
    let first = cached_read(&mut c, d.path());
    assert_eq!(c.parses(), 3);
    assert_eq!(
        first,
        read(d.path()),
        "the same snapshot as an uncached read"
    );
    // Nothing changed: nothing parsed, the same snapshot.
    assert_eq!(cached_read(&mut c, d.path()), first);
    assert_eq!(c.parses(), 3);
    // One file changed: only it is parsed.
    std::fs::write(
        d.path().join("b.yaml"),
        POD.replace("name: web", "name: b")
            .replace("busybox", "busybox:1.36"),
    )
    .unwrap();
    let s = cached_read(&mut c, d.path());
    assert_eq!(c.parses(), 4);
    assert_eq!(s, read(d.path()));
    assert_ne!(s.pods[1].metadata.uid, first.pods[1].metadata.uid);
    assert_eq!(s.pods[0], first.pods[0]);
    // A file removed: its objects go, nothing is parsed.
    std::fs::remove_file(d.path().join("svc.yaml")).unwrap();
    let s = cached_read(&mut c, d.path());
    assert_eq!(c.parses(), 4);
    assert!(s.services.is_empty() && s.endpoints.is_empty());
    assert_eq!(pod_names(&s), vec!["a-node1", "b-node1"]);
    // A new file: parsed once.
    std::fs::write(d.path().join("svc.yaml"), SVC).unwrap();
    assert_eq!(cached_read(&mut c, d.path()).services.len(), 1);
    assert_eq!(c.parses(), 5);
}

#[test]
fn cache_reports_only_reads_that_change_the_snapshot() {
    let d = dir_with(&[
        ("a.yaml", &POD.replace("name: web", "name: a")),
        ("svc.yaml", SVC),
    ]);
    let mut c = ManifestCache::new();
    let read_if_changed =
        |c: &mut ManifestCache| c.read_if_changed(d.path(), "node1", at(), later());
    let first = read_if_changed(&mut c).expect("the first read is a change");
    assert_eq!(first, read(d.path()));
    assert_eq!(read_if_changed(&mut c), None, "nothing changed");
    // The same content written again (a new inode): parsed, but the snapshot is the same.
    std::fs::write(d.path().join(".svc.tmp"), SVC).unwrap();
    std::fs::rename(d.path().join(".svc.tmp"), d.path().join("svc.yaml")).unwrap();
    assert_eq!(read_if_changed(&mut c), None, "an identical rewrite");
    assert_eq!(c.parses(), 3);
    // Other content.
    std::fs::write(
        d.path().join("svc.yaml"),
        SVC.replace("port: 80", "port: 81"),
    )
    .unwrap();
    let s = read_if_changed(&mut c).expect("a changed file");
    assert_eq!(s, read(d.path()));
    assert_eq!(read_if_changed(&mut c), None);
    // A file removed, and one added.
    std::fs::remove_file(d.path().join("svc.yaml")).unwrap();
    assert_eq!(
        read_if_changed(&mut c).expect("a removed file"),
        read(d.path())
    );
    std::fs::write(d.path().join("b.yaml"), POD.replace("name: web", "name: b")).unwrap();
    assert_eq!(
        read_if_changed(&mut c).expect("an added file"),
        read(d.path())
    );
    // A subdirectory appears: it is skipped, so nothing changed.
    std::fs::create_dir(d.path().join("sub")).unwrap();
    assert_eq!(
        read_if_changed(&mut c),
        None,
        "a subdirectory is skipped, not an error"
    );
    // Another node name: everything is read anew.
    assert!(c
        .read_if_changed(d.path(), "node2", at(), later())
        .is_some());
}

#[test]
fn named_reads_change_services_in_place_and_the_rest_as_a_full_read_would() {
    use super::NamedRead;
    use std::ffi::OsString;
    let other_svc = SVC
        .replace("name: web", "name: api")
        .replace("10.96.0.10", "10.96.0.11");
    let d = dir_with(&[
        ("a.yaml", &POD.replace("name: web", "name: a")),
        ("svc.yaml", SVC),
        ("svc2.yaml", &other_svc),
    ]);
    let mut c = ManifestCache::new();
    let named = |c: &mut ManifestCache, names: &[&str]| {
        let names: Vec<OsString> = names.iter().map(OsString::from).collect();
        c.read_named(d.path(), &names, "node1", at(), later())
    };
    // No read yet: a full one.
    assert_eq!(named(&mut c, &["svc.yaml"]), NamedRead::Changed);
    assert_eq!(c.snapshot(), read(d.path()));
    assert_eq!(
        named(&mut c, &["svc.yaml", ".svc.yaml.tmp"]),
        NamedRead::Unchanged
    );
    // A Service's port changes: that Service and its Endpoints, in place.
    std::fs::write(
        d.path().join("svc.yaml"),
        SVC.replace("port: 80", "port: 81"),
    )
    .unwrap();
    let parses = c.parses();
    match named(&mut c, &["svc.yaml"]) {
        NamedRead::InPlace {
            services,
            endpoints,
        } => {
            assert_eq!(services, read(d.path()).services[..1].to_vec());
            assert_eq!(endpoints, read(d.path()).endpoints[..1].to_vec());
        }
        other => panic!("not in place: {other:?}"),
    }
    assert_eq!(c.parses(), parses + 1, "only the named file was parsed");
    assert_eq!(c.snapshot(), read(d.path()));
    // A pod's file, a removed file, a new file, a file made a duplicate: as a full read sees them.
    std::fs::write(d.path().join("a.yaml"), POD.replace("name: web", "name: b")).unwrap();
    assert_eq!(named(&mut c, &["a.yaml"]), NamedRead::Changed);
    assert_eq!(c.snapshot(), read(d.path()));
    std::fs::remove_file(d.path().join("svc2.yaml")).unwrap();
    assert_eq!(named(&mut c, &["svc2.yaml"]), NamedRead::Changed);
    assert_eq!(c.snapshot(), read(d.path()));
    std::fs::write(d.path().join("svc3.yaml"), &other_svc).unwrap();
    assert_eq!(named(&mut c, &["svc3.yaml"]), NamedRead::Changed);
    assert_eq!(c.snapshot(), read(d.path()));
    std::fs::write(
        d.path().join("svc3.yaml"),
        SVC.replace("10.96.0.10", "10.96.0.12"),
    )
    .unwrap();
    assert_eq!(named(&mut c, &["svc3.yaml"]), NamedRead::Changed);
    let s = c.snapshot();
    assert_eq!(s, read(d.path()));
    assert!(
        s.errors
            .iter()
            .any(|e| e.to_string().contains("already defined")),
        "{:?}",
        s.errors
    );
    // The loser of a duplicate changes: still not in place (the winner's object stays).
    std::fs::write(
        d.path().join("svc3.yaml"),
        SVC.replace("10.96.0.10", "10.96.0.13"),
    )
    .unwrap();
    assert_eq!(named(&mut c, &["svc3.yaml"]), NamedRead::Changed);
    assert_eq!(c.snapshot(), read(d.path()));
    // Another node name: a full read.
    let names = [OsString::from("svc.yaml")];
    assert_eq!(
        c.read_named(d.path(), &names, "node2", at(), later()),
        NamedRead::Changed
    );
}

#[test]
fn named_read_of_a_file_renamed_into_place() {
    use super::NamedRead;
    use std::ffi::OsString;
    let d = dir_with(&[
        ("svc.yaml", SVC),
        ("svc2.yaml", &SVC.replace("name: web", "name: api")),
    ]);
    let mut c = ManifestCache::new();
    let now = std::time::SystemTime::now();
    c.read(d.path(), "node1", at(), now);
    std::fs::write(
        d.path().join(".svc.yaml.tmp"),
        SVC.replace("10.96.0.10", "10.96.0.20"),
    )
    .unwrap();
    std::fs::rename(d.path().join(".svc.yaml.tmp"), d.path().join("svc.yaml")).unwrap();
    let names = [OsString::from(".svc.yaml.tmp"), OsString::from("svc.yaml")];
    let got = c.read_named(
        d.path(),
        &names,
        "node1",
        at(),
        std::time::SystemTime::now(),
    );
    assert!(matches!(got, NamedRead::InPlace { .. }), "{got:?}");
}

#[test]
fn a_named_read_that_falls_back_to_a_full_read_keeps_the_changes_it_made() {
    use super::NamedRead;
    use std::ffi::OsString;
    let d = dir_with(&[("svc.yaml", SVC)]);
    let mut c = ManifestCache::new();
    c.read(d.path(), "node1", at(), later());
    std::fs::write(
        d.path().join("svc.yaml"),
        SVC.replace("port: 80", "port: 81"),
    )
    .unwrap();
    // The second name cannot be `stat`ed for another reason than absence (ENOTDIR): the read
    // falls back to a full one after the first file is already in the cache.
    let names = [OsString::from("svc.yaml"), OsString::from("svc.yaml/x")];
    let got = c.read_named(d.path(), &names, "node1", at(), later());
    assert_eq!(got, NamedRead::Changed, "the change of svc.yaml was lost");
    assert_eq!(c.snapshot(), read(d.path()));
}

#[test]
fn cache_sees_a_file_replaced_by_rename_with_same_size_and_mtime() {
    let d = dir_with(&[("web.yaml", POD)]);
    let mut c = ManifestCache::new();
    let before = cached_read(&mut c, d.path());
    let old = std::fs::metadata(d.path().join("web.yaml")).unwrap();
    // Same length, other content, the old modification time: only the inode (and the status
    // change time) tell.
    let other = POD.replace("busybox", "busyb0x");
    assert_eq!(other.len(), POD.len());
    let tmp = d.path().join(".web.tmp");
    std::fs::write(&tmp, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(old.modified().unwrap())
        .unwrap();
    std::fs::rename(&tmp, d.path().join("web.yaml")).unwrap();
    let new = std::fs::metadata(d.path().join("web.yaml")).unwrap();
    assert_eq!(
        (new.len(), new.modified().unwrap()),
        (old.len(), old.modified().unwrap())
    );
    let after = cached_read(&mut c, d.path());
    assert_eq!(c.parses(), 2);
    assert_eq!(
        after.pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("busyb0x")
    );
    assert_ne!(after.pods[0].metadata.uid, before.pods[0].metadata.uid);
}

#[test]
fn cache_keeps_reporting_a_bad_file_until_it_is_fixed() {
    let d = dir_with(&[
        ("web.yaml", POD),
        ("ok.yaml", &POD.replace("name: web", "name: ok")),
    ]);
    let mut c = ManifestCache::new();
    assert_eq!(
        pod_names(&cached_read(&mut c, d.path())),
        vec!["ok-node1", "web-node1"]
    );
    std::fs::write(
        d.path().join("web.yaml"),
        POD.replace("    image: busybox\n", ""),
    )
    .unwrap();
    let bad = cached_read(&mut c, d.path());
    assert_eq!(pod_names(&bad), vec!["ok-node1"]);
    assert_eq!(bad.errors.len(), 1);
    assert_eq!(
        bad.errors[0].field.as_deref(),
        Some("spec.containers[0].image")
    );
    assert_eq!(c.parses(), 3);
    // Unchanged and still bad: the same error, without parsing it again.
    assert_eq!(cached_read(&mut c, d.path()), bad);
    assert_eq!(c.parses(), 3);
    std::fs::write(d.path().join("web.yaml"), POD).unwrap();
    let fixed = cached_read(&mut c, d.path());
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert_eq!(pod_names(&fixed), vec!["ok-node1", "web-node1"]);
    assert_eq!(c.parses(), 4);
}

#[test]
fn cache_decides_duplicates_across_files_at_every_read() {
    let d = dir_with(&[("a.yaml", SVC), ("b.yaml", SVC)]);
    let mut c = ManifestCache::new();
    let s = cached_read(&mut c, d.path());
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.errors.len(), 2, "{:?}", s.errors);
    assert!(s.errors.iter().all(|e| e.file.ends_with("b.yaml")));
    // The first definition goes: b.yaml's objects take over, without parsing b.yaml again.
    std::fs::remove_file(d.path().join("a.yaml")).unwrap();
    let s = cached_read(&mut c, d.path());
    assert_eq!((s.services.len(), s.endpoints.len()), (1, 1));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(c.parses(), 2);
}

#[test]
fn cache_parses_a_racy_file_again() {
    let d = dir_with(&[("web.yaml", POD)]);
    let mut c = ManifestCache::new();
    // Read right after the write: within the window in which a same-size rewrite could keep
    // every time stamp, so the next read does not trust it.
    let now = std::time::SystemTime::now();
    c.read(d.path(), "node1", at(), now);
    c.read(d.path(), "node1", at(), now);
    assert_eq!(c.parses(), 2);
    // Read long after: trusted from then on.
    cached_read(&mut c, d.path());
    cached_read(&mut c, d.path());
    assert_eq!(c.parses(), 3);
}

#[test]
fn service_changes_name_only_what_changed() {
    let two = format!(
        "{SVC}---\n{}",
        SVC.replace("name: web", "name: db")
            .replace("10.96.0.10", "10.96.0.11")
    );
    let d = dir_with(&[("svc.yaml", &two)]);
    let old = read(d.path());
    let all = ServiceChanges::everything(&old);
    assert!(all.full && all.services.len() == 2 && all.endpoints.len() == 2);
    let changed = two.replacen("10.244.1.5", "10.244.1.6", 1);
    std::fs::write(d.path().join("svc.yaml"), &changed).unwrap();
    let new = read(d.path());
    let ch = ServiceChanges::between(&old, &new);
    assert!(!ch.full);
    assert!(ch.services.is_empty());
    assert_eq!(ch.endpoints.len(), 1);
    assert_eq!(ch.endpoints[0].metadata.name.as_deref(), Some("web"));
    assert!(ch.removed_services.is_empty() && ch.removed_endpoints.is_empty());
    std::fs::write(
        d.path().join("svc.yaml"),
        SVC.replace("name: web", "name: db"),
    )
    .unwrap();
    let ch = ServiceChanges::between(&new, &read(d.path()));
    // db moved to 10.96.0.10 (its endpoints are as they were); web is gone.
    assert_eq!(ch.services.len(), 1);
    assert!(ch.endpoints.is_empty(), "{ch:?}");
    let gone = vec![("default".to_string(), "web".to_string())];
    assert_eq!(
        (ch.removed_services.clone(), ch.removed_endpoints.clone()),
        (gone.clone(), gone)
    );
    assert!(ServiceChanges::between(&old, &old).is_empty());
}

#[tokio::test]
async fn watcher_sends_the_whole_set_then_only_changes() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(
            d.path().join(format!("svc{i:02}.yaml")),
            SVC.replace("name: web", &format!("name: web{i}"))
                .replace("10.96.0.10", &format!("10.96.0.{}", 10 + i)),
        )
        .unwrap();
    }
    let mut w = Watcher::new(d.path().into(), "n".into(), Duration::from_secs(3600));
    let mut changes = w.subscribe_changes();
    let (tx, mut snapshots) = tokio::sync::mpsc::channel(4);
    tokio::spawn(w.run(tx));
    async fn next<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("changes in time")
            .expect("open")
    }
    let first = next(&mut changes).await;
    assert!(first.full);
    assert_eq!((first.services.len(), first.endpoints.len()), (20, 20));
    snapshots.recv().await.unwrap();
    let tmp = d.path().join(".svc07.tmp");
    std::fs::write(
        &tmp,
        SVC.replace("name: web", "name: web7")
            .replace("10.96.0.10", "10.96.1.7"),
    )
    .unwrap();
    std::fs::rename(&tmp, d.path().join("svc07.yaml")).unwrap();
    let ch = next(&mut changes).await;
    assert!(!ch.full);
    assert_eq!(ch.services.len(), 1, "{ch:?}");
    let spec = ch.services[0].spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.1.7"));
    assert!(ch.endpoints.is_empty() && ch.removed_services.is_empty());
    std::fs::remove_file(d.path().join("svc03.yaml")).unwrap();
    let ch = next(&mut changes).await;
    let gone = vec![("default".to_string(), "web3".to_string())];
    assert_eq!(
        (ch.removed_services.clone(), ch.removed_endpoints.clone()),
        (gone.clone(), gone)
    );
    assert!(ch.services.is_empty() && ch.endpoints.is_empty());
}

#[test]
fn many_files_parsed_on_several_threads_keep_their_order_and_errors() {
    let d = tempfile::tempdir().unwrap();
    let n = 3 * read::PARALLEL_PARSE_MIN;
    for i in 0..n {
        let text = if i == n / 2 {
            "kind: Service\nmetadata: {name: [oops]}\n".to_string()
        } else {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i:04}}}\nspec: {{ports: [{{port: 80}}]}}\n")
        };
        std::fs::write(d.path().join(format!("f{i:04}.yaml")), text).unwrap();
    }
    let mut c = ManifestCache::default();
    let s = cached_read(&mut c, d.path());
    assert_eq!(c.parses(), n as u64);
    let names: Vec<String> = s
        .services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    let want: Vec<String> = (0..n)
        .filter(|i| *i != n / 2)
        .map(|i| format!("s{i:04}"))
        .collect();
    assert_eq!(names, want);
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert!(s.errors[0].file.ends_with(format!("f{:04}.yaml", n / 2)));
    // The same as a read without the cache, and nothing parsed again.
    assert_eq!(s, read_dir_snapshot_at(d.path(), "node1", at()));
    cached_read(&mut c, d.path());
    assert_eq!(c.parses(), n as u64);
}

/// The validation tables' pod still validates once the source's defaults are applied (moved
/// here so that validation's tests need nothing from the source).
#[test]
fn a_defaulted_valid_pod_stays_valid() {
    let mut p: Pod = serde_yaml_ng::from_str(crate::validation::pod_tests::BASE).unwrap();
    apply_pod_defaults(&mut p);
    crate::validation::validate_pod(&p).unwrap();
}

#[test]
fn endpoint_slices_are_read_validated_and_diffed() {
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\n\
                 addressType: IPv4\nendpoints: [{addresses: [10.244.1.5], conditions: {ready: true}}]\n\
                 ports: [{port: 80}]\n";
    let bad = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: loose}\n\
               addressType: IPv4\nendpoints: [{addresses: [nope]}]\n\
               ---\napiVersion: v1\nkind: EndpointSlice\nmetadata: {name: old}\naddressType: IPv4\nendpoints: []\n";
    let d = dir_with(&[("slice.yaml", &format!("{slice}{bad}"))]);
    let s = read(d.path());
    assert_eq!(s.endpoint_slices.len(), 1);
    let got = &s.endpoint_slices[0];
    assert_eq!(got.metadata.namespace.as_deref(), Some("default"));
    let port = &got.ports.as_ref().unwrap()[0];
    // Upstream's defaults.
    assert_eq!(
        (port.protocol.as_deref(), port.name.as_deref()),
        (Some("TCP"), Some(""))
    );
    let errs: Vec<String> = s.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].ends_with("(document 2): apiVersion: EndpointSlice must have apiVersion \"discovery.k8s.io/v1\", not \"v1\""), "{errs:?}");
    assert!(errs[1].ends_with("(document 1): endpoints[0].addresses[0]: Invalid value: \"nope\": must be a valid IPv4 address"), "{errs:?}");
    assert!(errs[2].ends_with("(document 1): metadata.labels[kubernetes.io/service-name]: Required value: names the Service whose endpoints these are"), "{errs:?}");

    let all = ServiceChanges::everything(&s);
    assert_eq!(all.endpoint_slices.len(), 1);
    std::fs::write(
        d.path().join("slice.yaml"),
        slice.replace("ready: true", "ready: false"),
    )
    .unwrap();
    let changed = read(d.path());
    let ch = ServiceChanges::between(&s, &changed);
    assert_eq!(ch.endpoint_slices.len(), 1);
    assert!(ch.services.is_empty() && ch.removed_endpoint_slices.is_empty());
    std::fs::remove_file(d.path().join("slice.yaml")).unwrap();
    let ch = ServiceChanges::between(&changed, &read(d.path()));
    assert_eq!(
        ch.removed_endpoint_slices,
        [("default".to_string(), "web-1".to_string())]
    );
}

#[test]
fn config_maps_and_secrets_are_decoded_and_validated() {
    // c3VwZXJzZWNyZXQ= is "supersecret".
    let good = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {mode: fast}\nbinaryData: {blob: AAE=}\nimmutable: true\n---\n\
                apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: team}\ndata: {password: c3VwZXJzZWNyZXQ=, user: YWRtaW4=}\nstringData: {user: root}\n---\n\
                apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: pull}, type: kubernetes.io/dockerconfigjson, stringData: {.dockerconfigjson: '{\"auths\":{}}'}}\n";
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad}\ndata: {k: v}\n---\n\
               apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dup-keys}\ndata: {k: v, 'a/b': x}\nbinaryData: {k: AA==}\n---\n\
               apiVersion: v1\nkind: Secret\nmetadata: {name: typed}\ntype: kubernetes.io/dockerconfigjson\ndata: {other: c3VwZXJzZWNyZXQ=}\n---\n\
               apiVersion: v1\nkind: Secret\nmetadata: {name: not-base64}\ndata: {password: 'supersecret!'}\n---\n\
               apiVersion: v1\nkind: Secret\nmetadata: {name: not-a-string}\nstringData: {password: [supersecret]}\n---\n\
               apiVersion: v2\nkind: Secret\nmetadata: {name: v2}\n";
    let d = dir_with(&[
        ("a-good.yaml", good),
        ("b-bad.yaml", bad),
        (
            "c-dup.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\n",
        ),
    ]);
    let s = read(d.path());
    assert_eq!(s.config_maps.len(), 1);
    let cm = &s.config_maps[0];
    assert_eq!(cm.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(cm.data.as_ref().unwrap()["mode"], "fast");
    assert_eq!(cm.binary_data.as_ref().unwrap()["blob"].0, [0, 1]);
    assert_eq!(cm.immutable, Some(true));
    let names: Vec<_> = s
        .secrets
        .iter()
        .map(|s| {
            (
                s.metadata.namespace.clone().unwrap(),
                s.metadata.name.clone().unwrap(),
                s.type_.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "team".to_string(),
                "creds".to_string(),
                "Opaque".to_string()
            ),
            (
                "default".into(),
                "pull".into(),
                "kubernetes.io/dockerconfigjson".into()
            )
        ]
    );
    // stringData is merged into data, and wins.
    let creds = s.secrets[0].data.as_ref().unwrap();
    assert_eq!(creds["password"].0, b"supersecret");
    assert_eq!(creds["user"].0, b"root");
    assert!(s.secrets[0].string_data.is_none());
    let errs: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
    let want = [
        ("b-bad.yaml (document 0): metadata.name: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain"),
        ("b-bad.yaml (document 1): data[a/b]: Invalid value: \"a/b\": a valid config key"),
        ("b-bad.yaml (document 1): data[k]: Invalid value: \"k\": duplicate of key present in binaryData"),
        ("b-bad.yaml (document 2): data[.dockerconfigjson]: Required value"),
        ("b-bad.yaml (document 3): data.password: invalid value"),
        ("b-bad.yaml (document 4): stringData.password: invalid value"),
        ("b-bad.yaml (document 5): apiVersion: Secret must have apiVersion \"v1\""),
        ("c-dup.yaml (document 0): metadata.name: Invalid value: \"default/app-config\": already defined in"),
    ];
    for w in want {
        assert!(errs.iter().any(|e| e.contains(w)), "{w:?} not in {errs:#?}");
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    // No value in any error or in the snapshot's Debug.
    let shown = format!("{errs:?} {s:?}");
    assert!(
        !shown.contains("supersecret") && !shown.contains("c3VwZXJzZWNyZXQ"),
        "{shown}"
    );
    assert!(
        shown.contains("creds") && shown.contains("password"),
        "{shown}"
    );
}

#[test]
fn one_file_in_memory_reads_as_the_directory_holding_it() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n";
    for text in [POD, &format!("{POD}---\n{svc}"), bad] {
        let d = dir_with(&[("web.yaml", text)]);
        let file = d.path().join("web.yaml");
        assert_eq!(
            read_manifest_bytes(&file, text.as_bytes(), "Node1", at()),
            read(d.path()),
            "{text}"
        );
    }
    let s = read_manifest_bytes(Path::new("/m/x.yaml"), b"\xff\xfe", "Node1", at());
    assert_eq!(s.errors.len(), 1);
    assert!(
        s.errors[0].to_string().contains("not UTF-8"),
        "{:?}",
        s.errors
    );
}
