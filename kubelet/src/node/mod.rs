//! The running kubelet: static pods from the manifest directory become pod workers that drive
//! the runtime and CNI, and their status is served through the node API.
//!
//! One [`Kubelet`] per agent. [`Kubelet::run`] consumes source snapshots: a new pod UID gets a
//! worker task (see `worker`), a vanished UID has its worker terminate the pod. Each worker
//! reconciles its pod (sandbox, init containers, app containers, restarts with back-off) and
//! publishes the pod's status into the shared table that the API reads. On start, the runtime's
//! view is recovered from disk and running pods are adopted, not restarted.

mod actions;
mod envvars;
mod files;
pub(crate) mod hooks;
mod observe;
mod pleg;
mod probing;
mod runtime;
mod worker;

pub use actions::{compute, PodActions};
pub use envvars::service_env;
pub use files::{hostname, hosts_file, resolv_conf};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Endpoints, Event, Pod, Service};
use kubenode_cni::CniClient;
use kubenode_runtime::image::{ImageStore, PullOptions};
use kubenode_runtime::Runtime;
use tokio::sync::watch;

use crate::api::{
    pick_container, ApiError, BoxFuture, ContainerRef, ExecRequest, ExecResponse, NodeView,
};
use crate::backoff::{Clock, CrashBackoff, ImageBackoff};
use crate::config::Config;
use crate::events::{ObjectRef, Recorder};
use crate::source::Snapshot;
use crate::validation::sysctl::{SysctlAllowlist, SYSCTL_FORBIDDEN};
use crate::volume::{SystemMounter, VolumeManager};
use runtime::AsyncRuntime;

/// What the kubelet needs from the rest of the node.
#[derive(Debug)]
pub struct Parts {
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
}

/// Services and Endpoints from the manifest directory plus the node's pods: what the proxy
/// consumes.
#[derive(Debug, Clone, Default)]
pub struct ProxyInput {
    /// Services.
    pub services: Vec<Service>,
    /// Manually written Endpoints (selector-less Services).
    pub endpoints: Vec<Endpoints>,
    /// The node's pods with their status.
    pub pods: Vec<Pod>,
}

struct PodEntry {
    pod: Pod,
    sandbox_id: Option<String>,
    worker: Option<watch::Sender<Option<Pod>>>,
}

/// The kubelet of one node.
pub struct Kubelet {
    config: Config,
    parts: Parts,
    /// `parts.runtime`, called from async code.
    runtime: AsyncRuntime,
    events: Recorder,
    crash: Mutex<CrashBackoff>,
    image_backoff: Mutex<ImageBackoff>,
    pods: Mutex<BTreeMap<String, PodEntry>>,
    host_resolv: String,
    proxy_tx: watch::Sender<ProxyInput>,
    /// Services with allocated ClusterIPs and their endpoints, from the proxy (`None` without
    /// one).
    services: Mutex<Option<(Vec<Service>, Vec<Endpoints>)>>,
    /// Pod volumes.
    volumes: Arc<VolumeManager>,
    prober: crate::prober::Prober,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("node", &self.config.node_name)
            .finish_non_exhaustive()
    }
}

