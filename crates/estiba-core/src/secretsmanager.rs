//! AWS Secrets Manager: its key layout, documents and the rules of its API as pure functions
//! (names, ARNs with their random suffix, version stages, deletion windows, AWS's messages),
//! and the `valueFrom` forms of ECS container `secrets` ([`ValueFrom`]).
//!
//! Store layout under `secretsmanager/<account>/<region>/`:
//!
//! | key | value |
//! |---|---|
//! | `secrets/<name>` | [`SecretDoc`]: the secret, its versions (values sealed by the server) and tags |
//!
//! A secret scheduled for deletion keeps its document until its deletion date; from then on
//! it counts as gone (reads skip it, a create of its name replaces it).

use estiba_api::secretsmanager::{ErrorCode, Tag};
use estiba_api::ApiError;
use serde::{Deserialize, Serialize};

use crate::Scope;

pub const PREFIX: &str = "secretsmanager/";
pub const SECRETS: &str = "secrets";
pub const CURRENT: &str = "AWSCURRENT";
pub const PREVIOUS: &str = "AWSPREVIOUS";
/// Versions kept beyond those with a stage.
pub const MAX_VERSIONS: usize = 100;

pub fn secrets_prefix(s: &Scope) -> String {
    format!("{PREFIX}{}/{}/{SECRETS}/", s.account, s.region)
}

pub fn secret_key(s: &Scope, name: &str) -> String {
    secrets_prefix(s) + name
}

/// `arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 random characters>`.
pub fn arn(s: &Scope, name: &str, suffix: &str) -> String {
    format!("arn:aws:secretsmanager:{}:{}:secret:{name}-{suffix}", s.region, s.account)
}

/// Six random letters and digits from `random` bytes, as AWS's ARN suffix.
pub fn arn_suffix(random: &[u8]) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random.iter().take(6).map(|b| CHARS[*b as usize % CHARS.len()] as char).collect()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretDoc {
    pub arn: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    pub created: f64,
    pub last_changed: f64,
    /// When DeleteSecret scheduled the deletion for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Oldest first.
    #[serde(default)]
    pub versions: Vec<SecretVersion>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretVersion {
    pub id: String,
    #[serde(default)]
    pub stages: Vec<String>,
    pub created: f64,
    /// The sealed value (`v1:...`).
    pub value: String,
    /// Whether the value is SecretBinary (else SecretString).
    #[serde(default)]
    pub binary: bool,
}

impl SecretDoc {
    /// Whether the secret has been deleted for good (its recovery window is over) as of `now`.
    pub fn gone(&self, now: f64) -> bool {
        self.deletion_date.is_some_and(|d| d <= now)
    }

    /// Fails when the secret is scheduled for deletion.
    pub fn check_not_deleted(&self) -> Result<(), ApiError> {
        if self.deletion_date.is_some() {
            return Err(marked_for_deletion());
        }
        Ok(())
    }

    /// The version GetSecretValue's `VersionId` / `VersionStage` name (default `AWSCURRENT`).
    pub fn select(&self, version_id: Option<&str>, stage: Option<&str>) -> Result<&SecretVersion, ApiError> {
        match (version_id, stage) {
            (Some(id), stage) => {
                let v = self.versions.iter().find(|v| v.id == id).ok_or_else(|| {
                    not_found(format!("Secrets Manager can't find the specified secret value for VersionId: {id}"))
                })?;
                if let Some(st) = stage {
                    if !v.stages.iter().any(|s| s == st) {
                        return Err(invalid_request(
                            "You provided a VersionStage that is not associated to the provided VersionId.",
                        ));
                    }
                }
                Ok(v)
            }
            (None, stage) => {
                let st = stage.unwrap_or(CURRENT);
                self.versions.iter().find(|v| v.stages.iter().any(|s| s == st)).ok_or_else(|| {
                    not_found(format!("Secrets Manager can't find the specified secret value for staging label: {st}"))
                })
            }
        }
    }

    /// Adds a version with `stages` (default `AWSCURRENT`): each stage leaves the version that
    /// had it; when `AWSCURRENT` moves, the version that lost it gets `AWSPREVIOUS`. Versions
    /// beyond [`MAX_VERSIONS`] without a stage are dropped, oldest first.
    pub fn add_version(&mut self, v: SecretVersion) {
        let moving = v.stages.clone();
        let old_current = self.versions.iter().position(|x| x.stages.iter().any(|s| s == CURRENT));
        for x in &mut self.versions {
            x.stages.retain(|s| !moving.contains(s));
        }
        if moving.iter().any(|s| s == CURRENT) {
            if let Some(i) = old_current {
                for x in &mut self.versions {
                    x.stages.retain(|s| s != PREVIOUS);
                }
                self.versions[i].stages.push(PREVIOUS.into());
            }
        }
        self.last_changed = v.created;
        self.versions.push(v);
        while self.versions.len() > MAX_VERSIONS {
            match self.versions.iter().position(|x| x.stages.is_empty()) {
                Some(i) => {
                    self.versions.remove(i);
                }
                None => break,
            }
        }
    }

    /// `VersionIdsToStages`: the versions that have a stage.
    pub fn stages(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.versions.iter().filter(|v| !v.stages.is_empty()).map(|v| (v.id.clone(), v.stages.clone())).collect()
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

pub fn not_found(message: impl Into<String>) -> ApiError {
    err(ErrorCode::ResourceNotFoundException, message)
}

pub fn secret_not_found() -> ApiError {
    not_found("Secrets Manager can't find the specified secret.")
}

pub fn invalid_request(message: impl Into<String>) -> ApiError {
    err(ErrorCode::InvalidRequestException, message)
}

pub fn invalid_parameter(message: impl Into<String>) -> ApiError {
    err(ErrorCode::InvalidParameterException, message)
}

pub fn marked_for_deletion() -> ApiError {
    invalid_request("You can't perform this operation on the secret because it was marked for deletion.")
}

pub fn exists(name: &str) -> ApiError {
    err(ErrorCode::ResourceExistsException, format!("The operation failed because the secret {name} already exists."))
}

/// Checks a name CreateSecret may use.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 512
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
        || name.starts_with("arn:")
    {
        return Err(invalid_parameter(
            "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!",
        ));
    }
    Ok(())
}

/// What a `SecretId` names in this scope: `Name` when it is a name or a partial ARN (no
/// suffix), `Arn` (the name and the full ARN to match) when it ends in `-` and six characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Name(String),
    Arn {
        name: String,
        arn: String,
    },
    /// An ARN of another account or region, or not a secret's.
    Elsewhere,
}

pub fn parse_ref(s: &Scope, id: &str) -> SecretRef {
    if !id.starts_with("arn:") {
        return SecretRef::Name(id.to_owned());
    }
    let prefix = format!("arn:aws:secretsmanager:{}:{}:secret:", s.region, s.account);
    let Some(rest) = id.strip_prefix(&prefix) else { return SecretRef::Elsewhere };
    match rest.len().checked_sub(7).map(|i| rest.split_at(i)) {
        Some((name, suffix))
            if !name.is_empty()
                && suffix.starts_with('-')
                && suffix[1..].bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            SecretRef::Arn { name: name.to_owned(), arn: id.to_owned() }
        }
        _ => SecretRef::Name(rest.to_owned()),
    }
}

