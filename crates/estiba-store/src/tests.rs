//! One test suite, run against every backend.

use std::sync::Arc;
use std::time::Duration;

use crate::*;

/// Runs each suite function against the memory and the SQLite backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod mem_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(std::sync::Arc::new(crate::MemStore::new())).await })*
        }
        #[cfg(feature = "sqlite")]
        mod sqlite_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let s = crate::SqliteStore::open(dir.path().join("state.db")).unwrap();
                super::$name(std::sync::Arc::new(s)).await
            })*
        }
    };
}

suite!(
    put_get_and_counters,
    compare_and_swap,
    failed_txn_writes_nothing,
    delete_and_recreate,
    range_by_prefix,
    watch_live_and_filtered,
    watch_from_past_revision,
    concurrent_cas_has_one_winner,
    empty_txn_is_a_read_check,
    slow_watcher_catches_up,
    history_is_bounded_by_events,
);

async fn put(s: &dyn Store, key: &str, value: &str) -> TxnResponse {
    s.txn(Txn::new().then(Op::put(key, value.to_owned()))).await.unwrap()
}

async fn put_get_and_counters(s: Arc<dyn Store>) {
    assert_eq!(s.revision(), 0);
    assert_eq!(s.get("a").await.unwrap(), None);
    let r1 = put(&*s, "a", "1").await;
    assert!(r1.succeeded);
    assert_eq!(r1.revision, 1);
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!((&kv.value[..], kv.create_revision, kv.mod_revision, kv.version), (&b"1"[..], 1, 1, 1));
    let r2 = put(&*s, "a", "2").await;
    assert_eq!(r2.revision, 2);
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!((&kv.value[..], kv.create_revision, kv.mod_revision, kv.version), (&b"2"[..], 1, 2, 2));
    assert_eq!(s.revision(), 2);
}

async fn compare_and_swap(s: Arc<dyn Store>) {
    let create = Txn::new().when(Compare::absent("k")).then(Op::put("k", "v1"));
    let r = s.txn(create.clone()).await.unwrap();
    assert!(r.succeeded);
    // Creating again fails: the key exists.
    let again = s.txn(create).await.unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.revision, r.revision);
    // Update with the right revision succeeds, with a stale one fails.
    let ok = s.txn(Txn::new().when(Compare::mod_revision("k", r.revision)).then(Op::put("k", "v2"))).await.unwrap();
    assert!(ok.succeeded);
    let stale = s.txn(Txn::new().when(Compare::mod_revision("k", r.revision)).then(Op::put("k", "v3"))).await.unwrap();
    assert!(!stale.succeeded);
    assert_eq!(&s.get("k").await.unwrap().unwrap().value[..], b"v2");
}

async fn failed_txn_writes_nothing(s: Arc<dyn Store>) {
    put(&*s, "x", "1").await;
    let before = s.revision();
    let t =
        Txn::new().when(Compare::absent("y")).when(Compare::absent("x")).then(Op::put("y", "1")).then(Op::delete("x"));
    assert!(!s.txn(t).await.unwrap().succeeded);
    assert_eq!(s.revision(), before);
    assert!(s.get("y").await.unwrap().is_none());
    assert!(s.get("x").await.unwrap().is_some());
    // The same ops with a true condition apply together, under one revision.
    let t = Txn::new().when(Compare::absent("y")).then(Op::put("y", "1")).then(Op::delete("x"));
    let r = s.txn(t).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, before + 1);
    assert!(s.get("x").await.unwrap().is_none());
    assert_eq!(s.get("y").await.unwrap().unwrap().mod_revision, before + 1);
}

async fn delete_and_recreate(s: Arc<dyn Store>) {
    put(&*s, "d", "1").await;
    put(&*s, "d", "2").await;
    let r = s.txn(Txn::new().then(Op::delete("d"))).await.unwrap();
    assert!(r.succeeded);
    assert!(s.get("d").await.unwrap().is_none());
    // Deleting a missing key changes nothing and does not bump the revision.
    let rev = s.revision();
    s.txn(Txn::new().then(Op::delete("d"))).await.unwrap();
    assert_eq!(s.revision(), rev);
    let r = put(&*s, "d", "3").await;
    let kv = s.get("d").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r.revision, 1));
}

async fn range_by_prefix(s: Arc<dyn Store>) {
    for k in ["t/b", "t/a", "u/a", "t", "t/c/d", "s/z"] {
        put(&*s, k, k).await;
    }
    let r = s.range("t/").await.unwrap();
    let keys: Vec<&str> = r.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["t/a", "t/b", "t/c/d"]);
    assert_eq!(r.revision, s.revision());
    assert_eq!(s.range("").await.unwrap().kvs.len(), 6);
    assert!(s.range("v/").await.unwrap().kvs.is_empty());
}

async fn next(w: &mut Watch) -> WatchBatch {
    tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("watch timed out").unwrap()
}

async fn watch_live_and_filtered(s: Arc<dyn Store>) {
    let start = s.revision();
    let mut w = s.watch("tasks/", start).unwrap();
    put(&*s, "clusters/a", "x").await;
    let r = put(&*s, "tasks/1", "a").await;
    s.txn(Txn::new().then(Op::delete("tasks/1"))).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        events.extend(next(&mut w).await.events);
    }
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.key, "tasks/1");
    assert_eq!(events[0].kv.mod_revision, r.revision);
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!(events[1].kv.mod_revision, r.revision + 1);
}

