//! Tests of configuration resolution.

use super::*;
use std::io;

#[derive(Debug)]
struct FakeHost;

impl Host for FakeHost {
    fn hostname(&self) -> io::Result<String> {
        Ok("Node-A".into())
    }
    fn interfaces(&self) -> io::Result<Vec<InterfaceInfo>> {
        Ok(vec![
            InterfaceInfo {
                name: "lo".into(),
                up: true,
                loopback: true,
                addrs: vec!["127.0.0.1".parse().unwrap()],
            },
            InterfaceInfo {
                name: "eth0".into(),
                up: true,
                loopback: false,
                addrs: vec!["192.0.2.10".parse().unwrap()],
            },
        ])
    }
    fn default_route_interface(&self) -> io::Result<Option<String>> {
        Ok(Some("eth0".into()))
    }
}

fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.yaml");
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

#[test]
fn defaults() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.node_name, "node-a");
    assert_eq!(c.node_ip.to_string(), "192.0.2.10");
    assert_eq!(
        c.node_ip_rule,
        NodeIpRule::DefaultRoute {
            interface: "eth0".into()
        }
    );
    assert_eq!(c.manifest_dir, Path::new("/etc/kubenode/manifests"));
    assert_eq!(c.root_dir, Path::new("/var/lib/kubenode"));
    assert_eq!(c.run_dir, Path::new("/run/kubenode"));
    assert_eq!(c.log_dir, Path::new("/var/log/pods"));
    assert_eq!(c.file_check_frequency, Duration::from_secs(20));
    assert_eq!(c.sync_frequency, Duration::from_secs(60));
    assert_eq!(c.max_pods, 110);
    assert_eq!(c.cluster_domain, "cluster.local");
    // Off unless asked for, as upstream's KubeletConfiguration default (readOnlyPort 0).
    assert_eq!(c.read_only, None);
    // The health port on, on loopback, as upstream's.
    assert_eq!(c.healthz, Some("127.0.0.1:10248".parse().unwrap()));
    assert_eq!(
        c.service_node_port_range,
        PortRange {
            first: 30000,
            last: 32767
        }
    );
    assert_eq!(c.container_log_max_size, 10 * 1024 * 1024);
    assert_eq!(c.container_log_max_files, 5);
    assert_eq!(c.cni_conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(c.cni_bin_dir, Path::new("/opt/cni/bin"));
    assert_eq!(c.runtime, Path::new("runc"));
    assert_eq!(c.socket_path(), Path::new("/run/kubenode/kubenode.sock"));
}

