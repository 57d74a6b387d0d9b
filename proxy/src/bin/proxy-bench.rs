//! Sync-time benchmark: kubenode's layout against kube-proxy's (as
//! kube-proxy's iptables mode writes it), S Services × 2 endpoints, the first
//! 2,700 with a NodePort, each case in a fresh network namespace (`unshare -n`), so the host's
//! tables are never touched and everything vanishes with the process.
//!
//! Usage: `proxy-bench [--sizes 1000,5000[,10000]] [--kube-proxy-sizes 1000,5000] [--mode nft|legacy]`
//! (root). kube-proxy's layout at 10k takes minutes on iptables-nft; it only runs for the sizes in
//! `--kube-proxy-sizes` (default: the same as `--sizes`, without 10000).
//!
//! `proxy-bench --file-source [--services 10000] [--runs 20] [--kubenode PATH]` measures the
//! whole path instead: a manifest directory with one Service+Endpoints file per Service, the real
//! `kubenode proxy` (file source + proxy; default: the `kubenode` next to this binary) in a private
//! network namespace with a backend server, then (1) cold start: process start until a request
//! through the last Service's ClusterIP is answered, and (2) one changed file renamed into place
//! (its Service moved to a new ClusterIP) until a request through the new ClusterIP is answered,
//! `--runs` times (p50, p99). SIGINT/SIGTERM stop the run and remove what it made.
//!
//! `proxy-bench --desired-cost [--services 10000] [--runs 20]` measures the proxy's own work for
//! one changed Service (its ClusterIP moved), without iptables: `Proxy::apply_changes` plus the
//! ruleset computation, and the whole sync against the in-memory firewall (p50, p99; no root).

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kubenode_proxy::conntrack::RecordingConntrack;
use kubenode_proxy::iptables::IptablesFirewall;
use kubenode_proxy::rules::names::hash16;
use kubenode_proxy::{Proxy, ProxyConfig};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "proxy-bench/file_source.rs"]
mod file_source;

const NODEPORTS: usize = 2700;
const CASE_TIMEOUT: Duration = Duration::from_secs(1800);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mode = opt("--mode").unwrap_or_else(|| "nft".into());
    catch_signals();
    if args.iter().any(|a| a == "--file-source") {
        file_source::main(&opt, &mode);
        return;
    }
    if args.iter().any(|a| a == "--desired-cost") {
        desired_cost(&opt);
        return;
    }
    if let Some(kind) = opt("--inner") {
        let s: usize = opt("--size").and_then(|v| v.parse().ok()).expect("--size");
        let res = match kind.as_str() {
            "kubenode" => kubenode(s, &mode),
            _ => kube_proxy(s, &mode),
        };
        println!(
            "RESULT {}",
            res.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        return;
    }
    let parse = |v: String| {
        v.split(',')
            .filter_map(|x| x.parse::<usize>().ok())
            .collect::<Vec<_>>()
    };
    let sizes = opt("--sizes")
        .map(parse)
        .unwrap_or_else(|| vec![1000, 5000]);
    let kp_sizes = opt("--kube-proxy-sizes")
        .map(parse)
        .unwrap_or_else(|| sizes.iter().copied().filter(|s| *s < 10000).collect());
    println!(
        "# iptables-{mode}, S services x 2 endpoints, first {NODEPORTS} with a NodePort; seconds"
    );
    for s in sizes {
        let kn = case("kubenode", s, &mode);
        println!(
            "kubenode   S={s:<6} full_initial={} full_resync={} change={} (restore {}, {} chains, {} bytes) rules={} chains={}",
            kn["full_initial"], kn["full_resync"], kn["change"], kn["change_restore"], kn["change_chains"], kn["change_bytes"], kn["rules"], kn["chains"]
        );
        if kp_sizes.contains(&s) {
            let kp = case("kube-proxy", s, &mode);
            println!(
                "kube-proxy S={s:<6} full_initial={} full_resync={} change={} rules={} chains={}",
                kp["full_initial"], kp["full_resync"], kp["change"], kp["rules"], kp["chains"]
            );
            let ratio = |k: &str| {
                kp[k].parse::<f64>().unwrap_or(0.0) / kn[k].parse::<f64>().unwrap_or(f64::MAX)
            };
            println!(
                "ratio      S={s:<6} full_initial x{:.1}  full_resync x{:.1}  change x{:.1}  (kube-proxy / kubenode)",
                ratio("full_initial"),
                ratio("full_resync"),
                ratio("change")
            );
        }
    }
}

