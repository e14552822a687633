//! What one time bucket holds: SampleCount, Sum, Minimum, Maximum and a quantile sketch.
//!
//! The sketch is DDSketch's log-bucket histogram (Masson, Rim, Lee, VLDB 2019), written here
//! rather than taken from a crate: the part needed is ~100 lines (a key per value, a sorted
//! sparse list of (key, count), merge, walk), the `sketches-ddsketch` crate keeps a dense store
//! per sketch (too big for millions of one-minute buckets that mostly hold a handful of
//! distinct values) and brings serde, and this store needs its own compact encoding anyway.
//!
//! A positive value `v` goes to key `ceil(log_γ v)` with `γ = (1 + α) / (1 - α)`; a key stands
//! for `2γ^k / (γ + 1)`, which is within a relative error of `α` of every value of its bin.
//! So every percentile a sketch answers is within [`RELATIVE_ERROR`] (1 %) of the sample at
//! that rank, and merging two sketches (adding counts key by key) is exact: a percentile over
//! an hour merged from sixty minutes is the same as if the hour had been one bucket. Values
//! between 1e-108 and 1e108 (CloudWatch's accepted range) use keys within ±12,500.
//!
//! CloudWatch gives no percentiles for data with negative values or for statistic sets other
//! than SampleCount 1 or Minimum = Maximum (GetMetricStatistics' documentation): such data
//! marks the bucket's sketch unusable, and percentiles over it are `None`.

/// The relative error of every percentile: 1 %.
pub const RELATIVE_ERROR: f64 = 0.01;
/// `1 / ln γ` for `γ = 1.01 / 0.99`.
const INV_LN_GAMMA: f64 = 49.998_333_288_886_78;
const LN_GAMMA: f64 = 0.020_000_666_706_669_435;
/// `2 / (γ + 1)`: a key's value is `γ^k` times this.
const MIDPOINT: f64 = 0.99;
/// The key of zero (exact).
const ZERO_KEY: i16 = i16::MIN;

/// The key a value goes to; `None` for a value percentiles cannot use (negative, not finite).
pub(crate) fn key_of(v: f64) -> Option<i16> {
    if v > 0.0 && v.is_finite() {
        // Keys of values CloudWatch accepts stay within ±12,500; beyond ±32,767 (below 1e-284
        // or above 1e284) the clamp only affects values that are clamped to [min, max] anyway.
        Some((v.ln() * INV_LN_GAMMA).ceil().clamp(-32_767.0, 32_767.0) as i16)
    } else if v == 0.0 {
        Some(ZERO_KEY)
    } else {
        None
    }
}

fn value_of(key: i16) -> f64 {
    if key == ZERO_KEY {
        return 0.0;
    }
    (f64::from(key) * LN_GAMMA).exp() * MIDPOINT
}

/// A sparse log-bucket histogram: (key, count) sorted by key.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sketch {
    /// Counts are `f32`: a bin's count only ranks values (a relative error of 1e-7 moves no
    /// percentile), and a bin is then 8 bytes instead of 16. SampleCount is kept exactly
    /// (`Agg::count`).
    pub bins: Vec<(i16, f32)>,
    /// False once data percentiles cannot use went in (see the module comment).
    pub usable: bool,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch { bins: Vec::new(), usable: true }
    }
}

impl Sketch {
    pub fn add(&mut self, key: i16, count: f64) {
        let count = count as f32;
        match self.bins.last_mut() {
            Some(last) if last.0 == key => last.1 += count,
            Some(last) if last.0 < key => self.bins.push((key, count)),
            None => self.bins.push((key, count)),
            _ => match self.bins.binary_search_by_key(&key, |b| b.0) {
                Ok(i) => self.bins[i].1 += count,
                Err(i) => self.bins.insert(i, (key, count)),
            },
        }
    }

