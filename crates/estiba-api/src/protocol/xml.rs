//! XML answers of the Query and EC2 protocols, written from the JSON form of an operation's
//! output by walking the model's shapes. Tags are written straight into the answer's buffer
//! (element names come from the model, never from input); text and attribute values go through
//! quick-xml's escaping. The tests read answers back ([`read`]) with quick-xml's reader to check
//! them against what clients parse.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::format_iso8601;
use crate::schema::{Kind, Member, Model, ShapeId};

/// An answer being written. quick-xml's event writer went through an event and a `BytesStart`
/// per element; an answer's elements are the model's own names, so this writes them as they
/// are, which was a measurable part of a small Query answer's cost.
pub(crate) struct Xml {
    out: Vec<u8>,
}

impl Xml {
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(br#"<?xml version="1.0" encoding="UTF-8"?>"#);
        Xml { out }
    }

    pub fn start(&mut self, name: &str, xmlns: Option<&str>) {
        self.start_suffixed(name, "", xmlns)
    }

    /// The start tag of `name` + `suffix` (`DescribeTargetGroups` + `Response`).
    pub fn start_suffixed(&mut self, name: &str, suffix: &str, xmlns: Option<&str>) {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(suffix.as_bytes());
        if let Some(ns) = xmlns.filter(|n| !n.is_empty()) {
            self.out.extend_from_slice(b" xmlns=\"");
            push_text(&mut self.out, ns);
            self.out.push(b'"');
        }
        self.out.push(b'>');
    }

    pub fn end(&mut self, name: &str) {
        self.end_suffixed(name, "")
    }

    pub fn end_suffixed(&mut self, name: &str, suffix: &str) {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(suffix.as_bytes());
        self.out.push(b'>');
    }

    pub fn text_element(&mut self, name: &str, text: &str) {
        self.start(name, None);
        push_text(&mut self.out, text);
        self.end(name);
    }

    fn empty(&mut self, name: &str) {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"/>");
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }

    /// Writes the members of a structure present in `obj`, in the model's order.
    pub fn members(&mut self, model: &Model, members: &[Member], obj: &Map<String, Value>) {
        for m in members {
            match obj.get(m.name) {
                None | Some(Value::Null) => {}
                Some(v) => self.value(model, m.xml, m.shape, m.flattened, v),
            }
        }
    }

    fn value(&mut self, model: &Model, name: &str, shape: ShapeId, flattened: bool, v: &Value) {
        match &model.shape(shape).kind {
            Kind::Structure(members) => {
                self.start(name, None);
                if let Value::Object(o) = v {
                    self.members(model, members, o);
                }
                self.end(name);
            }
            Kind::List { member, member_name } => {
                let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
                if flattened {
                    for it in items {
                        self.value(model, name, *member, false, it);
                    }
                } else if items.is_empty() {
                    self.empty(name);
                } else {
                    self.start(name, None);
                    for it in items {
                        self.value(model, member_name, *member, false, it);
                    }
                    self.end(name);
                }
            }
            Kind::Map { value, key_name, value_name, .. } => {
                let Value::Object(entries) = v else { return };
                if !flattened {
                    self.start(name, None);
                }
                for (k, val) in entries {
                    let entry = if flattened { name } else { "entry" };
                    self.start(entry, None);
                    self.text_element(key_name, k);
                    self.value(model, value_name, *value, false, val);
                    self.end(entry);
                }
                if !flattened {
                    self.end(name);
                }
            }
            kind => self.text_element(name, &scalar_text(kind, v)),
        }
    }
}

/// Appends text escaped for an element (or a constant attribute value: a caller's tab or
/// newline in an attribute would be read back as a space). Answers repeat what callers sent
/// (error messages quote values), so characters XML 1.0 cannot carry become U+FFFD, and a
/// carriage return is written as `&#xD;` (a parser would read a raw one as a line feed).
fn push_text(out: &mut Vec<u8>, text: &str) {
    // Most text (request ids, ARNs, names, numbers) is printable ASCII with nothing to escape:
    // one table look-up per byte tells.
    const PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = b' ';
        while b <= b'~' {
            t[b as usize] = !matches!(b, b'<' | b'>' | b'&' | b'\'' | b'"');
            b += 1;
        }
        t
    };
    if text.bytes().all(|b| PLAIN[b as usize]) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}');
    let clean: Cow<'_, str> = if text.chars().all(allowed) {
        text.into()
    } else {
        text.chars().map(|c| if allowed(c) { c } else { '\u{FFFD}' }).collect::<String>().into()
    };
    let escaped = quick_xml::escape::escape(clean.as_ref());
    if escaped.contains('\r') {
        out.extend_from_slice(escaped.replace('\r', "&#xD;").as_bytes());
    } else {
        out.extend_from_slice(escaped.as_bytes());
    }
}

/// A scalar as XML text: timestamps in ISO 8601, numbers and booleans as JSON writes them.
fn scalar_text<'v>(kind: &Kind, v: &'v Value) -> Cow<'v, str> {
    match (kind, v) {
        (Kind::Timestamp, Value::Number(n)) => format_iso8601(n.as_f64().unwrap_or(0.0)).into(),
        (Kind::Integer | Kind::Long, Value::Number(n)) => match n.as_i64() {
            Some(i) => i.to_string().into(),
            None => (n.as_f64().unwrap_or(0.0) as i64).to_string().into(),
        },
        (_, Value::String(s)) => s.as_str().into(),
        (Kind::Document, v) => v.to_string().into(),
        (_, Value::Null) => "".into(),
        (_, v) => v.to_string().into(),
    }
}

/// Reading answers back, as clients do (the codec tests' round trips).
#[cfg(test)]
pub(crate) mod read {
    use serde_json::{Map, Number, Value};

