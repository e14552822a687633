//! The ECS cluster query language, used by ListContainerInstances `filter` and `memberOf`
//! placement constraints:
//!
//! ```text
//! attribute:ecs.instance-type =~ t2.* and not(task:group == service:web)
//! ec2InstanceId in ['i-abcd1234', 'i-wxyx7890'] || runningTasksCount > 1
//! attribute:ecs.os-type exists && registeredAt < 2018-01-01
//! ```
//!
//! Written by hand: it is small, ECS-specific, and no crate implements it.

use crate::error::{EcsError, Result};

/// What an expression can be evaluated against: a container instance.
pub trait QueryTarget {
    /// The attribute's value; `Some("")` for an attribute that exists without a value.
    fn attribute(&self, name: &str) -> Option<&str>;
    fn ec2_instance_id(&self) -> Option<&str>;
    fn registered_at(&self) -> Option<f64>;
    fn running_tasks_count(&self) -> i64;
    fn agent_connected(&self) -> bool;
    fn agent_version(&self) -> Option<&str>;
    /// The `group` of each task on the instance.
    fn task_groups(&self) -> Vec<&str>;
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Pred { subject: Subject, op: CmpOp, args: Vec<String> },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    Attribute(String),
    Ec2InstanceId,
    RegisteredAt,
    RunningTasksCount,
    AgentConnected,
    AgentVersion,
    TaskGroup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Sym(&'static str),
}

fn syntax(expr: &str, why: &str) -> EcsError {
    EcsError::invalid(format!("Invalid cluster query expression '{expr}': {why}."))
}

fn tokenize(s: &str) -> Result<Vec<Tok>> {
    const SYMS: [&str; 16] = ["==", "!=", ">=", "<=", "=~", "!~", "&&", "||", ">", "<", "!", "(", ")", "[", "]", ","];
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            let end = chars[i + 1..].iter().position(|&x| x == c).ok_or_else(|| syntax(s, "unterminated quote"))?;
            out.push(Tok::Quoted(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if let Some(sym) = SYMS.iter().find(|sym| rest.starts_with(**sym)) {
            out.push(Tok::Sym(sym));
            i += sym.chars().count();
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !"()[],'\"=!<>&|".contains(chars[i]) {
            i += 1;
        }
        if i == start {
            return Err(syntax(s, &format!("unexpected character '{}'", chars[i])));
        }
        out.push(Tok::Word(chars[start..i].iter().collect()));
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(&mut self) -> Result<Expr> {
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Sym("||")) || self.is_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Tok::Sym("&&")) || self.is_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.peek() == Some(&Tok::Sym("!")) || self.is_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::Sym("(")) {
            self.pos += 1;
            let e = self.or()?;
            if self.next() != Some(Tok::Sym(")")) {
                return Err(syntax(self.src, "missing ')'"));
            }
            return Ok(e);
        }
        self.predicate()
    }

    fn value(&mut self) -> Result<String> {
        match self.next() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Ok(w),
            _ => Err(syntax(self.src, "expected a value")),
        }
    }

