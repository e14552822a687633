//! A follower takes the leader's log and metric history before it tails the leader's ingest
//! ([`crate::replication`]): what earlier leaders ingested is not in the current term's ring,
//! so a server that joins later (or comes back, or fell behind the ring) would lack it.
//!
//! When [`crate::replication::follow`] meets a term it does not know (a new leader, or its
//! first contact) or records that left the ring before it read them, it calls [`run`]:
//!
//! 1. `GET catchup/metrics` (under [`crate::peers::PREFIX`]): the leader's metric store
//!    export, taken while metric puts wait, with the ring's epoch and last record number at
//!    that moment ([`crate::replication::Replication::metrics_cut`]). The follower imports it
//!    (each exported series replaces its own copy, so nothing is counted twice) and later
//!    tails the ring after that number.
//! 2. `GET catchup/streams`: every log stream the leader holds (group id, name, creation time,
//!    next sequence number). For each stream the follower lacks or is behind on,
//! 3. `GET catchup/events?group=&stream=&from=`: the leader's events from that sequence
//!    number on (from the one before, to check that the follower's last event is the
//!    leader's), a page at a time, appended with their own sequence numbers and ingestion
//!    times. These are read after the cut, so they cover every log record up to it; the
//!    appends are numbered, so one the ring later brings again is a duplicate and skipped.
//!
//! The leader serves these only while it records its ingest (it leads a shared prefix). The
//! follower writes its log store directly (never through the recording wrappers) and stops
//! should it lead meanwhile.
//!
//! Never deleted: what the leader lacks (a leader may itself lack history, having led before
//! it caught up: a follower's copy is then the only one; deletions reach followers as the
//! ring's records). A stream the follower holds otherwise than the leader (made again while it
//! was away, more events, other events under the same numbers) is kept and reported as
//! diverged. Not copied: a group's retention cutoff (the leader's next `Expire` applies it).
//! An export is made for each catch-up while metric puts wait: fine for a server that joins or
//! a new term, costly for a large store caught up often.
//!
//! May not: write the versioned store.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use estiba_logstore::{Cursor, Read};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::{self, Body};
use crate::replication::message;
use crate::Server;

/// The most events one `catchup/events` answer carries.
const PAGE_EVENTS: usize = 2000;
/// How long a follower waits for one catch-up answer (a whole metric store may be large).
const TIMEOUT: Duration = Duration::from_secs(120);
const EPOCH_HEADER: &str = "x-estiba-epoch";
const AFTER_HEADER: &str = "x-estiba-after";

/// A stream as `catchup/streams` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub group: String,
    pub stream: String,
    pub created: i64,
    pub next: u64,
}

/// An event as `catchup/events` carries it: `[seq, timestamp, ingestion time, message]`.
type WireEvent = (u64, i64, i64, String);

