//! CreateHttpNamespace, CreatePrivateDnsNamespace, CreatePublicDnsNamespace, GetNamespace,
//! ListNamespaces, Update{Http,PrivateDns,PublicDns}Namespace, DeleteNamespace.

use bytes::Bytes;
use estiba_api::servicediscovery::*;
use estiba_api::ApiError;
use estiba_core::servicediscovery::{self as sd, NamespaceDoc, SdError};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{doc, docs, json, namespace_doc, namespace_name_key, page, put, tags_of, NameDoc, Result, Table};
use crate::services::Call;
use crate::view::State;
use crate::{RandomIds, Server};

struct NewNamespace {
    kind: NamespaceType,
    name: String,
    description: Option<String>,
    creator_request_id: Option<String>,
    tags: Option<Vec<Tag>>,
    soa_ttl: Option<i64>,
    vpc: Option<String>,
}

/// Creates a namespace (or finds the one an earlier call with the same `CreatorRequestId`
/// created) and answers the operation's id.
async fn create(s: &Server, cx: &Call, req: NewNamespace) -> Result<String> {
    if req.kind != NamespaceType::DnsPublic {
        sd::check_namespace_name(&req.name)?;
    }
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let existing = docs::<NamespaceDoc>(st, scope, Table::Namespaces, "").map(|d| &d.value);
        if let Some(op) = sd::namespace_conflict(existing, &req.name, req.creator_request_id.as_deref())? {
            return Ok((Txn::new(), op));
        }
        let (txn, op_id, _) = new_namespace_txn(scope, &req, cx.now)?;
        Ok((txn, op_id))
    })
    .await
}

/// The writes that create a namespace (it, its name, its operation, its tags), guarded by
/// the absence of both its key and its name; with the operation's id and the namespace's ARN.
fn new_namespace_txn(scope: &Scope, req: &NewNamespace, now: f64) -> Result<(Txn, String, String)> {
    let mut ids = RandomIds;
    let id = sd::namespace_id(&mut ids);
    let op_id = sd::operation_id(&mut ids);
    let zone = (req.kind != NamespaceType::Http).then(|| sd::hosted_zone_id(&mut ids));
    let namespace = sd::new_namespace(
        scope,
        &id,
        req.kind,
        &req.name,
        req.description.clone(),
        req.creator_request_id.clone(),
        req.soa_ttl,
        zone,
        now,
    );
    let arn = namespace.arn.clone().unwrap_or_default();
    let key = sd::namespace_key(scope, &id);
    let name_key = namespace_name_key(scope, &req.name);
    let op = sd::operation(
        scope,
        op_id.clone(),
        OperationType::CreateNamespace,
        &[(OperationTargetType::Namespace, &id)],
        now,
    );
    let mut txn = Txn::new()
        .when(Compare::absent(&key))
        .when(Compare::absent(&name_key))
        .then(put(&key, &NamespaceDoc { namespace, vpc: req.vpc.clone(), operation_id: op_id.clone() }))
        .then(put(&name_key, &NameDoc { id: id.clone() }))
        .then(put(&sd::operation_key(scope, &op_id), &op));
    if let Some(tags) = req.tags.as_ref().filter(|t| !t.is_empty()) {
        txn = txn.then(put(&sd::tags_key(scope, sd::Resource::Namespace, &id), &sd::merge_tags(&[], tags)?));
    }
    Ok((txn, op_id, arn))
}

/// The writes that create the HTTP namespace `name` (as ECS does for a cluster's
/// `serviceConnectDefaults` naming one that does not exist), and its ARN.
pub(crate) fn new_http_namespace(scope: &Scope, name: &str, now: f64) -> std::result::Result<(Txn, String), ApiError> {
    sd::check_namespace_name(name)?;
    let req = NewNamespace {
        kind: NamespaceType::Http,
        name: name.to_owned(),
        description: None,
        creator_request_id: None,
        tags: None,
        soa_ttl: None,
        vpc: None,
    };
    let (txn, _, arn) = new_namespace_txn(scope, &req, now)?;
    Ok((txn, arn))
}

