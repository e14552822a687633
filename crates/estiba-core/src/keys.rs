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
//! | `task-protection/<cluster>/<task id>` | `ProtectedTask`: scale-in protection and its expiry |
//! | `task-sets/<cluster>/<service>/<N>` | `TaskSet` `ecs-svc/<N>` of a service with the EXTERNAL deployment controller |
//! | `traffic/<cluster>/<service>` | [`crate::traffic::Traffic`]: a blue/green, linear or canary service's traffic between its deployments |
//!
//! Nodes (machines that run tasks) are not per account; their keys use `-` for the account
//! and the region:
//!
//! | key | value |
//! |---|---|
//! | `ecs/-/-/nodes/<node id>` | [`crate::node::NodeStatus`] |
//! | `ecs/-/-/node-leases/<node id>` | [`crate::node::NodeLease`]: with etcd, the node is alive while this key, bound to a lease its heartbeats renew, exists |
//! | `ecs/-/-/claims/<node id>/<account>/<region>/<cluster>/<task id>` | [`crate::node::Claim`]: the node runs the task `ecs/<account>/<region>/tasks/<cluster>/<task id>` |
//! | `ecs/-/-/service-connect/vips` | [`crate::service_connect::Vips`]: every Service Connect client alias's virtual address (one document: addresses are shared by every node) |
//!
//! A node's claims are one prefix range ([`claims_of_node`]), so a node's work is listed and
//! watched without looking at anyone else's. Node ids hold no `/` ([`valid_node_id`]).
//! Before, claims lived beside their task (`ecs/<account>/<region>/claims/<cluster>/<task
//! id>`); [`migrated_claim`] says where such a claim moves.
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

pub fn service_revisions_of(s: &Scope, cluster: &str, service: &str) -> String {
    format!("ecs/{}/{}/service-revisions/{cluster}/{service}/", s.account, s.region)
}

/// `ecs/<account>/<region>/services/<cluster>/<name>` → (scope, cluster, name).
pub fn parse_service(key: &str) -> Option<(Scope, String, String)> {
    let mut p = key.splitn(6, '/');
    let (_, account, region, kind, cluster, name) = (p.next()?, p.next()?, p.next()?, p.next()?, p.next()?, p.next()?);
    (kind == "services").then(|| (Scope::new(account, region), cluster.to_owned(), name.to_owned()))
}

/// The scope, cluster and id of a task key (`ecs/<account>/<region>/tasks/<cluster>/<id>`).
pub fn parse_task(key: &str) -> Option<(Scope, &str, &str)> {
    let mut p = key.splitn(6, '/');
    let (_, account, region, kind, cluster, id) = (p.next()?, p.next()?, p.next()?, p.next()?, p.next()?, p.next()?);
    (kind == "tasks").then(|| (Scope::new(account, region), cluster, id))
}

/// The ARN of the task under a task key, `arn:aws:ecs:<region>:<account>:task/<cluster>/<id>`
/// (what [`Scope::task_arn`] forms), pieced together in one allocation: DescribeTasks and
/// the task-protection calls form one per task, and going through a [`Scope`] costs two more
/// allocations (its account and region) and a formatting pass each.
pub fn task_arn_of(key: &str) -> Option<String> {
    let mut p = key.splitn(6, '/');
    let (_, account, region, kind, cluster, id) = (p.next()?, p.next()?, p.next()?, p.next()?, p.next()?, p.next()?);
    if kind != "tasks" {
        return None;
    }
    let parts = ["arn:aws:ecs:", region, ":", account, ":task/", cluster, "/", id];
    let mut arn = String::with_capacity(parts.iter().map(|s| s.len()).sum());
    parts.iter().for_each(|s| arn.push_str(s));
    Some(arn)
}

pub fn traffic(s: &Scope, cluster: &str, service: &str) -> String {
    format!("ecs/{}/{}/traffic/{cluster}/{service}", s.account, s.region)
}

/// A task set (`ecs-svc/<N>`, or N alone) of a service.
pub fn task_set(s: &Scope, cluster: &str, service: &str, id: &str) -> String {
    let n = crate::task_set::number(id);
    format!("ecs/{}/{}/task-sets/{cluster}/{service}/{n}", s.account, s.region)
}

pub fn task_sets_of(s: &Scope, cluster: &str, service: &str) -> String {
    format!("ecs/{}/{}/task-sets/{cluster}/{service}/", s.account, s.region)
}

pub fn task_protection(s: &Scope, cluster: &str, task_id: &str) -> String {
    format!("ecs/{}/{}/task-protection/{cluster}/{task_id}", s.account, s.region)
}

/// The protection key of a task key: `ecs/a/r/tasks/c/id` → `ecs/a/r/task-protection/c/id`.
pub fn protection_of(task_key: &str) -> String {
    task_key.replacen("/tasks/", "/task-protection/", 1)
}