/// Why a catch-up did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the leader did not answer {what}: {why}")]
    Leader { what: &'static str, why: String },
    #[error("the leader's metric export was not imported: {0}")]
    Metrics(#[from] estiba_metricstore::Error),
    #[error("the leader's log stream {stream:?} of group {group:?} was not copied: {why}")]
    Logs { group: String, stream: String, why: String },
    #[error("the catch-up's work stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("this server no longer follows")]
    NotFollowing,
}

fn leading(server: &Server) -> bool {
    server.leader.load(Ordering::Relaxed)
}

fn refuse() -> Response<Body> {
    message(StatusCode::CONFLICT, "this server does not lead")
}

/// `GET catchup/metrics`: the metric export, with the ring's epoch and head in headers.
pub async fn serve_metrics(server: &Arc<Server>) -> Response<Body> {
    if !leading(server) {
        return refuse();
    }
    let s = server.clone();
    let Ok(Some((epoch, after, export))) =
        tokio::task::spawn_blocking(move || s.replication.metrics_cut(&s.metrics)).await
    else {
        return refuse();
    };
    let mut r = body::response(StatusCode::OK, Bytes::from(export), "application/octet-stream");
    let h = r.headers_mut();
    h.insert(EPOCH_HEADER, epoch.parse().expect("an epoch is hex"));
    h.insert(AFTER_HEADER, after.into());
    r
}

/// `GET catchup/streams`: every stream of the log store.
pub async fn serve_streams(server: &Arc<Server>) -> Response<Body> {
    if !leading(server) {
        return refuse();
    }
    let s = server.clone();
    let list = tokio::task::spawn_blocking(move || inventory(&s.logs)).await.unwrap_or_default();
    body::response(StatusCode::OK, Bytes::from(serde_json::to_vec(&list).unwrap_or_default()), "application/json")
}

fn inventory(logs: &estiba_logstore::LogStore) -> Vec<StreamEntry> {
    let mut out = Vec::new();
    for group in logs.groups() {
        for s in logs.streams(&group, "") {
            out.push(StreamEntry { group: group.clone(), stream: s.name, created: s.creation_time, next: s.next_seq });
        }
    }
    out
}

/// `GET catchup/events?group=G&stream=S&from=N`: up to [`PAGE_EVENTS`] events from seq `N`.
pub async fn serve_events(server: &Arc<Server>, query: &str) -> Response<Body> {
    if !leading(server) {
        return refuse();
    }
    let (mut group, mut stream, mut from) = (String::new(), String::new(), 0);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "group" => group = v.into_owned(),
            "stream" => stream = v.into_owned(),
            "from" => from = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let s = server.clone();
    let read = Read { cursor: Some(Cursor(from)), forward: true, limit: PAGE_EVENTS, ..Read::default() };
    let page = tokio::task::spawn_blocking(move || s.logs.read(&group, &stream, &read)).await;
    match page {
        Ok(Ok(page)) => {
            let events: Vec<WireEvent> =
                page.events.into_iter().map(|e| (e.seq, e.timestamp, e.ingestion_time, e.message)).collect();
            body::response(
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(&events).unwrap_or_default()),
                "application/json",
            )
        }
        // Deleted since it was listed: nothing more to copy.
        Ok(Err(estiba_logstore::Error::NoSuchStream { .. })) => {
            body::response(StatusCode::OK, Bytes::from_static(b"[]"), "application/json")
        }
        Ok(Err(e)) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn get(server: &Server, url: &str, token: &str, what: &'static str) -> Result<reqwest::Response, Error> {
    let leader = |why: String| Error::Leader { what, why };
    let resp = server.peers.client().get(url).bearer_auth(token).timeout(TIMEOUT).send().await;
    let resp = resp.map_err(|e| leader(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(leader(format!("HTTP {}", resp.status())));
    }
    Ok(resp)
}

/// What a follower does with the leader's list of streams.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// (leader's stream, copy from this seq): streams the follower lacks (from 0) or is behind on.
    pub copy: Vec<(StreamEntry, u64)>,
    /// Streams the follower holds otherwise than the leader (another creation time, or more
    /// events): kept as they are, and reported.
    pub diverged: Vec<(String, String)>,
}

/// Compares the leader's streams with the follower's (`local`: group → stream → (creation
/// time, next seq)). Nothing is ever deleted for the leader's lack of it: a leader may itself
/// lack history (a server that led before it caught up), and a follower's copy is then the
/// only one; deletions reach followers as the ring's records.
pub fn plan(leader: Vec<StreamEntry>, local: &BTreeMap<String, BTreeMap<String, (i64, u64)>>) -> Plan {
    let mut out = Plan::default();
    for e in leader {
        match local.get(&e.group).and_then(|g| g.get(&e.stream)) {
            None => out.copy.push((e, 0)),
            Some(&(created, next)) if created == e.created && next <= e.next => {
                if next < e.next {
                    out.copy.push((e, next));
                }
            }
            Some(_) => out.diverged.push((e.group, e.stream)),
        }
    }
    out
}

/// Takes the leader's history (module doc); returns the leader's epoch and the ring record
/// to continue after. An error means the metric store is as it was; once the metrics are
/// imported, the cut is returned even when copying the logs failed (each log failure is
/// logged), since what the ring replays after the cut must not count metrics twice.
pub async fn run(server: &Arc<Server>, leader: &str, token: &str) -> Result<(String, u64), Error> {
    let base = format!("{leader}{}catchup/", crate::peers::PREFIX);
    // 1. Metrics, with the cut.
    let resp = get(server, &format!("{base}metrics"), token, "catchup/metrics").await?;
    let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(epoch), Some(after)) = (header(EPOCH_HEADER), header(AFTER_HEADER).and_then(|a| a.parse::<u64>().ok()))
    else {
        return Err(Error::Leader { what: "catchup/metrics", why: "no epoch in the answer".into() });
    };
    let export = resp.bytes().await.map_err(|e| Error::Leader { what: "catchup/metrics", why: e.to_string() })?;
    if !crate::replication::follower(server) {
        return Err(Error::NotFollowing);
    }
    let s = server.clone();
    let series = tokio::task::spawn_blocking(move || s.metrics.import(&export)).await??;
    // 2 and 3. The logs, written to the store directly (never recorded: should this server
    // lead meanwhile, it stops copying).
    let mut copy = Ok(LogCopy::default());
    for attempt in 0..=crate::replication::CATCH_UP_RETRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        copy = copy_logs(server, &base, token).await;
        if copy.is_ok() || !crate::replication::follower(server) {
            break;
        }
    }
    match copy {
        Ok(c) => tracing::info!(
            leader,
            epoch,
            after,
            series,
            streams = c.streams,
            events = c.events,
            diverged = c.diverged,
            "took the leader's log and metric history"
        ),
        Err(e) => tracing::warn!(
            leader,
            epoch,
            after,
            series,
            error = %e,
            "took the leader's metric history, but not all its logs: what was not copied is missing here"
        ),
    }
    Ok((epoch, after))
}