async fn watch_from_past_revision(s: Arc<dyn Store>) {
    let r1 = put(&*s, "p/1", "a").await;
    put(&*s, "p/2", "b").await;
    put(&*s, "p/3", "c").await;
    let mut w = s.watch("p/", r1.revision).unwrap();
    let mut keys = Vec::new();
    while keys.len() < 2 {
        keys.extend(next(&mut w).await.events.into_iter().map(|e| e.kv.key));
    }
    assert_eq!(keys, ["p/2", "p/3"]);
    put(&*s, "p/4", "d").await;
    assert_eq!(next(&mut w).await.events[0].kv.key, "p/4");
}

async fn concurrent_cas_has_one_winner(s: Arc<dyn Store>) {
    let r = put(&*s, "counter", "0").await;
    let mut handles = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.txn(
                Txn::new().when(Compare::mod_revision("counter", r.revision)).then(Op::put("counter", format!("{i}"))),
            )
            .await
            .unwrap()
            .succeeded
        }));
    }
    let mut wins = 0;
    for h in handles {
        wins += h.await.unwrap() as usize;
    }
    assert_eq!(wins, 1);
    assert_eq!(s.get("counter").await.unwrap().unwrap().version, 2);
}

async fn slow_watcher_catches_up(s: Arc<dyn Store>) {
    let mut w = s.watch("lag/", s.revision()).unwrap();
    // Far more commits than the live feed buffers, while the watcher reads nothing.
    for i in 0..3000 {
        put(&*s, &format!("lag/{i:05}"), "v").await;
    }
    let mut keys = Vec::new();
    while keys.len() < 3000 {
        keys.extend(next(&mut w).await.events.into_iter().map(|e| e.kv.key));
    }
    let want: Vec<String> = (0..3000).map(|i| format!("lag/{i:05}")).collect();
    assert_eq!(keys, want);
}

/// History keeps at most `HISTORY_EVENTS` events however few transactions hold them: a watch
/// from before them is told to list again, one from the recent past still streams.
async fn history_is_bounded_by_events(s: Arc<dyn Store>) {
    let start = s.revision();
    let mut last = start;
    for t in 0..40 {
        let mut txn = Txn::new();
        for i in 0..500 {
            txn = txn.then(Op::put(format!("h/{t:02}/{i:03}"), "v"));
        }
        last = s.txn(txn).await.unwrap().revision;
    }
    assert!(matches!(s.watch("h/", start), Err(StoreError::Compacted { .. })));
    let mut w = s.watch("h/", last - 1).unwrap();
    let b = next(&mut w).await;
    assert_eq!((b.revision, b.events.len()), (last, 500));
}

async fn empty_txn_is_a_read_check(s: Arc<dyn Store>) {
    put(&*s, "e", "1").await;
    let rev = s.revision();
    let r = s.txn(Txn::new().when(Compare::absent("nope"))).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(s.revision(), rev);
}

/// A state file in a fresh temporary directory (removed when the guard drops).
#[cfg(feature = "sqlite")]
fn state_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    (dir, path)
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_state() {
    let (_dir, path) = state_file();
    {
        let s = SqliteStore::open(&path).unwrap();
        put(&s, "a", "1").await;
        put(&s, "b", "2").await;
        s.txn(Txn::new().then(Op::delete("a"))).await.unwrap();
        put(&s, "b", "3").await;
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.revision(), 4);
    assert!(s.get("a").await.unwrap().is_none());
    let b = s.get("b").await.unwrap().unwrap();
    assert_eq!((&b.value[..], b.create_revision, b.mod_revision, b.version), (&b"3"[..], 2, 4, 2));
    // History is gone after a restart: watching from before it says so, from now works.
    assert!(matches!(s.watch("", 1), Err(StoreError::Compacted { .. })));
    let mut w = s.watch("", s.revision()).unwrap();
    put(&s, "c", "1").await;
    assert_eq!(next(&mut w).await.events[0].kv.key, "c");
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_under_concurrency() {
    let (_dir, path) = state_file();
    let s = Arc::new(SqliteStore::open(&path).unwrap());
    let mut handles = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        handles.push(tokio::spawn(async move { put(&*s, &format!("k/{i}"), "v").await.revision }));
    }
    let mut revs: Vec<Revision> = Vec::new();
    for h in handles {
        revs.push(h.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 64, "every write gets its own revision");
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.range("k/").await.unwrap().kvs.len(), 64);
}

/// A task's document (about 1.3 KB) must sit on its B-tree page: with SQLite's default 4 KiB
/// pages the table (WITHOUT ROWID, so its rows are index entries, inline up to ~1 KB) put the
/// rest of every task on an overflow page of its own, and the file grew 2.7 KB per document.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_task_sized_documents_inline() {
    let (_dir, path) = state_file();
    let s = SqliteStore::open(&path).unwrap();
    let doc = "x".repeat(1300);
    let mut txn = Txn::new();
    for i in 0..1000 {
        txn = txn
            .then(Op::put(format!("ecs/tasks/{:032x}", (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15)), doc.clone()));
    }
    assert!(s.txn(txn).await.unwrap().succeeded);
    drop(s);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    assert_eq!(page, 8192);
    // 1.3 MB of documents: about 1.4 to 2 MB inline, over 4 MB with an overflow page each.
    assert!(page * pages < 2_600_000, "{pages} pages of {page} bytes for 1.3 MB of documents");
}
