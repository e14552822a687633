//! CreateService, GetService, ListServices, UpdateService, DeleteService.

use std::collections::BTreeMap;

use bytes::Bytes;
use estiba_api::servicediscovery::*;
use estiba_api::ApiError;
use estiba_core::servicediscovery::{self as sd, Marker, NamespaceDoc, SdError};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{
    doc, docs, json, namespace_doc, page, put, service_doc, service_name_key, tags_of, NameDoc, Result, Table,
};
use crate::services::Call;
use crate::view::{Doc, State};
use crate::{RandomIds, Server};

fn namespace_type(ns: &NamespaceDoc) -> NamespaceType {
    ns.namespace.r#type.unwrap_or(NamespaceType::Http)
}

/// The Cloud Map service `name` of namespace `ns_id` that ECS Service Connect uses for a
/// discovery name: the existing one (its ARN, no writes), else an HTTP service made by the
/// returned writes (guarded like CreateService's).
pub(crate) fn service_for_discovery(
    st: &State,
    scope: &Scope,
    ns_id: &str,
    name: &str,
    now: f64,
) -> std::result::Result<(Option<Txn>, String), ApiError> {
    let name_key = service_name_key(scope, ns_id, name);
    if let Some(n) = doc::<NameDoc>(st, Table::ServiceNames, &name_key) {
        return Ok((None, sd::arn(scope, sd::Resource::Service, &n.value.id)));
    }
    sd::check_service_name(name)?;
    let ns = namespace_doc(st, scope, ns_id)?;
    let id = sd::service_id(&mut RandomIds);
    let arn = sd::arn(scope, sd::Resource::Service, &id);
    let svc = Service {
        arn: Some(arn.clone()),
        create_date: Some(now),
        created_by_account: Some(scope.account.clone()),
        description: Some("Made by ECS Service Connect.".into()),
        id: Some(id.clone()),
        name: Some(name.to_owned()),
        namespace_id: Some(ns_id.to_owned()),
        resource_owner: Some(scope.account.clone()),
        r#type: Some(ServiceType::Http),
        ..Default::default()
    };
    let key = sd::service_key(scope, &id);
    let txn = Txn::new()
        .when(Compare::mod_revision(&ns.key, ns.rev))
        .then(Op::put(ns.key.clone(), ns.raw.clone()))
        .when(Compare::absent(&name_key))
        .when(Compare::absent(&key))
        .then(put(&key, &svc))
        .then(put(&name_key, &NameDoc { id }))
        .then(put(&sd::revision_key(scope, svc.id.as_deref().unwrap_or_default()), &Marker {}));
    Ok((Some(txn), arn))
}

/// How many instances a service has.
pub(super) fn instance_count(st: &State, cx: &Call, service_id: &str) -> usize {
    docs::<Instance>(st, &cx.scope, Table::Instances, &format!("{service_id}/")).count()
}

/// The service as GetService shows it.
fn shown(st: &State, cx: &Call, svc: &Service) -> Service {
    let mut svc = svc.clone();
    svc.instance_count = Some(instance_count(st, cx, svc.id.as_deref().unwrap_or_default()) as i32);
    svc
}

