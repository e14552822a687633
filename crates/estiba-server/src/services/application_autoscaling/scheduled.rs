//! Scheduled actions: PutScheduledAction, DescribeScheduledActions, DeleteScheduledAction.
//! The `scheduled-scaling` controller runs them.

use bytes::Bytes;
use estiba_api::application_autoscaling::*;
use estiba_core::autoscaling::docs::{self, ScheduledDoc, TargetDoc};
use estiba_core::autoscaling::{self as rules, ScalingError};
use estiba_store::{Compare, Op, Txn};

use super::targets::put;
use super::{ecs_matches, limit, page, scheduled_table, targets_table, Result};
use crate::services::{json, Call};
use crate::Server;

pub async fn put_scheduled_action(s: &Server, cx: &Call, req: PutScheduledActionRequest) -> Result<Bytes> {
    let service = rules::ecs_service(req.service_namespace, req.scalable_dimension, &req.resource_id)?;
    let resource_id = service.resource_id();
    let scope = &cx.scope;
    let uuid = uuid::Uuid::new_v4().to_string();
    super::transact(s, |st| {
        let target = st.doc::<TargetDoc>(targets_table(), &docs::target_key(scope, &resource_id));
        let key = docs::scheduled_key(scope, &resource_id, &req.scheduled_action_name);
        let existing = st.doc::<ScheduledDoc>(scheduled_table(), &key);
        // An update keeps what the request leaves out.
        let mut merged = req.clone();
        if let Some(e) = existing.map(|d| &d.value.action) {
            merged.schedule = merged.schedule.or_else(|| Some(e.schedule.clone()));
            merged.timezone = merged.timezone.or_else(|| e.timezone.clone());
            merged.start_time = merged.start_time.or(e.start_time);
            merged.end_time = merged.end_time.or(e.end_time);
            merged.scalable_target_action = merged.scalable_target_action.or_else(|| e.scalable_target_action.clone());
        }
        rules::validate_scheduled_action(&merged, target.map(|t| &t.value.bounds))?;
        let mut txn = Txn::new();
        match existing {
            Some(d) => txn.compares.push(Compare::mod_revision(&key, d.rev)),
            None => txn.compares.push(Compare::absent(&key)),
        }
        let action = ScheduledAction {
            creation_time: existing.map_or(cx.now, |d| d.value.action.creation_time),
            end_time: merged.end_time,
            resource_id: resource_id.clone(),
            scalable_dimension: Some(ScalableDimension::EcsServiceDesiredCount),
            scalable_target_action: merged.scalable_target_action.clone(),
            schedule: merged.schedule.clone().unwrap_or_default(),
            scheduled_action_arn: existing.map_or_else(
                || rules::scheduled_action_arn(scope, &uuid, &resource_id, &req.scheduled_action_name),
                |d| d.value.action.scheduled_action_arn.clone(),
            ),
            scheduled_action_name: req.scheduled_action_name.clone(),
            service_namespace: ServiceNamespace::Ecs,
            start_time: merged.start_time,
            timezone: merged.timezone.clone(),
        };
        // A changed action runs from now on: what was due before the change is past.
        let last_run = existing.map(|_| cx.now);
        txn.ops.push(put(&key, &ScheduledDoc { action, last_run }));
        Ok::<_, super::Refused>((txn, ()))
    })
    .await?;
    s.nudge();
    Ok(json(&PutScheduledActionResponse {}))
}

pub async fn describe_scheduled_actions(s: &Server, cx: &Call, req: DescribeScheduledActionsRequest) -> Result<Bytes> {
    let n = limit(req.max_results, 50, 50)?;
    if !ecs_matches(req.service_namespace, req.scalable_dimension) {
        return Ok(json(&DescribeScheduledActionsResponse { scheduled_actions: Some(vec![]), next_token: None }));
    }
    let st = s.view.read();
    let prefix = docs::scheduled_prefix(&cx.scope, req.resource_id.as_deref());
    let wanted = st
        .docs::<ScheduledDoc>(scheduled_table(), &prefix)
        .filter(|d| {
            req.scheduled_action_names
                .as_ref()
                .is_none_or(|names| names.contains(&d.value.action.scheduled_action_name))
        })
        .map(|d| (d.key.clone(), d.value.action.clone()));
    let p = page(wanted, |(k, _)| k.clone(), req.next_token.as_deref(), n, false)?;
    Ok(json(&DescribeScheduledActionsResponse {
        scheduled_actions: Some(p.items.into_iter().map(|(_, a)| a).collect()),
        next_token: p.next_token,
    }))
}

pub async fn delete_scheduled_action(s: &Server, cx: &Call, req: DeleteScheduledActionRequest) -> Result<Bytes> {
    let service = rules::ecs_service(req.service_namespace, req.scalable_dimension, &req.resource_id)?;
    let resource_id = service.resource_id();
    let scope = &cx.scope;
    super::transact(s, |st| {
        let key = docs::scheduled_key(scope, &resource_id, &req.scheduled_action_name);
        let d = st
            .doc::<ScheduledDoc>(scheduled_table(), &key)
            .ok_or_else(|| ScalingError::no_scheduled_action(&resource_id, &req.scheduled_action_name))?;
        let txn = Txn::new().when(Compare::mod_revision(&key, d.rev)).then(Op::delete(key.clone()));
        Ok::<_, super::Refused>((txn, ()))
    })
    .await?;
    Ok(json(&DeleteScheduledActionResponse {}))
}
