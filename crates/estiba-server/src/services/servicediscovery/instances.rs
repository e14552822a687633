//! RegisterInstance, DeregisterInstance, GetInstance, ListInstances, GetInstancesHealthStatus,
//! UpdateInstanceCustomHealthStatus, DiscoverInstances, DiscoverInstancesRevision.

use std::collections::BTreeMap;

use bytes::Bytes;
use estiba_api::servicediscovery::*;
use estiba_api::ApiError;
use estiba_core::servicediscovery::{self as sd, HealthDoc, Marker, SdError};
use estiba_core::Scope;
use estiba_store::{Compare, Txn};

use super::{
    deregister_ops, doc, docs, json, namespace_name_key, page, put, register_ops, service_doc, service_name_key,
    NameDoc, Result, Table,
};
use crate::services::Call;
use crate::view::{Doc, State};
use crate::{RandomIds, Server};

fn instance_doc<'a>(
    st: &'a State,
    scope: &Scope,
    service_id: &str,
    instance_id: &str,
) -> Result<&'a Doc<Instance>, SdError> {
    doc(st, Table::Instances, &sd::instance_key(scope, service_id, instance_id))
        .ok_or_else(|| SdError::instance_not_found(instance_id))
}

fn health(st: &State, scope: &Scope, svc: &Service, inst: &Instance) -> HealthStatus {
    super::instance_health(st, scope, svc, inst)
}

pub async fn register(s: &Server, cx: &Call, req: RegisterInstanceRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    let op_id = s
        .transact::<_, ApiError>(|st| {
            let d = service_doc(st, scope, &req.service_id)?;
            sd::check_instance_attributes(&d.value, &req.attributes)?;
            let service_id = d.value.id.clone().unwrap_or_default();
            let inst = Instance {
                attributes: Some(req.attributes.clone()),
                created_by_account: Some(scope.account.clone()),
                creator_request_id: req.creator_request_id.clone(),
                id: req.instance_id.clone(),
            };
            let op_id = sd::operation_id(&mut RandomIds);
            let op = sd::operation(
                scope,
                op_id.clone(),
                OperationType::RegisterInstance,
                &[(OperationTargetType::Instance, &req.instance_id), (OperationTargetType::Service, &service_id)],
                cx.now,
            );
            let mut txn = Txn::new().when(Compare::mod_revision(&d.key, d.rev));
            txn.ops.extend(register_ops(scope, &service_id, &inst));
            Ok((txn.then(put(&sd::operation_key(scope, &op_id), &op)), op_id))
        })
        .await?;
    Ok(json(&RegisterInstanceResponse { operation_id: Some(op_id) }))
}

pub async fn deregister(s: &Server, cx: &Call, req: DeregisterInstanceRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    let op_id = s
        .transact::<_, ApiError>(|st| {
            let d = service_doc(st, scope, &req.service_id)?;
            let service_id = d.value.id.clone().unwrap_or_default();
            let inst = instance_doc(st, scope, &service_id, &req.instance_id)?;
            let op_id = sd::operation_id(&mut RandomIds);
            let op = sd::operation(
                scope,
                op_id.clone(),
                OperationType::DeregisterInstance,
                &[(OperationTargetType::Instance, &req.instance_id), (OperationTargetType::Service, &service_id)],
                cx.now,
            );
            let mut txn = Txn::new().when(Compare::mod_revision(&inst.key, inst.rev));
            txn.ops.extend(deregister_ops(scope, &service_id, &req.instance_id));
            Ok((txn.then(put(&sd::operation_key(scope, &op_id), &op)), op_id))
        })
        .await?;
    Ok(json(&DeregisterInstanceResponse { operation_id: Some(op_id) }))
}

pub async fn get(s: &Server, cx: &Call, req: GetInstanceRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = service_doc(&st, &cx.scope, &req.service_id)?;
    let inst = instance_doc(&st, &cx.scope, d.value.id.as_deref().unwrap_or_default(), &req.instance_id)?;
    Ok(json(&GetInstanceResponse {
        instance: Some(inst.value.clone()),
        resource_owner: Some(cx.scope.account.clone()),
    }))
}

pub async fn list(s: &Server, cx: &Call, req: ListInstancesRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = service_doc(&st, &cx.scope, &req.service_id)?;
    let service_id = d.value.id.as_deref().unwrap_or_default();
    let all = docs::<Instance>(&st, &cx.scope, Table::Instances, &format!("{service_id}/"));
    let p = page(all, |d| d.key.as_str(), req.next_token.as_deref(), req.max_results)?;
    let instances = p
        .items
        .iter()
        .map(|d| InstanceSummary {
            attributes: d.value.attributes.clone(),
            created_by_account: d.value.created_by_account.clone(),
            id: Some(d.value.id.clone()),
        })
        .collect();
    Ok(json(&ListInstancesResponse {
        instances: Some(instances),
        next_token: p.next_token,
        resource_owner: Some(cx.scope.account.clone()),
    }))
}