    /// Adds another sketch's bins.
    pub fn merge(&mut self, other: &[(i16, f32)]) {
        if other.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.bins.extend_from_slice(other);
            return;
        }
        if other.len() <= 2 {
            for &(k, c) in other {
                self.add(k, f64::from(c));
            }
            return;
        }
        let mut out = Vec::with_capacity(self.bins.len() + other.len());
        let (mut a, mut b) = (self.bins.iter().peekable(), other.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) => {
                    if x.0 == y.0 {
                        out.push((x.0, x.1 + y.1));
                        a.next();
                        b.next();
                    } else if x.0 < y.0 {
                        out.push(x);
                        a.next();
                    } else {
                        out.push(y);
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    out.push(x);
                    a.next();
                }
                (None, Some(&&y)) => {
                    out.push(y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.bins = out;
    }

    /// The value at quantile `q` (0..=1), clamped to `[min, max]`; `None` when the sketch is
    /// unusable or empty. The rank is `q × (n − 1)` (the sample at that 0-based rank, counted
    /// from the smallest, is what the estimate is within 1 % of).
    pub fn quantile(&self, q: f64, min: f64, max: f64) -> Option<f64> {
        if !self.usable {
            return None;
        }
        let n: f64 = self.bins.iter().map(|b| f64::from(b.1)).sum();
        if n <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * (n - 1.0).max(0.0);
        let mut cum = 0.0;
        let mut key = self.bins[self.bins.len() - 1].0;
        for &(k, c) in &self.bins {
            cum += f64::from(c);
            if cum > rank {
                key = k;
                break;
            }
        }
        Some(value_of(key).clamp(min, max))
    }
}

/// A time bucket: the four statistics CloudWatch keeps and the sketch.
///
/// A bucket whose samples are all equal (most one-minute buckets of a series sampled once a
/// minute) keeps no bins: its sketch is implied, `{key_of(min): count}`, and is written out
/// only when a different value arrives. This saves an allocation per bucket.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Agg {
    pub count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub sketch: Sketch,
}

impl Default for Agg {
    fn default() -> Self {
        Agg { count: 0.0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, sketch: Sketch::default() }
    }
}

impl Agg {
    fn is_empty(&self) -> bool {
        self.min > self.max
    }

    /// Whether the sketch is implied by min = max (see the type's comment).
    fn implied(&self) -> bool {
        self.sketch.bins.is_empty() && !self.is_empty() && self.min == self.max
    }

    /// The implied bin, if the sketch is implied and usable.
    fn implied_bin(&self) -> Option<(i16, f32)> {
        if self.implied() && self.sketch.usable && self.count > 0.0 {
            key_of(self.min).map(|k| (k, self.count as f32))
        } else {
            None
        }
    }

    fn write_out(&mut self) {
        if let Some(bin) = self.implied_bin() {
            self.sketch.bins.push(bin);
        }
    }

    /// `count` occurrences of `v`, whose sketch key is `key` (`None`: percentiles unusable).
    pub fn add_value(&mut self, v: f64, count: f64, key: Option<i16>) {
        let stays_implied = self.sketch.bins.is_empty() && (self.is_empty() || (self.min == v && self.max == v));
        if !stays_implied {
            self.write_out();
        }
        self.count += count;
        self.sum += v * count;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        match key {
            Some(k) if !stays_implied => self.sketch.add(k, count),
            Some(_) => {}
            None => self.sketch.usable = false,
        }
    }

    /// A statistic set. Percentiles stay usable only for the sets CloudWatch computes them
    /// over: SampleCount 1 (the sample is the Sum) or Minimum = Maximum (every sample is it).
    pub fn add_set(&mut self, count: f64, sum: f64, min: f64, max: f64) {
        let sample = if min == max { Some(min) } else { (count == 1.0).then_some(sum) };
        if let Some(v) = sample {
            self.add_value(v, count, key_of(v));
            // Keep the numbers as given (the sum may differ from v × count in the last bits).
            self.sum += sum - v * count;
            self.min = self.min.min(min);
            self.max = self.max.max(max);
            return;
        }
        self.write_out();
        self.sketch.usable = false;
        self.count += count;
        self.sum += sum;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
    }

    pub fn merge(&mut self, other: &Agg) {
        if other.is_empty() {
            return;
        }
        self.sketch.usable &= other.sketch.usable;
        let same_single = self.sketch.bins.is_empty()
            && other.sketch.bins.is_empty()
            && (self.is_empty() || (self.implied() && other.implied() && self.min == other.min));
        if !same_single {
            self.write_out();
            match other.implied_bin() {
                Some(bin) => self.sketch.merge(&[bin]),
                None => self.sketch.merge(&other.sketch.bins),
            }
        }
        self.merge_numbers(other);
    }

