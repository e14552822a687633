//! Elastic Load Balancing v2 (AWS Query, version 2015-12-01, signing name
//! `elasticloadbalancing`). This module is the service's place in the front door: the load
//! balancer issue fills it with load balancers, target groups, listeners and rules. Until
//! then it answers the describe calls over an empty set, with AWS's errors for names and ARNs
//! that do not exist.

use bytes::Bytes;
use estiba_api::elbv2::*;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, Common, DecodeError};

use super::{json, route, BoxFuture, Call, Input, Service};
use crate::Server;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The ELBv2 service.
pub struct Elbv2;

impl Service for Elbv2 {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&Elbv2, other.name());
            route! { &Elbv2, s, &cx, Operation::ALL[op], input, missing;
                DescribeLoadBalancers => describe_load_balancers,
                DescribeTargetGroups => describe_target_groups,
            }
        })
    }

    /// ELBv2 answers every malformed or invalid input with `ValidationError`.
    fn decode_error(&self, e: DecodeError, _: Protocol) -> ApiError {
        ApiError::new(Common::ValidationError, e.to_string())
    }
}

/// Names and ARNs asked for must all exist; none do yet.
fn none_named(names: &Option<Vec<String>>, arns: &Option<Vec<String>>, code: ErrorCode, what: &str) -> Result<()> {
    if names.iter().chain(arns).any(|l| !l.is_empty()) {
        return Err(ApiError::new(code, format!("One or more {what} not found")));
    }
    Ok(())
}

async fn describe_load_balancers(_: &Server, _: &Call, req: DescribeLoadBalancersInput) -> Result<Bytes> {
    none_named(&req.names, &req.load_balancer_arns, ErrorCode::LoadBalancerNotFoundException, "load balancers")?;
    Ok(json(&DescribeLoadBalancersOutput { load_balancers: Some(vec![]), next_marker: None }))
}

async fn describe_target_groups(_: &Server, _: &Call, req: DescribeTargetGroupsInput) -> Result<Bytes> {
    if req.load_balancer_arn.is_some() {
        return Err(ApiError::new(ErrorCode::LoadBalancerNotFoundException, "One or more load balancers not found"));
    }
    none_named(&req.names, &req.target_group_arns, ErrorCode::TargetGroupNotFoundException, "target groups")?;
    Ok(json(&DescribeTargetGroupsOutput { target_groups: Some(vec![]), next_marker: None }))
}
