//! Smithy RPC v2 CBOR: `POST /service/<target prefix>/operation/<Operation>` with a CBOR map
//! keyed by member names (RFC 8949, via ciborium). Timestamps are tag 1 (seconds since the
//! epoch), blobs byte strings. Errors are a map with `__type` and `message`.
//!
//! The codec translates between CBOR and the JSON form of a shape, which the generated types
//! read and write; timestamps are numbers and blobs base64 strings there.

use base64::Engine;
use ciborium::value::{Integer, Value as Cbor};
use serde_json::{Map, Number, Value};

use super::DecodeError;
use crate::schema::{Kind, Model, ShapeId};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The JSON form of an operation's input from a CBOR body (empty means no members).
pub fn to_value(model: &Model, input: Option<ShapeId>, body: &[u8]) -> Result<Value, DecodeError> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let cbor: Cbor = ciborium::de::from_reader(body)
        .map_err(|e| DecodeError::Serialization(format!("The request body is not valid CBOR: {e}")))?;
    match input {
        Some(shape) => convert_in(model, shape, &cbor, ""),
        None => Ok(Value::Object(Map::new())),
    }
}

fn convert_in(model: &Model, shape: ShapeId, v: &Cbor, path: &str) -> Result<Value, DecodeError> {
    let bad = |what: &str| {
        let at = if path.is_empty() { String::new() } else { format!(" at '{path}'") };
        DecodeError::Serialization(format!("Expected {what}{at}"))
    };
    let v = match v {
        // Tags other than epoch time carry no meaning for these shapes: look through them.
        Cbor::Tag(t, inner) if *t != 1 => inner.as_ref(),
        v => v,
    };
    Ok(match (&model.shape(shape).kind, v) {
        (Kind::Structure(members), Cbor::Map(entries)) => {
            let mut out = Map::new();
            for (k, val) in entries {
                let Cbor::Text(k) = k else { return Err(bad("a map with text keys")) };
                if matches!(val, Cbor::Null) {
                    continue;
                }
                // Unknown members are ignored, as in JSON.
                if let Some(m) = members.iter().find(|m| m.name == k) {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    out.insert(k.clone(), convert_in(model, m.shape, val, &p)?);
                }
            }
            Value::Object(out)
        }
        (Kind::List { member, .. }, Cbor::Array(items)) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, it)| convert_in(model, *member, it, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        (Kind::Map { value, .. }, Cbor::Map(entries)) => {
            let mut out = Map::new();
            for (k, val) in entries {
                let Cbor::Text(k) = k else { return Err(bad("a map with text keys")) };
                out.insert(k.clone(), convert_in(model, *value, val, &format!("{path}.{k}"))?);
            }
            Value::Object(out)
        }
        (Kind::String, Cbor::Text(s)) => Value::String(s.clone()),
        (Kind::Boolean, Cbor::Bool(b)) => Value::Bool(*b),
        (Kind::Integer | Kind::Long, Cbor::Integer(i)) => {
            Value::from(i64::try_from(i128::from(*i)).map_err(|_| bad("a 64-bit integer"))?)
        }
        (Kind::Float | Kind::Double, Cbor::Integer(i)) => Value::from(i128::from(*i) as f64),
        (Kind::Float | Kind::Double, Cbor::Float(f)) => {
            Value::Number(Number::from_f64(*f).ok_or_else(|| bad("a finite number"))?)
        }
        (Kind::Timestamp, Cbor::Tag(1, t)) => epoch(t).ok_or_else(|| bad("a timestamp"))?,
        (Kind::Timestamp, t) => epoch(t).ok_or_else(|| bad("a timestamp"))?,
        (Kind::Blob, Cbor::Bytes(b)) => Value::String(B64.encode(b)),
        (Kind::Document, v) => to_json(v).ok_or_else(|| bad("a document"))?,
        (Kind::Structure(_) | Kind::Map { .. }, _) => return Err(bad("a map")),
        (Kind::List { .. }, _) => return Err(bad("an array")),
        (Kind::String, _) => return Err(bad("a text string")),
        (Kind::Boolean, _) => return Err(bad("a boolean")),
        (Kind::Integer | Kind::Long, _) => return Err(bad("an integer")),
        (Kind::Float | Kind::Double, _) => return Err(bad("a number")),
        (Kind::Blob, _) => return Err(bad("a byte string")),
    })
}