#[test]
fn file_then_flags() {
    let (_d, p) = write(&format!(
        "{HEAD}staticPodPath: /srv/m\nfileCheckFrequency: 1m0s\nreadOnlyPort: 10256\naddress: 0.0.0.0\n\
         nodeName: n1\nnodeIP: 10.1.0.1\nrootDir: /srv/root\ninsecureRegistries: [a:5000]\nmaxPods: 7\n\
         clusterDNS: [10.96.0.10]\ncontainerLogMaxSize: 1Mi\nhealthzPort: 0\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.healthz, None);
    assert_eq!(c.manifest_dir, Path::new("/srv/m"));
    assert_eq!(c.file_check_frequency, Duration::from_secs(60));
    assert_eq!(c.read_only, Some("0.0.0.0:10256".parse().unwrap()));
    assert_eq!(
        (c.node_name.as_str(), c.node_ip_rule.clone()),
        ("n1", NodeIpRule::Explicit)
    );
    assert_eq!(c.max_pods, 7);
    assert_eq!(c.container_log_max_size, 1 << 20);

    let o = Overrides {
        node_name: Some("n2".into()),
        node_ip: Some("10.9.9.9".parse().unwrap()),
        root_dir: Some("/r".into()),
        manifest_dir: Some("/mm".into()),
        read_only_port: Some(0),
        healthz_port: Some(10249),
        healthz_bind_address: Some("0.0.0.0".parse().unwrap()),
        insecure_registries: vec!["b:5000".into()],
        pod_cidr: Some("10.244.2.0/24".parse().unwrap()),
        ..Overrides::default()
    };
    let c = Config::resolve_with(Some(&p), &o, &FakeHost).unwrap();
    assert_eq!(c.node_name, "n2");
    assert_eq!(c.node_ip.to_string(), "10.9.9.9");
    assert_eq!(c.root_dir, Path::new("/r"));
    assert_eq!(c.manifest_dir, Path::new("/mm"));
    assert_eq!(c.read_only, None);
    assert_eq!(c.healthz, Some("0.0.0.0:10249".parse().unwrap()));
    assert_eq!(c.insecure_registries, vec!["b:5000".to_owned()]);
    assert_eq!(c.pod_cidr.unwrap().to_string(), "10.244.2.0/24");
}

/// Cluster mode's kubeconfig: kubenode's `kubeconfig` key, overridden by `--kubeconfig`;
/// neither: standalone.
#[test]
fn kubeconfig_from_file_then_flag() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.kubeconfig, None);
    let (_d, p) = write(&format!("{HEAD}kubeconfig: /etc/kubernetes/kubelet.conf\n"));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(
        c.kubeconfig.as_deref(),
        Some(Path::new("/etc/kubernetes/kubelet.conf"))
    );
    assert_eq!(
        c.to_file().kubeconfig.as_deref(),
        Some("/etc/kubernetes/kubelet.conf")
    );
    let o = Overrides {
        kubeconfig: Some("/k/other.conf".into()),
        ..Overrides::default()
    };
    let c = Config::resolve_with(Some(&p), &o, &FakeHost).unwrap();
    assert_eq!(c.kubeconfig.as_deref(), Some(Path::new("/k/other.conf")));
    let (_d, p) = write(&format!("{HEAD}kubeconfig: [a]\n"));
    let e = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost)
        .unwrap_err()
        .to_string();
    assert!(e.contains("kubeconfig: invalid type"), "{e}");
}

/// `registerWithTaints` from the file, replaced by `--register-with-taints`; bad ones named.
#[test]
fn register_with_taints_from_file_then_flag() {
    let (_d, p) = write(&format!(
        "{HEAD}registerWithTaints: [{{key: dedicated, value: gpu, effect: NoSchedule}}]\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.register_with_taints.len(), 1);
    assert_eq!(c.register_with_taints[0].key, "dedicated");
    assert_eq!(c.register_with_taints[0].value.as_deref(), Some("gpu"));
    assert_eq!(c.register_with_taints[0].effect, "NoSchedule");
    let o = Overrides {
        register_with_taints: vec!["spot:NoExecute".into()],
        ..Overrides::default()
    };
    let c = Config::resolve_with(Some(&p), &o, &FakeHost).unwrap();
    assert_eq!(c.register_with_taints.len(), 1);
    assert_eq!(
        (
            c.register_with_taints[0].key.as_str(),
            c.register_with_taints[0].effect.as_str()
        ),
        ("spot", "NoExecute")
    );
    let (_d, p) = write(&format!(
        "{HEAD}registerWithTaints: [{{key: k, effect: Never}}]\n"
    ));
    let e = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("registerWithTaints: invalid taint effect: Never, unsupported taint effect"),
        "{e}"
    );
    let o = Overrides {
        register_with_taints: vec!["k=v".into()],
        ..Overrides::default()
    };
    let e = Config::resolve_with(None, &o, &FakeHost)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--register-with-taints: invalid taint spec: k=v"),
        "{e}"
    );
}