/// Set by SIGINT/SIGTERM: stop, clean up, exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether a signal asked us to stop.
fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// A command whose process gets SIGKILL when this one dies (also through `unshare`, which execs
/// and keeps the setting), so nothing of a run outlives it.
fn command_dying_with_us(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Stops `child` (SIGTERM, then SIGKILL after a second) and reaps it.
fn stop_child(child: &mut std::process::Child) {
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs one case in a fresh network namespace and parses its `RESULT` line.
fn case(kind: &str, s: usize, mode: &str) -> BTreeMap<String, String> {
    let exe = std::env::current_exe().expect("own path");
    let mut child = command_dying_with_us("unshare")
        .arg("-n")
        .arg(exe)
        .args(["--inner", kind, "--size", &s.to_string(), "--mode", mode])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running unshare -n (are you root?)");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("waiting").is_some() {
            break;
        }
        if stopping() {
            stop_child(&mut child);
            eprintln!("interrupted; the namespace went away with its process");
            std::process::exit(130);
        }
        if start.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            panic!("{kind} S={s} did not finish within {CASE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("{kind} S={s} failed: {text}"));
    line[7..]
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

fn ep_ip(i: usize, j: usize) -> String {
    let n = i * 2 + j;
    format!("10.{}.{}.{}", (n / 65536) % 256, (n / 256) % 256, n % 256)
}

fn objects(s: usize, changed: Option<usize>) -> (Vec<Service>, Vec<Endpoints>) {
    let mut svcs = Vec::new();
    let mut eps = Vec::new();
    for i in 0..s {
        let (ns, name) = (format!("ns{}", i / 250), format!("svc{i}"));
        let mut port = serde_json::json!({"name": "http", "port": 80, "targetPort": 8080});
        let mut spec = serde_json::json!({"clusterIP": format!("172.30.{}.{}", i / 256, i % 256), "ports": []});
        if i < NODEPORTS {
            port["nodePort"] = (30000 + i).into();
            spec["type"] = "NodePort".into();
        }
        spec["ports"] = serde_json::json!([port]);
        svcs.push(obj(
            serde_json::json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}),
        ));
        let mut addrs = [ep_ip(i, 0), ep_ip(i, 1)];
        if changed == Some(i) {
            addrs[1] = "10.200.0.1".into();
        }
        let addrs: Vec<_> = addrs.iter().map(|a| serde_json::json!({"ip": a})).collect();
        eps.push(obj(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "subsets": [{"addresses": addrs, "ports": [{"name": "http", "port": 8080}]}]
        })));
    }
    (svcs, eps)
}

fn kubenode(s: usize, mode: &str) -> Vec<(&'static str, String)> {
    let fw = Arc::new(IptablesFirewall::new(mode).expect("iptables"));
    let mut cfg = ProxyConfig::new("bench", "172.30.0.0/16".parse().expect("cidr"));
    cfg.rules.cluster_cidr = Some("10.0.0.0/8".parse().expect("cidr"));
    let mut p = Proxy::new(cfg, fw, Arc::new(RecordingConntrack::default())).expect("proxy");
    let (svcs, eps) = objects(s, None);
    p.update_services(svcs);
    p.update_endpoints(eps);
    let t = Instant::now();
    let rs = p.desired();
    let generate = t.elapsed();
    if let Ok(path) = std::env::var("KN_BENCH_DUMP") {
        std::fs::write(path, rs.to_restore_text()).expect("dump");
    }
    let t = Instant::now();
    let r1 = p.sync().expect("initial full sync");
    let full_initial = t.elapsed();
    p.force_full_sync();
    let t = Instant::now();
    p.sync().expect("full resync");
    let full_resync = t.elapsed();
    // Five one-service changes (an endpoint replaced); the median is reported.
    let mut runs = Vec::new();
    for k in 0..5 {
        let (_, eps2) = objects(s, Some(s / 2 + k * 7));
        p.update_endpoints(eps2);
        let t = Instant::now();
        let r = p.sync().expect("partial sync");
        runs.push((t.elapsed(), r));
    }
    runs.sort_by_key(|(d, _)| *d);
    let (change, r3) = runs.swap_remove(2);
    assert!(
        !r3.full && r3.chains_written <= 5,
        "one change rewrote {} chains",
        r3.chains_written
    );
    vec![
        ("full_initial", secs(full_initial)),
        ("full_resync", secs(full_resync)),
        ("change", secs(change)),
        ("change_restore", secs(r3.duration)),
        ("generate", secs(generate)),
        ("change_bytes", r3.bytes.to_string()),
        ("change_chains", r3.chains_written.to_string()),
        ("rules", r1.rules_total.values().sum::<usize>().to_string()),
        (
            "chains",
            r1.chains_total.values().sum::<usize>().to_string(),
        ),
    ]
}

