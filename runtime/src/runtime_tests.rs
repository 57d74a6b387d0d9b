//! Unit tests of [`Runtime`] over the recording OCI runtime, host and shim
//! launcher: no root, no processes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;

use crate::oci::{OciRuntime, OciStatus};
use crate::shim::{ExitRecord, ShimArgs};
use crate::spec::{NamespaceMode, PodInfo, PodNamespaces};
use crate::testing::{test_limits, RecordingHost, RecordingRuntime, RecordingShims};
use crate::{
    ContainerConfig, ContainerState, ImageRef, Runtime, RuntimeConfig, RuntimeError, SandboxConfig,
    SandboxOptions, SandboxState,
};

struct Fixture {
    _dir: tempfile::TempDir,
    config: RuntimeConfig,
    oci: Arc<RecordingRuntime>,
    host: Arc<RecordingHost>,
    shims: Arc<RecordingShims>,
    rt: Runtime,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(
        dir.path().join("root"),
        dir.path().join("run"),
        dir.path().join("logs"),
    );
    config.shim_binary = "/usr/bin/kubenode".into();
    config.proc_root = dir.path().join("proc");
    let oci = RecordingRuntime::new();
    let host = RecordingHost::new();
    let shims = RecordingShims::new(oci.clone());
    let rt = Runtime::with_parts(
        config.clone(),
        oci.clone(),
        host.clone(),
        shims.clone(),
        test_limits(),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        config,
        oci,
        host,
        shims,
        rt,
    }
}

impl Fixture {
    fn restart(&self) -> Runtime {
        Runtime::with_parts(
            self.config.clone(),
            self.oci.clone(),
            self.host.clone(),
            self.shims.clone(),
            test_limits(),
        )
        .unwrap()
    }

    fn ready_sandbox(&self) -> String {
        let sb = self.rt.create_sandbox(&sandbox_config()).unwrap();
        self.rt.start_sandbox(&sb.id).unwrap().id
    }

    fn shim_args(&self, id: &str) -> ShimArgs {
        self.shims
            .launched()
            .into_iter()
            .find(|a| a.id == id)
            .unwrap()
    }

    fn exit(&self, id: &str, code: i32, oom: bool) {
        let args = self.shim_args(id);
        let rec = ExitRecord {
            exit_code: code,
            signal: None,
            oom_killed: oom,
            finished_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            log_lines_dropped: 0,
        };
        rec.write(&args.exit_file).unwrap();
        self.oci.set_status(id, OciStatus::Stopped);
    }
}

fn sandbox_config() -> SandboxConfig {
    SandboxConfig {
        pod: PodInfo {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u1".into(),
            hostname: "web".into(),
        },
        cgroup_parent: "/kubepods/besteffort/podu1".into(),
    }
}

fn container(name: &str) -> ContainerConfig {
    ContainerConfig {
        container: Container {
            name: name.into(),
            command: Some(vec!["/bin/app".into()]),
            ..Default::default()
        },
        image: ImageRef {
            name: "img".into(),
            layers: vec!["/layers/a".into(), "/layers/b".into()],
            config: None,
        },
        restart_count: 2,
        ..Default::default()
    }
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn sandbox_create_start_remove() {
    let f = fixture();
    let sb = f.rt.create_sandbox(&sandbox_config()).unwrap();
    assert_eq!(sb.state, SandboxState::NotReady);
    let netns = sb.netns_path.clone();
    assert!(netns.starts_with(f.config.run_dir.join("netns")));
    let shm = f.config.root_dir.join("sandboxes").join(&sb.id).join("shm");
    assert_eq!(
        f.host.calls(),
        vec![
            format!("create_netns {}", netns.display()),
            format!(
                "create_ipcns {}",
                f.config
                    .run_dir
                    .join("ipcns")
                    .join(netns.file_name().unwrap())
                    .display()
            ),
            format!(
                "create_utsns {}",
                f.config
                    .run_dir
                    .join("utsns")
                    .join(netns.file_name().unwrap())
                    .display()
            ),
            format!("mount_shm {}", shm.display()),
            "set_pids_limit /kubepods/besteffort/podu1/pids.max=max".to_string(),
        ]
    );
    let sb = f.rt.start_sandbox(&sb.id).unwrap();
    assert_eq!(sb.state, SandboxState::Ready);
    let args = f.shim_args(&sb.id);
    assert_eq!(args.log_path, None);
    assert_eq!(args.runtime_root, f.config.run_dir.join("runc"));
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(args.bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["/pause"]));
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        format!("/kubepods/besteffort/podu1/{}", sb.id)
    );
    assert!(f.config.pause_rootfs().join("pause").exists());

    f.rt.stop_and_remove_sandbox(&sb.id).unwrap();
    let calls = f.host.calls();
    assert!(calls.contains(&format!("remove_namespace {}", netns.display())));
    assert!(calls.contains(&format!("unmount {}", shm.display())));
    assert!(calls.contains(&"remove_cgroup /kubepods/besteffort/podu1".to_string()));
    assert!(f.oci.calls().contains(&format!("delete {} --force", sb.id)));
    assert!(dir_is_empty(&f.config.root_dir.join("sandboxes")));
    assert!(f.rt.list_sandboxes().is_empty());
}

