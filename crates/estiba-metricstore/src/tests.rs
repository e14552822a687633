use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";
const NS: &str = "App";
/// 2025-12-01T00:00:00Z, in ms.
const T0: i64 = 1_764_547_200_000;
const MIN: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

fn u(name: &str) -> Unit {
    Unit::from(name)
}

fn open(dir: &Path) -> MetricStore {
    MetricStore::open(dir, Options { shards: 4, ..Options::default() }).unwrap()
}

fn dims(pairs: &[(&str, &str)]) -> Vec<Dimension> {
    pairs.iter().map(|(n, v)| Dimension::new(*n, *v)).collect()
}

fn datum(name: &str, d: &[(&str, &str)], ts: i64, unit: Unit, value: Value) -> Datum {
    Datum { name: name.into(), dimensions: dims(d), timestamp: ts, unit, resolution: Resolution::Standard, value }
}

fn metric(name: &str, d: &[(&str, &str)]) -> MetricId {
    MetricId::new(ACCOUNT, REGION, NS, name, dims(d))
}

fn query(start: i64, end: i64, period: i64, statistics: &[Statistic]) -> Query {
    Query { start, end, period, statistics: statistics.to_vec(), unit: UnitFilter::Each }
}

const BASIC: [Statistic; 5] =
    [Statistic::SampleCount, Statistic::Sum, Statistic::Average, Statistic::Minimum, Statistic::Maximum];

/// A deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1000.0
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn aggregation_matches_a_naive_computation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut rng = Rng(7);
    // Raw samples per series: (ts ms, value, count).
    let mut raw: BTreeMap<String, Vec<(i64, f64, f64)>> = BTreeMap::new();
    let now = T0 + 200 * MIN;
    for batch in 0..50 {
        let mut data = Vec::new();
        for _ in 0..40 {
            let host = format!("h{}", rng.next() % 5);
            let ts = T0 + (rng.next() % (180 * MIN as u64)) as i64;
            let value = match rng.next() % 3 {
                0 => Value::Single(rng.f()),
                1 => Value::Values { values: vec![rng.f(), rng.f(), rng.f()], counts: vec![1.0, 2.0] },
                _ => {
                    let x = rng.f();
                    Value::Statistics(StatisticSet {
                        sample_count: 4.0,
                        sum: 4.0 * x + 2.0,
                        minimum: x,
                        maximum: x + 1.0,
                    })
                }
            };
            let samples = raw.entry(host.clone()).or_default();
            match &value {
                Value::Single(x) => samples.push((ts, *x, 1.0)),
                Value::Values { values, counts } => {
                    for (i, x) in values.iter().enumerate() {
                        samples.push((ts, *x, counts.get(i).copied().unwrap_or(1.0)));
                    }
                }
                // A set stands for its min and max once each plus the rest of the sum, which
                // keeps count, sum, min and max right.
                Value::Statistics(s) => {
                    samples.push((ts, s.minimum, 1.0));
                    samples.push((ts, s.maximum, 1.0));
                    samples.push((ts, (s.sum - s.minimum - s.maximum) / 2.0, 2.0));
                }
            }
            data.push(datum("Latency", &[("Host", &host)], ts, u("Milliseconds"), value));
        }
        store.put(ACCOUNT, REGION, NS, &data, now - batch).unwrap();
    }
    for period in [60, 300, 600, 3600] {
        let (start, end) = (T0 + 7 * MIN + 1234, T0 + 170 * MIN);
        let q = query(start, end, period, &BASIC);
        let aligned = align_start(start, period, now) / 1000;
        for (host, samples) in &raw {
            let mut want: BTreeMap<i64, (f64, f64, f64, f64)> = BTreeMap::new();
            for &(ts, x, c) in samples.iter().filter(|s| s.0 / 1000 >= aligned && s.0 < end) {
                let w = aligned + (ts / 1000 - aligned) / period * period;
                let e = want.entry(w * 1000).or_insert((0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
                e.0 += c;
                e.1 += x * c;
                e.2 = e.2.min(x);
                e.3 = e.3.max(x);
            }
            let got = store.get(&metric("Latency", &[("Host", host)]), &q, now).unwrap();
            assert_eq!(got.iter().map(|d| d.timestamp).collect::<Vec<_>>(), want.keys().copied().collect::<Vec<_>>());
            for (d, (_, w)) in got.iter().zip(&want) {
                let v: Vec<f64> = d.values.iter().map(|v| v.unwrap()).collect();
                assert!(close(v[0], w.0) && close(v[1], w.1) && close(v[2], w.1 / w.0), "{period} {d:?} {w:?}");
                assert_eq!((v[3], v[4]), (w.2, w.3));
                assert_eq!(d.unit, Some(u("Milliseconds")));
            }
        }
    }
}

#[test]
fn percentiles_within_the_sketch_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut rng = Rng(99);
    let mut values = Vec::new();
    for minute in 0..60 {
        let batch: Vec<Datum> = (0..100)
            .map(|_| {
                let v = 1.0 + (rng.next() % 100_000) as f64 / 7.0;
                values.push(v);
                datum("Latency", &[], T0 + minute * MIN + 500, u("Milliseconds"), Value::Single(v))
            })
            .collect();
        store.put(ACCOUNT, REGION, NS, &batch, T0 + minute * MIN).unwrap();
    }
    values.sort_by(f64::total_cmp);
    let ps = [0.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0];
    let stats: Vec<Statistic> = ps.iter().map(|&p| Statistic::Percentile(p)).collect();
    let got = store.get(&metric("Latency", &[]), &query(T0, T0 + 60 * MIN, 3600, &stats), T0 + 60 * MIN).unwrap();
    assert_eq!(got.len(), 1);
    for (p, v) in ps.iter().zip(&got[0].values) {
        let want = values[((p / 100.0) * (values.len() - 1) as f64).floor() as usize];
        let v = v.unwrap();
        assert!((v - want).abs() <= RELATIVE_ERROR * want, "p{p}: {v} vs {want}");
    }
    assert_eq!(Statistic::parse("p99.9"), Some(Statistic::Percentile(99.9)));
    assert_eq!(Statistic::parse("p101"), None);
    assert_eq!(Statistic::parse("pNaN"), None);
}