#[derive(Default)]
struct LogCopy {
    streams: usize,
    events: u64,
    diverged: usize,
}

async fn copy_logs(server: &Arc<Server>, base: &str, token: &str) -> Result<LogCopy, Error> {
    let resp = get(server, &format!("{base}streams"), token, "catchup/streams").await?;
    let theirs: Vec<StreamEntry> =
        resp.json().await.map_err(|e| Error::Leader { what: "catchup/streams", why: e.to_string() })?;
    let s = server.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let mut local: BTreeMap<String, BTreeMap<String, (i64, u64)>> = BTreeMap::new();
        for e in inventory(&s.logs) {
            local.entry(e.group).or_default().insert(e.stream, (e.created, e.next));
        }
        plan(theirs, &local)
    })
    .await?;
    for (group, stream) in &plan.diverged {
        tracing::warn!(
            group,
            stream,
            "a log stream differs from the leader's (made again, or more events): kept as it is"
        );
    }
    let mut out = LogCopy { streams: plan.copy.len(), diverged: plan.diverged.len(), ..LogCopy::default() };
    for (e, from) in plan.copy {
        if !crate::replication::follower(server) {
            return Err(Error::NotFollowing);
        }
        let s = server.clone();
        let (group, stream, created) = (e.group.clone(), e.stream.clone(), e.created);
        tokio::task::spawn_blocking(move || s.logs.ensure_stream(&group, &stream, created))
            .await?
            .map_err(|x| logs_error(&e.group, &e.stream, x))?;
        // From the event before `from`, to check that the follower's last one is the leader's.
        let mut at = from.saturating_sub(1);
        let mut check = from > 0;
        while at < e.next {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("group", &e.group)
                .append_pair("stream", &e.stream)
                .append_pair("from", &at.to_string())
                .finish();
            let resp = get(server, &format!("{base}events?{query}"), token, "catchup/events").await?;
            let mut events: Vec<WireEvent> =
                resp.json().await.map_err(|x| Error::Leader { what: "catchup/events", why: x.to_string() })?;
            // Checked only when both still hold that event: either may have let it expire
            // (retention), and then there is nothing to compare.
            if std::mem::take(&mut check) && events.first().is_some_and(|x| x.0 == from - 1) {
                let s = server.clone();
                let (group, stream) = (e.group.clone(), e.stream.clone());
                let mine = tokio::task::spawn_blocking(move || local_event(&s, &group, &stream, from - 1)).await?;
                if mine.is_some() && mine.as_ref() != events.first() {
                    tracing::warn!(
                        group = e.group,
                        stream = e.stream,
                        "a log stream differs from the leader's (other events under the same numbers): kept as it is"
                    );
                    out.diverged += 1;
                    out.streams -= 1;
                    break;
                }
            }
            // The event before `from` is the follower's already (or expired): never appended.
            events.retain(|x| x.0 >= from);
            let Some(last) = events.last().map(|x| x.0) else { break };
            out.events += events.len() as u64;
            let s = server.clone();
            let (group, stream) = (e.group.clone(), e.stream.clone());
            tokio::task::spawn_blocking(move || append_runs(&s, &group, &stream, &events)).await??;
            at = last + 1;
        }
    }
    Ok(out)
}

