//! `?watch=1`: a stream of JSON events, one per line, as upstream's watch cache serves them.
//!
//! From `resourceVersion` R: every retained change after R, then the live ones; without R (or
//! R = "0"): an ADDED per current object, then the live changes. R older than the retained window
//! answers 200 with one ERROR event carrying a 410 Expired Status
//! (`too old resource version: R (oldest-1)`), as the watch cache does; R newer than the store
//! (a stand-in restarted empty) an ERROR event with upstream's 504 `Too large resource version`
//! (the watch cache first waits up to 3 s for itself to catch up; this store cannot lag). Selectors apply to the
//! object before and after each change, so an object leaving the selection is a DELETED and
//! one entering it an ADDED. `allowWatchBookmarks` adds a BOOKMARK (the object's kind with only
//! `metadata.resourceVersion`) every bookmark interval; `timeoutSeconds` ends the stream
//! (default: upstream's 1800 s minimum request timeout). `sendInitialEvents=true` (a streaming
//! list; with `allowWatchBookmarks=true` and `resourceVersionMatch=NotOlderThan`, else 422 as
//! upstream) sends the current objects as ADDED, then a BOOKMARK annotated
//! `k8s.io/initial-events-end: "true"`, then the changes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::handler::{Query, Selectors, Shared, Target, Want};
use super::resources::Resource;
use super::status::ApiError;
use super::store::{Change, EventType, WatchFromError};
use super::table;

/// Starts a watch: the lines are sent on the returned receiver until the watch ends (timeout,
/// the client gone, or the watcher falling too far behind, which upstream also ends).
pub fn start(
    shared: Arc<Shared>,
    t: &Target,
    q: &Query,
    want: Want,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let res = t.resource();
    let sel = Selectors::from(res, q)?;
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let asked = q.get("resourceVersion").cloned().unwrap_or_default();
    let streaming = matches!(
        q.get("sendInitialEvents").map(String::as_str),
        Some("true" | "1")
    );
    if streaming {
        check_streaming(q, bookmarks)?;
    }
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let w = Watcher {
        res,
        res_idx: t.res,
        ns: t.ns.clone(),
        sel,
        want,
        last_rv: 0,
    };
    let (initial, live) = {
        let store = shared.lock();
        if streaming || asked.is_empty() || asked == "0" {
            let objs = store.list(t.res, t.ns.as_deref());
            let lines: Vec<Bytes> = objs
                .iter()
                .filter(|o| w.sel.matches(res, o))
                .map(|o| w.line("ADDED", o))
                .collect();
            (Ok((lines, store.rv())), store.subscribe())
        } else {
            let rv: u64 = asked.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion: Invalid value: \"{asked}\": must be a non-negative integer"
                ))
            })?;
            match store.watch_from(rv) {
                Ok((past, live)) => {
                    let mut w2 = w.clone_empty();
                    let lines = past.iter().filter_map(|c| w2.event(c)).collect();
                    (Ok((lines, rv.max(w2.last_rv))), live)
                }
                Err(WatchFromError::Expired(oldest)) => {
                    (Err(ApiError::expired(rv, oldest)), store.subscribe())
                }
                Err(WatchFromError::TooLarge(current)) => {
                    (Err(ApiError::too_large(rv, current)), store.subscribe())
                }
            }
        }
    };
    let initial = initial.map(|(mut lines, rv)| {
        if streaming {
            lines.push(w.initial_events_end(rv));
        }
        (lines, rv)
    });
    tokio::spawn(run(shared, w, initial, live, tx, timeout, bookmarks));
    Ok(rx)
}

/// `sendInitialEvents` (a streaming list) needs bookmarks and `resourceVersionMatch=NotOlderThan`,
/// as upstream's `ValidateListOptions` requires.
fn check_streaming(q: &Query, bookmarks: bool) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
        causes.push((
            "resourceVersionMatch",
            "FieldValueForbidden",
            "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                .to_string(),
        ));
    }
    if !bookmarks {
        causes.push((
            "allowWatchBookmarks",
            "FieldValueRequired",
            "Required value: sendInitialEvents requires setting allowWatchBookmarks to true"
                .to_string(),
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
    Err(ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "ListOptions.meta.k8s.io \"\" is invalid: {}",
            text.join(", ")
        ),
        details: Some(json!({
            "group": "meta.k8s.io",
            "kind": "ListOptions",
            "causes": causes.iter().map(|(f, r, m)| json!({"reason": r, "message": m, "field": f})).collect::<Vec<_>>(),
        })),
    })
}

