//! One test suite, run against every backend.

use std::sync::Arc;
use std::time::Duration;

use crate::*;

/// Runs each suite function against every backend: memory, SQLite and (with the `etcd`
/// feature) a real etcd started for the test. The functions after `local:` test the bounded
/// history of the local backends (etcd keeps history until it is compacted, and takes at most
/// 128 operations per transaction).
macro_rules! suite {
    ($($name:ident),* $(,)?; local: $($local:ident),* $(,)?) => {
        mod mem_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(std::sync::Arc::new(crate::MemStore::new())).await })*
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $local() { super::$local(std::sync::Arc::new(crate::MemStore::new())).await })*
        }
        #[cfg(feature = "sqlite")]
        mod sqlite_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let s = crate::SqliteStore::open(dir.path().join("state.db")).unwrap();
                super::$name(std::sync::Arc::new(s)).await
            })*
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $local() {
                let dir = tempfile::tempdir().unwrap();
                let s = crate::SqliteStore::open(dir.path().join("state.db")).unwrap();
                super::$local(std::sync::Arc::new(s)).await
            })*
        }
        #[cfg(feature = "etcd")]
        mod etcd_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(etcd) = crate::tests::etcd_server::EtcdServer::start(&[]) else { return };
                let s = etcd.store("/estiba/").await;
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
    repeated_key_in_one_txn;
    local: history_is_bounded_by_events,
);

async fn put(s: &dyn Store, key: &str, value: &str) -> TxnResponse {
    s.txn(Txn::new().then(Op::put(key, value.to_owned()))).await.unwrap()
}

/// Revisions are the backend's: the local ones start at 0, a fresh etcd at 1. Every test
/// counts from the revision it finds.
async fn put_get_and_counters(s: Arc<dyn Store>) {
    let base = s.revision();
    assert!(base <= 1, "a fresh store starts at revision {base}");
    assert_eq!(s.range("").await.unwrap().revision, base);
    assert_eq!(s.get("a").await.unwrap(), None);
    let r1 = put(&*s, "a", "1").await;
    assert!(r1.succeeded);
    assert_eq!(r1.revision, base + 1);
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!((&kv.value[..], kv.create_revision, kv.mod_revision, kv.version), (&b"1"[..], base + 1, base + 1, 1));
    let r2 = put(&*s, "a", "2").await;
    assert_eq!(r2.revision, base + 2);
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!((&kv.value[..], kv.create_revision, kv.mod_revision, kv.version), (&b"2"[..], base + 1, base + 2, 2));
    assert_eq!(s.revision(), base + 2);
}

