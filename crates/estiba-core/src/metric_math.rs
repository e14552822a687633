//! CloudWatch metric math, the subset GetMetricData and metric math alarms use here:
//! `+ - * /` over query ids and numbers with parentheses and unary minus (`m1/m2*100`,
//! `(m1+m2)/2`), and the functions `SUM`, `AVG`, `MIN`, `MAX` of a list of series
//! (`SUM([m1,m2])`, `MAX(METRICS())`, `AVG(METRICS("m"))`) or of one series (then a scalar).
//!
//! A [`Series`] is two vectors, timestamps (ms, strictly increasing: the period starts of a
//! query) and their values. Two series combine at the timestamps both have (elementwise when
//! their timestamps are the same, the usual case of queries over one period grid; a merge
//! of the two sorted vectors otherwise); a series and a scalar at every point of the series;
//! a function of a list gives at each timestamp the aggregate of the series that have a value
//! there. Results that are not finite (a division by zero) are dropped, as CloudWatch leaves
//! such points out.
//!
//! May not: read the metric store, a clock or the wire types: the caller gathers the series
//! of each query id and calls [`evaluate`].

use std::collections::BTreeMap;

/// One time series: timestamps (ms, strictly increasing) and their values, side by side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

impl Series {
    pub fn new() -> Series {
        Series::default()
    }

    pub fn with_capacity(n: usize) -> Series {
        Series { timestamps: Vec::with_capacity(n), values: Vec::with_capacity(n) }
    }

    /// Appends a point after the last one; a timestamp not after the last replaces that
    /// point's value when equal, and is put in its place otherwise (slow: callers append in
    /// order).
    pub fn push(&mut self, t: i64, v: f64) {
        match self.timestamps.last() {
            None => {}
            Some(&last) if t > last => {}
            Some(_) => {
                match self.timestamps.binary_search(&t) {
                    Ok(i) => self.values[i] = v,
                    Err(i) => {
                        self.timestamps.insert(i, t);
                        self.values.insert(i, v);
                    }
                }
                return;
            }
        }
        self.timestamps.push(t);
        self.values.push(v);
    }

    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// The timestamps, increasing.
    pub fn timestamps(&self) -> &[i64] {
        &self.timestamps
    }

    /// The values, in the order of [`Series::timestamps`].
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The value at `t`.
    pub fn get(&self, t: i64) -> Option<f64> {
        self.timestamps.binary_search(&t).ok().map(|i| self.values[i])
    }

    /// The points, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (i64, f64)> + ExactSizeIterator + '_ {
        self.timestamps.iter().copied().zip(self.values.iter().copied())
    }

    /// Keeps the finite values only.
    fn finite(mut self) -> Series {
        if self.values.iter().all(|v| v.is_finite()) {
            return self;
        }
        let mut keep = 0;
        for i in 0..self.values.len() {
            if self.values[i].is_finite() {
                self.timestamps[keep] = self.timestamps[i];
                self.values[keep] = self.values[i];
                keep += 1;
            }
        }
        self.timestamps.truncate(keep);
        self.values.truncate(keep);
        self
    }
}

impl FromIterator<(i64, f64)> for Series {
    /// Points in any order; of two with the same timestamp the later one stays.
    fn from_iter<I: IntoIterator<Item = (i64, f64)>>(iter: I) -> Series {
        let iter = iter.into_iter();
        let mut s = Series::with_capacity(iter.size_hint().0);
        for (t, v) in iter {
            s.push(t, v);
        }
        s
    }
}

impl<const N: usize> From<[(i64, f64); N]> for Series {
    fn from(points: [(i64, f64); N]) -> Series {
        points.into_iter().collect()
    }
}

