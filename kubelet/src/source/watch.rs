//! Watching the manifest directory: inotify for prompt changes plus a full
//! re-read every `fileCheckFrequency`, delivering a [`Snapshot`] whenever
//! what was read differs from the last one delivered.

use super::{ManifestCache, NamedRead, ServiceChanges, Snapshot, CONFIG_SEEN_ANNOTATION};
use crate::backoff::{Clock, SystemClock};
use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest wait after an event that leaves a file half-written (`CREATE`,
/// `MODIFY`) for the event that completes it, so that a burst of events (an
/// editor's save, a `cp` of many files) is one read. A completing event
/// (`CLOSE_WRITE`, `MOVED_TO`, a removal) is read at once.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Events after which the directory can be read at once: a file was written
/// and closed, renamed into place, or removed.
fn completes(mask: inotify::EventMask) -> bool {
    use inotify::EventMask as M;
    mask.intersects(M::CLOSE_WRITE | M::MOVED_TO | M::MOVED_FROM | M::DELETE | M::ATTRIB)
}

/// Whether a read could see what the event reports: events about files the read skips (names
/// starting with `.`, such as an editor's swap file or a temporary file renamed into place
/// later) are not worth a read; events about the directory itself are.
fn concerns_a_manifest(name: Option<&std::ffi::OsStr>) -> bool {
    name.is_none_or(|n| !n.as_encoded_bytes().starts_with(b"."))
}

/// Whether the event says the directory itself is gone (the watch must be
/// made again).
fn dir_gone(ev: &Option<std::io::Result<inotify::Event<std::ffi::OsString>>>) -> bool {
    use inotify::EventMask as M;
    ev.as_ref().is_none_or(|r| {
        r.as_ref().map_or(true, |ev| {
            ev.mask
                .intersects(M::DELETE_SELF | M::MOVE_SELF | M::IGNORED)
        })
    })
}

/// Reads the manifest directory and remembers when each pod UID was first
/// seen, so that `kubernetes.io/config.seen` is stable across reads.
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    node_name: String,
    period: Duration,
    clock: Arc<dyn Clock>,
    /// First read of each pod (by UID) and of each Service and Endpoints (by
    /// `kind/namespace/name`): their `creationTimestamp`, as an API server would
    /// have set it.
    seen: HashMap<String, Timestamp>,
    /// Each file's parsed objects, so that a read parses only changed files.
    cache: ManifestCache,
    /// Where Service and Endpoints changes go (see [`Watcher::subscribe_changes`]).
    changes: Option<mpsc::UnboundedSender<ServiceChanges>>,
}

impl Watcher {
    /// A watcher of `dir` for node `node_name`, re-reading every `period`.
    pub fn new(dir: PathBuf, node_name: String, period: Duration) -> Self {
        Self::with_clock(dir, node_name, period, Arc::new(SystemClock))
    }