#[test]
fn container_lifecycle_and_exit_reasons() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let id = f.rt.create_container(&sb, &container("app")).unwrap();
    let args = f.shim_args(&id);
    assert_eq!(
        args.log_path.as_deref(),
        Some(f.config.log_dir.join("ns_web_u1/app/2.log").as_path())
    );
    assert!(args
        .oom_files
        .iter()
        .any(|p| p.ends_with(format!("kubepods/besteffort/podu1/{id}/memory.oom_control"))));
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(args.bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["/bin/app"]));
    assert_eq!(spec["linux"]["namespaces"][0]["type"], "network");
    assert!(f
        .host
        .calls()
        .iter()
        .any(|c| c.starts_with("mount_overlay ") && c.ends_with(&format!("{id}/rootfs"))));
    assert_eq!(
        f.rt.container_status(&id).unwrap().state,
        ContainerState::Created
    );

    f.rt.start_container(&id).unwrap();
    let st = f.rt.container_status(&id).unwrap();
    assert_eq!((st.state, st.restart_count), (ContainerState::Running, 2));
    assert!(st.started_at.is_some());

    for (code, oom, reason) in [
        (0, false, "Completed"),
        (7, false, "Error"),
        (137, true, "OOMKilled"),
    ] {
        f.exit(&id, code, oom);
        let st = f.rt.container_status(&id).unwrap();
        assert_eq!(
            (st.state, st.exit_code, st.reason.as_deref()),
            (ContainerState::Exited, Some(code), Some(reason))
        );
    }
    f.rt.remove_container(&id).unwrap();
    assert!(matches!(
        f.rt.container_status(&id),
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(f
        .host
        .calls()
        .iter()
        .any(|c| c == &format!("unmount {}", args.bundle.join("rootfs").display())));
    assert!(!args.bundle.exists());
}

#[test]
fn failed_create_names_pod_and_container_and_leaves_nothing() {
    let f = fixture();
    let sb = f.ready_sandbox();
    f.oci
        .fail("create", "exec: \"/bin/app\": no such file or directory");
    let err = f.rt.create_container(&sb, &container("app")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RuntimeError::Create { .. }), "{err:?}");
    assert!(
        msg.contains("container app of pod ns/web") && msg.contains("no such file"),
        "{msg}"
    );
    assert!(dir_is_empty(&f.config.root_dir.join("containers")));
    assert!(f.rt.list_containers(None).is_empty());
    assert!(f.host.calls().iter().any(|c| c.starts_with("unmount ")));

    let mut bad = container("nocmd");
    bad.container.command = None;
    let err = f.rt.create_container(&sb, &bad).unwrap_err();
    assert!(matches!(err, RuntimeError::Spec { .. }), "{err:?}");
    assert!(err.to_string().contains("nocmd") && err.to_string().contains("no command specified"));
    assert!(dir_is_empty(&f.config.root_dir.join("containers")));
}

#[test]
fn containers_join_the_pinned_namespaces_even_before_pause_starts() {
    let f = fixture();
    let sb = f.rt.create_sandbox(&sandbox_config()).unwrap();
    let pin = |kind: &str| {
        f.config
            .run_dir
            .join(kind)
            .join(format!("kn-{}", &sb.id[..16]))
    };
    // Created, not started: the container can be created (not run) already.
    let id = f.rt.create_container(&sb.id, &container("a")).unwrap();
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.shim_args(&id).bundle.join("config.json")).unwrap(),
    )
    .unwrap();
    let paths: Vec<(&str, &str)> = spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| Some((n["type"].as_str()?, n["path"].as_str()?)))
        .collect();
    let want = |k| pin(k).to_string_lossy().into_owned();
    assert_eq!(
        paths,
        [
            ("network", want("netns").as_str()),
            ("ipc", want("ipcns").as_str()),
            ("uts", want("utsns").as_str()),
        ]
    );
    // pause joins the same ones.
    f.rt.start_sandbox(&sb.id).unwrap();
    let pause: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.shim_args(&sb.id).bundle.join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pause["linux"]["namespaces"][1]["path"], want("ipcns"));
    assert_eq!(pause["linux"]["namespaces"][2]["path"], want("utsns"));
    assert_eq!(pause["hostname"], "web");
    f.rt.stop_and_remove_sandbox(&sb.id).unwrap();
    let calls = f.host.calls();
    for kind in ["netns", "ipcns", "utsns"] {
        assert!(calls.contains(&format!("remove_namespace {}", want(kind))));
    }
    assert!(matches!(
        f.rt.create_container("nope", &container("a")),
        Err(RuntimeError::NotFound { .. })
    ));
}

