//! CloudWatch Logs filter patterns: the syntax FilterLogEvents, StartLiveTail, metric filters
//! and subscription filters share, parsed once ([`FilterPattern::parse`]) and matched against
//! each event's message ([`FilterPattern::matches`]).
//!
//! Written from the CloudWatch Logs user guide, "Filter pattern syntax for metric filters,
//! subscription filters, filter log events, and Live Tail"
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/FilterAndPatternSyntax.html>) and
//! its sub-pages on unstructured, JSON and space-delimited log events and on regular
//! expressions. The tests below are that guide's examples.
//!
//! Three kinds of pattern, told apart by their first character:
//! - **Unstructured** (anything else): terms separated by spaces, all of which must appear
//!   (`ERROR ARGUMENTS`); `"quoted phrases"`; `-term` excludes; `?term ?term` is an OR group
//!   (at least one must appear); `%regex%` (the restricted regex subset AWS documents: no
//!   parentheses, ASCII only). Matching is a case-sensitive substring match: AWS's guide gives
//!   `ERROR` matching `Exiting with ERRORCODE: -1`. Unquoted terms may hold only letters, digits
//!   and `_` ("Enclose ... terms that include non-alphanumeric characters in double quotation
//!   marks"). A pattern of only whitespace inside quotes (`" "`) matches everything, as the
//!   guide says.
//! - **JSON** (`{ ... }`): `$.a.b[0].c` selectors compared with `=`/`!=` to strings (leading
//!   and trailing `*` wildcards; `*` elsewhere is literal, per the guide), to numbers with
//!   `= != < > <= >=` (sign, decimals, scientific notation), to `%regex%`; `IS NULL`,
//!   `IS TRUE`, `IS FALSE`, `NOT EXISTS`; `&&` binds tighter than `||`; parentheses. A
//!   selector pointing at an object or an array, or at nothing, fails every comparison (both
//!   `=` and `!=`). A message that is not JSON matches no JSON pattern.
//! - **Space-delimited** (`[ ... ]`): named fields separated by commas, `...` for any number
//!   of fields, conditions on fields (`status_code = 4*`, `bytes > 1000`,
//!   `w1=ERROR || w1=WARNING`, `status_code = 4* && bytes > 1000`). The message splits on
//!   whitespace; `[...]` and `"..."` each make one field (without the brackets or quotes). The
//!   number of fields must match exactly unless `...` absorbs the rest.
//!
//! Not supported (AWS does not document them either): `$.*` selectors, `IS NOT`, `EXISTS`.
//! At most 2 regexes in a JSON or space-delimited pattern, as AWS's quota says.

use regex::Regex;
use serde_json::Value as Json;

/// Why a filter pattern is invalid. `Display` is the message AWS answers with
/// (`InvalidParameterException`).
///
/// The messages seen from AWS are "Invalid filter pattern" (FilterLogEvents), "Invalid
/// character(s) in term '...'" (for an unquoted term with characters that need quotes, or an
/// empty `""`) and "If a filter pattern starts with '{' it must end with '}'". Which of them
/// AWS picks for each mistake is not documented: [`PatternError::Syntax`], the catch-all, says
/// "Invalid filter pattern" and keeps what went wrong for `Debug` only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// An unquoted term with characters other than letters, digits and `_`, or an empty one.
    #[error("Invalid character(s) in term '{0}'")]
    InvalidTerm(String),
    /// A pattern that starts with `{` or `[` and does not end with its closing character.
    #[error("If a filter pattern starts with '{open}' it must end with '{close}'")]
    Unterminated { open: char, close: char },
    /// A `%regex%` with characters outside AWS's supported set, or that does not compile.
    #[error("Invalid filter pattern")]
    InvalidRegex(String),
    /// More than two `%regex%` in a JSON or space-delimited pattern.
    #[error("Invalid filter pattern")]
    TooManyRegexes,
    /// Any other syntax error; the string says what, for logs and tests.
    #[error("Invalid filter pattern")]
    Syntax(String),
}

type Result<T> = std::result::Result<T, PatternError>;

fn syntax<T>(what: impl Into<String>) -> Result<T> {
    Err(PatternError::Syntax(what.into()))
}

/// A parsed filter pattern.
#[derive(Debug, Clone)]
pub struct FilterPattern {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    All,
    Terms(Terms),
    Json(JExpr),
    Delimited(Delimited),
}

impl FilterPattern {
    pub fn parse(pattern: &str) -> Result<FilterPattern> {
        let p = pattern.trim();
        let kind = if p.is_empty() {
            Kind::All
        } else if let Some(rest) = p.strip_prefix('{') {
            let body = rest.strip_suffix('}').ok_or(PatternError::Unterminated { open: '{', close: '}' })?;
            Kind::Json(parse_json(body)?)
        } else if let Some(rest) = p.strip_prefix('[') {
            let body = rest.strip_suffix(']').ok_or(PatternError::Unterminated { open: '[', close: ']' })?;
            Kind::Delimited(parse_delimited(body)?)
        } else {
            parse_terms(p)?
        };
        Ok(FilterPattern { kind })
    }

    pub fn matches(&self, message: &str) -> bool {
        match &self.kind {
            Kind::All => true,
            Kind::Terms(t) => t.matches(message),
            Kind::Json(e) => match serde_json::from_str::<Json>(message.trim()) {
                Ok(doc) => e.eval_doc(&doc),
                Err(_) => false,
            },
            Kind::Delimited(d) => d.assign(message).is_some(),
        }
    }

    /// Strings that every message this pattern matches contains as a case-sensitive substring
    /// (for pruning storage blocks before matching each event); empty when none can be said.
    pub fn required_substrings(&self) -> Vec<String> {
        match &self.kind {
            Kind::All | Kind::Json(_) => Vec::new(),
            Kind::Terms(t) => t.required(),
            Kind::Delimited(d) => d.required(),
        }
    }

