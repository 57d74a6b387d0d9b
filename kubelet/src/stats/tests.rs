use super::*;

/// Asserts that the families of a Prometheus text exposition are declared (`# TYPE`) in name
/// order, each once, as client_golang's registry gathers them: the text renderers' tests
/// (`cadvisor`, `resource`) share it.
pub(super) fn assert_families_in_name_order(text: &str) {
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "families not in name order, each once");
}

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

#[test]
fn nano_cores_between_two_samples() {
    let t = Instant::now();
    let a = CpuSample {
        at: t,
        cpu_ns: 1_000_000_000,
    };
    // Half a core for two seconds: one CPU-second used.
    let b = CpuSample {
        at: at(t, 2000),
        cpu_ns: 2_000_000_000,
    };
    assert_eq!(nano_cores(a, b), Some(500_000_000));
    assert_eq!(nano_cores(b, a), None, "samples out of order");
    assert_eq!(nano_cores(a, a), None, "no time between them");
}

#[test]
fn rates_keep_the_last_two_samples() {
    let t = Instant::now();
    let mut r = Rates::default();
    r.begin_round();
    assert_eq!(
        r.observe("/a", CpuSample { at: t, cpu_ns: 0 }),
        None,
        "one sample, no rate"
    );
    // Too soon after the first: no second sample yet.
    assert_eq!(
        r.observe(
            "/a",
            CpuSample {
                at: at(t, 200),
                cpu_ns: 50
            }
        ),
        None
    );
    // Two cores busy for 10 s.
    let rate = r.observe(
        "/a",
        CpuSample {
            at: at(t, 10_000),
            cpu_ns: 20_000_000_000,
        },
    );
    assert_eq!(rate, Some(2_000_000_000));
    // A request right after keeps the pair (and its rate).
    let again = r.observe(
        "/a",
        CpuSample {
            at: at(t, 10_100),
            cpu_ns: 20_000_000_001,
        },
    );
    assert_eq!(again, Some(2_000_000_000));
    // The counter went back: a new cgroup of the same name starts over.
    assert_eq!(
        r.observe(
            "/a",
            CpuSample {
                at: at(t, 20_000),
                cpu_ns: 5
            }
        ),
        None
    );
    r.end_round();
    assert_eq!(r.len(), 1);
    // A cgroup not seen in a round is forgotten.
    r.begin_round();
    r.observe("/b", CpuSample { at: t, cpu_ns: 0 });
    r.end_round();
    assert_eq!(r.len(), 1);
}

