//! The service scheduler: on every change of the view, and at least once a second, each
//! ACTIVE or DRAINING service gets a pass: [`estiba_core::deploy`] plans what to start and
//! stop, [`estiba_core::rollout`] what the pass records (stops, rollbacks, events, service
//! deployment records), and this module writes it with compare-and-swap and places the new
//! tasks. A service whose pass fails is logged; the others go on.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use estiba_api::ecs::*;
use estiba_core::capacity::{self, LaunchPlan};
use estiba_core::rollout::{self, Placed};
use estiba_core::service::{self as svc_rules};
use estiba_core::task::{self, Launch, Spec};
use estiba_core::{arn, deploy, task_set, EcsError, Ids, Scope};
use estiba_store::{Compare, Op, Txn};

use super::{is_claimed, Controller, Wake};
use crate::services::ecs::{put, Ctx, Held};
use crate::view::{Doc, State};
use crate::{keys, now, RandomIds, Server};

pub struct Scheduler {
    pub settings: deploy::Settings,
}

impl Controller for Scheduler {
    type Error = Infallible;

    fn name(&self) -> &'static str {
        "services"
    }

    async fn pass(&self, server: &Server) -> Result<Wake, Infallible> {
        let retry = services_pass(server, &self.settings).await;
        // A held-back start is looked at again when it is due (10 ms at the least), and
        // everything at least once a second.
        let wait = retry.map(|at| (at - now()).clamp(0.01, 1.0)).unwrap_or(1.0);
        Ok(Wake::change_or_after(Duration::from_secs_f64(wait)))
    }
}

/// One pass over every ACTIVE or DRAINING service; returns the earliest time a held-back
/// start should be looked at again.
pub async fn services_pass(server: &Server, settings: &deploy::Settings) -> Option<f64> {
    let keys: Vec<String> = {
        let st = server.view.read();
        st.services
            .values()
            .filter(|d| svc_rules::status(&d.value) != svc_rules::INACTIVE)
            .map(|d| d.key.clone())
            .collect()
    };
    let mut retry: Option<f64> = None;
    for key in keys {
        match reconcile(server, &key, settings).await {
            Ok(Some(at)) => retry = Some(retry.map_or(at, |r: f64| r.min(at))),
            Ok(None) => {}
            Err(e) => tracing::warn!(service = %key, error = %e, "service reconcile failed"),
        }
    }
    retry
}

/// Whether the task's definition has a health check on an essential container.
fn checked(st: &State, scope: &Scope, t: &Task) -> bool {
    t.task_definition_arn
        .as_deref()
        .and_then(arn::TaskDefRef::parse)
        .and_then(|r| st.taskdefs.get(&keys::taskdef(scope, &r.family, r.revision.unwrap_or(0))))
        .is_some_and(|d| estiba_core::service_connect::has_health_check(&d.value))
}

