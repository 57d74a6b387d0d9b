//! Eviction over an emptyDir sizeLimit, agent restarts around set-up and teardown, a busy
//! teardown that must keep the volume's files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::{unique_tag, LeakGuard, TestDir};

use super::{
    all_running, mounts_below, phase, pod_yaml, remove_and_check, state, status, uid,
    waiting_reason, with_agent,
};

pub(crate) fn eviction() -> anyhow::Result<()> {
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
        // The usage check runs every 10 s (upstream's housekeeping): 40 s only bounds the wait.
        let p = agent.wait_pod(&name, Duration::from_secs(40), "Failed/Evicted", |p| {
            phase(p) == "Failed" && status(p).reason.as_deref() == Some("Evicted")
        })?;
        let message = "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ";
        ensure!(
            status(&p).message.as_deref() == Some(message),
            "message {:?}",
            status(&p).message
        );
        let gone = agent.wait_pod(&name, Duration::from_secs(20), "container killed", |p| {
            state(p, "c").terminated.is_some()
        })?;
        std::thread::sleep(Duration::from_secs(2));
        let later = agent.pod(&name)?.context("pod gone")?;
        ensure!(
            state(&later, "c").running.is_none(),
            "restarted after eviction"
        );
        let events = agent.events()?;
        ensure!(
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some("Evicted")
                    && e.message.as_deref() == Some(message)),
            "no Evicted event"
        );
        remove_and_check(agent, "hog.yaml", &name, &uid(&gone))
    })
}

pub(crate) fn restart() -> anyhow::Result<()> {
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
            waiting_reason(p, "c").is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
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

/// A pod removed while the agent was dead (its sandbox is an orphan at restart), and a pod
/// directory with a mounted volume but no sandbox at all (an agent killed mid-teardown): both
/// are unmounted and removed when the agent comes back.
pub(crate) fn teardown_after_death() -> anyhow::Result<()> {
    with_agent("vd", |agent| {
        let yaml = pod_yaml(
            "gone",
            &agent.image,
            r#"  volumes:
  - {name: mem, emptyDir: {medium: Memory}}
  - {name: disk, emptyDir: {}}
  containers:
  - name: c
    image: IMAGE
    command: ["sleep", "3600"]
    volumeMounts: [{name: mem, mountPath: /mem}, {name: disk, mountPath: /disk, subPath: sub}]
"#,
        );
        agent.write_manifest("gone.yaml", &yaml)?;
        let name = agent.pod_name("gone");
        let p = agent.wait_pod(&name, Duration::from_secs(60), "running", all_running)?;
        let pods = agent.dir.join("root/pods");
        let pod_dir = pods.join(uid(&p));
        ensure!(
            mounts_below(&pod_dir).len() == 2,
            "tmpfs + subPath bind: {:?}",
            mounts_below(&pod_dir)
        );
        agent.kill();
        agent.remove_manifest("gone.yaml")?;
        // A half torn-down pod: a directory with a mounted tmpfs and no sandbox.
        let stray = pods.join("0000-stray/volumes/kubernetes.io~empty-dir/x");
        std::fs::create_dir_all(&stray)?;
        kubenode_integration::run_ok(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                .arg(&stray),
            Duration::from_secs(10),
        )?;
        std::fs::write(stray.join("f"), "x")?;
        agent.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline && (pod_dir.exists() || pods.join("0000-stray").exists()) {
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            !pod_dir.exists(),
            "the orphan pod's directory is left: {:?}",
            mounts_below(&pod_dir)
        );
        ensure!(
            !pods.join("0000-stray").exists(),
            "the stray pod directory is left"
        );
        ensure!(
            mounts_below(&pods).is_empty(),
            "left mounted: {:?}",
            mounts_below(&pods)
        );
        Ok(())
    })
}

/// The volume manager with the real mounter: a busy tmpfs cannot be unmounted, so teardown
/// fails and must leave the volume and its files alone; once free, teardown completes.
pub(crate) fn busy_teardown() -> anyhow::Result<()> {
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
