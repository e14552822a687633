//! RegisterContainerInstance, DeregisterContainerInstance, DescribeContainerInstances,
//! ListContainerInstances, UpdateContainerInstancesState, PutAttributes, DeleteAttributes,
//! ListAttributes.

use std::collections::BTreeMap;

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::instance::{self, Queried};
use estiba_core::{arn, page, placement, query, task, EcsError};
use estiba_store::{Compare, Op, Txn};

use super::{active_cluster, cluster_for_write, json, put, put_tags, Ctx, Result};
use crate::view::{Doc, State};
use crate::{keys, RandomIds, Server};

fn not_found(id: &str) -> EcsError {
    EcsError::invalid(format!("The referenced container instance {id} was not found."))
}

pub(super) fn instance_key(cx: &Ctx, cluster: &str, id: &str) -> Option<String> {
    let (c, id) = arn::member_id("container-instance", id)?;
    if c.is_some_and(|c| c != cluster) {
        return None;
    }
    Some(keys::instance(&cx.scope, cluster, id))
}

/// An instance as Describe shows it: task counts and remaining resources filled in.
fn shown(st: &State, cx: &Ctx, cluster: &str, d: &Doc<ContainerInstance>, with_tags: bool) -> ContainerInstance {
    let mut ci = d.value.clone();
    let arn = ci.container_instance_arn.clone().unwrap_or_default();
    // What its live tasks hold, from the view's index of instances.
    let slot = st.hosts(&keys::cluster(&cx.scope, cluster)).and_then(|h| h.get(&arn));
    let used = slot.map_or(&placement::NO_USAGE, |s| &s.used);
    ci.running_tasks_count = used.running as i32;
    ci.pending_tasks_count = used.pending as i32;
    let reg = instance::registered_capacity(&ci);
    let mut ports = reg.ports;
    ports.extend(used.ports.iter().copied());
    ci.remaining_resources = Some(instance::remaining_resources(reg.cpu - used.cpu, reg.memory - used.memory, &ports));
    ci.tags = with_tags.then(|| st.tags_of(&d.key).unwrap_or_default().to_vec());
    ci
}

pub async fn register(s: &Server, cx: &Ctx, req: RegisterContainerInstanceRequest) -> Result<Bytes> {
    let mut ids = RandomIds;
    let out = s
        .transact::<_, EcsError>(|st| {
            let mut txn = Txn::new();
            let (cluster, _) = cluster_for_write(st, cx, req.cluster.as_deref(), &mut txn)?;
            let existing = match &req.container_instance_arn {
                None => None,
                Some(a) => {
                    let key = instance_key(cx, &cluster, a).ok_or_else(|| not_found(a))?;
                    let d = st.instances.get(&key).ok_or_else(|| not_found(a))?;
                    txn.compares.push(Compare::mod_revision(&key, d.rev));
                    Some(d.value.clone())
                }
            };
            let ci = instance::register(&cx.scope, &cluster, &req, existing.as_ref(), &mut ids, cx.now)?;
            let key = keys::instance(&cx.scope, &cluster, instance::id_of(&ci));
            if existing.is_none() {
                txn.compares.push(Compare::absent(&key));
            }
            let tags = req.tags.clone().unwrap_or_default();
            txn.ops.push(put(&key, &ci));
            if existing.is_none() || !tags.is_empty() {
                txn.ops.push(put_tags(&key, &tags));
            }
            let mut out = ci;
            out.tags = Some(tags);
            Ok((txn, out))
        })
        .await?;
    Ok(json(&RegisterContainerInstanceResponse { container_instance: Some(out) }))
}

/// The write that stops task `t` of an instance deregistered with `force`.
fn force_stop(st: &State, cx: &Ctx, t: &Doc<crate::view::TaskFacts>) -> Txn {
    let mut task = t.task().into_owned();
    task::request_stop(&mut task, TaskStopCode::TerminationNotice, "Container instance deregistration forced by user");
    if !crate::controller::is_claimed(st, &t.key) {
        task::stop_unstarted(&mut task, cx.now);
    }
    let mut txn = Txn::new().when(Compare::mod_revision(&t.key, t.rev)).then(put(&t.key, &task));
    txn.ops.extend(crate::stop_ops(st, &t.key, cx.now));
    txn
}

