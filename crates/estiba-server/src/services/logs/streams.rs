//! Log streams and their events: CreateLogStream, DeleteLogStream, DescribeLogStreams,
//! PutLogEvents and GetLogEvents, over the log store.

use bytes::Bytes;
use estiba_api::logs::*;
use estiba_core::logs::{self as core, LogsError, StreamToken};
use estiba_logstore::{Cursor, Read, StreamInfo};

use super::{blocking, group_doc, limit, now_ms, page, store_error, Result};
use crate::services::{json, Call};
use crate::Server;

/// GetLogEvents answers at most this many bytes of events (26 bytes counted per event, as
/// PutLogEvents counts them).
const MAX_PAGE_BYTES: usize = 1_048_576;

pub async fn create_log_stream(s: &Server, cx: &Call, req: CreateLogStreamRequest) -> Result<Bytes> {
    let g = group_doc(s, &cx.scope, &req.log_group_name)?;
    let (logs, repl, now) = (s.logs.clone(), s.replication.clone(), now_ms(cx));
    blocking(move || repl.create_stream(&logs, &g.id, &req.log_stream_name, now)).await?.map_err(store_error)?;
    Ok(Bytes::new())
}

pub async fn delete_log_stream(s: &Server, cx: &Call, req: DeleteLogStreamRequest) -> Result<Bytes> {
    let g = group_doc(s, &cx.scope, &req.log_group_name)?;
    let (logs, repl) = (s.logs.clone(), s.replication.clone());
    blocking(move || match logs.stream(&g.id, &req.log_stream_name) {
        None => Err(estiba_logstore::Error::NoSuchStream { group: g.id.clone(), stream: req.log_stream_name.clone() }),
        Some(_) => repl.delete_stream(&logs, &g.id, &req.log_stream_name),
    })
    .await?
    .map_err(store_error)?;
    Ok(Bytes::new())
}

fn describe(cx: &Call, group: &str, i: StreamInfo) -> LogStream {
    LogStream {
        arn: Some(core::stream_arn(&cx.scope, group, &i.name)),
        creation_time: Some(i.creation_time),
        first_event_timestamp: i.first_event_timestamp,
        last_event_timestamp: i.last_event_timestamp,
        last_ingestion_time: i.last_ingestion_time,
        stored_bytes: Some(i.stored_bytes as i64),
        upload_sequence_token: Some(core::sequence_token(i.next_seq)),
        log_stream_name: Some(i.name),
    }
}

pub async fn describe_log_streams(s: &Server, cx: &Call, req: DescribeLogStreamsRequest) -> Result<Bytes> {
    let name = core::one_group(&cx.scope, req.log_group_name.as_deref(), req.log_group_identifier.as_deref())?;
    let by_time = req.order_by == Some(OrderBy::LastEventTime);
    let prefix = req.log_stream_name_prefix.clone().unwrap_or_default();
    if by_time && !prefix.is_empty() {
        return Err(LogsError::invalid("Cannot order by LastEventTime with a logStreamNamePrefix.").into());
    }
    let g = group_doc(s, &cx.scope, name)?;
    let logs = s.logs.clone();
    let mut streams = blocking(move || logs.streams(&g.id, &prefix)).await?;
    let desc = req.descending.unwrap_or(false);
    // Sort keys that order as strings: the name, or the last event's time (streams without
    // events first) then the name.
    let key = |i: &StreamInfo| {
        if by_time {
            format!("{:020}/{}", i.last_event_timestamp.unwrap_or(0).max(0), i.name)
        } else {
            i.name.clone()
        }
    };
    streams.sort_by_cached_key(key);
    if desc {
        streams.reverse();
    }
    let p = page(streams, key, req.next_token.as_deref(), limit(req.limit, 50), desc)?;
    let out = p.items.into_iter().map(|i| describe(cx, name, i)).collect();
    Ok(json(&DescribeLogStreamsResponse { log_streams: Some(out), next_token: p.next_token }))
}

