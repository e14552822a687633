//! Shards, ingest, queries, the log and snapshots (formats in `format.rs`).
//!
//! Each shard has two locks: `state` (its series and the log buffer; held by puts, queries
//! and while a snapshot is encoded) and `log` (the open log file; held while writing it, so
//! the buffer reaches the file in order). Lock order: `log`, then `state`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::format::{self, Reader};
use crate::sketch::{key_of, Agg};
use crate::tier::Tier;
use crate::{
    align_start, Datapoint, Datum, Dimension, Error, Expired, ListCursor, MetricId, MetricPage, Options, Query,
    Resolution, Result, Selector, Statistic, Stats, Unit, UnitFilter, Value, TIERS,
};

const NO_ID: u32 = u32::MAX;
const DEFAULT_LIST_LIMIT: usize = 500;

/// One unit's buckets of a series, per tier, each sorted by start (seconds).
struct UnitSeries {
    unit: Unit,
    tiers: [Tier; 4],
}

struct Series {
    key: Box<[u8]>,
    id: Arc<MetricId>,
    /// When a datapoint was last put (ms, the caller's `now`).
    last_put: i64,
    /// Its id in the current log file (`NO_ID`: not defined there yet).
    wal_id: u32,
    units: Vec<UnitSeries>,
}

impl Series {
    fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The unit series of `unit`, made (with the name from `make`) if new.
    fn unit_mut(&mut self, unit: &str, make: impl FnOnce() -> Unit) -> &mut UnitSeries {
        match self.units.iter().position(|u| &*u.unit == unit) {
            Some(i) => &mut self.units[i],
            None => {
                self.units.push(UnitSeries { unit: make(), tiers: Default::default() });
                self.units.last_mut().expect("just pushed")
            }
        }
    }
}

#[derive(Default)]
struct State {
    series: Vec<Series>,
    index: HashMap<Box<[u8]>, usize>,
    /// Records not yet written to the log file.
    buf: Vec<u8>,
    /// The generation of the open log file.
    generation: u64,
    next_wal_id: u32,
    /// Bytes of log since the last snapshot.
    log_bytes: u64,
}

impl State {
    /// The series of `key`, made if new (`None`: a key that does not parse).
    fn series_of(&mut self, key: &[u8]) -> Option<usize> {
        if let Some(&i) = self.index.get(key) {
            return Some(i);
        }
        let id = format::parse_key(key)?;
        let key: Box<[u8]> = key.into();
        self.series.push(Series {
            key: key.clone(),
            id: Arc::new(id),
            last_put: i64::MIN,
            wal_id: NO_ID,
            units: Vec::new(),
        });
        self.index.insert(key, self.series.len() - 1);
        Some(self.series.len() - 1)
    }

    fn find(&self, key: &[u8]) -> Option<&Series> {
        self.index.get(key).map(|&i| &self.series[i])
    }
}

struct Log {
    file: File,
    /// The buffer last written, swapped with the state's so neither is reallocated.
    spare: Vec<u8>,
    /// Whether the directory entry of `file` is known durable. A log made at open is synced
    /// into its directory with its first records, not at open: one directory sync per shard
    /// was most of a server's start (16 shards, 11 ms here), and an empty log holds nothing
    /// to lose.
    dir_synced: bool,
}

struct Shard {
    dir: PathBuf,
    state: Mutex<State>,
    log: Mutex<Log>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves data that is still consistent enough to use (every
    // update is a bucket merge); never propagate the poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Inner {
    shards: Vec<Shard>,
    options: Options,
    closing: AtomicBool,
}

/// What the public handle holds: the store and its background thread, which holds the store
/// too but not this, so the last handle's drop stops the thread, waits for it and flushes;
/// when it returns, nothing touches the directory any more.
pub(crate) struct Handle {
    inner: Arc<Inner>,
    background: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for Handle {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        if let Some(thread) = self.background.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!("metric store: the sync thread panicked");
            }
        }
        if let Err(e) = self.inner.flush_all() {
            tracing::error!(error = %e, "metric store: final flush failed");
        }
    }
}

