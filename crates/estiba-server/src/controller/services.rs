//! Controllers: level-triggered loops that read the view, ask estiba-core what to do, and
//! write the result with compare-and-swap. They wake on every change of the view and at
//! least once a second; a crash at any point is harmless because the next pass recomputes.
//!
//! - The service scheduler keeps each service's tasks as its deployments require
//!   ([`estiba_core::deploy`]), records events, and moves service deployment records through
//!   PENDING → IN_PROGRESS → SUCCESSFUL (or STOPPED, ROLLBACK_IN_PROGRESS →
//!   ROLLBACK_SUCCESSFUL).
//! - Housekeeping removes STOPPED tasks after their retention, deletes task definitions in
//!   DELETE_IN_PROGRESS once nothing uses them, and stops tasks left in deleted clusters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use estiba_api::ecs::*;
use estiba_core::capacity::{self, LaunchPlan};
use estiba_core::deploy::{self, Plan};
use estiba_core::service::{self as svc_rules};
use estiba_core::task::{self, Launch, Spec};
use estiba_core::{arn, EcsError, Ids, Scope};
use estiba_store::{Compare, Op, Txn};

use crate::ecs::{put, Ctx};
use crate::view::State;
use crate::{keys, now, RandomIds, Server};

/// Whether a node has claimed the task: from then on the node moves it through its
/// lifecycle; unclaimed tasks are stopped by the server directly.
pub fn is_claimed(st: &State, task_key: &str) -> bool {
    st.claims.contains_key(&keys::claim_of(task_key))
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub deploy: deploy::Settings,
    pub housekeeping_every: Duration,
    pub stopped_task_retention: Duration,
    /// How often lifecycle policies are applied and unused registry blobs collected.
    pub registry_housekeeping_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            deploy: deploy::Settings::default(),
            housekeeping_every: Duration::from_secs(10),
            stopped_task_retention: Duration::from_secs(3600),
            registry_housekeeping_every: Duration::from_secs(60),
        }
    }
}

