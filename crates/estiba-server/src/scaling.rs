//! Application Auto Scaling's side of the server: what happens when an alarm invokes a
//! scaling policy, and the writes every scaling shares. The alarm controller (CloudWatch)
//! calls [`alarm_action`] for every action ARN of a scaling policy that its evaluation
//! invokes; the policy's arithmetic lives in `estiba_core::autoscaling`, and the new desired
//! count goes through the path UpdateService uses ([`set_desired_count`]), so deployments,
//! the scheduler and service events see it as any UpdateService.
//!
//! Cooldowns run in AWS time (`Server::metric_clock`): the policy's memory keeps AWS seconds,
//! so with `--metric-period 5s` a 300 s cooldown lasts 25 real seconds. Activities carry wall
//! time.
//!
//! May not: import a service module's handlers (what CloudWatch and Application Auto Scaling
//! share is in estiba-core); it reads the view tables the Application Auto Scaling module
//! registers.

use estiba_api::application_autoscaling::PolicyType;
use estiba_api::cloudwatch::StateValue;
use estiba_api::ecs::{LaunchType, UpdateServiceRequest};
use estiba_core::arn::TaskDefRef;
use estiba_core::autoscaling::docs::{self, ActivityLog, ActivityRecord, PolicyDoc, TargetDoc};
use estiba_core::autoscaling::{
    self as rules, Activity, Bounds, Decision, Direction, EcsService, Situation, TargetTracking, TrackingAlarm,
};
use estiba_core::service as svc_rules;
use estiba_core::task::Launch;
use estiba_core::{EcsError, Now, Scope};
use estiba_store::{Compare, Op, Txn};

use crate::services::application_autoscaling::{activities_table, policies_table, targets_table};
use crate::services::cloudwatch::alarms_table;
use crate::view::State;
use crate::{keys, RandomIds, Server, WriteError};

/// An alarm invoking a scaling policy.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmAction {
    pub scope: Scope,
    /// The action ARN: the scaling policy's ARN.
    pub policy_arn: String,
    pub alarm_name: String,
    pub alarm_arn: String,
    /// The state the alarm is in (actions of scaling policies are invoked on the transition
    /// to the state and again every period the alarm stays in it, as CloudWatch does for
    /// Auto Scaling).
    pub state: StateValue,
    /// The alarm's threshold and the newest datapoint's value it evaluated (step scaling picks
    /// its step from `value - threshold`; target tracking scales by `value / target`).
    pub threshold: f64,
    pub value: Option<f64>,
    /// When the alarm was evaluated, in AWS time (ms).
    pub at_ms: i64,
}

/// Why a scaling could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScalingRunError {
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn put<T: serde::Serialize>(key: impl Into<String>, v: &T) -> Op {
    Op::put(key, serde_json::to_vec(v).expect("documents serialize"))
}

/// The service's desired count, `None` when ECS has no such service.
pub(crate) fn desired_count(st: &State, scope: &Scope, service: &EcsService) -> Option<i32> {
    st.services.get(&keys::service(scope, &service.cluster, &service.service)).map(|d| d.value.desired_count)
}

/// Whether ECS has this service, ACTIVE.
pub(crate) fn service_active(st: &State, scope: &Scope, service: &EcsService) -> bool {
    st.services
        .get(&keys::service(scope, &service.cluster, &service.service))
        .is_some_and(|d| svc_rules::status(&d.value) == svc_rules::ACTIVE)
}

