//! kubenode in a real VM (qemu, TCG, a Debian kernel): installed as an operator installs it and
//! started with the systemd unit's command line, and a pod with an `nfs` volume served
//! by nfs-ganesha on the host's loopback (this machine's kernel has no NFS client).
//! The guest's shell script reports steps on the serial console; the host judges them and checks
//! what reached the NFS export. Skipped, with the reason printed, only where qemu cannot run.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Context};
use kubenode_integration::vm::{
    self, Initramfs, Install, Kernel, KubenodeGuest, NfsServer, Vm, VmConfig,
};
use kubenode_integration::{privileged, run_tests, unique_tag, LeakGuard, Trial};

/// One VM at a time: the machine has 2 cores and TCG is CPU-bound.
static ONE_VM: Mutex<()> = Mutex::new(());
/// A guest that has not finished by then is killed.
const VM_TIMEOUT: Duration = Duration::from_secs(240);

fn main() {
    let trials = vec![
        privileged("vm_smoke_install_and_run_a_pod", || {
            let tag = unique_tag("vms");
            leak_checked(&[&tag], smoke(&tag))
        }),
        privileged("vm_kit_timeout_kills_qemu", || {
            let tag = unique_tag("vmt");
            leak_checked(&[&tag], timeout_kills_qemu(&tag))
        }),
        privileged("vm_nfs_volume_end_to_end", || {
            let (tag, nfs_tag) = (unique_tag("vmn"), unique_tag("nfs"));
            leak_checked(&[&tag, &nfs_tag], nfs_volume(&tag, &nfs_tag))
        }),
    ];
    let trials: Vec<Trial> = match vm::unavailable() {
        Some(why) => {
            eprintln!("note: VM tests skipped: {why}");
            trials
                .into_iter()
                .map(|t| t.with_ignored_flag(true))
                .collect()
        }
        None => trials,
    };
    run_tests(trials)
}

/// A token that differs between runs and tests (tag + clock).
fn token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{what}-{}-{nanos:x}", unique_tag("t"))
}

/// Shell functions shared by the guest scripts (import the test image, start the agent as the
/// unit does, wait for pods), then each test's script.
const AGENT_SH: &str = include_str!("vm/agent.sh");
const SMOKE_SH: &str = include_str!("vm/smoke.sh");
const NFS_SH: &str = include_str!("vm/nfs.sh");

/// A guest script: `NAME='value'` lines, the agent functions, then `body`.
fn script(vars: &[(&str, &str)], body: &str) -> String {
    let mut text: String = vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    text.push_str(AGENT_SH);
    text.push_str(body);
    text
}

/// The test's result, then (also after a failure) the check that qemu and ganesha are gone
/// (no process carries a tag) and so are the guest's and the export's directories.
fn leak_checked(tags: &[&str], result: anyhow::Result<()>) -> anyhow::Result<()> {
    let mut leaks = Vec::new();
    for tag in tags {
        if let Err(e) = LeakGuard::new(tag).check() {
            leaks.push(format!("{e:#}"));
        }
        let dir = std::path::PathBuf::from(format!("/tmp/kn-{tag}"));
        if dir.exists() {
            leaks.push(format!("{} is left", dir.display()));
        }
    }
    match (result, leaks.is_empty()) {
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => anyhow::bail!("{}", leaks.join("\n")),
        (Err(e), true) => Err(e),
        (Err(e), false) => Err(e.context(format!("and also: {}", leaks.join("\n")))),
    }
}

fn boot(guest: &KubenodeGuest, script: &str) -> anyhow::Result<vm::GuestRun> {
    guest.set_test_script(script)?;
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let run = guest.run(VM_TIMEOUT)?;
    eprintln!(
        "guest finished in {:.1} s (kubenode installed by {:?}):",
        run.elapsed.as_secs_f64(),
        guest.install
    );
    for line in run.console.lines().filter(|l| l.contains("KNVM:")) {
        eprintln!("  {}", line.trim_end());
    }
    Ok(run)
}

