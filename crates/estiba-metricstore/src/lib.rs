//! The metric store: CloudWatch metrics' datapoints, beside the versioned store (metrics are
//! high-volume data that must never go through it). Each series (account, region, namespace,
//! metric name, dimensions) keeps, per unit, time buckets at AWS's resolutions and retention:
//! 1-second buckets of high-resolution data for 3 hours, 1-minute buckets for 15 days,
//! 5-minute for 63 days, 1-hour for 455 days ([`TIERS`]). A datapoint is aggregated into every
//! tier when it is written (so "rolling up" is only dropping the finer tiers as they age out,
//! and a coarse bucket is exactly the merge of the fine ones it covers). A bucket holds
//! SampleCount, Sum, Minimum, Maximum and a mergeable quantile sketch for percentiles (within
//! [`RELATIVE_ERROR`], see `sketch.rs`).
//!
//! The store knows nothing of AWS's wire shapes, limits or messages: the CloudWatch API
//! validates (names, 30 dimensions, timestamps two weeks back and two hours ahead, value
//! range, `Values`/`Counts` lengths) and turns [`Datapoint`]s into its answers. Every method is
//! synchronous and may block on disk (async callers use `tokio::task::spawn_blocking`); a
//! [`MetricStore`] is cheap to clone and safe to share.
//!
//! **Time.** Every timestamp is milliseconds since the epoch, and every call that depends on
//! the present takes `now` from its caller: the store never reads the clock. A caller that
//! compresses time (the server's `--metric-period`, where one AWS minute lasts e.g. 5 s)
//! maps real time to AWS time before calling, `aws = origin + (real − origin) × 60 s /
//! metric_period`, for datapoint timestamps and `now` alike, and maps back what it shows as
//! real time; then buckets, periods and retention all stay AWS's numbers (15 AWS days of
//! 1-minute data last 30 real hours at 5 s). `origin` must not change while the data lives
//! (persist it with the server's state), or what was stored no longer lines up.
//!
//! **Durability.** Series are spread over shards by hash; a put appends one checksummed
//! record per shard it touches to that shard's write-ahead buffer, which a background thread
//! writes and syncs every [`Options::sync_interval`] (1 s): `kill -9` or a power loss loses
//! at most the last interval of datapoints, never the store's consistency (a torn tail is cut
//! on open). Past [`Options::compact_bytes`] of log, a shard is snapshotted (written whole,
//! synced, renamed) and its log restarted. The format is described in `format.rs`.
//!
//! **Memory.** Every bucket is in memory: per tier the newest 64–127 in a vector, older ones
//! packed into encoded chunks (`tier.rs`; [`MetricStore::stats`] says how much). Memory grows
//! with series × retention.
//!
//! **Architecture invariant:** no AWS wire types, no HTTP, no versioned store.

mod format;
mod sketch;
mod store;
mod tier;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use sketch::RELATIVE_ERROR;

/// A tier of buckets: its resolution and how long it is kept, both in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub resolution: i64,
    pub retention: i64,
}

const DAY: i64 = 86_400;

/// AWS's schedule: 1 s (high-resolution data only) kept 3 hours, 1 min 15 days, 5 min 63 days,
/// 1 h 455 days.
pub const TIERS: [Tier; 4] = [
    Tier { resolution: 1, retention: 3 * 3600 },
    Tier { resolution: 60, retention: 15 * DAY },
    Tier { resolution: 300, retention: 63 * DAY },
    Tier { resolution: 3600, retention: 455 * DAY },
];

/// A unit as CloudWatch names it (`Bytes/Second`, `None` for a datum put without one). The
/// store never interprets units (CloudWatch converts none): it only keeps the datapoints of
/// each unit of a series apart. The API passes its own shared names (an `Arc<str>` per
/// `StandardUnit`), so a put allocates no unit.
pub type Unit = Arc<str>;

/// What CloudWatch calls the unit of a datum put without one.
pub const NO_UNIT: &str = "None";

/// A dimension: a name/value pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dimension {
    pub name: String,
    pub value: String,
}