/// Reconciles one service. Returns when a held-back start should be retried.
async fn reconcile(server: &Server, key: &str, settings: &deploy::Settings) -> Result<Option<f64>, EcsError> {
    let Some((scope, cluster, name)) = keys::parse_service(key) else {
        return Ok(None);
    };
    let mut ids = RandomIds;
    // Held until the write is in the view: what this pass places counts as taken meanwhile.
    let held = Arc::new(Held::new(&server.reservations));
    server
        .transact::<_, EcsError>(|st| {
            let Some(d) = st.services.get(key) else { return Ok((Txn::new(), None)) };
            if svc_rules::is_external(&d.value) {
                // As below: within the store's limits, fewer starts and stops per pass.
                let limits = server.txn_limits();
                let mut cap = usize::MAX;
                loop {
                    held.begin_attempt();
                    let (txn, retry) =
                        reconcile_task_sets(server, st, (&scope, &cluster, &name), d, &mut ids, cap, &held)?;
                    if limits.fits(&txn) || cap == 0 {
                        return Ok((txn, retry));
                    }
                    let most = txn.compares.len().max(txn.ops.len());
                    cap = cap.min(most) / 2;
                }
            }
            let now = now();
            let group = svc_rules::task_group(&name);
            let task_docs: Vec<_> = State::range(&st.tasks, &keys::tasks_of(&scope, &cluster))
                .filter(|t| t.value.group() == Some(group.as_str()))
                .collect();
            let decoded: Vec<_> = task_docs.iter().map(|t| t.task()).collect();
            let tasks: Vec<&Task> = decoded.iter().map(|t| t.as_ref()).collect();
            let mut instances: Vec<String> = Vec::new();
            let mut draining_instances: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for i in State::range(&st.instances, &keys::instances_of(&scope, &cluster)) {
                match (estiba_core::instance::status(&i.value), i.value.container_instance_arn.as_deref()) {
                    ("ACTIVE", Some(arn)) => instances.push(arn.to_owned()),
                    ("DRAINING", Some(arn)) => {
                        draining_instances.insert(arn);
                    }
                    _ => {}
                }
            }
            let on_draining =
                |t: &Task| t.container_instance_arn.as_deref().is_some_and(|a| draining_instances.contains(a));
            let is_checked = |t: &Task| checked(st, &scope, t);
            let is_protected = |t: &Task| {
                let key = keys::task_protection(&scope, &cluster, estiba_core::task::task_id(t));
                st.task_protection.get(&key).is_some_and(|p| estiba_core::task::is_protected(&p.value, now))
            };
            let lb = |t: &Task| crate::targets::lb_health(server, st, &scope, &cluster, &d.value, t);
            let probes =
                deploy::Probes { checked: &is_checked, protected: &is_protected, lb: &lb, draining: &on_draining };
            let traffic_key = keys::traffic(&scope, &cluster, &name);
            let traffic = st.traffic.get(&traffic_key);
            let plan =
                deploy::plan_any(&d.value, &tasks, &instances, &probes, now, settings, traffic.map(|t| &t.value));

            let record_docs: Vec<_> =
                State::range(&st.service_deployments, &keys::service_deployments_of(&scope, &cluster, &name)).collect();
            let records: Vec<&ServiceDeployment> = record_docs.iter().map(|r| &r.value).collect();
            let cx = Ctx::of(server, scope.clone(), now, Some(held.clone()));
            let taskdef = |a: &str| crate::services::ecs::find_taskdef(st, &cx.scope, a).map(|td| &td.value);
            let claimed = |t: &Task| is_claimed(st, &keys::task(&scope, &cluster, task::task_id(t)));
            let input = rollout::Input {
                scope: &scope,
                cluster: &cluster,
                service: &d.value,
                tasks: &tasks,
                records: &records,
                taskdef: &taskdef,
                claimed: &claimed,
            };
            let decided = rollout::decide(&input, plan, &mut ids, now)?;
            // A pass writes one transaction within the store's limits: when the stops and
            // starts decided do not fit (scaling by hundreds on etcd), fewer starts, then fewer
            // stops, go now and the rest next pass, which this write itself wakes (ECS's own
            // scheduler starts and stops in batches too). What must stay together (a task with
            // its tags and claim, a stop with its deregistrations) always does.
            let limits = server.txn_limits();
            let (mut stops_cap, mut starts_cap) = (decided.stops.len(), decided.start.max(decided.start_on.len()));
            loop {
                held.begin_attempt();
                let mut out = decided.clone();
                out.stops.truncate(stops_cap);
                out.start = out.start.min(starts_cap);
                out.start_on.truncate(starts_cap);
                let mut txn = Txn::new().when(Compare::mod_revision(key, d.rev));
                for u in &out.stops {
                    let doc = task_docs[u.index];
                    txn.compares.push(Compare::mod_revision(&doc.key, doc.rev));
                    txn.ops.push(put(&doc.key, &u.value));
                    if task::desired_stopped(&u.value) {
                        txn.ops.extend(crate::stop_ops(st, &doc.key, now));
                    }
                }
                for u in &out.records {
                    let doc = record_docs[u.index];
                    txn.compares.push(Compare::mod_revision(&doc.key, doc.rev));
                    txn.ops.push(put(&doc.key, &u.value));
                }
                if let Some(r) = &out.revision {
                    txn.ops.push(put(keys::service_revision(&scope, &cluster, &name, &r.number), &r.revision));
                }
                shift_traffic(st, &scope, &traffic_key, traffic.map(|t| &**t), &out, &mut txn);
                let placed = match svc_rules::primary(&out.service) {
                    Some(p) => {
                        let starts = Starts { deployment: p, count: out.start, on: &out.start_on };
                        start_tasks(st, &cx, &cluster, &name, &out.service, &starts, &tasks, &mut txn, &mut ids)?
                    }
                    None => Placed::Tasks(vec![]),
                };
                rollout::record_starts(&mut out.service, &placed, &mut ids, now);
                if out.service != d.value {
                    txn.ops.push(put(key, &out.service));
                }
                if txn.ops.is_empty() {
                    return Ok((Txn::new(), out.retry_at));
                }
                if !limits.fits(&txn) && (starts_cap > 1 || stops_cap > 0) {
                    if starts_cap > 1 {
                        starts_cap /= 2;
                    } else {
                        stops_cap /= 2;
                    }
                    continue;
                }
                if starts_cap < decided.start.max(decided.start_on.len()) || stops_cap < decided.stops.len() {
                    tracing::debug!(service = %key, starts = starts_cap, stops = stops_cap, "pass capped to one transaction");
                }
                return Ok((txn, out.retry_at));
            }
        })
        .await
}

