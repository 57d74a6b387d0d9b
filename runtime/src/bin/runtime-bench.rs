//! Start-up benchmark of the container runtime, run as root:
//!
//! * (a) the floor: bare `runc run -d` + `runc delete` of busybox `true`;
//! * (b) kubenode: sandbox (netns + pause) + one container, from "start" to "running";
//! * the ratio of (b) to the floor of two containers (2 × a), target ≤ 2;
//! * the shim's memory: PSS per container from `/proc/<shim>/smaps_rollup`
//!   with several containers running at once (target ≤ 0.5 MiB), and of the shim of a
//!   container with `stdin` (its attach socket served), with the round trip of a line through
//!   that socket to `cat` and back (p50/p99, the shim's attach path without the kubelet).
//!
//! `runtime-bench [--runs N] [--shim PATH] [--runc PATH] [--containers N] [--seccomp]`;
//! the shim binary defaults to `kubenode` next to this executable. Pause runs under seccomp
//! `RuntimeDefault`, as the kubelet asks for every sandbox. With `--seccomp`, every run also
//! starts (b) with the container under `RuntimeDefault`, interleaved with the unconfined one,
//! and both medians are printed; and (c) times bare `runc create` of the floor's bundle
//! without a filter, with the default profile, and with the default profile for the native
//! ABI only (a diagnostic of where runc's time goes, not a profile kubenode uses).
//!
//! Everything it makes is named `knbench-<pid>` (the directory `/tmp/knbench-<pid>` with the
//! runc roots (the floor's and (c)'s), the netns pins and the rootfs mounts below it, the cgroup `/knbench-<pid>`, the
//! shims) and removed at the end, after an error, or on Ctrl-C (SIGINT) or SIGTERM, after
//! which it exits with 130. A second signal exits at once.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use kubenode_runtime::spec::{default_profile, PodInfo, SeccompHost, SeccompProfile};
use kubenode_runtime::{
    ContainerConfig, ImageRef, Runtime, RuntimeConfig, SandboxConfig, SandboxOptions,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// SIGINT and SIGTERM only raise a flag, which the loops check ([`check`]): the bench then
/// returns an error and [`Made`] removes everything on the way out.
fn catch_signals() -> Result<()> {
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
        unsafe { nix::sys::signal::sigaction(sig, &handler) }?;
    }
    Ok(())
}

/// An error once SIGINT or SIGTERM arrived.
fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    Ok(())
}

