//! Housekeeping: removes STOPPED tasks after their retention, deletes task definitions in
//! DELETE_IN_PROGRESS once no task or service uses them, finishes the deletion of capacity
//! providers (ACTIVE / DELETE_IN_PROGRESS → INACTIVE / DELETE_COMPLETE), and stops tasks left
//! in deleted clusters (RunTask does not guard against a concurrent DeleteCluster). INACTIVE
//! clusters and services stay visible for `inactive_retention` after the pass that first saw
//! them INACTIVE, then are forgotten with their tags (a service with its deployment records
//! and revisions): when they became INACTIVE is kept in memory only, so a restart at worst
//! delays the purge by one retention. Runs every
//! `housekeeping_every`, first that long after the start; each pass writes one transaction
//! within the server's background budget and, when work was left over, comes back after
//! [`LEFT_OVER_WAKE`].

use std::time::Duration;

use estiba_api::ecs::{CapacityProviderStatus, CapacityProviderUpdateStatus, TaskDefinitionStatus, TaskStopCode};
use estiba_core::service as svc_rules;
use estiba_core::{task, EcsError};
use estiba_store::{BoundedTxn, Compare, Op, Txn};

use super::{is_claimed, Controller, Wake};
use crate::services::ecs::put;
use crate::{keys, now, Server};

pub struct Housekeeping {
    pub every: Duration,
    pub stopped_task_retention: Duration,
    pub inactive_retention: Duration,
    /// Key of an INACTIVE cluster or service → when a pass first saw it so.
    pub inactive_since: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Housekeeping {
    pub fn new(every: Duration, stopped_task_retention: Duration, inactive_retention: Duration) -> Self {
        Housekeeping { every, stopped_task_retention, inactive_retention, inactive_since: Default::default() }
    }

    /// The INACTIVE clusters and services whose retention is over, as (key, revision).
    fn expired(&self, st: &crate::view::State) -> Vec<(String, estiba_store::Revision, bool)> {
        let now = std::time::Instant::now();
        let mut since = self.inactive_since.lock().unwrap();
        let clusters = st
            .clusters
            .values()
            .filter(|d| d.value.status.as_deref() == Some(estiba_core::cluster::INACTIVE))
            .map(|d| (d.key.clone(), d.rev, false));
        let services = st
            .services
            .values()
            .filter(|d| svc_rules::status(&d.value) == svc_rules::INACTIVE)
            .map(|d| (d.key.clone(), d.rev, true));
        let inactive: Vec<_> = clusters.chain(services).collect();
        since.retain(|k, _| inactive.iter().any(|(i, _, _)| i == k));
        inactive
            .into_iter()
            .filter(|(k, _, _)| now.duration_since(*since.entry(k.clone()).or_insert(now)) >= self.inactive_retention)
            .collect()
    }
}

impl Controller for Housekeeping {
    type Error = EcsError;

    fn name(&self) -> &'static str {
        "housekeeping"
    }

    fn first(&self) -> Wake {
        Wake::after(self.every)
    }

    fn after_error(&self) -> Wake {
        Wake::after(self.every)
    }

    async fn pass(&self, server: &Server) -> Result<Wake, EcsError> {
        if housekeeping(server, self).await? {
            return Ok(Wake::after(LEFT_OVER_WAKE.min(self.every)));
        }
        Ok(Wake::after(self.every))
    }
}

/// When a pass left work over (its transaction was full), the next one comes this soon.
pub const LEFT_OVER_WAKE: Duration = Duration::from_millis(200);

/// Adds `group` to the pass's transaction if it fits; a group too big for any transaction is
/// logged and skipped (it would fail for ever otherwise).
fn push(txn: &mut BoundedTxn, group: Txn, what: &str, key: &str) {
    if !txn.fits_alone(&group) {
        tracing::warn!(key, what, ops = group.ops.len(), "housekeeping: change too big for one transaction, skipped");
        return;
    }
    txn.add(group);
}