fn wal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:016x}.wal"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Adds one datum to a unit series, in every tier whose retention (as of `now`) still covers it.
fn apply(us: &mut UnitSeries, high: bool, ts: i64, value: &Value, now: i64, keys: &mut Vec<Option<i16>>) {
    let ts = ts.div_euclid(1000);
    let now = now.div_euclid(1000);
    let single_key = match value {
        Value::Single(x) => key_of(*x),
        Value::Values { values, .. } => {
            keys.clear();
            keys.extend(values.iter().map(|&x| key_of(x)));
            None
        }
        Value::Statistics(_) => None,
    };
    for (t, tier) in TIERS.iter().enumerate().skip(if high { 0 } else { 1 }) {
        let start = ts - ts.rem_euclid(tier.resolution);
        if start + tier.resolution <= now - tier.retention {
            continue;
        }
        us.tiers[t].update(start, |agg| match value {
            Value::Single(x) => agg.add_value(*x, 1.0, single_key),
            Value::Values { values, counts } => {
                for (i, (&x, &k)) in values.iter().zip(keys.iter()).enumerate() {
                    agg.add_value(x, counts.get(i).copied().unwrap_or(1.0), k);
                }
            }
            Value::Statistics(s) => agg.add_set(s.sample_count, s.sum, s.minimum, s.maximum),
        });
    }
}

fn check_period(period: i64) -> Result<()> {
    if matches!(period, 1 | 5 | 10 | 20 | 30) || (period > 0 && period % 60 == 0) {
        Ok(())
    } else {
        Err(Error::InvalidPeriod(period))
    }
}

/// Calls `f` with each period window of a tier's buckets that holds data: (window start in
/// seconds, its aggregate, with the sketches merged only when `sketch`), in order, until it
/// returns false. Windows start at `start` + k × `period`; those starting before `cutoff`
/// (out of the tier's retention) are left out.
fn for_windows(
    tier: &Tier,
    start: i64,
    end_ms: i64,
    period: i64,
    cutoff: i64,
    sketch: bool,
    mut f: impl FnMut(i64, &Agg) -> bool,
) {
    let from = if cutoff > start { start + (cutoff - start + period - 1) / period * period } else { start };
    let window = |b: i64| start + (b - start).div_euclid(period) * period;
    let mut acc = Agg::default();
    let mut current = None;
    let mut go = true;
    tier.visit(from, end_ms, |b, agg| {
        let ws = window(b);
        if current != Some(ws) {
            if let Some(w) = current {
                go = f(w, &acc);
                if !go {
                    return false;
                }
                acc.clear();
            }
            current = Some(ws);
        }
        if sketch {
            acc.merge(agg);
        } else {
            acc.merge_numbers(agg);
        }
        true
    });
    if let Some(w) = current.filter(|_| go) {
        f(w, &acc);
    }
}

fn statistic(a: &Agg, s: Statistic) -> Option<f64> {
    match s {
        Statistic::SampleCount => Some(a.count),
        Statistic::Sum => Some(a.sum),
        Statistic::Average => (a.count > 0.0).then(|| a.sum / a.count),
        Statistic::Minimum => Some(a.min),
        Statistic::Maximum => Some(a.max),
        Statistic::Percentile(p) => a.quantile(p / 100.0),
    }
}

fn datapoint(ws: i64, unit: Option<Unit>, a: &Agg, q: &Query) -> Datapoint {
    Datapoint { timestamp: ws * 1000, unit, values: q.statistics.iter().map(|&s| statistic(a, s)).collect() }
}

