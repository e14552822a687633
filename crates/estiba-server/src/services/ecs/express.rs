//! CreateExpressGatewayService, DescribeExpressGatewayService, UpdateExpressGatewayService,
//! DeleteExpressGatewayService: ECS Express Mode, assembled from estiba's own pieces in one
//! transaction per call. Create registers a task definition, puts the service behind a host
//! rule of a shared Application Load Balancer (created with its HTTP:80 listener when the
//! scope has none with room: at most `express::SERVICES_PER_LOAD_BALANCER` services each),
//! with its own target group, creates the ECS service, registers its scalable target and puts
//! a target tracking policy with its two alarms; the Express document
//! (`estiba_core::express::ExpressDoc`) records what was made. Delete drains the service and
//! removes the rule, the target group, the policy with its alarms, the scalable target, and
//! the load balancer when its last Express service goes.
//!
//! The documents are built by the same functions the ELBv2, ECS and Application Auto Scaling
//! handlers use (`elbv2::new_*`, `estiba_core::{service, taskdef, autoscaling}`); nothing here
//! calls another service's handler.

use std::collections::BTreeMap;

use bytes::Bytes;
use estiba_api::application_autoscaling as aas;
use estiba_api::ecs::*;
use estiba_api::elbv2 as elbapi;
use estiba_core::autoscaling::docs::{self as scaling_docs, PolicyDoc, TargetDoc as ScalableTargetDoc};
use estiba_core::autoscaling::{self as scaling_rules, Bounds, EcsService, TrackingAlarm};
use estiba_core::elbv2::{self as elb, ListenerDoc, LoadBalancerDoc, RuleDoc, TargetGroupDoc};
use estiba_core::elbv2_rules::{self as lb_rules, HealthCheckInput};
use estiba_core::express::{self, ExpressDoc, Resources};
use estiba_core::service::{self as svc_rules};
use estiba_core::task::Launch;
use estiba_core::vpc::Vpc;
use estiba_core::{alarms, arn, cluster, taskdef, EcsError, Ids};
use estiba_store::{Compare, Op, Txn};

use super::{json, put, put_tags, Ctx, Result};
use crate::services::application_autoscaling::{delete_policy, policies_table, targets_table, tracking_alarm};
use crate::services::elbv2::{self as elbv2, Table};
use crate::view::{Doc, Family, State, TableDef};
use crate::{keys, RandomIds, Server};

/// The view table of Express service documents.
/// (the first of ECS's tables, `super::TABLES`)
pub static TABLE: &TableDef = &super::TABLES[0];

/// The name prefix of the load balancers Express Mode shares among services.
const ALB_PREFIX: &str = "ecs-express-gateway-alb-";
/// The name prefix of an Express service's target group.
const TG_PREFIX: &str = "ecs-express-tg-";

fn scaling_error(e: scaling_rules::ScalingError) -> EcsError {
    EcsError::invalid(e.message)
}

fn elb_error(e: lb_rules::ElbError) -> EcsError {
    EcsError::invalid(e.to_string())
}

/// The default VPC's network for services that name none: every subnet and the VPC's
/// security group.
fn default_network(vpc: &Vpc) -> ExpressGatewayServiceNetworkConfiguration {
    ExpressGatewayServiceNetworkConfiguration {
        subnets: Some(vpc.subnets.iter().map(|s| s.id.clone()).collect()),
        security_groups: Some(vec![vpc.security_group_id.clone()]),
    }
}

/// The cluster and name of an Express service ARN (`.../service/<cluster>/<name>`; an ARN
/// without the cluster means `default`).
fn parse_service_arn(cx: &Ctx, service_arn: &str) -> Result<(String, String)> {
    let invalid =
        || EcsError::invalid(format!("Invalid serviceArn '{service_arn}': give the ARN of an Express service."));
    if service_arn.starts_with("arn:") {
        let a = arn::Arn::parse(service_arn).ok_or_else(invalid)?;
        if !a.in_scope(&cx.scope) {
            return Err(invalid());
        }
    }
    let (cluster, name) = arn::member_id("service", service_arn).ok_or_else(invalid)?;
    Ok((cluster.unwrap_or("default").to_owned(), name.to_owned()))
}

