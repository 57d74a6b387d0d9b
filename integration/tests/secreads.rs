//! Reads of files a container or an image controls, end to end through a real agent: the
//! image's `/etc/passwd` and `/etc/group` (symlinks out of the rootfs, a FIFO, a device), and
//! the termination message (a huge `/dev/termination-log`, `FallbackToLogsOnError`).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::pods::{all_running, phase, pod_yaml, state, terminated, with_agent};
use kubenode_integration::{
    build_busybox_image_with, derive_image, privileged, run_tests, unique_tag, TestAgent, TestDir,
};

fn main() {
    run_tests(vec![
        privileged(
            "image_passwd_and_group_symlinks_resolve_inside_the_rootfs",
            passwd_symlinks,
        ),
        privileged("image_passwd_fifo_fails_the_container_clearly", passwd_fifo),
        privileged(
            "image_passwd_to_dev_zero_fails_the_container_clearly",
            passwd_dev_zero,
        ),
        privileged(
            "huge_termination_log_is_read_from_its_last_4_kib_and_logs_fallback",
            termination_messages,
        ),
        privileged(
            "shim_on_a_full_disk_drops_log_lines_and_records_the_exit",
            shim_full_disk,
        ),
    ])
}

/// Builds a busybox image whose rootfs `edit` changed and whose config says `User: user`,
/// pushes it as `<name>:1` and answers its reference.
fn hostile_image(
    agent: &TestAgent,
    name: &str,
    user: Option<&str>,
    edit: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<(TestDir, String)> {
    let dir = TestDir::new(&unique_tag("ks"))?;
    let base = build_busybox_image_with(&dir.path().join("base"), edit)?;
    let layout = derive_image(&base, &dir.path().join("user"), |c| {
        if let Some(u) = user {
            c["config"]["User"] = u.into();
        }
    })?;
    let image = agent.push_layout(&layout, name, "1")?;
    Ok((dir, image))
}

fn waiting_message(p: &Pod, name: &str) -> String {
    (state(p, name).waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default()
}

/// `/etc/passwd -> /<host dir>/passwd` (absolute) and `/etc/group -> ../../../../<host
/// dir>/group` (climbing out with `..`) name files that exist both on the host (a decoy user
/// 4242 in group 4343) and inside the image (user 1234 in group 1235): the container must run
/// as the image's user, never the host's.
fn passwd_symlinks() -> anyhow::Result<()> {
    with_agent("ks", |agent| {
        let host = TestDir::new(&unique_tag("kh"))?;
        let host_dir = host.path().to_path_buf();
        std::fs::write(
            host_dir.join("passwd"),
            "root:x:0:0::/:/bin/sh\nsecreads:x:4242:4242::/:/bin/sh\n",
        )?;
        std::fs::write(host_dir.join("group"), "decoy:x:4343:secreads\n")?;
        let rel_host = host_dir.strip_prefix("/")?.to_path_buf();
        let (_img, image) = hostile_image(agent, "links", Some("secreads"), |root| {
            let inside = root.join(&rel_host);
            std::fs::create_dir_all(&inside)?;
            std::fs::write(
                inside.join("passwd"),
                "root:x:0:0::/:/bin/sh\nsecreads:x:1234:1234::/:/bin/sh\n",
            )?;
            std::fs::write(inside.join("group"), "mine:x:1235:secreads\n")?;
            std::fs::remove_file(root.join("etc/passwd"))?;
            std::fs::remove_file(root.join("etc/group"))?;
            symlink(host_dir.join("passwd"), root.join("etc/passwd"))?;
            let climb = "../".repeat(host_dir.components().count() + 4);
            symlink(
                format!("{climb}{}/group", rel_host.display()),
                root.join("etc/group"),
            )?;
            Ok(())
        })?;
        let body = "  restartPolicy: Never\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sh\", \"-c\", \"echo $(id -u) $(id -G) > /dev/termination-log\"]\n";
        agent.write_manifest("l.yaml", &pod_yaml("l", &image, body))?;
        let p = agent.wait_pod(
            &agent.pod_name("l"),
            Duration::from_secs(60),
            "terminated",
            |p| terminated(p, "c").is_some(),
        )?;
        let t = terminated(&p, "c");
        ensure!(
            t.and_then(|t| t.message.as_deref()) == Some("1234 1234 1235\n"),
            "the container ran as the host's user or groups: {t:?}"
        );
        Ok(())
    })
}

/// An image whose `/etc/passwd` is a FIFO: reading it would block the agent's thread forever.
/// The container fails to be created with an error naming the file, and a plain pod beside it
/// runs.
fn passwd_fifo() -> anyhow::Result<()> {
    with_agent("kf", |agent| {
        let (_dir, image) = hostile_image(agent, "fifo", None, |root| {
            std::fs::remove_file(root.join("etc/passwd"))?;
            let path =
                std::ffi::CString::new(root.join("etc/passwd").as_os_str().as_encoded_bytes())?;
            // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
            ensure!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) } == 0, "mkfifo");
            Ok(())
        })?;
        refused_beside_a_plain_pod(agent, &image, "/etc/passwd is a FIFO")
    })
}