#[test]
fn a_sandbox_without_pinned_namespaces_needs_pause_running() {
    // A sandbox recorded before namespaces were pinned: containers join pause's.
    let f = fixture();
    let sb = f.rt.create_sandbox(&sandbox_config()).unwrap();
    let meta_path = f
        .config
        .root_dir
        .join("sandboxes")
        .join(&sb.id)
        .join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let obj = meta.as_object_mut().unwrap();
    obj.remove("ipc_path");
    obj.remove("uts_path");
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    f.rt.recover().unwrap();
    assert!(matches!(
        f.rt.create_container(&sb.id, &container("a")),
        Err(RuntimeError::BadState { .. })
    ));
    let started = f.rt.start_sandbox(&sb.id).unwrap();
    assert_eq!(started.state, SandboxState::Ready);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let pid = meta["pause_pid"].as_i64().unwrap() as i32;
    // The recorded pause pid now belongs to another program: its namespaces are not joined.
    let cgroup = format!("4:memory:/kubepods/besteffort/podu1/{}\n", sb.id);
    crate::sandbox::fake_process(&f.config.proc_root, pid, b"sh\0", &cgroup, 5);
    let err = f.rt.create_container(&sb.id, &container("a")).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::BadState { state, .. } if state.contains("not /pause")),
        "{err}"
    );
    crate::sandbox::fake_process(
        &f.config.proc_root,
        pid,
        b"/pause\0",
        "4:memory:/kubepods/besteffort/podu1/other\n",
        5,
    );
    assert!(
        f.rt.create_container(&sb.id, &container("a")).is_err(),
        "another sandbox's pause"
    );
    crate::sandbox::fake_process(&f.config.proc_root, pid, b"/pause\0", &cgroup, 5);
    let id = f.rt.create_container(&sb.id, &container("a")).unwrap();
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.shim_args(&id).bundle.join("config.json")).unwrap(),
    )
    .unwrap();
    let ipc = spec["linux"]["namespaces"][1]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ipc,
        f.config
            .proc_root
            .join(format!("{pid}/ns/ipc"))
            .display()
            .to_string()
    );
}

#[test]
fn start_failure_is_start_error() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let id = f.rt.create_container(&sb, &container("app")).unwrap();
    f.oci.fail("start", "cannot start");
    let err = f.rt.start_container(&id).unwrap_err();
    assert!(matches!(err, RuntimeError::Start { .. }));
    let st = f.rt.container_status(&id).unwrap();
    assert_eq!(
        (st.exit_code, st.reason.as_deref()),
        (Some(128), Some("StartError"))
    );
    assert!(st.message.unwrap().contains("cannot start"));
}

#[test]
fn stop_signals_then_kills_after_grace() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let id = f.rt.create_container(&sb, &container("app")).unwrap();
    f.rt.start_container(&id).unwrap();
    f.rt.stop_container(&id, Duration::from_millis(20), None)
        .unwrap();
    let calls = f.oci.calls();
    let term = calls
        .iter()
        .position(|c| c == &format!("kill {id} 15"))
        .expect("SIGTERM sent");
    let kill = calls
        .iter()
        .position(|c| c == &format!("kill {id} 9 --all"))
        .expect("SIGKILL sent");
    assert!(term < kill);

    let id2 = f.rt.create_container(&sb, &container("b")).unwrap();
    f.rt.start_container(&id2).unwrap();
    f.rt.stop_container(&id2, Duration::ZERO, crate::Signal::new(2))
        .unwrap();
    assert!(
        !f.oci.calls().contains(&format!("kill {id2} 2")),
        "no grace, no polite signal"
    );
    f.exit(&id2, 137, false);
    let before = f.oci.calls().len();
    f.rt.stop_container(&id2, Duration::from_secs(1), None)
        .unwrap();
    assert!(
        f.oci.calls()[before..]
            .iter()
            .all(|c| !c.starts_with("kill")),
        "exited: nothing to kill"
    );
}