/// A service with the EXTERNAL deployment controller (at most `cap` starts per task set and
/// `cap` stops this pass): each task set keeps its computed desired
/// count of tasks (`estiba_core::task_set::plan`), its tasks `startedBy` its id and placed as
/// its launch says; tasks of no task set stop. A DRAINING service (DeleteService) drains every
/// task set, then becomes INACTIVE once its tasks have stopped, its task sets gone.
fn reconcile_task_sets(
    server: &Server,
    st: &State,
    (scope, cluster, name): (&Scope, &str, &str),
    d: &Doc<Service>,
    ids: &mut dyn Ids,
    cap: usize,
    held: &Arc<Held>,
) -> Result<(Txn, Option<f64>), EcsError> {
    let now = now();
    let group = svc_rules::task_group(name);
    let task_docs: Vec<_> = State::range(&st.tasks, &keys::tasks_of(scope, cluster))
        .filter(|t| t.value.group() == Some(group.as_str()))
        .collect();
    let decoded: Vec<_> = task_docs.iter().map(|t| t.task()).collect();
    let tasks: Vec<&Task> = decoded.iter().map(|t| t.as_ref()).collect();
    let set_docs: Vec<_> = State::range(&st.task_sets, &keys::task_sets_of(scope, cluster, name)).collect();
    let cx = Ctx::of(server, scope.clone(), now, Some(held.clone()));
    let draining = svc_rules::status(&d.value) == svc_rules::DRAINING;
    let lb = |t: &Task| crate::targets::lb_health(server, st, scope, cluster, &d.value, t);
    let grace = d.value.health_check_grace_period_seconds.unwrap_or(0) as f64;
    let probes = task_set::Probes { lb: &lb, grace };

    let mut svc = d.value.clone();
    let mut txn = Txn::new();
    let mut retry: Option<f64> = None;
    let mut stops = Vec::new();
    for sd in &set_docs {
        let mut ts = sd.value.clone();
        if draining {
            ts.status = Some(task_set::DRAINING.into());
        }
        let id = task_set::id(&ts).to_owned();
        let mine: Vec<&Task> = tasks.iter().copied().filter(|t| t.started_by.as_deref() == Some(id.as_str())).collect();
        let plan = task_set::plan(&ts, task_set::desired(&ts, &svc), &mine, &probes, now);
        txn.compares.push(Compare::mod_revision(&sd.key, sd.rev));
        if plan.gone {
            txn.ops.push(Op::delete(sd.key.clone()));
            txn.ops.push(Op::delete(keys::tags_of(&sd.key)));
            continue;
        }
        if plan.task_set != sd.value {
            txn.ops.push(put(&sd.key, &plan.task_set));
        }
        stops.extend(plan.stop);
        retry = plan.retry_at.map(|at| retry.map_or(at, |r: f64| r.min(at))).or(retry);
        if plan.start > 0 && cap > 0 {
            let dep = task_set::as_deployment(&plan.task_set);
            let starts = Starts { deployment: &dep, count: plan.start.min(cap), on: &[] };
            let placed = start_tasks(st, &cx, cluster, name, &svc, &starts, &tasks, &mut txn, ids)?;
            rollout::record_task_set_starts(&mut svc, &id, &placed, ids, now);
        }
    }
    // Tasks of no task set (one deleted while they were starting).
    let known = |t: &Task| set_docs.iter().any(|s| t.started_by.as_deref() == Some(task_set::id(&s.value)));
    for t in &tasks {
        if task::last_status(t) != task::Status::Stopped && !task::desired_stopped(t) && !known(t) {
            stops.push(deploy::Stop {
                task_arn: t.task_arn.clone().unwrap_or_default(),
                code: TaskStopCode::ServiceSchedulerInitiated,
                reason: "Task set was deleted".into(),
            });
        }
    }
    // `cap` starts per task set and `cap` stops per pass (the rest next pass).
    stops.truncate(cap);
    let claimed = |t: &Task| is_claimed(st, &keys::task(scope, cluster, task::task_id(t)));
    for u in rollout::stop_tasks(&mut svc, &tasks, &stops, &claimed, ids, now) {
        let doc = task_docs[u.index];
        txn.compares.push(Compare::mod_revision(&doc.key, doc.rev));
        txn.ops.push(put(&doc.key, &u.value));
        txn.ops.extend(crate::stop_ops(st, &doc.key, now));
    }
    if draining && tasks.iter().all(|t| task::last_status(t) == task::Status::Stopped) {
        svc.status = Some(svc_rules::INACTIVE.into());
        svc.desired_count = 0;
    }
    if svc != d.value {
        txn.ops.push(put(&d.key, &svc));
    }
    if txn.ops.is_empty() {
        return Ok((Txn::new(), retry));
    }
    txn.compares.push(Compare::mod_revision(&d.key, d.rev));
    Ok((txn, retry))
}

