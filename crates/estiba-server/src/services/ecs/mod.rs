//! Amazon ECS (AWS JSON 1.1): the operation table, and what the handlers share.

use std::sync::Arc;

use bytes::Bytes;
use estiba_api::ecs::{Cluster, ErrorCode, Operation, TaskDefinition, TaskDefinitionStatus, MODEL};
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, DecodeError};
use estiba_core::arn::{self, TaskDefRef};
use estiba_core::{cluster, EcsError, Scope};
use estiba_store::{Compare, Op, Txn};
use serde::Serialize;

use super::{route, BoxFuture, Call, Input, Service};
use crate::keys;
use crate::view::{Doc, State};
use crate::Server;

mod agent;
mod capacity;
mod clusters;
pub(crate) mod daemons;
mod execute;
mod express;
mod instances;
mod pass_role;
mod services;
mod settings;
mod tags;
mod task_sets;
mod taskdefs;
mod tasks;

pub type Result<T, E = EcsError> = std::result::Result<T, E>;

pub use pass_role::passed_roles;
pub(crate) use task_sets::shown_task_sets;
pub(crate) use tasks::task_tags as tasks_tags;
pub(crate) use tasks::write_tasks as write_new_tasks;
pub use tasks::{Held, Reservations};

/// Builds and places a service's new tasks (the controller's entry into RunTask's logic).
#[allow(clippy::too_many_arguments)]
pub(crate) fn place_service_tasks(
    st: &State,
    cx: &Ctx,
    cluster: &str,
    td: &TaskDefinition,
    launches: Vec<estiba_core::task::Launch>,
    fixed_instances: Option<Vec<String>>,
    proto: &estiba_core::task::Spec<'_>,
    constraints: &[estiba_api::ecs::PlacementConstraint],
    strategies: &[estiba_api::ecs::PlacementStrategy],
    ids: &mut dyn estiba_core::Ids,
) -> Result<(Vec<estiba_api::ecs::Task>, Vec<estiba_api::ecs::Failure>)> {
    tasks::place_tasks(st, cx, cluster, td, launches, fixed_instances, proto, constraints, strategies, ids)
        .map(|p| (p.tasks, p.failures))
}

/// Who is calling and when, and which node runs Fargate tasks.
pub struct Ctx {
    pub scope: Scope,
    pub now: f64,
    /// This server's own node, which takes Fargate tasks when no other node has reported yet
    /// (right after the server starts, before its first heartbeat).
    pub node: Option<Arc<str>>,
    /// Which nodes reported within the node lease.
    pub liveness: Arc<crate::liveness::Liveness>,
    /// Other servers may write to the same state (etcd): placements on container instances
    /// are guarded in the store ([`tasks::guard_instances`]), not only by this server's
    /// reservations.
    pub shared: bool,
    /// The default VPC's CIDR (the subnets awsvpc tasks are placed in).
    pub vpc_cidr: ipnet::Ipv4Net,
    /// This request's hold on the server's placements not yet written
    /// ([`tasks::Reservations`]); released when the last clone goes.
    pub held: Option<Arc<tasks::Held>>,
}

impl Ctx {
    /// The context of a request or controller pass in `scope` at `now`, on `server`, holding
    /// its placements in `held`.
    pub fn of(server: &Server, scope: Scope, now: f64, held: Option<Arc<tasks::Held>>) -> Ctx {
        Ctx {
            scope,
            now,
            node: server.local_node.clone(),
            liveness: server.liveness.clone(),
            shared: server.peers.shared(),
            vpc_cidr: server.config.vpc_cidr,
            held,
        }
    }
}

/// The ECS service.
pub struct Ecs;

impl Service for Ecs {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(
        &'a self,
        s: &'a Server,
        call: Call,
        op: usize,
        input: Input,
    ) -> BoxFuture<'a, Result<Bytes, ApiError>> {
        Box::pin(async move {
            let cx = Ctx::of(s, call.scope, call.now, Some(Arc::new(tasks::Held::new(&s.reservations))));
            dispatch(s, &cx, Operation::ALL[op], input).await
        })
    }

    fn decode_error(&self, e: DecodeError, _: Protocol) -> ApiError {
        super::json_decode_error(e, ErrorCode::InvalidParameterException)
    }

    fn tables(&self) -> &'static [crate::view::TableDef] {
        &TABLES
    }
}

