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
    let s = cluster(Arc::new(store), 1, 768).await;
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

/// A [`MemStore`] whose transactions take a while, as etcd's round trip does, and which counts
/// the ones whose compare failed.
struct Slow {
    inner: MemStore,
    failed: Arc<AtomicUsize>,
}

impl Store for Slow {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        self.inner.get(key)
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<RangeResponse>> {
        self.inner.range(prefix)
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            let r = self.inner.txn(txn).await?;
            if !r.succeeded {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r)
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        self.inner.watch(prefix, after)
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }
}

/// A server over `store` with a cluster `c` of `instances` container instances of `cpu` units
/// each and a task definition `f` of 256 units.
async fn cluster(store: Arc<dyn Store>, instances: usize, cpu: i64) -> Arc<Server> {
    let s = Server::new(crate::Config::default(), store).await.expect("server");
    call(&s, "ecs", "CreateCluster", json!({"clusterName": "c"})).await;
    for i in 0..instances {
        let doc = json!({"instanceId": format!("i-{i}"), "instanceType": "m5.large", "availabilityZone": "us-east-1a"});
        call(
            &s,
            "ecs",
            "RegisterContainerInstance",
            json!({"cluster": "c", "instanceIdentityDocument": doc.to_string(),
                   "totalResources": [{"name": "CPU", "type": "INTEGER", "integerValue": cpu},
                                      {"name": "MEMORY", "type": "INTEGER", "integerValue": 65536}]}),
        )
        .await;
    }
    call(
        &s,
        "ecs",
        "RegisterTaskDefinition",
        json!({"family": "f", "networkMode": "bridge", "requiresCompatibilities": ["EC2"],
               "containerDefinitions": [{"name": "a", "image": "busybox", "cpu": 256, "memory": 64}]}),
    )
    .await;
    s
}

/// [`cluster`] over a [`Slow`] store, with placements guarded in the store (as on etcd); the
/// count of failed compares starts after the setup.
async fn shared_cluster(instances: usize, cpu: i64) -> (Arc<Server>, Arc<AtomicUsize>) {
    let failed = Arc::new(AtomicUsize::new(0));
    let s = cluster(Arc::new(Slow { inner: MemStore::new(), failed: failed.clone() }), instances, cpu).await;
    s.peers.pretend_shared();
    failed.store(0, Ordering::Relaxed);
    (s, failed)
}

/// Four concurrent binpack RunTasks of `count` tasks each; their answers.
async fn four_binpack_runs(s: &Server, count: u32) -> Vec<serde_json::Value> {
    let run = || {
        call(
            s,
            "ecs",
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "f", "count": count, "launchType": "EC2",
                   "placementStrategy": [{"type": "binpack", "field": "cpu"}]}),
        )
    };
    let (a, b, c, d) = tokio::join!(run(), run(), run(), run());
    vec![a, b, c, d]
}

#[tokio::test]
async fn concurrent_binpack_runs_take_turns_instead_of_failing_each_others_compares() {
    let (s, failed) = shared_cluster(3, 256 * 100).await;
    let outs = four_binpack_runs(&s, 10).await;
    for out in &outs {
        assert_eq!(out["failures"], json!([]), "{out}");
        assert_eq!(out["tasks"].as_array().map(Vec::len), Some(10), "{out}");
    }
    // Without the locks every request picks the instance the others just reserved (binpack
    // prefers the fullest), and all but one fail their compare, again on each retry.
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no write may lose to this server's own");
    // Every lock was released: a held one would keep this request waiting until it gave up.
    let out = four_binpack_runs(&s, 1).await;
    assert!(out.iter().all(|o| o["tasks"].as_array().map(Vec::len) == Some(1)), "{out:?}");
    let listed = call(&s, "ecs", "ListTasks", json!({"cluster": "c", "maxResults": 100})).await;
    assert_eq!(listed["taskArns"].as_array().map(Vec::len), Some(44), "{listed}");
}

#[tokio::test]
async fn concurrent_binpack_runs_fill_the_room_exactly() {
    // Room for four tasks on one instance: four requests of two place four in all, and two
    // requests find it full.
    let (s, _) = shared_cluster(1, 256 * 4).await;
    let outs = four_binpack_runs(&s, 2).await;
    let placed: usize = outs.iter().map(|o| o["tasks"].as_array().map_or(0, Vec::len)).sum();
    let refused: Vec<&serde_json::Value> = outs.iter().flat_map(|o| o["failures"].as_array().unwrap().iter()).collect();
    assert_eq!(placed, 4, "{outs:?}");
    // ECS names the instance once per request that found no room on it.
    assert_eq!(refused.len(), 2, "{outs:?}");
    assert!(refused.iter().all(|f| f["reason"] == "RESOURCE:CPU"), "{outs:?}");
    let listed = call(&s, "ecs", "ListTasks", json!({"cluster": "c"})).await;
    assert_eq!(listed["taskArns"].as_array().map(Vec::len), Some(4), "{listed}");
}
