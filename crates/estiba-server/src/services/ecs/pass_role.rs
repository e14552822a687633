//! The roles an ECS request hands to ECS (`iam:PassRole`, as IAM checks it for ECS): the task
//! and execution roles a task definition registers, the ones RunTask's overrides name, those
//! of the task definition a task, service or task set will run, and a service's `role`. The
//! front door ([`crate::front`]) asks the caller's access for `iam:PassRole` on each, so a key
//! that may run tasks cannot lend them a role its policy does not give it.
//!
//! May not: decide anything itself, or fail a request whose task definition it cannot find
//! (the operation then answers its own error).

use estiba_core::Scope;
use serde_json::Value;

use super::find_taskdef;
use crate::Server;

/// The role ARNs `operation` of input `v` passes, in `scope` (short role names made ARNs).
pub fn passed_roles(server: &Server, scope: &Scope, operation: &str, v: &Value) -> Vec<String> {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let mut named: Vec<String> = Vec::new();
    let mut of_taskdef = false;
    match operation {
        "RegisterTaskDefinition" | "RegisterDaemonTaskDefinition" => {
            named.extend(["taskRoleArn", "executionRoleArn"].iter().filter_map(|k| field(v, k)));
        }
        "CreateExpressGatewayService" | "UpdateExpressGatewayService" => {
            named.extend(
                ["taskRoleArn", "executionRoleArn", "infrastructureRoleArn"].iter().filter_map(|k| field(v, k)),
            );
        }
        "RunTask" | "StartTask" => {
            let o = v.get("overrides").unwrap_or(&Value::Null);
            named.extend(["taskRoleArn", "executionRoleArn"].iter().filter_map(|k| field(o, k)));
            of_taskdef = true;
        }
        "CreateService" | "UpdateService" | "CreateTaskSet" => {
            named.extend(field(v, "role"));
            of_taskdef = true;
        }
        _ => return Vec::new(),
    }
    if of_taskdef {
        if let Some(reference) = field(v, "taskDefinition") {
            let st = server.view.read();
            if let Some(td) = find_taskdef(&st, scope, &reference) {
                // Overrides replace the definition's roles.
                let o = v.get("overrides").unwrap_or(&Value::Null);
                if field(o, "taskRoleArn").is_none() {
                    named.extend(td.value.task_role_arn.clone().filter(|r| !r.is_empty()));
                }
                if field(o, "executionRoleArn").is_none() {
                    named.extend(td.value.execution_role_arn.clone().filter(|r| !r.is_empty()));
                }
            }
        }
    }
    let mut arns: Vec<String> = named.into_iter().map(|r| estiba_auth::session::role_arn(&r, &scope.account)).collect();
    arns.sort();
    arns.dedup();
    arns
}
