//! Cluster mode's [`Backend`]: the API server's ConfigMaps and Secrets, as upstream's
//! watch-based managers (`pkg/kubelet/util/manager/watch_based_manager.go`) keep them.
//!
//! Each `(namespace, name)` a registered pod references (environment, `configMap`/`secret`
//! volumes and projections, `imagePullSecrets`) gets one kube-rs watcher with the field
//! selector `metadata.name=<name>` in its namespace, which is all the node authorizer lets a
//! kubelet list or watch. Watches are counted by the pods that reference them and stopped when
//! the last one goes; a pod registered again (its spec changed) takes its new references before
//! dropping its old ones, so a watch both share keeps running. A read waits for the watch's first
//! list (at most [`SYNC_TIMEOUT`], upstream's one second; then `failed to sync configmap cache:
//! timed out waiting for the condition`) and answers from it: a deleted object is `NotFound`. An
//! object marked `immutable` stops its watch once seen, as upstream does. Every change calls the
//! [`Notifier`], so that what was derived from the objects (volume contents) is refreshed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

use super::{Backend, Notifier, ObjectError};

/// How long a read waits for a new watch's first list (upstream polls for one second).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// ConfigMap or Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

impl Kind {
    /// The resource name in upstream's messages (`configmap`, `secret`).
    pub fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }
}

/// One watched object: kind, namespace, name.
pub type Key = (Kind, String, String);

/// What a watch knows of its object.
#[derive(Clone)]
pub enum State {
    /// The first list has not come back yet.
    Syncing,
    /// The object does not exist.
    Absent,
    /// The ConfigMap as last seen.
    ConfigMap(Arc<ConfigMap>),
    /// The Secret as last seen.
    Secret(Arc<Secret>),
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Syncing => f.write_str("Syncing"),
            State::Absent => f.write_str("Absent"),
            State::ConfigMap(c) => write!(f, "ConfigMap({:?})", c.metadata.name),
            State::Secret(s) => write!(f, "Secret({:?})", s.metadata.name),
        }
    }
}

/// Starts the watch of one object, publishing into the sender; the task is aborted when the
/// last pod referencing the object goes.
pub type Spawn = Arc<dyn Fn(&Key, watch::Sender<State>) -> tokio::task::AbortHandle + Send + Sync>;

struct Watched {
    refs: usize,
    state: watch::Receiver<State>,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
struct Inner {
    watches: HashMap<Key, Watched>,
    /// The references of each registered pod, by UID.
    pods: HashMap<String, HashSet<Key>>,
}

/// The API server's ConfigMaps and Secrets, watched per referenced object.
pub struct ApiObjects {
    inner: Mutex<Inner>,
    spawn: Spawn,
}

impl fmt::Debug for ApiObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = crate::node::lock(&self.inner, "api objects");
        let mut keys: Vec<&Key> = inner.watches.keys().collect();
        keys.sort();
        f.debug_struct("ApiObjects")
            .field("watches", &keys)
            .field("pods", &inner.pods.len())
            .finish()
    }
}

/// The ConfigMaps and Secrets `pod` references, in its namespace: `env[].valueFrom`, `envFrom`,
/// `configMap`/`secret` volumes and projected sources, and `imagePullSecrets` (upstream's
/// `getConfigMapNames`/`getSecretNames` visit the same fields).
pub fn referenced(pod: &Pod) -> HashSet<Key> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = HashSet::new();
    let mut add = |kind: Kind, name: &str| {
        if !name.is_empty() {
            out.insert((kind, ns.to_string(), name.to_string()));
        }
    };
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    for s in spec.image_pull_secrets.iter().flatten() {
        add(Kind::Secret, &s.name);
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for ef in c.env_from.iter().flatten() {
            if let Some(r) = &ef.config_map_ref {
                add(Kind::ConfigMap, &r.name);
            }
            if let Some(r) = &ef.secret_ref {
                add(Kind::Secret, &r.name);
            }
        }
        for e in c.env.iter().flatten() {
            let Some(vf) = &e.value_from else { continue };
            if let Some(r) = &vf.config_map_key_ref {
                add(Kind::ConfigMap, &r.name);
            }
            if let Some(r) = &vf.secret_key_ref {
                add(Kind::Secret, &r.name);
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            add(Kind::ConfigMap, &cm.name);
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            add(Kind::Secret, s);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &p.config_map {
                add(Kind::ConfigMap, &cm.name);
            }
            if let Some(s) = &p.secret {
                add(Kind::Secret, &s.name);
            }
        }
    }
    out
}

