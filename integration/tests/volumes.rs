//! Pod volumes end to end: emptyDir (disk and tmpfs), every hostPath type, readOnly, subPath
//! (with symlink escapes), emptyDir sizeLimit eviction, an agent SIGKILLed between volume set-up
//! and container start, and the mount-safe removal of a pod directory. Through the binary
//! (`TestAgent`) except the last, which drives the volume manager with the real mounter.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::agent::in_node;
use kubenode_integration::{privileged, run_tests, unique_tag, LeakGuard, TestAgent, TestDir};
use serde_json::Value;

fn main() {
    run_tests(vec![
        privileged(
            "emptydir_writer_and_readonly_httpd",
            emptydir_course_example,
        ),
        privileged("emptydir_memory_is_a_sized_tmpfs", tmpfs_with_size),
        privileged("hostpath_every_type_and_failures", host_path_types),
        privileged("readonly_and_subpath_with_symlink_escapes", subpaths),
        privileged("emptydir_size_limit_evicts_the_pod", eviction),
        privileged("agent_killed_after_volume_setup_no_double_mount", restart),
        privileged("busy_volume_survives_a_failed_teardown", busy_teardown),
    ])
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn container<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn all_running(p: &Value) -> bool {
    phase(p) == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|c| c["state"]["running"].is_object()))
}

fn pod_yaml(name: &str, image: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n{}",
        body.replace("IMAGE", image)
    )
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Mount points (from this process's mountinfo) at or below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4).map(|t| (t.to_string(), l)))
        .filter(|(t, _)| t.starts_with(&dir))
        .map(|(_, l)| l.to_string())
        .collect()
}

fn exec(agent: &TestAgent, pod: &str, c: &str, script: &str) -> anyhow::Result<(i32, String)> {
    let out = agent.kubenode(&["exec", pod, "-c", c, "--", "sh", "-c", script])?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Runs `f` with a fresh agent; afterwards nothing may be mounted below the agent's
/// directory and nothing tagged may survive.
fn with_agent(
    prefix: &str,
    f: impl FnOnce(&mut TestAgent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tag = unique_tag(prefix);
    let guard = LeakGuard::new(&tag);
    let result = {
        let mut agent = TestAgent::start(&tag)?;
        let r = f(&mut agent);
        if r.is_err() || std::env::var_os("KUBENODE_TEST_SHOW_LOG").is_some() {
            eprintln!(
                "--- agent log ({tag}) ---\n{}",
                kubenode_integration::agent::tail(&agent.log(), 80)
            );
        }
        r
    };
    result?;
    guard.check()
}

/// Removes the manifest, waits for the pod to go, and checks its volumes are unmounted and
/// its directory gone.
fn remove_and_check(agent: &TestAgent, file: &str, name: &str, uid: &str) -> anyhow::Result<()> {
    agent.remove_manifest(file)?;
    agent.wait_gone(name, Duration::from_secs(45))?;
    let pod_dir = agent.dir.join("root/pods").join(uid);
    let left = mounts_below(&pod_dir);
    ensure!(
        left.is_empty(),
        "still mounted after the pod went: {left:?}"
    );
    ensure!(!pod_dir.exists(), "{} left behind", pod_dir.display());
    Ok(())
}

fn emptydir_course_example() -> anyhow::Result<()> {
    with_agent("ve", |agent| {
        let yaml = pod_yaml(
            "fortune",
            &agent.image,
            r#"  volumes:
  - name: html
    emptyDir: {}
  containers:
  - name: html-generator
    image: IMAGE
    command: ["sh", "-c", "while true; do echo \"fortune $(date +%s%N)\" > /var/htdocs/index.html; sleep 1; done"]
    volumeMounts: [{name: html, mountPath: /var/htdocs}]
  - name: web-server
    image: IMAGE
    command: ["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"]
    volumeMounts: [{name: html, mountPath: /usr/share/nginx/html, readOnly: true}]
"#,
        );
        agent.write_manifest("fortune.yaml", &yaml)?;
        let name = agent.pod_name("fortune");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let ip = pod["status"]["podIP"]
            .as_str()
            .context("podIP")?
            .to_string();
        let vol = agent
            .dir
            .join("root/pods")
            .join(uid(&pod))
            .join("volumes/kubernetes.io~empty-dir/html");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&vol)?.permissions());
        ensure!(mode & 0o7777 == 0o777, "emptyDir mode {:o}", mode & 0o7777);
        let fetch = || -> anyhow::Result<String> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match in_node(
                    agent,
                    &[
                        "busybox",
                        "wget",
                        "-q",
                        "-O-",
                        &format!("http://{ip}:80/index.html"),
                    ],
                ) {
                    Ok(body) if body.starts_with("fortune ") => return Ok(body),
                    _ if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200))
                    }
                    other => bail!("fetching index.html: {other:?}"),
                }
            }
        };
        let first = fetch()?;
        std::thread::sleep(Duration::from_millis(2200));
        let second = fetch()?;
        ensure!(first != second, "the served text did not change: {first:?}");
        let (code, out) = exec(
            agent,
            &name,
            "web-server",
            "echo hacked > /usr/share/nginx/html/index.html",
        )?;
        ensure!(
            code != 0,
            "a write through the readOnly mount succeeded: {out}"
        );
        ensure!(
            out.contains("Read-only file system"),
            "unexpected error: {out}"
        );
        let (code, out) = exec(
            agent,
            &name,
            "html-generator",
            "echo ok > /var/htdocs/probe && cat /var/htdocs/probe",
        )?;
        ensure!(code == 0 && out.trim() == "ok", "writer side: {code} {out}");
        remove_and_check(agent, "fortune.yaml", &name, &uid(&pod))
    })
}

