//! Who calls the AWS APIs and what they may do, for the front door ([`crate::front`]): the
//! credentials file (`--credentials`, read again when it changes), SigV4 verification with
//! [`estiba_auth`], and the permission check of an operation. It answers nothing itself: the
//! front door turns its refusals into each protocol's error.
//!
//! **Architecture invariant:** with a credentials file, every API request is verified before
//! its body is decoded, and the account of a request is the account of its access key, never
//! one the request names.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use estiba_api::ApiError;
use estiba_auth::{AuthError, Decision, Family, Keyring};

/// How often the credentials file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);

/// The credentials file and the keys last read from it.
pub struct Credentials {
    file: PathBuf,
    state: RwLock<State>,
}

struct State {
    mtime: Option<SystemTime>,
    checked: Instant,
    keys: Arc<Keyring>,
}

impl Credentials {
    /// Reads the file; an unusable file is an error (the server must not start open).
    pub fn open(file: &Path) -> Result<Credentials, estiba_auth::LoadError> {
        let mtime = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        let keys = Keyring::load(file)?;
        tracing::info!(file = %file.display(), keys = keys.len(), "credentials read");
        Ok(Credentials {
            file: file.to_owned(),
            state: RwLock::new(State { mtime, checked: Instant::now(), keys: Arc::new(keys) }),
        })
    }

    /// The current keys, read again when the file changed. A file that no longer parses
    /// keeps the previous keys, with an error logged.
    pub fn keys(&self) -> Arc<Keyring> {
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if s.checked.elapsed() < RECHECK {
                return s.keys.clone();
            }
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() < RECHECK {
            return s.keys.clone();
        }
        s.checked = Instant::now();
        let mtime = std::fs::metadata(&self.file).and_then(|m| m.modified()).ok();
        if mtime != s.mtime {
            s.mtime = mtime;
            match Keyring::load(&self.file) {
                Ok(k) => {
                    tracing::info!(file = %self.file.display(), keys = k.len(), "credentials read again");
                    s.keys = Arc::new(k);
                }
                Err(e) => {
                    tracing::error!(file = %self.file.display(), error = %e, "credentials file not reloaded; keeping the previous keys")
                }
            }
        }
        s.keys.clone()
    }
}

/// An authentication refusal as an API error of the family, for a service that is
/// query-compatible (CloudWatch: its JSON and CBOR errors carry the Query code too) or not.
pub fn refusal(e: &AuthError, family: Family, query_compatible: bool) -> ApiError {
    let c = e.code(family);
    let (code, shape) = if family == Family::Json && query_compatible {
        (e.code(Family::Query).code, c.code)
    } else {
        (c.code, c.code)
    };
    ApiError { code, shape, status: c.status, sender_fault: true, message: c.message }
}

/// The IAM action prefix of a service's signing name.
pub fn iam_prefix(signing_name: &str) -> &str {
    match signing_name {
        "monitoring" => "cloudwatch",
        other => other,
    }
}

/// The refusal of an operation the key may not call, in the family's terms.
pub fn denied(
    cred: &estiba_auth::Credential,
    service: &str,
    operation: &str,
    resource: &str,
    d: Decision,
    family: Family,
    query_compatible: bool,
) -> ApiError {
    let message = cred.denied_message(service, operation, resource, d);
    match family {
        Family::Json if query_compatible => {
            ApiError { code: "AccessDenied", shape: "AccessDeniedException", status: 403, sender_fault: true, message }
        }
        Family::Json => ApiError {
            code: "AccessDeniedException",
            shape: "AccessDeniedException",
            status: 400,
            sender_fault: true,
            message,
        },
        Family::Query => {
            ApiError { code: "AccessDenied", shape: "AccessDenied", status: 403, sender_fault: true, message }
        }
        Family::Ec2 => ApiError {
            code: "UnauthorizedOperation",
            shape: "UnauthorizedOperation",
            status: 403,
            sender_fault: true,
            message: "You are not authorized to perform this operation.".into(),
        },
    }
}

