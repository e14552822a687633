//! Telemetry: what a node observes of its tasks in volume (container log lines, cgroup
//! counters, health results). It reaches the control plane beside the versioned store, never
//! through it: a store write is fsynced and fanned out to every watcher, which log lines and
//! samples do not deserve. The agent sends [`Telemetry`] batches; whoever receives them
//! implements [`TelemetrySink`] (later: the log store and the metric store).
//!
//! Batches are JSON (`{"kind": "health", "items": [...]}`, camelCase fields), so an agent on
//! another machine sends the same batches over the network. Timestamps are milliseconds since
//! the epoch, as CloudWatch Logs and metrics take them.
//!
//! Container logs shipped by the awslogs driver are not fire-and-forget: the shipper must
//! know what was stored to resume after a crash. They go through [`LogIngest`] (numbered
//! appends, answered), which the server implements over its log store.

use estiba_api::ecs::HealthStatus;
use serde::{Deserialize, Serialize};

/// One batch of telemetry of one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "items", rename_all = "camelCase")]
pub enum Telemetry {
    Logs(Vec<LogLine>),
    Metrics(Vec<MetricSample>),
    Health(Vec<HealthResult>),
    /// Load balancer target health as a node's probes see it: transitions as they happen,
    /// and every target's state now and then (so a receiver that missed one, or restarted,
    /// catches up).
    TargetHealth(Vec<TargetHealthChange>),
    /// A node's load balancer counters (cumulative since its load balancers started).
    LbMetrics(Vec<LbMetrics>),
}

impl Telemetry {
    /// `logs`, `metrics` or `health`.
    pub fn kind(&self) -> &'static str {
        match self {
            Telemetry::Logs(_) => "logs",
            Telemetry::Metrics(_) => "metrics",
            Telemetry::Health(_) => "health",
            Telemetry::TargetHealth(_) => "targetHealth",
            Telemetry::LbMetrics(_) => "lbMetrics",
        }
    }

    /// How many items the batch holds.
    pub fn len(&self) -> usize {
        match self {
            Telemetry::Logs(v) => v.len(),
            Telemetry::Metrics(v) => v.len(),
            Telemetry::Health(v) => v.len(),
            Telemetry::TargetHealth(v) => v.len(),
            Telemetry::LbMetrics(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line a container wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub task_arn: String,
    pub container: String,
    pub timestamp: i64,
    pub stream: LogStream,
    pub line: String,
}

/// A task's or a container's cgroup counters at one moment, as read (cumulative counters
/// stay cumulative: rates are the receiver's business).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSample {
    pub task_arn: String,
    /// `None` for the task's own cgroup (all its containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub timestamp: i64,
    /// CPU time used since the cgroup was made, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_usage_bytes: Option<u64>,
    /// `None` when the cgroup has no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Bytes the task's network namespace received and sent (interfaces but `lo`), on the
    /// task's own sample only; `None` for tasks in the host's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_tx_bytes: Option<u64>,
    /// Bytes read from and written to block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_read_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_write_bytes: Option<u64>,
}

/// What a health result is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum HealthSubject {
    /// A container's own health check (`healthCheck` in its definition). Target health (a
    /// load balancer's probes of a task) will be another variant.
    Container { name: String },
}

/// The outcome of one health probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResult {
    pub task_arn: String,
    pub subject: HealthSubject,
    pub timestamp: i64,
    /// Whether this probe passed.
    pub passed: bool,
    /// The subject's status after this probe (it changes only after the check's rules say so:
    /// retries, start period).
    pub status: HealthStatus,
}

/// Where telemetry ends up. `deliver` is called one batch at a time from the delivery task
/// of the agent's channel: it must not block for long (hand slow work to a task of its own).
/// One target's health in one target group, as a node's load balancer probes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealthChange {
    pub node: String,
    pub target_group_arn: String,
    /// `address:port` as the node reaches it.
    pub target: String,
    /// AWS's state: `initial`, `healthy`, `unhealthy`, `draining`, `unavailable`, `unused`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Counters by CloudWatch metric name (`RequestCount`, `HTTPCode_Target_2XX_Count`, ...).
pub type Counters = std::collections::BTreeMap<String, u64>;

/// One node's load balancer counters at one moment, by CloudWatch dimension value
/// (`app/<name>/<id>`, `targetgroup/<name>/<id>`); cumulative, so a receiver takes differences
/// (a counter that went down means the node's load balancers restarted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbMetrics {
    pub node: String,
    pub timestamp: i64,
    pub load_balancers: std::collections::BTreeMap<String, Counters>,
    pub target_groups: std::collections::BTreeMap<String, Counters>,
}

pub trait TelemetrySink: Send + Sync + 'static {
    fn deliver(&self, batch: Telemetry);
}