fn tmpfs_with_size() -> anyhow::Result<()> {
    with_agent("vt", |agent| {
        let yaml = pod_yaml(
            "mem",
            &agent.image,
            r#"  volumes:
  - name: small
    emptyDir: {medium: Memory, sizeLimit: 16Mi}
  - name: bounded
    emptyDir: {medium: Memory}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    resources: {limits: {memory: 48Mi}}
    volumeMounts: [{name: small, mountPath: /small}, {name: bounded, mountPath: /bounded}]
"#,
        );
        agent.write_manifest("mem.yaml", &yaml)?;
        let name = agent.pod_name("mem");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "grep -E ' /(small|bounded) ' /proc/mounts; df -k /small /bounded",
        )?;
        ensure!(code == 0, "{out}");
        ensure!(
            out.contains("tmpfs /small tmpfs") && out.contains("size=16384k"),
            "small: {out}"
        );
        ensure!(
            out.contains("tmpfs /bounded tmpfs") && out.contains("size=49152k"),
            "bounded by the pod limit: {out}"
        );
        let df_small = out
            .lines()
            .find(|l| l.ends_with("/small"))
            .context("df /small")?;
        ensure!(
            df_small.split_whitespace().nth(1) == Some("16384"),
            "df: {df_small}"
        );
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "dd if=/dev/zero of=/small/fill bs=1M count=20",
        )?;
        ensure!(
            code != 0 && out.contains("No space left"),
            "wrote past the tmpfs size: {out}"
        );
        let pod_dir = agent.dir.join("root/pods").join(uid(&pod));
        let host = mounts_below(&pod_dir);
        ensure!(
            host.len() == 2 && host.iter().all(|l| l.contains(" - tmpfs ")),
            "host mounts {host:?}"
        );
        remove_and_check(agent, "mem.yaml", &name, &uid(&pod))
    })
}