    fn predicate(&mut self) -> Result<Expr> {
        let subject = match self.next() {
            Some(Tok::Word(w)) => match w.as_str() {
                "ec2InstanceId" => Subject::Ec2InstanceId,
                "registeredAt" => Subject::RegisteredAt,
                "runningTasksCount" => Subject::RunningTasksCount,
                "agentConnected" => Subject::AgentConnected,
                "agentVersion" => Subject::AgentVersion,
                "task:group" => Subject::TaskGroup,
                _ => match w.strip_prefix("attribute:") {
                    Some(a) if !a.is_empty() => Subject::Attribute(a.to_owned()),
                    _ => return Err(syntax(self.src, &format!("unknown subject '{w}'"))),
                },
            },
            _ => return Err(syntax(self.src, "expected a subject such as attribute:<name>")),
        };
        let op = match self.next() {
            Some(Tok::Sym("==")) => CmpOp::Eq,
            Some(Tok::Sym("!=")) => CmpOp::Ne,
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym(">=")) => CmpOp::Ge,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym("<=")) => CmpOp::Le,
            Some(Tok::Sym("=~")) => CmpOp::Matches,
            Some(Tok::Sym("!~")) => CmpOp::NotMatches,
            Some(Tok::Sym("!")) if self.is_word("exists") => {
                self.pos += 1;
                CmpOp::NotExists
            }
            Some(Tok::Word(w)) => match w.as_str() {
                "equals" => CmpOp::Eq,
                "not_equals" => CmpOp::Ne,
                "greater_than" => CmpOp::Gt,
                "greater_than_equal" => CmpOp::Ge,
                "less_than" => CmpOp::Lt,
                "less_than_equal" => CmpOp::Le,
                "exists" => CmpOp::Exists,
                "not_exists" => CmpOp::NotExists,
                "in" => CmpOp::In,
                "not_in" => CmpOp::NotIn,
                "matches" => CmpOp::Matches,
                "not_matches" => CmpOp::NotMatches,
                _ => return Err(syntax(self.src, &format!("unknown operator '{w}'"))),
            },
            _ => return Err(syntax(self.src, "expected an operator")),
        };
        let args = match op {
            CmpOp::Exists | CmpOp::NotExists => vec![],
            CmpOp::In | CmpOp::NotIn => {
                if self.next() != Some(Tok::Sym("[")) {
                    return Err(syntax(self.src, "'in' takes a list such as [a, b]"));
                }
                let mut vals = Vec::new();
                loop {
                    vals.push(self.value()?);
                    match self.next() {
                        Some(Tok::Sym(",")) => continue,
                        Some(Tok::Sym("]")) => break,
                        _ => return Err(syntax(self.src, "missing ']'")),
                    }
                }
                vals
            }
            _ => vec![self.value()?],
        };
        Ok(Expr::Pred { subject, op, args })
    }
}

pub fn parse(expr: &str) -> Result<Expr> {
    if expr.len() > 2000 {
        return Err(EcsError::invalid("Cluster query expressions are limited to 2000 characters."));
    }
    let toks = tokenize(expr)?;
    if toks.is_empty() {
        return Err(syntax(expr, "the expression is empty"));
    }
    let mut p = Parser { toks, pos: 0, src: expr };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(syntax(expr, "unexpected text after the expression"));
    }
    Ok(e)
}

