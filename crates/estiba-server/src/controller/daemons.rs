//! The daemon scheduler: on every change of the view, and at least once a second, each daemon
//! gets a pass: [`estiba_core::daemon::plan`] decides which instances get a task of the
//! daemon's revision and which tasks stop, and this module writes that with compare-and-swap
//! (new tasks through RunTask's placement, pinned to their instance), with the deployment's
//! progress and, for a deleted daemon whose tasks have stopped, the daemon's removal.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use estiba_api::ecs::*;
use estiba_core::daemon::{self, DaemonDoc, DeploymentDoc, RevisionDoc};
use estiba_core::task::{self, Launch, Spec};
use estiba_core::{EcsError, Scope};
use estiba_store::{Compare, Txn};

use super::{is_claimed, Controller, Wake};
use crate::services::ecs::daemons::{daemons_table, deployments_table, revisions_table, snapshot, taskdefs_table};
use crate::services::ecs::{put, Ctx, Held};
use crate::view::State;
use crate::{keys, now, RandomIds, Server};

pub struct Daemons;

impl Controller for Daemons {
    type Error = Infallible;

    fn name(&self) -> &'static str {
        "daemons"
    }

    async fn pass(&self, server: &Server) -> Result<Wake, Infallible> {
        let retry = daemons_pass(server).await;
        let wait = retry.map(|at| (at - now()).clamp(0.01, 1.0)).unwrap_or(1.0);
        Ok(Wake::change_or_after(Duration::from_secs_f64(wait)))
    }
}

/// One pass over every daemon; returns when time alone makes the next step (a bake time's end).
pub async fn daemons_pass(server: &Server) -> Option<f64> {
    {
        let keys: Vec<String> = {
            let st = server.view.read();
            st.docs::<DaemonDoc>(daemons_table(), daemon::PREFIX).map(|d| d.key.clone()).collect()
        };
        let mut retry: Option<f64> = None;
        for key in keys {
            match reconcile(server, &key).await {
                Ok(Some(at)) => retry = Some(retry.map_or(at, |r: f64| r.min(at))),
                Ok(None) => {}
                Err(e) => tracing::warn!(daemon = %key, error = %e, "daemon reconcile failed"),
            }
        }
        if let Err(e) = finish_taskdef_deletions(server).await {
            tracing::warn!(error = %e, "finishing daemon task definition deletions failed");
        }
        retry
    }
}

/// Daemon task definitions in DELETE_IN_PROGRESS that no daemon's revision runs and no live
/// task uses become DELETED, and their runnable form goes.
async fn finish_taskdef_deletions(server: &Server) -> Result<bool, crate::WriteError> {
    let groups: Vec<Txn> = {
        let st = server.view.read();
        let deleting: Vec<_> = st
            .docs::<daemon::TaskDefDoc>(taskdefs_table(), daemon::PREFIX)
            .filter(|d| d.value.definition.status == Some(DaemonTaskDefinitionStatus::DeleteInProgress))
            .collect();
        if deleting.is_empty() {
            return Ok(false);
        }
        let in_use: std::collections::HashSet<&str> = st
            .docs::<DaemonDoc>(daemons_table(), daemon::PREFIX)
            .filter_map(|d| {
                let scope = scope_of(&d.key)?;
                let rkey = daemon::revision_key(&scope, &d.value.cluster, &d.value.name, &d.value.revision_id);
                st.doc::<RevisionDoc>(revisions_table(), &rkey)?.value.revision.daemon_task_definition_arn.as_deref()
            })
            .chain(st.tasks.values().filter(|t| !t.value.stopped()).filter_map(|t| t.value.task_definition_arn()))
            .collect();
        deleting
            .into_iter()
            .filter_map(|d| {
                let td = &d.value.definition;
                let arn = td.daemon_task_definition_arn.as_deref()?;
                if in_use.contains(arn) {
                    return None;
                }
                let scope = scope_of(&d.key)?;
                let mut doc = d.value.clone();
                doc.definition.status = Some(DaemonTaskDefinitionStatus::Deleted);
                let family = td.family.as_deref().unwrap_or("");
                let run_key = keys::taskdef(&scope, &daemon::runnable_family(family), td.revision);
                Some(
                    Txn::new()
                        .when(Compare::mod_revision(&d.key, d.rev))
                        .then(put(&d.key, &doc))
                        .then(estiba_store::Op::delete(run_key)),
                )
            })
            .collect()
    };
    super::commit_bounded(server, groups, "finish daemon task definition deletions").await
}