    /// As [`Watcher::new`] with an injected clock.
    pub fn with_clock(
        dir: PathBuf,
        node_name: String,
        period: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            dir,
            node_name,
            period,
            clock,
            seen: HashMap::new(),
            cache: ManifestCache::new(),
            changes: None,
        }
    }

    /// Files parsed so far (a read parses only the files that changed).
    pub fn parses(&self) -> u64 {
        self.cache.parses()
    }

    /// From now on, [`Watcher::run`] also sends what changed among Services and Endpoints: the
    /// whole set with the first snapshot, then only the objects added, changed or removed by
    /// each later one, in order and without loss (for the proxy, which then reprograms only
    /// those).
    pub fn subscribe_changes(&mut self) -> mpsc::UnboundedReceiver<ServiceChanges> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.changes = Some(tx);
        rx
    }

    /// One full read; pods keep the `config.seen` time of their first read.
    pub fn read_once(&mut self) -> Snapshot {
        let now = self.clock.now();
        let snap = self.cache.read(
            &self.dir,
            &self.node_name,
            now,
            std::time::SystemTime::now(),
        );
        self.stamp(snap, now)
    }

    /// Gives each object the time of its first read: pods in `creationTimestamp` and the
    /// `config.seen` annotation, Services, Endpoints, ConfigMaps and Secrets in
    /// `creationTimestamp`.
    fn stamp(&mut self, mut snap: Snapshot, now: Timestamp) -> Snapshot {
        // First read of each object still present: pods by UID, Services and Endpoints by
        // `kind/namespace/name`.
        let mut still = HashMap::new();
        let mut first_seen = |key: String| {
            *still
                .entry(key.clone())
                .or_insert_with(|| *self.seen.get(&key).unwrap_or(&now))
        };
        for pod in &mut snap.pods {
            let pod = Arc::make_mut(pod);
            let first = first_seen(pod.metadata.uid.clone().unwrap_or_default());
            pod.metadata.creation_timestamp = Some(Time(first));
            if let Some(a) = pod.metadata.annotations.as_mut() {
                a.insert(
                    CONFIG_SEEN_ANNOTATION.into(),
                    super::defaults::format_seen(first),
                );
            }
        }
        let metas = snap
            .services
            .iter_mut()
            .map(|s| ("Service", &mut s.metadata))
            .chain(
                snap.endpoints
                    .iter_mut()
                    .map(|e| ("Endpoints", &mut e.metadata)),
            )
            .chain(
                Arc::make_mut(&mut snap.config_maps)
                    .iter_mut()
                    .map(|c| ("ConfigMap", &mut c.metadata)),
            )
            .chain(
                Arc::make_mut(&mut snap.secrets)
                    .iter_mut()
                    .map(|s| ("Secret", &mut s.metadata)),
            );
        for (kind, meta) in metas {
            let first = first_seen(seen_key(kind, meta));
            meta.creation_timestamp.get_or_insert(Time(first));
        }
        self.seen = still;
        snap
    }

    fn watch_dir(&self) -> Option<inotify::EventStream<Vec<u8>>> {
        let inotify = Inotify::init()
            .map_err(
                |e| tracing::warn!(error = %e, "inotify unavailable; relying on periodic re-reads"),
            )
            .ok()?;
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::CLOSE_WRITE
            | WatchMask::MODIFY
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::ATTRIB
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        if let Err(e) = inotify.watches().add(&self.dir, mask) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "cannot watch manifest directory yet");
            return None;
        }
        inotify.into_event_stream(vec![0u8; 4096]).ok()
    }

    /// Delivers the first snapshot at once, then a new one whenever a read (after an inotify
    /// event, or every period) differs from the last delivered. After an event that names files,
    /// only those are read (the period's full read catches anything no event reported). With a
    /// [`Watcher::subscribe_changes`] subscriber, a change that only edits Services and Endpoints
    /// in place (same names, same files) goes to the subscriber alone: the snapshots' pods and
    /// errors did not change. Returns when the receiver is dropped.
    pub async fn run(mut self, tx: mpsc::Sender<Snapshot>) {
        let mut last = self.read_once();
        log_errors(&last);
        if self.changes.is_some() {
            self.send_changes(ServiceChanges::everything(&last));
        }
        if tx.send(last.clone()).await.is_err() {
            return;
        }
        let mut stream = self.watch_dir();
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            // The files named by the events, or `None` for a full read.
            let mut names: Option<Vec<std::ffi::OsString>> = None;
            match stream.as_mut() {
                Some(s) => tokio::select! {
                    ev = s.next() => {
                        // Settle: a half-written file waits (bounded) for the event that
                        // completes it; a completing event is read at once. Events that only
                        // concern files the read skips lead to no read.
                        let mut ev = ev;
                        let mut named = Vec::new();
                        let mut full = false;
                        let deadline = tokio::time::Instant::now() + DEBOUNCE;
                        loop {
                            if dir_gone(&ev) {
                                stream = None;
                                full = true;
                                break;
                            }
                            let event = ev.as_ref().and_then(|r| r.as_ref().ok());
                            match event.map(|e| e.name.as_ref()) {
                                Some(Some(name)) if concerns_a_manifest(Some(name)) => {
                                    named.push(name.clone());
                                }
                                Some(Some(_)) => {}
                                // An error, or an event without a name (the directory itself, a
                                // queue overflow), may hide any change.
                                _ => full = true,
                            }
                            let worth_a_read = full || !named.is_empty();
                            if worth_a_read && event.is_some_and(|e| completes(e.mask)) {
                                break;
                            }
                            match tokio::time::timeout_at(deadline, s.next()).await {
                                Ok(next) => ev = next,
                                Err(_) => break,
                            }
                        }
                        if !full {
                            if named.is_empty() {
                                continue;
                            }
                            names = Some(named);
                        }
                    }
                    _ = tick.tick() => {}
                    _ = tx.closed() => return,
                },
                None => tokio::select! {
                    _ = tick.tick() => {}
                    _ = tx.closed() => return,
                },
            }
            if stream.is_none() {
                stream = self.watch_dir();
            }
            let read_started = std::time::Instant::now();
            let now = self.clock.now();
            let wall = std::time::SystemTime::now();
            let (outcome, full_read) = match &names {
                Some(names) => (
                    self.cache
                        .read_named(&self.dir, names, &self.node_name, now, wall),
                    None,
                ),
                None => match self
                    .cache
                    .read_if_changed(&self.dir, &self.node_name, now, wall)
                {
                    Some(snap) => (NamedRead::Changed, Some(snap)),
                    None => (NamedRead::Unchanged, None),
                },
            };
            tracing::debug!(
                read_ms = read_started.elapsed().as_secs_f64() * 1000.0,
                files = names.as_ref().map(Vec::len),
                in_place = matches!(outcome, NamedRead::InPlace { .. }),
                "read manifest directory"
            );
            let snap = match outcome {
                NamedRead::Unchanged => continue,
                NamedRead::InPlace {
                    services,
                    endpoints,
                } => match self.put_in_place(&mut last, services, endpoints) {
                    Some(changes) if self.changes.is_some() => {
                        if !changes.is_empty() {
                            self.send_changes(changes);
                        }
                        tracing::debug!(
                            total_ms = read_started.elapsed().as_secs_f64() * 1000.0,
                            "manifest changes handed over"
                        );
                        continue;
                    }
                    Some(_) => last.clone(),
                    None => self.stamp(self.cache.snapshot(), now),
                },
                NamedRead::Changed => {
                    let snap = full_read.unwrap_or_else(|| self.cache.snapshot());
                    self.stamp(snap, now)
                }
            };
            // Unchanged ConfigMaps and Secrets keep the last allocation: the kubelet then
            // knows them unchanged without comparing them (`Objects::set_files`).
            let mut snap = snap;
            if snap.config_maps == last.config_maps {
                snap.config_maps = last.config_maps.clone();
            }
            if snap.secrets == last.secrets {
                snap.secrets = last.secrets.clone();
            }
            if snap != last {
                log_errors(&snap);
                if self.changes.is_some() {
                    let changes = ServiceChanges::between(&last, &snap);
                    if !changes.is_empty() {
                        self.send_changes(changes);
                    }
                }
                tracing::debug!(
                    total_ms = read_started.elapsed().as_secs_f64() * 1000.0,
                    "manifest changes handed over"
                );
                last = snap.clone();
                if tx.send(snap).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Puts Services and Endpoints changed in place into `last`: each replaces the object of
    /// its name and gets the `creationTimestamp` a full read would give it. The changes, or
    /// `None` (and `last` untouched) when one of them has no object of its name in `last`.
    fn put_in_place(
        &self,
        last: &mut Snapshot,
        mut services: Vec<Service>,
        mut endpoints: Vec<Endpoints>,
    ) -> Option<ServiceChanges> {
        let at_services = places(&last.services, &services, |s| &s.metadata)?;
        let at_endpoints = places(&last.endpoints, &endpoints, |e| &e.metadata)?;
        let metas = services
            .iter_mut()
            .map(|s| ("Service", &mut s.metadata))
            .chain(endpoints.iter_mut().map(|e| ("Endpoints", &mut e.metadata)));
        for (kind, meta) in metas {
            let key = seen_key(kind, meta);
            if let Some(first) = self.seen.get(&key) {
                meta.creation_timestamp.get_or_insert(Time(*first));
            }
        }
        for (svc, i) in services.iter().zip(at_services) {
            last.services[i] = svc.clone();
        }
        for (ep, i) in endpoints.iter().zip(at_endpoints) {
            last.endpoints[i] = ep.clone();
        }
        Some(ServiceChanges {
            full: false,
            services,
            endpoints,
            ..ServiceChanges::default()
        })
    }
}

/// The place in `last` of the object of each of `changed`'s names, or `None` when one is not
/// there.
fn places<T>(last: &[T], changed: &[T], meta: fn(&T) -> &ObjectMeta) -> Option<Vec<usize>> {
    changed
        .iter()
        .map(|c| {
            let (ns, name) = (&meta(c).namespace, &meta(c).name);
            last.iter()
                .position(|l| &meta(l).namespace == ns && &meta(l).name == name)
        })
        .collect()
}

/// The key of a Service's or Endpoints' first read in [`Watcher`]'s `seen`.
fn seen_key(kind: &str, meta: &ObjectMeta) -> String {
    format!(
        "{kind}/{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl Watcher {
    fn send_changes(&mut self, changes: ServiceChanges) {
        if let Some(tx) = &self.changes {
            if tx.send(changes).is_err() {
                self.changes = None;
            }
        }
    }
}

fn log_errors(snap: &Snapshot) {
    for e in &snap.errors {
        tracing::warn!(file = %e.file.display(), document = ?e.document, "invalid manifest: {e}");
    }
}

/// Spawns a [`Watcher`] of `dir` on the current tokio runtime and returns
/// the receiving end of its snapshots.
pub fn watch(dir: PathBuf, node_name: String, period: Duration) -> mpsc::Receiver<Snapshot> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(Watcher::new(dir, node_name, period).run(tx));
    rx
}

#[cfg(test)]
mod tests {
    use super::concerns_a_manifest;
    use std::ffi::OsStr;

    #[test]
    fn events_about_skipped_files_are_not_worth_a_read() {
        assert!(concerns_a_manifest(Some(OsStr::new("web.yaml"))));
        assert!(concerns_a_manifest(Some(OsStr::new("web.yaml.swp"))));
        assert!(!concerns_a_manifest(Some(OsStr::new(".web.yaml.tmp"))));
        assert!(!concerns_a_manifest(Some(OsStr::new(".web.yaml.swp"))));
        // The directory itself (no name), or a queue overflow.
        assert!(concerns_a_manifest(None));
    }
}
