//! Helpers the fuzz targets share: choosing a service model and operation from the head of an
//! input, and decoding a JSON body into the typed input of a handful of operations.
//!
//! This crate only drives estiba's decoders with arbitrary bytes; it is built by `cargo xtask
//! fuzz` with libFuzzer's instrumentation and never by the main workspace.

use estiba_api::protocol::cbor;
use estiba_api::protocol::query::{self, Flavour};
use estiba_api::schema::{Kind, Model, OperationSchema, ShapeId};
use estiba_api::{DecodeError, Validate};
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

/// Every service model, by its module name.
pub static MODELS: &[&Model] = &[
    &estiba_api::ecs::MODEL,
    &estiba_api::ecr::MODEL,
    &estiba_api::ec2::MODEL,
    &estiba_api::elbv2::MODEL,
    &estiba_api::servicediscovery::MODEL,
    &estiba_api::logs::MODEL,
    &estiba_api::cloudwatch::MODEL,
    &estiba_api::application_autoscaling::MODEL,
    &estiba_api::ssm::MODEL,
    &estiba_api::secretsmanager::MODEL,
];

/// Splits an input `"<service> <Operation>\n<body>"` (the form the seed corpus is written in)
/// into the model, the operation and the body. A head that names no service or operation
/// still picks one (from its bytes), so that every input reaches a decoder.
pub fn target(data: &[u8]) -> (&'static Model, &'static OperationSchema, &[u8]) {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..data.len().min(2)], &data[data.len().min(2)..]),
    };
    let head = String::from_utf8_lossy(head);
    let (svc, op) = head.split_once(' ').unwrap_or((&head, ""));
    let sum = |s: &str| s.bytes().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
    let model = MODELS.iter().copied().find(|m| m.module == svc).unwrap_or(MODELS[sum(svc) % MODELS.len()]);
    let op = match model.operation_index(op) {
        Some(i) => &model.operations[i],
        None => &model.operations[sum(op) % model.operations.len()],
    };
    (model, op, body)
}

/// Decodes `body` as `T`, and when it decodes, checks that the same input sent over the other
/// protocols the codecs speak decodes to the same value: its JSON form written as RPC v2 CBOR
/// (`cbor::from_value`) and as Query parameters (`query::to_params`) and read back.
fn decode_checked<T>(model: &Model, op: &OperationSchema, body: Body) -> Result<(), DecodeError>
where
    T: DeserializeOwned + Validate + PartialEq + std::fmt::Debug,
{
    let style = model.path_style();
    let (first, json): (T, serde_json::Value) = match body {
        Body::Json(b) => {
            let first = estiba_api::protocol::decode_styled(b, style)?;
            let b = if b.iter().all(u8::is_ascii_whitespace) { b"{}" } else { b };
            // A member the input does not have is skipped unread (serde's `IgnoredAny`), so a
            // body can decode and still not be a JSON value (with invalid UTF-8 there, say).
            let Ok(json) = serde_json::from_slice(b) else { return Ok(()) };
            (first, json)
        }
        Body::Value(v) => (estiba_api::decode_value(v.clone(), style)?, v),
    };
    let written = cbor::from_value(model, op.input, &json);
    let back = cbor::to_value(model, op.input, &written).unwrap_or_else(|e| panic!("the codec's own CBOR: {e}"));
    let again: T = estiba_api::decode_value(back, style).unwrap_or_else(|e| panic!("{json} re-decoded from CBOR: {e}"));
    assert_eq!(first, again, "{json} decodes differently once written as CBOR");
    // Query cannot say everything JSON can (see `query_form`): compare with what it can say.
    let flavour = Flavour::of(model);
    let sayable = query_form(model, op.input, &json, flavour);
    let Ok(first) = estiba_api::decode_value::<T>(sayable.clone(), style) else { return Ok(()) };
    let params = query::to_params(model, op, &sayable, flavour);
    let back = query::to_value(model, op.input, &params, flavour)
        .unwrap_or_else(|e| panic!("the codec's own Query parameters {params:?}: {e}"));
    let again: T =
        estiba_api::decode_value(back, style).unwrap_or_else(|e| panic!("{json} re-decoded from {params:?}: {e}"));
    assert_eq!(first, again, "{sayable} decodes differently once written as Query parameters {params:?}");
    Ok(())
}