#[test]
fn recovery_rebuilds_view_and_removes_half_made() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let done = f.rt.create_container(&sb, &container("done")).unwrap();
    f.rt.start_container(&done).unwrap();
    f.exit(&done, 7, false);
    let running = f.rt.create_container(&sb, &container("running")).unwrap();
    f.rt.start_container(&running).unwrap();
    // A create that never finished: metadata says incomplete.
    let half = f.config.root_dir.join("containers/halfmade");
    std::fs::create_dir_all(&half).unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            f.config
                .root_dir
                .join("containers")
                .join(&running)
                .join("meta.json"),
        )
        .unwrap(),
    )
    .unwrap();
    meta["id"] = "halfmade".into();
    meta["complete"] = false.into();
    std::fs::write(half.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
    // A half-made sandbox (netns being created).
    let half_sb = f.rt.create_sandbox(&sandbox_config()).unwrap();
    let sb_meta_path = f
        .config
        .root_dir
        .join("sandboxes")
        .join(&half_sb.id)
        .join("meta.json");
    let mut sb_meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sb_meta_path).unwrap()).unwrap();
    sb_meta["phase"] = "creating".into();
    std::fs::write(&sb_meta_path, serde_json::to_vec(&sb_meta).unwrap()).unwrap();
    // An OCI container nobody recorded, in our runtime root.
    f.oci
        .create(crate::oci::CreateRequest {
            id: "stray",
            bundle: Path::new("/nonexistent"),
            pid_file: &f.config.run_dir.join("stray.pid"),
            stdout: None,
            stderr: None,
            stdin: None,
            console_socket: None,
        })
        .unwrap();

    let rt = f.restart();
    assert!(
        rt.list_sandboxes().is_empty(),
        "nothing known before recover"
    );
    rt.recover().unwrap();
    assert_eq!(rt.list_sandboxes().len(), 1);
    assert_eq!(rt.sandbox(&sb).unwrap().state, SandboxState::Ready);
    let st = rt.container_status(&done).unwrap();
    assert_eq!(
        (st.state, st.exit_code, st.restart_count),
        (ContainerState::Exited, Some(7), 2)
    );
    assert_eq!(
        rt.container_status(&running).unwrap().state,
        ContainerState::Running
    );
    assert!(!half.exists());
    assert!(matches!(
        rt.container_status("halfmade"),
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(!f
        .config
        .root_dir
        .join("sandboxes")
        .join(&half_sb.id)
        .exists());
    assert!(f.host.calls().contains(&format!(
        "remove_namespace {}",
        half_sb.netns_path.display()
    )));
    assert!(f.oci.calls().contains(&"delete stray --force".to_string()));
    assert!(!f.oci.ids().contains(&"stray".to_string()));
}

#[test]
fn recovery_settles_creates_left_in_flight_and_never_started_containers() {
    let f = fixture();
    let sb = f.ready_sandbox();
    // Killed between create and start: created, never started.
    let never = f.rt.create_container(&sb, &container("never")).unwrap();
    // Killed between the OCI runtime's start and the record of it: it runs, so it is adopted.
    let unrecorded =
        f.rt.create_container(&sb, &container("unrecorded"))
            .unwrap();
    f.oci.start(&unrecorded).unwrap();
    // Killed while a shim was still in `runtime create`: the record is half-made and the shim
    // (a thread here) holds the bundle's lock, creates the container late, and goes once it is
    // deleted.
    let dir = f.config.root_dir.join("containers/inflight");
    std::fs::create_dir_all(&dir).unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            f.config
                .root_dir
                .join("containers")
                .join(&never)
                .join("meta.json"),
        )
        .unwrap(),
    )
    .unwrap();
    meta["id"] = "inflight".into();
    meta["complete"] = false.into();
    std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
    crate::shim::lock::create(&dir).unwrap();
    let shim_lock = crate::shim::lock::hold(&dir).unwrap();
    let (created_tx, created_rx) = std::sync::mpsc::channel();
    let shim = {
        let oci = f.oci.clone();
        let pid_file = f.config.run_dir.join("inflight.pid");
        std::thread::spawn(move || {
            oci.create(crate::oci::CreateRequest {
                id: "inflight",
                bundle: Path::new("/nonexistent"),
                pid_file: &pid_file,
                stdout: None,
                stderr: None,
                stdin: None,
                console_socket: None,
            })
            .unwrap();
            created_tx.send(()).unwrap();
            // Watches its container until it is gone (bounded), then exits.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while oci.ids().contains(&"inflight".to_string())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let deleted = !oci.ids().contains(&"inflight".to_string());
            drop(shim_lock);
            deleted
        })
    };
    created_rx.recv().unwrap();

    let rt = f.restart();
    rt.recover().unwrap();
    assert!(shim.join().unwrap(), "the late container was deleted");
    assert!(!dir.exists());
    assert!(!f.oci.ids().contains(&"inflight".to_string()));
    // The never-started container is gone entirely: the kubelet makes it again, with the same
    // restart count (it never ran).
    assert!(matches!(
        rt.container_status(&never),
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(!f.config.root_dir.join("containers").join(&never).exists());
    assert!(!f.oci.ids().contains(&never));
    let st = rt.container_status(&unrecorded).unwrap();
    assert_eq!(st.state, ContainerState::Running);
    assert_eq!(rt.list_containers(Some(&sb)).len(), 1);
    assert_eq!(rt.sandbox(&sb).unwrap().state, SandboxState::Ready);
}

#[test]
fn teardown_collects_every_error() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let id = f.rt.create_container(&sb, &container("app")).unwrap();
    f.oci.fail("delete", "runc exploded");
    f.host.fail("remove_namespace", "busy");
    f.host.fail("remove_cgroup", "busy");
    let err = f.rt.stop_and_remove_sandbox(&sb).unwrap_err();
    let RuntimeError::Teardown(list) = err else {
        panic!("not a teardown error: {err:?}")
    };
    assert!(list.errors.len() >= 4, "{list}");
    assert!(list.to_string().contains("network namespace") && list.to_string().contains(&id));
    // It kept going, but what it could not remove stays recorded (not ready), to retry.
    assert_eq!(f.rt.list_containers(Some(&sb)).len(), 1);
    let kept = f.rt.list_sandboxes();
    assert_eq!(kept.len(), 1);
    assert_ne!(kept[0].state, crate::SandboxState::Ready);
    assert!(!dir_is_empty(&f.config.root_dir.join("sandboxes")));
    assert!(!dir_is_empty(&f.config.root_dir.join("containers")));
    // The retry, once nothing fails, removes everything.
    f.oci.heal();
    f.host.heal();
    f.rt.stop_and_remove_sandbox(&sb).unwrap();
    assert!(f.rt.list_sandboxes().is_empty() && f.rt.list_containers(None).is_empty());
    assert!(dir_is_empty(&f.config.root_dir.join("sandboxes")));
    assert!(dir_is_empty(&f.config.root_dir.join("containers")));
}