/// The ECS service's status, current deployment and current revisions (`None` once it is
/// gone).
fn service_state(st: &State, cx: &Ctx, d: &ExpressDoc) -> (Option<String>, Option<String>, Vec<String>) {
    match st.services.get(&keys::service(&cx.scope, &d.cluster, &d.service_name)) {
        Some(s) => (
            Some(svc_rules::status(&s.value).to_owned()),
            s.value.current_service_deployment.clone(),
            revisions(&s.value),
        ),
        None => (None, None, vec![]),
    }
}

fn revisions(s: &Service) -> Vec<String> {
    s.current_service_revisions.iter().flatten().filter_map(|r| r.arn.clone()).collect()
}

/// A cluster for an Express service: the one named, or `default`, which Express Mode creates
/// (with the FARGATE capacity provider) when it does not exist.
fn cluster_for_express(st: &State, cx: &Ctx, id: Option<&str>, txn: &mut Txn) -> Result<String> {
    let name = arn::cluster_name(id)?;
    let key = keys::cluster(&cx.scope, &name);
    match st.clusters.get(&key) {
        Some(d) if d.value.status.as_deref() == Some(cluster::ACTIVE) => {
            txn.compares.push(Compare::mod_revision(&key, d.rev));
            Ok(name)
        }
        existing if name == "default" => {
            let req = CreateClusterRequest {
                cluster_name: Some(name.clone()),
                capacity_providers: Some(vec!["FARGATE".into()]),
                ..Default::default()
            };
            let c = cluster::create(&cx.scope, &req, |p| p == "FARGATE" || p == "FARGATE_SPOT")?;
            txn.compares.push(match existing {
                Some(d) => Compare::mod_revision(&key, d.rev),
                None => Compare::absent(&key),
            });
            txn.ops.push(put(&key, &c));
            Ok(name)
        }
        _ => Err(EcsError::cluster_not_found()),
    }
}

/// Registers the next revision of `family` in `txn` and answers it.
fn register_task_definition(
    st: &State,
    cx: &Ctx,
    family: &str,
    cfg: &ExpressGatewayServiceConfiguration,
    txn: &mut Txn,
) -> Result<TaskDefinition> {
    let fkey = keys::family(&cx.scope, family);
    let last = match st.families.get(&fkey) {
        Some(d) => {
            txn.compares.push(Compare::mod_revision(&fkey, d.rev));
            d.value.last_revision
        }
        None => {
            txn.compares.push(Compare::absent(&fkey));
            0
        }
    };
    let req = express::task_definition_request(family, cfg, &cx.scope.region);
    let td = taskdef::register(&cx.scope, &req, last + 1, cx.now).map_err(|e| EcsError::invalid(e.message))?;
    txn.ops.push(put(&fkey, &Family { name: family.to_owned(), last_revision: last + 1 }));
    txn.ops.push(put(keys::taskdef(&cx.scope, family, last + 1), &td));
    Ok(td)
}

