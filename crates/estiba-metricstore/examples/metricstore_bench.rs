//! A quick measurement of the metric store (not a test; `cargo xtask bench metrics` will take
//! it over): PutMetricData ingest rate on one thread by batch size, GetMetricData-style queries
//! over a day of 1-minute data for 100 series, reopen time and bytes on disk.
//!
//! `cargo run --release -p estiba-metricstore --example metricstore_bench -- [datapoints] [dir]`
//! (default 2,000,000 datapoints per batch size, in a temporary directory). It allocates with
//! mimalloc, as the server does (glibc's malloc, fragmented by millions of small sketches,
//! makes the queries' per-datapoint allocations several times slower).

use std::time::Instant;

use estiba_metricstore::{
    Datum, Dimension, DimensionFilter, MetricId, MetricStore, Options, Query, Resolution, Selector, Statistic, Unit,
    UnitFilter, Value,
};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";
/// 2025-12-01T00:00:00Z, in ms.
const T0: i64 = 1_764_547_200_000;
const MIN: i64 = 60_000;

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

/// CPU time so far, in seconds, of this thread (`CLOCK_THREAD_CPUTIME_ID`, 3) or this process
/// (`CLOCK_PROCESS_CPUTIME_ID`, 2): the machine may be shared, so wall time alone says little.
fn cpu_time(clock: i32) -> f64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (64-bit Linux layout) through the pointer.
    unsafe { clock_gettime(clock, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 / 1e9
}

fn thread_cpu() -> f64 {
    cpu_time(3)
}

fn cpu_secs() -> f64 {
    cpu_time(2)
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

fn dims(cluster: usize, service: usize) -> Vec<Dimension> {
    vec![
        Dimension::new("ServiceName", format!("service-{service:03}")),
        Dimension::new("ClusterName", format!("cluster-{cluster}")),
    ]
}

/// Batches of `batch` datapoints over `series` series (3 metrics × services), one sample every
/// 5 s per series, as the agent's sampler would send them.
fn batches(total: usize, batch: usize, series: usize, high: bool) -> Vec<(Vec<Datum>, i64)> {
    let (percent, count) = (Unit::from("Percent"), Unit::from("Count"));
    let names = ["CPUUtilization", "MemoryUtilization", "RequestCount"];
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < total {
        let mut data = Vec::with_capacity(batch);
        let mut now = T0;
        for _ in 0..batch.min(total - i) {
            let s = i % series;
            let ts = T0 + (i / series) as i64 * 5_000;
            now = ts;
            data.push(Datum {
                name: names[s % 3].into(),
                dimensions: dims(s % 4, s / 3),
                timestamp: ts,
                unit: if s % 3 == 2 { count.clone() } else { percent.clone() },
                resolution: if high { Resolution::High } else { Resolution::Standard },
                value: Value::Single(((i * 7919) % 1000) as f64 / 10.0),
            });
            i += 1;
        }
        out.push((data, now));
    }
    out
}

fn ingest(store: &MetricStore, total: usize, batch: usize, series: usize, high: bool, label: &str) {
    let work = batches(total, batch, series, high);
    let (cpu0, thread0, t) = (cpu_secs(), thread_cpu(), Instant::now());
    for (data, now) in &work {
        store.put(ACCOUNT, REGION, "ECS/Bench", data, *now).expect("put");
    }
    let secs = t.elapsed().as_secs_f64();
    let thread = thread_cpu() - thread0;
    let cpu = cpu_secs() - cpu0;
    println!(
        "put  batch {batch:>4} × {series:>4} series{label}: {:>9.0} datapoints per CPU-second of the putting thread, {:>9.0}/s wall ({:.2} s wall, {:.2} s process CPU with the sync thread)",
        total as f64 / thread,
        total as f64 / secs,
        secs,
        cpu
    );
}

/// A day of `AWS/ECS` `CPUUtilization` for 100 series, `per_minute` samples a minute each:
/// `value(minute, sample, series)`.
fn fill(store: &MetricStore, per_minute: i64, value: impl Fn(usize, usize, usize) -> f64) {
    let percent = Unit::from("Percent");
    for minute in 0..1440 {
        for tick in 0..per_minute {
            let ts = T0 + minute * MIN + tick * (MIN / per_minute);
            let data: Vec<Datum> = (0..100)
                .map(|s| Datum {
                    name: "CPUUtilization".into(),
                    dimensions: dims(0, s),
                    timestamp: ts,
                    unit: percent.clone(),
                    resolution: Resolution::Standard,
                    value: Value::Single(value(minute as usize, tick as usize, s)),
                })
                .collect();
            store.put(ACCOUNT, REGION, "AWS/ECS", &data, ts).expect("put");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: usize = args.first().map_or(2_000_000, |a| a.parse().expect("datapoints"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args.get(1).map_or_else(|| tmp.path().to_owned(), std::path::PathBuf::from);
    // A day of 1-minute data for 100 series, 12 samples a minute each.
    let rss0 = rss_mib();
    let store = MetricStore::open(dir.join("query"), Options::default()).expect("open");
    let ids: Vec<MetricId> =
        (0..100).map(|s| MetricId::new(ACCOUNT, REGION, "AWS/ECS", "CPUUtilization", dims(0, s))).collect();
    let t = Instant::now();
    fill(&store, 12, |minute, tick, s| ((minute * 31 + s * 7 + tick) % 100) as f64);
    let stats = store.stats();
    println!(
        "fill a day × 100 series × 12 samples/min: {:.2} s; {} buckets, {} bins, {:.1} MiB of buckets (+{:.0} MiB resident)",
        t.elapsed().as_secs_f64(),
        stats.buckets,
        stats.bins,
        stats.memory_bytes as f64 / (1 << 20) as f64,
        rss_mib() - rss0
    );
    let now = T0 + 1440 * MIN;
    // Each query 7 times: the median and the fastest, in CPU time of this thread and in wall time.
    let measure = |label: String, query: &dyn Fn() -> usize| {
        let (mut times, mut cpus) = (Vec::new(), Vec::new());
        let mut points = 0;
        for _ in 0..7 {
            let (t, c) = (Instant::now(), thread_cpu());
            points = query();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            cpus.push((thread_cpu() - c) * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        cpus.sort_by(f64::total_cmp);
        println!(
            "{label}: {points} datapoints, CPU median {:.2} ms (min {:.2}), wall median {:.2} ms (min {:.2})",
            cpus[3], cpus[0], times[3], times[0]
        );
    };
    let query = |stats: &[Statistic], period: i64| Query {
        start: T0,
        end: now,
        period,
        statistics: stats.to_vec(),
        unit: UnitFilter::Each,
    };
    for (label, stats, period) in [
        ("Average", &[Statistic::Average][..], 60),
        ("Average+Max+SampleCount", &[Statistic::Average, Statistic::Maximum, Statistic::SampleCount], 60),
        ("p99", &[Statistic::Percentile(99.0)], 60),
        ("p50+p99", &[Statistic::Percentile(50.0), Statistic::Percentile(99.0)], 300),
        ("Average", &[Statistic::Average], 3600),
    ] {
        let q = query(stats, period);
        measure(format!("get  100 series × a day, {label}, period {period}"), &|| {
            ids.iter().map(|id| store.get(id, &q, now).expect("get").len()).sum()
        });
    }
    let sel = Selector {
        account: ACCOUNT.into(),
        region: REGION.into(),
        namespace: Some("AWS/ECS".into()),
        name: Some("CPUUtilization".into()),
        dimensions: vec![DimensionFilter { name: "ClusterName".into(), value: Some("cluster-0".into()) }],
        exact_dimension_names: false,
    };
    let q = query(&[Statistic::Average], 60);
    measure("get_matching 100 series × a day, Average, period 60".into(), &|| {
        store.get_matching(&sel, &q, now).expect("get").iter().map(|(_, d)| d.len()).sum()
    });

    let t = Instant::now();
    store.compact().expect("compact");
    println!("snapshot of 100 series × a day: {:.2} s", t.elapsed().as_secs_f64());
    drop(store);
    let t = Instant::now();
    let store = MetricStore::open(dir.join("query"), Options::default()).expect("open");
    println!("reopen: {:.2} s, {} series", t.elapsed().as_secs_f64(), store.series_count());
    let bytes: u64 = walk(&dir.join("query"));
    println!("disk: {:.1} MiB for {} datapoints", bytes as f64 / (1 << 20) as f64, 1440 * 12 * 100);
    drop(store);

    // The same day, one sample a minute (AWS/ECS's service metrics): what memory a series
    // takes when its minutes hold one value each.
    let store = MetricStore::open(dir.join("sparse"), Options::default()).expect("open");
    fill(&store, 1, |minute, _, s| ((minute * 31 + s * 7) % 1000) as f64 / 10.0);
    let stats = store.stats();
    println!(
        "a day × 100 series × 1 sample/min: {} buckets, {} bins, {:.1} MiB of buckets",
        stats.buckets,
        stats.bins,
        stats.memory_bytes as f64 / (1 << 20) as f64
    );
    drop(store);

    // Each into a new store; then the same again into the last one, whose buckets are packed
    // by now (a backfill).
    let mut store = None;
    for (i, (batch, series, high)) in
        [(20, 300, false), (100, 300, false), (1000, 300, false), (1000, 3000, false), (100, 300, true)]
            .into_iter()
            .enumerate()
    {
        let s = MetricStore::open(dir.join(format!("ingest-{i}")), Options::default()).expect("open");
        ingest(&s, total, batch, series, high, if high { " (high-res)" } else { "" });
        store = Some(s);
    }
    ingest(&store.expect("a store"), total, 100, 300, true, " (high-res, again: into the past)");

    // Reopening replays the logs written since the last snapshot.
    let t = Instant::now();
    let store = MetricStore::open(dir.join("ingest-0"), Options::default()).expect("open");
    let stats = store.stats();
    println!(
        "reopen after {total} datapoints: {:.2} s ({} series, {:.1} MiB of log replayed)",
        t.elapsed().as_secs_f64(),
        stats.series,
        stats.log_bytes as f64 / (1 << 20) as f64
    );
}

fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