/// `kubeReserved`, `systemReserved`, `evictionHard` from the file, replaced by the flags;
/// `enforceNodeAllocatable` beyond `pods` refused.
#[test]
fn reservations_from_file_then_flags() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.node_allocatable, reserved::NodeAllocatable::default());
    assert_eq!(c.enforce_node_allocatable, ["pods"]);
    let (_d, p) = write(&format!(
        "{HEAD}kubeReserved: {{cpu: 100m, memory: 256Mi}}\nsystemReserved: {{memory: 1Gi}}\n\
         evictionHard: {{memory.available: 200Mi}}\nenforceNodeAllocatable: [pods]\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    let a = &c.node_allocatable;
    assert_eq!(
        (a.kube_reserved.milli_cpu, a.kube_reserved.memory),
        (100, 256 << 20)
    );
    assert_eq!(a.system_reserved.memory, 1 << 30);
    assert_eq!(
        a.eviction_memory,
        Some(reserved::Threshold::Quantity(200 << 20))
    );
    assert_eq!(
        a.eviction_nodefs, None,
        "an evictionHard replaces the defaults"
    );
    assert!(c.unsupported_keys.is_empty(), "{:?}", c.unsupported_keys);

    let (_d, p2) = write(&format!(
        "{HEAD}evictionHard: {{memory.available: 200Mi}}\nmergeDefaultEvictionSettings: true\n"
    ));
    let c = Config::resolve_with(Some(&p2), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(
        c.node_allocatable.eviction_nodefs,
        Some(reserved::Threshold::Percentage(0.1))
    );

    let o = Overrides {
        kube_reserved: vec!["cpu=1,memory=1Gi".into()],
        system_reserved: vec!["cpu=500m".into()],
        eviction_hard: vec!["nodefs.available<1Gi".into()],
        ..Overrides::default()
    };
    let c = Config::resolve_with(Some(&p), &o, &FakeHost).unwrap();
    let a = &c.node_allocatable;
    assert_eq!(
        (a.kube_reserved.milli_cpu, a.kube_reserved.memory),
        (1000, 1 << 30)
    );
    assert_eq!(
        a.system_reserved.memory, 0,
        "the flag replaces the file's list"
    );
    assert_eq!(a.eviction_memory, None);
    assert_eq!(
        a.eviction_nodefs,
        Some(reserved::Threshold::Quantity(1 << 30))
    );
    // The configuration view round-trips.
    let f = c.to_file();
    let c2 = Config::from_parts(&f, Path::new("(view)"), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c2.node_allocatable, c.node_allocatable);

    let bad = |o: Overrides, body: &str| {
        let (_d, p) = write(&format!("{HEAD}{body}"));
        Config::resolve_with(Some(&p), &o, &FakeHost)
            .unwrap_err()
            .to_string()
    };
    let e = bad(Overrides::default(), "kubeReserved: {gpu: 1}\n");
    assert!(e.ends_with("kubeReserved: cannot reserve \"gpu\" resource (only cpu, memory, ephemeral-storage, pid)"), "{e}");
    let e = bad(
        Overrides {
            system_reserved: vec!["memory=-1".into()],
            ..Overrides::default()
        },
        "",
    );
    assert!(
        e.contains("(flags): --system-reserved: resource quantity"),
        "{e}"
    );
    let e = bad(
        Overrides::default(),
        "evictionHard: {memory.available: \"0\"}\n",
    );
    assert!(
        e.ends_with("evictionHard: eviction threshold memory.available must be positive: 0"),
        "{e}"
    );
    let e = bad(
        Overrides::default(),
        "enforceNodeAllocatable: [pods, kube-reserved]\n",
    );
    assert!(
        e.contains("enforceNodeAllocatable: \"kube-reserved\" is not supported by kubenode"),
        "{e}"
    );
}

/// `rotateCertificates`: upstream's default false; the file's key; `--rotate-certificates[=BOOL]`
/// wins.
#[test]
fn rotate_certificates_from_file_then_flag() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert!(!c.rotate_certificates);
    let (_d, p) = write(&format!("{HEAD}rotateCertificates: true\n"));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert!(c.rotate_certificates);
    assert!(c.unsupported_keys.is_empty(), "{:?}", c.unsupported_keys);
    let o = Overrides {
        rotate_certificates: Some(false),
        ..Overrides::default()
    };
    assert!(
        !Config::resolve_with(Some(&p), &o, &FakeHost)
            .unwrap()
            .rotate_certificates
    );
    assert_eq!(c.to_file().rotate_certificates, Some(true));
}

#[test]
fn bad_values_name_key_and_file() {
    for (body, key) in [
        ("fileCheckFrequency: 20\n", "fileCheckFrequency"),
        ("podCIDR: 10.0.0.0\n", "podCIDR"),
        ("nodeIP: nope\n", "nodeIP"),
        ("clusterDNS: [x]\n", "clusterDNS"),
        ("containerLogMaxFiles: 1\n", "containerLogMaxFiles"),
        ("containerLogMaxSize: lots\n", "containerLogMaxSize"),
        ("serviceNodePortRange: 5-1\n", "serviceNodePortRange"),
        ("nodeName: Bad_Name\n", "nodeName"),
        ("maxPods: -1\n", "maxPods"),
    ] {
        let (_d, p) = write(&format!("{HEAD}{body}"));
        let e = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains(key),
            "{body}: {e}"
        );
    }
    let e = Config::resolve_with(
        Some(Path::new("/nonexistent/c.yaml")),
        &Overrides::default(),
        &FakeHost,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("reading configuration file /nonexistent/c.yaml"),
        "{e}"
    );
}