/// `--desired-cost`: the proxy's CPU work per one-Service change, no kernel involved.
fn desired_cost(opt: &dyn Fn(&str) -> Option<String>) {
    let s: usize = opt("--services")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(20);
    let fw = Arc::new(kubenode_proxy::iptables::MemoryFirewall::default());
    let mut cfg = ProxyConfig::new("bench", "172.30.0.0/16".parse().expect("cidr"));
    cfg.rules.cluster_cidr = Some("10.0.0.0/8".parse().expect("cidr"));
    let mut p = Proxy::new(cfg, fw, Arc::new(RecordingConntrack::default())).expect("proxy");
    let (svcs, eps) = objects(s, None);
    let t = Instant::now();
    p.update_services(svcs.clone());
    p.update_endpoints(eps);
    p.sync().expect("initial sync");
    let initial = t.elapsed();
    let (mut desired, mut whole) = (Vec::new(), Vec::new());
    for r in 0..runs {
        for whole_sync in [false, true] {
            let i = (s / 2 + r * 7 + usize::from(whole_sync) * 3) % s;
            let mut svc = svcs[i].clone();
            if let Some(spec) = svc.spec.as_mut() {
                spec.cluster_ip = Some(format!(
                    "172.30.{}.{}",
                    250 + usize::from(whole_sync),
                    r % 250 + 1
                ));
                spec.cluster_ips = None;
            }
            let changes = kubenode_proxy::Changes {
                services: vec![svc],
                ..Default::default()
            };
            let t = Instant::now();
            p.apply_changes(changes);
            if whole_sync {
                p.sync().expect("sync");
                whole.push(t.elapsed());
            } else {
                std::hint::black_box(p.desired());
                desired.push(t.elapsed());
                p.sync().expect("sync");
            }
        }
    }
    let ms = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        format!("{:.2}", v[i].as_secs_f64() * 1000.0)
    };
    println!("# in-process, memory firewall, S={s} Services x 2 endpoints, {runs} runs; ms");
    println!(
        "initial update + full sync: {:.1}",
        initial.as_secs_f64() * 1000.0
    );
    println!(
        "one Service moved: apply_changes + desired p50 {} p99 {}; apply_changes + whole sync p50 {} p99 {}",
        ms(&mut desired, 0.5),
        ms(&mut desired, 0.99),
        ms(&mut whole, 0.5),
        ms(&mut whole, 0.99)
    );
}