/// Writes a traffic shifting service's traffic document when the pass changed it, and its
/// listener rules' weights where they differ from what the document says (through the rules
/// ModifyRule checks, so the load balancers' table follows). A rule that cannot be written is
/// logged and left for the next pass.
fn shift_traffic(
    st: &State,
    scope: &Scope,
    key: &str,
    stored: Option<&Doc<estiba_core::traffic::Traffic>>,
    out: &rollout::Outcome,
    txn: &mut Txn,
) {
    let Some(t) = &out.traffic else { return };
    if stored.map(|d| &d.value) != Some(t) {
        txn.compares.push(match stored {
            Some(d) => Compare::mod_revision(key, d.rev),
            None => Compare::absent(key),
        });
        txn.ops.push(put(key, t));
    }
    for (rule, weights) in estiba_core::traffic::rule_weights(&out.service, Some(t)) {
        match crate::services::elbv2::forward_weighted(st, scope, &rule, &weights) {
            Ok(Some(w)) => {
                txn.compares.extend(w.compares);
                txn.ops.extend(w.ops);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(rule = %rule, error = %e.message, "cannot shift the listener rule's traffic"),
        }
    }
}

/// New tasks of one deployment (or task set): how many, or on which container instances
/// (DAEMON).
struct Starts<'a> {
    deployment: &'a Deployment,
    count: usize,
    on: &'a [String],
}

