//! emptyDir (the course example, tmpfs with a size), every hostPath type, readOnly, subPath.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use k8s_openapi::api::core::v1::Pod;
use kubenode_integration::agent::in_node;

use super::{
    all_running, exec, mounts_below, phase, pod_yaml, remove_and_check, state, status, uid,
    waiting_message, waiting_reason, with_agent,
};

pub(crate) fn emptydir_course_example() -> anyhow::Result<()> {
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
        let ip = status(&pod).pod_ip.clone().context("podIP")?;
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
        // The generator rewrites the file every second: poll (bounded) until the served text
        // changes, rather than sleeping and racing it on a busy machine.
        let first = fetch()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let second = fetch()?;
            if second != first {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the served text did not change in 30 s: {first:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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

pub(crate) fn tmpfs_with_size() -> anyhow::Result<()> {
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

pub(crate) fn host_path_types() -> anyhow::Result<()> {
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
        let retry = pod_yaml(
            "hpretry",
            &agent.image,
            &format!(
                r#"  volumes:
  - {{name: later, hostPath: {{path: {b}/retry, type: Directory}}}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts: [{{name: later, mountPath: /later}}]
"#
            ),
        );
        agent.write_manifest("hpretry.yaml", &retry)?;
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
        // As upstream: the pod's sync stops at its volumes, no container is created, the
        // container shows ContainerCreating (no message; the FailedMount events say why).
        let waiting = agent.wait_pod(
            &bad_name,
            Duration::from_secs(30),
            "ContainerCreating",
            |p| waiting_reason(p, "c") == Some("ContainerCreating"),
        )?;
        ensure!(
            waiting_message(&waiting, "c").is_none(),
            "ContainerCreating with a message: {:?}",
            waiting_message(&waiting, "c")
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
                events
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("FailedMount")
                        && e.type_.as_deref() == Some("Warning")
                        && e.involved_object.name.as_deref() == Some(bad_name.as_str())
                        && e.message
                            .as_deref()
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
        // Retried with the same pod (same UID): it starts once the directory exists.
        let retry_name = agent.pod_name("hpretry");
        let waiting_retry = agent.wait_pod(
            &retry_name,
            Duration::from_secs(30),
            "waiting for its volume",
            // The pod waits for its volume as upstream's: its container `ContainerCreating`.
            |p| waiting_reason(p, "c") == Some("ContainerCreating"),
        )?;
        std::fs::create_dir(base.join("retry"))?;
        let retried = agent.wait_pod(
            &retry_name,
            Duration::from_secs(30),
            "running once the directory exists",
            all_running,
        )?;
        ensure!(
            uid(&retried) == uid(&waiting_retry),
            "a new pod, not a retry"
        );
        remove_and_check(agent, "hpretry.yaml", &retry_name, &uid(&retried))?;
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

pub(crate) fn subpaths() -> anyhow::Result<()> {
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
        let refused = |p: &Pod, c: &str| {
            waiting_reason(p, c) == Some("CreateContainerConfigError")
                && waiting_message(p, c)
                    .is_some_and(|m| m.starts_with("failed to prepare subPath for volumeMount"))
        };
        let p = agent.wait_pod(
            &evil_name,
            Duration::from_secs(60),
            "both subPaths refused",
            |p| refused(p, "c") && refused(p, "d"),
        )?;
        ensure!(state(&p, "c").running.is_none());
        let events = agent.events()?;
        ensure!(
            events.iter().any(|e| e.reason.as_deref() == Some("Failed")
                && e.message.as_deref().is_some_and(|m| m.contains(
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