impl Dimension {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Dimension {
        Dimension { name: name.into(), value: value.into() }
    }
}

/// A series' identity. Dimensions are kept sorted by name (then value), so the order they were
/// given in does not matter; the unit is not part of it (see [`UnitFilter`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricId {
    pub account: String,
    pub region: String,
    pub namespace: String,
    pub name: String,
    dimensions: Vec<Dimension>,
}

impl MetricId {
    pub fn new(
        account: impl Into<String>,
        region: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        mut dimensions: Vec<Dimension>,
    ) -> MetricId {
        dimensions.sort();
        MetricId {
            account: account.into(),
            region: region.into(),
            namespace: namespace.into(),
            name: name.into(),
            dimensions,
        }
    }

    /// Sorted by name, then value.
    pub fn dimensions(&self) -> &[Dimension] {
        &self.dimensions
    }
}

/// How long a datapoint's finest bucket is (PutMetricData's `StorageResolution`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resolution {
    /// 60 s: aggregated into 1-minute buckets and coarser.
    #[default]
    Standard,
    /// 1 s: also kept in 1-second buckets for 3 hours.
    High,
}

/// PutMetricData's `StatisticValues`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatisticSet {
    pub sample_count: f64,
    pub sum: f64,
    pub minimum: f64,
    pub maximum: f64,
}

/// What a datum carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `Value`.
    Single(f64),
    /// `Values` with their `Counts` (empty: each value once; a missing count counts 1).
    Values { values: Vec<f64>, counts: Vec<f64> },
    /// `StatisticValues`. Percentiles are available over it only when SampleCount is 1 or
    /// Minimum = Maximum, as CloudWatch says; otherwise percentiles of the buckets it falls in
    /// are `None`.
    Statistics(StatisticSet),
}

/// One `MetricDatum` of a PutMetricData call (its namespace is the call's).
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub name: String,
    /// In any order.
    pub dimensions: Vec<Dimension>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub unit: Unit,
    pub resolution: Resolution,
    pub value: Value,
}

/// A statistic a query computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Statistic {
    SampleCount,
    Sum,
    Average,
    Minimum,
    Maximum,
    /// `pNN`: the percentile (0 to 100), within [`RELATIVE_ERROR`].
    Percentile(f64),
}

impl Statistic {
    /// `SampleCount`, `Sum`, `Average`, `Minimum`, `Maximum`, `p50`, `p99.9`, ...
    pub fn parse(s: &str) -> Option<Statistic> {
        Some(match s {
            "SampleCount" => Statistic::SampleCount,
            "Sum" => Statistic::Sum,
            "Average" => Statistic::Average,
            "Minimum" => Statistic::Minimum,
            "Maximum" => Statistic::Maximum,
            _ => {
                let p: f64 = s.strip_prefix('p')?.parse().ok()?;
                if !(0.0..=100.0).contains(&p) || s.len() < 2 || !s.as_bytes()[1].is_ascii_digit() {
                    return None;
                }
                Statistic::Percentile(p)
            }
        })
    }
}

/// Which units a query reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UnitFilter {
    /// Everything, each unit apart: a period with data of two units gives two datapoints
    /// (GetMetricStatistics without `Unit`, whose datapoints each say their unit).
    #[default]
    Each,
    /// Everything, merged into one datapoint per period whatever the units (a datapoint's
    /// `unit` is set only when one unit contributed).
    Merged,
    /// Only data put with this unit (GetMetricStatistics / GetMetricData with `Unit`): none
    /// when the series has none of it; CloudWatch never converts units.
    Only(Unit),
}

/// A time range, a period and statistics (GetMetricStatistics, one MetricStat of
/// GetMetricData).
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// Inclusive, milliseconds. Rounded down as CloudWatch rounds it ([`align_start`]).
    pub start: i64,
    /// Exclusive, milliseconds. A last period that runs past it covers only data before it.
    pub end: i64,
    /// Seconds: 1, 5, 10, 20, 30 or a multiple of 60 (else [`Error::InvalidPeriod`]).
    pub period: i64,
    pub statistics: Vec<Statistic>,
    pub unit: UnitFilter,
}

