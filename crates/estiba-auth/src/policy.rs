//! IAM-style identity policies, evaluated as IAM evaluates identity policies: a matching
//! `Deny` wins, else a matching `Allow` allows, else the request is implicitly denied.
//!
//! Supported: `Version`, `Statement` (one or a list), `Sid`, `Effect`, `Action` / `NotAction`
//! (`service:Name`, case-insensitive, `*` and `?` wildcards) and `Resource` / `NotResource`
//! (ARN patterns, case-sensitive, `*` and `?`, a `*` matching across `:` and `/`). A policy
//! with `Condition`, `Principal` or any other element is refused when it is loaded: ignoring a
//! condition would allow more than its author meant.

use serde_json::Value;

/// A parsed identity policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    allow: bool,
    /// `NotAction` when true.
    not_action: bool,
    actions: Vec<String>,
    not_resource: bool,
    resources: Vec<String>,
}

/// The outcome of evaluating a request against a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows it.
    ImplicitDeny,
    /// A `Deny` statement matches it.
    ExplicitDeny,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {0}")]
pub struct PolicyError(pub String);

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned).ok_or_else(|| PolicyError(format!("{what} must hold strings"))))
            .collect(),
        _ => Err(PolicyError(format!("{what} must be a string or a list of strings"))),
    }
}

impl Policy {
    /// Parses a policy document (JSON text).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let v: Value = serde_json::from_str(text).map_err(|e| PolicyError(format!("not JSON: {e}")))?;
        Policy::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Policy, PolicyError> {
        let obj = v.as_object().ok_or_else(|| PolicyError("the document must be a JSON object".into()))?;
        for k in obj.keys() {
            if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
                return Err(PolicyError(format!("unsupported element {k}")));
            }
        }
        if let Some(ver) = obj.get("Version") {
            if !matches!(ver.as_str(), Some("2012-10-17" | "2008-10-17")) {
                return Err(PolicyError(format!("unknown Version {ver}")));
            }
        }
        let stmts = match obj.get("Statement") {
            Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
            Some(s @ Value::Object(_)) => vec![s],
            _ => return Err(PolicyError("Statement must be an object or a list of objects".into())),
        };
        let statements = stmts.into_iter().enumerate().map(|(i, s)| statement(i, s)).collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    /// A policy that allows nothing.
    pub fn deny_all() -> Policy {
        Policy { statements: Vec::new() }
    }

    /// Evaluates `action` (`service:Name`) on `resource` (an ARN, or `*` for an action that
    /// acts on no particular resource).
    pub fn evaluate(&self, action: &str, resource: &str) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            let action_hit = s.actions.iter().any(|p| glob(p.as_bytes(), action.as_bytes(), true)) != s.not_action;
            let resource_hit =
                s.resources.iter().any(|p| glob(p.as_bytes(), resource.as_bytes(), false)) != s.not_resource;
            if action_hit && resource_hit {
                if !s.allow {
                    return Decision::ExplicitDeny;
                }
                allowed = true;
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

fn statement(i: usize, v: &Value) -> Result<Statement, PolicyError> {
    let obj = v.as_object().ok_or_else(|| PolicyError(format!("statement {i} is not an object")))?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource") {
            return Err(PolicyError(format!("statement {i}: {k} is not supported")));
        }
    }
    let allow = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => true,
        Some("Deny") => false,
        _ => return Err(PolicyError(format!("statement {i}: Effect must be \"Allow\" or \"Deny\""))),
    };
    let (not_action, actions) = match (obj.get("Action"), obj.get("NotAction")) {
        (Some(a), None) => (false, strings(a, "Action")?),
        (None, Some(a)) => (true, strings(a, "NotAction")?),
        _ => return Err(PolicyError(format!("statement {i} needs exactly one of Action and NotAction"))),
    };
    for a in &actions {
        if a != "*" && !a.contains(':') {
            return Err(PolicyError(format!("statement {i}: action {a:?} is not of the form service:Name")));
        }
    }
    let (not_resource, resources) = match (obj.get("Resource"), obj.get("NotResource")) {
        (Some(r), None) => (false, strings(r, "Resource")?),
        (None, Some(r)) => (true, strings(r, "NotResource")?),
        _ => return Err(PolicyError(format!("statement {i} needs exactly one of Resource and NotResource"))),
    };
    Ok(Statement { allow, not_action, actions, not_resource, resources })
}