pub async fn deregister(s: &Server, cx: &Ctx, req: DeregisterContainerInstanceRequest) -> Result<Bytes> {
    if req.force.unwrap_or(false) {
        // Many tasks on the instance may not fit one transaction with it: they are asked to
        // stop first, in batches guarded by the instance's revision (ECS stops them one by one
        // too; a crash leaves some stopping and the instance registered, and a retry finishes).
        let limits = s.txn_limits();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let txn = {
                let st = s.view.read();
                let Some((cluster, _)) = active_cluster(&st, cx, req.cluster.as_deref()).ok() else { break };
                let Some(key) = instance_key(cx, &cluster, &req.container_instance) else { break };
                let Some(d) = st.instances.get(&key) else { break };
                let arn = d.value.container_instance_arn.clone().unwrap_or_default();
                let stops: Vec<Txn> = State::range(&st.tasks, &keys::tasks_of(&cx.scope, &cluster))
                    .filter(|t| t.value.container_instance_arn() == Some(arn.as_str()))
                    .filter(|t| !t.value.stopped() && !t.value.desired_stopped())
                    .map(|t| force_stop(&st, cx, t))
                    .collect();
                let mut batch = estiba_store::BoundedTxn::new(limits);
                // Room for the instance's own compare and write.
                batch.add(Txn::new().when(Compare::mod_revision(&key, d.rev)).then(Op::delete(&key)));
                for g in stops {
                    batch.add(g);
                }
                if !batch.left_over() {
                    break;
                }
                let mut batch = estiba_store::BoundedTxn::new(limits);
                batch.add(Txn::new().when(Compare::mod_revision(&key, d.rev)));
                for t in State::range(&st.tasks, &keys::tasks_of(&cx.scope, &cluster))
                    .filter(|t| t.value.container_instance_arn() == Some(arn.as_str()))
                    .filter(|t| !t.value.stopped() && !t.value.desired_stopped())
                {
                    if !batch.add(force_stop(&st, cx, t)) {
                        break;
                    }
                }
                batch.into_txn()
            };
            if !s.commit(txn).await? {
                if std::time::Instant::now() > deadline {
                    return Err(crate::WriteError::Conflicts.into());
                }
                s.catch_up().await;
            }
        }
    }
    let out = s
        .transact::<_, EcsError>(|st| {
            let (cluster, _) = active_cluster(st, cx, req.cluster.as_deref())?;
            let key = instance_key(cx, &cluster, &req.container_instance)
                .ok_or_else(|| not_found(&req.container_instance))?;
            let d = st.instances.get(&key).ok_or_else(|| not_found(&req.container_instance))?;
            if instance::status(&d.value) == "INACTIVE" {
                return Err(not_found(&req.container_instance));
            }
            let arn = d.value.container_instance_arn.clone().unwrap_or_default();
            let on_it: Vec<_> = State::range(&st.tasks, &keys::tasks_of(&cx.scope, &cluster))
                .filter(|t| t.value.container_instance_arn() == Some(arn.as_str()) && !t.value.stopped())
                .collect();
            let mut txn = Txn::new().when(Compare::mod_revision(&key, d.rev));
            if !on_it.is_empty() {
                if !req.force.unwrap_or(false) {
                    return Err(EcsError::invalid("Found running tasks on the instance."));
                }
                for t in on_it.into_iter().filter(|t| !t.value.desired_stopped()) {
                    let g = force_stop(st, cx, t);
                    txn.compares.extend(g.compares);
                    txn.ops.extend(g.ops);
                }
            }
            let mut ci = d.value.clone();
            ci.status = Some("INACTIVE".into());
            ci.agent_connected = false;
            ci.version += 1;
            txn.ops.push(put(&key, &ci));
            Ok((txn, ci))
        })
        .await?;
    Ok(json(&DeregisterContainerInstanceResponse { container_instance: Some(out) }))
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeContainerInstancesRequest) -> Result<Bytes> {
    if req.container_instances.is_empty() || req.container_instances.len() > 100 {
        return Err(EcsError::invalid("Specify between 1 and 100 container instances to describe."));
    }
    let with_tags = req.include.as_ref().is_some_and(|i| i.contains(&ContainerInstanceField::Tags));
    let st = s.view.read();
    let (cluster, _) = active_cluster(&st, cx, req.cluster.as_deref())?;
    let mut resp = DescribeContainerInstancesResponse { container_instances: Some(vec![]), failures: Some(vec![]) };
    for id in &req.container_instances {
        match instance_key(cx, &cluster, id).and_then(|k| st.instances.get(&k)) {
            Some(d) => resp.container_instances.as_mut().unwrap().push(shown(&st, cx, &cluster, d, with_tags)),
            None => resp.failures.as_mut().unwrap().push(super::missing(if id.starts_with("arn:") {
                id.clone()
            } else {
                cx.scope.container_instance_arn(&cluster, id)
            })),
        }
    }
    Ok(json(&resp))
}

