//! StartLiveTail: an event stream (`application/vnd.amazon.eventstream`) of the events
//! appended to up to 10 groups from now on, filtered by stream names or prefixes and a filter
//! pattern. The answer is `initial-response` (botocore reads AWS JSON's other output members
//! from it), `sessionStart`, then a `sessionUpdate` every second with what arrived (at most
//! 500 events a second, else `sampled`), until the client goes away or three hours pass
//! (`SessionTimeoutException`).
//!
//! The operation has the host prefix `stream-`: botocore sends it to
//! `http://stream-127.0.0.1:4566` unless host prefix injection is off
//! (`AWS_DISABLE_HOST_PREFIX_INJECTION=true`, `disable_host_prefix_injection = true` in the
//! AWS config file, or boto3's `Config(inject_host_prefix=False)`); see the README.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use estiba_api::logs::*;
use estiba_api::protocol::eventstream;
use estiba_core::logs::{self as core, LogsError};
use tokio::sync::broadcast::error::RecvError;

use super::search::pattern;
use super::{group_doc, Result};
use crate::services::{Call, EventStream};
use crate::Server;

/// How long a session lasts, as AWS's do.
const SESSION: Duration = Duration::from_secs(3 * 3600);
/// Events sent per second at most; beyond it the update is `sampled`.
const PER_UPDATE: usize = 500;

fn frame(event_type: &str, v: &impl serde::Serialize) -> std::io::Result<Bytes> {
    Ok(Bytes::from(eventstream::event(event_type, &serde_json::to_vec(v).expect("serializes"))))
}

pub async fn start_live_tail(s: &Server, cx: &Call, req: StartLiveTailRequest) -> Result<EventStream> {
    let ids = &req.log_group_identifiers;
    if ids.is_empty() || ids.len() > 10 {
        return Err(LogsError::invalid(
            "1 validation error detected: Value at 'logGroupIdentifiers' failed to satisfy constraint: \
             Member must have length less than or equal to 10",
        )
        .into());
    }
    if req.log_stream_names.is_some() && req.log_stream_name_prefixes.is_some() {
        return Err(LogsError::invalid("Only one of logStreamNames or logStreamNamePrefixes can be provided.").into());
    }
    if (req.log_stream_names.is_some() || req.log_stream_name_prefixes.is_some()) && ids.len() != 1 {
        return Err(LogsError::invalid(
            "logStreamNames and logStreamNamePrefixes can only be used with a single log group.",
        )
        .into());
    }
    let pat = pattern(req.log_event_filter_pattern.as_deref())?;
    // Group id → the ARN events are reported under.
    let mut groups: HashMap<String, String> = HashMap::new();
    let mut arns = Vec::new();
    for id in ids {
        let name = core::group_name_of(&cx.scope, id)?;
        let g = group_doc(s, &cx.scope, name)?;
        let arn = core::group_arn(&cx.scope, name);
        groups.insert(g.id, arn.clone());
        arns.push(arn);
    }
    let names = req.log_stream_names.clone().unwrap_or_default();
    let prefixes = req.log_stream_name_prefixes.clone().unwrap_or_default();
    let wanted = move |stream: &str| {
        (names.is_empty() || names.iter().any(|n| n == stream))
            && (prefixes.is_empty() || prefixes.iter().any(|p| stream.starts_with(p.as_str())))
    };
    // Subscribed before answering: nothing appended after the answer is missed.
    let mut rx = s.logs.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(16);
    let start = LiveTailSessionStart {
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        session_id: Some(uuid::Uuid::new_v4().to_string()),
        log_group_identifiers: Some(arns),
        log_stream_names: req.log_stream_names,
        log_stream_name_prefixes: req.log_stream_name_prefixes,
        log_event_filter_pattern: req.log_event_filter_pattern,
    };
    tokio::spawn(async move {
        let opening = [frame("initial-response", &serde_json::json!({})), frame("sessionStart", &start)];
        for f in opening {
            if tx.send(f).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + SESSION;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut batch: Vec<LiveTailSessionLogEvent> = Vec::new();
        let mut sampled = false;
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(t) => {
                        let Some(arn) = groups.get(&*t.group) else { continue };
                        for e in t.events.iter().filter(|e| wanted(&e.stream) && pat.matches(&e.message)) {
                            if batch.len() >= PER_UPDATE {
                                sampled = true;
                                break;
                            }
                            batch.push(LiveTailSessionLogEvent {
                                ingestion_time: Some(e.ingestion_time),
                                log_group_identifier: Some(arn.clone()),
                                log_stream_name: Some(e.stream.to_string()),
                                message: Some(e.message.clone()),
                                timestamp: Some(e.timestamp),
                            });
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(lost = n, "live tail lagged");
                        sampled = true;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let update = LiveTailSessionUpdate {
                        session_metadata: Some(LiveTailSessionMetadata { sampled: Some(sampled) }),
                        session_results: Some(std::mem::take(&mut batch)),
                    };
                    sampled = false;
                    if tx.send(frame("sessionUpdate", &update)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let body = serde_json::json!({"message": "Session timed out after 3 hours."});
                    let end = eventstream::exception("SessionTimeoutException", &serde_json::to_vec(&body).expect("json"));
                    let _ = tx.send(Ok(Bytes::from(end))).await;
                    return;
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(out)
}
