//! Logs Insights basics: StartQuery, GetQueryResults, StopQuery, DescribeQueries. A query
//! (`estiba_core::logs_insights`) runs on the blocking pool over log store scans of its
//! groups and time range; its pruning substrings go to the scan. Queries are kept in memory
//! (they are not state: AWS keeps results for 7 days, a restarted estiba forgets them), at
//! most [`KEPT`] of them, the oldest finished ones forgotten first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use estiba_api::logs::*;
use estiba_api::ApiError;
use estiba_core::logs::{self as core, LogsError};
use estiba_core::logs_insights::{InsightsEvent, Query, QueryOutput};
use estiba_core::Scope;
use estiba_logstore::{LogStore, Scan, Streams};

use super::{blocking, group_doc, now_ms, page, Result};
use crate::services::{json, Call};
use crate::Server;

/// Queries remembered, across accounts.
const KEPT: usize = 1000;
/// Queries running at once per account, AWS's quota.
const MAX_RUNNING: usize = 30;

struct QueryState {
    scope: Scope,
    query_string: String,
    /// Group names, as the caller gave them.
    groups: Vec<String>,
    create_time: i64,
    status: QueryStatus,
    cancel: Arc<AtomicBool>,
    output: Option<QueryOutput>,
    groups_scanned: usize,
    stats: bool,
    limit: Option<usize>,
    finished_ms: Option<i64>,
}

static QUERIES: LazyLock<Mutex<BTreeMap<String, QueryState>>> = LazyLock::new(Default::default);

fn not_found() -> LogsError {
    LogsError::new(ErrorCode::ResourceNotFoundException, "Query does not exist.")
}

fn has_stats(query: &str) -> bool {
    query.split('|').any(|stage| stage.trim_start().starts_with("stats"))
}

pub async fn start_query(s: &Server, cx: &Call, req: StartQueryRequest) -> Result<Bytes> {
    let names: Vec<String> = match (&req.log_group_name, &req.log_group_names, &req.log_group_identifiers) {
        (Some(n), None, None) => vec![n.clone()],
        (None, Some(ns), None) => ns.clone(),
        (None, None, Some(ids)) => {
            ids.iter().map(|i| core::group_name_of(&cx.scope, i).map(str::to_owned)).collect::<Result<_, _>>()?
        }
        _ => {
            return Err(LogsError::invalid(
                "Exactly one of logGroupName, logGroupNames or logGroupIdentifiers must be specified.",
            )
            .into())
        }
    };
    if names.is_empty() {
        return Err(LogsError::invalid("At least one log group must be specified.").into());
    }
    if req.end_time < req.start_time {
        return Err(LogsError::invalid("End time should not be before the start time.").into());
    }
    let query = Query::parse(&req.query_string)
        .map_err(|e| ApiError::new(ErrorCode::MalformedQueryException, e.to_string()))?;
    let mut groups = Vec::new();
    for n in &names {
        groups.push((group_doc(s, &cx.scope, n)?.id, format!("{}:{n}", cx.scope.account)));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let mut q = QUERIES.lock().expect("queries");
        let running = q
            .values()
            .filter(|s| s.scope.account == cx.scope.account)
            .filter(|s| matches!(s.status, QueryStatus::Scheduled | QueryStatus::Running))
            .count();
        if running >= MAX_RUNNING {
            return Err(ApiError::new(ErrorCode::LimitExceededException, "Resource limit exceeded."));
        }
        while q.len() >= KEPT {
            let oldest = q.iter().filter(|(_, s)| s.finished_ms.is_some()).min_by_key(|(_, s)| s.create_time);
            let Some(k) = oldest.map(|(k, _)| k.clone()) else { break };
            q.remove(&k);
        }
        q.insert(
            id.clone(),
            QueryState {
                scope: cx.scope.clone(),
                query_string: req.query_string.clone(),
                groups: names,
                create_time: now_ms(cx),
                status: QueryStatus::Scheduled,
                cancel: cancel.clone(),
                output: None,
                groups_scanned: groups.len(),
                stats: has_stats(&req.query_string),
                limit: req.limit.map(|l| l.max(1) as usize),
                finished_ms: None,
            },
        );
    }
    let (logs, qid) = (s.logs.clone(), id.clone());
    let (start, end) = (req.start_time.saturating_mul(1000), req.end_time.saturating_mul(1000).saturating_add(999));
    tokio::spawn(async move {
        let run_id = qid.clone();
        let r = blocking(move || run(&logs, &run_id, &query, &groups, start, end, &cancel)).await;
        let mut q = QUERIES.lock().expect("queries");
        if let Some(st) = q.get_mut(&qid) {
            st.finished_ms = Some((crate::now() * 1000.0) as i64);
            match r {
                Ok(Ok(out)) if st.status != QueryStatus::Cancelled => {
                    st.status = QueryStatus::Complete;
                    st.output = Some(out);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) | Err(ApiError { message: e, .. }) => {
                    tracing::warn!(query = %qid, error = %e, "Insights query failed");
                    st.status = QueryStatus::Failed;
                }
            }
        }
    });
    Ok(json(&StartQueryResponse { query_id: Some(id) }))
}

