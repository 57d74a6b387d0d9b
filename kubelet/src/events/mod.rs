//! Kubernetes events recorded by the agent: `Pulling`, `Started`,
//! `BackOff`, ... Identical events (same object, type, reason and message)
//! aggregate into one with a count and first/last timestamps, as the
//! upstream event correlator's `EventLogger` does; similar ones (same object, type and reason)
//! with [`AGGREGATE_MAX_EVENTS`] different messages within [`AGGREGATE_INTERVAL`] become one
//! event "(combined from similar events): MESSAGE" whose count rises (its `EventAggregator`); only the most recent [`DEFAULT_CAPACITY`]
//! are kept in memory. In cluster mode a sink ([`Recorder::set_sink`]) also receives every
//! occurrence, for `cluster::events` to write to the API server; recording stays synchronous.

mod display;

pub use display::{describe_event, event_row, EventRow, DESCRIBE_EVENT_COLUMNS, EVENT_COLUMNS};

use crate::backoff::Clock;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubenode_fsutil::lock;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// How many events are kept by default.
pub const DEFAULT_CAPACITY: usize = 1000;
/// The `source.component` of every event.
pub const COMPONENT: &str = "kubelet";

/// Event reasons used by the kubelet (upstream `pkg/kubelet/events`).
#[allow(missing_docs, reason = "the names are the upstream constants")]
pub mod reason {
    pub const PULLING: &str = "Pulling";
    pub const PULLED: &str = "Pulled";
    pub const FAILED: &str = "Failed";
    pub const BACK_OFF: &str = "BackOff";
    pub const INSPECT_FAILED: &str = "InspectFailed";
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    pub const CREATED: &str = "Created";
    pub const STARTED: &str = "Started";
    pub const KILLING: &str = "Killing";
    pub const PREEMPTING: &str = "Preempting";
    pub const EXCEEDED_GRACE_PERIOD: &str = "ExceededGracePeriod";
    pub const UNHEALTHY: &str = "Unhealthy";
    pub const PROBE_WARNING: &str = "ProbeWarning";
    pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
    pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
    pub const FAILED_MOUNT: &str = "FailedMount";
    pub const SANDBOX_CHANGED: &str = "SandboxChanged";
    pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
    pub const FAILED_KILL_POD: &str = "FailedKillPod";
    pub const NETWORK_NOT_READY: &str = "NetworkNotReady";
    pub const OUT_OF_PODS: &str = "OutOfpods";
    pub const FAILED_VALIDATION: &str = "FailedValidation";
    pub const INVALID_MANIFEST: &str = "InvalidManifest";
    pub const STARTING: &str = "Starting";
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Nothing wrong.
    Normal,
    /// Something an operator should look at.
    Warning,
}

impl EventType {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ObjectRef {
    /// `Pod` or `Node`.
    pub kind: String,
    /// Namespace (empty for a node).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (empty when unknown).
    pub uid: String,
    /// `spec.containers{NAME}` when about one container.
    pub field_path: String,
}

impl ObjectRef {
    /// The pod itself.
    pub fn pod(pod: &Pod) -> Self {
        Self {
            kind: "Pod".into(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path: String::new(),
        }
    }

    /// A container of the pod (`spec.containers{NAME}`, `spec.initContainers{NAME}` or
    /// `spec.ephemeralContainers{NAME}`, as upstream `GenerateContainerRef`).
    pub fn container(pod: &Pod, container: &str) -> Self {
        let spec = pod.spec.as_ref();
        let list = if spec
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|ics| ics.iter().any(|c| c.name == container))
        {
            "initContainers"
        } else if spec
            .and_then(|s| s.ephemeral_containers.as_ref())
            .is_some_and(|ecs| ecs.iter().any(|c| c.name == container))
        {
            "ephemeralContainers"
        } else {
            "containers"
        };
        Self {
            field_path: format!("spec.{list}{{{container}}}"),
            ..Self::pod(pod)
        }
    }

