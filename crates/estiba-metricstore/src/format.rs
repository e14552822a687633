//! The bytes on disk. Integers are little-endian; `varint` is LEB128, `zvarint` a zigzag
//! varint; `f64` is 8 bytes little-endian; `str` is a varint length and UTF-8 bytes.
//!
//! Layout of a store directory: `FORMAT` (`estiba-metricstore 1 shards <n>`, written once: the
//! shard count of a store never changes, since series are placed by hash), and per shard
//! `<shard, 2 digits>/` holding `snapshot` and write-ahead logs `<generation, 16 hex>.wal`.
//!
//! **Series key** (also the identity hashed to pick the shard): `str` account, region,
//! namespace, name, varint dimension count, then `str` name and value of each dimension,
//! sorted by (name, value).
//!
//! **Write-ahead log.** Records `[len u32][crc32 u32][payload: len bytes]`, the CRC over the
//! payload; one record per put and shard. A payload is `now i64` (when the put arrived), then
//! entries: `1 varint id, str key` defines a series' id for the rest of this file (ids are
//! per file, so every log file stands alone); `2 varint id, str unit, u8 high-resolution,
//! zvarint timestamp ms, u8 kind, value` is a datum, the value being `f64` (kind 0), `varint
//! n, n f64, varint m, m f64` (kind 1: values and counts) or four `f64` (kind 2: SampleCount,
//! Sum, Minimum, Maximum). On open, the logs of a generation at or past the snapshot's are
//! replayed in order; the first record that is short or fails its CRC ends a file (a torn
//! tail, cut off), and a new generation is started.
//!
//! **Snapshot** (written to `snapshot.tmp`, synced, renamed): magic `ESTMSNP1`, `u64` the
//! first log generation it does not include, `u64` series count; per series `str` key, `i64`
//! last put time, `u8` unit count; per unit `str` unit, then each of the four tiers as chunks
//! of buckets (`tier.rs`: `varint` chunk count, per chunk first and last start, bucket count,
//! byte length, and per bucket a `zvarint` start delta and the bucket as [`put_agg`] writes
//! it). Then the CRC32 of all of it (`u32`).
//!
//! **Export** (one store's series for another, `MetricStore::export`, of any shard count):
//! magic `ESTMEXP1`, `u64` series count, the series as in a snapshot, the CRC32 (`u32`).

use crate::sketch::Agg;
use crate::{Dimension, MetricId, StatisticSet, Value};

pub(crate) const SNAP_MAGIC: &[u8; 8] = b"ESTMSNP1";
pub(crate) const EXPORT_MAGIC: &[u8; 8] = b"ESTMEXP1";

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_zvarint(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads what the `put_*` functions wrote; every read fails (`None`) past the end.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    pub fn i64(&mut self) -> Option<i64> {
        Some(self.u64()? as i64)
    }

    pub fn f64(&mut self) -> Option<f64> {
        Some(f64::from_bits(self.u64()?))
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
            shift += 7;
        }
    }

    pub fn zvarint(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.varint()?).ok()?;
        // A length can never exceed what is left: refuse before allocating.
        (n <= self.buf.len() - self.pos).then_some(n)
    }

    pub fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.bytes(n)?).ok()
    }
}

/// Writes a series key from its parts; `dims` must be sorted.
pub(crate) fn write_key<'d>(
    out: &mut Vec<u8>,
    account: &str,
    region: &str,
    namespace: &str,
    name: &str,
    dims: impl ExactSizeIterator<Item = &'d Dimension>,
) {
    put_str(out, account);
    put_str(out, region);
    put_str(out, namespace);
    put_str(out, name);
    put_varint(out, dims.len() as u64);
    for d in dims {
        put_str(out, &d.name);
        put_str(out, &d.value);
    }
}

pub(crate) fn key_bytes(id: &MetricId) -> Vec<u8> {
    let mut out = Vec::new();
    write_key(&mut out, &id.account, &id.region, &id.namespace, &id.name, id.dimensions().iter());
    out
}

pub(crate) fn parse_key(key: &[u8]) -> Option<MetricId> {
    let mut r = Reader::new(key);
    let (account, region, namespace, name) = (r.str()?, r.str()?, r.str()?, r.str()?);
    let n = r.len()?;
    let mut dims = Vec::with_capacity(n);
    for _ in 0..n {
        dims.push(Dimension::new(r.str()?, r.str()?));
    }
    r.done().then(|| MetricId::new(account, region, namespace, name, dims))
}

pub(crate) fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Single(x) => {
            out.push(0);
            put_f64(out, *x);
        }
        Value::Values { values, counts } => {
            out.push(1);
            put_varint(out, values.len() as u64);
            values.iter().for_each(|x| put_f64(out, *x));
            put_varint(out, counts.len() as u64);
            counts.iter().for_each(|x| put_f64(out, *x));
        }
        Value::Statistics(s) => {
            out.push(2);
            for x in [s.sample_count, s.sum, s.minimum, s.maximum] {
                put_f64(out, x);
            }
        }
    }
}

pub(crate) fn get_value(r: &mut Reader) -> Option<Value> {
    Some(match r.u8()? {
        0 => Value::Single(r.f64()?),
        1 => {
            let n = r.len()?;
            let values = (0..n).map(|_| r.f64()).collect::<Option<Vec<_>>>()?;
            let m = r.len()?;
            let counts = (0..m).map(|_| r.f64()).collect::<Option<Vec<_>>>()?;
            Value::Values { values, counts }
        }
        2 => Value::Statistics(StatisticSet {
            sample_count: r.f64()?,
            sum: r.f64()?,
            minimum: r.f64()?,
            maximum: r.f64()?,
        }),
        _ => return None,
    })
}