/// A query over one series (period already checked).
fn compute(series: &Series, q: &Query, now: i64) -> Vec<Datapoint> {
    let p = q.period;
    let start = align_start(q.start, p, now).div_euclid(1000);
    // The coarsest tier whose buckets tile the periods: the same answer as the finer ones
    // (merging is exact), from the fewest buckets and the longest retention.
    let t =
        (0..TIERS.len()).rev().find(|&t| p % TIERS[t].resolution == 0 && start % TIERS[t].resolution == 0).unwrap_or(0);
    let cutoff = now.div_euclid(1000) - TIERS[t].retention;
    let sketch = q.statistics.iter().any(|s| matches!(s, Statistic::Percentile(_)));
    let units = series.units.iter().filter(|u| match &q.unit {
        UnitFilter::Only(unit) => u.unit == *unit,
        _ => true,
    });
    let units: Vec<&UnitSeries> = units.collect();
    if q.unit == UnitFilter::Merged && units.len() > 1 {
        let mut merged: std::collections::BTreeMap<i64, (Agg, Option<Unit>)> = Default::default();
        for u in &units {
            for_windows(&u.tiers[t], start, q.end, p, cutoff, sketch, |w, a| {
                let e = merged.entry(w).or_insert_with(|| (Agg::default(), Some(u.unit.clone())));
                if e.1.as_ref() != Some(&u.unit) {
                    e.1 = None;
                }
                e.0.merge(a);
                true
            });
        }
        return merged.into_iter().map(|(w, (a, u))| datapoint(w, u, &a, q)).collect();
    }
    let mut out = Vec::new();
    for u in &units {
        for_windows(&u.tiers[t], start, q.end, p, cutoff, sketch, |w, a| {
            out.push(datapoint(w, Some(u.unit.clone()), a, q));
            true
        });
    }
    if units.len() > 1 {
        out.sort_by(|a, b| (a.timestamp, &a.unit).cmp(&(b.timestamp, &b.unit)));
    }
    out
}

/// The first statistic of `q` over one series, period by period (those where it has a value),
/// oldest first, to `f` until it returns false: what [`compute`] gives, without making a
/// [`Datapoint`] per period when one unit is read.
fn values(series: &Series, q: &Query, now: i64, f: &mut dyn FnMut(i64, f64) -> bool) {
    let Some(&stat) = q.statistics.first() else { return };
    let p = q.period;
    let start = align_start(q.start, p, now).div_euclid(1000);
    let t =
        (0..TIERS.len()).rev().find(|&t| p % TIERS[t].resolution == 0 && start % TIERS[t].resolution == 0).unwrap_or(0);
    let mut units = series.units.iter().filter(|u| match &q.unit {
        UnitFilter::Only(unit) => u.unit == *unit,
        _ => true,
    });
    let (Some(u), None) = (units.next(), units.next()) else {
        // Several units (or none): merged or listed as `compute` does.
        for d in compute(series, &Query { statistics: vec![stat], ..q.clone() }, now) {
            if let Some(v) = d.values[0] {
                if !f(d.timestamp, v) {
                    return;
                }
            }
        }
        return;
    };
    let cutoff = now.div_euclid(1000) - TIERS[t].retention;
    let sketch = matches!(stat, Statistic::Percentile(_));
    for_windows(&u.tiers[t], start, q.end, p, cutoff, sketch, |w, a| match statistic(a, stat) {
        Some(v) => f(w * 1000, v),
        None => true,
    });
}

fn matches(sel: &Selector, id: &MetricId) -> bool {
    id.account == sel.account
        && id.region == sel.region
        && sel.namespace.as_ref().is_none_or(|n| *n == id.namespace)
        && sel.name.as_ref().is_none_or(|n| *n == id.name)
        && sel
            .dimensions
            .iter()
            .all(|f| id.dimensions().iter().any(|d| d.name == f.name && f.value.as_ref().is_none_or(|v| *v == d.value)))
        && (!sel.exact_dimension_names
            || (id.dimensions().len() == sel.dimensions.len()
                && id.dimensions().iter().all(|d| sel.dimensions.iter().any(|f| f.name == d.name))))
}

