//! The wall clock as a trait, so back-off and events can be tested without
//! sleeping.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kubenode_fsutil::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct TestClock {
    now: Arc<Mutex<Timestamp>>,
}

impl TestClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock stopped at the given number of seconds after the Unix epoch.
    pub fn at_secs(secs: i64) -> Self {
        Self::new(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.now, "test clock");
        let delta = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        *now = now.checked_add(delta).unwrap_or(Timestamp::MAX);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: Timestamp) {
        *lock(&self.now, "test clock") = to;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *lock(&self.now, "test clock")
    }
}