#[test]
fn a_container_that_cannot_be_deleted_stays_recorded_until_it_is() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let id = f.rt.create_container(&sb, &container("app")).unwrap();
    f.oci.fail("delete", "runc exploded");
    assert!(f.rt.remove_container(&id).is_err());
    assert_eq!(f.rt.list_containers(None).len(), 1);
    f.oci.heal();
    f.rt.remove_container(&id).unwrap();
    assert!(f.rt.list_containers(None).is_empty());
    assert!(dir_is_empty(&f.config.root_dir.join("containers")));
}

#[test]
fn a_pod_cgroup_another_sandbox_of_the_pod_uses_stays() {
    let f = fixture();
    let first = f.ready_sandbox();
    let second = f.ready_sandbox();
    f.rt.stop_and_remove_sandbox(&first).unwrap();
    let removals = |f: &Fixture| {
        f.host
            .calls()
            .iter()
            .filter(|c| c.starts_with("remove_cgroup /kubepods/besteffort/podu1"))
            .count()
    };
    assert_eq!(removals(&f), 0);
    f.rt.stop_and_remove_sandbox(&second).unwrap();
    assert_eq!(removals(&f), 1);
}

#[test]
fn exec_passes_command_and_timeout() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let id = f.rt.create_container(&sb, &container("app")).unwrap();
    f.rt.start_container(&id).unwrap();
    f.oci.set_exec_output(crate::oci::ExecOutput {
        exit_code: 3,
        stdout: b"x".to_vec(),
        ..Default::default()
    });
    let out =
        f.rt.exec(&id, &["ls".into(), "/".into()], Duration::from_secs(2))
            .unwrap();
    assert_eq!((out.exit_code, out.stdout.as_slice()), (3, b"x".as_slice()));
    assert!(f.oci.calls().contains(&format!("exec {id} ls / (2s)")));
}

