//! Support types used by the generated shapes: timestamps, blobs, and model checks.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// AWS JSON 1.1 timestamps are seconds since the epoch, as a JSON number.
pub type Timestamp = f64;

/// A blob: raw bytes, base64 on the wire.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Blob)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// Checks the model's constraints (lengths, ranges, patterns) that serde does not.
pub trait Validate {
    fn validate(&self, v: &mut Validator);
}

/// Collects constraint violations with the member path where each happened, and formats
/// them the way AWS does: `1 validation error detected: Value '300' at 'count' failed to
/// satisfy constraint: Member must have value less than or equal to 10`.
#[derive(Default)]
pub struct Validator {
    path: Vec<Segment>,
    errors: Vec<String>,
    /// Member names start in lower case in the path (Query services' messages).
    pub lower_first: bool,
}

enum Segment {
    Member(&'static str),
    Index(usize),
    Key,
    Value,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn enter(&mut self, member: &'static str) {
        self.path.push(Segment::Member(member));
    }

    pub fn enter_index(&mut self, i: usize) {
        self.path.push(Segment::Index(i));
    }

    pub fn enter_key(&mut self) {
        self.path.push(Segment::Key);
    }

    pub fn enter_value(&mut self) {
        self.path.push(Segment::Value);
    }

    pub fn leave(&mut self) {
        self.path.pop();
    }

    /// The current member path in AWS's form: `tags.2.member.key`.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            if !out.is_empty() {
                out.push('.');
            }
            match seg {
                Segment::Member(m) if self.lower_first => {
                    out.push_str(&crate::protocol::styled(m, crate::protocol::PathStyle::LowerFirst))
                }
                Segment::Member(m) => out.push_str(m),
                Segment::Index(i) => {
                    out.push_str(&(i + 1).to_string());
                    out.push_str(".member");
                }
                Segment::Key => out.push_str("key"),
                Segment::Value => out.push_str("value"),
            }
        }
        out
    }

    pub fn error(&mut self, value: &str, constraint: &str) {
        let shown = if value.chars().count() > 256 {
            let cut: String = value.chars().take(256).collect();
            format!("{cut}...")
        } else {
            value.to_owned()
        };
        self.errors.push(format!("Value '{shown}' at '{}' failed to satisfy constraint: {constraint}", self.path()));
    }

    pub fn length(&mut self, len: usize, min: Option<u64>, max: Option<u64>, value: impl FnOnce() -> String) {
        if let Some(min) = min.filter(|&m| (len as u64) < m) {
            self.error(&value(), &format!("Member must have length greater than or equal to {min}"));
        } else if let Some(max) = max.filter(|&m| (len as u64) > m) {
            self.error(&value(), &format!("Member must have length less than or equal to {max}"));
        }
    }

    pub fn range(&mut self, x: f64, min: Option<f64>, max: Option<f64>, value: impl FnOnce() -> String) {
        if let Some(min) = min.filter(|&m| x < m) {
            self.error(&value(), &format!("Member must have value greater than or equal to {}", num(min)));
        } else if let Some(max) = max.filter(|&m| x > m) {
            self.error(&value(), &format!("Member must have value less than or equal to {}", num(max)));
        }
    }

    pub fn pattern(&mut self, x: &str, re: &regex::Regex, pattern: &str) {
        if !re.is_match(x) {
            self.error(x, &format!("Member must satisfy regular expression pattern: {pattern}"));
        }
    }

    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The AWS message for all errors found, or `None` when the value is valid.
    pub fn finish(self) -> Option<String> {
        let n = self.errors.len();
        if n == 0 {
            return None;
        }
        Some(format!("{n} validation error{} detected: {}", if n == 1 { "" } else { "s" }, self.errors.join("; ")))
    }
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, v: &mut Validator) {
        if let Some(x) = self {
            x.validate(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_message() {
        let mut v = Validator::new();
        v.enter("tags");
        v.enter_index(1);
        v.enter("key");
        v.length(200, Some(1), Some(128), || "k".repeat(3));
        v.leave();
        v.leave();
        v.leave();
        v.enter("count");
        v.range(11.0, Some(1.0), Some(10.0), || "11".into());
        assert_eq!(
            v.finish().unwrap(),
            "2 validation errors detected: Value 'kkk' at 'tags.2.member.key' failed to satisfy \
             constraint: Member must have length less than or equal to 128; Value '11' at \
             'count' failed to satisfy constraint: Member must have value less than or equal to 10"
        );
    }
}

#[cfg(test)]
mod lookaround_tests {
    use crate::servicediscovery::{CreateHttpNamespaceRequest, CreatePrivateDnsNamespaceRequest, CreateServiceRequest};

    /// Model patterns with lookaround compile (the generator drops the lookaround groups,
    /// which the regex crate has not) and still check the rest.
    #[test]
    fn patterns_with_lookaround_check_what_remains() {
        assert!(crate::decode::<CreateHttpNamespaceRequest>(br#"{"Name":"shop"}"#).is_ok());
        assert!(crate::decode::<CreatePrivateDnsNamespaceRequest>(br#"{"Name":"a b","Vpc":"v"}"#).is_err());
        assert!(crate::decode::<CreateServiceRequest>(br#"{"Name":"web-1"}"#).is_ok());
        assert!(crate::decode::<CreateServiceRequest>(br#"{"Name":"-web"}"#).is_err());
    }
}