/// Creates the tasks `starts` asks for: the ids started, or the placement failures when none
/// could be placed.
#[allow(clippy::too_many_arguments)]
fn start_tasks(
    st: &State,
    cx: &Ctx,
    cluster: &str,
    name: &str,
    svc: &Service,
    starts: &Starts,
    existing: &[&Task],
    txn: &mut Txn,
    ids: &mut dyn Ids,
) -> Result<Placed, EcsError> {
    if starts.count == 0 && starts.on.is_empty() {
        return Ok(Placed::Tasks(vec![]));
    }
    let primary = starts.deployment;
    let primary_id = primary.id.clone().unwrap_or_default();
    let Some(td) =
        primary.task_definition.as_deref().and_then(|a| crate::services::ecs::find_taskdef(st, &cx.scope, a))
    else {
        return Ok(Placed::Tasks(vec![]));
    };
    let key = keys::service(&cx.scope, cluster, name);
    let service_tags = st.tags_of(&key).map(|t| t.to_vec());
    let tags = crate::services::ecs::tasks_tags(
        st,
        &td.key,
        &[],
        svc.propagate_tags,
        service_tags.as_deref(),
        svc.enable_ecs_managed_tags.then_some((cluster, Some(name))),
    )?;
    let group = svc_rules::task_group(name);
    let launch_plan = match &primary.capacity_provider_strategy {
        Some(s) if !s.is_empty() => LaunchPlan::Strategy(s.clone()),
        _ => LaunchPlan::Type(primary.launch_type.unwrap_or(LaunchType::Fargate)),
    };
    let proto = Spec {
        scope: &cx.scope,
        cluster,
        td: &td.value,
        launch: Launch { launch_type: launch_plan.launch_type(), capacity_provider: None },
        platform_version: primary.platform_version.as_deref(),
        overrides: None,
        group: Some(&group),
        started_by: Some(&primary_id),
        network: primary.network_configuration.as_ref(),
        vpc_cidr: cx.vpc_cidr,
        container_instance_arn: None,
        enable_execute_command: svc.enable_execute_command,
        tags,
    };
    let (launches, fixed) = if !starts.on.is_empty() {
        (
            vec![Launch { launch_type: LaunchType::Ec2, capacity_provider: None }; starts.on.len()],
            Some(starts.on.to_vec()),
        )
    } else {
        let already: Vec<usize> = match &launch_plan {
            LaunchPlan::Strategy(s) => s
                .iter()
                .map(|item| {
                    existing
                        .iter()
                        .filter(|t| {
                            t.started_by.as_deref() == Some(primary_id.as_str())
                                && task::last_status(t) != task::Status::Stopped
                                && t.capacity_provider_name.as_deref() == Some(item.capacity_provider.as_str())
                        })
                        .count()
                })
                .collect(),
            LaunchPlan::Type(_) => vec![],
        };
        (launch_plan.launches(&already, starts.count, capacity::is_fargate), None)
    };
    let placements = svc.placement_constraints.clone().unwrap_or_default();
    // A service without a strategy spreads over availability zones, as in ECS.
    let strategies = match svc.placement_strategy.clone().unwrap_or_default() {
        s if s.is_empty() => estiba_core::placement::default_service_strategies(),
        s => s,
    };
    let placed = match crate::services::ecs::place_service_tasks(
        st,
        cx,
        cluster,
        &td.value,
        launches,
        fixed,
        &proto,
        &placements,
        &strategies,
        ids,
    ) {
        Ok(p) => p,
        Err(e) if e.message.contains("No Container Instances") => return Ok(Placed::Failed(vec![])),
        Err(e) => return Err(e),
    };
    if placed.0.is_empty() {
        return Ok(Placed::Failed(placed.1));
    }
    crate::services::ecs::write_new_tasks(txn, st, cx, cluster, &placed.0, primary.network_configuration.as_ref());
    Ok(Placed::Tasks(placed.0.iter().map(|t| task::task_id(t).to_owned()).collect()))
}