/// The follower's own event `seq` of a stream, as `catchup/events` would carry it.
fn local_event(server: &Server, group: &str, stream: &str, seq: u64) -> Option<WireEvent> {
    let read = Read { cursor: Some(Cursor(seq)), forward: true, limit: 1, ..Read::default() };
    let e = server.logs.read(group, stream, &read).ok()?.events.into_iter().next()?;
    (e.seq == seq).then_some((e.seq, e.timestamp, e.ingestion_time, e.message))
}

fn logs_error(group: &str, stream: &str, e: estiba_logstore::Error) -> Error {
    Error::Logs { group: group.into(), stream: stream.into(), why: e.to_string() }
}

/// Appends events with their own numbers and ingestion times: one append per run of
/// consecutive numbers taken at one time.
fn append_runs(server: &Server, group: &str, stream: &str, events: &[WireEvent]) -> Result<(), Error> {
    let runs = events.chunk_by(|a, b| b.0 == a.0 + 1 && b.2 == a.2);
    for run in runs {
        let pairs = run.iter().map(|(_, t, _, m)| (*t, m.as_str()));
        server
            .logs
            .append_iter(group, stream, pairs, Some(run[0].0), run[0].2)
            .map_err(|e| logs_error(group, stream, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(group: &str, stream: &str, created: i64, next: u64) -> StreamEntry {
        StreamEntry { group: group.into(), stream: stream.into(), created, next }
    }

    #[test]
    fn a_plan_copies_what_is_missing_and_keeps_what_differs() {
        let mut local: BTreeMap<String, BTreeMap<String, (i64, u64)>> = BTreeMap::new();
        let mut put = |g: &str, s: &str, created: i64, next: u64| {
            local.entry(g.into()).or_default().insert(s.into(), (created, next));
        };
        put("g1", "same", 10, 5);
        put("g1", "behind", 10, 3);
        put("g1", "ahead", 10, 9);
        put("g1", "recreated", 10, 4);
        put("g1", "only-here", 10, 4);
        put("g2", "group-only-here", 10, 1);
        let leader = vec![
            entry("g1", "same", 10, 5),
            entry("g1", "behind", 10, 7),
            entry("g1", "ahead", 10, 6),
            entry("g1", "recreated", 20, 2),
            entry("g1", "new-empty", 30, 0),
            entry("g3", "new", 30, 4),
        ];
        let p = plan(leader, &local);
        let copy: Vec<(&str, &str, u64)> = p.copy.iter().map(|(e, f)| (&*e.group, &*e.stream, *f)).collect();
        assert_eq!(copy, vec![("g1", "behind", 3), ("g1", "new-empty", 0), ("g3", "new", 0)]);
        // Nothing is deleted: what differs is kept and reported, what only the follower has stays.
        assert_eq!(p.diverged, vec![("g1".into(), "ahead".into()), ("g1".into(), "recreated".into())]);
    }
}
