//! CreateService, UpdateService, DeleteService, DescribeServices, ListServices,
//! ListServicesByNamespace, ListServiceDeployments, DescribeServiceDeployments,
//! DescribeServiceRevisions, StopServiceDeployment.

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::service::{self as svc_rules, NewDeployment};
use estiba_core::task::Launch;
use estiba_core::{arn, capacity, page, taskdef, EcsError, Scope};
use estiba_store::{Compare, Txn};

use super::{
    active_cluster, cluster_for_write, find_taskdef, has_instances, json, put, put_tags, runnable_taskdef, Ctx, Result,
};
use crate::view::{Doc, State};
use crate::{keys, RandomIds, Server};

/// A service as Describe shows it: counts derived from its tasks, tags when asked.
pub(crate) fn shown(st: &State, d: &Doc<Service>, with_tags: bool) -> Service {
    let cluster_key = keys::cluster_of(&d.key).unwrap_or_default();
    let mut s = svc_rules::with_counts(&d.value, |id| st.deployment_counts(&cluster_key, id));
    if svc_rules::is_external(&s) {
        let sets = super::shown_task_sets(st, &d.key, &d.value, false);
        s.running_count = sets.iter().map(|t| t.running_count).sum();
        s.pending_count = sets.iter().map(|t| t.pending_count).sum();
        s.task_sets = Some(sets);
    }
    s.tags = with_tags.then(|| st.tags_of(&d.key).unwrap_or_default().to_vec());
    s
}

/// Resolves a service name or ARN within a cluster.
fn service_key(cx: &Ctx, cluster: &str, id: &str) -> Option<String> {
    let (c, name) = arn::member_id("service", id)?;
    if c.is_some_and(|c| c != cluster) {
        return None;
    }
    Some(keys::service(&cx.scope, cluster, name))
}

fn cluster_ref(cluster: Option<&str>, service: &str) -> Option<String> {
    cluster.map(str::to_owned).or_else(|| arn::member_id("service", service).and_then(|(c, _)| c.map(str::to_owned)))
}

/// Stops the service's deployments that were still rolling out (PENDING or IN_PROGRESS): a
/// newer one supersedes them.
pub(super) fn supersede_deployments(
    st: &State,
    txn: &mut Txn,
    scope: &Scope,
    cluster: &str,
    service: &str,
    now: estiba_core::Now,
) {
    let prefix = keys::service_deployments_of(scope, cluster, service);
    for rec in State::range(&st.service_deployments, &prefix) {
        if matches!(rec.value.status, Some(ServiceDeploymentStatus::Pending | ServiceDeploymentStatus::InProgress)) {
            let mut r = rec.value.clone();
            r.status = Some(ServiceDeploymentStatus::Stopped);
            r.status_reason = Some("The deployment was stopped because a newer deployment started.".into());
            r.stopped_at = Some(now);
            r.finished_at = Some(now);
            r.updated_at = Some(now);
            txn.compares.push(Compare::mod_revision(&rec.key, rec.rev));
            txn.ops.push(put(&rec.key, &r));
        }
    }
}

/// Writes a new deployment's revision and record.
pub(crate) fn write_deployment(txn: &mut Txn, scope: &Scope, cluster: &str, service: &str, nd: &NewDeployment) {
    let n = svc_rules::deployment_number(nd.deployment.id.as_deref().unwrap_or(""));
    let rec_id = nd.record.service_deployment_arn.as_deref().and_then(|a| a.rsplit('/').next()).unwrap_or("");
    txn.ops.push(put(keys::service_revision(scope, cluster, service, n), &nd.revision));
    txn.ops.push(put(keys::service_deployment(scope, cluster, service, rec_id), &nd.record));
}

