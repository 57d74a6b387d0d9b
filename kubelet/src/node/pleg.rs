//! The pod lifecycle event generator (upstream's generic PLEG): one relist of every sandbox and
//! container each second, waking the worker of each pod whose sandbox or containers changed
//! (a container exited, a pause container died, an instance appeared or went). Pod workers
//! then need no 1 s resync of their own: a quiet pod costs one status read per relist.
//!
//! Exits do not wait for the period: an inotify watch on the shims' exit records
//! ([`super::exits`]) relists as soon as one is renamed into place, so the exited container's
//! worker records its status and decides on a restart at once (upstream gets the same from
//! CRI container events with its evented PLEG). The periodic relist stays as the safety net for
//! what the watch cannot see or loses. The watch is made before each relist that follows its
//! absence (the first one after an agent start included), so an exit is either before the
//! relist, which sees it, or after the watch began, which reports it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use futures::FutureExt;
use kubenode_runtime::{ContainerState, ContainerStatus, Sandbox, SandboxState};

use super::exits::{ExitWatch, Seen};
use super::Kubelet;

/// Upstream's relist period.
const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// At most this many exit reports already queued are folded into one early relist.
const COALESCE: usize = 256;

/// What a relist sees of one pod: its sandboxes' states and its containers' states and exit
/// codes, in a fixed order.
type PodView = Vec<(String, State)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Sandbox(SandboxState),
    Container(ContainerState, Option<i32>),
}

