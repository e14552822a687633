//! The store's key layout. Every ECS resource lives under `ecs/<account>/<region>/`:
//!
//! | key | value |
//! |---|---|
//! | `clusters/<name>` | `Cluster` |
//! | `families/<family>` | [`crate::view::Family`]: the last revision number handed out |
//! | `taskdefs/<family>/<revision, 10 digits>` | `TaskDefinition` |
//! | `tasks/<cluster>/<id>` | `Task` |
//! | `services/<cluster>/<name>` | `Service` |
//! | `instances/<cluster>/<id>` | `ContainerInstance` |
//! | `capacity-providers/<name>` | `CapacityProvider` |
//! | `settings/<principal>/<name>` | `Setting` |
//! | `service-deployments/<cluster>/<service>/<id>` | `ServiceDeployment` |
//! | `service-revisions/<cluster>/<service>/<n>` | `ServiceRevision` |
//! | `tags/<resource key without the scope>` | `[Tag]` |
//! | `claims/<cluster>/<task id>` | [`crate::node::Claim`]: the node that runs the task |
//!
//! Nodes (machines that run tasks) are not per account: `ecs/-/-/nodes/<node id>` holds a
//! [`crate::node::NodeStatus`].
//!
//! Values are the AWS wire shapes as JSON, without tags (tags live under `tags/` so tagging
//! never races with state changes and Describe calls can skip them).

use crate::Scope;

pub fn scope_prefix(s: &Scope) -> String {
    format!("ecs/{}/{}/", s.account, s.region)
}

pub fn cluster(s: &Scope, name: &str) -> String {
    format!("ecs/{}/{}/clusters/{name}", s.account, s.region)
}

pub fn family(s: &Scope, family: &str) -> String {
    format!("ecs/{}/{}/families/{family}", s.account, s.region)
}

pub fn taskdef(s: &Scope, family: &str, revision: i32) -> String {
    format!("ecs/{}/{}/taskdefs/{family}/{revision:010}", s.account, s.region)
}

pub fn taskdefs_of(s: &Scope, family: &str) -> String {
    format!("ecs/{}/{}/taskdefs/{family}/", s.account, s.region)
}

pub fn task(s: &Scope, cluster: &str, id: &str) -> String {
    format!("ecs/{}/{}/tasks/{cluster}/{id}", s.account, s.region)
}

pub fn tasks_of(s: &Scope, cluster: &str) -> String {
    format!("ecs/{}/{}/tasks/{cluster}/", s.account, s.region)
}

pub fn service(s: &Scope, cluster: &str, name: &str) -> String {
    format!("ecs/{}/{}/services/{cluster}/{name}", s.account, s.region)
}

pub fn services_of(s: &Scope, cluster: &str) -> String {
    format!("ecs/{}/{}/services/{cluster}/", s.account, s.region)
}

pub fn instance(s: &Scope, cluster: &str, id: &str) -> String {
    format!("ecs/{}/{}/instances/{cluster}/{id}", s.account, s.region)
}

pub fn instances_of(s: &Scope, cluster: &str) -> String {
    format!("ecs/{}/{}/instances/{cluster}/", s.account, s.region)
}

pub fn capacity_provider(s: &Scope, name: &str) -> String {
    format!("ecs/{}/{}/capacity-providers/{name}", s.account, s.region)
}

/// Principals are ARNs; `/` in them is escaped so the key keeps its shape.
pub fn setting(s: &Scope, principal: &str, name: &str) -> String {
    format!("ecs/{}/{}/settings/{}/{name}", s.account, s.region, principal.replace('%', "%25").replace('/', "%2F"))
}

pub fn settings_of(s: &Scope, principal: &str) -> String {
    format!("ecs/{}/{}/settings/{}/", s.account, s.region, principal.replace('%', "%25").replace('/', "%2F"))
}

pub fn service_deployment(s: &Scope, cluster: &str, service: &str, id: &str) -> String {
    format!("ecs/{}/{}/service-deployments/{cluster}/{service}/{id}", s.account, s.region)
}

pub fn service_deployments_of(s: &Scope, cluster: &str, service: &str) -> String {
    format!("ecs/{}/{}/service-deployments/{cluster}/{service}/", s.account, s.region)
}

pub fn service_revision(s: &Scope, cluster: &str, service: &str, n: &str) -> String {
    format!("ecs/{}/{}/service-revisions/{cluster}/{service}/{n}", s.account, s.region)
}

pub fn claim(s: &Scope, cluster: &str, task_id: &str) -> String {
    format!("ecs/{}/{}/claims/{cluster}/{task_id}", s.account, s.region)
}

pub fn node(id: &str) -> String {
    format!("ecs/-/-/nodes/{id}")
}

pub const NODES_PREFIX: &str = "ecs/-/-/nodes/";

/// The task key of a claim key.
pub fn task_of_claim(claim_key: &str) -> String {
    claim_key.replacen("/claims/", "/tasks/", 1)
}

/// The claim key of a task key: `ecs/a/r/tasks/c/id` → `ecs/a/r/claims/c/id`.
pub fn claim_of(task_key: &str) -> String {
    task_key.replacen("/tasks/", "/claims/", 1)
}

/// The tags key of a resource key: `ecs/a/r/tasks/c/id` → `ecs/a/r/tags/tasks/c/id`.
pub fn tags_of(resource_key: &str) -> String {
    let mut parts = resource_key.splitn(4, '/');
    let (ecs, account, region, rest) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    format!("{ecs}/{account}/{region}/tags/{rest}")
}

/// The kind segment of a key (`clusters`, `tasks`, ...) and what follows it.
pub fn split(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.splitn(5, '/');
    if parts.next()? != "ecs" {
        return None;
    }
    parts.next()?;
    parts.next()?;
    let kind = parts.next()?;
    Some((kind, parts.next().unwrap_or("")))
}

/// The cluster key a task, service or instance key belongs to.
pub fn cluster_of(key: &str) -> Option<String> {
    let mut parts = key.splitn(6, '/');
    let (ecs, account, region, _kind, cluster) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{ecs}/{account}/{region}/clusters/{cluster}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let s = Scope::new("1", "r");
        assert_eq!(taskdef(&s, "web", 3), "ecs/1/r/taskdefs/web/0000000003");
        assert_eq!(tags_of(&task(&s, "c", "x")), "ecs/1/r/tags/tasks/c/x");
        assert_eq!(split(&task(&s, "c", "x")), Some(("tasks", "c/x")));
        assert_eq!(cluster_of(&task(&s, "c", "x")).as_deref(), Some("ecs/1/r/clusters/c"));
        assert_eq!(setting(&s, "arn:aws:iam::1:role/a", "n"), "ecs/1/r/settings/arn:aws:iam::1:role%2Fa/n");
    }
}