    /// For metric filters: the value of a selector (`$.latency` for JSON patterns,
    /// `$status_code` or `$3` for fields of space-delimited patterns) in a message this pattern
    /// matches; `None` when the message does not match or has no such value (JSON: an object,
    /// array or null is no value).
    pub fn value_of(&self, message: &str, selector: &str) -> Option<String> {
        match &self.kind {
            Kind::Json(e) => {
                let path = parse_selector(selector.trim()).ok()?;
                let doc: Json = serde_json::from_str(message.trim()).ok()?;
                if !e.eval_doc(&doc) {
                    return None;
                }
                scalar_text(resolve(&doc, &path)?)
            }
            Kind::Delimited(d) => {
                let name = selector.trim().strip_prefix('$')?;
                let (tokens, assign) = d.assign(message)?;
                if let Ok(n) = name.parse::<usize>() {
                    return tokens.get(n.checked_sub(1)?).map(|t| t.to_string());
                }
                let fi = d.field_index(name)?;
                Some(tokens[assign[fi]].to_string())
            }
            Kind::All | Kind::Terms(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Unstructured terms

#[derive(Debug, Clone)]
enum Term {
    Text(String),
    Regex(Regex),
    /// A quoted phrase of only whitespace: matches everything.
    Everything,
}

impl Term {
    fn found_in(&self, message: &str) -> bool {
        match self {
            Term::Text(t) => message.contains(t.as_str()),
            Term::Regex(r) => r.is_match(message),
            Term::Everything => true,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Terms {
    all: Vec<Term>,
    any: Vec<Term>,
    none: Vec<Term>,
}

impl Terms {
    fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| t.found_in(message))
            && !self.none.iter().any(|t| t.found_in(message))
            && (self.any.is_empty() || self.any.iter().any(|t| t.found_in(message)))
    }

    fn required(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .all
            .iter()
            .filter_map(|t| match t {
                Term::Text(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        if let [Term::Text(s)] = self.any.as_slice() {
            out.push(s.clone());
        }
        out
    }
}

fn parse_terms(p: &str) -> Result<Kind> {
    let mut terms = Terms::default();
    let mut chars = p.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        // An optional `?` (OR) or `-` (exclude) prefix; AWS's older guide also writes
        // `"ERROR" - "Exiting"`, with the minus standing apart.
        let mut prefix = None;
        if c == '?' || c == '-' {
            prefix = Some(c);
            chars.next();
            while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
                chars.next();
            }
        }
        let Some(&(at, first)) = chars.peek() else {
            return Err(PatternError::InvalidTerm(p[start..].trim().to_string()));
        };
        let term = if first == '"' {
            chars.next();
            let mut text = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e)) => text.push(e),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => text.push(c),
                }
            }
            if !closed {
                return syntax("unterminated quoted phrase");
            }
            if text.is_empty() {
                return Err(PatternError::InvalidTerm("\"\"".to_string()));
            }
            if text.trim().is_empty() {
                Term::Everything
            } else {
                Term::Text(text)
            }
        } else if first == '%' {
            chars.next();
            let body_start = at + 1;
            let mut end = None;
            for (i, c) in chars.by_ref() {
                if c == '%' {
                    end = Some(i);
                    break;
                }
            }
            let end = end.ok_or_else(|| PatternError::InvalidRegex(p[at..].to_string()))?;
            Term::Regex(compile_regex(&p[body_start..end])?)
        } else {
            let mut end = p.len();
            while let Some(&(i, c)) = chars.peek() {
                if c.is_whitespace() {
                    end = i;
                    break;
                }
                chars.next();
            }
            let word = &p[at..end];
            if !word.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(PatternError::InvalidTerm(word.to_string()));
            }
            Term::Text(word.to_string())
        };
        match prefix {
            Some('?') => terms.any.push(term),
            Some(_) => terms.none.push(term),
            None => terms.all.push(term),
        }
    }
    Ok(Kind::Terms(terms))
}

/// A `%regex%` body, checked against the characters AWS supports: ASCII letters and digits,
/// the symbols `_ # = @ / ; , - :` and the operators `^ $ ? [ ] { } | \ * + .` (no
/// parentheses, no multi-byte characters).
fn compile_regex(body: &str) -> Result<Regex> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_#=@/;,-:^$?[]{}|\\*+.".contains(c);
    if body.is_empty() || !body.chars().all(allowed) {
        return Err(PatternError::InvalidRegex(body.to_string()));
    }
    Regex::new(body).map_err(|_| PatternError::InvalidRegex(body.to_string()))
}

// ---------------------------------------------------------------------------------------
// Tokens shared by JSON and space-delimited patterns

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Comma,
    Op(CmpOp),
    Str(String),
    Regex(String),
    Word(String),
}

fn lex(s: &str) -> Result<Vec<Tok>> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '&' | '|' => {
                if it.next_if(|&(_, n)| n == c).is_none() {
                    return syntax(format!("single '{c}'"));
                }
                if c == '&' {
                    Tok::And
                } else {
                    Tok::Or
                }
            }
            '=' => Tok::Op(CmpOp::Eq),
            '!' => {
                if it.next_if(|&(_, n)| n == '=').is_none() {
                    return syntax("'!' without '='");
                }
                Tok::Op(CmpOp::Ne)
            }
            '<' | '>' => {
                let eq = it.next_if(|&(_, n)| n == '=').is_some();
                Tok::Op(match (c, eq) {
                    ('<', false) => CmpOp::Lt,
                    ('<', true) => CmpOp::Le,
                    ('>', false) => CmpOp::Gt,
                    _ => CmpOp::Ge,
                })
            }
            '"' => {
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, c)) = it.next() {
                    match c {
                        '\\' => match it.next() {
                            Some((_, e)) => text.push(e),
                            None => break,
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => text.push(c),
                    }
                }
                if !closed {
                    return syntax("unterminated string");
                }
                Tok::Str(text)
            }
            '%' => {
                let mut end = None;
                for (j, c) in it.by_ref() {
                    if c == '%' {
                        end = Some(j);
                        break;
                    }
                }
                let end = end.ok_or_else(|| PatternError::InvalidRegex(s[i..].to_string()))?;
                Tok::Regex(s[i + 1..end].to_string())
            }
            _ => {
                let mut end = s.len();
                while let Some(&(j, n)) = it.peek() {
                    if n.is_whitespace() || "()=!<>,\"&|%".contains(n) {
                        end = j;
                        break;
                    }
                    it.next();
                }
                Tok::Word(s[i..end].to_string())
            }
        };
        out.push(tok);
    }
    Ok(out)
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone)]
enum Operand {
    /// An unquoted number: compared numerically with numbers; `text` is its spelling, for
    /// `=`/`!=` against strings.
    Num(f64, String),
    Text(Wildcard),
    Regex(Regex),
}

