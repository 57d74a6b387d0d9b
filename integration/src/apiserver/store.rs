//! The object store: objects in memory, one global `resourceVersion` counter as etcd's revision,
//! a bounded history of changes (the watch cache's window) and a broadcast of every change to
//! the open watches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// Where an object lives: resource index in `RESOURCES`, namespace (`""` for cluster-scoped),
/// name.
pub type Key = (usize, String, String);

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion it made.
    pub rv: u64,
    /// What changed.
    pub key: Key,
    /// Added, modified or deleted.
    pub kind: EventType,
    /// The object after the change (for a deletion: the last state, with the deletion's rv).
    pub object: Value,
    /// The object before the change (for selectors: an object that leaves a selector is a
    /// DELETED to that watch, one that enters it an ADDED).
    pub previous: Option<Value>,
}

/// Why a watch cannot start from a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFromError {
    /// Older than the history kept; carries the newest version dropped.
    Expired(u64),
    /// Newer than the store; carries the store's version.
    TooLarge(u64),
}

/// The store proper, behind the server's mutex.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    window: usize,
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

impl Store {
    /// An empty store keeping the last `window` changes for watches.
    pub fn new(window: usize) -> Store {
        let (tx, _) = broadcast::channel(4096);
        Store {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            window: window.max(1),
            compacted: 0,
            tx,
        }
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The next resourceVersion (to stamp an object before [`Store::commit`]).
    pub fn next_rv(&self) -> u64 {
        self.rv + 1
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// The objects of resource `res` (in namespace `ns` when given), ordered by namespace, name.
    pub fn list(&self, res: usize, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), _)| *r == res && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Records a change: `object` is stored (or removed for `Deleted`) under `key`; it must
    /// already carry `metadata.resourceVersion` = [`Store::next_rv`].
    pub fn commit(&mut self, key: Key, kind: EventType, object: Value) {
        self.rv += 1;
        let previous = match kind {
            EventType::Deleted => self.objects.remove(&key),
            _ => self.objects.insert(key.clone(), object.clone()),
        };
        let change = Arc::new(Change {
            rv: self.rv,
            key,
            kind,
            object,
            previous,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.window {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = self.tx.send(change);
    }

    /// The changes after `rv` and a receiver for the ones to come, taken atomically; an error
    /// when `rv` is older than the window (410 Gone) or newer than the store (a store that
    /// restarted empty, or a client from another server).
    #[allow(clippy::type_complexity)] // a pair read once by the watch handler
    pub fn watch_from(
        &self,
        rv: u64,
    ) -> Result<(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>), WatchFromError> {
        if rv < self.compacted {
            return Err(WatchFromError::Expired(self.compacted));
        }
        if rv > self.rv {
            return Err(WatchFromError::TooLarge(self.rv));
        }
        let past = self.history.iter().filter(|c| c.rv > rv).cloned().collect();
        Ok((past, self.tx.subscribe()))
    }

    /// A receiver for the changes after now.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// The number of open watches.
    pub fn watch_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Forgets the whole history (etcd compaction): every watch from an older version is a 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> Key {
        (2, "default".into(), name.into())
    }

    #[test]
    fn versions_history_window_and_compaction() {
        let mut s = Store::new(3);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            assert_eq!(s.next_rv(), i as u64 + 1);
            s.commit(key(name), EventType::Added, json!({"n": name}));
        }
        assert_eq!(s.rv(), 4);
        // the window keeps changes 2..=4: a watch from 1 still sees everything after it
        let (past, _) = s.watch_from(1).unwrap();
        assert_eq!(past.iter().map(|c| c.rv).collect::<Vec<_>>(), [2, 3, 4]);
        // from 0 it would need change 1, which is gone
        assert_eq!(s.watch_from(0).err(), Some(WatchFromError::Expired(1)));
        s.commit(key("a"), EventType::Deleted, json!({"n": "a"}));
        assert!(s.get(&key("a")).is_none());
        assert_eq!(s.list(2, Some("default")).len(), 3);
        assert_eq!(s.list(2, Some("other")).len(), 0);
        s.compact();
        assert_eq!(s.watch_from(4).err(), Some(WatchFromError::Expired(5)));
        assert_eq!(s.watch_from(6).err(), Some(WatchFromError::TooLarge(5)));
        assert!(s.watch_from(5).unwrap().0.is_empty());
    }

    #[test]
    fn a_change_carries_the_previous_object() {
        let mut s = Store::new(10);
        let mut rx = s.subscribe();
        s.commit(key("a"), EventType::Added, json!({"v": 1}));
        s.commit(key("a"), EventType::Modified, json!({"v": 2}));
        let first = rx.try_recv().unwrap();
        assert!(first.previous.is_none());
        let second = rx.try_recv().unwrap();
        assert_eq!(second.previous, Some(json!({"v": 1})));
        assert_eq!(second.object, json!({"v": 2}));
        assert_eq!(s.watch_count(), 1);
    }
}
