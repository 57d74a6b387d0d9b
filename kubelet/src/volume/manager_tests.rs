//! Volume manager tests against the recording mounter.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HostPathVolumeSource, NFSVolumeSource, Pod, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubenode_runtime::spec::Propagation;

use super::testing::{Call, RecordingMounter};
use super::usage;
use super::Mounter;
use super::VolumeManager;

fn vol(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

fn pod(host: &Path) -> Pod {
    let mut cache = vol("cache");
    cache.empty_dir = Some(EmptyDirVolumeSource::default());
    let mut mem = vol("mem");
    mem.empty_dir = Some(EmptyDirVolumeSource {
        medium: Some("Memory".into()),
        size_limit: Some(Quantity("8Mi".into())),
    });
    let mut hp = vol("host");
    hp.host_path = Some(HostPathVolumeSource {
        path: host.display().to_string(),
        type_: Some("DirectoryOrCreate".into()),
    });
    let mut share = vol("share");
    share.nfs = Some(NFSVolumeSource {
        server: "10.0.0.5".into(),
        path: "/exports".into(),
        read_only: Some(true),
    });
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let app = Container {
        name: "app".into(),
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: Some(true),
                ..mount("cache", "/cache")
            },
            VolumeMount {
                mount_propagation: Some("HostToContainer".into()),
                ..mount("host", "/host")
            },
            mount("share", "/share"),
            VolumeMount {
                sub_path: Some("logs/app".into()),
                ..mount("cache", "/logs")
            },
        ]),
        ..Default::default()
    };
    crate::testing::pod()
        .uid("uid-1")
        .containers([app])
        .with_spec(|s| s.volumes = Some(vec![cache, mem, hp, share]))
        .build()
}

/// A manager over `root/pods`; the pretend mount table starts with a shared `/`, as on a
/// systemd host.
fn manager(root: &Path, m: &Arc<RecordingMounter>) -> VolumeManager {
    if m.mount_points().unwrap().is_empty() {
        m.add_mount("/dev/vda1", Path::new("/"), "ext4");
        m.set_propagation(Path::new("/"), "shared:1");
    }
    VolumeManager::new(&root.join("pods"), m.clone()).with_node_memory(1 << 30)
}

#[test]
fn sets_up_every_plugin_once_and_mounts_each_container_path() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let host = tmp.path().join("host/data");
    let p = pod(&host);
    vm.set_up_pod(&p).unwrap();
    vm.set_up_pod(&p).unwrap();
    let pod_dir = vm.pod_dir("uid-1");
    assert!(pod_dir
        .join("volumes/kubernetes.io~empty-dir/cache")
        .is_dir());
    assert!(
        host.is_dir(),
        "DirectoryOrCreate did not create the host path"
    );
    let mounts: Vec<(String, String)> = m
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Mount { fstype, source, .. } => Some((fstype.clone(), source.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        mounts,
        vec![
            ("tmpfs".to_string(), "tmpfs".to_string()),
            ("nfs".to_string(), "10.0.0.5:/exports".to_string())
        ]
    );

    let c = &p.spec.as_ref().unwrap().containers[0];
    // HostToContainer needs the source on a shared or slave mount (containerd's check).
    m.add_mount("/dev/vdb", &host, "ext4");
    let e = vm.container_mounts(&p, c).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "volumeMount \"host\" of container \"app\": path \"{}\" is mounted on \"{}\" but it is not a shared or slave mount",
            host.canonicalize().unwrap().display(),
            host.display()
        )
    );
    m.set_propagation(&host, "master:7");
    let binds = vm.container_mounts(&p, c).unwrap();
    assert_eq!(binds.len(), 4);
    assert_eq!(
        binds[0].host_path,
        pod_dir.join("volumes/kubernetes.io~empty-dir/cache")
    );
    assert!(binds[0].readonly);
    assert_eq!(binds[1].host_path, host);
    assert_eq!(binds[1].propagation, Propagation::HostToContainer);
    assert!(!binds[1].readonly);
    assert!(
        binds[2].readonly,
        "a readOnly nfs volume must be mounted read-only"
    );
    assert_eq!(
        binds[3].host_path,
        pod_dir.join("volume-subpaths/cache/app/3")
    );
    assert!(pod_dir
        .join("volumes/kubernetes.io~empty-dir/cache/logs/app")
        .is_dir());
}