/// The shared load balancer's listener a new service's rule goes on: an Express load
/// balancer's HTTP:80 listener with fewer than the limit of services (guarded: a concurrent
/// create conflicts), else a new load balancer with its listener (written to `txn`). Answers
/// the load balancer's ARN, the listener's ARN and key, and the priorities taken.
fn shared_listener(
    st: &State,
    cx: &Ctx,
    vpc: &Vpc,
    txn: &mut Txn,
    ids: &mut dyn Ids,
) -> Result<(String, String, String, Vec<i32>)> {
    let scope = &cx.scope;
    let lbs =
        st.docs::<LoadBalancerDoc>(elbv2::table(Table::LoadBalancers), &elb::kind_prefix(scope, elb::LOAD_BALANCERS));
    for lb in lbs {
        let Some(name) = lb.value.lb.load_balancer_name.as_deref().filter(|n| n.starts_with(ALB_PREFIX)) else {
            continue;
        };
        let listeners = st.docs::<ListenerDoc>(
            elbv2::table(Table::Listeners),
            &format!("{}{name}/", elb::kind_prefix(scope, elb::LISTENERS)),
        );
        for l in listeners.filter(|l| l.value.listener.port == Some(express::LISTENER_PORT)) {
            let id = l.key.rsplit('/').next().unwrap_or_default();
            let rules: Vec<i32> = st
                .docs::<RuleDoc>(
                    elbv2::table(Table::Rules),
                    &format!("{}{name}/{id}/", elb::kind_prefix(scope, elb::RULES)),
                )
                .filter(|r| r.value.rule.is_default != Some(true))
                .filter_map(|r| r.value.rule.priority.as_deref().and_then(|p| p.parse().ok()))
                .collect();
            if rules.len() < express::SERVICES_PER_LOAD_BALANCER {
                // Written again unchanged: two creates that pick one priority conflict, and a
                // deletion of the load balancer meanwhile too.
                txn.compares.push(Compare::mod_revision(&l.key, l.rev));
                txn.ops.push(Op::put(l.key.clone(), l.raw.clone()));
                txn.compares.push(Compare::mod_revision(&lb.key, lb.rev));
                let lb_arn = lb.value.lb.load_balancer_arn.clone().unwrap_or_default();
                let l_arn = l.value.listener.listener_arn.clone().unwrap_or_default();
                return Ok((lb_arn, l_arn, l.key.clone(), rules));
            }
        }
    }
    let t = elbapi::LoadBalancerTypeEnum::Application;
    let name = format!("{ALB_PREFIX}{}", &ids.hex32()[..8]);
    let subnets: Vec<String> = vpc.subnets.iter().map(|s| s.id.clone()).collect();
    let asked = elbv2::requested_subnets(vpc, t, Some(&subnets), None).map_err(elb_error)?;
    let tags = vec![elbapi::Tag { key: "AmazonECSManaged".into(), value: Some("true".into()) }];
    let (lb_txn, lb) = elbv2::new_load_balancer(
        st,
        scope,
        vpc,
        cx.now,
        &name,
        t,
        elbapi::LoadBalancerSchemeEnum::InternetFacing,
        &asked,
        vec![vpc.security_group_id.clone()],
        tags,
    )
    .map_err(elb_error)?;
    txn.compares.extend(lb_txn.compares);
    txn.ops.extend(lb_txn.ops);
    let lb_arn = lb.lb.load_balancer_arn.clone().unwrap_or_default();
    let not_found = elbapi::Action {
        r#type: elbapi::ActionTypeEnum::FixedResponse,
        fixed_response_config: Some(elbapi::FixedResponseActionConfig {
            status_code: "404".into(),
            content_type: Some("text/plain".into()),
            message_body: Some("No Express service answers this host name.".into()),
        }),
        ..Default::default()
    };
    let actions = lb_rules::check_actions(t, &[not_found]).map_err(elb_error)?;
    let (key, doc, rule_key, rule) = elbv2::new_listener(
        scope,
        &lb_arn,
        &name,
        elbapi::ProtocolEnum::Http,
        express::LISTENER_PORT,
        None,
        None,
        &actions,
        None,
        vec![],
    );
    txn.compares.push(Compare::absent(&key));
    txn.ops.push(elbv2::put_doc(&key, &doc));
    txn.compares.push(Compare::absent(&rule_key));
    txn.ops.push(elbv2::put_doc(&rule_key, &rule));
    Ok((lb_arn, doc.listener.listener_arn.clone().unwrap_or_default(), key, vec![]))
}

