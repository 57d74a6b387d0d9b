//! The running kubelet: static pods from the manifest directory become pod workers that drive
//! the runtime and CNI, and their status is served through the node API.
//!
//! One [`Kubelet`] per agent. [`Kubelet::run`] consumes source snapshots: a new pod UID gets a
//! worker task (see `worker`), a vanished UID has its worker terminate the pod. Each worker
//! reconciles its pod (sandbox, init containers, app containers, restarts with back-off) and
//! publishes the pod's status into the pod table (`table`) that the API and the proxy read. The
//! workers share one set of dependencies (`worker::WorkerDeps`, built from [`KubeletDeps`]);
//! the kubelet itself only admits pods and starts and stops workers. On start, the runtime's
//! view is recovered from disk and running pods are adopted, not restarted.

mod actions;
pub(crate) mod capacity;
pub mod container_gc;
pub(crate) mod downward;
pub mod env;
mod envvars;
mod exits;
mod files;
pub(crate) mod hooks;
pub(crate) mod hostports;
mod observe;
mod pleg;
pub(crate) mod predicates;
mod probing;
mod runtime;
mod start_gate;
mod table;
mod worker;

pub use actions::{compute_pod_actions, PodActions};
pub use envvars::service_env;
pub use files::{hostname, hosts_file, resolv_conf};

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Endpoints, Event, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubenode_cni::CniClient;
use kubenode_runtime::image::{ImageStore, PullOptions};
use kubenode_runtime::Runtime;
use tokio::sync::watch;
use worker::{PodWorker, WorkerDeps};

use crate::api::{
    pick_container, ApiError, BoxFuture, ContainerRef, ExecRequest, ExecResponse, NodeView,
};
use crate::backoff::{Clock, CrashBackoff, ImageBackoff};
use crate::config::Config;
use crate::events::{ObjectRef, Recorder};
use crate::security::userns::{self, SystemUserns};
use crate::security::{apparmor, SystemAppArmor};
use crate::selector::NodeFacts;
use crate::source::Snapshot;
use crate::validation::sysctl::{SysctlAllowlist, SYSCTL_FORBIDDEN};
use crate::volume::{SystemMounter, VolumeManager};
use runtime::AsyncRuntime;
use table::{PodEntry, PodTable};

/// Enters pod `uid` in the table and starts its worker on `pod`.
fn start_worker(
    deps: &Arc<WorkerDeps>,
    pods: &mut BTreeMap<String, PodEntry>,
    uid: String,
    pod: Arc<Pod>,
) {
    let (tx, rx) = watch::channel(Some(pod.clone()));
    deps.pods.enqueue_start(&pod, &uid);
    pods.insert(
        uid.clone(),
        PodEntry {
            pod,
            sandbox_id: None,
            worker: Some(tx),
            restart_requested: false,
        },
    );
    tokio::spawn(PodWorker::new(deps.clone(), uid).run(rx));
}

/// What [`Kubelet::collect_orphans`] removes: recovered sandboxes no admitted pod owns, and
/// every pod directory but these.
struct Orphans {
    sandboxes: Vec<kubenode_runtime::Sandbox>,
    keep_dirs: Vec<String>,
}

/// What the kubelet needs from the rest of the node.
#[derive(Debug)]
pub struct KubeletDeps {
    /// The container runtime (already recovered).
    pub runtime: Arc<Runtime>,
    /// The image store.
    pub images: Arc<ImageStore>,
    /// The CNI client (pods with `hostNetwork: true` do not use it).
    pub cni: Arc<CniClient>,
    /// Image pull settings.
    pub pull: PullOptions,
    /// The clock for back-off and events.
    pub clock: Arc<dyn Clock>,
    /// The ConfigMaps, Secrets and tokens pods reference.
    pub objects: Arc<crate::objects::Objects>,
}

/// Services and Endpoints from the manifest directory plus the node's pods: what the proxy
/// consumes.
#[derive(Debug, Clone, Default)]
pub struct ProxyInput {
    /// Services.
    pub services: Vec<Service>,
    /// Manually written Endpoints (selector-less Services).
    pub endpoints: Vec<Endpoints>,
    /// The node's pods with their status (shared with the kubelet's pod table).
    pub pods: Vec<Arc<Pod>>,
}

/// The workspace's poisoned-lock policy: recover the data, log it.
pub(crate) use kubenode_fsutil::lock;

/// The kubelet of one node: admission and the pod workers' lifecycle over the dependencies
/// they share.
pub struct Kubelet {
    deps: Arc<WorkerDeps>,
    /// Resource usage of the node, its pods and containers (`/stats/summary`).
    stats: crate::stats::Collector,
    /// Node-pressure eviction: the conditions, admission under pressure, evictions.
    eviction: Arc<crate::eviction::Manager>,
    /// The image records of the eviction manager's disk reclaim (upstream's
    /// `DeleteUnusedImages` honours the image GC's minimum age).
    reclaim_images: tokio::sync::Mutex<crate::image_gc::ImageGcManager>,
    /// Held by a container garbage collection pass (the periodic one, or the eviction
    /// manager's reclaim), so that two never remove the same things at once.
    container_gc: tokio::sync::Mutex<()>,
    /// Every source delivered its pods and they went through admission.
    sources_ready: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("node", &self.deps.config.node_name)
            .finish_non_exhaustive()
    }
}

