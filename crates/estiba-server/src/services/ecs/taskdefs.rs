//! RegisterTaskDefinition, DescribeTaskDefinition, DeregisterTaskDefinition,
//! ListTaskDefinitions, ListTaskDefinitionFamilies, DeleteTaskDefinitions.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use estiba_api::ecs::*;
use estiba_core::arn::TaskDefRef;
use estiba_core::{page, taskdef, EcsError};
use estiba_store::{Compare, Txn};

use super::{find_taskdef, json, put, put_tags, Ctx, Result};
use crate::view::{Family, State};
use crate::{keys, Server};

/// ECS's limit on a task definition's size.
const MAX_TASKDEF_BYTES: usize = 64 * 1024;

pub async fn register(s: &Server, cx: &Ctx, req: RegisterTaskDefinitionRequest) -> Result<Bytes> {
    if json(&req.container_definitions).len() > MAX_TASKDEF_BYTES {
        return Err(EcsError::client("The task definition is larger than the 64 KiB ECS allows."));
    }
    if req.container_definitions.iter().any(|c| c.environment_files.as_ref().is_some_and(|f| !f.is_empty())) {
        environment_files_enabled(s)?;
    }
    let (td, tags) = s
        .transact::<_, EcsError>(|st| {
            let fkey = keys::family(&cx.scope, &req.family);
            let (last, compare) = match st.families.get(&fkey) {
                Some(d) => (d.value.last_revision, Compare::mod_revision(&fkey, d.rev)),
                None => (0, Compare::absent(&fkey)),
            };
            let revision = last + 1;
            let td = taskdef::register(&cx.scope, &req, revision, cx.now)?;
            let key = keys::taskdef(&cx.scope, &req.family, revision);
            let tags = req.tags.clone().unwrap_or_default();
            let txn = Txn::new()
                .when(compare)
                .then(put(&fkey, &Family { name: req.family.clone(), last_revision: revision }))
                .then(put(&key, &td))
                .then(put_tags(&key, &tags));
            Ok((txn, (td, tags)))
        })
        .await?;
    Ok(json(&RegisterTaskDefinitionResponse { task_definition: Some(td), tags: Some(tags) }))
}

/// Environment files are read from a directory the operator names; without one they are
/// refused (a path could name any file of the host).
pub(super) fn environment_files_enabled(s: &Server) -> Result<()> {
    if s.config.environment_files_dir.is_none() {
        return Err(EcsError::client(
            "environmentFiles are not enabled on this server: start estiba with --environment-files-dir DIR and put the files there (arn:aws:s3:::bucket/key is read as DIR/bucket/key).",
        ));
    }
    Ok(())
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeTaskDefinitionRequest) -> Result<Bytes> {
    let st = s.view.read();
    let Some(d) = find_taskdef(&st, &cx.scope, &req.task_definition) else {
        return Err(EcsError::task_definition_not_found());
    };
    let with_tags = req.include.as_ref().is_some_and(|i| i.contains(&TaskDefinitionField::Tags));
    // The stored document is the wire shape: splice it in without decoding.
    let mut out = BytesMut::with_capacity(d.raw.len() + 64);
    out.put_slice(b"{\"taskDefinition\":");
    out.put_slice(&d.raw);
    if with_tags {
        out.put_slice(b",\"tags\":");
        out.put_slice(&json(&st.tags_of(&d.key).unwrap_or_default()));
    }
    out.put_u8(b'}');
    Ok(out.freeze())
}

pub async fn deregister(s: &Server, cx: &Ctx, req: DeregisterTaskDefinitionRequest) -> Result<Bytes> {
    // `family:revision` or an ARN ending so; a revision that is not a number is refused as
    // ECS refuses it.
    let name = req.task_definition.rsplit_once("task-definition/").map_or(req.task_definition.as_str(), |(_, n)| n);
    match name.rsplit_once(':') {
        Some((_, rev)) if rev.parse::<i32>().is_ok_and(|r| r > 0) => {}
        Some((_, rev)) => return Err(EcsError::invalid(format!("Invalid revision number. Number: {rev}"))),
        None => {
            return Err(EcsError::client(
                "The task definition revision must be specified: pass family:revision or the task definition ARN.",
            ))
        }
    }
    let td = s
        .transact::<_, EcsError>(|st| {
            let Some(d) = find_taskdef(st, &cx.scope, &req.task_definition) else {
                return Err(EcsError::task_definition_not_found());
            };
            if d.value.status != Some(TaskDefinitionStatus::Active) {
                return Ok((Txn::new(), d.value.clone()));
            }
            let mut td = d.value.clone();
            td.status = Some(TaskDefinitionStatus::Inactive);
            td.deregistered_at = Some(cx.now);
            Ok((Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put(&d.key, &td)), td))
        })
        .await?;
    Ok(json(&DeregisterTaskDefinitionResponse { task_definition: Some(td) }))
}

