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
//!    next sequence number). The follower deletes streams the leader lacks or holds as
//!    another incarnation (another creation time, or fewer events than the follower has:
//!    the follower had records the leader never got), then for each stream it is behind on,
//!    3. `GET catchup/events?group=&stream=&from=`: the leader's events from that sequence
//!    number on, a page at a time, appended with their own sequence numbers and ingestion
//!    times. These are read after the cut, so they cover every log record up to it; the
//!    appends are numbered, so one the ring later brings again is a duplicate and skipped.
//!
//! The leader serves these only while it records its ingest (it leads a shared prefix).
//!
//! Not copied: a group's retention cutoff (the leader's next `Expire` record applies it);
//! deletions are mirrored, so a follower never keeps what its leader no longer holds.
//!
//! May not: write the versioned store.

use std::collections::{BTreeMap, BTreeSet};
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

/// What a follower does to its own log store before copying events: the streams to copy and
/// the sequence number to copy each from.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Streams of the follower the leader lacks, or holds as another incarnation.
    pub delete: Vec<(String, String)>,
    /// Groups of the follower the leader has no stream of.
    pub delete_groups: Vec<String>,
    /// (leader's stream, copy from this seq).
    pub copy: Vec<(StreamEntry, u64)>,
}

/// Compares the leader's streams with the follower's (`local`: group → stream → (creation
/// time, next seq)).
pub fn plan(leader: Vec<StreamEntry>, local: &BTreeMap<String, BTreeMap<String, (i64, u64)>>) -> Plan {
    let mut out = Plan::default();
    let mut theirs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &leader {
        theirs.entry(&e.group).or_default().insert(&e.stream);
    }
    for (group, streams) in local {
        match theirs.get(group.as_str()) {
            None => out.delete_groups.push(group.clone()),
            Some(names) => out
                .delete
                .extend(streams.keys().filter(|s| !names.contains(s.as_str())).map(|s| (group.clone(), s.clone()))),
        }
    }
    for e in leader {
        let mine = local.get(&e.group).and_then(|g| g.get(&e.stream));
        let (from, fresh) = match mine {
            Some(&(created, next)) if created == e.created && next <= e.next => (next, false),
            Some(_) => {
                out.delete.push((e.group.clone(), e.stream.clone()));
                (0, true)
            }
            None => (0, true),
        };
        // A stream made but never written is made all the same.
        if fresh || from < e.next {
            out.copy.push((e, from));
        }
    }
    out
}

/// Takes the leader's history (module doc); returns the leader's epoch and the ring record
/// to continue after.
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
    let s = server.clone();
    let series = tokio::task::spawn_blocking(move || s.metrics.import(&export)).await??;
    // 2. The streams, reconciled.
    let resp = get(server, &format!("{base}streams"), token, "catchup/streams").await?;
    let theirs: Vec<StreamEntry> =
        resp.json().await.map_err(|e| Error::Leader { what: "catchup/streams", why: e.to_string() })?;
    let s = server.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let mut local: BTreeMap<String, BTreeMap<String, (i64, u64)>> = BTreeMap::new();
        for e in inventory(&s.logs) {
            local.entry(e.group).or_default().insert(e.stream, (e.created, e.next));
        }
        let plan = plan(theirs, &local);
        for g in &plan.delete_groups {
            s.replication.delete_group(&s.logs, g).map_err(|e| logs_error(g, "", e))?;
        }
        for (g, st) in &plan.delete {
            match s.replication.delete_stream(&s.logs, g, st) {
                Ok(()) | Err(estiba_logstore::Error::NoSuchStream { .. }) => {}
                Err(e) => return Err(logs_error(g, st, e)),
            }
        }
        for (e, _) in &plan.copy {
            s.replication
                .ensure_stream(&s.logs, &e.group, &e.stream, e.created)
                .map_err(|x| logs_error(&e.group, &e.stream, x))?;
        }
        Ok::<_, Error>(plan)
    })
    .await??;
    // 3. The events each stream lacks.
    let mut copied = 0u64;
    for (e, mut from) in plan.copy {
        while from < e.next {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("group", &e.group)
                .append_pair("stream", &e.stream)
                .append_pair("from", &from.to_string())
                .finish();
            let resp = get(server, &format!("{base}events?{query}"), token, "catchup/events").await?;
            let events: Vec<WireEvent> =
                resp.json().await.map_err(|x| Error::Leader { what: "catchup/events", why: x.to_string() })?;
            let Some(last) = events.last().map(|x| x.0) else { break };
            copied += events.len() as u64;
            let s = server.clone();
            let (group, stream) = (e.group.clone(), e.stream.clone());
            tokio::task::spawn_blocking(move || append_runs(&s, &group, &stream, &events)).await??;
            from = last + 1;
        }
    }
    tracing::info!(
        leader,
        epoch,
        after,
        series,
        deleted_streams = plan.delete.len(),
        deleted_groups = plan.delete_groups.len(),
        events = copied,
        "took the leader's log and metric history"
    );
    Ok((epoch, after))
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
            .replication
            .append(&server.logs, group, stream, pairs, Some(run[0].0), run[0].2)
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
    fn a_plan_copies_what_is_missing_and_mirrors_what_the_leader_no_longer_holds() {
        let mut local: BTreeMap<String, BTreeMap<String, (i64, u64)>> = BTreeMap::new();
        let mut put = |g: &str, s: &str, created: i64, next: u64| {
            local.entry(g.into()).or_default().insert(s.into(), (created, next));
        };
        put("g1", "same", 10, 5);
        put("g1", "behind", 10, 3);
        put("g1", "ahead", 10, 9);
        put("g1", "recreated", 10, 4);
        put("g1", "gone", 10, 4);
        put("g2", "whole-group-gone", 10, 1);
        let leader = vec![
            entry("g1", "same", 10, 5),
            entry("g1", "behind", 10, 7),
            entry("g1", "ahead", 10, 6),
            entry("g1", "recreated", 20, 2),
            entry("g1", "new-empty", 30, 0),
            entry("g3", "new", 30, 4),
        ];
        let p = plan(leader, &local);
        assert_eq!(p.delete_groups, vec!["g2".to_owned()]);
        let mut delete = p.delete.clone();
        delete.sort();
        assert_eq!(
            delete,
            vec![("g1".into(), "ahead".into()), ("g1".into(), "gone".into()), ("g1".into(), "recreated".into())]
        );
        let copy: Vec<(&str, &str, u64)> = p.copy.iter().map(|(e, f)| (&*e.group, &*e.stream, *f)).collect();
        assert_eq!(
            copy,
            vec![
                ("g1", "behind", 3),
                ("g1", "ahead", 0),
                ("g1", "recreated", 0),
                ("g1", "new-empty", 0),
                ("g3", "new", 0)
            ]
        );
    }
}