/// `*` matches any run of characters, `?` one character.
fn glob(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Parses `2018-01-01` or `2018-01-01T10:00:00Z` into seconds since the epoch.
pub fn parse_date(s: &str) -> Option<f64> {
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let mut t = time.split(':').map(|x| x.parse::<f64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next().unwrap_or(Ok(0.0)).ok()?, t.next().unwrap_or(Ok(0.0)).ok()?);
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, u32::try_from(m).ok()?, u32::try_from(day).ok()?)?;
    let days = date.signed_duration_since(chrono::DateTime::UNIX_EPOCH.date_naive()).num_days();
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

fn compare(op: CmpOp, have: &str, want: &str) -> bool {
    use std::cmp::Ordering;
    let ord = match (have.parse::<f64>(), want.parse::<f64>()) {
        (Ok(a), Ok(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        _ => have.cmp(want),
    };
    match op {
        CmpOp::Eq => have == want || ord == Ordering::Equal && have.parse::<f64>().is_ok(),
        CmpOp::Ne => !(have == want || ord == Ordering::Equal && have.parse::<f64>().is_ok()),
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Matches => glob(want, have),
        CmpOp::NotMatches => !glob(want, have),
        _ => false,
    }
}

pub fn eval(e: &Expr, t: &dyn QueryTarget) -> bool {
    match e {
        Expr::And(a, b) => eval(a, t) && eval(b, t),
        Expr::Or(a, b) => eval(a, t) || eval(b, t),
        Expr::Not(a) => !eval(a, t),
        Expr::Pred { subject, op, args } => {
            let values: Vec<String> = match subject {
                Subject::Attribute(name) => t.attribute(name).map(str::to_owned).into_iter().collect(),
                Subject::Ec2InstanceId => t.ec2_instance_id().map(str::to_owned).into_iter().collect(),
                Subject::RegisteredAt => t.registered_at().map(|v| v.to_string()).into_iter().collect(),
                Subject::RunningTasksCount => vec![t.running_tasks_count().to_string()],
                Subject::AgentConnected => vec![t.agent_connected().to_string()],
                Subject::AgentVersion => t.agent_version().map(str::to_owned).into_iter().collect(),
                Subject::TaskGroup => t.task_groups().into_iter().map(str::to_owned).collect(),
            };
            let arg = |a: &String| -> String {
                if *subject == Subject::RegisteredAt {
                    parse_date(a).map(|v| v.to_string()).unwrap_or_else(|| a.clone())
                } else {
                    a.clone()
                }
            };
            match op {
                CmpOp::Exists => !values.is_empty(),
                CmpOp::NotExists => values.is_empty(),
                CmpOp::In => values.iter().any(|v| args.iter().any(|a| compare(CmpOp::Eq, v, &arg(a)))),
                CmpOp::NotIn => !values.iter().any(|v| args.iter().any(|a| compare(CmpOp::Eq, v, &arg(a)))),
                CmpOp::Ne | CmpOp::NotMatches => values.iter().all(|v| compare(*op, v, &arg(&args[0]))),
                _ => values.iter().any(|v| compare(*op, v, &arg(&args[0]))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Inst {
        attrs: Vec<(&'static str, &'static str)>,
        groups: Vec<&'static str>,
        running: i64,
    }

    impl QueryTarget for Inst {
        fn attribute(&self, name: &str) -> Option<&str> {
            self.attrs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        }
        fn ec2_instance_id(&self) -> Option<&str> {
            Some("i-abcd1234")
        }
        fn registered_at(&self) -> Option<f64> {
            parse_date("2020-06-01")
        }
        fn running_tasks_count(&self) -> i64 {
            self.running
        }
        fn agent_connected(&self) -> bool {
            true
        }
        fn agent_version(&self) -> Option<&str> {
            Some("1.80.0")
        }
        fn task_groups(&self) -> Vec<&str> {
            self.groups.clone()
        }
    }

    fn check(expr: &str, want: bool) {
        let i = Inst {
            attrs: vec![("ecs.instance-type", "t2.micro"), ("ecs.os-type", "linux"), ("stack", "prod")],
            groups: vec!["service:web", "family:batch"],
            running: 2,
        };
        let e = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(eval(&e, &i), want, "{expr} → {e:?}");
    }

    #[test]
    fn expressions() {
        check("attribute:ecs.instance-type == t2.micro", true);
        check("attribute:ecs.instance-type =~ t2.*", true);
        check("attribute:ecs.instance-type =~ m5.*", false);
        check("attribute:ecs.instance-type in [t2.micro, m5.large]", true);
        check("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']", true);
        check("attribute:ecs.os-type exists", true);
        check("attribute:missing !exists", true);
        check("attribute:missing not_exists && attribute:stack == prod", true);
        check("not(task:group == service:web)", false);
        check("task:group == family:batch or runningTasksCount > 5", true);
        check("runningTasksCount >= 2 and runningTasksCount < 3", true);
        check("registeredAt < 2021-01-01", true);
        check("registeredAt > 2021-01-01T00:00:00Z", false);
        check("!(attribute:stack != prod) && (agentConnected == true)", true);
        check("attribute:stack not_in [dev, test]", true);
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "attribute:",
            "foo == bar",
            "attribute:x ==",
            "attribute:x in [a, b",
            "(attribute:x exists",
            "attribute:x exists extra",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
        assert_eq!(parse_date("1970-01-02"), Some(86_400.0));
    }
}
