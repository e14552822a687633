//! Amazon CloudWatch (signing name `monitoring`), in all three protocols its clients use:
//! Smithy RPC v2 CBOR (newer SDKs), AWS JSON 1.0 in query-compatible mode (boto3 1.43) and
//! AWS Query (the AWS CLI). Handlers take the decoded input whatever the protocol.
//!
//! - [`metrics`] has PutMetricData, ListMetrics, GetMetricStatistics and GetMetricData over
//!   the metric store ([`Server::metrics`], high-volume data: never the versioned store);
//!   everything stored or queried is in AWS time ([`Server::metric_clock`]): request
//!   timestamps are mapped with `to_aws`, answered ones back with `to_real`;
//! - [`alarms`] has PutMetricAlarm, DescribeAlarms, DescribeAlarmsForMetric, DeleteAlarms,
//!   SetAlarmState, DescribeAlarmHistory, Enable/DisableAlarmActions and the tag calls:
//!   alarms are documents (`estiba_core::alarms::AlarmDoc`) written with [`Server::transact`],
//!   their history a bounded document per alarm name (`HistoryDoc`);
//! - [`evaluate`] evaluates one alarm and writes its state change, history and actions: the
//!   alarm controller (`controller::alarms`) calls it every AWS minute (every period for
//!   high-resolution alarms); SetAlarmState uses its action step.
//!
//! May not: import another service's handlers; scaling-policy actions go through
//! `crate::scaling::alarm_action`.

use bytes::Bytes;
use estiba_api::cloudwatch::*;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, Common, DecodeError};
use estiba_core::alarms::{self as core, AlarmDoc, HistoryDoc};

use super::{route, BoxFuture, Call, Input, Service};
use crate::view::TableDef;
use crate::Server;

pub mod alarms;
pub mod evaluate;
pub mod metrics;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The CloudWatch service.
pub struct CloudWatch;

/// The key prefix of the service's documents, as view tables take it.
const PREFIX: &str = "cloudwatch/";

static TABLES: [TableDef; 2] =
    [TableDef::of::<AlarmDoc>(PREFIX, core::ALARMS), TableDef::of::<HistoryDoc>(PREFIX, core::HISTORY)];

/// The view table of metric alarms.
pub fn alarms_table() -> &'static TableDef {
    &TABLES[0]
}

/// The view table of alarm histories.
pub fn history_table() -> &'static TableDef {
    &TABLES[1]
}

impl Service for CloudWatch {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&CloudWatch, other.name());
            route! { &CloudWatch, s, &cx, Operation::ALL[op], input, missing;
                PutMetricData => metrics::put_metric_data,
                ListMetrics => metrics::list_metrics,
                GetMetricStatistics => metrics::get_metric_statistics,
                GetMetricData => metrics::get_metric_data,
                PutMetricAlarm => alarms::put_metric_alarm,
                DescribeAlarms => alarms::describe_alarms,
                DescribeAlarmsForMetric => alarms::describe_alarms_for_metric,
                DeleteAlarms => alarms::delete_alarms,
                SetAlarmState => alarms::set_alarm_state,
                DescribeAlarmHistory => alarms::describe_alarm_history,
                EnableAlarmActions => alarms::enable_alarm_actions,
                DisableAlarmActions => alarms::disable_alarm_actions,
                TagResource => alarms::tag_resource,
                UntagResource => alarms::untag_resource,
                ListTagsForResource => alarms::list_tags_for_resource,
            }
        })
    }

    /// A body that is not CBOR or JSON is a `SerializationException`; a missing member is
    /// `MissingParameter` and any other bad value `InvalidParameterValue`, as CloudWatch's model
    /// declares them.
    fn decode_error(&self, e: DecodeError, protocol: Protocol) -> ApiError {
        match e {
            DecodeError::Serialization(m) if protocol != Protocol::Query => {
                ApiError::new(Common::SerializationException, m)
            }
            DecodeError::Missing(m) => ApiError::new(ErrorCode::MissingRequiredParameterException, m),
            e => ApiError::new(ErrorCode::InvalidParameterValueException, e.to_string()),
        }
    }

    fn tables(&self) -> &'static [TableDef] {
        &TABLES
    }
}

/// `InvalidParameterValue` with `message`.
pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameterValueException, message.into())
}

/// `InvalidParameterCombination` for two parameters given together.
pub(crate) fn exclusive(a: &str, b: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidParameterCombinationException,
        format!("The parameters {a} and {b} are mutually exclusive and you have specified both."),
    )
}

/// `MissingParameter` for `name`.
pub(crate) fn missing(name: &str) -> ApiError {
    ApiError::new(ErrorCode::MissingRequiredParameterException, format!("The parameter {name} is required."))
}

/// Runs a metric store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorCode::InternalServiceFault, format!("metric store call failed: {e}")))
}

/// A metric store error in the API's terms.
pub(crate) fn store_error(e: estiba_metricstore::Error) -> ApiError {
    match e {
        estiba_metricstore::Error::InvalidPeriod(p) => {
            invalid(format!("The parameter Period ({p}) must be 1, 5, 10, 20, 30 or a multiple of 60."))
        }
        e => {
            tracing::error!(error = %e, "metric store");
            ApiError::new(ErrorCode::InternalServiceFault, e.to_string())
        }
    }
}

/// A wire timestamp (seconds) as milliseconds.
pub(crate) fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}