/// An image whose `/etc/passwd -> /dev/zero`, with a `/dev/zero` device node in the image:
/// reading it never ends (on main this drove the agent's RSS to 10 GiB). The container fails
/// to be created with an error naming the device.
fn passwd_dev_zero() -> anyhow::Result<()> {
    with_agent("kz", |agent| {
        let (_dir, image) = hostile_image(agent, "zero", None, |root| {
            std::fs::remove_file(root.join("etc/passwd"))?;
            symlink("/dev/zero", root.join("etc/passwd"))?;
            let path =
                std::ffi::CString::new(root.join("dev/zero").as_os_str().as_encoded_bytes())?;
            // SAFETY: a valid NUL-terminated path; makedev(1, 5) is /dev/zero.
            let made =
                unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 5)) };
            ensure!(made == 0, "mknod /dev/zero");
            Ok(())
        })?;
        refused_beside_a_plain_pod(agent, &image, "/etc/passwd is a character device")?;
        if let Some(pid) = agent.pid() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            let peak = status
                .lines()
                .find(|l| l.starts_with("VmHWM"))
                .unwrap_or("?");
            eprintln!("agent after the /dev/zero image: {peak}");
        }
        Ok(())
    })
}

/// Pod `bad` of `image` waits with a create error containing `want`; pod `ok` of the plain
/// image runs.
fn refused_beside_a_plain_pod(agent: &TestAgent, image: &str, want: &str) -> anyhow::Result<()> {
    let body = "  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";
    agent.write_manifest("bad.yaml", &pod_yaml("bad", image, body))?;
    agent.write_manifest("ok.yaml", &pod_yaml("ok", &agent.image, body))?;
    let p = agent.wait_pod(
        &agent.pod_name("bad"),
        Duration::from_secs(60),
        "create error",
        |p| waiting_message(p, "c").contains("not a regular file"),
    )?;
    let message = waiting_message(&p, "c");
    ensure!(message.contains(want), "{message}");
    ensure!(phase(&p) == "Pending", "phase {}", phase(&p));
    agent.wait_pod(
        &agent.pod_name("ok"),
        Duration::from_secs(60),
        "Running",
        all_running,
    )?;
    Ok(())
}

/// A container that writes 400 MB to `/dev/termination-log` and then its real message: the
/// status shows exactly the last 4096 bytes. A failing container with
/// `FallbackToLogsOnError` and an empty file shows the last 80 lines of its log.
fn termination_messages() -> anyhow::Result<()> {
    with_agent("kt", |agent| {
        let big = "  restartPolicy: Never\n  containers:\n  - name: c\n    image: IMAGE\n    command: [\"sh\", \"-c\", \"head -c 400000000 /dev/zero > /dev/termination-log; i=0; while [ $i -lt 1024 ]; do printf 'tail' >> /dev/termination-log; i=$((i+1)); done; exit 3\"]\n";
        agent.write_manifest("big.yaml", &pod_yaml("big", &agent.image, big))?;
        let fallback = "  restartPolicy: Never\n  containers:\n  - name: c\n    image: IMAGE\n    terminationMessagePolicy: FallbackToLogsOnError\n    command: [\"sh\", \"-c\", \"i=0; while [ $i -lt 100 ]; do echo line $i; i=$((i+1)); done; exit 1\"]\n  - name: ok\n    image: IMAGE\n    terminationMessagePolicy: FallbackToLogsOnError\n    command: [\"sh\", \"-c\", \"echo fine; exit 0\"]\n";
        agent.write_manifest("fb.yaml", &pod_yaml("fb", &agent.image, fallback))?;
        let p = agent.wait_pod(
            &agent.pod_name("big"),
            Duration::from_secs(120),
            "Failed",
            |p| phase(p) == "Failed",
        )?;
        let message = (terminated(&p, "c").and_then(|t| t.message.as_deref()))
            .context("no termination message")?;
        ensure!(
            message.len() == 4096 && message == "tail".repeat(1024),
            "expected the last 4096 bytes ('tail' x 1024), got {} bytes starting {:?}",
            message.len(),
            &message[..message.len().min(32)]
        );
        let p = agent.wait_pod(
            &agent.pod_name("fb"),
            Duration::from_secs(60),
            "Failed",
            |p| phase(p) == "Failed",
        )?;
        let want: String = (20..100).map(|i| format!("line {i}\n")).collect();
        let t = terminated(&p, "c");
        ensure!(
            t.and_then(|t| t.message.as_deref()) == Some(want.as_str()),
            "fallback message: {t:?}"
        );
        let ok = terminated(&p, "ok");
        ensure!(
            ok.is_some_and(|ok| ok.exit_code == 0 && ok.message.is_none()),
            "a container that succeeded takes no message from its log: {ok:?}"
        );
        Ok(())
    })
}