/// The target tracking policy of an Express service with its two alarms, written to `txn`
/// (replacing `old` when there is one: its alarms keep their names). Answers the policy's
/// ARN and its alarms' names.
#[allow(clippy::too_many_arguments)]
fn put_policy(
    cx: &Ctx,
    service: &EcsService,
    policy_name: &str,
    s: &ExpressGatewayScalingTarget,
    label: &str,
    old: Option<&Doc<PolicyDoc>>,
    txn: &mut Txn,
    ids: &mut dyn Ids,
) -> Result<(String, Vec<String>)> {
    let scope = &cx.scope;
    let resource_id = service.resource_id();
    let cfg = express::tracking_configuration(s, label);
    let metric = scaling_rules::target_tracking_metric(service, &cfg).map_err(scaling_error)?;
    let key = scaling_docs::policy_key(scope, &resource_id, policy_name);
    let arn = match old {
        Some(d) => {
            txn.compares.push(Compare::mod_revision(&d.key, d.rev));
            d.value.policy.policy_arn.clone()
        }
        None => {
            txn.compares.push(Compare::absent(&key));
            scaling_rules::policy_arn(scope, &ids.uuid(), &resource_id, policy_name)
        }
    };
    let old_alarms = old.and_then(|d| d.value.policy.alarms.clone()).unwrap_or_default();
    let mut shown = vec![];
    for which in [TrackingAlarm::AlarmHigh, TrackingAlarm::AlarmLow] {
        let uuid = old_alarms
            .iter()
            .find(|a| TrackingAlarm::of_name(&a.alarm_name) == Some(which))
            .map(|a| a.alarm_name[a.alarm_name.len() - 36..].to_string())
            .unwrap_or_else(|| ids.uuid());
        let (input, doc) = tracking_alarm(scope, &resource_id, which, &uuid, &arn, &metric, cfg.target_value, cx.now)
            .map_err(scaling_error)?;
        txn.ops.push(put(alarms::alarm_key(scope, &input.alarm_name), &doc));
        shown.push(aas::Alarm { alarm_arn: alarms::alarm_arn(scope, &input.alarm_name), alarm_name: input.alarm_name });
    }
    let policy = aas::ScalingPolicy {
        alarms: Some(shown.clone()),
        creation_time: old.map_or(cx.now, |d| d.value.policy.creation_time),
        policy_arn: arn.clone(),
        policy_name: policy_name.to_owned(),
        policy_type: aas::PolicyType::TargetTrackingScaling,
        predictive_scaling_policy_configuration: None,
        resource_id,
        scalable_dimension: aas::ScalableDimension::EcsServiceDesiredCount,
        service_namespace: aas::ServiceNamespace::Ecs,
        step_scaling_policy_configuration: None,
        target_tracking_scaling_policy_configuration: Some(cfg),
    };
    let memory = old.map(|d| d.value.memory).unwrap_or_default();
    txn.ops.push(put(&key, &PolicyDoc { policy, memory }));
    Ok((arn, shown.into_iter().map(|a| a.alarm_name).collect()))
}

fn bounds_of(s: &ExpressGatewayScalingTarget) -> Bounds {
    Bounds {
        min_capacity: s.min_task_count.unwrap_or(express::DEFAULT_MIN_TASKS),
        max_capacity: s.max_task_count.unwrap_or(express::DEFAULT_MAX_TASKS),
        ..Default::default()
    }
}

/// The target group's health check: the configuration's path, checked every 10 seconds,
/// healthy after 2 successes (Express services start serving quickly).
fn health_check(path: &str) -> HealthCheckInput {
    HealthCheckInput {
        path: Some(path.to_owned()),
        interval: Some(10),
        timeout: Some(5),
        healthy: Some(2),
        unhealthy: Some(2),
        ..Default::default()
    }
}

