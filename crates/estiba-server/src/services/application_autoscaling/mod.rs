//! Application Auto Scaling (signing name `application-autoscaling`, AWS JSON 1.1, target
//! prefix `AnyScaleFrontendService`) for ECS services' desired count: scalable targets,
//! target tracking and step scaling policies, scheduled actions, scaling activities and tags.
//!
//! Everything is configuration in the versioned store (`estiba_core::autoscaling::docs`,
//! under `autoscaling/<account>/<region>/`), written with [`Server::transact`] and read
//! through the view tables below. AWS's rules and messages are `estiba_core::autoscaling`.
//! The alarms a target tracking policy owns are `estiba_core::alarms::AlarmDoc`s written in
//! the same transaction as the policy (CloudWatch reads and evaluates them); setting a
//! service's desired count and recording activities is `crate::scaling`, shared with the
//! alarm actions and the `scheduled-scaling` controller.
//!
//! - [`targets`] has RegisterScalableTarget, DescribeScalableTargets,
//!   DeregisterScalableTarget and the tag operations;
//! - [`policies`] has PutScalingPolicy, DescribeScalingPolicies, DeleteScalingPolicy;
//! - [`scheduled`] has PutScheduledAction, DescribeScheduledActions, DeleteScheduledAction;
//! - [`activities`] has DescribeScalingActivities.
//!
//! May not: import another service's handlers (ECS services are read from the view, and
//! changed through `crate::scaling`, which uses estiba-core's UpdateService rule).

use bytes::Bytes;
use estiba_api::application_autoscaling::*;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, DecodeError};
use estiba_core::autoscaling::docs::{self, ActivityLog, PolicyDoc, ScheduledDoc, TargetDoc};
use estiba_core::autoscaling::ScalingError;
use estiba_core::Scope;

use super::{route, BoxFuture, Call, Input, Service};
use crate::view::{Doc, State, TableDef};
use crate::Server;

mod activities;
mod policies;
mod scheduled;
mod targets;

pub(crate) use policies::tracking_alarm;
pub(crate) use targets::delete_policy;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The Application Auto Scaling service.
pub struct AppAutoScaling;

/// The key prefix of the service's documents, as view tables take it.
const PREFIX: &str = "autoscaling/";

static TABLES: [TableDef; 4] = [
    TableDef::of::<TargetDoc>(PREFIX, docs::TARGETS),
    TableDef::of::<PolicyDoc>(PREFIX, docs::POLICIES),
    TableDef::of::<ScheduledDoc>(PREFIX, docs::SCHEDULED),
    TableDef::of::<ActivityLog>(PREFIX, docs::ACTIVITIES),
];

/// The view table of scalable targets.
pub fn targets_table() -> &'static TableDef {
    &TABLES[0]
}

/// The view table of scaling policies.
pub fn policies_table() -> &'static TableDef {
    &TABLES[1]
}

/// The view table of scheduled actions.
pub fn scheduled_table() -> &'static TableDef {
    &TABLES[2]
}

/// The view table of scaling activity logs (one per target).
pub fn activities_table() -> &'static TableDef {
    &TABLES[3]
}

impl Service for AppAutoScaling {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&AppAutoScaling, other.name());
            route! { &AppAutoScaling, s, &cx, Operation::ALL[op], input, missing;
                RegisterScalableTarget => targets::register_scalable_target,
                DescribeScalableTargets => targets::describe_scalable_targets,
                DeregisterScalableTarget => targets::deregister_scalable_target,
                TagResource => targets::tag_resource,
                UntagResource => targets::untag_resource,
                ListTagsForResource => targets::list_tags_for_resource,
                PutScalingPolicy => policies::put_scaling_policy,
                DescribeScalingPolicies => policies::describe_scaling_policies,
                DeleteScalingPolicy => policies::delete_scaling_policy,
                PutScheduledAction => scheduled::put_scheduled_action,
                DescribeScheduledActions => scheduled::describe_scheduled_actions,
                DeleteScheduledAction => scheduled::delete_scheduled_action,
                DescribeScalingActivities => activities::describe_scaling_activities,
            }
        })
    }

    /// A body that is not JSON is a `SerializationException`; any value the model refuses is
    /// a `ValidationException`.
    fn decode_error(&self, e: DecodeError, _protocol: Protocol) -> ApiError {
        super::json_decode_error(e, ErrorCode::ValidationException)
    }

    fn tables(&self) -> &'static [TableDef] {
        &TABLES
    }
}

/// Why a write was refused: the API's error, or the store's.
pub(crate) enum Refused {
    Api(ApiError),
    Write(crate::WriteError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Api(e)
    }
}

impl From<ScalingError> for Refused {
    fn from(e: ScalingError) -> Self {
        Refused::Api(e.into())
    }
}

impl From<crate::WriteError> for Refused {
    fn from(e: crate::WriteError) -> Self {
        Refused::Write(e)
    }
}

/// [`Server::transact`] with this API's exceptions for failed writes: concurrent changes that
/// kept winning are a `ConcurrentUpdateException`, a store failure an
/// `InternalServiceException`.
pub(crate) async fn transact<R>(
    s: &Server,
    f: impl FnMut(&State) -> Result<(estiba_store::Txn, R), Refused>,
) -> Result<R> {
    s.transact(f).await.map_err(refused)
}

/// The AWS error of a refused write.
pub(crate) fn refused(e: Refused) -> ApiError {
    match e {
        Refused::Api(e) => e,
        Refused::Write(crate::WriteError::Conflicts) => ApiError::new(
            ErrorCode::ConcurrentUpdateException,
            "Concurrent updates were made to this resource; retry the request.",
        ),
        Refused::Write(e) => ApiError::new(ErrorCode::InternalServiceException, e.to_string()),
    }
}

/// A document as the store keeps it (JSON).
pub(crate) fn put_doc<T: serde::Serialize>(key: impl Into<String>, v: &T) -> estiba_store::Op {
    estiba_store::Op::put(key, serde_json::to_vec(v).expect("documents serialize"))
}

/// The target registered for `resource_id`, or AWS's ObjectNotFoundException.
pub(crate) fn find_target<'a>(
    st: &'a State,
    scope: &Scope,
    resource_id: &str,
) -> Result<&'a Doc<TargetDoc>, ScalingError> {
    st.doc::<TargetDoc>(targets_table(), &docs::target_key(scope, resource_id))
        .ok_or_else(|| ScalingError::no_target(resource_id))
}

/// A page size: MaxResults when given (1..=`max`), else `default`.
pub(crate) fn limit(max_results: Option<i32>, default: usize, max: usize) -> Result<usize, ScalingError> {
    match max_results {
        None => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(ScalingError::validation(format!("MaxResults must be between 1 and {max}, got {n}"))),
    }
}

/// A page of `items` sorted by `key` (see `estiba_core::page`), with this API's exception for
/// a token it did not give out.
pub(crate) fn page<T, K: AsRef<str>>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    token: Option<&str>,
    limit: usize,
    desc: bool,
) -> Result<estiba_core::page::Page<T>, ScalingError> {
    estiba_core::page::paginate(items, key, token, limit, desc)
        .map_err(|_| ScalingError { code: ErrorCode::InvalidNextTokenException, message: "Invalid NextToken".into() })
}

/// Whether a Describe call's namespace and dimension filters can match ECS services' desired
/// count (the only scalable dimension estiba has).
pub(crate) fn ecs_matches(namespace: ServiceNamespace, dimension: Option<ScalableDimension>) -> bool {
    namespace == ServiceNamespace::Ecs && dimension.is_none_or(|d| d == ScalableDimension::EcsServiceDesiredCount)
}