pub async fn create(s: &Server, cx: &Ctx, req: CreateServiceRequest) -> Result<Bytes> {
    let mut ids = RandomIds;
    let out = s
        .transact::<_, EcsError>(|st| {
            let mut txn = Txn::new();
            let (cluster, c) = cluster_for_write(st, cx, req.cluster.as_deref(), &mut txn)?;
            svc_rules::validate_name(&req.service_name)?;
            let key = keys::service(&cx.scope, &cluster, &req.service_name);
            match st.services.get(&key) {
                Some(d) if svc_rules::status(&d.value) != svc_rules::INACTIVE => {
                    return Err(EcsError::invalid("Creation of service was not idempotent."));
                }
                Some(d) => txn.compares.push(Compare::mod_revision(&key, d.rev)),
                None => txn.compares.push(Compare::absent(&key)),
            }
            if req.deployment_controller.as_ref().is_some_and(|d| d.r#type == DeploymentControllerType::External) {
                let svc = svc_rules::create_external(&cx.scope, &cluster, &req, cx.now)?;
                let tags = req.tags.clone().unwrap_or_default();
                txn.ops.push(put(&key, &svc));
                txn.ops.push(put_tags(&key, &tags));
                let mut out = svc;
                out.tags = Some(tags);
                return Ok((txn, out));
            }
            let Some(td_ref) = req.task_definition.as_deref() else {
                return Err(EcsError::invalid(
                    "A task definition must be specified for a service that uses the ECS deployment controller.",
                ));
            };
            let td = runnable_taskdef(st, cx, td_ref)?;
            let registries = req.service_registries.as_deref().unwrap_or_default();
            crate::discovery::check_registries(st, &cx.scope, registries, &td.value)?;
            let lbs = req.load_balancers.as_deref().unwrap_or_default();
            crate::targets::check_load_balancers(st, &cx.scope, lbs, &td.value)?;
            crate::targets::check_traffic(
                st,
                &cx.scope,
                lbs,
                &req.deployment_configuration.clone().unwrap_or_default(),
            )?;
            let plan = super::launch_plan(
                st,
                cx,
                (&cluster, &c),
                req.launch_type,
                req.capacity_provider_strategy.as_deref(),
                &td.value,
            )?;
            let daemon_count = State::range(&st.instances, &keys::instances_of(&cx.scope, &cluster))
                .filter(|d| estiba_core::instance::status(&d.value) == "ACTIVE")
                .count() as i32;
            let mut created = svc_rules::create(
                &cx.scope,
                &cluster,
                &req,
                &td.value,
                Launch { launch_type: plan.launch_type(), capacity_provider: None },
                daemon_count,
                &mut ids,
                cx.now,
            )?;
            if let Some(cfg) = &req.service_connect_configuration {
                let p = crate::connect::prepare(st, &cx.scope, &c, cfg, &td.value, &key, cx.now, &mut txn)?;
                let resources = (!p.resources.is_empty()).then_some(p.resources);
                created.deployment.deployment.service_connect_configuration = Some(p.config.clone());
                created.deployment.revision.service_connect_configuration = Some(p.config.clone());
                created.deployment.deployment.service_connect_resources = resources.clone();
                if let Some(d) = created.service.deployments.as_mut().and_then(|d| d.first_mut()) {
                    d.service_connect_configuration = Some(p.config);
                    d.service_connect_resources = resources;
                }
            }
            let tags = req.tags.clone().unwrap_or_default();
            txn.compares.push(Compare::mod_revision(&td.key, td.rev));
            txn.ops.push(put(&key, &created.service));
            txn.ops.push(put_tags(&key, &tags));
            write_deployment(&mut txn, &cx.scope, &cluster, &req.service_name, &created.deployment);
            let mut out = created.service;
            out.tags = Some(tags);
            Ok((txn, out))
        })
        .await?;
    Ok(json(&CreateServiceResponse { service: Some(out) }))
}