#[test]
fn printed_file_round_trips() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    let text = serde_yaml_ng::to_string(&c.to_file()).unwrap();
    assert!(
        text.contains("fileCheckFrequency: 20s") && text.contains("syncFrequency: 1m0s"),
        "{text}"
    );
    let back = ConfigFile::parse(&text, Path::new("x")).unwrap();
    let mut c2 =
        Config::from_parts(&back, Path::new("x"), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c2.node_ip_rule, NodeIpRule::Explicit);
    c2.node_ip_rule = c.node_ip_rule.clone();
    assert_eq!(c, c2);
}

#[test]
fn mounter_path_from_file_and_flag() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.mounter_path, None);
    let (_d, p) = write(&format!("{HEAD}mounterPath: /opt/bin/mount\n"));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.mounter_path.as_deref(), Some(Path::new("/opt/bin/mount")));
    assert_eq!(c.to_file().mounter_path.as_deref(), Some("/opt/bin/mount"));
    let flags = Overrides {
        mounter_path: Some("/usr/local/bin/mount".into()),
        ..Default::default()
    };
    let c = Config::resolve_with(Some(&p), &flags, &FakeHost).unwrap();
    assert_eq!(
        c.mounter_path.as_deref(),
        Some(Path::new("/usr/local/bin/mount"))
    );
}

#[test]
fn fail_swap_on_defaults_to_true_and_reads_the_file() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert!(c.fail_swap_on);
    assert_eq!(c.to_file().fail_swap_on, Some(true));
    let (_d, p) = write(&format!("{HEAD}failSwapOn: false\n"));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert!(!c.fail_swap_on);
    let (_d, p) = write(&format!("{HEAD}failSwapOn: sometimes\n"));
    let e = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&p.display().to_string()) && e.contains("failSwapOn"),
        "{e}"
    );
}