/// What the bench made, removed on drop (also after an error or a signal): the runtime's
/// sandboxes, the floor's runc containers, any process still naming the directory (shims),
/// mounts below the directory, the cgroup parent in every hierarchy, then the directory.
struct Made {
    dir: PathBuf,
    runc: PathBuf,
    cgroup_parent: String,
    rt: Option<Runtime>,
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let _ = rt.recover();
            for sb in rt.list_sandboxes() {
                if let Err(e) = rt.stop_and_remove_sandbox(&sb.id) {
                    eprintln!("runtime-bench: removing sandbox {}: {e}", sb.id);
                }
            }
        }
        for root in ["floor-runc", "filter-runc"].map(|r| self.dir.join(r)) {
            if !root.exists() {
                continue;
            }
            if let Ok(out) = Command::new(&self.runc)
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = run(Command::new(&self.runc)
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force", id]));
                }
            }
        }
        for pid in pids_naming(&self.dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_cgroup_tree(
                &hierarchy
                    .path()
                    .join(self.cgroup_parent.trim_start_matches('/')),
            );
        }
        remove_cgroup_tree(
            &Path::new("/sys/fs/cgroup").join(self.cgroup_parent.trim_start_matches('/')),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Processes (not this one) whose command line names `dir`.
fn pids_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

struct Options {
    runs: usize,
    shim: PathBuf,
    runc: PathBuf,
    containers: usize,
    seccomp: bool,
}

fn options() -> Result<Options> {
    let exe = std::env::current_exe()?;
    let mut o = Options {
        runs: 20,
        shim: exe.with_file_name("kubenode"),
        runc: PathBuf::from("/usr/sbin/runc"),
        containers: 10,
        seccomp: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--seccomp" {
            o.seccomp = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => o.runs = value.parse()?,
            "--shim" => o.shim = value.into(),
            "--runc" => o.runc = value.into(),
            "--containers" => o.containers = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(o)
}

fn busybox_rootfs(dir: &Path) -> Result<()> {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    for applet in ["sh", "true", "sleep", "cat"] {
        symlink("busybox", dir.join("bin").join(applet))?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (a): `runc run -d` + `runc delete --force` of `true` in a plain bundle.
fn floor_once(o: &Options, dir: &Path, rootfs: &Path, i: usize) -> Result<Duration> {
    let bundle = dir.join("floor-bundle");
    if !bundle.join("config.json").exists() {
        std::fs::create_dir_all(&bundle)?;
        run(Command::new(&o.runc)
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle))?;
        let path = bundle.join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = serde_json::json!(["/bin/true"]);
        spec["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
        std::fs::write(&path, serde_json::to_vec(&spec)?)?;
    }
    let root = dir.join("floor-runc");
    let id = format!("knbench-floor-{}-{i}", std::process::id());
    let t0 = Instant::now();
    run(Command::new(&o.runc)
        .arg("--root")
        .arg(&root)
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg(&id))?;
    run(Command::new(&o.runc)
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", &id]))?;
    Ok(t0.elapsed())
}

/// The variants of (c).
const FILTERS: [&str; 3] = ["none", "RuntimeDefault", "native ABI only"];

/// (c): `runc create` (not start) of the floor's `true` bundle with each of [`FILTERS`];
/// the containers are deleted outside the measurement.
fn filter_once(o: &Options, dir: &Path, i: usize) -> Result<[Duration; 3]> {
    let root = dir.join("filter-runc");
    let mut out = [Duration::ZERO; 3];
    for (k, slot) in out.iter_mut().enumerate() {
        let bundle = dir.join(format!("filter-bundle-{k}"));
        if !bundle.join("config.json").exists() {
            let floor = dir.join("floor-bundle/config.json");
            let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(floor)?)?;
            let host = SeccompHost::current();
            let mut profile = default_profile(&[], &host)?;
            if k == 2 {
                let native = profile
                    .architectures()
                    .as_ref()
                    .and_then(|a| a.first().copied());
                profile.set_architectures(native.map(|a| vec![a]));
            }
            if k > 0 {
                spec["linux"]["seccomp"] = serde_json::to_value(&profile)?;
            }
            std::fs::create_dir_all(&bundle)?;
            std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        }
        let id = format!("knbench-filter-{}-{i}-{k}", std::process::id());
        let t0 = Instant::now();
        // The created container's init keeps runc's stdio until it is deleted: no pipes.
        let status = Command::new(&o.runc)
            .arg("--root")
            .arg(&root)
            .args(["create", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        *slot = t0.elapsed();
        if !status.success() {
            return Err(format!("runc create {id}: {status}").into());
        }
        run(Command::new(&o.runc)
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id]))?;
    }
    Ok(out)
}

fn pod(i: usize) -> PodInfo {
    PodInfo {
        namespace: "bench".into(),
        name: format!("p{i}"),
        uid: format!("uid-{i}"),
        hostname: format!("p{i}"),
    }
}

fn sleeper(rootfs: &Path, name: &str) -> ContainerConfig {
    confined_sleeper(rootfs, name, SeccompProfile::Unconfined)
}

fn confined_sleeper(rootfs: &Path, name: &str, seccomp: SeccompProfile) -> ContainerConfig {
    ContainerConfig {
        seccomp,
        container: Container {
            name: name.into(),
            command: Some(vec!["/bin/sleep".into(), "3600".into()]),
            ..Default::default()
        },
        image: ImageRef {
            name: "busybox".into(),
            layers: vec![rootfs.to_path_buf()],
            config: None,
        },
        ..Default::default()
    }
}

/// Phases of (b): create sandbox (netns), start sandbox (pause), create
/// container, start container.
const PHASES: [&str; 4] = [
    "create_sandbox",
    "start_sandbox",
    "create_container",
    "start_container",
];

/// The sandbox options the kubelet gives every pod: pause under the runtime default profile.
fn kubelet_sandbox() -> SandboxOptions {
    SandboxOptions {
        seccomp: SeccompProfile::RuntimeDefault,
        ..Default::default()
    }
}

/// (b): sandbox + one container from nothing to running; returns the time
/// per phase and the sandbox id (torn down by the caller, outside the measurement).
fn pod_once(
    rt: &Runtime,
    rootfs: &Path,
    i: usize,
    seccomp: &SeccompProfile,
) -> Result<([Duration; 4], String)> {
    let mut t = Instant::now();
    let mut lap = || {
        let d = t.elapsed();
        t = Instant::now();
        d
    };
    let sb = rt.create_sandbox_with(
        &SandboxConfig {
            pod: pod(i),
            cgroup_parent: format!("/knbench-{}", std::process::id()),
        },
        &kubelet_sandbox(),
    )?;
    let p0 = lap();
    rt.start_sandbox(&sb.id)?;
    let p1 = lap();
    let id = rt.create_container(&sb.id, &confined_sleeper(rootfs, "app", seccomp.clone()))?;
    let p2 = lap();
    rt.start_container(&id)?;
    let p3 = lap();
    Ok(([p0, p1, p2, p3], sb.id))
}

fn pss_kib(pid: u32) -> Option<u64> {
    rollup_kib(pid, "Pss:")
}

/// A field of `/proc/<pid>/smaps_rollup`, in KiB.
fn rollup_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn shim_pids(root: &Path) -> Vec<u32> {
    let needle = root.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("\0shim\0") && c.contains(&needle) && c.contains("/containers/")
            })
        })
        .collect()
}