/// The runtime's state and logs on a 4 MiB tmpfs that the test fills while a container
/// writes output: the shim drops the lines it cannot write (and counts them), keeps copying,
/// and once space is back records the container's exit code and its last lines.
fn shim_full_disk() -> anyhow::Result<()> {
    use kubenode_runtime::spec::PodInfo;
    use kubenode_runtime::{
        ContainerConfig, ContainerState, ImageRef, Runtime, RuntimeConfig, SandboxConfig,
    };
    let tag = unique_tag("kd");
    let guard = kubenode_integration::LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let layer = dir.path().join("layer0");
        kubenode_integration::busybox_rootfs(&layer)?;
        let small = dir.path().join("small");
        std::fs::create_dir_all(&small)?;
        kubenode_integration::run_ok(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
                .arg(&small),
            Duration::from_secs(10),
        )?;
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .status();
            }
        }
        let _unmount = Unmount(small.clone());
        let mut config = RuntimeConfig::new(
            small.join("root"),
            dir.path().join("run"),
            small.join("logs"),
        );
        config.runtime_path = std::path::PathBuf::from("/usr/sbin/runc");
        config.shim_binary = kubenode_integration::kubenode_bin();
        let rt = Runtime::new(config)?;
        let result = (|| -> anyhow::Result<()> {
            let sb = rt.create_sandbox(&SandboxConfig {
                pod: PodInfo {
                    namespace: "default".into(),
                    name: format!("full-{tag}"),
                    uid: format!("uid-{tag}"),
                    hostname: "full".into(),
                },
                cgroup_parent: format!("/kn-{tag}"),
            })?;
            rt.start_sandbox(&sb.id)?;
            let c = ContainerConfig {
                container: k8s_openapi::api::core::v1::Container {
                    name: "talker".into(),
                    // 400 lines over a few seconds, then goodbye and exit 7.
                    command: Some(vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); sleep 0.01; done; echo goodbye; exit 7".into(),
                    ]),
                    ..Default::default()
                },
                image: ImageRef {
                    name: "busybox:test".into(),
                    layers: vec![layer.clone()],
                    config: None,
                },
                ..Default::default()
            };
            let id = rt.create_container(&sb.id, &c)?;
            rt.start_container(&id)?;
            // Fill the tmpfs while it talks, keep it full for a while, then free it.
            let filler = small.join("filler");
            let _ = kubenode_integration::run(
                std::process::Command::new("dd")
                    .arg("if=/dev/zero")
                    .arg(format!("of={}", filler.display()))
                    .arg("bs=64k"),
                Duration::from_secs(30),
            );
            std::thread::sleep(Duration::from_millis(1500));
            std::fs::remove_file(&filler)?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let st = loop {
                let st = rt.container_status(&id)?;
                if st.state == ContainerState::Exited {
                    break st;
                }
                ensure!(
                    std::time::Instant::now() < deadline,
                    "talker still {:?}",
                    st.state
                );
                std::thread::sleep(Duration::from_millis(100));
            };
            ensure!(st.exit_code == Some(7), "exit code lost: {st:?}");
            let log = std::fs::read_to_string(&st.log_path)?;
            ensure!(
                log.lines()
                    .last()
                    .is_some_and(|l| l.ends_with(" stdout F goodbye")),
                "the last line is missing: {:?}",
                log.lines().last()
            );
            for l in log.lines() {
                ensure!(
                    l.split(' ').count() >= 4 && l.contains(" stdout F line ")
                        || l.ends_with(" goodbye"),
                    "a torn line: {l:?}"
                );
            }
            let record = kubenode_runtime::shim::ExitRecord::read(
                &small.join("root/containers").join(&id).join("exit"),
            )
            .context("no exit record")?;
            ensure!(
                record.exit_code == 7 && record.log_lines_dropped > 0,
                "exit record: {record:?}"
            );
            eprintln!(
                "lines dropped while the disk was full: {}",
                record.log_lines_dropped
            );
            rt.stop_and_remove_sandbox(&sb.id)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rt.recover();
            for sb in rt.list_sandboxes() {
                let _ = rt.stop_and_remove_sandbox(&sb.id);
            }
        }
        result?;
    }
    guard.runc_root(format!("/tmp/kn-{tag}/run/runc")).check()
}
