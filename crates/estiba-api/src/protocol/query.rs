//! The AWS Query protocol and its EC2 flavour.
//!
//! A request is a form-encoded body (`Action=DescribeTargetGroups&Version=2015-12-01&...`).
//! Members are named by their query name; nested members join with `.`; lists are
//! `Name.member.N` (EC2: `Name.N`; flattened lists: `Name.N`), maps `Name.entry.N.key` and
//! `Name.entry.N.value`, timestamps ISO 8601, booleans `true` / `false`, blobs base64.
//!
//! An answer is XML: `<OpResponse xmlns=...><OpResult>members</OpResult><ResponseMetadata>
//! <RequestId>...` for Query, `<OpResponse xmlns=...><requestId>...</requestId>members` for
//! EC2, whose lists hold `item` elements. Errors are `<ErrorResponse><Error><Type>Sender
//! </Type><Code>...` (Query) or `<Response><Errors><Error><Code>...` (EC2).

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

#[cfg(test)]
use super::xml;
use super::xml::Xml;
use super::{parse_iso8601, DecodeError};
use crate::schema::{Kind, Member, Model, OperationSchema, Protocol, ShapeId};

/// The flavour of Query a service speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Query,
    Ec2,
}

impl Flavour {
    pub fn of(model: &Model) -> Flavour {
        if model.speaks(Protocol::Ec2) {
            Flavour::Ec2
        } else {
            Flavour::Query
        }
    }
}

/// A request's parameters, in the order sent.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(body: &[u8]) -> Params {
        Params(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parameters as a tree: `A.member.1.B=x` is `A → member → 1 → B = x`.
#[derive(Default, Debug)]
struct Node<'a> {
    value: Option<&'a str>,
    children: BTreeMap<&'a str, Node<'a>>,
}

impl<'a> Node<'a> {
    fn of(params: &'a Params) -> Node<'a> {
        let mut root = Node::default();
        for (k, v) in &params.0 {
            let mut n = &mut root;
            for part in k.split('.') {
                n = n.children.entry(part).or_default();
            }
            n.value = Some(v);
        }
        root
    }

    /// Children named `1`, `2`, ... in numeric order.
    fn numbered(&self) -> Vec<&Node<'a>> {
        let mut items: Vec<(u32, &Node<'a>)> =
            self.children.iter().filter_map(|(k, n)| Some((k.parse::<u32>().ok()?, n))).collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, n)| n).collect()
    }
}

/// The JSON form of an operation's input from its parameters (`Action` and `Version` aside).
/// EC2 refuses parameters the operation does not have; Query ignores them.
pub fn to_value(
    model: &Model,
    input: Option<ShapeId>,
    params: &Params,
    flavour: Flavour,
) -> Result<Value, DecodeError> {
    let root = Node::of(params);
    let Some(shape) = input else { return Ok(Value::Object(Map::new())) };
    let Kind::Structure(members) = &model.shape(shape).kind else {
        return Err(DecodeError::Serialization("the operation's input is not a structure".into()));
    };
    if flavour == Flavour::Ec2 {
        for name in root.children.keys() {
            if !matches!(*name, "Action" | "Version") && !members.iter().any(|m| m.query == *name) {
                return Err(DecodeError::Unknown(format!("The parameter {name} is not recognized")));
            }
        }
    }
    structure(model, members, &root, flavour, "")
}

fn structure(
    model: &Model,
    members: &[Member],
    node: &Node,
    flavour: Flavour,
    path: &str,
) -> Result<Value, DecodeError> {
    let mut out = Map::new();
    for m in members {
        if let Some(child) = node.children.get(m.query) {
            let p = if path.is_empty() { m.query.to_owned() } else { format!("{path}.{}", m.query) };
            out.insert(m.name.into(), convert(model, m.shape, child, m.flattened, flavour, &p)?);
        }
    }
    Ok(Value::Object(out))
}