/// Runs the controllers until `shutdown` flips to true.
pub async fn run(server: Arc<Server>, settings: Settings, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut changes = server.view.changes();
    let mut last_housekeeping = Instant::now();
    let mut last_registry = Instant::now();
    let mut joined = std::collections::HashSet::new();
    loop {
        if joined.len() < server.config.join_clusters.len() {
            join_pass(&server, &mut joined).await;
        }
        let retry = services_pass(&server, &settings).await;
        if last_housekeeping.elapsed() >= settings.housekeeping_every {
            if let Err(e) = housekeeping(&server, &settings).await {
                tracing::warn!(error = %e, "housekeeping failed");
            }
            last_housekeeping = Instant::now();
        }
        if last_registry.elapsed() >= settings.registry_housekeeping_every {
            if let Err(e) = crate::ecr::housekeeping(&server).await {
                tracing::warn!(error = %e, "registry housekeeping failed");
            }
            last_registry = Instant::now();
        }
        let wait = retry.map(|at| (at - now()).clamp(0.01, 1.0)).unwrap_or(1.0);
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Registers this machine's node as a container instance of each cluster it joins
/// (`Config::join_clusters`), as the ECS agent does with `ECS_CLUSTER`: once the cluster is
/// ACTIVE and the node has reported its resources. An ACTIVE instance of the node found in
/// the cluster is kept. Each cluster is joined once per process, so an instance deregistered
/// by hand stays deregistered until the server starts again.
async fn join_pass(server: &Server, joined: &mut std::collections::HashSet<String>) {
    let Some(node) = server.config.local_node.clone() else { return };
    for reference in &server.config.join_clusters {
        if joined.contains(reference) {
            continue;
        }
        let (scope, name) = match arn::Arn::parse(reference) {
            Some(a) => (Scope::new(a.account, a.region), arn::cluster_name(Some(reference)).unwrap_or_default()),
            None => (Scope::new(&server.config.account_id, &server.config.default_region), reference.clone()),
        };
        let cluster_key = keys::cluster(&scope, &name);
        let mut ids = RandomIds;
        let r = server
            .transact(|st| {
                let Some(c) = st.clusters.get(&cluster_key).filter(|c| c.value.status.as_deref() == Some("ACTIVE")) else {
                    return Ok((Txn::new(), false));
                };
                let Some(status) = st.nodes.get(&keys::node(&node)) else { return Ok((Txn::new(), false)) };
                let mine = State::range(&st.instances, &keys::instances_of(&scope, &name)).any(|d| {
                    estiba_core::instance::node_of(&d.value) == Some(node.as_str())
                        && estiba_core::instance::status(&d.value) == "ACTIVE"
                });
                if mine {
                    return Ok((Txn::new(), true));
                }
                let req = estiba_core::instance::node_registration(
                    &status.value,
                    &[server.config.listen.port()],
                    env!("CARGO_PKG_VERSION"),
                );
                let mut ci = estiba_core::instance::register(&scope, &name, &req, None, &mut ids, now())?;
                ci.agent_connected = true;
                let key = keys::instance(&scope, &name, estiba_core::instance::id_of(&ci));
                let txn = Txn::new()
                    .when(Compare::mod_revision(&cluster_key, c.rev))
                    .when(Compare::absent(&key))
                    .then(put(&key, &ci))
                    .then(crate::ecs::put_tags(&key, &[]));
                tracing::info!(cluster = %name, instance = %estiba_core::instance::id_of(&ci), "this machine joined the cluster as a container instance");
                Ok((txn, true))
            })
            .await;
        match r {
            Ok(true) => {
                joined.insert(reference.clone());
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(cluster = %name, error = %e, "joining the cluster failed"),
        }
    }
}

/// One pass over every ACTIVE or DRAINING service; returns the earliest time a held-back
/// start should be looked at again.
pub async fn services_pass(server: &Server, settings: &Settings) -> Option<f64> {
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

/// `ecs/<account>/<region>/services/<cluster>/<name>` → (scope, cluster, name).
fn parse_service_key(key: &str) -> Option<(Scope, String, String)> {
    let mut p = key.splitn(6, '/');
    let (_, account, region, _, cluster, name) = (p.next()?, p.next()?, p.next()?, p.next()?, p.next()?, p.next()?);
    Some((Scope::new(account, region), cluster.to_owned(), name.to_owned()))
}

fn task_id_of_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Whether the task's definition has a health check on an essential container.
fn checked(st: &State, scope: &Scope, t: &Task) -> bool {
    t.task_definition_arn
        .as_deref()
        .and_then(arn::TaskDefRef::parse)
        .and_then(|r| st.taskdefs.get(&keys::taskdef(scope, &r.family, r.revision.unwrap_or(0))))
        .is_some_and(|d| {
            d.value.container_definitions.iter().flatten().any(|c| {
                c.essential != Some(false)
                    && c.health_check.as_ref().is_some_and(|h| h.command.first().map(String::as_str) != Some("NONE"))
            })
        })
}

fn revision_number(arn: Option<&str>) -> &str {
    arn.and_then(|a| a.rsplit('/').next()).unwrap_or("")
}

/// The service deployment record whose target is the deployment `dep_id` (`ecs-svc/<N>`).
fn record_for<'a>(st: &'a State, prefix: &str, dep_id: &str) -> Option<&'a Arc<crate::view::Doc<ServiceDeployment>>> {
    let n = svc_rules::deployment_number(dep_id);
    State::range(&st.service_deployments, prefix)
        .find(|r| revision_number(r.value.target_service_revision.as_ref().and_then(|t| t.arn.as_deref())) == n)
}

fn set_record(txn: &mut Txn, d: &crate::view::Doc<ServiceDeployment>, f: impl FnOnce(&mut ServiceDeployment)) {
    let mut r = d.value.clone();
    f(&mut r);
    if r != d.value {
        txn.compares.push(Compare::mod_revision(&d.key, d.rev));
        txn.ops.push(put(&d.key, &r));
    }
}

fn push_unique_event(svc: &mut Service, msg: String, ids: &mut dyn Ids, at: f64) {
    let same = svc.events.iter().flatten().next().and_then(|e| e.message.as_deref()) == Some(msg.as_str());
    if !same {
        svc_rules::push_event(svc, ServiceEvent { id: Some(ids.uuid()), created_at: Some(at), message: Some(msg) });
    }
}

fn placement_message(name: &str, failures: &[Failure]) -> String {
    let closest = failures.iter().find(|f| f.reason.as_deref().is_some_and(|r| r.starts_with("RESOURCE:")));
    let base = format!(
        "(service {name}) was unable to place a task because no container instance met all of its requirements."
    );
    match closest {
        Some(f) => {
            let what = match f.reason.as_deref() {
                Some("RESOURCE:MEMORY") => "has insufficient memory available",
                Some("RESOURCE:CPU") => "has insufficient CPU units available",
                Some("RESOURCE:PORTS") => "is already using a port required by your task",
                _ => "cannot take the task",
            };
            let id = task_id_of_arn(f.arn.as_deref().unwrap_or(""));
            format!("{base} The closest matching (container-instance {id}) {what}. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.")
        }
        None if failures.is_empty() => {
            format!("{base} Reason: No Container Instances were found in your cluster.")
        }
        None => format!("{base} Reason: {}.", failures[0].reason.as_deref().unwrap_or("unknown")),
    }
}

/// Reconciles one service. Returns when a held-back start should be retried.
async fn reconcile(server: &Server, key: &str, settings: &Settings) -> Result<Option<f64>, EcsError> {
    let Some((scope, cluster, name)) = parse_service_key(key) else {
        return Ok(None);
    };
    let mut ids = RandomIds;
    server
        .transact(|st| {
            let Some(d) = st.services.get(key) else { return Ok((Txn::new(), None)) };
            let now = now();
            let group = svc_rules::task_group(&name);
            let task_docs: Vec<_> = State::range(&st.tasks, &keys::tasks_of(&scope, &cluster))
                .filter(|t| t.value.group.as_deref() == Some(group.as_str()))
                .collect();
            let tasks: Vec<&Task> = task_docs.iter().map(|t| &t.value).collect();
            let instances: Vec<String> = State::range(&st.instances, &keys::instances_of(&scope, &cluster))
                .filter(|i| estiba_core::instance::status(&i.value) == "ACTIVE")
                .filter_map(|i| i.value.container_instance_arn.clone())
                .collect();
            let is_checked = |t: &Task| checked(st, &scope, t);
            let mut plan: Plan = deploy::plan_any(&d.value, &tasks, &instances, &is_checked, now, &settings.deploy);
            let records_prefix = keys::service_deployments_of(&scope, &cluster, &name);
            let mut txn = Txn::new().when(Compare::mod_revision(key, d.rev));

            // Requests from StopServiceDeployment.
            for r in State::range(&st.service_deployments, &records_prefix) {
                match r.value.status {
                    Some(ServiceDeploymentStatus::StopRequested) => {
                        set_record(&mut txn, r, |r| {
                            r.status = Some(ServiceDeploymentStatus::Stopped);
                            r.status_reason = Some("The service deployment was stopped by request.".into());
                            r.stopped_at = Some(now);
                            r.finished_at = Some(now);
                            r.updated_at = Some(now);
                        });
                        let n =
                            revision_number(r.value.target_service_revision.as_ref().and_then(|t| t.arn.as_deref()));
                        for dep in plan.service.deployments.iter_mut().flatten() {
                            if dep.id.as_deref() == Some(format!("ecs-svc/{n}").as_str()) {
                                dep.rollout_state = Some(DeploymentRolloutState::Failed);
                                dep.rollout_state_reason =
                                    Some("The service deployment was stopped by request.".into());
                                dep.updated_at = Some(now);
                            }
                        }
                        plan.completed = None;
                    }
                    Some(ServiceDeploymentStatus::RollbackRequested) => {
                        let primary_id = svc_rules::primary(&d.value).and_then(|p| p.id.clone()).unwrap_or_default();
                        plan.failed = Some(primary_id);
                        plan.rollback_to = d
                            .value
                            .deployments
                            .iter()
                            .flatten()
                            .find(|x| {
                                x.status.as_deref() != Some(svc_rules::PRIMARY)
                                    && x.rollout_state == Some(DeploymentRolloutState::Completed)
                            })
                            .cloned();
                        plan.start = 0;
                        plan.completed = None;
                    }
                    _ => {}
                }
            }

            let mut svc = plan.service.clone();
            let cx = Ctx { scope: scope.clone(), now, node: server.local_node.clone() };

            // Stops.
            let mut stopped = Vec::new();
            for stop in &plan.stop {
                let tkey = keys::task(&scope, &cluster, task_id_of_arn(&stop.task_arn));
                let Some(td) = st.tasks.get(&tkey) else { continue };
                let mut t = td.value.clone();
                if task::request_stop(&mut t, stop.code, &stop.reason) {
                    if !is_claimed(st, &tkey) {
                        task::stop_unstarted(&mut t, now);
                    }
                    txn.compares.push(Compare::mod_revision(&tkey, td.rev));
                    txn.ops.push(put(&tkey, &t));
                    stopped.push(task::task_id(&t).to_owned());
                }
            }
            if !stopped.is_empty() {
                let list: Vec<String> = stopped.iter().map(|id| format!("(task {id})")).collect();
                svc_rules::push_event(
                    &mut svc,
                    ServiceEvent {
                        id: Some(ids.uuid()),
                        created_at: Some(now),
                        message: Some(format!(
                            "(service {name}) has stopped {} running tasks: {}.",
                            stopped.len(),
                            list.join(" ")
                        )),
                    },
                );
            }

            // Rollback: a new PRIMARY deployment back to the last completed one.
            if let Some(failed_id) = plan.failed.clone() {
                let failed_rec = record_for(st, &records_prefix, &failed_id);
                let reason = svc_rules::primary(&d.value)
                    .and_then(|p| p.rollout_state_reason.clone())
                    .filter(|r| r.contains("circuit breaker"))
                    .unwrap_or_else(|| "ECS deployment circuit breaker: tasks failed to start.".into());
                let is_breaker = reason.contains("circuit breaker");
                if is_breaker {
                    push_unique_event(
                        &mut svc,
                        format!("(service {name}) (deployment {failed_id}) deployment failed: tasks failed to start."),
                        &mut ids,
                        now,
                    );
                }
                match plan.rollback_to.clone() {
                    Some(to) => {
                        let td_doc = to
                            .task_definition
                            .as_deref()
                            .and_then(|a| crate::ecs::find_taskdef(st, &cx, a))
                            .ok_or_else(EcsError::task_definition_not_found)?;
                        let nd = svc_rules::rollback(&scope, &cluster, &mut svc, &to, &td_doc.value, &mut ids, now);
                        let n = svc_rules::deployment_number(nd.deployment.id.as_deref().unwrap_or(""));
                        txn.ops.push(put(keys::service_revision(&scope, &cluster, &name, n), &nd.revision));
                        if let Some(rec) = failed_rec {
                            set_record(&mut txn, rec, |r| {
                                r.status = Some(ServiceDeploymentStatus::RollbackInProgress);
                                r.status_reason = Some(reason.clone());
                                r.updated_at = Some(now);
                                r.rollback = Some(Rollback {
                                    reason: Some(reason.clone()),
                                    started_at: Some(now),
                                    service_revision_arn: nd.revision.service_revision_arn.clone(),
                                });
                                if let Some(cb) = &mut r.deployment_circuit_breaker {
                                    if is_breaker {
                                        cb.status = Some(ServiceDeploymentRollbackMonitorsStatus::Triggered);
                                    }
                                }
                            });
                        }
                        push_unique_event(
                            &mut svc,
                            format!("(service {name}) rolling back to deployment {}.", to.id.as_deref().unwrap_or("")),
                            &mut ids,
                            now,
                        );
                    }
                    None => {
                        if let Some(rec) = failed_rec {
                            set_record(&mut txn, rec, |r| {
                                r.status = Some(ServiceDeploymentStatus::Stopped);
                                r.status_reason = Some(reason.clone());
                                r.stopped_at = Some(now);
                                r.finished_at = Some(now);
                                r.updated_at = Some(now);
                                if let Some(cb) = &mut r.deployment_circuit_breaker {
                                    cb.status = Some(ServiceDeploymentRollbackMonitorsStatus::Triggered);
                                }
                            });
                        }
                    }
                }
            }

            // Starts.
            let started = start_tasks(st, &cx, &cluster, &name, &svc, &plan, &task_docs, &mut txn, &mut ids)?;
            match started {
                Ok(ids_started) if !ids_started.is_empty() => {
                    let list: Vec<String> = ids_started.iter().map(|id| format!("(task {id})")).collect();
                    svc_rules::push_event(
                        &mut svc,
                        ServiceEvent {
                            id: Some(ids.uuid()),
                            created_at: Some(now),
                            message: Some(format!(
                                "(service {name}) has started {} tasks: {}.",
                                ids_started.len(),
                                list.join(" ")
                            )),
                        },
                    );
                }
                Ok(_) => {}
                Err(failures) => push_unique_event(&mut svc, placement_message(&name, &failures), &mut ids, now),
            }

            // Records follow the rollout.
            if let Some(done) = &plan.completed {
                if let Some(rec) = record_for(st, &records_prefix, done) {
                    set_record(&mut txn, rec, |r| {
                        if matches!(
                            r.status,
                            Some(ServiceDeploymentStatus::Pending | ServiceDeploymentStatus::InProgress)
                        ) {
                            r.status = Some(ServiceDeploymentStatus::Successful);
                            r.status_reason = None;
                            r.finished_at = Some(now);
                            r.updated_at = Some(now);
                        }
                    });
                }
                // A completed rollback finishes the record of the deployment that failed.
                let n = svc_rules::deployment_number(done);
                for rec in State::range(&st.service_deployments, &records_prefix) {
                    let rolled = rec.value.rollback.as_ref().and_then(|r| r.service_revision_arn.as_deref());
                    if rec.value.status == Some(ServiceDeploymentStatus::RollbackInProgress)
                        && revision_number(rolled) == n
                    {
                        set_record(&mut txn, rec, |r| {
                            r.status = Some(ServiceDeploymentStatus::RollbackSuccessful);
                            r.finished_at = Some(now);
                            r.updated_at = Some(now);
                        });
                    }
                }
            }
            for rec in State::range(&st.service_deployments, &records_prefix) {
                if rec.value.status == Some(ServiceDeploymentStatus::Pending) {
                    set_record(&mut txn, rec, |r| {
                        r.status = Some(ServiceDeploymentStatus::InProgress);
                        r.updated_at = Some(now);
                    });
                }
            }

            for e in svc.events.iter_mut().flatten() {
                if e.id.is_none() {
                    e.id = Some(ids.uuid());
                }
            }
            if svc != d.value {
                txn.ops.push(put(key, &svc));
            }
            if txn.ops.is_empty() {
                return Ok((Txn::new(), plan.retry_at));
            }
            Ok((txn, plan.retry_at))
        })
        .await
}

/// Creates the tasks the plan asks for. Returns the ids started, or the placement failures
/// when none could be placed.
#[allow(clippy::too_many_arguments)]
fn start_tasks(
    st: &State,
    cx: &Ctx,
    cluster: &str,
    name: &str,
    svc: &Service,
    plan: &Plan,
    existing: &[&Arc<crate::view::Doc<Task>>],
    txn: &mut Txn,
    ids: &mut dyn Ids,
) -> Result<Result<Vec<String>, Vec<Failure>>, EcsError> {
    if plan.start == 0 && plan.start_on.is_empty() {
        return Ok(Ok(vec![]));
    }
    if plan.rollback_to.is_some() || plan.failed.is_some() {
        return Ok(Ok(vec![]));
    }
    let Some(primary) = svc_rules::primary(svc) else {
        return Ok(Ok(vec![]));
    };
    let primary_id = primary.id.clone().unwrap_or_default();
    let Some(td) = primary.task_definition.as_deref().and_then(|a| crate::ecs::find_taskdef(st, cx, a)) else {
        return Ok(Ok(vec![]));
    };
    let key = keys::service(&cx.scope, cluster, name);
    let service_tags = st.tags_of(&key).map(|t| t.to_vec());
    let tags = crate::ecs::tasks_tags(
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
        container_instance_arn: None,
        enable_execute_command: svc.enable_execute_command,
        tags,
    };
    let (launches, fixed) = if !plan.start_on.is_empty() {
        (
            vec![Launch { launch_type: LaunchType::Ec2, capacity_provider: None }; plan.start_on.len()],
            Some(plan.start_on.clone()),
        )
    } else {
        let already: Vec<usize> = match &launch_plan {
            LaunchPlan::Strategy(s) => s
                .iter()
                .map(|item| {
                    existing
                        .iter()
                        .filter(|t| {
                            t.value.started_by.as_deref() == Some(primary_id.as_str())
                                && task::last_status(&t.value) != task::Status::Stopped
                                && t.value.capacity_provider_name.as_deref() == Some(item.capacity_provider.as_str())
                        })
                        .count()
                })
                .collect(),
            LaunchPlan::Type(_) => vec![],
        };
        (launch_plan.launches(&already, plan.start, capacity::is_fargate), None)
    };
    let placements = svc.placement_constraints.clone().unwrap_or_default();
    let strategies = svc.placement_strategy.clone().unwrap_or_default();
    let placed = match crate::ecs::place_service_tasks(
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
        Err(e) if e.message.contains("No Container Instances") => return Ok(Err(vec![])),
        Err(e) => return Err(e),
    };
    if placed.0.is_empty() {
        return Ok(Err(placed.1));
    }
    crate::ecs::write_new_tasks(txn, st, cx, cluster, &placed.0, primary.network_configuration.as_ref());
    Ok(Ok(placed.0.iter().map(|t| task::task_id(t).to_owned()).collect()))
}

/// Removes what has outlived its retention and cleans up after deleted resources.
pub async fn housekeeping(server: &Server, settings: &Settings) -> Result<(), EcsError> {
    let now = now();
    let cutoff = now - settings.stopped_task_retention.as_secs_f64();
    let txn = {
        let st = server.view.read();
        let mut txn = Txn::new();
        for d in st.tasks.values() {
            let t = &d.value;
            if task::last_status(t) == task::Status::Stopped && t.stopped_at.is_some_and(|at| at < cutoff) {
                txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                txn.ops.push(Op::delete(&d.key));
                txn.ops.push(Op::delete(keys::tags_of(&d.key)));
                txn.ops.push(Op::delete(keys::claim_of(&d.key)));
            } else if task::last_status(t) != task::Status::Stopped && !task::desired_stopped(t) {
                let cluster_key = keys::cluster_of(&d.key).unwrap_or_default();
                let cluster_gone =
                    st.clusters.get(&cluster_key).is_none_or(|c| c.value.status.as_deref() != Some("ACTIVE"));
                if cluster_gone {
                    let mut t = t.clone();
                    task::request_stop(&mut t, TaskStopCode::ServiceSchedulerInitiated, "The cluster was deleted");
                    if !is_claimed(&st, &d.key) {
                        task::stop_unstarted(&mut t, now);
                    }
                    txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                    txn.ops.push(put(&d.key, &t));
                }
            }
            if txn.ops.len() > 500 {
                break;
            }
        }
        for d in st.taskdefs.values() {
            if d.value.status != Some(TaskDefinitionStatus::DeleteInProgress) {
                continue;
            }
            let arn = d.value.task_definition_arn.as_deref().unwrap_or("");
            let used_by_task = st.tasks.values().any(|t| {
                t.value.task_definition_arn.as_deref() == Some(arn)
                    && task::last_status(&t.value) != task::Status::Stopped
            });
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
