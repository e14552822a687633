//! SSM Parameter Store: its key layout, documents and the rules of its API as pure functions
//! (names and paths, `name:version` / `name:label` selectors, labels, ARNs, AWS's messages).
//!
//! Store layout under `ssm/<account>/<region>/`:
//!
//! | key | value |
//! |---|---|
//! | `parameters/<name>` | [`ParameterDoc`]: the parameter with all its versions (≤ 100) and tags |
//!
//! One document per parameter makes PutParameter, labels and deletion single compare-and-swap
//! writes. SecureString values are stored sealed (the server seals and opens them); this
//! module never sees a key.

use estiba_api::ssm::{ErrorCode, ParameterTier, ParameterType, Tag};
use estiba_api::ApiError;
use serde::{Deserialize, Serialize};

use crate::Scope;

pub const PREFIX: &str = "ssm/";
pub const PARAMETERS: &str = "parameters";

/// Versions kept per parameter.
pub const MAX_VERSIONS: usize = 100;
/// Labels per version.
pub const MAX_LABELS: usize = 10;
/// The longest value of a Standard parameter.
pub const STANDARD_MAX_VALUE: usize = 4096;
pub const ADVANCED_MAX_VALUE: usize = 8192;
pub const DEFAULT_KEY_ID: &str = "alias/aws/ssm";

pub fn parameters_prefix(s: &Scope) -> String {
    format!("{PREFIX}{}/{}/{PARAMETERS}/", s.account, s.region)
}

pub fn parameter_key(s: &Scope, name: &str) -> String {
    parameters_prefix(s) + name
}

/// `arn:aws:ssm:<region>:<account>:parameter/<name without its leading slash>`.
pub fn arn(s: &Scope, name: &str) -> String {
    format!("arn:aws:ssm:{}:{}:parameter/{}", s.region, s.account, name.strip_prefix('/').unwrap_or(name))
}

/// A parameter with its versions, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParameterDoc {
    pub name: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub versions: Vec<ParameterVersion>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParameterVersion {
    pub version: i64,
    #[serde(rename = "type")]
    pub kind: ParameterType,
    /// The value; sealed (`v1:...`) for SecureString.
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pattern: Option<String>,
    pub data_type: String,
    pub tier: ParameterTier,
    #[serde(default)]
    pub labels: Vec<String>,
    pub modified: f64,
    pub user: String,
}

impl ParameterDoc {
    pub fn latest(&self) -> &ParameterVersion {
        self.versions.last().expect("a parameter has at least one version")
    }

    /// The version a selector names (`None`: the latest).
    pub fn select(&self, sel: Option<&Selector>) -> Result<&ParameterVersion, ApiError> {
        match sel {
            None => Ok(self.latest()),
            Some(Selector::Version(v)) => {
                self.versions.iter().find(|p| p.version == *v).ok_or_else(|| version_not_found(&self.name, *v))
            }
            Some(Selector::Label(l)) => {
                self.versions.iter().find(|p| p.labels.iter().any(|x| x == l)).ok_or_else(parameter_not_found)
            }
        }
    }
}

/// What follows `:` in a GetParameter name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Version(i64),
    Label(String),
}

impl Selector {
    pub fn shown(&self) -> String {
        match self {
            Selector::Version(v) => format!(":{v}"),
            Selector::Label(l) => format!(":{l}"),
        }
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

pub fn validation(message: impl Into<String>) -> ApiError {
    err(ErrorCode::ValidationException, message)
}

/// AWS answers a missing parameter with an empty message.
pub fn parameter_not_found() -> ApiError {
    err(ErrorCode::ParameterNotFound, "")
}

pub fn version_not_found(name: &str, v: i64) -> ApiError {
    err(
        ErrorCode::ParameterVersionNotFound,
        format!("Systems Manager could not find version {v} of {name}. Verify the version and try again."),
    )
}

pub fn already_exists() -> ApiError {
    err(
        ErrorCode::ParameterAlreadyExists,
        "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.",
    )
}

const NAME_RULES: &str = "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_";

/// Checks a name PutParameter may create.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.starts_with("arn:") {
        return Err(validation(format!(
            "Parameter name: {name} is not valid. PutParameter does not accept ARNs: give the parameter's name."
        )));
    }
    if name.is_empty() || name.len() > 1011 {
        return Err(validation("Parameter name must be between 1 and 1011 characters long."));
    }
    let bare = name.strip_prefix('/').unwrap_or(name).to_ascii_lowercase();
    if bare.starts_with("aws") || bare.starts_with("ssm") {
        return Err(validation(NAME_RULES));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b)) {
        return Err(validation(NAME_RULES));
    }
    if name.contains('/') {
        if !name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(validation("Parameter name must be a fully qualified name."));
        }
        if name.matches('/').count() > 15 {
            return Err(err(
                ErrorCode::HierarchyLevelLimitExceededException,
                "A hierarchy can have a maximum of 15 levels. For more information, see Requirements and constraints for parameter names in the Amazon Web Services Systems Manager User Guide.",
            ));
        }
    }
    Ok(())
}