fn convert(
    model: &Model,
    shape: ShapeId,
    node: &Node,
    flattened: bool,
    flavour: Flavour,
    path: &str,
) -> Result<Value, DecodeError> {
    let scalar =
        || node.value.ok_or_else(|| DecodeError::Serialization(format!("The parameter {path} must have a value")));
    let bad = |what: &str, v: &str| {
        DecodeError::Serialization(format!("Value '{v}' for parameter {path} is not a valid {what}"))
    };
    Ok(match &model.shape(shape).kind {
        Kind::Structure(members) => structure(model, members, node, flavour, path)?,
        Kind::List { member, member_name } => {
            let (items, base) = if flavour == Flavour::Ec2 || flattened {
                (Some(node), path.to_owned())
            } else {
                // botocore names list items by the member's locationName, else `member`.
                (
                    node.children.get(member_name).or_else(|| node.children.get("member")),
                    format!("{path}.{member_name}"),
                )
            };
            let mut out = Vec::new();
            for (i, it) in items.map(|n| n.numbered()).unwrap_or_default().into_iter().enumerate() {
                out.push(convert(model, *member, it, false, flavour, &format!("{base}.{}", i + 1))?);
            }
            Value::Array(out)
        }
        Kind::Map { value, key_name, value_name, .. } => {
            let entries = if flattened { Some(node) } else { node.children.get("entry") };
            let mut out = Map::new();
            for (i, e) in entries.map(|n| n.numbered()).unwrap_or_default().into_iter().enumerate() {
                let p = format!("{path}.entry.{}", i + 1);
                let k = e.children.get(key_name).and_then(|k| k.value).ok_or_else(|| {
                    DecodeError::Serialization(format!("The parameter {p}.{key_name} must have a value"))
                })?;
                let v = match e.children.get(value_name) {
                    Some(v) => convert(model, *value, v, false, flavour, &format!("{p}.{value_name}"))?,
                    None => Value::Null,
                };
                out.insert(k.to_owned(), v);
            }
            Value::Object(out)
        }
        Kind::String | Kind::Blob => Value::String(scalar()?.to_owned()),
        Kind::Boolean => match scalar()? {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            v => return Err(bad("boolean", v)),
        },
        Kind::Integer | Kind::Long => {
            let v = scalar()?;
            Value::from(v.trim().parse::<i64>().map_err(|_| bad("integer", v))?)
        }
        Kind::Float | Kind::Double => {
            let v = scalar()?;
            let f = v.trim().parse::<f64>().map_err(|_| bad("number", v))?;
            Value::Number(Number::from_f64(f).ok_or_else(|| bad("number", v))?)
        }
        Kind::Timestamp => {
            let v = scalar()?;
            Value::from(parse_iso8601(v).ok_or_else(|| bad("timestamp", v))?)
        }
        Kind::Document => {
            let v = scalar()?;
            serde_json::from_str(v).map_err(|_| bad("JSON document", v))?
        }
    })
}

/// The parameters of a request for `op` with the JSON form `input`, as clients send them (the
/// codec tests' round trips and the fuzz targets, built with `--cfg fuzzing`).
#[cfg(any(test, fuzzing))]
pub fn to_params(model: &Model, op: &OperationSchema, input: &Value, flavour: Flavour) -> Params {
    let mut out = vec![("Action".to_owned(), op.name.to_owned()), ("Version".to_owned(), model.api_version.to_owned())];
    if let (Some(shape), Value::Object(o)) = (op.input, input) {
        if let Kind::Structure(members) = &model.shape(shape).kind {
            params_of_members(model, members, o, flavour, "", &mut out);
        }
    }
    Params(out)
}

#[cfg(any(test, fuzzing))]
fn params_of_members(
    model: &Model,
    members: &[Member],
    o: &Map<String, Value>,
    flavour: Flavour,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    for m in members {
        if let Some(v) = o.get(m.name).filter(|v| !v.is_null()) {
            let p = if prefix.is_empty() { m.query.to_owned() } else { format!("{prefix}.{}", m.query) };
            params_of(model, m.shape, v, m.flattened, flavour, &p, out);
        }
    }
}