impl Kubelet {
    /// A kubelet over `deps`, configured by `config`.
    pub fn new(config: Config, deps: KubeletDeps) -> Arc<Kubelet> {
        let events = Recorder::new(&config.node_name, deps.clock.clone());
        let config_taints = config.register_with_taints.clone();
        let host_resolv = std::fs::read_to_string(&config.resolv_conf).unwrap_or_default();
        let crash = Mutex::new(CrashBackoff::new(deps.clock.clone()));
        let image_backoff = Mutex::new(ImageBackoff::new(deps.clock.clone()));
        let mounter = SystemMounter::new(config.mounter_path.clone());
        tracing::info!(mount_program = %mounter.program().display(), "volume mounter");
        tracing::info!(labels = ?config.node_labels, "node labels");
        let volumes = Arc::new(VolumeManager::new(
            &config.root_dir.join("pods"),
            Arc::new(mounter),
        ));
        let rt = deps.runtime.config();
        let stats = crate::stats::Collector::new(crate::stats::CollectorConfig {
            node_name: config.node_name.clone(),
            cgroup_root: rt.cgroup_root.clone(),
            proc_root: rt.proc_root.clone(),
            root_dir: config.root_dir.clone(),
            image_dir: rt.root_dir.clone(),
            log_dir: rt.log_dir.clone(),
        });
        let eviction = crate::eviction::Manager::new(
            config.eviction.clone(),
            events.clone(),
            &config.node_name,
        );
        Arc::new_cyclic(|kubelet| {
            let worker_deps = Arc::new_cyclic(|worker_deps| WorkerDeps {
                prober: crate::prober::Prober::new(
                    Arc::new(probing::RuntimeProbeHost {
                        deps: worker_deps.clone(),
                    }),
                    events.clone(),
                    deps.clock.clone(),
                    Box::new({
                        let kubelet = kubelet.clone();
                        move |uid| Kubelet::wake_weak(&kubelet, uid)
                    }),
                ),
                config,
                runtime: AsyncRuntime::new(deps.runtime),
                images: deps.images,
                cni: deps.cni,
                pull: deps.pull,
                clock: deps.clock,
                objects: deps.objects,
                events,
                crash,
                image_backoff,
                volumes,
                host_resolv,
                pods: PodTable::new(),
                node_taints: std::sync::RwLock::new(config_taints),
                evictions: Mutex::new(std::collections::HashMap::new()),
            });
            Kubelet {
                deps: worker_deps,
                stats,
                eviction,
                reclaim_images: tokio::sync::Mutex::new(crate::image_gc::ImageGcManager::default()),
                container_gc: tokio::sync::Mutex::new(()),
                sources_ready: std::sync::atomic::AtomicBool::new(false),
            }
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.deps.config
    }

    /// The eviction manager (its conditions are the Node's MemoryPressure, DiskPressure and
    /// PIDPressure).
    pub fn eviction(&self) -> &Arc<crate::eviction::Manager> {
        &self.eviction
    }

    /// The node's taints in the API server (`spec.taints`, cluster mode's watch of the Node):
    /// admission rejects a new API pod that does not tolerate one of the `NoExecute` ones
    /// (upstream's `TaintToleration`). Until the first call, the taints are
    /// `registerWithTaints`, as upstream's initial node.
    pub fn set_node_taints(&self, taints: Vec<k8s_openapi::api::core::v1::Taint>) {
        let mut current = self
            .deps
            .node_taints
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if *current != taints {
            tracing::info!(taints = ?taints, "the node's taints");
            *current = taints;
        }
    }

    /// What the proxy needs, updated on every snapshot and pod status change.
    pub fn proxy_input(&self) -> watch::Receiver<ProxyInput> {
        self.deps.pods.proxy_input()
    }

    /// The Services pods see in their environment, with their allocated ClusterIPs, and their
    /// endpoints (the proxy allocates and resolves them; until it has, the manifests' own values
    /// are used).
    pub fn set_services(&self, services: Vec<Service>, endpoints: Vec<Endpoints>) {
        self.deps.pods.set_services(services, endpoints);
    }

    /// The ConfigMaps, Secrets and tokens pods reference (cluster mode installs the API
    /// server's with [`crate::objects::Objects::set_api`]).
    pub fn objects(&self) -> &Arc<crate::objects::Objects> {
        &self.deps.objects
    }

    /// The kubelet's event recorder (cluster mode sends its events to the API server through
    /// [`Recorder::set_sink`]).
    pub fn events(&self) -> &Recorder {
        &self.deps.events
    }

    /// Wakes the worker of pod `uid` for a pass now (a no-op for a pod without one): the PLEG
    /// when the pod's sandbox or containers changed, the prober when a probe result did.
    pub fn wake(&self, uid: &str) {
        self.deps.pods.wake(uid);
    }

    fn wake_weak(kubelet: &std::sync::Weak<Kubelet>, uid: &str) {
        if let Some(kubelet) = kubelet.upgrade() {
            kubelet.wake(uid);
        }
    }

    /// Every pod gone for good from now on (its worker finished terminating it: containers
    /// stopped, sandbox and volumes torn down), with its last published state.
    pub fn terminated_pods(&self) -> tokio::sync::mpsc::UnboundedReceiver<Pod> {
        self.deps.pods.subscribe_terminated()
    }

    /// Runs the kubelet: applies every snapshot from `snapshots` until the channel closes, then
    /// leaves the pods running (an agent restart adopts them).
    pub async fn run(self: Arc<Self>, mut snapshots: tokio::sync::mpsc::Receiver<Snapshot>) {
        tokio::spawn(pleg::run(Arc::downgrade(&self)));
        tokio::spawn(qos_cgroups(Arc::downgrade(&self)));
        tokio::spawn(housekeeping(Arc::downgrade(&self)));
        {
            let host: Arc<dyn crate::eviction::EvictionHost> = self.clone();
            tokio::spawn(self.eviction.clone().run(Arc::downgrade(&host)));
        }
        let mut first = true;
        // The last snapshot, applied again when a pod wanted again while its worker was
        // terminating it is free to start anew.
        let mut last: Option<crate::source::Snapshot> = None;
        loop {
            let snapshot = tokio::select! {
                s = snapshots.recv() => match s {
                    Some(s) => s,
                    None => break,
                },
                () = self.deps.pods.restart.notified() => {
                    if let Some(snapshot) = &last {
                        self.apply(snapshot, false);
                    }
                    continue;
                }
            };
            crate::source::record_errors(
                &self.deps.events,
                &self.deps.config.node_name,
                &snapshot.errors,
            );
            self.deps
                .objects
                .set_files(snapshot.config_maps.clone(), snapshot.secrets.clone()); // shared, not copied

            // Only once every source has listed its pods (upstream's sources ready): a pod a
            // source has not delivered yet is not an orphan.
            let collect = first && !snapshot.incomplete;
            let orphans = self.apply(&snapshot, collect);
            if let Some(orphans) = orphans {
                self.collect_orphans(orphans);
                // From now on every source has listed its pods: what has no worker is gone.
                tokio::spawn(container_gc(Arc::downgrade(&self)));
                first = false;
                self.sources_ready
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            self.deps.pods.publish_proxy(Some(&snapshot));
            last = Some(snapshot);
        }
    }

    /// A `Failed` warning for each ephemeral container (`kubectl debug`) in `pod` that `old`
    /// did not have: kubenode does not run them yet, and says so where `kubectl describe`
    /// shows it (their statuses say the same).
    fn refuse_new_ephemeral(&self, old: Option<&Pod>, pod: &Pod) {
        let names = |p: Option<&Pod>| -> Vec<String> {
            p.and_then(|p| p.spec.as_ref())
                .and_then(|s| s.ephemeral_containers.as_ref())
                .map(|e| e.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default()
        };
        let known = names(old);
        for name in names(Some(pod)).iter().filter(|n| !known.contains(n)) {
            self.deps.events.warning(
                &ObjectRef::container(pod, name),
                "Failed",
                format!("Error: {}", crate::status::EPHEMERAL_NOT_RUN),
            );
        }
    }

    /// Starts workers for new pods and stops those of pods that are gone. With `collect`, also
    /// finds the orphans (see [`Kubelet::collect_orphans`]) and enters their sandboxes in the
    /// start gate before any new worker can look at it.
    fn apply(&self, snapshot: &Snapshot, collect: bool) -> Option<Orphans> {
        let config = &self.deps.config;
        let mut pods = self.deps.pods.lock();
        let desired: BTreeMap<String, &Arc<Pod>> = snapshot
            .pods
            .iter()
            .filter_map(|p| p.metadata.uid.clone().map(|u| (u, p)))
            .collect();
        let mut deleted_rejected = Vec::new();
        for (uid, entry) in pods.iter_mut() {
            match (desired.get(uid), &entry.worker) {
                // An API pod gone from the API without the kubelet's final DELETE (a force
                // delete) is stopped at once: grace 0, as the API's own deletion says.
                (None, Some(worker)) if is_api_pod(&entry.pod) => {
                    let mut gone = Pod::clone(&entry.pod);
                    gone.status = None;
                    gone.metadata
                        .deletion_timestamp
                        .get_or_insert_with(|| Time(self.deps.clock.now()));
                    gone.metadata.deletion_grace_period_seconds = Some(0);
                    let _ = worker.send(Some(Arc::new(gone)));
                }
                (None, Some(worker)) => {
                    let _ = worker.send(None);
                    entry.restart_requested = false;
                }
                // The same UID changed (an API pod's labels, annotations, or its deletion):
                // the worker gets the new pod; one with `deletionTimestamp` makes it
                // terminate the pod with the deletion's grace period.
                (Some(pod), Some(worker)) => {
                    // Back after the worker was told to terminate it: a worker still in its
                    // pass keeps the pod; one already terminating it finishes, and the pod is
                    // then admitted anew (see `PodTable::forget`).
                    if worker.borrow().is_none() && pod.metadata.deletion_timestamp.is_none() {
                        entry.restart_requested = true;
                    }
                    worker.send_if_modified(|current| {
                        let changed = current.as_deref() != Some(&***pod);
                        if changed {
                            self.refuse_new_ephemeral(current.as_deref(), pod);
                            *current = Some(Arc::clone(pod));
                        }
                        changed
                    });
                }
                // A rejected pod being deleted has nothing to tear down.
                (Some(pod), None) if pod.metadata.deletion_timestamp.is_some() => {
                    deleted_rejected.push(uid.clone());
                }
                _ => {}
            }
        }
        for uid in deleted_rejected {
            if let Some(entry) = pods.remove(&uid) {
                self.deps.pods.notify_terminated(&entry.pod);
            }
        }
        let max = config.max_pods as usize;
        let sysctls = SysctlAllowlist::new(
            &config.allowed_unsafe_sysctls,
            SysctlAllowlist::kernel_version(),
        )
        // The configuration was checked at start; an empty list would refuse every sysctl.
        .unwrap_or_default();
        let mut new: Vec<(&String, &Arc<Pod>)> = desired
            .iter()
            .filter(|(uid, _)| !pods.contains_key(*uid))
            .map(|(uid, pod)| (uid, *pod))
            .collect();
        // Upstream admits new pods oldest first. When host ports are at stake, pods that
        // already have a sandbox (running before an agent restart) go first, so that a pod
        // that holds a host port keeps it.
        if new.len() > 1 {
            let running: HashSet<String> = if new
                .iter()
                .any(|(_, p)| p.spec.as_ref().is_some_and(hostports::has_host_ports))
            {
                self.deps
                    .runtime
                    .inner()
                    .list_sandboxes()
                    .into_iter()
                    .map(|s| s.pod.uid)
                    .collect()
            } else {
                HashSet::new()
            };
            new.sort_by_key(|(uid, pod)| {
                (
                    !running.contains(*uid),
                    pod.metadata.creation_timestamp.clone().map(|t| t.0),
                    *uid,
                )
            });
        }
        // The host ports of the admitted pods still wanted. Upstream releases a finished
        // pod's ports because it stops its sandbox; kubenode keeps a finished pod's sandbox,
        // and so its port forwarding, until the pod is removed, and so keeps its ports taken.
        let mut used_ports = hostports::UsedPorts::default();
        for (uid, e) in pods.iter() {
            if e.worker.is_some() && desired.contains_key(uid) {
                if let Some(spec) = &e.pod.spec {
                    used_ports.add(spec);
                }
            }
        }
        // The node's allocatable resources, read when there are pods to admit.
        let allocatable = (!new.is_empty()).then(|| {
            capacity::Machine::of_host(&config.root_dir)
                .map(|m| {
                    capacity::allocatable(&m.capacity(config.max_pods), &config.node_allocatable)
                })
                .inspect_err(|e| tracing::error!(error = %e, "reading the node's capacity"))
        });
        for (uid, pod) in new {
            let uid = uid.clone();
            // Upstream counts the active pods only (`filterOutInactivePods`): a finished pod
            // takes no place.
            let active = pods.values().filter(|e| e.is_active()).count();
            let pod = Arc::clone(pod);
            // A pod deleted before this kubelet admitted it (or deleted while the agent was
            // down): its worker terminates at once whatever may be running of it (an adopted
            // sandbox), without admission.
            if pod.metadata.deletion_timestamp.is_some() {
                start_worker(&self.deps, &mut pods, uid.clone(), pod);
                continue;
            }
            // Admission, in upstream's order: sysctls; the pod's OS label, the pod count, resources,
            // node affinity, host ports and NoExecute taints (upstream's predicate handler); AppArmor; then what upstream finds
            // only at sandbox creation: a user namespace this node cannot make.
            let spec = pod.spec.clone().unwrap_or_default();
            // Resources against allocatable, beside the active pods (`NodeResourcesFit`).
            let unfit = match &allocatable {
                Some(Ok(allocatable)) => {
                    let active = pods.values().filter(|e| e.is_active());
                    capacity::fits(
                        &spec,
                        allocatable,
                        active.filter_map(|e| e.pod.spec.as_ref()),
                    )
                    .err()
                    .map(|e| (e.reason(), e.message()))
                }
                _ => Some((
                    capacity::INVALID_NODE_INFO.to_string(),
                    capacity::INVALID_NODE_INFO_MESSAGE.to_string(),
                )),
            };
            let node = NodeFacts {
                name: &config.node_name,
                labels: &config.node_labels,
            };
            // An API pod is validated here as a file pod is at read: a field kubenode does
            // not implement rejects it, the message naming the field (ephemeral containers
            // aside: the API server adds them to running pods; their statuses refuse them).
            let invalid = is_api_pod(&pod)
                .then(|| crate::validation::validate_api_pod(&pod).err())
                .flatten();
            // Upstream's eviction admit handler comes first.
            let pressure = self.eviction.admit(&pod).err();
            let rejection = match sysctls.admit(&spec) {
                _ if invalid.is_some() => invalid
                    .map(|errs| (crate::cluster::pods::UNSUPPORTED_POD_SPEC, errs.to_string())),
                _ if pressure.is_some() => pressure,
                Err(message) => Some((SYSCTL_FORBIDDEN, message)),
                Ok(()) => predicates::os_label(&pod)
                    .err()
                    .or_else(|| {
                        (active >= max).then(|| {
                            (
                                crate::status::OUT_OF_PODS,
                                crate::status::out_of_pods_message(active, max),
                            )
                        })
                    })
                    .or_else(|| unfit.as_ref().map(|(r, m)| (r.as_str(), m.clone())))
                    .or_else(|| predicates::node_affinity(&spec, node).err())
                    .or_else(|| {
                        used_ports.conflicts(&spec).then(|| {
                            (
                                hostports::NODE_PORTS,
                                hostports::NODE_PORTS_MESSAGE.to_string(),
                            )
                        })
                    })
                    .or_else(|| {
                        // Upstream checks taints for every pod but static ones.
                        if !is_api_pod(&pod) {
                            return None;
                        }
                        let taints = self
                            .deps
                            .node_taints
                            .read()
                            .unwrap_or_else(|e| e.into_inner());
                        predicates::no_execute_taints(&spec, &taints).err()
                    })
                    .or_else(|| {
                        apparmor::admit(&pod, &SystemAppArmor)
                            .err()
                            .map(|message| (apparmor::REASON, message))
                    })
                    .or_else(|| {
                        userns::admit(&spec, &SystemUserns::new(&config.runtime))
                            .err()
                            .map(|message| (userns::REASON, message))
                    }),
            };
            if let Some((reason, message)) = rejection {
                let mut pod = Pod::clone(&pod);
                pod.status = Some(crate::status::rejected_status(
                    &pod,
                    reason,
                    &message,
                    self.deps.clock.now(),
                ));
                self.deps
                    .events
                    .warning(&ObjectRef::pod(&pod), reason, message);
                pods.insert(
                    uid,
                    PodEntry {
                        pod: Arc::new(pod),
                        sandbox_id: None,
                        worker: None,
                        restart_requested: false,
                    },
                );
                continue;
            }
            // The API server's warnings for what the pod sets to no effect.
            for warning in crate::security::deprecated_annotation_warnings(&pod) {
                self.deps
                    .events
                    .warning(&ObjectRef::pod(&pod), "DeprecatedAnnotation", warning);
            }
            used_ports.add(&spec);
            start_worker(&self.deps, &mut pods, uid.clone(), pod);
        }
        // Rejected pods that left the manifest directory are forgotten.
        pods.retain(|uid, e| {
            e.worker.is_some()
                || snapshot
                    .pods
                    .iter()
                    .any(|p| p.metadata.uid.as_deref() == Some(uid))
        });
        // Still under the table's lock: the workers just started see the orphans in the gate.
        collect.then(|| {
            let orphans = self.find_orphans(&pods, snapshot);
            for s in &orphans.sandboxes {
                self.deps
                    .pods
                    .orphan_removing(&s.pod.name, &s.pod.namespace, &s.id);
            }
            orphans
        })
    }

    /// The sandboxes the runtime recovered that belong to no desired pod, or to one admission
    /// rejected, and the pod directories to keep.
    fn find_orphans(&self, pods: &BTreeMap<String, PodEntry>, snapshot: &Snapshot) -> Orphans {
        let admitted: Vec<String> = pods
            .iter()
            .filter(|(_, e)| e.worker.is_some())
            .map(|(uid, _)| uid.clone())
            .collect();
        let desired: Vec<String> = snapshot
            .pods
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .filter(|uid| admitted.contains(uid))
            .collect();
        let orphans: Vec<_> = self
            .deps
            .runtime
            .inner()
            .list_sandboxes()
            .into_iter()
            .filter(|s| !desired.contains(&s.pod.uid))
            .collect();
        // Directories of desired pods and of sandboxes being removed are not orphans.
        let mut keep = desired;
        keep.extend(orphans.iter().map(|s| s.pod.uid.clone()));
        Orphans {
            sandboxes: orphans,
            keep_dirs: keep,
        }
    }

    /// Tears down sandboxes the runtime recovered that belong to no desired pod, or to one
    /// admission rejected (e.g. a running pod whose node selector the restarted agent's labels
    /// no longer match): a `Failed` pod keeps no containers, as upstream's kubelet kills the
    /// running pods it does not admit.
    fn collect_orphans(&self, orphans: Orphans) {
        for sandbox in orphans.sandboxes {
            tokio::spawn(self.deps.clone().remove_orphan(sandbox));
        }
        tokio::spawn(self.deps.clone().remove_orphan_pod_dirs(orphans.keep_dirs));
    }

    /// The current (or previous) instance of a container.
    fn instance(
        &self,
        target: &ContainerRef,
        previous: bool,
    ) -> Result<kubenode_runtime::ContainerStatus, ApiError> {
        self.instance_in_pod(target, previous).map(|(_, i)| i)
    }

    /// [`Self::instance`], with the pod it was found in.
    fn instance_in_pod(
        &self,
        target: &ContainerRef,
        previous: bool,
    ) -> Result<(Arc<Pod>, kubenode_runtime::ContainerStatus), ApiError> {
        let (pod, sandbox) = self.deps.pods.find(&target.namespace, &target.pod)?;
        let name = pick_container(&pod, target.container.as_deref())?;
        let instances = sandbox
            .map(|s| self.deps.runtime.inner().list_containers(Some(&s)))
            .unwrap_or_default();
        let groups = actions::group(&instances);
        let instances_of = groups.get(name.as_str());
        let found = if previous {
            instances_of.and_then(|g| g.previous())
        } else {
            instances_of.and_then(|g| g.current())
        };
        let found = found.cloned().ok_or_else(|| {
            let what = if previous {
                "previous terminated container"
            } else {
                "container"
            };
            ApiError::BadRequest(format!(
                "{what} \"{name}\" in pod \"{}\" not found",
                target.pod
            ))
        })?;
        Ok((pod, found))
    }
}

impl Kubelet {
    /// What `/stats/summary` measures: every pod with a sandbox, its cgroups and its running
    /// containers'.
    fn stats_targets(&self) -> Vec<crate::stats::PodTarget> {
        use crate::stats::{ContainerTarget, PodTarget};
        // A pod whose worker has not yet adopted its sandbox (the first moments after an
        // agent restart) is measured by the runtime's ready sandbox of its UID, the newest:
        // its containers run, and upstream's stats (cAdvisor's) have them whatever its
        // worker knows; the eviction manager's first pass must see them.
        let mut ready: std::collections::HashMap<String, (jiff::Timestamp, String)> =
            std::collections::HashMap::new();
        for sb in self.deps.runtime.inner().list_sandboxes() {
            if sb.state != kubenode_runtime::SandboxState::Ready {
                continue;
            }
            let newer = ready
                .get(&sb.pod.uid)
                .is_none_or(|(created, _)| sb.created_at > *created);
            if newer {
                ready.insert(sb.pod.uid.clone(), (sb.created_at, sb.id.clone()));
            }
        }
        let pods: Vec<(
            crate::stats::types::PodReference,
            jiff::Timestamp,
            String,
            bool,
            String,
            Vec<crate::stats::VolumeTarget>,
        )> = self
            .deps
            .pods
            .lock()
            .values()
            .filter_map(|e| {
                let m = &e.pod.metadata;
                let sandbox = e.sandbox_id.clone().or_else(|| {
                    let uid = m.uid.as_deref()?;
                    ready.get(uid).map(|(_, id)| id.clone())
                })?;
                let pod_ref = crate::stats::types::PodReference {
                    name: m.name.clone().unwrap_or_default(),
                    namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
                    uid: m.uid.clone().unwrap_or_default(),
                };
                let start = e
                    .pod
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .and_then(|t| jiff::Timestamp::from_nanosecond(t.0.as_nanosecond()).ok())
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                let parent = worker::cgroup_parent(&e.pod);
                let host_net = e
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.host_network)
                    .unwrap_or(false);
                let volumes = stats_volumes(&self.deps.volumes, &e.pod);
                Some((pod_ref, start, parent, host_net, sandbox, volumes))
            })
            .collect();
        let runtime = self.deps.runtime.inner();
        pods.into_iter()
            .map(
                |(pod_ref, start_time, parent, host_net, sandbox, volumes)| {
                    let containers = runtime
                        .list_containers(Some(&sandbox))
                        .into_iter()
                        .filter(|c| c.state == kubenode_runtime::ContainerState::Running)
                        .map(|c| ContainerTarget {
                            writable_layer: Some(runtime.writable_layer(&c.id)),
                            cgroup: format!("{parent}/{}", c.id),
                            name: c.name,
                            id: c.id,
                            image: c.image,
                            start_time: c.created_at,
                            log_path: c.log_path,
                        })
                        .collect();
                    PodTarget {
                        pod_ref,
                        start_time,
                        netns_cgroup: (!host_net).then(|| format!("{parent}/{sandbox}")),
                        sandbox_id: sandbox,
                        cgroup: parent,
                        containers,
                        volumes,
                    }
                },
            )
            .collect()
    }
}

impl Kubelet {
    /// Every pod UID with a worker (desired, or still being terminated): what container
    /// garbage collection leaves alone but for dead containers beyond the policy.
    fn live_pods(&self) -> HashSet<String> {
        self.deps
            .pods
            .lock()
            .iter()
            .filter(|(_, e)| e.worker.is_some())
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// One container garbage collection pass with upstream's default policy (see
    /// [`container_gc`]), never two at once.
    async fn collect_garbage(&self) -> worker::GcPass {
        let _pass = self.container_gc.lock().await;
        let policy = container_gc::ContainerGcPolicy::default();
        self.deps.collect_garbage(&policy, &self.live_pods()).await
    }

    /// The eviction manager's image reclaim (upstream `DeleteUnusedImages`): every unused image
    /// older than the image GC's minimum age, whatever the thresholds.
    fn delete_unused_images(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let images = self.deps.images.clone();
            let seen = tokio::task::spawn_blocking(move || images.images_with_users())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("listing images: {e}"))?;
            let seen: Vec<crate::image_gc::SeenImage> = seen
                .into_iter()
                .map(|i| crate::image_gc::SeenImage {
                    in_use: !i.users.is_empty(),
                    reference: i.reference,
                    size: i.size,
                })
                .collect();
            let now = std::time::Instant::now();
            let mut records = self.reclaim_images.lock().await;
            let candidates = records.detect(&seen, now);
            let (chosen, _) = kubenode_runtime::image::select_for_gc(
                &candidates,
                now,
                self.deps.config.image_gc.min_age,
                u64::MAX,
            );
            if chosen.is_empty() {
                return Ok("no unused image old enough to remove".into());
            }
            let report = self
                .deps
                .images
                .remove_unused(&chosen)
                .await
                .map_err(|e| format!("removing images: {e}"))?;
            Ok(format!(
                "removed {} unused images ({} bytes)",
                report.removed.len(),
                report.bytes_freed
            ))
        })
    }
}

impl crate::eviction::EvictionHost for Kubelet {
    fn summary(&self) -> crate::stats::types::Summary {
        self.stats.summary(&self.stats_targets())
    }

