//! ECS's agent-facing operations: DiscoverPollEndpoint, SubmitTaskStateChange,
//! SubmitContainerStateChange, SubmitAttachmentStateChanges and UpdateContainerAgent, with
//! ECS's shapes. estiba's own agents use the agent API (`agent_api`); these serve tools and
//! agents that speak ECS's API, and apply state changes with the same rule
//! (`TaskStateChange::apply`: never backwards, what is not said is kept).

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::node::{ContainerStateChange as Change, ContainerStatus, TaskStateChange};
use estiba_core::task::{self, Status};
use estiba_core::EcsError;
use estiba_store::{Compare, Txn};

use super::instances::instance_key;
use super::tasks::{cluster_param, task_key};
use super::{active_cluster, json, put, Ctx, Result};
use crate::Server;

const ACK: &str = "ACK";

pub async fn discover_poll_endpoint(s: &Server, cx: &Ctx, req: DiscoverPollEndpointRequest) -> Result<Bytes> {
    if let (Some(ci), Some(_)) = (&req.container_instance, &req.cluster) {
        let st = s.view.read();
        let (cluster, _) = active_cluster(&st, cx, req.cluster.as_deref())?;
        let found = instance_key(cx, &cluster, ci).is_some_and(|k| st.instances.contains_key(&k));
        if !found {
            return Err(EcsError::invalid(format!("The referenced container instance {ci} was not found.")));
        }
    }
    // Agents poll, send telemetry and reach Service Connect at this server.
    let endpoint = format!("http://{}/", s.config.listen);
    Ok(json(&DiscoverPollEndpointResponse {
        endpoint: Some(endpoint.clone()),
        telemetry_endpoint: Some(endpoint.clone()),
        service_connect_endpoint: Some(endpoint),
    }))
}

fn status(s: Option<&str>, what: &str) -> Result<Option<Status>> {
    match s {
        None => Ok(None),
        Some(s) => Status::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .map(Some)
            .ok_or_else(|| EcsError::invalid(format!("{what} {s} is not a valid status."))),
    }
}

fn container_status(s: Option<&str>) -> Result<Option<ContainerStatus>> {
    match s {
        None => Ok(None),
        Some("PENDING") => Ok(Some(ContainerStatus::Pending)),
        Some("RUNNING") => Ok(Some(ContainerStatus::Running)),
        Some("STOPPED") => Ok(Some(ContainerStatus::Stopped)),
        Some(other) => Err(EcsError::invalid(format!("Container status {other} is not valid."))),
    }
}

fn change_of(c: &ContainerStateChange) -> Result<Change> {
    let name = c.container_name.clone().ok_or_else(|| EcsError::invalid("containerName is required."))?;
    Ok(Change {
        container_name: name,
        status: container_status(c.status.as_deref())?,
        exit_code: c.exit_code,
        reason: c.reason.clone(),
        runtime_id: c.runtime_id.clone(),
        image_digest: c.image_digest.clone(),
        health_status: None,
        network_bindings: c.network_bindings.clone(),
    })
}

/// Applies `change` to the task `task_ref` of `cluster` under a compare on the task; a change
/// without a status keeps the task's own.
async fn apply(s: &Server, cx: &Ctx, cluster: Option<&str>, task_ref: &str, mut change: TaskStateChange) -> Result<()> {
    let cluster_ref = cluster_param(cluster, task_ref);
    s.transact::<_, EcsError>(|st| {
        let (cluster, _) = active_cluster(st, cx, cluster_ref.as_deref())?;
        let not_found = || EcsError::invalid("The referenced task was not found.");
        let key = task_key(cx, &cluster, task_ref).ok_or_else(not_found)?;
        let d = st.tasks.get(&key).ok_or_else(not_found)?;
        let t = d.task();
        for c in &change.containers {
            if !t.containers.iter().flatten().any(|x| x.name.as_deref() == Some(c.container_name.as_str())) {
                return Err(EcsError::invalid(format!("The task has no container named {}.", c.container_name)));
            }
        }
        change.status.get_or_insert(task::last_status(&t));
        let (txn, _) = crate::task_state_write(st, &key, &change).ok_or_else(not_found)?;
        Ok((txn, ()))
    })
    .await
}

fn ack() -> Bytes {
    json(&SubmitTaskStateChangeResponse { acknowledgment: Some(ACK.into()) })
}