fn main() {
    let result = catch_signals().and_then(|()| bench());
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("runtime-bench: interrupted; everything it made is removed");
        std::process::exit(130);
    }
    if let Err(e) = result {
        eprintln!("runtime-bench: {e}");
        std::process::exit(1);
    }
}

fn bench() -> Result<()> {
    let o = options()?;
    if !o.shim.exists() {
        return Err(format!(
            "shim binary {} missing (build kubenode, or pass --shim)",
            o.shim.display()
        )
        .into());
    }
    let dir = PathBuf::from(format!("/tmp/knbench-{}", std::process::id()));
    let mut made = Made {
        dir: dir.clone(),
        runc: o.runc.clone(),
        cgroup_parent: format!("/knbench-{}", std::process::id()),
        rt: None,
    };
    std::fs::create_dir_all(&dir)?;
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let mut config = RuntimeConfig::new(dir.join("root"), dir.join("run"), dir.join("logs"));
    config.runtime_path = o.runc.clone();
    config.shim_binary = o.shim.clone();
    let rt: &Runtime = made.rt.insert(Runtime::new(config)?);

    // Warm-up (page cache, runc binary), then interleave (a) and (b).
    floor_once(&o, &dir, &rootfs, 0)?;
    let unconfined = SeccompProfile::Unconfined;
    let (_, sb) = pod_once(rt, &rootfs, 0, &unconfined)?;
    rt.stop_and_remove_sandbox(&sb)?;
    let mut confined = Vec::new();
    let mut confined_create = Vec::new();
    let mut floor = Vec::new();
    let mut pods = Vec::new();
    let mut phases: [Vec<Duration>; 4] = Default::default();
    let mut filters: [Vec<Duration>; 3] = Default::default();
    for i in 1..=o.runs {
        check()?;
        floor.push(floor_once(&o, &dir, &rootfs, i)?);
        let (t, sb) = pod_once(rt, &rootfs, i, &unconfined)?;
        pods.push(t.iter().sum());
        for (k, d) in t.into_iter().enumerate() {
            phases[k].push(d);
        }
        rt.stop_and_remove_sandbox(&sb)?;
        if o.seccomp {
            let (t, sb) = pod_once(rt, &rootfs, o.runs + i, &SeccompProfile::RuntimeDefault)?;
            confined.push(t.iter().sum());
            confined_create.push(t[2] + t[3]);
            rt.stop_and_remove_sandbox(&sb)?;
            for (k, d) in filter_once(&o, &dir, i)?.into_iter().enumerate() {
                filters[k].push(d);
            }
        }
    }
    let unconfined_create = median(
        phases[2]
            .iter()
            .zip(&phases[3])
            .map(|(c, s)| *c + *s)
            .collect(),
    );
    let (a, b) = (median(floor), median(pods));
    println!(
        "runs: {}, runtime: {}, shim: {}",
        o.runs,
        o.runc.display(),
        o.shim.display()
    );
    println!(
        "(a) floor: runc run -d + delete of busybox true, median: {:.1} ms",
        ms(a)
    );
    println!(
        "(b) kubenode sandbox + 1 container, start to running, median: {:.1} ms",
        ms(b)
    );
    for (name, v) in PHASES.iter().zip(phases) {
        println!("    {name:<17} median {:.1} ms", ms(median(v)));
    }
    println!(
        "ratio (b) / floor of two containers (2 x a): {:.2} (target <= 2.00)",
        ms(b) / (2.0 * ms(a))
    );
    if o.seccomp {
        let (c, cc) = (median(confined), median(confined_create));
        println!(
            "(b) with the container under seccomp RuntimeDefault, median: {:.1} ms",
            ms(c)
        );
        println!(
            "    container create + start, median: unconfined {:.1} ms, RuntimeDefault {:.1} ms \
             (difference {:+.1} ms; whole pod {:+.1} ms)",
            ms(unconfined_create),
            ms(cc),
            ms(cc) - ms(unconfined_create),
            ms(c) - ms(b)
        );
        let none = ms(median(filters[0].clone()));
        println!("(c) bare runc create of busybox true, median:");
        for (name, v) in FILTERS.iter().zip(filters) {
            let m = ms(median(v));
            println!("    {name:<17} {m:.1} ms ({:+.1} ms)", m - none);
        }
    }

    // Shim memory with several containers running at once.
    let sb = rt.create_sandbox_with(
        &SandboxConfig {
            pod: pod(9999),
            cgroup_parent: format!("/knbench-{}", std::process::id()),
        },
        &kubelet_sandbox(),
    )?;
    rt.start_sandbox(&sb.id)?;
    for n in 0..o.containers {
        check()?;
        let id = rt.create_container(&sb.id, &sleeper(&rootfs, &format!("c{n}")))?;
        rt.start_container(&id)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let pids = shim_pids(&dir);
    let pss: Vec<u64> = pids.iter().copied().filter_map(pss_kib).collect();
    if !pss.is_empty() {
        let total: u64 = pss.iter().sum();
        let mean = |field: &str| {
            let v: Vec<u64> = pids.iter().filter_map(|p| rollup_kib(*p, field)).collect();
            v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
        };
        println!(
            "shim PSS with {} containers: mean {:.0} KiB per container (min {} KiB, max {} KiB; target <= 512 KiB); of which anonymous {:.0} KiB, file-backed {:.0} KiB (the binary's pages, shared by every shim)",
            pss.len(),
            total as f64 / pss.len() as f64,
            pss.iter().min().copied().unwrap_or(0),
            pss.iter().max().copied().unwrap_or(0),
            mean("Pss_Anon:"),
            mean("Pss_File:"),
        );
    }
    attach_round_trips(rt, &sb.id, &rootfs, &dir)?;
    rt.stop_and_remove_sandbox(&sb.id)?;
    drop(made);
    Ok(())
}

/// A `cat` with `stdin`: its shim's PSS, and 200 round trips of a line through the attach
/// socket (a STDIN frame in, the STDOUT frame back).
fn attach_round_trips(rt: &Runtime, sandbox: &str, rootfs: &Path, dir: &Path) -> Result<()> {
    use kubenode_runtime::shim::attach;
    use std::io::{Read, Write};
    let before = shim_pids(dir);
    let mut cfg = sleeper(rootfs, "cat");
    cfg.container.command = Some(vec!["/bin/cat".into()]);
    cfg.container.stdin = Some(true);
    let id = rt.create_container(sandbox, &cfg)?;
    rt.start_container(&id)?;
    let socket = rt
        .attach_socket(&id)
        .ok_or("the container with stdin has no attach socket")?;
    let mut sock = attach::connect(&socket)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut times = Vec::with_capacity(200);
    let mut frame = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..200 {
        check()?;
        frame.clear();
        attach::encode(&mut frame, attach::STDIN, format!("{i:04}\n").as_bytes());
        let t = Instant::now();
        sock.write_all(&frame)?;
        // the echo: a 5-byte header and "NNNN\n"
        sock.read_exact(&mut buf[..10])?;
        times.push(t.elapsed());
        if buf[0] != attach::STDOUT || &buf[5..10] != format!("{i:04}\n").as_bytes() {
            return Err(format!("unexpected echo {:?}", &buf[..10]).into());
        }
    }
    times.sort();
    let pss: Vec<u64> = shim_pids(dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .filter_map(pss_kib)
        .collect();
    println!(
        "attach (container with stdin): shim PSS {} KiB; a line through the attach socket to \
         cat and back: p50 {:.3} ms, p99 {:.3} ms",
        pss.first().copied().unwrap_or(0),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 99 / 100])
    );
    Ok(())
}
