//! Changes of the store's key layout, applied once when the server starts (before the view
//! loads), each in one transaction.

use estiba_core::node::Claim;
use estiba_store::{Compare, Op, Store, StoreError, Txn};

use crate::keys;

/// Moves claims from beside their task (`ecs/<account>/<region>/claims/<cluster>/<task id>`)
/// under their node (`ecs/-/-/claims/<node>/...`, see [`keys`]). Returns how many moved.
/// A claim that does not decode, or names a node no key can hold, is left where it is (and
/// so ignored, as undecodable documents are).
pub async fn claims_by_node(store: &dyn Store) -> Result<usize, StoreError> {
    loop {
        let all = store.range("ecs/").await?;
        let present: std::collections::HashSet<&str> =
            all.kvs.iter().filter(|kv| kv.key.starts_with(keys::CLAIMS_PREFIX)).map(|kv| kv.key.as_str()).collect();
        let mut txn = Txn::new();
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
            txn.compares.push(Compare::mod_revision(&kv.key, kv.mod_revision));
            if !present.contains(new.as_str()) {
                // (Already there: the old one only goes.)
                txn.compares.push(Compare::absent(&new));
                txn.ops.push(Op::put(new, kv.value.clone()));
            }
            txn.ops.push(Op::delete(&kv.key));
        }
        if txn.ops.is_empty() {
            return Ok(0);
        }
        let moved = txn.ops.iter().filter(|op| matches!(op, Op::Delete { .. })).count();
        if store.txn(txn).await?.succeeded {
            tracing::info!(moved, "claims moved under their nodes");
            return Ok(moved);
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
}