#[test]
fn an_unchecked_missing_host_path_is_created_as_a_directory_for_the_bind() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let missing = tmp.path().join("not/there/yet");
    let mut p = pod(&missing);
    p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[2]
        .host_path
        .as_mut()
        .unwrap()
        .type_ = None;
    vm.set_up_pod(&p).unwrap();
    assert!(
        !missing.exists(),
        "type \"\" must not check or create at set-up"
    );
    vm.container_mounts(&p, &p.spec.as_ref().unwrap().containers[0])
        .unwrap();
    assert!(missing.is_dir());
}

#[test]
fn a_restarted_manager_reuses_existing_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let p = pod(&tmp.path().join("h"));
    manager(tmp.path(), &m).set_up_pod(&p).unwrap();
    let before = m.calls().len();
    // A new manager (an agent restart) over the same mount table.
    let vm = manager(tmp.path(), &m);
    vm.set_up_pod(&p).unwrap();
    assert_eq!(m.calls().len(), before, "mounted again after a restart");
}

#[test]
fn teardown_unmounts_deepest_first_then_removes_the_pod_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let host = tmp.path().join("host");
    let p = pod(&host);
    vm.set_up_pod(&p).unwrap();
    vm.container_mounts(&p, &p.spec.as_ref().unwrap().containers[0])
        .unwrap();
    std::fs::write(host.join("keep"), "host data").unwrap();
    vm.tear_down_pod("uid-1").unwrap();
    let unmounts: Vec<_> = m
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Unmount(_)))
        .collect();
    assert_eq!(unmounts.len(), 3);
    assert!(matches!(&unmounts[0], Call::Unmount(p) if p.ends_with("volume-subpaths/cache/app/3")));
    let left: Vec<_> = m
        .mount_points()
        .unwrap()
        .into_iter()
        .map(|m| m.target)
        .collect();
    assert_eq!(left, [Path::new("/")]);
    assert!(!vm.pod_dir("uid-1").exists());
    assert_eq!(
        std::fs::read_to_string(host.join("keep")).unwrap(),
        "host data"
    );
}

#[test]
fn a_failed_unmount_keeps_the_directory_and_the_volume_files() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let p = pod(&tmp.path().join("h"));
    vm.set_up_pod(&p).unwrap();
    let nfs_dir = vm.pod_dir("uid-1").join("volumes/kubernetes.io~nfs/share");
    std::fs::write(nfs_dir.join("on-the-server"), "precious").unwrap();
    m.fail_unmounts(true);
    let errors = vm.tear_down_pod("uid-1").unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("still mounted")),
        "{errors:?}"
    );
    assert_eq!(
        std::fs::read_to_string(nfs_dir.join("on-the-server")).unwrap(),
        "precious"
    );
    // Once unmounting works again, teardown completes.
    m.fail_unmounts(false);
    vm.tear_down_pod("uid-1").unwrap();
    assert!(!vm.pod_dir("uid-1").exists());
}

#[test]
fn a_failing_volume_names_itself_and_others_still_set_up() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut p = pod(&file);
    p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[2]
        .host_path
        .as_mut()
        .unwrap()
        .type_ = Some("Directory".into());
    let errors = vm.set_up_pod(&p).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        format!(
            "MountVolume.SetUp failed for volume \"host\" : hostPath type check failed: {} is not a directory",
            file.display()
        )
    );
    assert!(vm
        .pod_dir("uid-1")
        .join("volumes/kubernetes.io~empty-dir/cache")
        .is_dir());
    // Retried on the next pass (not cached as ready).
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    vm.set_up_pod(&p).unwrap();
}

#[test]
fn subpath_symlink_escape_is_refused_with_upstreams_message() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let p = pod(&tmp.path().join("h"));
    vm.set_up_pod(&p).unwrap();
    let cache = vm
        .pod_dir("uid-1")
        .join("volumes/kubernetes.io~empty-dir/cache");
    std::os::unix::fs::symlink("/etc", cache.join("logs")).unwrap();
    let e = vm
        .container_mounts(&p, &p.spec.as_ref().unwrap().containers[0])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to prepare subPath for volumeMount \"cache\" of container \"app\""
    );
    assert!(!m.calls().iter().any(|c| matches!(c, Call::Bind { .. })));
}