/// Adds to `txn` the setting of the service's desired count to `desired`, through the core
/// rule UpdateService applies (`estiba_core::service::update` with only `desiredCount`).
pub(crate) fn set_desired_count(
    st: &State,
    scope: &Scope,
    service: &EcsService,
    desired: i32,
    now: Now,
    txn: &mut Txn,
) -> Result<(), EcsError> {
    let key = keys::service(scope, &service.cluster, &service.service);
    let d = st.services.get(&key).ok_or_else(EcsError::service_not_found)?;
    let mut svc = d.value.clone();
    let td = svc
        .task_definition
        .as_deref()
        .and_then(TaskDefRef::parse)
        .and_then(|r| st.taskdefs.get(&keys::taskdef(scope, &r.family, r.revision.unwrap_or(0))))
        .ok_or_else(EcsError::task_definition_not_found)?;
    let launch_type =
        svc.launch_type.unwrap_or_else(
            || {
                if svc_rules::is_fargate(&svc) {
                    LaunchType::Fargate
                } else {
                    LaunchType::Ec2
                }
            },
        );
    let req = UpdateServiceRequest {
        service: service.service.clone(),
        cluster: Some(service.cluster.clone()),
        desired_count: Some(desired),
        ..Default::default()
    };
    let launch = Launch { launch_type, capacity_provider: None };
    let updated = svc_rules::update(scope, &service.cluster, &mut svc, &req, &td.value, launch, &mut RandomIds, now)?;
    if updated.deployment.is_some() {
        // A desired count alone never starts a deployment; should the rules ever say
        // otherwise, leave it to UpdateService rather than half-write one here.
        return Err(EcsError::server("changing the desired count would start a deployment"));
    }
    txn.compares.push(Compare::mod_revision(&key, d.rev));
    txn.ops.push(put(key, &svc));
    Ok(())
}

/// Adds to `txn` the recording of `activity` (started and ended at `now`) in the target's
/// activity log.
pub(crate) fn record_activity(
    st: &State,
    scope: &Scope,
    resource_id: &str,
    activity: Activity,
    now: Now,
    txn: &mut Txn,
) {
    record_activities(st, scope, resource_id, vec![activity], now, txn)
}

/// Like [`record_activity`] for several activities of one transaction, oldest first (one
/// write of the log: a transaction may not put one key twice from the same read).
pub(crate) fn record_activities(
    st: &State,
    scope: &Scope,
    resource_id: &str,
    activities: Vec<Activity>,
    now: Now,
    txn: &mut Txn,
) {
    let key = docs::activities_key(scope, resource_id);
    let current = st.doc::<ActivityLog>(activities_table(), &key);
    if let ([only], Some(d)) = (activities.as_slice(), current) {
        if d.value.is_fresh_repeat(only, now) {
            return;
        }
    }
    let mut log = match current {
        Some(d) => {
            txn.compares.push(Compare::mod_revision(&key, d.rev));
            d.value.clone()
        }
        None => {
            txn.compares.push(Compare::absent(&key));
            ActivityLog::new(resource_id)
        }
    };
    for activity in activities {
        let end = (activity.status_code != estiba_api::application_autoscaling::ScalingActivityStatusCode::InProgress)
            .then_some(now);
        log.push(ActivityRecord { id: uuid::Uuid::new_v4().to_string(), seq: 0, activity, start: now, end });
    }
    txn.ops.push(put(key, &log));
}

/// After a target's bounds changed to `bounds`: when the service's desired count falls
/// outside them, adds to `txn` its move into them and the activity that records it
/// (`cause_prefix`, if any, is said first, as scheduled actions do). Returns the new count.
pub(crate) fn enforce_bounds(
    st: &State,
    scope: &Scope,
    target: &TargetDoc,
    bounds: &Bounds,
    now: Now,
    txn: &mut Txn,
) -> Option<i32> {
    let current = desired_count(st, scope, &target.service)?;
    let (desired, activity) = rules::enforce_bounds(bounds, current)?;
    let resource_id = target.service.resource_id();
    let activity = match set_desired_count(st, scope, &target.service, desired, now, txn) {
        Ok(()) => activity,
        Err(e) => Activity::desired_count_failed(desired, activity.cause, &e.message),
    };
    record_activity(st, scope, &resource_id, activity, now, txn);
    Some(desired)
}

/// What running a policy came to.
#[derive(Debug, PartialEq)]
enum Ran {
    Nothing,
    Scaled(i32),
    NotScaled,
    Failed,
}

/// Runs the scaling policy an alarm invokes: finds the policy by its ARN, applies suspension
/// and cooldowns, computes the new capacity (target tracking from `value / target`, step
/// scaling from the step of `value - threshold`), clamps it to the target's bounds, sets the
/// service's desired count and records the activity, in one transaction with the policy's
/// memory.
pub async fn alarm_action(s: &Server, action: AlarmAction) {
    if action.state != StateValue::Alarm {
        return;
    }
    match run_policy(s, &action).await {
        Ok(Ran::Nothing) => {}
        Ok(ran) => tracing::info!(policy = %action.policy_arn, alarm = %action.alarm_name, ?ran, "scaling policy ran"),
        Err(e) => tracing::warn!(policy = %action.policy_arn, error = %e, "scaling policy"),
    }
}

