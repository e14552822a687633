//! Resolves a task's container `secrets` (SSM parameters and Secrets Manager secrets) and
//! `repositoryCredentials` for the node that runs it, when the node starts the task: the
//! in-process agent asks through [`ServerSecrets`], remote agents through the agent API
//! (`POST nodes/<node>/secrets`). A failure is the task's stopped reason, in ECS's words
//! (`ResourceInitializationError: unable to pull secrets or registry auth: ...`).
//!
//! May not: answer for a task that is not claimed by the asking node, or log values.

use std::sync::Arc;

use estiba_api::ecs::{ContainerDefinition, TaskDefinition};
use estiba_core::node::{RegistryAuth, SecretResolver, TaskSecrets, SECRETS_FAILURE};
use estiba_core::secretsmanager::{self as asm, ValueFrom};
use estiba_core::Scope;

use crate::services::{secretsmanager, ssm};
use crate::{keys, Server};

/// The in-process agent's way to its tasks' secrets.
pub struct ServerSecrets(pub Arc<Server>);

impl SecretResolver for ServerSecrets {
    fn resolve(&self, node: &str, task_key: &str) -> Result<TaskSecrets, String> {
        resolve(&self.0, node, task_key)
    }

    fn task_credentials(&self, node: &str, task_key: &str) -> Result<estiba_core::node::TaskCredentials, String> {
        crate::task_credentials::issue(&self.0, node, task_key, crate::now() as i64)
    }
}

/// Whether a container needs anything resolved at start.
pub fn needs_secrets(c: &ContainerDefinition) -> bool {
    c.secrets.as_ref().is_some_and(|s| !s.is_empty()) || c.repository_credentials.is_some()
}

/// The secrets of the task `task_key`, which `node` must run.
pub fn resolve(s: &Server, node: &str, task_key: &str) -> Result<TaskSecrets, String> {
    let (td, scope) = {
        let st = s.view.read();
        let claimed = st.claim(task_key).is_some_and(|c| c.value.node == node);
        let task = st
            .tasks
            .get(task_key)
            .filter(|_| claimed)
            .ok_or_else(|| format!("{SECRETS_FAILURE}the task {task_key} is not one node {node} runs"))?;
        let task = task.task();
        let arn = task.task_definition_arn.as_deref().unwrap_or_default();
        let parsed = estiba_core::arn::Arn::parse(arn);
        let r = estiba_core::arn::TaskDefRef::parse(arn);
        let (Some(parsed), Some(r)) = (parsed, r) else {
            return Err(format!("{SECRETS_FAILURE}the task's definition {arn} is not known"));
        };
        let scope = Scope::new(parsed.account, parsed.region);
        let key = keys::taskdef(&scope, &r.family, r.revision.unwrap_or_default());
        let td = st.taskdefs.get(&key).map(|d| d.value.clone());
        (td.ok_or_else(|| format!("{SECRETS_FAILURE}the task's definition {arn} is not known"))?, scope)
    };
    resolve_taskdef(s, &scope, &td, crate::now())
}

/// The secrets of a task definition's containers, read in `scope` (the task's account and
/// region; an ARN may name another region of the same account).
pub fn resolve_taskdef(s: &Server, scope: &Scope, td: &TaskDefinition, now: f64) -> Result<TaskSecrets, String> {
    let mut out = TaskSecrets::default();
    let containers = td.container_definitions.iter().flatten();
    // SSM parameters, read together as the agent's GetParameters call: every missing name is
    // listed in the one reason.
    let mut ssm_missing: Vec<String> = Vec::new();
    for c in containers.clone() {
        let name = c.name.clone().unwrap_or_default();
        for secret in c.secrets.iter().flatten() {
            let value = match asm::parse_value_from(&secret.value_from).map_err(|e| asm_failure(&e))? {
                ValueFrom::Ssm(param) => {
                    let (scope, param) = ssm_scope(scope, &param);
                    match ssm::resolve_parameters(s, &scope, std::slice::from_ref(&param)) {
                        Ok(mut v) => v.pop().map(|(_, v)| v).unwrap_or_default(),
                        Err(missing) => {
                            for m in missing {
                                if !ssm_missing.contains(&m) {
                                    ssm_missing.push(m);
                                }
                            }
                            continue;
                        }
                    }
                }
                ValueFrom::Asm { secret_id, json_key, stage, version_id } => {
                    let scope = arn_scope(scope, &secret_id);
                    let got = secretsmanager::resolve_secret(
                        s,
                        &scope,
                        &secret_id,
                        version_id.as_deref(),
                        stage.as_deref(),
                        now,
                    )
                    .map_err(|e| {
                        asm_failure(&format!(
                            "service call has been retried 1 time(s): failed to fetch secret {secret_id} from secrets manager: {}: {}",
                            e.code, e.message
                        ))
                    })?;
                    match json_key {
                        Some(k) => asm::json_key_value(&got.value, &k).map_err(|e| asm_failure(&e))?,
                        None => got.value,
                    }
                }
            };
            out.env.entry(name.clone()).or_default().push((secret.name.clone(), value));
        }
    }
    if !ssm_missing.is_empty() {
        return Err(format!(
            "{SECRETS_FAILURE}unable to retrieve secrets from ssm: service call has been retried 1 time(s): invalid ssm parameters: {}",
            ssm_missing.join(",")
        ));
    }
    for c in containers {
        let Some(rc) = &c.repository_credentials else { continue };
        let id = &rc.credentials_parameter;
        let scope = arn_scope(scope, id);
        // A secret Secrets Manager does not hold may be one of the node's own files
        // (`<data-dir>/secrets/<name>.json`): the node looks there.
        let Ok(got) = secretsmanager::resolve_secret(s, &scope, id, None, None, now) else { continue };
        let v: serde_json::Value = serde_json::from_str(&got.value).unwrap_or_default();
        match (v["username"].as_str(), v["password"].as_str()) {
            (Some(u), Some(p)) => {
                out.registry.insert(
                    c.name.clone().unwrap_or_default(),
                    RegistryAuth { username: u.to_owned(), password: p.to_owned() },
                );
            }
            _ => {
                return Err(asm_failure(&format!(
                    "the secret {id} for repositoryCredentials must be a JSON object with username and password"
                )))
            }
        }
    }
    Ok(out)
}

fn asm_failure(detail: &str) -> String {
    format!("{SECRETS_FAILURE}unable to retrieve secret from asm: {detail}")
}

/// An ARN of the task's own account may name another region.
fn arn_scope(scope: &Scope, id: &str) -> Scope {
    let parts: Vec<&str> = id.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, _, region, account, _] if *account == scope.account && !region.is_empty() => {
            Scope::new(*account, *region)
        }
        _ => scope.clone(),
    }
}

fn ssm_scope(scope: &Scope, param: &str) -> (Scope, String) {
    (arn_scope(scope, param), param.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_of_the_same_account_may_name_another_region() {
        let s = Scope::new("123456789012", "us-east-1");
        let other = arn_scope(&s, "arn:aws:ssm:eu-west-1:123456789012:parameter/x");
        assert_eq!((other.account.as_str(), other.region.as_str()), ("123456789012", "eu-west-1"));
        let foreign = arn_scope(&s, "arn:aws:ssm:eu-west-1:999999999999:parameter/x");
        assert_eq!(foreign.region, "us-east-1");
        assert_eq!(arn_scope(&s, "/plain/name").region, "us-east-1");
    }
}