pub async fn update(s: &Server, cx: &Ctx, req: UpdateServiceRequest) -> Result<Bytes> {
    let mut ids = RandomIds;
    let cref = cluster_ref(req.cluster.as_deref(), &req.service);
    let out = s
        .transact::<_, EcsError>(|st| {
            let (cluster, c) = active_cluster(st, cx, cref.as_deref())?;
            let key = service_key(cx, &cluster, &req.service).ok_or_else(EcsError::service_not_found)?;
            let d = st.services.get(&key).ok_or_else(EcsError::service_not_found)?;
            let mut svc = d.value.clone();
            let mut txn = Txn::new().when(Compare::mod_revision(&key, d.rev));
            if svc_rules::is_external(&svc) {
                svc_rules::update_external(&mut svc, &req)?;
                txn.ops.push(put(&key, &svc));
                let doc = Doc { key: key.clone(), rev: 0, raw: Bytes::new(), value: svc };
                return Ok((txn, shown(st, &doc, false)));
            }
            let td = match req.task_definition.as_deref() {
                Some(r) => {
                    let td = runnable_taskdef(st, cx, r)?;
                    txn.compares.push(Compare::mod_revision(&td.key, td.rev));
                    td
                }
                None => find_taskdef(st, &cx.scope, svc.task_definition.as_deref().unwrap_or(""))
                    .ok_or_else(EcsError::task_definition_not_found)?,
            };
            if req.service_registries.is_some() || req.task_definition.is_some() {
                let registries =
                    req.service_registries.as_deref().or(svc.service_registries.as_deref()).unwrap_or_default();
                crate::discovery::check_registries(st, &cx.scope, registries, &td.value)?;
            }
            if req.load_balancers.is_some() || req.task_definition.is_some() {
                let lbs = req.load_balancers.as_deref().or(svc.load_balancers.as_deref()).unwrap_or_default();
                crate::targets::check_load_balancers(st, &cx.scope, lbs, &td.value)?;
            }
            if req.load_balancers.is_some() || req.deployment_configuration.is_some() {
                let lbs = req.load_balancers.as_deref().or(svc.load_balancers.as_deref()).unwrap_or_default();
                let mut config = svc.deployment_configuration.clone().unwrap_or_default();
                if let Some(s) = req.deployment_configuration.as_ref().and_then(|c| c.strategy) {
                    config.strategy = Some(s);
                }
                crate::targets::check_traffic(st, &cx.scope, lbs, &config)?;
            }
            let launch_type = match req.capacity_provider_strategy.as_deref().filter(|s| !s.is_empty()) {
                Some(strategy) => capacity::resolve_launch(None, Some(strategy), &c.value, true, true)?.launch_type(),
                None if svc.capacity_provider_strategy.is_some() && req.capacity_provider_strategy.is_some() => {
                    // An empty strategy switches back to the cluster default / launch type.
                    capacity::resolve_launch(
                        None,
                        None,
                        &c.value,
                        taskdef::fargate_compatible(&td.value),
                        has_instances(st, cx, &cluster),
                    )?
                    .launch_type()
                }
                None => svc.launch_type.unwrap_or_else(|| {
                    if svc_rules::is_fargate(&svc) {
                        LaunchType::Fargate
                    } else {
                        LaunchType::Ec2
                    }
                }),
            };
            // Service Connect: the request's configuration, or the current one checked again
            // against the task definition; a changed one starts a deployment, as in ECS.
            let current_scc = svc_rules::primary(&d.value).and_then(|p| p.service_connect_configuration.clone());
            let prepared = match req.service_connect_configuration.as_ref().or(current_scc.as_ref()) {
                Some(cfg) => {
                    Some(crate::connect::prepare(st, &cx.scope, &c.value, cfg, &td.value, &key, cx.now, &mut txn)?)
                }
                None => None,
            };
            let mut req = req.clone();
            if prepared.as_ref().map(|p| &p.config) != current_scc.as_ref() {
                req.force_new_deployment = true;
            }
            let updated = svc_rules::update(
                &cx.scope,
                &cluster,
                &mut svc,
                &req,
                &td.value,
                Launch { launch_type, capacity_provider: None },
                &mut ids,
                cx.now,
            )?;
            if let Some(mut nd) = updated.deployment {
                let scc = prepared.as_ref().map(|p| p.config.clone());
                let resources = prepared.map(|p| p.resources).filter(|r| !r.is_empty());
                nd.deployment.service_connect_configuration = scc.clone();
                nd.revision.service_connect_configuration = scc.clone();
                nd.deployment.service_connect_resources = resources.clone();
                if let Some(p) = svc_rules::primary_mut(&mut svc) {
                    p.service_connect_configuration = scc;
                    p.service_connect_resources = resources;
                }
                supersede_deployments(st, &mut txn, &cx.scope, &cluster, svc_rules::name(&svc), cx.now);
                nd.record.status = Some(ServiceDeploymentStatus::InProgress);
                write_deployment(&mut txn, &cx.scope, &cluster, svc_rules::name(&svc), &nd);
            }
            txn.ops.push(put(&key, &svc));
            let doc = Doc { key: key.clone(), rev: 0, raw: Bytes::new(), value: svc };
            Ok((txn, shown(st, &doc, false)))
        })
        .await?;
    Ok(json(&UpdateServiceResponse { service: Some(out) }))
}