impl Inner {
    pub fn open(dir: &Path, options: Options) -> Result<Handle> {
        let started = Instant::now();
        fs::create_dir_all(dir)?;
        let format_path = dir.join("FORMAT");
        let shards = match fs::read_to_string(&format_path) {
            Ok(text) => text
                .strip_prefix("estiba-metricstore 1 shards ")
                .and_then(|n| n.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::Corrupt(format!("{}: {text:?}", format_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let n = options.shards.clamp(1, 256);
                let tmp = dir.join("FORMAT.tmp");
                let mut f = File::create(&tmp)?;
                writeln!(f, "estiba-metricstore 1 shards {n}")?;
                f.sync_all()?;
                fs::rename(&tmp, &format_path)?;
                sync_dir(dir)?;
                n
            }
            Err(e) => return Err(e.into()),
        };
        let shards = (0..shards).map(|i| open_shard(&dir.join(format!("{i:02}")))).collect::<Result<Vec<_>>>()?;
        let inner = Arc::new(Inner { shards, options, closing: AtomicBool::new(false) });
        tracing::info!(dir = %dir.display(), series = inner.series_count(), ms = started.elapsed().as_millis() as u64, "metric store open");
        let shared = inner.clone();
        let thread = std::thread::Builder::new().name("metricstore-sync".into()).spawn(move || background(&shared))?;
        Ok(Handle { inner, background: Some(thread) })
    }

    fn shard_of(&self, key: &[u8]) -> &Shard {
        &self.shards[crc32fast::hash(key) as usize % self.shards.len()]
    }

    pub fn put(&self, account: &str, region: &str, namespace: &str, data: &[Datum], now: i64) -> Result<()> {
        // Every datum's key, then the data grouped by shard: one lock and one log record per
        // shard touched.
        let mut keys = Vec::with_capacity(data.len() * 64);
        let mut spans = Vec::with_capacity(data.len());
        let mut dims: Vec<&Dimension> = Vec::new();
        for (i, d) in data.iter().enumerate() {
            let from = keys.len();
            if d.dimensions.windows(2).all(|w| w[0] <= w[1]) {
                format::write_key(&mut keys, account, region, namespace, &d.name, d.dimensions.iter());
            } else {
                dims.clear();
                dims.extend(d.dimensions.iter());
                dims.sort();
                format::write_key(&mut keys, account, region, namespace, &d.name, dims.iter().copied());
            }
            let shard = crc32fast::hash(&keys[from..]) as usize % self.shards.len();
            spans.push((shard, from, keys.len(), i));
        }
        spans.sort_unstable_by_key(|s| (s.0, s.3));
        let mut scratch = Vec::new();
        for group in spans.chunk_by(|a, b| a.0 == b.0) {
            let mut st = lock(&self.shards[group[0].0].state);
            let st = &mut *st;
            let rec = st.buf.len();
            st.buf.extend_from_slice(&[0; 8]);
            st.buf.extend_from_slice(&now.to_le_bytes());
            for &(_, from, to, i) in group {
                let key = &keys[from..to];
                let d = &data[i];
                let Some(s) = st.series_of(key) else { continue };
                let series = &mut st.series[s];
                if series.wal_id == NO_ID {
                    series.wal_id = st.next_wal_id;
                    st.next_wal_id += 1;
                    st.buf.push(1);
                    format::put_varint(&mut st.buf, u64::from(series.wal_id));
                    format::put_varint(&mut st.buf, key.len() as u64);
                    st.buf.extend_from_slice(key);
                }
                st.buf.push(2);
                format::put_varint(&mut st.buf, u64::from(series.wal_id));
                format::put_str(&mut st.buf, &d.unit);
                st.buf.push(u8::from(d.resolution == Resolution::High));
                format::put_zvarint(&mut st.buf, d.timestamp);
                format::put_value(&mut st.buf, &d.value);
                series.last_put = series.last_put.max(now);
                apply(
                    series.unit_mut(&d.unit, || d.unit.clone()),
                    d.resolution == Resolution::High,
                    d.timestamp,
                    &d.value,
                    now,
                    &mut scratch,
                );
            }
            format::seal_record(&mut st.buf[rec..]);
            st.log_bytes += (st.buf.len() - rec) as u64;
        }
        Ok(())
    }

    pub fn get(&self, metric: &MetricId, q: &Query, now: i64) -> Result<Vec<Datapoint>> {
        check_period(q.period)?;
        let key = format::key_bytes(metric);
        let st = lock(&self.shard_of(&key).state);
        Ok(st.find(&key).map(|s| compute(s, q, now)).unwrap_or_default())
    }

    /// `get` with one statistic (the first of `q`'s), as (period start, value) pairs to `f`,
    /// oldest first and leaving out periods where the statistic has no value, until `f`
    /// returns false. Cheaper than `get`: no [`Datapoint`] is made when the series has one
    /// unit (or `q` names one).
    pub fn get_values(
        &self,
        metric: &MetricId,
        q: &Query,
        now: i64,
        mut f: impl FnMut(i64, f64) -> bool,
    ) -> Result<()> {
        check_period(q.period)?;
        let key = format::key_bytes(metric);
        let st = lock(&self.shard_of(&key).state);
        if let Some(s) = st.find(&key) {
            values(s, q, now, &mut f);
        }
        Ok(())
    }

    pub fn get_matching(&self, sel: &Selector, q: &Query, now: i64) -> Result<Vec<(MetricId, Vec<Datapoint>)>> {
        check_period(q.period)?;
        let mut out = Vec::new();
        for shard in &self.shards {
            let st = lock(&shard.state);
            for s in st.series.iter().filter(|s| matches(sel, &s.id)) {
                let dps = compute(s, q, now);
                if !dps.is_empty() {
                    out.push((MetricId::clone(&s.id), dps));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub fn list(&self, sel: &Selector, active_since: i64, after: Option<&ListCursor>, limit: usize) -> MetricPage {
        let mut ids: Vec<Arc<MetricId>> = Vec::new();
        for shard in &self.shards {
            list_into(&mut ids, &lock(&shard.state), sel, active_since, after);
        }
        page(ids, limit)
    }

    /// [`Inner::list`] if it can answer at once: `None` when a shard's lock is held (a put,
    /// compaction or expiry in progress) or the store holds more than `max_series` series.
    pub fn try_list(
        &self,
        sel: &Selector,
        active_since: i64,
        after: Option<&ListCursor>,
        limit: usize,
        max_series: usize,
    ) -> Option<MetricPage> {
        let mut states = Vec::with_capacity(self.shards.len());
        let mut series = 0;
        for shard in &self.shards {
            let st = match shard.state.try_lock() {
                Ok(st) => st,
                // As `lock`: a poisoned state is still usable.
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return None,
            };
            series += st.series.len();
            if series > max_series {
                return None;
            }
            states.push(st);
        }
        let mut ids: Vec<Arc<MetricId>> = Vec::new();
        for st in &states {
            list_into(&mut ids, st, sel, active_since, after);
        }
        drop(states);
        Some(page(ids, limit))
    }

    /// Holds shard `i`'s lock until the guard drops (tests of a busy shard).
    #[cfg(test)]
    pub(crate) fn hold_shard(&self, i: usize) -> impl Drop + '_ {
        lock(&self.shards[i].state)
    }

    pub fn expire(&self, now: i64) -> Result<Expired> {
        let now = now.div_euclid(1000);
        let mut out = Expired::default();
        for shard in &self.shards {
            let mut st = lock(&shard.state);
            for s in &mut st.series {
                for u in &mut s.units {
                    for (t, tier) in TIERS.iter().enumerate() {
                        out.buckets += u.tiers[t].expire(now - tier.retention, tier.resolution);
                    }
                }
                s.units.retain(|u| u.tiers.iter().any(|t| !t.is_empty()));
            }
            let before = st.series.len();
            st.series.retain(|s| !s.is_empty());
            if st.series.len() != before {
                out.series += (before - st.series.len()) as u64;
                let st = &mut *st;
                st.index = st.series.iter().enumerate().map(|(i, s)| (s.key.clone(), i)).collect();
            }
        }
        if out.buckets > 0 {
            tracing::debug!(buckets = out.buckets, series = out.series, "metric store expired");
        }
        Ok(out)
    }

    pub fn stats(&self) -> Stats {
        let mut out = Stats::default();
        for shard in &self.shards {
            let st = lock(&shard.state);
            out.log_bytes += st.log_bytes;
            for s in &st.series {
                out.series += 1;
                out.memory_bytes += (std::mem::size_of::<Series>() + s.key.len() * 3 + 64) as u64;
                for u in &s.units {
                    for tier in &u.tiers {
                        let (buckets, bins, bytes) = tier.usage();
                        out.buckets += buckets;
                        out.bins += bins;
                        out.memory_bytes += bytes;
                    }
                }
            }
        }
        out
    }

    pub fn series_count(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.state).series.len()).sum()
    }

    pub fn flush_all(&self) -> Result<()> {
        for shard in &self.shards {
            flush(shard)?;
        }
        Ok(())
    }

    pub fn compact_all(&self) -> Result<()> {
        for shard in &self.shards {
            compact(shard)?;
        }
        Ok(())
    }

    /// Every series with data, shard after shard (each shard's as of one moment).
    pub fn export(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(format::EXPORT_MAGIC);
        out.extend_from_slice(&0u64.to_le_bytes());
        let mut n = 0u64;
        for shard in &self.shards {
            let st = lock(&shard.state);
            for s in st.series.iter().filter(|s| !s.is_empty()) {
                encode_series(&mut out, s);
                n += 1;
            }
        }
        out[8..16].copy_from_slice(&n.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Replaces the series `bytes` (an [`Inner::export`]) holds with their exported buckets,
    /// then snapshots every shard so that they are durable. Nothing changes when `bytes` does
    /// not decode. Returns how many series were replaced.
    pub fn import(&self, bytes: &[u8]) -> Result<u64> {
        let corrupt = || Error::Corrupt("the metric export does not decode".into());
        let mut r = checked(bytes, format::EXPORT_MAGIC).ok_or_else(corrupt)?;
        let n = r.u64().ok_or_else(corrupt)?;
        let mut all = Vec::new();
        for _ in 0..n {
            all.push(decode_series(&mut r).ok_or_else(corrupt)?);
        }
        if !r.done() || all.iter().any(|(key, ..)| format::parse_key(key).is_none()) {
            return Err(corrupt());
        }
        for (key, last_put, units) in all {
            let mut st = lock(&self.shard_of(key).state);
            let i = st.series_of(key).ok_or_else(corrupt)?;
            let s = &mut st.series[i];
            s.last_put = last_put;
            s.units = units;
        }
        if n > 0 {
            self.compact_all()?;
        }
        Ok(n)
    }
}

fn background(inner: &Inner) {
    loop {
        std::thread::park_timeout(inner.options.sync_interval);
        if inner.closing.load(Ordering::Relaxed) {
            return;
        }
        for shard in &inner.shards {
            if let Err(e) = flush(shard) {
                tracing::error!(error = %e, shard = %shard.dir.display(), "metric store: log write failed");
            }
            if lock(&shard.state).log_bytes > inner.options.compact_bytes {
                if let Err(e) = compact(shard) {
                    tracing::error!(error = %e, shard = %shard.dir.display(), "metric store: snapshot failed");
                }
            }
        }
    }
}

/// Writes and syncs a shard's buffered records.
fn flush(shard: &Shard) -> Result<()> {
    let mut log = lock(&shard.log);
    let log = &mut *log;
    log.spare.clear();
    std::mem::swap(&mut log.spare, &mut lock(&shard.state).buf);
    if !log.spare.is_empty() {
        log.file.write_all(&log.spare)?;
        log.file.sync_data()?;
        if !log.dir_synced {
            sync_dir(&shard.dir)?;
            log.dir_synced = true;
        }
    }
    Ok(())
}

/// Snapshots a shard and starts a new log generation; older logs are deleted once the
/// snapshot is in place.
fn compact(shard: &Shard) -> Result<()> {
    let started = Instant::now();
    let mut log = lock(&shard.log);
    let (buf, snapshot, old) = {
        let mut st = lock(&shard.state);
        let new = st.generation + 1;
        let file = OpenOptions::new().create(true).append(true).open(wal_path(&shard.dir, new))?;
        let old = std::mem::replace(&mut log.file, file);
        let buf = std::mem::take(&mut st.buf);
        st.generation = new;
        st.next_wal_id = 0;
        st.log_bytes = 0;
        for s in &mut st.series {
            s.wal_id = NO_ID;
        }
        (buf, encode_snapshot(&st, new), (old, new - 1))
    };
    let (mut old_file, old_gen) = old;
    old_file.write_all(&buf)?;
    old_file.sync_data()?;
    drop(old_file);
    let tmp = shard.dir.join("snapshot.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&snapshot)?;
    f.sync_all()?;
    fs::rename(&tmp, shard.dir.join("snapshot"))?;
    // Also makes the new log's entry durable.
    sync_dir(&shard.dir)?;
    log.dir_synced = true;
    drop(log);
    for generation in log_generations(&shard.dir)? {
        if generation <= old_gen {
            fs::remove_file(wal_path(&shard.dir, generation))?;
        }
    }
    tracing::debug!(shard = %shard.dir.display(), bytes = snapshot.len(), ms = started.elapsed().as_millis() as u64, "metric store snapshot");
    Ok(())
}

fn encode_snapshot(st: &State, wal_from: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(format::SNAP_MAGIC);
    out.extend_from_slice(&wal_from.to_le_bytes());
    out.extend_from_slice(&(st.series.len() as u64).to_le_bytes());
    for s in &st.series {
        encode_series(&mut out, s);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A series as a snapshot (and an export) holds it: key, last put, and each unit's tiers.
fn encode_series(out: &mut Vec<u8>, s: &Series) {
    format::put_varint(out, s.key.len() as u64);
    out.extend_from_slice(&s.key);
    out.extend_from_slice(&s.last_put.to_le_bytes());
    out.push(s.units.len() as u8);
    for u in &s.units {
        format::put_str(out, &u.unit);
        for tier in &u.tiers {
            tier.encode(out);
        }
    }
}

/// What [`encode_series`] wrote: the key, the last put and the units.
fn decode_series<'a>(r: &mut Reader<'a>) -> Option<(&'a [u8], i64, Vec<UnitSeries>)> {
    let len = r.len()?;
    let key = r.bytes(len)?;
    let last_put = r.i64()?;
    let n = r.u8()?;
    let mut units = Vec::with_capacity(n.into());
    for _ in 0..n {
        let mut us = UnitSeries { unit: Unit::from(r.str()?), tiers: Default::default() };
        for tier in &mut us.tiers {
            *tier = Tier::decode(r)?;
        }
        units.push(us);
    }
    Some((key, last_put, units))
}

/// The body of `bytes` under `magic` and a trailing CRC32 of both, when they check out.
fn checked<'a>(bytes: &'a [u8], magic: &[u8; 8]) -> Option<Reader<'a>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader::new(body);
    (r.bytes(8)? == magic).then_some(r)
}

/// Loads a snapshot into an empty state; returns the first log generation it does not include.
fn decode_snapshot(bytes: &[u8], st: &mut State) -> Option<u64> {
    let mut r = checked(bytes, format::SNAP_MAGIC)?;
    let wal_from = r.u64()?;
    let n = r.u64()?;
    for _ in 0..n {
        let (key, last_put, units) = decode_series(&mut r)?;
        let i = st.series_of(key)?;
        let s = &mut st.series[i];
        s.last_put = last_put;
        s.units = units;
    }
    r.done().then_some(wal_from)
}

fn log_generations(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(g) = name.strip_suffix(".wal").and_then(|g| u64::from_str_radix(g, 16).ok()) {
            out.push(g);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Replays one log record; `ids` maps this file's series ids.
fn replay(st: &mut State, payload: &[u8], ids: &mut HashMap<u32, usize>, scratch: &mut Vec<Option<i16>>) -> Option<()> {
    let mut r = Reader::new(payload);
    let now = r.i64()?;
    while !r.done() {
        match r.u8()? {
            1 => {
                let id = u32::try_from(r.varint()?).ok()?;
                let len = r.len()?;
                let s = st.series_of(r.bytes(len)?)?;
                ids.insert(id, s);
            }
            2 => {
                let s = *ids.get(&u32::try_from(r.varint()?).ok()?)?;
                let unit = r.str()?;
                let high = r.u8()? != 0;
                let ts = r.zvarint()?;
                let value = format::get_value(&mut r)?;
                let series = &mut st.series[s];
                series.last_put = series.last_put.max(now);
                apply(series.unit_mut(unit, || Unit::from(unit)), high, ts, &value, now, scratch);
            }
            _ => return None,
        }
    }
    Some(())
}

fn open_shard(dir: &Path) -> Result<Shard> {
    fs::create_dir_all(dir)?;
    let _ = fs::remove_file(dir.join("snapshot.tmp"));
    let mut st = State::default();
    let wal_from = match fs::read(dir.join("snapshot")) {
        Ok(bytes) => decode_snapshot(&bytes, &mut st)
            .ok_or_else(|| Error::Corrupt(format!("{}: bad snapshot", dir.join("snapshot").display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e.into()),
    };
    let mut next = wal_from;
    let mut scratch = Vec::new();
    for generation in log_generations(dir)? {
        let path = wal_path(dir, generation);
        if generation < wal_from {
            fs::remove_file(&path)?;
            continue;
        }
        let bytes = fs::read(&path)?;
        let (records, valid) = format::records(&bytes);
        let mut ids = HashMap::new();
        for rec in records {
            replay(&mut st, rec, &mut ids, &mut scratch)
                .ok_or_else(|| Error::Corrupt(format!("{}: bad record", path.display())))?;
        }
        if valid < bytes.len() {
            tracing::warn!(log = %path.display(), cut = bytes.len() - valid, "metric store: torn log tail cut");
            OpenOptions::new().write(true).open(&path)?.set_len(valid as u64)?;
        }
        st.log_bytes += valid as u64;
        next = generation + 1;
    }
    // Always a fresh file: its series ids start over. Its directory entry (and the removal of
    // older generations, which a later open would redo) is synced with its first records.
    let file = OpenOptions::new().create(true).append(true).open(wal_path(dir, next))?;
    st.generation = next;
    let log = Log { file, spare: Vec::new(), dir_synced: false };
    Ok(Shard { dir: dir.to_owned(), state: Mutex::new(st), log: Mutex::new(log) })
}

/// The ids of `st`'s series that `sel` matches, put at or after `active_since`, after `after`.
fn list_into(ids: &mut Vec<Arc<MetricId>>, st: &State, sel: &Selector, active_since: i64, after: Option<&ListCursor>) {
    ids.extend(
        st.series
            .iter()
            .filter(|s| s.last_put >= active_since && after.is_none_or(|c| *s.id > c.0) && matches(sel, &s.id))
            .map(|s| s.id.clone()),
    );
}

/// The first `limit` (0: the default) of `ids` in order, and the cursor after them when more remain.
fn page(mut ids: Vec<Arc<MetricId>>, limit: usize) -> MetricPage {
    let limit = if limit == 0 { DEFAULT_LIST_LIMIT } else { limit };
    ids.sort_unstable();
    let more = ids.len() > limit;
    ids.truncate(limit);
    let metrics: Vec<MetricId> = ids.iter().map(|id| MetricId::clone(id)).collect();
    let next = if more { metrics.last().cloned().map(ListCursor) } else { None };
    MetricPage { metrics, next }
}