/// Writes `text` to `p`, making its directory.
fn write_file(p: PathBuf, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A collector of node `n1` over a fake cgroup root and `/proc`, its file systems in `dir`.
fn collector(dir: &Path, cgroup_root: PathBuf, proc_root: PathBuf) -> Collector {
    Collector::new(CollectorConfig {
        node_name: "n1".into(),
        cgroup_root,
        proc_root,
        root_dir: dir.into(),
        image_dir: dir.into(),
        log_dir: dir.into(),
    })
}

#[test]
fn summary_of_a_fake_v2_host() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = tmp.path().join("cgroup");
    let procfs = tmp.path().join("proc");
    let w = write_file;
    w(cg.join("cgroup.controllers"), "cpu memory\n");
    for (dir, usec, mem) in [
        ("kubepods/podu1", 900, 3_000_000),
        ("kubepods/podu1/c1", 800, 2_000_000),
    ] {
        w(
            cg.join(dir).join("cpu.stat"),
            &format!("usage_usec {usec}\n"),
        );
        w(cg.join(dir).join("memory.current"), &format!("{mem}\n"));
        w(
            cg.join(dir).join("memory.stat"),
            "anon 1000\ninactive_file 1000000\n",
        );
        w(cg.join(dir).join("memory.max"), "max\n");
    }
    w(cg.join("kubepods/podu1/sb/cgroup.procs"), "77\n");
    w(
        procfs.join("77/net/dev"),
        "h1\nh2\n  eth0: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n",
    );
    w(
        procfs.join("meminfo"),
        "MemTotal: 4000 kB\nMemFree: 1000 kB\nInactive(file): 500 kB\n",
    );
    w(
        procfs.join("stat"),
        "cpu  100 0 100 0 0 0 0 0\nbtime 1764900000\n",
    );
    // the container's log directory: its current log and a rotated one
    let logs = tmp.path().join("logs/c1");
    w(logs.join("0.log.20261206-000000"), "012345678901234567890");
    let log = logs.join("1.log");
    std::fs::write(&log, "0123456789").unwrap();
    let layer = tmp.path().join("layers/c1/upper");
    w(layer.join("data/file"), &"x".repeat(65536));
    let c = collector(tmp.path(), cg, procfs);
    // a disk emptyDir, walked; a tmpfs volume that is not mounted, left out
    let data = tmp.path().join("volumes/data");
    w(data.join("f"), &"d".repeat(8192));
    let target = PodTarget {
        volumes: vec![
            VolumeTarget {
                name: "data".into(),
                path: data.clone(),
                usage: VolumeUsage::Walk,
            },
            VolumeTarget {
                name: "token".into(),
                path: tmp.path().join("volumes/token"),
                usage: VolumeUsage::FileSystem,
            },
        ],
        pod_ref: PodReference {
            name: "p".into(),
            namespace: "default".into(),
            uid: "u1".into(),
        },
        start_time: Timestamp::UNIX_EPOCH,
        cgroup: "/kubepods/podu1".into(),
        netns_cgroup: Some("/kubepods/podu1/sb".into()),
        sandbox_id: "sb".into(),
        containers: vec![ContainerTarget {
            writable_layer: Some(layer.clone()),
            name: "c1".into(),
            id: "c1".into(),
            image: "busybox".into(),
            start_time: Timestamp::UNIX_EPOCH,
            cgroup: "/kubepods/podu1/c1".into(),
            log_path: log,
        }],
    };
    let s = c.summary(std::slice::from_ref(&target));
    assert_eq!(s.node.node_name, "n1");
    let node_mem = s.node.memory.unwrap();
    assert_eq!(node_mem.working_set_bytes, Some(2500 * 1024));
    assert_eq!(node_mem.available_bytes, Some(1500 * 1024));
    assert_eq!(
        s.node.cpu.unwrap().usage_core_nano_seconds,
        Some(2_000_000_000)
    );
    let pod = &s.pods[0];
    assert_eq!(pod.cpu.unwrap().usage_core_nano_seconds, Some(900_000));
    assert_eq!(pod.cpu.unwrap().usage_nano_cores, None, "one sample only");
    assert_eq!(pod.memory.unwrap().working_set_bytes, Some(2_000_000));
    let net = pod.network.as_ref().unwrap();
    assert_eq!(
        (net.default.rx_bytes, net.default.tx_bytes),
        (Some(10), Some(20))
    );
    let ctr = &pod.containers[0];
    assert_eq!(ctr.memory.unwrap().working_set_bytes, Some(1_000_000));
    // both logs, in allocated blocks as `du`, and the writable layer's file
    let log_bytes = crate::volume::usage::disk_usage(&logs).unwrap();
    assert!(log_bytes >= 31, "{log_bytes}");
    assert_eq!(ctr.logs.unwrap().used_bytes, Some(log_bytes));
    let rootfs = ctr.rootfs.unwrap().used_bytes.unwrap();
    assert!(rootfs >= 65536, "{rootfs}");
    let data_bytes = crate::volume::usage::disk_usage(&data).unwrap();
    assert!(data_bytes >= 8192, "{data_bytes}");
    let names: Vec<&str> = pod.volume.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["data"], "an unmounted tmpfs volume is not measured");
    assert_eq!(pod.volume[0].fs.used_bytes, Some(data_bytes));
    assert!(pod.volume[0].fs.capacity_bytes.is_some());
    assert_eq!(
        pod.ephemeral_storage.unwrap().used_bytes,
        Some(log_bytes + rootfs + data_bytes)
    );

    // The layer is measured again only after WALK_PERIOD: what it gains meanwhile
    // shows later (upstream's cAdvisor measures it every minute).
    w(layer.join("data/more"), &"y".repeat(1 << 20));
    let again = c.summary(std::slice::from_ref(&target));
    assert_eq!(
        again.pods[0].containers[0].rootfs.unwrap().used_bytes,
        Some(rootfs)
    );
    // A container that leaves the Summary is forgotten: measured anew when it comes back.
    let without = PodTarget {
        volumes: Vec::new(),
        containers: Vec::new(),
        ..target.clone()
    };
    c.summary(std::slice::from_ref(&without));
    let back = c.summary(std::slice::from_ref(&target));
    let grown = back.pods[0].containers[0]
        .rootfs
        .unwrap()
        .used_bytes
        .unwrap();
    assert!(grown >= rootfs + (1 << 20), "{grown} after {rootfs}");
    // Upstream's JSON names.
    let json = serde_json::to_value(&s).unwrap();
    let p = &json["pods"][0];
    assert_eq!(p["podRef"]["uid"], "u1");
    assert_eq!(p["containers"][0]["memory"]["workingSetBytes"], 1_000_000);
    assert_eq!(p["cpu"]["usageCoreNanoSeconds"], 900_000);
    assert_eq!(p["network"]["name"], "eth0");
    assert_eq!(p["network"]["rxBytes"], 10);
    assert_eq!(p["volume"][0]["name"], "data");
    assert!(p["volume"][0]["usedBytes"].is_number());
    assert!(p["ephemeral-storage"]["usedBytes"].is_number());
    assert!(json["node"]["runtime"]["imageFs"]["capacityBytes"].is_number());
    let back: Summary = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);
}

