//! The credentials estiba accepts, read from a file in the AWS credentials-file form (INI),
//! one profile per key:
//!
//! ```ini
//! # comments start with # or ;
//! [alice]                                  ; the IAM user name (`root`: the account's root)
//! aws_access_key_id = AKIAALICE000000001
//! aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
//! account = 111111111111                   ; required: 12 digits
//! access = full                            ; full (default) | read-only | policy
//! policy = {"Statement":[...]}             ; with access = policy: inline JSON, one line
//! policy_file = alice-policy.json          ; or a file (relative to this file's folder)
//! aws_session_token = ...                  ; optional: temporary credentials
//! expiration = 2026-12-02T18:00:00Z        ; optional: when they stop working
//!
//! [role app-task]                          ; a role: arn:aws:iam::<account>:role/app-task
//! account = 111111111111                   ; required
//! policy = {"Statement":[...]}             ; or policy_file; none: full access in its account
//! max_session_duration = 3600              ; AssumeRole's limit, 3600..43200 (default 3600)
//! ```
//!
//! An unknown setting is an error, never ignored (a mistyped `acess = read-only` must not
//! give full access). Temporary credentials written in the file (a session token and an
//! expiry) are keys like the others. Those estiba issues itself (STS AssumeRole, task roles)
//! are not stored anywhere: [`Keyring::verify_with`] opens their session token with a
//! [`crate::session::Issuer`] and takes the role's access from the `[role]` sections read now,
//! so a role that is no longer declared allows nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::policy::{is_read_only, Decision, Policy};
use crate::sigv4::{self, AuthError, Parsed, SignedRequest};

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Full,
    /// `Describe*`, `List*`, `Get*` and `BatchGet*` operations only.
    ReadOnly,
    Policy(Policy),
}

/// One access key and who it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key: String,
    pub secret: String,
    pub account: String,
    /// The IAM user name (the profile's name); `root` is the account's root user.
    pub user: String,
    pub session_token: Option<String>,
    /// Unix seconds after which the key is refused with `ExpiredToken`.
    pub expires: Option<i64>,
    pub access: Access,
    /// For keys estiba issued: the role session they act as.
    pub role: Option<AssumedRole>,
}

/// The role session temporary keys act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumedRole {
    pub role_arn: String,
    pub role_name: String,
    pub session_name: String,
    /// The role's unique id (`AROA…`).
    pub role_id: String,
    /// The session policy given to AssumeRole: the session may do only what both it and the
    /// role's access allow.
    pub session_policy: Option<Policy>,
}

/// A role declared in the credentials file (`[role NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub account: String,
    pub access: Access,
    /// AssumeRole's longest DurationSeconds, in seconds.
    pub max_session: i64,
}

impl Role {
    pub fn arn(&self) -> String {
        format!("arn:aws:iam::{}:role/{}", self.account, self.name)
    }
}

impl Credential {
    /// The caller's ARN, as GetCallerIdentity and AccessDenied messages show it.
    pub fn arn(&self) -> String {
        if let Some(r) = &self.role {
            return format!("arn:aws:sts::{}:assumed-role/{}/{}", self.account, r.role_name, r.session_name);
        }
        if self.user == "root" {
            format!("arn:aws:iam::{}:root", self.account)
        } else {
            format!("arn:aws:iam::{}:user/{}", self.account, self.user)
        }
    }

    /// The caller's unique id: the account for root, else a stable `AIDA…` id derived from
    /// the account and user name.
    pub fn user_id(&self) -> String {
        use sha2::Digest;
        if let Some(r) = &self.role {
            return format!("{}:{}", r.role_id, r.session_name);
        }
        if self.user == "root" {
            return self.account.clone();
        }
        let h = sha2::Sha256::digest(format!("{}/{}", self.account, self.user).as_bytes());
        const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let tail: String = h.iter().take(17).map(|b| B32[(*b & 31) as usize] as char).collect();
        format!("AIDA{tail}")
    }

