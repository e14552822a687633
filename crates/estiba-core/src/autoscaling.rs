//! Application Auto Scaling for ECS services (`ecs:service:DesiredCount`): scalable targets,
//! target tracking (the alarms it owns and its capacity arithmetic), step scaling, cooldowns,
//! suspension, scheduled actions ([`schedule`]) and the texts of scaling activities.
//!
//! Follows the Application Auto Scaling User Guide: "Target tracking scaling policies" (and
//! "Define cooldown periods"), "Step scaling policies" (step adjustments, "Scaling adjustment
//! types", the PercentChangeInCapacity rounding rules, MinAdjustmentMagnitude), "Scheduled
//! scaling", "Suspend and resume scaling", "Scaling activities" (status codes, not-scaled
//! reason codes); the API Reference (`RegisterScalableTarget`, `PutScalingPolicy`,
//! `PutScheduledAction`, `StepAdjustment`, `ScalingActivity`); and the Amazon ECS Developer
//! Guide, "Automatically scale your Amazon ECS service". The alarms target tracking creates
//! are shaped as AWS's are seen in DescribeAlarms for ECS services (AlarmHigh: 3 of 3
//! one-minute datapoints above the target; AlarmLow: 15 one-minute datapoints below 90 % of
//! it). The ValidationException messages about step bounds left unspecified and the 20-step
//! limit are the ones AWS answers (seen from EC2 Auto Scaling and CloudFormation); the other
//! messages here are estiba's wording where AWS's could not be confirmed.
//!
//! Nothing here reads a clock: times come in as [`Now`]; alarm uuids and ARNs' ids come from
//! the caller.

pub mod docs;
pub mod schedule;

use estiba_api::application_autoscaling::{
    AdjustmentType, CustomizedMetricSpecification, ErrorCode, MetricAggregationType, MetricType, NotScaledReason,
    PutScheduledActionRequest, RegisterScalableTargetRequest, ScalableDimension, ScalingActivity,
    ScalingActivityStatusCode, ServiceNamespace, StepAdjustment, StepScalingPolicyConfiguration,
    TargetTrackingScalingPolicyConfiguration,
};
use estiba_api::cloudwatch::{self as cw, ComparisonOperator, PutMetricAlarmInput, StandardUnit, Statistic};
use estiba_api::ApiError;
use serde::{Deserialize, Serialize};

pub use schedule::{Schedule, ScheduleError, Zone};

use crate::{Now, Scope};

// ---------------------------------------------------------------------------------------
// Errors

/// A refused Application Auto Scaling request: the model's error code and AWS's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalingError {
    pub code: ErrorCode,
    pub message: String,
}

impl ScalingError {
    pub fn validation(message: impl Into<String>) -> Self {
        ScalingError { code: ErrorCode::ValidationException, message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ScalingError { code: ErrorCode::ObjectNotFoundException, message: message.into() }
    }

    /// `ObjectNotFoundException`: no target is registered for `resource_id`.
    pub fn no_target(resource_id: &str) -> Self {
        Self::not_found(format!(
            "No scalable target registered for service namespace: ecs, resource ID: {resource_id}, scalable dimension: ecs:service:DesiredCount"
        ))
    }

    /// `ObjectNotFoundException`: DeleteScalingPolicy of a policy that does not exist.
    pub fn no_policy(resource_id: &str, policy_name: &str) -> Self {
        Self::not_found(format!(
            "No scaling policy found for service namespace: ecs, resource ID: {resource_id}, scalable dimension: ecs:service:DesiredCount, policy name: {policy_name}"
        ))
    }

    /// `ObjectNotFoundException`: DeleteScheduledAction of an action that does not exist.
    pub fn no_scheduled_action(resource_id: &str, name: &str) -> Self {
        Self::not_found(format!(
            "No scheduled action found for service namespace: ecs, resource ID: {resource_id}, scalable dimension: ecs:service:DesiredCount, scheduled action name: {name}"
        ))
    }

    /// `ValidationException`: RegisterScalableTarget of a service ECS does not have (or not
    /// ACTIVE).
    pub fn service_missing(resource_id: &str) -> Self {
        Self::validation(format!("ECS service doesn't exist: {resource_id}"))
    }
}

impl std::fmt::Display for ScalingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for ScalingError {}

impl From<ScalingError> for ApiError {
    fn from(e: ScalingError) -> Self {
        ApiError::new(e.code, e.message)
    }
}

impl From<ScheduleError> for ScalingError {
    fn from(e: ScheduleError) -> Self {
        ScalingError::validation(e.0)
    }
}

// ---------------------------------------------------------------------------------------
// Resources and ARNs

/// An ECS service as Application Auto Scaling names it: `service/<cluster>/<service>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsService {
    pub cluster: String,
    pub service: String,
}

impl EcsService {
    /// The `ResourceId`: `service/<cluster>/<service>`.
    pub fn resource_id(&self) -> String {
        format!("service/{}/{}", self.cluster, self.service)
    }
}

/// Checks the namespace, dimension and resource id of a request: only ECS services' desired
/// count is scalable here.
pub fn ecs_service(
    namespace: ServiceNamespace,
    dimension: ScalableDimension,
    resource_id: &str,
) -> Result<EcsService, ScalingError> {
    if namespace != ServiceNamespace::Ecs || dimension != ScalableDimension::EcsServiceDesiredCount {
        return Err(ScalingError::validation(format!(
            "Unsupported service namespace, resource type or scalable dimension: {} {}; estiba scales ecs:service:DesiredCount only",
            namespace.as_str(),
            dimension.as_str()
        )));
    }
    let parts: Vec<&str> = resource_id.split('/').collect();
    match parts[..] {
        ["service", cluster, service] if !cluster.is_empty() && !service.is_empty() => {
            Ok(EcsService { cluster: cluster.to_string(), service: service.to_string() })
        }
        _ => Err(ScalingError::validation(format!(
            "Unsupported resource ID {resource_id}: an ECS service's resource ID is service/<cluster-name>/<service-name>"
        ))),
    }
}