pub async fn create(s: &Server, cx: &Ctx, req: CreateExpressGatewayServiceRequest) -> Result<Bytes> {
    express::check_create(&req)?;
    let vpc = Vpc::default_for(&cx.scope, cx.vpc_cidr);
    let cfg = express::configuration(&req, &default_network(&vpc), cx.now)?;
    let mut ids = RandomIds;
    let generated = express::generated_name(&ids.hex32());
    let host_id = ids.hex32();
    let scope = &cx.scope;
    let out = s
        .transact::<_, EcsError>(|st| {
            let mut txn = Txn::new();
            let cluster = cluster_for_express(st, cx, req.cluster.as_deref(), &mut txn)?;
            let name = req.service_name.clone().unwrap_or_else(|| generated.clone());
            let skey = keys::service(scope, &cluster, &name);
            match st.services.get(&skey) {
                Some(d) if svc_rules::status(&d.value) != svc_rules::INACTIVE => {
                    return Err(EcsError::invalid("Creation of service was not idempotent."));
                }
                Some(d) => txn.compares.push(Compare::mod_revision(&skey, d.rev)),
                None => txn.compares.push(Compare::absent(&skey)),
            }
            let ekey = express::key(scope, &cluster, &name);
            match st.doc::<ExpressDoc>(TABLE, &ekey) {
                Some(d) => txn.compares.push(Compare::mod_revision(&ekey, d.rev)),
                None => txn.compares.push(Compare::absent(&ekey)),
            }
            let mut cfg = cfg.clone();
            let td = register_task_definition(st, cx, &name, &cfg, &mut txn)?;
            let host = express::endpoint_host(&name, &host_id, &scope.region);

            // The load balancer's side: the shared listener, a target group, a host rule.
            let (lb_arn, listener_arn, listener_key, taken) = shared_listener(st, cx, &vpc, &mut txn, &mut ids)?;
            let port = cfg.primary_container.as_ref().and_then(|c| c.container_port);
            let hc = health_check(cfg.health_check_path.as_deref().unwrap_or(express::DEFAULT_HEALTH_CHECK_PATH));
            let tg = lb_rules::new_target_group(
                Some(elbapi::ProtocolEnum::Http),
                port,
                elbapi::TargetTypeEnum::Ip,
                None,
                &hc,
            )
            .map_err(elb_error)?;
            let tg_name = format!("{TG_PREFIX}{}", &ids.hex32()[..16]);
            let (tg_key, mut tg_doc) =
                elbv2::new_target_group(scope, &vpc.id, &tg_name, tg, elbapi::TargetTypeEnum::Ip, vec![]);
            tg_doc.attributes.insert("deregistration_delay.timeout_seconds".into(), "10".into());
            let tg_arn = tg_doc.tg.target_group_arn.clone().unwrap_or_default();
            txn.compares.push(Compare::absent(&tg_key));
            txn.ops.push(elbv2::put_doc(&tg_key, &tg_doc));
            let priority = (1..).find(|p| !taken.contains(p)).unwrap_or(1);
            let conditions = lb_rules::check_conditions(&[elbapi::RuleCondition {
                field: Some("host-header".into()),
                host_header_config: Some(elbapi::HostHeaderConditionConfig {
                    values: Some(vec![host.clone()]),
                    regex_values: None,
                }),
                ..Default::default()
            }])
            .map_err(elb_error)?;
            let forward = elbapi::Action {
                r#type: elbapi::ActionTypeEnum::Forward,
                target_group_arn: Some(tg_arn.clone()),
                ..Default::default()
            };
            let actions =
                lb_rules::check_actions(elbapi::LoadBalancerTypeEnum::Application, &[forward]).map_err(elb_error)?;
            let (rule_key, rule) =
                elbv2::new_rule(scope, &listener_arn, &listener_key, priority, conditions, &actions, vec![]);
            txn.compares.push(Compare::absent(&rule_key));
            txn.ops.push(elbv2::put_doc(&rule_key, &rule));

            // The ECS service behind the target group.
            let tags = req.tags.clone().unwrap_or_default();
            let td_arn = td.task_definition_arn.clone().unwrap_or_default();
            let sreq = express::service_request(&name, &cluster, &td_arn, &cfg, &tg_arn, &tags);
            let created = svc_rules::create(
                scope,
                &cluster,
                &sreq,
                &td,
                Launch { launch_type: LaunchType::Fargate, capacity_provider: None },
                0,
                &mut ids,
                cx.now,
            )?;
            txn.ops.push(put(&skey, &created.service));
            txn.ops.push(put_tags(&skey, &tags));
            super::services::write_deployment(&mut txn, scope, &cluster, &name, &created.deployment);
            cfg.service_revision_arn = created.deployment.revision.service_revision_arn.clone();

            // Its scalable target and target tracking policy.
            let service = EcsService { cluster: cluster.clone(), service: name.clone() };
            let resource_id = service.resource_id();
            let target_key = scaling_docs::target_key(scope, &resource_id);
            let existing_target = st.doc::<ScalableTargetDoc>(targets_table(), &target_key);
            txn.compares.push(match existing_target {
                Some(d) => Compare::mod_revision(&target_key, d.rev),
                None => Compare::absent(&target_key),
            });
            let scaling = cfg.scaling_target.clone().unwrap_or_default();
            let target = ScalableTargetDoc {
                service: service.clone(),
                arn: scaling_rules::scalable_target_arn(scope, &ids.hex32()),
                creation_time: cx.now,
                bounds: bounds_of(&scaling),
                tags: BTreeMap::new(),
            };
            txn.ops.push(put(&target_key, &target));
            let policy_name = express::policy_name(&name);
            let old_policy =
                st.doc::<PolicyDoc>(policies_table(), &scaling_docs::policy_key(scope, &resource_id, &policy_name));
            let label = express::resource_label(&lb_arn, &tg_arn);
            let (policy_arn, alarm_names) =
                put_policy(cx, &service, &policy_name, &scaling, &label, old_policy, &mut txn, &mut ids)?;

            let doc = ExpressDoc {
                cluster: cluster.clone(),
                service_name: name.clone(),
                service_arn: scope.service_arn(&cluster, &name),
                infrastructure_role_arn: req.infrastructure_role_arn.clone(),
                host,
                created_at: cx.now,
                updated_at: cx.now,
                configurations: vec![cfg],
                resources: Resources {
                    load_balancer_arn: lb_arn,
                    listener_arn,
                    rule_arn: rule.rule.rule_arn.clone().unwrap_or_default(),
                    target_group_arn: tg_arn,
                    task_definition_family: name.clone(),
                    scalable_target_arn: target.arn,
                    policy_arn,
                    policy_name,
                    alarm_names,
                },
                tags,
            };
            txn.ops.push(put(&ekey, &doc));
            let shown = express::shown(
                &doc,
                Some(svc_rules::ACTIVE),
                created.service.current_service_deployment.clone(),
                &revisions(&created.service),
                true,
            );
            Ok((txn, shown))
        })
        .await?;
    Ok(json(&CreateExpressGatewayServiceResponse { service: Some(out) }))
}

