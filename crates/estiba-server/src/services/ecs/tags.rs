//! TagResource, UntagResource, ListTagsForResource for clusters, task definitions, tasks,
//! services, task sets, container instances, capacity providers, daemons and daemon task
//! definitions.

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::arn::{Arn, TaskDefRef};
use estiba_core::{daemon, tags, EcsError};
use estiba_store::{Compare, Txn};

use super::{json, put_tags, Ctx, Result};
use crate::view::State;
use crate::{keys, Server};

/// The store key of the resource an ARN names, checking that it exists.
fn resource_key(st: &State, cx: &Ctx, arn: &str) -> Result<String> {
    let invalid = || EcsError::invalid(format!("The ARN provided is invalid: {arn}"));
    let a = Arn::parse(arn).ok_or_else(invalid)?;
    if !a.in_scope(&cx.scope) {
        return Err(EcsError::resource_not_found("The specified resource could not be found."));
    }
    if a.kind == "task-set" {
        let Some((Some((cluster, service)), id)) = estiba_core::task_set::parse_ref(arn) else { return Err(invalid()) };
        let k = keys::task_set(&cx.scope, cluster, service, id);
        if !st.task_sets.contains_key(&k) {
            return Err(estiba_core::task_set::not_found());
        }
        return Ok(k);
    }
    let mut parts = a.path.split('/');
    let (first, second) = (parts.next().unwrap_or(""), parts.next());
    if parts.next().is_some() {
        return Err(invalid());
    }
    let s = &cx.scope;
    let (key, exists) = match (a.kind, second) {
        ("cluster", None) => {
            let k = keys::cluster(s, first);
            let ok = st.clusters.get(&k).is_some_and(|d| d.value.status.as_deref() == Some("ACTIVE"));
            if !ok {
                return Err(EcsError::cluster_not_found());
            }
            (k, true)
        }
        ("task-definition", None) => {
            let r = TaskDefRef::parse(arn).filter(|r| r.revision.is_some()).ok_or_else(invalid)?;
            let k = keys::taskdef(s, &r.family, r.revision.unwrap());
            let ok = st.taskdefs.contains_key(&k);
            (k, ok)
        }
        ("task", Some(id)) => {
            let k = keys::task(s, first, id);
            let ok = st.tasks.contains_key(&k);
            (k, ok)
        }
        ("service", Some(name)) => {
            let k = keys::service(s, first, name);
            let ok = st.services.contains_key(&k);
            (k, ok)
        }
        ("container-instance", Some(id)) => {
            let k = keys::instance(s, first, id);
            let ok = st.instances.contains_key(&k);
            (k, ok)
        }
        ("daemon", Some(name)) => {
            let ok = st
                .doc::<estiba_core::daemon::DaemonDoc>(
                    super::daemons::daemons_table(),
                    &daemon::daemon_key(s, first, name),
                )
                .is_some();
            (daemon::daemon_tagged_key(s, first, name), ok)
        }
        ("daemon-task-definition", None) => {
            let (family, rev) =
                daemon::parse_taskdef_ref(s, arn).and_then(|(f, r)| Some((f, r?))).ok_or_else(invalid)?;
            let ok = st
                .doc::<daemon::TaskDefDoc>(super::daemons::taskdefs_table(), &daemon::taskdef_key(s, &family, rev))
                .is_some();
            (daemon::taskdef_tagged_key(s, &family, rev), ok)
        }
        ("capacity-provider", None) => {
            if estiba_core::capacity::is_fargate(first) {
                return Err(EcsError::invalid("The FARGATE and FARGATE_SPOT capacity providers cannot be tagged."));
            }
            let k = keys::capacity_provider(s, first);
            let ok = st.capacity_providers.contains_key(&k);
            (k, ok)
        }
        _ => return Err(invalid()),
    };
    if !exists {
        return Err(EcsError::resource_not_found("The specified resource could not be found."));
    }
    Ok(key)
}

async fn change(s: &Server, cx: &Ctx, arn: &str, f: impl Fn(&mut Vec<Tag>) -> Result<()>) -> Result<()> {
    s.transact::<_, EcsError>(|st| {
        let key = resource_key(st, cx, arn)?;
        let tkey = keys::tags_of(&key);
        let (mut current, compare) = match st.tags.get(&tkey) {
            Some(d) => (d.value.clone(), Compare::mod_revision(&tkey, d.rev)),
            None => (vec![], Compare::absent(&tkey)),
        };
        f(&mut current)?;
        Ok((Txn::new().when(compare).then(put_tags(&key, &current)), ()))
    })
    .await
}

pub async fn tag(s: &Server, cx: &Ctx, req: TagResourceRequest) -> Result<Bytes> {
    change(s, cx, &req.resource_arn, |t| tags::merge(t, &req.tags)).await?;
    Ok(json(&TagResourceResponse {}))
}

pub async fn untag(s: &Server, cx: &Ctx, req: UntagResourceRequest) -> Result<Bytes> {
    change(s, cx, &req.resource_arn, |t| {
        tags::remove(t, &req.tag_keys);
        Ok(())
    })
    .await?;
    Ok(json(&UntagResourceResponse {}))
}

pub async fn list(s: &Server, cx: &Ctx, req: ListTagsForResourceRequest) -> Result<Bytes> {
    let st = s.view.read();
    let key = resource_key(&st, cx, &req.resource_arn)?;
    Ok(json(&ListTagsForResourceResponse { tags: Some(st.tags_of(&key).unwrap_or_default().to_vec()) }))
}