pub async fn create_http(s: &Server, cx: &Call, req: CreateHttpNamespaceRequest) -> Result<Bytes> {
    let op = create(
        s,
        cx,
        NewNamespace {
            kind: NamespaceType::Http,
            name: req.name,
            description: req.description,
            creator_request_id: req.creator_request_id,
            tags: req.tags,
            soa_ttl: None,
            vpc: None,
        },
    )
    .await?;
    Ok(json(&CreateHttpNamespaceResponse { operation_id: Some(op) }))
}

pub async fn create_private_dns(s: &Server, cx: &Call, req: CreatePrivateDnsNamespaceRequest) -> Result<Bytes> {
    let op = create(
        s,
        cx,
        NewNamespace {
            kind: NamespaceType::DnsPrivate,
            name: req.name,
            description: req.description,
            creator_request_id: req.creator_request_id,
            tags: req.tags,
            soa_ttl: req.properties.map(|p| p.dns_properties.soa.ttl),
            vpc: Some(req.vpc),
        },
    )
    .await?;
    Ok(json(&CreatePrivateDnsNamespaceResponse { operation_id: Some(op) }))
}

pub async fn create_public_dns(s: &Server, cx: &Call, req: CreatePublicDnsNamespaceRequest) -> Result<Bytes> {
    let op = create(
        s,
        cx,
        NewNamespace {
            kind: NamespaceType::DnsPublic,
            name: req.name,
            description: req.description,
            creator_request_id: req.creator_request_id,
            tags: req.tags,
            soa_ttl: req.properties.map(|p| p.dns_properties.soa.ttl),
            vpc: None,
        },
    )
    .await?;
    Ok(json(&CreatePublicDnsNamespaceResponse { operation_id: Some(op) }))
}

/// How many services a namespace holds.
fn service_count(st: &State, cx: &Call, id: &str) -> i32 {
    docs::<NameDoc>(st, &cx.scope, Table::ServiceNames, &format!("{id}/")).count() as i32
}

/// The namespace as GetNamespace shows it.
fn shown(st: &State, cx: &Call, d: &NamespaceDoc) -> Namespace {
    let mut ns = d.namespace.clone();
    ns.service_count = Some(service_count(st, cx, ns.id.as_deref().unwrap_or_default()));
    ns
}

pub async fn get(s: &Server, cx: &Call, req: GetNamespaceRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = namespace_doc(&st, &cx.scope, &req.id)?;
    Ok(json(&GetNamespaceResponse { namespace: Some(shown(&st, cx, &d.value)) }))
}

pub async fn list(s: &Server, cx: &Call, req: ListNamespacesRequest) -> Result<Bytes> {
    let st = s.view.read();
    let filters = req.filters.unwrap_or_default();
    let mut all = vec![];
    for d in docs::<NamespaceDoc>(&st, &cx.scope, Table::Namespaces, "") {
        if sd::namespace_matches(&d.value.namespace, &filters)? {
            all.push(d);
        }
    }
    let p = page(all, |d| d.key.as_str(), req.next_token.as_deref(), req.max_results)?;
    let namespaces = p
        .items
        .iter()
        .map(|d| {
            let ns = shown(&st, cx, &d.value);
            NamespaceSummary {
                arn: ns.arn,
                create_date: ns.create_date,
                description: ns.description,
                id: ns.id,
                name: ns.name,
                properties: ns.properties,
                resource_owner: ns.resource_owner,
                service_count: ns.service_count,
                r#type: ns.r#type,
            }
        })
        .collect();
    Ok(json(&ListNamespacesResponse { namespaces: Some(namespaces), next_token: p.next_token }))
}