pub async fn list(s: &Server, cx: &Ctx, req: ListContainerInstancesRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 100, 100)?;
    let filter = req.filter.as_deref().map(query::parse).transpose()?;
    let st = s.view.read();
    let (cluster, _) = active_cluster(&st, cx, req.cluster.as_deref())?;
    let hosts = st.hosts(&keys::cluster(&cx.scope, &cluster));
    let matches = State::range(&st.instances, &keys::instances_of(&cx.scope, &cluster)).filter(|d| {
        let status = instance::status(&d.value);
        let status_ok = match req.status {
            Some(want) => status == want.as_str(),
            None => status != "INACTIVE",
        };
        status_ok
            && filter.as_ref().is_none_or(|e| {
                let arn = d.value.container_instance_arn.as_deref().unwrap_or("");
                let used = hosts.and_then(|h| h.get(arn)).map_or(&placement::NO_USAGE, |s| &s.used);
                query::eval(e, &Queried { ci: &d.value, used, added: None })
            })
    });
    let p = page::paginate(matches, |d| d.key.as_str(), req.next_token.as_deref(), limit, false)?;
    let arns = p.items.iter().filter_map(|d| d.value.container_instance_arn.as_deref());
    Ok(super::list_json("containerInstanceArns", arns, p.next_token.as_deref()))
}

pub async fn update_state(s: &Server, cx: &Ctx, req: UpdateContainerInstancesStateRequest) -> Result<Bytes> {
    if !matches!(req.status, ContainerInstanceStatus::Active | ContainerInstanceStatus::Draining) {
        return Err(EcsError::invalid("Container instances can only be set to ACTIVE or DRAINING."));
    }
    if req.container_instances.is_empty() || req.container_instances.len() > 10 {
        return Err(EcsError::invalid("Specify between 1 and 10 container instances."));
    }
    let resp = s
        .transact::<_, EcsError>(|st| {
            let (cluster, _) = active_cluster(st, cx, req.cluster.as_deref())?;
            let mut txn = Txn::new();
            let mut resp =
                UpdateContainerInstancesStateResponse { container_instances: Some(vec![]), failures: Some(vec![]) };
            for id in &req.container_instances {
                let found = instance_key(cx, &cluster, id).and_then(|k| st.instances.get(&k));
                match found {
                    Some(d) if instance::is_registered(&d.value) => {
                        let mut ci = d.value.clone();
                        if instance::status(&ci) != req.status.as_str() {
                            ci.status = Some(req.status.as_str().into());
                            ci.version += 1;
                            txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                            txn.ops.push(put(&d.key, &ci));
                        }
                        let doc = Doc { key: d.key.clone(), rev: d.rev, raw: Bytes::new(), value: ci };
                        resp.container_instances.as_mut().unwrap().push(shown(st, cx, &cluster, &doc, false));
                    }
                    _ => resp.failures.as_mut().unwrap().push(super::missing(if id.starts_with("arn:") {
                        id.clone()
                    } else {
                        cx.scope.container_instance_arn(&cluster, id)
                    })),
                }
            }
            Ok((txn, resp))
        })
        .await?;
    Ok(json(&resp))
}

/// Attributes grouped by the container instance they target.
type ByTarget<'a> = BTreeMap<String, (&'a std::sync::Arc<Doc<ContainerInstance>>, Vec<Attribute>)>;