#[derive(Debug)]
struct Watcher {
    res: &'static Resource,
    res_idx: usize,
    ns: Option<String>,
    sel: Selectors,
    want: Want,
    last_rv: u64,
}

impl Watcher {
    fn clone_empty(&self) -> Watcher {
        Watcher {
            res: self.res,
            res_idx: self.res_idx,
            ns: self.ns.clone(),
            sel: self.sel.clone(),
            want: self.want,
            last_rv: 0,
        }
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.want.table {
            let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
            table::table(self.res, std::slice::from_ref(obj), rv, self.want.include)
        } else {
            obj.clone()
        };
        let mut s = json!({ "type": kind, "object": object }).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    /// The line a change makes for this watch, if any.
    fn event(&mut self, c: &Change) -> Option<Bytes> {
        if c.key.0 != self.res_idx || self.ns.as_deref().is_some_and(|ns| ns != c.key.1) {
            return None;
        }
        self.last_rv = c.rv;
        let now = c.kind != EventType::Deleted && self.sel.matches(self.res, &c.object);
        let before = c
            .previous
            .as_ref()
            .is_some_and(|p| self.sel.matches(self.res, p));
        match c.kind {
            EventType::Added if now => Some(self.line("ADDED", &c.object)),
            EventType::Modified if now && before => Some(self.line("MODIFIED", &c.object)),
            EventType::Modified if now => Some(self.line("ADDED", &c.object)),
            EventType::Modified if before => {
                let mut old = c.previous.clone().unwrap_or_default();
                old["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                Some(self.line("DELETED", &old))
            }
            EventType::Deleted if before => Some(self.line("DELETED", &c.object)),
            _ => None,
        }
    }

    /// The bookmark that ends a streaming list's initial events.
    fn initial_events_end(&self, rv: u64) -> Bytes {
        let mut s = json!({
            "type": "BOOKMARK",
            "object": {
                "kind": self.res.kind,
                "apiVersion": self.res.api_version(),
                "metadata": {
                    "resourceVersion": rv.to_string(),
                    "annotations": { "k8s.io/initial-events-end": "true" },
                },
            },
        })
        .to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64) -> Bytes {
        let mut s = json!({
            "type": "BOOKMARK",
            "object": {
                "kind": self.res.kind,
                "apiVersion": self.res.api_version(),
                "metadata": { "resourceVersion": rv.to_string() },
            },
        })
        .to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

async fn run(
    shared: Arc<Shared>,
    mut w: Watcher,
    initial: Result<(Vec<Bytes>, u64), ApiError>,
    mut live: broadcast::Receiver<Arc<Change>>,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
    bookmarks: bool,
) {
    let (lines, start_rv) = match initial {
        Ok(x) => x,
        Err(e) => {
            let mut s = json!({"type": "ERROR", "object": e.to_status()}).to_string();
            s.push('\n');
            let _ = tx.send(Bytes::from(s)).await;
            return;
        }
    };
    for l in lines {
        if tx.send(l).await.is_err() {
            return;
        }
    }
    w.last_rv = start_rv;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(shared.bookmark_interval);
    tick.reset();
    loop {
        // biased: a due bookmark or change goes out before the deadline ends the watch, also on a
        // machine too busy to wake us in time
        tokio::select! {
            biased;
            _ = tx.closed() => return,
            _ = tick.tick(), if bookmarks => {
                // every change up to the store's version is already queued on `live`
                let rv = shared.lock().rv();
                loop {
                    match live.try_recv() {
                        Ok(c) => {
                            if let Some(l) = w.event(&c) {
                                if tx.send(l).await.is_err() { return; }
                            }
                        }
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(_) => return,
                    }
                }
                let rv = rv.max(w.last_rv);
                w.last_rv = rv;
                if tx.send(w.bookmark(rv)).await.is_err() { return; }
            }
            c = live.recv() => match c {
                Ok(c) => {
                    if c.rv <= start_rv { continue; }
                    if let Some(l) = w.event(&c) {
                        if tx.send(l).await.is_err() { return; }
                    }
                }
                // lagged or closed: end the watch, the client re-lists or re-watches
                Err(_) => return,
            },
            _ = &mut deadline => return,
        }
    }
}