impl ApiObjects {
    /// Watches through `client`, signalling every change to `notifier`.
    pub fn new(client: kube::Client, notifier: Notifier) -> ApiObjects {
        let spawn: Spawn = Arc::new(move |key: &Key, tx: watch::Sender<State>| {
            let (kind, ns, name) = key.clone();
            let client = client.clone();
            let notifier = notifier.clone();
            let task = match kind {
                Kind::ConfigMap => tokio::spawn(watch_one(
                    Api::<ConfigMap>::namespaced(client, &ns),
                    name,
                    tx,
                    notifier,
                    |cm| State::ConfigMap(Arc::new(cm)),
                    |cm: &ConfigMap| cm.immutable == Some(true),
                )),
                Kind::Secret => tokio::spawn(watch_one(
                    Api::<Secret>::namespaced(client, &ns),
                    name,
                    tx,
                    notifier,
                    |s| State::Secret(Arc::new(s)),
                    |s: &Secret| s.immutable == Some(true),
                )),
            };
            task.abort_handle()
        });
        ApiObjects::with_spawn(spawn)
    }

    /// With the watches started by `spawn` (tests use a fake).
    pub fn with_spawn(spawn: Spawn) -> ApiObjects {
        ApiObjects {
            inner: Mutex::new(Inner::default()),
            spawn,
        }
    }

    /// The objects watched now, with the number of pods referencing each.
    pub fn watched(&self) -> Vec<(Key, usize)> {
        let inner = crate::node::lock(&self.inner, "api objects");
        let mut out: Vec<(Key, usize)> = inner
            .watches
            .iter()
            .map(|(k, w)| (k.clone(), w.refs))
            .collect();
        out.sort();
        out
    }

    async fn get(&self, key: Key) -> Result<State, ObjectError> {
        let rx = {
            let inner = crate::node::lock(&self.inner, "api objects");
            inner.watches.get(&key).map(|w| w.state.clone())
        };
        let (kind, ns, name) = key;
        let Some(mut rx) = rx else {
            return Err(ObjectError::Unavailable(format!(
                "object {ns:?}/{name:?} not registered"
            )));
        };
        let synced =
            tokio::time::timeout(SYNC_TIMEOUT, rx.wait_for(|s| !matches!(s, State::Syncing))).await;
        match synced {
            Ok(Ok(state)) => Ok(state.clone()),
            // The watch ended (its last pod went meanwhile) or did not list in time.
            _ => Err(ObjectError::Unavailable(format!(
                "failed to sync {} cache: timed out waiting for the condition",
                kind.resource()
            ))),
        }
    }
}

/// Watches one object by name until aborted (or, once seen `immutable`, for good).
async fn watch_one<K>(
    api: Api<K>,
    name: String,
    tx: watch::Sender<State>,
    notifier: Notifier,
    present: fn(K) -> State,
    immutable: fn(&K) -> bool,
) where
    K: kube::Resource + Clone + fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    // A relist's objects, published once complete.
    let mut relist: Option<K> = None;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                if !failing {
                    tracing::warn!(object = %name, error = %e, "watching a referenced object (retrying with back-off)");
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        let (next, stop) = match event {
            Event::Init => {
                relist = None;
                continue;
            }
            Event::InitApply(o) => {
                relist = Some(o);
                continue;
            }
            Event::InitDone => match relist.take() {
                Some(o) => {
                    let stop = immutable(&o);
                    (present(o), stop)
                }
                None => (State::Absent, false),
            },
            Event::Apply(o) => {
                let stop = immutable(&o);
                (present(o), stop)
            }
            Event::Delete(_) => (State::Absent, false),
        };
        tx.send_replace(next);
        notifier.notify();
        if stop {
            // An immutable object never changes: its watch is not needed any more.
            tracing::debug!(object = %name, "immutable; watch stopped");
            return;
        }
    }
}

