//! ARNs and the identifiers ECS accepts in their place ("the short name or full ARN").

use crate::error::{EcsError, Result};

/// The account and region every resource lives in; resources of different scopes never mix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Scope { account: account.into(), region: region.into() }
    }

    /// The resource's ARN, formed in one allocation (list calls form one per item).
    fn arn(&self, resource: std::fmt::Arguments<'_>) -> String {
        format!("arn:aws:ecs:{}:{}:{}", self.region, self.account, resource)
    }

    pub fn cluster_arn(&self, name: &str) -> String {
        self.arn(format_args!("cluster/{name}"))
    }

    pub fn task_definition_arn(&self, family: &str, revision: i32) -> String {
        self.arn(format_args!("task-definition/{family}:{revision}"))
    }

    pub fn task_arn(&self, cluster: &str, id: &str) -> String {
        self.arn(format_args!("task/{cluster}/{id}"))
    }

    pub fn container_arn(&self, cluster: &str, task_id: &str, id: &str) -> String {
        self.arn(format_args!("container/{cluster}/{task_id}/{id}"))
    }

    pub fn service_arn(&self, cluster: &str, name: &str) -> String {
        self.arn(format_args!("service/{cluster}/{name}"))
    }

    /// The short form ECS names an unknown service by in DescribeServices failures.
    pub fn short_service_arn(&self, name: &str) -> String {
        self.arn(format_args!("service/{name}"))
    }

    pub fn container_instance_arn(&self, cluster: &str, id: &str) -> String {
        self.arn(format_args!("container-instance/{cluster}/{id}"))
    }

    pub fn capacity_provider_arn(&self, name: &str) -> String {
        self.arn(format_args!("capacity-provider/{name}"))
    }

    pub fn service_deployment_arn(&self, cluster: &str, service: &str, id: &str) -> String {
        self.arn(format_args!("service-deployment/{cluster}/{service}/{id}"))
    }

    pub fn service_revision_arn(&self, cluster: &str, service: &str, n: &str) -> String {
        self.arn(format_args!("service-revision/{cluster}/{service}/{n}"))
    }

    pub fn task_set_arn(&self, cluster: &str, service: &str, id: &str) -> String {
        self.arn(format_args!("task-set/{cluster}/{service}/{id}"))
    }

    /// The root user of the account: ECS's `registeredBy`, `createdBy` and default principal.
    pub fn root_arn(&self) -> String {
        format!("arn:aws:iam::{}:root", self.account)
    }
}

/// A parsed ECS ARN: `arn:<partition>:ecs:<region>:<account>:<type>/<path>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn<'a> {
    pub region: &'a str,
    pub account: &'a str,
    pub kind: &'a str,
    /// Everything after `<type>/`.
    pub path: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(s: &'a str) -> Option<Self> {
        let mut parts = s.splitn(6, ':');
        let (arn, _partition, service, region, account, resource) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if arn != "arn" || service != "ecs" {
            return None;
        }
        let (kind, path) = resource.split_once('/')?;
        Some(Arn { region, account, kind, path })
    }

    pub fn in_scope(&self, scope: &Scope) -> bool {
        self.region == scope.region && self.account == scope.account
    }
}

/// Resolves "the short name or full ARN of the cluster"; `None` means the default cluster.
pub fn cluster_name(id: Option<&str>) -> Result<String> {
    match id {
        None => Ok("default".to_owned()),
        Some(s) if s.starts_with("arn:") => match Arn::parse(s) {
            Some(a) if a.kind == "cluster" && !a.path.is_empty() => Ok(a.path.to_owned()),
            _ => Err(EcsError::invalid(format!("Invalid cluster ARN: {s}"))),
        },
        Some("") => Ok("default".to_owned()),
        Some(s) => Ok(s.to_owned()),
    }
}

/// Resolves a task, service or container instance reference inside a cluster: an id/name,
/// a long ARN (`<type>/<cluster>/<id>`) or an old short ARN (`<type>/<id>`). Returns the id
/// and, when the ARN names one, its cluster.
pub fn member_id<'a>(kind: &str, id: &'a str) -> Option<(Option<&'a str>, &'a str)> {
    if !id.starts_with("arn:") {
        return (!id.is_empty() && !id.contains('/')).then_some((None, id));
    }
    let a = Arn::parse(id)?;
    if a.kind != kind {
        return None;
    }
    match a.path.split_once('/') {
        Some((cluster, rest)) if !rest.is_empty() && !rest.contains('/') => Some((Some(cluster), rest)),
        None if !a.path.is_empty() => Some((None, a.path)),
        _ => None,
    }
}

/// A task definition reference: `family`, `family:revision` or a task definition ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskDefRef {
    pub family: String,
    pub revision: Option<i32>,
}

impl TaskDefRef {
    pub fn parse(s: &str) -> Option<Self> {
        let mut daemon = false;
        let body = if s.starts_with("arn:") {
            let a = Arn::parse(s)?;
            match a.kind {
                "task-definition" => {}
                // A daemon task definition runs as its runnable form (`crate::daemon`).
                "daemon-task-definition" => daemon = true,
                _ => return None,
            }
            a.path
        } else {
            s
        };
        let (family, revision) = match body.rsplit_once(':') {
            Some((f, r)) => (f, Some(r.parse::<i32>().ok().filter(|&r| r > 0)?)),
            None => (body, None),
        };
        if family.is_empty() || !crate::names::valid_name(family) {
            return None;
        }
        let family = if daemon { crate::daemon::runnable_family(family) } else { family.to_owned() };
        Some(TaskDefRef { family, revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_arns() {
        let a = Arn::parse("arn:aws:ecs:us-east-1:000000000000:task/c1/abc").unwrap();
        assert_eq!((a.region, a.account, a.kind, a.path), ("us-east-1", "000000000000", "task", "c1/abc"));
        assert!(Arn::parse("arn:aws:s3:::bucket").is_none());
        assert_eq!(cluster_name(None).unwrap(), "default");
        assert_eq!(cluster_name(Some("arn:aws:ecs:us-east-1:1:cluster/x")).unwrap(), "x");
        assert!(cluster_name(Some("arn:aws:ecs:us-east-1:1:service/x/y")).is_err());
        assert_eq!(member_id("task", "abc"), Some((None, "abc")));
        assert_eq!(member_id("task", "arn:aws:ecs:r:1:task/c/abc"), Some((Some("c"), "abc")));
        assert_eq!(member_id("task", "arn:aws:ecs:r:1:task/abc"), Some((None, "abc")));
        assert_eq!(member_id("task", "arn:aws:ecs:r:1:service/c/abc"), None);
        assert_eq!(
            TaskDefRef::parse("arn:aws:ecs:r:1:task-definition/web:3"),
            Some(TaskDefRef { family: "web".into(), revision: Some(3) })
        );
        assert_eq!(TaskDefRef::parse("web"), Some(TaskDefRef { family: "web".into(), revision: None }));
        assert_eq!(TaskDefRef::parse("web:0"), None);
        assert_eq!(TaskDefRef::parse("web:x"), None);
        assert_eq!(TaskDefRef::parse("we b"), None);
    }
}