/// The timestamps of any of `series`, increasing.
pub fn union_timestamps<'a>(series: impl IntoIterator<Item = &'a Series>) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    for s in series {
        if out.is_empty() || out == s.timestamps {
            if out.is_empty() {
                out.extend_from_slice(&s.timestamps);
            }
            continue;
        }
        let mut merged = Vec::with_capacity(out.len().max(s.len()));
        let (a, b) = (&out, &s.timestamps);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => {
                    merged.push(a[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    merged.push(b[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    merged.push(a[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        out = merged;
    }
    out
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Number(f64),
    /// A query id (`m1`).
    Id(String),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `[a, b, ...]`.
    List(Vec<Expr>),
    /// `METRICS()` or `METRICS("filter")`: every other query (whose id contains the filter).
    Metrics(Option<String>),
    /// `SUM`, `AVG`, `MIN`, `MAX`.
    Call(Function, Box<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Sum,
    Avg,
    Min,
    Max,
}

/// What an expression evaluates to.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Series(Series),
    List(Vec<Series>),
}

/// A refused or failed expression; the message says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MathError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, MathError> {
    Err(MathError(m.into()))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Num(f64),
    Ident(String),
    Str(String),
    Op(char),
}

fn tokenize(s: &str) -> Result<Vec<Token>, MathError> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == '.') {
                i += 1;
            }
            if i < b.len() && (b[i] == 'e' || b[i] == 'E') {
                let save = i;
                i += 1;
                if i < b.len() && (b[i] == '+' || b[i] == '-') {
                    i += 1;
                }
                if i < b.len() && b[i].is_ascii_digit() {
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = save;
                }
            }
            let text: String = b[start..i].iter().collect();
            let v = text.parse().map_err(|_| MathError(format!("Invalid number {text}")))?;
            out.push(Token::Num(v));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(b[start..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != c {
                i += 1;
            }
            if i == b.len() {
                return err("Unterminated string in expression");
            }
            out.push(Token::Str(b[start..i].iter().collect()));
            i += 1;
        } else if "+-*/()[],".contains(c) {
            out.push(Token::Op(c));
            i += 1;
        } else {
            return err(format!("Unexpected character '{c}' in expression"));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Op(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), MathError> {
        if self.eat(c) {
            Ok(())
        } else {
            err(format!("Expected '{c}' in expression"))
        }
    }

    fn expr(&mut self) -> Result<Expr, MathError> {
        let mut left = self.term()?;
        loop {
            let op = if self.eat('+') {
                BinOp::Add
            } else if self.eat('-') {
                BinOp::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr, MathError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat('*') {
                BinOp::Mul
            } else if self.eat('/') {
                BinOp::Div
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, MathError> {
        if self.eat('-') {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.eat('+') {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, MathError> {
        match self.next() {
            Some(Token::Num(v)) => Ok(Expr::Number(v)),
            Some(Token::Op('(')) => {
                let e = self.expr()?;
                self.expect(')')?;
                Ok(e)
            }
            Some(Token::Op('[')) => {
                let mut items = vec![self.expr()?];
                while self.eat(',') {
                    items.push(self.expr()?);
                }
                self.expect(']')?;
                Ok(Expr::List(items))
            }
            Some(Token::Ident(name)) => {
                if self.eat('(') {
                    return self.call(&name);
                }
                if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                    Ok(Expr::Id(name))
                } else {
                    err(format!("Unrecognized identifier {name}: query ids start with a lowercase letter"))
                }
            }
            Some(Token::Str(_)) => err("A string is only allowed as the argument of METRICS()"),
            Some(Token::Op(c)) => err(format!("Unexpected '{c}' in expression")),
            None => err("Unexpected end of expression"),
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, MathError> {
        let f = match name {
            "METRICS" => {
                let filter = match self.peek() {
                    Some(Token::Str(_)) => match self.next() {
                        Some(Token::Str(s)) => Some(s),
                        _ => None,
                    },
                    _ => None,
                };
                self.expect(')')?;
                return Ok(Expr::Metrics(filter));
            }
            "SUM" => Function::Sum,
            "AVG" => Function::Avg,
            "MIN" => Function::Min,
            "MAX" => Function::Max,
            other => {
                return err(format!(
                    "Unsupported function {other}: estiba's metric math supports SUM, AVG, MIN, MAX and METRICS"
                ))
            }
        };
        let arg = self.expr()?;
        self.expect(')')?;
        Ok(Expr::Call(f, Box::new(arg)))
    }
}

/// Parses an expression.
pub fn parse(s: &str) -> Result<Expr, MathError> {
    let mut p = Parser { tokens: tokenize(s)?, pos: 0 };
    let e = p.expr()?;
    if p.pos != p.tokens.len() {
        return err("Unexpected text after the end of the expression");
    }
    Ok(e)
}

/// The query ids an expression names (`METRICS()` is resolved by the caller's order).
pub fn references(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Id(id) => out.push(id.clone()),
        Expr::Neg(a) | Expr::Call(_, a) => references(a, out),
        Expr::Binary(_, a, b) => {
            references(a, out);
            references(b, out);
        }
        Expr::List(items) => items.iter().for_each(|i| references(i, out)),
        Expr::Number(_) | Expr::Metrics(_) => {}
    }
}

/// Whether the expression uses `METRICS()`.
pub fn uses_metrics(e: &Expr) -> bool {
    match e {
        Expr::Metrics(_) => true,
        Expr::Neg(a) | Expr::Call(_, a) => uses_metrics(a),
        Expr::Binary(_, a, b) => uses_metrics(a) || uses_metrics(b),
        Expr::List(items) => items.iter().any(uses_metrics),
        Expr::Number(_) | Expr::Id(_) => false,
    }
}

/// Where an expression finds its inputs: the series of a query id, and which ids
/// `METRICS()` covers (every other query of the request, in order).
pub trait Env {
    fn series(&self, id: &str) -> Option<&Series>;
    fn metric_ids(&self) -> Vec<String>;
}

impl Env for BTreeMap<String, Series> {
    fn series(&self, id: &str) -> Option<&Series> {
        self.get(id)
    }
    fn metric_ids(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// Evaluates `e` against `env`.
pub fn evaluate(e: &Expr, env: &dyn Env) -> Result<Value, MathError> {
    Ok(match e {
        Expr::Number(v) => Value::Scalar(*v),
        Expr::Id(id) => match env.series(id) {
            Some(s) => Value::Series(s.clone()),
            None => return err(format!("Unrecognized identifier {id}")),
        },
        Expr::Neg(a) => map(evaluate(a, env)?, |v| -v),
        Expr::Binary(op, a, b) => binary(*op, evaluate(a, env)?, evaluate(b, env)?)?,
        Expr::List(items) => {
            let mut out = Vec::new();
            for i in items {
                match evaluate(i, env)? {
                    Value::Series(s) => out.push(s),
                    Value::List(l) => out.extend(l),
                    Value::Scalar(_) => return err("A list may only hold time series"),
                }
            }
            Value::List(out)
        }
        Expr::Metrics(filter) => {
            let mut out = Vec::new();
            for id in env.metric_ids() {
                if filter.as_deref().is_none_or(|f| id.contains(f)) {
                    out.extend(env.series(&id).cloned());
                }
            }
            Value::List(out)
        }
        Expr::Call(f, a) => match evaluate(a, env)? {
            Value::Scalar(_) => return err("SUM, AVG, MIN and MAX take a time series or an array of time series"),
            Value::Series(s) => Value::Scalar(aggregate(*f, &s.values).unwrap_or(f64::NAN)),
            Value::List(l) => Value::Series(aggregate_list(*f, &l)),
        },
    })
}

/// The running aggregate of the values at one timestamp, taken in list order (so a sum adds
/// in the same order as summing the values gathered in a list would).
#[derive(Clone, Copy)]
struct Acc {
    n: u32,
    sum: f64,
    min: f64,
    max: f64,
}

impl Acc {
    const EMPTY: Acc = Acc { n: 0, sum: -0.0, min: f64::INFINITY, max: f64::NEG_INFINITY };

    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn get(&self, f: Function) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(match f {
            Function::Sum => self.sum,
            Function::Avg => self.sum / f64::from(self.n),
            Function::Min => self.min,
            Function::Max => self.max,
        })
    }
}

fn aggregate(f: Function, vs: &[f64]) -> Option<f64> {
    let mut acc = Acc::EMPTY;
    vs.iter().for_each(|v| acc.add(*v));
    acc.get(f)
}

/// `f` at each timestamp of any series of `l`, over the series that have a value there.
fn aggregate_list(f: Function, l: &[Series]) -> Series {
    let timestamps = union_timestamps(l);
    let mut accs = vec![Acc::EMPTY; timestamps.len()];
    for s in l {
        if s.timestamps == timestamps {
            accs.iter_mut().zip(&s.values).for_each(|(a, v)| a.add(*v));
            continue;
        }
        // Every timestamp of `s` is in the union: walk both.
        let mut i = 0;
        for (t, v) in s.iter() {
            while timestamps[i] < t {
                i += 1;
            }
            accs[i].add(v);
        }
    }
    let mut out = Series::with_capacity(timestamps.len());
    for (t, a) in timestamps.into_iter().zip(accs) {
        if let Some(v) = a.get(f) {
            out.timestamps.push(t);
            out.values.push(v);
        }
    }
    out
}

fn map_series(mut s: Series, f: impl Fn(f64) -> f64) -> Series {
    s.values.iter_mut().for_each(|v| *v = f(*v));
    s.finite()
}

fn map(v: Value, f: impl Fn(f64) -> f64 + Copy) -> Value {
    match v {
        Value::Scalar(x) => Value::Scalar(f(x)),
        Value::Series(s) => Value::Series(map_series(s, f)),
        Value::List(l) => Value::List(l.into_iter().map(|s| map_series(s, f)).collect()),
    }
}

fn apply(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
    }
}

/// `a op b` at the timestamps both have.
fn zip(op: BinOp, a: &Series, b: &Series) -> Series {
    if a.timestamps == b.timestamps {
        let values = a.values.iter().zip(&b.values).map(|(x, y)| apply(op, *x, *y)).collect();
        return Series { timestamps: a.timestamps.clone(), values }.finite();
    }
    let mut out = Series::with_capacity(a.len().min(b.len()));
    let mut j = 0;
    for (t, x) in a.iter() {
        while j < b.len() && b.timestamps[j] < t {
            j += 1;
        }
        if j == b.len() {
            break;
        }
        if b.timestamps[j] == t {
            out.timestamps.push(t);
            out.values.push(apply(op, x, b.values[j]));
        }
    }
    out.finite()
}

fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, MathError> {
    Ok(match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => Value::Scalar(apply(op, x, y)),
        (Value::Scalar(x), other) => map(other, move |y| apply(op, x, y)),
        (other, Value::Scalar(y)) => map(other, move |x| apply(op, x, y)),
        (Value::Series(a), Value::Series(b)) => Value::Series(zip(op, &a, &b)),
        (Value::List(l), Value::Series(b)) => Value::List(l.iter().map(|a| zip(op, a, &b)).collect()),
        (Value::Series(a), Value::List(l)) => Value::List(l.iter().map(|b| zip(op, &a, b)).collect()),
        (Value::List(_), Value::List(_)) => {
            return err("Arithmetic between two arrays of time series is not supported")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(points: &[(i64, f64)]) -> Series {
        points.iter().copied().collect()
    }

    fn env() -> BTreeMap<String, Series> {
        let mut e = BTreeMap::new();
        e.insert("m1".to_string(), s(&[(0, 10.0), (60, 20.0), (120, 30.0)]));
        e.insert("m2".to_string(), s(&[(0, 40.0), (60, 0.0), (180, 5.0)]));
        e
    }

    fn eval(x: &str) -> Value {
        evaluate(&parse(x).unwrap(), &env()).unwrap()
    }

    #[test]
    fn precedence_and_parentheses() {
        assert_eq!(eval("1 + 2 * 3"), Value::Scalar(7.0));
        assert_eq!(eval("(1 + 2) * 3"), Value::Scalar(9.0));
        assert_eq!(eval("10 - 4 - 3"), Value::Scalar(3.0));
        assert_eq!(eval("-2 * -3"), Value::Scalar(6.0));
        assert_eq!(eval("8 / 2 / 2"), Value::Scalar(2.0));
        assert_eq!(eval("1.5e2"), Value::Scalar(150.0));
    }

    #[test]
    fn series_arithmetic_aligns_timestamps_and_drops_division_by_zero() {
        // m1/m2*100: only 0 and 60 are in both; 60 divides by zero.
        assert_eq!(eval("m1/m2*100"), Value::Series(s(&[(0, 25.0)])));
        assert_eq!(eval("m1 + 1"), Value::Series(s(&[(0, 11.0), (60, 21.0), (120, 31.0)])));
        assert_eq!(eval("2 * (m1 - m2)"), Value::Series(s(&[(0, -60.0), (60, 40.0)])));
        assert_eq!(eval("-m1"), Value::Series(s(&[(0, -10.0), (60, -20.0), (120, -30.0)])));
    }

    #[test]
    fn functions_of_lists_and_series() {
        assert_eq!(eval("SUM([m1, m2])"), Value::Series(s(&[(0, 50.0), (60, 20.0), (120, 30.0), (180, 5.0)])));
        assert_eq!(eval("MAX(METRICS())"), Value::Series(s(&[(0, 40.0), (60, 20.0), (120, 30.0), (180, 5.0)])));
        assert_eq!(eval("MIN(METRICS())"), Value::Series(s(&[(0, 10.0), (60, 0.0), (120, 30.0), (180, 5.0)])));
        assert_eq!(eval("AVG(METRICS(\"m1\"))"), Value::Series(s(&[(0, 10.0), (60, 20.0), (120, 30.0)])));
        assert_eq!(eval("AVG(m1)"), Value::Scalar(20.0));
        assert_eq!(eval("SUM(m1) / 3"), Value::Scalar(20.0));
        assert_eq!(eval("m1 - AVG(m1)"), Value::Series(s(&[(0, -10.0), (60, 0.0), (120, 10.0)])));
        assert!(matches!(eval("METRICS() * 2"), Value::List(l) if l.len() == 2));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = |x: &str| parse(x).and_then(|p| evaluate(&p, &env())).unwrap_err().0;
        assert_eq!(e("m3 + 1"), "Unrecognized identifier m3");
        assert!(e("m1 +").contains("end of expression"));
        assert!(e("(m1").contains("Expected ')'"));
        assert!(e("FOO(m1)").contains("Unsupported function FOO"));
        assert!(e("m1 % 2").contains("Unexpected character '%'"));
        assert!(e("M1").contains("lowercase"));
    }

    #[test]
    fn references_and_metrics() {
        let mut r = Vec::new();
        references(&parse("SUM([m1, m2]) / e1").unwrap(), &mut r);
        assert_eq!(r, ["m1", "m2", "e1"]);
        assert!(uses_metrics(&parse("AVG(METRICS())").unwrap()));
        assert!(!uses_metrics(&parse("m1").unwrap()));
    }

    #[test]
    fn series_keep_timestamps_sorted_and_unique() {
        let x: Series = [(120, 3.0), (0, 1.0), (60, 2.0), (0, 9.0)].into_iter().collect();
        assert_eq!(x.timestamps(), [0, 60, 120]);
        assert_eq!(x.values(), [9.0, 2.0, 3.0]);
        assert_eq!(x.get(60), Some(2.0));
        assert_eq!(x.get(30), None);
        assert_eq!(x.iter().next_back(), Some((120, 3.0)));
        assert_eq!(
            union_timestamps([&s(&[(0, 1.0), (120, 1.0)]), &s(&[(60, 1.0), (120, 1.0), (240, 1.0)])]),
            [0, 60, 120, 240]
        );
    }

    #[test]
    fn aligned_and_unaligned_series_give_the_same_answers() {
        // The same grid: elementwise; different grids: merged. Both as a map would do it.
        let a = s(&[(0, 1.0), (60, 2.0), (120, 4.0), (180, 8.0)]);
        let b = s(&[(0, 1.0), (60, 0.0), (120, 2.0), (180, 2.0)]);
        let c = s(&[(60, 5.0), (180, 1.0), (300, 7.0)]);
        let mut e = BTreeMap::new();
        e.insert("a".to_string(), a);
        e.insert("b".to_string(), b);
        e.insert("c".to_string(), c);
        let ev = |x: &str| evaluate(&parse(x).unwrap(), &e).unwrap();
        assert_eq!(ev("a / b"), Value::Series(s(&[(0, 1.0), (120, 2.0), (180, 4.0)])));
        assert_eq!(ev("a - c"), Value::Series(s(&[(60, -3.0), (180, 7.0)])));
        assert_eq!(ev("c - a"), Value::Series(s(&[(60, 3.0), (180, -7.0)])));
        assert_eq!(ev("SUM([a, b])"), Value::Series(s(&[(0, 2.0), (60, 2.0), (120, 6.0), (180, 10.0)])));
        assert_eq!(ev("AVG([a, c])"), Value::Series(s(&[(0, 1.0), (60, 3.5), (120, 4.0), (180, 4.5), (300, 7.0)])));
        assert_eq!(ev("MIN([c, a])"), Value::Series(s(&[(0, 1.0), (60, 2.0), (120, 4.0), (180, 1.0), (300, 7.0)])));
        assert_eq!(ev("MAX(a)"), Value::Scalar(8.0));
        assert_eq!(ev("SUM([c - a, 0 * b])"), Value::Series(s(&[(0, 0.0), (60, 3.0), (120, 0.0), (180, -7.0)])));
    }
}