    /// Whether a decision may depend on the resource: the key's own policy or a session
    /// policy can name resources; full and read-only access cannot.
    pub fn resource_scoped(&self) -> bool {
        matches!(self.access, Access::Policy(_)) || self.role.as_ref().is_some_and(|r| r.session_policy.is_some())
    }

    /// Whether every action is allowed on every resource (full access, no session policy).
    pub fn unrestricted(&self) -> bool {
        self.access == Access::Full && self.role.as_ref().is_none_or(|r| r.session_policy.is_none())
    }

    /// Whether the key may call `service:operation` on `resource`.
    pub fn decide(&self, service: &str, operation: &str, resource: &str) -> Decision {
        let own = match &self.access {
            Access::Full => Decision::Allow,
            Access::ReadOnly if is_read_only(operation) => Decision::Allow,
            Access::ReadOnly => Decision::ImplicitDeny,
            Access::Policy(p) => p.evaluate(&format!("{service}:{operation}"), resource),
        };
        let session = match self.role.as_ref().and_then(|r| r.session_policy.as_ref()) {
            Some(p) => p.evaluate(&format!("{service}:{operation}"), resource),
            None => Decision::Allow,
        };
        match (own, session) {
            (Decision::ExplicitDeny, _) | (_, Decision::ExplicitDeny) => Decision::ExplicitDeny,
            (Decision::Allow, Decision::Allow) => Decision::Allow,
            _ => Decision::ImplicitDeny,
        }
    }

    /// AWS's AccessDenied message for a refused decision.
    pub fn denied_message(&self, service: &str, operation: &str, resource: &str, d: Decision) -> String {
        let arn = self.arn();
        // A session's refusal comes from its session policy when the role's access allows.
        let own = Credential { role: None, ..self.clone() }.decide(service, operation, resource);
        let kind = match (self.role.as_ref().and_then(|r| r.session_policy.as_ref()), d, own) {
            (Some(_), Decision::ExplicitDeny, Decision::Allow | Decision::ImplicitDeny) => "a session policy",
            (Some(_), Decision::ImplicitDeny, Decision::Allow) => "session policy",
            (_, Decision::ExplicitDeny, _) => "an identity-based policy",
            _ => "identity-based policy",
        };
        match d {
            Decision::ExplicitDeny => format!(
                "User: {arn} is not authorized to perform: {service}:{operation} on resource: {resource} \
                 with an explicit deny in {kind}"
            ),
            _ => format!(
                "User: {arn} is not authorized to perform: {service}:{operation} on resource: {resource} \
                 because no {kind} allows the {service}:{operation} action"
            ),
        }
    }
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("profile [{profile}]: {message}")]
    Profile { profile: String, message: String },
}

/// A request whose signature checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub credential: Arc<Credential>,
    /// The credential scope's region and service.
    pub region: String,
    pub service: String,
}

/// The keys estiba accepts, with a cache of derived signing keys.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: HashMap<String, Arc<Credential>>,
    /// Declared roles by ARN.
    roles: HashMap<String, Role>,
    /// Signing keys by `access key/date/region/service`.
    cache: Mutex<HashMap<String, sigv4::SigningKey>>,
}

/// Beyond this many cached signing keys the cache starts again.
const CACHE_LIMIT: usize = 4096;

impl Keyring {
    pub fn new(creds: impl IntoIterator<Item = Credential>) -> Keyring {
        let keys = creds.into_iter().map(|c| (c.access_key.clone(), Arc::new(c))).collect();
        Keyring { keys, roles: HashMap::new(), cache: Mutex::default() }
    }

    /// The role declared with this ARN (any path: a role is named by account and name).
    pub fn role(&self, arn: &str) -> Option<&Role> {
        let account = crate::session::role_account(arn)?;
        let name = crate::session::role_name(arn)?;
        self.roles.get(&format!("arn:aws:iam::{account}:role/{name}"))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, access_key: &str) -> Option<&Arc<Credential>> {
        self.keys.get(access_key)
    }

