//! Housekeeping: removes STOPPED tasks after their retention, deletes task definitions in
//! DELETE_IN_PROGRESS once no task or service uses them, finishes the deletion of capacity
//! providers (ACTIVE / DELETE_IN_PROGRESS → INACTIVE / DELETE_COMPLETE), and stops tasks left
//! in deleted clusters (RunTask does not guard against a concurrent DeleteCluster). INACTIVE
//! clusters and services stay visible for `inactive_retention` after the pass that first saw
//! them INACTIVE, then are forgotten with their tags (a service with its deployment records
//! and revisions): when they became INACTIVE is kept in memory only, so a restart at worst
//! delays the purge by one retention. Runs every
//! `housekeeping_every`, first that long after the start.

use std::time::Duration;

use estiba_api::ecs::{CapacityProviderStatus, CapacityProviderUpdateStatus, TaskDefinitionStatus, TaskStopCode};
use estiba_core::service as svc_rules;
use estiba_core::{task, EcsError};
use estiba_store::{Compare, Op, Txn};

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
        housekeeping(server, self).await?;
        Ok(Wake::after(self.every))
    }
}

/// Removes what has outlived its retention and cleans up after deleted resources.
pub async fn housekeeping(server: &Server, h: &Housekeeping) -> Result<(), EcsError> {
    let now = now();
    let cutoff = now - h.stopped_task_retention.as_secs_f64();
    let txn = {
        let st = server.view.read();
        let mut txn = Txn::new();
        for d in st.tasks.values() {
            let t = &d.value;
            if t.stopped() && t.stopped_at.is_some_and(|at| at < cutoff) {
                txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                txn.ops.push(Op::delete(&d.key));
                txn.ops.push(Op::delete(keys::tags_of(&d.key)));
                txn.ops.push(Op::delete(keys::protection_of(&d.key)));
                if let Some(c) = st.claim(&d.key) {
                    txn.ops.push(Op::delete(&c.key));
                }
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
                    txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                    txn.ops.push(put(&d.key, &t));
                    txn.ops.extend(crate::stop_ops(&st, &d.key, now));
                }
            }
            if txn.ops.len() > 500 {
                break;
            }
        }
        for (key, rev, is_service) in h.expired(&st) {
            txn.compares.push(Compare::mod_revision(&key, rev));
            txn.ops.push(Op::delete(&key));
            txn.ops.push(Op::delete(keys::tags_of(&key)));
            if let Some((scope, cluster, name)) = is_service.then(|| keys::parse_service(&key)).flatten() {
                let records = keys::service_deployments_of(&scope, &cluster, &name);
                let revisions = keys::service_revisions_of(&scope, &cluster, &name);
                for k in crate::view::State::range(&st.service_deployments, &records).map(|d| &d.key) {
                    txn.ops.push(Op::delete(k));
                }
                for k in crate::view::State::range(&st.service_revisions, &revisions).map(|d| &d.key) {
                    txn.ops.push(Op::delete(k));
                }
            }
        }
        for d in st.capacity_providers.values() {
            if d.value.update_status == Some(CapacityProviderUpdateStatus::DeleteInProgress) {
                let mut cp = d.value.clone();
                cp.status = Some(CapacityProviderStatus::Inactive);
                cp.update_status = Some(CapacityProviderUpdateStatus::DeleteComplete);
                txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                txn.ops.push(put(&d.key, &cp));
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
                txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                txn.ops.push(Op::delete(&d.key));
                txn.ops.push(Op::delete(keys::tags_of(&d.key)));
            }
        }
        txn
    };
    if !txn.ops.is_empty() {
        let n = txn.ops.len();
        if server.commit(txn).await? {
            tracing::debug!(ops = n, "housekeeping committed");
        }
    }
    Ok(())
}
