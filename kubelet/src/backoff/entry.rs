//! A per-key exponential back-off table (the kubelet's `flowcontrol.Backoff`
//! without jitter).

use super::{Clock, BACKOFF_RESET_AFTER};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Timestamp,
}

/// Exponential back-off per key: `initial`, doubling, capped at `max`; an
/// entry whose last update is more than `reset_after` before the event being
/// judged starts over.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    entries: HashMap<String, Entry>,
    clock: Arc<dyn Clock>,
}

fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    let d: SignedDuration = to.duration_since(from);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

impl Backoff {
    /// A table with the given initial delay and cap, reset after 600 s.
    pub fn new(initial: Duration, max: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            initial,
            max,
            reset_after: BACKOFF_RESET_AFTER,
            entries: HashMap::new(),
            clock,
        }
    }

    /// The container restart table: 10 s doubling to 300 s.
    pub fn for_containers(clock: Arc<dyn Clock>) -> Self {
        Self::new(
            super::CONTAINER_BACKOFF_INITIAL,
            super::CONTAINER_BACKOFF_MAX,
            clock,
        )
    }

    /// The image pull table: 10 s doubling to 300 s.
    pub fn for_images(clock: Arc<dyn Clock>) -> Self {
        Self::new(
            super::IMAGE_BACKOFF_INITIAL,
            super::IMAGE_BACKOFF_MAX,
            clock,
        )
    }

    /// The clock this table reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn expired(&self, event_time: Timestamp, entry: &Entry) -> bool {
        // Go's eventTime.Sub(lastUpdate) > 600s; negative differences never expire.
        elapsed(entry.last_update, event_time) > self.reset_after
    }

    /// Records a failure of `key` that happened at `event_time`: a new or
    /// expired entry starts at the initial delay, otherwise the delay doubles
    /// up to the cap. The entry's update time is now.
    pub fn next(&mut self, key: &str, event_time: Timestamp) {
        let now = self.clock.now();
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(event_time, e) => (e.backoff * 2).min(self.max),
            _ => self.initial.min(self.max),
        };
        self.entries.insert(
            key.to_owned(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// The current delay of `key` (zero when it has no entry).
    pub fn get(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(Duration::ZERO, |e| e.backoff)
    }

    /// True while less than the current delay has passed since `event_time`
    /// (upstream `IsInBackOffSince`).
    pub fn is_in_backoff_since(&self, key: &str, event_time: Timestamp) -> bool {
        self.remaining_since(key, event_time).is_some()
    }

    /// How long until the back-off window that started at `event_time` ends,
    /// or `None` when `key` is not backing off.
    pub fn remaining_since(&self, key: &str, event_time: Timestamp) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(event_time, e) {
            return None;
        }
        let since = elapsed(event_time, self.clock.now());
        e.backoff.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// True while less than the current delay has passed since the entry's
    /// last update (upstream `IsInBackOffSinceUpdate`, used for image pulls).
    pub fn is_in_backoff_since_update(&self, key: &str) -> bool {
        self.remaining_since_update(key).is_some()
    }

    /// How long until the window that started at the last update ends.
    pub fn remaining_since_update(&self, key: &str) -> Option<Duration> {
        let e = self.entries.get(key)?;
        let now = self.clock.now();
        if self.expired(now, e) {
            return None;
        }
        e.backoff
            .checked_sub(elapsed(e.last_update, now))
            .filter(|d| !d.is_zero())
    }

    /// Forgets `key` (e.g. when its pod is removed).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Drops every entry not updated for twice the cap (upstream `GC`).
    pub fn gc(&mut self) {
        let now = self.clock.now();
        let limit = self.max * 2;
        self.entries
            .retain(|_, e| elapsed(e.last_update, now) <= limit);
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::TestClock;

    fn table() -> (TestClock, Backoff) {
        let clock = TestClock::at_secs(1_000_000);
        let b = Backoff::for_images(Arc::new(clock.clone()));
        (clock, b)
    }

    #[test]
    fn doubles_to_the_cap() {
        let (clock, mut b) = table();
        let mut seen = vec![];
        for _ in 0..8 {
            b.next("k", clock.now());
            seen.push(b.get("k").as_secs());
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn window_since_event() {
        let (clock, mut b) = table();
        let t0 = clock.now();
        assert!(!b.is_in_backoff_since("k", t0));
        b.next("k", t0);
        assert!(b.is_in_backoff_since("k", t0));
        clock.advance(Duration::from_secs(9));
        assert_eq!(b.remaining_since("k", t0), Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert!(!b.is_in_backoff_since("k", t0));
    }

    #[test]
    fn since_update_for_images() {
        let (clock, mut b) = table();
        b.next("img", clock.now());
        assert!(b.is_in_backoff_since_update("img"));
        clock.advance(Duration::from_secs(10));
        assert!(!b.is_in_backoff_since_update("img"));
        b.next("img", clock.now());
        assert_eq!(
            b.remaining_since_update("img"),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn resets_after_ten_quiet_minutes() {
        let (clock, mut b) = table();
        b.next("k", clock.now());
        b.next("k", clock.now());
        assert_eq!(b.get("k"), Duration::from_secs(20));
        clock.advance(Duration::from_secs(600));
        b.next("k", clock.now());
        assert_eq!(
            b.get("k"),
            Duration::from_secs(40),
            "exactly 600 s is not expired"
        );
        clock.advance(Duration::from_secs(601));
        assert!(!b.is_in_backoff_since("k", clock.now()));
        b.next("k", clock.now());
        assert_eq!(b.get("k"), Duration::from_secs(10));
    }

    #[test]
    fn gc_and_reset() {
        let (clock, mut b) = table();
        b.next("a", clock.now());
        clock.advance(Duration::from_secs(500));
        b.next("b", clock.now());
        clock.advance(Duration::from_secs(101));
        b.gc();
        assert_eq!(b.len(), 1);
        b.reset("b");
        assert!(b.is_empty());
    }
}
