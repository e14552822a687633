//! A quick measurement of the log store (not a test): ingest rate with durability, scan time
//! for a rare term, bytes on disk per event.
//!
//! `cargo run --release -p estiba-logstore --example logstore_bench -- [events] [dir]`
//! (default 10,000,000 events of 100 bytes in batches of 1,000, in a temporary directory).

use std::time::Instant;

use estiba_logstore::{Event, LogStore, Options, Scan};

const GROUP: &str = "0b5c8e9e-7d7a-4d0a-8f0e-6f3f1f0c2a11";
const BATCH: usize = 1_000;
const STREAMS: usize = 4;

/// A 100-byte log line that varies as real ones do; every 1,000,000th carries a rare term.
fn line(i: u64, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    let level = ["INFO ", "INFO ", "INFO ", "DEBUG", "WARN "][(i % 5) as usize];
    let path = ["/api/v1/items", "/api/v1/users", "/healthz", "/api/v1/orders"][(i % 4) as usize];
    let _ = write!(
        out,
        "{level} req={:016x} {path}/{} status={} latency_ms={} ",
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        i % 9973,
        if i.is_multiple_of(97) { 500 } else { 200 },
        (i * 7) % 1000
    );
    if i % 1_000_000 == 500_000 {
        out.push_str("needle-7f3a ");
    }
    while out.len() < 100 {
        out.push('.');
    }
    out.truncate(100);
}

fn batch_of(i: u64, end: u64, base: u64, t0: i64, msg: &mut String) -> Vec<Event> {
    (i..(i + BATCH as u64).min(end))
        .map(|k| {
            line(k + base, msg);
            Event { timestamp: t0 + (k as i64) / 10, message: msg.clone() }
        })
        .collect()
}

/// User + system CPU time of this process so far (Linux).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(10_000_000, |a| a.parse().expect("events"));
    let tmp;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("tempdir");
            tmp.path().to_owned()
        }
    };
    let store = LogStore::open(&dir, Options::default()).expect("open");
    let t0: i64 = 1_764_600_000_000;

    // Ingest: one stream at a time on one thread, each append waiting for its sync.
    let per_stream = total / STREAMS as u64;
    let mut msg = String::new();
    let (mut ingest_secs, mut ingested) = (0.0, 0u64);
    let cpu0 = cpu_secs();
    for s in 0..STREAMS {
        let name = format!("ecs/app/{s:032x}");
        let info = store.ensure_stream(GROUP, &name, t0).expect("stream");
        let mut i = info.next_seq;
        while i < per_stream {
            let batch = batch_of(i, per_stream, s as u64 * per_stream, t0, &mut msg);
            let start = Instant::now();
            store.append(GROUP, &name, &batch, Some(i), t0 + (i as i64) / 10).expect("append");
            ingest_secs += start.elapsed().as_secs_f64();
            ingested += batch.len() as u64;
            i += batch.len() as u64;
        }
    }
    if ingested > 0 {
        let cpu = cpu_secs() - cpu0;
        println!(
            "ingest, 1 appender: {ingested} events in {ingest_secs:.2} s of append calls = {:.0} events/s; CPU (all threads, incl. making the batches) {cpu:.2} s = {:.0} events per CPU-second",
            ingested as f64 / ingest_secs,
            ingested as f64 / cpu
        );
        for (appenders, streams) in [(4, 1), (4, 4)] {
            let side =
                LogStore::open(dir.join(format!("side-{appenders}-{streams}")), Options::default()).expect("open");
            let n = 1_000_000u64.min(total);
            for s in 0..streams {
                side.ensure_stream(GROUP, &format!("s{s}"), t0).expect("stream");
            }
            let next = std::sync::atomic::AtomicU64::new(0);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for a in 0..appenders {
                    let (side, next) = (&side, &next);
                    scope.spawn(move || {
                        let mut msg = String::new();
                        let name = format!("s{}", a % streams);
                        loop {
                            let i = next.fetch_add(BATCH as u64, std::sync::atomic::Ordering::Relaxed);
                            if i >= n {
                                break;
                            }
                            let batch = batch_of(i, n, 0, t0, &mut msg);
                            side.append(GROUP, &name, &batch, None, t0).expect("append");
                        }
                    });
                }
            });
            let secs = start.elapsed().as_secs_f64();
            println!(
                "ingest, {appenders} appenders to {streams} stream(s): {n} events in {secs:.2} s = {:.0} events/s",
                n as f64 / secs
            );
        }
    }
    // The sealer thread may still be compressing the last full segments: the size on disk and
    // the scans are of the sealed store.
    let mut disk = store.disk_bytes();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = store.disk_bytes();
        if now == disk {
            break;
        }
        disk = now;
    }
    println!(
        "disk: {disk} bytes for {total} events = {:.1} bytes/event (raw messages: 100 bytes/event)",
        disk as f64 / total as f64
    );

    for round in 0..3 {
        let start = Instant::now();
        let page = store
            .scan(GROUP, &Scan { required: vec!["needle-7f3a".into()], limit: 10_000, ..Scan::default() }, &|m| {
                m.contains("needle-7f3a")
            })
            .expect("scan");
        println!(
            "scan {round}: {} matches over {} events ({} MB of messages) in {:.3} s",
            page.events.len(),
            page.scanned_events,
            page.scanned_bytes >> 20,
            start.elapsed().as_secs_f64()
        );
    }
    // Worst cases: a term in every block (each is decompressed), and no required substring at
    // all (each event is decoded and given to the matcher, as JSON patterns are).
    for (what, required) in
        [("term in every block", vec!["latency_ms=999 ".to_owned()]), ("no required substring", vec![])]
    {
        let start = Instant::now();
        let page = store
            .scan(GROUP, &Scan { required, limit: 10_000, ..Scan::default() }, &|m| {
                m.contains("needle-7f3a") && m.contains("latency_ms=999 ")
            })
            .expect("scan");
        println!(
            "scan, {what}: {} matches over {} events in {:.3} s",
            page.events.len(),
            page.scanned_events,
            start.elapsed().as_secs_f64()
        );
    }
    let start = Instant::now();
    let page = store.scan(GROUP, &Scan { limit: 10_000, ..Scan::default() }, &|_| true).expect("scan");
    println!("scan, every event, first page: {} events in {:.3} s", page.events.len(), start.elapsed().as_secs_f64());
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..1000 {
        n += store
            .read(
                GROUP,
                &format!("ecs/app/{:032x}", STREAMS - 1),
                &estiba_logstore::Read { limit: 100, ..Default::default() },
            )
            .expect("read")
            .events
            .len();
    }
    println!("read, tail of 100 events: {:.1} µs each ({n} events)", start.elapsed().as_secs_f64() * 1e3);
}
