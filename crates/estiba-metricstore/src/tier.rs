//! One tier of one unit of a series: its buckets, sorted by start (seconds).
//!
//! The newest buckets (between [`PACK`] and twice as many) stay in a vector, where puts land;
//! older ones are packed, [`PACK`] at a time, into chunks encoded as the snapshot encodes
//! buckets (`format::put_agg`: about 12 bytes for a bucket whose samples were all equal, 2
//! bytes a sketch bin, instead of 72 bytes and 8 a bin). Queries decode chunks as they go. A
//! late datum for a packed bucket opens its chunk (decodes it and keeps it decoded, so a
//! backfill in time order decodes each chunk once); opening another chunk closes (re-encodes)
//! it. A snapshot copies the closed chunks as they are.

use crate::format::{self, Reader};
use crate::sketch::Agg;

/// Buckets per packed chunk.
pub(crate) const PACK: usize = 64;

struct Chunk {
    first: i64,
    last: i64,
    len: u32,
    /// Per bucket: `zvarint` start (delta from the previous one; the first from 0), the bucket.
    bytes: Box<[u8]>,
    /// When the chunk is open: its buckets, which `bytes` no longer says.
    open: Option<Vec<(i64, Agg)>>,
}

impl Chunk {
    fn encode(buckets: &[(i64, Agg)]) -> Chunk {
        let mut out = Vec::with_capacity(buckets.len() * 16);
        let mut prev = 0;
        for (start, agg) in buckets {
            format::put_zvarint(&mut out, start - prev);
            prev = *start;
            format::put_agg(&mut out, agg);
        }
        Chunk {
            first: buckets.first().map_or(0, |b| b.0),
            last: buckets.last().map_or(0, |b| b.0),
            len: buckets.len() as u32,
            bytes: out.into_boxed_slice(),
            open: None,
        }
    }

    fn close(&mut self) {
        if let Some(buckets) = self.open.take() {
            *self = Chunk::encode(&buckets);
        }
    }

    /// Calls `f` with each bucket until it returns false; false if it did.
    fn for_each(&self, mut f: impl FnMut(i64, &Agg) -> bool) -> bool {
        match &self.open {
            Some(buckets) => buckets.iter().all(|(s, a)| f(*s, a)),
            None => Chunk::for_each_encoded(&self.bytes, f),
        }
    }

    /// Calls `f` with each bucket of encoded chunk bytes, decoded into one reused aggregate,
    /// until it returns false; false if it did.
    fn for_each_encoded(bytes: &[u8], mut f: impl FnMut(i64, &Agg) -> bool) -> bool {
        let mut r = Reader::new(bytes);
        let mut agg = Agg::default();
        let mut start = 0;
        while !r.done() {
            // Chunks are made here and checked when loaded: a failure is a bug, not data.
            let Some(delta) = r.zvarint() else { return true };
            start += delta;
            if format::get_agg_into(&mut r, &mut agg).is_none() {
                return true;
            }
            if !f(start, &agg) {
                return false;
            }
        }
        true
    }

    fn decode(&self) -> Vec<(i64, Agg)> {
        let mut out = Vec::with_capacity(self.len as usize);
        self.for_each(|s, a| {
            out.push((s, a.clone()));
            true
        });
        out
    }

    fn memory(&self) -> u64 {
        let open = self.open.as_ref().map_or(0, |b| {
            b.capacity() * std::mem::size_of::<(i64, Agg)>()
                + b.iter().map(|(_, a)| a.sketch.bins.capacity() * std::mem::size_of::<(i16, f32)>()).sum::<usize>()
        });
        (std::mem::size_of::<Chunk>() + self.bytes.len() + open) as u64
    }

    /// Checks a chunk read from disk.
    fn check(&self) -> Option<()> {
        let (mut n, mut first, mut last, mut ok) = (0u32, None, 0, true);
        let mut r = Reader::new(&self.bytes);
        let mut agg = Agg::default();
        let mut start = 0;
        while !r.done() {
            start += r.zvarint()?;
            format::get_agg_into(&mut r, &mut agg)?;
            ok &= n == 0 || start > last;
            first.get_or_insert(start);
            last = start;
            n += 1;
        }
        (ok && n == self.len && n > 0 && first == Some(self.first) && last == self.last).then_some(())
    }
}