    /// The node (for events not tied to a pod, e.g. a bad manifest).
    pub fn node(name: &str) -> Self {
        Self {
            kind: "Node".into(),
            name: name.into(),
            uid: name.into(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    object: ObjectRef,
    type_: EventType,
    reason: String,
    message: String,
    /// The aggregate of similar events (upstream's `aggregateKey`): `message` and the object's
    /// field path are empty.
    aggregate: bool,
}

/// Similar events (upstream `aggregateRecord`): the distinct messages seen and when the last
/// one was.
#[derive(Debug)]
struct Similar {
    messages: std::collections::HashSet<String>,
    last: k8s_openapi::jiff::Timestamp,
}

/// Distinct messages of similar events that make them aggregate (upstream
/// `defaultAggregateMaxEvents`).
pub const AGGREGATE_MAX_EVENTS: usize = 10;
/// How long similar events are remembered after the last one (upstream
/// `defaultAggregateIntervalInSeconds`).
pub const AGGREGATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// The aggregated event's message prefix (upstream `EventAggregatorByReasonMessageFunc`).
pub const AGGREGATE_PREFIX: &str = "(combined from similar events): ";
/// Similar-event records kept at most (upstream's LRU cache, `maxLruCacheEntries`).
const AGGREGATE_CACHE: usize = 4096;

#[derive(Debug)]
struct State {
    seq: u64,
    by_key: HashMap<Key, u64>,
    events: BTreeMap<u64, Event>,
    /// Similar events by object, type and reason (the aggregator's cache).
    similar: HashMap<Key, Similar>,
    sink: Option<tokio::sync::mpsc::Sender<Event>>,
    /// Occurrences the sink's full queue dropped since the last warning.
    dropped: u64,
}

/// Upstream `EventAggregate`'s bookkeeping: records `key`'s message among its similar events
/// (same object, type and reason) and says whether the occurrence is to be aggregated (this
/// makes [`AGGREGATE_MAX_EVENTS`] distinct messages within [`AGGREGATE_INTERVAL`] of each
/// other). As upstream, one message is then forgotten (the set does not grow past the limit).
fn aggregate(
    similar: &mut HashMap<Key, Similar>,
    key: &Key,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    let agg = Key {
        object: ObjectRef {
            field_path: String::new(),
            ..key.object.clone()
        },
        message: String::new(),
        aggregate: true,
        ..key.clone()
    };
    if !similar.contains_key(&agg) && similar.len() >= AGGREGATE_CACHE {
        if let Some(oldest) = similar
            .iter()
            .min_by_key(|(_, r)| r.last)
            .map(|(k, _)| k.clone())
        {
            similar.remove(&oldest);
        }
    }
    let record = similar.entry(agg).or_insert_with(|| Similar {
        messages: std::collections::HashSet::new(),
        last: now,
    });
    let interval = now.duration_since(record.last);
    if interval.as_secs_f64() > AGGREGATE_INTERVAL.as_secs_f64() {
        record.messages.clear();
    }
    record.messages.insert(key.message.clone());
    record.last = now;
    if record.messages.len() < AGGREGATE_MAX_EVENTS {
        return false;
    }
    if let Some(any) = record.messages.iter().next().cloned() {
        record.messages.remove(&any);
    }
    true
}

/// Occurrences queued for the sink at most (upstream's broadcaster queue, `maxQueuedEvents`);
/// more are dropped while it is full.
pub const SINK_QUEUE: usize = 1000;

/// Records events, aggregating repeats; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Recorder {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    host: String,
    capacity: usize,
}

impl Recorder {
    /// A recorder for node `host` keeping the last [`DEFAULT_CAPACITY`] events.
    pub fn new(host: &str, clock: Arc<dyn Clock>) -> Self {
        Self::with_capacity(host, clock, DEFAULT_CAPACITY)
    }

    /// A recorder keeping at most `capacity` events.
    pub fn with_capacity(host: &str, clock: Arc<dyn Clock>, capacity: usize) -> Self {
        let state = State {
            seq: 0,
            by_key: HashMap::new(),
            events: BTreeMap::new(),
            similar: HashMap::new(),
            sink: None,
            dropped: 0,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            clock,
            host: host.into(),
            capacity: capacity.max(1),
        }
    }

    /// Records one event (and logs it: warnings at `warn`, others at `info`).
    pub fn record(
        &self,
        object: &ObjectRef,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.record_annotated(object, BTreeMap::new(), type_, reason, message);
    }

    /// Records one event with `annotations` in its metadata (upstream `AnnotatedEventf`; the
    /// eviction manager's `Evicted` event). A repeat keeps the first occurrence's annotations,
    /// as upstream's correlator patches only the count, last time and message.
    pub fn record_annotated(
        &self,
        object: &ObjectRef,
        annotations: BTreeMap<String, String>,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let message = message.into();
        match type_ {
            EventType::Warning => tracing::warn!(object = %object, reason, "{message}"),
            EventType::Normal => tracing::info!(object = %object, reason, "{message}"),
        }
        let now = Time(self.clock.now());
        let mut key = Key {
            object: object.clone(),
            type_,
            reason: reason.into(),
            message,
            aggregate: false,
        };
        let mut st = lock(&self.state, "events");
        st.seq += 1;
        let seq = st.seq;
        // Upstream's EventAggregator first: the tenth distinct message of similar events
        // within the interval turns this occurrence into the aggregate event.
        let combined = aggregate(&mut st.similar, &key, now.0);
        if combined {
            key = Key {
                object: ObjectRef {
                    field_path: String::new(),
                    ..key.object
                },
                message: format!("{AGGREGATE_PREFIX}{}", key.message),
                ..key
            };
        }
        let lookup = Key {
            aggregate: combined,
            message: if combined {
                String::new()
            } else {
                key.message.clone()
            },
            ..key.clone()
        };
        // Then its EventLogger: a known event (identical, or the aggregate) counts up.
        let event = match st.by_key.get(&lookup).copied() {
            Some(old) => {
                let mut ev = st.events.remove(&old).unwrap_or_default();
                ev.count = Some(ev.count.unwrap_or(1) + 1);
                ev.last_timestamp = Some(now);
                if combined {
                    ev.message = Some(key.message.clone());
                    ev.involved_object.field_path =
                        (!object.field_path.is_empty()).then(|| object.field_path.clone());
                }
                ev
            }
            None => {
                let mut ev = self.new_event(&key, now);
                ev.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
                ev.involved_object.field_path =
                    (!object.field_path.is_empty()).then(|| object.field_path.clone());
                ev
            }
        };
        let key = lookup;
        st.by_key.insert(key, seq);
        if let Some(sink) = &st.sink {
            match sink.try_send(event.clone()) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    st.dropped += 1;
                    if st.dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped = st.dropped,
                            "the event queue to the API server is full: events dropped"
                        );
                    }
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => st.sink = None,
            }
        }
        st.events.insert(seq, event);
        while st.events.len() > self.capacity {
            let Some((&oldest, _)) = st.events.iter().next() else {
                break;
            };
            st.events.remove(&oldest);
            st.by_key.retain(|_, s| *s != oldest);
        }
    }