/// Groups attributes by the instance they target; every target must exist.
fn by_target<'a>(st: &'a State, cx: &Ctx, cluster: &str, attrs: &[Attribute]) -> Result<ByTarget<'a>> {
    if attrs.is_empty() || attrs.len() > 10 {
        return Err(EcsError::invalid("Specify between 1 and 10 attributes."));
    }
    let mut out: ByTarget<'a> = BTreeMap::new();
    for a in attrs {
        let Some(target) = a.target_id.as_deref() else {
            return Err(EcsError::invalid(format!(
                "Attribute '{}' needs a targetId: the container instance id or ARN.",
                a.name
            )));
        };
        let d = instance_key(cx, cluster, target).and_then(|k| st.instances.get(&k)).ok_or_else(|| {
            EcsError::new(
                ErrorCode::TargetNotFoundException,
                format!("Could not find the target {target} in cluster {cluster}."),
            )
        })?;
        out.entry(d.key.clone()).or_insert((d, vec![])).1.push(a.clone());
    }
    Ok(out)
}

pub async fn put_attributes(s: &Server, cx: &Ctx, req: PutAttributesRequest) -> Result<Bytes> {
    for a in &req.attributes {
        instance::validate_attribute(a)?;
    }
    let attrs = s
        .transact::<_, EcsError>(|st| {
            let (cluster, _) = active_cluster(st, cx, req.cluster.as_deref())?;
            let mut txn = Txn::new();
            for (key, (d, attrs)) in by_target(st, cx, &cluster, &req.attributes)? {
                let mut ci = d.value.clone();
                instance::put_attributes(&mut ci, &attrs)?;
                txn.compares.push(Compare::mod_revision(&key, d.rev));
                txn.ops.push(put(&key, &ci));
            }
            Ok((txn, req.attributes.clone()))
        })
        .await?;
    Ok(json(&PutAttributesResponse { attributes: Some(attrs) }))
}

pub async fn delete_attributes(s: &Server, cx: &Ctx, req: DeleteAttributesRequest) -> Result<Bytes> {
    let attrs = s
        .transact::<_, EcsError>(|st| {
            let (cluster, _) = active_cluster(st, cx, req.cluster.as_deref())?;
            let mut txn = Txn::new();
            for (key, (d, attrs)) in by_target(st, cx, &cluster, &req.attributes)? {
                let mut ci = d.value.clone();
                instance::delete_attributes(&mut ci, &attrs);
                txn.compares.push(Compare::mod_revision(&key, d.rev));
                txn.ops.push(put(&key, &ci));
            }
            Ok((txn, req.attributes.clone()))
        })
        .await?;
    Ok(json(&DeleteAttributesResponse { attributes: Some(attrs) }))
}

pub async fn list_attributes(s: &Server, cx: &Ctx, req: ListAttributesRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 100, 100)?;
    if req.attribute_value.is_some() && req.attribute_name.is_none() {
        return Err(EcsError::invalid("attributeValue can only be used together with attributeName."));
    }
    let st = s.view.read();
    let (cluster, _) = active_cluster(&st, cx, req.cluster.as_deref())?;
    let mut all = Vec::new();
    for d in State::range(&st.instances, &keys::instances_of(&cx.scope, &cluster)) {
        if !instance::is_registered(&d.value) {
            continue;
        }
        for a in d.value.attributes.iter().flatten() {
            if req.attribute_name.as_ref().is_some_and(|n| n != &a.name)
                || req.attribute_value.as_ref().is_some_and(|v| Some(v) != a.value.as_ref())
            {
                continue;
            }
            all.push(Attribute {
                name: a.name.clone(),
                value: a.value.clone(),
                target_type: Some(req.target_type),
                target_id: d.value.container_instance_arn.clone(),
            });
        }
    }
    all.sort_by(|a, b| (a.target_id.as_deref(), &a.name).cmp(&(b.target_id.as_deref(), &b.name)));
    let p = page::paginate(
        all,
        |a| format!("{}\t{}", a.target_id.as_deref().unwrap_or(""), a.name),
        req.next_token.as_deref(),
        limit,
        false,
    )?;
    Ok(json(&ListAttributesResponse { attributes: Some(p.items), next_token: p.next_token }))
}