/// `arn:aws:autoscaling:<region>:<account>:scalingPolicy:<uuid>:resource/ecs/<resourceId>:policyName/<name>`.
pub fn policy_arn(scope: &Scope, uuid: &str, resource_id: &str, policy_name: &str) -> String {
    format!(
        "arn:aws:autoscaling:{}:{}:scalingPolicy:{uuid}:resource/ecs/{resource_id}:policyName/{policy_name}",
        scope.region, scope.account
    )
}

/// `arn:aws:autoscaling:<region>:<account>:scheduledAction:<uuid>:resource/ecs/<resourceId>:scheduledActionName/<name>`.
pub fn scheduled_action_arn(scope: &Scope, uuid: &str, resource_id: &str, name: &str) -> String {
    format!(
        "arn:aws:autoscaling:{}:{}:scheduledAction:{uuid}:resource/ecs/{resource_id}:scheduledActionName/{name}",
        scope.region, scope.account
    )
}

/// `arn:aws:application-autoscaling:<region>:<account>:scalable-target/<id>`, `id` being
/// 32 hexadecimal characters.
pub fn scalable_target_arn(scope: &Scope, id: &str) -> String {
    format!("arn:aws:application-autoscaling:{}:{}:scalable-target/{id}", scope.region, scope.account)
}

/// The service-linked role ECS scalable targets run as.
pub fn service_linked_role_arn(scope: &Scope) -> String {
    format!(
        "arn:aws:iam::{}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService",
        scope.account
    )
}

// ---------------------------------------------------------------------------------------
// Scalable targets

/// Which kinds of scaling are suspended on a target (`SuspendedState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspended {
    /// Target tracking and step policies do not scale in.
    pub dynamic_scaling_in: bool,
    /// Target tracking and step policies do not scale out.
    pub dynamic_scaling_out: bool,
    /// Scheduled actions do not run.
    pub scheduled_scaling: bool,
}

impl Suspended {
    pub fn to_wire(self) -> estiba_api::application_autoscaling::SuspendedState {
        estiba_api::application_autoscaling::SuspendedState {
            dynamic_scaling_in_suspended: Some(self.dynamic_scaling_in),
            dynamic_scaling_out_suspended: Some(self.dynamic_scaling_out),
            scheduled_scaling_suspended: Some(self.scheduled_scaling),
        }
    }
}

/// A scalable target's bounds and suspension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounds {
    pub min_capacity: i32,
    pub max_capacity: i32,
    #[serde(default)]
    pub suspended: Suspended,
}

impl Bounds {
    /// A capacity brought within `[min, max]`.
    pub fn clamp(&self, capacity: i32) -> i32 {
        capacity.clamp(self.min_capacity, self.max_capacity.max(self.min_capacity))
    }
}

fn check_min_max(min: i32, max: i32) -> Result<(), ScalingError> {
    if min < 0 || max < 0 {
        return Err(ScalingError::validation("Minimum and maximum capacity must be non-negative"));
    }
    if min > max {
        return Err(ScalingError::validation(format!(
            "Minimum capacity ({min}) cannot be greater than maximum capacity ({max})"
        )));
    }
    Ok(())
}

/// RegisterScalableTarget: a new target needs MinCapacity and MaxCapacity; an update keeps
/// what it does not name (bounds and each SuspendedState flag).
pub fn register_scalable_target(
    existing: Option<&Bounds>,
    request: &RegisterScalableTargetRequest,
) -> Result<Bounds, ScalingError> {
    ecs_service(request.service_namespace, request.scalable_dimension, &request.resource_id)?;
    let (min, max) = match existing {
        None => match (request.min_capacity, request.max_capacity) {
            (Some(min), Some(max)) => (min, max),
            _ => {
                return Err(ScalingError::validation(
                    "MinCapacity and MaxCapacity are required for registering a new scalable target",
                ));
            }
        },
        Some(b) => (request.min_capacity.unwrap_or(b.min_capacity), request.max_capacity.unwrap_or(b.max_capacity)),
    };
    check_min_max(min, max)?;
    let mut suspended = existing.map(|b| b.suspended).unwrap_or_default();
    if let Some(s) = &request.suspended_state {
        if let Some(v) = s.dynamic_scaling_in_suspended {
            suspended.dynamic_scaling_in = v;
        }
        if let Some(v) = s.dynamic_scaling_out_suspended {
            suspended.dynamic_scaling_out = v;
        }
        if let Some(v) = s.scheduled_scaling_suspended {
            suspended.scheduled_scaling = v;
        }
    }
    Ok(Bounds { min_capacity: min, max_capacity: max, suspended })
}

/// When new bounds leave the current desired count outside them, Application Auto Scaling
/// moves it in and records an activity whose cause names the bound: the new desired count and
/// the activity, or `None` when the count is within the bounds.
pub fn enforce_bounds(new: &Bounds, desired: i32) -> Option<(i32, Activity)> {
    let wanted = new.clamp(desired);
    if wanted == desired {
        return None;
    }
    let cause = if desired > new.max_capacity {
        format!("maximum capacity was set to {}", new.max_capacity)
    } else {
        format!("minimum capacity was set to {}", new.min_capacity)
    };
    Some((wanted, Activity::desired_count_set(wanted, cause)))
}

// ---------------------------------------------------------------------------------------
// Activities

/// What DescribeScalingActivities shows of one activity, before ids and times are added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub description: String,
    pub cause: String,
    pub status_code: ScalingActivityStatusCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_scaled_reasons: Vec<NotScaled>,
}

/// `monitor alarm <alarm> in state ALARM triggered policy <policy>`.
pub fn alarm_cause(alarm_name: &str, policy_name: &str) -> String {
    format!("monitor alarm {alarm_name} in state ALARM triggered policy {policy_name}")
}

