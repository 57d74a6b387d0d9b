//! configMap/projected volume benchmark, run as root, of the volume set-up path alone (no
//! runtime, no agent): for N pods (default 100) each with a projected volume (a ConfigMap and
//! the downward API, on a tmpfs) and a configMap volume, the time to resolve the contents from
//! [`Objects`] and set the volumes up with the real mounter (p50 and p99 per pod), then the CPU
//! time of keeping them current: one refresh pass over every pod when nothing changed (what
//! the agent does per pod every 60 s, or on an objects change), and one after the ConfigMap
//! changed (every volume rewritten). Prints the numbers.
//!
//! `objects-bench [--pods N]` (at least 10). Works in `/tmp/kn-objbench-<pid>` and removes it
//! (after unmounting) at the end, also when a step fails, and on Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kubenode_kubelet::objects::Objects;
use kubenode_kubelet::volume::projection::{pod_payloads, NodeCapacity};
use kubenode_kubelet::volume::{SystemMounter, VolumeManager};

#[path = "bench/interrupt.rs"]
mod interrupt;
#[path = "bench/scratch.rs"]
mod scratch;

use scratch::Result;

const NODE: NodeCapacity = NodeCapacity {
    cpu_millis: 2000,
    memory: 4 << 30,
    ephemeral_storage: 100 << 30,
};

fn config_map(version: &str) -> ConfigMap {
    let value = format!("{version}:{}", "x".repeat(1024));
    let data: BTreeMap<String, String> = ["app.conf", "log.conf", "feature.flags"]
        .iter()
        .map(|k| (k.to_string(), value.clone()))
        .collect();
    let mut cm = ConfigMap {
        data: Some(data),
        ..Default::default()
    };
    cm.metadata.name = Some("cfg".into());
    cm.metadata.namespace = Some("default".into());
    cm
}

fn pod(i: usize) -> Pod {
    let yaml = format!(
        r#"
metadata:
  name: p{i}
  namespace: default
  uid: objbench-{i}
  labels: {{app: bench, index: "{i}"}}
  annotations: {{kubernetes.io/config.source: file}}
spec:
  containers: [{{name: c, image: busybox}}]
  volumes:
  - name: combined
    projected:
      sources:
      - {{configMap: {{name: cfg, items: [{{key: app.conf, path: app.conf}}]}}}}
      - {{downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}, {{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}}}
  - {{name: cfg, configMap: {{name: cfg}}}}
"#
    );
    serde_yaml_ng::from_str(&yaml).expect("the bench's pod")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// User plus system CPU time of this process.
fn cpu() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// One refresh pass over every pod: resolve the contents, rewrite what changed. Returns the
/// CPU time used and the volumes rewritten.
fn refresh(
    rt: &tokio::runtime::Runtime,
    vm: &VolumeManager,
    objects: &Objects,
    pods: &[Pod],
) -> Result<(Duration, usize)> {
    let before = cpu();
    let mut written = 0;
    for p in pods {
        interrupt::check()?;
        let payloads = rt.block_on(pod_payloads(p, objects, &NODE));
        let (updated, errors) = vm.update_contents(p, &payloads);
        if !errors.is_empty() {
            return Err(format!("refreshing {:?}: {errors:?}", p.metadata.name).into());
        }
        written += updated.len();
    }
    Ok((cpu() - before, written))
}

fn run(dir: &Path, n: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let vm = VolumeManager::new(&dir.join("pods"), Arc::new(SystemMounter::new(None)));
    let objects = Objects::new();
    objects.set_files(vec![config_map("v1")], vec![]);
    let pods: Vec<Pod> = (0..n).map(pod).collect();
    let mut setup = Vec::with_capacity(n);
    let cpu_before = cpu();
    for p in &pods {
        interrupt::check()?;
        let t = Instant::now();
        let payloads = rt.block_on(pod_payloads(p, &objects, &NODE));
        vm.set_up_pod_with(p, &payloads)
            .map_err(|e| format!("setting up {:?}: {e:?}", p.metadata.name))?;
        setup.push(t.elapsed());
    }
    let setup_cpu = cpu() - cpu_before;
    setup.sort();
    println!(
        "set-up (projected configMap+downwardAPI on tmpfs, configMap on disk): pods={n} p50 {:.3} ms  p99 {:.3} ms  cpu {:.1} ms total",
        ms(percentile(&setup, 0.5)),
        ms(percentile(&setup, 0.99)),
        ms(setup_cpu),
    );
    let rounds = 5;
    let mut idle = Duration::ZERO;
    for _ in 0..rounds {
        let (used, written) = refresh(&rt, &vm, &objects, &pods)?;
        if written != 0 {
            return Err(format!("{written} volumes rewritten with nothing changed").into());
        }
        idle += used;
    }
    let idle = idle / rounds;
    println!(
        "keeping current, nothing changed: {:.1} ms CPU per pass over {n} pods ({:.3} % of one CPU at one pass per 60 s)",
        ms(idle),
        idle.as_secs_f64() / 60.0 * 100.0
    );
    objects.set_files(vec![config_map("v2")], vec![]);
    let (used, written) = refresh(&rt, &vm, &objects, &pods)?;
    println!(
        "keeping current, the ConfigMap changed: {:.1} ms CPU for the pass ({written} volumes rewritten)",
        ms(used)
    );
    for p in &pods {
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        vm.tear_down_pod(uid)
            .map_err(|e| format!("tearing down {uid}: {e:?}"))?;
    }
    Ok(())
}

fn main() {
    let mut pods = 100usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next().and_then(|v| v.parse().ok())) {
            ("--pods", Some(n)) if n >= 10 => pods = n,
            _ => {
                eprintln!("usage: objects-bench [--pods N (>= 10)]");
                std::process::exit(2);
            }
        }
    }
    let dir = PathBuf::from(format!("/tmp/kn-objbench-{}", std::process::id()));
    scratch::run_in("objects-bench", &dir, |dir| run(dir, pods));
}