    fn active_pods(&self) -> Vec<Pod> {
        self.deps
            .pods
            .lock()
            .values()
            .filter(|e| e.is_active())
            .map(|e| Pod::clone(&e.pod))
            .collect()
    }

    fn reclaim(&self, what: crate::eviction::NodeReclaim) -> BoxFuture<'_, Result<String, String>> {
        match what {
            crate::eviction::NodeReclaim::Containers => Box::pin(async move {
                let pass = self.collect_garbage().await;
                Ok(format!(
                    "removed {} dead containers, {} sandboxes and {} log directories of gone pods",
                    pass.containers, pass.sandboxes, pass.log_dirs
                ))
            }),
            crate::eviction::NodeReclaim::Images => self.delete_unused_images(),
        }
    }

    fn evict(&self, pod: &Pod, grace: std::time::Duration, message: &str) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        lock(&self.deps.evictions, "evictions").insert(
            uid.clone(),
            worker::EvictionRequest {
                grace,
                message: message.to_string(),
            },
        );
        self.wake(&uid);
    }

    fn is_active(&self, uid: &str) -> bool {
        self.deps
            .pods
            .lock()
            .get(uid)
            .is_some_and(|e| e.is_active())
    }

    fn sources_ready(&self) -> bool {
        self.sources_ready
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

impl NodeView for Kubelet {
    fn stats_summary(&self) -> Result<crate::stats::types::Summary, ApiError> {
        Ok(self.stats.summary(&self.stats_targets()))
    }

    fn metrics(&self) -> String {
        crate::metrics::metrics().encode()
    }

    fn cadvisor_metrics(&self) -> Result<String, ApiError> {
        let targets = self.stats_targets();
        let collection = self.stats.collect(&targets);
        Ok(crate::stats::cadvisor::render(
            &targets,
            &collection,
            jiff::Timestamp::now(),
            false,
        ))
    }

    fn pods(&self) -> Vec<Pod> {
        self.deps
            .pods
            .list()
            .iter()
            .map(|p| Pod::clone(p))
            .collect()
    }

    fn events(&self) -> Vec<Event> {
        self.deps.events.list()
    }

    fn services(&self) -> Vec<Service> {
        self.deps.pods.known_services().0
    }

    fn endpoints(&self) -> Vec<Endpoints> {
        self.deps.pods.known_services().1
    }

    fn config_maps(&self) -> Vec<k8s_openapi::api::core::v1::ConfigMap> {
        let (cms, _) = self.deps.objects.list();
        cms.iter()
            .map(|c| crate::api::without_values(&**c))
            .collect()
    }

    fn secrets(&self) -> Vec<k8s_openapi::api::core::v1::Secret> {
        let (_, secrets) = self.deps.objects.list();
        secrets
            .iter()
            .map(|s| crate::api::without_values(&**s))
            .collect()
    }

    fn container_log(&self, target: &ContainerRef, previous: bool) -> Result<PathBuf, ApiError> {
        Ok(self.instance(target, previous)?.log_path)
    }

    fn exec_command(
        &self,
        target: &ContainerRef,
        command: &[String],
        tty: bool,
    ) -> Result<std::process::Command, ApiError> {
        let instance = self.instance(target, false)?;
        if instance.state != kubenode_runtime::ContainerState::Running {
            return Err(ApiError::BadRequest(format!(
                "container {} is not running",
                instance.name
            )));
        }
        self.deps
            .runtime
            .inner()
            .exec_command(&instance.id, command, tty)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    fn container_instance(
        &self,
        target: &ContainerRef,
    ) -> Result<crate::api::ContainerInstance, ApiError> {
        use kubenode_runtime::ContainerState;
        let (pod, i) = self.instance_in_pod(target, false)?;
        let spec = pod
            .spec
            .as_ref()
            .and_then(|s| crate::pod_containers(s).find(|c| c.name == i.name));
        let flag = |f: fn(&k8s_openapi::api::core::v1::Container) -> Option<bool>| {
            spec.and_then(f) == Some(true)
        };
        let (stdin, stdin_once, tty) = (flag(|c| c.stdin), flag(|c| c.stdin_once), flag(|c| c.tty));
        let attach_socket = (stdin || tty)
            .then(|| self.deps.runtime.inner().attach_socket(&i.id))
            .flatten();
        let state = match i.state {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        };
        Ok(crate::api::ContainerInstance {
            id: i.id,
            running: i.state == ContainerState::Running,
            state: state.into(),
            log_path: i.log_path,
            attach_socket,
            stdin,
            stdin_once,
            tty,
        })
    }

    fn pod_network(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<(Option<PathBuf>, String), ApiError> {
        let (p, sandbox) = self.deps.pods.find(namespace, pod)?;
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let sandbox = sandbox
            .and_then(|id| self.deps.runtime.inner().sandbox(&id).ok())
            .filter(|s| s.state == kubenode_runtime::SandboxState::Ready)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("pod {pod} does not have a running sandbox"))
            })?;
        let netns = (!sandbox.host_network).then_some(sandbox.netns_path);
        Ok((netns, uid))
    }

    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ApiError>> {
        Box::pin(async move {
            let instance = self.instance(&request.target, false)?;
            if instance.state != kubenode_runtime::ContainerState::Running {
                return Err(ApiError::BadRequest(format!(
                    "container {} is not running",
                    instance.name
                )));
            }
            let out = self
                .deps
                .runtime
                .try_run(move |rt| rt.exec(&instance.id, &request.command, request.timeout))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(ExecResponse {
                exit_code: out.exit_code,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        })
    }
}

/// Whether `pod` came from the API server (`kubernetes.io/config.source: api`).
fn is_api_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::source::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s == crate::cluster::pods::API_SOURCE)
}