impl Activity {
    /// `Setting desired count to 4.`, successful once ECS took the new count:
    /// `Successfully set desired count to 4. Change successfully fulfilled by ecs.`
    pub fn desired_count_set(desired: i32, cause: impl Into<String>) -> Activity {
        Activity {
            description: format!("Setting desired count to {desired}."),
            cause: cause.into(),
            status_code: ScalingActivityStatusCode::Successful,
            status_message: Some(format!(
                "Successfully set desired count to {desired}. Change successfully fulfilled by ecs."
            )),
            not_scaled_reasons: Vec::new(),
        }
    }

    /// The same activity while ECS has not answered yet (`InProgress`).
    pub fn desired_count_in_progress(desired: i32, cause: impl Into<String>) -> Activity {
        Activity {
            status_code: ScalingActivityStatusCode::InProgress,
            status_message: None,
            ..Self::desired_count_set(desired, cause)
        }
    }

    /// A setting of the desired count that ECS refused (the service is gone, say).
    pub fn desired_count_failed(desired: i32, cause: impl Into<String>, why: &str) -> Activity {
        Activity {
            status_code: ScalingActivityStatusCode::Failed,
            status_message: Some(format!("Failed to set desired count to {desired}. Reason: {why}")),
            ..Self::desired_count_set(desired, cause)
        }
    }

    /// A decision not to scale (listed with `IncludeNotScaledActivities`):
    /// `Attempting to scale due to alarm triggered`, status `Failed`, with the reason.
    pub fn not_scaled(cause: impl Into<String>, reason: NotScaled) -> Activity {
        Activity {
            description: "Attempting to scale due to alarm triggered".into(),
            cause: cause.into(),
            status_code: ScalingActivityStatusCode::Failed,
            status_message: None,
            not_scaled_reasons: vec![reason],
        }
    }

    /// A scheduled action that set the bounds: `Setting min capacity to 5 and max capacity to
    /// 10`, cause `scheduled action name <name> was triggered`.
    pub fn scheduled(action_name: &str, min: i32, max: i32) -> Activity {
        let what = format!("min capacity to {min} and max capacity to {max}");
        Activity {
            description: format!("Setting {what}"),
            cause: format!("scheduled action name {action_name} was triggered"),
            status_code: ScalingActivityStatusCode::Successful,
            status_message: Some(format!("Successfully set {what}")),
            not_scaled_reasons: Vec::new(),
        }
    }

    /// The wire shape, with the ids and times the caller keeps.
    pub fn to_wire(&self, activity_id: &str, resource_id: &str, start: Now, end: Option<Now>) -> ScalingActivity {
        ScalingActivity {
            activity_id: activity_id.to_string(),
            cause: self.cause.clone(),
            description: self.description.clone(),
            details: None,
            end_time: end,
            not_scaled_reasons: (!self.not_scaled_reasons.is_empty())
                .then(|| self.not_scaled_reasons.iter().map(|r| r.to_wire()).collect()),
            resource_id: resource_id.to_string(),
            scalable_dimension: ScalableDimension::EcsServiceDesiredCount,
            service_namespace: ServiceNamespace::Ecs,
            start_time: start,
            status_code: self.status_code,
            status_message: self.status_message.clone(),
        }
    }
}

/// Why a policy did not scale: AWS's not-scaled reason codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "code")]
pub enum NotScaled {
    /// Scaling out is blocked by MaxCapacity.
    AlreadyAtMaxCapacity { max_capacity: i32 },
    /// Scaling in is blocked by MinCapacity.
    AlreadyAtMinCapacity { min_capacity: i32 },
    /// The computed capacity equals the current one.
    AlreadyAtDesiredCapacity { current_capacity: i32 },
}

impl NotScaled {
    pub fn to_wire(self) -> NotScaledReason {
        let mut r = NotScaledReason::default();
        match self {
            NotScaled::AlreadyAtMaxCapacity { max_capacity } => {
                r.code = "AlreadyAtMaxCapacity".into();
                r.max_capacity = Some(max_capacity);
            }
            NotScaled::AlreadyAtMinCapacity { min_capacity } => {
                r.code = "AlreadyAtMinCapacity".into();
                r.min_capacity = Some(min_capacity);
            }
            NotScaled::AlreadyAtDesiredCapacity { current_capacity } => {
                r.code = "AlreadyAtDesiredCapacity".into();
                r.current_capacity = Some(current_capacity);
            }
        }
        r
    }
}

// ---------------------------------------------------------------------------------------
// Decisions and cooldowns

/// Which way a policy wants to move the desired count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    Out,
    In,
}

/// What a policy does when its alarm is in ALARM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "decision", content = "detail")]
pub enum Decision {
    /// Set the desired count (record [`Activity::desired_count_set`]).
    Scale { desired: i32, direction: Direction },
    /// Do not scale, and say why (a not-scaled activity).
    NotScaled(NotScaled),
    /// Do nothing and record nothing.
    Hold(Hold),
}

/// Why a policy stays quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Hold {
    /// A cooldown is in effect.
    Cooldown,
    /// SuspendedState suspends this direction.
    Suspended,
    /// The target tracking policy has DisableScaleIn.
    ScaleInDisabled,
    /// The metric gives nothing to act on (no step matches, no value).
    NoAction,
}

/// The default cooldowns for ECS services, in seconds.
pub const DEFAULT_COOLDOWN: i32 = 300;

/// What a policy remembers between decisions, to apply its cooldowns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMemory {
    /// The last scale-out: when, and the capacity before it (the base further scale-outs in
    /// its cooldown count from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_out: Option<ScaleOut>,
    /// When the last scale-in happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_in: Option<Now>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleOut {
    pub at: Now,
    /// The capacity before the scale-out that started the cooldown.
    pub from: i32,
}