/// The ARNs an operation acts on, where the input names them plainly (an ECS cluster, or
/// each of DescribeClusters' `clusters`; an ECR repository, or each of DescribeRepositories'
/// `repositoryNames`): IAM checks the call against each. `*` otherwise, as for actions on no
/// particular resource.
pub fn resources(service: &str, v: &serde_json::Value, account: &str, region: &str) -> Vec<String> {
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|s| !s.is_empty());
    let list = |k: &str| -> Vec<&str> {
        let items = v.get(k).and_then(|x| x.as_array()).map(Vec::as_slice).unwrap_or_default();
        items.iter().filter_map(|x| x.as_str()).filter(|s| !s.is_empty()).collect()
    };
    let arn = |kind: &str, name: &str| match name.starts_with("arn:") {
        true => name.to_owned(),
        false => format!("arn:aws:{service}:{region}:{account}:{kind}/{name}"),
    };
    let (kind, names) = match service {
        "ecs" => {
            ("cluster", field("cluster").or_else(|| field("clusterName")).map_or_else(|| list("clusters"), |c| vec![c]))
        }
        "ecr" => ("repository", field("repositoryName").map_or_else(|| list("repositoryNames"), |r| vec![r])),
        _ => ("", Vec::new()),
    };
    match names.is_empty() {
        true => vec!["*".to_owned()],
        false => names.into_iter().map(|n| arn(kind, n)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_an_input_names() {
        let one = |v: serde_json::Value, service: &str| resources(service, &v, "1", "r");
        assert_eq!(one(serde_json::json!({"cluster":"prod"}), "ecs"), ["arn:aws:ecs:r:1:cluster/prod"]);
        assert_eq!(one(serde_json::json!({"clusterName":"p"}), "ecs"), ["arn:aws:ecs:r:1:cluster/p"]);
        assert_eq!(
            one(serde_json::json!({"cluster":"arn:aws:ecs:x:2:cluster/q"}), "ecs"),
            ["arn:aws:ecs:x:2:cluster/q"]
        );
        assert_eq!(
            one(serde_json::json!({"clusters":["a", "arn:aws:ecs:x:2:cluster/q", ""]}), "ecs"),
            ["arn:aws:ecs:r:1:cluster/a", "arn:aws:ecs:x:2:cluster/q"]
        );
        assert_eq!(one(serde_json::json!({}), "ecs"), ["*"]);
        assert_eq!(one(serde_json::json!({"clusters":[]}), "ecs"), ["*"]);
        assert_eq!(one(serde_json::json!({"repositoryName":"app"}), "ecr"), ["arn:aws:ecr:r:1:repository/app"]);
        assert_eq!(
            one(serde_json::json!({"repositoryNames":["a","b"]}), "ecr"),
            ["arn:aws:ecr:r:1:repository/a", "arn:aws:ecr:r:1:repository/b"]
        );
        assert_eq!(one(serde_json::json!({"logGroupName":"g"}), "logs"), ["*"]);
    }

    #[test]
    fn refusals_per_family() {
        let e = refusal(&AuthError::UnknownKey, Family::Json, true);
        assert_eq!((e.code, e.shape, e.status), ("InvalidClientTokenId", "UnrecognizedClientException", 400));
        let e = refusal(&AuthError::UnknownKey, Family::Json, false);
        assert_eq!((e.code, e.shape), ("UnrecognizedClientException", "UnrecognizedClientException"));
        let e = refusal(&AuthError::Missing, Family::Ec2, false);
        assert_eq!((e.code, e.status), ("MissingAuthenticationToken", 403));
    }

    #[test]
    fn reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        let one = "[a]\naws_access_key_id=AKIAONE\naws_secret_access_key=s\naccount=111111111111\n";
        std::fs::write(&f, one).unwrap();
        let c = Credentials::open(&f).unwrap();
        assert!(c.keys().get("AKIAONE").is_some());
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, one.replace("ONE", "TWO")).unwrap();
        // Seen once a second has passed.
        c.state.write().unwrap().checked -= RECHECK;
        let k = c.keys();
        assert!(k.get("AKIATWO").is_some() && k.get("AKIAONE").is_none());
        std::fs::write(&f, "not a credentials file").unwrap();
        c.state.write().unwrap().checked -= RECHECK;
        c.state.write().unwrap().mtime = None;
        assert!(c.keys().get("AKIATWO").is_some(), "a broken file keeps the previous keys");
    }
}