/// A string with `*` wildcards at its start and/or end (a `*` elsewhere is literal).
#[derive(Debug, Clone)]
struct Wildcard {
    lead: bool,
    trail: bool,
    lit: String,
}

impl Wildcard {
    fn new(s: &str) -> Wildcard {
        let (lead, rest) = match s.strip_prefix('*') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (trail, lit) = match rest.strip_suffix('*') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        Wildcard { lead, trail, lit: lit.to_string() }
    }

    fn matches(&self, s: &str) -> bool {
        match (self.lead, self.trail) {
            (true, true) => s.contains(self.lit.as_str()),
            (true, false) => s.ends_with(self.lit.as_str()),
            (false, true) => s.starts_with(self.lit.as_str()),
            (false, false) => s == self.lit,
        }
    }
}

fn is_number(w: &str) -> bool {
    let b = w.strip_prefix(['+', '-']).unwrap_or(w).as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    let mut n = digits(&mut i);
    if i < b.len() && b[i] == b'.' {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn parse_number(w: &str) -> Option<f64> {
    is_number(w).then(|| w.strip_prefix('+').unwrap_or(w).parse().ok()).flatten()
}

impl Operand {
    fn from_tok(t: &Tok, regexes: &mut usize) -> Result<Operand> {
        Ok(match t {
            Tok::Str(s) => Operand::Text(Wildcard::new(s)),
            Tok::Regex(r) => {
                *regexes += 1;
                if *regexes > 2 {
                    return Err(PatternError::TooManyRegexes);
                }
                Operand::Regex(compile_regex(r)?)
            }
            Tok::Word(w) => match parse_number(w) {
                Some(n) => Operand::Num(n, w.clone()),
                None => Operand::Text(Wildcard::new(w)),
            },
            other => return syntax(format!("expected a value, found {other:?}")),
        })
    }

    /// Compares a field's text (`num`: its numeric value when it is a number) with this
    /// operand.
    fn compare(&self, op: CmpOp, text: &str, num: Option<f64>) -> bool {
        match self {
            Operand::Num(n, spelled) => match (num, op) {
                (Some(v), _) => match op {
                    CmpOp::Eq => v == *n,
                    CmpOp::Ne => v != *n,
                    CmpOp::Lt => v < *n,
                    CmpOp::Le => v <= *n,
                    CmpOp::Gt => v > *n,
                    CmpOp::Ge => v >= *n,
                },
                (None, CmpOp::Eq) => text == spelled,
                (None, CmpOp::Ne) => text != spelled,
                (None, _) => false,
            },
            Operand::Text(w) => match op {
                CmpOp::Eq => w.matches(text),
                CmpOp::Ne => !w.matches(text),
                _ => false,
            },
            Operand::Regex(r) => match op {
                CmpOp::Eq => r.is_match(text),
                CmpOp::Ne => !r.is_match(text),
                _ => false,
            },
        }
    }
}

fn check_op(op: CmpOp, value: &Operand) -> Result<()> {
    if matches!(op, CmpOp::Eq | CmpOp::Ne) || matches!(value, Operand::Num(..)) {
        Ok(())
    } else {
        syntax("ordering comparison with a value that is not a number")
    }
}

/// A recursive-descent cursor over tokens.
struct Cursor<'a> {
    toks: &'a [Tok],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<&Tok> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

/// `a || b && c` with `&&` binding tighter, parentheses, and `leaf` for the rest.
#[derive(Debug, Clone)]
enum BoolExpr<L> {
    And(Box<BoolExpr<L>>, Box<BoolExpr<L>>),
    Or(Box<BoolExpr<L>>, Box<BoolExpr<L>>),
    Leaf(L),
}

impl<L> BoolExpr<L> {
    fn parse(c: &mut Cursor<'_>, leaf: &mut dyn FnMut(&mut Cursor<'_>) -> Result<L>) -> Result<Self> {
        let mut left = Self::parse_and(c, leaf)?;
        while c.eat(&Tok::Or) {
            left = BoolExpr::Or(Box::new(left), Box::new(Self::parse_and(c, leaf)?));
        }
        Ok(left)
    }
    fn parse_and(c: &mut Cursor<'_>, leaf: &mut dyn FnMut(&mut Cursor<'_>) -> Result<L>) -> Result<Self> {
        let mut left = Self::parse_primary(c, leaf)?;
        while c.eat(&Tok::And) {
            left = BoolExpr::And(Box::new(left), Box::new(Self::parse_primary(c, leaf)?));
        }
        Ok(left)
    }
    fn parse_primary(c: &mut Cursor<'_>, leaf: &mut dyn FnMut(&mut Cursor<'_>) -> Result<L>) -> Result<Self> {
        if c.eat(&Tok::LParen) {
            let e = Self::parse(c, leaf)?;
            if !c.eat(&Tok::RParen) {
                return syntax("missing ')'");
            }
            return Ok(e);
        }
        Ok(BoolExpr::Leaf(leaf(c)?))
    }
    fn eval(&self, f: &mut dyn FnMut(&L) -> bool) -> bool {
        match self {
            BoolExpr::And(a, b) => a.eval(f) && b.eval(f),
            BoolExpr::Or(a, b) => a.eval(f) || b.eval(f),
            BoolExpr::Leaf(l) => f(l),
        }
    }
    /// The leaves that every `true` evaluation needs (those joined by `&&` alone at the top).
    fn conjuncts<'s>(&'s self, out: &mut Vec<&'s L>) {
        match self {
            BoolExpr::And(a, b) => {
                a.conjuncts(out);
                b.conjuncts(out);
            }
            BoolExpr::Leaf(l) => out.push(l),
            BoolExpr::Or(..) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// JSON patterns

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone)]
enum JTest {
    Cmp(CmpOp, Operand),
    IsNull,
    IsBool(bool),
    NotExists,
}

#[derive(Debug, Clone)]
struct JCond {
    path: Vec<Seg>,
    test: JTest,
}

type JExpr = BoolExpr<JCond>;