    /// Reads a credentials file.
    pub fn load(path: &Path) -> Result<Keyring, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
        Keyring::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses a credentials file's text; `dir` is where `policy_file`s are looked for.
    pub fn parse(text: &str, dir: &Path) -> Result<Keyring, LoadError> {
        let mut profiles: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let syntax = |message: &str| LoadError::Syntax { line: i + 1, message: message.into() };
            if let Some(name) = line.strip_prefix('[') {
                let name = name.split(['#', ';']).next().unwrap_or("").trim();
                let name = name.strip_suffix(']').ok_or_else(|| syntax("a profile header is `[name]`"))?.trim();
                if name.is_empty() {
                    return Err(syntax("empty profile name"));
                }
                if profiles.iter().any(|(n, _)| n == name) {
                    return Err(syntax(&format!("profile [{name}] appears twice")));
                }
                profiles.push((name.to_owned(), Vec::new()));
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| syntax("expected `setting = value`"))?;
            let (k, mut v) = (k.trim(), v.trim());
            // A trailing comment (` ;` or ` #`), except in an inline policy (JSON may hold them).
            if k != "policy" {
                let cut = [" ;", " #", "\t;", "\t#"].iter().filter_map(|c| v.find(c)).min();
                v = cut.map_or(v, |i| v[..i].trim());
            }
            let (_, settings) = profiles.last_mut().ok_or_else(|| syntax("a setting before any [profile]"))?;
            settings.push((k.to_owned(), v.to_owned()));
        }
        let mut creds = Vec::new();
        let mut roles = HashMap::new();
        for (name, settings) in profiles {
            if let Some(role_name) = name.strip_prefix("role ") {
                let r = role(role_name.trim(), &settings, dir)
                    .map_err(|message| LoadError::Profile { profile: name.clone(), message })?;
                roles.insert(r.arn(), r);
                continue;
            }
            let cred = profile(&name, &settings, dir)
                .map_err(|message| LoadError::Profile { profile: name.clone(), message })?;
            if creds.iter().any(|c: &Credential| c.access_key == cred.access_key) {
                return Err(LoadError::Profile {
                    profile: name,
                    message: format!("access key {} is used by another profile", cred.access_key),
                });
            }
            creds.push(cred);
        }
        let mut k = Keyring::new(creds);
        k.roles = roles;
        Ok(k)
    }

    /// Verifies a request's signature at time `now` (Unix seconds): its form, time, key,
    /// session token and signature, in that order.
    pub fn verify(&self, req: &SignedRequest, now: i64) -> Result<Verified, AuthError> {
        let p = sigv4::parse(req)?;
        self.verify_parsed(req, &p, now, None)
    }

    /// [`Keyring::verify`], also accepting the temporary keys `issuer` issued.
    pub fn verify_with(
        &self,
        req: &SignedRequest,
        now: i64,
        issuer: Option<&crate::session::Issuer>,
    ) -> Result<Verified, AuthError> {
        let p = sigv4::parse(req)?;
        self.verify_parsed(req, &p, now, issuer)
    }

    pub fn verify_parsed(
        &self,
        req: &SignedRequest,
        p: &Parsed,
        now: i64,
        issuer: Option<&crate::session::Issuer>,
    ) -> Result<Verified, AuthError> {
        sigv4::check_time(p, now)?;
        let issued;
        let cred = match (self.keys.get(p.access_key.as_ref()), issuer) {
            (Some(c), _) => c,
            (None, Some(issuer)) if p.access_key.starts_with("ASIA") => {
                issued = Arc::new(self.session_credential(issuer, p)?);
                &issued
            }
            (None, _) => return Err(AuthError::UnknownKey),
        };
        match (&cred.session_token, &p.security_token) {
            (None, None) => {}
            (Some(want), Some(got)) if constant_eq(want.as_bytes(), got.as_bytes()) => {}
            _ => return Err(AuthError::UnknownKey),
        }
        if cred.expires.is_some_and(|e| now >= e) {
            return Err(AuthError::ExpiredToken);
        }
        let key = self.signing_key(cred, p);
        sigv4::check_signature(&key, req, p)?;
        Ok(Verified { credential: cred.clone(), region: p.region.to_string(), service: p.service.to_string() })
    }

    /// The credential of a request signed with keys `issuer` issued: its token must open and
    /// name the request's access key.
    fn session_credential(&self, issuer: &crate::session::Issuer, p: &Parsed) -> Result<Credential, AuthError> {
        let token = p.security_token.as_deref().ok_or(AuthError::UnknownKey)?;
        let s = issuer.open(token).ok_or(AuthError::UnknownKey)?;
        if !constant_eq(s.access_key.as_bytes(), p.access_key.as_bytes()) {
            return Err(AuthError::UnknownKey);
        }
        let role_name = s.role_name().to_owned();
        // A role no longer declared allows nothing: removing a role narrows, never widens.
        let access = self.role(&s.role_arn).map_or_else(|| Access::Policy(Policy::deny_all()), |r| r.access.clone());
        // A session policy that no longer parses allows nothing.
        let session_policy = s.policy.as_ref().map(|text| Policy::parse(text).unwrap_or_else(|_| Policy::deny_all()));
        Ok(Credential {
            secret: issuer.secret_for(&s.access_key),
            access_key: s.access_key,
            user: format!("{role_name}/{}", s.session_name),
            role: Some(AssumedRole {
                role_id: crate::session::role_id(&s.account, &role_name),
                role_arn: s.role_arn,
                role_name,
                session_name: s.session_name,
                session_policy,
            }),
            account: s.account,
            session_token: Some(token.to_owned()),
            expires: Some(s.expires),
            access,
        })
    }

    fn signing_key(&self, cred: &Credential, p: &Parsed) -> sigv4::SigningKey {
        // Under the credential as sent (key, day, region, service), looked up without copying it.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.get(p.credential.as_ref()) {
            return k.clone();
        }
        let id = p.credential.to_string();
        let k = sigv4::SigningKey::new(&sigv4::signing_key(&cred.secret, &p.date, &p.region, &p.service));
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(id, k.clone());
        k
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn profile(name: &str, settings: &[(String, String)], dir: &Path) -> Result<Credential, String> {
    let mut get = HashMap::new();
    for (k, v) in settings {
        if !matches!(
            k.as_str(),
            "aws_access_key_id"
                | "aws_secret_access_key"
                | "account"
                | "access"
                | "policy"
                | "policy_file"
                | "aws_session_token"
                | "expiration"
        ) {
            return Err(format!("unknown setting {k:?}"));
        }
        if get.insert(k.as_str(), v.as_str()).is_some() {
            return Err(format!("{k} is set twice"));
        }
    }
    let need = |k: &str| get.get(k).copied().filter(|v| !v.is_empty()).ok_or_else(|| format!("{k} is required"));
    let access_key = need("aws_access_key_id")?;
    if !(access_key.len() >= 4 && access_key.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err("aws_access_key_id must be letters and digits (at least 4)".into());
    }
    let secret = need("aws_secret_access_key")?;
    let account = need("account")?;
    if !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("account must be 12 digits, not {account:?}"));
    }
    let access = access(&get, dir)?;
    let expires = match get.get("expiration") {
        None => None,
        Some(e) => Some(crate::time::parse_rfc3339(e).ok_or_else(|| format!("expiration {e:?} is not RFC 3339"))?),
    };
    Ok(Credential {
        access_key: access_key.to_owned(),
        secret: secret.to_owned(),
        account: account.to_owned(),
        user: name.to_owned(),
        session_token: get.get("aws_session_token").map(|s| s.to_string()),
        expires,
        access,
        role: None,
    })
}