pub async fn create(s: &Server, cx: &Call, req: CreateServiceRequest) -> Result<Bytes> {
    sd::check_service_name(&req.name)?;
    let scope = &cx.scope;
    let ns_id = req
        .namespace_id
        .clone()
        .or_else(|| req.dns_config.as_ref().and_then(|d| d.namespace_id.clone()))
        .ok_or_else(|| SdError::InvalidInput("NamespaceId is required.".into()))?;
    let svc = s
        .transact::<_, ApiError>(|st| {
            let ns = namespace_doc(st, scope, &ns_id)?;
            let ns_id = ns.value.namespace.id.clone().unwrap_or_default();
            let name_key = service_name_key(scope, &ns_id, &req.name);
            if let Some(n) = doc::<NameDoc>(st, Table::ServiceNames, &name_key) {
                let existing = doc::<Service>(st, Table::Services, &sd::service_key(scope, &n.value.id));
                // A create retried with the same CreatorRequestId answers the service it made.
                if let Some(e) = existing.filter(|e| {
                    req.creator_request_id.is_some() && e.value.creator_request_id == req.creator_request_id
                }) {
                    return Ok((Txn::new(), e.value.clone()));
                }
                return Err(SdError::ServiceAlreadyExists(format!(
                    "Service with name {} already exists in namespace {ns_id}: {}",
                    req.name, n.value.id
                ))
                .into());
            }
            let spec = sd::ServiceSpec {
                dns_config: req.dns_config.as_ref(),
                health_check_config: req.health_check_config.as_ref(),
                http_only: req.r#type == Some(ServiceTypeOption::Http),
                has_custom_health: req.health_check_custom_config.is_some(),
            };
            let (ty, mut dns) = sd::service_config(namespace_type(&ns.value), &spec)?;
            if let Some(d) = dns.as_mut() {
                d.namespace_id = Some(ns_id.clone());
            }
            let id = sd::service_id(&mut RandomIds);
            let svc = Service {
                arn: Some(sd::arn(scope, sd::Resource::Service, &id)),
                create_date: Some(cx.now),
                created_by_account: Some(scope.account.clone()),
                creator_request_id: req.creator_request_id.clone(),
                description: req.description.clone(),
                dns_config: dns,
                health_check_config: req.health_check_config.as_ref().map(sd::health_check_defaults),
                // FailureThreshold is deprecated: Cloud Map always uses 1.
                health_check_custom_config: req
                    .health_check_custom_config
                    .as_ref()
                    .map(|_| HealthCheckCustomConfig { failure_threshold: Some(1) }),
                id: Some(id.clone()),
                instance_count: None,
                name: Some(req.name.clone()),
                namespace_id: Some(ns_id.clone()),
                resource_owner: Some(scope.account.clone()),
                r#type: Some(ty),
            };
            let key = sd::service_key(scope, &id);
            // The namespace is written again unchanged: a DeleteNamespace that read it before
            // this service existed then fails its compare and looks again.
            let mut txn = Txn::new()
                .when(Compare::mod_revision(&ns.key, ns.rev))
                .then(Op::put(ns.key.clone(), ns.raw.clone()))
                .when(Compare::absent(&name_key))
                .when(Compare::absent(&key))
                .then(put(&key, &svc))
                .then(put(&name_key, &NameDoc { id: id.clone() }))
                .then(put(&sd::revision_key(scope, &id), &Marker {}));
            if let Some(tags) = req.tags.as_ref().filter(|t| !t.is_empty()) {
                txn = txn.then(put(&sd::tags_key(scope, sd::Resource::Service, &id), &sd::merge_tags(&[], tags)?));
            }
            Ok((txn, svc))
        })
        .await?;
    let st = s.view.read();
    Ok(json(&CreateServiceResponse { service: Some(shown(&st, cx, &svc)) }))
}

pub async fn get(s: &Server, cx: &Call, req: GetServiceRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = service_doc(&st, &cx.scope, &req.id)?;
    Ok(json(&GetServiceResponse { service: Some(shown(&st, cx, &d.value)) }))
}

pub async fn list(s: &Server, cx: &Call, req: ListServicesRequest) -> Result<Bytes> {
    let st = s.view.read();
    let mut namespace = None;
    for f in req.filters.unwrap_or_default() {
        match (f.name, f.condition.unwrap_or(FilterCondition::Eq), f.values.as_slice()) {
            (ServiceFilterName::NamespaceId, FilterCondition::Eq, [v]) => namespace = Some(sd::id_of(v).to_owned()),
            (ServiceFilterName::ResourceOwner, FilterCondition::Eq, [v]) if v == "SELF" => {}
            (ServiceFilterName::ResourceOwner, FilterCondition::Eq, [_]) => {
                return Ok(json(&ListServicesResponse { services: Some(vec![]), next_token: None }))
            }
            (name, FilterCondition::Eq, _) => {
                return Err(SdError::InvalidInput(format!("Filter {} takes exactly one value.", name.as_str())).into())
            }
            (name, cond, _) => {
                return Err(SdError::InvalidInput(format!(
                    "Condition {} is not supported for filter {}; use EQ.",
                    cond.as_str(),
                    name.as_str()
                ))
                .into())
            }
        }
    }
    let all = docs::<Service>(&st, &cx.scope, Table::Services, "")
        .filter(|d| namespace.is_none() || d.value.namespace_id == namespace);
    let p = page(all, |d| d.key.as_str(), req.next_token.as_deref(), req.max_results)?;
    let services = p
        .items
        .iter()
        .map(|d| {
            let svc = shown(&st, cx, &d.value);
            ServiceSummary {
                arn: svc.arn,
                create_date: svc.create_date,
                created_by_account: svc.created_by_account,
                description: svc.description,
                dns_config: svc.dns_config,
                health_check_config: svc.health_check_config,
                health_check_custom_config: svc.health_check_custom_config,
                id: svc.id,
                instance_count: svc.instance_count,
                name: svc.name,
                resource_owner: svc.resource_owner,
                r#type: svc.r#type,
            }
        })
        .collect();
    Ok(json(&ListServicesResponse { services: Some(services), next_token: p.next_token }))
}