pub async fn put_log_events(s: &Server, cx: &Call, req: PutLogEventsRequest) -> Result<Bytes> {
    let g = group_doc(s, &cx.scope, &req.log_group_name)?;
    let now = now_ms(cx);
    let sizes: Vec<(i64, usize)> = req.log_events.iter().map(|e| (e.timestamp, e.message.len())).collect();
    let verdict = core::check_batch(&sizes, now, g.retention_in_days)?;
    let (events, accepted) = (req.log_events, verdict.accepted.clone());
    let (logs, repl, stream) = (s.logs.clone(), s.replication.clone(), req.log_stream_name);
    let next_seq = blocking(move || {
        let events = &events[accepted];
        if events.is_empty() {
            logs.stream(&g.id, &stream)
                .map(|i| i.next_seq)
                .ok_or(estiba_logstore::Error::NoSuchStream { group: g.id.clone(), stream: stream.clone() })
        } else {
            let pairs = events.iter().map(|e| (e.timestamp, e.message.as_str()));
            repl.append(&logs, &g.id, &stream, pairs, None, now).map(|a| a.next_seq)
        }
    })
    .await?
    .map_err(store_error)?;
    let rejected = verdict.rejected_any().then(|| RejectedLogEventsInfo {
        too_old_log_event_end_index: verdict.too_old_end.map(|i| i as i32),
        expired_log_event_end_index: verdict.expired_end.map(|i| i as i32),
        too_new_log_event_start_index: verdict.too_new_start.map(|i| i as i32),
    });
    Ok(json(&PutLogEventsResponse {
        next_sequence_token: Some(core::sequence_token(next_seq)),
        rejected_log_events_info: rejected,
        rejected_entity_info: None,
    }))
}

pub async fn get_log_events(s: &Server, cx: &Call, req: GetLogEventsRequest) -> Result<Bytes> {
    let name = core::one_group(&cx.scope, req.log_group_name.as_deref(), req.log_group_identifier.as_deref())?;
    let token = req.next_token.as_deref().map(StreamToken::parse).transpose()?;
    let g = group_doc(s, &cx.scope, name)?;
    let from_head = req.start_from_head.unwrap_or(false);
    let (cursor, forward) = match token {
        Some(StreamToken::Forward(p)) => (Some(Cursor(p)), true),
        Some(StreamToken::Backward(p)) => (Some(Cursor(p)), false),
        None => (None, from_head),
    };
    let read =
        Read { start: req.start_time, end: req.end_time, cursor, forward, from_head, limit: limit(req.limit, 10_000) };
    let (logs, stream) = (s.logs.clone(), req.log_stream_name);
    let mut page = blocking(move || {
        if logs.stream(&g.id, &stream).is_none() {
            return Err(estiba_logstore::Error::NoSuchStream { group: g.id.clone(), stream: stream.clone() });
        }
        logs.read(&g.id, &stream, &read)
    })
    .await?
    .map_err(store_error)?;
    // At most 1 MB: keep the events nearest where the read started.
    let mut total = 0usize;
    let fits = |e: &estiba_logstore::StoredEvent, total: &mut usize| {
        *total += e.message.len() + core::EVENT_OVERHEAD_BYTES;
        *total <= MAX_PAGE_BYTES
    };
    if forward {
        let keep = page.events.iter().take_while(|e| fits(e, &mut total)).count();
        if keep < page.events.len() {
            page.events.truncate(keep.max(1));
            page.forward = Cursor(page.events.last().map_or(page.backward.0, |e| e.seq + 1));
        }
    } else {
        let keep = page.events.iter().rev().take_while(|e| fits(e, &mut total)).count();
        if keep < page.events.len() {
            let drop = page.events.len() - keep.max(1);
            page.events.drain(..drop);
            page.backward = Cursor(page.events.first().map_or(page.forward.0, |e| e.seq));
        }
    }
    let events = page
        .events
        .into_iter()
        .map(|e| OutputLogEvent {
            ingestion_time: Some(e.ingestion_time),
            message: Some(e.message),
            timestamp: Some(e.timestamp),
        })
        .collect();
    Ok(json(&GetLogEventsResponse {
        events: Some(events),
        next_forward_token: Some(StreamToken::Forward(page.forward.0).format()),
        next_backward_token: Some(StreamToken::Backward(page.backward.0).format()),
    }))
}