impl Kubelet {
    /// A kubelet over `parts`, configured by `config`.
    pub fn new(config: Config, parts: Parts) -> Arc<Kubelet> {
        let events = Recorder::new(&config.node_name, parts.clock.clone());
        let host_resolv = std::fs::read_to_string(&config.resolv_conf).unwrap_or_default();
        let crash = Mutex::new(CrashBackoff::new(parts.clock.clone()));
        let image_backoff = Mutex::new(ImageBackoff::new(parts.clock.clone()));
        let mounter = SystemMounter::new(config.mounter_path.clone());
        tracing::info!(mount_program = %mounter.program().display(), "volume mounter");
        let volumes = Arc::new(VolumeManager::new(
            &config.root_dir.join("pods"),
            Arc::new(mounter),
        ));
        Arc::new_cyclic(|me| Kubelet {
            prober: crate::prober::Prober::new(
                Arc::new(probing::RuntimeProbeHost {
                    kubelet: me.clone(),
                }),
                events.clone(),
                parts.clock.clone(),
                Box::new({
                    let me = me.clone();
                    move |uid| probing::wake(&me, uid)
                }),
            ),
            config,
            runtime: AsyncRuntime::new(parts.runtime.clone()),
            parts,
            events,
            crash,
            image_backoff,
            pods: Mutex::new(BTreeMap::new()),
            host_resolv,
            proxy_tx: watch::channel(ProxyInput::default()).0,
            services: Mutex::new(None),
            volumes,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the proxy needs, updated on every snapshot and pod status change.
    pub fn proxy_input(&self) -> watch::Receiver<ProxyInput> {
        self.proxy_tx.subscribe()
    }

    /// The Services pods see in their environment, with their allocated ClusterIPs, and their
    /// endpoints (the proxy allocates and resolves them; until it has, the manifests' own values
    /// are used).
    pub fn set_services(&self, services: Vec<Service>, endpoints: Vec<Endpoints>) {
        *self.services.lock().expect("services lock") = Some((services, endpoints));
    }

    fn known_services(&self) -> (Vec<Service>, Vec<Endpoints>) {
        let allocated = self.services.lock().expect("services lock").clone();
        allocated.unwrap_or_else(|| {
            let input = self.proxy_tx.borrow();
            (input.services.clone(), input.endpoints.clone())
        })
    }

    fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        service_env(&self.known_services().0, ns, links)
    }

    fn pods_dir(&self) -> PathBuf {
        self.config.root_dir.join("pods")
    }

    /// Runs the kubelet: applies every snapshot from `snapshots` until the channel closes, then
    /// leaves the pods running (an agent restart adopts them).
    pub async fn run(self: Arc<Self>, mut snapshots: tokio::sync::mpsc::Receiver<Snapshot>) {
        tokio::spawn(pleg::run(Arc::downgrade(&self)));
        let mut first = true;
        while let Some(snapshot) = snapshots.recv().await {
            crate::source::record_errors(&self.events, &self.config.node_name, &snapshot.errors);
            self.apply(&snapshot);
            if first {
                self.clone().collect_orphans(&snapshot);
                first = false;
            }
            self.publish_proxy(Some(&snapshot));
        }
    }

    /// Starts workers for new pods and stops those of pods that are gone.
    fn apply(self: &Arc<Self>, snapshot: &Snapshot) {
        let mut pods = self.pods.lock().expect("pods lock");
        let desired: BTreeMap<String, &Pod> = snapshot
            .pods
            .iter()
            .filter_map(|p| p.metadata.uid.clone().map(|u| (u, p)))
            .collect();
        for (uid, entry) in pods.iter_mut() {
            if !desired.contains_key(uid) {
                if let Some(w) = &entry.worker {
                    let _ = w.send(None);
                }
            }
        }
        let max = self.config.max_pods as usize;
        let sysctls = SysctlAllowlist::new(
            &self.config.allowed_unsafe_sysctls,
            SysctlAllowlist::kernel_version(),
        )
        // The configuration was checked at start; an empty list would refuse every sysctl.
        .unwrap_or_default();
        for (uid, pod) in desired {
            if pods.contains_key(&uid) {
                continue;
            }
            let active = pods.values().filter(|e| e.worker.is_some()).count();
            let mut pod = pod.clone();
            // Admission, in upstream's order: sysctls, then the pod count.
            let rejection = match sysctls.admit(&pod.spec.clone().unwrap_or_default()) {
                Err(message) => Some((SYSCTL_FORBIDDEN, message)),
                Ok(()) if active >= max => Some((
                    crate::status::OUT_OF_PODS,
                    crate::status::out_of_pods_message(active, max),
                )),
                Ok(()) => None,
            };
            if let Some((reason, message)) = rejection {
                pod.status = Some(crate::status::rejected_status(
                    &pod,
                    reason,
                    &message,
                    self.parts.clock.now(),
                ));
                self.events.warning(&ObjectRef::pod(&pod), reason, message);
                pods.insert(
                    uid,
                    PodEntry {
                        pod,
                        sandbox_id: None,
                        worker: None,
                    },
                );
                continue;
            }
            let (tx, rx) = watch::channel(Some(pod.clone()));
            pods.insert(
                uid.clone(),
                PodEntry {
                    pod,
                    sandbox_id: None,
                    worker: Some(tx),
                },
            );
            tokio::spawn(worker::run(self.clone(), uid, rx));
        }
        // Rejected pods that left the manifest directory are forgotten.
        pods.retain(|uid, e| {
            e.worker.is_some()
                || snapshot
                    .pods
                    .iter()
                    .any(|p| p.metadata.uid.as_deref() == Some(uid))
        });
    }

    /// Tears down sandboxes the runtime recovered that belong to no desired pod.
    fn collect_orphans(self: Arc<Self>, snapshot: &Snapshot) {
        let desired: Vec<String> = snapshot
            .pods
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let orphans: Vec<_> = self
            .runtime
            .inner()
            .list_sandboxes()
            .into_iter()
            .filter(|s| !desired.contains(&s.pod.uid))
            .collect();
        // Directories of desired pods and of sandboxes being removed are not orphans.
        let mut keep = desired;
        keep.extend(orphans.iter().map(|s| s.pod.uid.clone()));
        for sandbox in orphans {
            let k = self.clone();
            tokio::spawn(async move { worker::remove_orphan(k, sandbox).await });
        }
        tokio::spawn(worker::remove_orphan_pod_dirs(self.clone(), keep));
    }

    /// Called by workers: the pod's latest state.
    /// Workers call this after every pass; most passes change nothing, and then nothing is
    /// cloned or sent on (the proxy would otherwise re-read every pod every second per pod).
    fn set_pod(&self, uid: &str, pod: Pod, sandbox_id: Option<String>) {
        let mut pods = self.pods.lock().expect("pods lock");
        let Some(e) = pods.get_mut(uid) else {
            return;
        };
        if e.pod == pod && e.sandbox_id == sandbox_id {
            return;
        }
        e.pod = pod;
        e.sandbox_id = sandbox_id;
        drop(pods);
        self.publish_proxy(None);
    }

    /// Called by a worker when its pod is gone for good.
    fn forget(&self, uid: &str) {
        self.pods.lock().expect("pods lock").remove(uid);
        self.publish_proxy(None);
    }

    fn publish_proxy(&self, snapshot: Option<&Snapshot>) {
        let pods = self.pods_list();
        self.proxy_tx.send_modify(|input| {
            if let Some(s) = snapshot {
                input.services = s.services.clone();
                input.endpoints = s.endpoints.clone();
            }
            input.pods = pods;
        });
    }

    fn pods_list(&self) -> Vec<Pod> {
        self.pods
            .lock()
            .expect("pods lock")
            .values()
            .map(|e| e.pod.clone())
            .collect()
    }

    fn find(&self, namespace: &str, name: &str) -> Result<(Pod, Option<String>), ApiError> {
        self.pods
            .lock()
            .expect("pods lock")
            .values()
            .find(|e| {
                e.pod.metadata.name.as_deref() == Some(name)
                    && e.pod.metadata.namespace.as_deref().unwrap_or("default") == namespace
            })
            .map(|e| (e.pod.clone(), e.sandbox_id.clone()))
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "pods \"{name}\" not found in namespace {namespace}"
                ))
            })
    }

    /// The current (or previous) instance of a container.
    fn instance(
        &self,
        target: &ContainerRef,
        previous: bool,
    ) -> Result<kubenode_runtime::ContainerStatus, ApiError> {
        let (pod, sandbox) = self.find(&target.namespace, &target.pod)?;
        let name = pick_container(&pod, target.container.as_deref())?;
        let instances = sandbox
            .map(|s| self.runtime.inner().list_containers(Some(&s)))
            .unwrap_or_default();
        let groups = actions::group(&instances);
        let g = groups.get(name.as_str());
        let found = if previous {
            g.and_then(|g| g.previous())
        } else {
            g.and_then(|g| g.current())
        };
        found.cloned().ok_or_else(|| {
            let what = if previous {
                "previous terminated container"
            } else {
                "container"
            };
            ApiError::BadRequest(format!(
                "{what} \"{name}\" in pod \"{}\" not found",
                target.pod
            ))
        })
    }
}

impl NodeView for Kubelet {
    fn pods(&self) -> Vec<Pod> {
        self.pods_list()
    }

    fn events(&self) -> Vec<Event> {
        self.events.list()
    }

    fn services(&self) -> Vec<Service> {
        self.known_services().0
    }

    fn endpoints(&self) -> Vec<Endpoints> {
        self.known_services().1
    }

    fn container_log(&self, target: &ContainerRef, previous: bool) -> Result<PathBuf, ApiError> {
        Ok(self.instance(target, previous)?.log_path)
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
