//! The AWS wire protocols: request decoding with AWS's error kinds and error bodies for AWS
//! JSON 1.0 and 1.1 (here), AWS Query and its EC2 flavour ([`query`]) and Smithy RPC v2 CBOR
//! ([`cbor`]); and the SigV4 credential scope that carries the caller's access key, region
//! and service.
//!
//! Every protocol decodes into the same generated types: JSON bodies directly, the others
//! through the JSON form of the input that their codec builds from the model's shapes
//! ([`decode_value`]). Answers are written as JSON by the handlers and translated the same way.

use serde::de::DeserializeOwned;

use crate::shape::{Validate, Validator};

pub mod cbor;
#[cfg(test)]
mod codec_tests;
pub mod eventstream;
pub mod query;
mod time;
mod xml;

pub use time::{format_iso8601, parse_iso8601};

/// Why a request body could not become the operation's input.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// The body is not JSON, or a member has the wrong JSON type. AWS answers
    /// `SerializationException`.
    Serialization(String),
    /// A required member is missing. The message is AWS's `1 validation error detected: Value
    /// null at '...' failed to satisfy constraint: Member must not be null`.
    Missing(String),
    /// The body is well-formed but breaks the model: an enum value is unknown, or a length,
    /// range or pattern is not met. The message is AWS's `N validation error(s) detected: ...`
    /// text.
    Validation(String),
    /// A parameter the operation does not have (EC2 refuses them: `UnknownParameter`).
    Unknown(String),
}

/// How member paths are written in validation messages: as the member names (JSON services,
/// `containerDefinitions.1.member.name`) or with their first letter in lower case (services
/// built on AWS Query, `targetGroupArns`, whatever protocol a request of theirs used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathStyle {
    Members,
    LowerFirst,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Serialization(m)
            | DecodeError::Missing(m)
            | DecodeError::Validation(m)
            | DecodeError::Unknown(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes an operation's input and checks the model's constraints.
///
/// An empty body counts as `{}`, as AWS accepts it for operations without required members.
pub fn decode<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, DecodeError> {
    decode_styled(body, PathStyle::Members)
}

/// [`decode`], with member paths in messages written in `style`.
pub fn decode_styled<T: DeserializeOwned + Validate>(body: &[u8], style: PathStyle) -> Result<T, DecodeError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => return Err(classify(e, style)),
    };
    if let Err(e) = de.end() {
        return Err(DecodeError::Serialization(format!("Unexpected content after the JSON document: {e}")));
    }
    validate(value, style)
}

/// Decodes an operation's input from its JSON form (built by the Query or CBOR codec) and
/// checks the model's constraints.
pub fn decode_value<T: DeserializeOwned + Validate>(
    value: serde_json::Value,
    style: PathStyle,
) -> Result<T, DecodeError> {
    match serde_path_to_error::deserialize(value) {
        Ok(v) => validate(v, style),
        Err(e) => Err(classify(e, style)),
    }
}

fn validate<T: Validate>(value: T, style: PathStyle) -> Result<T, DecodeError> {
    let mut v = Validator::new();
    v.lower_first = style == PathStyle::LowerFirst;
    value.validate(&mut v);
    match v.finish() {
        None => Ok(value),
        Some(msg) => Err(DecodeError::Validation(msg)),
    }
}

fn classify(e: serde_path_to_error::Error<serde_json::Error>, style: PathStyle) -> DecodeError {
    use serde_json::error::Category;
    let path = coral_path(e.path(), style);
    let inner = e.inner();
    let msg = inner.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            DecodeError::Serialization(format!("Request body is not valid JSON: {msg}"))
        }
        Category::Data => {
            if let Some(field) = between(&msg, "missing field `", "`") {
                let field = styled(field, style);
                let at = if path.is_empty() { field } else { format!("{path}.{field}") };
                DecodeError::Missing(format!(
                    "1 validation error detected: Value null at '{at}' failed to satisfy constraint: \
                     Member must not be null"
                ))
            } else if let Some(variant) = between(&msg, "unknown variant `", "`") {
                let expected = msg.split("expected ").nth(1).unwrap_or("");
                let allowed: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
                let allowed = allowed.join(", ");
                DecodeError::Validation(format!(
                    "1 validation error detected: Value '{variant}' at '{path}' failed to satisfy \
                     constraint: Member must satisfy enum value set: [{allowed}]"
                ))
            } else {
                let at = if path.is_empty() { String::new() } else { format!(" at '{path}'") };
                DecodeError::Serialization(format!("Unable to parse the request body{at}: {msg}"))
            }
        }
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// A member name as validation messages show it.
pub(crate) fn styled(member: &str, style: PathStyle) -> String {
    match style {
        PathStyle::Members => member.to_owned(),
        PathStyle::LowerFirst => {
            let mut c = member.chars();
            c.next().map(|f| f.to_ascii_lowercase().to_string() + c.as_str()).unwrap_or_default()
        }
    }
}