pub async fn submit_task_state_change(s: &Server, cx: &Ctx, req: SubmitTaskStateChangeRequest) -> Result<Bytes> {
    let task_ref = req.task.as_deref().ok_or_else(|| EcsError::invalid("task is required."))?;
    let mut change = TaskStateChange {
        status: status(req.status.as_deref(), "Task")?,
        pull_started_at: req.pull_started_at,
        pull_stopped_at: req.pull_stopped_at,
        execution_stopped_at: req.execution_stopped_at,
        ..Default::default()
    };
    for c in req.containers.iter().flatten() {
        change.containers.push(change_of(c)?);
    }
    if let Some(a) = req.attachments.as_ref().and_then(|a| a.first()) {
        change.attachment_status = Some(a.status.clone());
    }
    if change.status == Some(Status::Stopped) {
        change.stopped_at = Some(cx.now);
        change.execution_stopped_at.get_or_insert(cx.now);
        if let Some(reason) = &req.reason {
            change.stop = Some(estiba_core::node::TaskStop {
                stop_code: TaskStopCode::EssentialContainerExited,
                stopped_reason: reason.clone(),
            });
        }
    }
    apply(s, cx, req.cluster.as_deref(), task_ref, change).await?;
    Ok(ack())
}

pub async fn submit_container_state_change(
    s: &Server,
    cx: &Ctx,
    req: SubmitContainerStateChangeRequest,
) -> Result<Bytes> {
    let task_ref = req.task.as_deref().ok_or_else(|| EcsError::invalid("task is required."))?;
    let c = ContainerStateChange {
        container_name: req.container_name.clone(),
        exit_code: req.exit_code,
        network_bindings: req.network_bindings.clone(),
        reason: req.reason.clone(),
        runtime_id: req.runtime_id.clone(),
        status: req.status.clone(),
        ..Default::default()
    };
    let change = TaskStateChange { containers: vec![change_of(&c)?], ..Default::default() };
    apply(s, cx, req.cluster.as_deref(), task_ref, change).await?;
    Ok(json(&SubmitContainerStateChangeResponse { acknowledgment: Some(ACK.into()) }))
}

pub async fn submit_attachment_state_changes(
    s: &Server,
    cx: &Ctx,
    req: SubmitAttachmentStateChangesRequest,
) -> Result<Bytes> {
    if req.attachments.is_empty() {
        return Err(EcsError::invalid("attachments must not be empty."));
    }
    s.transact::<_, EcsError>(|st| {
        let (cluster, _) = active_cluster(st, cx, req.cluster.as_deref())?;
        let mut txn = Txn::new();
        for a in &req.attachments {
            let arn = a.attachment_arn.as_str();
            let tasks = crate::view::State::range(&st.tasks, &crate::keys::tasks_of(&cx.scope, &cluster));
            let holder = tasks.filter(|d| !d.value.stopped()).find(|d| {
                d.task().attachments.iter().flatten().any(|x| x.id.as_deref().is_some_and(|id| arn.ends_with(id)))
            });
            let d = holder.ok_or_else(|| EcsError::invalid(format!("The attachment {arn} was not found.")))?;
            let mut t = d.task().into_owned();
            for x in t.attachments.iter_mut().flatten() {
                if x.id.as_deref().is_some_and(|id| arn.ends_with(id)) {
                    x.status = Some(a.status.clone());
                }
            }
            t.version += 1;
            txn.compares.push(Compare::mod_revision(&d.key, d.rev));
            txn.ops.push(put(&d.key, &t));
        }
        Ok((txn, ()))
    })
    .await?;
    Ok(json(&SubmitAttachmentStateChangesResponse { acknowledgment: Some(ACK.into()) }))
}

pub async fn update_container_agent(s: &Server, cx: &Ctx, req: UpdateContainerAgentRequest) -> Result<Bytes> {
    let st = s.view.read();
    let (cluster, _) = active_cluster(&st, cx, req.cluster.as_deref())?;
    let id = &req.container_instance;
    let d = instance_key(cx, &cluster, id)
        .and_then(|k| st.instances.get(&k))
        .ok_or_else(|| EcsError::invalid(format!("The referenced container instance {id} was not found.")))?;
    // estiba's agent is the estiba binary itself: a node runs the server's version, and there
    // is nothing for the control plane to update it to.
    match d.value.version_info.as_ref().and_then(|v| v.agent_version.as_deref()) {
        None => Err(EcsError::new(
            estiba_api::ecs::ErrorCode::MissingVersionException,
            "Amazon ECS is unable to determine the current version of the Amazon ECS container agent on the container instance and does not have enough information to proceed with an update.",
        )),
        Some(_) => Err(EcsError::new(
            estiba_api::ecs::ErrorCode::NoUpdateAvailableException,
            "There is no update available for your Amazon ECS container agent.",
        )),
    }
}
