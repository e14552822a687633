//! The SQLite backend: the whole state in one file, WAL mode, fsync on every commit.
//!
//! Reads are served from memory (the whole key space is loaded at open). Writes go to one
//! writer thread that practises group commit: it takes every transaction waiting, evaluates
//! them in order against the committed state plus the group's earlier writes, writes the
//! group in one SQLite transaction, fsyncs once, and only then publishes the changes and
//! acknowledges each caller. An acknowledged write is therefore on disk, and a crash at any
//! point loses only writes nobody was told about.
//!
//! The writer does not checkpoint: a second thread with its own connection copies the WAL
//! into the database file as it grows (see [`checkpointer`]), so the copy and its fsync run
//! beside the writer instead of inside one of its commits.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use crate::local::{Local, Pending};
use crate::{BoxFuture, KeyValue, RangeResponse, Result, Revision, Store, StoreError, Txn, TxnResponse, Watch};

/// The most transactions one group commit takes.
const MAX_GROUP: usize = 512;

/// How often, at most, the checkpointer copies the WAL into the database file while writes
/// go on: a page written many times in that span (an interior page, the revision's row) is
/// copied once.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL frames (pages) past which the checkpointer, once it has copied what it could, makes
/// the writer start the WAL over (a RESTART checkpoint, which waits for the writer's commit in
/// progress): under a steady stream of writes a passive checkpoint never catches up with the
/// writer, and the WAL would grow without end. 4096 frames of 8 KiB: 32 MiB.
const RESTART_FRAMES: i64 = 4096;

/// The writer connection's page cache as SQLite's `cache_size` takes it: a negative number is
/// a size in KiB (64 MiB), a positive one would count pages.
const WRITER_CACHE_KIB: i64 = -64 * 1024;

type Request = (Txn, oneshot::Sender<Result<TxnResponse>>);

