//! The in-memory backend: the same semantics as SQLite, nothing durable. For unit tests.

use std::sync::Arc;

use crate::local::Local;
use crate::{BoxFuture, KeyValue, RangeResponse, Result, Revision, Store, Txn, TxnResponse, Watch};

#[derive(Clone)]
pub struct MemStore {
    local: Arc<Local>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    pub fn new() -> Self {
        MemStore { local: Arc::new(Local::new([], 0)) }
    }
}

impl Store for MemStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        let v = self.local.get(key);
        Box::pin(async move { Ok(v) })
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<RangeResponse>> {
        let v = self.local.range(prefix);
        Box::pin(async move { Ok(v) })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        let r = self.local.apply_now(&txn);
        Box::pin(async move { Ok(r) })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        self.local.watch(prefix, after)
    }

    fn revision(&self) -> Revision {
        self.local.revision()
    }
}
