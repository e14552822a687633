//! The leader's log and metric ingest, replicated to the followers (several servers on one
//! etcd prefix, [`crate::peers`]).
//!
//! CloudWatch Logs' events and metric datapoints live in each server's own stores
//! (`Server::logs`, `Server::metrics`), never in the versioned store. The leader owns them:
//! followers forward the `logs` and `monitoring` APIs to it ([`crate::peers::forward`]) and
//! what their nodes ingest (awslogs appends, node metrics) as [`Record`]s (`POST apply` under
//! [`crate::peers::PREFIX`]). Every change to those stores goes through [`Replication`]'s
//! wrappers, which, while this server leads a prefix shared with others, also append it to an
//! in-memory ring of numbered records. Followers tail that ring (`GET ingest?epoch=&after=`, a
//! long poll) and apply each record to their own stores in order, so a follower that becomes
//! leader has the history.
//!
//! Each leadership term has its own `epoch` and numbering, and the ring holds the whole term
//! (up to [`MAX_RING_BYTES`]). A follower that knows the leader's epoch continues after its
//! last record (its cursor is saved beside its stores, so a restart within the term continues
//! too). Any other follower (a new one, one that comes back, one whose leader changed) and one
//! that fell behind the ring (records `lost` before it read them) first takes the leader's
//! whole history ([`crate::catch_up`]: the metric store at a cut of the ring, the log streams
//! it lacks), then tails the ring after the cut. The gap that remains, logged where it can be
//! seen: what the old leader ingested but no surviving server had pulled when it died (the
//! poll's latency, usually milliseconds). A follower killed between applying a batch and
//! saving its cursor applies that batch again: harmless for logs, whose appends are numbered,
//! and a repeated datapoint for metrics.

//! Log appends replicate with the sequence numbers the leader gave them, so a follower's
//! streams number events as the leader's do and an agent that resends after a failover makes
//! no duplicates. Appends to one stream are recorded in the order they were stored (a striped
//! lock around store and record while replicating).
//!
//! May not: write the versioned store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use estiba_logstore::{Appended, LogStore, StreamInfo};
use estiba_metricstore::{Datum, Dimension, MetricStore, Resolution, StatisticSet, Value};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::{self, Body};
use crate::Server;

/// The most bytes of records the leader keeps for followers.
pub const MAX_RING_BYTES: usize = 64 << 20;
/// How long `GET ingest` waits for a record before answering none.
const LONG_POLL: Duration = Duration::from_secs(10);
/// The most records one answer carries.
const MAX_BATCH: usize = 2000;
const STRIPES: usize = 64;

/// One change to the log or metric store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Record {
    /// A stream created, or made sure of (an existing one is no error).
    #[serde(rename_all = "camelCase")]
    EnsureStream { group: String, stream: String, now: i64 },
    #[serde(rename_all = "camelCase")]
    DeleteStream { group: String, stream: String },
    #[serde(rename_all = "camelCase")]
    DeleteGroup { group: String },
    #[serde(rename_all = "camelCase")]
    Expire { group: String, before: i64 },
    /// Events numbered from `seq` (the leader's numbers once recorded; a sender's when a
    /// follower forwards an awslogs append; none for PutLogEvents sent on).
    #[serde(rename_all = "camelCase")]
    Append { group: String, stream: String, seq: Option<u64>, now: i64, events: Vec<WireEvent> },
    #[serde(rename_all = "camelCase")]
    PutMetrics { account: String, region: String, namespace: String, now: i64, data: Vec<WireDatum> },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WireEvent {
    pub t: i64,
    pub m: String,
}

/// A [`Datum`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WireDatum {
    name: String,
    dimensions: Vec<(String, String)>,
    timestamp: i64,
    unit: String,
    high_resolution: bool,
    value: WireValue,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
enum WireValue {
    Single(f64),
    Values { values: Vec<f64>, counts: Vec<f64> },
    Statistics { sample_count: f64, sum: f64, minimum: f64, maximum: f64 },
}