/// Where a container's log events go (the awslogs driver): a stream of a CloudWatch Logs
/// group, by name, in an account and region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogDestination {
    pub account: String,
    pub region: String,
    pub group: String,
    pub stream: String,
    /// Create the group when it does not exist (`awslogs-create-group`).
    #[serde(default)]
    pub create_group: bool,
}

/// One event to ship: milliseconds since the epoch and the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    pub timestamp: i64,
    pub message: String,
}

/// Events to ship, packed: every message side by side in one string, each with its timestamp
/// and end. A container printing a million lines costs its shipper a few buffers per batch,
/// not a million strings. On the wire (and in JSON) a list of [`LogEvent`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogEvents {
    text: String,
    /// Per event: its timestamp and where its message ends in `text`.
    index: Vec<(i64, usize)>,
}

impl LogEvents {
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        LogEvents { text: String::with_capacity(bytes), index: Vec::with_capacity(events) }
    }

    pub fn push(&mut self, timestamp: i64, message: &str) {
        self.text.push_str(message);
        self.index.push((timestamp, self.text.len()));
    }

    /// Appends events whose messages lie back to back in `text`, given as (timestamp, length
    /// of the message) in order: one copy for them all.
    pub fn extend_packed(&mut self, text: &str, events: impl IntoIterator<Item = (i64, usize)>) {
        let base = self.text.len();
        self.text.push_str(text);
        let mut end = base;
        for (ts, len) in events {
            end += len;
            debug_assert!(self.text.is_char_boundary(end), "a packed event must end on a character boundary");
            self.index.push((ts, end));
        }
        assert!(end == self.text.len() && self.text.is_char_boundary(end), "packed events must cover their text");
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The bytes of every message together.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The events in order, as (timestamp, message).
    pub fn iter(&self) -> LogEventsIter<'_> {
        LogEventsIter { events: self, at: 0, start: 0 }
    }

    /// The `i`th event, as (timestamp, message).
    pub fn get(&self, i: usize) -> Option<(i64, &str)> {
        let &(ts, end) = self.index.get(i)?;
        let start = if i == 0 { 0 } else { self.index[i - 1].1 };
        Some((ts, &self.text[start..end]))
    }

    /// An empty batch, with the buffers of one spent earlier ([`recycle`](Self::recycle)) when
    /// there is one.
    pub fn recycled() -> Self {
        spare_batches().pop().unwrap_or_default()
    }

    /// Done with this batch: its buffers are kept for the next one (a few of them, and only
    /// up to a batch's size). A shipper forms a megabyte batch after another: the allocator
    /// would give each one's pages back to the kernel when it is freed and fault them in again
    /// for the next, about 250 page faults per batch.
    pub fn recycle(mut self) {
        if self.text.capacity() > SPARE_BYTES || self.index.capacity() > SPARE_EVENTS {
            return;
        }
        self.text.clear();
        self.index.clear();
        let mut spare = spare_batches();
        if spare.len() < SPARES {
            spare.push(self);
        }
    }
}

/// How many spent batches [`LogEvents::recycle`] keeps, and up to what size (CloudWatch's
/// batch limits, with room for a last event past them).
const SPARES: usize = 4;
const SPARE_BYTES: usize = 2 << 20;
const SPARE_EVENTS: usize = 16_384;

fn spare_batches() -> std::sync::MutexGuard<'static, Vec<LogEvents>> {
    static SPARE: std::sync::Mutex<Vec<LogEvents>> = std::sync::Mutex::new(Vec::new());
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The events of a [`LogEvents`] in order.
#[derive(Clone)]
pub struct LogEventsIter<'a> {
    events: &'a LogEvents,
    at: usize,
    /// Where the next message starts.
    start: usize,
}

impl<'a> Iterator for LogEventsIter<'a> {
    type Item = (i64, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let &(ts, end) = self.events.index.get(self.at)?;
        let message = &self.events.text[self.start..end];
        self.at += 1;
        self.start = end;
        Some((ts, message))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.events.index.len() - self.at;
        (n, Some(n))
    }
}

impl ExactSizeIterator for LogEventsIter<'_> {}

impl<S: AsRef<str>> FromIterator<(i64, S)> for LogEvents {
    fn from_iter<I: IntoIterator<Item = (i64, S)>>(iter: I) -> Self {
        let mut out = LogEvents::default();
        for (ts, m) in iter {
            out.push(ts, m.as_ref());
        }
        out
    }
}

impl Serialize for LogEvents {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            timestamp: i64,
            message: &'a str,
        }
        s.collect_seq(self.iter().map(|(timestamp, message)| Wire { timestamp, message }))
    }
}