/// kube-proxy's iptables-mode layout; `only` limits per-service chains (partial).
fn kube_proxy_text(
    s: usize,
    only: Option<usize>,
    changed: Option<usize>,
) -> (String, usize, usize) {
    let h = hash16;
    let mut fchains = vec![
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-EXTERNAL-SERVICES - [0:0]",
        ":KUBE-FORWARD - [0:0]",
        ":KUBE-NODEPORTS - [0:0]",
        ":KUBE-PROXY-FIREWALL - [0:0]",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    let frules = [
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT",
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ];
    let mut nchains: Vec<String> = [
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-NODEPORTS - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut nrules: Vec<String> = vec![
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".into(),
    ];
    let mut svcrules = Vec::new();
    for i in 0..s {
        let name = format!("ns{}/svc{i}:http", i / 250);
        let cip = format!("172.30.{}.{}", i / 256, i % 256);
        let svc = format!("KUBE-SVC-{}", h(&format!("{name}tcp")));
        let ext = format!("KUBE-EXT-{}", h(&format!("{name}tcp")));
        let nodeport = if i < NODEPORTS { 30000 + i } else { 0 };
        nrules.push(format!("-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {cip} --dport 80 -j {svc}"));
        if nodeport != 0 {
            nrules.push(format!("-A KUBE-NODEPORTS -m comment --comment {name} -m tcp -p tcp --dport {nodeport} -j {ext}"));
        }
        if only.is_some_and(|o| o != i) {
            continue;
        }
        nchains.push(format!(":{svc} - [0:0]"));
        svcrules.push(format!("-A {svc} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {cip} --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"));
        if nodeport != 0 {
            nchains.push(format!(":{ext} - [0:0]"));
            svcrules.push(format!("-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"));
            svcrules.push(format!("-A {ext} -j {svc}"));
        }
        for j in 0..2 {
            let ip = if changed == Some(i) && j == 1 {
                "10.200.0.1".to_string()
            } else {
                ep_ip(i, j)
            };
            let ep = format!("{ip}:8080");
            let sep = format!("KUBE-SEP-{}", h(&format!("{name}tcp{ep}")));
            nchains.push(format!(":{sep} - [0:0]"));
            let prob = if j == 0 {
                format!(" -m statistic --mode random --probability {:.10}", 0.5)
            } else {
                String::new()
            };
            svcrules.push(format!(
                "-A {svc} -m comment --comment \"{name} -> {ep}\"{prob} -j {sep}"
            ));
            svcrules.push(format!(
                "-A {sep} -m comment --comment {name} -s {ip} -j KUBE-MARK-MASQ"
            ));
            svcrules.push(format!(
                "-A {sep} -m comment --comment {name} -m tcp -p tcp -j DNAT --to-destination {ep}"
            ));
        }
    }
    if let Some(i) = changed {
        // The endpoint that went away: its chain is deleted in the same transaction.
        let name = format!("ns{}/svc{i}:http", i / 250);
        let sep = format!("KUBE-SEP-{}", h(&format!("{name}tcp{}:8080", ep_ip(i, 1))));
        nchains.push(format!(":{sep} - [0:0]"));
        svcrules.push(format!("-X {sep}"));
    }
    nrules.extend(svcrules);
    nrules.push("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS".into());
    let rules = frules.len() + nrules.len();
    let chains = fchains.len() + nchains.len();
    fchains.insert(0, "*filter".into());
    let mut out = fchains;
    out.extend(frules.iter().map(|s| s.to_string()));
    out.push("COMMIT".into());
    out.push("*nat".into());
    out.extend(nchains);
    out.extend(nrules);
    out.push("COMMIT".into());
    out.push(String::new());
    (out.join("\n"), rules, chains)
}

fn restore(mode: &str, text: &str) -> Duration {
    let t = Instant::now();
    let mut child = Command::new(format!("iptables-{mode}-restore"))
        .args(["-w", "5", "-W", "100000", "--noflush", "--counters"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing restore input");
    let st = child.wait().expect("iptables-restore");
    assert!(st.success(), "iptables-restore failed");
    t.elapsed()
}

fn kube_proxy(s: usize, mode: &str) -> Vec<(&'static str, String)> {
    let (full, rules, chains) = kube_proxy_text(s, None, None);
    let full_initial = restore(mode, &full);
    let full_resync = restore(mode, &full);
    let (part, _, _) = kube_proxy_text(s, Some(s / 2), Some(s / 2));
    let change = restore(mode, &part);
    vec![
        ("full_initial", secs(full_initial)),
        ("full_resync", secs(full_resync)),
        ("change", secs(change)),
        ("rules", rules.to_string()),
        ("chains", chains.to_string()),
    ]
}