fn host_path_types() -> anyhow::Result<()> {
    with_agent("vh", |agent| {
        let base = agent.dir.join("host");
        std::fs::create_dir_all(base.join("dir"))?;
        std::fs::write(base.join("file"), "host file\n")?;
        let _sock = std::os::unix::net::UnixListener::bind(base.join("sock"))?;
        kubenode_integration::sh(&format!("mknod {} b 7 250", base.join("blk").display()))?;
        let b = base.display().to_string();
        let good = pod_yaml(
            "hp",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: none, hostPath: {{path: {b}/dir}}}}
  - {{name: doc, hostPath: {{path: {b}/made/by/kubenode, type: DirectoryOrCreate}}}}
  - {{name: dir, hostPath: {{path: {b}/dir, type: Directory}}}}
  - {{name: foc, hostPath: {{path: {b}/dir/created, type: FileOrCreate}}}}
  - {{name: file, hostPath: {{path: {b}/file, type: File}}}}
  - {{name: sock, hostPath: {{path: {b}/sock, type: Socket}}}}
  - {{name: chr, hostPath: {{path: /dev/null, type: CharDevice}}}}
  - {{name: blk, hostPath: {{path: {b}/blk, type: BlockDevice}}}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: none, mountPath: /v/none}}
    - {{name: doc, mountPath: /v/doc}}
    - {{name: dir, mountPath: /v/dir}}
    - {{name: foc, mountPath: /v/foc}}
    - {{name: file, mountPath: /v/file}}
    - {{name: sock, mountPath: /v/sock}}
    - {{name: chr, mountPath: /v/chr}}
    - {{name: blk, mountPath: /v/blk}}
"#
            ),
        );
        // Every check fails: wrong kinds and a missing directory.
        let bad = pod_yaml(
            "hpbad",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: dir, hostPath: {{path: {b}/file, type: Directory}}}}
  - {{name: missing, hostPath: {{path: {b}/later, type: Directory}}}}
  - {{name: file, hostPath: {{path: {b}/dir, type: File}}}}
  - {{name: sock, hostPath: {{path: {b}/file, type: Socket}}}}
  - {{name: chr, hostPath: {{path: {b}/file, type: CharDevice}}}}
  - {{name: blk, hostPath: {{path: /dev/null, type: BlockDevice}}}}
  - {{name: foc, hostPath: {{path: {b}/no/parent/f, type: FileOrCreate}}}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts: [{{name: missing, mountPath: /later}}]
"#
            ),
        );
        agent.write_manifest("hp.yaml", &good)?;
        agent.write_manifest("hpbad.yaml", &bad)?;
        let name = agent.pod_name("hp");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "test -d /v/none && test -d /v/doc && test -d /v/dir && test -f /v/foc && \
             cat /v/file && test -S /v/sock && test -c /v/chr && test -b /v/blk && echo all-ok",
        )?;
        ensure!(
            code == 0 && out.contains("host file") && out.contains("all-ok"),
            "{out}"
        );
        let mode = |p: PathBuf| -> anyhow::Result<u32> {
            Ok(
                std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p)?.permissions())
                    & 0o777,
            )
        };
        ensure!(
            mode(base.join("made/by/kubenode"))? == 0o755,
            "DirectoryOrCreate mode"
        );
        ensure!(
            mode(base.join("dir/created"))? == 0o644,
            "FileOrCreate mode"
        );

        let bad_name = agent.pod_name("hpbad");
        let waiting = agent.wait_pod(
            &bad_name,
            Duration::from_secs(30),
            "CreateContainerConfigError",
            |p| container(p, "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError",
        )?;
        let message = container(&waiting, "c")["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ensure!(
            message.contains("volume \"missing\""),
            "waiting message does not name the volume: {message}"
        );
        ensure!(phase(&waiting) == "Pending", "phase {}", phase(&waiting));
        let want = [
            ("dir", format!("{b}/file is not a directory")),
            ("missing", format!("{b}/later is not a directory")),
            ("file", format!("{b}/dir is not a file")),
            ("sock", format!("{b}/file is not a socket file")),
            ("chr", format!("{b}/file is not a character device")),
            ("blk", "/dev/null is not a block device".to_string()),
            ("foc", format!("{b}/no/parent/f")),
        ];
        let events = agent.events()?;
        for (vol, text) in &want {
            let prefix = format!("MountVolume.SetUp failed for volume \"{vol}\" : ");
            ensure!(
                events.iter().any(|e| e["reason"] == "FailedMount"
                    && e["type"] == "Warning"
                    && e["involvedObject"]["name"] == bad_name.as_str()
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(&prefix) && m.contains(text.as_str()))),
                "no FailedMount event for {vol} ({text}); events: {events:#?}"
            );
        }
        // The good pod is unaffected; the bad one is retried and starts once its volumes check
        // out (here: fix them all by pointing the remaining failures away).
        ensure!(
            all_running(&agent.pod(&name)?.context("hp gone")?),
            "hp disturbed"
        );
        std::fs::create_dir(base.join("later"))?;
        let fixed = bad
            .replace(
                &format!("{b}/file, type: Directory"),
                &format!("{b}/dir, type: Directory"),
            )
            .replace(
                &format!("{b}/dir, type: File}}"),
                &format!("{b}/file, type: File}}"),
            )
            .replace(
                &format!("{b}/file, type: Socket"),
                &format!("{b}/sock, type: Socket"),
            )
            .replace(
                &format!("{b}/file, type: CharDevice"),
                "/dev/null, type: CharDevice",
            )
            .replace(
                "/dev/null, type: BlockDevice",
                &format!("{b}/blk, type: BlockDevice"),
            )
            .replace(&format!("{b}/no/parent/f"), &format!("{b}/dir/f2"));
        ensure!(fixed != bad);
        // Same manifest (same UID) first: only "missing" was fixed, so it must still wait.
        std::thread::sleep(Duration::from_secs(3));
        let still = agent.pod(&bad_name)?.context("hpbad gone")?;
        ensure!(!all_running(&still), "started with failing volumes");
        agent.write_manifest("hpbad.yaml", &fixed)?;
        let fixed_pod = agent.wait_pod(
            &bad_name,
            Duration::from_secs(60),
            "running after the fix",
            all_running,
        )?;
        let ok_uid = uid(&pod);
        remove_and_check(agent, "hp.yaml", &name, &ok_uid)?;
        remove_and_check(agent, "hpbad.yaml", &bad_name, &uid(&fixed_pod))?;
        ensure!(
            base.join("file").exists() && base.join("dir/created").exists(),
            "host files removed with the pod"
        );
        Ok(())
    })
}

