//! Scaling policies: PutScalingPolicy (target tracking, with the two alarms it owns, and
//! step scaling), DescribeScalingPolicies, DeleteScalingPolicy.

use bytes::Bytes;
use estiba_api::application_autoscaling::*;
use estiba_core::alarms::{self, AlarmDoc};
use estiba_core::autoscaling::docs::{self, PolicyDoc};
use estiba_core::autoscaling::{self as rules, ScalingError, TrackedMetric, TrackingAlarm};
use estiba_store::{Compare, Op, Txn};

use super::targets::{delete_policy, put};
use super::{ecs_matches, find_target, limit, page, policies_table, Result};
use crate::services::cloudwatch::alarms_table;
use crate::services::{json, Call};
use crate::view::State;
use crate::Server;

/// What a policy type asks for, checked before any read.
enum Checked {
    TargetTracking(Box<(TargetTrackingScalingPolicyConfiguration, TrackedMetric)>),
    Step(StepScalingPolicyConfiguration),
}

fn check(req: &PutScalingPolicyRequest, service: &rules::EcsService) -> Result<Checked, ScalingError> {
    match req.policy_type.unwrap_or(PolicyType::StepScaling) {
        PolicyType::TargetTrackingScaling => {
            if req.step_scaling_policy_configuration.is_some() {
                return Err(ScalingError::validation(
                    "StepScalingPolicyConfiguration cannot be specified for a policy of type TargetTrackingScaling",
                ));
            }
            let cfg = req.target_tracking_scaling_policy_configuration.clone().ok_or_else(|| {
                ScalingError::validation(
                    "TargetTrackingScalingPolicyConfiguration is required for a policy of type TargetTrackingScaling",
                )
            })?;
            let metric = rules::target_tracking_metric(service, &cfg)?;
            Ok(Checked::TargetTracking(Box::new((cfg, metric))))
        }
        PolicyType::StepScaling => {
            if req.target_tracking_scaling_policy_configuration.is_some() {
                return Err(ScalingError::validation(
                    "TargetTrackingScalingPolicyConfiguration cannot be specified for a policy of type StepScaling",
                ));
            }
            let cfg = req.step_scaling_policy_configuration.clone().ok_or_else(|| {
                ScalingError::validation("StepScalingPolicyConfiguration is required for a policy of type StepScaling")
            })?;
            rules::validate_step_scaling(&cfg)?;
            Ok(Checked::Step(cfg))
        }
        PolicyType::PredictiveScaling => Err(ScalingError::validation(
            "PredictiveScaling policies are not supported by estiba for ecs:service:DesiredCount",
        )),
    }
}

/// One of the two alarms a target tracking policy owns, as CloudWatch stores it (new, in
/// state INSUFFICIENT_DATA): PutScalingPolicy's, and Express Mode's policy.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tracking_alarm(
    scope: &estiba_core::Scope,
    resource_id: &str,
    which: TrackingAlarm,
    uuid: &str,
    policy_arn: &str,
    metric: &TrackedMetric,
    target_value: f64,
    now: f64,
) -> Result<(estiba_api::cloudwatch::PutMetricAlarmInput, AlarmDoc), ScalingError> {
    let input = rules::target_tracking_alarm(resource_id, which, uuid, policy_arn, metric, target_value);
    let rule = alarms::validate_put_metric_alarm(&input)
        .map_err(|e| ScalingError::validation(format!("The alarm of this policy would be refused: {}", e.message)))?;
    let doc = AlarmDoc::new(scope, &input, rule, now);
    Ok((input, doc))
}