/// The runnable form of a daemon task definition (`estiba_core::daemon`): not listed.
fn is_daemon_form(d: &crate::view::Doc<TaskDefinition>) -> bool {
    d.value.task_definition_arn.as_deref().is_some_and(|a| a.contains(":daemon-task-definition/"))
}

pub async fn list(s: &Server, cx: &Ctx, req: ListTaskDefinitionsRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 100, 100)?;
    let status = req.status.unwrap_or(TaskDefinitionStatus::Active);
    let desc = req.sort == Some(SortOrder::Desc);
    let st = s.view.read();
    let prefix = match &req.family_prefix {
        // ECS matches familyPrefix against the whole family name.
        Some(f) => keys::taskdefs_of(&cx.scope, f),
        None => format!("{}taskdefs/", keys::scope_prefix(&cx.scope)),
    };
    let mut items: Vec<(String, String)> = State::range(&st.taskdefs, &prefix)
        .filter(|d| d.value.status == Some(status) && !is_daemon_form(d))
        .map(|d| {
            let family = d.value.family.clone().unwrap_or_default();
            (format!("{family}\t{:010}", d.value.revision), d.value.task_definition_arn.clone().unwrap_or_default())
        })
        .collect();
    items.sort();
    if desc {
        items.reverse();
    }
    let p = page::paginate(items, |(k, _)| k.clone(), req.next_token.as_deref(), limit, desc)?;
    Ok(json(&ListTaskDefinitionsResponse {
        task_definition_arns: Some(p.items.into_iter().map(|(_, a)| a).collect()),
        next_token: p.next_token,
    }))
}

pub async fn list_families(s: &Server, cx: &Ctx, req: ListTaskDefinitionFamiliesRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 100, 100)?;
    let want = req.status.unwrap_or(TaskDefinitionFamilyStatus::Active);
    let st = s.view.read();
    let prefix = format!("{}taskdefs/{}", keys::scope_prefix(&cx.scope), req.family_prefix.as_deref().unwrap_or(""));
    // family → has an ACTIVE revision
    let mut families: BTreeMap<String, bool> = BTreeMap::new();
    for d in State::range(&st.taskdefs, &prefix) {
        if d.value.status == Some(TaskDefinitionStatus::DeleteInProgress) || is_daemon_form(d) {
            continue;
        }
        let active = d.value.status == Some(TaskDefinitionStatus::Active);
        *families.entry(d.value.family.clone().unwrap_or_default()).or_default() |= active;
    }
    let names = families.into_iter().filter(|(_, active)| match want {
        TaskDefinitionFamilyStatus::Active => *active,
        TaskDefinitionFamilyStatus::Inactive => !*active,
        TaskDefinitionFamilyStatus::All => true,
    });
    let p = page::paginate(names, |(n, _)| n.clone(), req.next_token.as_deref(), limit, false)?;
    Ok(json(&ListTaskDefinitionFamiliesResponse {
        families: Some(p.items.into_iter().map(|(n, _)| n).collect()),
        next_token: p.next_token,
    }))
}

pub async fn delete(s: &Server, cx: &Ctx, req: DeleteTaskDefinitionsRequest) -> Result<Bytes> {
    if req.task_definitions.is_empty() || req.task_definitions.len() > 10 {
        return Err(EcsError::invalid("Specify between 1 and 10 task definitions to delete."));
    }
    let resp = s
        .transact::<_, EcsError>(|st| {
            let mut txn = Txn::new();
            let mut resp = DeleteTaskDefinitionsResponse { task_definitions: Some(vec![]), failures: Some(vec![]) };
            for r in &req.task_definitions {
                let fail = |reason: &str| Failure { arn: Some(r.clone()), reason: Some(reason.into()), detail: None };
                let has_rev = TaskDefRef::parse(r).is_some_and(|t| t.revision.is_some());
                let found = if has_rev { find_taskdef(st, &cx.scope, r) } else { None };
                let Some(d) = found else {
                    resp.failures.as_mut().unwrap().push(fail("The specified task definition does not exist."));
                    continue;
                };
                match d.value.status {
                    Some(TaskDefinitionStatus::Active) => {
                        resp.failures.as_mut().unwrap().push(fail(
                            "The specified task definition is still in ACTIVE status. Deregister it, then delete it.",
                        ));
                    }
                    Some(TaskDefinitionStatus::DeleteInProgress) => {
                        resp.task_definitions.as_mut().unwrap().push(d.value.clone());
                    }
                    _ => {
                        let mut td = d.value.clone();
                        td.status = Some(TaskDefinitionStatus::DeleteInProgress);
                        td.delete_requested_at = Some(cx.now);
                        txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                        txn.ops.push(put(&d.key, &td));
                        resp.task_definitions.as_mut().unwrap().push(td);
                    }
                }
            }
            Ok((txn, resp))
        })
        .await?;
    Ok(json(&resp))
}