/// A period that holds data (empty periods give none, as in CloudWatch).
#[derive(Clone, Debug, PartialEq)]
pub struct Datapoint {
    /// The period's start, milliseconds.
    pub timestamp: i64,
    /// The data's unit (with [`UnitFilter::Merged`], `None` when several units contributed).
    pub unit: Option<Unit>,
    /// One per requested statistic, in order; a percentile CloudWatch would not give (see
    /// [`Value::Statistics`], negative values) is `None`.
    pub values: Vec<Option<f64>>,
}

/// A condition on one dimension: the metric has a dimension of this name (with this value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimensionFilter {
    pub name: String,
    pub value: Option<String>,
}

/// Which series a listing or a multi-series query covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub account: String,
    pub region: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Every filter must match (a metric may have more dimensions).
    pub dimensions: Vec<DimensionFilter>,
    /// Only metrics whose dimension names are exactly the filters' names (SEARCH's schema).
    pub exact_dimension_names: bool,
}

/// Where a listing continues (ListMetrics' NextToken): after this metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCursor(MetricId);

impl ListCursor {
    /// An opaque printable token.
    pub fn to_token(&self) -> String {
        format::key_bytes(&self.0).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `None` for a token this store did not make.
    pub fn from_token(token: &str) -> Option<ListCursor> {
        if !token.len().is_multiple_of(2) || !token.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> =
            (0..token.len()).step_by(2).map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok()).collect();
        format::parse_key(&bytes?).map(ListCursor)
    }
}

/// A page of metrics ordered by namespace, name, then dimensions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricPage {
    pub metrics: Vec<MetricId>,
    pub next: Option<ListCursor>,
}

/// What [`MetricStore::expire`] dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub buckets: u64,
    pub series: u64,
}

/// What the store holds (for its own metrics and the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub series: u64,
    pub buckets: u64,
    /// Sketch bins written out (buckets whose samples were all equal have none).
    pub bins: u64,
    /// Memory the buckets take, estimated from their sizes and capacities.
    pub memory_bytes: u64,
    /// Log bytes not yet folded into snapshots.
    pub log_bytes: u64,
}

/// How the store is tuned.
#[derive(Clone, Debug)]
pub struct Options {
    /// Shards (independent locks and logs) of a new store; an existing store keeps its own.
    pub shards: usize,
    /// How often buffered datapoints are written and synced: at most this much is lost on a
    /// crash.
    pub sync_interval: Duration,
    /// A shard's log is folded into a snapshot past this many bytes (open replays at most this
    /// much per shard: ~30 bytes a datapoint, a few million datapoints a second).
    pub compact_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { shards: 16, sync_interval: Duration::from_secs(1), compact_bytes: 16 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("period {0} is not 1, 5, 10, 20, 30 or a multiple of 60 seconds")]
    InvalidPeriod(i64),
    #[error("metric store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("metric store data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The start CloudWatch uses for a query starting at `start` (ms) when asked at `now` (ms):
/// for periods under a minute, down to a multiple of the period (even divisions of a minute);
/// otherwise down to the minute when `start` is less than 15 days old, to 5 minutes up to 63
/// days, to the hour beyond.
pub fn align_start(start: i64, period: i64, now: i64) -> i64 {
    let s = start.div_euclid(1000);
    let age = now.div_euclid(1000) - s;
    let unit = if period < 60 {
        period.max(1)
    } else if age < 15 * DAY {
        60
    } else if age < 63 * DAY {
        300
    } else {
        3600
    };
    (s - s.rem_euclid(unit)) * 1000
}

/// The store. Clone it to share it.
#[derive(Clone)]
pub struct MetricStore {
    inner: Arc<store::Handle>,
}

impl MetricStore {
    /// Opens (creating) the store in `dir`, replaying what the last run logged; starts the
    /// background thread that syncs and compacts. Dropping the last clone stops the thread and
    /// writes out what is buffered: when that drop returns, the directory may be opened again.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<MetricStore> {
        Ok(MetricStore { inner: Arc::new(store::Inner::open(dir.as_ref(), options)?) })
    }

