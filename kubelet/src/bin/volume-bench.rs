//! Volume set-up benchmark, run as root: the time the volume manager takes to set up (and tear
//! down) one pod's volume, for a disk emptyDir, a tmpfs emptyDir (`medium: Memory`, 8Mi) and a
//! hostPath (`DirectoryOrCreate`, a new directory per pod), with the real mounter. Prints the
//! median and p99 per kind.
//!
//! `volume-bench [--pods N]` (default 100, at least 50). Works in `/tmp/kn-volbench-<pid>`
//! and removes it (after unmounting) at the end, also when a step fails, and on Ctrl-C (SIGINT)
//! or SIGTERM, after which it exits with 130.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, HostPathVolumeSource, Pod, PodSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubenode_kubelet::volume::{SystemMounter, VolumeManager};

#[path = "bench/interrupt.rs"]
mod interrupt;
#[path = "bench/scratch.rs"]
mod scratch;

use scratch::Result;

fn pod(uid: &str, volume: Volume) -> Pod {
    let mut p = Pod::default();
    p.metadata.uid = Some(uid.into());
    p.spec = Some(PodSpec {
        volumes: Some(vec![volume]),
        ..Default::default()
    });
    p
}

fn volume(kind: &str, host_dir: &Path, i: usize) -> Volume {
    let mut v = Volume {
        name: "v".into(),
        ..Default::default()
    };
    match kind {
        "emptyDir" => v.empty_dir = Some(EmptyDirVolumeSource::default()),
        "tmpfs" => {
            v.empty_dir = Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("8Mi".into())),
            })
        }
        _ => {
            v.host_path = Some(HostPathVolumeSource {
                path: host_dir.join(format!("p{i}")).display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            })
        }
    }
    v
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(vm: &VolumeManager, kind: &str, host_dir: &Path, pods: usize) -> Result<()> {
    let mut setup = Vec::with_capacity(pods);
    let mut teardown = Vec::with_capacity(pods);
    let uids: Vec<String> = (0..pods).map(|i| format!("{kind}-{i}")).collect();
    for (i, uid) in uids.iter().enumerate() {
        interrupt::check()?;
        let p = pod(uid, volume(kind, host_dir, i));
        let t = Instant::now();
        vm.set_up_pod(&p)
            .map_err(|e| format!("setting up {uid}: {e:?}"))?;
        setup.push(t.elapsed());
    }
    for uid in &uids {
        interrupt::check()?;
        let t = Instant::now();
        vm.tear_down_pod(uid)
            .map_err(|e| format!("tearing down {uid}: {e:?}"))?;
        teardown.push(t.elapsed());
    }
    setup.sort();
    teardown.sort();
    println!(
        "{kind:<9} pods={pods:<4} setup median {:>7.3} ms  p99 {:>7.3} ms   teardown median {:>7.3} ms  p99 {:>7.3} ms",
        ms(percentile(&setup, 0.5)),
        ms(percentile(&setup, 0.99)),
        ms(percentile(&teardown, 0.5)),
        ms(percentile(&teardown, 0.99)),
    );
    Ok(())
}

fn run(dir: &Path, pods: usize) -> Result<()> {
    let vm = VolumeManager::new(&dir.join("pods"), Arc::new(SystemMounter::new(None)));
    let host_dir = dir.join("host");
    std::fs::create_dir_all(&host_dir)?;
    for kind in ["emptyDir", "tmpfs", "hostPath"] {
        bench(&vm, kind, &host_dir, pods)?;
    }
    Ok(())
}

fn main() {
    let mut pods = 100usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next().and_then(|v| v.parse().ok())) {
            ("--pods", Some(n)) if n >= 50 => pods = n,
            _ => {
                eprintln!("usage: volume-bench [--pods N (>= 50)]");
                std::process::exit(2);
            }
        }
    }
    let dir = PathBuf::from(format!("/tmp/kn-volbench-{}", std::process::id()));
    scratch::run_in("volume-bench", &dir, |dir| run(dir, pods));
}