pub(crate) use express::TABLE as EXPRESS_TABLE;

/// The view tables of ECS documents kept outside `ecs/`: Express services, then daemons'
/// (`estiba_core::daemon`; read through `daemons::*_table`).
static TABLES: [crate::view::TableDef; 6] = {
    use crate::view::TableDef;
    use estiba_core::daemon as d;
    [
        TableDef::of::<estiba_core::express::ExpressDoc>("ecs-express/", estiba_core::express::SERVICES),
        TableDef::of::<d::TaskDefDoc>(d::PREFIX, d::TASKDEFS),
        TableDef::of::<d::FamilyDoc>(d::PREFIX, d::FAMILIES),
        TableDef::of::<d::DaemonDoc>(d::PREFIX, d::DAEMONS),
        TableDef::of::<d::RevisionDoc>(d::PREFIX, d::REVISIONS),
        TableDef::of::<d::DeploymentDoc>(d::PREFIX, d::DEPLOYMENTS),
    ]
};

async fn dispatch(s: &Server, cx: &Ctx, op: Operation, input: Input) -> Result<Bytes, ApiError> {
    let unsupported = |other: Operation| {
        ApiError::new(
            ErrorCode::UnsupportedFeatureException,
            format!("estiba does not support the {} operation yet.", other.name()),
        )
    };
    route! { &Ecs, s, cx, op, input, unsupported;
        CreateCluster => clusters::create,
        DescribeClusters => clusters::describe,
        ListClusters => clusters::list,
        UpdateCluster => clusters::update,
        UpdateClusterSettings => clusters::update_settings,
        PutClusterCapacityProviders => clusters::put_capacity_providers,
        DeleteCluster => clusters::delete,
        RegisterTaskDefinition => taskdefs::register,
        DescribeTaskDefinition => taskdefs::describe,
        DeregisterTaskDefinition => taskdefs::deregister,
        ListTaskDefinitions => taskdefs::list,
        ListTaskDefinitionFamilies => taskdefs::list_families,
        DeleteTaskDefinitions => taskdefs::delete,
        RunTask => tasks::run,
        StartTask => tasks::start,
        StopTask => tasks::stop,
        DescribeTasks => tasks::describe,
        ListTasks => tasks::list,
        ExecuteCommand => execute::execute_command,
        UpdateTaskProtection => tasks::update_protection,
        GetTaskProtection => tasks::get_protection,
        CreateService => services::create,
        UpdateService => services::update,
        DeleteService => services::delete,
        DescribeServices => services::describe,
        ListServices => services::list,
        ListServicesByNamespace => services::list_by_namespace,
        ListServiceDeployments => services::list_deployments,
        DescribeServiceDeployments => services::describe_deployments,
        DescribeServiceRevisions => services::describe_revisions,
        StopServiceDeployment => services::stop_deployment,
        ContinueServiceDeployment => services::continue_deployment,
        CreateTaskSet => task_sets::create,
        DescribeTaskSets => task_sets::describe,
        UpdateTaskSet => task_sets::update,
        DeleteTaskSet => task_sets::delete,
        UpdateServicePrimaryTaskSet => task_sets::update_primary,
        RegisterContainerInstance => instances::register,
        DeregisterContainerInstance => instances::deregister,
        DescribeContainerInstances => instances::describe,
        ListContainerInstances => instances::list,
        UpdateContainerInstancesState => instances::update_state,
        PutAttributes => instances::put_attributes,
        DeleteAttributes => instances::delete_attributes,
        ListAttributes => instances::list_attributes,
        CreateCapacityProvider => capacity::create,
        UpdateCapacityProvider => capacity::update,
        DeleteCapacityProvider => capacity::delete,
        DescribeCapacityProviders => capacity::describe,
        TagResource => tags::tag,
        UntagResource => tags::untag,
        ListTagsForResource => tags::list,
        CreateExpressGatewayService => express::create,
        DescribeExpressGatewayService => express::describe,
        UpdateExpressGatewayService => express::update,
        DeleteExpressGatewayService => express::delete,
        DiscoverPollEndpoint => agent::discover_poll_endpoint,
        SubmitTaskStateChange => agent::submit_task_state_change,
        SubmitContainerStateChange => agent::submit_container_state_change,
        SubmitAttachmentStateChanges => agent::submit_attachment_state_changes,
        UpdateContainerAgent => agent::update_container_agent,
        RegisterDaemonTaskDefinition => daemons::register_taskdef,
        DescribeDaemonTaskDefinition => daemons::describe_taskdef,
        ListDaemonTaskDefinitions => daemons::list_taskdefs,
        DeleteDaemonTaskDefinition => daemons::delete_taskdef,
        CreateDaemon => daemons::create,
        UpdateDaemon => daemons::update,
        DeleteDaemon => daemons::delete,
        DescribeDaemon => daemons::describe,
        ListDaemons => daemons::list,
        DescribeDaemonDeployments => daemons::describe_deployments,
        ListDaemonDeployments => daemons::list_deployments,
        DescribeDaemonRevisions => daemons::describe_revisions,
        PutAccountSetting => settings::put_setting_for,
        PutAccountSettingDefault => settings::put_default,
        ListAccountSettings => settings::list,
        DeleteAccountSetting => settings::delete,
    }
}