/// Frames a log record around `payload` (which starts with 8 placeholder bytes for the
/// header, so a put builds its record in place).
pub(crate) fn seal_record(buf: &mut [u8]) {
    let len = (buf.len() - 8) as u32;
    let crc = crc32fast::hash(&buf[8..]);
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The intact records of a log file and the length they span (what follows is a torn tail).
pub(crate) fn records(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(head) = buf.get(pos..pos + 8) {
        let len = u32::from_le_bytes(head[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
        let Some(payload) = buf.get(pos + 8..pos + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload);
        pos += 8 + len;
    }
    (out, pos)
}

/// A count: `varint 2n` when it is a whole number below 2^52 (nearly always), else `varint 1`
/// and the `f64`.
fn put_count(out: &mut Vec<u8>, c: f64) {
    if c >= 0.0 && c < (1u64 << 52) as f64 && c.fract() == 0.0 {
        put_varint(out, (c as u64) << 1);
    } else {
        put_varint(out, 1);
        put_f64(out, c);
    }
}

fn get_count(r: &mut Reader) -> Option<f64> {
    let v = r.varint()?;
    if v & 1 == 1 {
        r.f64()
    } else {
        Some((v >> 1) as f64)
    }
}

/// A bucket: `u8` flags (1: percentiles usable; 2: every sample equal), the SampleCount as
/// a count, then the value (`f64`) when every sample was equal, else `f64` Sum, Minimum,
/// Maximum, `varint` bin count and per bin `zvarint` key (delta) and count.
pub(crate) fn put_agg(out: &mut Vec<u8>, a: &Agg) {
    let single = a.sketch.bins.is_empty() && a.min == a.max && a.sum == a.min * a.count;
    out.push(u8::from(a.sketch.usable) | (u8::from(single) << 1));
    put_count(out, a.count);
    if single {
        put_f64(out, a.min);
        return;
    }
    for x in [a.sum, a.min, a.max] {
        put_f64(out, x);
    }
    put_varint(out, a.sketch.bins.len() as u64);
    let mut prev = 0i64;
    for &(k, c) in &a.sketch.bins {
        put_zvarint(out, i64::from(k) - prev);
        prev = i64::from(k);
        put_count(out, f64::from(c));
    }
}

/// Reads a bucket into `a`, reusing its bins' allocation.
pub(crate) fn get_agg_into(r: &mut Reader, a: &mut Agg) -> Option<()> {
    let flags = r.u8()?;
    a.sketch.usable = flags & 1 != 0;
    a.sketch.bins.clear();
    a.count = get_count(r)?;
    if flags & 2 != 0 {
        let v = r.f64()?;
        (a.sum, a.min, a.max) = (v * a.count, v, v);
        return Some(());
    }
    (a.sum, a.min, a.max) = (r.f64()?, r.f64()?, r.f64()?);
    let n = r.len()?;
    let mut prev = 0i64;
    for _ in 0..n {
        prev += r.zvarint()?;
        a.sketch.bins.push((i16::try_from(prev).ok()?, get_count(r)? as f32));
    }
    Some(())
}

#[cfg(test)]
pub(crate) fn get_agg(r: &mut Reader) -> Option<Agg> {
    let mut a = Agg::default();
    get_agg_into(r, &mut a)?;
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_order_independence() {
        let a = MetricId::new("1", "r", "ns", "m", vec![Dimension::new("b", "2"), Dimension::new("a", "1")]);
        let b = MetricId::new("1", "r", "ns", "m", vec![Dimension::new("a", "1"), Dimension::new("b", "2")]);
        assert_eq!(key_bytes(&a), key_bytes(&b));
        assert_eq!(parse_key(&key_bytes(&a)), Some(b));
        assert_eq!(parse_key(&key_bytes(&a)[..5]), None);
    }

    #[test]
    fn buckets_round_trip() {
        let mut a = Agg::default();
        for (v, c) in [(0.0, 1.0), (1.5, 2.0), (1e9, 0.25), (3.0, 7.0)] {
            a.add_value(v, c, crate::sketch::key_of(v));
        }
        let mut single = Agg::default();
        single.add_value(2.5, 3.0, crate::sketch::key_of(2.5));
        let mut out = Vec::new();
        put_agg(&mut out, &a);
        put_agg(&mut out, &Agg::default());
        let at = out.len();
        put_agg(&mut out, &single);
        assert!(out.len() - at <= 10);
        let mut r = Reader::new(&out);
        assert_eq!(get_agg(&mut r), Some(a));
        assert_eq!(get_agg(&mut r), Some(Agg::default()));
        assert_eq!(get_agg(&mut r), Some(single));
        assert!(r.done());
    }

    #[test]
    fn torn_records_end_the_log() {
        let mut log = Vec::new();
        for p in [&b"first"[..], b"second"] {
            let mut rec = vec![0; 8];
            rec.extend_from_slice(p);
            seal_record(&mut rec);
            log.extend_from_slice(&rec);
        }
        let whole = log.len();
        assert_eq!(records(&log), (vec![&b"first"[..], b"second"], whole));
        assert_eq!(records(&log[..whole - 1]).0.len(), 1);
        log[whole - 1] ^= 1;
        assert_eq!(records(&log), (vec![&b"first"[..]], 13));
    }
}
