//! CloudWatch Logs Insights queries (StartQuery / GetQueryResults): the query language's
//! basics, parsed once ([`Query::parse`]) and run over events fed one by one
//! ([`Query::runner`], [`Runner::push`], [`Runner::finish`]).
//!
//! Written from the CloudWatch Logs user guide: "CloudWatch Logs Insights query syntax"
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/CWL_QuerySyntax.html>), "Supported
//! logs and discovered fields" (`CWL_AnalyzeLogData-discoverable-fields.html`) and the sample
//! queries (`CWL_QuerySyntax-examples.html`).
//!
//! Supported:
//! - Commands `fields`, `filter`, `stats`, `sort`, `limit`, `display`, `parse` (glob with `*`
//!   and `as`, or a regex with named groups), chained with `|`; lines starting with `#` are
//!   comments; `` `odd-name` `` quotes a field name.
//! - Fields `@timestamp`, `@message`, `@logStream`, `@log`, `@ingestionTime`, and the fields
//!   of a JSON message flattened with dots (`a.b`, array items `a.0.b`; a JSON key starting
//!   with `@` gets another `@`), as Insights discovers them.
//! - Expressions: `= != < <= > >=` (numeric when both sides are numbers, else text),
//!   `+ - * / % ^`, `and or not`, `like "substring"`, `like /regex/`, `=~ /regex/`,
//!   `not like`, `in [..]`, `not in [..]`, and the functions `ispresent isempty isblank
//!   coalesce concat tolower toupper strlen trim ltrim rtrim substr replace strcontains abs
//!   ceil floor greatest least bin datefloor dateceil fromMillis toMillis`.
//! - `stats` with `count(*)`, `count()`, `count(field)`, `count_distinct`, `sum`, `avg`, `min`,
//!   `max`, `earliest`, `latest`, `as` aliases and `by` groups (fields, expressions, `bin(5m)`).
//! - Output values are strings; timestamps in Insights' form `2026-12-01 10:00:00.123` (UTC).
//!
//! Semantics chosen where the guide is silent (AWS may differ): a query without `sort` and
//! without `stats` is sorted `@timestamp desc` (placed before its first `limit`); a query
//! without `limit` returns at most 1000 rows, one with `limit` at most 10,000; `sort x` without
//! a direction is ascending; rows missing a sort key come last; stats rows list the `by`
//! groups first, then the aggregates, and without a `sort` come grouped by `bin(..)`
//! descending when there is one (else in order of first appearance); a query with neither
//! `fields` nor `display` returns `@timestamp` and `@message`; a comparison, `like` or `in`
//! with a missing field is false (also negated); `@log` is `InsightsEvent::log_group` as given
//! (AWS shows `account-id:log-group-name`). Non-stats results in AWS also carry `@ptr`: the
//! caller adds it, this module does not.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use regex::Regex;
use serde_json::Value as Json;

/// A malformed query. `Display` follows the style of AWS's `MalformedQueryException`
/// message ("unexpected symbol found ... at line ... and position ..."); the exact wording AWS
/// uses is not documented, so it is an approximation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A token where it cannot be; `line` and `position` count from 1.
    #[error("unexpected symbol found {found} at line {line} and position {position}")]
    Unexpected { found: String, line: usize, position: usize },
    /// Something well-formed but invalid (a limit out of range, an unknown function, a bad
    /// regex...).
    #[error("{message} at line {line} and position {position}")]
    Invalid { message: String, line: usize, position: usize },
}

type Result<T> = std::result::Result<T, QueryError>;

/// One log event, as the caller's store holds it. Times are milliseconds since the epoch.
pub struct InsightsEvent<'a> {
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub message: &'a str,
    pub log_stream: &'a str,
    pub log_group: &'a str,
}

/// What a query returns: rows of (field, value) in Insights' order, and its statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOutput {
    pub rows: Vec<Vec<(String, String)>>,
    pub records_matched: u64,
    pub records_scanned: u64,
    pub bytes_scanned: u64,
}

/// `2026-12-01 10:00:00.123`: how Insights writes a timestamp (UTC).
pub fn format_timestamp(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

// ---------------------------------------------------------------------------------------
// Values

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    /// Milliseconds since the epoch.
    Time(i64),
    Bool(bool),
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl Val {
    fn text(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(n) => fmt_num(*n),
            Val::Time(t) => format_timestamp(*t),
            Val::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        }
    }

    fn num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.trim().parse().ok().filter(|n: &f64| n.is_finite()),
            Val::Time(t) => Some(*t as f64),
            Val::Bool(b) => Some(f64::from(u8::from(*b))),
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Val::Bool(b) => *b,
            Val::Num(n) => *n != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::Time(_) => true,
        }
    }

    fn time(&self) -> Option<i64> {
        match self {
            Val::Time(t) => Some(*t),
            other => other.num().map(|n| n as i64),
        }
    }
}

/// Numbers compare as numbers, anything else as text.
fn compare(a: &Val, b: &Val) -> Ordering {
    match (a.num(), b.num()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.text().cmp(&b.text()),
    }
}

/// A record: an event's fields, then ephemeral fields and stats results.
type Rec = HashMap<String, Val>;

fn flatten(prefix: &str, v: &Json, out: &mut Rec) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    if k.starts_with('@') {
                        format!("@{k}")
                    } else {
                        k.clone()
                    }
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        Json::String(s) => {
            out.insert(prefix.to_string(), Val::Str(s.clone()));
        }
        Json::Number(n) => {
            let val = n.as_f64().map(Val::Num).unwrap_or_else(|| Val::Str(n.to_string()));
            out.insert(prefix.to_string(), val);
        }
        Json::Bool(b) => {
            out.insert(prefix.to_string(), Val::Str(b.to_string()));
        }
        Json::Null => {}
    }
}

const BUILTINS: [&str; 5] = ["@timestamp", "@message", "@logStream", "@log", "@ingestionTime"];

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum T {
    Ident(String),
    Str(String),
    Num(f64),
    /// A period such as `5m`, in milliseconds.
    Dur(i64),
    Regex(String),
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Pipe,
}

#[derive(Debug, Clone)]
struct Tok {
    t: T,
    at: usize,
    end: usize,
}

fn line_pos(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |i| before[i + 1..].chars().count()) + 1;
    (line, col)
}

fn unexpected_at(text: &str, at: usize, found: &str) -> QueryError {
    let (line, position) = line_pos(text, at);
    QueryError::Unexpected { found: found.to_string(), line, position }
}

fn invalid_at(text: &str, at: usize, message: impl Into<String>) -> QueryError {
    let (line, position) = line_pos(text, at);
    QueryError::Invalid { message: message.into(), line, position }
}

fn period_unit(unit: &str) -> Option<i64> {
    Some(match unit {
        "ms" => 1,
        "s" | "sec" | "second" | "seconds" => 1000,
        "m" | "min" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return None,
    })
}