pub async fn delete(s: &Server, cx: &Ctx, req: DeleteServiceRequest) -> Result<Bytes> {
    let cref = cluster_ref(req.cluster.as_deref(), &req.service);
    let out = s
        .transact::<_, EcsError>(|st| {
            let (cluster, _) = active_cluster(st, cx, cref.as_deref())?;
            let key = service_key(cx, &cluster, &req.service).ok_or_else(EcsError::service_not_found)?;
            let d = st.services.get(&key).ok_or_else(EcsError::service_not_found)?;
            let mut svc = d.value.clone();
            svc_rules::delete(&mut svc, req.force.unwrap_or(false), cx.now)?;
            let txn = Txn::new().when(Compare::mod_revision(&key, d.rev)).then(put(&key, &svc));
            let doc = Doc { key: key.clone(), rev: 0, raw: Bytes::new(), value: svc };
            Ok((txn, shown(st, &doc, false)))
        })
        .await?;
    Ok(json(&DeleteServiceResponse { service: Some(out) }))
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeServicesRequest) -> Result<Bytes> {
    if req.services.is_empty() || req.services.len() > 10 {
        return Err(EcsError::invalid("Specify between 1 and 10 services to describe."));
    }
    let with_tags = req.include.as_ref().is_some_and(|i| i.contains(&ServiceField::Tags));
    let cref = cluster_ref(req.cluster.as_deref(), &req.services[0]);
    let st = s.view.read();
    let cluster = arn::cluster_name(cref.as_deref())?;
    if !st.clusters.contains_key(&keys::cluster(&cx.scope, &cluster)) {
        return Err(EcsError::cluster_not_found());
    }
    let mut resp = DescribeServicesResponse { services: Some(vec![]), failures: Some(vec![]) };
    for id in &req.services {
        match service_key(cx, &cluster, id).and_then(|k| st.services.get(&k)) {
            Some(d) => resp.services.as_mut().unwrap().push(shown(&st, d, with_tags)),
            None => resp.failures.as_mut().unwrap().push(super::missing(if id.starts_with("arn:") {
                id.clone()
            } else {
                cx.scope.short_service_arn(id)
            })),
        }
    }
    Ok(json(&resp))
}

pub async fn list(s: &Server, cx: &Ctx, req: ListServicesRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 10, 100)?;
    let st = s.view.read();
    let (cluster, _) = active_cluster(&st, cx, req.cluster.as_deref())?;
    let matches = State::range(&st.services, &keys::services_of(&cx.scope, &cluster)).filter(|d| {
        svc_rules::status(&d.value) == svc_rules::ACTIVE
            && req.launch_type.is_none_or(|l| d.value.launch_type == Some(l))
            && req.scheduling_strategy.is_none_or(|s| d.value.scheduling_strategy == Some(s))
    });
    let p = page::paginate(matches, |d| d.key.as_str(), req.next_token.as_deref(), limit, false)?;
    let arns = p.items.iter().filter_map(|d| d.value.service_arn.as_deref());
    Ok(super::list_json("serviceArns", arns, p.next_token.as_deref()))
}