fn subpaths() -> anyhow::Result<()> {
    with_agent("vs", |agent| {
        let base = agent.dir.join("host");
        std::fs::create_dir_all(base.join("conf"))?;
        std::fs::write(base.join("conf/app.ini"), "key=value\n")?;
        std::fs::write(base.join("ro-file"), "read only\n")?;
        let secret = agent.dir.join("outside-secret");
        std::fs::write(&secret, "host secret\n")?;
        std::os::unix::fs::symlink(agent.dir.path(), base.join("conf/escape"))?;
        let b = base.display().to_string();
        let good = pod_yaml(
            "sub",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: data, emptyDir: {{}}}}
  - {{name: conf, hostPath: {{path: {b}, type: Directory}}}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: data, mountPath: /work, subPath: made/on/demand}}
    - {{name: conf, mountPath: /etc/app.ini, subPath: conf/app.ini}}
    - {{name: conf, mountPath: /ro, readOnly: true}}
"#
            ),
        );
        agent.write_manifest("sub.yaml", &good)?;
        let name = agent.pod_name("sub");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let (code, out) = exec(
            agent,
            &name,
            "c",
            "cat /etc/app.ini && echo written > /work/f && cat /ro/ro-file",
        )?;
        ensure!(
            code == 0 && out.contains("key=value") && out.contains("read only"),
            "{out}"
        );
        let data = agent
            .dir
            .join("root/pods")
            .join(uid(&pod))
            .join("volumes/kubernetes.io~empty-dir/data");
        ensure!(
            std::fs::read_to_string(data.join("made/on/demand/f"))? == "written\n",
            "the subPath write did not land in the volume's subdirectory"
        );
        let (code, out) = exec(agent, &name, "c", "echo x > /ro/new")?;
        ensure!(
            code != 0 && out.contains("Read-only file system"),
            "readOnly hostPath writable: {out}"
        );
        ensure!(!base.join("new").exists());
        let binds = mounts_below(
            &agent
                .dir
                .join("root/pods")
                .join(uid(&pod))
                .join("volume-subpaths"),
        );
        ensure!(binds.len() == 2, "subPath binds {binds:?}");

        // A symlink planted on the host side, and one planted by an init container at run time
        // (the CVE-2017-1002101 shape): both refused, the app container never starts.
        let evil = pod_yaml(
            "evil",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - {{name: conf, hostPath: {{path: {b}, type: Directory}}}}
  initContainers:
  - name: plant
    image: IMAGE
    command: ["sh", "-c", "ln -s / /shared/root"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "cat /stolen/outside-secret; sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /stolen, subPath: root{}}}]
  - name: d
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts: [{{name: conf, mountPath: /stolen, subPath: conf/escape}}]
"#,
                agent.dir.path().display()
            ),
        );
        agent.write_manifest("evil.yaml", &evil)?;
        let evil_name = agent.pod_name("evil");
        let refused = |p: &Value, c: &str| {
            let w = &container(p, c)["state"]["waiting"];
            w["reason"] == "CreateContainerConfigError"
                && w["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("failed to prepare subPath for volumeMount"))
        };
        let p = agent.wait_pod(
            &evil_name,
            Duration::from_secs(60),
            "both subPaths refused",
            |p| refused(p, "c") && refused(p, "d"),
        )?;
        ensure!(container(&p, "c")["state"]["running"].is_null());
        let events = agent.events()?;
        ensure!(
            events.iter().any(|e| e["reason"] == "Failed"
                && e["message"].as_str().is_some_and(|m| m.contains(
                    "failed to prepare subPath for volumeMount \"conf\" of container \"d\""
                ))),
            "no Failed event for the refused subPath"
        );
        ensure!(
            !agent.log().contains("host secret"),
            "the secret leaked into the agent log"
        );
        remove_and_check(agent, "sub.yaml", &name, &uid(&pod))?;
        let evil_uid = uid(&p);
        remove_and_check(agent, "evil.yaml", &evil_name, &evil_uid)?;
        ensure!(
            secret.exists() && base.join("conf/app.ini").exists(),
            "host files removed"
        );
        Ok(())
    })
}