fn epoch(t: &Cbor) -> Option<Value> {
    match t {
        Cbor::Integer(i) => Some(Value::from(i128::from(*i) as f64)),
        Cbor::Float(f) => Number::from_f64(*f).map(Value::Number),
        _ => None,
    }
}

/// Free-form CBOR as JSON (documents only).
fn to_json(v: &Cbor) -> Option<Value> {
    Some(match v {
        Cbor::Null => Value::Null,
        Cbor::Bool(b) => Value::Bool(*b),
        Cbor::Integer(i) => Value::from(i64::try_from(i128::from(*i)).ok()?),
        Cbor::Float(f) => Value::Number(Number::from_f64(*f)?),
        Cbor::Text(s) => Value::String(s.clone()),
        Cbor::Array(a) => Value::Array(a.iter().map(to_json).collect::<Option<_>>()?),
        Cbor::Map(m) => {
            Value::Object(m.iter().map(|(k, v)| Some((k.as_text()?.to_owned(), to_json(v)?))).collect::<Option<_>>()?)
        }
        _ => return None,
    })
}

/// The CBOR body of an answer (or, for clients, a request) from the JSON form of `shape`.
pub fn from_value(model: &Model, shape: Option<ShapeId>, v: &Value) -> Vec<u8> {
    let cbor = match shape {
        Some(s) => convert_out(model, s, v),
        None => Cbor::Map(vec![]),
    };
    let mut out = Vec::with_capacity(256);
    ciborium::ser::into_writer(&cbor, &mut out).expect("writing to a Vec");
    out
}

fn convert_out(model: &Model, shape: ShapeId, v: &Value) -> Cbor {
    match (&model.shape(shape).kind, v) {
        (Kind::Structure(members), Value::Object(o)) => Cbor::Map(
            members
                .iter()
                .filter_map(|m| {
                    let val = o.get(m.name).filter(|v| !v.is_null())?;
                    Some((Cbor::Text(m.name.into()), convert_out(model, m.shape, val)))
                })
                .collect(),
        ),
        (Kind::List { member, .. }, Value::Array(items)) => {
            Cbor::Array(items.iter().map(|it| convert_out(model, *member, it)).collect())
        }
        (Kind::Map { value, .. }, Value::Object(o)) => {
            Cbor::Map(o.iter().map(|(k, val)| (Cbor::Text(k.clone()), convert_out(model, *value, val))).collect())
        }
        (Kind::Timestamp, Value::Number(n)) => Cbor::Tag(1, Box::new(number(n))),
        (Kind::Float | Kind::Double, Value::Number(n)) => Cbor::Float(n.as_f64().unwrap_or(0.0)),
        (Kind::Blob, Value::String(s)) => Cbor::Bytes(B64.decode(s).unwrap_or_default()),
        (_, v) => from_json(v),
    }
}

fn number(n: &Number) -> Cbor {
    match n.as_i64() {
        Some(i) => Cbor::Integer(Integer::from(i)),
        None => Cbor::Float(n.as_f64().unwrap_or(0.0)),
    }
}

fn from_json(v: &Value) -> Cbor {
    match v {
        Value::Null => Cbor::Null,
        Value::Bool(b) => Cbor::Bool(*b),
        Value::Number(n) => number(n),
        Value::String(s) => Cbor::Text(s.clone()),
        Value::Array(a) => Cbor::Array(a.iter().map(from_json).collect()),
        Value::Object(o) => Cbor::Map(o.iter().map(|(k, v)| (Cbor::Text(k.clone()), from_json(v))).collect()),
    }
}

/// An error body: `{"__type": type, "message": message}`.
pub fn error_body(type_: &str, message: &str) -> Vec<u8> {
    let v = Cbor::Map(vec![
        (Cbor::Text("__type".into()), Cbor::Text(type_.into())),
        (Cbor::Text("message".into()), Cbor::Text(message.into())),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&v, &mut out).expect("writing to a Vec");
    out
}