pub async fn put_scaling_policy(s: &Server, cx: &Call, req: PutScalingPolicyRequest) -> Result<Bytes> {
    let service = rules::ecs_service(req.service_namespace, req.scalable_dimension, &req.resource_id)?;
    let resource_id = service.resource_id();
    let checked = check(&req, &service)?;
    let scope = &cx.scope;
    let policy_uuid = uuid::Uuid::new_v4().to_string();
    let alarm_uuids = [uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string()];
    let out = super::transact(s, |st| {
        find_target(st, scope, &resource_id)?;
        let key = docs::policy_key(scope, &resource_id, &req.policy_name);
        let existing = st.doc::<PolicyDoc>(policies_table(), &key);
        let mut txn = Txn::new();
        match existing {
            Some(d) => txn.compares.push(Compare::mod_revision(&key, d.rev)),
            None => txn.compares.push(Compare::absent(&key)),
        }
        let arn = existing.map_or_else(
            || rules::policy_arn(scope, &policy_uuid, &resource_id, &req.policy_name),
            |d| d.value.policy.policy_arn.clone(),
        );
        let old_alarms: Vec<Alarm> = existing.and_then(|d| d.value.policy.alarms.clone()).unwrap_or_default();
        let mut alarms = Vec::new();
        let (policy_type, step, tt) = match &checked {
            Checked::TargetTracking(tt) => {
                let (cfg, metric) = &**tt;
                for (i, which) in [TrackingAlarm::AlarmHigh, TrackingAlarm::AlarmLow].into_iter().enumerate() {
                    // An update keeps the alarms' names (and so their uuids).
                    let uuid = old_alarms
                        .iter()
                        .find(|a| TrackingAlarm::of_name(&a.alarm_name) == Some(which))
                        .map(|a| a.alarm_name[a.alarm_name.len() - 36..].to_string())
                        .unwrap_or_else(|| alarm_uuids[i].clone());
                    let (input, mut doc) =
                        tracking_alarm(scope, &resource_id, which, &uuid, &arn, metric, cfg.target_value, cx.now)?;
                    let alarm_key = alarms::alarm_key(scope, &input.alarm_name);
                    // The alarm controller may change the alarm's state meanwhile: the write
                    // holds only if the alarm is as read.
                    let current = st.doc::<AlarmDoc>(alarms_table(), &alarm_key);
                    txn.compares.push(match current {
                        Some(d) => Compare::mod_revision(&alarm_key, d.rev),
                        None => Compare::absent(&alarm_key),
                    });
                    if let Some(o) = current.map(|d| &d.value.alarm) {
                        // An updated policy's alarms keep their state, as PutMetricAlarm's do.
                        doc.alarm.state_value = o.state_value;
                        doc.alarm.state_reason = o.state_reason.clone();
                        doc.alarm.state_reason_data = o.state_reason_data.clone();
                        doc.alarm.state_updated_timestamp = o.state_updated_timestamp;
                        doc.alarm.state_transitioned_timestamp = o.state_transitioned_timestamp;
                    }
                    txn.ops.push(put(alarm_key, &doc));
                    alarms.push(Alarm {
                        alarm_arn: alarms::alarm_arn(scope, &input.alarm_name),
                        alarm_name: input.alarm_name.clone(),
                    });
                }
                (PolicyType::TargetTrackingScaling, None, Some(cfg.clone()))
            }
            Checked::Step(cfg) => (PolicyType::StepScaling, Some(cfg.clone()), None),
        };
        for old in &old_alarms {
            let owned = TrackingAlarm::of_name(&old.alarm_name).is_some();
            if owned && !alarms.iter().any(|a| a.alarm_name == old.alarm_name) {
                txn.ops.push(Op::delete(alarms::alarm_key(scope, &old.alarm_name)));
            }
        }
        let policy = ScalingPolicy {
            alarms: Some(alarms.clone()),
            creation_time: existing.map_or(cx.now, |d| d.value.policy.creation_time),
            policy_arn: arn.clone(),
            policy_name: req.policy_name.clone(),
            policy_type,
            predictive_scaling_policy_configuration: None,
            resource_id: resource_id.clone(),
            scalable_dimension: ScalableDimension::EcsServiceDesiredCount,
            service_namespace: ServiceNamespace::Ecs,
            step_scaling_policy_configuration: step,
            target_tracking_scaling_policy_configuration: tt,
        };
        let memory = existing.map(|d| d.value.memory).unwrap_or_default();
        txn.ops.push(put(&key, &PolicyDoc { policy, memory }));
        let shown_alarms = (policy_type == PolicyType::TargetTrackingScaling).then_some(alarms);
        Ok::<_, super::Refused>((txn, PutScalingPolicyResponse { alarms: shown_alarms, policy_arn: arn }))
    })
    .await?;
    Ok(json(&out))
}

pub async fn describe_scaling_policies(s: &Server, cx: &Call, req: DescribeScalingPoliciesRequest) -> Result<Bytes> {
    let n = limit(req.max_results, 10, 10)?;
    if !ecs_matches(req.service_namespace, req.scalable_dimension) {
        return Ok(json(&DescribeScalingPoliciesResponse { scaling_policies: Some(vec![]), next_token: None }));
    }
    let st = s.view.read();
    let p = {
        let prefix = docs::policies_prefix(&cx.scope, req.resource_id.as_deref());
        let wanted = st
            .docs::<PolicyDoc>(policies_table(), &prefix)
            .filter(|d| req.policy_names.as_ref().is_none_or(|names| names.contains(&d.value.policy.policy_name)))
            .map(|d| (d.key.clone(), d.value.policy.clone()));
        page(wanted, |(k, _)| k.clone(), req.next_token.as_deref(), n, false)?
    };
    let mut policies: Vec<ScalingPolicy> = p.items.into_iter().map(|(_, p)| p).collect();
    if policies.iter().any(|p| p.policy_type == PolicyType::StepScaling) {
        let alarms = step_alarms(&st, &cx.scope);
        for p in policies.iter_mut().filter(|p| p.policy_type == PolicyType::StepScaling) {
            p.alarms = Some(
                alarms.iter().filter(|(_, actions)| actions.contains(&p.policy_arn)).map(|(a, _)| a.clone()).collect(),
            );
        }
    }
    Ok(json(&DescribeScalingPoliciesResponse { scaling_policies: Some(policies), next_token: p.next_token }))
}

/// The scope's alarms and their ALARM actions (CloudWatch's documents, read in the view): a
/// step scaling policy's `Alarms` are the alarms that invoke it.
fn step_alarms(st: &State, scope: &estiba_core::Scope) -> Vec<(Alarm, Vec<String>)> {
    st.docs::<AlarmDoc>(alarms_table(), &alarms::alarms_prefix(scope))
        .filter_map(|d| {
            let name = d.value.alarm.alarm_name.clone()?;
            let arn = d.value.alarm.alarm_arn.clone().unwrap_or_else(|| alarms::alarm_arn(scope, &name));
            Some((Alarm { alarm_arn: arn, alarm_name: name }, d.value.alarm.alarm_actions.clone().unwrap_or_default()))
        })
        .collect()
}

pub async fn delete_scaling_policy(s: &Server, cx: &Call, req: DeleteScalingPolicyRequest) -> Result<Bytes> {
    let service = rules::ecs_service(req.service_namespace, req.scalable_dimension, &req.resource_id)?;
    let resource_id = service.resource_id();
    let scope = &cx.scope;
    super::transact(s, |st| {
        let key = docs::policy_key(scope, &resource_id, &req.policy_name);
        let d = st
            .doc::<PolicyDoc>(policies_table(), &key)
            .ok_or_else(|| ScalingError::no_policy(&resource_id, &req.policy_name))?;
        let mut txn = Txn::new();
        delete_policy(scope, d, &mut txn);
        Ok::<_, super::Refused>((txn, ()))
    })
    .await?;
    Ok(json(&DeleteScalingPolicyResponse {}))
}
