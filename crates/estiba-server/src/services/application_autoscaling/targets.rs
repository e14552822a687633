//! Scalable targets: RegisterScalableTarget, DescribeScalableTargets,
//! DeregisterScalableTarget, and the tags of targets (TagResource, UntagResource,
//! ListTagsForResource).

use std::collections::BTreeMap;

use bytes::Bytes;
use estiba_api::application_autoscaling::*;
use estiba_core::alarms::alarm_key;
use estiba_core::autoscaling::docs::{self, PolicyDoc, ScheduledDoc, TargetDoc};
use estiba_core::autoscaling::{self as rules, ScalingError};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{ecs_matches, find_target, limit, page, policies_table, scheduled_table, targets_table, Result};
use crate::services::{json, Call};
use crate::view::{Doc, State};
use crate::{scaling, Server};

/// Application Auto Scaling takes at most this many tags on a resource.
const MAX_TAGS: usize = 50;

pub(super) fn put<T: serde::Serialize>(key: impl Into<String>, v: &T) -> Op {
    Op::put(key, serde_json::to_vec(v).expect("documents serialize"))
}

fn check_tags(arn: &str, tags: &BTreeMap<String, String>) -> Result<(), ScalingError> {
    if tags.len() > MAX_TAGS {
        return Err(ScalingError {
            code: ErrorCode::TooManyTagsException,
            message: format!("Resource {arn} can have at most {MAX_TAGS} tags"),
        });
    }
    if let Some(k) = tags.keys().find(|k| k.starts_with("aws:")) {
        return Err(ScalingError::validation(format!("Tag keys starting with aws: are reserved ({k})")));
    }
    Ok(())
}

pub async fn register_scalable_target(s: &Server, cx: &Call, req: RegisterScalableTargetRequest) -> Result<Bytes> {
    let service = rules::ecs_service(req.service_namespace, req.scalable_dimension, &req.resource_id)?;
    let resource_id = service.resource_id();
    let new_arn = rules::scalable_target_arn(&cx.scope, &uuid::Uuid::new_v4().simple().to_string());
    let scope = &cx.scope;
    let arn = super::transact(s, |st| {
        if !scaling::service_active(st, scope, &service) {
            return Err(ScalingError::service_missing(&resource_id).into());
        }
        let key = docs::target_key(scope, &resource_id);
        let existing = st.doc::<TargetDoc>(targets_table(), &key);
        let bounds = rules::register_scalable_target(existing.map(|d| &d.value.bounds), &req)?;
        let mut txn = Txn::new();
        let mut doc = match existing {
            Some(d) => {
                txn.compares.push(Compare::mod_revision(&key, d.rev));
                TargetDoc { bounds, ..d.value.clone() }
            }
            None => {
                txn.compares.push(Compare::absent(&key));
                TargetDoc {
                    service: service.clone(),
                    arn: new_arn.clone(),
                    creation_time: cx.now,
                    bounds,
                    tags: BTreeMap::new(),
                }
            }
        };
        if let Some(tags) = &req.tags {
            doc.tags.extend(tags.clone());
            check_tags(&doc.arn, &doc.tags)?;
        }
        txn.ops.push(put(&key, &doc));
        scaling::enforce_bounds(st, scope, &doc, &bounds, cx.now, &mut txn);
        Ok((txn, doc.arn))
    })
    .await?;
    Ok(json(&RegisterScalableTargetResponse { scalable_target_arn: Some(arn) }))
}

fn shown(scope: &Scope, d: &TargetDoc) -> ScalableTarget {
    ScalableTarget {
        creation_time: d.creation_time,
        max_capacity: d.bounds.max_capacity,
        min_capacity: d.bounds.min_capacity,
        predicted_capacity: None,
        resource_id: d.service.resource_id(),
        role_arn: rules::service_linked_role_arn(scope),
        scalable_dimension: ScalableDimension::EcsServiceDesiredCount,
        scalable_target_arn: Some(d.arn.clone()),
        service_namespace: ServiceNamespace::Ecs,
        suspended_state: Some(d.bounds.suspended.to_wire()),
    }
}

pub async fn describe_scalable_targets(s: &Server, cx: &Call, req: DescribeScalableTargetsRequest) -> Result<Bytes> {
    let n = limit(req.max_results, 50, 50)?;
    if !ecs_matches(req.service_namespace, req.scalable_dimension) {
        return Ok(json(&DescribeScalableTargetsResponse { scalable_targets: Some(vec![]), next_token: None }));
    }
    let st = s.view.read();
    let wanted = st
        .docs::<TargetDoc>(targets_table(), &docs::kind_prefix(&cx.scope, docs::TARGETS))
        .filter(|d| req.resource_ids.as_ref().is_none_or(|ids| ids.contains(&d.value.service.resource_id())))
        .map(|d| d.value.clone());
    let p = page(wanted, |d| d.service.resource_id(), req.next_token.as_deref(), n, false)?;
    Ok(json(&DescribeScalableTargetsResponse {
        scalable_targets: Some(p.items.iter().map(|d| shown(&cx.scope, d)).collect()),
        next_token: p.next_token,
    }))
}

