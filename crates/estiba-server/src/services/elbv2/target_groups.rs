//! CreateTargetGroup, DescribeTargetGroups, ModifyTargetGroup, DeleteTargetGroup,
//! Describe/ModifyTargetGroupAttributes.

use bytes::Bytes;
use estiba_api::elbv2::*;
use estiba_api::ApiError;
use estiba_core::elbv2::{self as elb, TargetDoc, TargetGroupDoc};
use estiba_core::elbv2_rules::{self as rules, ElbError, HealthCheckInput};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{
    changes, docs, guard, json, lb_doc, new_id, page, put, select, table, target_group_load_balancers, tg_doc, vpc,
    Result, Table,
};
use crate::services::Call;
use crate::view::State;
use crate::Server;

/// The health check settings of a CreateTargetGroup or ModifyTargetGroup input (same fields).
macro_rules! health_check {
    ($req:expr) => {
        HealthCheckInput {
            enabled: $req.health_check_enabled,
            interval: $req.health_check_interval_seconds,
            path: $req.health_check_path.clone(),
            port: $req.health_check_port.clone(),
            protocol: $req.health_check_protocol,
            timeout: $req.health_check_timeout_seconds,
            healthy: $req.healthy_threshold_count,
            unhealthy: $req.unhealthy_threshold_count,
            matcher: $req.matcher.clone(),
        }
    };
}

/// The group as the API shows it: with the load balancers that forward to it.
fn shown(st: &State, scope: &Scope, d: &TargetGroupDoc) -> TargetGroup {
    let mut tg = d.tg.clone();
    let arn = tg.target_group_arn.clone().unwrap_or_default();
    tg.load_balancer_arns = Some(target_group_load_balancers(st, scope, &arn));
    tg
}

/// A new target group's key and document from the fields `rules::new_target_group` made
/// (CreateTargetGroup's, and Express Mode's).
pub(crate) fn new_target_group(
    scope: &Scope,
    vpc_id: &str,
    name: &str,
    mut tg: TargetGroup,
    target_type: TargetTypeEnum,
    tags: Vec<Tag>,
) -> (String, TargetGroupDoc) {
    tg.target_group_arn = Some(elb::target_group_arn(scope, name, &new_id()));
    tg.target_group_name = Some(name.to_owned());
    tg.vpc_id = Some(vpc_id.to_owned());
    let attributes = rules::default_tg_attributes(tg.protocol, target_type);
    (elb::key(scope, elb::TARGET_GROUPS, name), TargetGroupDoc { tg, attributes, tags })
}

/// Adds to `txn` the deletion of a target group and its targets (the caller has checked that
/// no rule left standing forwards to it).
pub(crate) fn delete_target_group(st: &State, scope: &Scope, d: &crate::view::Doc<TargetGroupDoc>, txn: Txn) -> Txn {
    let name = d.value.tg.target_group_name.clone().unwrap_or_default();
    let mut txn = guard(txn, d).then(Op::delete(d.key.clone()));
    for t in docs::<TargetDoc>(st, scope, Table::Targets, &format!("{name}/")) {
        txn = txn.then(Op::delete(t.key.clone()));
    }
    txn
}

pub async fn create(s: &Server, cx: &Call, req: CreateTargetGroupInput) -> Result<Bytes> {
    rules::check_tg_name(&req.name)?;
    let target_type = req.target_type.unwrap_or(TargetTypeEnum::Instance);
    let hc = health_check!(req);
    let tg = rules::new_target_group(req.protocol, req.port, target_type, req.protocol_version.clone(), &hc)?;
    let scope = &cx.scope;
    let vpc = vpc(s, scope);
    match req.vpc_id.as_deref() {
        None => return Err(ElbError::Validation("A VPC ID must be specified".into()).into()),
        Some(id) if id != vpc.id => {
            return Err(ElbError::Validation(format!("The VPC ID '{id}' is not found")).into());
        }
        Some(_) => {}
    }
    let tags = rules::add_tags(&[], req.tags.as_deref().unwrap_or_default())?;
    let key = elb::key(scope, elb::TARGET_GROUPS, &req.name);
    let out = s
        .transact::<_, ApiError>(|st| {
            if let Some(d) = st.doc::<TargetGroupDoc>(table(Table::TargetGroups), &key) {
                // AWS answers a create repeated with the same settings with the group.
                let e = &d.value.tg;
                if (e.protocol, e.port, e.target_type) == (tg.protocol, tg.port, tg.target_type) {
                    return Ok((Txn::new(), shown(st, scope, &d.value)));
                }
                return Err(ElbError::Code(
                    ErrorCode::DuplicateTargetGroupNameException,
                    format!("A target group with the same name '{}' exists, but with different settings", req.name),
                )
                .into());
            }
            let (key, doc) = new_target_group(scope, &vpc.id, &req.name, tg.clone(), target_type, tags.clone());
            let txn = Txn::new().when(Compare::absent(&key)).then(put(&key, &doc));
            Ok((txn, shown(st, scope, &doc)))
        })
        .await?;
    Ok(json(&CreateTargetGroupOutput { target_groups: Some(vec![out]) }))
}

