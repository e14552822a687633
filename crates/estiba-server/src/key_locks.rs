//! Per-key locks within one server process, for writes that many of its own requests would
//! otherwise race for in the store ([`crate::Server::transact_locked`]): on etcd every placement
//! on a container instance compares and rewrites the instance's document
//! ([`crate::services::ecs::tasks::guard_instances`]), and binpack sends concurrent RunTasks
//! to the same instance, so all but one would fail their compare and place again, over and
//! over. Holding the instance's lock from the placement's check to the view's update lets them
//! go one after another instead. Other servers are still kept out by the store's compare only:
//! these locks never leave the process, and they guard nothing by themselves.
//!
//! May not: hold a lock across anything but a request's own writes and the view's update (a
//! request holding one waits for no other request), or be taken in any order but sorted.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

type Slot = Arc<tokio::sync::Mutex<()>>;

/// The table of keys some request of this process holds or waits for, and of keys nobody has
/// used since the last pruning.
pub struct KeyLocks {
    table: Mutex<Table>,
}

struct Table {
    slots: HashMap<String, Slot>,
    /// The size at which unused entries are dropped next.
    prune_at: usize,
}

/// Unused entries are dropped when the table reaches this many entries (or twice the number
/// left at the last pruning, if more).
const PRUNE_AT: usize = 1024;

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks { table: Mutex::new(Table { slots: HashMap::new(), prune_at: PRUNE_AT }) }
    }
}

/// The locks of a set of keys; dropping it releases them.
#[derive(Default)]
pub struct KeyGuards {
    held: Vec<(String, tokio::sync::OwnedMutexGuard<()>)>,
}

impl KeyLocks {
    fn slot(&self, key: &str) -> Slot {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.slots.len() >= t.prune_at {
            // Every clone of a slot is made here, under the table's lock: an entry that is its
            // slot's only owner is neither held nor waited for, and cannot become so meanwhile.
            // Pruning lazily, rather than when a guard goes, leaves no entry behind whatever way
            // its holders and waiters went (released, failed, or dropped while waiting).
            t.slots.retain(|_, s| Arc::strong_count(s) > 1);
            t.prune_at = PRUNE_AT.max(2 * t.slots.len());
        }
        t.slots.entry(key.to_owned()).or_default().clone()
    }

    /// Locks `keys` in their sorted order (so two requests never wait for each other), and
    /// says whether any of them was held by another request when asked for: then what the
    /// caller read before may be stale, and it reads again under the locks.
    pub async fn lock(&self, keys: &BTreeSet<String>) -> (KeyGuards, bool) {
        let mut guards = KeyGuards { held: Vec::with_capacity(keys.len()) };
        let mut contended = false;
        for key in keys {
            let slot = self.slot(key);
            let guard = match slot.clone().try_lock_owned() {
                Ok(g) => g,
                Err(_) => {
                    contended = true;
                    slot.lock_owned().await
                }
            };
            guards.held.push((key.clone(), guard));
        }
        (guards, contended)
    }

    /// How many keys have an entry.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.table.lock().unwrap().slots.len()
    }
}

impl KeyGuards {
    /// Whether these guards hold every key of `keys`.
    pub fn cover(&self, keys: &BTreeSet<String>) -> bool {
        keys.iter().all(|k| self.held.iter().any(|(h, _)| h == k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> BTreeSet<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_second_request_waits_and_is_told_it_was_contended() {
        let locks = Arc::new(KeyLocks::default());
        let (first, contended) = locks.lock(&keys(&["a", "b"])).await;
        assert!(!contended);
        assert!(first.cover(&keys(&["b"])) && !first.cover(&keys(&["c"])));
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.lock(&keys(&["b", "c"])).await.1 });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second request must wait for b");
        drop(first);
        assert!(waiter.await.unwrap(), "it waited, so it must read again");
    }

    #[tokio::test]
    async fn disjoint_keys_do_not_wait() {
        let locks = KeyLocks::default();
        let (_a, c1) = locks.lock(&keys(&["a"])).await;
        let (_b, c2) = locks.lock(&keys(&["b"])).await;
        assert!(!c1 && !c2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unused_entries_are_pruned_and_held_ones_kept() {
        let locks = Arc::new(KeyLocks::default());
        let (held, _) = locks.lock(&keys(&["held"])).await;
        // A waiter dropped while it waits leaves its entry unused.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.lock(&keys(&["held"])).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        for i in 0..10 * PRUNE_AT {
            let _ = locks.lock(&keys(&[&format!("i-{i}")])).await;
            assert!(locks.entries() <= PRUNE_AT + 1, "entries grow without bound: {}", locks.entries());
        }
        assert!(locks.table.lock().unwrap().slots.contains_key("held"), "a held key keeps its entry");
        drop(held);
        let (_again, contended) = locks.lock(&keys(&["held"])).await;
        assert!(!contended, "released, and the aborted waiter holds nothing");
    }
}
