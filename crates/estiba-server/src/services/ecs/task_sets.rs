//! CreateTaskSet, DescribeTaskSets, UpdateTaskSet, DeleteTaskSet and
//! UpdateServicePrimaryTaskSet: the task sets of services with the EXTERNAL deployment
//! controller (`estiba_core::task_set`), each a document under
//! `ecs/<account>/<region>/task-sets/<cluster>/<service>/<N>`. The scheduler
//! (`controller::services`) runs their tasks.

use std::sync::Arc;

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::service as svc_rules;
use estiba_core::task::Launch;
use estiba_core::task_set::{self as rules, NewTaskSet};
use estiba_core::{arn, EcsError};
use estiba_store::{Compare, Txn};

use super::{active_cluster, cluster_for_write, json, put, put_tags, runnable_taskdef, Ctx, Result};
use crate::view::{Doc, State};
use crate::{keys, RandomIds, Server};

/// The service a task set call names (a name or an ARN, in the cluster named): its cluster's
/// name and its document.
fn service_doc<'a>(st: &'a State, cx: &Ctx, cluster: &str, service: &str) -> Result<(String, &'a Arc<Doc<Service>>)> {
    let (cluster, _) = active_cluster(st, cx, Some(cluster))?;
    let (c, name) = arn::member_id("service", service).ok_or_else(EcsError::service_not_found)?;
    if c.is_some_and(|c| c != cluster) {
        return Err(EcsError::service_not_found());
    }
    let d = st.services.get(&keys::service(&cx.scope, &cluster, name)).ok_or_else(EcsError::service_not_found)?;
    if svc_rules::status(&d.value) == svc_rules::INACTIVE {
        return Err(EcsError::service_not_found());
    }
    Ok((cluster, d))
}

/// The key of the task set a reference (id or ARN) names in the service.
fn task_set_key(cx: &Ctx, cluster: &str, service: &str, reference: &str) -> Option<String> {
    let (named, id) = rules::parse_ref(reference)?;
    if named.is_some_and(|(c, s)| c != cluster || s != service) {
        return None;
    }
    Some(keys::task_set(&cx.scope, cluster, service, id))
}

/// The service's task sets as Describe shows them (counts from their tasks).
pub(crate) fn shown_task_sets(st: &State, svc_key: &str, svc: &Service, with_tags: bool) -> Vec<TaskSet> {
    let Some((scope, cluster, name)) = keys::parse_service(svc_key) else { return vec![] };
    let cluster_key = keys::cluster(&scope, &cluster);
    let mut sets: Vec<TaskSet> = State::range(&st.task_sets, &keys::task_sets_of(&scope, &cluster, &name))
        .map(|d| shown(st, &cluster_key, d, svc, with_tags))
        .collect();
    // Newest first, as ECS lists deployments.
    sets.sort_by(|a, b| b.created_at.partial_cmp(&a.created_at).unwrap_or(std::cmp::Ordering::Equal));
    sets
}

fn shown(st: &State, cluster_key: &str, d: &Doc<TaskSet>, svc: &Service, with_tags: bool) -> TaskSet {
    let counts = st.deployment_counts(cluster_key, rules::id(&d.value));
    let mut t = rules::shown(&d.value, svc, counts);
    t.tags = with_tags.then(|| st.tags_of(&d.key).unwrap_or_default().to_vec());
    t
}

pub async fn create(s: &Server, cx: &Ctx, req: CreateTaskSetRequest) -> Result<Bytes> {
    let mut ids = RandomIds;
    let out = s
        .transact::<_, EcsError>(|st| {
            let mut txn = Txn::new();
            let (cluster, c) = cluster_for_write(st, cx, Some(&req.cluster), &mut txn)?;
            let (_, d) = service_doc(st, cx, &cluster, &req.service)?;
            rules::require_external(&d.value)?;
            let name = svc_rules::name(&d.value).to_owned();
            let td = runnable_taskdef(st, cx, &req.task_definition)?;
            let plan = super::launch_plan(
                st,
                cx,
                (&cluster, &c),
                req.launch_type,
                req.capacity_provider_strategy.as_deref(),
                &td.value,
            )?;
            let existing = State::range(&st.task_sets, &keys::task_sets_of(&cx.scope, &cluster, &name)).count();
            let n = NewTaskSet {
                req: &req,
                td: &td.value,
                launch: Launch { launch_type: plan.launch_type(), capacity_provider: None },
                existing,
            };
            let ts = rules::create(&cx.scope, &cluster, &d.value, n, &mut ids, cx.now)?;
            crate::targets::check_load_balancers(
                st,
                &cx.scope,
                req.load_balancers.as_deref().unwrap_or_default(),
                &td.value,
            )?;
            let registries = req.service_registries.as_deref().unwrap_or_default();
            crate::discovery::check_registries(st, &cx.scope, registries, &td.value)?;
            let key = keys::task_set(&cx.scope, &cluster, &name, rules::id(&ts));
            let tags = req.tags.clone().unwrap_or_default();
            txn.compares.push(Compare::mod_revision(&d.key, d.rev));
            txn.compares.push(Compare::mod_revision(&td.key, td.rev));
            txn.compares.push(Compare::absent(&key));
            txn.ops.push(put(&key, &ts));
            txn.ops.push(put_tags(&key, &tags));
            Ok((txn, TaskSet { tags: Some(tags), ..ts }))
        })
        .await?;
    Ok(json(&CreateTaskSetResponse { task_set: Some(out) }))
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeTaskSetsRequest) -> Result<Bytes> {
    let with_tags = req.include.as_ref().is_some_and(|i| i.contains(&TaskSetField::Tags));
    let st = s.view.read();
    let (cluster, d) = service_doc(&st, cx, &req.cluster, &req.service)?;
    if !svc_rules::is_external(&d.value) {
        return Err(rules::not_external());
    }
    let name = svc_rules::name(&d.value).to_owned();
    let cluster_key = keys::cluster(&cx.scope, &cluster);
    let mut resp = DescribeTaskSetsResponse { task_sets: Some(vec![]), failures: Some(vec![]) };
    match &req.task_sets {
        None => resp.task_sets = Some(shown_task_sets(&st, &d.key, &d.value, with_tags)),
        Some(refs) => {
            for r in refs {
                let found = task_set_key(cx, &cluster, &name, r).and_then(|k| st.task_sets.get(&k));
                match found {
                    Some(t) => resp.task_sets.as_mut().unwrap().push(shown(&st, &cluster_key, t, &d.value, with_tags)),
                    None => {
                        let arn =
                            if r.starts_with("arn:") { r.clone() } else { cx.scope.task_set_arn(&cluster, &name, r) };
                        resp.failures.as_mut().unwrap().push(super::missing(arn));
                    }
                }
            }
        }
    }
    Ok(json(&resp))
}

