//! Log groups: CreateLogGroup, DeleteLogGroup, DescribeLogGroups, PutRetentionPolicy,
//! DeleteRetentionPolicy, and tags (TagResource, UntagResource, ListTagsForResource and the
//! older TagLogGroup, UntagLogGroup, ListTagsLogGroup).

use std::collections::BTreeMap;

use bytes::Bytes;
use estiba_api::logs::*;
use estiba_api::ApiError;
use estiba_core::logs::{self as core, LogGroupDoc, LogsError};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{blocking, find_group, groups_table, limit, now_ms, page, Result};
use crate::services::{json, Call};
use crate::Server;

fn put(scope: &Scope, doc: &LogGroupDoc) -> Op {
    Op::put(core::group_key(scope, &doc.name), serde_json::to_vec(doc).expect("serializes"))
}

pub async fn create_log_group(s: &Server, cx: &Call, req: CreateLogGroupRequest) -> Result<Bytes> {
    let now = now_ms(cx);
    let tags = req.tags.unwrap_or_default();
    let mut none = BTreeMap::new();
    core::merge_tags(&mut none, &tags, &core::group_arn(&cx.scope, &req.log_group_name))?;
    let doc = LogGroupDoc {
        log_group_class: req.log_group_class.unwrap_or_default().as_str().to_owned(),
        kms_key_id: req.kms_key_id,
        tags,
        deletion_protection: req.deletion_protection_enabled.unwrap_or(false),
        ..LogGroupDoc::new(uuid::Uuid::new_v4().to_string(), &req.log_group_name, now)
    };
    let key = core::group_key(&cx.scope, &doc.name);
    s.transact(|st| {
        if st.doc::<LogGroupDoc>(groups_table(), &key).is_some() {
            return Err(ApiError::from(LogsError::group_exists()));
        }
        Ok((Txn::new().when(Compare::absent(key.clone())).then(put(&cx.scope, &doc)), ()))
    })
    .await?;
    Ok(Bytes::new())
}

pub async fn delete_log_group(s: &Server, cx: &Call, req: DeleteLogGroupRequest) -> Result<Bytes> {
    let id = s
        .transact(|st| {
            let d = find_group(st, &cx.scope, &req.log_group_name)?;
            if d.value.deletion_protection {
                return Err(ApiError::new(
                    ErrorCode::OperationAbortedException,
                    "Log group deletion protection is enabled. Disable it before deleting the log group.",
                ));
            }
            let txn = Txn::new().when(Compare::mod_revision(d.key.clone(), d.rev)).then(Op::delete(d.key.clone()));
            Ok((txn, d.value.id.clone()))
        })
        .await?;
    // The document is gone, so nothing reads this id any more; should this fail (or the
    // server die first), housekeeping removes the data of ids no document names.
    let (logs, repl) = (s.logs.clone(), s.replication.clone());
    if let Err(e) = blocking(move || repl.delete_group(&logs, &id)).await? {
        tracing::warn!(error = %e, "deleting a log group's events; housekeeping will retry");
    }
    Ok(Bytes::new())
}

fn describe(scope: &Scope, d: &LogGroupDoc, stored_bytes: u64) -> LogGroup {
    LogGroup {
        arn: Some(core::group_arn_wildcard(scope, &d.name)),
        log_group_arn: Some(core::group_arn(scope, &d.name)),
        creation_time: Some(d.creation_time),
        log_group_name: Some(d.name.clone()),
        retention_in_days: d.retention_in_days,
        metric_filter_count: Some(d.metric_filters.len() as i32),
        stored_bytes: Some(stored_bytes as i64),
        log_group_class: serde_json::from_value(serde_json::Value::String(d.log_group_class.clone())).ok(),
        kms_key_id: d.kms_key_id.clone(),
        deletion_protection_enabled: Some(d.deletion_protection),
        data_protection_status: None,
        inherited_properties: None,
        bearer_token_authentication_enabled: None,
    }
}

pub async fn describe_log_groups(s: &Server, cx: &Call, req: DescribeLogGroupsRequest) -> Result<Bytes> {
    if req.log_group_name_prefix.is_some() && req.log_group_name_pattern.is_some() {
        return Err(LogsError::invalid(
            "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
        )
        .into());
    }
    let names: Option<Vec<String>> = req
        .log_group_identifiers
        .as_ref()
        .map(|ids| ids.iter().map(|i| core::group_name_of(&cx.scope, i).map(str::to_owned)).collect())
        .transpose()?;
    let prefix = req.log_group_name_prefix.as_deref().unwrap_or("");
    let p = {
        let st = s.view.read();
        let wanted = st
            .docs::<LogGroupDoc>(groups_table(), &core::group_key(&cx.scope, prefix))
            .filter(|d| {
                req.log_group_name_pattern.as_deref().is_none_or(|p| core::name_matches_pattern(&d.value.name, p))
            })
            .filter(|d| names.as_ref().is_none_or(|n| n.contains(&d.value.name)))
            .filter(|d| req.log_group_class.is_none_or(|c| c.as_str() == d.value.log_group_class))
            .map(|d| d.value.clone());
        page(wanted, |d| d.name.clone(), req.next_token.as_deref(), limit(req.limit, 50), false)?
    };
    finish(s, cx, p).await
}