impl<'de> Deserialize<'de> for LogEvents {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Events;
        impl<'de> serde::de::Visitor<'de> for Events {
            type Value = LogEvents;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of log events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<LogEvents, A::Error> {
                let mut out = LogEvents::with_capacity(seq.size_hint().unwrap_or(0).min(10_000), 0);
                while let Some(e) = seq.next_element::<LogEvent>()? {
                    out.push(e.timestamp, &e.message);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Events)
    }
}

/// Why log ingest refused or failed. Only [`LogIngestError::Unavailable`] is worth retrying.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "type", content = "message", rename_all = "camelCase")]
pub enum LogIngestError {
    /// The group does not exist (and was not to be created).
    #[error("ResourceNotFoundException: The specified log group does not exist.")]
    NoSuchGroup,
    /// Refused for good (a group name CreateLogGroup would refuse, say).
    #[error("{0}")]
    Refused(String),
    /// A failure that may pass (the store, the control plane out of reach).
    #[error("ServiceUnavailableException: {0}")]
    Unavailable(String),
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Takes container log events into CloudWatch Logs, beside the versioned store (the server's
/// log store). Events are numbered by their sender: an append whose numbers the stream already
/// holds stores nothing again, so a sender that resends after a crash makes no duplicates.
pub trait LogIngest: Send + Sync + 'static {
    /// Makes the stream exist (and the group, when the destination says so); returns the
    /// number the stream's next event gets.
    fn open_stream<'a>(&'a self, dest: &'a LogDestination) -> BoxFuture<'a, Result<u64, LogIngestError>>;

    /// Appends events numbered `seq`, `seq + 1`, ..., durably when it returns; returns the
    /// number the stream's next event gets.
    fn append<'a>(
        &'a self,
        dest: &'a LogDestination,
        seq: u64,
        events: LogEvents,
    ) -> BoxFuture<'a, Result<u64, LogIngestError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    // The spare list is the process's: this is the only test of this crate that touches it.
    #[test]
    fn spent_batches_lend_their_buffers_to_the_next() {
        let mut a = LogEvents::with_capacity(1_000, 100_000);
        a.push(1, "one");
        a.push(2, "two");
        assert_eq!((a.get(0), a.get(1), a.get(2)), (Some((1, "one")), Some((2, "two")), None));
        a.recycle();
        let b = LogEvents::recycled();
        assert!(b.is_empty() && b.text_len() == 0 && b.iter().next().is_none());
        assert!(b.text.capacity() >= 100_000 && b.index.capacity() >= 1_000);
        // A batch past CloudWatch's limits is not kept.
        LogEvents::with_capacity(0, SPARE_BYTES + 1).recycle();
        assert_eq!(LogEvents::recycled().text.capacity(), 0);
    }

    #[test]
    fn the_wire_shape_is_stable() {
        let b = Telemetry::Health(vec![HealthResult {
            task_arn: "arn:t".into(),
            subject: HealthSubject::Container { name: "web".into() },
            timestamp: 1700000000123,
            passed: true,
            status: HealthStatus::Healthy,
        }]);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "health", "items": [{
                "taskArn": "arn:t",
                "subject": {"type": "container", "name": "web"},
                "timestamp": 1700000000123_i64,
                "passed": true,
                "status": "HEALTHY",
            }]})
        );
        assert_eq!(serde_json::from_value::<Telemetry>(json).unwrap(), b);
        let logs = Telemetry::Logs(vec![LogLine {
            task_arn: "arn:t".into(),
            container: "web".into(),
            timestamp: 1,
            stream: LogStream::Stderr,
            line: "hi".into(),
        }]);
        assert_eq!(
            serde_json::to_value(&logs).unwrap(),
            serde_json::json!({"kind": "logs", "items": [
                {"taskArn": "arn:t", "container": "web", "timestamp": 1, "stream": "stderr", "line": "hi"}
            ]})
        );
        assert_eq!((logs.kind(), logs.len()), ("logs", 1));
        let events: LogEvents = [(1, "a"), (2, ""), (3, "héllo")].into_iter().collect();
        let json = serde_json::to_value(&events).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"timestamp": 1, "message": "a"},
                {"timestamp": 2, "message": ""},
                {"timestamp": 3, "message": "héllo"}
            ])
        );
        assert_eq!(serde_json::from_value::<LogEvents>(json).unwrap(), events);
        assert_eq!(events.iter().len(), 3);
        assert_eq!(events.iter().nth(2), Some((3, "héllo")));
        assert_eq!(events.text_len(), 7);
        let mut more = LogEvents::default();
        more.push(1, "a");
        more.extend_packed("héllo", [(2, 0), (3, 6)]);
        assert_eq!(more, events);
        let m = Telemetry::Metrics(vec![MetricSample {
            task_arn: "arn:t".into(),
            cpu_usage_ns: Some(7),
            ..Default::default()
        }]);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"kind": "metrics", "items": [{"taskArn": "arn:t", "timestamp": 0, "cpuUsageNs": 7}]})
        );
    }
}
