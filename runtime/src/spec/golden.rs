//! Golden-file tests of generated `config.json`: the expected files live in
//! `runtime/tests/golden/`; run with `UPDATE_GOLDEN=1` to rewrite them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PodSecurityContext, ResourceRequirements, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, spec: &Spec) {
    let got = String::from_utf8(to_config_json(spec)).unwrap();
    let path = golden_dir().join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        want == got,
        "{} differs from the generated spec (UPDATE_GOLDEN=1 rewrites it):\n{got}",
        path.display()
    );
}

fn pod() -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: "web".into(),
        uid: "1234-abcd".into(),
        hostname: "web".into(),
    }
}

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("etc/group"),
        "root:x:0:\nwww:x:33:\nshared:x:500:www\n",
    )
    .unwrap();
    dir
}

fn namespaces() -> NamespacePaths {
    NamespacePaths {
        net: Some("/run/kubenode/netns/kn-0123456789abcdef".into()),
        ipc: Some("/run/kubenode/ipcns/kn-0123456789abcdef".into()),
        uts: Some("/run/kubenode/utsns/kn-0123456789abcdef".into()),
        pid: PidNamespace::Own,
    }
}

/// A fixed device list (the real one depends on the host), used when privileged.
fn devices() -> Vec<oci_spec::runtime::LinuxDevice> {
    serde_json::from_str(
        r#"[{"path":"/dev/null","type":"c","major":1,"minor":3,"fileMode":438,"uid":0,"gid":0},
            {"path":"/dev/vda","type":"b","major":254,"minor":0,"fileMode":432,"uid":0,"gid":6}]"#,
    )
    .unwrap()
}

fn limits() -> HostLimits {
    HostLimits {
        nofile_hard: 20000,
        min_oom_score_adj: 0,
        cgroup_v2: false,
        capabilities: u64::MAX,
        swap_controller: true,
    }
}

fn build(
    container: &Container,
    psc: Option<&PodSecurityContext>,
    image: &oci_spec::image::Config,
    mounts: &[BindMount],
) -> Spec {
    let root = rootfs();
    let mut spec = container_spec(&ContainerSpecInput {
        pod: &pod(),
        sandbox_id: "sandbox0",
        container,
        pod_security: psc,
        image: Some(image),
        image_name: "busybox:1.36",
        rootfs: root.path(),
        namespaces: &namespaces(),
        cgroups_path: "/kubepods/burstable/pod1234-abcd/c0",
        mounts,
        service_env: &[("WEB_SERVICE_HOST".into(), "10.96.0.10".into())],
        resolved_env: &HashMap::new(),
        oom_score_adj: Some(-997),
        limits: &limits(),
        host_devices: &devices(),
        seccomp: &SeccompProfile::Unconfined,
        apparmor: None,
    })
    .unwrap();
    // The rootfs path is a temporary directory: pin it for the golden file.
    spec.root_mut()
        .as_mut()
        .unwrap()
        .set_path(PathBuf::from("/var/lib/kubenode/containers/c0/rootfs"));
    spec
}

fn image() -> oci_spec::image::Config {
    serde_json::from_str(
        r#"{"User":"www","Env":["PATH=/bin:/usr/bin","LANG=C"],"Entrypoint":["/bin/entry"],"Cmd":["serve"],"WorkingDir":"/srv"}"#,
    )
    .unwrap()
}