/// The Express document an ARN names, in a cluster that exists.
fn find<'a>(st: &'a State, cx: &Ctx, service_arn: &str) -> Result<Option<&'a Doc<ExpressDoc>>> {
    let (cluster, name) = parse_service_arn(cx, service_arn)?;
    if !st.clusters.contains_key(&keys::cluster(&cx.scope, &cluster)) {
        return Err(EcsError::cluster_not_found());
    }
    Ok(st.doc::<ExpressDoc>(TABLE, &express::key(&cx.scope, &cluster, &name)))
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeExpressGatewayServiceRequest) -> Result<Bytes> {
    let with_tags = req.include.as_ref().is_some_and(|i| i.contains(&ExpressGatewayServiceInclude::Tags));
    let st = s.view.read();
    let d = find(&st, cx, &req.service_arn)?.ok_or_else(|| {
        EcsError::resource_not_found(format!("The Express service '{}' was not found.", req.service_arn))
    })?;
    let (status, deployment, revs) = service_state(&st, cx, &d.value);
    let out = express::shown(&d.value, status.as_deref(), deployment, &revs, with_tags);
    Ok(json(&DescribeExpressGatewayServiceResponse { service: Some(out) }))
}

/// The Express service and its ECS service for a change: both exist and the service is ACTIVE.
fn for_change<'a>(
    st: &'a State,
    cx: &Ctx,
    service_arn: &str,
) -> Result<(&'a Doc<ExpressDoc>, &'a std::sync::Arc<Doc<Service>>)> {
    let d = find(st, cx, service_arn)?.ok_or_else(EcsError::service_not_found)?;
    let svc = st
        .services
        .get(&keys::service(&cx.scope, &d.value.cluster, &d.value.service_name))
        .ok_or_else(EcsError::service_not_found)?;
    if svc_rules::status(&svc.value) != svc_rules::ACTIVE {
        return Err(EcsError::service_not_active());
    }
    Ok((d, svc))
}