/// Runs a query over its groups' events in `[start, end]` (ms).
fn run(
    logs: &LogStore,
    id: &str,
    query: &Query,
    groups: &[(String, String)],
    start: i64,
    end: i64,
    cancel: &AtomicBool,
) -> std::result::Result<QueryOutput, String> {
    if let Some(st) = QUERIES.lock().expect("queries").get_mut(id) {
        if st.status == QueryStatus::Scheduled {
            st.status = QueryStatus::Running;
        }
    }
    let required = query.required_substrings();
    let mut runner = query.runner();
    for (gid, label) in groups {
        let mut scan = Scan {
            streams: Streams::All,
            start: Some(start),
            end: Some(end),
            required: required.clone(),
            after: None,
            limit: 10_000,
            max_scanned_bytes: None,
        };
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Ok(QueryOutput::default());
            }
            let page = logs.scan(gid, &scan, &|m| required.iter().all(|r| m.contains(r.as_str()))).map_err(|e| e.to_string())?;
            for e in &page.events {
                runner.push(&InsightsEvent {
                    timestamp: e.timestamp,
                    ingestion_time: e.ingestion_time,
                    message: &e.message,
                    log_stream: &e.stream,
                    log_group: label,
                });
            }
            match page.next {
                Some(c) => scan.after = Some(c),
                None => break,
            }
        }
    }
    Ok(runner.finish())
}

pub async fn get_query_results(_s: &Server, cx: &Call, req: GetQueryResultsRequest) -> Result<Bytes> {
    let q = QUERIES.lock().expect("queries");
    let st = q.get(&req.query_id).filter(|s| s.scope == cx.scope).ok_or_else(not_found)?;
    let out = st.output.clone().unwrap_or_default();
    let mut rows = out.rows;
    if let Some(l) = st.limit {
        rows.truncate(l);
    }
    let results = rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut fields: Vec<ResultField> =
                row.into_iter().map(|(f, v)| ResultField { field: Some(f), value: Some(v) }).collect();
            if !st.stats {
                // An opaque pointer to the record (GetLogRecord is not served).
                use base64::Engine;
                let ptr = base64::engine::general_purpose::STANDARD.encode(format!("{}/{i}", req.query_id));
                fields.push(ResultField { field: Some("@ptr".into()), value: Some(ptr) });
            }
            fields
        })
        .collect();
    let statistics = QueryStatistics {
        records_matched: Some(out.records_matched as f64),
        records_scanned: Some(out.records_scanned as f64),
        bytes_scanned: Some(out.bytes_scanned as f64),
        log_groups_scanned: Some(st.groups_scanned as f64),
        estimated_bytes_skipped: None,
        estimated_records_skipped: None,
    };
    Ok(json(&GetQueryResultsResponse {
        results: Some(results),
        statistics: Some(statistics),
        status: Some(st.status),
        query_language: Some(QueryLanguage::Cwli),
        encryption_key: None,
        next_token: None,
    }))
}

pub async fn stop_query(_s: &Server, cx: &Call, req: StopQueryRequest) -> Result<Bytes> {
    let mut q = QUERIES.lock().expect("queries");
    let st = q.get_mut(&req.query_id).filter(|s| s.scope == cx.scope).ok_or_else(not_found)?;
    let running = matches!(st.status, QueryStatus::Scheduled | QueryStatus::Running);
    if running {
        st.cancel.store(true, Ordering::Relaxed);
        st.status = QueryStatus::Cancelled;
    }
    Ok(json(&StopQueryResponse { success: Some(running) }))
}

pub async fn describe_queries(_s: &Server, cx: &Call, req: DescribeQueriesRequest) -> Result<Bytes> {
    let q = QUERIES.lock().expect("queries");
    let mut mine: Vec<(&String, &QueryState)> = q
        .iter()
        .filter(|(_, s)| s.scope == cx.scope)
        .filter(|(_, s)| req.status.is_none_or(|w| w == s.status))
        .filter(|(_, s)| req.log_group_name.as_ref().is_none_or(|g| s.groups.contains(g)))
        .collect();
    // Newest first.
    let key = |(id, s): &(&String, &QueryState)| format!("{:020}{id}", s.create_time);
    mine.sort_by_key(|e| std::cmp::Reverse(key(e)));
    let p = page(mine, key, req.next_token.as_deref(), super::limit(req.max_results, 1000), true)?;
    let queries = p
        .items
        .into_iter()
        .map(|(id, s)| QueryInfo {
            query_id: Some(id.clone()),
            query_string: Some(s.query_string.clone()),
            status: Some(s.status),
            create_time: Some(s.create_time),
            log_group_name: s.groups.first().cloned(),
            query_language: Some(QueryLanguage::Cwli),
            query_duration: s.finished_ms.map(|f| f - s.create_time),
            bytes_scanned: s.output.as_ref().map(|o| o.bytes_scanned as f64),
            user_identity: None,
        })
        .collect();
    Ok(json(&DescribeQueriesResponse { queries: Some(queries), next_token: p.next_token }))
}