/// `$.a.b[0][1].c`: keys of letters, digits, `-` and `_`; indexes after a key.
fn parse_selector(s: &str) -> Result<Vec<Seg>> {
    let Some(mut rest) = s.strip_prefix('$') else {
        return syntax(format!("selector {s:?} does not start with '$'"));
    };
    let mut path = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') {
                return syntax(format!("bad selector {s:?}"));
            }
            path.push(Seg::Key(key.to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or(PatternError::Syntax(format!("bad selector {s:?}")))?;
            let idx = r[..end].parse().map_err(|_| PatternError::Syntax(format!("bad index in {s:?}")))?;
            if path.is_empty() {
                return syntax("an index must follow a property");
            }
            path.push(Seg::Index(idx));
            rest = &r[end + 1..];
        } else {
            return syntax(format!("bad selector {s:?}"));
        }
    }
    if path.is_empty() {
        return syntax("empty selector");
    }
    Ok(path)
}

fn parse_json(body: &str) -> Result<JExpr> {
    let toks = lex(body)?;
    let mut c = Cursor { toks: &toks, pos: 0 };
    let mut regexes = 0;
    let e = JExpr::parse(&mut c, &mut |c| {
        let Some(Tok::Word(sel)) = c.next() else {
            return syntax("expected a selector");
        };
        let path = parse_selector(sel)?;
        let test = match c.next() {
            Some(Tok::Op(op)) => {
                let op = *op;
                let v = Operand::from_tok(c.next().unwrap_or(&Tok::Comma), &mut regexes)?;
                check_op(op, &v)?;
                JTest::Cmp(op, v)
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("IS") => match c.next() {
                Some(Tok::Word(v)) if v.eq_ignore_ascii_case("NULL") => JTest::IsNull,
                Some(Tok::Word(v)) if v.eq_ignore_ascii_case("TRUE") => JTest::IsBool(true),
                Some(Tok::Word(v)) if v.eq_ignore_ascii_case("FALSE") => JTest::IsBool(false),
                _ => return syntax("IS takes NULL, TRUE or FALSE"),
            },
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("NOT") => match c.next() {
                Some(Tok::Word(v)) if v.eq_ignore_ascii_case("EXISTS") => JTest::NotExists,
                _ => return syntax("NOT takes EXISTS"),
            },
            _ => return syntax("expected an operator after the selector"),
        };
        Ok(JCond { path, test })
    })?;
    if c.pos != toks.len() {
        return syntax("unexpected text after the expression");
    }
    Ok(e)
}

fn resolve<'j>(doc: &'j Json, path: &[Seg]) -> Option<&'j Json> {
    path.iter().try_fold(doc, |v, seg| match seg {
        Seg::Key(k) => v.as_object()?.get(k),
        Seg::Index(i) => v.as_array()?.get(*i),
    })
}