#[test]
fn host_network_sandbox_has_no_netns() {
    let f = fixture();
    let options = crate::SandboxOptions {
        host_network: true,
        ..Default::default()
    };
    let sb =
        f.rt.create_sandbox_with(&sandbox_config(), &options)
            .unwrap();
    assert!(sb.host_network && sb.netns_path.as_os_str().is_empty());
    assert!(!f.host.calls().iter().any(|c| c.starts_with("create_netns")));
    let sb = f.rt.start_sandbox(&sb.id).unwrap();
    let id = f.rt.create_container(&sb.id, &container("app")).unwrap();
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.shim_args(&id).bundle.join("config.json")).unwrap(),
    )
    .unwrap();
    let types: Vec<&str> = spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    // The host's UTS namespace (and hostname), a pod IPC namespace of its own.
    assert_eq!(types, ["ipc", "pid", "mount"]);
    let shm = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/shm")
        .unwrap();
    assert_eq!(shm["type"], "bind");
    f.rt.stop_and_remove_sandbox(&sb.id).unwrap();
    let removed: Vec<String> = f
        .host
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("remove_namespace"))
        .collect();
    assert_eq!(removed.len(), 1, "only the IPC namespace: {removed:?}");
    assert!(removed[0].contains("/ipcns/"), "{removed:?}");
}

#[test]
fn stop_sandbox_stops_containers_then_pause_and_keeps_records() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let id = f.rt.create_container(&sb, &container("app")).unwrap();
    f.rt.start_container(&id).unwrap();
    f.rt.stop_sandbox(&sb, Duration::from_millis(10)).unwrap();
    let calls = f.oci.calls();
    let app = calls
        .iter()
        .position(|c| c == &format!("kill {id} 15"))
        .unwrap();
    let pause = calls
        .iter()
        .position(|c| c == &format!("kill {sb} 15"))
        .unwrap();
    assert!(app < pause, "containers stop before pause: {calls:?}");
    assert_eq!(f.rt.list_containers(Some(&sb)).len(), 1);
    assert!(f.rt.sandbox(&sb).is_ok());
    f.rt.stop_and_remove_sandbox(&sb).unwrap();
}

#[test]
fn the_pod_cgroup_gets_the_pids_limit_before_pause_starts() {
    let f = fixture();
    let options = crate::SandboxOptions {
        pids_limit: Some(16),
        ..Default::default()
    };
    let sb =
        f.rt.create_sandbox_with(&sandbox_config(), &options)
            .unwrap();
    let pod_cgroup = sandbox_config().cgroup_parent;
    let want = format!("set_pids_limit {pod_cgroup}/pids.max=16");
    assert!(f.host.calls().contains(&want), "{:?}", f.host.calls());
    // Without podPidsLimit the pod cgroup says so explicitly (a recreated sandbox of a pod
    // whose limit was removed gets `max` again).
    f.rt.stop_and_remove_sandbox(&sb.id).unwrap();
    f.rt.create_sandbox(&sandbox_config()).unwrap();
    let want = format!("set_pids_limit {pod_cgroup}/pids.max=max");
    assert!(f.host.calls().contains(&want), "{:?}", f.host.calls());
}

#[test]
fn the_pod_cgroup_gets_its_cpu_and_memory_limits_before_pause_starts() {
    let f = fixture();
    let options = crate::SandboxOptions {
        resources: crate::host::PodCgroupResources {
            cpu_shares: Some(153),
            cpu_quota: Some((30_000, 100_000)),
            memory_limit: Some(96 << 20),
        },
        ..Default::default()
    };
    let sb =
        f.rt.create_sandbox_with(&sandbox_config(), &options)
            .unwrap();
    let pod_cgroup = sandbox_config().cgroup_parent;
    let want = format!(
        "set_pod_resources {pod_cgroup}/shares=153,quota=30000/100000,memory={}",
        96 << 20
    );
    assert!(f.host.calls().contains(&want), "{:?}", f.host.calls());
    f.rt.stop_and_remove_sandbox(&sb.id).unwrap();
    // Nothing to set: no call.
    f.rt.create_sandbox(&sandbox_config()).unwrap();
    let calls = f.host.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("set_pod_resources"))
            .count(),
        1,
        "{calls:?}"
    );
    // A host that cannot set them fails the sandbox, and leaves nothing.
    f.host.fail("set_pod_resources", "no memory controller");
    let err = f.rt.create_sandbox_with(&sandbox_config(), &options);
    assert!(
        matches!(&err, Err(RuntimeError::Host { what, .. }) if what.contains("cpu and memory")),
        "{err:?}"
    );
    assert_eq!(f.rt.list_sandboxes().len(), 1, "only the earlier one");
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn state_directories_are_root_only_and_old_installs_are_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // An install from before: everything world-readable.
    for d in ["", "containers", "sandboxes"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = RuntimeConfig::new(&root, dir.path().join("run"), dir.path().join("logs"));
    let oci = RecordingRuntime::new();
    let rt = Runtime::with_parts(
        config,
        oci.clone(),
        RecordingHost::new(),
        RecordingShims::new(oci),
        test_limits(),
    )
    .unwrap();
    for d in ["", "containers", "sandboxes"] {
        assert_eq!(mode_of(&root.join(d)), 0o700, "{d}");
    }
    let sb = rt.create_sandbox(&sandbox_config()).unwrap();
    rt.start_sandbox(&sb.id).unwrap();
    let id = rt.create_container(&sb.id, &container("app")).unwrap();
    assert_eq!(mode_of(&root.join("sandboxes").join(&sb.id)), 0o700);
    assert_eq!(mode_of(&root.join("containers").join(&id)), 0o700);
}