/// Cooldown lengths in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cooldowns {
    pub scale_out: i32,
    pub scale_in: i32,
}

impl PolicyMemory {
    /// The scale-out whose cooldown is still running at `now`, if any.
    fn in_scale_out_cooldown(&self, cooldowns: Cooldowns, now: Now) -> Option<ScaleOut> {
        self.last_scale_out.filter(|s| now < s.at + f64::from(cooldowns.scale_out))
    }

    /// The capacity a scale-out is computed from: during a scale-out cooldown, the capacity
    /// before the scale-out that started it ("the capacity added by the initiating scale-out
    /// is calculated as part of the desired capacity for the next scale-out"); else `current`.
    pub fn scale_out_base(&self, cooldowns: Cooldowns, now: Now, current: i32) -> i32 {
        self.in_scale_out_cooldown(cooldowns, now).map_or(current, |s| s.from)
    }

    /// The memory after `decision`, taken at `now` from capacity `current` with base `base`.
    pub fn after(&self, decision: &Decision, current: i32, base: i32, now: Now) -> PolicyMemory {
        match decision {
            Decision::Scale { direction: Direction::Out, .. } => PolicyMemory {
                // A scale-out ends a scale-in cooldown.
                last_scale_in: None,
                last_scale_out: Some(ScaleOut { at: now, from: base.min(current) }),
            },
            Decision::Scale { direction: Direction::In, .. } => PolicyMemory { last_scale_in: Some(now), ..*self },
            _ => *self,
        }
    }
}

/// Where a scalable target stands when a policy decides: its desired count, bounds, the
/// policy's memory and the time.
#[derive(Clone, Copy, Debug)]
pub struct Situation<'a> {
    pub current: i32,
    pub bounds: &'a Bounds,
    pub memory: &'a PolicyMemory,
    pub now: Now,
}

/// The rules every dynamic policy shares: suspension, cooldowns, the bounds and the
/// not-scaled reasons. `wanted` is the capacity the policy computed.
pub fn settle(direction: Direction, wanted: i32, at: &Situation, cooldowns: Cooldowns) -> Decision {
    let Situation { current, bounds, memory, now } = *at;
    match direction {
        Direction::Out if bounds.suspended.dynamic_scaling_out => return Decision::Hold(Hold::Suspended),
        Direction::In if bounds.suspended.dynamic_scaling_in => return Decision::Hold(Hold::Suspended),
        _ => {}
    }
    let in_out_cooldown = memory.in_scale_out_cooldown(cooldowns, now).is_some();
    match direction {
        Direction::In => {
            let in_in_cooldown = memory.last_scale_in.is_some_and(|t| now < t + f64::from(cooldowns.scale_in));
            if in_out_cooldown || in_in_cooldown {
                return Decision::Hold(Hold::Cooldown);
            }
        }
        Direction::Out => {
            // In a scale-out cooldown, only a larger scale-out goes ahead.
            if in_out_cooldown && wanted <= current {
                return Decision::Hold(Hold::Cooldown);
            }
        }
    }
    let desired = bounds.clamp(wanted);
    let moves = match direction {
        Direction::Out => desired > current,
        Direction::In => desired < current,
    };
    if moves {
        return Decision::Scale { desired, direction };
    }
    Decision::NotScaled(match direction {
        Direction::Out if current >= bounds.max_capacity => {
            NotScaled::AlreadyAtMaxCapacity { max_capacity: bounds.max_capacity }
        }
        Direction::In if current <= bounds.min_capacity => {
            NotScaled::AlreadyAtMinCapacity { min_capacity: bounds.min_capacity }
        }
        _ => NotScaled::AlreadyAtDesiredCapacity { current_capacity: current },
    })
}

// ---------------------------------------------------------------------------------------
// Target tracking

/// AlarmHigh: this many one-minute datapoints above the target scale out.
pub const ALARM_HIGH_DATAPOINTS: i32 = 3;
/// AlarmLow: this many one-minute datapoints below [`SCALE_IN_RATIO`] × target scale in.
pub const ALARM_LOW_DATAPOINTS: i32 = 15;
/// AlarmLow's threshold, as a fraction of the target value (ECS).
pub const SCALE_IN_RATIO: f64 = 0.9;
/// The period of target tracking alarms, seconds.
pub const TARGET_TRACKING_PERIOD: i32 = 60;

/// The metric a target tracking policy follows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "kind")]
pub enum TrackedMetric {
    /// One metric and a statistic.
    Single {
        namespace: String,
        metric_name: String,
        /// (name, value) pairs, in the order the alarm lists them.
        dimensions: Vec<(String, String)>,
        statistic: Statistic,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<StandardUnit>,
    },
    /// Metric math (`CustomizedMetricSpecification.Metrics`), one query returning data.
    Math { metrics: Vec<cw::MetricDataQuery> },
}

/// The ResourceLabel of `ALBRequestCountPerTarget`:
/// `app/<load-balancer-name>/<id>/targetgroup/<target-group-name>/<id>`; returns the target
/// group's dimension value, `targetgroup/<name>/<id>`.
pub fn alb_target_group_dimension(label: &str) -> Option<String> {
    let parts: Vec<&str> = label.split('/').collect();
    match parts[..] {
        ["app", lb, lb_id, "targetgroup", tg, tg_id]
            if [lb, lb_id, tg, tg_id].iter().all(|p| !p.is_empty())
                && [lb_id, tg_id].iter().all(|id| id.chars().all(|c| c.is_ascii_hexdigit())) =>
        {
            Some(format!("targetgroup/{tg}/{tg_id}"))
        }
        _ => None,
    }
}