pub async fn list_by_namespace(s: &Server, cx: &Ctx, req: ListServicesByNamespaceRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 10, 100)?;
    let st = s.view.read();
    let ns = &req.namespace;
    let ns_name = ns.rsplit('/').next().unwrap_or(ns);
    let ns_arn = crate::connect::namespace(&st, &cx.scope, ns).map(|n| n.arn);
    let ns_arn = ns_arn.as_deref().unwrap_or(ns);
    let prefix = format!("{}services/", keys::scope_prefix(&cx.scope));
    let matches = State::range(&st.services, &prefix).filter(|d| {
        svc_rules::status(&d.value) == svc_rules::ACTIVE
            && svc_rules::primary(&d.value)
                .and_then(|p| p.service_connect_configuration.as_ref())
                .and_then(|c| c.namespace.as_deref())
                .is_some_and(|n| n == ns || n == ns_name || n == ns_arn)
    });
    let p = page::paginate(matches, |d| d.key.as_str(), req.next_token.as_deref(), limit, false)?;
    let arns = p.items.iter().filter_map(|d| d.value.service_arn.as_deref());
    Ok(super::list_json("serviceArns", arns, p.next_token.as_deref()))
}

/// A service deployment record with live task counts.
fn record_with_counts(st: &State, d: &Doc<ServiceDeployment>) -> ServiceDeployment {
    let cluster_key = keys::cluster_of(&d.key).unwrap_or_default();
    let mut r = d.value.clone();
    let fill = |s: &mut ServiceRevisionSummary| {
        let n = s.arn.as_deref().and_then(|a| a.rsplit('/').next()).unwrap_or("");
        let c = st.deployment_counts(&cluster_key, &format!("ecs-svc/{n}"));
        s.running_task_count = c.running;
        s.pending_task_count = c.pending;
    };
    if let Some(t) = &mut r.target_service_revision {
        fill(t);
    }
    for s in r.source_service_revisions.iter_mut().flatten() {
        fill(s);
    }
    r
}

pub async fn list_deployments(s: &Server, cx: &Ctx, req: ListServiceDeploymentsRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 20, 100)?;
    let cref = cluster_ref(req.cluster.as_deref(), &req.service);
    let st = s.view.read();
    let cluster = arn::cluster_name(cref.as_deref())?;
    if !st.clusters.contains_key(&keys::cluster(&cx.scope, &cluster)) {
        return Err(EcsError::cluster_not_found());
    }
    let key = service_key(cx, &cluster, &req.service).ok_or_else(EcsError::service_not_found)?;
    let svc = st.services.get(&key).ok_or_else(EcsError::service_not_found)?;
    let mut recs: Vec<&std::sync::Arc<Doc<ServiceDeployment>>> = State::range(
        &st.service_deployments,
        &keys::service_deployments_of(&cx.scope, &cluster, svc_rules::name(&svc.value)),
    )
    .filter(|d| req.status.as_ref().is_none_or(|s| d.value.status.is_some_and(|x| s.contains(&x))))
    .filter(|d| {
        let at = d.value.created_at.unwrap_or(0.0);
        req.created_at.as_ref().is_none_or(|c| c.after.is_none_or(|a| at >= a) && c.before.is_none_or(|b| at <= b))
    })
    .collect();
    // Newest first.
    recs.sort_by(|a, b| b.value.created_at.partial_cmp(&a.value.created_at).unwrap().then(b.key.cmp(&a.key)));
    let p = page::paginate(
        recs,
        |d| format!("{:020.3}\t{}", d.value.created_at.unwrap_or(0.0), d.key),
        req.next_token.as_deref(),
        limit,
        true,
    )?;
    let briefs = p
        .items
        .iter()
        .map(|d| ServiceDeploymentBrief {
            service_deployment_arn: d.value.service_deployment_arn.clone(),
            service_arn: d.value.service_arn.clone(),
            cluster_arn: d.value.cluster_arn.clone(),
            started_at: d.value.started_at,
            created_at: d.value.created_at,
            finished_at: d.value.finished_at,
            target_service_revision_arn: d.value.target_service_revision.as_ref().and_then(|t| t.arn.clone()),
            status: d.value.status,
            status_reason: d.value.status_reason.clone(),
        })
        .collect();
    Ok(json(&ListServiceDeploymentsResponse { service_deployments: Some(briefs), next_token: p.next_token }))
}