/// The JSON form of an input as far as Query can carry it: no members the shape lacks (Query
/// ignores them), no empty structures or maps and no list of nothing but those (they write no
/// parameter), no nulls, no empty lists in EC2 (which writes none either), and timestamps in
/// whole milliseconds between 1970 and 9999 (Query's ISO 8601 form, as `format_iso8601`
/// writes it).
pub fn query_form(model: &Model, shape: Option<ShapeId>, v: &Value, flavour: Flavour) -> Value {
    match shape {
        Some(shape) => sayable(model, shape, v, flavour).unwrap_or_else(|| Value::Object(Map::new())),
        None => v.clone(),
    }
}

/// [`query_form`] of one value; `None` when Query writes nothing for it.
fn sayable(model: &Model, shape: ShapeId, v: &Value, flavour: Flavour) -> Option<Value> {
    Some(match (&model.shape(shape).kind, v) {
        (_, Value::Null) => return None,
        (Kind::Structure(members), Value::Object(o)) => {
            let out: Map<_, _> = o
                .iter()
                .filter_map(|(k, x)| {
                    let m = members.iter().find(|m| m.name == k)?;
                    Some((k.clone(), sayable(model, m.shape, x, flavour)?))
                })
                .collect();
            if out.is_empty() {
                return None;
            }
            Value::Object(out)
        }
        (Kind::List { member, .. }, Value::Array(items)) => {
            let out: Vec<_> = items.iter().filter_map(|x| sayable(model, *member, x, flavour)).collect();
            if out.is_empty() && (flavour == Flavour::Ec2 || !items.is_empty()) {
                return None;
            }
            Value::Array(out)
        }
        (Kind::Map { value, .. }, Value::Object(o)) => {
            let out: Map<_, _> =
                o.iter().filter_map(|(k, x)| Some((k.clone(), sayable(model, *value, x, flavour)?))).collect();
            if out.is_empty() {
                return None;
            }
            Value::Object(out)
        }
        (Kind::Timestamp, Value::Number(n)) => {
            let t = n
                .as_f64()
                .filter(|t| *t > 0.0)
                .map_or(0.0, |t| ((t * 1000.0).round() / 1000.0).min(253_402_300_799.999));
            Value::Number(Number::from_f64(t).expect("finite"))
        }
        _ => v.clone(),
    })
}

/// A body to decode: AWS JSON bytes, or the JSON form built by the Query or CBOR codec.
pub enum Body<'a> {
    Json(&'a [u8]),
    Value(serde_json::Value),
}

macro_rules! typed {
    ($model:expr, $op:expr, $body:expr; $($svc:ident :: $name:literal => $ty:ident),* $(,)?) => {
        match ($model.module, $op.name) {
            $((stringify!($svc), $name) => Some(decode_checked::<estiba_api::$svc::$ty>($model, $op, $body)),)*
            _ => None,
        }
    };
}

/// Decodes `body` into the typed input of `op` when it is one of the operations listed here
/// (the ones with the deepest inputs, per service), checked across protocols. `None` for the
/// others.
pub fn decode_typed(model: &Model, op: &OperationSchema, body: Body) -> Option<Result<(), DecodeError>> {
    typed!(model, op, body;
        ecs::"RegisterTaskDefinition" => RegisterTaskDefinitionRequest,
        ecs::"CreateService" => CreateServiceRequest,
        ecs::"UpdateService" => UpdateServiceRequest,
        ecs::"RunTask" => RunTaskRequest,
        ecr::"PutImage" => PutImageRequest,
        ec2::"DescribeSubnets" => DescribeSubnetsRequest,
        elbv2::"CreateRule" => CreateRuleInput,
        elbv2::"ModifyRule" => ModifyRuleInput,
        elbv2::"CreateTargetGroup" => CreateTargetGroupInput,
        servicediscovery::"CreateService" => CreateServiceRequest,
        logs::"PutLogEvents" => PutLogEventsRequest,
        logs::"StartQuery" => StartQueryRequest,
        logs::"PutMetricFilter" => PutMetricFilterRequest,
        cloudwatch::"PutMetricData" => PutMetricDataInput,
        cloudwatch::"GetMetricData" => GetMetricDataInput,
        cloudwatch::"PutMetricAlarm" => PutMetricAlarmInput,
        application_autoscaling::"PutScalingPolicy" => PutScalingPolicyRequest,
        ssm::"PutParameter" => PutParameterRequest,
        secretsmanager::"CreateSecret" => CreateSecretRequest,
    )
}