/// The policy an action ARN names (AWS's alarms may append `:createdBy/<uuid>`).
fn find_policy<'a>(st: &'a State, scope: &Scope, arn: &str) -> Option<&'a crate::view::Doc<PolicyDoc>> {
    st.docs::<PolicyDoc>(policies_table(), &docs::policies_prefix(scope, None)).find(|d| {
        let p = &d.value.policy.policy_arn;
        arn == p || arn.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with(":createdBy/"))
    })
}

/// The AlarmLow alarms of the target's other target tracking policies that may scale in
/// (the policy `arn` excepted).
fn other_low_alarms(st: &State, scope: &Scope, arn: &str) -> Vec<String> {
    let Some(p) = find_policy(st, scope, arn) else { return Vec::new() };
    let prefix = docs::policies_prefix(scope, Some(&p.value.policy.resource_id));
    st.docs::<PolicyDoc>(policies_table(), &prefix)
        .map(|d| &d.value.policy)
        .filter(|o| o.policy_arn != p.value.policy.policy_arn && o.policy_type == PolicyType::TargetTrackingScaling)
        .filter(|o| {
            o.target_tracking_scaling_policy_configuration.as_ref().is_none_or(|c| c.disable_scale_in != Some(true))
        })
        .flat_map(|o| o.alarms.iter().flatten())
        .filter(|a| TrackingAlarm::of_name(&a.alarm_name) == Some(TrackingAlarm::AlarmLow))
        .map(|a| a.alarm_name.clone())
        .collect()
}

/// Whether every target tracking policy of the target is ready to scale in: ECS scales in
/// only when all of them (those with scale-in enabled) are, that is when each one's AlarmLow
/// is in ALARM (CloudWatch's documents, in the same view the scaling reads).
fn all_ready_to_scale_in(st: &State, action: &AlarmAction) -> bool {
    other_low_alarms(st, &action.scope, &action.policy_arn).iter().all(|name| {
        let key = estiba_core::alarms::alarm_key(&action.scope, name);
        st.doc::<estiba_core::alarms::AlarmDoc>(alarms_table(), &key)
            .is_some_and(|d| d.value.alarm.state_value == Some(StateValue::Alarm))
    })
}