#[test]
fn pod_pids_limit_and_allowed_unsafe_sysctls() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.pod_pids_limit, None, "upstream's default -1: no limit");
    assert!(c.allowed_unsafe_sysctls.is_empty());
    let (_d, p) = write(&format!(
        "{HEAD}podPidsLimit: 4096\nallowedUnsafeSysctls: [\"net.core.*\", kernel.msgmax]\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.pod_pids_limit, Some(4096));
    assert_eq!(c.allowed_unsafe_sysctls, ["net.core.*", "kernel.msgmax"]);
    assert_eq!(c.to_file().pod_pids_limit, Some(4096));
    for bad in ["0", "-2"] {
        let (_d, p) = write(&format!("{HEAD}podPidsLimit: {bad}\n"));
        let e = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(&format!(
                "podPidsLimit: {bad}: must be -1 (no limit) or greater than zero"
            )),
            "{e}"
        );
    }
    let (_d, p) = write(&format!("{HEAD}allowedUnsafeSysctls: [kernel.pid_max]\n"));
    let e = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with(
            "allowedUnsafeSysctls: the sysctls \"kernel.pid_max\" are not known to be namespaced"
        ),
        "{e}"
    );
}

#[test]
fn seccomp_default_from_file_or_flag() {
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert!(!c.seccomp_default, "upstream's default is false");
    let (_d, p) = write(&format!("{HEAD}seccompDefault: true\n"));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert!(c.seccomp_default);
    assert_eq!(c.to_file().seccomp_default, Some(true));
    let flags = Overrides {
        seccomp_default: Some(false),
        ..Default::default()
    };
    let c = Config::resolve_with(Some(&p), &flags, &FakeHost).unwrap();
    assert!(!c.seccomp_default, "the flag wins");
}

#[test]
fn zero_is_upstreams_default() {
    // SetDefaults_KubeletConfiguration: a zero duration or maxPods is unset; kubeadm writes
    // `0s` for every duration it leaves to the kubelet.
    let (_d, p) = write(&format!(
        "{HEAD}fileCheckFrequency: 0s\nsyncFrequency: 0s\nmaxPods: 0\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.file_check_frequency, Duration::from_secs(20));
    assert_eq!(c.sync_frequency, Duration::from_secs(60));
    assert_eq!(c.max_pods, 110);
}

#[test]
fn kubeadm_file_resolves() {
    let text = include_str!("testdata/kubeadm-v1.32-config.yaml");
    let (_d, p) = write(text);
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.cluster_dns, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(c.cluster_domain, "cluster.local");
    assert_eq!(c.manifest_dir, Path::new("/etc/kubernetes/manifests"));
    assert_eq!(c.resolv_conf, Path::new("/run/systemd/resolve/resolv.conf"));
    assert_eq!(c.file_check_frequency, Duration::from_secs(20));
    assert_eq!(c.sync_frequency, Duration::from_secs(60));
    assert_eq!(c.read_only, None);
    assert!(!c.unsupported_keys.contains(&"authentication".to_owned()));
    assert!(c.unsupported_keys.contains(&"cgroupDriver".to_owned()));
    assert!(!c.unsupported_keys.contains(&"clusterDNS".to_owned()));
    // kubeadm's HTTPS settings: the client CA, webhook authentication and authorization, the
    // `0s` caches defaulted
    let s = c.server.clone().unwrap();
    assert_eq!(s.listen, "0.0.0.0:10250".parse().unwrap());
    assert_eq!(
        s.client_ca_file.as_deref(),
        Some(Path::new("/etc/kubernetes/pki/ca.crt"))
    );
    assert!(s.webhook_authentication && !s.anonymous);
    assert_eq!(s.authorization_mode, server::AuthorizationMode::Webhook);
    assert_eq!(s.authentication_cache_ttl, Duration::from_secs(120));
    assert_eq!(s.cache_authorized_ttl, Duration::from_secs(300));
    assert_eq!(s.cache_unauthorized_ttl, Duration::from_secs(30));
    // Everything else is kubenode's defaults, as with no file.
    let d = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(
        (c.root_dir, c.max_pods, c.fail_swap_on),
        (d.root_dir, d.max_pods, d.fail_swap_on)
    );
}

#[test]
fn hostname_override_is_the_node_name() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        o: Overrides,
    }
    let cli =
        <Cli as clap::Parser>::try_parse_from(["kubelet", "--hostname-override=Worker-1"]).unwrap();
    let c = Config::resolve_with(None, &cli.o, &FakeHost).unwrap();
    assert_eq!(c.node_name, "worker-1");
}