/// Many pods (read by several threads) come back in order, each with its own counters, its
/// containers read below the pod's cgroup or, when a container's cgroup is elsewhere, at its
/// own path; a pod whose cgroup is gone reads as nothing.
#[test]
fn a_summary_of_many_pods_keeps_each_pods_counters_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = tmp.path().join("cgroup");
    let procfs = tmp.path().join("proc");
    let w = write_file;
    w(cg.join("cgroup.controllers"), "cpu memory pids\n");
    let pods = 3 * PODS_PER_READER + 5;
    let mut targets = Vec::new();
    for i in 0..pods {
        let pod = format!("kubepods/pod{i}");
        // every third pod's container is outside its pod's cgroup
        let ctr = if i % 3 == 0 {
            format!("elsewhere/c{i}")
        } else {
            format!("{pod}/c{i}")
        };
        if i != 7 {
            for (dir, usec) in [(&pod, 1000 + i), (&ctr, 2000 + i)] {
                w(
                    cg.join(dir).join("cpu.stat"),
                    &format!("usage_usec {usec}\n"),
                );
                w(
                    cg.join(dir).join("memory.current"),
                    &format!("{}\n", usec * 10),
                );
                w(
                    cg.join(dir).join("memory.stat"),
                    "anon 1\ninactive_file 0\n",
                );
                w(cg.join(dir).join("memory.max"), "max\n");
                w(cg.join(dir).join("pids.current"), &format!("{}\n", i + 1));
            }
            w(
                cg.join(&pod).join("sb/cgroup.procs"),
                &format!("{}\n", 100 + i),
            );
            w(
                procfs.join(format!("{}/net/dev", 100 + i)),
                &format!("h1\nh2\n  eth0: {i} 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n"),
            );
        }
        targets.push(PodTarget {
            volumes: Vec::new(),
            pod_ref: PodReference {
                name: format!("p{i}"),
                namespace: "default".into(),
                uid: format!("u{i}"),
            },
            start_time: Timestamp::UNIX_EPOCH,
            cgroup: format!("/{pod}"),
            netns_cgroup: Some(format!("/{pod}/sb")),
            sandbox_id: "sb".into(),
            containers: vec![ContainerTarget {
                writable_layer: None,
                name: "c".into(),
                id: format!("c{i}"),
                image: "busybox".into(),
                start_time: Timestamp::UNIX_EPOCH,
                cgroup: format!("/{ctr}"),
                log_path: tmp.path().join("none.log"),
            }],
        });
    }
    let c = collector(tmp.path(), cg, procfs);
    let s = c.summary(&targets);
    assert_eq!(s.pods.len(), pods);
    for (i, p) in s.pods.iter().enumerate() {
        assert_eq!(p.pod_ref.name, format!("p{i}"));
        if i == 7 {
            assert_eq!(p.cpu, None, "pod {i}: its cgroup is gone");
            assert_eq!(p.network, None);
            assert_eq!(p.containers[0].cpu, None);
            continue;
        }
        let us = |n: usize| Some(n as u64 * 1000);
        assert_eq!(
            p.cpu.unwrap().usage_core_nano_seconds,
            us(1000 + i),
            "pod {i}"
        );
        assert_eq!(p.memory.unwrap().usage_bytes, Some((1000 + i) as u64 * 10));
        assert_eq!(
            p.process_stats.as_ref().and_then(|s| s.process_count),
            Some(i as u64 + 1)
        );
        assert_eq!(p.network.as_ref().unwrap().default.rx_bytes, Some(i as u64));
        let ctr = &p.containers[0];
        assert_eq!(
            ctr.cpu.unwrap().usage_core_nano_seconds,
            us(2000 + i),
            "container {i}"
        );
    }
}