/// Checks a target tracking configuration for an ECS service and returns the metric it
/// follows: the predefined `ECSServiceAverageCPUUtilization` and
/// `ECSServiceAverageMemoryUtilization` (AWS/ECS, Average by ClusterName and ServiceName,
/// Percent) and `ALBRequestCountPerTarget` (AWS/ApplicationELB RequestCountPerTarget, Sum by
/// TargetGroup), or a customized metric specification.
pub fn target_tracking_metric(
    service: &EcsService,
    config: &TargetTrackingScalingPolicyConfiguration,
) -> Result<TrackedMetric, ScalingError> {
    if !(config.target_value.is_finite() && config.target_value > 0.0) {
        return Err(ScalingError::validation("The target value must be greater than 0"));
    }
    for (name, v) in [("ScaleInCooldown", config.scale_in_cooldown), ("ScaleOutCooldown", config.scale_out_cooldown)] {
        if v.is_some_and(|v| v < 0) {
            return Err(ScalingError::validation(format!("{name} must be greater than or equal to 0")));
        }
    }
    let ecs_dims = || {
        vec![("ClusterName".to_string(), service.cluster.clone()), ("ServiceName".to_string(), service.service.clone())]
    };
    match (&config.predefined_metric_specification, &config.customized_metric_specification) {
        (Some(_), Some(_)) | (None, None) => Err(ScalingError::validation(
            "Exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification must be specified",
        )),
        (Some(p), None) => match p.predefined_metric_type {
            MetricType::ECSServiceAverageCPUUtilization | MetricType::ECSServiceAverageMemoryUtilization => {
                if p.resource_label.is_some() {
                    return Err(ScalingError::validation(format!(
                        "ResourceLabel is not supported for predefined metric type {}",
                        p.predefined_metric_type.as_str()
                    )));
                }
                let name = if p.predefined_metric_type == MetricType::ECSServiceAverageCPUUtilization {
                    "CPUUtilization"
                } else {
                    "MemoryUtilization"
                };
                Ok(TrackedMetric::Single {
                    namespace: "AWS/ECS".into(),
                    metric_name: name.into(),
                    dimensions: ecs_dims(),
                    statistic: Statistic::Average,
                    unit: Some(StandardUnit::Percent),
                })
            }
            MetricType::ALBRequestCountPerTarget => {
                let label = p.resource_label.as_deref().ok_or_else(|| {
                    ScalingError::validation(
                        "ResourceLabel is required for predefined metric type ALBRequestCountPerTarget",
                    )
                })?;
                let tg = alb_target_group_dimension(label).ok_or_else(|| {
                    ScalingError::validation(format!(
                        "Invalid ResourceLabel {label}: expected app/<load-balancer-name>/<load-balancer-id>/targetgroup/<target-group-name>/<target-group-id>"
                    ))
                })?;
                Ok(TrackedMetric::Single {
                    namespace: "AWS/ApplicationELB".into(),
                    metric_name: "RequestCountPerTarget".into(),
                    dimensions: vec![("TargetGroup".into(), tg)],
                    statistic: Statistic::Sum,
                    unit: None,
                })
            }
            other => Err(ScalingError::validation(format!(
                "Unsupported predefined metric type {} for scalable dimension ecs:service:DesiredCount",
                other.as_str()
            ))),
        },
        (None, Some(c)) => customized_metric(c),
    }
}

fn customized_metric(c: &CustomizedMetricSpecification) -> Result<TrackedMetric, ScalingError> {
    if let Some(metrics) = &c.metrics {
        if c.metric_name.is_some() || c.namespace.is_some() || c.statistic.is_some() || c.dimensions.is_some() {
            return Err(ScalingError::validation(
                "Metrics cannot be specified together with MetricName, Namespace, Dimensions or Statistic",
            ));
        }
        if metrics.iter().filter(|m| m.return_data.unwrap_or(true)).count() != 1 {
            return Err(ScalingError::validation("Exactly one metric in Metrics must return data (ReturnData true)"));
        }
        let queries = metrics
            .iter()
            .map(|m| cw::MetricDataQuery {
                id: m.id.clone(),
                expression: m.expression.clone(),
                label: m.label.clone(),
                return_data: m.return_data,
                metric_stat: m.metric_stat.as_ref().map(|s| cw::MetricStat {
                    metric: cw::Metric {
                        namespace: s.metric.namespace.clone(),
                        metric_name: s.metric.metric_name.clone(),
                        dimensions: s.metric.dimensions.as_ref().map(|d| {
                            d.iter().map(|d| cw::Dimension { name: d.name.clone(), value: d.value.clone() }).collect()
                        }),
                    },
                    period: TARGET_TRACKING_PERIOD,
                    stat: s.stat.clone(),
                    unit: s.unit.as_deref().and_then(StandardUnit::from_str_opt),
                }),
                ..Default::default()
            })
            .collect();
        return Ok(TrackedMetric::Math { metrics: queries });
    }
    let (Some(name), Some(namespace), Some(statistic)) = (&c.metric_name, &c.namespace, c.statistic) else {
        return Err(ScalingError::validation(
            "A customized metric specification needs MetricName, Namespace and Statistic, or Metrics",
        ));
    };
    let statistic = Statistic::from_str_opt(statistic.as_str()).unwrap_or(Statistic::Average);
    let unit = match &c.unit {
        None => None,
        Some(u) => {
            Some(StandardUnit::from_str_opt(u).ok_or_else(|| ScalingError::validation(format!("Invalid unit {u}")))?)
        }
    };
    Ok(TrackedMetric::Single {
        namespace: namespace.clone(),
        metric_name: name.clone(),
        dimensions: c.dimensions.iter().flatten().map(|d| (d.name.clone(), d.value.clone())).collect(),
        statistic,
        unit,
    })
}

/// Which of a target tracking policy's two alarms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackingAlarm {
    AlarmHigh,
    AlarmLow,
}