/// Read-modify-write of a namespace of type `kind`, recorded as an UPDATE_NAMESPACE operation.
async fn update(
    s: &Server,
    cx: &Call,
    id: &str,
    kind: NamespaceType,
    description: Option<String>,
    soa_ttl: Option<i64>,
) -> Result<String> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = namespace_doc(st, scope, id)?;
        let mut ns = d.value.clone();
        if ns.namespace.r#type != Some(kind) {
            return Err(SdError::InvalidInput(format!(
                "Namespace {} is of type {}, not {}.",
                sd::id_of(id),
                ns.namespace.r#type.map(|t| t.as_str()).unwrap_or_default(),
                kind.as_str()
            ))
            .into());
        }
        if let Some(desc) = &description {
            ns.namespace.description = Some(desc.clone());
        }
        if let Some(ttl) = soa_ttl {
            let dns = ns
                .namespace
                .properties
                .get_or_insert_with(Default::default)
                .dns_properties
                .get_or_insert_with(Default::default);
            dns.soa = Some(SOA { ttl });
        }
        let ns_id = ns.namespace.id.clone().unwrap_or_default();
        let op_id = sd::operation_id(&mut RandomIds);
        let op = sd::operation(
            scope,
            op_id.clone(),
            OperationType::UpdateNamespace,
            &[(OperationTargetType::Namespace, &ns_id)],
            cx.now,
        );
        let txn = Txn::new()
            .when(Compare::mod_revision(&d.key, d.rev))
            .then(put(&d.key, &ns))
            .then(put(&sd::operation_key(scope, &op_id), &op));
        Ok((txn, op_id))
    })
    .await
}

pub async fn update_http(s: &Server, cx: &Call, req: UpdateHttpNamespaceRequest) -> Result<Bytes> {
    let op = update(s, cx, &req.id, NamespaceType::Http, Some(req.namespace.description), None).await?;
    Ok(json(&UpdateHttpNamespaceResponse { operation_id: Some(op) }))
}

pub async fn update_private_dns(s: &Server, cx: &Call, req: UpdatePrivateDnsNamespaceRequest) -> Result<Bytes> {
    let ttl = req.namespace.properties.map(|p| p.dns_properties.soa.ttl);
    let op = update(s, cx, &req.id, NamespaceType::DnsPrivate, req.namespace.description, ttl).await?;
    Ok(json(&UpdatePrivateDnsNamespaceResponse { operation_id: Some(op) }))
}

pub async fn update_public_dns(s: &Server, cx: &Call, req: UpdatePublicDnsNamespaceRequest) -> Result<Bytes> {
    let ttl = req.namespace.properties.map(|p| p.dns_properties.soa.ttl);
    let op = update(s, cx, &req.id, NamespaceType::DnsPublic, req.namespace.description, ttl).await?;
    Ok(json(&UpdatePublicDnsNamespaceResponse { operation_id: Some(op) }))
}

pub async fn delete(s: &Server, cx: &Call, req: DeleteNamespaceRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    let op_id = s
        .transact::<_, ApiError>(|st| {
            let d = namespace_doc(st, scope, &req.id)?;
            let id = d.value.namespace.id.clone().unwrap_or_default();
            if service_count(st, cx, &id) > 0 {
                return Err(SdError::ResourceInUse(format!("Namespace {id} has associated services.")).into());
            }
            let name = d.value.namespace.name.clone().unwrap_or_default();
            let name_key = namespace_name_key(scope, &name);
            let op_id = sd::operation_id(&mut RandomIds);
            let op = sd::operation(
                scope,
                op_id.clone(),
                OperationType::DeleteNamespace,
                &[(OperationTargetType::Namespace, &id)],
                cx.now,
            );
            let mut txn = Txn::new()
                .when(Compare::mod_revision(&d.key, d.rev))
                .then(Op::delete(d.key.clone()))
                .then(put(&sd::operation_key(scope, &op_id), &op));
            // The name is this namespace's (a document of another id would be a leftover).
            if doc::<NameDoc>(st, Table::NamespaceNames, &name_key).is_some_and(|n| n.value.id == id) {
                txn = txn.then(Op::delete(name_key));
            }
            if tags_of(st, scope, sd::Resource::Namespace, &id).is_some() {
                txn = txn.then(Op::delete(sd::tags_key(scope, sd::Resource::Namespace, &id)));
            }
            Ok((txn, op_id))
        })
        .await?;
    Ok(json(&DeleteNamespaceResponse { operation_id: Some(op_id) }))
}
