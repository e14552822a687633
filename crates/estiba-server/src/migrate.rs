//! Changes of the store's key layout, applied once when the server starts (before the view
//! loads), each key's move in one transaction, as many moves per transaction as the store's
//! limits take (a crash between two leaves the rest for the next start).

use estiba_core::node::Claim;
use estiba_store::{Compare, Op, Store, StoreError, Txn};

use crate::keys;

/// Moves claims from beside their task (`ecs/<account>/<region>/claims/<cluster>/<task id>`)
/// under their node (`ecs/-/-/claims/<node>/...`, see [`keys`]). Returns how many moved.
/// A claim that does not decode, or names a node no key can hold, is left where it is (and
/// so ignored, as undecodable documents are).
pub async fn claims_by_node(store: &dyn Store) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let all = store.range("ecs/").await?;
        let present: std::collections::HashSet<&str> =
            all.kvs.iter().filter(|kv| kv.key.starts_with(keys::CLAIMS_PREFIX)).map(|kv| kv.key.as_str()).collect();
        let mut batch = estiba_store::BoundedTxn::new(store.limits());
        for kv in &all.kvs {
            if kv.key.starts_with(keys::CLAIMS_PREFIX) || !matches!(keys::split(&kv.key), Some(("claims", _))) {
                continue;
            }
            let new =
                serde_json::from_slice::<Claim>(&kv.value).ok().and_then(|c| keys::migrated_claim(&kv.key, &c.node));
            let Some(new) = new else {
                tracing::warn!(key = %kv.key, "a claim of the old layout cannot be moved; ignored");
                continue;
            };
            let mut txn = Txn::new().when(Compare::mod_revision(&kv.key, kv.mod_revision));
            if !present.contains(new.as_str()) {
                // (Already there: the old one only goes.)
                txn.compares.push(Compare::absent(&new));
                txn.ops.push(Op::put(new, kv.value.clone()));
            }
            txn.ops.push(Op::delete(&kv.key));
            if !batch.add(txn) {
                break;
            }
        }
        let txn = batch.into_txn();
        if txn.ops.is_empty() {
            return Ok(total);
        }
        let moved = txn.ops.iter().filter(|op| matches!(op, Op::Delete { .. })).count();
        if store.txn(txn).await?.succeeded {
            tracing::info!(moved, "claims moved under their nodes");
            total += moved;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_core::Scope;
    use estiba_store::MemStore;

    #[tokio::test]
    async fn old_claims_move_under_their_node_once() {
        let store = MemStore::new();
        let s = Scope::new("123456789012", "us-east-1");
        let claim = |node: &str| {
            serde_json::to_vec(&Claim { node: node.into(), public_ip: true, ..Default::default() }).unwrap()
        };
        let txn = Txn::new()
            .then(Op::put(keys::task(&s, "c", "t1"), b"{}".to_vec()))
            .then(Op::put("ecs/123456789012/us-east-1/claims/c/t1", claim("n1")))
            .then(Op::put("ecs/123456789012/us-east-1/claims/c/t2", claim("n2")))
            .then(Op::put("ecs/123456789012/us-east-1/claims/c/t3", b"not json".to_vec()))
            .then(Op::put(keys::claim("n1", &s, "c", "t4"), claim("n1")))
            // Both layouts (cannot happen, but must not stop the server): the old one goes.
            .then(Op::put("ecs/123456789012/us-east-1/claims/c/t4", claim("n1")));
        assert!(store.txn(txn).await.unwrap().succeeded);
        let before = store.revision();

        assert_eq!(claims_by_node(&store).await.unwrap(), 3);
        assert_eq!(store.revision(), before + 1, "one transaction");
        let moved = store.get(&keys::claim("n1", &s, "c", "t1")).await.unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<Claim>(&moved.value).unwrap(),
            Claim { node: "n1".into(), public_ip: true, ..Default::default() }
        );
        assert!(store.get(&keys::claim("n2", &s, "c", "t2")).await.unwrap().is_some());
        assert!(store.get("ecs/123456789012/us-east-1/claims/c/t1").await.unwrap().is_none());
        assert!(store.get("ecs/123456789012/us-east-1/claims/c/t2").await.unwrap().is_none());
        assert!(store.get("ecs/123456789012/us-east-1/claims/c/t4").await.unwrap().is_none());
        // Undecodable: left alone.
        assert!(store.get("ecs/123456789012/us-east-1/claims/c/t3").await.unwrap().is_some());

        // Nothing left to move: no write.
        assert_eq!(claims_by_node(&store).await.unwrap(), 0);
        assert_eq!(store.revision(), before + 1);

        // The view answers by task key.
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
        let view = crate::view::View::start(store.clone(), []).await.unwrap();
        {
            let st = view.read();
            let c = st.claim(&keys::task(&s, "c", "t1")).unwrap();
            assert_eq!(c.value.node, "n1");
            assert_eq!(st.claim(&keys::task(&s, "c", "t4")).unwrap().key, keys::claim("n1", &s, "c", "t4"));
            assert!(st.claim(&keys::task(&s, "c", "t3")).is_none());
        }
        let r = store.txn(Txn::new().then(Op::delete(keys::claim("n1", &s, "c", "t1")))).await.unwrap();
        view.wait_for(r.revision).await;
        assert!(view.read().claim(&keys::task(&s, "c", "t1")).is_none());
    }

    #[tokio::test]
    async fn many_claims_move_in_transactions_within_the_limits() {
        let store = MemStore::with_limits(estiba_store::TxnLimits { max_ops: 4, ..Default::default() });
        let claim = serde_json::to_vec(&Claim { node: "n1".into(), ..Default::default() }).unwrap();
        for i in 0..9 {
            let t = Txn::new().then(Op::put(format!("ecs/123456789012/us-east-1/claims/c/t{i}"), claim.clone()));
            assert!(store.txn(t).await.unwrap().succeeded);
        }
        let before = store.revision();
        assert_eq!(claims_by_node(&store).await.unwrap(), 9);
        // Two moves (a put and a delete each) per transaction of four operations.
        assert_eq!(store.revision(), before + 5);
        assert!(store.range("ecs/123456789012/").await.unwrap().kvs.is_empty());
        assert_eq!(store.range(keys::CLAIMS_PREFIX).await.unwrap().kvs.len(), 9);
    }
}