impl Backend for ApiObjects {
    fn register_pod(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let keys = referenced(pod);
        let mut inner = crate::node::lock(&self.inner, "api objects");
        // The new references first, then the old ones go: a watch both need keeps running.
        for key in &keys {
            match inner.watches.get_mut(key) {
                Some(w) => w.refs += 1,
                None => {
                    let (tx, rx) = watch::channel(State::Syncing);
                    let task = (self.spawn)(key, tx);
                    inner.watches.insert(
                        key.clone(),
                        Watched {
                            refs: 1,
                            state: rx,
                            task,
                        },
                    );
                }
            }
        }
        if let Some(old) = inner.pods.insert(uid, keys) {
            release(&mut inner, old);
        }
    }

    fn unregister_pod(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let mut inner = crate::node::lock(&self.inner, "api objects");
        if let Some(old) = inner.pods.remove(uid) {
            release(&mut inner, old);
        }
    }

    fn list(&self) -> (Vec<Arc<ConfigMap>>, Vec<Arc<Secret>>) {
        let inner = crate::node::lock(&self.inner, "api objects");
        let mut keys: Vec<&Key> = inner.watches.keys().collect();
        keys.sort();
        let (mut cms, mut secrets) = (Vec::new(), Vec::new());
        for key in keys {
            match &*inner.watches[key].state.borrow() {
                State::ConfigMap(c) => cms.push(c.clone()),
                State::Secret(s) => secrets.push(s.clone()),
                State::Syncing | State::Absent => {}
            }
        }
        (cms, secrets)
    }

    fn config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<ConfigMap>, ObjectError>> {
        Box::pin(async move {
            let key = (Kind::ConfigMap, namespace.to_string(), name.to_string());
            match self.get(key).await? {
                State::ConfigMap(cm) => Ok(cm),
                _ => Err(ObjectError::config_map_not_found(name)),
            }
        })
    }

    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Secret>, ObjectError>> {
        Box::pin(async move {
            let key = (Kind::Secret, namespace.to_string(), name.to_string());
            match self.get(key).await? {
                State::Secret(s) => Ok(s),
                _ => Err(ObjectError::secret_not_found(name)),
            }
        })
    }
}

