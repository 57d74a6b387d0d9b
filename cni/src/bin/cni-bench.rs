//! ADD+DEL latency of kubenode-bridge against Debian's reference bridge + host-local plugins,
//! measured in the same run on the same namespaces, medians over `--runs` (default 60).
//!
//! Usage (root): `cni-bench [--runs N] [--plugin PATH] [--ref-dir /usr/lib/cni]`. PATH defaults to
//! `kubenode-bridge` next to this executable. Everything it creates (two network namespaces and a
//! directory under /tmp, named `knb<pid>`) is removed at the end, also after an error, or on
//! Ctrl-C (SIGINT) or SIGTERM, after which it exits with 130. A second signal exits at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kubenode_cni::client::{PluginExec, PluginRequest, ProcessExec};
use kubenode_cni::plugin::{NetOps, Rtnl, VethRequest};
use serde_json::json;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// SIGINT and SIGTERM only raise a flag, which the loops check ([`check`]): the bench then
/// returns an error and [`Cleanup`] removes everything on the way out.
fn catch_signals() -> Result<(), String> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let handler = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
        unsafe { sigaction(sig, &handler) }.map_err(|e| format!("catching {sig}: {e}"))?;
    }
    Ok(())
}

/// An error once SIGINT or SIGTERM arrived.
fn check() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    Ok(())
}