/// `ecs-daemons/<account>/<region>/daemons/<cluster>/<name>` → scope.
fn scope_of(key: &str) -> Option<Scope> {
    let mut p = key.strip_prefix(daemon::PREFIX)?.split('/');
    Some(Scope::new(p.next()?, p.next()?))
}

async fn reconcile(server: &Server, key: &str) -> Result<Option<f64>, EcsError> {
    let Some(scope) = scope_of(key) else { return Ok(None) };
    let mut ids = RandomIds;
    let held = Arc::new(Held::new(&server.reservations));
    server
        .transact::<_, EcsError>(|st| {
            let Some(doc) = st.doc::<DaemonDoc>(daemons_table(), key) else { return Ok((Txn::new(), None)) };
            let d = &doc.value;
            let now = now();
            let dep_key = daemon::deployment_key(&scope, &d.cluster, &d.name, &d.deployment_id);
            let dep = st.doc::<DeploymentDoc>(deployments_table(), &dep_key);
            let (instances, tasks) = snapshot(st, &scope, d);
            let planned: Vec<daemon::DaemonTask> = tasks.iter().map(|(t, _)| t.clone()).collect();
            let in_alarm = |name: &str| {
                let k = estiba_core::alarms::alarm_key(&scope, name);
                st.doc::<estiba_core::alarms::AlarmDoc>(crate::services::cloudwatch::alarms_table(), &k)
                    .is_some_and(|a| a.value.alarm.state_value == Some(estiba_api::cloudwatch::StateValue::Alarm))
            };
            let plan = daemon::plan(d, dep.map(|x| &x.value), &instances, &planned, &in_alarm, now);

            // One transaction within the store's limits: when the stops and starts planned do
            // not fit (hundreds of instances on etcd), fewer starts, then fewer stops, go now
            // and the rest next pass, which this write wakes.
            let limits = server.txn_limits();
            let (mut stops_cap, mut starts_cap) = (plan.stop.len(), plan.start.len());
            loop {
                held.begin_attempt();
                let mut txn = Txn::new().when(Compare::mod_revision(&doc.key, doc.rev));
                for (tkey, reason) in plan.stop.iter().take(stops_cap) {
                    let Some((_, t)) = tasks.iter().find(|(t, _)| t.arn == tkey.as_str()) else { continue };
                    let mut full = t.task().into_owned();
                    task::request_stop(&mut full, TaskStopCode::ServiceSchedulerInitiated, reason);
                    if !is_claimed(st, &t.key) {
                        task::stop_unstarted(&mut full, now);
                    }
                    txn.compares.push(Compare::mod_revision(&t.key, t.rev));
                    txn.ops.push(put(&t.key, &full));
                    txn.ops.extend(crate::stop_ops(st, &t.key, now));
                }
                let revision = plan.revision_id.clone().unwrap_or_else(|| d.revision_id.clone());
                if starts_cap > 0 {
                    let cx = Ctx::of(server, scope.clone(), now, Some(held.clone()));
                    let on = &plan.start[..starts_cap];
                    start(st, &cx, d, &revision, &instances, on, &mut txn, &mut ids)?;
                }
                if let (Some(new), Some(old)) = (&plan.deployment, dep) {
                    txn.compares.push(Compare::mod_revision(&old.key, old.rev));
                    txn.ops.push(put(&old.key, new));
                }
                if plan.gone {
                    txn.ops.push(estiba_store::Op::delete(doc.key.clone()));
                    let tagged = daemon::daemon_tagged_key(&scope, &d.cluster, &d.name);
                    txn.ops.push(estiba_store::Op::delete(keys::tags_of(&tagged)));
                } else if revision != d.revision_id {
                    let mut nd = d.clone();
                    nd.revision_id = revision;
                    nd.updated_at = now;
                    txn.ops.push(put(&doc.key, &nd));
                }
                if txn.ops.is_empty() {
                    return Ok((Txn::new(), plan.retry_at));
                }
                if !limits.fits(&txn) && (starts_cap > 0 || stops_cap > 0) {
                    if starts_cap > 0 {
                        starts_cap /= 2;
                    } else {
                        stops_cap /= 2;
                    }
                    continue;
                }
                return Ok((txn, plan.retry_at));
            }
        })
        .await
}

