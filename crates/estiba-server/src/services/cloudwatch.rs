//! Amazon CloudWatch (signing name `monitoring`), in all three protocols its clients use:
//! Smithy RPC v2 CBOR (newer SDKs), AWS JSON 1.0 in query-compatible mode (boto3 1.43) and
//! AWS Query (the AWS CLI 2.9). This module is the service's place in the front door: the
//! metrics issue fills it from the agents' cgroup samples and PutMetricData. Until then
//! ListMetrics answers over an empty set.

use bytes::Bytes;
use estiba_api::cloudwatch::*;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, Common, DecodeError};

use super::{json, route, BoxFuture, Call, Input, Service};
use crate::Server;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The CloudWatch service.
pub struct CloudWatch;

impl Service for CloudWatch {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&CloudWatch, other.name());
            route! { &CloudWatch, s, &cx, Operation::ALL[op], input, missing;
                ListMetrics => list_metrics,
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
}

async fn list_metrics(_: &Server, _: &Call, _req: ListMetricsInput) -> Result<Bytes> {
    Ok(json(&ListMetricsOutput { metrics: Some(vec![]), next_token: None, owning_accounts: None }))
}