/// Samples every cgroup each [`crate::stats::HOUSEKEEPING_INTERVAL`], as cAdvisor's
/// housekeeping does, so that `/stats/summary` always has two samples for a CPU rate.
async fn housekeeping(kubelet: std::sync::Weak<Kubelet>) {
    let mut tick = tokio::time::interval(crate::stats::HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(kubelet) = kubelet.upgrade() else {
            return;
        };
        let sampled = tokio::task::spawn_blocking(move || {
            let _ = kubelet.stats_summary();
        })
        .await;
        if let Err(e) = sampled {
            tracing::error!(error = %e, "sampling resource usage panicked");
        }
    }
}

/// The node-wide container garbage collection every [`container_gc::CONTAINER_GC_PERIOD`]
/// (started once every pod source has listed its pods), with upstream's default policy.
async fn container_gc(kubelet: std::sync::Weak<Kubelet>) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + container_gc::CONTAINER_GC_PERIOD,
        container_gc::CONTAINER_GC_PERIOD,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(kubelet) = kubelet.upgrade() else {
            return;
        };
        kubelet.collect_garbage().await;
    }
}

/// Upstream's periodic QoS cgroup update (`periodicQOSCgroupUpdateInterval`, one minute): the
/// Burstable tier's shares follow the pods that came and went.
async fn qos_cgroups(kubelet: std::sync::Weak<Kubelet>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Some(kubelet) = kubelet.upgrade() else {
            return;
        };
        kubelet.deps.update_qos_cgroups().await;
    }
}