/// Parses `arn:aws:ecs:r:a:<kind>/<cluster>/<service>/<id>` into its key.
fn record_key(cx: &Ctx, kind: &str, a: &str) -> Option<String> {
    let parsed = arn::Arn::parse(a)?;
    if parsed.kind != kind || !parsed.in_scope(&cx.scope) {
        return None;
    }
    let mut parts = parsed.path.splitn(3, '/');
    let (cluster, service, id) = (parts.next()?, parts.next()?, parts.next()?);
    Some(match kind {
        "service-deployment" => keys::service_deployment(&cx.scope, cluster, service, id),
        _ => keys::service_revision(&cx.scope, cluster, service, id),
    })
}

pub async fn describe_deployments(s: &Server, cx: &Ctx, req: DescribeServiceDeploymentsRequest) -> Result<Bytes> {
    if req.service_deployment_arns.is_empty() || req.service_deployment_arns.len() > 20 {
        return Err(EcsError::invalid("Specify between 1 and 20 service deployment ARNs."));
    }
    let st = s.view.read();
    let mut resp = DescribeServiceDeploymentsResponse { service_deployments: Some(vec![]), failures: Some(vec![]) };
    for a in &req.service_deployment_arns {
        match record_key(cx, "service-deployment", a).and_then(|k| st.service_deployments.get(&k)) {
            Some(d) => resp.service_deployments.as_mut().unwrap().push(record_with_counts(&st, d)),
            None => resp.failures.as_mut().unwrap().push(super::missing(a.clone())),
        }
    }
    Ok(json(&resp))
}

pub async fn describe_revisions(s: &Server, cx: &Ctx, req: DescribeServiceRevisionsRequest) -> Result<Bytes> {
    if req.service_revision_arns.is_empty() || req.service_revision_arns.len() > 20 {
        return Err(EcsError::invalid("Specify between 1 and 20 service revision ARNs."));
    }
    let st = s.view.read();
    let mut resp = DescribeServiceRevisionsResponse { service_revisions: Some(vec![]), failures: Some(vec![]) };
    for a in &req.service_revision_arns {
        match record_key(cx, "service-revision", a).and_then(|k| st.service_revisions.get(&k)) {
            Some(d) => resp.service_revisions.as_mut().unwrap().push(d.value.clone()),
            None => resp.failures.as_mut().unwrap().push(super::missing(a.clone())),
        }
    }
    Ok(json(&resp))
}

/// A service deployment record by ARN, and its key.
fn deployment_record<'a>(st: &'a State, cx: &Ctx, arn: &str) -> Result<(String, &'a Doc<ServiceDeployment>)> {
    let not_found =
        || EcsError::new(ErrorCode::ServiceDeploymentNotFoundException, "The service deployment does not exist.");
    let key = record_key(cx, "service-deployment", arn).ok_or_else(not_found)?;
    let d = st.service_deployments.get(&key).ok_or_else(not_found)?;
    Ok((key, d))
}