#[test]
fn percentiles_absent_over_statistic_sets_and_negative_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let set = |n, sum, min, max| Value::Statistics(StatisticSet { sample_count: n, sum, minimum: min, maximum: max });
    let data = [
        datum("A", &[], T0, u("Count"), set(3.0, 6.0, 1.0, 3.0)),
        datum("B", &[], T0, u("Count"), set(3.0, 6.0, 2.0, 2.0)),
        datum("C", &[], T0, u("Count"), Value::Single(-1.0)),
    ];
    store.put(ACCOUNT, REGION, NS, &data, T0).unwrap();
    let q = query(T0, T0 + MIN, 60, &[Statistic::Percentile(50.0), Statistic::Sum]);
    let p50 = |name| store.get(&metric(name, &[]), &q, T0).unwrap()[0].values.clone();
    assert_eq!(p50("A"), vec![None, Some(6.0)]);
    assert!((p50("B")[0].unwrap() - 2.0).abs() < 0.02);
    assert_eq!(p50("C"), vec![None, Some(-1.0)]);
}

#[test]
fn dimension_order_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let data = [
        datum("CPU", &[("ServiceName", "web"), ("ClusterName", "prod")], T0, u("Percent"), Value::Single(10.0)),
        datum("CPU", &[("ClusterName", "prod"), ("ServiceName", "web")], T0 + 1000, u("Percent"), Value::Single(30.0)),
    ];
    store.put(ACCOUNT, REGION, NS, &data, T0).unwrap();
    assert_eq!(store.series_count(), 1);
    for order in [[("ServiceName", "web"), ("ClusterName", "prod")], [("ClusterName", "prod"), ("ServiceName", "web")]]
    {
        let got = store.get(&metric("CPU", &order), &query(T0, T0 + MIN, 60, &[Statistic::Average]), T0).unwrap();
        assert_eq!(got[0].values, vec![Some(20.0)]);
    }
    // A subset of the dimensions is another metric.
    assert!(store
        .get(&metric("CPU", &[("ClusterName", "prod")]), &query(T0, T0 + MIN, 60, &BASIC), T0)
        .unwrap()
        .is_empty());
}