#[test]
fn size_limit_exceeded_gives_upstreams_eviction_message() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let mut p = pod(&tmp.path().join("h"));
    p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
        .empty_dir
        .as_mut()
        .unwrap()
        .size_limit = Some(Quantity("0.0625Mi".into()));
    vm.set_up_pod(&p).unwrap();
    assert!(vm.storage_check_due("uid-1"));
    assert_eq!(vm.local_storage_exceeded(&p, &[]), None);
    let cache = vm
        .pod_dir("uid-1")
        .join("volumes/kubernetes.io~empty-dir/cache");
    std::fs::write(cache.join("big"), vec![1u8; 256 * 1024]).unwrap();
    // Rate-limited: the next check is not due yet.
    assert!(!vm.storage_check_due("uid-1"));
    // The limit printed as upstream's canonical quantity (`0.0625Mi` as `64Ki`).
    assert_eq!(
        vm.local_storage_exceeded(&p, &[]).as_deref(),
        Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"64Ki\". ")
    );
}

#[test]
fn containers_and_disk_emptydirs_count_toward_the_pod_storage_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let vm = manager(tmp.path(), &m);
    let mut p = pod(&tmp.path().join("h"));
    let app = &mut p.spec.as_mut().unwrap().containers[0];
    app.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
        limits: Some([("ephemeral-storage".to_string(), Quantity("512Ki".into()))].into()),
        ..Default::default()
    });
    let name = app.name.clone();
    vm.set_up_pod(&p).unwrap();
    let layer = tmp.path().join("upper");
    std::fs::create_dir(&layer).unwrap();
    let storage = [usage::ContainerStorage {
        name: name.clone(),
        writable_layer: layer.clone(),
        log_dir: tmp.path().join("no-logs"),
    }];
    assert_eq!(vm.local_storage_exceeded(&p, &storage), None);
    // 384 KiB in the disk emptyDir and 192 KiB in the writable layer: the container is within
    // its 512Ki, the pod (whose only limit is that one) is not.
    let cache = vm
        .pod_dir("uid-1")
        .join("volumes/kubernetes.io~empty-dir/cache");
    std::fs::write(cache.join("big"), vec![1u8; 384 * 1024]).unwrap();
    std::fs::write(layer.join("f"), vec![1u8; 192 * 1024]).unwrap();
    assert_eq!(
        vm.local_storage_exceeded(&p, &storage).as_deref(),
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 512Ki. ")
    );
    std::fs::remove_file(cache.join("big")).unwrap();
    assert_eq!(vm.local_storage_exceeded(&p, &storage), None);
}

#[test]
fn fs_group_owns_the_empty_dirs_only_and_once() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let gid = if nix::unistd::Uid::effective().is_root() {
        2000
    } else {
        nix::unistd::Gid::effective().as_raw()
    };
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(RecordingMounter::new());
    let host = tmp.path().join("host");
    let mut p = pod(&host);
    p.spec.as_mut().unwrap().security_context =
        Some(k8s_openapi::api::core::v1::PodSecurityContext {
            fs_group: Some(gid.into()),
            ..Default::default()
        });
    let host_gid = std::fs::metadata(tmp.path()).unwrap().gid();
    manager(tmp.path(), &m).set_up_pod(&p).unwrap();
    let pod_dir = tmp.path().join("pods/uid-1");
    let stat = |path: &Path| {
        let m = std::fs::metadata(path).unwrap();
        (m.mode() & 0o7777, m.gid())
    };
    let cache = pod_dir.join("volumes/kubernetes.io~empty-dir/cache");
    for name in ["cache", "mem"] {
        let dir = pod_dir.join("volumes/kubernetes.io~empty-dir").join(name);
        assert_eq!(stat(&dir), (0o2777, gid), "{name}");
        assert!(pod_dir
            .join("plugins/kubernetes.io~empty-dir")
            .join(name)
            .join("ready")
            .is_file());
    }
    assert_eq!(stat(&host).1, host_gid, "hostPath ownership changed");
    assert_eq!(stat(&host).0 & 0o2000, 0);
    let share = pod_dir.join("volumes/kubernetes.io~nfs/share");
    assert_eq!(stat(&share).1, host_gid, "nfs ownership changed");

    // An agent restart: the volumes are found set up and not walked again.
    std::fs::write(cache.join("kept"), "x").unwrap();
    std::fs::set_permissions(cache.join("kept"), PermissionsExt::from_mode(0o600)).unwrap();
    manager(tmp.path(), &m).set_up_pod(&p).unwrap();
    assert_eq!(stat(&cache.join("kept")).0, 0o600);
}