struct Cleanup {
    netns: Vec<String>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command with a 20 s limit.
fn run(argv: &[&str]) -> Result<(), String> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .spawn()
        .map_err(|e| format!("{argv:?}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("{argv:?} failed: {status}"))
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{argv:?} timed out"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Case {
    label: &'static str,
    plugin: PathBuf,
    conf: serde_json::Value,
}

async fn add_del(
    exec: &ProcessExec,
    case: &Case,
    pod: &Path,
    id: &str,
    bin_dir: &Path,
) -> Result<(Duration, Duration), String> {
    let stdin = serde_json::to_vec(&case.conf).map_err(|e| e.to_string())?;
    let mut req = PluginRequest {
        command: "ADD".into(),
        container_id: id.into(),
        netns: pod.display().to_string(),
        ifname: "eth0".into(),
        args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={id};K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID={id}"),
        path: bin_dir.display().to_string(),
        stdin,
    };
    let t0 = Instant::now();
    let result = exec
        .exec(&case.plugin, &req)
        .await
        .map_err(|e| format!("{} ADD: {e}", case.label))?;
    let mut del_conf = case.conf.clone();
    del_conf["prevResult"] = serde_json::from_slice(&result).map_err(|e| e.to_string())?;
    let add = t0.elapsed();
    req.command = "DEL".into();
    req.stdin = serde_json::to_vec(&del_conf).map_err(|e| e.to_string())?;
    exec.exec(&case.plugin, &req)
        .await
        .map_err(|e| format!("{} DEL: {e}", case.label))?;
    Ok((add, t0.elapsed() - add))
}

/// The kernel's share: veth create (peer in the pod) + delete over netlink from inside the node
/// namespace, no process spawned. Runs on its own thread, which enters the node namespace.
fn kernel_floor(node: &Path, pod: &Path, runs: usize) -> Result<Duration, String> {
    let (node, pod) = (node.to_path_buf(), pod.to_path_buf());
    std::thread::spawn(move || -> Result<Duration, String> {
        let ns = std::fs::File::open(&node).map_err(|e| e.to_string())?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let net = Rtnl::new().map_err(|e| e.to_string())?;
            let bridge = net
                .ensure_bridge("knbfloor0", 1500, &["10.251.3.1/24".parse().unwrap()])
                .await
                .map_err(|e| e.to_string())?;
            let mut samples = Vec::new();
            for i in 0..runs {
                check()?;
                let req = VethRequest {
                    host: "knbfloorh".into(),
                    pod: format!("fl{i}"),
                    netns: pod.clone(),
                    mtu: 1500,
                    bridge: bridge.index,
                    hairpin: true,
                };
                let t0 = Instant::now();
                net.create_veth(&req).await.map_err(|e| e.to_string())?;
                net.delete_link("knbfloorh")
                    .await
                    .map_err(|e| e.to_string())?;
                samples.push(t0.elapsed());
            }
            Ok(median(&mut samples))
        })
    })
    .join()
    .map_err(|_| "floor thread panicked".to_string())?
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let result = catch_signals().and_then(|()| real_main());
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("cni-bench: interrupted; everything it made is removed");
        std::process::exit(130);
    }
    if let Err(e) = result {
        eprintln!("cni-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut runs = 60usize;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut plugin = exe.with_file_name("kubenode-bridge");
    let mut ref_dir = PathBuf::from("/usr/lib/cni");
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--runs" => runs = v.parse().map_err(|_| "--runs takes a number".to_string())?,
            "--plugin" => plugin = v.into(),
            "--ref-dir" => ref_dir = v.into(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    runs = runs.max(50);
    let tag = format!("knb{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("kn-{tag}"));
    let (node, pod) = (format!("{tag}n"), format!("{tag}p"));
    let cleanup = Cleanup {
        netns: vec![],
        dir: dir.clone(),
    };
    let mut cleanup = cleanup;
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for ns in [&node, &pod] {
        run(&["ip", "netns", "add", ns])?;
        cleanup.netns.push(ns.clone());
    }
    let exec = ProcessExec::new(
        Duration::from_secs(30),
        Some(Path::new(&format!("/run/netns/{node}"))),
    )
    .map_err(|e| e.to_string())?;
    let pod_path = PathBuf::from(format!("/run/netns/{pod}"));
    let reference = |masq: bool| Case {
        label: if masq {
            "reference bridge+host-local (ipMasq)"
        } else {
            "reference bridge+host-local"
        },
        plugin: ref_dir.join("bridge"),
        conf: json!({"cniVersion":"1.0.0","name":"benchref","type":"bridge","bridge":"knbref0","isGateway":true,"ipMasq":masq,
            "hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.251.1.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}],
            "dataDir":dir.join("ref")}}),
    };
    let ours = |masq: bool| {
        let mut conf = json!({"cniVersion":"1.0.0","name":"benchkn","type":"kubenode-bridge","bridge":"knbkn0",
            "podCIDR":"10.251.2.0/24","dataDir":dir.join("kn")});
        if masq {
            conf["clusterCIDR"] = json!("10.251.0.0/16");
        }
        Case {
            label: if masq {
                "kubenode-bridge (clusterCIDR masquerade)"
            } else {
                "kubenode-bridge"
            },
            plugin: plugin.clone(),
            conf,
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!("ADD+DEL latency, {runs} runs each, interleaved, same namespaces");
    for masq in [false, true] {
        let cases = [reference(masq), ours(masq)];
        let mut samples = [Vec::new(), Vec::new()];
        let mut adds: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for i in 0..runs + 3 {
            check()?;
            for (c, case) in cases.iter().enumerate() {
                let (add, del) = rt.block_on(add_del(
                    &exec,
                    case,
                    &pod_path,
                    &format!("bench{c}-{i}"),
                    &ref_dir,
                ))?;
                if i >= 3 {
                    // the first 3 runs warm caches and create the bridges
                    samples[c].push(add + del);
                    adds[c].push(add);
                }
            }
        }
        let m_ref = median(&mut samples[0]);
        let m_kn = median(&mut samples[1]);
        for (c, m) in [m_ref, m_kn].into_iter().enumerate() {
            let add = median(&mut adds[c]);
            println!(
                "  {:<42} median {:>7.2} ms (ADD {:.2} ms)",
                cases[c].label,
                m.as_secs_f64() * 1e3,
                add.as_secs_f64() * 1e3
            );
        }
        println!(
            "  ratio kubenode/reference = {:.2} (target <= 0.50)",
            m_kn.as_secs_f64() / m_ref.as_secs_f64()
        );
    }
    for case in [reference(false), ours(false)] {
        let req = PluginRequest {
            command: "VERSION".into(),
            stdin: b"{\"cniVersion\":\"1.0.0\"}".to_vec(),
            ..Default::default()
        };
        let mut samples = Vec::new();
        for _ in 0..runs {
            check()?;
            let t0 = Instant::now();
            rt.block_on(exec.exec(&case.plugin, &req))
                .map_err(|e| e.to_string())?;
            samples.push(t0.elapsed());
        }
        println!(
            "  process floor: VERSION of {:<30} median {:>6.2} ms",
            case.plugin.display(),
            median(&mut samples).as_secs_f64() * 1e3
        );
    }
    let floor = kernel_floor(Path::new(&format!("/run/netns/{node}")), &pod_path, runs)?;
    println!(
        "  kernel floor (veth create+delete over netlink, no process) median {:>6.2} ms",
        floor.as_secs_f64() * 1e3
    );
    drop(cleanup);
    Ok(())
}