#[cfg(any(test, fuzzing))]
fn params_of(
    model: &Model,
    shape: ShapeId,
    v: &Value,
    flattened: bool,
    flavour: Flavour,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    match (&model.shape(shape).kind, v) {
        (Kind::Structure(members), Value::Object(o)) => params_of_members(model, members, o, flavour, prefix, out),
        (Kind::List { member, member_name }, Value::Array(items)) => {
            if items.is_empty() {
                if flavour == Flavour::Query {
                    out.push((prefix.to_owned(), String::new()));
                }
                return;
            }
            let base = if flavour == Flavour::Ec2 || flattened {
                prefix.to_owned()
            } else {
                format!("{prefix}.{member_name}")
            };
            for (i, it) in items.iter().enumerate() {
                params_of(model, *member, it, false, flavour, &format!("{base}.{}", i + 1), out);
            }
        }
        (Kind::Map { value, key_name, value_name, .. }, Value::Object(entries)) => {
            let base = if flattened { prefix.to_owned() } else { format!("{prefix}.entry") };
            for (i, (k, val)) in entries.iter().enumerate() {
                out.push((format!("{base}.{}.{key_name}", i + 1), k.clone()));
                params_of(model, *value, val, false, flavour, &format!("{base}.{}.{value_name}", i + 1), out);
            }
        }
        (Kind::Timestamp, Value::Number(n)) => {
            out.push((prefix.to_owned(), super::format_iso8601(n.as_f64().unwrap_or(0.0))))
        }
        (_, Value::String(s)) => out.push((prefix.to_owned(), s.clone())),
        (_, other) => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// The XML answer of `op` from the JSON form of its output.
pub fn response(model: &Model, op: &OperationSchema, output: &Value, request_id: &str, flavour: Flavour) -> Vec<u8> {
    let mut x = Xml::new();
    x.start_suffixed(op.name, "Response", Some(model.xml_namespace));
    let members = match op.output.map(|s| &model.shape(s).kind) {
        Some(Kind::Structure(m)) => *m,
        _ => &[],
    };
    let empty = Map::new();
    let obj = output.as_object().unwrap_or(&empty);
    match flavour {
        Flavour::Ec2 => {
            x.text_element("requestId", request_id);
            x.members(model, members, obj);
        }
        Flavour::Query => {
            if !op.result_wrapper.is_empty() {
                x.start(op.result_wrapper, None);
                x.members(model, members, obj);
                x.end(op.result_wrapper);
            }
            x.start("ResponseMetadata", None);
            x.text_element("RequestId", request_id);
            x.end("ResponseMetadata");
        }
    }
    x.end_suffixed(op.name, "Response");
    x.finish()
}

/// An error answer: `code` and `message`, `Sender` or `Receiver`.
pub fn error(
    flavour: Flavour,
    xmlns: &str,
    code: &str,
    message: &str,
    sender_fault: bool,
    request_id: &str,
) -> Vec<u8> {
    let mut x = Xml::new();
    match flavour {
        Flavour::Query => {
            x.start("ErrorResponse", Some(xmlns));
            x.start("Error", None);
            x.text_element("Type", if sender_fault { "Sender" } else { "Receiver" });
            x.text_element("Code", code);
            x.text_element("Message", message);
            x.end("Error");
            x.text_element("RequestId", request_id);
            x.end("ErrorResponse");
        }
        Flavour::Ec2 => {
            x.start("Response", None);
            x.start("Errors", None);
            x.start("Error", None);
            x.text_element("Code", code);
            x.text_element("Message", message);
            x.end("Error");
            x.end("Errors");
            x.text_element("RequestID", request_id);
            x.end("Response");
        }
    }
    x.finish()
}

/// Reads an answer back into the JSON form of `op`'s output, as clients do (the codec tests).
/// An error answer becomes `Err` with its code and message.
#[cfg(test)]
pub fn parse_response(model: &Model, op: &OperationSchema, doc: &[u8], flavour: Flavour) -> Result<Value, DecodeError> {
    let root = xml::read::parse(doc)?;
    if root.name == "ErrorResponse" || root.name == "Response" {
        let e = root.child("Error").or_else(|| root.child("Errors").and_then(|e| e.child("Error")));
        let field = |n: &str| e.and_then(|e| e.child(n)).map(|c| c.text.clone()).unwrap_or_default();
        return Err(DecodeError::Serialization(format!("{}: {}", field("Code"), field("Message"))));
    }
    let members = match op.output.map(|s| &model.shape(s).kind) {
        Some(Kind::Structure(m)) => *m,
        _ => return Ok(Value::Object(Map::new())),
    };
    let body = match flavour {
        Flavour::Ec2 => &root,
        Flavour::Query => match root.child(op.result_wrapper) {
            Some(r) => r,
            None => return Ok(Value::Object(Map::new())),
        },
    };
    xml::read::read_members(model, members, body)
}
