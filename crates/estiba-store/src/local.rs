//! The in-memory state shared by the local backends: the key space, the revision counter,
//! recent history for watches that start in the past, and transaction evaluation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::{
    Compare, Event, EventKind, KeyValue, Op, RangeResponse, Result, Revision, StoreError, Txn, TxnResponse, Watch,
    WatchBatch,
};

/// How many committed revisions are kept for watches that start in the past, and how many
/// events they may hold together (one transaction can hold hundreds; each event keeps its key
/// and the value it wrote alive).
const HISTORY: usize = 16_384;
const HISTORY_EVENTS: usize = 16_384;
/// Buffer per watcher; a watcher that falls further behind gets `Compacted`.
const WATCH_BUFFER: usize = 1024;

/// Events of consecutive revisions committed together.
#[derive(Debug)]
pub(crate) struct Commit {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// A key's value and counters as the map keeps them (the key is the map's own).
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
}

impl Stored {
    fn kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

impl From<&KeyValue> for Stored {
    fn from(kv: &KeyValue) -> Self {
        Stored {
            value: kv.value.clone(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    map: BTreeMap<String, Stored>,
    pub revision: Revision,
    history: VecDeque<Arc<Commit>>,
    /// Events held by `history`.
    history_events: usize,
}

pub(crate) struct Local {
    pub state: RwLock<State>,
    feed: broadcast::Sender<Arc<Commit>>,
}

/// Changes computed for a group of transactions before they are made durable.
#[derive(Default)]
pub(crate) struct Pending {
    /// Key → new value (None = deleted), for keys written in this group.
    pub writes: HashMap<String, Option<KeyValue>>,
    pub events: Vec<Event>,
    pub revision: Revision,
}

impl Local {
    /// A key space loaded from a backend's file.
    pub fn new(kvs: impl IntoIterator<Item = KeyValue>, revision: Revision) -> Self {
        let (feed, _) = broadcast::channel(WATCH_BUFFER);
        let map = kvs.into_iter().map(|kv| (kv.key.clone(), Stored::from(&kv))).collect();
        Local { state: RwLock::new(State { map, revision, ..Default::default() }), feed }
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.state.read().unwrap().map.get(key).map(|s| s.kv(key))
    }

    pub fn range(&self, prefix: &str) -> RangeResponse {
        let st = self.state.read().unwrap();
        let kvs = st
            .map
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| v.kv(k))
            .collect();
        RangeResponse { kvs, revision: st.revision }
    }

    pub fn revision(&self) -> Revision {
        self.state.read().unwrap().revision
    }

    /// Evaluates `txn` against the committed state plus the group's pending writes, and if it
    /// holds, records its writes in `pending` under the next revision.
    pub fn evaluate(&self, st: &State, pending: &mut Pending, txn: &Txn) -> TxnResponse {
        if pending.revision == 0 {
            pending.revision = st.revision;
        }
        // A key's (create revision, mod revision, version), pending writes first.
        let current = |key: &str, pending: &Pending| -> Option<(Revision, Revision, i64)> {
            match pending.writes.get(key) {
                Some(v) => v.as_ref().map(|kv| (kv.create_revision, kv.mod_revision, kv.version)),
                None => st.map.get(key).map(|s| (s.create_revision, s.mod_revision, s.version)),
            }
        };
        let holds = txn.compares.iter().all(|c| match c {
            Compare::ModRevision { key, revision } => current(key, pending).map_or(0, |(_, m, _)| m) == *revision,
        });
        if !holds {
            return TxnResponse { succeeded: false, revision: pending.revision };
        }
        if txn.ops.is_empty() {
            return TxnResponse { succeeded: true, revision: pending.revision };
        }
        pending.revision += 1;
        let rev = pending.revision;
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    let prev = current(key, pending);
                    let kv = KeyValue {
                        key: key.clone(),
                        // A copy of exactly its length: the value lives as long as the key,
                        // and a caller's buffer (serde_json's grows by doubling) can be
                        // almost twice as large.
                        value: Bytes::copy_from_slice(value),
                        create_revision: prev.map_or(rev, |(c, _, _)| c),
                        mod_revision: rev,
                        version: prev.map_or(1, |(_, _, v)| v + 1),
                    };
                    pending.events.push(Event { kind: EventKind::Put, kv: kv.clone() });
                    pending.writes.insert(key.clone(), Some(kv));
                }
                Op::Delete { key } => {
                    if current(key, pending).is_some() {
                        pending.events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: key.clone(),
                                value: Bytes::new(),
                                create_revision: 0,
                                mod_revision: rev,
                                version: 0,
                            },
                        });
                        pending.writes.insert(key.clone(), None);
                    }
                }
            }
        }
        TxnResponse { succeeded: true, revision: rev }
    }

    /// Makes a durable group visible: updates the map, the revision and history, and wakes
    /// watchers.
    pub fn publish(&self, st: &mut State, pending: Pending) {
        if pending.events.is_empty() {
            return;
        }
        for (key, v) in pending.writes {
            match v {
                Some(kv) => {
                    st.map.insert(key, Stored::from(&kv));
                }
                None => {
                    st.map.remove(&key);
                }
            }
        }
        st.revision = pending.revision;
        let commit = Arc::new(Commit { revision: pending.revision, events: pending.events });
        st.history_events += commit.events.len();
        st.history.push_back(commit.clone());
        while st.history.len() > 1 && (st.history.len() > HISTORY || st.history_events > HISTORY_EVENTS) {
            if let Some(c) = st.history.pop_front() {
                st.history_events -= c.events.len();
            }
        }
        let _ = self.feed.send(commit);
    }

    /// The commits after `after`, from history; `Compacted` when history no longer reaches
    /// back that far.
    fn history_after(&self, after: Revision) -> Result<Vec<Arc<Commit>>> {
        let st = self.state.read().unwrap();
        let oldest_kept =
            st.history.front().map_or(st.revision + 1, |c| c.events.first().map_or(c.revision, |e| e.kv.mod_revision));
        if after + 1 < oldest_kept && after < st.revision {
            return Err(StoreError::Compacted { requested: after, oldest: oldest_kept });
        }
        Ok(st.history.iter().filter(|c| c.revision > after).cloned().collect())
    }

    pub fn watch(self: &Arc<Self>, prefix: &str, after: Revision) -> Result<Watch> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        // Subscribe before reading history so no commit falls between the two.
        let mut live = self.feed.subscribe();
        let backlog = self.history_after(after)?;
        let prefix = prefix.to_owned();
        let local = self.clone();
        tokio::spawn(async move {
            let mut seen = after;
            let send = |c: &Commit, seen: &mut Revision| {
                let events: Vec<Event> = c
                    .events
                    .iter()
                    .filter(|e| e.kv.mod_revision > *seen && e.kv.key.starts_with(&prefix))
                    .cloned()
                    .collect();
                *seen = (*seen).max(c.revision);
                (!events.is_empty()).then(|| WatchBatch { revision: c.revision, events })
            };
            for c in backlog {
                if let Some(b) = send(&c, &mut seen) {
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                match live.recv().await {
                    Ok(c) => {
                        if c.revision <= seen {
                            continue;
                        }
                        if let Some(b) = send(&c, &mut seen) {
                            if tx.send(Ok(b)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // The live feed moved on without us: catch up from history, which
                        // reaches much further back, and carry on with the feed.
                        match local.history_after(seen) {
                            Ok(missed) => {
                                for c in missed {
                                    if let Some(b) = send(&c, &mut seen) {
                                        if tx.send(Ok(b)).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }

                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Watch::new(rx))
    }

    /// Applies one transaction immediately (no durability step): used by the memory backend.
    pub fn apply_now(&self, txn: &Txn) -> TxnResponse {
        let mut st = self.state.write().unwrap();
        let mut pending = Pending::default();
        let resp = self.evaluate(&st, &mut pending, txn);
        self.publish(&mut st, pending);
        resp
    }
}