pub use super::json;

/// A List* response `{"<field>":["...",...],"nextToken":"..."}`, written from borrowed
/// strings (the hot List calls would otherwise copy every ARN once more).
pub fn list_json<'a>(field: &str, items: impl IntoIterator<Item = &'a str>, next_token: Option<&str>) -> Bytes {
    list_json_under(field, "", items, next_token)
}

/// [`list_json`] of items that share a `prefix` (an ARN's `arn:...:task/<cluster>/`, the items
/// the ids after it): no ARN is formed on its own.
pub fn list_json_under<'a>(
    field: &str,
    prefix: &str,
    items: impl IntoIterator<Item = &'a str>,
    next_token: Option<&str>,
) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":[");
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, &[prefix, s]);
    }
    out.push(b']');
    if let Some(t) = next_token {
        out.extend_from_slice(b",\"nextToken\":");
        push_json_str(&mut out, &[t]);
    }
    out.push(b'}');
    Bytes::from(out)
}

/// Writes the concatenation of `parts` as one JSON string. ARNs and tokens hold nothing JSON
/// escapes (control characters, `"`, `\`), so they are copied as they are; serde_json's
/// escaper writes the rest.
fn push_json_str(out: &mut Vec<u8>, parts: &[&str]) {
    let plain = |s: &str| s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if parts.iter().all(|s| plain(s)) {
        out.push(b'"');
        parts.iter().for_each(|s| out.extend_from_slice(s.as_bytes()));
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, &parts.concat()).expect("writing to a Vec");
    }
}

pub fn put<T: Serialize>(key: impl Into<String>, v: &T) -> Op {
    Op::put(key, json(v))
}

/// Puts a resource's tags, or deletes the tags key when there are none.
pub fn put_tags(resource_key: &str, tags: &[estiba_api::ecs::Tag]) -> Op {
    if tags.is_empty() {
        Op::delete(keys::tags_of(resource_key))
    } else {
        put(keys::tags_of(resource_key), &tags)
    }
}

/// Resolves a cluster reference to an ACTIVE cluster, or ClusterNotFoundException.
pub fn active_cluster<'a>(st: &'a State, cx: &Ctx, id: Option<&str>) -> Result<(String, &'a Arc<Doc<Cluster>>)> {
    let name = arn::cluster_name(id)?;
    match st.clusters.get(&keys::cluster(&cx.scope, &name)) {
        Some(d) if d.value.status.as_deref() == Some(cluster::ACTIVE) => Ok((name, d)),
        _ => Err(EcsError::cluster_not_found()),
    }
}

