//! The in-memory backend: the same semantics as SQLite, nothing durable. For unit tests.

use std::sync::Arc;

use crate::local::Local;
use crate::{
    BoxFuture, KeyValue, RangeResponse, Result, Revision, Store, StoreError, Txn, TxnLimits, TxnResponse, Watch,
};

#[derive(Clone)]
pub struct MemStore {
    local: Arc<Local>,
    limits: TxnLimits,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    pub fn new() -> Self {
        MemStore { local: Arc::new(Local::new([], 0)), limits: TxnLimits::NONE }
    }

    /// A store that refuses transactions over `limits` as etcd does, so unit tests can check
    /// that writers stay within them.
    pub fn with_limits(limits: TxnLimits) -> Self {
        MemStore { limits, ..Self::new() }
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
        let l = self.limits;
        let most = txn.compares.len().max(txn.ops.len());
        if most > l.max_ops {
            return Box::pin(async move { Err(StoreError::TooManyOps { ops: most, limit: l.max_ops }) });
        }
        let bytes = l.size_of(&txn);
        if bytes > l.max_bytes {
            return Box::pin(async move { Err(StoreError::TooLarge { bytes, limit: l.max_bytes }) });
        }
        let r = self.local.apply_now(&txn);
        Box::pin(async move { Ok(r) })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        self.local.watch(prefix, after)
    }

    fn revision(&self) -> Revision {
        self.local.revision()
    }

    fn limits(&self) -> TxnLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;

    #[tokio::test]
    async fn a_limited_store_refuses_what_etcd_would() {
        let s = MemStore::with_limits(TxnLimits { max_ops: 3, max_bytes: 100, per_op_overhead: 0 });
        let four = (0..4).fold(Txn::new(), |t, i| t.then(Op::put(format!("k/{i}"), "v")));
        assert!(matches!(s.txn(four).await, Err(StoreError::TooManyOps { ops: 4, limit: 3 })));
        let large = Txn::new().then(Op::put("k", vec![0u8; 100]));
        assert!(matches!(s.txn(large).await, Err(StoreError::TooLarge { bytes: 101, limit: 100 })));
        assert_eq!(s.revision(), 0);
        let three = (0..3).fold(Txn::new(), |t, i| t.then(Op::put(format!("k/{i}"), "v")));
        assert!(s.txn(three).await.unwrap().succeeded);
        assert_eq!(s.limits().max_ops, 3);
    }
}