#[test]
fn units_are_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let data = [
        datum("Size", &[], T0, u("Bytes"), Value::Single(1000.0)),
        datum("Size", &[], T0 + 5000, u("Kilobytes"), Value::Single(3.0)),
        datum("Size", &[], T0 + MIN, u("Bytes"), Value::Single(500.0)),
    ];
    store.put(ACCOUNT, REGION, NS, &data, T0 + MIN).unwrap();
    let m = metric("Size", &[]);
    let mut q = query(T0, T0 + 2 * MIN, 60, &[Statistic::Sum]);
    q.unit = UnitFilter::Only(u("Bytes"));
    let got = store.get(&m, &q, T0 + MIN).unwrap();
    assert_eq!(
        got.iter().map(|d| (d.timestamp, d.values[0])).collect::<Vec<_>>(),
        [(T0, Some(1000.0)), (T0 + MIN, Some(500.0))]
    );
    q.unit = UnitFilter::Only(u("Megabytes"));
    assert!(store.get(&m, &q, T0 + MIN).unwrap().is_empty());
    q.unit = UnitFilter::Each;
    let got = store.get(&m, &q, T0 + MIN).unwrap();
    let each: Vec<_> = got.iter().map(|d| (d.timestamp, d.unit.clone(), d.values[0])).collect();
    assert_eq!(
        each,
        [
            (T0, Some(u("Bytes")), Some(1000.0)),
            (T0, Some(u("Kilobytes")), Some(3.0)),
            (T0 + MIN, Some(u("Bytes")), Some(500.0))
        ]
    );
    q.unit = UnitFilter::Merged;
    let got = store.get(&m, &q, T0 + MIN).unwrap();
    let merged: Vec<_> = got.iter().map(|d| (d.timestamp, d.unit.clone(), d.values[0])).collect();
    assert_eq!(merged, [(T0, None, Some(1003.0)), (T0 + MIN, Some(u("Bytes")), Some(500.0))]);
}

#[test]
fn high_resolution_periods_and_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut data: Vec<Datum> = (0..120)
        .map(|s| {
            let mut d = datum("Req", &[], T0 + s * 1000 + 300, u("Count"), Value::Single(1.0));
            d.resolution = Resolution::High;
            d
        })
        .collect();
    data.push(datum("Req", &[], T0 + 30_000, u("Count"), Value::Single(100.0)));
    let now = T0 + 2 * MIN;
    store.put(ACCOUNT, REGION, NS, &data, now).unwrap();
    let m = metric("Req", &[]);
    // Sub-minute periods read the 1-second buckets (high-resolution data only); the start is
    // rounded down to the period.
    let got = store.get(&m, &query(T0 + 7_000, T0 + 60_000, 10, &[Statistic::Sum]), now).unwrap();
    assert_eq!(got.len(), 6);
    assert_eq!((got[0].timestamp, got[0].values[0]), (T0, Some(10.0)));
    let got = store.get(&m, &query(T0, T0 + 2 * MIN, 60, &[Statistic::Sum]), now).unwrap();
    assert_eq!(got.iter().map(|d| d.values[0]).collect::<Vec<_>>(), [Some(160.0), Some(60.0)]);
    // After three hours the 1-second data is gone; the minutes remain.
    let later = T0 + 4 * 3600 * 1000;
    assert!(store.get(&m, &query(T0, T0 + MIN, 10, &[Statistic::Sum]), later).unwrap().is_empty());
    assert_eq!(store.get(&m, &query(T0, T0 + MIN, 60, &[Statistic::Sum]), later).unwrap()[0].values[0], Some(160.0));
    assert!(matches!(store.get(&m, &query(T0, T0 + MIN, 7, &BASIC), now), Err(Error::InvalidPeriod(7))));
    assert!(matches!(store.get(&m, &query(T0, T0 + MIN, 90, &BASIC), now), Err(Error::InvalidPeriod(90))));
    assert_eq!(align_start(T0 + 32_500, 60, T0 + MIN), T0);
    assert_eq!(align_start(T0 + 7 * MIN, 300, T0 + 20 * DAY_MS), T0 + 5 * MIN);
    assert_eq!(align_start(T0 + 7 * MIN, 300, T0 + 70 * DAY_MS), T0);
}