/// The `access`, `policy` and `policy_file` settings of a profile or role.
fn access(get: &HashMap<&str, &str>, dir: &Path) -> Result<Access, String> {
    let policy = match (get.get("policy"), get.get("policy_file")) {
        (Some(_), Some(_)) => return Err("give policy or policy_file, not both".into()),
        (Some(text), None) => Some(Policy::parse(text).map_err(|e| e.to_string())?),
        (None, Some(file)) => {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some(Policy::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        (None, None) => None,
    };
    let access = match (get.get("access").copied(), policy) {
        (None | Some("full"), None) => Access::Full,
        (Some("read-only"), None) => Access::ReadOnly,
        (None | Some("policy"), Some(p)) => Access::Policy(p),
        (Some("policy"), None) => return Err("access = policy needs policy or policy_file".into()),
        (Some(a @ ("full" | "read-only")), Some(_)) => return Err(format!("access = {a} takes no policy")),
        (Some(other), _) => return Err(format!("access must be full, read-only or policy, not {other:?}")),
    };
    Ok(access)
}

fn role(name: &str, settings: &[(String, String)], dir: &Path) -> Result<Role, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
        return Err("a role name is 1 to 64 letters, digits and +=,.@_-".into());
    }
    let mut get = HashMap::new();
    for (k, v) in settings {
        if !matches!(k.as_str(), "account" | "access" | "policy" | "policy_file" | "max_session_duration") {
            return Err(format!(
                "unknown setting {k:?} (a role takes account, access, policy, policy_file, max_session_duration)"
            ));
        }
        if get.insert(k.as_str(), v.as_str()).is_some() {
            return Err(format!("{k} is set twice"));
        }
    }
    let account = get.get("account").copied().filter(|v| !v.is_empty()).ok_or("account is required")?;
    if !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("account must be 12 digits, not {account:?}"));
    }
    let access = access(&get, dir)?;
    let max_session = match get.get("max_session_duration") {
        None => 3600,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (3600..=43200).contains(&n) => n,
            _ => return Err(format!("max_session_duration must be 3600 to 43200 seconds, not {v:?}")),
        },
    };
    Ok(Role { name: name.to_owned(), account: account.to_owned(), access, max_session })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