fn eviction() -> anyhow::Result<()> {
    with_agent("vx", |agent| {
        let yaml = pod_yaml(
            "hog",
            &agent.image,
            r#"  restartPolicy: Always
  volumes:
  - name: scratch
    emptyDir: {sizeLimit: 1Mi}
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "dd if=/dev/zero of=/scratch/big bs=1M count=4; sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
"#,
        );
        agent.write_manifest("hog.yaml", &yaml)?;
        let name = agent.pod_name("hog");
        let started = Instant::now();
        let p = agent.wait_pod(&name, Duration::from_secs(40), "Failed/Evicted", |p| {
            phase(p) == "Failed" && p["status"]["reason"] == "Evicted"
        })?;
        let message = "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ";
        ensure!(
            p["status"]["message"] == message,
            "message {}",
            p["status"]["message"]
        );
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "eviction took {:?}",
            started.elapsed()
        );
        let gone = agent.wait_pod(&name, Duration::from_secs(20), "container killed", |p| {
            container(p, "c")["state"]["terminated"].is_object()
        })?;
        std::thread::sleep(Duration::from_secs(2));
        let later = agent.pod(&name)?.context("pod gone")?;
        ensure!(
            container(&later, "c")["state"]["running"].is_null(),
            "restarted after eviction"
        );
        let events = agent.events()?;
        ensure!(
            events
                .iter()
                .any(|e| e["reason"] == "Evicted" && e["message"] == message),
            "no Evicted event"
        );
        remove_and_check(agent, "hog.yaml", &name, &uid(&gone))
    })
}

