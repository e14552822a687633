//! Metric filters: PutMetricFilter, DescribeMetricFilters, DeleteMetricFilter. They live in
//! their group's document; the pattern is checked with `estiba_core::logs_pattern`. Turning
//! matches into CloudWatch datapoints comes with the metrics issue.

use bytes::Bytes;
use estiba_api::logs::*;
use estiba_api::ApiError;
use estiba_core::logs::{self as core, LogGroupDoc, LogsError, MetricFilterDoc};
use estiba_store::{Compare, Op, Txn};

use super::search::pattern;
use super::{find_group, groups_table, limit, now_ms, page, Result};
use crate::services::{json, Call};
use crate::Server;

/// Metric filters per log group, AWS's quota.
const MAX_FILTERS: usize = 100;

fn not_found() -> LogsError {
    LogsError::new(ErrorCode::ResourceNotFoundException, "The specified metric filter does not exist.")
}

pub async fn put_metric_filter(s: &Server, cx: &Call, req: PutMetricFilterRequest) -> Result<Bytes> {
    pattern(Some(&req.filter_pattern))?;
    let now = now_ms(cx);
    let transformations = serde_json::to_value(&req.metric_transformations).expect("serializes");
    s.transact(|st| {
        let d = find_group(st, &cx.scope, &req.log_group_name)?;
        let mut doc = d.value.clone();
        if !doc.metric_filters.contains_key(&req.filter_name) && doc.metric_filters.len() >= MAX_FILTERS {
            return Err(ApiError::new(ErrorCode::LimitExceededException, "Resource limit exceeded."));
        }
        let creation_time = doc.metric_filters.get(&req.filter_name).map_or(now, |f| f.creation_time);
        doc.metric_filters.insert(
            req.filter_name.clone(),
            MetricFilterDoc {
                filter_name: req.filter_name.clone(),
                filter_pattern: req.filter_pattern.clone(),
                creation_time,
                metric_transformations: transformations.clone(),
                apply_on_transformed_logs: req.apply_on_transformed_logs,
            },
        );
        let txn = Txn::new()
            .when(Compare::mod_revision(d.key.clone(), d.rev))
            .then(Op::put(d.key.clone(), serde_json::to_vec(&doc).expect("serializes")));
        Ok((txn, ()))
    })
    .await?;
    Ok(Bytes::new())
}

pub async fn delete_metric_filter(s: &Server, cx: &Call, req: DeleteMetricFilterRequest) -> Result<Bytes> {
    s.transact(|st| {
        let d = find_group(st, &cx.scope, &req.log_group_name)?;
        let mut doc = d.value.clone();
        doc.metric_filters.remove(&req.filter_name).ok_or_else(not_found)?;
        let txn = Txn::new()
            .when(Compare::mod_revision(d.key.clone(), d.rev))
            .then(Op::put(d.key.clone(), serde_json::to_vec(&doc).expect("serializes")));
        Ok::<_, ApiError>((txn, ()))
    })
    .await?;
    Ok(Bytes::new())
}

fn describe(group: &LogGroupDoc, f: &MetricFilterDoc) -> MetricFilter {
    MetricFilter {
        filter_name: Some(f.filter_name.clone()),
        filter_pattern: Some(f.filter_pattern.clone()),
        creation_time: Some(f.creation_time),
        log_group_name: Some(group.name.clone()),
        metric_transformations: serde_json::from_value(f.metric_transformations.clone()).ok(),
        apply_on_transformed_logs: f.apply_on_transformed_logs,
        emit_system_field_dimensions: None,
        field_selection_criteria: None,
    }
}

pub async fn describe_metric_filters(s: &Server, cx: &Call, req: DescribeMetricFiltersRequest) -> Result<Bytes> {
    if req.metric_name.is_some() != req.metric_namespace.is_some() {
        return Err(LogsError::invalid(
            "If you include the metricName parameter in your request, you must also include the metricNamespace parameter.",
        )
        .into());
    }
    let st = s.view.read();
    let groups: Vec<&LogGroupDoc> = match &req.log_group_name {
        Some(n) => vec![&find_group(&st, &cx.scope, n)?.value],
        None => st.docs::<LogGroupDoc>(groups_table(), &core::groups_prefix(&cx.scope)).map(|d| &d.value).collect(),
    };
    // The name prefix counts only with a group, as AWS documents.
    let prefix = req.log_group_name.as_ref().and(req.filter_name_prefix.as_deref()).unwrap_or("");
    let metric = req.metric_name.as_deref().zip(req.metric_namespace.as_deref());
    let all = groups.iter().flat_map(|g| {
        g.metric_filters
            .values()
            .filter(|f| f.filter_name.starts_with(prefix))
            .filter(|f| {
                metric.is_none_or(|(name, ns)| {
                    f.metric_transformations.as_array().into_iter().flatten().any(|t| {
                        t.get("metricName").and_then(|v| v.as_str()) == Some(name)
                            && t.get("metricNamespace").and_then(|v| v.as_str()) == Some(ns)
                    })
                })
            })
            .map(move |f| (*g, f))
    });
    // Group names hold no NUL: "<group>\0<filter>" orders as (group, filter).
    let p = page(all, |(g, f)| format!("{}\u{0}{}", g.name, f.filter_name), req.next_token.as_deref(), limit(req.limit, 50), false)?;
    let filters = p.items.iter().map(|(g, f)| describe(g, f)).collect();
    Ok(json(&DescribeMetricFiltersResponse { metric_filters: Some(filters), next_token: p.next_token }))
}