/// Groups a relist by pod UID.
fn views(sandboxes: &[Sandbox], containers: &[ContainerStatus]) -> BTreeMap<String, PodView> {
    let mut out: BTreeMap<String, PodView> = BTreeMap::new();
    let mut owner = BTreeMap::new();
    for s in sandboxes {
        owner.insert(s.id.as_str(), s.pod.uid.as_str());
        out.entry(s.pod.uid.clone())
            .or_default()
            .push((s.id.clone(), State::Sandbox(s.state)));
    }
    for c in containers {
        if let Some(uid) = owner.get(c.sandbox_id.as_str()) {
            out.entry(uid.to_string())
                .or_default()
                .push((c.id.clone(), State::Container(c.state, c.exit_code)));
        }
    }
    for view in out.values_mut() {
        view.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// The UIDs of pods whose view differs between two relists (appeared, changed or gone).
fn changed(old: &BTreeMap<String, PodView>, new: &BTreeMap<String, PodView>) -> Vec<String> {
    let mut out: Vec<String> = new
        .iter()
        .filter(|(uid, view)| old.get(*uid) != Some(view))
        .map(|(uid, _)| uid.clone())
        .collect();
    out.extend(old.keys().filter(|uid| !new.contains_key(*uid)).cloned());
    out
}

/// The outcome of one relist.
enum Listed {
    Views(BTreeMap<String, PodView>),
    /// The runtime call failed; the next period tries again.
    Failed,
    /// The kubelet is gone: stop.
    Gone,
}

/// Relists every [`RELIST_PERIOD`] and at once after an exit, until the kubelet is dropped.
pub(super) async fn run(kubelet: Weak<Kubelet>) {
    let Some(runtime) = kubelet.upgrade().map(|k| k.deps.runtime.clone()) else {
        return;
    };
    let Ok(dirs) = runtime.try_run(|rt| rt.exit_record_dirs()).await else {
        return;
    };
    drop(runtime);
    let relist = || {
        let kubelet = kubelet.clone();
        async move {
            let Some(runtime) = kubelet.upgrade().map(|k| k.deps.runtime.clone()) else {
                return Listed::Gone;
            };
            let began = std::time::Instant::now();
            match runtime
                .try_run(move |rt| {
                    let (sandboxes, containers) = (rt.list_sandboxes(), rt.list_containers(None));
                    count_running(began.elapsed(), &sandboxes, &containers);
                    views(&sandboxes, &containers)
                })
                .await
            {
                Ok(now) => Listed::Views(now),
                Err(_) => Listed::Failed,
            }
        }
    };
    relist_loop(RELIST_PERIOD, dirs.to_vec(), relist, |uid| {
        Kubelet::wake_weak(&kubelet, uid)
    })
    .await;
}

/// Upstream's PLEG metrics of one relist: its duration, the pods with a ready sandbox, the
/// containers in each state.
fn count_running(
    took: std::time::Duration,
    sandboxes: &[kubenode_runtime::Sandbox],
    containers: &[kubenode_runtime::ContainerStatus],
) {
    use kubenode_runtime::ContainerState as S;
    let ready = sandboxes
        .iter()
        .filter(|s| s.state == kubenode_runtime::SandboxState::Ready)
        .count();
    let mut by_state = [
        ("created", 0),
        ("running", 0),
        ("exited", 0),
        ("unknown", 0),
    ];
    for c in containers {
        let i = match c.state {
            S::Created => 0,
            S::Running => 1,
            S::Exited => 2,
            S::Unknown => 3,
        };
        by_state[i].1 += 1;
    }
    crate::metrics::metrics().relisted(took, ready, &by_state);
}

/// Makes the exit watch, logging why when it cannot (once until it works again).
fn watch_exits(dirs: &[PathBuf], warned: &mut bool) -> Option<ExitWatch> {
    match ExitWatch::new(dirs, kubenode_runtime::EXIT_RECORD) {
        Ok(w) => {
            *warned = false;
            Some(w)
        }
        Err(e) => {
            if !*warned {
                tracing::warn!(error = %e, "cannot watch exit records; exits are seen at the next relist");
                *warned = true;
            }
            None
        }
    }
}

/// The PLEG's loop: relist, wake the pods that changed, wait for the period or an exit.
async fn relist_loop<R, F>(period: Duration, dirs: Vec<PathBuf>, mut relist: R, wake: impl Fn(&str))
where
    R: FnMut() -> F,
    F: Future<Output = Listed>,
{
    let mut last = BTreeMap::new();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the first relist follows the first watch.
    ticker.tick().await;
    let mut warned = false;
    let mut watch: Option<ExitWatch> = None;
    loop {
        if watch.is_none() {
            watch = watch_exits(&dirs, &mut warned);
        }
        match relist().await {
            Listed::Gone => return,
            Listed::Failed => {}
            Listed::Views(now) => {
                for uid in changed(&last, &now) {
                    wake(&uid);
                }
                last = now;
            }
        }
        let Some(w) = watch.as_mut() else {
            ticker.tick().await;
            continue;
        };
        let seen = tokio::select! {
            _ = ticker.tick() => continue,
            seen = w.next() => seen,
        };
        match seen {
            // The watch broke: the relist below (after a new watch) covers the gap.
            None => watch = None,
            Some(Seen::Lost) => tracing::debug!("exit record events lost; relisting"),
            Some(Seen::Exit(dir)) => tracing::trace!(dir = %dir.display(), "exit recorded"),
        }
        // Exits reported together are one relist.
        for _ in 0..COALESCE {
            let Some(w) = watch.as_mut() else { break };
            match w.next().now_or_never() {
                Some(Some(_)) => {}
                Some(None) => watch = None,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubenode_runtime::spec::PodInfo;

    fn sandbox(id: &str, uid: &str, state: SandboxState) -> Sandbox {
        Sandbox {
            id: id.into(),
            pod: PodInfo {
                uid: uid.into(),
                ..Default::default()
            },
            netns_path: Default::default(),
            host_network: false,
            state,
            created_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    fn container(
        id: &str,
        sandbox: &str,
        state: ContainerState,
        code: Option<i32>,
    ) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            sandbox_id: sandbox.into(),
            name: "c".into(),
            restart_count: 0,
            image: "i".into(),
            state,
            pid: None,
            exit_code: code,
            reason: None,
            message: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            log_path: Default::default(),
        }
    }

    /// A relist of a fake runtime: one pod `u1` with container `c1` in `containers/c1`, exited
    /// once its exit record is there.
    fn fake_relist(root: &std::path::Path, count: &std::sync::atomic::AtomicUsize) -> Listed {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let exited = root.join("containers/c1/exit").exists();
        let (state, code) = if exited {
            (ContainerState::Exited, Some(3))
        } else {
            (ContainerState::Running, None)
        };
        Listed::Views(views(
            &[sandbox("s1", "u1", SandboxState::Ready)],
            &[container("c1", "s1", state, code)],
        ))
    }

    /// The PLEG with a one-hour period over a temporary runtime root; returns the woken UIDs'
    /// receiver and the relist count.
    fn start(
        root: &std::path::Path,
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<String>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let dirs = vec![root.join("sandboxes"), root.join("containers")];
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(root.join("containers/c1")).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, c) = (root.to_path_buf(), count.clone());
        let task = tokio::spawn(relist_loop(
            Duration::from_secs(3600),
            dirs,
            move || {
                let listed = fake_relist(&r, &c);
                async move { listed }
            },
            move |uid| tx.send(uid.to_string()).unwrap(),
        ));
        (rx, count, task)
    }

    /// The next woken UID (the guard against a hang is no measurement: without the exit
    /// watch, the next relist would come after an hour).
    async fn woken(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn an_exit_record_relists_at_once_without_waiting_for_the_period() {
        let root = tempfile::tempdir().unwrap();
        let (mut rx, count, task) = start(root.path());
        // The first relist: the pod appeared.
        assert_eq!(woken(&mut rx).await.as_deref(), Some("u1"));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The shim records the exit: the pod is woken by a relist the record caused.
        kubenode_fsutil::write_atomic(&root.path().join("containers/c1/exit"), b"{}").unwrap();
        assert_eq!(woken(&mut rx).await.as_deref(), Some("u1"));
        assert!(count.load(std::sync::atomic::Ordering::SeqCst) >= 2);
        task.abort();
    }

    #[tokio::test]
    async fn an_exit_while_the_agent_was_down_is_seen_by_the_first_relist() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("containers/c1")).unwrap();
        kubenode_fsutil::write_atomic(&root.path().join("containers/c1/exit"), b"{}").unwrap();
        let (mut rx, count, task) = start(root.path());
        assert_eq!(woken(&mut rx).await.as_deref(), Some("u1"));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        task.abort();
    }

    #[test]
    fn only_pods_that_changed_are_woken() {
        let sandboxes = [
            sandbox("s1", "u1", SandboxState::Ready),
            sandbox("s2", "u2", SandboxState::Ready),
            sandbox("s3", "u3", SandboxState::Ready),
        ];
        let before = views(
            &sandboxes,
            &[
                container("a", "s1", ContainerState::Running, None),
                container("b", "s2", ContainerState::Running, None),
                container("c", "s3", ContainerState::Running, None),
            ],
        );
        assert_eq!(changed(&BTreeMap::new(), &before), ["u1", "u2", "u3"]);
        assert!(changed(&before, &before).is_empty());
        // u1's container exited, u2's pause died, u3 unchanged, u4 is new.
        let mut later = sandboxes.to_vec();
        later[1].state = SandboxState::NotReady;
        later.push(sandbox("s4", "u4", SandboxState::NotReady));
        let after = views(
            &later,
            &[
                container("a", "s1", ContainerState::Exited, Some(1)),
                container("b", "s2", ContainerState::Running, None),
                container("c", "s3", ContainerState::Running, None),
            ],
        );
        assert_eq!(changed(&before, &after), ["u1", "u2", "u4"]);
        // A restart: a new instance next to the exited one; a pod gone entirely.
        let restarted = views(
            &sandboxes[..1],
            &[
                container("a", "s1", ContainerState::Exited, Some(1)),
                container("a2", "s1", ContainerState::Running, None),
            ],
        );
        assert_eq!(changed(&after, &restarted), ["u1", "u2", "u3", "u4"]);
    }
}
