//! ECR: repositories, images and tags as the store keeps them, and the rules of the ECR API
//! (names, tag mutability, lifecycle policies).
//!
//! Store layout under `ecs/<account>/<region>/` (a repository name may hold `/`, never `@` or
//! `:`, so those end it):
//!
//! | key | value |
//! |---|---|
//! | `ecr-repos/<name>` | [`RepoDoc`] |
//! | `ecr-images/<name>@<digest>` | [`ImageDoc`]: a manifest or index in the repository |
//! | `ecr-tags/<name>:<tag>` | [`TagDoc`]: the digest the tag points at |
//! | `ecr-blobs/<name>@<digest>` | [`BlobLink`]: a blob pushed to the repository |
//! | `tags/ecr-repos/<name>` | resource tags of the repository |

use estiba_api::ecr::{ErrorCode, ImageTagMutability, Repository};
use serde::{Deserialize, Serialize};

use crate::Scope;

/// An ECR API error: an exception name from the ECR model and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrError {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for EcrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for EcrError {}

impl From<EcrError> for estiba_api::ApiError {
    fn from(e: EcrError) -> Self {
        estiba_api::ApiError::new(e.code, e.message)
    }
}

impl EcrError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        EcrError { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterException, message)
    }

    pub fn repository_not_found(scope: &Scope, name: &str) -> Self {
        Self::new(
            ErrorCode::RepositoryNotFoundException,
            format!("The repository with name '{name}' does not exist in the registry with id '{}'", scope.account),
        )
    }
}

impl From<crate::EcsError> for EcrError {
    fn from(e: crate::EcsError) -> Self {
        EcrError::new(ErrorCode::ServerException, e.message)
    }
}

/// A repository: its wire shape plus what the API keeps beside it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepoDoc {
    pub repository: Repository,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_policy_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_evaluated_at: Option<f64>,
}

impl RepoDoc {
    pub fn immutable(&self) -> bool {
        matches!(
            self.repository.image_tag_mutability,
            Some(ImageTagMutability::Immutable) | Some(ImageTagMutability::ImmutableWithExclusion)
        )
    }

    /// Whether `tag` may not be moved once set (IMMUTABLE, with its exclusion filters).
    pub fn tag_is_immutable(&self, tag: &str) -> bool {
        let excluded = || {
            self.repository
                .image_tag_mutability_exclusion_filters
                .iter()
                .flatten()
                .any(|f| wildcard_match(&f.filter, tag))
        };
        match self.repository.image_tag_mutability {
            Some(ImageTagMutability::Immutable) => true,
            Some(ImageTagMutability::ImmutableWithExclusion) => !excluded(),
            Some(ImageTagMutability::MutableWithExclusion) => excluded(),
            _ => false,
        }
    }
}

/// A manifest or index stored in a repository.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageDoc {
    pub digest: String,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Config and layers (ECR's `imageSizeInBytes`).
    pub size: i64,
    /// The manifest's own length in bytes.
    pub manifest_size: i64,
    pub pushed_at: f64,
    /// Config and layer digests (an image manifest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<String>,
    /// Manifests listed (an index).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TagDoc {
    pub digest: String,
    pub pushed_at: f64,
}

/// A blob pushed to a repository, before (or besides) a manifest that uses it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlobLink {
    pub size: i64,
    pub pushed_at: f64,
}

pub fn repo_key(s: &Scope, name: &str) -> String {
    format!("ecs/{}/{}/ecr-repos/{name}", s.account, s.region)
}

pub fn repos_prefix(s: &Scope) -> String {
    format!("ecs/{}/{}/ecr-repos/", s.account, s.region)
}

pub fn image_key(s: &Scope, repo: &str, digest: &str) -> String {
    format!("ecs/{}/{}/ecr-images/{repo}@{digest}", s.account, s.region)
}

pub fn images_of(s: &Scope, repo: &str) -> String {
    format!("ecs/{}/{}/ecr-images/{repo}@", s.account, s.region)
}

pub fn tag_key(s: &Scope, repo: &str, tag: &str) -> String {
    format!("ecs/{}/{}/ecr-tags/{repo}:{tag}", s.account, s.region)
}

pub fn tags_of_repo(s: &Scope, repo: &str) -> String {
    format!("ecs/{}/{}/ecr-tags/{repo}:", s.account, s.region)
}

pub fn blob_key(s: &Scope, repo: &str, digest: &str) -> String {
    format!("ecs/{}/{}/ecr-blobs/{repo}@{digest}", s.account, s.region)
}

pub fn blobs_of(s: &Scope, repo: &str) -> String {
    format!("ecs/{}/{}/ecr-blobs/{repo}@", s.account, s.region)
}