/// Drops one reference to each of `keys`, stopping the watches no pod needs any more.
fn release(inner: &mut Inner, keys: HashSet<Key>) {
    for key in keys {
        let gone = match inner.watches.get_mut(&key) {
            Some(w) => {
                w.refs -= 1;
                w.refs == 0
            }
            None => false,
        };
        if gone {
            if let Some(w) = inner.watches.remove(&key) {
                w.task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, Container, EnvFromSource, EnvVar, EnvVarSource,
        LocalObjectReference, PodSpec, SecretEnvSource, SecretKeySelector, SecretVolumeSource,
        Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A fake watch: records starts and stops, and keeps each watch's sender for the test.
    #[derive(Default)]
    struct Fake {
        started: Mutex<Vec<Key>>,
        senders: Mutex<HashMap<Key, watch::Sender<State>>>,
        tasks: Mutex<HashMap<Key, tokio::task::AbortHandle>>,
    }

    fn objects(fake: &Arc<Fake>) -> ApiObjects {
        let f = fake.clone();
        ApiObjects::with_spawn(Arc::new(move |key: &Key, tx| {
            f.started.lock().unwrap().push(key.clone());
            f.senders.lock().unwrap().insert(key.clone(), tx);
            let task = tokio::spawn(std::future::pending::<()>()).abort_handle();
            f.tasks.lock().unwrap().insert(key.clone(), task.clone());
            task
        }))
    }

    fn pod(uid: &str, cms: &[&str], secrets: &[&str]) -> Pod {
        let mut env = vec![];
        let mut volumes = vec![];
        for cm in cms {
            volumes.push(Volume {
                name: format!("v-{cm}"),
                config_map: Some(ConfigMapVolumeSource {
                    name: cm.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        for (i, s) in secrets.iter().enumerate() {
            if i % 2 == 0 {
                env.push(EnvVar {
                    name: format!("S{i}"),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: s.to_string(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    value: None,
                });
            } else {
                volumes.push(Volume {
                    name: format!("s-{s}"),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(s.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("p-{uid}")),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    env: Some(env),
                    env_from: Some(vec![EnvFromSource {
                        secret_ref: Some(SecretEnvSource {
                            name: "from".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                volumes: Some(volumes),
                image_pull_secrets: Some(vec![LocalObjectReference {
                    name: "pull".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn k(kind: Kind, name: &str) -> Key {
        (kind, "ns".into(), name.into())
    }

    #[tokio::test]
    async fn watches_are_counted_by_the_pods_that_reference_them() {
        let fake = Arc::new(Fake::default());
        let api = objects(&fake);
        api.register_pod(&pod("a", &["cfg"], &["s1", "s2"]));
        api.register_pod(&pod("b", &["cfg", "other"], &[]));
        assert_eq!(
            api.watched(),
            [
                (k(Kind::ConfigMap, "cfg"), 2),
                (k(Kind::ConfigMap, "other"), 1),
                (k(Kind::Secret, "from"), 2),
                (k(Kind::Secret, "pull"), 2),
                (k(Kind::Secret, "s1"), 1),
                (k(Kind::Secret, "s2"), 1),
            ]
        );
        // Registering again with another spec: shared watches keep running (no restart).
        api.register_pod(&pod("a", &["cfg"], &[]));
        assert_eq!(
            fake.started
                .lock()
                .unwrap()
                .iter()
                .filter(|k| k.2 == "cfg")
                .count(),
            1
        );
        let s1 = fake.tasks.lock().unwrap()[&k(Kind::Secret, "s1")].clone();
        tokio::task::yield_now().await;
        assert!(
            s1.is_finished(),
            "the watch of a Secret no pod needs is stopped"
        );
        // The last pod gone: every watch stopped.
        api.unregister_pod(&pod("a", &[], &[]));
        api.unregister_pod(&pod("b", &[], &[]));
        assert!(api.watched().is_empty());
        tokio::task::yield_now().await;
        assert!(fake.tasks.lock().unwrap().values().all(|t| t.is_finished()));
        // Unregistering an unknown pod is harmless.
        api.unregister_pod(&pod("c", &[], &[]));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_wait_for_the_first_list_then_answer_from_it() {
        let fake = Arc::new(Fake::default());
        let api = Arc::new(objects(&fake));
        let unregistered = api.config_map("ns", "cfg").await.unwrap_err();
        assert_eq!(
            unregistered.to_string(),
            "object \"ns\"/\"cfg\" not registered"
        );
        api.register_pod(&pod("a", &["cfg"], &["s1"]));
        // Not listed within the second: upstream's message.
        let err = api.config_map("ns", "cfg").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to sync configmap cache: timed out waiting for the condition"
        );
        assert!(!err.is_not_found());
        // A read waiting while the list arrives gets it.
        let reader = {
            let api = api.clone();
            tokio::spawn(async move { api.config_map("ns", "cfg").await })
        };
        tokio::task::yield_now().await;
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("cfg".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let tx = fake.senders.lock().unwrap()[&k(Kind::ConfigMap, "cfg")].clone();
        tx.send_replace(State::ConfigMap(Arc::new(cm)));
        let got = reader.await.unwrap().unwrap();
        assert_eq!(got.metadata.name.as_deref(), Some("cfg"));
        // Listed as absent, or deleted later: NotFound, upstream's message.
        let stx = fake.senders.lock().unwrap()[&k(Kind::Secret, "s1")].clone();
        stx.send_replace(State::Absent);
        let err = api.secret("ns", "s1").await.unwrap_err();
        assert_eq!(err.to_string(), "secret \"s1\" not found");
        tx.send_replace(State::Absent);
        assert!(api
            .config_map("ns", "cfg")
            .await
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn every_referencing_field_counts() {
        let keys = referenced(&pod("a", &["cfg"], &["s1", "s2"]));
        let mut names: Vec<(Kind, &str)> = keys.iter().map(|k| (k.0, k.2.as_str())).collect();
        names.sort();
        assert_eq!(
            names,
            [
                (Kind::ConfigMap, "cfg"),
                (Kind::Secret, "from"),
                (Kind::Secret, "pull"),
                (Kind::Secret, "s1"),
                (Kind::Secret, "s2"),
            ]
        );
    }
}