/// The name a Get call's `Name` means (a name or an ARN of this scope's parameter), and its
/// selector. An ARN of another account or region names nothing here.
pub fn parse_ref(s: &Scope, given: &str) -> Result<(String, Option<Selector>), ApiError> {
    let name = match given.strip_prefix("arn:") {
        Some(_) => {
            let prefix = format!("arn:aws:ssm:{}:{}:parameter/", s.region, s.account);
            let rest = given.strip_prefix(&prefix).ok_or_else(parameter_not_found)?;
            let name = rest.split(':').next().unwrap_or_default();
            if name.contains('/') {
                format!("/{rest}")
            } else {
                rest.to_owned()
            }
        }
        None => given.to_owned(),
    };
    match name.split_once(':') {
        None => Ok((name, None)),
        Some((n, sel)) if !sel.is_empty() && sel.bytes().all(|b| b.is_ascii_digit()) => {
            let v = sel.parse().map_err(|_| validation(format!("Invalid version: {sel}")))?;
            Ok((n.to_owned(), Some(Selector::Version(v))))
        }
        Some((n, sel)) if !sel.is_empty() && !sel.contains(':') => {
            Ok((n.to_owned(), Some(Selector::Label(sel.to_owned()))))
        }
        Some(_) => Err(validation(format!("Parameter name: {given} is not valid."))),
    }
}

/// Whether a label may be put on a version (else it comes back in `InvalidLabels`).
pub fn valid_label(l: &str) -> bool {
    let lower = l.to_ascii_lowercase();
    !l.is_empty()
        && l.len() <= 100
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !l.as_bytes()[0].is_ascii_digit()
        && !lower.starts_with("aws")
        && !lower.starts_with("ssm")
}

/// Normalizes a GetParametersByPath path: it starts with `/` and ends with `/`.
pub fn check_path(path: &str) -> Result<String, ApiError> {
    if !path.starts_with('/') || path.contains("//") {
        return Err(validation(format!(
            "The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash \"/\". It can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). It must use only letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore). Special characters are not allowed. All sub-paths, if specified, must use the forward slash symbol \"/\". Valid example: /get/parameters2-/by1./path0_. Invalid path: {path}"
        )));
    }
    Ok(if path.ends_with('/') { path.to_owned() } else { format!("{path}/") })
}

/// Whether `name` is under `path` (normalized by [`check_path`]): directly, or at any depth
/// when `recursive`.
pub fn under_path(name: &str, path: &str, recursive: bool) -> bool {
    match name.strip_prefix(path) {
        Some(rest) if !rest.is_empty() => recursive || !rest.contains('/'),
        _ => false,
    }
}

/// The data types PutParameter accepts.
pub fn check_data_type(t: &str) -> Result<(), ApiError> {
    match t {
        "text" | "aws:ec2:image" | "aws:ssm:integration" => Ok(()),
        _ => Err(validation(format!(
            "The following data type is not supported: {t} (Data type names are all lowercase.)"
        ))),
    }
}

