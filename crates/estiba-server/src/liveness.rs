//! Node liveness: whether a node reported within the node lease (`Config::node_lease`).
//!
//! Heartbeats are frequent and say little, so they stay out of the versioned store: a
//! node's report is written there only when it says something new
//! ([`NodeStatus::news_against`]); the beat itself only renews the node's liveness.
//! - With etcd (several servers may share the state) liveness is an etcd lease of the node
//!   lease's length per node, granted by the server the node reports to, renewed by each
//!   report (a keep-alive, no write) and holding the key `ecs/-/-/node-leases/<node>`. A node
//!   that falls silent loses its key when the lease runs out, which every server's view sees.
//!   A node that moves to another server gets a lease of that server, and the key is bound
//!   to it (the key names its lease, so a server sees when it no longer holds it).
//! - With SQLite there is one server: the time of each node's last report is kept in memory.
//!   A node known from the store that has not reported since the server started counts as
//!   alive for one lease after the start, as it had no chance to report yet.
//!
//! May not: decide what happens to a lost node's tasks (the lost-nodes controller does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use estiba_core::keys;
use estiba_core::node::{NodeLease, NodeStatus};
use estiba_store::{EtcdStore, Op, Txn};

use crate::view::State;
use crate::{now, Server, WriteError};

pub struct Liveness {
    lease: Duration,
    /// When this server started (seconds since the epoch).
    started: f64,
    /// The store leases live in, when the state is in etcd (set once by the binary).
    etcd: OnceLock<Arc<EtcdStore>>,
    /// The lease this server holds for each node that reports to it (etcd).
    leases: Mutex<HashMap<String, i64>>,
    /// When each node last reported (SQLite).
    beats: Mutex<HashMap<String, f64>>,
}

impl Liveness {
    pub fn new(lease: Duration) -> Liveness {
        Liveness { lease, started: now(), etcd: OnceLock::new(), leases: Default::default(), beats: Default::default() }
    }

    /// Keeps liveness in etcd's leases from now on.
    pub fn use_etcd(&self, etcd: Arc<EtcdStore>) {
        let _ = self.etcd.set(etcd);
    }

    /// Records a report of `status.id`: renews its liveness, and writes the report when it
    /// says something the stored one does not.
    pub async fn report(&self, server: &Server, mut status: NodeStatus) -> Result<(), WriteError> {
        let id = status.id.clone();
        status.lost_at = None;
        self.beat(server, &id).await?;
        let news = server.view.read().nodes.get(&keys::node(&id)).is_none_or(|d| status.news_against(&d.value));
        if news {
            status.heartbeat_at = now();
            let value = serde_json::to_vec(&status).unwrap_or_default();
            server.store.txn(Txn::new().then(Op::put(keys::node(&id), value))).await?;
        }
        Ok(())
    }

    async fn beat(&self, server: &Server, node: &str) -> Result<(), WriteError> {
        let Some(etcd) = self.etcd.get() else {
            self.beats.lock().unwrap_or_else(|e| e.into_inner()).insert(node.to_owned(), now());
            return Ok(());
        };
        let held = self.leases.lock().unwrap_or_else(|e| e.into_inner()).get(node).copied();
        if let Some(lease) = held {
            if etcd.keep_lease_alive(lease).await? {
                let bound = server.view.read().node_leases.get(&keys::node_lease(node)).map(|d| d.value.lease);
                if bound == Some(lease) {
                    return Ok(());
                }
                // Another server bound the key to its lease (the node reported there in
                // between), or the view has not seen our write yet: bind it to ours again.
                return self.bind(etcd, node, lease).await;
            }
        }
        let lease = etcd.grant_lease(self.lease.max(Duration::from_secs(2))).await?;
        self.bind(etcd, node, lease).await?;
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).insert(node.to_owned(), lease);
        Ok(())
    }

    async fn bind(&self, etcd: &EtcdStore, node: &str, lease: i64) -> Result<(), WriteError> {
        let value = serde_json::to_vec(&NodeLease { lease }).unwrap_or_default();
        etcd.put_with_lease(&keys::node_lease(node), value, lease).await?;
        Ok(())
    }

    /// Whether `node` reported within the node lease of `now`, as `st` (this server's view)
    /// and this server know.
    pub fn alive(&self, st: &State, node: &str, now: f64) -> bool {
        if self.etcd.get().is_some() {
            return st.node_leases.contains_key(&keys::node_lease(node));
        }
        let lease = self.lease.as_secs_f64();
        match self.beats.lock().unwrap_or_else(|e| e.into_inner()).get(node) {
            Some(at) => now - at <= lease,
            None => now - self.started <= lease,
        }
    }
}

/// The server's side of reports, for its own node.
pub struct ServerReports(pub Arc<Server>);

impl estiba_core::node::NodeReports for ServerReports {
    fn report(
        &self,
        status: NodeStatus,
    ) -> estiba_core::telemetry::BoxFuture<'_, Result<(), estiba_core::node::ReportError>> {
        Box::pin(async move {
            self.0.liveness.report(&self.0, status).await.map_err(|e| estiba_core::node::ReportError(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_leases_a_node_is_alive_for_a_lease_after_its_report_or_the_start() {
        let l = Liveness::new(Duration::from_secs(10));
        let st = State::default();
        let t0 = l.started;
        // Not heard of since the start: alive for one lease.
        assert!(l.alive(&st, "n1", t0 + 9.0));
        assert!(!l.alive(&st, "n1", t0 + 11.0));
        l.beats.lock().unwrap().insert("n1".into(), t0 + 20.0);
        assert!(l.alive(&st, "n1", t0 + 29.0));
        assert!(!l.alive(&st, "n1", t0 + 31.0));
    }
}
