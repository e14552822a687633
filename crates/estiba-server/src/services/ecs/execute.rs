//! ExecuteCommand: ECS's checks on the task and container, then a session whose one-time
//! token and stream URL lead to this server's data channel ([`crate::exec`]).
//!
//! May not: start anything (the data channel does, on the task's node).

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::exec::ExecTarget;
use estiba_core::{arn, EcsError};

use super::{json, Ctx, Result};
use crate::exec::Exec;
use crate::{keys, Server};

/// ECS's answer when the task was not run with exec enabled or its agent is not running.
pub const NOT_ENABLED: &str = "The execute command failed because execute command was not enabled when the task was run or the execute command agent isn’t running. Wait and try again or run a new task with execute command enabled and try again.";

/// ECS's answer when the session cannot be set up.
pub const INTERNAL: &str = "The execute command failed due to an internal error. Try again later.";

pub async fn execute_command(s: &Server, cx: &Ctx, req: ExecuteCommandRequest) -> Result<Bytes> {
    if !req.interactive {
        return Err(EcsError::invalid("Interactive is the only mode supported currently."));
    }
    let id_part = req.task.rsplit('/').next().unwrap_or_default();
    if !req.task.starts_with("arn:") && id_part.len() != 32 && id_part.len() != 36 {
        return Err(EcsError::invalid("task length should be one of [32,36]"));
    }
    let command = estiba_api::session::split_command(&req.command)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| EcsError::invalid("command must be a command line with its quotes closed."))?;
    let cluster_ref = super::tasks::cluster_param(req.cluster.as_deref(), &req.task);
    let st = s.view.read();
    let cluster = arn::cluster_name(cluster_ref.as_deref())?;
    if !st.clusters.contains_key(&keys::cluster(&cx.scope, &cluster)) {
        return Err(EcsError::cluster_not_found());
    }
    let d = super::tasks::task_key(cx, &cluster, &req.task)
        .and_then(|k| st.tasks.get(&k))
        .ok_or_else(|| EcsError::invalid("The referenced task was not found."))?;
    let task = d.task();
    let running = task.last_status.as_deref() == Some("RUNNING") && task.desired_status.as_deref() == Some("RUNNING");
    if !task.enable_execute_command || !running {
        return Err(EcsError::invalid(NOT_ENABLED));
    }
    let containers = task.containers.as_deref().unwrap_or_default();
    let container = match req.container.as_deref() {
        Some(name) => containers.iter().find(|c| c.name.as_deref() == Some(name)).ok_or_else(|| {
            EcsError::invalid(format!(
                "The container {name} does not exist in the task {}.",
                task.task_arn.as_deref().unwrap_or_default()
            ))
        })?,
        None if containers.len() == 1 => &containers[0],
        None => {
            return Err(EcsError::invalid(
                "The task has more than one container: specify the container to run the command in.",
            ))
        }
    };
    let agent_running =
        container.managed_agents.iter().flatten().any(|a| {
            a.name == Some(ManagedAgentName::ExecuteCommandAgent) && a.last_status.as_deref() == Some("RUNNING")
        });
    if container.last_status.as_deref() != Some("RUNNING") || !agent_running {
        return Err(EcsError::invalid(NOT_ENABLED));
    }
    let node = st
        .claim(&d.key)
        .map(|c| c.value.node.clone())
        .filter(|n| s.exec.reaches(n, s.local_node.as_deref()))
        .ok_or_else(|| EcsError::new(ErrorCode::TargetNotConnectedException, INTERNAL))?;
    let task_arn = task.task_arn.clone().unwrap_or_default();
    let name = container.name.clone().unwrap_or_default();
    let target = ExecTarget {
        session_id: Exec::new_session_id(),
        node,
        task_id: estiba_core::task::task_id(&task).to_owned(),
        task_arn: task_arn.clone(),
        container: name.clone(),
        command,
    };
    let session_id = target.session_id.clone();
    let (url, token) = s.exec.start(&cx.scope.account, target);
    tracing::info!(session = %session_id, task = %task_arn, container = %name, "exec session started");
    Ok(json(&ExecuteCommandResponse {
        cluster_arn: Some(cx.scope.cluster_arn(&cluster)),
        container_arn: container.container_arn.clone(),
        container_name: Some(name),
        interactive: true,
        session: Some(Session { session_id: Some(session_id), stream_url: Some(url), token_value: Some(token) }),
        task_arn: Some(task_arn),
    }))
}