    /// From now on, also sends every occurrence (a new event with count 1, or an aggregated one
    /// with its count and last time) to `sink`, without waiting: while its queue is full
    /// occurrences are dropped (and counted in a warning), as upstream's broadcaster does.
    pub fn set_sink(&self, sink: tokio::sync::mpsc::Sender<Event>) {
        let mut st = lock(&self.state, "events");
        st.sink = Some(sink);
        st.dropped = 0;
    }

    /// A `Normal` event.
    pub fn normal(&self, object: &ObjectRef, reason: &str, message: impl Into<String>) {
        self.record(object, EventType::Normal, reason, message);
    }

    /// A `Warning` event.
    pub fn warning(&self, object: &ObjectRef, reason: &str, message: impl Into<String>) {
        self.record(object, EventType::Warning, reason, message);
    }

    /// A `Warning` event with annotations ([`Recorder::record_annotated`]).
    pub fn annotated_warning(
        &self,
        object: &ObjectRef,
        annotations: BTreeMap<String, String>,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.record_annotated(object, annotations, EventType::Warning, reason, message);
    }

    fn new_event(&self, key: &Key, now: Time) -> Event {
        let o = &key.object;
        let nanos = now.0.as_nanosecond();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", o.name, nanos)),
                namespace: Some(if o.namespace.is_empty() {
                    "default".into()
                } else {
                    o.namespace.clone()
                }),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some(o.kind.clone()),
                namespace: (!o.namespace.is_empty()).then(|| o.namespace.clone()),
                name: Some(o.name.clone()),
                uid: (!o.uid.is_empty()).then(|| o.uid.clone()),
                field_path: (!o.field_path.is_empty()).then(|| o.field_path.clone()),
                ..ObjectReference::default()
            },
            reason: Some(key.reason.clone()),
            message: Some(key.message.clone()),
            type_: Some(key.type_.as_str().into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: Some(self.host.clone()),
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.host.clone()),
            ..Event::default()
        }
    }

    /// Every kept event, oldest (by last occurrence) first.
    pub fn list(&self) -> Vec<Event> {
        let st = lock(&self.state, "events");
        st.events.values().cloned().collect()
    }

    /// The kept events about the object with this UID.
    pub fn for_uid(&self, uid: &str) -> Vec<Event> {
        self.list()
            .into_iter()
            .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
            .collect()
    }

    /// Number of kept events.
    pub fn len(&self) -> usize {
        lock(&self.state, "events").events.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for ObjectRef {
    /// `Kind/ns/name[:fieldPath]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)?;
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)?;
        }
        if !self.field_path.is_empty() {
            write!(f, ":{}", self.field_path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::TestClock;
    use crate::testing;
    use std::time::Duration;

    fn pod() -> Pod {
        testing::pod()
            .name("web-n1")
            .namespace("default")
            .uid("u1")
            .init_containers([testing::container("init")])
            .containers([testing::container("app")])
            .build()
    }

    #[test]
    fn aggregates_identical_events() {
        let clock = TestClock::at_secs(1_700_000_000);
        let r = Recorder::new("n1", Arc::new(clock.clone()));
        let c = ObjectRef::container(&pod(), "app");
        assert_eq!(c.field_path, "spec.containers{app}");
        assert_eq!(
            ObjectRef::container(&pod(), "init").field_path,
            "spec.initContainers{init}"
        );
        r.warning(
            &c,
            reason::BACK_OFF,
            "Back-off restarting failed container app in pod web-n1_default(u1)",
        );
        clock.advance(Duration::from_secs(10));
        r.normal(&c, reason::STARTED, "Started container app");
        clock.advance(Duration::from_secs(10));
        r.warning(
            &c,
            reason::BACK_OFF,
            "Back-off restarting failed container app in pod web-n1_default(u1)",
        );
        let evs = r.list();
        assert_eq!(evs.len(), 2);
        let backoff = &evs[1];
        assert_eq!(backoff.reason.as_deref(), Some("BackOff"));
        assert_eq!(backoff.type_.as_deref(), Some("Warning"));
        assert_eq!(backoff.count, Some(2));
        let first = backoff.first_timestamp.as_ref().unwrap().0.as_second();
        let last = backoff.last_timestamp.as_ref().unwrap().0.as_second();
        assert_eq!(last - first, 20);
        assert_eq!(
            backoff.involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(backoff.source.as_ref().unwrap().host.as_deref(), Some("n1"));
        assert!(backoff
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("web-n1."));
        assert_eq!(r.for_uid("u1").len(), 2);
        assert!(r.for_uid("other").is_empty());
    }

    #[test]
    fn annotations_go_into_the_event_and_reach_the_sink() {
        let r = Recorder::new("n1", Arc::new(TestClock::at_secs(1_700_000_000)));
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        r.set_sink(tx);
        let annotations: BTreeMap<String, String> =
            [("starved_resource".to_string(), "memory".to_string())].into();
        r.annotated_warning(
            &ObjectRef::pod(&pod()),
            annotations.clone(),
            "Evicted",
            "low",
        );
        let sent = rx.try_recv().unwrap();
        assert_eq!(sent.metadata.annotations.as_ref(), Some(&annotations));
        assert_eq!(sent.reason.as_deref(), Some("Evicted"));
        assert_eq!(
            r.list()[0].metadata.annotations.as_ref(),
            Some(&annotations)
        );
        // A plain event has none.
        r.normal(&ObjectRef::pod(&pod()), reason::STARTED, "x");
        assert_eq!(rx.try_recv().unwrap().metadata.annotations, None);
    }

    /// Upstream's EventAggregator: similar events (same object, type and reason) with ten
    /// distinct messages within ten minutes become one "(combined from similar events)" event
    /// whose count rises, sent to the sink as a repeat of that one event.
    #[test]
    fn similar_events_are_combined() {
        let clock = TestClock::at_secs(1_700_000_000);
        let r = Recorder::new("n1", Arc::new(clock.clone()));
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        r.set_sink(tx);
        let c = ObjectRef::container(&pod(), "app");
        for i in 0..9 {
            r.warning(&c, reason::FAILED, format!("Error: attempt {i}"));
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(r.list().len(), 9, "nine distinct messages: nine events");
        r.warning(&c, reason::FAILED, "Error: attempt 9");
        let evs = r.list();
        assert_eq!(evs.len(), 10);
        let combined = evs.last().unwrap();
        assert_eq!(
            combined.message.as_deref(),
            Some("(combined from similar events): Error: attempt 9")
        );
        assert_eq!(combined.count, Some(1));
        assert_eq!(combined.reason.as_deref(), Some("Failed"));
        // More similar events: the same aggregate, counted, with the latest message.
        clock.advance(Duration::from_secs(1));
        r.warning(&c, reason::FAILED, "Error: attempt 10");
        let evs = r.list();
        assert_eq!(evs.len(), 10);
        let again = evs.last().unwrap();
        assert_eq!(again.metadata.name, combined.metadata.name);
        assert_eq!(again.count, Some(2));
        assert_eq!(
            again.message.as_deref(),
            Some("(combined from similar events): Error: attempt 10")
        );
        let mut sent = Vec::new();
        while let Ok(e) = rx.try_recv() {
            sent.push(e);
        }
        assert_eq!(sent.len(), 11);
        assert_eq!(sent[10].count, Some(2), "sent as a repeat (PATCHed)");
        assert_eq!(sent[10].metadata.name, combined.metadata.name);
        // Another reason, or another object, is not similar.
        r.warning(&c, reason::BACK_OFF, "Back-off 1");
        assert_eq!(
            r.list().last().unwrap().message.as_deref(),
            Some("Back-off 1")
        );
        // Ten minutes without a similar event: the record starts again.
        clock.advance(Duration::from_secs(601));
        r.warning(&c, reason::FAILED, "Error: attempt 11");
        assert_eq!(
            r.list().last().unwrap().message.as_deref(),
            Some("Error: attempt 11")
        );
    }

    #[test]
    fn sink_gets_every_occurrence_without_blocking() {
        let clock = TestClock::at_secs(1_700_000_000);
        let r = Recorder::new("n1", Arc::new(clock.clone()));
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        r.set_sink(tx);
        let node = ObjectRef::node("n1");
        r.warning(&node, reason::INVALID_MANIFEST, "bad");
        clock.advance(Duration::from_secs(5));
        r.warning(&node, reason::INVALID_MANIFEST, "bad");
        // The queue is full: dropped, never blocking; kept locally all the same.
        r.warning(&node, reason::INVALID_MANIFEST, "bad");
        let first = rx.try_recv().unwrap();
        let second = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err());
        assert_eq!(first.count, Some(1));
        assert_eq!(second.count, Some(2));
        assert_eq!(first.metadata.name, second.metadata.name);
        assert_eq!(r.list()[0].count, Some(3));
        // A closed sink is forgotten.
        drop(rx);
        r.normal(&node, reason::STARTING, "Starting kubelet.");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn bounded() {
        let clock = TestClock::at_secs(1_700_000_000);
        let r = Recorder::with_capacity("n1", Arc::new(clock), 3);
        let node = ObjectRef::node("n1");
        for i in 0..5 {
            r.warning(&node, reason::INVALID_MANIFEST, format!("bad {i}"));
        }
        let msgs: Vec<_> = r.list().into_iter().map(|e| e.message.unwrap()).collect();
        assert_eq!(msgs, vec!["bad 2", "bad 3", "bad 4"]);
        // An evicted event comes back as new.
        r.warning(&node, reason::INVALID_MANIFEST, "bad 0");
        assert_eq!(r.list().last().unwrap().count, Some(1));
        assert_eq!(r.len(), 3);
    }
}