/// A value node's text: strings as they are, numbers and booleans as JSON spells them.
fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl JExpr {
    fn eval_doc(&self, doc: &Json) -> bool {
        self.eval(&mut |cond: &JCond| {
            let node = resolve(doc, &cond.path);
            match &cond.test {
                JTest::NotExists => node.is_none(),
                JTest::IsNull => matches!(node, Some(Json::Null)),
                JTest::IsBool(b) => node == Some(&Json::Bool(*b)),
                JTest::Cmp(op, v) => {
                    let Some(node) = node else { return false };
                    let num = match node {
                        Json::Number(n) => n.as_f64(),
                        Json::String(s) => parse_number(s),
                        _ => None,
                    };
                    match scalar_text(node) {
                        Some(text) => v.compare(*op, &text, num),
                        None => false,
                    }
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Space-delimited patterns

#[derive(Debug, Clone)]
struct DCmp {
    field: usize,
    op: CmpOp,
    value: Operand,
}

#[derive(Debug, Clone)]
enum DField {
    Ellipsis,
    Named {
        name: String,
        cond: Option<BoolExpr<DCmp>>,
        /// The condition names only this field: checked as soon as the field is placed.
        local: bool,
    },
}

#[derive(Debug, Clone)]
struct Delimited {
    fields: Vec<DField>,
}

fn parse_delimited(body: &str) -> Result<Delimited> {
    let toks = lex(body)?;
    let mut groups: Vec<&[Tok]> = toks.split(|t| *t == Tok::Comma).collect();
    if groups.len() > 1 && groups.last().is_some_and(|g| g.is_empty()) {
        groups.pop(); // `[..., status_code=4*,]`, as AWS's guide writes it
    }
    // Names first, so that a condition can name any field of the pattern.
    let mut names = Vec::new();
    for g in &groups {
        match g.first() {
            Some(Tok::Word(w)) if w == "..." => names.push(None),
            Some(Tok::Word(w)) if !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                names.push(Some(w.clone()))
            }
            Some(Tok::Word(w)) => return Err(PatternError::InvalidTerm(w.clone())),
            _ => return syntax("each field needs a name"),
        }
    }
    let lookup = |n: &str| {
        names
            .iter()
            .position(|x| x.as_deref() == Some(n))
            .or_else(|| names.iter().position(|x| x.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(n))))
    };
    let mut regexes = 0;
    let mut fields = Vec::new();
    for (fi, g) in groups.iter().enumerate() {
        let Some(name) = names[fi].clone() else {
            if g.len() != 1 {
                return syntax("'...' takes no condition");
            }
            fields.push(DField::Ellipsis);
            continue;
        };
        if g.len() == 1 {
            fields.push(DField::Named { name, cond: None, local: true });
            continue;
        }
        // The field's own name starts its condition: `status_code = 404 || status_code = 410`.
        let mut c = Cursor { toks: g, pos: 0 };
        let cond = BoolExpr::parse(&mut c, &mut |c| {
            let field = match c.peek() {
                Some(Tok::Word(w)) => {
                    let w = w.clone();
                    c.pos += 1;
                    lookup(&w).ok_or(PatternError::Syntax(format!("unknown field {w:?}")))?
                }
                _ => fi,
            };
            if names[field].is_none() {
                return syntax("'...' has no value");
            }
            let Some(Tok::Op(op)) = c.next() else {
                return syntax("expected an operator");
            };
            let op = *op;
            let value = Operand::from_tok(c.next().unwrap_or(&Tok::Comma), &mut regexes)?;
            check_op(op, &value)?;
            Ok(DCmp { field, op, value })
        })?;
        if c.pos != g.len() {
            return syntax("unexpected text in a field");
        }
        let mut local = true;
        cond.eval(&mut |cmp: &DCmp| {
            local &= cmp.field == fi;
            true
        });
        fields.push(DField::Named { name, cond: Some(cond), local });
    }
    if fields.is_empty() {
        return syntax("no fields");
    }
    Ok(Delimited { fields })
}

/// A message's space-delimited fields: `[...]` and `"..."` are one field each, without their
/// brackets or quotes.
fn split_fields(message: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = message.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let close = match b[i] {
            b'[' => Some(b']'),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(close) = close {
            if let Some(j) = b[i + 1..].iter().position(|&x| x == close) {
                out.push(&message[i + 1..i + 1 + j]);
                i += j + 2;
                continue;
            }
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push(&message[start..i]);
    }
    out
}

impl Delimited {
    fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| matches!(f, DField::Named { name: n, .. } if n == name))
    }

    fn check(&self, cond: &BoolExpr<DCmp>, tokens: &[&str], assign: &[usize]) -> bool {
        cond.eval(&mut |cmp: &DCmp| {
            let text = tokens[assign[cmp.field]];
            cmp.value.compare(cmp.op, text, parse_number(text))
        })
    }

    /// The message's fields and, for each pattern field, the index of the message field it
    /// stands for (ellipses: unused), when the message matches.
    fn assign<'m>(&self, message: &'m str) -> Option<(Vec<&'m str>, Vec<usize>)> {
        let tokens = split_fields(message);
        let mut assign = vec![usize::MAX; self.fields.len()];
        self.place(0, 0, &tokens, &mut assign).then_some((tokens, assign))
    }

    fn place(&self, fi: usize, ti: usize, tokens: &[&str], assign: &mut [usize]) -> bool {
        let Some(field) = self.fields.get(fi) else {
            return ti == tokens.len()
                && self.fields.iter().all(|f| match f {
                    DField::Named { cond: Some(c), local: false, .. } => self.check(c, tokens, assign),
                    _ => true,
                });
        };
        match field {
            DField::Ellipsis => (ti..=tokens.len()).any(|k| self.place(fi + 1, k, tokens, assign)),
            DField::Named { cond, local, .. } => {
                if ti >= tokens.len() {
                    return false;
                }
                assign[fi] = ti;
                if let (Some(c), true) = (cond, local) {
                    if !self.check(c, tokens, assign) {
                        return false;
                    }
                }
                self.place(fi + 1, ti + 1, tokens, assign)
            }
        }
    }

    fn required(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.fields {
            if let DField::Named { cond: Some(c), .. } = f {
                let mut leaves = Vec::new();
                c.conjuncts(&mut leaves);
                for l in leaves {
                    if let (CmpOp::Eq, Operand::Text(w)) = (l.op, &l.value) {
                        if !w.lit.is_empty() {
                            out.push(w.lit.clone());
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, msg: &str) -> bool {
        FilterPattern::parse(p).unwrap_or_else(|e| panic!("{p}: {e:?}")).matches(msg)
    }

    const E400: &str = "[ERROR 400] BAD REQUEST";
    const E401: &str = "[ERROR 401] UNAUTHORIZED REQUEST";
    const E419: &str = "[ERROR 419] MISSING ARGUMENTS";
    const E420: &str = "[ERROR 420] INVALID ARGUMENTS";
    const E500: &str = "[ERROR 500] INTERNAL SERVER ERROR";
    const OK: &str = "[SUCCESS 200] AUTHORIZED REQUEST";

    #[test]
    fn empty_pattern_matches_everything() {
        assert!(m("", "anything"));
        assert!(m("   ", ""));
        assert!(FilterPattern::parse("").unwrap().required_substrings().is_empty());
    }

    #[test]
    fn single_term() {
        for msg in [E400, E401, E419, E420] {
            assert!(m("ERROR", msg));
        }
        assert!(!m("ERROR", OK));
        // Older guide: "ERROR" matches "Exiting with ERRORCODE: -1" (a substring).
        assert!(m("ERROR", "Exiting with ERRORCODE: -1"));
        // Case sensitive.
        assert!(!m("ERROR", "[error 400] bad request"));
        assert!(m("\"ERROR\"", E400));
    }

    #[test]
    fn multiple_terms_are_anded() {
        assert!(m("ERROR ARGUMENTS", E419));
        assert!(m("ERROR ARGUMENTS", E420));
        assert!(!m("ERROR ARGUMENTS", E400));
        assert!(!m("ERROR ARGUMENTS", E401));
        assert!(m("ERROR Exception", "[ERROR] Caught IllegalArgumentException"));
        assert!(m("Failed to process the request", "[WARN] Failed to process the request"));
    }

    #[test]
    fn question_marks_are_ored() {
        for msg in [E400, E401, E419, E420] {
            assert!(m("?ERROR ?ARGUMENTS", msg));
        }
        assert!(!m("?ERROR ?ARGUMENTS", OK));
        // The older guide's three events.
        let (a, b, c) = ("ERROR WARN message", "ERROR message", "WARN message");
        assert!(m("?ERROR ?WARN", a) && m("?ERROR ?WARN", b) && m("?ERROR ?WARN", c));
        assert!(!m("?ERROR ?WARN", "INFO message"));
        assert!(m("ERROR WARN", a) && !m("ERROR WARN", b) && !m("ERROR WARN", c));
        assert!(!m("ERROR -WARN", a) && m("ERROR -WARN", b) && !m("ERROR -WARN", c));
    }

    #[test]
    fn exact_phrase() {
        assert!(m("\"INTERNAL SERVER ERROR\"", E500));
        assert!(!m("\"INTERNAL SERVER ERROR\"", "INTERNAL ERROR SERVER"));
        assert!(m("?\"BAD REQUEST\" ?\"SERVER ERROR\"", E400));
        assert!(m("?\"BAD REQUEST\" ?\"SERVER ERROR\"", E500));
        assert!(!m("?\"BAD REQUEST\" ?\"SERVER ERROR\"", E401));
        assert!(m(r#""say \"hi\"""#, r#"they say "hi" twice"#));
    }

    #[test]
    fn include_and_exclude() {
        assert!(m("ERROR -ARGUMENTS", E400));
        assert!(m("ERROR -ARGUMENTS", E401));
        assert!(!m("ERROR -ARGUMENTS", E419));
        assert!(!m("ERROR -ARGUMENTS", E420));
        assert!(m("-ERROR", OK));
        assert!(!m("-ERROR", E400));
        // Older guide: `"ERROR" - "Exiting"`.
        assert!(m("\"ERROR\" - \"Exiting\"", "[ERROR] A fatal exception has occurred"));
        assert!(!m("\"ERROR\" - \"Exiting\"", "Exiting with ERRORCODE: -1"));
        assert!(m("-\"health check\"", "GET /"));
        assert!(!m("-\"health check\"", "GET / health check"));
    }

    #[test]
    fn quoted_space_matches_everything() {
        assert!(m("\" \"", "x"));
        assert!(m("\" \"", ""));
    }

    #[test]
    fn regex_terms() {
        assert!(m("%AUTHORIZED%", E401));
        assert!(m("%AUTHORIZED%", OK));
        assert!(!m("%AUTHORIZED%", E400));
        assert!(m("%colou?r%", "the color"));
        assert!(m("%colou?r%", "the colour"));
        assert!(m("%^\\[ERROR\\s4[0-9]{2}\\]%", E419));
        assert!(!m("%^\\[ERROR\\s4[0-9]{2}\\]%", E500));
        // A space is not among AWS's supported characters.
        assert!(matches!(FilterPattern::parse("%ERROR 4%"), Err(PatternError::InvalidRegex(_))));
        assert!(m("%10\\.10\\.0\\.1%", "from 10.10.0.1"));
        assert!(!m("%10\\.10\\.0\\.1%", "from 10x10.0.1"));
        assert!(m("%gray|grey%", "grey"));
        // Unsupported characters and parentheses are rejected.
        assert!(matches!(FilterPattern::parse("%something!%"), Err(PatternError::InvalidRegex(_))));
        assert!(matches!(FilterPattern::parse("%(a)%"), Err(PatternError::InvalidRegex(_))));
        assert!(matches!(FilterPattern::parse("%é%"), Err(PatternError::InvalidRegex(_))));
        assert!(matches!(FilterPattern::parse("%abc"), Err(PatternError::InvalidRegex(_))));
    }

    #[test]
    fn invalid_terms() {
        let e = FilterPattern::parse("email@domain.com").unwrap_err();
        assert_eq!(e.to_string(), "Invalid character(s) in term 'email@domain.com'");
        assert_eq!(FilterPattern::parse("\"\"").unwrap_err().to_string(), "Invalid character(s) in term '\"\"'");
        assert!(matches!(FilterPattern::parse("?"), Err(PatternError::InvalidTerm(_))));
        assert!(matches!(FilterPattern::parse("ERROR -"), Err(PatternError::InvalidTerm(_))));
        assert!(matches!(FilterPattern::parse("\"open"), Err(PatternError::Syntax(_))));
        assert!(m("\"email@domain.com\"", "sent to email@domain.com"));
        assert!(m("under_score 404", "under_score got 404"));
    }

    #[test]
    fn unterminated_structured_patterns() {
        let e = FilterPattern::parse("{$.a = 1").unwrap_err();
        assert_eq!(e.to_string(), "If a filter pattern starts with '{' it must end with '}'");
        let e = FilterPattern::parse("[a, b").unwrap_err();
        assert_eq!(e.to_string(), "If a filter pattern starts with '[' it must end with ']'");
        assert_eq!(FilterPattern::parse("{ $.a = }").unwrap_err().to_string(), "Invalid filter pattern");
    }

    const TRAIL: &str = r#"{"eventType": "UpdateTrail", "sourceIPAddress": "111.111.111.111",
        "arrayKey": ["value", "another value"],
        "objectList": [{"name": "a", "id": 1}, {"name": "b", "id": 2}],
        "SomeObject": null, "ThisFlag": true}"#;

    #[test]
    fn json_examples() {
        assert!(m(r#"{ $.eventType = "UpdateTrail" }"#, TRAIL));
        assert!(!m(r#"{ $.eventType = "CreateTrail" }"#, TRAIL));
        assert!(m("{ $.sourceIPAddress != 123.123.* }", TRAIL));
        assert!(!m("{ $.sourceIPAddress != 111.111.* }", TRAIL));
        assert!(m(r#"{ $.arrayKey[0] = "value" }"#, TRAIL));
        assert!(!m(r#"{ $.arrayKey[1] = "value" }"#, TRAIL));
        assert!(m("{ $.objectList[1].id = 2 }", TRAIL));
        assert!(!m("{ $.objectList[0].id = 2 }", TRAIL));
        assert!(m("{ $.SomeObject IS NULL }", TRAIL));
        assert!(!m("{ $.eventType IS NULL }", TRAIL));
        assert!(!m("{ $.Missing IS NULL }", TRAIL));
        assert!(m("{ $.SomeOtherObject NOT EXISTS }", TRAIL));
        assert!(!m("{ $.SomeObject NOT EXISTS }", TRAIL));
        assert!(m("{ $.ThisFlag IS TRUE }", TRAIL));
        assert!(!m("{ $.ThisFlag IS FALSE }", TRAIL));
        assert!(m(r#"{ $.eventType = "*" && $.sourceIPAddress != 123.123.* }"#, TRAIL));
        assert!(m("{$.eventType=UpdateTrail}", TRAIL));
        // Wildcards at either end only.
        assert!(m("{ $.eventType = *Trail }", TRAIL));
        assert!(m("{ $.eventType = Update* }", TRAIL));
        assert!(m("{ $.eventType = *dateTr* }", TRAIL));
        assert!(!m("{ $.eventType = Up*Trail }", TRAIL));
        assert!(m(r#"{ $.name = "Ev*ent" }"#, r#"{"name": "Ev*ent"}"#));
        // Not JSON: no JSON pattern matches, not even NOT EXISTS.
        assert!(!m("{ $.a NOT EXISTS }", "plain text"));
        assert!(!m(r#"{ $.eventType = "UpdateTrail" }"#, "eventType UpdateTrail"));
    }

    #[test]
    fn json_or() {
        let p = "{$.foo = bar || $.foo = baz }";
        assert!(m("{$.foo = bar}", r#"{"foo": "bar"}"#));
        assert!(!m("{$.foo = bar}", r#"{"foo": "baz"}"#));
        assert!(m(p, r#"{"foo": "bar"}"#) && m(p, r#"{"foo": "baz"}"#));
        assert!(!m(p, r#"{"foo": "qux"}"#));
    }

    const USERS: &str = r#"{"user": {"id": 1, "email": "John.Stiles@example.com"},
        "users": [{"id": 2, "email": "John.Doe@example.com"}, {"id": 3, "email": "Jane.Doe@example.com"}],
        "actions": ["GET", "PUT", "DELETE"],
        "coordinates": [[0, 1, 2], [4, 5, 6], [7, 8, 9]]}"#;

    #[test]
    fn json_compound_examples() {
        assert!(m(r#"{ ($.user.id = 1) && ($.users[0].email = "John.Doe@example.com") }"#, USERS));
        assert!(m(
            r#"{ $.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = "nonmatch" && $.actions[2] = "nonmatch" }"#,
            USERS
        ));
        assert!(!m(
            r#"{ ($.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = "nonmatch") && $.actions[2] = "nonmatch" }"#,
            USERS
        ));
        assert!(!m(r#"{ ($.user.id = 2 && $.users[0].email = "nonmatch") || $.actions[2] = "GET" }"#, USERS));
        assert!(m("{ $.coordinates[2][0] = 7 }", USERS));
    }

    #[test]
    fn json_selector_on_array_or_object_never_matches() {
        let msg = r#"{"users": [1, 2, 3]}"#;
        assert!(!m("{$.users = 1}", msg));
        assert!(!m("{$.users != 1}", msg));
        assert!(!m("{$.missing != 1}", msg));
    }

    #[test]
    fn json_numbers() {
        let msg = r#"{"bandwidth": 80, "latency": 40, "refreshRate": 60, "responseTime": 5,
            "errorCode": 400, "number": [0.001, 1000], "averageRuntime": 55.5, "code": "404"}"#;
        assert!(m("{ $.bandwidth > 75 }", msg));
        assert!(!m("{ $.bandwidth > 80 }", msg));
        assert!(m("{ $.latency < 50 }", msg));
        assert!(m("{ $.refreshRate >= 60 }", msg));
        assert!(!m("{ $.refreshRate >= 61 }", msg));
        assert!(m("{ $.responseTime <= 5 }", msg));
        assert!(m("{ $.errorCode = 400}", msg));
        assert!(m("{ $.errorCode != 500 }", msg));
        assert!(!m("{ $.errorCode != 400 }", msg));
        assert!(m("{ $.number[0] = 1e-3 }", msg));
        assert!(!m("{ $.number[1] != 1e+3 }", msg));
        assert!(m("{ $.number[1] < 10e3 }", msg));
        assert!(m("{ $.averageRuntime <= 55.5 }", msg));
        assert!(m("{ $.latency > -1 } ", msg));
        assert!(!m("{ $.latency > +1000 }", msg));
        assert!(m("{ $.latency = * }", msg));
        assert!(m("{ $.errorCode = 4* }", msg));
        assert!(m(r#"{ $.errorCode = "400" }"#, msg));
        assert!(m("{ $.code = 404 }", msg));
        // Ordering needs a number on the right.
        assert!(FilterPattern::parse("{ $.latency > abc }").is_err());
    }

    #[test]
    fn json_level_and_latency() {
        let p = r#"{ $.level = "error" && $.latency > 100 }"#;
        assert!(m(p, r#"{"level": "error", "latency": 150}"#));
        assert!(!m(p, r#"{"level": "error", "latency": 50}"#));
        assert!(!m(p, r#"{"level": "info", "latency": 150}"#));
        assert!(!m(p, r#"{"level": "ERROR", "latency": 150}"#));
        assert!(!m(p, "level error latency 150"));
    }

    #[test]
    fn json_regex() {
        assert!(m("{ $.eventType = %Update.*% }", TRAIL));
        assert!(!m("{ $.eventType = %^Trail% }", TRAIL));
        assert!(m("{ $.eventType != %^Create% }", TRAIL));
        assert!(matches!(
            FilterPattern::parse("{ $.a = %a% || $.b = %b% || $.c = %c% }"),
            Err(PatternError::TooManyRegexes)
        ));
    }

    #[test]
    fn json_syntax_errors() {
        for p in [
            "{ }",
            "{ $.a }",
            "{ a = 1 }",
            "{ $.a = 1 && }",
            "{ ($.a = 1 }",
            "{ $.a IS NOT NULL }",
            "{ $.a EXISTS }",
            "{ $.a = 1 $.b = 2 }",
            "{ $.* = 1 }",
            "{ $.a & $.b }",
        ] {
            assert!(matches!(FilterPattern::parse(p), Err(PatternError::Syntax(_))), "{p}");
        }
    }

    #[test]
    fn json_value_of() {
        let p = FilterPattern::parse("{ $.latency = * }").unwrap();
        assert_eq!(p.value_of(r#"{"latency": 50, "requestType": "GET"}"#, "$.latency").as_deref(), Some("50"));
        assert_eq!(p.value_of(r#"{"requestType": "GET"}"#, "$.latency"), None);
        let p = FilterPattern::parse(r#"{ $.eventType = "*" }"#).unwrap();
        assert_eq!(p.value_of(TRAIL, "$.eventType").as_deref(), Some("UpdateTrail"));
        assert_eq!(p.value_of(TRAIL, "$.objectList[1].name").as_deref(), Some("b"));
        assert_eq!(p.value_of(TRAIL, "$.objectList"), None);
    }

    const APACHE: &str = r#"127.0.0.1 Prod frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534"#;
    const APACHE_200: &str = r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /apache_pb.gif HTTP/1.0" 200 1534"#;
    const APACHE_500: &str = r#"127.0.0.1 - frank [10/Oct/2000:13:35:22 -0700] "GET /apache_pb.gif HTTP/1.0" 500 5324"#;

    #[test]
    fn space_delimited_examples() {
        let p = "[ip, user, username, timestamp, request =*.html*, status_code = 4*, bytes]";
        assert!(m(p, APACHE));
        assert!(!m(p, APACHE_200));
        assert!(m("[..., request =*.html*, status_code = 4*, bytes]", APACHE));
        assert!(!m("[..., request =*.html*, status_code = 4*, bytes]", APACHE_500));
        let p = "[ip, user, username, timestamp, request =*.html*, status_code = 404 || status_code = 410, bytes]";
        assert!(m(p, APACHE));
        assert!(!m(p, &APACHE.replace(" 404 ", " 403 ")));
        assert!(m(p, &APACHE.replace(" 404 ", " 410 ")));
        assert!(m("[ip, server, username, timestamp, request, status_code, bytes > 1000]", APACHE));
        assert!(!m("[ip, server, username, timestamp, request, status_code, bytes > 2000]", APACHE));
        assert!(m("[ip, user, username, timestamp, request, status_code = 200, bytes]", APACHE_200));
        assert!(!m("[ip, user, username, timestamp, request, status_code = 200, bytes]", APACHE_500));
        assert!(m("[..., status_code, bytes]", APACHE));
        assert!(m("[ip, user, ..., status_code, bytes]", APACHE));
        assert!(m("[ip, user, ...]", APACHE));
        assert!(m("[ip, user, ..., status_code = 4*, bytes > 1000]", APACHE));
        assert!(!m("[ip, user, ..., status_code = 5*, bytes > 1000]", APACHE));
        // Field count must match without an ellipsis.
        assert!(!m("[ip, user, username]", APACHE));
        // The older guide's `status_code = 4* && bytes > 1000` names a field the pattern does
        // not have; AWS answers "Invalid filter pattern" to it
        // (awsdocs/amazon-cloudwatch-logs-user-guide#21).
        let e = FilterPattern::parse("[ip, user, username, timestamp, request, status_code = 4* && bytes > 1000]");
        assert_eq!(e.unwrap_err().to_string(), "Invalid filter pattern");
        assert!(m("[ip, user, username, timestamp, request, status_code = 4* && bytes > 1000, bytes]", APACHE));
        assert!(m("[ip, user, username, timestamp, request, status_code = 4* && status_code != 403, bytes]", APACHE));
        assert!(!m("[ip, user, username, timestamp, request, status_code = 4* && status_code != 404, bytes]", APACHE));
        // A trailing comma, as the guide writes one example.
        assert!(m("[..., request=*.html*, status_code=4*,]", &APACHE.replace(" 1534", "")));
        assert!(m("[ip, user = Prod, ...]", APACHE));
        assert!(m("[ip, user = -, ...]", APACHE_200));
        assert!(m(r#"[ip, user, username, timestamp, request = "*html*", status_code, bytes]"#, APACHE));
        assert!(m("[ip, user, username, timestamp = *2000*, ...]", APACHE));
    }

    #[test]
    fn space_delimited_words() {
        let (a, b, c) = ("ERROR WARN message", "ERROR message", "WARN message");
        let p = "[w1=ERROR, w2]";
        assert!(!m(p, a) && m(p, b) && !m(p, c));
        let p = "[w1=ERROR || W1=WARNING, w2]";
        assert!(m(p, "WARNING message") && m(p, b) && !m(p, c));
        let p = "[w1=ERROR || w1=WARN, w2]";
        assert!(!m(p, a) && m(p, b) && m(p, c));
        let p = "[w1!=ERROR && w1!=WARNING, w2]";
        assert!(!m(p, b) && m(p, c) && !m(p, "WARNING message"));
    }

    #[test]
    fn space_delimited_regex_and_errors() {
        assert!(m("[ip, user, username, timestamp, request, status_code = %4[0-9]{2}%, bytes]", APACHE));
        assert!(!m("[ip, user, username, timestamp, request, status_code = %^5%, bytes]", APACHE));
        assert!(FilterPattern::parse("[a, b = 1 && c = 2, ..., = 3]").is_err());
        assert!(FilterPattern::parse("[a, b > x]").is_err());
        assert!(FilterPattern::parse("[a, b = 1 && nope = 2]").is_err());
        assert!(FilterPattern::parse("[]").is_err());
        assert!(FilterPattern::parse("[..., ... = 1]").is_err());
        assert!(matches!(FilterPattern::parse("[a-b, c]"), Err(PatternError::InvalidTerm(_))));
    }

    #[test]
    fn space_delimited_value_of() {
        let p = FilterPattern::parse("[ip, server, username, timestamp, request, status_code, bytes > 1000]").unwrap();
        assert_eq!(p.value_of(APACHE, "$bytes").as_deref(), Some("1534"));
        assert_eq!(p.value_of(APACHE, "$server").as_deref(), Some("Prod"));
        assert_eq!(p.value_of(APACHE, "$request").as_deref(), Some("GET /index.html HTTP/1.0"));
        assert_eq!(p.value_of(APACHE, "$timestamp").as_deref(), Some("10/Oct/2000:13:25:15 -0700"));
        assert_eq!(p.value_of(APACHE, "$nope"), None);
        assert_eq!(p.value_of("a b", "$ip"), None);
        let p = FilterPattern::parse("[..., request=*.html*, status_code=4*, bytes]").unwrap();
        assert_eq!(p.value_of(APACHE, "$status_code").as_deref(), Some("404"));
        assert_eq!(p.value_of(APACHE, "$7").as_deref(), Some("1534"));
        assert_eq!(p.value_of(APACHE, "$3").as_deref(), Some("frank"));
    }

    #[test]
    fn required_substrings() {
        let req = |p: &str| FilterPattern::parse(p).unwrap().required_substrings();
        assert_eq!(req("ERROR ARGUMENTS"), vec!["ERROR", "ARGUMENTS"]);
        assert_eq!(req("\"INTERNAL SERVER ERROR\" -x"), vec!["INTERNAL SERVER ERROR"]);
        assert!(req("?ERROR ?WARN").is_empty());
        assert_eq!(req("?ERROR"), vec!["ERROR"]);
        assert!(req("%ERROR%").is_empty());
        assert!(req("\" \"").is_empty());
        assert!(req("{ $.level = \"error\" }").is_empty());
        assert_eq!(req("[..., request=*.html*, status_code=4*, bytes > 10]"), vec![".html", "4"]);
        assert!(req("[w1=ERROR || w1=WARN, w2]").is_empty());
        // Every matching message holds every required string.
        for (p, msg) in [("ERROR ARGUMENTS", E419), ("[..., request=*.html*, status_code=4*, bytes]", APACHE)] {
            assert!(m(p, msg));
            for s in req(p) {
                assert!(msg.contains(&s));
            }
        }
    }
}