#[test]
fn a_container_records_its_image_layers() {
    let f = fixture();
    let sb = f.ready_sandbox();
    let id = f.rt.create_container(&sb, &container("app")).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            f.config
                .root_dir
                .join("containers")
                .join(&id)
                .join("meta.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        meta["layers"],
        serde_json::json!(["/layers/a", "/layers/b"])
    );
}

#[test]
fn recovery_never_deletes_across_a_mount_it_cannot_unmount() {
    let f = fixture();
    // A container directory whose metadata is lost (torn by a crash) while its rootfs is
    // still mounted: the files under the mount belong to the mounted filesystem.
    let broken = f.config.root_dir.join("containers/broken");
    std::fs::create_dir_all(broken.join("rootfs/data")).unwrap();
    std::fs::write(broken.join("rootfs/data/keep"), "precious").unwrap();
    std::fs::write(broken.join("meta.json"), "{\"id\": \"bro").unwrap();
    f.host.add_mount(&broken.join("rootfs"));
    f.host.fail("unmount", "device or resource busy");

    let rt = f.restart();
    let err = rt.recover().unwrap_err();
    assert!(err.to_string().contains("still mounted"), "{err}");
    assert_eq!(
        std::fs::read_to_string(broken.join("rootfs/data/keep")).unwrap(),
        "precious"
    );
}

#[test]
fn recovery_unmounts_before_it_deletes_a_directory_without_metadata() {
    let f = fixture();
    let broken = f.config.root_dir.join("sandboxes/broken");
    std::fs::create_dir_all(broken.join("shm")).unwrap();
    f.host.add_mount(&broken.join("shm"));
    let rt = f.restart();
    rt.recover().unwrap();
    assert!(f
        .host
        .calls()
        .contains(&format!("unmount {}", broken.join("shm").display())));
    assert!(!broken.exists());
}

/// `(type, path)` of each namespace in the `config.json` of `id`'s bundle (`-`: no path).
fn spec_namespaces(f: &Fixture, id: &str) -> Vec<(String, String)> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.shim_args(id).bundle.join("config.json")).unwrap())
            .unwrap();
    spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["type"].as_str().unwrap().to_string(),
                n["path"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

/// The `/dev/shm` mount of `id`'s spec: its source and whether it is read-only.
fn dev_shm(f: &Fixture, id: &str) -> (String, bool) {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.shim_args(id).bundle.join("config.json")).unwrap())
            .unwrap();
    let m = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/shm")
        .unwrap();
    let ro = m["options"].as_array().unwrap().iter().any(|o| o == "ro");
    (m["source"].as_str().unwrap().to_string(), ro)
}

fn with_namespaces(pid: NamespaceMode, ipc: NamespaceMode) -> SandboxOptions {
    SandboxOptions {
        namespaces: PodNamespaces { pid, ipc },
        ..Default::default()
    }
}