/// The kit's hard timeout: a guest that never finishes is killed, with the console in the error.
fn timeout_kills_qemu(tag: &str) -> anyhow::Result<()> {
    let kernel = Kernel::fetch()?;
    let fs = Initramfs::new(tag)?;
    kubenode_integration::busybox_rootfs(&fs.root())?;
    fs.write(
        "/init",
        "#!/bin/sh\nbusybox mount -t devtmpfs devtmpfs /dev\nexec >/dev/console 2>&1\n\
         echo 'KNVM:PASS boot'\nwhile :; do sleep 1; done\n",
        0o755,
    )?;
    let cfg = VmConfig {
        kernel: kernel.vmlinuz(),
        initrd: fs.pack()?,
        console_log: fs.scratch().join("console.log"),
        memory_mib: 256,
        cpus: 1,
        append: "quiet".into(),
        timeout: Duration::from_secs(30),
    };
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let mut vm = Vm::boot(&cfg)?;
    // A busy machine may take longer than the kit's timeout to boot the guest under TCG: wait
    // (bounded) for the guest's boot line first, so the console the error must carry has it
    // whatever the load. The kit's deadline still counts from boot: `wait` then kills qemu at
    // once if it has passed meanwhile.
    let booted_by = std::time::Instant::now() + VM_TIMEOUT;
    while !vm.console().contains("KNVM:PASS boot") {
        ensure!(
            std::time::Instant::now() < booted_by,
            "the guest did not boot within {VM_TIMEOUT:?}; console:\n{}",
            vm.console()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let err = match vm.wait() {
        Ok(m) => anyhow::bail!("a guest that never finishes finished: {m:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("did not finish within 30s"),
        "unexpected error: {err}"
    );
    ensure!(
        err.contains("KNVM:PASS boot"),
        "the error lacks the console: {err}"
    );
    let leftovers = LeakGuard::new(tag).leftovers();
    ensure!(
        leftovers.is_empty(),
        "qemu survives wait()'s timeout: {leftovers:?}"
    );
    Ok(())
}

/// kubenode installed into the guest's root with `deploy/install --root` and started
/// with the unit's command line runs a busybox httpd pod that is Running and answers on its IP.
fn smoke(tag: &str) -> anyhow::Result<()> {
    let kernel = Kernel::fetch()?;
    let guest = KubenodeGuest::build(tag, &kernel)?;
    if guest.install == Install::Minimal {
        eprintln!(
            "note: deploy/install is absent: kubenode was installed by the kit's minimal copy"
        );
    }
    let token = token("smoke");
    let script = script(&[("IMAGE", vm::IMAGE_REF), ("TOKEN", &token)], SMOKE_SH);
    let run = boot(&guest, &script)?;
    if guest.install == Install::DeployScript {
        run.expect_passed(&["agent-from-unit"])?;
    }
    run.expect_passed(&[
        "boot",
        "network",
        "installed",
        "image-import",
        "agent-start",
        "pod-running",
        "pod-answers",
        "pod-removed",
        "log-plain",
    ])
}

/// ganesha on the host's loopback exports a directory; in the guest, `mount -t nfs`
/// works, then a pod with an `nfs` volume reads the host's file and writes one the host finds.
fn nfs_volume(tag: &str, nfs_tag: &str) -> anyhow::Result<()> {
    let kernel = Kernel::fetch()?;
    let guest = KubenodeGuest::build(tag, &kernel)?;
    let read_token = token("host");
    let guest_token = token("guest");
    let pod_token = token("pod");
    let script = script(
        &[
            ("IMAGE", vm::IMAGE_REF),
            ("READ_TOKEN", &read_token),
            ("GUEST_TOKEN", &guest_token),
            ("POD_TOKEN", &pod_token),
        ],
        NFS_SH,
    );
    let nfs = NfsServer::start(nfs_tag)?;
    std::fs::write(nfs.export_dir().join("token"), format!("{read_token}\n"))?;
    let run = boot(&guest, &script).with_context(|| format!("ganesha log:\n{}", nfs.log()))?;
    let read = |f: &str| std::fs::read_to_string(nfs.export_dir().join(f)).unwrap_or_default();
    let result = run.expect_passed(&[
        "boot",
        "network",
        "nfs-mount",
        "image-import",
        "agent-start",
        "pod-running",
        "pod-read",
        "volume-mounted",
        "ro-running",
        "read-only",
        "failed-mount",
        "volume-unmounted",
    ]);
    ensure!(
        read("from-guest").trim() == guest_token,
        "the guest's write through mount -t nfs did not reach the export (from-guest: {:?})",
        read("from-guest")
    );
    result?;
    ensure!(
        !nfs.export_dir().join("ro-write").exists(),
        "the read-only pod's write reached the export"
    );
    ensure!(
        read("from-pod").trim() == pod_token,
        "the pod's write did not reach the host's export (from-pod: {:?})",
        read("from-pod")
    );
    Ok(())
}