async fn run_policy(s: &Server, action: &AlarmAction) -> Result<Ran, ScalingRunError> {
    let scope = &action.scope;
    let aws_now = action.at_ms as f64 / 1000.0;
    s.transact::<_, ScalingRunError>(|st| {
        let others_agree = TrackingAlarm::of_name(&action.alarm_name) != Some(TrackingAlarm::AlarmLow)
            || all_ready_to_scale_in(st, action);
        let wall_now = crate::now();
        let Some(p) = find_policy(st, scope, &action.policy_arn) else {
            return Ok((Txn::new(), Ran::Nothing));
        };
        let resource_id = p.value.policy.resource_id.clone();
        let tkey = docs::target_key(scope, &resource_id);
        let Some(t) = st.doc::<TargetDoc>(targets_table(), &tkey) else {
            return Ok((Txn::new(), Ran::Nothing));
        };
        let Some(current) = desired_count(st, scope, &t.value.service) else {
            return Ok((Txn::new(), Ran::Nothing));
        };
        // Without a datapoint (SetAlarmState), step scaling takes the value at the threshold
        // (the step bordering it); target tracking has nothing to scale by.
        let value = match (action.value, p.value.policy.policy_type) {
            (Some(v), _) => v,
            (None, PolicyType::StepScaling) => action.threshold,
            (None, _) => return Ok((Txn::new(), Ran::Nothing)),
        };
        let bounds = t.value.bounds;
        let memory = p.value.memory;
        let at = Situation { current, bounds: &bounds, memory: &memory, now: aws_now };
        let policy = &p.value.policy;
        let (decision, scale_out_cooldown) = match policy.policy_type {
            PolicyType::TargetTrackingScaling => {
                let (Some(cfg), Some(which)) = (
                    policy.target_tracking_scaling_policy_configuration.as_ref(),
                    TrackingAlarm::of_name(&action.alarm_name),
                ) else {
                    return Ok((Txn::new(), Ran::Nothing));
                };
                let tt = TargetTracking::from_config(cfg);
                (tt.decide(which, value, &at), tt.cooldowns)
            }
            PolicyType::StepScaling => {
                let Some(cfg) = policy.step_scaling_policy_configuration.as_ref() else {
                    return Ok((Txn::new(), Ran::Nothing));
                };
                let c = cfg.cooldown.unwrap_or(rules::DEFAULT_COOLDOWN);
                (
                    rules::step_scaling_decision(cfg, action.threshold, value, &at),
                    rules::Cooldowns { scale_out: c, scale_in: c },
                )
            }
            PolicyType::PredictiveScaling => return Ok((Txn::new(), Ran::Nothing)),
        };
        let cause = rules::alarm_cause(&action.alarm_name, &policy.policy_name);
        let mut txn = Txn::new().when(Compare::mod_revision(&p.key, p.rev)).when(Compare::mod_revision(&t.key, t.rev));
        let ran = match decision {
            Decision::Hold(_) => return Ok((Txn::new(), Ran::Nothing)),
            Decision::Scale { direction: Direction::In, .. }
                if policy.policy_type == PolicyType::TargetTrackingScaling && !others_agree =>
            {
                return Ok((Txn::new(), Ran::Nothing));
            }
            Decision::NotScaled(reason) => {
                record_activity(st, scope, &resource_id, Activity::not_scaled(cause, reason), wall_now, &mut txn);
                Ran::NotScaled
            }
            Decision::Scale { desired, direction } => {
                match set_desired_count(st, scope, &t.value.service, desired, wall_now, &mut txn) {
                    Ok(()) => {
                        let base = match direction {
                            Direction::Out => memory.scale_out_base(scale_out_cooldown, aws_now, current),
                            Direction::In => current,
                        };
                        let mut doc = p.value.clone();
                        doc.memory = memory.after(&decision, current, base, aws_now);
                        txn.ops.push(put(p.key.clone(), &doc));
                        let activity = Activity::desired_count_set(desired, cause);
                        record_activity(st, scope, &resource_id, activity, wall_now, &mut txn);
                        Ran::Scaled(desired)
                    }
                    Err(e) => {
                        let activity = Activity::desired_count_failed(desired, cause, &e.message);
                        record_activity(st, scope, &resource_id, activity, wall_now, &mut txn);
                        Ran::Failed
                    }
                }
            }
        };
        if txn.ops.is_empty() {
            // Nothing to record (a not-scaled activity repeated): no write at all.
            return Ok((Txn::new(), ran));
        }
        Ok((txn, ran))
    })
    .await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use estiba_api::schema::Protocol;
    use estiba_store::MemStore;
    use serde_json::{json, Value};

    use super::*;
    use crate::services::{by_signing_name, Call, Input, InputBody};

    fn put_doc<T: serde::Serialize>(key: String, v: &T) -> Op {
        put(key, v)
    }

    fn scope() -> Scope {
        Scope::new("123456789012", "us-east-1")
    }

    pub(crate) async fn call(s: &Server, svc: &str, op: &str, body: Value) -> Value {
        let service = by_signing_name(svc).expect("service");
        let model = service.model();
        let i = model.operations.iter().position(|o| o.name == op).expect("operation");
        let input = Input {
            body: InputBody::Json(Bytes::from(body.to_string())),
            protocol: Protocol::Json,
            style: model.path_style(),
        };
        let out = service
            .call(s, Call { scope: scope(), now: crate::now() }, i, input)
            .await
            .unwrap_or_else(|e| panic!("{op}: {} {}", e.code, e.message));
        if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).expect("json")
        }
    }

    pub(crate) async fn desired(s: &Server) -> i64 {
        let out = call(s, "ecs", "DescribeServices", json!({"cluster": "c", "services": ["web"]})).await;
        out["services"][0]["desiredCount"].as_i64().expect("desiredCount")
    }

    pub(crate) async fn activities(s: &Server, include_not_scaled: bool) -> Vec<Value> {
        let out = call(
            s,
            "application-autoscaling",
            "DescribeScalingActivities",
            json!({"ServiceNamespace": "ecs", "ResourceId": "service/c/web", "IncludeNotScaledActivities": include_not_scaled}),
        )
        .await;
        out["ScalingActivities"].as_array().expect("activities").clone()
    }

    fn fired(policy_arn: &str, alarm_name: &str, threshold: f64, value: f64, at_ms: i64) -> AlarmAction {
        AlarmAction {
            scope: scope(),
            policy_arn: policy_arn.to_string(),
            alarm_name: alarm_name.to_string(),
            alarm_arn: estiba_core::alarms::alarm_arn(&scope(), alarm_name),
            state: StateValue::Alarm,
            threshold,
            value: Some(value),
            at_ms,
        }
    }

    pub(crate) async fn server_with_service() -> Arc<Server> {
        let s = Server::new(crate::Config::default(), Arc::new(MemStore::new())).await.expect("server");
        call(&s, "ecs", "CreateCluster", json!({"clusterName": "c"})).await;
        call(
            &s,
            "ecs",
            "RegisterTaskDefinition",
            json!({"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256",
                   "memory": "512", "containerDefinitions": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
        call(
            &s,
            "ecs",
            "CreateService",
            json!({"cluster": "c", "serviceName": "web", "taskDefinition": "f", "desiredCount": 2,
                   "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}}),
        )
        .await;
        call(
            &s,
            "application-autoscaling",
            "RegisterScalableTarget",
            json!({"ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
                   "ResourceId": "service/c/web", "MinCapacity": 1, "MaxCapacity": 6}),
        )
        .await;
        s
    }

    #[tokio::test]
    async fn step_scaling_with_cooldown_bounds_and_suspension() {
        let s = server_with_service().await;
        let arn = call(
            &s,
            "application-autoscaling",
            "PutScalingPolicy",
            json!({"PolicyName": "out", "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
                   "ResourceId": "service/c/web", "PolicyType": "StepScaling",
                   "StepScalingPolicyConfiguration": {"AdjustmentType": "ChangeInCapacity", "Cooldown": 300,
                       "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 3}]}}),
        )
        .await["PolicyARN"]
            .as_str()
            .expect("arn")
            .to_string();
        let t0 = 1_000_000_000;
        alarm_action(&s, fired(&arn, "hi", 80.0, 90.0, t0)).await;
        assert_eq!(desired(&s).await, 5);
        let a = &activities(&s, false).await[0];
        assert_eq!(a["Description"], "Setting desired count to 5.");
        assert_eq!(a["Cause"], "monitor alarm hi in state ALARM triggered policy out");
        assert_eq!(a["StatusCode"], "Successful");
        // The alarm stays in ALARM: within the cooldown the scale-out counts from 2, so 5
        // again, and nothing moves.
        alarm_action(&s, fired(&arn, "hi", 80.0, 90.0, t0 + 60_000)).await;
        assert_eq!(desired(&s).await, 5);
        assert_eq!(activities(&s, true).await.len(), 1);
        // After the cooldown (AWS time): 8, clamped to the maximum 6.
        alarm_action(&s, fired(&arn, "hi", 80.0, 90.0, t0 + 301_000)).await;
        assert_eq!(desired(&s).await, 6);
        // At the maximum: a not-scaled activity, listed only on request.
        alarm_action(&s, fired(&arn, "hi", 80.0, 90.0, t0 + 700_000)).await;
        assert_eq!(desired(&s).await, 6);
        assert_eq!(activities(&s, false).await.len(), 2);
        let all = activities(&s, true).await;
        assert_eq!(all.len(), 3);
        assert_eq!(all[0]["NotScaledReasons"][0]["Code"], "AlreadyAtMaxCapacity", "{all:#?}");
        // Other states and unknown policies do nothing.
        let mut ok = fired(&arn, "hi", 80.0, 90.0, t0 + 2_000_000);
        ok.state = StateValue::Ok;
        alarm_action(&s, ok).await;
        alarm_action(&s, fired(&format!("{arn}x"), "hi", 80.0, 90.0, t0 + 2_000_000)).await;
        assert_eq!(activities(&s, true).await.len(), 3);
        // Scale-out suspended: the policy holds.
        call(
            &s,
            "application-autoscaling",
            "RegisterScalableTarget",
            json!({"ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
                   "ResourceId": "service/c/web", "MaxCapacity": 10,
                   "SuspendedState": {"DynamicScalingOutSuspended": true}}),
        )
        .await;
        alarm_action(&s, fired(&arn, "hi", 80.0, 90.0, t0 + 3_000_000)).await;
        assert_eq!(desired(&s).await, 6);
    }

    #[tokio::test]
    async fn target_tracking_scales_in_from_its_low_alarm() {
        let s = server_with_service().await;
        let out = call(
            &s,
            "application-autoscaling",
            "PutScalingPolicy",
            json!({"PolicyName": "cpu", "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
                   "ResourceId": "service/c/web", "PolicyType": "TargetTrackingScaling",
                   "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 50.0,
                       "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}}}),
        )
        .await;
        let arn = out["PolicyARN"].as_str().expect("arn");
        let names: Vec<&str> =
            out["Alarms"].as_array().expect("alarms").iter().map(|a| a["AlarmName"].as_str().unwrap()).collect();
        let high = names.iter().find(|n| n.contains("-AlarmHigh-")).expect("high");
        let low = names.iter().find(|n| n.contains("-AlarmLow-")).expect("low");
        // The alarms are stored where CloudWatch reads them.
        let key = estiba_core::alarms::alarm_key(&scope(), high);
        assert!(s.store.get(&key).await.expect("get").is_some());
        // AlarmHigh at 100 % with 2 tasks: ceil(2 × 100 / 50) = 4.
        let t0 = 2_000_000_000;
        alarm_action(&s, fired(arn, high, 50.0, 100.0, t0)).await;
        assert_eq!(desired(&s).await, 4);
        // AlarmLow during the scale-out cooldown (300 s by default): held.
        alarm_action(&s, fired(arn, low, 45.0, 10.0, t0 + 100_000)).await;
        assert_eq!(desired(&s).await, 4);
        // After it: ceil(4 × 10 / 50) = 1.
        alarm_action(&s, fired(arn, low, 45.0, 10.0, t0 + 400_000)).await;
        assert_eq!(desired(&s).await, 1);
        // Deleting the policy deletes its alarms.
        call(
            &s,
            "application-autoscaling",
            "DeleteScalingPolicy",
            json!({"PolicyName": "cpu", "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
                   "ResourceId": "service/c/web"}),
        )
        .await;
        assert!(s.store.get(&key).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn target_tracking_scales_in_only_when_every_policy_agrees() {
        let s = server_with_service().await;
        let put = |name: &'static str| {
            json!({"PolicyName": name, "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
                   "ResourceId": "service/c/web", "PolicyType": "TargetTrackingScaling",
                   "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 50.0,
                       "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}}})
        };
        let cpu = call(&s, "application-autoscaling", "PutScalingPolicy", put("cpu")).await;
        let other = call(&s, "application-autoscaling", "PutScalingPolicy", put("other")).await;
        let low = |out: &Value| {
            out["Alarms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["AlarmName"].as_str().unwrap().to_string())
                .find(|n| n.contains("-AlarmLow-"))
                .unwrap()
        };
        let (cpu_arn, cpu_low, other_low) = (cpu["PolicyARN"].as_str().unwrap(), low(&cpu), low(&other));
        // The other policy's AlarmLow is not in ALARM (INSUFFICIENT_DATA, as created): held.
        alarm_action(&s, fired(cpu_arn, &cpu_low, 45.0, 10.0, 3_000_000_000)).await;
        assert_eq!(desired(&s).await, 2);
        // Once it is, the scale-in goes ahead: ceil(2 × 10 / 50) = 1.
        let key = estiba_core::alarms::alarm_key(&scope(), &other_low);
        let mut doc: estiba_core::alarms::AlarmDoc =
            serde_json::from_slice(&s.store.get(&key).await.unwrap().unwrap().value).unwrap();
        doc.alarm.state_value = Some(StateValue::Alarm);
        assert!(s.commit(Txn::new().then(put_doc(key.clone(), &doc))).await.unwrap());
        alarm_action(&s, fired(cpu_arn, &cpu_low, 45.0, 10.0, 3_000_001_000)).await;
        assert_eq!(desired(&s).await, 1);
        // Updating the policy keeps its alarms and their state.
        let again = call(&s, "application-autoscaling", "PutScalingPolicy", put("other")).await;
        assert_eq!(low(&again), other_low);
        let doc: estiba_core::alarms::AlarmDoc =
            serde_json::from_slice(&s.store.get(&key).await.unwrap().unwrap().value).unwrap();
        assert_eq!(doc.alarm.state_value, Some(StateValue::Alarm));
    }
}