# estiba credentials
[alice]
aws_access_key_id = AKIAALICE
aws_secret_access_key = secret/with+chars=  ; a comment
account = 111111111111

[bob]
aws_access_key_id=AKIABOB
aws_secret_access_key=bobsecret
account=222222222222
access = read-only

[carol]
aws_access_key_id = AKIACAROL
aws_secret_access_key = c
account = 111111111111
policy = {"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]}

[root]
aws_access_key_id = AKIAROOT
aws_secret_access_key = r
account = 333333333333
aws_session_token = tok
expiration = 2030-01-01T00:00:00Z

[role app]
account = 111111111111
policy = {"Statement":{"Effect":"Allow","Action":"logs:*","Resource":"*"}}

[role long]
account = 111111111111
max_session_duration = 7200
"#;

    #[test]
    fn parses_profiles() {
        let k = Keyring::parse(FILE, Path::new(".")).unwrap();
        assert_eq!(k.len(), 4);
        let a = k.get("AKIAALICE").unwrap();
        assert_eq!(a.secret, "secret/with+chars=");
        assert_eq!((a.account.as_str(), &a.access), ("111111111111", &Access::Full));
        assert_eq!(a.arn(), "arn:aws:iam::111111111111:user/alice");
        assert!(a.user_id().starts_with("AIDA") && a.user_id().len() == 21);
        let b = k.get("AKIABOB").unwrap();
        assert_eq!(b.access, Access::ReadOnly);
        assert_eq!(b.decide("ecs", "ListClusters", "*"), Decision::Allow);
        assert_eq!(b.decide("ecs", "CreateCluster", "*"), Decision::ImplicitDeny);
        let c = k.get("AKIACAROL").unwrap();
        assert_eq!(c.decide("ecs", "DeleteCluster", "*"), Decision::ExplicitDeny);
        assert_eq!(c.decide("ecs", "CreateCluster", "*"), Decision::Allow);
        assert_eq!(
            c.denied_message("ecs", "DeleteCluster", "*", Decision::ExplicitDeny),
            "User: arn:aws:iam::111111111111:user/carol is not authorized to perform: ecs:DeleteCluster on resource: * \
             with an explicit deny in an identity-based policy"
        );
        let r = k.get("AKIAROOT").unwrap();
        assert_eq!((r.arn().as_str(), r.user_id().as_str()), ("arn:aws:iam::333333333333:root", "333333333333"));
        assert_eq!((r.session_token.as_deref(), r.expires), (Some("tok"), Some(1893456000)));
        let app = k.role("arn:aws:iam::111111111111:role/app").unwrap();
        assert_eq!((app.name.as_str(), app.max_session), ("app", 3600));
        assert!(matches!(app.access, Access::Policy(_)));
        // A role is found whatever path its ARN names.
        assert_eq!(k.role("arn:aws:iam::111111111111:role/team/app"), Some(app));
        let long = k.role("arn:aws:iam::111111111111:role/long").unwrap();
        assert_eq!((&long.access, long.max_session), (&Access::Full, 7200));
        assert!(k.role("arn:aws:iam::222222222222:role/app").is_none());
    }

    #[test]
    fn refuses_bad_files() {
        for (bad, why) in [
            ("[a]\naws_access_key_id=AKIA1\naws_secret_access_key=s\naccount=1", "account must be 12 digits"),
            ("[a]\naws_access_key_id=AKIA1\naws_secret_access_key=s\naccount=111111111111\nacess=read-only", "unknown"),
            ("[a]\naws_access_key_id=AKIA1\naccount=111111111111", "aws_secret_access_key is required"),
            ("aws_access_key_id=AKIA1", "before any"),
            (
                "[a]\naws_access_key_id=AKIA1\naws_secret_access_key=s\naccount=111111111111\naccess=admin",
                "access must",
            ),
            (
                "[a]\naws_access_key_id=AKIA1\naws_secret_access_key=s\naccount=111111111111\n\
                 [b]\naws_access_key_id=AKIA1\naws_secret_access_key=t\naccount=111111111111",
                "used by another",
            ),
            ("[a]\naws_access_key_id=AKIA1\naws_secret_access_key=s\naccount=111111111111\npolicy={", "not JSON"),
            ("[role r]\naws_access_key_id=AKIA1\naccount=111111111111", "unknown setting"),
            ("[role r]\npolicy={}", "account is required"),
            ("[role r]\naccount=111111111111\nmax_session_duration=100", "3600 to 43200"),
            ("[role a:b]\naccount=111111111111", "a role name"),
        ] {
            let e = Keyring::parse(bad, Path::new(".")).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn policy_file_is_relative_to_the_credentials_file() {
        let dir = std::env::temp_dir().join(format!("estiba-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.json"), r#"{"Statement":{"Effect":"Allow","Action":"ecs:List*","Resource":"*"}}"#)
            .unwrap();
        std::fs::write(
            dir.join("creds"),
            "[d]\naws_access_key_id=AKIAD\naws_secret_access_key=s\naccount=111111111111\npolicy_file=p.json\n",
        )
        .unwrap();
        let k = Keyring::load(&dir.join("creds")).unwrap();
        let d = k.get("AKIAD").unwrap();
        assert_eq!(d.decide("ecs", "ListClusters", "*"), Decision::Allow);
        assert_eq!(d.decide("ecs", "DescribeClusters", "*"), Decision::ImplicitDeny);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