impl From<&Datum> for WireDatum {
    fn from(d: &Datum) -> Self {
        WireDatum {
            name: d.name.clone(),
            dimensions: d.dimensions.iter().map(|x| (x.name.clone(), x.value.clone())).collect(),
            timestamp: d.timestamp,
            unit: d.unit.to_string(),
            high_resolution: d.resolution == Resolution::High,
            value: match &d.value {
                Value::Single(v) => WireValue::Single(*v),
                Value::Values { values, counts } => {
                    WireValue::Values { values: values.clone(), counts: counts.clone() }
                }
                Value::Statistics(s) => WireValue::Statistics {
                    sample_count: s.sample_count,
                    sum: s.sum,
                    minimum: s.minimum,
                    maximum: s.maximum,
                },
            },
        }
    }
}

impl From<WireDatum> for Datum {
    fn from(d: WireDatum) -> Self {
        Datum {
            name: d.name,
            dimensions: d.dimensions.into_iter().map(|(n, v)| Dimension::new(n, v)).collect(),
            timestamp: d.timestamp,
            unit: d.unit.into(),
            resolution: if d.high_resolution { Resolution::High } else { Resolution::Standard },
            value: match d.value {
                WireValue::Single(v) => Value::Single(v),
                WireValue::Values { values, counts } => Value::Values { values, counts },
                WireValue::Statistics { sample_count, sum, minimum, maximum } => {
                    Value::Statistics(StatisticSet { sample_count, sum, minimum, maximum })
                }
            },
        }
    }
}

/// The leader's side: the ring of records of its current term. Cheap to clone.
#[derive(Clone)]
pub struct Replication {
    inner: Arc<Inner>,
}

struct Inner {
    /// Whether changes are recorded: while this server leads a shared prefix.
    on: AtomicBool,
    ring: Mutex<Ring>,
    /// The number of the last record, for long polls.
    last: tokio::sync::watch::Sender<u64>,
    stripes: Vec<Mutex<()>>,
    /// Held shared by every metric put while recording, exclusively by [`Replication::metrics_cut`]:
    /// so a metric export and the ring's head describe the same moment.
    cut: RwLock<()>,
}

struct Ring {
    epoch: String,
    /// The number the next record gets (the first is 1).
    next: u64,
    records: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            inner: Arc::new(Inner {
                on: AtomicBool::new(false),
                ring: Mutex::new(Ring { epoch: new_epoch(), next: 1, records: VecDeque::new(), bytes: 0 }),
                last: tokio::sync::watch::channel(0).0,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                cut: RwLock::new(()),
            }),
        }
    }
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What `GET ingest` answers: the leader's term, how many records this follower will never
/// get (they left the ring before it asked), and the records with their numbers.
#[derive(Debug, Default)]
pub struct Batch {
    pub epoch: String,
    pub lost: u64,
    pub records: Vec<(u64, Bytes)>,
}

impl Batch {
    /// `{"epoch":..,"lost":..,"records":[[n,record],..]}`, the records' stored JSON as is.
    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(64 + self.records.iter().map(|(_, b)| b.len() + 24).sum::<usize>());
        out.extend_from_slice(
            format!("{{\"epoch\":\"{}\",\"lost\":{},\"records\":[", self.epoch, self.lost).as_bytes(),
        );
        for (i, (n, b)) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(format!("[{n},").as_bytes());
            out.extend_from_slice(b);
            out.push(b']');
        }
        out.extend_from_slice(b"]}");
        Bytes::from(out)
    }
}

impl Replication {
    /// Starts a leadership term: a new epoch, an empty ring, and recording on.
    pub fn begin_term(&self) {
        let mut ring = self.inner.ring.lock().unwrap();
        *ring = Ring { epoch: new_epoch(), next: 1, records: VecDeque::new(), bytes: 0 };
        self.inner.on.store(true, Ordering::SeqCst);
        let _ = self.inner.last.send(0);
    }

    /// Ends the term: nothing more is recorded.
    pub fn end_term(&self) {
        self.inner.on.store(false, Ordering::SeqCst);
    }

    fn on(&self) -> bool {
        self.inner.on.load(Ordering::Relaxed)
    }

    fn record(&self, r: &Record) {
        let Ok(json) = serde_json::to_vec(r) else { return };
        let mut ring = self.inner.ring.lock().unwrap();
        let n = ring.next;
        ring.next += 1;
        ring.bytes += json.len();
        ring.records.push_back((n, Bytes::from(json)));
        while ring.bytes > MAX_RING_BYTES {
            match ring.records.pop_front() {
                Some((_, b)) => ring.bytes -= b.len(),
                None => break,
            }
        }
        drop(ring);
        let _ = self.inner.last.send(n);
    }