/// Places one task of the daemon's revision on each of `on` (instance ARNs), written into
/// `txn`. An instance that cannot take it now (its resources) is tried again next pass.
#[allow(clippy::too_many_arguments)]
fn start(
    st: &State,
    cx: &Ctx,
    d: &DaemonDoc,
    revision_id: &str,
    instances: &[daemon::Instance],
    on: &[String],
    txn: &mut Txn,
    ids: &mut dyn estiba_core::Ids,
) -> Result<(), EcsError> {
    let rkey = daemon::revision_key(&cx.scope, &d.cluster, &d.name, revision_id);
    let Some(rev) = st.doc::<RevisionDoc>(revisions_table(), &rkey) else { return Ok(()) };
    let Some(td) = rev
        .value
        .revision
        .daemon_task_definition_arn
        .as_deref()
        .and_then(estiba_core::arn::TaskDefRef::parse)
        .and_then(|r| st.taskdefs.get(&keys::taskdef(&cx.scope, &r.family, r.revision.unwrap_or(0))))
    else {
        tracing::warn!(daemon = %d.arn, revision = %revision_id, "the daemon revision's task definition is gone");
        return Ok(());
    };
    let tags = match rev.value.revision.propagate_tags {
        Some(DaemonPropagateTags::Daemon) => {
            st.tags_of(&daemon::daemon_tagged_key(&cx.scope, &d.cluster, &d.name)).unwrap_or_default().to_vec()
        }
        _ => vec![],
    };
    let group = daemon::task_group(&d.name);
    let started_by = daemon::started_by(revision_id);
    let mut placed_all = Vec::new();
    for arn in on {
        let provider = instances.iter().find(|i| i.arn == arn.as_str()).and_then(|i| i.provider).map(str::to_owned);
        let launch = Launch { launch_type: LaunchType::Ec2, capacity_provider: provider };
        let proto = Spec {
            scope: &cx.scope,
            cluster: &d.cluster,
            td: &td.value,
            launch: launch.clone(),
            platform_version: None,
            overrides: None,
            group: Some(&group),
            started_by: Some(&started_by),
            network: None,
            vpc_cidr: cx.vpc_cidr,
            container_instance_arn: None,
            enable_execute_command: rev.value.revision.enable_execute_command.unwrap_or(false),
            tags: tags.clone(),
        };
        match crate::services::ecs::place_service_tasks(
            st,
            cx,
            &d.cluster,
            &td.value,
            vec![launch],
            Some(vec![arn.clone()]),
            &proto,
            &[],
            &[],
            ids,
        ) {
            Ok((placed, failures)) => {
                if placed.is_empty() {
                    tracing::debug!(daemon = %d.arn, instance = %arn, ?failures, "daemon task not placed yet");
                }
                placed_all.extend(placed);
            }
            Err(e) => tracing::warn!(daemon = %d.arn, instance = %arn, error = %e, "daemon task placement failed"),
        }
    }
    crate::services::ecs::write_new_tasks(txn, st, cx, &d.cluster, &placed_all, None);
    Ok(())
}
