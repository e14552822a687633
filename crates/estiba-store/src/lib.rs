//! A versioned key-value store with compare-and-swap and watch by prefix, shaped like etcd's
//! v3 API so that an etcd backend can follow without touching callers.
//!
//! - Every committed transaction bumps one global [`Revision`]; each key remembers the
//!   revision that created it and the one that last changed it.
//! - [`Txn`]: if every [`Compare`] holds, apply every [`Op`] atomically; otherwise nothing.
//! - [`Store::watch`] streams the changes under a prefix from a given revision.
//!
//! Backends: [`SqliteStore`] (one file, WAL, fsync on commit, group commit; the default) and
//! [`MemStore`] (for unit tests) keep the whole key space in memory for reads and share the
//! transaction logic in [`local`]; `EtcdStore` (feature `etcd`, on by default) puts it in an
//! etcd v3 cluster. All three run the same test suite in `tests.rs`.
//!
//! **Architecture invariant:** the store knows nothing about ECS or HTTP: keys are strings and
//! values are bytes.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

#[cfg(feature = "etcd")]
mod etcd;
mod limits;
mod local;
mod mem;
#[cfg(feature = "sqlite")]
mod pcache;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(test)]
mod tests;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdStore, Leadership, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS};
pub use limits::{pack, BoundedTxn, TxnLimits};
pub use mem::MemStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The store's logical clock: bumped once per committed transaction. 0 means "never".
pub type Revision = i64;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("watch start revision {requested} has been compacted (oldest kept: {oldest})")]
    Compacted { requested: Revision, oldest: Revision },
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
    /// A transaction with more compares or operations than the backend takes in one (etcd's
    /// `--max-txn-ops`). Nothing was written; it is never split, which would break atomicity.
    #[error("transaction has {ops} operations, more than the store's limit of {limit} per transaction")]
    TooManyOps { ops: usize, limit: usize },
    /// A transaction larger than the backend takes in one request (etcd's
    /// `--max-request-bytes`). Nothing was written.
    #[error("transaction is about {bytes} bytes, more than the store's limit of {limit} per request")]
    TooLarge { bytes: usize, limit: usize },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One key's current value and history counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// How many times the key was written since it was created (1 after creation).
    pub version: i64,
}

/// A condition a transaction checks before it applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this value; 0 means the key must not exist.
    ModRevision { key: String, revision: Revision },
}

impl Compare {
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Self {
        Compare::ModRevision { key: key.into(), revision }
    }

    pub fn absent(key: impl Into<String>) -> Self {
        Self::mod_revision(key, 0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Op::Put { key: key.into(), value: value.into() }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// An atomic compare-and-swap transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }

    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held and the ops were applied.
    pub succeeded: bool,
    /// The revision of this transaction when it succeeded, else the store's current revision.
    pub revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. For a delete, `kv.value` is empty and `kv.mod_revision` is the
/// revision of the delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// The store revision the range was read at.
    pub revision: Revision,
}

/// Changes under a prefix, in revision order. Each item holds the events of one or more
/// consecutive revisions and the last revision it covers.
pub struct Watch {
    rx: tokio::sync::mpsc::Receiver<Result<WatchBatch>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

impl Watch {
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<Result<WatchBatch>>) -> Self {
        Watch { rx }
    }

    /// The next batch of changes. `Err(Compacted)` means the watcher fell behind and must
    /// list again; `Err(Closed)` that the store shut down.
    pub async fn next(&mut self) -> Result<WatchBatch> {
        self.rx.recv().await.unwrap_or(Err(StoreError::Closed))
    }
}

/// The store interface the control plane uses. Methods return boxed futures so the trait is
/// object-safe (`Arc<dyn Store>`) and a network backend (etcd) can implement it.
pub trait Store: Send + Sync + 'static {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>>;

    /// Every key that starts with `prefix`, in key order.
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<RangeResponse>>;

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>>;

    /// Streams changes to keys under `prefix` with revisions greater than `after`. Pass the
    /// revision of a [`Store::range`] to continue exactly where the listing left off.
    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch>;

    /// The latest committed revision.
    fn revision(&self) -> Revision;

    /// How big one transaction may be; a bigger one fails with [`StoreError::TooManyOps`] or
    /// [`StoreError::TooLarge`]. Writers whose work can exceed it split it ([`BoundedTxn`],
    /// [`pack`]) where atomicity allows. No limit unless the backend has one (etcd).
    fn limits(&self) -> TxnLimits {
        TxnLimits::NONE
    }
}