#[test]
fn shared_process_namespace_joins_the_checked_pause_even_after_a_restart() {
    let f = fixture();
    let options = with_namespaces(NamespaceMode::Pod, NamespaceMode::Pod);
    let sb =
        f.rt.create_sandbox_with(&sandbox_config(), &options)
            .unwrap();
    // Pause's PID namespace exists only once pause runs.
    let err = f.rt.create_container(&sb.id, &container("a")).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::BadState { state, .. } if state.contains("PID namespace")),
        "{err}"
    );
    f.rt.start_sandbox(&sb.id).unwrap();
    // pause makes the PID namespace (no path), as in any pod.
    assert!(spec_namespaces(&f, &sb.id).contains(&("pid".into(), "-".into())));
    let meta_path = f
        .config
        .root_dir
        .join("sandboxes")
        .join(&sb.id)
        .join("meta.json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert_eq!(meta["namespaces"]["pid"], "pod");
    let pid = meta["pause_pid"].as_i64().unwrap() as i32;
    let cgroup = format!("4:memory:/kubepods/besteffort/podu1/{}\n", sb.id);
    // The recorded pid is some other program now: its PID namespace is not joined.
    crate::sandbox::fake_process(&f.config.proc_root, pid, b"sh\0", &cgroup, 5);
    let err = f.rt.create_container(&sb.id, &container("a")).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::BadState { state, .. } if state.contains("not /pause")),
        "{err}"
    );
    crate::sandbox::fake_process(&f.config.proc_root, pid, b"/pause\0", &cgroup, 5);
    let pause_pid_ns = f
        .config
        .proc_root
        .join(pid.to_string())
        .join("ns/pid")
        .to_string_lossy()
        .into_owned();
    let id = f.rt.create_container(&sb.id, &container("a")).unwrap();
    let got = spec_namespaces(&f, &id);
    assert!(
        got.contains(&("pid".into(), pause_pid_ns.clone())),
        "{got:?}"
    );
    // The pinned IPC namespace is joined as usual.
    assert!(
        got.iter().any(|(t, p)| t == "ipc" && p.contains("ipcns")),
        "{got:?}"
    );
    // The mode is read back from meta.json by a restarted agent.
    let rt = f.restart();
    rt.recover().unwrap();
    let id = rt.create_container(&sb.id, &container("b")).unwrap();
    assert!(spec_namespaces(&f, &id).contains(&("pid".into(), pause_pid_ns)));
}

#[test]
fn host_pid_and_host_ipc_get_no_namespace_and_the_hosts_dev_shm() {
    let f = fixture();
    let options = with_namespaces(NamespaceMode::Node, NamespaceMode::Node);
    let sb =
        f.rt.create_sandbox_with(&sandbox_config(), &options)
            .unwrap();
    let calls = f.host.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("create_netns ")),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("create_ipcns ") || c.starts_with("mount_shm ")),
        "{calls:?}"
    );
    // Nothing waits for pause here: the container can be created at once.
    let id = f.rt.create_container(&sb.id, &container("a")).unwrap();
    f.rt.start_sandbox(&sb.id).unwrap();
    for (what, id) in [("container", id.as_str()), ("pause", sb.id.as_str())] {
        let types: Vec<String> = spec_namespaces(&f, id)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert!(
            !types.iter().any(|t| t == "pid" || t == "ipc"),
            "{what}: {types:?}"
        );
        assert!(types.iter().any(|t| t == "network"), "{what}: {types:?}");
    }
    // containerd binds the host's /dev/shm: read-only into pause, read-write into containers.
    assert_eq!(dev_shm(&f, &sb.id), ("/dev/shm".to_string(), true));
    assert_eq!(dev_shm(&f, &id), ("/dev/shm".to_string(), false));
    f.rt.stop_and_remove_sandbox(&sb.id).unwrap();
    let calls = f.host.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c == "unmount /dev/shm" || c.contains("ipcns")),
        "the host's /dev/shm or a missing IPC pin was touched: {calls:?}"
    );
}

#[test]
fn a_sandbox_recorded_without_namespace_modes_keeps_the_defaults() {
    let f = fixture();
    let sb = f.rt.create_sandbox(&sandbox_config()).unwrap();
    let meta_path = f
        .config
        .root_dir
        .join("sandboxes")
        .join(&sb.id)
        .join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert!(meta.as_object_mut().unwrap().remove("namespaces").is_some());
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let rt = f.restart();
    rt.recover().unwrap();
    // Created, pause not started: joinable (pinned), with a PID namespace of its own.
    let id = rt.create_container(&sb.id, &container("a")).unwrap();
    let got = spec_namespaces(&f, &id);
    assert!(got.contains(&("pid".into(), "-".into())), "{got:?}");
    assert_eq!(
        dev_shm(&f, &id).0,
        f.config
            .root_dir
            .join("sandboxes")
            .join(&sb.id)
            .join("shm")
            .to_string_lossy()
    );
}