#[test]
fn rollup_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let data: Vec<Datum> =
        (0..120).map(|m| datum("Q", &[], T0 + m * MIN, u("Count"), Value::Single(m as f64))).collect();
    store.put(ACCOUNT, REGION, NS, &data, T0 + 120 * MIN).unwrap();
    let m = metric("Q", &[]);
    let sum = |period, now| -> Vec<Option<f64>> {
        store
            .get(&m, &query(T0, T0 + 120 * MIN, period, &[Statistic::Sum]), now)
            .unwrap()
            .iter()
            .map(|d| d.values[0])
            .collect()
    };
    let hour0: f64 = (0..60).map(f64::from).sum();
    let hour1: f64 = (60..120).map(f64::from).sum();
    assert_eq!(sum(60, T0 + DAY_MS).len(), 120);
    assert_eq!(sum(3600, T0 + DAY_MS), [Some(hour0), Some(hour1)]);
    // 20 days on: 1-minute periods give nothing, 5-minute ones the rolled-up data.
    let d20 = T0 + 20 * DAY_MS;
    assert!(sum(60, d20).is_empty());
    assert_eq!(sum(300, d20).len(), 24);
    assert_eq!(sum(3600, d20), [Some(hour0), Some(hour1)]);
    // 100 days on: hours only; 500 days on: nothing.
    assert!(sum(300, T0 + 100 * DAY_MS).is_empty());
    assert_eq!(sum(3600, T0 + 100 * DAY_MS), [Some(hour0), Some(hour1)]);
    assert!(sum(3600, T0 + 500 * DAY_MS).is_empty());

    // Expiry frees what queries already ignore, then the series itself.
    let e = store.expire(d20).unwrap();
    assert_eq!(e, Expired { buckets: 120, series: 0 });
    assert_eq!(sum(300, d20).len(), 24);
    assert_eq!(store.expire(T0 + 500 * DAY_MS).unwrap(), Expired { buckets: 24 + 2, series: 1 });
    assert_eq!(store.series_count(), 0);
    // A datum older than a tier keeps does not go into it.
    store.put(ACCOUNT, REGION, NS, &data[..1], d20).unwrap();
    assert!(sum(60, d20).is_empty());
    assert_eq!(sum(300, d20), [Some(0.0)]);
}

