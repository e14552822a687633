//! Per-key locks within one server process, for writes that many of its own requests would
//! otherwise race for in the store ([`crate::Server::transact_locked`]): on etcd every placement
//! on a container instance compares and rewrites the instance's document
//! ([`crate::services::ecs::tasks::guard_instances`]), and binpack sends concurrent RunTasks
//! to the same instance, so all but one would fail their compare and place again, over and
//! over. Holding the instance's lock from the placement's check to the view's update lets them
//! go one after another instead. Other servers are still kept out by the store's compare only:
//! these locks never leave the process, and they guard nothing by themselves.
//!
//! May not: hold a lock across anything but one write and the wait for the view (a request
//! holding one waits for no other request), or be taken in any order but sorted.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

type Slot = Arc<tokio::sync::Mutex<()>>;

/// The table of keys some request of this process holds or waits for. A key's entry lives
/// while a guard or a waiter has it.
#[derive(Default)]
pub struct KeyLocks {
    table: Arc<Mutex<HashMap<String, Slot>>>,
}

/// The locks of a set of keys; dropping it releases them.
#[derive(Default)]
pub struct KeyGuards {
    held: Vec<(String, Slot, tokio::sync::OwnedMutexGuard<()>)>,
    table: Option<Arc<Mutex<HashMap<String, Slot>>>>,
}

impl KeyLocks {
    fn slot(&self, key: &str) -> Slot {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(key.to_owned()).or_default().clone()
    }

    /// Locks `keys` in their sorted order (so two requests never wait for each other), and
    /// says whether any of them was held by another request when asked for: then what the
    /// caller read before may be stale, and it reads again under the locks.
    pub async fn lock(&self, keys: &BTreeSet<String>) -> (KeyGuards, bool) {
        let mut guards = KeyGuards { held: Vec::with_capacity(keys.len()), table: Some(self.table.clone()) };
        let mut contended = false;
        for key in keys {
            let slot = self.slot(key);
            let guard = match slot.clone().try_lock_owned() {
                Ok(g) => g,
                Err(_) => {
                    contended = true;
                    slot.clone().lock_owned().await
                }
            };
            guards.held.push((key.clone(), slot, guard));
        }
        (guards, contended)
    }

    /// Locks `keys` if no other request holds any of them, without waiting.
    pub fn try_lock(&self, keys: &BTreeSet<String>) -> Option<KeyGuards> {
        let mut guards = KeyGuards { held: Vec::with_capacity(keys.len()), table: Some(self.table.clone()) };
        for key in keys {
            let slot = self.slot(key);
            // On failure the slots taken so far go with `guards` (and their entries with them).
            let guard = slot.clone().try_lock_owned().ok()?;
            guards.held.push((key.clone(), slot, guard));
        }
        Some(guards)
    }

    /// How many keys have an entry (held or waited for).
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

impl KeyGuards {
    /// Whether these guards hold every key of `keys`.
    pub fn cover(&self, keys: &BTreeSet<String>) -> bool {
        keys.iter().all(|k| self.held.iter().any(|(h, _, _)| h == k))
    }
}

impl Drop for KeyGuards {
    fn drop(&mut self) {
        let Some(table) = &self.table else { return };
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        for (key, slot, guard) in self.held.drain(..) {
            drop(guard);
            // Clones are made under the table's lock, which is held: the entry's own clone and
            // this one are the last, so no request holds or waits for the key.
            if Arc::strong_count(&slot) == 2 {
                t.remove(&key);
            }
        }
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
        assert_eq!(locks.entries(), 0, "entries go with their last holder");
    }

    #[tokio::test]
    async fn try_lock_takes_all_or_nothing() {
        let locks = KeyLocks::default();
        let (a, _) = locks.lock(&keys(&["b"])).await;
        assert!(locks.try_lock(&keys(&["a", "b"])).is_none(), "b is held");
        assert_eq!(locks.entries(), 1, "a's entry went with the failed attempt");
        drop(a);
        let both = locks.try_lock(&keys(&["a", "b"])).expect("both free");
        assert!(both.cover(&keys(&["a", "b"])));
    }

    #[tokio::test]
    async fn disjoint_keys_do_not_wait() {
        let locks = KeyLocks::default();
        let (_a, c1) = locks.lock(&keys(&["a"])).await;
        let (_b, c2) = locks.lock(&keys(&["b"])).await;
        assert!(!c1 && !c2);
        assert_eq!(locks.entries(), 2);
    }
}
