//! The crash-loop decision for one container, as upstream `doBackOff`.

use super::Backoff;
use crate::duration::format_duration;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// The stable key of a container in the back-off table: pod name,
/// namespace, UID and container name (upstream `getStableKey`, without the
/// spec hash: a changed spec is a new UID for static pods).
pub fn container_backoff_key(namespace: &str, pod: &str, uid: &str, container: &str) -> String {
    format!("{pod}_{namespace}_{uid}_{container}")
}

/// The waiting message of a container in `CrashLoopBackOff`:
/// `back-off 20s restarting failed container=NAME pod=NAME_NS(UID)`.
pub fn crash_loop_message(
    delay: Duration,
    container: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={pod}_{namespace}({uid})",
        format_duration(delay)
    )
}

/// What to do with an exited container that its restart policy restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start it now.
    Restart,
    /// Wait: the container is in `CrashLoopBackOff`.
    BackOff {
        /// The current back-off delay (shown in the message).
        delay: Duration,
        /// Time left until the restart may happen (for the requeue).
        remaining: Duration,
    },
}

/// Container restart back-off: the first restart after a crash is
/// immediate; later ones wait 10 s, 20 s, ... up to 300 s, counted from the
/// exited container's finish time; an entry resets after 600 s without a
/// crash.
#[derive(Debug)]
pub struct CrashBackoff {
    table: Backoff,
}

impl CrashBackoff {
    /// A crash back-off over the container table (10 s → 300 s).
    pub fn new(clock: std::sync::Arc<dyn super::Clock>) -> Self {
        Self {
            table: Backoff::for_containers(clock),
        }
    }

    /// Decides for the container identified by `key` that exited at
    /// `finished_at`. When it may restart, the failure is recorded so the
    /// next crash waits longer (upstream: `backOff.Next(key, finishedAt)`).
    pub fn decide(&mut self, key: &str, finished_at: Timestamp) -> RestartDecision {
        if let Some(remaining) = self.table.remaining_since(key, finished_at) {
            return RestartDecision::BackOff {
                delay: self.table.get(key),
                remaining,
            };
        }
        self.table.next(key, finished_at);
        RestartDecision::Restart
    }

    /// Forgets a container (its pod is gone).
    pub fn forget(&mut self, key: &str) {
        self.table.reset(key);
    }

    /// Drops stale entries.
    pub fn gc(&mut self) {
        self.table.gc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::{Clock, TestClock};
    use std::sync::Arc;

    #[test]
    fn message_as_upstream() {
        assert_eq!(
            crash_loop_message(
                Duration::from_secs(20),
                "app",
                "web-node1",
                "default",
                "abc"
            ),
            "back-off 20s restarting failed container=app pod=web-node1_default(abc)"
        );
        assert_eq!(
            crash_loop_message(Duration::from_secs(300), "a", "p", "ns", "u"),
            "back-off 5m0s restarting failed container=a pod=p_ns(u)"
        );
    }

    /// A container that crashes one second after each start.
    #[test]
    fn crash_loop_timeline() {
        let clock = TestClock::at_secs(1_700_000_000);
        let mut b = CrashBackoff::new(Arc::new(clock.clone()));
        let key = container_backoff_key("default", "web", "u1", "app");
        let mut waits = vec![];
        for _ in 0..8 {
            clock.advance(Duration::from_secs(1)); // runs one second, crashes
            let finished = clock.now();
            let mut waited = 0;
            loop {
                match b.decide(&key, finished) {
                    RestartDecision::Restart => break,
                    RestartDecision::BackOff { remaining, .. } => {
                        clock.advance(remaining);
                        waited += remaining.as_secs();
                    }
                }
            }
            waits.push(waited);
        }
        assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn backoff_reports_delay_and_resets_after_quiet_period() {
        let clock = TestClock::at_secs(1_700_000_000);
        let mut b = CrashBackoff::new(Arc::new(clock.clone()));
        assert_eq!(b.decide("k", clock.now()), RestartDecision::Restart);
        clock.advance(Duration::from_secs(2));
        let crashed = clock.now();
        assert_eq!(
            b.decide("k", crashed),
            RestartDecision::BackOff {
                delay: Duration::from_secs(10),
                remaining: Duration::from_secs(10)
            }
        );
        clock.advance(Duration::from_secs(4));
        assert_eq!(
            b.decide("k", crashed),
            RestartDecision::BackOff {
                delay: Duration::from_secs(10),
                remaining: Duration::from_secs(6)
            }
        );
        clock.advance(Duration::from_secs(6));
        assert_eq!(b.decide("k", crashed), RestartDecision::Restart);
        // Runs fine for more than 10 minutes, then crashes: immediate again.
        clock.advance(Duration::from_secs(700));
        assert_eq!(b.decide("k", clock.now()), RestartDecision::Restart);
        b.forget("k");
        b.gc();
    }
}