#[derive(Default)]
pub(crate) struct Tier {
    /// Sorted, disjoint, all before `hot`.
    packed: Vec<Chunk>,
    /// The packed chunk that is open, if any.
    open: Option<usize>,
    hot: Vec<(i64, Agg)>,
}

impl Tier {
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty() && self.hot.is_empty()
    }

    /// Updates the bucket starting at `start` (made if new).
    pub fn update(&mut self, start: i64, f: impl FnOnce(&mut Agg)) {
        let packed = match (self.hot.first(), self.packed.last()) {
            (Some(h), _) if start >= h.0 => false,
            (_, Some(c)) => start <= c.last,
            _ => false,
        };
        if !packed {
            f(bucket_mut(&mut self.hot, start));
            while self.hot.len() >= 2 * PACK {
                self.packed.push(Chunk::encode(&self.hot[..PACK]));
                self.hot.drain(..PACK);
            }
            return;
        }
        // The chunk holding `start`, or the first one after it (a bucket in a gap joins it).
        let i = self.packed.partition_point(|c| c.last < start);
        if let Some(j) = self.open.filter(|&j| j != i) {
            self.packed[j].close();
        }
        self.open = Some(i);
        let c = &mut self.packed[i];
        let buckets = c.open.get_or_insert_with(|| {
            let mut out = Vec::with_capacity(c.len as usize + 1);
            Chunk::for_each_encoded(&c.bytes, |s, a| {
                out.push((s, a.clone()));
                true
            });
            out
        });
        f(bucket_mut(buckets, start));
        (c.first, c.last, c.len) = (buckets[0].0, buckets[buckets.len() - 1].0, buckets.len() as u32);
    }

    /// Calls `f` with each bucket starting at or after `from` (seconds) and before `end_ms`,
    /// in order, until it returns false.
    pub fn visit(&self, from: i64, end_ms: i64, mut f: impl FnMut(i64, &Agg) -> bool) {
        let before_end = |s: i64| s.saturating_mul(1000) < end_ms;
        for c in &self.packed[self.packed.partition_point(|c| c.last < from)..] {
            if !before_end(c.first) {
                return;
            }
            let go = c.for_each(|s, a| {
                if s < from {
                    return true;
                }
                before_end(s) && f(s, a)
            });
            if !go {
                return;
            }
        }
        for (s, a) in &self.hot[self.hot.partition_point(|b| b.0 < from)..] {
            if !before_end(*s) || !f(*s, a) {
                return;
            }
        }
    }

    /// Drops the buckets that end at or before `cutoff`; returns how many. A chunk goes when
    /// all of it is old (queries never read past the cutoff anyway).
    pub fn expire(&mut self, cutoff: i64, resolution: i64) -> u64 {
        let chunks = self.packed.partition_point(|c| c.last + resolution <= cutoff);
        if chunks > 0 {
            if let Some(j) = self.open.take() {
                self.packed[j].close();
            }
        }
        let mut n: u64 = self.packed.drain(..chunks).map(|c| u64::from(c.len)).sum();
        let hot = self.hot.partition_point(|b| b.0 + resolution <= cutoff);
        self.hot.drain(..hot);
        n += hot as u64;
        n
    }

    /// (buckets, sketch bins written out, bytes of memory).
    pub fn usage(&self) -> (u64, u64, u64) {
        let mut out = (0, 0, (self.hot.capacity() * std::mem::size_of::<(i64, Agg)>()) as u64);
        for c in &self.packed {
            out.0 += u64::from(c.len);
            out.2 += c.memory();
            c.for_each(|_, a| {
                out.1 += a.sketch.bins.len() as u64;
                true
            });
        }
        for (_, a) in &self.hot {
            out.0 += 1;
            out.1 += a.sketch.bins.len() as u64;
            out.2 += (a.sketch.bins.capacity() * std::mem::size_of::<(i16, f32)>()) as u64;
        }
        out
    }

    /// Snapshot form: `varint` chunk count, per chunk `zvarint` first and last start, `varint`
    /// bucket count, `varint` byte length and the bytes (the hot buckets as one more chunk).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let open = self.open.and_then(|j| Some((j, Chunk::encode(self.packed[j].open.as_ref()?))));
        let hot = (!self.hot.is_empty()).then(|| Chunk::encode(&self.hot));
        format::put_varint(out, (self.packed.len() + usize::from(hot.is_some())) as u64);
        let packed = self.packed.iter().enumerate().map(|(i, c)| match &open {
            Some((j, encoded)) if *j == i => encoded,
            _ => c,
        });
        for c in packed.chain(hot.as_ref()) {
            format::put_zvarint(out, c.first);
            format::put_zvarint(out, c.last);
            format::put_varint(out, u64::from(c.len));
            format::put_varint(out, c.bytes.len() as u64);
            out.extend_from_slice(&c.bytes);
        }
    }

    pub fn decode(r: &mut Reader) -> Option<Tier> {
        let mut tier = Tier::default();
        for _ in 0..r.len()? {
            let (first, last) = (r.zvarint()?, r.zvarint()?);
            let len = u32::try_from(r.varint()?).ok()?;
            let n = r.len()?;
            let c = Chunk { first, last, len, bytes: r.bytes(n)?.into(), open: None };
            c.check()?;
            if tier.packed.last().is_some_and(|p| p.last >= c.first) {
                return None;
            }
            tier.packed.push(c);
        }
        // The newest chunk is where puts go next: keep it decoded.
        if let Some(c) = tier.packed.pop() {
            tier.hot = c.decode();
        }
        Some(tier)
    }
}

