//! FilterLogEvents: a group's events across its streams, in time order, that match a filter
//! pattern (`estiba_core::logs_pattern`). The pattern's required substrings go to the log
//! store's scan, which skips blocks without them before decoding any event. What
//! `aws logs tail` (and its `--follow`) calls.

use bytes::Bytes;
use estiba_api::logs::*;
use estiba_core::logs::{self as core, FilterToken, LogsError};
use estiba_core::logs_pattern::FilterPattern;
use estiba_logstore::{Scan, ScanCursor, Streams};

use super::{blocking, group_doc, limit, store_error, Result};
use crate::services::{json, Call};
use crate::Server;

/// A page holds at most this many bytes of events (26 bytes counted per event).
const MAX_PAGE_BYTES: usize = 1_048_576;
/// A call examines at most this many bytes of messages before it answers what it found with
/// a `nextToken`, as AWS ends pages that searched for long.
const MAX_SCANNED_BYTES: u64 = 256 << 20;

/// Parses a filter pattern with AWS's message for a bad one.
pub(super) fn pattern(p: Option<&str>) -> Result<FilterPattern, LogsError> {
    FilterPattern::parse(p.unwrap_or("")).map_err(|e| LogsError::invalid(e.to_string()))
}

pub async fn filter_log_events(s: &Server, cx: &Call, req: FilterLogEventsRequest) -> Result<Bytes> {
    let name = core::one_group(&cx.scope, req.log_group_name.as_deref(), req.log_group_identifier.as_deref())?;
    let streams = match (req.log_stream_names, req.log_stream_name_prefix) {
        (Some(_), Some(_)) => {
            return Err(LogsError::invalid(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.",
            )
            .into())
        }
        (Some(names), None) => Streams::Named(names),
        (None, Some(prefix)) => Streams::Prefix(prefix),
        (None, None) => Streams::All,
    };
    if let (Some(a), Some(b)) = (req.start_time, req.end_time) {
        if a > b {
            return Err(LogsError::invalid("startTime must be less than or equal to endTime.").into());
        }
    }
    let pat = pattern(req.filter_pattern.as_deref())?;
    let after = req.next_token.as_deref().map(FilterToken::decode).transpose()?;
    let g = group_doc(s, &cx.scope, name)?;
    let scan = Scan {
        streams: streams.clone(),
        start: req.start_time,
        end: req.end_time,
        required: pat.required_substrings(),
        after: after.map(|t| ScanCursor { timestamp: t.timestamp, stream: t.stream, seq: t.seq }),
        limit: limit(req.limit, 10_000),
        max_scanned_bytes: Some(MAX_SCANNED_BYTES),
    };
    let logs = s.logs.clone();
    let (mut page, searched) = blocking(move || {
        let page = logs.scan(&g.id, &scan, &|m| pat.matches(m))?;
        let searched: Vec<String> = match &streams {
            Streams::Named(n) => n.iter().filter(|n| logs.stream(&g.id, n).is_some()).cloned().collect(),
            Streams::Prefix(p) => logs.streams(&g.id, p).into_iter().map(|i| i.name).collect(),
            Streams::All => logs.streams(&g.id, "").into_iter().map(|i| i.name).collect(),
        };
        Ok::<_, estiba_logstore::Error>((page, searched))
    })
    .await?
    .map_err(store_error)?;
    let mut total = 0usize;
    let keep = page
        .events
        .iter()
        .take_while(|e| {
            total += e.message.len() + core::EVENT_OVERHEAD_BYTES;
            total <= MAX_PAGE_BYTES
        })
        .count()
        .max(1)
        .min(page.events.len());
    if keep < page.events.len() {
        page.events.truncate(keep);
        let last = page.events.last().expect("kept one");
        page.next = Some(ScanCursor { timestamp: last.timestamp, stream: last.stream.to_string(), seq: last.seq });
    }
    let complete = page.next.is_none();
    let next_token =
        page.next.map(|c| FilterToken { timestamp: c.timestamp, stream: c.stream, seq: c.seq }.encode());
    let events = page
        .events
        .into_iter()
        .map(|e| FilteredLogEvent {
            event_id: Some(core::event_id(e.timestamp, &e.stream, e.seq)),
            ingestion_time: Some(e.ingestion_time),
            log_stream_name: Some(e.stream.to_string()),
            message: Some(e.message),
            timestamp: Some(e.timestamp),
        })
        .collect();
    let searched = searched
        .into_iter()
        .map(|n| SearchedLogStream { log_stream_name: Some(n), searched_completely: Some(complete) })
        .collect();
    Ok(json(&FilterLogEventsResponse { events: Some(events), next_token, searched_log_streams: Some(searched) }))
}