    /// Holds appends to one stream in order while they are stored and recorded.
    fn stripe(&self, group: &str, stream: &str) -> Option<MutexGuard<'_, ()>> {
        if !self.on() {
            return None;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (group, stream).hash(&mut h);
        Some(self.inner.stripes[h.finish() as usize % STRIPES].lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn create_stream(&self, logs: &LogStore, group: &str, stream: &str, now: i64) -> estiba_logstore::Result<()> {
        logs.create_stream(group, stream, now)?;
        if self.on() {
            self.record(&Record::EnsureStream { group: group.into(), stream: stream.into(), now });
        }
        Ok(())
    }

    pub fn ensure_stream(
        &self,
        logs: &LogStore,
        group: &str,
        stream: &str,
        now: i64,
    ) -> estiba_logstore::Result<StreamInfo> {
        let info = logs.ensure_stream(group, stream, now)?;
        if self.on() {
            self.record(&Record::EnsureStream { group: group.into(), stream: stream.into(), now });
        }
        Ok(info)
    }

    pub fn delete_stream(&self, logs: &LogStore, group: &str, stream: &str) -> estiba_logstore::Result<()> {
        logs.delete_stream(group, stream)?;
        if self.on() {
            self.record(&Record::DeleteStream { group: group.into(), stream: stream.into() });
        }
        Ok(())
    }

    pub fn delete_group(&self, logs: &LogStore, group: &str) -> estiba_logstore::Result<()> {
        logs.delete_group(group)?;
        if self.on() {
            self.record(&Record::DeleteGroup { group: group.into() });
        }
        Ok(())
    }

    pub fn expire(&self, logs: &LogStore, group: &str, before: i64) -> estiba_logstore::Result<u64> {
        let freed = logs.expire(group, before)?;
        if self.on() {
            self.record(&Record::Expire { group: group.into(), before });
        }
        Ok(freed)
    }

    pub fn append<'a, I>(
        &self,
        logs: &LogStore,
        group: &str,
        stream: &str,
        events: I,
        seq: Option<u64>,
        now: i64,
    ) -> estiba_logstore::Result<Appended>
    where
        I: ExactSizeIterator<Item = (i64, &'a str)> + Clone,
    {
        let _order = self.stripe(group, stream);
        let a = logs.append_iter(group, stream, events.clone(), seq, now)?;
        if self.on() && a.stored > 0 {
            let skip = events.len().saturating_sub(a.stored);
            self.record(&Record::Append {
                group: group.into(),
                stream: stream.into(),
                seq: Some(a.next_seq - a.stored as u64),
                now,
                events: events.skip(skip).map(|(t, m)| WireEvent { t, m: m.to_owned() }).collect(),
            });
        }
        Ok(a)
    }

    pub fn put_metrics(
        &self,
        metrics: &MetricStore,
        account: &str,
        region: &str,
        namespace: &str,
        data: &[Datum],
        now: i64,
    ) -> Result<(), estiba_metricstore::Error> {
        let on = self.on();
        let _cut = on.then(|| self.inner.cut.read().unwrap_or_else(|e| e.into_inner()));
        metrics.put(account, region, namespace, data, now)?;
        if on {
            self.record(&Record::PutMetrics {
                account: account.into(),
                region: region.into(),
                namespace: namespace.into(),
                now,
                data: data.iter().map(WireDatum::from).collect(),
            });
        }
        Ok(())
    }

    /// The metric store's export and the ring's epoch and last record number at one moment:
    /// the export holds exactly the metric records up to that number (`None` when not
    /// recording). Metric puts wait meanwhile.
    pub fn metrics_cut(&self, metrics: &MetricStore) -> Option<(String, u64, Vec<u8>)> {
        let _cut = self.inner.cut.write().unwrap_or_else(|e| e.into_inner());
        if !self.on() {
            return None;
        }
        let export = metrics.export();
        let ring = self.inner.ring.lock().unwrap();
        Some((ring.epoch.clone(), ring.next - 1, export))
    }

    /// Applies a record to this server's stores (through the wrappers, so a leader records
    /// it in turn). Returns the stream's next sequence number for stream records, else 0.
    pub fn apply(&self, server: &Server, r: Record) -> Result<u64, String> {
        let logs = &server.logs;
        let e = |e: estiba_logstore::Error| e.to_string();
        match r {
            Record::EnsureStream { group, stream, now } => {
                self.ensure_stream(logs, &group, &stream, now).map(|i| i.next_seq).map_err(e)
            }
            Record::DeleteStream { group, stream } => match self.delete_stream(logs, &group, &stream) {
                Err(estiba_logstore::Error::NoSuchStream { .. }) => Ok(0),
                r => r.map(|_| 0).map_err(e),
            },
            Record::DeleteGroup { group } => self.delete_group(logs, &group).map(|_| 0).map_err(e),
            Record::Expire { group, before } => self.expire(logs, &group, before).map(|_| 0).map_err(e),
            Record::Append { group, stream, seq, now, events } => {
                let pairs = events.iter().map(|w| (w.t, w.m.as_str()));
                match self.append(logs, &group, &stream, pairs.clone(), seq, now) {
                    Err(estiba_logstore::Error::NoSuchStream { .. }) => {
                        self.ensure_stream(logs, &group, &stream, now).map_err(e)?;
                        self.append(logs, &group, &stream, pairs, seq, now)
                    }
                    r => r,
                }
                .map(|a| a.next_seq)
                .map_err(e)
            }
            Record::PutMetrics { account, region, namespace, now, data } => {
                let data: Vec<Datum> = data.into_iter().map(Datum::from).collect();
                self.put_metrics(&server.metrics, &account, &region, &namespace, &data, now)
                    .map(|_| 0)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The records after `after` of term `epoch`, or from the first of this term for a
    /// follower of another one, waiting up to [`LONG_POLL`] for one.
    async fn batch(&self, epoch: &str, after: u64) -> Batch {
        let mut last = self.inner.last.subscribe();
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        loop {
            {
                let ring = self.inner.ring.lock().unwrap();
                let from = if epoch == ring.epoch { after + 1 } else { 1 };
                let oldest = ring.records.front().map_or(ring.next, |(n, _)| *n);
                let lost = oldest.saturating_sub(from);
                let records: Vec<(u64, Bytes)> =
                    ring.records.iter().skip_while(|(n, _)| *n < from).take(MAX_BATCH).cloned().collect();
                if !records.is_empty() || lost > 0 || epoch != ring.epoch {
                    return Batch { epoch: ring.epoch.clone(), lost, records };
                }
            }
            tokio::select! {
                r = last.changed() => if r.is_err() { return Batch { epoch: epoch.into(), ..Default::default() } },
                _ = tokio::time::sleep_until(deadline) => return Batch { epoch: epoch.into(), ..Default::default() },
            }
        }
    }

    #[cfg(test)]
    fn head(&self) -> (String, u64) {
        let ring = self.inner.ring.lock().unwrap();
        (ring.epoch.clone(), ring.next - 1)
    }
}

/// `GET ingest?epoch=E&after=N`: the leader's records for a follower (409 from a server that
/// does not lead).
pub async fn serve(server: &Server, query: &str) -> Response<Body> {
    if !server.leader.load(Ordering::Relaxed) || !server.replication.on() {
        return message(StatusCode::CONFLICT, "this server does not lead");
    }
    let (mut epoch, mut after) = (String::new(), 0);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "epoch" => epoch = v.into_owned(),
            "after" => after = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    body::response(StatusCode::OK, server.replication.batch(&epoch, after).await.encode(), "application/json")
}

/// `POST apply`: a follower's record (its node's awslogs append, its node's metrics),
/// applied and replicated by the leader. Answers `{"nextSeq": n}` or a message.
pub async fn serve_apply(server: &Arc<Server>, body: Bytes) -> Response<Body> {
    if !server.leader.load(Ordering::Relaxed) {
        return message(StatusCode::CONFLICT, "this server does not lead");
    }
    let r: Record = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return message(StatusCode::BAD_REQUEST, &format!("the record does not decode: {e}")),
    };
    let s = server.clone();
    match tokio::task::spawn_blocking(move || s.replication.apply(&s, r)).await {
        Ok(Ok(n)) => body::response(
            StatusCode::OK,
            Bytes::from(serde_json::json!({ "nextSeq": n }).to_string()),
            "application/json",
        ),
        Ok(Err(m)) => message(StatusCode::UNPROCESSABLE_ENTITY, &m),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub(crate) fn message(status: StatusCode, m: &str) -> Response<Body> {
    body::response(status, Bytes::from(serde_json::json!({ "message": m }).to_string()), "application/json")
}

/// Why a record could not be sent to the leader.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no server leads at the moment")]
    NoLeader,
    #[error("the leader refused the record: {0}")]
    Refused(String),
    #[error("the leader is out of reach: {0}")]
    Unreachable(String),
}

/// Whether this server must send its ingest to another server that leads.
pub fn follower(server: &Server) -> bool {
    server.peers.shared() && !server.leader.load(Ordering::Relaxed)
}

/// Sends a record a follower's node produced to the leader, waiting for a leader up to a few
/// seconds; returns what the leader's [`Replication::apply`] returned.
pub async fn send_to_leader(server: &Server, r: &Record) -> Result<u64, SendError> {
    let token = crate::peers::token(server).ok_or(SendError::NoLeader)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut last = SendError::NoLeader;
    loop {
        if let Some(leader) = server.peers.leader_elsewhere() {
            let url = format!("{leader}{}apply", crate::peers::PREFIX);
            match server.peers.client().post(&url).bearer_auth(&token).json(r).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let v: serde_json::Value = resp.json().await.map_err(|e| SendError::Unreachable(e.to_string()))?;
                    return Ok(v["nextSeq"].as_u64().unwrap_or(0));
                }
                Ok(resp) if resp.status() == StatusCode::UNPROCESSABLE_ENTITY => {
                    let v: serde_json::Value = resp.json().await.unwrap_or_default();
                    return Err(SendError::Refused(v["message"].as_str().unwrap_or("").to_owned()));
                }
                Ok(resp) => last = SendError::Unreachable(format!("HTTP {}", resp.status())),
                Err(e) => last = SendError::Unreachable(e.to_string()),
            }
        } else if !follower(server) {
            return Err(SendError::NoLeader);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.peers.refresh().await;
    }
}

/// A follower's side: tails the leader's records and applies them, until `stop`.
pub async fn follow(server: Arc<Server>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // Where this follower is in the leader's records, kept beside the stores so that a restart
    // within one leader's term continues where it stopped.
    let cursor_file = server.config.logs_dir.as_ref().and_then(|d| d.parent()).map(|d| d.join("replication-cursor"));
    let (mut epoch, mut after) = cursor_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|s| s.trim().split_once(' ').map(|(e, n)| (e.to_owned(), n.parse().unwrap_or(0))))
        .unwrap_or_default();
    let mut failures = 0;
    while !*stop.borrow() {
        let leader = match (follower(&server), server.peers.leader_elsewhere(), crate::peers::token(&server)) {
            (true, Some(l), Some(t)) => Some((l, t)),
            _ => None,
        };
        let Some((leader, token)) = leader else {
            if server.leader.load(Ordering::Relaxed) {
                // Leading: what this server had applied is its history; a later term of
                // another leader starts that leader's numbering.
                after = 0;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let url = format!("{leader}{}ingest?epoch={epoch}&after={after}", crate::peers::PREFIX);
        let got = tokio::select! {
            r = fetch(&server, &url, &token) => r,
            _ = stop.changed() => return,
        };
        let v = match got {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(leader, error = %e, "reading the leader's ingest failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let new_epoch = v["epoch"].as_str().unwrap_or("").to_owned();
        let lost = v["lost"].as_u64().unwrap_or(0);
        if new_epoch != epoch || lost > 0 {
            // A term this server does not know, or records it will never get from the ring:
            // take the leader's whole history instead ([`crate::catch_up`]), then tail the
            // ring after it. After a few failures, the ring alone, as far as it goes.
            let caught = tokio::select! {
                r = crate::catch_up::run(&server, &leader, &token) => r,
                _ = stop.changed() => return,
            };
            match caught {
                Ok((e, n)) => {
                    (epoch, after) = (e, n);
                    failures = 0;
                    save_cursor(cursor_file.as_deref(), &epoch, after);
                    continue;
                }
                Err(crate::catch_up::Error::NotFollowing) => continue,
                Err(e) if failures < CATCH_UP_RETRIES => {
                    failures += 1;
                    tracing::warn!(leader, error = %e, "taking the leader's history failed; trying again");
                    tokio::time::sleep(Duration::from_millis(500 << failures)).await;
                    continue;
                }
                Err(e) => {
                    failures = 0;
                    tracing::warn!(leader, error = %e, lost, "taking the leader's history failed; following the ring alone: what is not in it is missing here");
                    if new_epoch != epoch {
                        epoch = new_epoch;
                        after = 0;
                    }
                }
            }
        }
        let records: Vec<(u64, Record)> = match serde_json::from_value(v["records"].clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the leader's ingest records do not decode");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let s = server.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let mut last = None;
            for (n, r) in records {
                if let Err(e) = s.replication.apply(&s, r) {
                    tracing::warn!(record = n, error = %e, "a replicated record was not applied");
                }
                last = Some(n);
            }
            last
        })
        .await
        .ok()
        .flatten();
        if let Some(n) = applied {
            after = n;
            save_cursor(cursor_file.as_deref(), &epoch, after);
        }
    }
}

/// How many times a follower tries again to take a leader's history (before it follows the
/// ring alone; for the logs, before it leaves them as they are).
pub(crate) const CATCH_UP_RETRIES: u32 = 3;

fn save_cursor(file: Option<&std::path::Path>, epoch: &str, after: u64) {
    let Some(f) = file else { return };
    let tmp = f.with_extension("tmp");
    if std::fs::write(&tmp, format!("{epoch} {after}\n")).and_then(|()| std::fs::rename(&tmp, f)).is_err() {
        tracing::debug!("the replication cursor could not be saved");
    }
}

async fn fetch(server: &Server, url: &str, token: &str) -> Result<serde_json::Value, String> {
    let resp = server
        .peers
        .client()
        .get(url)
        .bearer_auth(token)
        .timeout(LONG_POLL + Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.json().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datum_survives_the_wire() {
        let d = Datum {
            name: "Latency".into(),
            dimensions: vec![Dimension::new("Service", "web")],
            timestamp: 1_700_000_000_000,
            unit: "Milliseconds".into(),
            resolution: Resolution::High,
            value: Value::Statistics(StatisticSet { sample_count: 3.0, sum: 6.0, minimum: 1.0, maximum: 3.0 }),
        };
        let back: Datum =
            serde_json::from_str::<WireDatum>(&serde_json::to_string(&WireDatum::from(&d)).unwrap()).unwrap().into();
        assert_eq!(back, d);
    }

    #[tokio::test]
    async fn a_follower_of_the_term_continues_and_any_other_starts_at_the_terms_start() {
        let r = Replication::default();
        r.begin_term();
        let rec = |g: &str| Record::DeleteGroup { group: g.into() };
        r.record(&rec("a"));
        r.record(&rec("b"));
        let (epoch, head) = r.head();
        assert_eq!(head, 2);
        let b = r.batch(&epoch, 1).await;
        assert_eq!(b.records.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![2]);
        let v: serde_json::Value = serde_json::from_slice(&b.encode()).unwrap();
        let back: Vec<(u64, Record)> = serde_json::from_value(v["records"].clone()).unwrap();
        assert_eq!(back, vec![(2, rec("b"))]);
        // A follower of another term starts at this term's first record.
        let b = r.batch("other", 7).await;
        assert_eq!(b.records.len(), 2);
        assert_eq!(b.epoch, epoch);
        // Records gone from the ring are counted as lost.
        r.inner.ring.lock().unwrap().records.pop_front();
        let b = r.batch(&epoch, 0).await;
        assert_eq!((b.lost, b.records.len()), (1, 1));
        // A new term starts the numbering again under a new epoch.
        r.begin_term();
        r.record(&rec("c"));
        let b = r.batch(&epoch, 2).await;
        assert_ne!(b.epoch, epoch);
        assert_eq!(b.records.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1]);
    }
}
