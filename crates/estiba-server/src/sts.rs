//! AWS STS (Query protocol, version 2011-06-15): `GetCallerIdentity`, answered from the
//! verified caller's key (or the account's root when auth is off), and `AssumeRole`, which
//! issues temporary credentials ([`estiba_auth::session`]: an `ASIA…` key, a derived secret
//! and a sealed session token) for a role of the caller's own account. Served by the front
//! door before the service table: STS has two operations here and no state, so it has no
//! generated model.
//!
//! AssumeRole checks the request as AWS does (lengths, patterns, DurationSeconds against
//! 900..43200, the role's `max_session_duration` and the 1-hour limit of role chaining), then
//! whether the caller may call `sts:AssumeRole` on the role (its access or policy; estiba has
//! no trust policies: a role may be assumed from its own account only). May not: store what it
//! issues, or log secrets and tokens.

use bytes::Bytes;
use estiba_api::protocol::query;
use hyper::{Response, StatusCode};

use crate::body::{self, Body};
use crate::Server;

pub const SIGNING_NAME: &str = "sts";
pub const VERSION: &str = "2011-06-15";
const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// AssumeRole's default DurationSeconds, and the longest for role chaining and without auth.
pub const DEFAULT_DURATION: i64 = 3600;

/// Who is asking, as GetCallerIdentity tells it.
pub struct Caller {
    pub arn: String,
    pub user_id: String,
    pub account: String,
}

impl Caller {
    pub fn of(c: &estiba_auth::Credential) -> Caller {
        Caller { arn: c.arn(), user_id: c.user_id(), account: c.account.clone() }
    }