pub async fn update(s: &Server, cx: &Ctx, req: UpdateExpressGatewayServiceRequest) -> Result<Bytes> {
    let vpc = Vpc::default_for(&cx.scope, cx.vpc_cidr);
    let mut ids = RandomIds;
    let scope = &cx.scope;
    let out = s
        .transact::<_, EcsError>(|st| {
            let (d, svc_doc) = for_change(st, cx, &req.service_arn)?;
            let mut doc = d.value.clone();
            let mut txn = Txn::new()
                .when(Compare::mod_revision(&d.key, d.rev))
                .when(Compare::mod_revision(&svc_doc.key, svc_doc.rev));
            let current = doc.current().clone();
            let mut cfg = express::updated_configuration(&current, &req, &default_network(&vpc), cx.now)?;
            let r = &doc.resources;

            // A new task definition revision and a deployment of it.
            let td = register_task_definition(st, cx, &r.task_definition_family, &cfg, &mut txn)?;
            let td_arn = td.task_definition_arn.clone().unwrap_or_default();
            let mut sreq =
                express::update_service_request(&doc.service_arn, &doc.cluster, &td_arn, &cfg, &r.target_group_arn);
            let scaling = cfg.scaling_target.clone().unwrap_or_default();
            let bounds = bounds_of(&scaling);
            let mut svc = svc_doc.value.clone();
            if bounds.clamp(svc.desired_count) != svc.desired_count {
                sreq.desired_count = Some(bounds.clamp(svc.desired_count));
            }
            let updated = svc_rules::update(
                scope,
                &doc.cluster,
                &mut svc,
                &sreq,
                &td,
                Launch { launch_type: LaunchType::Fargate, capacity_provider: None },
                &mut ids,
                cx.now,
            )?;
            if let Some(mut nd) = updated.deployment {
                super::services::supersede_deployments(st, &mut txn, scope, &doc.cluster, &doc.service_name, cx.now);
                nd.record.status = Some(ServiceDeploymentStatus::InProgress);
                super::services::write_deployment(&mut txn, scope, &doc.cluster, &doc.service_name, &nd);
                cfg.service_revision_arn = nd.revision.service_revision_arn.clone();
            }
            txn.ops.push(put(&svc_doc.key, &svc));

            // The target group's health check.
            if cfg.health_check_path != current.health_check_path {
                let tg = elb::key_of_arn(&r.target_group_arn)
                    .and_then(|k| st.doc::<TargetGroupDoc>(elbv2::table(Table::TargetGroups), &k))
                    .ok_or_else(|| EcsError::server("The Express service's target group is gone."))?;
                let path = cfg.health_check_path.clone().unwrap_or_default();
                let hc = HealthCheckInput { path: Some(path), ..Default::default() };
                let mut g = tg.value.clone();
                g.tg = lb_rules::modify_health_check(&g.tg, &hc).map_err(elb_error)?;
                txn.compares.push(Compare::mod_revision(&tg.key, tg.rev));
                txn.ops.push(elbv2::put_doc(&tg.key, &g));
            }

            // Scaling: the target's bounds and the policy, when they changed.
            if cfg.scaling_target != current.scaling_target {
                let service = EcsService { cluster: doc.cluster.clone(), service: doc.service_name.clone() };
                let resource_id = service.resource_id();
                let tkey = scaling_docs::target_key(scope, &resource_id);
                let t = st
                    .doc::<ScalableTargetDoc>(targets_table(), &tkey)
                    .ok_or_else(|| EcsError::server("The Express service's scalable target is gone."))?;
                let mut target = t.value.clone();
                target.bounds = Bounds { suspended: target.bounds.suspended, ..bounds };
                txn.compares.push(Compare::mod_revision(&tkey, t.rev));
                txn.ops.push(put(&tkey, &target));
                let old = st
                    .doc::<PolicyDoc>(policies_table(), &scaling_docs::policy_key(scope, &resource_id, &r.policy_name));
                let label = express::resource_label(&r.load_balancer_arn, &r.target_group_arn);
                let policy_name = r.policy_name.clone();
                let (arn, names) = put_policy(cx, &service, &policy_name, &scaling, &label, old, &mut txn, &mut ids)?;
                doc.resources.policy_arn = arn;
                doc.resources.alarm_names = names;
            }
            doc.configurations.push(cfg.clone());
            // Older configurations than the last two run no task once a deployment is over.
            let n = doc.configurations.len();
            doc.configurations.drain(..n.saturating_sub(2));
            doc.updated_at = cx.now;
            txn.ops.push(put(&d.key, &doc));
            let out = UpdatedExpressGatewayService {
                service_arn: Some(doc.service_arn.clone()),
                cluster: Some(doc.cluster.clone()),
                service_name: Some(doc.service_name.clone()),
                status: Some(express::status(Some(svc_rules::ACTIVE))),
                target_configuration: Some(express::shown_configuration(&doc, &cfg)),
                created_at: Some(doc.created_at),
                updated_at: Some(doc.updated_at),
            };
            Ok((txn, out))
        })
        .await?;
    Ok(json(&UpdateExpressGatewayServiceResponse { service: Some(out) }))
}