/// Like [`active_cluster`], for a write: the returned compare guards against the cluster
/// changing. The `default` cluster is not made on first use: ECS answers
/// `ClusterNotFoundException` until it is created.
pub fn cluster_for_write(st: &State, cx: &Ctx, id: Option<&str>, txn: &mut Txn) -> Result<(String, Cluster)> {
    let (name, d) = active_cluster(st, cx, id)?;
    txn.compares.push(Compare::mod_revision(&d.key, d.rev));
    Ok((name, d.value.clone()))
}

/// Resolves `family`, `family:revision` or a task definition ARN. A bare family means its
/// latest ACTIVE revision.
pub fn find_taskdef<'a>(st: &'a State, scope: &Scope, reference: &str) -> Option<&'a Arc<Doc<TaskDefinition>>> {
    let r = TaskDefRef::parse(reference)?;
    if reference.starts_with("arn:") {
        // A daemon task definition's runnable form is run by daemons only.
        if reference.contains(":daemon-task-definition/") {
            return None;
        }
        let a = arn::Arn::parse(reference)?;
        if !a.in_scope(scope) {
            return None;
        }
    }
    match r.revision {
        Some(rev) => st.taskdefs.get(&keys::taskdef(scope, &r.family, rev)),
        // Newest first: the latest ACTIVE revision is usually the last one.
        None => State::range(&st.taskdefs, &keys::taskdefs_of(scope, &r.family))
            .rev()
            .find(|d| d.value.status == Some(TaskDefinitionStatus::Active)),
    }
}

/// A task definition new tasks may use: it exists and is ACTIVE.
pub fn runnable_taskdef<'a>(st: &'a State, cx: &Ctx, reference: &str) -> Result<&'a Arc<Doc<TaskDefinition>>> {
    match find_taskdef(st, &cx.scope, reference) {
        Some(d) if d.value.status == Some(TaskDefinitionStatus::Active) => Ok(d),
        Some(_) => Err(EcsError::client(format!(
            "TaskDefinition is inactive: {reference}. Register a new revision or use an ACTIVE one."
        ))),
        None => Err(EcsError::client("TaskDefinition not found.")),
    }
}

/// How new tasks of `td` in the cluster launch: the request's launch type or capacity provider
/// strategy, else the cluster's default (`estiba_core::capacity::resolve_launch`).
pub fn launch_plan(
    st: &State,
    cx: &Ctx,
    (cluster, c): (&str, &Cluster),
    launch_type: Option<estiba_api::ecs::LaunchType>,
    strategy: Option<&[estiba_api::ecs::CapacityProviderStrategyItem]>,
    td: &TaskDefinition,
) -> Result<estiba_core::capacity::LaunchPlan> {
    estiba_core::capacity::resolve_launch(
        launch_type,
        strategy,
        c,
        estiba_core::taskdef::fargate_compatible(td),
        has_instances(st, cx, cluster),
    )
}

/// Whether the cluster has container instances that can take tasks.
pub fn has_instances(st: &State, cx: &Ctx, cluster: &str) -> bool {
    State::range(&st.instances, &keys::instances_of(&cx.scope, cluster))
        .any(|d| estiba_core::instance::is_registered(&d.value))
}

/// Failures for describe calls: unknown ids are reported, not raised.
pub fn missing(arn: String) -> estiba_api::ecs::Failure {
    estiba_api::ecs::Failure { arn: Some(arn), reason: Some("MISSING".into()), detail: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_json_copies_plain_strings_and_escapes_the_rest() {
        let out = list_json_under("taskArns", "arn:aws:ecs:r:1:task/c/", ["a1", "b\"2"], Some("tok\n"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["taskArns"], serde_json::json!(["arn:aws:ecs:r:1:task/c/a1", "arn:aws:ecs:r:1:task/c/b\"2"]));
        assert_eq!(v["nextToken"], "tok\n");
        let plain = list_json("clusterArns", ["x", "ü\u{7f}"], None);
        assert_eq!(&plain[..], "{\"clusterArns\":[\"x\",\"ü\u{7f}\"]}".as_bytes());
        assert_eq!(&list_json("f", [], None)[..], b"{\"f\":[]}");
    }
}