#[test]
fn image_gc_keys_default_resolve_and_validate_as_upstream() {
    let header = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
    // kubeadm's file: `imageMinimumGCAge: 0s` is upstream's default, 2m.
    let (_d, p) = write(include_str!("testdata/kubeadm-v1.32-config.yaml"));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.image_gc, crate::image_gc::ImageGcPolicy::default());
    assert!(!c.unsupported_keys.contains(&"imageMinimumGCAge".to_owned()));

    let (_d, p) = write(&format!(
        "{header}imageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 50\nimageMinimumGCAge: 1h\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.image_gc.high_threshold_percent, 90);
    assert_eq!(c.image_gc.low_threshold_percent, 50);
    assert_eq!(c.image_gc.min_age, Duration::from_secs(3600));
    let f = c.to_file();
    assert_eq!(f.image_gc_high_threshold_percent, Some(90));
    assert_eq!(f.image_minimum_gc_age.as_deref(), Some("1h0m0s"));

    for (body, key, reason) in [
        (
            "imageGCHighThresholdPercent: 101\n",
            "imageGCHighThresholdPercent",
            "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) 101 must be between 0 and 100, inclusive",
        ),
        (
            "imageGCHighThresholdPercent: 70\n",
            "imageGCLowThresholdPercent",
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 80 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 70",
        ),
        (
            "imageGCLowThresholdPercent: -5\n",
            "imageGCLowThresholdPercent",
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) -5 must be between 0 and 100, inclusive",
        ),
    ] {
        let (_d, p) = write(&format!("{header}{body}"));
        match Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap_err() {
            ConfigError::InvalidValue { key: k, reason: r, .. } => {
                assert_eq!((k.as_str(), r.as_str()), (key, reason))
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn eviction_keys_resolve_and_name_the_key_at_fault() {
    let header = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
    // kubeadm's `evictionPressureTransitionPeriod: 0s` is upstream's default, 5m.
    let (_d, p) = write(include_str!("testdata/kubeadm-v1.32-config.yaml"));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.eviction, crate::eviction::EvictionConfig::default());
    assert!(!c
        .unsupported_keys
        .contains(&"evictionPressureTransitionPeriod".to_owned()));

    let (_d, p) = write(&format!(
        "{header}evictionHard: {{memory.available: 200Mi}}\nevictionSoft: {{nodefs.available: 20%}}\n\
         evictionSoftGracePeriod: {{nodefs.available: 1m}}\nevictionMinimumReclaim: {{nodefs.available: 1Gi}}\n\
         evictionPressureTransitionPeriod: 30s\nevictionMaxPodGracePeriod: 10\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    let e = &c.eviction;
    assert_eq!(e.thresholds.len(), 2);
    assert_eq!(
        e.thresholds[0].signal,
        crate::eviction::Signal::MemoryAvailable
    );
    assert!(e.thresholds[0].is_hard());
    assert_eq!(e.thresholds[1].grace_period, Duration::from_secs(60));
    assert_eq!(
        e.thresholds[1].min_reclaim,
        Some(reserved::Threshold::Quantity(1 << 30))
    );
    assert_eq!(e.pressure_transition_period, Duration::from_secs(30));
    assert_eq!(e.max_pod_grace_period_seconds, 10);
    let f = c.to_file();
    assert_eq!(
        f.eviction_soft_grace_period.unwrap()["nodefs.available"],
        "1m0s"
    );

    for (body, key) in [
        (
            "evictionSoft: {memory.available: 1Gi}\n",
            "evictionSoftGracePeriod",
        ),
        ("evictionSoft: {memory.free: 1Gi}\n", "evictionSoft"),
        (
            "evictionMinimumReclaim: {nodefs.available: \"-1\"}\n",
            "evictionMinimumReclaim",
        ),
        (
            "evictionPressureTransitionPeriod: soon\n",
            "evictionPressureTransitionPeriod",
        ),
    ] {
        let (_d, p) = write(&format!("{header}{body}"));
        match Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap_err() {
            ConfigError::InvalidValue { key: k, .. } => assert_eq!(k.as_str(), key, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn https_server_settings() {
    // defaults: on, 0.0.0.0:10250, secure (no anonymous, Webhook)
    let c = Config::resolve_with(None, &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.server, Some(server::ServerConfig::default()));
    let (_d, p) = write(&format!(
        "{HEAD}address: 127.0.0.2\nport: 10350\ntlsCertFile: /c.crt\ntlsPrivateKeyFile: /c.key\n\
         authentication:\n  anonymous: {{enabled: true}}\n  webhook: {{enabled: false, cacheTTL: 10s}}\n\
         authorization: {{mode: AlwaysAllow, webhook: {{cacheAuthorizedTTL: 1m}}}}\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    let s = c.server.clone().unwrap();
    assert_eq!(s.listen, "127.0.0.2:10350".parse().unwrap());
    assert_eq!(s.tls_cert_file.as_deref(), Some(Path::new("/c.crt")));
    assert!(s.anonymous && !s.webhook_authentication);
    assert_eq!(s.authentication_cache_ttl, Duration::from_secs(10));
    assert_eq!(s.authorization_mode, server::AuthorizationMode::AlwaysAllow);
    assert_eq!(s.cache_authorized_ttl, Duration::from_secs(60));
    // the read-only port keeps its own default address
    assert_eq!(c.read_only, None);
    // flags win
    let o = Overrides {
        address: Some("10.0.0.1".parse().unwrap()),
        port: Some(11250),
        anonymous_auth: Some(false),
        authorization_mode: Some("Webhook".into()),
        client_ca_file: Some("/ca.pem".into()),
        ..Overrides::default()
    };
    let s = Config::resolve_with(Some(&p), &o, &FakeHost)
        .unwrap()
        .server
        .unwrap();
    assert_eq!(s.listen, "10.0.0.1:11250".parse().unwrap());
    assert!(!s.anonymous);
    assert_eq!(s.authorization_mode, server::AuthorizationMode::Webhook);
    assert_eq!(s.client_ca_file.as_deref(), Some(Path::new("/ca.pem")));
    // off
    let (_d, p) = write(&format!("{HEAD}enableServer: false\n"));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert_eq!(c.server, None);
    // bad values name the key
    for (body, want) in [
        (
            "authorization: {mode: Node}\n",
            "authorization.mode: \"Node\": must be one of",
        ),
        (
            "tlsCertFile: /c.crt\n",
            "tlsPrivateKeyFile: tlsCertFile and tlsPrivateKeyFile",
        ),
        (
            "authentication: {webhook: {cacheTTL: soon}}\n",
            "authentication.webhook.cacheTTL",
        ),
        (
            "authentication: {x509: {clientCaFile: /x}}\n",
            "authentication",
        ),
    ] {
        let (_d, p) = write(&format!("{HEAD}{body}"));
        let e = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{body}: {e}");
    }
    let o = Overrides {
        port: Some(0),
        ..Overrides::default()
    };
    assert!(Config::resolve_with(None, &o, &FakeHost).is_err());
}

/// `tlsMinVersion`, `tlsCipherSuites` and `streamingConnectionIdleTimeout`: the file, then the
/// flags; a bad value names the key (or flag) and the value; `0s` is the default, as upstream's
/// defaulting; the printed file carries them.
#[test]
fn tls_and_streaming_settings() {
    let s = Config::resolve_with(None, &Overrides::default(), &FakeHost)
        .unwrap()
        .server
        .unwrap();
    assert_eq!(s.tls_min_version, server::TlsVersion::Tls12);
    assert!(s.tls_cipher_suites.is_empty());
    assert_eq!(
        s.streaming_connection_idle_timeout,
        Duration::from_secs(4 * 3600)
    );
    let (_d, p) = write(&format!(
        "{HEAD}tlsMinVersion: VersionTLS13\nstreamingConnectionIdleTimeout: 5m\n\
         tlsCipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
    ));
    let c = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost).unwrap();
    assert!(c.unsupported_keys.is_empty(), "{:?}", c.unsupported_keys);
    let s = c.server.clone().unwrap();
    assert_eq!(s.tls_min_version, server::TlsVersion::Tls13);
    assert_eq!(
        s.tls_cipher_suites,
        [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_AES_128_GCM_SHA256"
        ]
    );
    assert_eq!(
        s.streaming_connection_idle_timeout,
        Duration::from_secs(300)
    );
    let f = c.to_file();
    assert_eq!(f.tls_min_version.as_deref(), Some("VersionTLS13"));
    assert_eq!(f.streaming_connection_idle_timeout.as_deref(), Some("5m0s"));
    assert_eq!(f.tls_cipher_suites.map(|v| v.len()), Some(2));
    // flags win
    let o = Overrides {
        tls_min_version: Some("VersionTLS12".into()),
        tls_cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into()],
        streaming_connection_idle_timeout: Some("30s".into()),
        ..Overrides::default()
    };
    let s = Config::resolve_with(Some(&p), &o, &FakeHost)
        .unwrap()
        .server
        .unwrap();
    assert_eq!(s.tls_min_version, server::TlsVersion::Tls12);
    assert_eq!(
        s.tls_cipher_suites,
        ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]
    );
    assert_eq!(s.streaming_connection_idle_timeout, Duration::from_secs(30));
    // 0s is the default
    let (_d, p0) = write(&format!("{HEAD}streamingConnectionIdleTimeout: 0s\n"));
    let s = Config::resolve_with(Some(&p0), &Overrides::default(), &FakeHost)
        .unwrap()
        .server
        .unwrap();
    assert_eq!(
        s.streaming_connection_idle_timeout,
        Duration::from_secs(4 * 3600)
    );
    // bad values name the key and the value
    for (body, want) in [
        (
            "tlsMinVersion: VersionTLS11\n",
            "tlsMinVersion: \"VersionTLS11\": kubenode's TLS",
        ),
        (
            "tlsMinVersion: TLS13\n",
            "tlsMinVersion: unknown tls version \"TLS13\"",
        ),
        (
            "tlsCipherSuites: [TLS_NOPE]\n",
            "tlsCipherSuites: Cipher suite TLS_NOPE not supported or doesn't exist",
        ),
        (
            "tlsCipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
            "tlsCipherSuites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: not implemented",
        ),
        (
            "streamingConnectionIdleTimeout: forever\n",
            "streamingConnectionIdleTimeout",
        ),
    ] {
        let (_d, p) = write(&format!("{HEAD}{body}"));
        let e = Config::resolve_with(Some(&p), &Overrides::default(), &FakeHost)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{body}: {e}");
    }
    for (o, want) in [
        (
            Overrides {
                tls_min_version: Some("VersionTLS10".into()),
                ..Overrides::default()
            },
            "--tls-min-version",
        ),
        (
            Overrides {
                tls_cipher_suites: vec!["TLS_RSA_WITH_RC4_128_SHA".into()],
                ..Overrides::default()
            },
            "--tls-cipher-suites: TLS_RSA_WITH_RC4_128_SHA",
        ),
        (
            Overrides {
                streaming_connection_idle_timeout: Some("x".into()),
                ..Overrides::default()
            },
            "--streaming-connection-idle-timeout",
        ),
    ] {
        let e = Config::resolve_with(None, &o, &FakeHost)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
}
