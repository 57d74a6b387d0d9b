//! `activeDeadlineSeconds`, as upstream's `activeDeadlineHandler`
//! (`pkg/kubelet/active_deadline.go`): once the pod has been active on the node longer than
//! its deadline, counted from its start time, the kubelet kills it and the pod becomes
//! `Failed` with reason `DeadlineExceeded`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// Upstream's pod status reason and event reason.
pub(super) const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// Upstream's pod status message and event message.
pub(super) const DEADLINE_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";

/// Time left before the pod's deadline: `None` when it has none (or has not started),
/// `Some(ZERO)` when it has passed (upstream: `now - start >= deadline`).
pub(super) fn time_left(pod: &Pod, start: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let seconds = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = start?;
    let deadline = Duration::from_secs(u64::try_from(seconds).ok()?);
    let active = Duration::try_from(now.duration_since(start)).unwrap_or(Duration::ZERO);
    Some(deadline.saturating_sub(active))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(deadline: Option<i64>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                active_deadline_seconds: deadline,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn deadline_counts_from_the_start_time() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| start + k8s_openapi::jiff::SignedDuration::from_secs(s);
        assert_eq!(
            time_left(&pod(Some(30)), Some(start), at(10)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            time_left(&pod(Some(30)), Some(start), at(30)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            time_left(&pod(Some(30)), Some(start), at(31)),
            Some(Duration::ZERO)
        );
        assert_eq!(time_left(&pod(None), Some(start), at(31)), None);
        assert_eq!(time_left(&pod(Some(30)), None, at(31)), None);
    }
}