impl TrackingAlarm {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackingAlarm::AlarmHigh => "AlarmHigh",
            TrackingAlarm::AlarmLow => "AlarmLow",
        }
    }

    /// Tells which alarm of a policy a name is (`TargetTracking-...-AlarmHigh-<uuid>`).
    pub fn of_name(alarm_name: &str) -> Option<TrackingAlarm> {
        let rest = alarm_name.strip_prefix("TargetTracking-")?;
        // The uuid is the last 36 characters, after `-AlarmHigh-` or `-AlarmLow-`.
        let head = rest.get(..rest.len().checked_sub(37)?)?;
        if head.ends_with("-AlarmHigh") {
            Some(TrackingAlarm::AlarmHigh)
        } else if head.ends_with("-AlarmLow") {
            Some(TrackingAlarm::AlarmLow)
        } else {
            None
        }
    }
}

/// `TargetTracking-service/<cluster>/<service>-AlarmHigh-<uuid>`.
pub fn target_tracking_alarm_name(resource_id: &str, which: TrackingAlarm, uuid: &str) -> String {
    format!("TargetTracking-{resource_id}-{}-{uuid}", which.as_str())
}

/// The PutMetricAlarm of one of the alarms a target tracking policy creates and owns.
/// `policy_action` is what the alarm triggers and its description names: the policy's ARN
/// (AWS appends `:createdBy/<uuid>`; pass it so if wanted). With DisableScaleIn, estiba still
/// creates AlarmLow and the policy does not act on it (whether AWS omits the alarm then is
/// not confirmed).
///
/// With several target tracking policies on one service, ECS's guide says the service scales
/// out when any policy is ready to, and scales in only when all of them (those with scale-in
/// enabled) are: the controller combines the [`Decision`]s so.
pub fn target_tracking_alarm(
    resource_id: &str,
    which: TrackingAlarm,
    uuid: &str,
    policy_action: &str,
    metric: &TrackedMetric,
    target_value: f64,
) -> PutMetricAlarmInput {
    let (operator, threshold, periods, datapoints) = match which {
        TrackingAlarm::AlarmHigh => {
            (ComparisonOperator::GreaterThanThreshold, target_value, ALARM_HIGH_DATAPOINTS, Some(ALARM_HIGH_DATAPOINTS))
        }
        TrackingAlarm::AlarmLow => {
            (ComparisonOperator::LessThanThreshold, target_value * SCALE_IN_RATIO, ALARM_LOW_DATAPOINTS, None)
        }
    };
    let mut input = PutMetricAlarmInput {
        alarm_name: target_tracking_alarm_name(resource_id, which, uuid),
        alarm_description: Some(format!("DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {policy_action}.")),
        actions_enabled: Some(true),
        alarm_actions: Some(vec![policy_action.to_string()]),
        comparison_operator: Some(operator),
        threshold: Some(threshold),
        evaluation_periods: Some(periods),
        datapoints_to_alarm: datapoints,
        treat_missing_data: Some("missing".into()),
        ..Default::default()
    };
    match metric {
        TrackedMetric::Single { namespace, metric_name, dimensions, statistic, unit } => {
            input.namespace = Some(namespace.clone());
            input.metric_name = Some(metric_name.clone());
            input.dimensions =
                Some(dimensions.iter().map(|(n, v)| cw::Dimension { name: n.clone(), value: v.clone() }).collect());
            input.statistic = Some(*statistic);
            input.period = Some(TARGET_TRACKING_PERIOD);
            input.unit = *unit;
        }
        TrackedMetric::Math { metrics } => input.metrics = Some(metrics.clone()),
    }
    input
}

/// Target tracking's capacity: `ceil(current × metric / target)`, the capacity at which the
/// metric would be back at the target (proportional metrics such as average utilisation).
/// From zero tasks, a metric above the target asks for one.
pub fn target_tracking_capacity(current: i32, metric: f64, target: f64) -> i32 {
    if current <= 0 {
        return i32::from(metric > target);
    }
    let exact = f64::from(current) * metric / target;
    // Guard against 4 × 50 / 50 = 4.000000001.
    (exact - 1e-9).ceil().max(0.0) as i32
}

/// A target tracking policy's settings that decisions need.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetTracking {
    pub target_value: f64,
    pub cooldowns: Cooldowns,
    pub disable_scale_in: bool,
}

impl TargetTracking {
    pub fn from_config(config: &TargetTrackingScalingPolicyConfiguration) -> TargetTracking {
        TargetTracking {
            target_value: config.target_value,
            cooldowns: Cooldowns {
                scale_out: config.scale_out_cooldown.unwrap_or(DEFAULT_COOLDOWN),
                scale_in: config.scale_in_cooldown.unwrap_or(DEFAULT_COOLDOWN),
            },
            disable_scale_in: config.disable_scale_in.unwrap_or(false),
        }
    }