pub async fn health_status(s: &Server, cx: &Call, req: GetInstancesHealthStatusRequest) -> Result<Bytes> {
    let st = s.view.read();
    let scope = &cx.scope;
    let svc = &service_doc(&st, scope, &req.service_id)?.value;
    let service_id = svc.id.as_deref().unwrap_or_default();
    let chosen: Vec<&Doc<Instance>> = match &req.instances {
        Some(ids) => ids.iter().map(|id| instance_doc(&st, scope, service_id, id)).collect::<Result<_, _>>()?,
        None => docs::<Instance>(&st, scope, Table::Instances, &format!("{service_id}/")).collect(),
    };
    let p = page(chosen, |d| d.key.as_str(), req.next_token.as_deref(), req.max_results)?;
    let status: BTreeMap<String, HealthStatus> =
        p.items.iter().map(|d| (d.value.id.clone(), health(&st, scope, svc, &d.value))).collect();
    Ok(json(&GetInstancesHealthStatusResponse { status: Some(status), next_token: p.next_token }))
}

pub async fn update_custom_health(
    s: &Server,
    cx: &Call,
    req: UpdateInstanceCustomHealthStatusRequest,
) -> Result<Bytes> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = service_doc(st, scope, &req.service_id)?;
        let service_id = d.value.id.clone().unwrap_or_default();
        let inst = instance_doc(st, scope, &service_id, &req.instance_id)?;
        if d.value.health_check_custom_config.is_none() {
            return Err(SdError::CustomHealthNotFound(format!(
                "Service {service_id} has no custom health check (HealthCheckCustomConfig)."
            ))
            .into());
        }
        let status = match req.status {
            CustomHealthStatus::Healthy => HealthStatus::Healthy,
            CustomHealthStatus::Unhealthy => HealthStatus::Unhealthy,
        };
        let txn = Txn::new()
            .when(Compare::mod_revision(&inst.key, inst.rev))
            .then(put(&sd::health_key(scope, &service_id, &req.instance_id), &HealthDoc { status }));
        Ok((txn, ()))
    })
    .await?;
    Ok(Bytes::from_static(b"{}"))
}

/// The service that DiscoverInstances names, with its `InstancesRevision`: the revision of
/// its last registration or deregistration (its creation before any).
fn discovered<'a>(st: &'a State, scope: &Scope, namespace: &str, service: &str) -> Result<(&'a Service, i64), SdError> {
    let ns = doc::<NameDoc>(st, Table::NamespaceNames, &namespace_name_key(scope, namespace))
        .ok_or_else(|| SdError::NamespaceNotFound(format!("Namespace not found: {namespace}")))?;
    let srv = doc::<NameDoc>(st, Table::ServiceNames, &service_name_key(scope, &ns.value.id, service))
        .ok_or_else(|| SdError::ServiceNotFound(format!("Service not found: {service}")))?;
    let d = service_doc(st, scope, &srv.value.id)?;
    let marker = doc::<Marker>(st, Table::Revisions, &sd::revision_key(scope, &srv.value.id)).map(|m| m.rev);
    Ok((&d.value, marker.unwrap_or(d.rev) as i64))
}

/// Another account's namespaces are not shared with this one.
fn check_owner(scope: &Scope, owner: Option<&str>, namespace: &str) -> Result<(), SdError> {
    match owner {
        Some(o) if o != scope.account => Err(SdError::NamespaceNotFound(format!("Namespace not found: {namespace}"))),
        _ => Ok(()),
    }
}

pub async fn discover(s: &Server, cx: &Call, req: DiscoverInstancesRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    check_owner(scope, req.owner_account.as_deref(), &req.namespace_name)?;
    let st = s.view.read();
    let (svc, revision) = discovered(&st, scope, &req.namespace_name, &req.service_name)?;
    let service_id = svc.id.as_deref().unwrap_or_default();
    let empty = BTreeMap::new();
    let items: Vec<_> = docs::<Instance>(&st, scope, Table::Instances, &format!("{service_id}/"))
        .map(|d| (health(&st, scope, svc, &d.value), d.value.attributes.as_ref().unwrap_or(&empty), &d.value))
        .collect();
    let found = sd::discover(
        items,
        req.query_parameters.as_ref().unwrap_or(&empty),
        req.optional_parameters.as_ref().unwrap_or(&empty),
        req.health_status.unwrap_or(HealthStatusFilter::Healthy),
        sd::has_health_check(svc),
    );
    let limit = req.max_results.unwrap_or(100).max(1) as usize;
    let instances = found
        .into_iter()
        .take(limit)
        .map(|(h, inst)| HttpInstanceSummary {
            attributes: inst.attributes.clone(),
            health_status: Some(h),
            instance_id: Some(inst.id.clone()),
            namespace_name: Some(req.namespace_name.clone()),
            service_name: Some(req.service_name.clone()),
        })
        .collect();
    Ok(json(&DiscoverInstancesResponse { instances: Some(instances), instances_revision: Some(revision) }))
}

pub async fn discover_revision(s: &Server, cx: &Call, req: DiscoverInstancesRevisionRequest) -> Result<Bytes> {
    check_owner(&cx.scope, req.owner_account.as_deref(), &req.namespace_name)?;
    let st = s.view.read();
    let (_, revision) = discovered(&st, &cx.scope, &req.namespace_name, &req.service_name)?;
    Ok(json(&DiscoverInstancesRevisionResponse { instances_revision: Some(revision) }))
}
