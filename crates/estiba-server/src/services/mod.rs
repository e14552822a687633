//! The AWS services estiba answers. Each is a module that registers itself in [`SERVICES`]:
//! its model (operations and shapes, generated in estiba-api), its handlers behind
//! [`Service::call`], how a malformed input maps to its error codes, and the store kinds and
//! view tables it owns ([`Service::tables`]).
//!
//! Handlers take typed inputs and answer JSON, whatever the protocol: the front door
//! ([`crate::front`]) decodes AWS JSON, Query, EC2 and RPC v2 CBOR requests into the input's
//! JSON form and encodes the answer back. A handler reads the [`crate::view::View`], calls
//! estiba-core for the rules and writes with [`crate::Server::transact`].
//!
//! **Architecture invariant:** no service module imports another's handlers; what two
//! services share lives in estiba-core (rules), or, for a write built from the view, in the
//! owning service's `pub(crate)` builders (a `&State` in, a `Txn` out, e.g.
//! `elbv2::new_load_balancer`, `application_autoscaling::tracking_alarm`), which its own
//! handlers use too; view tables may be read by any service. The front door depends on
//! services, never the reverse.
//!
//! Adding a service:
//! 1. add its botocore model to `crates/estiba-api/models/` and to `xtask/src/codegen.rs`'s
//!    `SERVICES`, run `cargo xtask codegen`;
//! 2. write `services/<name>.rs` with a unit struct implementing [`Service`] (use [`route!`]
//!    for the operation table), its key kinds under its own prefix (see `estiba_core::keys`)
//!    and its view tables ([`crate::view::TableDef`]);
//! 3. list it in [`SERVICES`];
//! 4. cover it in `tests/e2e` with boto3 and the AWS CLI, success and error paths, in every
//!    protocol the service speaks.
//!
//! Adding an operation: write `async fn op(s, cx, req: OpInput) -> Result<Bytes, E>` in the
//! service's module and add it to its `route!` table.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, Common, DecodeError, PathStyle, Validate};
use estiba_core::Scope;
use serde::de::DeserializeOwned;

use crate::Server;

pub mod application_autoscaling;
pub mod cloudwatch;
pub mod ec2;
pub mod ecr;
pub mod ecs;
pub mod elbv2;
pub mod logs;
pub mod secretsmanager;
pub mod servicediscovery;
pub mod ssm;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every service estiba answers.
pub static SERVICES: &[&dyn Service] = &[
    &ecs::Ecs,
    &ecr::Ecr,
    &ec2::Ec2,
    &elbv2::Elbv2,
    &cloudwatch::CloudWatch,
    &servicediscovery::ServiceDiscovery,
    &logs::Logs,
    &application_autoscaling::AppAutoScaling,
    &ssm::Ssm,
    &secretsmanager::SecretsManager,
];

/// Who is calling, and when.
#[derive(Clone, Debug)]
pub struct Call {
    pub scope: Scope,
    pub now: f64,
}

/// An operation's input as it arrived: a JSON body, or the JSON form another protocol's
/// codec built from the request; with the protocol and how its service names members in
/// validation messages.
pub struct Input {
    pub body: InputBody,
    pub protocol: Protocol,
    pub style: PathStyle,
}

pub enum InputBody {
    Json(Bytes),
    Value(serde_json::Value),
}

impl Input {
    /// The typed input, with the model's constraints checked.
    pub fn decode<T: DeserializeOwned + Validate>(self) -> Result<T, DecodeError> {
        match self.body {
            InputBody::Json(body) => estiba_api::protocol::decode_styled(&body, self.style),
            InputBody::Value(v) => estiba_api::decode_value(v, self.style),
        }
    }
}

pub trait Service: Send + Sync + 'static {
    fn model(&self) -> &'static Model;

    /// Answers operation `op` (an index into the model's operations) with its output as JSON.
    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes, ApiError>>;

    /// The error for an input that could not be decoded, in this service's codes.
    fn decode_error(&self, e: DecodeError, protocol: Protocol) -> ApiError;

    /// The store kinds and view tables this service owns.
    fn tables(&self) -> &'static [crate::view::TableDef] {
        &[]
    }

    /// Whether operation `op` answers an event stream: the front door then calls
    /// [`Service::call_stream`] instead of [`Service::call`].
    fn streams(&self, _op: usize) -> bool {
        false
    }

    /// Answers an operation whose output is an event stream with its frames, already encoded
    /// (`estiba_api::protocol::eventstream`), as they come.
    fn call_stream<'a>(
        &'a self,
        _s: &'a Server,
        _cx: Call,
        op: usize,
        _input: Input,
    ) -> BoxFuture<'a, Result<EventStream, ApiError>> {
        let name = self.model().operations[op].name;
        Box::pin(async move { Err(ApiError::new(Common::NotImplemented, format!("{name} does not stream."))) })
    }
}

/// The frames of an event stream answer (`application/vnd.amazon.eventstream`); an error or
/// the sender's end ends the response.
pub type EventStream = tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>;

/// A handler's answer: the output as JSON.
pub fn json<T: serde::Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("wire types always serialize"))
}

/// The service whose SigV4 signing name is `name`.
pub fn by_signing_name(name: &str) -> Option<&'static dyn Service> {
    SERVICES.iter().copied().find(|s| s.model().signing_name == name)
}

/// The service whose `X-Amz-Target` prefix (or RPC v2 service name) is `prefix`.
pub fn by_target_prefix(prefix: &str) -> Option<&'static dyn Service> {
    SERVICES.iter().copied().find(|s| !s.model().target_prefix.is_empty() && s.model().target_prefix == prefix)
}

/// A service estiba has a model of but does not answer yet, by signing name or target prefix.
pub fn not_served(name: &str) -> Option<&'static Model> {
    estiba_api::MODELS
        .iter()
        .copied()
        .find(|m| m.signing_name == name || (!m.target_prefix.is_empty() && m.target_prefix == name))
        .filter(|m| !SERVICES.iter().any(|s| std::ptr::eq(s.model(), *m)))
}

/// The common mapping of decode errors for services whose model declares an
/// `InvalidParameterException` (ECS, ECR): a body that is not JSON is a
/// `SerializationException`, a value the model refuses is `code`.
pub fn json_decode_error(e: DecodeError, invalid: impl estiba_api::ErrorShape) -> ApiError {
    match e {
        DecodeError::Serialization(m) => ApiError::new(Common::SerializationException, m),
        DecodeError::Missing(m) | DecodeError::Validation(m) | DecodeError::Unknown(m) => ApiError::new(invalid, m),
    }
}

/// An operation the model has and estiba does not answer yet.
pub fn not_implemented(svc: &dyn Service, op: &str) -> ApiError {
    ApiError::new(
        Common::NotImplemented,
        format!("estiba does not support the {} {op} operation yet.", svc.model().title),
    )
}

/// The operation table of a service: decodes the input of `$op`, calls its handler and turns
/// the handler's error into an [`ApiError`]; operations not listed answer `$missing(op)`.
macro_rules! route {
    ($svc:expr, $s:expr, $cx:expr, $op:expr, $input:expr, $missing:expr; $($name:ident => $f:path,)*) => {{
        let protocol = $input.protocol;
        match $op {
            $(Operation::$name => {
                let req = $input.decode().map_err(|e| $crate::services::Service::decode_error($svc, e, protocol))?;
                Ok($f($s, $cx, req).await?)
            })*
            #[allow(unreachable_patterns)]
            other => Err($missing(other)),
        }
    }};
}
pub(crate) use route;