/// The size rule of a value for a tier.
pub fn check_value(value: &str, tier: ParameterTier) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(validation(
            "1 validation error detected: Value '' at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    let max = if tier == ParameterTier::Standard { STANDARD_MAX_VALUE } else { ADVANCED_MAX_VALUE };
    if value.len() > max {
        return Err(validation(if tier == ParameterTier::Standard {
            "Standard tier parameters support a maximum parameter value of 4096 characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier. For more information, see https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html".to_owned()
        } else {
            format!("Parameter value exceeds the maximum size of {max} characters.")
        }));
    }
    Ok(())
}

/// Applies tags: new keys are added, existing ones take the new value; at most 50.
pub fn merge_tags(existing: &[Tag], add: &[Tag]) -> Result<Vec<Tag>, ApiError> {
    let mut out = existing.to_vec();
    for t in add {
        match out.iter_mut().find(|x| x.key == t.key) {
            Some(x) => x.value = t.value.clone(),
            None => out.push(t.clone()),
        }
    }
    if out.len() > 50 {
        return Err(err(ErrorCode::TooManyTagsError, "The resource has exceeded the maximum number of tags."));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new("123456789012", "eu-west-1")
    }

    #[test]
    fn names_follow_aws_rules() {
        for ok in ["a", "/a/b", "/app/db.password-1_x", "plain-name"] {
            check_name(ok).unwrap();
        }
        for bad in ["aws-x", "/ssm/x", "/SSM", "a b", "a/b", "/a//b", "/a/", "arn:aws:ssm:r:a:parameter/x", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let deep = "/a".repeat(16);
        assert_eq!(check_name(&deep).unwrap_err().code, "HierarchyLevelLimitExceededException");
        check_name(&"/a".repeat(15)).unwrap();
    }

    #[test]
    fn refs_take_arns_versions_and_labels() {
        let s = scope();
        assert_eq!(parse_ref(&s, "/a/b").unwrap(), ("/a/b".into(), None));
        assert_eq!(parse_ref(&s, "/a/b:3").unwrap(), ("/a/b".into(), Some(Selector::Version(3))));
        assert_eq!(parse_ref(&s, "x:prod").unwrap(), ("x".into(), Some(Selector::Label("prod".into()))));
        assert_eq!(parse_ref(&s, &arn(&s, "/a/b")).unwrap(), ("/a/b".into(), None));
        assert_eq!(parse_ref(&s, &arn(&s, "x")).unwrap(), ("x".into(), None));
        assert_eq!(parse_ref(&s, &(arn(&s, "/a/b") + ":2")).unwrap(), ("/a/b".into(), Some(Selector::Version(2))));
        assert_eq!(
            parse_ref(&s, "arn:aws:ssm:us-east-1:123456789012:parameter/x").unwrap_err().code,
            "ParameterNotFound"
        );
        assert_eq!(arn(&s, "/a/b"), "arn:aws:ssm:eu-west-1:123456789012:parameter/a/b");
    }

    #[test]
    fn labels_and_paths() {
        assert!(valid_label("prod"));
        assert!(valid_label("v-1.x_y"));
        for bad in ["1abc", "aws-x", "SSMx", "a b", "", &"x".repeat(101)] {
            assert!(!valid_label(bad), "{bad}");
        }
        let p = check_path("/app").unwrap();
        assert_eq!(p, "/app/");
        assert!(under_path("/app/a", &p, false));
        assert!(!under_path("/app/a/b", &p, false));
        assert!(under_path("/app/a/b", &p, true));
        assert!(!under_path("/application", &p, true));
        assert!(check_path("app").is_err());
        assert!(under_path("/x", "/", false));
    }

    #[test]
    fn selection_by_version_and_label() {
        let mk = |v: i64, labels: &[&str]| ParameterVersion {
            version: v,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let d = ParameterDoc { name: "/p".into(), tags: vec![], versions: vec![mk(1, &["old"]), mk(2, &[])] };
        assert_eq!(d.select(None).unwrap().version, 2);
        assert_eq!(d.select(Some(&Selector::Version(1))).unwrap().version, 1);
        assert_eq!(d.select(Some(&Selector::Label("old".into()))).unwrap().version, 1);
        let e = d.select(Some(&Selector::Version(7))).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                "ParameterVersionNotFound",
                "Systems Manager could not find version 7 of /p. Verify the version and try again."
            )
        );
        assert_eq!(d.select(Some(&Selector::Label("nope".into()))).unwrap_err().code, "ParameterNotFound");
    }
}
