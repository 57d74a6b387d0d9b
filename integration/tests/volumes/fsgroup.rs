//! `securityContext.fsGroup` on volume ownership: an emptyDir (disk and tmpfs) is given to the
//! group with the setgid bit, so a non-root container creates files of that group there; a
//! hostPath is left as it is (upstream's hostPath does not manage ownership); and a volume
//! found set up after an agent restart is not walked again (upstream's `ready` marker).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};

use super::{all_running, exec, pod_yaml, remove_and_check, uid, waiting_reason, with_agent};

/// Mode bits (with setuid/setgid/sticky), owner and group of `path` on the host.
fn owner(path: &Path) -> anyhow::Result<(u32, u32, u32)> {
    let m = std::fs::symlink_metadata(path).with_context(|| path.display().to_string())?;
    Ok((m.mode() & 0o7777, m.uid(), m.gid()))
}

/// runAsUser 1000 with fsGroup 2000: the disk emptyDir root is 2777 and the tmpfs root 3777,
/// both of group 2000; what the container creates there (files and directories) is of group
/// 2000, a new directory setgid too; the container has 2000 among its groups; the hostPath
/// keeps root's group and mode, and the non-root container cannot write to it.
pub(crate) fn emptydir_given_to_fs_group() -> anyhow::Result<()> {
    with_agent("vg", |agent| {
        let host = agent.dir.join("host-data");
        let yaml = pod_yaml(
            "fsg",
            &agent.image,
            &format!(
                r#"  securityContext: {{runAsUser: 1000, fsGroup: 2000}}
  volumes:
  - {{name: disk, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 4Mi}}}}
  - {{name: host, hostPath: {{path: {}, type: DirectoryOrCreate}}}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts: [{{name: disk, mountPath: /disk}}, {{name: mem, mountPath: /mem}}, {{name: host, mountPath: /host}}]
"#,
                host.display()
            ),
        );
        agent.write_manifest("fsg.yaml", &yaml)?;
        let name = agent.pod_name("fsg");
        let pod = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let vols = agent
            .dir
            .join("root/pods")
            .join(uid(&pod))
            .join("volumes/kubernetes.io~empty-dir");
        let (disk, mem) = (vols.join("disk"), vols.join("mem"));
        ensure!(
            owner(&disk)? == (0o2777, 0, 2000),
            "disk emptyDir root: {:o} {:?}",
            owner(&disk)?.0,
            owner(&disk)?
        );
        ensure!(
            owner(&mem)? == (0o3777, 0, 2000),
            "tmpfs emptyDir root: {:o} {:?}",
            owner(&mem)?.0,
            owner(&mem)?
        );
        let host_before = owner(&host)?;
        ensure!(
            host_before == (0o755, 0, 0),
            "hostPath: {:o} {host_before:?}",
            host_before.0
        );

        let (code, out) = exec(
            agent,
            &name,
            "c",
            "id -u; id -G; touch /disk/f /mem/f && mkdir /disk/d && echo created",
        )?;
        ensure!(code == 0 && out.contains("created"), "{out}");
        let mut lines = out.lines();
        ensure!(lines.next() == Some("1000"), "uid: {out}");
        ensure!(
            lines
                .next()
                .is_some_and(|g| g.split_whitespace().any(|g| g == "2000")),
            "fsGroup not among the groups: {out}"
        );
        for f in [disk.join("f"), mem.join("f")] {
            let (_, u, g) = owner(&f)?;
            ensure!((u, g) == (1000, 2000), "{}: {u}:{g}", f.display());
        }
        let d = owner(&disk.join("d"))?;
        ensure!(
            d.0 & 0o2000 != 0 && d.1 == 1000 && d.2 == 2000,
            "/disk/d: {:o} {d:?}",
            d.0
        );

        let (code, out) = exec(agent, &name, "c", "touch /host/f")?;
        ensure!(
            code != 0,
            "the non-root container wrote to the hostPath: {out}"
        );
        ensure!(
            owner(&host)? == host_before,
            "the hostPath's ownership changed: {:?}",
            owner(&host)?
        );
        remove_and_check(agent, "fsg.yaml", &name, &uid(&pod))
    })
}

/// A disk emptyDir of a pod with fsGroup, set up before an agent kill (its container cannot
/// start: the image tag does not exist yet), holds a 0600 root-owned file written since; the
/// next agent finds the volume set up, starts the container once the tag exists, and has not
/// walked the volume again: the file keeps its mode and group, as upstream's emptyDir keeps
/// them across kubelet restarts.
pub(crate) fn fs_group_not_reapplied_after_restart() -> anyhow::Result<()> {
    with_agent("vh", |agent| {
        let image = agent.image.replace(":latest", ":later");
        let yaml = pod_yaml(
            "fsr",
            &image,
            r#"  securityContext: {runAsUser: 1000, fsGroup: 2000}
  volumes:
  - {name: disk, emptyDir: {}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts: [{name: disk, mountPath: /disk}]
"#,
        );
        agent.write_manifest("fsr.yaml", &yaml)?;
        let name = agent.pod_name("fsr");
        let p = agent.wait_pod(&name, Duration::from_secs(40), "pull failing", |p| {
            waiting_reason(p, "c").is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        })?;
        let disk = agent
            .dir
            .join("root/pods")
            .join(uid(&p))
            .join("volumes/kubernetes.io~empty-dir/disk");
        ensure!(
            owner(&disk)? == (0o2777, 0, 2000),
            "before the kill: {:?}",
            owner(&disk)?
        );
        let private = disk.join("private");
        std::fs::write(&private, "root's\n")?;
        std::fs::set_permissions(
            &private,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        std::os::unix::fs::chown(&private, Some(0), Some(0))?;
        agent.kill();
        agent.spawn()?;
        agent.push_tag("later")?;
        let p = agent.wait_pod(
            &name,
            Duration::from_secs(90),
            "running after the restart",
            all_running,
        )?;
        ensure!(
            owner(&private)? == (0o600, 0, 0),
            "the volume was walked again after the restart: {:?}",
            owner(&private)?
        );
        let (code, out) = exec(agent, &name, "c", "cat /disk/private")?;
        ensure!(code != 0, "uid 1000 read a 0600 root file: {out}");
        let (code, out) = exec(agent, &name, "c", "touch /disk/new && echo ok")?;
        ensure!(code == 0 && out.contains("ok"), "{out}");
        ensure!(
            owner(&disk.join("new"))?.2 == 2000,
            "new file: {:?}",
            owner(&disk.join("new"))?
        );
        remove_and_check(agent, "fsr.yaml", &name, &uid(&p))
    })
}