fn bucket_mut(buckets: &mut Vec<(i64, Agg)>, start: i64) -> &mut Agg {
    let i = match buckets.last() {
        Some(last) if last.0 == start => buckets.len() - 1,
        Some(last) if last.0 > start => match buckets.binary_search_by_key(&start, |b| b.0) {
            Ok(i) => i,
            Err(i) => {
                buckets.insert(i, (start, Agg::default()));
                i
            }
        },
        _ => {
            // Time moved on: the bucket before is most likely complete; drop its bins' slack.
            if let Some(last) = buckets.last_mut() {
                last.1.sketch.bins.shrink_to_fit();
            }
            buckets.push((start, Agg::default()));
            buckets.len() - 1
        }
    };
    &mut buckets[i].1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::key_of;

    fn all(t: &Tier) -> Vec<(i64, f64, f64)> {
        let mut out = Vec::new();
        t.visit(i64::MIN / 2000, i64::MAX, |s, a| {
            out.push((s, a.count, a.sum));
            true
        });
        out
    }

    #[test]
    fn packs_old_buckets_and_updates_them_in_place() {
        let mut t = Tier::default();
        let add = |t: &mut Tier, s: i64, v: f64| t.update(s, |a| a.add_value(v, 1.0, key_of(v)));
        for s in 0..1000 {
            add(&mut t, s * 60, s as f64);
        }
        assert!(t.packed.len() >= 13 && t.hot.len() < 2 * PACK);
        // Late data: into a packed bucket, into a gap, before everything.
        add(&mut t, 60 * 10, 5.0);
        add(&mut t, 60 * 10 + 30, 7.0);
        add(&mut t, -60, 1.0);
        let got = all(&t);
        assert_eq!(got.len(), 1002);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(got[0], (-60, 1.0, 1.0));
        assert_eq!(got[11], (600, 2.0, 15.0));
        assert_eq!(got[12], (630, 1.0, 7.0));
        assert_eq!(t.open, Some(0));
        // A backfill in time order opens each chunk once, closing the one before.
        for s in 0..1000 {
            add(&mut t, s * 60, 1.0);
        }
        assert!(t.packed.iter().filter(|c| c.open.is_some()).count() <= 1);
        let got: Vec<_> = all(&t);
        assert_eq!(got.len(), 1002);
        assert_eq!(got[11], (600, 3.0, 16.0));
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        // A range read starts and stops where asked.
        let mut some = Vec::new();
        t.visit(60 * 100, 60 * 105 * 1000, |s, _| {
            some.push(s);
            true
        });
        assert_eq!(some, (100..105).map(|m| m * 60).collect::<Vec<_>>());
        // Round trip through the snapshot form.
        let mut bytes = Vec::new();
        t.encode(&mut bytes);
        let back = Tier::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(back.open, None);
        assert_eq!(all(&back), got);
        assert_eq!(back.usage().0, 1002);
        // Expiry drops whole chunks and old hot buckets.
        let mut t = back;
        let n = t.expire(60 * 500, 60);
        assert!(n > 0 && n <= 501);
        assert_eq!(all(&t).len() as u64, 1002 - n);
        assert_eq!(t.expire(60 * 2000, 60), 1002 - n);
        assert!(t.is_empty());
    }
}