#[test]
fn list_metrics_filters_and_paging() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut data = Vec::new();
    for cluster in ["a", "b"] {
        for service in 0..30 {
            let s = format!("svc{service:02}");
            data.push(datum(
                "CPUUtilization",
                &[("ClusterName", cluster), ("ServiceName", &s)],
                T0,
                u("Percent"),
                Value::Single(1.0),
            ));
        }
        data.push(datum("CPUUtilization", &[("ClusterName", cluster)], T0, u("Percent"), Value::Single(1.0)));
    }
    store.put(ACCOUNT, REGION, "AWS/ECS", &data, T0).unwrap();
    store.put(ACCOUNT, REGION, NS, &[datum("Old", &[], T0, u(NO_UNIT), Value::Single(1.0))], T0 - 20 * DAY_MS).unwrap();
    store.put("111111111111", REGION, NS, &[datum("Other", &[], T0, u(NO_UNIT), Value::Single(1.0))], T0).unwrap();

    let sel = |ns: Option<&str>, dims: Vec<DimensionFilter>| Selector {
        account: ACCOUNT.into(),
        region: REGION.into(),
        namespace: ns.map(Into::into),
        dimensions: dims,
        ..Selector::default()
    };
    let active = T0 - 14 * DAY_MS;
    let all = store.list(&sel(None, vec![]), active, None, 0);
    assert_eq!(all.metrics.len(), 62);
    assert!(all.next.is_none());
    assert!(all.metrics.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.list(&sel(None, vec![]), T0 - 30 * DAY_MS, None, 0).metrics.len(), 63);

    let by_cluster = vec![DimensionFilter { name: "ClusterName".into(), value: Some("b".into()) }];
    assert_eq!(store.list(&sel(Some("AWS/ECS"), by_cluster.clone()), active, None, 0).metrics.len(), 31);
    let with_service = vec![DimensionFilter { name: "ServiceName".into(), value: None }];
    assert_eq!(store.list(&sel(Some("AWS/ECS"), with_service), active, None, 0).metrics.len(), 60);
    let mut exact = sel(Some("AWS/ECS"), vec![DimensionFilter { name: "ClusterName".into(), value: None }]);
    exact.exact_dimension_names = true;
    assert_eq!(store.list(&exact, active, None, 0).metrics.len(), 2);

    // Pages of 25 through a token, in order, each metric once.
    let mut seen = Vec::new();
    let mut after: Option<ListCursor> = None;
    loop {
        let page = store.list(&sel(Some("AWS/ECS"), vec![]), active, after.as_ref(), 25);
        seen.extend(page.metrics);
        match page.next {
            Some(c) => after = Some(ListCursor::from_token(&c.to_token()).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 62);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // Without waiting: the same answer while the store is small and no shard busy, else none.
    let first = store.list(&sel(Some("AWS/ECS"), vec![]), active, None, 25);
    let quick = store.try_list(&sel(Some("AWS/ECS"), vec![]), active, None, 25, 64).expect("64 series, none busy");
    assert_eq!((quick.metrics, quick.next.map(|c| c.to_token())), (first.metrics, first.next.map(|c| c.to_token())));
    assert!(store.try_list(&sel(None, vec![]), active, None, 0, 63).is_none(), "64 series > 63");
    {
        let _busy = store.inner.hold_shard(0);
        assert!(store.try_list(&sel(None, vec![]), active, None, 0, 64).is_none(), "a shard is busy");
    }
    assert!(store.try_list(&sel(None, vec![]), active, None, 0, 64).is_some());
    assert!(ListCursor::from_token("zz").is_none());

    // The same selector drives multi-series queries.
    let got =
        store.get_matching(&sel(Some("AWS/ECS"), by_cluster), &query(T0, T0 + MIN, 60, &[Statistic::Sum]), T0).unwrap();
    assert_eq!(got.len(), 31);
}

fn sums(store: &MetricStore, names: &[&str]) -> Vec<Vec<Datapoint>> {
    let q = query(T0, T0 + DAY_MS, 60, &[Statistic::Sum, Statistic::SampleCount, Statistic::Percentile(90.0)]);
    names.iter().map(|n| store.get(&metric(n, &[("Host", "h")]), &q, T0 + DAY_MS).unwrap()).collect()
}

fn put_minutes(store: &MetricStore, names: &[&str], minutes: std::ops::Range<i64>) {
    for m in minutes {
        let data: Vec<Datum> = names
            .iter()
            .map(|n| {
                let v = Value::Values { values: vec![m as f64, 2.0 * m as f64 + 1.0], counts: vec![] };
                datum(n, &[("Host", "h")], T0 + m * MIN, u("Count"), v)
            })
            .collect();
        store.put(ACCOUNT, REGION, NS, &data, T0 + m * MIN).unwrap();
    }
}

#[test]
fn restart_recovers_logs_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c", "d", "e", "f"];
    let store = open(dir.path());
    put_minutes(&store, &names, 0..30);
    store.compact().unwrap();
    put_minutes(&store, &names, 30..50);
    store.flush().unwrap();
    let before = sums(&store, &names);
    assert_eq!(before[0].len(), 50);
    drop(store);

    let store = open(dir.path());
    assert_eq!(sums(&store, &names), before);
    assert_eq!(
        store
            .list(&Selector { account: ACCOUNT.into(), region: REGION.into(), ..Selector::default() }, 0, None, 0)
            .metrics
            .len(),
        6
    );
    // And again after another snapshot and more data, twice over.
    put_minutes(&store, &names, 50..60);
    store.compact().unwrap();
    put_minutes(&store, &names, 60..61);
    let before = sums(&store, &names);
    drop(store);
    let store = open(dir.path());
    assert_eq!(sums(&store, &names), before);
    drop(store);
    assert_eq!(sums(&open(dir.path()), &names), before);
}

