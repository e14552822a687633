//! The log store: CloudWatch Logs' streams and events on disk, beside the versioned store
//! (log events are high-volume data that must never go through it). One append-only log per
//! stream, with a time index, compressed when sealed, bounded by each group's retention and by
//! a disk budget for the whole store (oldest data first, with a warning).
//!
//! Groups are named by an opaque id (the `id` of the control plane's `LogGroupDoc`); the store
//! knows nothing of group names, ARNs, tags or AWS's rules and messages, which belong to the
//! Logs API. Streams are named as the API names them.
//!
//! Every method is synchronous and may block on disk: async callers use
//! `tokio::task::spawn_blocking`. A [`LogStore`] is cheap to clone and safe to share; one
//! background thread per store seals full segments (appends write full blocks compressed
//! already; the on-disk format is described in `format.rs`, the directory layout in
//! `store.rs`).
//!
//! Ingest is idempotent when the sender numbers its events ([`LogStore::append`]'s `seq`): an
//! agent that resends what it shipped before a crash (it resumes from a saved offset, which
//! may be behind) gets no duplicates.
//!
//! **Architecture invariant:** no AWS wire types, no HTTP, no versioned store.

mod format;
mod store;

use std::path::Path;
use std::sync::Arc;

/// How the store is bounded and tuned.
#[derive(Clone, Debug)]
pub struct Options {
    /// The most bytes the store keeps on disk; beyond it the oldest sealed segments go first,
    /// with a warning. `None`: unbounded.
    pub disk_budget: Option<u64>,
    /// A stream's open segment is sealed (compressed, indexed) past this many bytes as written
    /// (the full blocks of large appends are written compressed already, so their sealed
    /// segment is about this size; small appends are written raw and seal to a fraction of it).
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { disk_budget: None, segment_bytes: 4 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log stream {stream:?} of group {group:?} already exists")]
    StreamExists { group: String, stream: String },
    #[error("log stream {stream:?} of group {group:?} does not exist")]
    NoSuchStream { group: String, stream: String },
    #[error("log store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("log store data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An event to append: milliseconds since the epoch and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub timestamp: i64,
    pub message: String,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub stream: Arc<str>,
    /// The event's position in its stream (0, 1, 2, ... in append order).
    pub seq: u64,
    pub timestamp: i64,
    /// When the store took it (milliseconds since the epoch).
    pub ingestion_time: i64,
    pub message: String,
}

/// What the store knows of a stream (DescribeLogStreams' numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub creation_time: i64,
    pub first_event_timestamp: Option<i64>,
    pub last_event_timestamp: Option<i64>,
    pub last_ingestion_time: Option<i64>,
    pub stored_bytes: u64,
    /// The `seq` the next appended event gets.
    pub next_seq: u64,
}

/// The outcome of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Events stored by this call.
    pub stored: usize,
    /// Leading events skipped because the stream already held their sequence numbers.
    pub duplicates: usize,
    pub next_seq: u64,
}

/// Where GetLogEvents is in a stream: between two events (`seq` is the first event after the
/// cursor). The API turns it into its forward/backward tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor(pub u64);

/// A read of one stream (GetLogEvents).
#[derive(Clone, Debug, Default)]
pub struct Read {
    /// Inclusive start, exclusive end, in event timestamps (ms).
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Continue from here; `None`: from the head when `from_head`, else from the tail.
    pub cursor: Option<Cursor>,
    /// Read towards newer events (true) or older ones.
    pub forward: bool,
    pub from_head: bool,
    /// At most this many events (0: 10,000, GetLogEvents' default).
    pub limit: usize,
}

/// A page of a stream, in stream order (oldest first) whichever way it was read.
#[derive(Clone, Debug, Default)]
pub struct ReadPage {
    pub events: Vec<StoredEvent>,
    /// The cursor before the first event returned and after the last one: a read backward from
    /// `backward`, or forward from `forward`, continues. At the end of the stream, reading on
    /// returns no events and the same cursor again (as AWS's tokens repeat).
    pub backward: Cursor,
    pub forward: Cursor,
}

/// Which streams of a group a scan reads.
#[derive(Clone, Debug, Default)]
pub enum Streams {
    #[default]
    All,
    Named(Vec<String>),
    Prefix(String),
}

/// Where a scan stopped, to continue (FilterLogEvents' nextToken). A scan that stops on
/// `max_scanned_bytes` may return a cursor that names no event (after everything before a
/// timestamp: `stream` is `"\u{10FFFF}"`, `seq` is `u64::MAX`); it is to be passed back as is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScanCursor {
    pub timestamp: i64,
    pub stream: String,
    pub seq: u64,
}

/// A search across the streams of a group (FilterLogEvents, Insights).
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub streams: Streams,
    /// Inclusive start, inclusive end, in event timestamps (ms), as FilterLogEvents takes them.
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Case-sensitive substrings every wanted message contains: blocks without them are
    /// skipped before any event is decoded (from `FilterPattern::required_substrings`).
    pub required: Vec<String>,
    /// Continue after this event.
    pub after: Option<ScanCursor>,
    /// At most this many matching events (0: 10,000).
    pub limit: usize,
    /// Stop after examining this many bytes of messages (the page then ends with a cursor,
    /// as FilterLogEvents ends a page that searched for long).
    pub max_scanned_bytes: Option<u64>,
}