pub async fn stop_deployment(s: &Server, cx: &Ctx, req: StopServiceDeploymentRequest) -> Result<Bytes> {
    let stop_type = req.stop_type.unwrap_or(StopServiceDeploymentStopType::Rollback);
    let arn_out = s
        .transact::<_, EcsError>(|st| {
            let (key, d) = deployment_record(st, cx, &req.service_deployment_arn)?;
            if !matches!(d.value.status, Some(ServiceDeploymentStatus::Pending | ServiceDeploymentStatus::InProgress)) {
                return Err(EcsError::new(
                    ErrorCode::ConflictException,
                    format!(
                        "The service deployment is {} and cannot be stopped: only PENDING and IN_PROGRESS deployments can.",
                        d.value.status.map(|s| s.as_str()).unwrap_or("")
                    ),
                ));
            }
            if stop_type == StopServiceDeploymentStopType::Rollback && d.value.source_service_revisions.as_ref().is_none_or(|s| s.is_empty()) {
                return Err(EcsError::new(
                    ErrorCode::ConflictException,
                    "The service deployment has no earlier revision to roll back to; stop it with stopType ABORT.",
                ));
            }
            let mut r = d.value.clone();
            r.status = Some(match stop_type {
                StopServiceDeploymentStopType::Abort => ServiceDeploymentStatus::StopRequested,
                StopServiceDeploymentStopType::Rollback => ServiceDeploymentStatus::RollbackRequested,
            });
            r.updated_at = Some(cx.now);
            let txn = Txn::new().when(Compare::mod_revision(&key, d.rev)).then(put(&key, &r));
            Ok((txn, r.service_deployment_arn.clone()))
        })
        .await?;
    Ok(json(&StopServiceDeploymentResponse { service_deployment_arn: arn_out }))
}

/// ContinueServiceDeployment: acts on a PAUSE lifecycle hook that holds a blue/green, linear
/// or canary deployment (`estiba_core::traffic::continue_hook`); the scheduler's next pass
/// goes on, or rolls the deployment back.
pub async fn continue_deployment(s: &Server, cx: &Ctx, req: ContinueServiceDeploymentRequest) -> Result<Bytes> {
    let action = req.action.unwrap_or(DeploymentLifecycleHookAction::Continue);
    let arn_out = s
        .transact::<_, EcsError>(|st| {
            let (key, d) = deployment_record(st, cx, &req.service_deployment_arn)?;
            if d.value.status != Some(ServiceDeploymentStatus::InProgress) {
                return Err(EcsError::new(
                    ErrorCode::ConflictException,
                    format!(
                        "The service deployment is {} and cannot be continued: only IN_PROGRESS deployments can.",
                        d.value.status.map(|s| s.as_str()).unwrap_or("")
                    ),
                ));
            }
            let (cluster, service) = key
                .strip_prefix(&format!("ecs/{}/{}/service-deployments/", cx.scope.account, cx.scope.region))
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(c, rest)| Some((c, rest.split_once('/')?.0)))
                .ok_or_else(EcsError::service_not_found)?;
            let tkey = keys::traffic(&cx.scope, cluster, service);
            let number = estiba_core::rollout::revision_number(
                d.value.target_service_revision.as_ref().and_then(|r| r.arn.as_deref()),
            );
            let t = st
                .traffic
                .get(&tkey)
                .filter(|t| svc_rules::deployment_number(&t.value.deployment) == number)
                .ok_or_else(|| {
                    EcsError::invalid(format!(
                        "The lifecycle hook {} was not found in the service deployment.",
                        req.hook_id
                    ))
                })?;
            let mut doc = t.value.clone();
            estiba_core::traffic::continue_hook(&mut doc, &req.hook_id, action)?;
            let txn = Txn::new().when(Compare::mod_revision(&tkey, t.rev)).then(put(&tkey, &doc));
            Ok((txn, d.value.service_deployment_arn.clone()))
        })
        .await?;
    Ok(json(&ContinueServiceDeploymentResponse { service_deployment_arn: arn_out }))
}