/// Reads the service and one of its task sets for a write, and writes the task set as `change`
/// leaves it (guarded by both revisions); answers it as Describe shows it.
async fn change_task_set(
    s: &Server,
    cx: &Ctx,
    cluster: &str,
    service: &str,
    task_set: &str,
    change: impl Fn(&mut TaskSet, &Service) -> Result<()>,
) -> Result<TaskSet> {
    s.transact::<_, EcsError>(|st| {
        let (cluster, d) = service_doc(st, cx, cluster, service)?;
        rules::require_external(&d.value)?;
        let name = svc_rules::name(&d.value);
        let key = task_set_key(cx, &cluster, name, task_set).ok_or_else(rules::not_found)?;
        let t = st.task_sets.get(&key).ok_or_else(rules::not_found)?;
        let mut ts = t.value.clone();
        change(&mut ts, &d.value)?;
        let txn = Txn::new()
            .when(Compare::mod_revision(&d.key, d.rev))
            .when(Compare::mod_revision(&key, t.rev))
            .then(put(&key, &ts));
        let doc = Doc { key: key.clone(), rev: 0, raw: Bytes::new(), value: ts };
        Ok((txn, shown(st, &keys::cluster(&cx.scope, &cluster), &doc, &d.value, false)))
    })
    .await
}

pub async fn update(s: &Server, cx: &Ctx, req: UpdateTaskSetRequest) -> Result<Bytes> {
    let out = change_task_set(s, cx, &req.cluster, &req.service, &req.task_set, |ts, svc| {
        rules::update_scale(ts, &req.scale, svc, cx.now)
    })
    .await?;
    Ok(json(&UpdateTaskSetResponse { task_set: Some(out) }))
}

pub async fn delete(s: &Server, cx: &Ctx, req: DeleteTaskSetRequest) -> Result<Bytes> {
    let force = req.force.unwrap_or(false);
    let out = change_task_set(s, cx, &req.cluster, &req.service, &req.task_set, |ts, svc| {
        rules::delete(ts, svc, force, cx.now)
    })
    .await?;
    Ok(json(&DeleteTaskSetResponse { task_set: Some(out) }))
}

pub async fn update_primary(s: &Server, cx: &Ctx, req: UpdateServicePrimaryTaskSetRequest) -> Result<Bytes> {
    let out = s
        .transact::<_, EcsError>(|st| {
            let (cluster, d) = service_doc(st, cx, &req.cluster, &req.service)?;
            rules::require_external(&d.value)?;
            let name = svc_rules::name(&d.value).to_owned();
            let wanted = task_set_key(cx, &cluster, &name, &req.primary_task_set).ok_or_else(rules::not_found)?;
            let docs: Vec<&Arc<Doc<TaskSet>>> =
                State::range(&st.task_sets, &keys::task_sets_of(&cx.scope, &cluster, &name)).collect();
            let id = docs.iter().find(|t| t.key == wanted).map(|t| rules::id(&t.value).to_owned());
            let id = id.ok_or_else(rules::not_found)?;
            let mut sets: Vec<TaskSet> = docs.iter().map(|t| t.value.clone()).collect();
            let mut svc = d.value.clone();
            let i = rules::set_primary(&mut svc, &mut sets, &id, cx.now)?;
            let mut txn = Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put(&d.key, &svc));
            for (doc, ts) in docs.iter().zip(&sets) {
                if &doc.value != ts {
                    txn.compares.push(Compare::mod_revision(&doc.key, doc.rev));
                    txn.ops.push(put(&doc.key, ts));
                }
            }
            let doc = Doc { key: docs[i].key.clone(), rev: 0, raw: Bytes::new(), value: sets[i].clone() };
            Ok((txn, shown(st, &keys::cluster(&cx.scope, &cluster), &doc, &svc, false)))
        })
        .await?;
    Ok(json(&UpdateServicePrimaryTaskSetResponse { task_set: Some(out) }))
}