/// Matching events ordered by (timestamp, stream, seq), and where to continue.
#[derive(Clone, Debug, Default)]
pub struct ScanPage {
    pub events: Vec<StoredEvent>,
    /// `None`: the scan reached the end of the range.
    pub next: Option<ScanCursor>,
    pub scanned_bytes: u64,
    pub scanned_events: u64,
}

/// Events as they are appended, for live tail: the group id, the stream and the new events.
#[derive(Clone, Debug)]
pub struct Tail {
    pub group: Arc<str>,
    pub events: Arc<[StoredEvent]>,
}

/// The store. Clone it to share it.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<store::Handle>,
}

impl LogStore {
    /// Opens (creating) the store in `dir`, recovering what the last run appended: an append
    /// that returned is never lost, one cut short by a crash leaves no partial event.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<LogStore> {
        Ok(LogStore { inner: Arc::new(store::Inner::open(dir.as_ref(), options)?) })
    }

    /// Creates an empty stream. `Error::StreamExists` when it exists.
    pub fn create_stream(&self, group: &str, stream: &str, now: i64) -> Result<()> {
        if self.inner.create_stream(group, stream, now)? {
            Ok(())
        } else {
            Err(Error::StreamExists { group: group.to_owned(), stream: stream.to_owned() })
        }
    }

    /// Creates a stream unless it exists (what the awslogs driver does).
    pub fn ensure_stream(&self, group: &str, stream: &str, now: i64) -> Result<StreamInfo> {
        self.inner.create_stream(group, stream, now)?;
        self.stream(group, stream)
            .ok_or_else(|| Error::NoSuchStream { group: group.to_owned(), stream: stream.to_owned() })
    }

    pub fn delete_stream(&self, group: &str, stream: &str) -> Result<()> {
        self.inner.delete_stream(group, stream)
    }

    /// Deletes every stream of a group (nothing to delete is not an error).
    pub fn delete_group(&self, group: &str) -> Result<()> {
        self.inner.delete_group(group)
    }

    /// The ids of every group that holds streams (to find groups no document names).
    pub fn groups(&self) -> Vec<String> {
        self.inner.groups()
    }

    pub fn stream(&self, group: &str, stream: &str) -> Option<StreamInfo> {
        self.inner.stream_info(group, stream)
    }

    /// The group's streams whose names start with `prefix`, ordered by name.
    pub fn streams(&self, group: &str, prefix: &str) -> Vec<StreamInfo> {
        self.inner.streams(group, prefix)
    }

    /// Bytes the group's events take (DescribeLogGroups' `storedBytes`).
    pub fn stored_bytes(&self, group: &str) -> u64 {
        self.inner.stored_bytes(group)
    }

    /// Appends events to a stream (which must exist), durably when it returns. With `seq`,
    /// the events are numbered `seq, seq + 1, ...` by their sender and those the stream
    /// already holds (below its `next_seq`) are skipped; a `seq` beyond `next_seq` is taken
    /// as is (the sender lost events: the gap is not an error). Appends to one stream are
    /// serialized; appends to different streams proceed in parallel. Concurrent appends to
    /// one stream share their disk syncs (group commit); numbered ones must still be sent in
    /// order, one batch after the other (a later batch arriving first would make a gap, and
    /// the earlier one would then be skipped as already held).
    pub fn append(&self, group: &str, stream: &str, events: &[Event], seq: Option<u64>, now: i64) -> Result<Appended> {
        self.inner.append(group, stream, events.iter().map(|e| (e.timestamp, e.message.as_str())), seq, now)
    }

    /// [`LogStore::append`] of events given as (timestamp, message) in order, wherever the
    /// caller keeps them (a packed batch, say: no string per event).
    pub fn append_iter<'a, I>(
        &self,
        group: &str,
        stream: &str,
        events: I,
        seq: Option<u64>,
        now: i64,
    ) -> Result<Appended>
    where
        I: ExactSizeIterator<Item = (i64, &'a str)> + Clone,
    {
        self.inner.append(group, stream, events, seq, now)
    }

    /// Reads a page of one stream.
    pub fn read(&self, group: &str, stream: &str, read: &Read) -> Result<ReadPage> {
        self.inner.read(group, stream, read)
    }

    /// Searches a group's streams; `matches` decides on each candidate message.
    pub fn scan(&self, group: &str, scan: &Scan, matches: &(dyn Fn(&str) -> bool + Sync)) -> Result<ScanPage> {
        self.inner.scan(group, scan, matches)
    }

    /// Retention: events older than `before` (ms) disappear from reads at once; their space is
    /// reclaimed as whole segments fall out of the window. Returns the bytes reclaimed.
    pub fn expire(&self, group: &str, before: i64) -> Result<u64> {
        self.inner.expire(group, before)
    }

    /// Every append from now on (live tail). A receiver that lags loses batches (and learns
    /// how many from `RecvError::Lagged`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Tail> {
        self.inner.tail.subscribe()
    }

    /// Bytes the whole store takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.disk.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