/// Checks DeleteSecret's options; the recovery window in days (`None`: delete now).
pub fn recovery_window(days: Option<i64>, force: Option<bool>) -> Result<Option<i64>, ApiError> {
    match (days, force.unwrap_or(false)) {
        (Some(_), true) => {
            Err(invalid_parameter("You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."))
        }
        (_, true) => Ok(None),
        (Some(d), false) if !(7..=30).contains(&d) => {
            Err(invalid_parameter("RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."))
        }
        (d, false) => Ok(Some(d.unwrap_or(30))),
    }
}

/// Applies tags: new keys are added, existing ones take the new value.
pub fn merge_tags(existing: &[Tag], add: &[Tag]) -> Result<Vec<Tag>, ApiError> {
    let mut out = existing.to_vec();
    for t in add {
        if t.key.as_deref().unwrap_or("").is_empty() {
            return Err(invalid_parameter("A tag key can't be empty."));
        }
        match out.iter_mut().find(|x| x.key == t.key) {
            Some(x) => x.value = t.value.clone(),
            None => out.push(t.clone()),
        }
    }
    if out.len() > 50 {
        return Err(err(ErrorCode::LimitExceededException, "A secret can have at most 50 tags."));
    }
    Ok(out)
}

/// A container secret's `valueFrom`, as the ECS agent reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueFrom {
    /// An SSM parameter: its name or ARN, as GetParameters takes it.
    Ssm(String),
    /// A Secrets Manager secret, with the optional `:json-key:version-stage:version-id`.
    Asm { secret_id: String, json_key: Option<String>, stage: Option<String>, version_id: Option<String> },
}

pub const INVALID_ASM_ARN: &str =
    "an invalid ARN format for the AWS Secrets Manager secret was specified. Specify a valid ARN and try again.";

/// Reads a `valueFrom`: an ARN whose service is `secretsmanager` is a secret (its resource
/// `secret:ID` or `secret:ID:json-key:version-stage:version-id`, empty fields unset); any
/// other value is an SSM parameter's name or ARN.
pub fn parse_value_from(v: &str) -> Result<ValueFrom, String> {
    let parts: Vec<&str> = v.splitn(6, ':').collect();
    if parts.len() == 6 && parts[0] == "arn" && parts[2] == "secretsmanager" {
        let resource: Vec<&str> = parts[5].split(':').collect();
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let base = parts[..5].join(":");
        return match resource.as_slice() {
            ["secret", id] => Ok(ValueFrom::Asm {
                secret_id: format!("{base}:secret:{id}"),
                json_key: None,
                stage: None,
                version_id: None,
            }),
            ["secret", id, key, stage, version] => Ok(ValueFrom::Asm {
                secret_id: format!("{base}:secret:{id}"),
                json_key: opt(key),
                stage: opt(stage),
                version_id: opt(version),
            }),
            _ => Err(INVALID_ASM_ARN.into()),
        };
    }
    Ok(ValueFrom::Ssm(v.to_owned()))
}