    /// What the policy does when `alarm` is in ALARM and the metric reads `metric` with
    /// `current` tasks desired. AlarmHigh scales out to [`target_tracking_capacity`] (from the
    /// cooldown's base while a scale-out cooldown runs, so only a larger scale-out goes ahead);
    /// AlarmLow scales in to it, unless DisableScaleIn, and never during either cooldown.
    pub fn decide(&self, alarm: TrackingAlarm, metric: f64, at: &Situation) -> Decision {
        match alarm {
            TrackingAlarm::AlarmHigh => {
                let base = at.memory.scale_out_base(self.cooldowns, at.now, at.current);
                let wanted = target_tracking_capacity(base, metric, self.target_value);
                settle(Direction::Out, wanted, at, self.cooldowns)
            }
            TrackingAlarm::AlarmLow => {
                if self.disable_scale_in {
                    return Decision::Hold(Hold::ScaleInDisabled);
                }
                let wanted = target_tracking_capacity(at.current, metric, self.target_value);
                settle(Direction::In, wanted, at, self.cooldowns)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Step scaling

/// Application Auto Scaling takes at most this many step adjustments in a policy.
pub const MAX_STEP_ADJUSTMENTS: usize = 20;

/// Checks a step scaling configuration: at least one and at most 20 steps, bounds in order,
/// no overlap, no gap, the open-ended steps the bounds call for, MinAdjustmentMagnitude only
/// with PercentChangeInCapacity.
pub fn validate_step_scaling(config: &StepScalingPolicyConfiguration) -> Result<(), ScalingError> {
    let steps = config.step_adjustments.as_deref().unwrap_or_default();
    if steps.is_empty() {
        return Err(ScalingError::validation(
            "At least one step adjustment is required for a step scaling policy configuration",
        ));
    }
    if steps.len() > MAX_STEP_ADJUSTMENTS {
        return Err(ScalingError::validation("There can be at most 20 step adjustments per scaling policy"));
    }
    if config.adjustment_type.is_none() {
        return Err(ScalingError::validation("AdjustmentType is required for a step scaling policy configuration"));
    }
    if let Some(m) = config.min_adjustment_magnitude {
        if config.adjustment_type != Some(AdjustmentType::PercentChangeInCapacity) {
            return Err(ScalingError::validation(
                "MinAdjustmentMagnitude is only supported with the PercentChangeInCapacity adjustment type",
            ));
        }
        if m < 1 {
            return Err(ScalingError::validation("MinAdjustmentMagnitude must be greater than or equal to 1"));
        }
    }
    if config.cooldown.is_some_and(|c| c < 0) {
        return Err(ScalingError::validation("Cooldown must be greater than or equal to 0"));
    }
    if config.adjustment_type == Some(AdjustmentType::ExactCapacity) && steps.iter().any(|s| s.scaling_adjustment < 0) {
        return Err(ScalingError::validation(
            "ScalingAdjustment cannot be negative for the ExactCapacity adjustment type",
        ));
    }
    for s in steps {
        if let (Some(lo), Some(hi)) = (s.metric_interval_lower_bound, s.metric_interval_upper_bound) {
            if lo >= hi {
                return Err(ScalingError::validation(format!(
                    "The lower bound ({lo}) must be less than the upper bound ({hi}) for a StepAdjustment"
                )));
            }
        }
    }
    let null_lower = steps.iter().filter(|s| s.metric_interval_lower_bound.is_none()).count();
    let null_upper = steps.iter().filter(|s| s.metric_interval_upper_bound.is_none()).count();
    if null_lower > 1 {
        return Err(ScalingError::validation("At most one StepAdjustment may have an unspecified lower bound"));
    }
    if null_upper > 1 {
        return Err(ScalingError::validation("At most one StepAdjustment may have an unspecified upper bound"));
    }
    if null_lower == 0 && steps.iter().any(|s| s.metric_interval_lower_bound.is_some_and(|l| l < 0.0)) {
        return Err(ScalingError::validation(
            "There must be a StepAdjustment with an unspecified lower bound (i.e., lower bound is null) when one StepAdjustment has a negative lower bound",
        ));
    }
    if null_upper == 0 && steps.iter().any(|s| s.metric_interval_upper_bound.is_some_and(|u| u > 0.0)) {
        return Err(ScalingError::validation(
            "There must be a StepAdjustment with an unspecified upper bound (i.e., upper bound is null) when one StepAdjustment has a positive upper bound",
        ));
    }
    let mut sorted: Vec<&StepAdjustment> = steps.iter().collect();
    sorted.sort_by(|a, b| {
        let key = |s: &StepAdjustment| s.metric_interval_lower_bound.unwrap_or(f64::NEG_INFINITY);
        key(a).total_cmp(&key(b))
    });
    for pair in sorted.windows(2) {
        let upper = pair[0].metric_interval_upper_bound.unwrap_or(f64::INFINITY);
        let lower = pair[1].metric_interval_lower_bound.unwrap_or(f64::NEG_INFINITY);
        if upper > lower {
            return Err(ScalingError::validation("Step adjustment intervals must not overlap"));
        }
        if upper < lower {
            return Err(ScalingError::validation("Step adjustment intervals must not have gaps between them"));
        }
    }
    Ok(())
}

/// The step whose interval holds `metric − threshold`. Above the threshold an interval's
/// lower bound is inclusive and its upper bound exclusive; below it, the other way round.
pub fn matching_step(steps: &[StepAdjustment], threshold: f64, metric: f64) -> Option<&StepAdjustment> {
    let delta = metric - threshold;
    steps.iter().find(|s| {
        let (lo, hi) = (s.metric_interval_lower_bound, s.metric_interval_upper_bound);
        if delta >= 0.0 {
            lo.is_none_or(|l| delta >= l) && hi.is_none_or(|h| delta < h)
        } else {
            lo.is_none_or(|l| delta > l) && hi.is_none_or(|h| delta <= h)
        }
    })
}

/// The change PercentChangeInCapacity makes, rounded as AWS documents: above 1 down (12.7 →
/// 12), between 0 and 1 to 1, between −1 and 0 to −1, below −1 up (−6.67 → −6); at least
/// `min_magnitude` tasks when given.
pub fn percent_change(current: i32, percent: i32, min_magnitude: Option<i32>) -> i32 {
    let exact = f64::from(current) * f64::from(percent) / 100.0;
    let change = if exact > 1.0 {
        exact.floor()
    } else if exact > 0.0 {
        1.0
    } else if exact == 0.0 {
        0.0
    } else if exact >= -1.0 {
        -1.0
    } else {
        exact.ceil()
    } as i32;
    match min_magnitude {
        Some(m) if change != 0 && change.abs() < m => m * change.signum(),
        _ => change,
    }
}

/// The capacity an adjustment asks for from `current`.
pub fn adjusted_capacity(kind: AdjustmentType, adjustment: i32, current: i32, min_magnitude: Option<i32>) -> i32 {
    match kind {
        AdjustmentType::ChangeInCapacity => current + adjustment,
        AdjustmentType::PercentChangeInCapacity => current + percent_change(current, adjustment, min_magnitude),
        AdjustmentType::ExactCapacity => adjustment,
    }
}

/// Aggregates the alarm's datapoints as MetricAggregationType says (Average by default).
pub fn aggregate(values: &[f64], kind: Option<&MetricAggregationType>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(match kind.unwrap_or(&MetricAggregationType::Average) {
        MetricAggregationType::Average => values.iter().sum::<f64>() / values.len() as f64,
        MetricAggregationType::Minimum => values.iter().copied().fold(f64::INFINITY, f64::min),
        MetricAggregationType::Maximum => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

/// What a step scaling policy does when its alarm (threshold `threshold`) is in ALARM and the
/// aggregated metric reads `metric`. The step's sign tells the direction (ExactCapacity:
/// compared with `current`). During the policy's cooldown a scale-out counts from the capacity
/// before the scale-out that started it, and a scale-in waits.
pub fn step_scaling_decision(
    config: &StepScalingPolicyConfiguration,
    threshold: f64,
    metric: f64,
    at: &Situation,
) -> Decision {
    let current = at.current;
    let steps = config.step_adjustments.as_deref().unwrap_or_default();
    let Some(step) = matching_step(steps, threshold, metric) else {
        return Decision::Hold(Hold::NoAction);
    };
    let kind = config.adjustment_type.unwrap_or_default();
    let cooldown = config.cooldown.unwrap_or(DEFAULT_COOLDOWN);
    let cooldowns = Cooldowns { scale_out: cooldown, scale_in: cooldown };
    let at_current = adjusted_capacity(kind, step.scaling_adjustment, current, config.min_adjustment_magnitude);
    let direction = match at_current.cmp(&current) {
        std::cmp::Ordering::Greater => Direction::Out,
        std::cmp::Ordering::Less => Direction::In,
        std::cmp::Ordering::Equal => {
            return if step.scaling_adjustment == 0 {
                Decision::Hold(Hold::NoAction)
            } else {
                Decision::NotScaled(NotScaled::AlreadyAtDesiredCapacity { current_capacity: current })
            };
        }
    };
    let wanted = match direction {
        Direction::Out => {
            let base = at.memory.scale_out_base(cooldowns, at.now, current);
            adjusted_capacity(kind, step.scaling_adjustment, base, config.min_adjustment_magnitude)
        }
        Direction::In => at_current,
    };
    settle(direction, wanted, at, cooldowns)
}

// ---------------------------------------------------------------------------------------
// Scheduled actions

/// A checked scheduled action: its schedule, zone and the bounds it sets.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledAction {
    pub schedule: Schedule,
    pub zone: Zone,
    pub min_capacity: Option<i32>,
    pub max_capacity: Option<i32>,
}

/// PutScheduledAction's checks: the target exists (the caller passes its bounds), the
/// schedule and time zone parse, the action sets MinCapacity or MaxCapacity (or both, in
/// order), StartTime before EndTime.
pub fn validate_scheduled_action(
    request: &PutScheduledActionRequest,
    target: Option<&Bounds>,
) -> Result<ScheduledAction, ScalingError> {
    ecs_service(request.service_namespace, request.scalable_dimension, &request.resource_id)?;
    if target.is_none() {
        return Err(ScalingError::no_target(&request.resource_id));
    }
    let expr = request.schedule.as_deref().ok_or_else(|| ScalingError::validation("Schedule is required"))?;
    let schedule = Schedule::parse(expr)?;
    let zone = Zone::parse(request.timezone.as_deref())?;
    let action = request.scalable_target_action.clone().unwrap_or_default();
    if action.min_capacity.is_none() && action.max_capacity.is_none() {
        return Err(ScalingError::validation(
            "ScalableTargetAction must specify at least one of MinCapacity and MaxCapacity",
        ));
    }
    if let (Some(min), Some(max)) = (action.min_capacity, action.max_capacity) {
        check_min_max(min, max)?;
    }
    if action.min_capacity.is_some_and(|v| v < 0) || action.max_capacity.is_some_and(|v| v < 0) {
        return Err(ScalingError::validation("Minimum and maximum capacity must be non-negative"));
    }
    if let (Some(s), Some(e)) = (request.start_time, request.end_time) {
        if s >= e {
            return Err(ScalingError::validation("StartTime must be before EndTime"));
        }
    }
    Ok(ScheduledAction { schedule, zone, min_capacity: action.min_capacity, max_capacity: action.max_capacity })
}

/// What running a scheduled action does.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledRun {
    /// The target's new bounds.
    pub bounds: Bounds,
    /// The activity that records them.
    pub activity: Activity,
    /// When the desired count falls outside the new bounds: the new count and its activity.
    pub desired: Option<(i32, Activity)>,
}

/// What a scheduled action does when it runs: the target's new bounds (what it does not set
/// is kept; a bound that would cross the other moves with it), the activity for the bounds,
/// and, when the desired count falls outside them, the new count and its activity. `None`
/// while ScheduledScalingSuspended.
pub fn run_scheduled_action(
    action_name: &str,
    action: &ScheduledAction,
    bounds: &Bounds,
    desired: i32,
) -> Option<ScheduledRun> {
    if bounds.suspended.scheduled_scaling {
        return None;
    }
    let mut min = action.min_capacity.unwrap_or(bounds.min_capacity);
    let mut max = action.max_capacity.unwrap_or(bounds.max_capacity);
    if action.min_capacity.is_none() {
        min = min.min(max);
    }
    if action.max_capacity.is_none() {
        max = max.max(min);
    }
    let new = Bounds { min_capacity: min, max_capacity: max, suspended: bounds.suspended };
    let activity = Activity::scheduled(action_name, min, max);
    Some(ScheduledRun { bounds: new, activity, desired: enforce_bounds(&new, desired) })
}

#[cfg(test)]
mod tests;