/// Adds to `txn` the deletion of a policy and of the alarms it owns.
pub(crate) fn delete_policy(scope: &Scope, d: &Doc<PolicyDoc>, txn: &mut Txn) {
    txn.compares.push(Compare::mod_revision(&d.key, d.rev));
    txn.ops.push(Op::delete(d.key.clone()));
    for a in d.value.policy.alarms.iter().flatten() {
        if rules::TrackingAlarm::of_name(&a.alarm_name).is_some() {
            txn.ops.push(Op::delete(alarm_key(scope, &a.alarm_name)));
        }
    }
}

pub async fn deregister_scalable_target(s: &Server, cx: &Call, req: DeregisterScalableTargetRequest) -> Result<Bytes> {
    let service = rules::ecs_service(req.service_namespace, req.scalable_dimension, &req.resource_id)?;
    let resource_id = service.resource_id();
    let scope = &cx.scope;
    // Up to 50 policies (with their alarms) and 200 scheduled actions need not fit one
    // transaction with the target: then the scheduled actions go first, then each policy's
    // alarms and the policy, in batches guarded by the target's revision (AWS deletes them
    // one by one too). A crash leaves the target with fewer of them; the retry finishes.
    s.trim_children(|st| {
        let t = find_target(st, scope, &resource_id).ok()?;
        let mut children: Vec<String> = st
            .docs::<ScheduledDoc>(scheduled_table(), &docs::scheduled_prefix(scope, Some(&resource_id)))
            .map(|a| a.key.clone())
            .collect();
        for p in st.docs::<PolicyDoc>(policies_table(), &docs::policies_prefix(scope, Some(&resource_id))) {
            let mut txn = Txn::new();
            delete_policy(scope, p, &mut txn);
            // The policy's own key last: its alarms go before it.
            children.extend(txn.ops.iter().skip(1).map(|o| o.key().to_owned()));
            children.push(p.key.clone());
        }
        Some((vec![Compare::mod_revision(&t.key, t.rev)], 1, children))
    })
    .await
    .map_err(|e| super::refused(super::Refused::Write(e)))?;
    super::transact(s, |st| {
        let t = find_target(st, scope, &resource_id)?;
        let mut txn = Txn::new().when(Compare::mod_revision(&t.key, t.rev)).then(Op::delete(t.key.clone()));
        for p in st.docs::<PolicyDoc>(policies_table(), &docs::policies_prefix(scope, Some(&resource_id))) {
            delete_policy(scope, p, &mut txn);
        }
        for a in st.docs::<ScheduledDoc>(scheduled_table(), &docs::scheduled_prefix(scope, Some(&resource_id))) {
            txn.compares.push(Compare::mod_revision(&a.key, a.rev));
            txn.ops.push(Op::delete(a.key.clone()));
        }
        Ok::<_, super::Refused>((txn, ()))
    })
    .await?;
    Ok(json(&DeregisterScalableTargetResponse {}))
}

/// The target a tagging call's ARN names.
fn tagged<'a>(st: &'a State, scope: &Scope, arn: &str) -> Result<&'a Doc<TargetDoc>, ScalingError> {
    if !arn.starts_with("arn:") {
        return Err(ScalingError::validation(format!("Invalid ResourceArn: {arn}")));
    }
    st.docs::<TargetDoc>(targets_table(), &docs::kind_prefix(scope, docs::TARGETS))
        .find(|d| d.value.arn == arn)
        .ok_or_else(|| ScalingError {
            code: ErrorCode::ResourceNotFoundException,
            message: format!("No scalable target found for ARN: {arn}"),
        })
}

async fn retag(
    s: &Server,
    cx: &Call,
    arn: &str,
    f: impl Fn(&mut BTreeMap<String, String>) -> Result<(), ScalingError>,
) -> Result<()> {
    super::transact(s, |st| {
        let d = tagged(st, &cx.scope, arn)?;
        let mut doc = d.value.clone();
        f(&mut doc.tags)?;
        Ok::<_, super::Refused>((
            Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put(d.key.clone(), &doc)),
            (),
        ))
    })
    .await
}

pub async fn tag_resource(s: &Server, cx: &Call, req: TagResourceRequest) -> Result<Bytes> {
    retag(s, cx, &req.resource_arn, |tags| {
        tags.extend(req.tags.clone());
        check_tags(&req.resource_arn, tags)
    })
    .await?;
    Ok(json(&TagResourceResponse {}))
}

pub async fn untag_resource(s: &Server, cx: &Call, req: UntagResourceRequest) -> Result<Bytes> {
    retag(s, cx, &req.resource_arn, |tags| {
        tags.retain(|k, _| !req.tag_keys.contains(k));
        Ok(())
    })
    .await?;
    Ok(json(&UntagResourceResponse {}))
}

pub async fn list_tags_for_resource(s: &Server, cx: &Call, req: ListTagsForResourceRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = tagged(&st, &cx.scope, &req.resource_arn)?;
    Ok(json(&ListTagsForResourceResponse { tags: Some(d.value.tags.clone()) }))
}