/// A key written twice in one transaction ends with the last write, under one revision.
async fn repeated_key_in_one_txn(s: Arc<dyn Store>) {
    put(&*s, "r", "0").await;
    let t = Txn::new().then(Op::put("r", "1")).then(Op::put("q", "1")).then(Op::put("r", "2"));
    let r = s.txn(t).await.unwrap();
    assert!(r.succeeded);
    let kv = s.get("r").await.unwrap().unwrap();
    assert_eq!((&kv.value[..], kv.mod_revision), (&b"2"[..], r.revision));
    let r = s.txn(Txn::new().then(Op::put("r", "3")).then(Op::delete("r"))).await.unwrap();
    assert!(r.succeeded);
    assert!(s.get("r").await.unwrap().is_none());
    assert_eq!(s.get("q").await.unwrap().unwrap().mod_revision, r.revision - 1);
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

/// The writer does not checkpoint; the checkpointer thread does, soon after commits and
/// without waiting for the store to close: after a burst of 40 MiB the database file holds it,
/// and the next writes go to the WAL's start. (Under a steady stream of writes the restart
/// checkpoint bounds the WAL instead; `cargo xtask bench placement` is such a stream.)
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_beside_the_writer() {
    let (_dir, path) = state_file();
    let s = SqliteStore::open(&path).unwrap();
    let doc = "y".repeat(1 << 20);
    for i in 0..40 {
        assert!(s.txn(Txn::new().then(Op::put(format!("big/{i}"), doc.clone()))).await.unwrap().succeeded);
    }
    // The database file itself fills (the WAL is copied into it) while the store is open.
    let grown = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > 40 << 20;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !grown() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(grown(), "the WAL was not checkpointed into the database file");
    // The next commits write from the WAL's start: a passive checkpoint from another
    // connection sees a short WAL.
    let frames = || -> i64 {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = i64::MAX;
    while std::time::Instant::now() < deadline {
        put(&s, "small", "1").await;
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        seen = frames();
        if seen < 100 {
            break;
        }
    }
    assert!(seen < 100, "the WAL still holds {seen} frames");
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.range("big/").await.unwrap().kvs.len(), 40);
    assert_eq!(&s.get("small").await.unwrap().unwrap().value[..], b"1");
}

/// A real etcd for one test: Debian's `etcd-server` (or `$ESTIBA_ETCD_BIN`), on free loopback
/// ports with its data in a temporary directory (on tmpfs when there is one, so its fsyncs are
/// cheap), killed when the guard drops.
#[cfg(feature = "etcd")]
pub(crate) mod etcd_server {
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::{EtcdConfig, EtcdStore};

    pub struct EtcdServer {
        child: Child,
        dir: tempfile::TempDir,
        client_port: u16,
        peer_port: u16,
        extra: Vec<String>,
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("ESTIBA_ETCD_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "ESTIBA_ETCD_BIN={} is not a file", p.display());
            return Some(p);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file())
    }

    fn spawn(dir: &tempfile::TempDir, client_port: u16, peer_port: u16, extra: &[String]) -> Child {
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        Command::new(binary().unwrap())
            .args(["--name", "default", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg(format!("--initial-cluster=default={peer}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd")
    }

    impl EtcdServer {
        /// Starts etcd with `extra` flags (for example `--max-txn-ops=16`); `None`, after saying
        /// so, when no etcd binary is installed.
        pub fn start(extra: &[&str]) -> Option<Self> {
            if binary().is_none() {
                eprintln!("SKIPPED: no etcd binary (install Debian's etcd-server, or set ESTIBA_ETCD_BIN)");
                return None;
            }
            let shm = std::path::Path::new("/dev/shm");
            let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            let (client_port, peer_port) = (free_port(), free_port());
            let child = spawn(&dir, client_port, peer_port, &extra);
            Some(EtcdServer { child, dir, client_port, peer_port, extra })
        }

        pub fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.client_port)
        }

        /// Kills etcd (as a crash would) and starts it again on the same ports and data.
        pub fn restart(&mut self) {
            self.child.kill().unwrap();
            self.child.wait().unwrap();
            self.child = spawn(&self.dir, self.client_port, self.peer_port, &self.extra);
        }

        /// A store on this etcd under `prefix`, once etcd answers (it starts in well under a
        /// second).
        pub async fn store(&self, prefix: &str) -> EtcdStore {
            self.store_with(EtcdConfig::new(vec![self.endpoint()], prefix)).await
        }

        pub async fn store_with(&self, config: EtcdConfig) -> EtcdStore {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match EtcdStore::connect(config.clone()).await {
                    Ok(s) => return s,
                    Err(e) if Instant::now() > deadline => panic!("etcd did not come up: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }

    impl Drop for EtcdServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(feature = "etcd")]
mod etcd_only {
    use std::sync::Arc;

    use super::etcd_server::EtcdServer;
    use super::{next, put};
    use crate::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_from_a_compacted_revision_says_compacted() {
        let Some(etcd) = EtcdServer::start(&[]) else { return };
        let s = etcd.store("/estiba/").await;
        let r1 = put(&s, "c/1", "a").await;
        put(&s, "c/2", "b").await;
        let r3 = put(&s, "c/3", "c").await;
        s.compact(r3.revision).await.unwrap();
        let mut w = s.watch("c/", r1.revision).unwrap();
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), w.next()).await.unwrap();
        match e {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!((requested, oldest), (r1.revision, r3.revision))
            }
            other => panic!("expected Compacted, got {other:?}"),
        }
        // From the compaction point on, the watch streams again.
        let mut w = s.watch("c/", r3.revision).unwrap();
        let r4 = put(&s, "c/4", "d").await;
        let b = next(&mut w).await;
        assert_eq!((b.revision, b.events[0].kv.key.as_str()), (r4.revision, "c/4"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn txn_over_the_limits_is_refused_and_writes_nothing() {
        let Some(etcd) = EtcdServer::start(&[]) else { return };
        let s = etcd.store("/estiba/").await;
        put(&s, "seed", "x").await;
        let before = s.revision();
        let many = (0..129).fold(Txn::new(), |t, i| t.then(Op::put(format!("m/{i}"), "v")));
        // What the store says of its limits agrees with what it refuses.
        assert!(!s.limits().fits(&many));
        match s.txn(many).await {
            Err(StoreError::TooManyOps { ops: 129, limit: 128 }) => {}
            other => panic!("expected TooManyOps, got {other:?}"),
        }
        let compares =
            (0..129).fold(Txn::new().then(Op::put("m/x", "v")), |t, i| t.when(Compare::absent(format!("m/{i}"))));
        assert!(matches!(s.txn(compares).await, Err(StoreError::TooManyOps { ops: 129, .. })));
        let big = vec![b'x'; 1 << 20];
        let large = Txn::new().then(Op::put("l/1", big.clone())).then(Op::put("l/2", big.clone()));
        assert!(!s.limits().fits(&large));
        assert!(matches!(s.txn(large).await, Err(StoreError::TooLarge { limit: DEFAULT_MAX_REQUEST_BYTES, .. })));
        assert_eq!(s.revision(), before);
        assert!(s.range("m/").await.unwrap().kvs.is_empty());
        assert!(s.range("l/").await.unwrap().kvs.is_empty());
        // At the limits etcd takes them.
        let full = (0..128).fold(Txn::new(), |t, i| t.then(Op::put(format!("m/{i}"), "v")));
        assert!(s.limits().fits(&full));
        assert!(s.txn(full).await.unwrap().succeeded);
        assert_eq!(s.range("m/").await.unwrap().kvs.len(), 128);
        assert!(s.txn(Txn::new().then(Op::put("l/1", big))).await.unwrap().succeeded);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_limit_follows_the_cluster_setting() {
        let Some(etcd) = EtcdServer::start(&["--max-txn-ops=300"]) else { return };
        let mut config = EtcdConfig::new(vec![etcd.endpoint()], "/e/");
        config.max_txn_ops = 300;
        let s = etcd.store_with(config).await;
        assert_eq!(s.limits().max_ops, 300);
        let t = (0..300).fold(Txn::new(), |t, i| t.then(Op::put(format!("k/{i:03}"), "v")));
        let r = s.txn(t).await.unwrap();
        assert!(r.succeeded);
        let mut w = s.watch("k/", r.revision - 1).unwrap();
        let b = next(&mut w).await;
        assert_eq!((b.revision, b.events.len()), (r.revision, 300));
        // Listing pages through etcd at one revision: every key, in order.
        let keys: Vec<String> = s.range("k/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, (0..300).map(|i| format!("k/{i:03}")).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_prefix_isolates_two_stores_on_one_etcd() {
        let Some(etcd) = EtcdServer::start(&[]) else { return };
        let a = etcd.store("/a/").await;
        let b = etcd.store("/b/").await;
        let mut wa = a.watch("", a.revision()).unwrap();
        put(&a, "k", "from a").await;
        let rb = put(&b, "k", "from b").await;
        put(&b, "only-b", "1").await;
        let ra = put(&a, "k2", "a2").await;
        assert_eq!(&a.get("k").await.unwrap().unwrap().value[..], b"from a");
        assert_eq!(&b.get("k").await.unwrap().unwrap().value[..], b"from b");
        let keys: Vec<String> = a.range("").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, ["k", "k2"]);
        assert_eq!(b.range("").await.unwrap().kvs.len(), 2);
        assert!(a.get("only-b").await.unwrap().is_none());
        // The watch sees only its own prefix's changes, keys without the prefix.
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.extend(next(&mut wa).await.events.into_iter().map(|e| (e.kv.key, e.kv.mod_revision)));
        }
        assert_eq!(seen[1], ("k2".to_owned(), ra.revision));
        assert!(seen.iter().all(|(_, r)| *r != rb.revision));
        // Writes under b's prefix move etcd's revision but not a's, which a view fed by a's
        // watch could never reach; nor do a's reads or failed writes report them.
        let rb2 = put(&b, "late", "1").await;
        a.get("anything").await.unwrap();
        a.range("").await.unwrap();
        assert_eq!(a.revision(), ra.revision);
        let failed = a.txn(Txn::new().when(Compare::absent("k")).then(Op::put("k", "x"))).await.unwrap();
        assert_eq!((failed.succeeded, failed.revision), (false, ra.revision));
        assert!(rb2.revision > ra.revision);
        // A second store on a's prefix (another server): a's revision follows its writes.
        let a2 = etcd.store("/a/").await;
        let r = put(&a2, "k3", "x").await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while a.revision() < r.revision {
            assert!(std::time::Instant::now() < deadline, "a's revision did not follow a2's write");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_endpoint_and_an_etcd_restart_are_survived() {
        let Some(mut etcd) = EtcdServer::start(&[]) else { return };
        let dead = format!(
            "http://127.0.0.1:{}",
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
        );
        let s = Arc::new(etcd.store_with(EtcdConfig::new(vec![dead, etcd.endpoint()], "/estiba/")).await);
        for i in 0..10 {
            put(&*s, &format!("w/{i}"), "v").await;
        }
        let mut w = s.watch("w/", s.revision()).unwrap();
        let r = put(&*s, "w/a", "1").await;
        assert_eq!(next(&mut w).await.revision, r.revision);
        etcd.restart();
        // Writes go through once etcd is back; the watch resumes after the last revision it gave.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let r2 = loop {
            match s.txn(Txn::new().then(Op::put("w/b", "2"))).await {
                Ok(r) => break r,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "etcd did not come back: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        let b = tokio::time::timeout(std::time::Duration::from_secs(15), w.next()).await.unwrap().unwrap();
        assert_eq!((b.revision, b.events[0].kv.key.as_str()), (r2.revision, "w/b"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn import_batches_within_the_limits_and_refuses_existing_keys() {
        let Some(etcd) = EtcdServer::start(&[]) else { return };
        let s = etcd.store("/estiba/").await;
        let kvs: Vec<(String, bytes::Bytes)> =
            (0..300).map(|i| (format!("ecs/x/{i:03}"), bytes::Bytes::from(vec![b'v'; 10_000]))).collect();
        // 300 keys of 10 kB: 128 keys per transaction would be 1.28 MB, so the op limit cuts first.
        assert_eq!(s.import(&kvs).await.unwrap(), 3);
        assert_eq!(s.range("ecs/").await.unwrap().kvs.len(), 300);
        let rev = s.revision();
        assert!(s.import(&kvs[..1]).await.is_err());
        assert_eq!(s.revision(), rev);
        // Large values: the request size cuts first (1.5 MiB / 400 kB = 3 per transaction).
        let big: Vec<(String, bytes::Bytes)> =
            (0..7).map(|i| (format!("big/{i}"), bytes::Bytes::from(vec![b'v'; 400_000]))).collect();
        assert_eq!(s.import(&big).await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leases_expire_their_keys() {
        let Some(etcd) = EtcdServer::start(&[]) else { return };
        let s = etcd.store("/estiba/").await;
        let id = s.grant_lease(std::time::Duration::from_secs(2)).await.unwrap();
        s.put_with_lease("nodes/n1", "alive", id).await.unwrap();
        assert!(s.keep_lease_alive(id).await.unwrap());
        assert!(s.get("nodes/n1").await.unwrap().is_some());
        s.revoke_lease(id).await.unwrap();
        assert!(s.get("nodes/n1").await.unwrap().is_none());
        assert!(!s.keep_lease_alive(id).await.unwrap());
    }
}
