//! How kubectl shows events: the `kubectl get events` row (upstream
//! `printEvent`) and the `Events:` table of `kubectl describe`.

use crate::duration::human_duration;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;

/// Column headers of `kubectl get events`.
pub const EVENT_COLUMNS: [&str; 5] = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
/// Column headers of the `Events:` section of `describe`.
pub const DESCRIBE_EVENT_COLUMNS: [&str; 5] = ["Type", "Reason", "Age", "From", "Message"];

/// One row of `kubectl get events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// LAST SEEN
    pub last_seen: String,
    /// TYPE
    pub type_: String,
    /// REASON
    pub reason: String,
    /// OBJECT, `kind/name` in lower-case kind
    pub object: String,
    /// MESSAGE
    pub message: String,
}

fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(
        || "<unknown>".into(),
        |t| human_duration(now.as_second() - t.as_second()),
    )
}

/// The `kubectl get events` row of `e` at `now`.
pub fn event_row(e: &Event, now: Timestamp) -> EventRow {
    let first = e.first_timestamp.as_ref().map(|t| t.0);
    let last = e.last_timestamp.as_ref().map(|t| t.0).or(first);
    let o = &e.involved_object;
    let kind = o.kind.clone().unwrap_or_default().to_lowercase();
    let object = match o.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("{kind}/{n}"),
        None => kind,
    };
    EventRow {
        last_seen: since(last, now),
        type_: e.type_.clone().unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        object,
        message: e.message.clone().unwrap_or_default().trim().to_owned(),
    }
}

/// The cells of one line of `describe`'s `Events:` table: type, reason,
/// age (`5m (x3 over 10m)` when repeated), source and message.
pub fn describe_event(e: &Event, now: Timestamp) -> [String; 5] {
    let first = e.first_timestamp.as_ref().map(|t| t.0);
    let last = e.last_timestamp.as_ref().map(|t| t.0);
    let count = e.count.unwrap_or(1);
    let age = if count > 1 {
        format!("{} (x{count} over {})", since(last, now), since(first, now))
    } else {
        since(first, now)
    };
    let src = e.source.as_ref();
    let from = match (
        src.and_then(|s| s.component.as_deref()),
        src.and_then(|s| s.host.as_deref()),
    ) {
        (Some(c), Some(h)) if !h.is_empty() => format!("{c}, {h}"),
        (Some(c), _) => c.to_owned(),
        _ => e.reporting_component.clone().unwrap_or_default(),
    };
    [
        e.type_.clone().unwrap_or_default(),
        e.reason.clone().unwrap_or_default(),
        age,
        from,
        e.message.clone().unwrap_or_default().trim().to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::{Clock, TestClock};
    use crate::events::{reason, ObjectRef, Recorder};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn rows_as_kubectl() {
        let clock = TestClock::at_secs(1_700_000_000);
        let r = Recorder::new("n1", Arc::new(clock.clone()));
        let obj = ObjectRef {
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "web-n1".into(),
            uid: "u".into(),
            field_path: "spec.containers{app}".into(),
        };
        r.warning(
            &obj,
            reason::BACK_OFF,
            "Back-off restarting failed container app in pod web-n1_default(u) ",
        );
        clock.advance(Duration::from_secs(400));
        r.warning(
            &obj,
            reason::BACK_OFF,
            "Back-off restarting failed container app in pod web-n1_default(u) ",
        );
        clock.advance(Duration::from_secs(100));
        r.normal(
            &ObjectRef::node("n1"),
            reason::STARTING,
            "Starting kubenode.",
        );
        clock.advance(Duration::from_secs(30));
        let now = clock.now();
        let evs = r.list();
        let row = event_row(&evs[0], now);
        assert_eq!(
            row,
            EventRow {
                last_seen: "2m10s".into(),
                type_: "Warning".into(),
                reason: "BackOff".into(),
                object: "pod/web-n1".into(),
                message: "Back-off restarting failed container app in pod web-n1_default(u)".into(),
            }
        );
        assert_eq!(event_row(&evs[1], now).object, "node/n1");
        let d = describe_event(&evs[0], now);
        assert_eq!(d[2], "2m10s (x2 over 8m50s)");
        assert_eq!(d[3], "kubelet, n1");
        assert_eq!(describe_event(&evs[1], now)[2], "30s");
    }
}