pub async fn update(s: &Server, cx: &Call, req: UpdateServiceRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    let op_id = s
        .transact::<_, ApiError>(|st| {
            let d = service_doc(st, scope, &req.id)?;
            let ns_id = d.value.namespace_id.clone().unwrap_or_default();
            let ns_type = namespace_doc(st, scope, &ns_id).map(|n| namespace_type(&n.value))?;
            let svc = sd::update_service(&d.value, ns_type, &req.service)?;
            let id = svc.id.clone().unwrap_or_default();
            let op_id = sd::operation_id(&mut RandomIds);
            let op = sd::operation(
                scope,
                op_id.clone(),
                OperationType::UpdateService,
                &[(OperationTargetType::Service, &id)],
                cx.now,
            );
            let txn = Txn::new()
                .when(Compare::mod_revision(&d.key, d.rev))
                .then(put(&d.key, &svc))
                .then(put(&sd::operation_key(scope, &op_id), &op));
            Ok((txn, op_id))
        })
        .await?;
    Ok(json(&UpdateServiceResponse { operation_id: Some(op_id) }))
}

pub async fn delete(s: &Server, cx: &Call, req: DeleteServiceRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = service_doc(st, scope, &req.id)?;
        let id = d.value.id.clone().unwrap_or_default();
        if instance_count(st, cx, &id) > 0 {
            return Err(SdError::ResourceInUse(format!("Service {id} has associated instances.")).into());
        }
        let rev_key = sd::revision_key(scope, &id);
        // Registrations touch the revision marker: one that lands first makes this retry and
        // see the instance.
        let marker = match doc::<Marker>(st, Table::Revisions, &rev_key) {
            Some(m) => Compare::mod_revision(&rev_key, m.rev),
            None => Compare::absent(&rev_key),
        };
        let ns_id = d.value.namespace_id.clone().unwrap_or_default();
        let name_key = service_name_key(scope, &ns_id, d.value.name.as_deref().unwrap_or_default());
        let mut txn = Txn::new()
            .when(Compare::mod_revision(&d.key, d.rev))
            .when(marker)
            .then(Op::delete(d.key.clone()))
            .then(Op::delete(rev_key.clone()));
        if doc::<NameDoc>(st, Table::ServiceNames, &name_key).is_some_and(|n| n.value.id == id) {
            txn = txn.then(Op::delete(name_key));
        }
        if tags_of(st, scope, sd::Resource::Service, &id).is_some() {
            txn = txn.then(Op::delete(sd::tags_key(scope, sd::Resource::Service, &id)));
        }
        if attributes_of(st, scope, &id).is_some() {
            txn = txn.then(Op::delete(sd::service_attributes_key(scope, &id)));
        }
        Ok((txn, ()))
    })
    .await?;
    Ok(json(&DeleteServiceResponse {}))
}

fn attributes_of<'a>(st: &'a State, scope: &Scope, service_id: &str) -> Option<&'a Doc<BTreeMap<String, String>>> {
    doc(st, Table::ServiceAttributes, &sd::service_attributes_key(scope, service_id))
}

pub async fn get_attributes(s: &Server, cx: &Call, req: GetServiceAttributesRequest) -> Result<Bytes> {
    let st = s.view.read();
    let svc = &service_doc(&st, &cx.scope, &req.service_id)?.value;
    let id = svc.id.as_deref().unwrap_or_default();
    let attributes = attributes_of(&st, &cx.scope, id).map(|d| d.value.clone()).unwrap_or_default();
    Ok(json(&GetServiceAttributesResponse {
        service_attributes: Some(ServiceAttributes {
            attributes: Some(attributes),
            resource_owner: Some(cx.scope.account.clone()),
            service_arn: svc.arn.clone(),
        }),
    }))
}

/// Read-modify-write of a service's attributes.
async fn reattribute(
    s: &Server,
    cx: &Call,
    service_id: &str,
    f: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, SdError>,
) -> Result<()> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = service_doc(st, scope, service_id)?;
        let id = d.value.id.clone().unwrap_or_default();
        let key = sd::service_attributes_key(scope, &id);
        let empty = BTreeMap::new();
        let (current, guard) = match attributes_of(st, scope, &id) {
            Some(a) => (&a.value, Compare::mod_revision(&key, a.rev)),
            None => (&empty, Compare::absent(&key)),
        };
        let attrs = f(current)?;
        let txn = Txn::new().when(Compare::mod_revision(&d.key, d.rev)).when(guard);
        let txn = if attrs.is_empty() { txn.then(Op::delete(key)) } else { txn.then(put(&key, &attrs)) };
        Ok((txn, ()))
    })
    .await
}

pub async fn update_attributes(s: &Server, cx: &Call, req: UpdateServiceAttributesRequest) -> Result<Bytes> {
    reattribute(s, cx, &req.service_id, |cur| sd::update_service_attributes(cur, &req.attributes)).await?;
    Ok(json(&UpdateServiceAttributesResponse {}))
}

pub async fn delete_attributes(s: &Server, cx: &Call, req: DeleteServiceAttributesRequest) -> Result<Bytes> {
    reattribute(s, cx, &req.service_id, |cur| {
        Ok(cur.iter().filter(|(k, _)| !req.attributes.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
    })
    .await?;
    Ok(json(&DeleteServiceAttributesResponse {}))
}