#[derive(Clone)]
pub struct SqliteStore {
    local: Arc<Local>,
    writer: mpsc::Sender<Request>,
    path: Arc<PathBuf>,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store file and loads it into memory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        crate::pcache::install();
        let conn = Connection::open(&path).map_err(backend)?;
        // 8 KiB pages: a row of a WITHOUT ROWID table stays inline up to about a quarter of a
        // page (2 KB here, 1 KB with the default 4 KiB), the rest goes to overflow pages. With
        // 4 KiB pages every task's document (1.2 KB and up) took an overflow page of its own
        // and the file grew 2.7 KB per document; 1.2 KB now, at the same write rate. It only
        // applies to a new file: an existing one keeps its page size.
        conn.execute_batch(
            "PRAGMA page_size = 8192;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = OFF;
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY NOT NULL,
                 value BLOB NOT NULL,
                 create_rev INTEGER NOT NULL,
                 mod_rev INTEGER NOT NULL,
                 version INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (
                 id INTEGER PRIMARY KEY CHECK (id = 0),
                 revision INTEGER NOT NULL
             );
             INSERT OR IGNORE INTO meta (id, revision) VALUES (0, 0);",
        )
        .map_err(backend)?;
        // The writer's page cache (the connection's, not the checkpointer's). SQLite's default
        // of 2,000 KiB holds 250 of these pages, while every commit of new tasks touches leaf
        // pages all over the key space (task ids are random): most of them had been evicted
        // and were read back from the OS, a pread and an 8 KiB copy each, a quarter of the
        // writer's time under `bench placement`. 64 MiB keeps them; it is a bound, filled only
        // as the file's pages are touched (a small state stays small).
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB).map_err(backend)?;
        let revision: Revision =
            conn.query_row("SELECT revision FROM meta WHERE id = 0", [], |r| r.get(0)).map_err(backend)?;
        let mut kvs = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT key, value, create_rev, mod_rev, version FROM kv").map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(KeyValue {
                        key: r.get(0)?,
                        value: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                        create_revision: r.get(2)?,
                        mod_revision: r.get(3)?,
                        version: r.get(4)?,
                    })
                })
                .map_err(backend)?;
            for kv in rows {
                kvs.push(kv.map_err(backend)?);
            }
        }
        tracing::debug!(path = %path.display(), keys = kvs.len(), revision, "opened sqlite store");
        let local = Arc::new(Local::new(kvs, revision));
        let (writer, rx) = mpsc::channel::<Request>();
        let l = local.clone();
        let checkpoints = Connection::open(&path).map_err(backend)?;
        let (committed, commits) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("estiba-store-ckpt".into())
            .spawn(move || checkpointer(checkpoints, commits))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        std::thread::Builder::new()
            .name("estiba-store-writer".into())
            .spawn(move || writer_loop(conn, l, rx, committed))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(SqliteStore { local, writer, path: Arc::new(path) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn writer_loop(mut conn: Connection, local: Arc<Local>, rx: mpsc::Receiver<Request>, committed: mpsc::SyncSender<()>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let mut pending = Pending::default();
        let responses: Vec<TxnResponse> = {
            let st = local.state.read().unwrap();
            group.iter().map(|(txn, _)| local.evaluate(&st, &mut pending, txn)).collect()
        };
        let t0 = Instant::now();
        let wrote = !pending.events.is_empty();
        let outcome = if wrote { persist(&mut conn, &pending) } else { Ok(()) };
        tracing::debug!(txns = group.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "committed");
        match outcome {
            Ok(()) => {
                if wrote {
                    // Full when a checkpoint is already due: one is enough.
                    let _ = committed.try_send(());
                }
                {
                    let mut st = local.state.write().unwrap();
                    local.publish(&mut st, pending);
                }
                for ((_, reply), resp) in group.into_iter().zip(responses) {
                    let _ = reply.send(Ok(resp));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

/// Copies the WAL into the database file after commits (at most every [`CHECKPOINT_EVERY`]),
/// on a connection of its own: a passive checkpoint, which never waits for the writer, then,
/// when the WAL has grown past [`RESTART_FRAMES`], a restart, which waits for the writer's
/// commit in progress (its busy handler) so that the next commit writes the WAL from its
/// start. Ends with the writer (the last commit's notice), checkpointing what is left.
fn checkpointer(conn: Connection, commits: mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| -> rusqlite::Result<(i64, i64)> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(1)?, r.get(2)?)))
    };
    // None before the first checkpoint (`Instant::now() - CHECKPOINT_EVERY` would panic on a
    // monotonic clock younger than that, as right after boot).
    let mut last: Option<Instant> = None;
    while commits.recv().is_ok() {
        let wait = last.map_or(Duration::ZERO, |t| CHECKPOINT_EVERY.saturating_sub(t.elapsed()));
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        last = Some(Instant::now());
        match checkpoint("PASSIVE") {
            Ok((frames, _)) if frames >= RESTART_FRAMES => {
                if let Err(e) = checkpoint("RESTART") {
                    tracing::warn!(error = %e, frames, "WAL restart checkpoint failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
    if let Err(e) = checkpoint("TRUNCATE") {
        tracing::warn!(error = %e, "final WAL checkpoint failed");
    }
}

fn persist(conn: &mut Connection, pending: &Pending) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO kv (key, value, create_rev, mod_rev, version) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, create_rev = excluded.create_rev,
                 mod_rev = excluded.mod_rev, version = excluded.version",
        )?;
        let mut del = tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
        for (key, v) in &pending.writes {
            match v {
                Some(kv) => {
                    put.execute(params![key, &kv.value[..], kv.create_revision, kv.mod_revision, kv.version])?;
                }
                None => {
                    del.execute(params![key])?;
                }
            }
        }
        tx.execute("UPDATE meta SET revision = ?1 WHERE id = 0", params![pending.revision])?;
    }
    tx.commit()
}

impl Store for SqliteStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        let v = self.local.get(key);
        Box::pin(async move { Ok(v) })
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<RangeResponse>> {
        let v = self.local.range(prefix);
        Box::pin(async move { Ok(v) })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.writer.send((txn, tx));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        self.local.watch(prefix, after)
    }

    fn revision(&self) -> Revision {
        self.local.revision()
    }
}