const OPS: [&str; 13] = ["=~", "!=", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%", "^"];

fn lex(text: &str) -> Result<Vec<Tok>> {
    let b = text.as_bytes();
    let mut out: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        // A `/` opens a regex where a value is expected: at the start, after an operator, an
        // opening bracket, a comma, `like`, or `parse [field]`.
        let regex_here = c == b'/' && {
            let n = out.len();
            let kw =
                |k: usize, w: &str| matches!(out.get(k).map(|t| &t.t), Some(T::Ident(s)) if s.eq_ignore_ascii_case(w));
            match out.last().map(|t| &t.t) {
                None | Some(T::Op(_) | T::LParen | T::LBracket | T::Comma | T::Pipe) => true,
                Some(T::Ident(_)) => kw(n - 1, "like") || kw(n - 1, "parse") || (n >= 2 && kw(n - 2, "parse")),
                _ => false,
            }
        };
        let t = if regex_here {
            i += 1;
            let mut body = String::new();
            loop {
                match b.get(i) {
                    None => return Err(unexpected_at(text, start, "/")),
                    Some(b'\\') if b.get(i + 1) == Some(&b'/') => {
                        body.push('/');
                        i += 2;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        body.push('\\');
                        let ch = text[i + 1..].chars().next().unwrap_or('\\');
                        body.push(ch);
                        i += 1 + ch.len_utf8();
                    }
                    Some(b'/') => {
                        i += 1;
                        break;
                    }
                    Some(_) => {
                        let ch = text[i..].chars().next().unwrap_or(' ');
                        body.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            T::Regex(body)
        } else if c == b'"' || c == b'\'' {
            i += 1;
            let mut s = String::new();
            loop {
                match b.get(i) {
                    None => return Err(unexpected_at(text, start, &text[start..start + 1])),
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        let ch = text[i + 1..].chars().next().unwrap_or('\\');
                        s.push(match ch {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        i += 1 + ch.len_utf8();
                    }
                    Some(_) => {
                        let ch = text[i..].chars().next().unwrap_or(' ');
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            T::Str(s)
        } else if c == b'`' {
            let close = text[i + 1..].find('`').ok_or_else(|| unexpected_at(text, start, "`"))?;
            let name = text[i + 1..i + 1 + close].to_string();
            i += close + 2;
            T::Ident(name)
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let mut j = i + 1;
                if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let num: f64 = text[start..i].parse().map_err(|_| unexpected_at(text, start, &text[start..i]))?;
            let unit_start = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            if i > unit_start {
                let unit = &text[unit_start..i];
                let ms = period_unit(unit).ok_or_else(|| unexpected_at(text, start, &text[start..i]))?;
                T::Dur((num * ms as f64) as i64)
            } else {
                T::Num(num)
            }
        } else if c.is_ascii_alphabetic()
            || c == b'_'
            || c == b'@'
            || (c >= 0x80 && text[i..].chars().next().is_some_and(char::is_alphanumeric))
        {
            // A non-ASCII letter starts a name; any other non-ASCII character is refused below
            // (it used to make an empty name without moving on: a loop without end).
            while i < b.len() {
                let ch = text[i..].chars().next().unwrap_or(' ');
                if ch.is_alphanumeric() || "_.@$".contains(ch) {
                    i += ch.len_utf8();
                } else {
                    break;
                }
            }
            T::Ident(text[start..i].to_string())
        } else {
            i += 1;
            match c {
                b'(' => T::LParen,
                b')' => T::RParen,
                b'[' => T::LBracket,
                b']' => T::RBracket,
                b',' => T::Comma,
                b'|' => T::Pipe,
                _ => {
                    let op = OPS.iter().find(|op| text[start..].starts_with(**op)).ok_or_else(|| {
                        unexpected_at(text, start, &text[start..].chars().take(1).collect::<String>())
                    })?;
                    i = start + op.len();
                    T::Op(op)
                }
            }
        };
        out.push(Tok { t, at: start, end: i });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Expressions

#[derive(Debug, Clone)]
enum Expr {
    Field(String),
    Lit(Val),
    Period(i64),
    Star,
    Neg(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(&'static str, Box<Expr>, Box<Expr>),
    Arith(&'static str, Box<Expr>, Box<Expr>),
    Like { e: Box<Expr>, pat: Pat, negate: bool },
    In { e: Box<Expr>, list: Vec<Expr>, negate: bool },
    Call(String, Vec<Expr>),
}

#[derive(Debug, Clone)]
enum Pat {
    Sub(String),
    Re(Regex, String),
}

const AGGREGATES: [&str; 9] = ["count", "count_distinct", "sum", "avg", "min", "max", "earliest", "latest", "stddev"];
const FUNCTIONS: [&str; 24] = [
    "ispresent",
    "isempty",
    "isblank",
    "coalesce",
    "concat",
    "tolower",
    "toupper",
    "strlen",
    "trim",
    "ltrim",
    "rtrim",
    "substr",
    "replace",
    "strcontains",
    "abs",
    "ceil",
    "floor",
    "greatest",
    "least",
    "bin",
    "datefloor",
    "dateceil",
    "frommillis",
    "tomillis",
];

fn arg_text(args: &[Option<Val>], i: usize) -> Option<String> {
    args.get(i)?.as_ref().map(Val::text)
}

fn arg_num(args: &[Option<Val>], i: usize) -> Option<f64> {
    args.get(i)?.as_ref()?.num()
}

fn trim_with(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let pred = |c: char| chars.map_or(c.is_whitespace(), |set| set.contains(c));
    let s = if left { s.trim_start_matches(pred) } else { s };
    let s = if right { s.trim_end_matches(pred) } else { s };
    s.to_string()
}

impl Expr {
    fn eval(&self, r: &Rec) -> Option<Val> {
        match self {
            Expr::Field(f) => r.get(f).cloned(),
            Expr::Lit(v) => Some(v.clone()),
            Expr::Period(ms) => Some(Val::Num(*ms as f64)),
            Expr::Star => None,
            Expr::Neg(e) => Some(Val::Num(-e.eval(r)?.num()?)),
            Expr::Not(e) => Some(Val::Bool(!e.eval(r).is_some_and(|v| v.truthy()))),
            Expr::And(a, b) => {
                Some(Val::Bool(a.eval(r).is_some_and(|v| v.truthy()) && b.eval(r).is_some_and(|v| v.truthy())))
            }
            Expr::Or(a, b) => {
                Some(Val::Bool(a.eval(r).is_some_and(|v| v.truthy()) || b.eval(r).is_some_and(|v| v.truthy())))
            }
            Expr::Cmp(op, a, b) => {
                let (Some(x), Some(y)) = (a.eval(r), b.eval(r)) else { return Some(Val::Bool(false)) };
                let o = compare(&x, &y);
                Some(Val::Bool(match *op {
                    "=" => o == Ordering::Equal,
                    "!=" => o != Ordering::Equal,
                    "<" => o == Ordering::Less,
                    "<=" => o != Ordering::Greater,
                    ">" => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                }))
            }
            Expr::Arith(op, a, b) => {
                let (x, y) = (a.eval(r)?.num()?, b.eval(r)?.num()?);
                let v = match *op {
                    "+" => x + y,
                    "-" => x - y,
                    "*" => x * y,
                    "/" => x / y,
                    "%" => x % y,
                    _ => x.powf(y),
                };
                v.is_finite().then_some(Val::Num(v))
            }
            Expr::Like { e, pat, negate } => {
                let Some(v) = e.eval(r) else { return Some(Val::Bool(false)) };
                let text = v.text();
                let found = match pat {
                    Pat::Sub(s) => text.contains(s.as_str()),
                    Pat::Re(re, _) => re.is_match(&text),
                };
                Some(Val::Bool(found != *negate))
            }
            Expr::In { e, list, negate } => {
                let Some(v) = e.eval(r) else { return Some(Val::Bool(false)) };
                let found = list.iter().filter_map(|x| x.eval(r)).any(|x| compare(&v, &x) == Ordering::Equal);
                Some(Val::Bool(found != *negate))
            }
            Expr::Call(name, args) => self.call(name, args, r),
        }
    }

    fn call(&self, name: &str, args: &[Expr], r: &Rec) -> Option<Val> {
        if name == "ispresent" {
            return Some(Val::Bool(args.first().and_then(|a| a.eval(r)).is_some()));
        }
        let vals: Vec<Option<Val>> = args.iter().map(|a| a.eval(r)).collect();
        let text0 = || arg_text(&vals, 0);
        Some(match name {
            "isempty" => Val::Bool(text0().is_none_or(|s| s.is_empty())),
            "isblank" => Val::Bool(text0().is_none_or(|s| s.trim().is_empty())),
            "coalesce" => return vals.into_iter().flatten().next(),
            "concat" => Val::Str(vals.iter().flatten().map(Val::text).collect()),
            "tolower" => Val::Str(text0()?.to_lowercase()),
            "toupper" => Val::Str(text0()?.to_uppercase()),
            "strlen" => Val::Num(text0()?.chars().count() as f64),
            "trim" => Val::Str(trim_with(&text0()?, arg_text(&vals, 1).as_deref(), true, true)),
            "ltrim" => Val::Str(trim_with(&text0()?, arg_text(&vals, 1).as_deref(), true, false)),
            "rtrim" => Val::Str(trim_with(&text0()?, arg_text(&vals, 1).as_deref(), false, true)),
            "substr" => {
                let s: Vec<char> = text0()?.chars().collect();
                let start = (arg_num(&vals, 1)?.max(0.0) as usize).min(s.len());
                let len = arg_num(&vals, 2).map_or(s.len() - start, |l| (l.max(0.0) as usize).min(s.len() - start));
                Val::Str(s[start..start + len].iter().collect())
            }
            "replace" => Val::Str(text0()?.replace(&arg_text(&vals, 1)?, &arg_text(&vals, 2)?)),
            "strcontains" => Val::Num(if text0()?.contains(&arg_text(&vals, 1)?) { 1.0 } else { 0.0 }),
            "abs" => Val::Num(arg_num(&vals, 0)?.abs()),
            "ceil" => Val::Num(arg_num(&vals, 0)?.ceil()),
            "floor" => Val::Num(arg_num(&vals, 0)?.floor()),
            "greatest" => Val::Num(vals.iter().flatten().filter_map(Val::num).reduce(f64::max)?),
            "least" => Val::Num(vals.iter().flatten().filter_map(Val::num).reduce(f64::min)?),
            "bin" => {
                let p = arg_num(&vals, 0)? as i64;
                let t = r.get("@timestamp")?.time()?;
                Val::Time(if p > 0 { t.div_euclid(p) * p } else { t })
            }
            "datefloor" | "dateceil" => {
                let t = vals.first()?.as_ref()?.time()?;
                let p = arg_num(&vals, 1)? as i64;
                if p <= 0 {
                    return Some(Val::Time(t));
                }
                let floor = t.div_euclid(p) * p;
                Val::Time(if name == "dateceil" && floor != t { floor + p } else { floor })
            }
            "frommillis" => Val::Time(arg_num(&vals, 0)? as i64),
            "tomillis" => Val::Num(vals.first()?.as_ref()?.time()? as f64),
            _ => return None,
        })
    }

    /// Every field name this expression reads.
    fn fields<'s>(&'s self, out: &mut Vec<&'s str>) {
        match self {
            Expr::Field(f) => out.push(f),
            Expr::Lit(_) | Expr::Period(_) | Expr::Star => {}
            Expr::Neg(e) | Expr::Not(e) | Expr::Like { e, .. } => e.fields(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Expr::In { e, list, .. } => {
                e.fields(out);
                list.iter().for_each(|x| x.fields(out));
            }
            Expr::Call(name, args) => {
                if name == "bin" {
                    out.push("@timestamp");
                }
                args.iter().for_each(|x| x.fields(out));
            }
        }
    }

    /// Substrings of `@message` this filter needs, from its `and`ed `like`s and `=~`s.
    fn required(&self, out: &mut Vec<String>) {
        match self {
            Expr::And(a, b) => {
                a.required(out);
                b.required(out);
            }
            Expr::Like { e, pat, negate: false } if matches!(&**e, Expr::Field(f) if f == "@message") => match pat {
                Pat::Sub(s) if !s.is_empty() => out.push(s.clone()),
                Pat::Re(_, src) if !src.is_empty() && !src.contains(|c: char| "\\.+*?()|[]{}^$#&-~ ".contains(c)) => {
                    out.push(src.clone())
                }
                _ => {}
            },
            _ => {}
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    toks: &'a [Tok],
    pos: usize,
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t.map(|t| &t.t), Some(T::Ident(s)) if s.eq_ignore_ascii_case(kw))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos)
    }

    fn peek_t(&self) -> Option<&'a T> {
        self.peek().map(|t| &t.t)
    }

    fn err(&self) -> QueryError {
        match self.peek() {
            Some(t) => unexpected_at(self.text, t.at, &self.text[t.at..t.end]),
            None => {
                let at = self.toks.last().map_or(self.text.len(), |t| t.end);
                unexpected_at(self.text, at, "<EOF>")
            }
        }
    }

    fn eat(&mut self, t: &T) -> bool {
        if self.peek_t() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &T) -> Result<()> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(self.err())
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn ident(&mut self) -> Result<String> {
        match self.peek_t() {
            Some(T::Ident(s)) if !is_reserved(s) => {
                self.pos += 1;
                Ok(s.clone())
            }
            _ => Err(self.err()),
        }
    }

    /// The source text of tokens `from..self.pos`.
    fn source(&self, from: usize) -> String {
        match (self.toks.get(from), self.toks.get(self.pos.saturating_sub(1))) {
            (Some(a), Some(b)) if self.pos > from => self.text[a.at..b.end].to_string(),
            _ => String::new(),
        }
    }

    fn regex(&self, src: &str, at: usize) -> Result<Regex> {
        Regex::new(src).map_err(|_| invalid_at(self.text, at, format!("invalid regex /{src}/")))
    }

    fn expr(&mut self) -> Result<Expr> {
        let mut left = self.and()?;
        while self.eat_kw("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut left = self.not()?;
        while self.eat_kw("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr> {
        if self.eat_kw("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr> {
        let left = self.add()?;
        let negate = is_kw(self.peek(), "not")
            && (is_kw(self.toks.get(self.pos + 1), "like") || is_kw(self.toks.get(self.pos + 1), "in"));
        if negate {
            self.pos += 1;
        }
        if self.eat_kw("like") {
            let pat = self.pattern()?;
            return Ok(Expr::Like { e: Box::new(left), pat, negate });
        }
        if self.eat_kw("in") {
            self.expect(&T::LBracket)?;
            let mut list = Vec::new();
            if !self.eat(&T::RBracket) {
                loop {
                    list.push(self.add()?);
                    if self.eat(&T::RBracket) {
                        break;
                    }
                    self.expect(&T::Comma)?;
                }
            }
            return Ok(Expr::In { e: Box::new(left), list, negate });
        }
        match self.peek_t() {
            Some(T::Op("=~")) => {
                self.pos += 1;
                let pat = self.pattern()?;
                Ok(Expr::Like { e: Box::new(left), pat, negate: false })
            }
            Some(T::Op(op @ ("=" | "!=" | "<" | "<=" | ">" | ">="))) => {
                self.pos += 1;
                Ok(Expr::Cmp(op, Box::new(left), Box::new(self.add()?)))
            }
            _ => Ok(left),
        }
    }

    fn pattern(&mut self) -> Result<Pat> {
        let Some(tok) = self.peek() else { return Err(self.err()) };
        let pat = match &tok.t {
            T::Str(s) => Pat::Sub(s.clone()),
            T::Regex(src) => Pat::Re(self.regex(src, tok.at)?, src.clone()),
            _ => return Err(self.err()),
        };
        self.pos += 1;
        Ok(pat)
    }

    fn add(&mut self) -> Result<Expr> {
        let mut left = self.mul()?;
        while let Some(T::Op(op @ ("+" | "-"))) = self.peek_t() {
            self.pos += 1;
            left = Expr::Arith(op, Box::new(left), Box::new(self.mul()?));
        }
        Ok(left)
    }

    fn mul(&mut self) -> Result<Expr> {
        let mut left = self.pow()?;
        while let Some(T::Op(op @ ("*" | "/" | "%"))) = self.peek_t() {
            self.pos += 1;
            left = Expr::Arith(op, Box::new(left), Box::new(self.pow()?));
        }
        Ok(left)
    }

    fn pow(&mut self) -> Result<Expr> {
        let base = self.unary()?;
        if self.eat(&T::Op("^")) {
            return Ok(Expr::Arith("^", Box::new(base), Box::new(self.pow()?)));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.eat(&T::Op("-")) {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr> {
        let Some(tok) = self.peek() else { return Err(self.err()) };
        let e = match &tok.t {
            T::LParen => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(&T::RParen)?;
                return Ok(e);
            }
            T::Num(n) => Expr::Lit(Val::Num(*n)),
            T::Str(s) => Expr::Lit(Val::Str(s.clone())),
            T::Dur(ms) => Expr::Period(*ms),
            T::Ident(name) if self.toks.get(self.pos + 1).is_some_and(|t| t.t == T::LParen) => {
                self.pos += 2;
                let lower = name.to_ascii_lowercase();
                if !FUNCTIONS.contains(&lower.as_str()) && !AGGREGATES.contains(&lower.as_str()) {
                    return Err(invalid_at(self.text, tok.at, format!("unknown function {name}")));
                }
                let mut args = Vec::new();
                if !self.eat(&T::RParen) {
                    loop {
                        if self.peek_t() == Some(&T::Op("*"))
                            && self.toks.get(self.pos + 1).is_some_and(|t| t.t == T::RParen)
                        {
                            self.pos += 1;
                            args.push(Expr::Star);
                        } else {
                            args.push(self.expr()?);
                        }
                        if self.eat(&T::RParen) {
                            break;
                        }
                        self.expect(&T::Comma)?;
                    }
                }
                return Ok(Expr::Call(lower, args));
            }
            T::Ident(name) if !is_reserved(name) => Expr::Field(name.clone()),
            _ => return Err(self.err()),
        };
        self.pos += 1;
        Ok(e)
    }

    /// `expr [as name]`, named by its alias or its source text.
    fn named_expr(&mut self) -> Result<(String, Expr)> {
        let from = self.pos;
        let e = self.expr()?;
        let src = self.source(from);
        let name = if self.eat_kw("as") {
            self.ident()?
        } else if let Expr::Field(f) = &e {
            f.clone()
        } else {
            src
        };
        Ok((name, e))
    }
}

fn is_reserved(s: &str) -> bool {
    ["and", "or", "not", "like", "in", "as", "by", "asc", "desc"].iter().any(|k| s.eq_ignore_ascii_case(k))
}

// ---------------------------------------------------------------------------------------
// Commands

#[derive(Debug, Clone)]
enum Agg {
    Count(Option<Expr>),
    CountDistinct(Expr),
    Sum(Expr),
    Avg(Expr),
    Min(Expr),
    Max(Expr),
    Earliest(Expr),
    Latest(Expr),
    Stddev(Expr),
}

#[derive(Debug, Clone)]
enum AggState {
    Count(u64),
    Distinct(HashSet<String>),
    Sum(f64, bool),
    Mean(f64, f64, u64),
    Extreme(Option<Val>),
    At(Option<(i64, Val)>),
}

impl Agg {
    fn start(&self) -> AggState {
        match self {
            Agg::Count(_) => AggState::Count(0),
            Agg::CountDistinct(_) => AggState::Distinct(HashSet::new()),
            Agg::Sum(_) => AggState::Sum(0.0, false),
            Agg::Avg(_) | Agg::Stddev(_) => AggState::Mean(0.0, 0.0, 0),
            Agg::Min(_) | Agg::Max(_) => AggState::Extreme(None),
            Agg::Earliest(_) | Agg::Latest(_) => AggState::At(None),
        }
    }

    fn add(&self, st: &mut AggState, r: &Rec) {
        match (self, st) {
            (Agg::Count(e), AggState::Count(n)) if e.as_ref().is_none_or(|e| e.eval(r).is_some()) => *n += 1,
            (Agg::CountDistinct(e), AggState::Distinct(set)) => {
                if let Some(v) = e.eval(r) {
                    set.insert(v.text());
                }
            }
            (Agg::Sum(e), AggState::Sum(s, any)) => {
                if let Some(x) = e.eval(r).and_then(|v| v.num()) {
                    *s += x;
                    *any = true;
                }
            }
            (Agg::Avg(e) | Agg::Stddev(e), AggState::Mean(s, sq, n)) => {
                if let Some(x) = e.eval(r).and_then(|v| v.num()) {
                    *s += x;
                    *sq += x * x;
                    *n += 1;
                }
            }
            (Agg::Min(e) | Agg::Max(e), AggState::Extreme(cur)) => {
                if let Some(v) = e.eval(r) {
                    let want = if matches!(self, Agg::Min(_)) { Ordering::Less } else { Ordering::Greater };
                    if cur.as_ref().is_none_or(|c| compare(&v, c) == want) {
                        *cur = Some(v);
                    }
                }
            }
            (Agg::Earliest(e) | Agg::Latest(e), AggState::At(cur)) => {
                let (Some(v), Some(t)) = (e.eval(r), r.get("@timestamp").and_then(Val::time)) else { return };
                let earliest = matches!(self, Agg::Earliest(_));
                if cur.as_ref().is_none_or(|(ct, _)| if earliest { t < *ct } else { t > *ct }) {
                    *cur = Some((t, v));
                }
            }
            _ => {}
        }
    }

    fn value(&self, st: &AggState) -> Option<Val> {
        match st {
            AggState::Count(n) => Some(Val::Num(*n as f64)),
            AggState::Distinct(set) => Some(Val::Num(set.len() as f64)),
            AggState::Sum(s, any) => any.then_some(Val::Num(*s)),
            AggState::Mean(s, sq, n) => {
                if *n == 0 {
                    return None;
                }
                let mean = s / *n as f64;
                if matches!(self, Agg::Stddev(_)) {
                    if *n < 2 {
                        return Some(Val::Num(0.0));
                    }
                    let var = (sq - s * mean) / (*n as f64 - 1.0);
                    return Some(Val::Num(var.max(0.0).sqrt()));
                }
                Some(Val::Num(mean))
            }
            AggState::Extreme(v) => v.clone(),
            AggState::At(v) => v.as_ref().map(|(_, v)| v.clone()),
        }
    }
}

#[derive(Debug, Clone)]
enum ParseHow {
    /// A glob turned into a regex with one group per `*`, and the names of those groups.
    Glob(Regex, Vec<String>),
    /// A regex with named groups.
    Re(Regex),
}

#[derive(Debug, Clone)]
enum Stage {
    Fields(Vec<(String, Expr)>),
    Display(Vec<String>),
    Filter(Expr),
    Parse(Expr, ParseHow),
    Stats {
        aggs: Vec<(String, Agg)>,
        by: Vec<(String, Expr)>,
    },
    /// Keys, each descending or not.
    Sort(Vec<(Expr, bool)>),
    Limit(usize),
}

impl Stage {
    fn blocking(&self) -> bool {
        matches!(self, Stage::Stats { .. } | Stage::Sort(_) | Stage::Limit(_))
    }

    /// Runs a per-record stage; `false` drops the record.
    fn apply(&self, r: &mut Rec) -> bool {
        match self {
            Stage::Fields(items) => {
                for (name, e) in items {
                    if matches!(e, Expr::Field(f) if f == name) {
                        continue;
                    }
                    match e.eval(r) {
                        Some(v) => r.insert(name.clone(), v),
                        None => r.remove(name),
                    };
                }
                true
            }
            Stage::Filter(e) => e.eval(r).is_some_and(|v| v.truthy()),
            Stage::Parse(src, how) => {
                let Some(text) = src.eval(r).map(|v| v.text()) else { return true };
                match how {
                    ParseHow::Glob(re, names) => {
                        if let Some(c) = re.captures(&text) {
                            for (i, name) in names.iter().enumerate() {
                                if let Some(m) = c.get(i + 1) {
                                    r.insert(name.clone(), Val::Str(m.as_str().to_string()));
                                }
                            }
                        }
                    }
                    ParseHow::Re(re) => {
                        if let Some(c) = re.captures(&text) {
                            for name in re.capture_names().flatten() {
                                if let Some(m) = c.name(name) {
                                    r.insert(name.to_string(), Val::Str(m.as_str().to_string()));
                                }
                            }
                        }
                    }
                }
                true
            }
            Stage::Display(_) | Stage::Stats { .. } | Stage::Sort(_) | Stage::Limit(_) => true,
        }
    }
}

/// A parsed Logs Insights query.
#[derive(Debug, Clone)]
pub struct Query {
    stages: Vec<Stage>,
    /// The fields of each row, in order.
    columns: Vec<String>,
    /// The number of rows returned at most.
    cap: usize,
    /// Whether any field beyond the built-in ones is read, so JSON messages must be flattened.
    needs_json: bool,
}

fn parse_command(p: &mut Parser<'_>) -> Result<Stage> {
    let Some(first) = p.peek() else { return Err(p.err()) };
    let T::Ident(cmd) = &first.t else { return Err(p.err()) };
    p.pos += 1;
    let stage = match cmd.to_ascii_lowercase().as_str() {
        "fields" => {
            let mut items = vec![p.named_expr()?];
            while p.eat(&T::Comma) {
                items.push(p.named_expr()?);
            }
            Stage::Fields(items)
        }
        "display" => {
            let mut names = vec![p.ident()?];
            while p.eat(&T::Comma) {
                names.push(p.ident()?);
            }
            Stage::Display(names)
        }
        "filter" => Stage::Filter(p.expr()?),
        "sort" => {
            let mut keys = Vec::new();
            loop {
                let e = p.expr()?;
                let desc = if p.eat_kw("desc") {
                    true
                } else {
                    p.eat_kw("asc");
                    false
                };
                keys.push((e, desc));
                if !p.eat(&T::Comma) {
                    break;
                }
            }
            Stage::Sort(keys)
        }
        "limit" => {
            let Some(Tok { t: T::Num(n), at, .. }) = p.peek() else { return Err(p.err()) };
            if n.fract() != 0.0 || *n < 1.0 || *n > 10_000.0 {
                return Err(invalid_at(p.text, *at, "limit must be between 1 and 10000"));
            }
            p.pos += 1;
            Stage::Limit(*n as usize)
        }
        "stats" => {
            let mut aggs = Vec::new();
            loop {
                let at = p.peek().map_or(p.text.len(), |t| t.at);
                let (name, e) = p.named_expr()?;
                aggs.push((
                    name,
                    to_agg(e).ok_or_else(|| invalid_at(p.text, at, "stats needs an aggregate function"))?,
                ));
                if !p.eat(&T::Comma) {
                    break;
                }
            }
            let mut by = Vec::new();
            if p.eat_kw("by") {
                by.push(p.named_expr()?);
                while p.eat(&T::Comma) {
                    by.push(p.named_expr()?);
                }
            }
            Stage::Stats { aggs, by }
        }
        "parse" => {
            let src = match p.peek_t() {
                Some(T::Ident(_)) => Expr::Field(p.ident()?),
                _ => Expr::Field("@message".to_string()),
            };
            let Some(tok) = p.peek() else { return Err(p.err()) };
            let how = match &tok.t {
                T::Str(glob) => {
                    p.pos += 1;
                    let stars = glob.matches('*').count();
                    if stars == 0 || !p.eat_kw("as") {
                        return Err(p.err());
                    }
                    let mut names = vec![p.ident()?];
                    while p.eat(&T::Comma) {
                        names.push(p.ident()?);
                    }
                    if names.len() != stars {
                        return Err(invalid_at(
                            p.text,
                            tok.at,
                            "the glob's wildcards and the names after 'as' differ in number",
                        ));
                    }
                    let parts: Vec<String> = glob.split('*').map(regex::escape).collect();
                    let mut re = String::new();
                    for (i, part) in parts.iter().enumerate() {
                        re.push_str(part);
                        if i + 1 < parts.len() {
                            re.push_str(if i + 2 == parts.len() && parts[i + 1].is_empty() { "(.*)" } else { "(.*?)" });
                        }
                    }
                    ParseHow::Glob(p.regex(&re, tok.at)?, names)
                }
                T::Regex(src) => {
                    p.pos += 1;
                    let re = p.regex(src, tok.at)?;
                    if re.capture_names().flatten().next().is_none() {
                        return Err(invalid_at(p.text, tok.at, "the regex has no named group"));
                    }
                    ParseHow::Re(re)
                }
                _ => return Err(p.err()),
            };
            Stage::Parse(src, how)
        }
        _ => return Err(unexpected_at(p.text, first.at, cmd)),
    };
    if !p.done() {
        return Err(p.err());
    }
    Ok(stage)
}

fn to_agg(e: Expr) -> Option<Agg> {
    let Expr::Call(name, mut args) = e else { return None };
    if name == "count" {
        return match args.pop() {
            None | Some(Expr::Star) if args.is_empty() => Some(Agg::Count(None)),
            Some(a) if args.is_empty() => Some(Agg::Count(Some(a))),
            _ => None,
        };
    }
    if args.len() != 1 || matches!(args[0], Expr::Star) {
        return None;
    }
    let a = args.pop()?;
    Some(match name.as_str() {
        "count_distinct" => Agg::CountDistinct(a),
        "sum" => Agg::Sum(a),
        "avg" => Agg::Avg(a),
        "min" => Agg::Min(a),
        "max" => Agg::Max(a),
        "earliest" => Agg::Earliest(a),
        "latest" => Agg::Latest(a),
        "stddev" => Agg::Stddev(a),
        _ => return None,
    })
}

impl Query {
    pub fn parse(text: &str) -> Result<Query> {
        // Comment lines become blanks, so that positions still point into the text.
        let cleaned: String = text
            .split_inclusive('\n')
            .map(|l| {
                if l.trim_start().starts_with('#') {
                    l.chars().map(|c| if c == '\n' { c } else { ' ' }).collect()
                } else {
                    l.to_string()
                }
            })
            .collect();
        let toks = lex(&cleaned)?;
        let mut stages = Vec::new();
        for seg in toks.split(|t| t.t == T::Pipe) {
            let mut p = Parser { text: &cleaned, toks: seg, pos: 0 };
            if seg.is_empty() {
                let at = toks.iter().find(|t| t.t == T::Pipe).map_or(0, |t| t.at);
                return Err(unexpected_at(&cleaned, at, if toks.is_empty() { "<EOF>" } else { "|" }));
            }
            stages.push(parse_command(&mut p)?);
        }
        let has_stats = stages.iter().any(|s| matches!(s, Stage::Stats { .. }));
        let has_sort = stages.iter().any(|s| matches!(s, Stage::Sort(_)));
        let has_limit = stages.iter().any(|s| matches!(s, Stage::Limit(_)));
        if !has_stats && !has_sort {
            let at = stages.iter().position(|s| matches!(s, Stage::Limit(_))).unwrap_or(stages.len());
            stages.insert(at, Stage::Sort(vec![(Expr::Field("@timestamp".into()), true)]));
        }
        if has_stats && !has_sort {
            // Stats rows come grouped by their time bin, newest first.
            let bin = stages.iter().find_map(|s| match s {
                Stage::Stats { by, .. } => by.iter().find(|(_, e)| matches!(e, Expr::Call(n, _) if n == "bin")),
                _ => None,
            });
            if let Some((name, _)) = bin {
                let at = stages.iter().rposition(|s| matches!(s, Stage::Stats { .. })).map_or(stages.len(), |i| i + 1);
                stages.insert(at, Stage::Sort(vec![(Expr::Field(name.clone()), true)]));
            }
        }
        // The output's columns.
        let mut columns: Vec<String> = vec!["@timestamp".into(), "@message".into()];
        let mut chosen = false;
        for s in &stages {
            match s {
                Stage::Fields(items) => {
                    if !chosen {
                        columns.clear();
                        chosen = true;
                    }
                    for (name, _) in items {
                        if !columns.contains(name) {
                            columns.push(name.clone());
                        }
                    }
                }
                Stage::Stats { aggs, by } => {
                    columns = by.iter().map(|(n, _)| n.clone()).chain(aggs.iter().map(|(n, _)| n.clone())).collect();
                    chosen = true;
                }
                _ => {}
            }
        }
        if let Some(Stage::Display(names)) = stages.iter().rev().find(|s| matches!(s, Stage::Display(_))) {
            columns = names.clone();
        }
        // What events are read for: the stages before the first `stats` (after it, records
        // are stats rows), and the columns when there is no `stats`.
        let first_stats = stages.iter().position(|s| matches!(s, Stage::Stats { .. }));
        let mut read: Vec<&str> =
            if first_stats.is_some() { Vec::new() } else { columns.iter().map(String::as_str).collect() };
        for s in &stages[..first_stats.map_or(stages.len(), |i| i + 1)] {
            match s {
                Stage::Fields(items) => items.iter().for_each(|(_, e)| e.fields(&mut read)),
                Stage::Filter(e) | Stage::Parse(e, _) => e.fields(&mut read),
                Stage::Sort(keys) => keys.iter().for_each(|(e, _)| e.fields(&mut read)),
                Stage::Stats { aggs, by } => {
                    by.iter().for_each(|(_, e)| e.fields(&mut read));
                    for (_, a) in aggs {
                        match a {
                            Agg::Count(None) => {}
                            Agg::Count(Some(e))
                            | Agg::CountDistinct(e)
                            | Agg::Sum(e)
                            | Agg::Avg(e)
                            | Agg::Min(e)
                            | Agg::Max(e)
                            | Agg::Earliest(e)
                            | Agg::Latest(e)
                            | Agg::Stddev(e) => e.fields(&mut read),
                        }
                    }
                }
                Stage::Display(_) | Stage::Limit(_) => {}
            }
        }
        let needs_json = read.iter().any(|f| !BUILTINS.contains(f));
        Ok(Query { stages, columns, cap: if has_limit { 10_000 } else { 1000 }, needs_json })
    }

    /// Substrings every event the query's filters keep must contain (may be empty): the
    /// `@message like "..."` and plain `@message like /.../` conditions joined by `and` in the
    /// filters that come before any `stats`, `sort` or `limit`.
    pub fn required_substrings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.stages.iter().take_while(|s| !s.blocking()) {
            if let Stage::Filter(e) = s {
                e.required(&mut out);
            }
        }
        out
    }

    /// A runner that owns a copy of the query: feed it events, then finish it.
    pub fn runner(&self) -> Runner {
        let head = self.stages.iter().position(Stage::blocking).unwrap_or(self.stages.len());
        // A sort followed only by per-record stages that keep every record, then a limit (or
        // the end): only that many records need be kept while events arrive.
        let keep = match self.stages.get(head) {
            Some(Stage::Sort(_)) => {
                let mut keep = self.cap;
                for s in &self.stages[head + 1..] {
                    match s {
                        Stage::Fields(_) | Stage::Display(_) | Stage::Parse(..) => {}
                        Stage::Limit(n) => {
                            keep = keep.min(*n);
                            break;
                        }
                        _ => {
                            keep = usize::MAX;
                            break;
                        }
                    }
                }
                keep
            }
            Some(Stage::Limit(n)) => *n,
            _ => usize::MAX,
        };
        Runner {
            query: self.clone(),
            head,
            keep,
            buffer: Vec::new(),
            seq: 0,
            groups: HashMap::new(),
            group_order: Vec::new(),
            out: QueryOutput::default(),
        }
    }
}

/// Runs a query over events pushed one by one.
pub struct Runner {
    query: Query,
    /// The index of the first stage that needs all records (stats, sort, limit).
    head: usize,
    /// How many records the first such stage needs to keep (sort then limit: the limit).
    keep: usize,
    /// Records waiting for the blocking stage, with their sort keys and arrival order.
    buffer: Vec<(Vec<Option<Val>>, u64, Rec)>,
    seq: u64,
    /// Stats groups: key text → index in `group_order`.
    groups: HashMap<Vec<Option<String>>, usize>,
    group_order: Vec<(Vec<Option<Val>>, Vec<AggState>)>,
    out: QueryOutput,
}

fn sort_cmp(a: &(Vec<Option<Val>>, u64, Rec), b: &(Vec<Option<Val>>, u64, Rec), desc: &[bool]) -> Ordering {
    for ((x, y), d) in a.0.iter().zip(&b.0).zip(desc) {
        let o = match (x, y) {
            (Some(x), Some(y)) => {
                let o = compare(x, y);
                if *d {
                    o.reverse()
                } else {
                    o
                }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.1.cmp(&b.1)
}

impl Runner {
    pub fn push(&mut self, e: &InsightsEvent<'_>) {
        self.out.records_scanned += 1;
        self.out.bytes_scanned += e.message.len() as u64;
        let mut r: Rec = HashMap::new();
        if self.query.needs_json {
            let trimmed = e.message.trim_start();
            if trimmed.starts_with('{') {
                if let Ok(doc @ Json::Object(_)) = serde_json::from_str::<Json>(trimmed) {
                    flatten("", &doc, &mut r);
                }
            }
        }
        r.insert("@timestamp".into(), Val::Time(e.timestamp));
        r.insert("@ingestionTime".into(), Val::Time(e.ingestion_time));
        r.insert("@message".into(), Val::Str(e.message.to_string()));
        r.insert("@logStream".into(), Val::Str(e.log_stream.to_string()));
        r.insert("@log".into(), Val::Str(e.log_group.to_string()));
        for s in &self.query.stages[..self.head] {
            if !s.apply(&mut r) {
                return;
            }
        }
        self.out.records_matched += 1;
        match self.query.stages.get(self.head) {
            Some(Stage::Stats { aggs, by }) => {
                let key: Vec<Option<Val>> = by.iter().map(|(_, e)| e.eval(&r)).collect();
                let text: Vec<Option<String>> = key.iter().map(|v| v.as_ref().map(Val::text)).collect();
                let idx = *self.groups.entry(text).or_insert_with(|| {
                    self.group_order.push((key, aggs.iter().map(|(_, a)| a.start()).collect()));
                    self.group_order.len() - 1
                });
                let states = &mut self.group_order[idx].1;
                for ((_, a), st) in aggs.iter().zip(states.iter_mut()) {
                    a.add(st, &r);
                }
            }
            Some(Stage::Sort(keys)) => {
                let k = keys.iter().map(|(e, _)| e.eval(&r)).collect();
                self.seq += 1;
                self.buffer.push((k, self.seq, r));
                if self.keep != usize::MAX && self.buffer.len() >= self.keep.saturating_mul(2).max(64) {
                    let desc: Vec<bool> = keys.iter().map(|(_, d)| *d).collect();
                    self.buffer.sort_by(|a, b| sort_cmp(a, b, &desc));
                    self.buffer.truncate(self.keep);
                }
            }
            _ => {
                if self.buffer.len() < self.keep {
                    self.seq += 1;
                    self.buffer.push((Vec::new(), self.seq, r));
                }
            }
        }
    }

    pub fn finish(self) -> QueryOutput {
        let Runner { query, head, buffer, group_order, mut out, .. } = self;
        let mut rows: Vec<Rec> = match query.stages.get(head) {
            Some(Stage::Stats { aggs, by }) => {
                group_order.into_iter().map(|(key, states)| stats_row(aggs, by, key, &states)).collect()
            }
            _ => buffer.into_iter().map(|(_, _, r)| r).collect(),
        };
        // The head stage's own work is done above, except sorting and limiting.
        let mut rest = &query.stages[head..];
        if matches!(rest.first(), Some(Stage::Stats { .. })) {
            rest = &rest[1..];
        }
        for s in rest {
            rows = run_batch(s, rows);
        }
        rows.truncate(query.cap);
        out.rows = rows
            .into_iter()
            .map(|r| query.columns.iter().filter_map(|c| r.get(c).map(|v| (c.clone(), v.text()))).collect())
            .collect();
        out
    }
}

fn stats_row(aggs: &[(String, Agg)], by: &[(String, Expr)], key: Vec<Option<Val>>, states: &[AggState]) -> Rec {
    let mut r = Rec::new();
    for ((name, _), v) in by.iter().zip(key) {
        if let Some(v) = v {
            r.insert(name.clone(), v);
        }
    }
    for ((name, a), st) in aggs.iter().zip(states) {
        if let Some(v) = a.value(st) {
            r.insert(name.clone(), v);
        }
    }
    r
}

fn run_batch(s: &Stage, rows: Vec<Rec>) -> Vec<Rec> {
    match s {
        Stage::Stats { aggs, by } => {
            let mut groups: HashMap<Vec<Option<String>>, usize> = HashMap::new();
            let mut order: Vec<(Vec<Option<Val>>, Vec<AggState>)> = Vec::new();
            for r in &rows {
                let key: Vec<Option<Val>> = by.iter().map(|(_, e)| e.eval(r)).collect();
                let text = key.iter().map(|v| v.as_ref().map(Val::text)).collect();
                let idx = *groups.entry(text).or_insert_with(|| {
                    order.push((key, aggs.iter().map(|(_, a)| a.start()).collect()));
                    order.len() - 1
                });
                for ((_, a), st) in aggs.iter().zip(order[idx].1.iter_mut()) {
                    a.add(st, r);
                }
            }
            order.into_iter().map(|(key, states)| stats_row(aggs, by, key, &states)).collect()
        }
        Stage::Sort(keys) => {
            let desc: Vec<bool> = keys.iter().map(|(_, d)| *d).collect();
            let mut keyed: Vec<(Vec<Option<Val>>, u64, Rec)> = rows
                .into_iter()
                .enumerate()
                .map(|(i, r)| (keys.iter().map(|(e, _)| e.eval(&r)).collect(), i as u64, r))
                .collect();
            keyed.sort_by(|a, b| sort_cmp(a, b, &desc));
            keyed.into_iter().map(|(_, _, r)| r).collect()
        }
        Stage::Limit(n) => {
            let mut rows = rows;
            rows.truncate(*n);
            rows
        }
        other => rows.into_iter().filter_map(|mut r| other.apply(&mut r).then_some(r)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01 10:00:00.000 UTC.
    const T0: i64 = 1_796_119_200_000;

    /// Found by the `expressions` fuzz target: a non-ASCII character that is not a letter
    /// made the lexer loop without end (and run out of memory); it is refused where it stands.
    #[test]
    fn non_letter_symbols_are_refused() {
        for q in ["fields ☃", "fields a,\u{fffd}b", "filter ☃ = 1"] {
            let e = Query::parse(q).map(|_| ()).unwrap_err();
            assert!(matches!(&e, QueryError::Unexpected { found, .. } if found.chars().count() == 1), "{q}: {e:?}");
        }
        Query::parse("fields é, 名前").unwrap();
    }

    fn run(q: &str, events: &[(i64, &str)]) -> QueryOutput {
        let query = Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let mut r = query.runner();
        for (t, m) in events {
            r.push(&InsightsEvent {
                timestamp: *t,
                ingestion_time: *t + 5,
                message: m,
                log_stream: "app/web/abc",
                log_group: "123456789012:/ecs/web",
            });
        }
        r.finish()
    }

    fn rows(q: &str, events: &[(i64, &str)]) -> Vec<Vec<(String, String)>> {
        run(q, events).rows
    }

    fn row(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn col(out: &[Vec<(String, String)>], field: &str) -> Vec<String> {
        out.iter().filter_map(|r| r.iter().find(|(f, _)| f == field).map(|(_, v)| v.clone())).collect()
    }

    fn events() -> Vec<(i64, &'static str)> {
        vec![
            (T0 + 123, r#"{"level": "error", "latency": 150, "user": {"id": 7}, "tags": ["a", "b"]}"#),
            (T0 + 60_000, r#"{"level": "info", "latency": 20, "user": {"id": 8}}"#),
            (T0 + 301_000, r#"{"level": "error", "latency": 90, "user": {"id": 7}}"#),
            (T0 + 302_000, "plain text Exception here"),
            (T0 + 610_000, r#"{"level": "warn", "latency": 300}"#),
        ]
    }

    #[test]
    fn timestamps_in_insights_format() {
        assert_eq!(format_timestamp(T0 + 123), "2026-12-01 10:00:00.123");
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_timestamp(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn default_query_is_timestamp_and_message_newest_first() {
        let out = run("fields @timestamp, @message", &events());
        assert_eq!(out.rows.len(), 5);
        assert_eq!(out.rows[0], row(&[("@timestamp", "2026-12-01 10:10:10.000"), ("@message", events()[4].1)]));
        assert_eq!(out.rows[4][0], ("@timestamp".to_string(), "2026-12-01 10:00:00.123".to_string()));
        assert_eq!((out.records_scanned, out.records_matched), (5, 5));
        assert_eq!(out.bytes_scanned, events().iter().map(|(_, m)| m.len() as u64).sum::<u64>());
        // A filter alone shows @timestamp and @message.
        let out = rows("filter @message like /Exception/", &events());
        assert_eq!(
            out,
            vec![row(&[("@timestamp", "2026-12-01 10:05:02.000"), ("@message", "plain text Exception here")])]
        );
    }

    #[test]
    fn builtin_fields() {
        let out = rows("fields @logStream, @log, @ingestionTime | limit 1", &events());
        assert_eq!(
            out,
            vec![row(&[
                ("@logStream", "app/web/abc"),
                ("@log", "123456789012:/ecs/web"),
                ("@ingestionTime", "2026-12-01 10:10:10.005")
            ])]
        );
    }

    #[test]
    fn json_fields_are_discovered_and_flattened() {
        let out = rows("fields level, user.id, tags.1 | filter level = \"error\" | sort @timestamp asc", &events());
        assert_eq!(
            out,
            vec![
                row(&[("level", "error"), ("user.id", "7"), ("tags.1", "b")]),
                row(&[("level", "error"), ("user.id", "7")])
            ]
        );
        // A field missing from an event is left out of its row.
        let out = rows("fields @timestamp, user.id", &events());
        assert_eq!(out[0], row(&[("@timestamp", "2026-12-01 10:10:10.000")]));
        let out = rows("fields `@x`", &[(T0, r#"{"@x": 1}"#)]);
        assert!(out[0].is_empty());
        assert_eq!(rows("fields `@@x`", &[(T0, r#"{"@x": 1}"#)]), vec![row(&[("@@x", "1")])]);
    }

    #[test]
    fn filter_comparisons_and_booleans() {
        let f = |q: &str| col(&rows(&format!("fields latency | {q} | sort latency asc"), &events()), "latency");
        let cases: [(&str, &[&str]); 16] = [
            ("filter latency > 100", &["150", "300"]),
            ("filter latency >= 150", &["150", "300"]),
            ("filter latency < 90", &["20"]),
            ("filter latency <= 90", &["20", "90"]),
            ("filter latency = 90", &["90"]),
            ("filter latency != 90", &["20", "150", "300"]),
            ("filter level = \"error\" and latency > 100", &["150"]),
            ("filter level = \"info\" or latency > 200", &["20", "300"]),
            ("filter not (level = \"error\")", &["20", "300"]),
            ("filter (latency>100)", &["150", "300"]),
            ("filter latency * 2 > 500", &["300"]),
            ("filter latency in [20, 300]", &["20", "300"]),
            ("filter level not in [\"error\", \"info\"]", &["300"]),
            ("filter ispresent(user.id)", &["20", "90", "150"]),
            ("filter not ispresent(user.id)", &["300"]),
            // Text compares as text.
            ("filter level > \"info\"", &["300"]),
        ];
        for (q, want) in cases {
            assert_eq!(f(q), want, "{q}");
        }
    }

    #[test]
    fn like_and_regex() {
        let q = |f: &str| run(&format!("filter {f}"), &events()).records_matched;
        assert_eq!(q("@message like \"Exception\""), 1);
        assert_eq!(q("@message like /Exception/"), 1);
        assert_eq!(q("@message =~ /Exception/"), 1);
        assert_eq!(q("@message like /exception/"), 0);
        assert_eq!(q("@message like /(?i)exception/"), 1);
        assert_eq!(q("@message not like \"Exception\""), 4);
        assert_eq!(q("level like /err|warn/"), 3);
        assert_eq!(q("@message like /\"level\": \"e/"), 2);
        assert_eq!(q("level like /E*/"), 4);
    }

    #[test]
    fn stats_count_by_bin() {
        let out = rows("stats count(*) by bin(5m)", &events());
        assert_eq!(
            out,
            vec![
                row(&[("bin(5m)", "2026-12-01 10:10:00.000"), ("count(*)", "1")]),
                row(&[("bin(5m)", "2026-12-01 10:05:00.000"), ("count(*)", "2")]),
                row(&[("bin(5m)", "2026-12-01 10:00:00.000"), ("count(*)", "2")]),
            ]
        );
        let out = rows(
            "filter @message like /Exception/ | stats count(*) as exceptionCount by bin(1h) | sort exceptionCount desc",
            &events(),
        );
        assert_eq!(out, vec![row(&[("bin(1h)", "2026-12-01 10:00:00.000"), ("exceptionCount", "1")])]);
        let out = rows("stats count(*) by bin(1h) as t | sort t", &events());
        assert_eq!(out, vec![row(&[("t", "2026-12-01 10:00:00.000"), ("count(*)", "5")])]);
    }

    #[test]
    fn stats_functions() {
        let out = rows(
            "stats count(*), count(latency), count_distinct(level), sum(latency), avg(latency), min(latency), max(latency)",
            &events(),
        );
        assert_eq!(
            out,
            vec![row(&[
                ("count(*)", "5"),
                ("count(latency)", "4"),
                ("count_distinct(level)", "3"),
                ("sum(latency)", "560"),
                ("avg(latency)", "140"),
                ("min(latency)", "20"),
                ("max(latency)", "300"),
            ])]
        );
        let out = rows("stats avg(latency) as a, count() as n by level | sort a desc", &events());
        assert_eq!(
            out,
            vec![
                row(&[("level", "warn"), ("a", "300"), ("n", "1")]),
                row(&[("level", "error"), ("a", "120"), ("n", "2")]),
                row(&[("level", "info"), ("a", "20"), ("n", "1")]),
                row(&[("n", "1")]),
            ]
        );
        let out = rows("stats earliest(level), latest(level), min(level)", &events());
        assert_eq!(out, vec![row(&[("earliest(level)", "error"), ("latest(level)", "warn"), ("min(level)", "error")])]);
        let out = rows("stats avg(latency) by level, bin(10m) | sort level asc | limit 1", &events());
        assert_eq!(
            out,
            vec![row(&[("level", "error"), ("bin(10m)", "2026-12-01 10:00:00.000"), ("avg(latency)", "120")])]
        );
        assert_eq!(rows("stats avg(latency)", &[(T0, "x")]), vec![row(&[])]);
        assert_eq!(
            rows("stats avg(latency)", &[(T0, r#"{"latency": 1}"#), (T0, r#"{"latency": 2}"#)]),
            vec![row(&[("avg(latency)", "1.5")])]
        );
    }

    #[test]
    fn sort_and_limit() {
        let f = |q: &str| col(&rows(q, &events()), "latency");
        assert_eq!(f("fields latency | sort latency desc"), vec!["300", "150", "90", "20"]);
        assert_eq!(f("fields latency | sort latency asc | limit 2"), vec!["20", "90"]);
        // The two newest events; the second has no latency.
        assert_eq!(f("fields latency | limit 2"), vec!["300"]);
        assert_eq!(run("fields latency | limit 2", &events()).rows[1], row(&[]));
        assert_eq!(f("sort @timestamp desc | limit 25 | display latency"), vec!["300", "90", "20", "150"]);
        assert_eq!(f("fields latency | sort @timestamp asc | limit 1"), vec!["150"]);
        assert_eq!(f("fields latency | sort level asc, latency desc"), vec!["150", "90", "20", "300"]);
    }

    #[test]
    fn default_limit_is_1000_and_top_n_is_bounded() {
        let many: Vec<(i64, String)> = (0..2500).map(|i| (T0 + i, format!("line {i}"))).collect();
        let ev: Vec<(i64, &str)> = many.iter().map(|(t, m)| (*t, m.as_str())).collect();
        let out = run("fields @message", &ev);
        assert_eq!(out.rows.len(), 1000);
        assert_eq!(out.rows[0], row(&[("@message", "line 2499")]));
        assert_eq!(out.rows[999], row(&[("@message", "line 1500")]));
        assert_eq!(out.records_matched, 2500);
        let out = run("fields @message | sort @timestamp asc | limit 3", &ev);
        assert_eq!(col(&out.rows, "@message"), vec!["line 0", "line 1", "line 2"]);
        assert_eq!(run("fields @message | limit 2000", &ev).rows.len(), 2000);
        let query = Query::parse("fields @message | limit 3").unwrap();
        let mut r = query.runner();
        for (t, m) in &ev {
            r.push(&InsightsEvent { timestamp: *t, ingestion_time: *t, message: m, log_stream: "s", log_group: "g" });
            assert!(r.buffer.len() <= 64);
        }
    }

    #[test]
    fn fields_with_functions_and_aliases() {
        let ev = [(T0, r#"{"Operation": "Get", "StatusCode": 200, "f3": 5, "f4": 9, "foo-bar": "x"}"#)];
        assert_eq!(
            rows("fields concat(Operation, '-', StatusCode) as opStatus", &ev),
            vec![row(&[("opStatus", "Get-200")])]
        );
        assert_eq!(rows("fields `foo-bar`, abs(f3-f4)", &ev), vec![row(&[("foo-bar", "x"), ("abs(f3-f4)", "4")])]);
        assert_eq!(rows("fields ispresent(nope) as isRes", &ev), vec![row(&[("isRes", "0")])]);
        assert_eq!(
            rows("fields tolower(Operation) as l, toupper(Operation) as u, strlen(Operation) as n, substr(\"xyZfooxyZ\", 3, 3) as s", &ev),
            vec![row(&[("l", "get"), ("u", "GET"), ("n", "3"), ("s", "foo")])]
        );
        assert_eq!(
            rows("fields trim(\"xyZxyfooxyxyZ\", \"xyZ\") as t, ltrim(\"xyZxyfooxyZ\", \"xyZ\") as l, rtrim(\"xyZfooxyxyZ\", \"xyZ\") as r", &ev),
            vec![row(&[("t", "foo"), ("l", "fooxyZ"), ("r", "xyZfoo")])]
        );
        assert_eq!(
            rows("fields datefloor(@timestamp, 1h) as h, toMillis(@timestamp) as ms", &[(T0 + 61_000, "x")]),
            vec![row(&[("h", "2026-12-01 10:00:00.000"), ("ms", &(T0 + 61_000).to_string())])]
        );
        assert_eq!(
            rows("fields 2 ^ 3 as p, 10 % 3 as m, coalesce(nope, f3) as c", &ev),
            vec![row(&[("p", "8"), ("m", "1"), ("c", "5")])]
        );
        // Multiple `fields` commands add up.
        assert_eq!(rows("fields f3 | fields f4", &ev), vec![row(&[("f3", "5"), ("f4", "9")])]);
        assert_eq!(rows("fields f3 * 2 as d | filter d > 9 | display d", &ev), vec![row(&[("d", "10")])]);
    }

    #[test]
    fn parse_glob_and_regex() {
        let ev = [(T0, "25 May 2019 10:24:39,474 [ERROR] {foo=2, bar=data} The error was: DataIntegrityException")];
        let want =
            vec![row(&[("level", "ERROR"), ("config", "{foo=2, bar=data}"), ("exception", "DataIntegrityException")])];
        assert_eq!(rows("parse @message \"[*] * The error was: *\" as level, config, exception | display level, config, exception", &ev), want);
        assert_eq!(
            rows(
                r"parse @message /\[(?<level>\S+)\]\s+(?<config>\{.*\})\s+The error was: (?<exception>\S+)/ | display level, config, exception",
                &ev
            ),
            want
        );
        let ev = [(T0, "[ERROR] disk full"), (T0 + 1, "[INFO] ok"), (T0 + 2, "no brackets")];
        assert_eq!(
            rows("fields @message | parse @message \"[*] *\" as loggingType, loggingMessage | filter loggingType = \"ERROR\" | display loggingMessage", &ev),
            vec![row(&[("loggingMessage", "disk full")])]
        );
        let ev = [(T0, "user=u1, method=get, latency := 200"), (T0, "user=u1, method=get, latency := 100")];
        assert_eq!(
            rows("parse @message /user=(?<user2>.*?), method=(?<method2>.*?), latency := (?<latency2>.*)/ | stats avg(latency2) by method2, user2", &ev),
            vec![row(&[("method2", "get"), ("user2", "u1"), ("avg(latency2)", "150")])]
        );
    }

    #[test]
    fn comments_and_whitespace() {
        let q = "fields @timestamp, @message\n    # | filter @message like /delay/\n    | limit 20";
        assert_eq!(run(q, &events()).rows.len(), 5);
        assert_eq!(run("FIELDS @message | FILTER @message LIKE 'Exception'", &events()).rows.len(), 1);
    }

    #[test]
    fn malformed_queries() {
        for q in [
            "",
            "bogus command",
            "fields",
            "fields a |",
            "| fields a",
            "filter a =",
            "filter (a = 1",
            "limit 0",
            "limit 10001",
            "limit x",
            "stats latency",
            "stats count(*) by",
            "sort",
            "filter a like",
            "filter a like /(/",
            "fields nosuchfn(a)",
            "parse @message \"[*] *\" as a",
            "parse @message /no groups/",
            "fields 'open",
            "filter a in [1, 2",
            "fields a b",
            "stats sum(*)",
        ] {
            assert!(Query::parse(q).is_err(), "{q:?} should fail");
        }
        assert_eq!(
            Query::parse("fields a\n| bogus x").unwrap_err().to_string(),
            "unexpected symbol found bogus at line 2 and position 3"
        );
        assert_eq!(
            Query::parse("filter a = = 1").unwrap_err(),
            QueryError::Unexpected { found: "=".into(), line: 1, position: 12 }
        );
    }

    #[test]
    fn required_substrings() {
        let req = |q: &str| Query::parse(q).unwrap().required_substrings();
        assert_eq!(req("filter @message like /Exception/ | stats count(*) by bin(1h)"), vec!["Exception"]);
        assert_eq!(req("filter @message like \"disk full\" and level = 'x'"), vec!["disk full"]);
        assert!(req("filter @message like /Exc.ption/").is_empty());
        assert!(req("filter @message like /a/ or @message like /b/").is_empty());
        assert!(req("filter @message not like /a/").is_empty());
        assert!(req("filter level like /a/").is_empty());
        assert!(req("sort @timestamp | filter @message like /a/").is_empty());
        assert!(req("fields @message").is_empty());
    }

    #[test]
    fn json_is_parsed_only_when_needed() {
        assert!(!Query::parse("fields @timestamp, @message | filter @message like /x/").unwrap().needs_json);
        assert!(!Query::parse("stats count(*) by bin(5m)").unwrap().needs_json);
        assert!(Query::parse("filter level = 'error'").unwrap().needs_json);
        assert!(Query::parse("stats avg(latency)").unwrap().needs_json);
    }
}