/// Matches `text` against a pattern with `*` (any run) and `?` (one character).
fn glob(pat: &[u8], text: &[u8], case_insensitive: bool) -> bool {
    let eq = |a: u8, b: u8| if case_insensitive { a.eq_ignore_ascii_case(&b) } else { a == b };
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && (pat[p] == b'?' || (pat[p] != b'*' && eq(pat[p], text[t]))) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Whether an operation only reads: `Describe*`, `List*`, `Get*`, `BatchGet*`. (This makes
/// `ecr:GetAuthorizationToken`, `ecr:GetDownloadUrlForLayer` and `logs:GetLogEvents` reads.)
pub fn is_read_only(operation: &str) -> bool {
    ["Describe", "List", "Get", "BatchGet"].iter().any(|p| operation.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"ecs:Describe*", b"ecs:DescribeClusters", false));
        assert!(glob(b"ECS:describe*", b"ecs:DescribeClusters", true));
        assert!(!glob(b"ECS:describe*", b"ecs:DescribeClusters", false));
        assert!(glob(b"*", b"", false));
        assert!(glob(b"a?c", b"abc", false));
        assert!(!glob(b"a?c", b"ac", false));
        assert!(glob(b"arn:aws:ecs:*:*:cluster/prod-*", b"arn:aws:ecs:us-east-1:1:cluster/prod-a", false));
        assert!(!glob(b"arn:aws:ecs:*:*:cluster/prod-*", b"arn:aws:ecs:us-east-1:1:cluster/dev", false));
        assert!(glob(b"*a*b*", b"xxaxxbxx", false));
        assert!(!glob(b"*a*b", b"xxaxxbxx", false));
    }

    #[test]
    fn explicit_deny_wins() {
        let p = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ecs:*","Resource":"*"},
                {"Effect":"Deny","Action":["ecs:DeleteCluster"],"Resource":"arn:aws:ecs:*:*:cluster/prod"}]}"#,
        )
        .unwrap();
        assert_eq!(p.evaluate("ecs:CreateCluster", "*"), Decision::Allow);
        assert_eq!(p.evaluate("ecs:deletecluster", "arn:aws:ecs:us-east-1:1:cluster/prod"), Decision::ExplicitDeny);
        assert_eq!(p.evaluate("ecs:DeleteCluster", "arn:aws:ecs:us-east-1:1:cluster/dev"), Decision::Allow);
        assert_eq!(p.evaluate("logs:CreateLogGroup", "*"), Decision::ImplicitDeny);
    }

    #[test]
    fn not_action_and_not_resource() {
        let p = Policy::parse(
            r#"{"Statement":{"Effect":"Allow","NotAction":"ecs:Delete*","NotResource":"arn:aws:ecs:*:*:cluster/secret"}}"#,
        )
        .unwrap();
        assert_eq!(p.evaluate("ecs:CreateCluster", "*"), Decision::Allow);
        assert_eq!(p.evaluate("ecs:DeleteCluster", "*"), Decision::ImplicitDeny);
        assert_eq!(p.evaluate("ecs:DescribeClusters", "arn:aws:ecs:r:1:cluster/secret"), Decision::ImplicitDeny);
        let deny_all_but = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
               {"Effect":"Deny","NotAction":["ecs:List*"],"Resource":"*"}]}"#,
        )
        .unwrap();
        assert_eq!(deny_all_but.evaluate("ecs:ListClusters", "*"), Decision::Allow);
        assert_eq!(deny_all_but.evaluate("ecs:CreateCluster", "*"), Decision::ExplicitDeny);
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"*","NotAction":"x:y","Resource":"*"}}"#,
            r#"{"Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"CreateCluster","Resource":"*"}}"#,
            r#"{"Version":"2020-01-01","Statement":[]}"#,
            r#"[1]"#,
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_only_names() {
        assert!(is_read_only("DescribeClusters") && is_read_only("ListTasks") && is_read_only("BatchGetImage"));
        assert!(is_read_only("GetAuthorizationToken"));
        assert!(!is_read_only("CreateCluster") && !is_read_only("BatchDeleteImage") && !is_read_only("PutLogEvents"));
    }
}