/// The same key under another ECR kind: `ecs/<a>/<r>/ecr-tags/<rest>` → `ecs/<a>/<r>/<kind>/<rest>`.
pub fn rekind(key: &str, kind: &str) -> String {
    let mut parts = key.splitn(5, '/');
    let (ecs, account, region, _, rest) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next(),
        parts.next().unwrap_or(""),
    );
    format!("{ecs}/{account}/{region}/{kind}/{rest}")
}

/// The part of an image, tag or blob key after its separator (`@` or `:`).
pub fn key_suffix(key: &str, sep: char) -> &str {
    key.rsplit_once(sep).map_or("", |(_, s)| s)
}

/// The repository ARN and URI.
pub fn repository_arn(s: &Scope, name: &str) -> String {
    format!("arn:aws:ecr:{}:{}:repository/{name}", s.region, s.account)
}

/// `*` matches any run of characters (ECR's tag wildcard filters).
pub fn wildcard_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A lifecycle policy, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct LifecyclePolicy {
    pub rules: Vec<LifecycleRule>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleRule {
    pub priority: i64,
    pub tag_status: TagStatus,
    pub tag_prefixes: Vec<String>,
    pub tag_patterns: Vec<String>,
    pub count: Count,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Count {
    MoreThan(usize),
    SincePushedDays(f64),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPolicy {
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    rule_priority: i64,
    #[serde(default)]
    description: Option<String>,
    selection: RawSelection,
    action: RawAction,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelection {
    tag_status: String,
    #[serde(default)]
    tag_prefix_list: Vec<String>,
    #[serde(default)]
    tag_pattern_list: Vec<String>,
    count_type: String,
    #[serde(default)]
    count_unit: Option<String>,
    count_number: i64,
    #[serde(default)]
    storage_class: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, rename = "targetStorageClass")]
    _target: Option<String>,
}

impl LifecyclePolicy {
    /// Parses `text`; the error says what to fix, as ECR's validation does.
    pub fn parse(text: &str) -> Result<LifecyclePolicy, EcrError> {
        let fail = |m: String| {
            EcrError::new(
                ErrorCode::InvalidParameterException,
                format!("Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle policy validation failure: {m}'"),
            )
        };
        let raw: RawPolicy = serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
        if raw.rules.is_empty() {
            return Err(fail("a policy needs at least one rule".into()));
        }
        let mut rules = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for r in raw.rules {
            let _ = (&r.description, &r.selection.storage_class);
            if r.rule_priority < 1 || !seen.insert(r.rule_priority) {
                return Err(fail(format!("rulePriority {} must be a unique positive integer", r.rule_priority)));
            }
            if r.action.kind != "expire" {
                return Err(fail(format!("action type '{}' is not supported; use 'expire'", r.action.kind)));
            }
            let s = r.selection;
            let tag_status = match s.tag_status.as_str() {
                "tagged" => TagStatus::Tagged,
                "untagged" => TagStatus::Untagged,
                "any" => TagStatus::Any,
                other => return Err(fail(format!("tagStatus '{other}' must be tagged, untagged or any"))),
            };
            if tag_status == TagStatus::Tagged && s.tag_prefix_list.is_empty() && s.tag_pattern_list.is_empty() {
                return Err(fail("tagPrefixList or tagPatternList is required when tagStatus is tagged".into()));
            }
            if tag_status != TagStatus::Tagged && !(s.tag_prefix_list.is_empty() && s.tag_pattern_list.is_empty()) {
                return Err(fail("tagPrefixList and tagPatternList are only allowed when tagStatus is tagged".into()));
            }
            if s.count_number < 1 {
                return Err(fail(format!("countNumber {} must be at least 1", s.count_number)));
            }
            let count = match (s.count_type.as_str(), s.count_unit.as_deref()) {
                ("imageCountMoreThan", None) => Count::MoreThan(s.count_number as usize),
                ("imageCountMoreThan", Some(_)) => {
                    return Err(fail("countUnit is not allowed with imageCountMoreThan".into()))
                }
                ("sinceImagePushed", Some("days")) => Count::SincePushedDays(s.count_number as f64),
                ("sinceImagePushed", _) => return Err(fail("sinceImagePushed needs countUnit 'days'".into())),
                (other, _) => {
                    return Err(fail(format!("countType '{other}' must be imageCountMoreThan or sinceImagePushed")))
                }
            };
            rules.push(LifecycleRule {
                priority: r.rule_priority,
                tag_status,
                tag_prefixes: s.tag_prefix_list,
                tag_patterns: s.tag_pattern_list,
                count,
            });
        }
        rules.sort_by_key(|r| r.priority);
        Ok(LifecyclePolicy { rules })
    }

    /// The digests the policy expires at `now`, given each image's push time and tags.
    /// Rules go in priority order; an image selected by one rule is never considered by a
    /// later one, as in ECR.
    pub fn expired(&self, images: &[(&str, f64, Vec<&str>)], now: f64) -> Vec<String> {
        let mut claimed = vec![false; images.len()];
        let mut out = Vec::new();
        for rule in &self.rules {
            let mut selected: Vec<usize> =
                (0..images.len()).filter(|&i| !claimed[i] && rule.selects(&images[i].2)).collect();
            for &i in &selected {
                claimed[i] = true;
            }
            // Newest first.
            selected.sort_by(|&a, &b| images[b].1.total_cmp(&images[a].1));
            let expire: Vec<usize> = match rule.count {
                Count::MoreThan(n) => selected.into_iter().skip(n).collect(),
                Count::SincePushedDays(d) => {
                    selected.into_iter().filter(|&i| now - images[i].1 > d * 86_400.0).collect()
                }
            };
            out.extend(expire.into_iter().map(|i| images[i].0.to_owned()));
        }
        out
    }
}

impl LifecycleRule {
    fn selects(&self, tags: &[&str]) -> bool {
        match self.tag_status {
            TagStatus::Any => true,
            TagStatus::Untagged => tags.is_empty(),
            TagStatus::Tagged => tags.iter().any(|t| {
                self.tag_prefixes.iter().any(|p| t.starts_with(p.as_str()))
                    || self.tag_patterns.iter().any(|p| wildcard_match(p, t))
            }),
        }
    }
}

/// Authorization tokens: `base64("AWS:" + password)`, where the password names the account
/// and region it is good for and when it expires, and is signed by the server's key.
pub mod token {
    use base64::Engine as _;

    /// The password part: `<account>.<region>.<expiry seconds>.<signature hex>`.
    pub fn password(account: &str, region: &str, expires: u64, sign: impl Fn(&[u8]) -> String) -> String {
        let body = format!("{account}.{region}.{expires}");
        let sig = sign(body.as_bytes());
        format!("{body}.{sig}")
    }

    pub fn encode(password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"))
    }

    /// Checks a password; returns (account, region) when it is signed by us and not expired.
    pub fn verify(password: &str, now: u64, sign: impl Fn(&[u8]) -> String) -> Option<(&str, &str)> {
        let (body, sig) = password.rsplit_once('.')?;
        if sign(body.as_bytes()) != sig {
            return None;
        }
        let mut it = body.split('.');
        let (account, region, expires) = (it.next()?, it.next()?, it.next()?.parse::<u64>().ok()?);
        (it.next().is_none() && expires > now).then_some((account, region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let s = Scope::new("1", "r");
        assert_eq!(rekind(&repo_key(&s, "a/b"), "ecr-images") + "@d", image_key(&s, "a/b", "d"));
        assert_eq!(key_suffix(&tag_key(&s, "a/b", "v1"), ':'), "v1");
        assert_eq!(key_suffix(&image_key(&s, "a/b", "sha256:x"), '@'), "sha256:x");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("prod*", "prod-1"));
        assert!(wildcard_match("*-rc*", "v1-rc2"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("prod*", "dev"));
        assert!(!wildcard_match("a*a", "a"));
        assert!(wildcard_match("latest", "latest"));
    }

    #[test]
    fn lifecycle_rules_apply_in_priority_order() {
        let p = LifecyclePolicy::parse(
            r#"{"rules":[
              {"rulePriority":2,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
              {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}},
              {"rulePriority":3,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}
            ]}"#,
        )
        .unwrap();
        let day = 86_400.0;
        let images = vec![
            ("p1", 1.0 * day, vec!["prod-1"]),
            ("p2", 2.0 * day, vec!["prod-2"]),
            ("p3", 3.0 * day, vec!["prod-3"]),
            ("d1", 4.0 * day, vec!["dev-1"]),
            ("d2", 5.0 * day, vec!["dev-2"]),
            ("u1", 0.5 * day, vec![]),
        ];
        let mut got = p.expired(&images, 6.0 * day);
        got.sort();
        // prod: keep the newest 2 → p1 expires. The rest (d1, d2, u1) fall to rule 2: keep 1.
        assert_eq!(got, vec!["d1", "p1", "u1"]);
    }

    #[test]
    fn lifecycle_policies_are_checked() {
        for bad in [
            "not json",
            r#"{"rules":[]}"#,
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countNumber":1},"action":{"type":"expire"}}]}"#,
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":0},"action":{"type":"expire"}}]}"#,
        ] {
            let e = LifecyclePolicy::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidParameterException, "{bad}");
            assert!(e.message.contains("Lifecycle policy validation failure"), "{}", e.message);
        }
    }

    #[test]
    fn tokens() {
        let sign = |b: &[u8]| format!("{:x}", b.iter().map(|&x| x as u64).sum::<u64>());
        let p = token::password("123456789012", "eu-west-1", 100, sign);
        assert_eq!(token::verify(&p, 99, sign), Some(("123456789012", "eu-west-1")));
        assert_eq!(token::verify(&p, 100, sign), None, "expired");
        assert_eq!(token::verify(&p.replace("eu-west-1", "us-east-1"), 99, sign), None, "tampered");
    }
}