pub async fn delete(s: &Server, cx: &Ctx, req: DeleteExpressGatewayServiceRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    let (out, tg_arn) = s
        .transact::<_, EcsError>(|st| {
            let (d, svc_doc) = for_change(st, cx, &req.service_arn)?;
            let mut doc = d.value.clone();
            let r = doc.resources.clone();
            let mut txn = Txn::new();
            // The service drains: the scheduler stops its tasks, then it is INACTIVE.
            let mut svc = svc_doc.value.clone();
            svc_rules::delete(&mut svc, true, cx.now)?;
            txn = txn.when(Compare::mod_revision(&svc_doc.key, svc_doc.rev)).then(put(&svc_doc.key, &svc));

            // Its rule, and the shared load balancer when no other Express service is on it.
            let rule = elb::key_of_arn(&r.rule_arn).and_then(|k| st.doc::<RuleDoc>(elbv2::table(Table::Rules), &k));
            let lb = elb::key_of_arn(&r.load_balancer_arn)
                .and_then(|k| st.doc::<LoadBalancerDoc>(elbv2::table(Table::LoadBalancers), &k));
            let others = st
                .docs::<ExpressDoc>(TABLE, &express::scope_prefix(scope))
                .filter(|o| o.key != d.key && o.value.resources.load_balancer_arn == r.load_balancer_arn)
                .any(|o| {
                    st.services
                        .get(&keys::service(scope, &o.value.cluster, &o.value.service_name))
                        .is_some_and(|s| svc_rules::status(&s.value) == svc_rules::ACTIVE)
                });
            match (lb, others) {
                (Some(lb), false) => txn = elbv2::delete_load_balancer(st, scope, lb, txn),
                _ => {
                    if let Some(rule) = rule {
                        txn = txn.when(Compare::mod_revision(&rule.key, rule.rev)).then(Op::delete(rule.key.clone()));
                    }
                }
            }
            if let Some(tg) = elb::key_of_arn(&r.target_group_arn)
                .and_then(|k| st.doc::<TargetGroupDoc>(elbv2::table(Table::TargetGroups), &k))
            {
                txn = elbv2::delete_target_group(st, scope, tg, txn);
            }

            // The policy with its alarms, and the scalable target.
            let resource_id =
                EcsService { cluster: doc.cluster.clone(), service: doc.service_name.clone() }.resource_id();
            for p in st.docs::<PolicyDoc>(policies_table(), &scaling_docs::policies_prefix(scope, Some(&resource_id))) {
                delete_policy(scope, p, &mut txn);
            }
            let tkey = scaling_docs::target_key(scope, &resource_id);
            if let Some(t) = st.doc::<ScalableTargetDoc>(targets_table(), &tkey) {
                txn = txn.when(Compare::mod_revision(&tkey, t.rev)).then(Op::delete(tkey.clone()));
            }
            doc.updated_at = cx.now;
            txn = txn.when(Compare::mod_revision(&d.key, d.rev)).then(put(&d.key, &doc));
            let out = express::shown(
                &doc,
                Some(svc_rules::DRAINING),
                svc.current_service_deployment.clone(),
                &revisions(&svc),
                false,
            );
            Ok((txn, (out, r.target_group_arn)))
        })
        .await?;
    s.target_health.forget_group(&tg_arn);
    Ok(json(&DeleteExpressGatewayServiceResponse { service: Some(out) }))
}