fn restart() -> anyhow::Result<()> {
    with_agent("vr", |agent| {
        // The image tag does not exist yet: volumes are set up, the container cannot start.
        let image = agent.image.replace(":latest", ":later");
        let yaml = pod_yaml(
            "rs",
            &image,
            r#"  volumes:
  - name: mem
    emptyDir: {medium: Memory, sizeLimit: 8Mi}
  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "cat /mem/before; sleep 3600"]
    volumeMounts: [{name: mem, mountPath: /mem}]
"#,
        );
        agent.write_manifest("rs.yaml", &yaml)?;
        let name = agent.pod_name("rs");
        let p = agent.wait_pod(&name, Duration::from_secs(40), "pull failing", |p| {
            container(p, "c")["state"]["waiting"]["reason"]
                .as_str()
                .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        })?;
        let vol = agent
            .dir
            .join("root/pods")
            .join(uid(&p))
            .join("volumes/kubernetes.io~empty-dir/mem");
        let count = || mounts_below(&vol).len();
        ensure!(
            count() == 1,
            "tmpfs mounts before the kill: {:?}",
            mounts_below(&vol)
        );
        std::fs::write(vol.join("before"), "written before the kill\n")?;
        agent.kill();
        agent.spawn()?;
        agent.push_tag("later")?;
        let p = agent.wait_pod(
            &name,
            Duration::from_secs(90),
            "running after the restart",
            all_running,
        )?;
        ensure!(count() == 1, "mounted twice: {:?}", mounts_below(&vol));
        let logs = agent.kubenode_ok(&["logs", &name, "-c", "c"])?;
        ensure!(
            logs.contains("written before the kill"),
            "the tmpfs was replaced: {logs:?}"
        );
        remove_and_check(agent, "rs.yaml", &name, &uid(&p))
    })
}

/// The volume manager with the real mounter: a busy tmpfs cannot be unmounted, so teardown
/// fails and must leave the volume and its files alone; once free, teardown completes.
fn busy_teardown() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod, PodSpec, Volume};
    use kubenode_kubelet::volume::{SystemMounter, VolumeManager};

    let tag = unique_tag("vb");
    let guard = LeakGuard::new(&tag);
    {
        let dir = TestDir::new(&tag)?;
        let vm = VolumeManager::new(&dir.join("pods"), Arc::new(SystemMounter::new(None)));
        let mut pod = Pod::default();
        pod.metadata.uid = Some(format!("{tag}-uid"));
        pod.spec = Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "mem".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        vm.set_up_pod(&pod).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let vol = vm
            .pod_dir(&format!("{tag}-uid"))
            .join("volumes/kubernetes.io~empty-dir/mem");
        std::fs::write(vol.join("precious"), "keep me")?;
        let mut busy = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&vol)
            .spawn()?;
        let result = vm.tear_down_pod(&format!("{tag}-uid"));
        let still = std::fs::read_to_string(vol.join("precious"));
        let _ = busy.kill();
        let _ = busy.wait();
        let errors = match result {
            Ok(()) => bail!("teardown of a busy volume reported success"),
            Err(e) => e,
        };
        ensure!(
            still.as_deref().ok() == Some("keep me"),
            "the volume's file is gone: {still:?}"
        );
        ensure!(
            errors
                .iter()
                .any(|e| e.to_string().contains("still mounted")),
            "{errors:?}"
        );
        ensure!(
            mounts_below(&vol).len() == 1,
            "the volume was not kept mounted"
        );
        vm.tear_down_pod(&format!("{tag}-uid"))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(mounts_below(dir.path()).is_empty(), "left mounted");
        ensure!(
            !vm.pod_dir(&format!("{tag}-uid")).exists(),
            "pod directory left"
        );
    }
    guard.check()
}