    pub fn merge_numbers(&mut self, other: &Agg) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1) within [`RELATIVE_ERROR`]; `None` when CloudWatch
    /// would give no percentile (see the module comment) or the bucket is empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !self.sketch.usable || self.count <= 0.0 {
            return None;
        }
        if self.implied() {
            return Some(self.min);
        }
        self.sketch.quantile(q, self.min, self.max)
    }

    /// Empties the bucket, keeping the bins' allocation.
    pub fn clear(&mut self) {
        self.count = 0.0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.sketch.bins.clear();
        self.sketch.usable = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn percentiles_within_relative_error() {
        // A deterministic spread over nine orders of magnitude, plus zeros.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut vals = Vec::new();
        let mut agg = Agg::default();
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if i % 500 == 0 { 0.0 } else { 10f64.powf((x % 9_000_000) as f64 / 1_000_000.0 - 3.0) };
            vals.push(v);
            agg.add_value(v, 1.0, key_of(v));
        }
        vals.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let want = naive(&vals, q);
            let got = agg.quantile(q).unwrap();
            assert!((got - want).abs() <= RELATIVE_ERROR * want.abs() + 1e-12, "q={q}: got {got}, want {want}");
        }
    }

    #[test]
    fn merge_is_exact() {
        let (mut a, mut b, mut whole) = (Agg::default(), Agg::default(), Agg::default());
        for i in 1..1000 {
            let v = f64::from(i) * 0.37;
            let part = if i % 3 == 0 { &mut a } else { &mut b };
            part.add_value(v, 1.0, key_of(v));
            whole.add_value(v, 1.0, key_of(v));
        }
        a.merge(&b);
        assert_eq!(a.sketch, whole.sketch);
        assert_eq!((a.count, a.min, a.max), (whole.count, whole.min, whole.max));
        assert!((a.sum - whole.sum).abs() < 1e-6);
    }

    #[test]
    fn single_valued_buckets_keep_no_bins() {
        let (mut a, mut b) = (Agg::default(), Agg::default());
        a.add_value(4.0, 2.0, key_of(4.0));
        a.add_value(4.0, 1.0, key_of(4.0));
        assert!(a.sketch.bins.is_empty());
        assert_eq!(a.quantile(0.5), Some(4.0));
        b.add_value(4.0, 1.0, key_of(4.0));
        let mut m = a.clone();
        m.merge(&b);
        assert!(m.sketch.bins.is_empty());
        assert_eq!((m.count, m.quantile(0.9)), (4.0, Some(4.0)));
        // A second value writes the implied bin out first.
        m.add_value(100.0, 1.0, key_of(100.0));
        assert_eq!(m.sketch.bins.len(), 2);
        assert_eq!(m.sketch.bins.iter().map(|b| b.1).sum::<f32>(), 5.0);
        assert!((m.quantile(0.5).unwrap() - 4.0).abs() < 0.04);
        assert!((m.quantile(1.0).unwrap() - 100.0).abs() < 1.0);
        // Merging a single-valued bucket into a different one counts it.
        let mut c = Agg::default();
        c.add_value(7.0, 3.0, key_of(7.0));
        c.merge(&a);
        assert_eq!(c.sketch.bins.iter().map(|b| b.1).sum::<f32>(), 6.0);
        let mut e = Agg::default();
        e.merge(&c);
        assert_eq!(e, c);
    }

    #[test]
    fn negative_values_and_statistic_sets_disable_percentiles() {
        let mut a = Agg::default();
        a.add_value(3.0, 1.0, key_of(3.0));
        a.add_set(4.0, 20.0, 5.0, 5.0);
        assert!((a.quantile(1.0).unwrap() - 5.0).abs() < 0.05);
        let mut b = a.clone();
        b.add_set(2.0, 3.0, 1.0, 2.0);
        assert_eq!(b.quantile(0.5), None);
        let mut one = Agg::default();
        one.add_set(1.0, 8.0, 8.0, 8.0);
        one.add_set(1.0, 2.0, 2.0, 2.0);
        assert_eq!((one.count, one.sum, one.min, one.max), (2.0, 10.0, 2.0, 8.0));
        assert!((one.quantile(1.0).unwrap() - 8.0).abs() < 0.08);
        a.add_value(-1.0, 1.0, key_of(-1.0));
        assert_eq!(a.quantile(0.5), None);
        assert_eq!(a.count, 6.0);
    }
}