async fn finish(s: &Server, cx: &Call, p: estiba_core::page::Page<LogGroupDoc>) -> Result<Bytes> {
    let logs = s.logs.clone();
    let ids: Vec<String> = p.items.iter().map(|d| d.id.clone()).collect();
    let bytes = blocking(move || ids.iter().map(|id| logs.stored_bytes(id)).collect::<Vec<u64>>()).await?;
    let groups = p.items.iter().zip(bytes).map(|(d, b)| describe(&cx.scope, d, b)).collect();
    Ok(json(&DescribeLogGroupsResponse { log_groups: Some(groups), next_token: p.next_token }))
}

/// Changes the group named `name` with `f` (compare-and-swap on its document).
async fn update(
    s: &Server,
    cx: &Call,
    name: &str,
    f: impl Fn(&mut LogGroupDoc) -> Result<(), LogsError>,
) -> Result<()> {
    s.transact(|st| {
        let d = find_group(st, &cx.scope, name)?;
        let mut doc = d.value.clone();
        f(&mut doc)?;
        Ok((Txn::new().when(Compare::mod_revision(d.key.clone(), d.rev)).then(put(&cx.scope, &doc)), ()))
    })
    .await
}

pub async fn put_retention_policy(s: &Server, cx: &Call, req: PutRetentionPolicyRequest) -> Result<Bytes> {
    core::check_retention(req.retention_in_days)?;
    update(s, cx, &req.log_group_name, |d| {
        d.retention_in_days = Some(req.retention_in_days);
        Ok(())
    })
    .await?;
    Ok(Bytes::new())
}

pub async fn delete_retention_policy(s: &Server, cx: &Call, req: DeleteRetentionPolicyRequest) -> Result<Bytes> {
    update(s, cx, &req.log_group_name, |d| {
        d.retention_in_days = None;
        Ok(())
    })
    .await?;
    Ok(Bytes::new())
}

/// The group a tagging call's `resourceArn` names (log groups are the taggable resources
/// estiba has).
fn tagged_group(scope: &Scope, arn: &str) -> Result<String, LogsError> {
    if !arn.starts_with("arn:") {
        return Err(LogsError::invalid(format!("Invalid resource ARN: {arn}")));
    }
    core::group_name_of(scope, arn).map(str::to_owned)
}

fn tags_of(s: &Server, scope: &Scope, name: &str) -> Result<BTreeMap<String, String>, LogsError> {
    let st = s.view.read();
    find_group(&st, scope, name).map(|d| d.value.tags.clone())
}

async fn add_tags(s: &Server, cx: &Call, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    let arn = core::group_arn(&cx.scope, name);
    update(s, cx, name, |d| core::merge_tags(&mut d.tags, tags, &arn)).await
}

async fn remove_tags(s: &Server, cx: &Call, name: &str, keys: &[String]) -> Result<()> {
    update(s, cx, name, |d| {
        d.tags.retain(|k, _| !keys.contains(k));
        Ok(())
    })
    .await
}

pub async fn tag_resource(s: &Server, cx: &Call, req: TagResourceRequest) -> Result<Bytes> {
    let name = tagged_group(&cx.scope, &req.resource_arn)?;
    add_tags(s, cx, &name, &req.tags).await?;
    Ok(Bytes::new())
}

pub async fn untag_resource(s: &Server, cx: &Call, req: UntagResourceRequest) -> Result<Bytes> {
    let name = tagged_group(&cx.scope, &req.resource_arn)?;
    remove_tags(s, cx, &name, &req.tag_keys).await?;
    Ok(Bytes::new())
}

pub async fn list_tags_for_resource(s: &Server, cx: &Call, req: ListTagsForResourceRequest) -> Result<Bytes> {
    let name = tagged_group(&cx.scope, &req.resource_arn)?;
    Ok(json(&ListTagsForResourceResponse { tags: Some(tags_of(s, &cx.scope, &name)?) }))
}

pub async fn tag_log_group(s: &Server, cx: &Call, req: TagLogGroupRequest) -> Result<Bytes> {
    add_tags(s, cx, &req.log_group_name, &req.tags).await?;
    Ok(Bytes::new())
}

pub async fn untag_log_group(s: &Server, cx: &Call, req: UntagLogGroupRequest) -> Result<Bytes> {
    remove_tags(s, cx, &req.log_group_name, &req.tags).await?;
    Ok(Bytes::new())
}

pub async fn list_tags_log_group(s: &Server, cx: &Call, req: ListTagsLogGroupRequest) -> Result<Bytes> {
    Ok(json(&ListTagsLogGroupResponse { tags: Some(tags_of(s, &cx.scope, &req.log_group_name)?) }))
}