/// Removes what has outlived its retention and cleans up after deleted resources, in one
/// transaction within [`Server::txn_budget`]; each task (with its claim and tags), cluster,
/// capacity provider or task definition goes whole or waits. A service too big to go whole
/// loses its deployment records and revisions in batches first (each guarded by the service's
/// revision, so a new service of the same name keeps its own), then goes itself. Returns
/// whether work was left over.
pub async fn housekeeping(server: &Server, h: &Housekeeping) -> Result<bool, EcsError> {
    let now = now();
    let cutoff = now - h.stopped_task_retention.as_secs_f64();
    let budget = server.txn_budget();
    let txn = {
        let st = server.view.read();
        let mut txn = BoundedTxn::new(budget);
        for d in st.tasks.values() {
            if txn.left_over() {
                break;
            }
            let t = &d.value;
            if t.stopped() && t.stopped_at.is_some_and(|at| at < cutoff) {
                let mut g = Txn::new().when(Compare::mod_revision(&d.key, d.rev));
                g.ops.push(Op::delete(&d.key));
                g.ops.push(Op::delete(keys::tags_of(&d.key)));
                g.ops.push(Op::delete(keys::protection_of(&d.key)));
                if let Some(c) = st.claim(&d.key) {
                    g.ops.push(Op::delete(&c.key));
                }
                push(&mut txn, g, "expire a stopped task", &d.key);
            } else if !t.stopped() && !t.desired_stopped() {
                let cluster_key = keys::cluster_of(&d.key).unwrap_or_default();
                let cluster_gone =
                    st.clusters.get(&cluster_key).is_none_or(|c| c.value.status.as_deref() != Some("ACTIVE"));
                if cluster_gone {
                    let mut t = d.task().into_owned();
                    task::request_stop(&mut t, TaskStopCode::ServiceSchedulerInitiated, "The cluster was deleted");
                    if !is_claimed(&st, &d.key) {
                        task::stop_unstarted(&mut t, now);
                    }
                    let mut g = Txn::new().when(Compare::mod_revision(&d.key, d.rev));
                    g.ops.push(put(&d.key, &t));
                    g.ops.extend(crate::stop_ops(&st, &d.key, now));
                    push(&mut txn, g, "stop a task of a deleted cluster", &d.key);
                }
            }
        }
        for (key, rev, is_service) in h.expired(&st) {
            let mut g = Txn::new().when(Compare::mod_revision(&key, rev));
            g.ops.push(Op::delete(&key));
            g.ops.push(Op::delete(keys::tags_of(&key)));
            let mut children = Vec::new();
            if let Some((scope, cluster, name)) = is_service.then(|| keys::parse_service(&key)).flatten() {
                let records = keys::service_deployments_of(&scope, &cluster, &name);
                let revisions = keys::service_revisions_of(&scope, &cluster, &name);
                children.extend(crate::view::State::range(&st.service_deployments, &records).map(|d| d.key.clone()));
                children.extend(crate::view::State::range(&st.service_revisions, &revisions).map(|d| d.key.clone()));
            }
            g.ops.extend(children.iter().map(Op::delete));
            if txn.fits_alone(&g) {
                txn.add(g);
                continue;
            }
            // Too many records to go with the service: the records first, a batch at a time.
            if txn.add(Txn::new().when(Compare::mod_revision(&key, rev))) {
                for k in children {
                    if !txn.add(Txn::new().then(Op::delete(k))) {
                        break;
                    }
                }
            }
            txn.leave_over();
        }
        for d in st.capacity_providers.values() {
            if d.value.update_status == Some(CapacityProviderUpdateStatus::DeleteInProgress) {
                let mut cp = d.value.clone();
                cp.status = Some(CapacityProviderStatus::Inactive);
                cp.update_status = Some(CapacityProviderUpdateStatus::DeleteComplete);
                let g = Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put(&d.key, &cp));
                push(&mut txn, g, "finish a capacity provider deletion", &d.key);
            }
        }
        for d in st.taskdefs.values() {
            if d.value.status != Some(TaskDefinitionStatus::DeleteInProgress) {
                continue;
            }
            let arn = d.value.task_definition_arn.as_deref().unwrap_or("");
            let used_by_task =
                st.tasks.values().any(|t| t.value.task_definition_arn() == Some(arn) && !t.value.stopped());
            let used_by_service = st.services.values().any(|s| {
                svc_rules::status(&s.value) != svc_rules::INACTIVE
                    && s.value.deployments.iter().flatten().any(|dep| dep.task_definition.as_deref() == Some(arn))
            });
            if !used_by_task && !used_by_service {
                let g = Txn::new()
                    .when(Compare::mod_revision(&d.key, d.rev))
                    .then(Op::delete(&d.key))
                    .then(Op::delete(keys::tags_of(&d.key)));
                push(&mut txn, g, "delete a task definition", &d.key);
            }
        }
        txn
    };
    let left_over = txn.left_over();
    let txn = txn.into_txn();
    if !txn.ops.is_empty() {
        let n = txn.ops.len();
        if server.commit(txn).await? {
            tracing::debug!(ops = n, left_over, "housekeeping committed");
        }
    }
    Ok(left_over)
}