/// The pod's volumes whose use the Summary reports, as upstream's volume plugins measure them:
/// a disk emptyDir, configMap and downwardAPI by a walk of their directory, a `Memory`
/// emptyDir, secret and projected volume (each a tmpfs of its own) by `statvfs`. hostPath has
/// no metrics upstream; NFS is left out (a `statvfs` of a hung server would block the Summary).
fn stats_volumes(volumes: &VolumeManager, pod: &Pod) -> Vec<crate::stats::VolumeTarget> {
    use crate::stats::{VolumeTarget, VolumeUsage};
    use crate::volume::projection::Kind;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let spec_volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    spec_volumes
        .into_iter()
        .flatten()
        .filter_map(|vol| {
            let usage = match (Kind::of(vol), &vol.empty_dir) {
                (Some(Kind::ConfigMap | Kind::DownwardApi), _) => VolumeUsage::Walk,
                (Some(Kind::Secret | Kind::Projected), _) => VolumeUsage::FileSystem,
                (None, Some(e)) if e.medium.as_deref().unwrap_or_default().is_empty() => {
                    VolumeUsage::Walk
                }
                (None, Some(_)) => VolumeUsage::FileSystem,
                (None, None) => return None,
            };
            let (path, _) = volumes.volume_path(uid, vol)?;
            Some(VolumeTarget {
                name: vol.name.clone(),
                path,
                usage,
            })
        })
        .collect()
}