    /// Stores a PutMetricData call's datapoints; `now` (ms) is when it arrived (ListMetrics
    /// lists by it). Durable within [`Options::sync_interval`], or at once with
    /// [`MetricStore::flush`].
    pub fn put(&self, account: &str, region: &str, namespace: &str, data: &[Datum], now: i64) -> Result<()> {
        self.inner.put(account, region, namespace, data, now)
    }

    /// One series' datapoints (GetMetricStatistics, a MetricStat of GetMetricData), ordered by
    /// timestamp (then unit).
    pub fn get(&self, metric: &MetricId, query: &Query, now: i64) -> Result<Vec<Datapoint>> {
        self.inner.get(metric, query, now)
    }

    /// One statistic of one series (the first of `query.statistics`), as `get` would give
    /// it, to `f` as (period start ms, value), oldest first, skipping periods where the
    /// statistic has no value (a percentile CloudWatch would not give), until `f` returns
    /// false. GetMetricData's path: no datapoint is made per period.
    pub fn get_values(
        &self,
        metric: &MetricId,
        query: &Query,
        now: i64,
        f: impl FnMut(i64, f64) -> bool,
    ) -> Result<()> {
        self.inner.get_values(metric, query, now, f)
    }

    /// The datapoints of every series `selector` matches, ordered by metric (SEARCH, metric
    /// math over many series). Series without data in the range are left out.
    pub fn get_matching(
        &self,
        selector: &Selector,
        query: &Query,
        now: i64,
    ) -> Result<Vec<(MetricId, Vec<Datapoint>)>> {
        self.inner.get_matching(selector, query, now)
    }

    /// ListMetrics: metrics that `selector` matches and that had a datapoint put at or after
    /// `active_since` (ms: `now` − 14 days for AWS's default, − 3 hours for `RecentlyActive`),
    /// after `after`, at most `limit` (0: 500).
    pub fn list(&self, selector: &Selector, active_since: i64, after: Option<&ListCursor>, limit: usize) -> MetricPage {
        self.inner.list(selector, active_since, after, limit)
    }

    /// [`MetricStore::list`] without waiting, for a caller that must not block: `None` when a
    /// shard is busy (a put, compaction or expiry holds it) or the store holds more than
    /// `max_series` series (the scan would take long); the caller then runs `list` where it may
    /// block.
    pub fn try_list(
        &self,
        selector: &Selector,
        active_since: i64,
        after: Option<&ListCursor>,
        limit: usize,
        max_series: usize,
    ) -> Option<MetricPage> {
        self.inner.try_list(selector, active_since, after, limit, max_series)
    }

    /// Retention: drops every bucket older than its tier keeps (as of `now`, ms), and series
    /// left empty. Queries already ignore such buckets; this reclaims their memory and disk.
    pub fn expire(&self, now: i64) -> Result<Expired> {
        self.inner.expire(now)
    }

    /// Writes and syncs what is buffered now.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_all()
    }

    /// Snapshots every shard and restarts its log (done by itself past `compact_bytes`).
    pub fn compact(&self) -> Result<()> {
        self.inner.compact_all()
    }

    /// Every series with data, encoded for another store's [`MetricStore::import`] (a
    /// server that joins late takes the leader's history this way). Each shard is read as of
    /// one moment; a caller that needs one moment for all holds off puts meanwhile.
    pub fn export(&self) -> Vec<u8> {
        self.inner.export()
    }

    /// Replaces each series of an [`MetricStore::export`] with the exported one (series the
    /// export lacks stay as they are), made durable before it returns (every shard is
    /// snapshotted). An export that does not decode is `Error::Corrupt` and changes nothing.
    /// Returns the number of series imported.
    pub fn import(&self, bytes: &[u8]) -> Result<u64> {
        self.inner.import(bytes)
    }

    /// How many series the store holds.
    pub fn series_count(&self) -> usize {
        self.inner.series_count()
    }

    /// Counts what the store holds (walks every bucket: for occasional use).
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests;