    /// The account's root, for a server without auth.
    pub fn root(account: &str) -> Caller {
        Caller { arn: format!("arn:aws:iam::{account}:root"), user_id: account.to_owned(), account: account.to_owned() }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// ISO 8601 in UTC with a `Z`, as STS writes `Expiration`.
pub fn iso8601(secs: i64) -> String {
    // From SigV4's basic form, `YYYYMMDDTHHMMSSZ`.
    let b = estiba_auth::amz_date(secs);
    format!("{}-{}-{}T{}:{}:{}Z", &b[0..4], &b[4..6], &b[6..8], &b[9..11], &b[11..13], &b[13..15])
}

/// An STS error: code, HTTP status, message.
#[derive(Debug, PartialEq, Eq)]
pub struct StsError {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

impl StsError {
    fn new(code: &'static str, status: u16, message: impl Into<String>) -> StsError {
        StsError { code, status, message: message.into() }
    }
}

/// Answers an STS Query request; `caller` is the verified key (`None` with auth off, when the
/// caller is `account`'s root).
pub fn answer(
    server: &Server,
    params: &query::Params,
    caller: Option<&estiba_auth::Credential>,
    account: &str,
    rid: &str,
) -> Response<Body> {
    let action = params.get("Action").unwrap_or("");
    let error = |e: StsError| {
        let body = query::error(query::Flavour::Query, NS, e.code, &e.message, true, rid);
        body::response(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), Bytes::from(body), "text/xml")
    };
    if let Some(v) = params.get("Version").filter(|v| *v != VERSION) {
        return error(StsError::new(
            "InvalidAction",
            400,
            format!("Could not find operation {action} for version {v}"),
        ));
    }
    match action {
        "GetCallerIdentity" => {
            let who = caller.map_or_else(|| Caller::root(account), Caller::of);
            let xml = format!(
                "<GetCallerIdentityResponse xmlns=\"{NS}\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId>\
                 <Account>{}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>{rid}</RequestId>\
                 </ResponseMetadata></GetCallerIdentityResponse>",
                escape(&who.arn),
                escape(&who.user_id),
                escape(&who.account)
            );
            body::response(StatusCode::OK, Bytes::from(xml), "text/xml")
        }
        "AssumeRole" => match assume_role(server, params, caller, account, crate::now() as i64) {
            Ok(out) => {
                let xml = format!(
                    "<AssumeRoleResponse xmlns=\"{NS}\"><AssumeRoleResult><AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId>\
                     <Arn>{}</Arn></AssumedRoleUser><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
                     <SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>{}{}</AssumeRoleResult>\
                     <ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></AssumeRoleResponse>",
                    escape(&out.assumed_role_id),
                    escape(&out.arn),
                    escape(&out.keys.access_key),
                    escape(&out.keys.secret),
                    escape(&out.keys.token),
                    iso8601(out.keys.expires),
                    out.packed_policy_size.map(|p| format!("<PackedPolicySize>{p}</PackedPolicySize>")).unwrap_or_default(),
                    out.source_identity
                        .map(|s| format!("<SourceIdentity>{}</SourceIdentity>", escape(&s)))
                        .unwrap_or_default(),
                );
                body::response(StatusCode::OK, Bytes::from(xml), "text/xml")
            }
            Err(e) => {
                tracing::debug!(code = e.code, message = %e.message, "AssumeRole refused");
                error(e)
            }
        },
        "" => error(StsError::new("MissingAction", 400, "The request must contain the parameter Action")),
        other => error(StsError::new(
            "InvalidAction",
            400,
            format!("Could not find operation {other} for version {VERSION} (estiba serves GetCallerIdentity and AssumeRole)"),
        )),
    }
}

/// What AssumeRole answers.
pub struct Assumed {
    pub assumed_role_id: String,
    pub arn: String,
    pub keys: estiba_auth::session::Issued,
    pub packed_policy_size: Option<usize>,
    pub source_identity: Option<String>,
}

/// `[\w+=,.@-]*` (and `:` and `/` too for ExternalId).
fn pattern_ok(v: &str, extra: &str) -> bool {
    v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || "+=,.@-".contains(c) || extra.contains(c))
}

/// AssumeRole's parameters estiba cannot honour, refused rather than ignored: managed
/// session policies (there are no managed policies), MFA (there are no devices), and session
/// tags (policies here have no conditions to read them).
fn unsupported(params: &query::Params) -> Option<StsError> {
    let given = |prefix: &str| params.0.iter().any(|(k, _)| k == prefix || k.starts_with(&format!("{prefix}.")));
    let what = if given("PolicyArns") {
        "PolicyArns (managed session policies): estiba has no managed policies; give the session policy inline in Policy"
    } else if given("SerialNumber") || given("TokenCode") {
        "SerialNumber and TokenCode: estiba has no MFA devices"
    } else if given("Tags") || given("TransitiveTagKeys") {
        "Tags and TransitiveTagKeys: estiba's policies have no conditions to read session tags"
    } else if given("ProvidedContexts") {
        "ProvidedContexts: estiba has no trusted context providers"
    } else {
        return None;
    };
    Some(StsError::new("ValidationError", 400, format!("estiba does not support {what}.")))
}

/// Checks AssumeRole's input as AWS does, every failed constraint listed in one message.
fn validate(params: &query::Params) -> Result<(), StsError> {
    let mut errors: Vec<String> = Vec::new();
    let mut length = |member: &str, v: Option<&str>, min: usize, max: usize, required: bool| {
        match v {
        None if required => errors.push(format!("Value null at '{member}' failed to satisfy constraint: Member must not be null")),
        None => {}
        Some(v) if v.chars().count() < min => errors.push(format!(
            "Value '{v}' at '{member}' failed to satisfy constraint: Member must have length greater than or equal to {min}"
        )),
        Some(v) if v.chars().count() > max => errors.push(format!(
            "Value '{v}' at '{member}' failed to satisfy constraint: Member must have length less than or equal to {max}"
        )),
        Some(_) => {}
    }
    };
    length("roleArn", params.get("RoleArn"), 20, 2048, true);
    length("roleSessionName", params.get("RoleSessionName"), 2, 64, true);
    length("externalId", params.get("ExternalId"), 2, 1224, false);
    length("serialNumber", params.get("SerialNumber"), 9, 256, false);
    length("tokenCode", params.get("TokenCode"), 6, 6, false);
    length("sourceIdentity", params.get("SourceIdentity"), 2, 64, false);
    length("policy", params.get("Policy"), 1, 2048, false);
    let mut pattern = |member: &str, v: Option<&str>, extra: &str, shown: &str| {
        if let Some(v) = v.filter(|v| !pattern_ok(v, extra)) {
            errors.push(format!(
                "Value '{v}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: {shown}"
            ));
        }
    };
    pattern("roleSessionName", params.get("RoleSessionName"), "", r"[\w+=,.@-]*");
    pattern("sourceIdentity", params.get("SourceIdentity"), "", r"[\w+=,.@-]*");
    pattern("externalId", params.get("ExternalId"), ":/", r"[\w+=,.@:\/-]*");
    if let Some(t) = params.get("TokenCode").filter(|t| !t.bytes().all(|b| b.is_ascii_digit())) {
        errors.push(format!(
            "Value '{t}' at 'tokenCode' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\d]*"
        ));
    }
    if let Some(d) = params.get("DurationSeconds") {
        match d.parse::<i64>() {
            Ok(n) if n < 900 => errors.push(format!(
                "Value '{n}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"
            )),
            Ok(n) if n > 43200 => errors.push(format!(
                "Value '{n}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to 43200"
            )),
            Ok(_) => {}
            Err(_) => return Err(StsError::new("MalformedInput", 400, format!("Invalid value for DurationSeconds: {d}"))),
        }
    }
    if let Some(e) = unsupported(params) {
        return Err(e);
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(StsError::new("ValidationError", 400, format!("1 validation error detected: {}", errors[0]))),
        n => {
            Err(StsError::new("ValidationError", 400, format!("{n} validation errors detected: {}", errors.join("; "))))
        }
    }
}

/// AssumeRole for `caller` (`None`: auth is off and the caller is `account`'s root) at `now`.
pub fn assume_role(
    server: &Server,
    params: &query::Params,
    caller: Option<&estiba_auth::Credential>,
    account: &str,
    now: i64,
) -> Result<Assumed, StsError> {
    validate(params)?;
    let role_arn = params.get("RoleArn").unwrap_or_default();
    let session = params.get("RoleSessionName").unwrap_or_default();
    let caller_arn = caller.map_or_else(|| format!("arn:aws:iam::{account}:root"), |c| c.arn());
    let denied = || {
        StsError::new(
            "AccessDenied",
            403,
            format!("User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"),
        )
    };
    // Not a role ARN, or a role of another account: AWS tells neither apart from a refusal.
    let (Some(role_account), Some(role_name)) =
        (estiba_auth::session::role_account(role_arn), estiba_auth::session::role_name(role_arn))
    else {
        return Err(denied());
    };
    let caller_account = caller.map_or(account, |c| c.account.as_str());
    if role_account != caller_account {
        return Err(denied());
    }
    if let Some(c) = caller {
        if c.decide("sts", "AssumeRole", role_arn) != estiba_auth::Decision::Allow {
            return Err(denied());
        }
    }
    let keys = server.credentials.as_ref().map(|c| c.keys());
    let role = keys.as_ref().and_then(|k| k.role(role_arn).cloned());
    // With a credentials file, only its roles exist (as IAM refuses a role that does not).
    if keys.is_some() && role.is_none() {
        return Err(denied());
    }
    let max = role.as_ref().map_or(DEFAULT_DURATION, |r| r.max_session);
    let duration = params.get("DurationSeconds").and_then(|d| d.parse::<i64>().ok()).unwrap_or(DEFAULT_DURATION);
    let chaining = caller.is_some_and(|c| c.role.is_some());
    if chaining && duration > DEFAULT_DURATION {
        return Err(StsError::new(
            "ValidationError",
            400,
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
        ));
    }
    if duration > max {
        return Err(StsError::new(
            "ValidationError",
            400,
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }
    let policy = params.get("Policy");
    let mut packed_policy_size = None;
    if let Some(p) = policy {
        estiba_auth::Policy::parse(p).map_err(|e| StsError::new("MalformedPolicyDocument", 400, e.to_string()))?;
        let size = p.len() * 100 / 2048;
        if size > 100 {
            return Err(StsError::new(
                "PackedPolicyTooLarge",
                400,
                format!("Packed policy consumes {size}% of allotted space, please use smaller policy."),
            ));
        }
        packed_policy_size = Some(size);
    }
    let lifetime = server.test_only_session_seconds.unwrap_or(duration);
    let issued = server
        .sessions
        .issue(role_account, role_arn, session, policy, now + lifetime)
        .map_err(|e| StsError::new("InternalFailure", 500, e.to_string()))?;
    tracing::info!(caller = %caller_arn, role = role_arn, session, key = %issued.access_key, "AssumeRole");
    Ok(Assumed {
        assumed_role_id: format!("{}:{session}", estiba_auth::session::role_id(role_account, role_name)),
        arn: format!("arn:aws:sts::{role_account}:assumed-role/{role_name}/{session}"),
        keys: issued,
        packed_policy_size,
        source_identity: params.get("SourceIdentity").map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> query::Params {
        query::Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn validation_messages() {
        let ok = [("RoleArn", "arn:aws:iam::111111111111:role/app"), ("RoleSessionName", "s1")];
        assert!(validate(&params(&ok)).is_ok());
        let e = validate(&params(&[ok[0], ("RoleSessionName", "a:b")])).unwrap_err();
        assert_eq!(
            e.message,
            "1 validation error detected: Value 'a:b' at 'roleSessionName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        );
        let long = "x".repeat(65);
        let e = validate(&params(&[ok[0], ("RoleSessionName", &long)])).unwrap_err();
        assert!(e.message.ends_with("Member must have length less than or equal to 64"), "{}", e.message);
        let e = validate(&params(&[ok[0], ok[1], ("DurationSeconds", "100")])).unwrap_err();
        assert!(e.message.ends_with("Member must have value greater than or equal to 900"), "{}", e.message);
        let e = validate(&params(&[ok[0], ok[1], ("DurationSeconds", "50000")])).unwrap_err();
        assert!(e.message.ends_with("less than or equal to 43200"), "{}", e.message);
        let e = validate(&params(&[("RoleSessionName", "a")])).unwrap_err();
        assert!(e.message.starts_with("2 validation errors detected: Value null at 'roleArn'"), "{}", e.message);
        let e = validate(&params(&[ok[0], ok[1], ("ExternalId", "a b")])).unwrap_err();
        assert!(e.message.contains("'externalId'"), "{}", e.message);
        assert!(validate(&params(&[ok[0], ok[1], ("ExternalId", "arn:x/y")])).is_ok());
        assert_eq!(e.code, "ValidationError");
        assert_eq!(iso8601(1_764_680_000), "2025-12-02T12:53:20Z");
    }
}