    use super::super::{parse_iso8601, DecodeError};
    use crate::schema::{Kind, Member, Model, ShapeId};

    /// An element read back: its name, text and children.
    #[derive(Debug, Default)]
    pub(crate) struct Element {
        pub name: String,
        pub text: String,
        pub children: Vec<Element>,
    }

    impl Element {
        pub fn child(&self, name: &str) -> Option<&Element> {
            self.children.iter().find(|c| c.name == name)
        }

        fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
            self.children.iter().filter(move |c| c.name == name)
        }
    }

    /// Parses a document into its root element (namespaces and attributes dropped).
    pub(crate) fn parse(doc: &[u8]) -> Result<Element, DecodeError> {
        use quick_xml::events::Event as E;
        let bad = |e: &dyn std::fmt::Display| DecodeError::Serialization(format!("The XML document is malformed: {e}"));
        let mut reader = quick_xml::Reader::from_reader(doc);
        reader.config_mut().trim_text(true);
        let mut stack: Vec<Element> = vec![Element::default()];
        let mut buf = Vec::new();
        loop {
            let ev = reader.read_event_into(&mut buf).map_err(|e| bad(&e))?;
            match ev {
                E::Start(s) => {
                    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                    stack.push(Element { name, ..Default::default() });
                }
                E::Empty(s) => {
                    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                    stack.last_mut().unwrap().children.push(Element { name, ..Default::default() });
                }
                E::End(_) => {
                    let done = stack.pop().filter(|_| !stack.is_empty()).ok_or_else(|| bad(&"unbalanced end tag"))?;
                    stack.last_mut().unwrap().children.push(done);
                }
                E::Text(t) => stack.last_mut().unwrap().text.push_str(&t.xml_content().map_err(|e| bad(&e))?),
                E::CData(t) => stack.last_mut().unwrap().text.push_str(&String::from_utf8_lossy(&t)),
                E::GeneralRef(r) => {
                    let text = match r.resolve_char_ref().map_err(|e| bad(&e))? {
                        Some(c) => c.to_string(),
                        None => {
                            let name = r.decode().map_err(|e| bad(&e))?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| bad(&format!("unknown entity &{name};")))?
                                .to_owned()
                        }
                    };
                    stack.last_mut().unwrap().text.push_str(&text);
                }
                E::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        let mut top = stack.pop().filter(|_| stack.is_empty()).ok_or_else(|| bad(&"unclosed element"))?;
        match top.children.len() {
            1 => Ok(top.children.pop().unwrap()),
            _ => Err(bad(&"expected one root element")),
        }
    }

    /// The JSON form of a structure's members read from an element.
    pub(crate) fn read_members(model: &Model, members: &[Member], el: &Element) -> Result<Value, DecodeError> {
        let mut out = Map::new();
        for m in members {
            let flat_list = m.flattened && matches!(model.shape(m.shape).kind, Kind::List { .. } | Kind::Map { .. });
            if flat_list {
                let items: Vec<&Element> = el.all(m.xml).collect();
                if !items.is_empty() {
                    out.insert(m.name.into(), read_flat(model, m.shape, &items)?);
                }
            } else if let Some(child) = el.child(m.xml) {
                out.insert(m.name.into(), read(model, m.shape, child)?);
            }
        }
        Ok(Value::Object(out))
    }

    fn read_flat(model: &Model, shape: ShapeId, items: &[&Element]) -> Result<Value, DecodeError> {
        match &model.shape(shape).kind {
            Kind::List { member, .. } => {
                Ok(Value::Array(items.iter().map(|e| read(model, *member, e)).collect::<Result<_, _>>()?))
            }
            Kind::Map { value, key_name, value_name, .. } => map_entries(model, *value, key_name, value_name, items),
            _ => read(model, shape, items[0]),
        }
    }

    fn map_entries(
        model: &Model,
        value: ShapeId,
        key_name: &str,
        value_name: &str,
        entries: &[&Element],
    ) -> Result<Value, DecodeError> {
        let mut out = Map::new();
        for e in entries {
            let k = e.child(key_name).map(|k| k.text.clone()).unwrap_or_default();
            let v = match e.child(value_name) {
                Some(v) => read(model, value, v)?,
                None => Value::Null,
            };
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }

    fn read(model: &Model, shape: ShapeId, el: &Element) -> Result<Value, DecodeError> {
        let bad =
            |what: &str| DecodeError::Serialization(format!("'{}' is not a valid {what}: {:?}", el.name, el.text));
        Ok(match &model.shape(shape).kind {
            Kind::Structure(members) => read_members(model, members, el)?,
            Kind::List { member, member_name } => {
                Value::Array(el.all(member_name).map(|e| read(model, *member, e)).collect::<Result<_, _>>()?)
            }
            Kind::Map { value, key_name, value_name, .. } => {
                let entries: Vec<&Element> = el.all("entry").collect();
                map_entries(model, *value, key_name, value_name, &entries)?
            }
            Kind::String | Kind::Blob => Value::String(el.text.clone()),
            Kind::Boolean => Value::Bool(match el.text.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad("boolean")),
            }),
            Kind::Integer | Kind::Long => Value::from(el.text.parse::<i64>().map_err(|_| bad("integer"))?),
            Kind::Float | Kind::Double => Number::from_f64(el.text.parse::<f64>().map_err(|_| bad("number"))?)
                .map(Value::Number)
                .ok_or_else(|| bad("number"))?,
            Kind::Timestamp => Value::from(parse_iso8601(&el.text).ok_or_else(|| bad("timestamp"))?),
            Kind::Document => serde_json::from_str(&el.text).map_err(|_| bad("document"))?,
        })
    }
}