#[test]
fn golden_default_container() {
    let c = Container {
        name: "app".into(),
        args: Some(vec!["--port=$(PORT)".into(), "$$(PORT)".into()]),
        env: Some(vec![EnvVar {
            name: "PORT".into(),
            value: Some("8080".into()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("250m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("500m".into())),
                ("memory".to_string(), Quantity("128Mi".into())),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mounts = [
        BindMount {
            container_path: "/etc/hosts".into(),
            host_path: "/var/lib/kubenode/pods/1234-abcd/etc-hosts".into(),
            readonly: false,
            propagation: Default::default(),
        },
        BindMount {
            container_path: "/etc/resolv.conf".into(),
            host_path: "/var/lib/kubenode/pods/1234-abcd/resolv.conf".into(),
            readonly: true,
            propagation: Default::default(),
        },
        BindMount {
            container_path: "/etc/hostname".into(),
            host_path: "/var/lib/kubenode/pods/1234-abcd/hostname".into(),
            readonly: true,
            propagation: Default::default(),
        },
        BindMount {
            container_path: "/dev/termination-log".into(),
            host_path: "/var/lib/kubenode/pods/1234-abcd/containers/app/0a1b2c3d".into(),
            readonly: false,
            propagation: Default::default(),
        },
    ];
    check("container-default", &build(&c, None, &image(), &mounts));
}

#[test]
fn golden_restricted_container() {
    let c = Container {
        name: "restricted".into(),
        command: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec!["echo hi".into()]),
        working_dir: Some("/tmp".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let psc = PodSecurityContext {
        run_as_user: Some(1000),
        run_as_group: Some(3000),
        supplemental_groups: Some(vec![4000]),
        fs_group: Some(2000),
        ..Default::default()
    };
    check(
        "container-restricted",
        &build(&c, Some(&psc), &image(), &[]),
    );
}

#[test]
fn golden_privileged_container() {
    let c = Container {
        name: "priv".into(),
        command: Some(vec!["/bin/true".into()]),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    check("container-privileged", &build(&c, None, &image(), &[]));
}

#[test]
fn golden_pause() {
    let sysctls = BTreeMap::from([(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "0".to_string(),
    )]);
    let input = PauseSpecInput {
        pod: &pod(),
        rootfs: Path::new("/run/kubenode/pause/rootfs"),
        netns: Some(Path::new("/run/kubenode/netns/kn-0123456789abcdef")),
        ipc: Some(Path::new("/run/kubenode/ipcns/kn-0123456789abcdef")),
        uts: Some(Path::new("/run/kubenode/utsns/kn-0123456789abcdef")),
        shm: Some(Path::new("/var/lib/kubenode/sandboxes/sandbox0/shm")),
        cgroups_path: "/kubepods/burstable/pod1234-abcd/sandbox0",
        sysctls: &sysctls,
        namespaces: PodNamespaces::default(),
        // The filter depends on this machine's kernel and architecture; pause.rs tests it.
        seccomp: &SeccompProfile::Unconfined,
        privileged: false,
        limits: &limits(),
    };
    check("pause", &pause_spec(&input).unwrap());
    let host = PauseSpecInput {
        netns: None,
        uts: None,
        shm: None,
        sysctls: &BTreeMap::new(),
        ..input
    };
    check("pause-host-network", &pause_spec(&host).unwrap());
}

#[test]
fn invalid_user_is_an_error() {
    let c = Container {
        name: "x".into(),
        command: Some(vec!["/x".into()]),
        ..Default::default()
    };
    let root = rootfs();
    let image: oci_spec::image::Config = serde_json::from_str(r#"{"User":"nobody"}"#).unwrap();
    let err = container_spec(&ContainerSpecInput {
        pod: &pod(),
        sandbox_id: "s",
        container: &c,
        pod_security: None,
        image: Some(&image),
        image_name: "i",
        rootfs: root.path(),
        namespaces: &namespaces(),
        cgroups_path: "/x",
        mounts: &[],
        service_env: &[],
        resolved_env: &HashMap::new(),
        oom_score_adj: None,
        limits: &limits(),
        host_devices: &[],
        seccomp: &SeccompProfile::Unconfined,
        apparmor: None,
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("unable to find user nobody"),
        "{err}"
    );
}

#[test]
fn golden_volume_mounts() {
    let c = Container {
        name: "web".into(),
        ..Default::default()
    };
    let pods = "/var/lib/kubenode/pods/1234-abcd";
    let mounts = [
        BindMount {
            container_path: "/var/htdocs".into(),
            host_path: format!("{pods}/volumes/kubernetes.io~empty-dir/html").into(),
            readonly: true,
            propagation: Propagation::Private,
        },
        BindMount {
            container_path: "/host".into(),
            host_path: "/srv/data".into(),
            readonly: false,
            propagation: Propagation::HostToContainer,
        },
        BindMount {
            container_path: "/etc/app.ini".into(),
            host_path: format!("{pods}/volume-subpaths/config/web/2").into(),
            readonly: false,
            propagation: Propagation::Private,
        },
    ];
    let spec = build(&c, None, &image(), &mounts);
    assert_eq!(
        spec.linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .as_deref(),
        Some("rslave")
    );
    check("container-volumes", &spec);
}

/// The spec of `c` under `seccomp`, with AppArmor profile `apparmor`.
fn confined(c: &Container, seccomp: &SeccompProfile, apparmor: Option<&str>) -> Spec {
    let root = rootfs();
    let image: oci_spec::image::Config = serde_json::from_str("{}").unwrap();
    container_spec(&ContainerSpecInput {
        pod: &pod(),
        sandbox_id: "s",
        container: c,
        pod_security: None,
        image: Some(&image),
        image_name: "i",
        rootfs: root.path(),
        namespaces: &namespaces(),
        cgroups_path: "/x",
        mounts: &[],
        service_env: &[],
        resolved_env: &HashMap::new(),
        oom_score_adj: None,
        limits: &limits(),
        host_devices: &[],
        seccomp,
        apparmor,
    })
    .unwrap()
}

#[test]
fn seccomp_follows_the_effective_capabilities_and_privileged_has_none() {
    let allows = |spec: &Spec, name: &str| {
        spec.linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .and_then(|s| s.syscalls().as_ref())
            .is_some_and(|rules| {
                rules.iter().any(|r| {
                    r.names().iter().any(|n| n == name)
                        && r.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
                        && r.args().as_ref().is_none_or(Vec::is_empty)
                })
            })
    };
    let mut c = Container {
        name: "c".into(),
        command: Some(vec!["/x".into()]),
        ..Default::default()
    };
    let rd = SeccompProfile::RuntimeDefault;
    let spec = confined(&c, &rd, None);
    assert!(spec.linux().as_ref().unwrap().seccomp().is_some());
    assert!(
        !allows(&spec, "unshare"),
        "default capabilities: no CAP_SYS_ADMIN"
    );
    assert!(
        allows(&spec, "chroot"),
        "default capabilities have CAP_SYS_CHROOT"
    );
    c.security_context = Some(SecurityContext {
        capabilities: Some(Capabilities {
            add: Some(vec!["SYS_ADMIN".into()]),
            drop: Some(vec!["SYS_CHROOT".into()]),
        }),
        ..Default::default()
    });
    let spec = confined(&c, &rd, Some("k8s-profile"));
    assert!(allows(&spec, "unshare"), "added CAP_SYS_ADMIN");
    assert!(!allows(&spec, "chroot"), "dropped CAP_SYS_CHROOT");
    assert_eq!(
        spec.process()
            .as_ref()
            .unwrap()
            .apparmor_profile()
            .as_deref(),
        Some("k8s-profile")
    );
    c.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    let spec = confined(&c, &rd, None);
    assert_eq!(spec.linux().as_ref().unwrap().seccomp(), &None);
    assert_eq!(spec.process().as_ref().unwrap().apparmor_profile(), &None);
    c.security_context = None;
    let spec = confined(&c, &SeccompProfile::Unconfined, None);
    assert_eq!(spec.linux().as_ref().unwrap().seccomp(), &None);
}

/// `procMount`: `Default` (or unset) masks the kubelet's paths and makes its read-only ones
/// read-only; `Unmasked` gives neither list (the kubelet's `ConvertToRuntimeMaskedPaths`).
#[test]
fn proc_mount_unmasked_has_no_masked_or_readonly_paths() {
    let paths = |spec: &Spec| {
        let l = spec.linux().as_ref().unwrap();
        (
            l.masked_paths().clone().unwrap_or_default(),
            l.readonly_paths().clone().unwrap_or_default(),
        )
    };
    let with = |pm: Option<&str>| Container {
        name: "c".into(),
        command: Some(vec!["/x".into()]),
        security_context: Some(SecurityContext {
            proc_mount: pm.map(String::from),
            ..Default::default()
        }),
        ..Default::default()
    };
    let unconfined = SeccompProfile::Unconfined;
    for pm in [None, Some("Default")] {
        let (masked, readonly) = paths(&confined(&with(pm), &unconfined, None));
        assert_eq!(masked, MASKED_PATHS, "{pm:?}");
        assert_eq!(readonly, READONLY_PATHS, "{pm:?}");
    }
    let (masked, readonly) = paths(&confined(&with(Some("Unmasked")), &unconfined, None));
    assert!(masked.is_empty(), "{masked:?}");
    assert!(readonly.is_empty(), "{readonly:?}");
}

/// `tty`: the process gets a terminal and, as containerd's `WithTTY`, `TERM=xterm` unless the
/// image or the container sets `TERM`; without `tty`, neither.
#[test]
fn a_tty_container_has_a_terminal_and_its_type() {
    let with = |tty: Option<bool>, env: Option<&str>| {
        let c = Container {
            name: "c".into(),
            command: Some(vec!["/bin/sh".into()]),
            tty,
            stdin: tty,
            env: env.map(|v| {
                vec![k8s_openapi::api::core::v1::EnvVar {
                    name: "TERM".into(),
                    value: Some(v.into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        let spec = build(&c, None, &image(), &[]);
        let p = spec.process().clone().unwrap();
        let term: Vec<String> = p
            .env()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.starts_with("TERM="))
            .collect();
        (p.terminal().unwrap_or(false), term)
    };
    assert_eq!(
        with(Some(true), None),
        (true, vec!["TERM=xterm".to_string()])
    );
    assert_eq!(
        with(Some(true), Some("vt100")),
        (true, vec!["TERM=vt100".to_string()])
    );
    assert_eq!(with(None, None), (false, Vec::<String>::new()));
    assert_eq!(with(Some(false), None), (false, Vec::<String>::new()));
}
