//! GetOperation, ListOperations, and the tags of namespaces and services (TagResource,
//! UntagResource, ListTagsForResource).

use bytes::Bytes;
use estiba_api::servicediscovery::*;
use estiba_api::ApiError;
use estiba_core::servicediscovery::{self as sd, NamespaceDoc, SdError};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{doc, docs, json, page, put, tags_of, Result, Table};
use crate::services::Call;
use crate::view::State;
use crate::Server;

pub async fn get(s: &Server, cx: &Call, req: GetOperationRequest) -> Result<Bytes> {
    let st = s.view.read();
    let op = (req.owner_account.as_deref().is_none_or(|a| a == cx.scope.account))
        .then(|| doc::<OperationShape>(&st, Table::Operations, &sd::operation_key(&cx.scope, &req.operation_id)))
        .flatten()
        .ok_or_else(|| SdError::OperationNotFound(format!("Operation not found: {}", req.operation_id)))?;
    Ok(json(&GetOperationResponse { operation: Some(sd::operation_at(&op.value, cx.now)) }))
}

pub async fn list(s: &Server, cx: &Call, req: ListOperationsRequest) -> Result<Bytes> {
    let st = s.view.read();
    let filters = req.filters.unwrap_or_default();
    let mut all = vec![];
    for d in docs::<OperationShape>(&st, &cx.scope, Table::Operations, "") {
        let op = sd::operation_at(&d.value, cx.now);
        if sd::operation_matches(&op, &filters)? {
            all.push((d.key.as_str(), op));
        }
    }
    let p = page(all, |(k, _)| *k, req.next_token.as_deref(), req.max_results)?;
    let operations = p.items.into_iter().map(|(_, op)| OperationSummary { id: op.id, status: op.status }).collect();
    Ok(json(&ListOperationsResponse { operations: Some(operations), next_token: p.next_token }))
}

/// The namespace or service an ARN names, when it exists: its kind, id, and the key and
/// revision of its document.
fn resource(st: &State, scope: &Scope, arn: &str) -> Result<(sd::Resource, String, Compare), SdError> {
    let not_found = || SdError::ResourceNotFound(format!("Resource not found: {arn}"));
    let (r, id) = sd::parse_arn(scope, arn).ok_or_else(not_found)?;
    let found = match r {
        sd::Resource::Namespace => {
            doc::<NamespaceDoc>(st, Table::Namespaces, &sd::namespace_key(scope, &id)).map(|d| (d.key.clone(), d.rev))
        }
        sd::Resource::Service => {
            doc::<Service>(st, Table::Services, &sd::service_key(scope, &id)).map(|d| (d.key.clone(), d.rev))
        }
    };
    let (key, rev) = found.ok_or_else(not_found)?;
    Ok((r, id, Compare::mod_revision(key, rev)))
}

/// Read-modify-write of a resource's tags.
async fn retag(s: &Server, cx: &Call, arn: &str, f: impl Fn(&[Tag]) -> Result<Vec<Tag>, SdError>) -> Result<()> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        // The resource's revision is compared too: tags never outlive a deletion.
        let (r, id, exists) = resource(st, scope, arn)?;
        let key = sd::tags_key(scope, r, &id);
        let (current, guard) = match tags_of(st, scope, r, &id) {
            Some(d) => (d.value.as_slice(), Compare::mod_revision(&key, d.rev)),
            None => (&[][..], Compare::absent(&key)),
        };
        let tags = f(current)?;
        let txn = Txn::new().when(exists).when(guard);
        let txn = if tags.is_empty() { txn.then(Op::delete(key)) } else { txn.then(put(&key, &tags)) };
        Ok((txn, ()))
    })
    .await
}

pub async fn tag(s: &Server, cx: &Call, req: TagResourceRequest) -> Result<Bytes> {
    retag(s, cx, &req.resource_arn, |cur| sd::merge_tags(cur, &req.tags)).await?;
    Ok(json(&TagResourceResponse {}))
}

pub async fn untag(s: &Server, cx: &Call, req: UntagResourceRequest) -> Result<Bytes> {
    retag(s, cx, &req.resource_arn, |cur| Ok(cur.iter().filter(|t| !req.tag_keys.contains(&t.key)).cloned().collect()))
        .await?;
    Ok(json(&UntagResourceResponse {}))
}

pub async fn list_tags(s: &Server, cx: &Call, req: ListTagsForResourceRequest) -> Result<Bytes> {
    let st = s.view.read();
    let (r, id, _) = resource(&st, &cx.scope, &req.resource_arn)?;
    let tags = tags_of(&st, &cx.scope, r, &id).map(|d| d.value.clone()).unwrap_or_default();
    Ok(json(&ListTagsForResourceResponse { tags: Some(tags) }))
}
