//! Reservations across retries: a RunTask whose write conflicts while its view has not moved
//! (on etcd the conflicting write can reach the store before the watch brings it to the view)
//! places again on the same view, and must not count its own first picks as taken.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use estiba_store::{BoxFuture, KeyValue, MemStore, RangeResponse, Result, Revision, Store, Txn, TxnResponse, Watch};
use serde_json::json;

use crate::scaling::tests::call;
use crate::Server;

/// A [`MemStore`] whose first `conflicts` transactions that write a task fail their compare
/// without writing, as if another request had just written: the revision stays where it was.
struct Conflicting {
    inner: MemStore,
    conflicts: AtomicUsize,
}

impl Store for Conflicting {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        self.inner.get(key)
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<RangeResponse>> {
        self.inner.range(prefix)
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        let writes_task = txn.ops.iter().any(|o| o.key().contains("/tasks/"));
        if writes_task && self.conflicts.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
        {
            let revision = self.inner.revision();
            return Box::pin(async move { Ok(TxnResponse { succeeded: false, revision }) });
        }
        self.inner.txn(txn)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        self.inner.watch(prefix, after)
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }
}

#[tokio::test]
async fn a_retry_on_the_same_view_places_what_the_first_attempt_could() {
    let store = Conflicting { inner: MemStore::new(), conflicts: AtomicUsize::new(2) };
    let s = Server::new(crate::Config::default(), Arc::new(store)).await.expect("server");
    call(&s, "ecs", "CreateCluster", json!({"clusterName": "c"})).await;
    let doc = json!({"instanceId": "i-1", "instanceType": "m5.large", "availabilityZone": "us-east-1a"});
    call(
        &s,
        "ecs",
        "RegisterContainerInstance",
        json!({"cluster": "c", "instanceIdentityDocument": doc.to_string(),
               "totalResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 768},
                                  {"name": "MEMORY", "type": "INTEGER", "integerValue": 2048}]}),
    )
    .await;
    call(
        &s,
        "ecs",
        "RegisterTaskDefinition",
        json!({"family": "f", "networkMode": "bridge", "requiresCompatibilities": ["EC2"],
               "containerDefinitions": [{"name": "a", "image": "busybox", "cpu": 256, "memory": 64}]}),
    )
    .await;
    // Room for exactly three: the third attempt (after two conflicts) still finds it all.
    let out =
        call(&s, "ecs", "RunTask", json!({"cluster": "c", "taskDefinition": "f", "count": 3, "launchType": "EC2"}))
            .await;
    assert_eq!(out["failures"], json!([]), "{out}");
    assert_eq!(out["tasks"].as_array().map(Vec::len), Some(3), "{out}");
    // And nothing stays reserved once the request is answered: the room is really full.
    let out = call(&s, "ecs", "RunTask", json!({"cluster": "c", "taskDefinition": "f", "launchType": "EC2"})).await;
    assert_eq!(out["failures"][0]["reason"], "RESOURCE:CPU", "{out}");
}