pub async fn describe(s: &Server, cx: &Call, req: DescribeTargetGroupsInput) -> Result<Bytes> {
    let st = s.view.read();
    let scope = &cx.scope;
    let mut all: Vec<_> = docs::<TargetGroupDoc>(&st, scope, Table::TargetGroups, "").collect();
    if let Some(lb) = &req.load_balancer_arn {
        lb_doc(&st, scope, lb)?;
        all.retain(|d| {
            let arn = d.value.tg.target_group_arn.as_deref().unwrap_or_default();
            target_group_load_balancers(&st, scope, arn).contains(lb)
        });
    }
    let chosen = select(
        all,
        req.names.as_deref(),
        req.target_group_arns.as_deref(),
        |d| d.tg.target_group_name.as_deref(),
        |d| d.tg.target_group_arn.as_deref(),
        "Target group",
        ElbError::tg_not_found,
    )?;
    let p = page(chosen, |d| d.key.clone(), req.marker.as_deref(), req.page_size)?;
    let groups = p.items.iter().map(|d| shown(&st, scope, &d.value)).collect();
    Ok(json(&DescribeTargetGroupsOutput { target_groups: Some(groups), next_marker: p.next_token }))
}

/// Read-modify-write of a target group's document.
async fn update<R>(
    s: &Server,
    cx: &Call,
    arn: &str,
    f: impl Fn(&State, &TargetGroupDoc) -> Result<(TargetGroupDoc, R), ApiError>,
) -> Result<R> {
    s.transact::<_, ApiError>(|st| {
        let d = tg_doc(st, &cx.scope, arn)?;
        let (new, r) = f(st, &d.value)?;
        Ok((guard(Txn::new(), d).then(put(&d.key, &new)), r))
    })
    .await
}

pub async fn modify(s: &Server, cx: &Call, req: ModifyTargetGroupInput) -> Result<Bytes> {
    let hc = health_check!(req);
    let tg = update(s, cx, &req.target_group_arn, |st, d| {
        let mut new = d.clone();
        new.tg = rules::modify_health_check(&d.tg, &hc)?;
        let out = shown(st, &cx.scope, &new);
        Ok((new, out))
    })
    .await?;
    Ok(json(&ModifyTargetGroupOutput { target_groups: Some(vec![tg]) }))
}

pub async fn delete(s: &Server, cx: &Call, req: DeleteTargetGroupInput) -> Result<Bytes> {
    let scope = &cx.scope;
    // A group no listener or rule uses carries no traffic: when its targets do not fit one
    // transaction with it, they go first in batches guarded by its revision (a crash leaves
    // it with fewer targets; the retry finishes).
    s.trim_children(|st| {
        let d = tg_doc(st, scope, &req.target_group_arn).ok()?;
        if !target_group_load_balancers(st, scope, &req.target_group_arn).is_empty() {
            return None;
        }
        let name = d.value.tg.target_group_name.clone().unwrap_or_default();
        let targets = docs::<TargetDoc>(st, scope, Table::Targets, &format!("{name}/")).map(|t| t.key.clone());
        Some((vec![Compare::mod_revision(&d.key, d.rev)], 1, targets.collect()))
    })
    .await?;
    s.transact::<_, ApiError>(|st| {
        let d = tg_doc(st, scope, &req.target_group_arn)?;
        if !target_group_load_balancers(st, scope, &req.target_group_arn).is_empty() {
            return Err(ElbError::Code(
                ErrorCode::ResourceInUseException,
                format!("Target group '{}' is currently in use by a listener or a rule", req.target_group_arn),
            )
            .into());
        }
        Ok((delete_target_group(st, scope, d, Txn::new()), ()))
    })
    .await?;
    s.target_health.forget_group(&req.target_group_arn);
    Ok(json(&DeleteTargetGroupOutput {}))
}

fn tg_attributes(d: &TargetGroupDoc) -> Vec<TargetGroupAttribute> {
    d.attributes.iter().map(|(k, v)| TargetGroupAttribute { key: Some(k.clone()), value: Some(v.clone()) }).collect()
}

pub async fn describe_attributes(s: &Server, cx: &Call, req: DescribeTargetGroupAttributesInput) -> Result<Bytes> {
    let st = s.view.read();
    let d = tg_doc(&st, &cx.scope, &req.target_group_arn)?;
    Ok(json(&DescribeTargetGroupAttributesOutput { attributes: Some(tg_attributes(&d.value)) }))
}

pub async fn modify_attributes(s: &Server, cx: &Call, req: ModifyTargetGroupAttributesInput) -> Result<Bytes> {
    let ch = changes(req.attributes.iter().map(|a| (&a.key, &a.value)));
    let attrs = update(s, cx, &req.target_group_arn, |_, d| {
        let mut new = d.clone();
        new.attributes = rules::modify_tg_attributes(d.tg.protocol, &d.attributes, &ch)?;
        let out = tg_attributes(&new);
        Ok((new, out))
    })
    .await?;
    Ok(json(&ModifyTargetGroupAttributesOutput { attributes: Some(attrs) }))
}