/// serde's `containerDefinitions[0].name` becomes AWS's `containerDefinitions.1.member.name`.
fn coral_path(path: &serde_path_to_error::Path, style: PathStyle) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        let part = match seg {
            Segment::Seq { index } => format!("{}.member", index + 1),
            Segment::Map { key } => styled(key, style),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => continue,
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&part);
    }
    out
}

/// Encodes an AWS JSON error body: `{"__type": "...", "message": "..."}`.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "__type": code, "message": message })).unwrap()
}

/// The credential scope of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ecs/aws4_request, ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialScope<'a> {
    pub access_key: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl<'a> CredentialScope<'a> {
    pub fn parse(authorization: &'a str) -> Option<Self> {
        let rest = authorization.strip_prefix("AWS4-HMAC-SHA256")?;
        let cred = rest.split(',').find_map(|p| p.trim().strip_prefix("Credential="))?;
        let mut parts = cred.trim().split('/');
        let scope = CredentialScope {
            access_key: parts.next()?,
            date: parts.next()?,
            region: parts.next()?,
            service: parts.next()?,
        };
        (parts.next()? == "aws4_request").then_some(scope)
    }

    /// A 12-digit access key id is taken as the account id (LocalStack's convention).
    pub fn account_from_access_key(&self) -> Option<&'a str> {
        Self::account_of(self.access_key)
    }

    /// The account a 12-digit access key id names (LocalStack's convention), for servers
    /// that do not verify signatures.
    pub fn account_of(access_key: &str) -> Option<&str> {
        (access_key.len() == 12 && access_key.bytes().all(|b| b.is_ascii_digit())).then_some(access_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs;

    #[test]
    fn scope() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-3/ecs/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature=abc";
        let s = CredentialScope::parse(h).unwrap();
        assert_eq!((s.access_key, s.region, s.service), ("AKIDEXAMPLE", "eu-west-3", "ecs"));
        assert_eq!(s.account_from_access_key(), None);
        let h = "AWS4-HMAC-SHA256 Credential=123456789012/20150830/us-east-1/ecs/aws4_request";
        assert_eq!(CredentialScope::parse(h).unwrap().account_from_access_key(), Some("123456789012"));
        assert!(CredentialScope::parse("Basic abc").is_none());
        assert!(CredentialScope::parse("AWS4-HMAC-SHA256 Credential=a/b/c").is_none());
    }

    #[test]
    fn decode_ok_and_empty() {
        let r: ecs::CreateClusterRequest = decode(b"").unwrap();
        assert_eq!(r.cluster_name, None);
        let r: ecs::CreateClusterRequest = decode(br#"{"clusterName":"a","unknownField":1}"#).unwrap();
        assert_eq!(r.cluster_name.as_deref(), Some("a"));
    }

    #[test]
    fn decode_errors() {
        let e = decode::<ecs::CreateClusterRequest>(b"{not json").unwrap_err();
        assert!(matches!(e, DecodeError::Serialization(_)), "{e:?}");
        let e = decode::<ecs::CreateClusterRequest>(br#"{"clusterName": 5}"#).unwrap_err();
        assert!(matches!(e, DecodeError::Serialization(ref m) if m.contains("clusterName")), "{e:?}");
        let e = decode::<ecs::DescribeTaskDefinitionRequest>(b"{}").unwrap_err();
        assert_eq!(
            e,
            DecodeError::Missing(
                "1 validation error detected: Value null at 'taskDefinition' failed to satisfy \
                 constraint: Member must not be null"
                    .into()
            )
        );
        let e = decode::<ecs::RegisterTaskDefinitionRequest>(
            br#"{"family":"f","containerDefinitions":[{"name":"a"},{"portMappings":[{"protocol":"sctp"}]}]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(e, DecodeError::Validation(ref m) if m.contains("'sctp' at 'containerDefinitions.2.member.portMappings.1.member.protocol'") && m.contains("[tcp, udp]")),
            "{e:?}"
        );
        let e = decode::<ecs::ListTasksRequest>(br#"{"desiredStatus":"DONE"}"#).unwrap_err();
        assert!(matches!(e, DecodeError::Validation(ref m) if m.contains("RUNNING, PENDING, STOPPED")), "{e:?}");
        let long = "k".repeat(200);
        let body = format!(r#"{{"resourceArn":"x","tags":[{{"key":"{long}","value":"v"}}]}}"#);
        let e = decode::<ecs::TagResourceRequest>(body.as_bytes()).unwrap_err();
        assert!(
            matches!(e, DecodeError::Validation(ref m) if m.contains("at 'tags.1.member.key'") && m.contains("less than or equal to 128")),
            "{e:?}"
        );
        let e = decode::<ecs::CreateClusterRequest>(br#"{"clusterName":"a"} trailing"#).unwrap_err();
        assert!(matches!(e, DecodeError::Serialization(_)), "{e:?}");
    }
}
