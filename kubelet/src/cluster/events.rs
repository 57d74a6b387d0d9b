//! The kubelet's events written to the API server as core/v1 Events (upstream
//! `client-go/tools/record`: the broadcaster's sink, `recordToSink`, and the correlator's
//! `EventSourceObjectSpamFilter`).
//!
//! The [`Recorder`](crate::events::Recorder) stays synchronous: in cluster mode it sends every
//! occurrence into a bounded channel ([`Recorder::set_sink`](crate::events::Recorder::set_sink))
//! that [`run`] drains. Each occurrence first passes the spam filter ([`SpamFilter`]: a token
//! bucket per source and involved object, burst 25, one token per 5 min; over it the
//! occurrence is dropped, as upstream's). A new event (count 1) is POSTed; a repeat (the
//! recorder's aggregation of identical events: same name, count and lastTimestamp moved) is
//! PATCHed with its count, lastTimestamp and message, and POSTed when the API server no longer
//! has it. A transport error is retried up to [`MAX_TRIES`] times, [`RETRY_INTERVAL`] apart;
//! an answer from the server (AlreadyExists, Invalid, ...) is final, as upstream.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// The spam filter's burst per source and object (upstream `defaultSpamBurst`).
pub const SPAM_BURST: f64 = 25.0;
/// The spam filter's refill: one event per this long (upstream `defaultSpamQPS` 1/300).
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Buckets kept at most (upstream's LRU cache of `maxLruCacheEntries`).
pub const SPAM_CACHE: usize = 4096;
/// Write attempts per event (upstream `maxTriesPerEvent`).
pub const MAX_TRIES: usize = 12;
/// The wait between two attempts (upstream `defaultSleepDuration`).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Upstream's `getSpamKey`: the source and the involved object.
fn spam_key(e: &Event) -> String {
    let source = e.source.as_ref();
    let o = &e.involved_object;
    [
        source.and_then(|s| s.component.as_deref()),
        source.and_then(|s| s.host.as_deref()),
        o.kind.as_deref(),
        o.namespace.as_deref(),
        o.name.as_deref(),
        o.uid.as_deref(),
        o.api_version.as_deref(),
    ]
    .iter()
    .map(|p| p.unwrap_or_default())
    .collect()
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Timestamp,
}

/// Upstream's `EventSourceObjectSpamFilter`: a token bucket per source and involved object.
#[derive(Debug, Default)]
pub struct SpamFilter {
    buckets: HashMap<String, Bucket>,
}

impl SpamFilter {
    /// A filter with no history.
    pub fn new() -> SpamFilter {
        SpamFilter::default()
    }

    /// Whether `event`, occurring at `now`, may be written (takes a token when it may).
    pub fn allow(&mut self, event: &Event, now: Timestamp) -> bool {
        let key = spam_key(event);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= SPAM_CACHE {
            // The least recently used bucket goes, as from upstream's LRU cache.
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| k.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: SPAM_BURST,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64().max(0.0);
        bucket.tokens = (bucket.tokens + elapsed / SPAM_REFILL.as_secs_f64()).min(SPAM_BURST);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The patch of a repeated event (upstream's two-way merge patch of count, lastTimestamp and
/// message).
pub fn repeat_patch(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "count": e.count,
        "lastTimestamp": e.last_timestamp,
        "message": e.message,
    })
}

/// What one write attempt came to.
enum Outcome {
    /// Written, or refused by the server: nothing more to do.
    Done,
    /// Not reached: try again.
    Retry(kube::Error),
}

/// One attempt (upstream `recordEvent`): PATCH a repeat, POST a new event or a repeat the
/// server no longer has.
async fn write(client: &kube::Client, event: &Event) -> Outcome {
    let ns = event.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let name = event.metadata.name.clone().unwrap_or_default();
    if event.count.unwrap_or(1) > 1 {
        match api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(repeat_patch(event)),
            )
            .await
        {
            Ok(_) => return Outcome::Done,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(kube::Error::Api(s)) => {
                tracing::debug!(event = %name, error = %s, "the server refused the event (not retried)");
                return Outcome::Done;
            }
            Err(e) => return Outcome::Retry(e),
        }
    }
    let mut event = event.clone();
    event.metadata.resource_version = None;
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => Outcome::Done,
        Err(kube::Error::Api(s)) => {
            tracing::debug!(event = %name, error = %s, "the server refused the event (not retried)");
            Outcome::Done
        }
        Err(e) => Outcome::Retry(e),
    }
}

/// Writes the events of `events` (the recorder's sink) to the API server until the channel
/// closes.
pub async fn run(client: kube::Client, mut events: tokio::sync::mpsc::Receiver<Event>) {
    let mut filter = SpamFilter::new();
    while let Some(event) = events.recv().await {
        if !filter.allow(&event, Timestamp::now()) {
            tracing::debug!(event = ?event.metadata.name, "event dropped by the spam filter");
            continue;
        }
        for attempt in 1..=MAX_TRIES {
            match write(&client, &event).await {
                Outcome::Done => break,
                Outcome::Retry(e) if attempt == MAX_TRIES => {
                    tracing::warn!(event = ?event.metadata.name, error = %e, "unable to write an event to the API server: dropped after {MAX_TRIES} tries");
                }
                Outcome::Retry(e) => {
                    tracing::debug!(event = ?event.metadata.name, error = %e, attempt, "writing an event to the API server");
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn event(name: &str, reason: &str) -> Event {
        Event {
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("default".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                api_version: Some("v1".into()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("n1".into()),
            }),
            ..Event::default()
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn burst_of_25_per_object_then_one_per_five_minutes() {
        let mut f = SpamFilter::new();
        // Any reason counts against the same object.
        let allowed = (0..30)
            .filter(|i| f.allow(&event("a", &format!("R{i}")), at(1000)))
            .count();
        assert_eq!(allowed, 25);
        // Another object has its own bucket.
        assert!(f.allow(&event("b", "R"), at(1000)));
        // A token comes back after 5 minutes, not before.
        assert!(!f.allow(&event("a", "R"), at(1000 + 299)));
        assert!(f.allow(&event("a", "R"), at(1000 + 299 + 300)));
        assert!(!f.allow(&event("a", "R"), at(1000 + 299 + 300)));
        // A long quiet time refills no more than the burst.
        let later = 1000 + 100 * 300;
        let allowed = (0..30)
            .filter(|_| f.allow(&event("a", "R"), at(later)))
            .count();
        assert_eq!(allowed, 25);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut f = SpamFilter::new();
        for i in 0..SPAM_CACHE + 10 {
            assert!(f.allow(&event(&format!("p{i}"), "R"), at(i as i64)));
        }
        assert_eq!(f.buckets.len(), SPAM_CACHE);
    }

    #[test]
    fn a_repeat_patches_count_time_and_message() {
        let mut e = event("a", "BackOff");
        e.count = Some(3);
        e.message = Some("Back-off".into());
        e.last_timestamp = Some(Time(at(1000)));
        assert_eq!(
            repeat_patch(&e),
            serde_json::json!({"count": 3, "lastTimestamp": "1970-01-01T00:16:40Z", "message": "Back-off"})
        );
    }
}