#[test]
fn an_import_replaces_the_exported_series_of_a_store_of_other_shards_durably() {
    let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from = open(from_dir.path());
    put_minutes(&from, &["a", "b", "c"], 0..40);
    from.compact().unwrap();
    put_minutes(&from, &["a", "b", "c"], 40..45);
    let want = sums(&from, &["a", "b", "c"]);
    // The importer has a different shard count, part of one series (a stale copy), and a
    // series of its own that the export does not name.
    let to = MetricStore::open(to_dir.path(), Options { shards: 3, ..Options::default() }).unwrap();
    put_minutes(&to, &["a"], 0..10);
    put_minutes(&to, &["mine"], 0..5);
    let mine = sums(&to, &["mine"]);
    let export = from.export();
    // A damaged export changes nothing.
    let mut bad = export.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    assert!(matches!(to.import(&bad), Err(Error::Corrupt(_))));
    assert!(matches!(to.import(&export[..export.len() - 1]), Err(Error::Corrupt(_))));
    assert_eq!(sums(&to, &["a"])[0].len(), 10);
    assert_eq!(to.import(&export).unwrap(), 3);
    assert_eq!(sums(&to, &["a", "b", "c"]), want);
    assert_eq!(sums(&to, &["mine"]), mine);
    // Durable: a restart finds the same, and later puts add to the imported buckets.
    drop(to);
    let to = MetricStore::open(to_dir.path(), Options { shards: 3, ..Options::default() }).unwrap();
    assert_eq!(sums(&to, &["a", "b", "c"]), want);
    put_minutes(&to, &["a"], 45..46);
    put_minutes(&from, &["a"], 45..46);
    assert_eq!(sums(&to, &["a"]), sums(&from, &["a"]));
    assert_eq!(to.series_count(), 4);
}

#[test]
fn a_torn_log_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a"];
    let store = MetricStore::open(dir.path(), Options { shards: 1, ..Options::default() }).unwrap();
    put_minutes(&store, &names, 0..10);
    store.flush().unwrap();
    let before = sums(&store, &names);
    put_minutes(&store, &names, 10..11);
    drop(store);
    // The last record loses its last bytes, as if the process died while writing it.
    let shard = dir.path().join("00");
    let wal = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
        .unwrap();
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len - 3).unwrap();
    let store = MetricStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(sums(&store, &names), before);
    assert!(std::fs::metadata(&wal).unwrap().len() < len - 3);
    // The store goes on; a bad snapshot is refused rather than ignored.
    put_minutes(&store, &names, 10..11);
    store.compact().unwrap();
    drop(store);
    let snap = shard.join("snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&snap, bytes).unwrap();
    assert!(matches!(MetricStore::open(dir.path(), Options::default()), Err(Error::Corrupt(_))));
}

#[test]
fn clones_share_one_store_across_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<MetricStore>();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = store.clone();
            s.spawn(move || {
                for m in 0..100 {
                    let d = datum("N", &[("T", &t.to_string())], T0 + m * 1000, u("Count"), Value::Single(1.0));
                    store
                        .put(ACCOUNT, REGION, NS, &[d, datum("All", &[], T0, u("Count"), Value::Single(1.0))], T0)
                        .unwrap();
                }
            });
        }
    });
    let got = store.get(&metric("All", &[]), &query(T0, T0 + MIN, 60, &[Statistic::SampleCount]), T0).unwrap();
    assert_eq!(got[0].values, vec![Some(400.0)]);
    assert_eq!(store.series_count(), 5);
}

const KILL_DIR: &str = "ESTIBA_METRICSTORE_KILL_DIR";
const KILL_SERIES: usize = 10;

/// Run by `kill_9_leaves_a_prefix_of_every_series` in a child process (and a no-op otherwise):
/// puts one second of every series at a time, forever, syncing and snapshotting often.
#[test]
fn kill_9_child() {
    let Ok(dir) = std::env::var(KILL_DIR) else { return };
    let options = Options { shards: 4, sync_interval: Duration::from_millis(5), compact_bytes: 32 << 10 };
    let store = MetricStore::open(dir, options).unwrap();
    for second in 0.. {
        let ts = T0 + second * 1000;
        let data: Vec<Datum> = (0..KILL_SERIES)
            .map(|s| {
                let v = Value::Values { values: vec![1.0, 2.0, 3.0], counts: vec![] };
                datum("K", &[("S", &s.to_string())], ts, u("Count"), v)
            })
            .collect();
        store.put(ACCOUNT, REGION, NS, &data, ts).unwrap();
    }
}