pub fn node(id: &str) -> String {
    format!("ecs/-/-/nodes/{id}")
}

pub const NODES_PREFIX: &str = "ecs/-/-/nodes/";

/// A node's liveness key with the etcd store ([`crate::node::NodeLease`]).
pub fn node_lease(id: &str) -> String {
    format!("ecs/-/-/node-leases/{id}")
}

/// The etcd election servers of one prefix campaign in: its keys are `leader/<lease>`, each
/// holding a server's URL; they are not documents of any service.
pub const ELECTION: &str = "leader";

/// The Service Connect VIPs document ([`crate::service_connect::Vips`]).
pub const SERVICE_CONNECT_VIPS: &str = "ecs/-/-/service-connect/vips";

pub const CLAIMS_PREFIX: &str = "ecs/-/-/claims/";

/// Whether `id` can name a node: not empty, no `/` (it is one segment of claim keys).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('/')
}

/// The claim of task `<cluster>/<task id>` in scope `s` for `node`.
pub fn claim(node: &str, s: &Scope, cluster: &str, task_id: &str) -> String {
    format!("{CLAIMS_PREFIX}{node}/{}/{}/{cluster}/{task_id}", s.account, s.region)
}

/// Every claim of `node`: `ecs/-/-/claims/<node>/`.
pub fn claims_of_node(node: &str) -> String {
    format!("{CLAIMS_PREFIX}{node}/")
}

/// The node and the task key of a claim key: `ecs/-/-/claims/n/a/r/c/id` → (`n`, `ecs/a/r/tasks/c/id`).
pub fn parse_claim(claim_key: &str) -> Option<(&str, String)> {
    let mut parts = claim_key.strip_prefix(CLAIMS_PREFIX)?.splitn(5, '/');
    let (node, account, region, cluster, id) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (!id.contains('/')).then(|| (node, format!("ecs/{account}/{region}/tasks/{cluster}/{id}")))
}

/// The task key of a claim key.
pub fn task_of_claim(claim_key: &str) -> Option<String> {
    parse_claim(claim_key).map(|(_, task)| task)
}

/// Where a claim of the old layout (`ecs/<account>/<region>/claims/<cluster>/<task id>`)
/// held by `node` moves; `None` for any other key, or a node no claim key can name.
pub fn migrated_claim(old_key: &str, node: &str) -> Option<String> {
    let mut parts = old_key.splitn(6, '/');
    let (ecs, account, region, kind, cluster, id) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (ecs == "ecs" && account != "-" && kind == "claims" && !id.contains('/') && valid_node_id(node))
        .then(|| format!("{CLAIMS_PREFIX}{node}/{account}/{region}/{cluster}/{id}"))
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
        assert_eq!(parse_task(&task(&s, "c", "x")), Some((s.clone(), "c", "x")));
        assert_eq!(parse_task(&service(&s, "c", "x")), None);
        assert_eq!(task_arn_of(&task(&s, "c", "x")), Some(s.task_arn("c", "x")));
        assert_eq!(task_arn_of(&service(&s, "c", "x")), None);
        assert_eq!(setting(&s, "arn:aws:iam::1:role/a", "n"), "ecs/1/r/settings/arn:aws:iam::1:role%2Fa/n");
    }

    #[test]
    fn claims_are_keyed_by_node() {
        let s = Scope::new("1", "r");
        let c = claim("n1", &s, "c", "x");
        assert_eq!(c, "ecs/-/-/claims/n1/1/r/c/x");
        assert!(c.starts_with(&claims_of_node("n1")));
        assert!(!c.starts_with(&claims_of_node("n")));
        assert_eq!(split(&c), Some(("claims", "n1/1/r/c/x")));
        assert_eq!(parse_claim(&c), Some(("n1", task(&s, "c", "x"))));
        assert_eq!(task_of_claim(&c), Some(task(&s, "c", "x")));
        assert_eq!(task_of_claim("ecs/1/r/claims/c/x"), None);
        assert_eq!(task_of_claim("ecs/-/-/claims/n1/1/r/c"), None);
        assert!(valid_node_id("host-1.example") && !valid_node_id("a/b") && !valid_node_id(""));
    }

    #[test]
    fn old_claims_move_under_their_node() {
        let s = Scope::new("1", "r");
        assert_eq!(migrated_claim("ecs/1/r/claims/c/x", "n1"), Some(claim("n1", &s, "c", "x")));
        assert_eq!(migrated_claim(&claim("n1", &s, "c", "x"), "n1"), None);
        assert_eq!(migrated_claim("ecs/1/r/tasks/c/x", "n1"), None);
        assert_eq!(migrated_claim("ecs/1/r/claims/c/x", "a/b"), None);
    }
}
