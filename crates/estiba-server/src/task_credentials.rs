//! Temporary credentials for tasks' roles (`taskRoleArn`, from the task's overrides or its
//! definition): issued to the node that runs the task, which serves them to the task's own
//! containers at 169.254.170.2 (`estiba_agent::credentials`). The in-process agent asks
//! through `task_secrets::ServerSecrets`, remote agents through the agent API
//! (`POST nodes/<node>/credentials`). The keys are stateless session keys
//! ([`estiba_auth::session`]) acting as the role, in the role's account, for [`LIFETIME`];
//! the agent asks again before they run out, and old keys stay valid until their expiry.
//!
//! The execution role (`executionRoleArn`) is accepted in task definitions but never issued:
//! estiba's agent pulls images and reads secrets through its server, not with it.
//!
//! May not: issue for a task the asking node does not run, for a stopped task, for a role
//! of another account than the task's or, with a credentials file, for a role it does not
//! declare; log secrets or tokens.

use estiba_core::node::TaskCredentials;

use crate::{keys, Server};

/// How long task credentials last (ECS's documented default was 6 hours).
pub const LIFETIME: i64 = 6 * 3600;

/// The credentials of the task role of `task_key`, which `node` must run, at `now`.
pub fn issue(s: &Server, node: &str, task_key: &str, now: i64) -> Result<TaskCredentials, String> {
    let (role_arn, task_account, task_id) = {
        let st = s.view.read();
        let claimed = st.claim(task_key).is_some_and(|c| c.value.node == node);
        let task = st
            .tasks
            .get(task_key)
            .filter(|_| claimed)
            .ok_or_else(|| format!("the task {task_key} is not one node {node} runs"))?;
        let task = task.task();
        if task.last_status.as_deref() == Some("STOPPED") {
            return Err(format!("the task {task_key} has stopped"));
        }
        let arn = task.task_definition_arn.as_deref().unwrap_or_default();
        let parsed = estiba_core::arn::Arn::parse(arn);
        let r = estiba_core::arn::TaskDefRef::parse(arn);
        let (Some(parsed), Some(r)) = (parsed, r) else {
            return Err(format!("the task's definition {arn} is not known"));
        };
        let scope = estiba_core::Scope::new(parsed.account, parsed.region);
        let td_role = st
            .taskdefs
            .get(&keys::taskdef(&scope, &r.family, r.revision.unwrap_or_default()))
            .and_then(|d| d.value.task_role_arn.clone());
        let role = task.overrides.as_ref().and_then(|o| o.task_role_arn.clone()).or(td_role);
        let role = role.filter(|r| !r.is_empty()).ok_or_else(|| format!("the task {task_key} has no task role"))?;
        let id = estiba_core::task::task_id(&task).to_owned();
        // ECS takes a role's short name too.
        (estiba_auth::session::role_arn(&role, parsed.account), parsed.account.to_string(), id)
    };
    let Some(role_account) = estiba_auth::session::role_account(&role_arn) else {
        return Err(format!("the task role {role_arn} is not a role ARN (arn:aws:iam::<account>:role/<name>)"));
    };
    if role_account != task_account {
        return Err(format!("the task role {role_arn} is not of the task's account {task_account}"));
    }
    if let Some(creds) = &s.credentials {
        if creds.keys().role(&role_arn).is_none() {
            return Err(format!("the task role {role_arn} is not declared in the credentials file ([role NAME])"));
        }
    }
    let lifetime = s.test_only_session_seconds.unwrap_or(LIFETIME);
    let k = s.sessions.issue(role_account, &role_arn, &task_id, None, now + lifetime).map_err(|e| e.to_string())?;
    tracing::debug!(task = task_key, node, role = %role_arn, key = %k.access_key, "task credentials issued");
    Ok(TaskCredentials {
        role_arn,
        access_key_id: k.access_key,
        secret_access_key: k.secret,
        token: k.token,
        expiration: k.expires,
    })
}
