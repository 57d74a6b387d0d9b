//! The kubelet's pure building blocks used together, through the public
//! API only: configuration → manifest directory → validated static pods →
//! diff → status → events → selectors. No root, no containers.

use kubenode_kubelet::backoff::{
    container_backoff_key, crash_loop_message, Clock, CrashBackoff, RestartDecision, TestClock,
};
use kubenode_kubelet::config::{Config, ConfigFile, Host, InterfaceInfo, Overrides};
use kubenode_kubelet::events::Recorder;
use kubenode_kubelet::selector::{from_service_selector, Selector};
use kubenode_kubelet::source::{diff_pods, read_dir_snapshot, record_errors};
use kubenode_kubelet::status::{
    generate_pod_status, reason, ObservedContainer, ObservedPod, ObservedState,
};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
struct LabHost;

impl Host for LabHost {
    fn hostname(&self) -> io::Result<String> {
        Ok("lab-node-1".into())
    }
    fn interfaces(&self) -> io::Result<Vec<InterfaceInfo>> {
        Ok(vec![InterfaceInfo {
            name: "eth0".into(),
            up: true,
            loopback: false,
            addrs: vec!["10.0.0.11".parse().unwrap()],
        }])
    }
    fn default_route_interface(&self) -> io::Result<Option<String>> {
        Ok(None)
    }
}

const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web, tier: fe}}\n\
spec:\n  containers:\n  - {name: httpd, image: '127.0.0.1:5000/busybox:latest', command: [httpd, -f], ports: [{containerPort: 80}]}\n\
---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";

#[test]
fn manifest_dir_to_status_and_events() {
    let root = tempfile::tempdir().unwrap();
    let manifests = root.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let cfg_file = root.path().join("config.yaml");
    std::fs::write(
        &cfg_file,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: {}\nfileCheckFrequency: 5s\n",
            manifests.display()
        ),
    )
    .unwrap();
    let overrides = Overrides {
        run_dir: Some(root.path().join("run")),
        ..Overrides::default()
    };
    let cfg = Config::resolve_with(Some(&cfg_file), &overrides, &LabHost).unwrap();
    assert_eq!(cfg.node_name, "lab-node-1");
    assert_eq!(cfg.node_ip.to_string(), "10.0.0.11");
    assert_eq!(cfg.file_check_frequency, Duration::from_secs(5));
    assert_eq!(cfg.socket_path(), root.path().join("run/kubenode.sock"));
    assert!(serde_yaml_ng::to_string(&cfg.to_file())
        .unwrap()
        .contains("fileCheckFrequency: 5s"));
    assert!(ConfigFile::parse(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nbogus: 1\n",
        Path::new("c.yaml")
    )
    .is_err());

    std::fs::write(manifests.join("web.yaml"), WEB).unwrap();
    let bad = WEB
        .replace("name: httpd", "name: HTTPD")
        .replace("name: web,", "name: other,");
    std::fs::write(manifests.join("zz-bad.yaml"), bad).unwrap();
    let first = read_dir_snapshot(&cfg.manifest_dir, &cfg.node_name);
    assert_eq!(first.pods.len(), 1);
    assert_eq!(first.services.len(), 1);
    // The bad pod, and the second Service of the same name.
    assert_eq!(first.errors.len(), 2, "{:?}", first.errors);
    assert_eq!(
        first.errors[1].to_string(),
        format!(
            "{}: {}",
            manifests.join("zz-bad.yaml (document 1)").display(),
            format_args!(
                "metadata.name: Invalid value: \"default/web\": already defined in {}, ignoring",
                manifests.join("web.yaml").display()
            )
        )
    );

    let clock = TestClock::at_secs(1_750_000_000);
    let events = Recorder::new(&cfg.node_name, Arc::new(clock.clone()));
    record_errors(&events, &cfg.node_name, &first.errors);
    let ev = &events.list()[0];
    assert_eq!(ev.reason.as_deref(), Some("InvalidManifest"));
    assert!(ev
        .message
        .as_deref()
        .unwrap()
        .contains("zz-bad.yaml (document 0): spec.containers[0].name: Invalid value: \"HTTPD\""));

    // Services select the pod like the proxy will.
    let svc = &first.services[0];
    let sel = from_service_selector(svc.spec.as_ref().unwrap().selector.as_ref()).unwrap();
    let pod = &first.pods[0];
    assert!(sel.matches_opt(pod.metadata.labels.as_ref()));
    assert!(Selector::parse("tier in (fe,be),!canary")
        .unwrap()
        .matches_opt(pod.metadata.labels.as_ref()));

    // An identical rewrite changes nothing; an edit replaces the pod.
    std::fs::write(manifests.join("web.yaml"), WEB).unwrap();
    assert!(diff_pods(
        &first.pods,
        &read_dir_snapshot(&cfg.manifest_dir, &cfg.node_name).pods
    )
    .is_empty());
    std::fs::write(
        manifests.join("web.yaml"),
        WEB.replace("httpd, -f", "httpd, -f, -v"),
    )
    .unwrap();
    let second = read_dir_snapshot(&cfg.manifest_dir, &cfg.node_name);
    let changes = diff_pods(&first.pods, &second.pods);
    assert_eq!(changes.replaced.len(), 1);
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    let third = read_dir_snapshot(&cfg.manifest_dir, &cfg.node_name);
    assert_eq!(diff_pods(&second.pods, &third.pods).removed.len(), 1);

    // The container crashes twice: the second restart backs off 10 s.
    let pod = &second.pods[0];
    let (ns, name, uid) = (
        pod.metadata.namespace.clone().unwrap(),
        pod.metadata.name.clone().unwrap(),
        pod.metadata.uid.clone().unwrap(),
    );
    let mut backoff = CrashBackoff::new(Arc::new(clock.clone()));
    let key = container_backoff_key(&ns, &name, &uid, "httpd");
    assert_eq!(backoff.decide(&key, clock.now()), RestartDecision::Restart);
    clock.advance(Duration::from_secs(1));
    let RestartDecision::BackOff { delay, .. } = backoff.decide(&key, clock.now()) else {
        panic!("expected back-off")
    };
    let message = crash_loop_message(delay, "httpd", &name, &ns, &uid);
    assert_eq!(
        message,
        format!("back-off 10s restarting failed container=httpd pod=web-lab-node-1_default({uid})")
    );

    let observed = ObservedPod {
        sandbox_ready: true,
        pod_ips: vec!["10.244.1.2".parse().unwrap()],
        host_ips: vec![cfg.node_ip],
        containers: vec![ObservedContainer {
            name: "httpd".into(),
            container_id: Some("runc://abc".into()),
            image: None,
            image_id: "sha256:feed".into(),
            restart_count: 1,
            state: ObservedState::Waiting {
                reason: reason::CRASH_LOOP_BACK_OFF.into(),
                message: Some(message),
            },
            last_terminated: None,
            ready: false,
            started: None,
        }],
        ..ObservedPod::default()
    };
    let status = generate_pod_status(pod, &observed, None, clock.now());
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
    let cs = &status.container_statuses.unwrap()[0];
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("CrashLoopBackOff")
    );
}