#[test]
fn kill_9_leaves_a_prefix_of_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tests::kill_9_child", "--test-threads", "1"])
        .env(KILL_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has snapshotted at least once (however slow the machine is), mid-run.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !dir.path().join("00/snapshot").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = open(dir.path());
    // The child wrote tens of thousands of puts through dozens of snapshots.
    assert!(store.stats().buckets > 100);
    let now = T0;
    let q = query(T0, T0 + 14 * DAY_MS, 60, &[Statistic::SampleCount, Statistic::Sum]);
    for s in 0..KILL_SERIES {
        // Every series holds seconds 0..k, each whole: full minutes of 60 puts of 3 values,
        // then at most one partial minute.
        let got = store.get(&metric("K", &[("S", &s.to_string())]), &q, now).unwrap();
        assert!(!got.is_empty(), "series {s} lost everything");
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.timestamp, T0 + i as i64 * MIN, "series {s}: a gap");
            let n = d.values[0].unwrap();
            assert_eq!(d.values[1], Some(2.0 * n), "series {s}: a partial put");
            if i + 1 < got.len() {
                assert_eq!(n, 180.0, "series {s}: minute {i} is missing seconds");
            } else {
                assert!(n > 0.0 && n <= 180.0 && n % 3.0 == 0.0);
            }
        }
    }
}

#[test]
fn get_values_gives_what_get_gives_and_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut rng = Rng(7);
    // Two days of minutes (so packed chunks and hot buckets), two units on one metric, a
    // gap, several values per minute on some.
    let mut data = Vec::new();
    for m in 0..2 * 1440 {
        if m % 97 == 5 {
            continue;
        }
        let unit = if m % 3 == 0 { u("Bytes") } else { u("None") };
        let value = if m % 5 == 0 {
            Value::Values { values: vec![rng.f(), rng.f()], counts: vec![] }
        } else {
            Value::Single(rng.f())
        };
        data.push(datum("Load", &[], T0 + m * MIN + 1000, unit.clone(), value));
        data.push(datum("One", &[], T0 + m * MIN + 1000, u("None"), Value::Single(rng.f())));
        if data.len() >= 1000 {
            store.put(ACCOUNT, REGION, NS, &data, T0 + 2 * DAY_MS).unwrap();
            data.clear();
        }
    }
    store.put(ACCOUNT, REGION, NS, &data, T0 + 2 * DAY_MS).unwrap();
    let now = T0 + 2 * DAY_MS;
    for name in ["Load", "One"] {
        for unit in [UnitFilter::Merged, UnitFilter::Only(u("Bytes")), UnitFilter::Only(u("None")), UnitFilter::Each] {
            for (period, stat) in [
                (60, Statistic::Average),
                (300, Statistic::Sum),
                (3600, Statistic::Percentile(90.0)),
                (120, Statistic::Maximum),
            ] {
                let q = Query {
                    start: T0 + 7 * MIN,
                    end: now - 13 * MIN,
                    period,
                    statistics: vec![stat],
                    unit: unit.clone(),
                };
                let want: Vec<(i64, f64)> = store
                    .get(&metric(name, &[]), &q, now)
                    .unwrap()
                    .iter()
                    .filter_map(|d| d.values[0].map(|v| (d.timestamp, v)))
                    .collect();
                let mut got = Vec::new();
                store
                    .get_values(&metric(name, &[]), &q, now, |t, v| {
                        got.push((t, v));
                        true
                    })
                    .unwrap();
                assert_eq!(got, want, "{name} {unit:?} {period} {stat:?}");
                let mut first = Vec::new();
                store
                    .get_values(&metric(name, &[]), &q, now, |t, v| {
                        first.push((t, v));
                        first.len() < 3
                    })
                    .unwrap();
                assert_eq!(first, want[..3.min(want.len())]);
            }
        }
    }
    let mut none = 0;
    let q = query(T0, now, 60, &[Statistic::Sum]);
    store
        .get_values(&metric("Absent", &[]), &q, now, |_, _| {
            none += 1;
            true
        })
        .unwrap();
    assert_eq!(none, 0);
    let bad = query(T0, now, 7, &[Statistic::Sum]);
    assert!(store.get_values(&metric("One", &[]), &bad, now, |_, _| true).is_err());
}