/// The value of a top-level key of a JSON secret, printed as the ECS agent does (strings
/// bare, other values as JSON).
pub fn json_key_value(secret: &str, key: &str) -> Result<String, String> {
    let missing = || format!("retrieved secret from Secrets Manager did not contain json key {key}");
    let v: serde_json::Value = serde_json::from_str(secret).map_err(|_| missing())?;
    match v.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new("123456789012", "us-east-1")
    }

    fn version(id: &str, stages: &[&str]) -> SecretVersion {
        SecretVersion { id: id.into(), stages: stages.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn new_versions_move_current_and_previous() {
        let mut d = SecretDoc::default();
        d.add_version(version("v1", &[CURRENT]));
        d.add_version(version("v2", &[CURRENT]));
        d.add_version(version("v3", &[CURRENT]));
        let st = d.stages();
        assert_eq!(st.get("v3").unwrap(), &vec![CURRENT.to_string()]);
        assert_eq!(st.get("v2").unwrap(), &vec![PREVIOUS.to_string()]);
        assert!(!st.contains_key("v1"));
        d.add_version(version("v4", &["AWSPENDING"]));
        assert_eq!(d.select(None, None).unwrap().id, "v3");
        assert_eq!(d.select(None, Some("AWSPENDING")).unwrap().id, "v4");
        assert_eq!(d.select(Some("v2"), Some(PREVIOUS)).unwrap().id, "v2");
        assert_eq!(d.select(Some("v2"), Some(CURRENT)).unwrap_err().code, "InvalidRequestException");
        assert_eq!(d.select(Some("nope"), None).unwrap_err().code, "ResourceNotFoundException");
        let e = d.select(None, Some("X")).unwrap_err();
        assert_eq!(e.message, "Secrets Manager can't find the specified secret value for staging label: X");
    }

    #[test]
    fn refs_by_name_partial_and_full_arn() {
        let s = scope();
        assert_eq!(parse_ref(&s, "db/pass"), SecretRef::Name("db/pass".into()));
        let full = arn(&s, "db/pass", "AbCdEf");
        assert_eq!(full, "arn:aws:secretsmanager:us-east-1:123456789012:secret:db/pass-AbCdEf");
        assert_eq!(parse_ref(&s, &full), SecretRef::Arn { name: "db/pass".into(), arn: full.clone() });
        assert_eq!(
            parse_ref(&s, "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"),
            SecretRef::Name("db".into())
        );
        assert_eq!(
            parse_ref(&s, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"),
            SecretRef::Elsewhere
        );
        assert_eq!(arn_suffix(&[0, 1, 2, 3, 4, 61, 9]), "ABCDE9");
    }

    #[test]
    fn deletion_windows() {
        assert_eq!(recovery_window(None, None).unwrap(), Some(30));
        assert_eq!(recovery_window(Some(7), Some(false)).unwrap(), Some(7));
        assert_eq!(recovery_window(None, Some(true)).unwrap(), None);
        assert_eq!(
            recovery_window(Some(6), None).unwrap_err().message,
            "RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
        );
        assert!(recovery_window(Some(31), None).is_err());
        assert_eq!(recovery_window(Some(7), Some(true)).unwrap_err().code, "InvalidParameterException");
    }

    #[test]
    fn value_from_forms() {
        let a = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert_eq!(
            parse_value_from(a).unwrap(),
            ValueFrom::Asm { secret_id: a.into(), json_key: None, stage: None, version_id: None }
        );
        assert_eq!(
            parse_value_from(&format!("{a}:password::")).unwrap(),
            ValueFrom::Asm { secret_id: a.into(), json_key: Some("password".into()), stage: None, version_id: None }
        );
        assert_eq!(
            parse_value_from(&format!("{a}::AWSPREVIOUS:")).unwrap(),
            ValueFrom::Asm { secret_id: a.into(), json_key: None, stage: Some("AWSPREVIOUS".into()), version_id: None }
        );
        assert_eq!(parse_value_from(&format!("{a}:password")).unwrap_err(), INVALID_ASM_ARN);
        assert_eq!(parse_value_from("/app/db").unwrap(), ValueFrom::Ssm("/app/db".into()));
        let p = "arn:aws:ssm:us-east-1:123456789012:parameter/app/db";
        assert_eq!(parse_value_from(p).unwrap(), ValueFrom::Ssm(p.into()));
    }

    #[test]
    fn json_keys() {
        assert_eq!(json_key_value(r#"{"user":"u","n":3}"#, "user").unwrap(), "u");
        assert_eq!(json_key_value(r#"{"user":"u","n":3}"#, "n").unwrap(), "3");
        assert_eq!(
            json_key_value(r#"{"user":"u"}"#, "pw").unwrap_err(),
            "retrieved secret from Secrets Manager did not contain json key pw"
        );
    }

    #[test]
    fn names() {
        check_name("prod/db_pass+x=y.z@w-1").unwrap();
        assert!(check_name("a b").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(513)).is_err());
    }
}
