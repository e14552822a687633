use super::*;

const G: &str = "6f1c1a7e-0b7e-4a43-9d55-2f0d5c1b9e01";

fn ev(ts: i64, msg: &str) -> Event {
    Event { timestamp: ts, message: msg.to_owned() }
}

fn msgs(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.message.as_str()).collect()
}

fn small() -> Options {
    Options { disk_budget: None, segment_bytes: 4096 }
}

/// A store in a new directory with one stream, `G`/"s".
fn with_stream(options: Options) -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), options).unwrap();
    store.create_stream(G, "s", 0).unwrap();
    (dir, store)
}

fn fill(store: &LogStore, stream: &str, n: usize, ts0: i64) {
    let events: Vec<Event> =
        (0..n).map(|i| ev(ts0 + i as i64, &format!("{stream} line {i:05} {}", "x".repeat(i % 50)))).collect();
    for chunk in events.chunks(37) {
        store.append(G, stream, chunk, None, 1_000).unwrap();
    }
}

fn read(
    store: &LogStore,
    stream: &str,
    cursor: Option<Cursor>,
    forward: bool,
    from_head: bool,
    limit: usize,
) -> ReadPage {
    store.read(G, stream, &Read { cursor, forward, from_head, limit, ..Read::default() }).unwrap()
}

#[test]
fn round_trip_and_metadata_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    store.create_stream(G, "web/app/1", 5).unwrap();
    assert!(matches!(store.create_stream(G, "web/app/1", 6), Err(Error::StreamExists { .. })));
    let a = store.append(G, "web/app/1", &[ev(10, "hello"), ev(12, "wörld ✓")], None, 100).unwrap();
    assert_eq!(a, Appended { stored: 2, duplicates: 0, next_seq: 2 });
    let info = store.stream(G, "web/app/1").unwrap();
    assert_eq!(
        (
            info.creation_time,
            info.first_event_timestamp,
            info.last_event_timestamp,
            info.last_ingestion_time,
            info.next_seq
        ),
        (5, Some(10), Some(12), Some(100), 2)
    );
    assert!(info.stored_bytes > 0);
    let page = read(&store, "web/app/1", None, false, true, 0);
    assert_eq!(msgs(&page.events), ["hello", "wörld ✓"]);
    assert_eq!(
        (page.events[1].seq, page.events[1].timestamp, page.events[1].ingestion_time, &*page.events[1].stream),
        (1, 12, 100, "web/app/1")
    );
    assert!(matches!(store.append(G, "nope", &[ev(1, "x")], None, 1), Err(Error::NoSuchStream { .. })));
    drop(store);
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stream(G, "web/app/1").unwrap(), info);
    assert_eq!(store.groups(), [G]);
    assert_eq!(store.stored_bytes(G), info.stored_bytes);
    assert_eq!(msgs(&read(&store, "web/app/1", None, false, false, 10).events), ["hello", "wörld ✓"]);
    let e = store.ensure_stream(G, "web/app/1", 99).unwrap();
    assert_eq!(e.creation_time, 5);
}

#[test]
fn paging_both_ways_with_repeating_end_cursors() {
    let (_dir, store) = with_stream(small());
    fill(&store, "s", 500, 1_000);
    // From the tail, backward.
    let mut page = read(&store, "s", None, false, false, 100);
    assert_eq!(page.events.first().unwrap().seq, 400);
    assert_eq!(page.events.last().unwrap().seq, 499);
    assert_eq!((page.backward, page.forward), (Cursor(400), Cursor(500)));
    let end = read(&store, "s", Some(page.forward), true, false, 100);
    assert!(end.events.is_empty());
    assert_eq!((end.backward, end.forward), (Cursor(500), Cursor(500)));
    let mut seen = page.events.len();
    loop {
        let next = read(&store, "s", Some(page.backward), false, false, 100);
        if next.events.is_empty() {
            assert_eq!(next.backward, page.backward);
            break;
        }
        assert_eq!(next.events.last().unwrap().seq + 1, page.events[0].seq);
        seen += next.events.len();
        page = next;
    }
    assert_eq!(seen, 500);
    // From the head, forward.
    let mut cursor = None;
    let mut all = Vec::new();
    loop {
        let p = read(&store, "s", cursor, true, true, 77);
        if p.events.is_empty() {
            assert_eq!(p.forward, cursor.unwrap());
            break;
        }
        all.extend(p.events.iter().map(|e| e.seq));
        cursor = Some(p.forward);
    }
    assert_eq!(all, (0..500).collect::<Vec<_>>());
    // Appends after the end show up from the repeated cursor.
    store.append(G, "s", &[ev(5_000, "late")], None, 2).unwrap();
    assert_eq!(msgs(&read(&store, "s", cursor, true, false, 10).events), ["late"]);
}

#[test]
fn time_ranges() {
    let (_dir, store) = with_stream(small());
    fill(&store, "s", 1_000, 10_000);
    let p = store
        .read(G, "s", &Read { start: Some(10_100), end: Some(10_200), from_head: true, limit: 1000, ..Read::default() })
        .unwrap();
    assert_eq!(p.events.len(), 100);
    assert_eq!((p.events[0].timestamp, p.events[99].timestamp), (10_100, 10_199));
    let p = store.read(G, "s", &Read { start: Some(10_100), end: Some(10_200), limit: 10, ..Read::default() }).unwrap();
    assert_eq!(p.events.iter().map(|e| e.timestamp).collect::<Vec<_>>(), (10_190..10_200).collect::<Vec<_>>());
}

#[test]
fn dedup_by_seq_with_a_gap() {
    let (dir, store) = with_stream(Options::default());
    let batch: Vec<Event> = (0..5).map(|i| ev(i, &format!("m{i}"))).collect();
    assert_eq!(store.append(G, "s", &batch, Some(0), 1).unwrap(), Appended { stored: 5, duplicates: 0, next_seq: 5 });
    assert_eq!(
        store.append(G, "s", &batch[..3], Some(0), 1).unwrap(),
        Appended { stored: 0, duplicates: 3, next_seq: 5 }
    );
    let more: Vec<Event> = (3..8).map(|i| ev(i, &format!("m{i}"))).collect();
    assert_eq!(store.append(G, "s", &more, Some(3), 1).unwrap(), Appended { stored: 3, duplicates: 2, next_seq: 8 });
    // A gap: the sender lost 8..10.
    assert_eq!(
        store.append(G, "s", &[ev(10, "m10")], Some(10), 1).unwrap(),
        Appended { stored: 1, duplicates: 0, next_seq: 11 }
    );
    let p = read(&store, "s", None, true, true, 100);
    assert_eq!(p.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5, 6, 7, 10]);
    assert_eq!(msgs(&p.events)[8], "m10");
    drop(store);
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        store.append(G, "s", &[ev(10, "m10")], Some(10), 1).unwrap(),
        Appended { stored: 0, duplicates: 1, next_seq: 11 }
    );
}

/// The files of the store's streams whose names end in `.<ext>`.
fn files_of(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for g in std::fs::read_dir(dir.join("groups")).unwrap() {
        for s in std::fs::read_dir(g.unwrap().path()).unwrap() {
            let s = s.unwrap().path();
            if s.is_dir() {
                for f in std::fs::read_dir(&s).unwrap() {
                    let f = f.unwrap().path();
                    if f.extension().is_some_and(|e| e == ext) {
                        found.push(f);
                    }
                }
            }
        }
    }
    found
}

fn wal_of(dir: &Path) -> std::path::PathBuf {
    let mut found = files_of(dir, "wal");
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

#[test]
fn crash_mid_append_leaves_no_partial_event() {
    let (dir, store) = with_stream(Options::default());
    store.append(G, "s", &[ev(1, "one"), ev(2, "two")], Some(0), 1).unwrap();
    let wal = wal_of(dir.path());
    let good = std::fs::metadata(&wal).unwrap().len();
    store.append(G, "s", &[ev(3, "three"), ev(4, "four")], Some(2), 1).unwrap();
    let full = std::fs::metadata(&wal).unwrap().len();
    drop(store);
    // Cut the second record in the middle, and add garbage.
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(good + (full - good) / 2).unwrap();
    drop(f);
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    let p = read(&store, "s", None, true, true, 10);
    assert_eq!(msgs(&p.events), ["one", "two"]);
    assert_eq!(store.stream(G, "s").unwrap().next_seq, 2);
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), good);
    // The sender resends from its saved offset: nothing lost, nothing doubled.
    let a = store.append(G, "s", &[ev(2, "two"), ev(3, "three"), ev(4, "four")], Some(1), 1).unwrap();
    assert_eq!(a, Appended { stored: 2, duplicates: 1, next_seq: 4 });
    drop(store);
    // A flipped byte in the last record: the record goes, not the store.
    let mut bytes = std::fs::read(&wal).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x55;
    std::fs::write(&wal, &bytes).unwrap();
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(msgs(&read(&store, "s", None, true, true, 10).events), ["one", "two"]);
    assert_eq!(store.stream(G, "s").unwrap().next_seq, 2);
}

/// Events of ~30-70 bytes, compressible as log lines are: `n` of them fill about `n / 3000`
/// full blocks.
fn log_lines(from: u64, n: u64) -> Vec<Event> {
    (from..from + n)
        .map(|i| ev(i as i64, &format!("event {i:06} user-{} {}", i % 97, "y".repeat((i % 40) as usize))))
        .collect()
}

#[test]
fn crash_mid_append_of_compressed_blocks_leaves_no_partial_event() {
    let options = || Options { disk_budget: None, segment_bytes: 64 << 20 };
    let (dir, store) = with_stream(options());
    let (first, second) = (log_lines(0, 7_000), log_lines(7_000, 7_000));
    store.append(G, "s", &first, Some(0), 1).unwrap();
    let wal = wal_of(dir.path());
    let good = std::fs::metadata(&wal).unwrap().len();
    store.append(G, "s", &second, Some(7_000), 1).unwrap();
    let full = std::fs::metadata(&wal).unwrap().len();
    drop(store);
    // Cut the second append inside its first record, a compressed full block.
    let raw: u64 = second.iter().map(|e| e.message.len() as u64).sum();
    assert!(full - good < raw / 2, "{} bytes written for {raw} raw: not compressed", full - good);
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(good + 200).unwrap();
    drop(f);
    let store = LogStore::open(dir.path(), options()).unwrap();
    assert_eq!(store.stream(G, "s").unwrap().next_seq, 7_000);
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), good);
    // The sender resends from its saved offset: nothing lost, nothing doubled.
    let resent: Vec<Event> = first[3_000..].iter().chain(&second).cloned().collect();
    let a = store.append(G, "s", &resent, Some(3_000), 1).unwrap();
    assert_eq!(a, Appended { stored: 7_000, duplicates: 4_000, next_seq: 14_000 });
    let p = read(&store, "s", None, true, true, 100_000);
    let want: Vec<&str> = first.iter().chain(&second).map(|e| e.message.as_str()).collect();
    assert_eq!(msgs(&p.events), want);
}

#[test]
fn a_search_skips_compressed_blocks_of_the_open_segment_by_their_filters() {
    let (dir, store) = with_stream(Options { disk_budget: None, segment_bytes: 64 << 20 });
    store.append(G, "s", &log_lines(0, 7_000), Some(0), 1).unwrap();
    // Damage the first block's compressed bytes behind the store's back (its filter intact):
    // a search the filter rules out never reads them; one it admits finds the damage.
    let wal = wal_of(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"\xff\xff\xff\xff", 48 + 4 + 100).unwrap();
    let search = |needle: &str| {
        store.scan(G, &Scan { required: vec![needle.into()], limit: 100_000, ..Scan::default() }, &|_| true)
    };
    assert_eq!(search("zz-absent").unwrap().events.len(), 0);
    assert!(matches!(search("user-96 "), Err(crate::Error::Corrupt(_))));
}

/// The bytes of the streams' files (metadata, sealed and open segments), as the disk holds them.
fn bytes_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    for g in std::fs::read_dir(dir.join("groups")).unwrap() {
        for s in std::fs::read_dir(g.unwrap().path()).unwrap() {
            let s = s.unwrap().path();
            if s.is_dir() {
                total += std::fs::read_dir(&s).unwrap().map(|f| f.unwrap().metadata().unwrap().len()).sum::<u64>();
            }
        }
    }
    total
}

#[test]
fn an_older_open_segment_of_compressed_blocks_is_sealed_at_open() {
    // As after a crash between an open segment filling up and its seal: two open segments,
    // the older one (raw records, compressed full blocks, raw again) is sealed when the store
    // opens, its raw records joined into blocks around the compressed ones in order.
    let options = || Options { disk_budget: None, segment_bytes: 64 << 20 };
    let (first, second) = (log_lines(0, 7_000), log_lines(7_000, 7_000));
    let (dir, store) = with_stream(options());
    for (from, to) in [(0, 500), (500, 6_500), (6_500, 7_000)] {
        for c in first[from..to].chunks(if to - from == 500 { 50 } else { 6_000 }) {
            store.append(G, "s", c, Some(c[0].timestamp as u64), 1).unwrap();
        }
    }
    let older = wal_of(dir.path());
    drop(store);
    // The newer open segment, made by a store of its own and moved beside the older one.
    let (other, store) = with_stream(options());
    store.append(G, "s", &second, Some(7_000), 1).unwrap();
    drop(store);
    let newer = wal_of(other.path());
    std::fs::copy(&newer, older.with_file_name(newer.file_name().unwrap())).unwrap();
    let check = |store: &LogStore| {
        let p = read(store, "s", None, true, true, 100_000);
        let want: Vec<&str> = first.iter().chain(&second).map(|e| e.message.as_str()).collect();
        assert_eq!(msgs(&p.events), want);
        assert!(p.events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
        let page = store
            .scan(G, &Scan { required: vec!["event 003".into()], limit: 100_000, ..Scan::default() }, &|_| true)
            .unwrap();
        assert_eq!(page.events.len(), 1_000);
        assert_eq!(store.stream(G, "s").unwrap().next_seq, 14_000);
        assert_eq!(store.stream(G, "s").unwrap().stored_bytes, bytes_on_disk(dir.path()));
    };
    let store = LogStore::open(dir.path(), options()).unwrap();
    assert_eq!(files_of(dir.path(), "seg"), [older.with_extension("seg")]);
    assert!(!older.exists());
    check(&store);
    drop(store);
    check(&LogStore::open(dir.path(), options()).unwrap());
}

#[test]
fn sealing_compresses_and_survives_reopen() {
    let (dir, store) = with_stream(Options { disk_budget: None, segment_bytes: 64 << 10 });
    fill(&store, "s", 5_000, 0);
    store.inner.settle();
    let raw: usize = (0..5_000).map(|i| format!("s line {i:05} {}", "x".repeat(i % 50)).len()).sum();
    let segs = std::fs::read_dir(wal_of(dir.path()).parent().unwrap())
        .unwrap()
        .filter(|f| f.as_ref().unwrap().path().extension().is_some_and(|e| e == "seg"))
        .count();
    assert!(segs >= 2, "{segs} sealed segments");
    let info = store.stream(G, "s").unwrap();
    assert!(info.stored_bytes < raw as u64 / 2, "{} stored for {raw} raw", info.stored_bytes);
    assert_eq!(store.disk_bytes(), info.stored_bytes);
    assert_eq!(info.stored_bytes, bytes_on_disk(dir.path()));
    drop(store);
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stream(G, "s").unwrap(), info);
    let p = read(&store, "s", None, true, true, 10_000);
    assert_eq!(p.events.len(), 5_000);
    assert!(p.events.iter().enumerate().all(|(i, e)| e.seq == i as u64 && e.timestamp == i as i64));
    assert_eq!(p.events[4321].message, format!("s line 04321 {}", "x".repeat(4321 % 50)));
}

#[test]
fn scan_orders_across_streams_resumes_and_requires() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), small()).unwrap();
    for s in ["a", "b", "c/x"] {
        store.create_stream(G, s, 0).unwrap();
    }
    // Interleaved timestamps, some equal across streams.
    for i in 0..300i64 {
        store
            .append(G, "a", &[ev(i * 2, &format!("a {i} {}", if i % 10 == 0 { "ERROR" } else { "ok" }))], None, 1)
            .unwrap();
        store
            .append(G, "b", &[ev(i * 2, &format!("b {i} {}", if i % 15 == 0 { "ERROR" } else { "ok" }))], None, 1)
            .unwrap();
        store.append(G, "c/x", &[ev(i * 3 + 1, &format!("c {i} ok"))], None, 1).unwrap();
    }
    let all = store.scan(G, &Scan { limit: 10_000, ..Scan::default() }, &|_| true).unwrap();
    assert_eq!(all.events.len(), 900);
    assert!(all.next.is_none());
    let keys: Vec<_> = all.events.iter().map(|e| (e.timestamp, e.stream.to_string(), e.seq)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // Paging with a cursor gives the same sequence.
    let mut after = None;
    let mut paged = Vec::new();
    loop {
        let p = store.scan(G, &Scan { limit: 64, after: after.clone(), ..Scan::default() }, &|_| true).unwrap();
        paged.extend(p.events.iter().map(|e| (e.timestamp, e.stream.to_string(), e.seq)));
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, keys);
    // Required substrings and the matcher.
    let errors = store
        .scan(G, &Scan { required: vec!["ERROR".into()], limit: 1000, ..Scan::default() }, &|m| m.contains("ERROR"))
        .unwrap();
    assert_eq!(errors.events.len(), 30 + 20);
    assert!(errors.events.iter().all(|e| e.message.contains("ERROR")));
    // Stream selection and time range.
    let p = store
        .scan(
            G,
            &Scan {
                streams: Streams::Prefix("c/".into()),
                start: Some(10),
                end: Some(40),
                limit: 100,
                ..Scan::default()
            },
            &|_| true,
        )
        .unwrap();
    assert_eq!(p.events.iter().map(|e| e.timestamp).collect::<Vec<_>>(), [10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40]);
    let p = store
        .scan(G, &Scan { streams: Streams::Named(vec!["b".into(), "zz".into()]), limit: 5, ..Scan::default() }, &|_| {
            true
        })
        .unwrap();
    assert_eq!(msgs(&p.events), ["b 0 ERROR", "b 1 ok", "b 2 ok", "b 3 ok", "b 4 ok"]);
    assert!(p.next.is_some());
    // A scan bounded by bytes ends with a cursor and resumes to the same result.
    let mut after = None;
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let p = store
            .scan(
                G,
                &Scan {
                    required: vec!["ERROR".into()],
                    after: after.clone(),
                    limit: 1000,
                    max_scanned_bytes: Some(500),
                    ..Scan::default()
                },
                &|_| true,
            )
            .unwrap();
        pages += 1;
        paged.extend(p.events.iter().map(|e| e.message.clone()));
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(pages > 1);
    assert_eq!(paged, errors.events.iter().map(|e| e.message.clone()).collect::<Vec<_>>());
}

#[test]
fn expire_hides_at_once_and_reclaims_segments() {
    let (dir, store) = with_stream(small());
    fill(&store, "s", 2_000, 0);
    store.inner.settle();
    let before = store.disk_bytes();
    let reclaimed = store.expire(G, 1_000).unwrap();
    assert!(reclaimed > 0 && reclaimed < before);
    assert_eq!(store.disk_bytes(), before - reclaimed);
    let p = read(&store, "s", None, true, true, 10_000);
    assert_eq!(p.events.len(), 1_000);
    assert_eq!(p.events[0].timestamp, 1_000);
    let s = store.scan(G, &Scan { limit: 10_000, ..Scan::default() }, &|_| true).unwrap();
    assert_eq!(s.events.len(), 1_000);
    drop(store);
    let store = LogStore::open(dir.path(), small()).unwrap();
    assert_eq!(read(&store, "s", None, true, true, 10_000).events.len(), 1_000);
    // Everything expires: next_seq and the last timestamps stay.
    store.expire(G, 1_000_000).unwrap();
    let info = store.stream(G, "s").unwrap();
    assert_eq!((info.next_seq, info.last_event_timestamp, info.first_event_timestamp), (2_000, Some(1_999), None));
    drop(store);
    let store = LogStore::open(dir.path(), small()).unwrap();
    assert_eq!(store.stream(G, "s").unwrap().next_seq, 2_000);
    assert_eq!(store.append(G, "s", &[ev(2_000_000, "new")], None, 1).unwrap().next_seq, 2_001);
}

#[test]
fn disk_budget_drops_oldest_segments_store_wide() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), small()).unwrap();
    store.create_stream(G, "old", 0).unwrap();
    store.create_stream("other", "new", 0).unwrap();
    fill(&store, "old", 2_000, 0);
    let events: Vec<Event> = (0..2_000).map(|i| ev(100_000 + i, &format!("new line {i}"))).collect();
    for c in events.chunks(50) {
        store.append("other", "new", c, None, 1).unwrap();
    }
    let total = store.disk_bytes();
    drop(store);
    let budget = total / 2;
    let store = LogStore::open(dir.path(), Options { disk_budget: Some(budget), segment_bytes: 4096 }).unwrap();
    assert!(store.disk_bytes() <= budget);
    // The old stream lost its oldest events; the newer group kept all.
    let newer = store.read("other", "new", &Read { from_head: true, limit: 10_000, ..Read::default() }).unwrap();
    assert_eq!(newer.events.len(), 2_000);
    let old = read(&store, "old", None, true, true, 10_000);
    assert!(!old.events.is_empty() && old.events.len() < 2_000);
    assert_eq!(old.events.last().unwrap().seq, 1_999);
    assert_eq!(store.stream(G, "old").unwrap().next_seq, 2_000);
}

#[test]
fn delete_stream_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), small()).unwrap();
    store.create_stream(G, "a", 0).unwrap();
    store.create_stream(G, "b", 0).unwrap();
    store.create_stream("g2", "a", 0).unwrap();
    fill(&store, "a", 300, 0);
    fill(&store, "b", 300, 0);
    store.delete_stream(G, "a").unwrap();
    assert!(matches!(store.delete_stream(G, "a"), Err(Error::NoSuchStream { .. })));
    assert!(store.stream(G, "a").is_none());
    assert_eq!(store.streams(G, "").iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["b"]);
    store.create_stream(G, "a", 0).unwrap();
    assert_eq!(store.stream(G, "a").unwrap().next_seq, 0);
    store.delete_group(G).unwrap();
    store.delete_group("never").unwrap();
    assert_eq!(store.groups(), ["g2"]);
    assert!(store.streams(G, "").is_empty());
    assert_eq!(store.stored_bytes(G), 0);
    let left = store.disk_bytes();
    drop(store);
    let store = LogStore::open(dir.path(), small()).unwrap();
    assert_eq!(store.groups(), ["g2"]);
    assert_eq!(store.disk_bytes(), left);
}

#[test]
fn names_with_odd_characters() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    let long = "x/".repeat(256);
    let names = ["ecs/web/0123456789abcdef", "../../etc/passwd", "a#b:c.d", "ünï cødé 🚀", ".", "..", long.as_str()];
    for n in names {
        store.create_stream("/aws/ecs/group.name#1", n, 1).unwrap();
        store.append("/aws/ecs/group.name#1", n, &[ev(1, n)], None, 1).unwrap();
    }
    drop(store);
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    for n in names {
        let p =
            store.read("/aws/ecs/group.name#1", n, &Read { from_head: true, limit: 10, ..Read::default() }).unwrap();
        assert_eq!(msgs(&p.events), [n]);
    }
    let listed: Vec<String> = store.streams("/aws/ecs/group.name#1", "").into_iter().map(|s| s.name).collect();
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    assert_eq!(listed, sorted);
    assert_eq!(store.streams("/aws/ecs/group.name#1", "ecs/").len(), 1);
    assert!(!dir.path().join("etc").exists());
}

#[test]
fn concurrent_appends_to_different_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), small()).unwrap();
    // 900 batches in all: fewer than the tail keeps (1,024), so no receiver lags here.
    let mut rx = store.subscribe();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = store.clone();
            scope.spawn(move || {
                let name = format!("s{t}");
                store.ensure_stream(G, &name, 0).unwrap();
                for i in 0..150 {
                    store.append(G, &name, &[ev(i, &format!("{name} {i}"))], Some(i as u64), 1).unwrap();
                }
            });
        }
        store.ensure_stream(G, "shared", 0).unwrap();
        for t in 0..3 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..100 {
                    store.append(G, "shared", &[ev(i, &format!("{t} {i}")), ev(i, "+")], None, 1).unwrap();
                }
            });
        }
    });
    // Three appenders to one stream (sharing syncs): every event, each batch whole.
    let shared = read(&store, "shared", None, true, true, 10_000).events;
    assert_eq!(shared.len(), 600);
    assert!(shared.iter().enumerate().all(|(i, e)| e.seq == i as u64 && (e.message == "+") == (i % 2 == 1)));
    for t in 0..4 {
        let p = read(&store, &format!("s{t}"), None, true, true, 1000);
        assert_eq!(p.events.len(), 150);
        assert!(p.events.iter().enumerate().all(|(i, e)| e.message == format!("s{t} {i}")));
    }
    let mut n = 0;
    while let Ok(tail) = rx.try_recv() {
        assert_eq!(&*tail.group, G);
        n += tail.events.len();
    }
    assert_eq!(n, 600 + 600);
}

#[test]
fn block_filters_skip_without_losing_matches() {
    let (_dir, store) = with_stream(Options { disk_budget: None, segment_bytes: 256 << 10 });
    let events: Vec<Event> = (0..20_000u64)
        .map(|i| {
            ev(
                i as i64,
                &format!("req={:x} user-{} path=/p/{}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i % 777, i % 13),
            )
        })
        .collect();
    for c in events.chunks(500) {
        store.append(G, "s", c, None, 1).unwrap();
    }
    store.inner.settle();
    for needle in ["user-776 ", "req=0 ", "zz-absent", "path=/p/12", "ab", "user-5 path=/p/0"] {
        let want = events.iter().filter(|e| e.message.contains(needle)).count();
        let page = store
            .scan(G, &Scan { required: vec![needle.into()], limit: 100_000, ..Scan::default() }, &|_| true)
            .unwrap();
        assert_eq!(page.events.len(), want, "{needle}");
        assert!(page.events.iter().all(|e| e.message.contains(needle)));
    }
    // A rare term reads (almost) no block.
    let page =
        store.scan(G, &Scan { required: vec!["zz-absent".into()], limit: 10, ..Scan::default() }, &|_| true).unwrap();
    assert!(page.events.is_empty() && page.next.is_none());
}

#[test]
fn crash_during_a_seal_loses_and_doubles_nothing() {
    let (dir, store) = with_stream(Options { disk_budget: None, segment_bytes: 32 << 10 });
    let wal = {
        store.append(G, "s", &[ev(0, "first")], None, 1).unwrap();
        let wal = wal_of(dir.path());
        let copy = std::fs::read(&wal).unwrap();
        (wal, copy)
    };
    fill(&store, "s", 2_000, 1);
    store.inner.settle();
    assert!(!wal.0.exists(), "sealed by now");
    let before = read(&store, "s", None, true, true, 10_000).events;
    drop(store);
    // As if the seal had renamed its segment into place but not removed the open one yet,
    // and a temporary file of another seal were left half-written.
    std::fs::write(&wal.0, &wal.1).unwrap();
    std::fs::write(wal.0.with_file_name("00000000000007d0.seg.tmp"), b"half").unwrap();
    let store = LogStore::open(dir.path(), Options::default()).unwrap();
    let after = read(&store, "s", None, true, true, 10_000).events;
    assert_eq!(after, before);
    assert_eq!(after.len(), 2_001);
    assert!(!wal.0.exists() && !wal.0.with_file_name("00000000000007d0.seg.tmp").exists());
    assert_eq!(store.stream(G, "s").unwrap().stored_bytes, bytes_on_disk(dir.path()));
}

#[test]
fn the_store_is_shareable_across_threads_and_tasks() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<LogStore>();
}

#[test]
fn big_appends_seal_their_full_blocks_as_written() {
    // Appends of ~300 KiB: full 128 KiB blocks are written ahead compressed with their filters
    // (read and searched from the open segment so) and copied into the sealed segment, the
    // rest of each append is joined with its neighbours.
    let events = log_lines(0, 40_000);
    let raw: usize = events.iter().map(|e| e.message.len()).sum();
    for segment_bytes in [64 << 10, 64 << 20] {
        let (dir, store) = with_stream(Options { disk_budget: None, segment_bytes });
        for c in events.chunks(7_000) {
            store.append(G, "s", c, Some(c[0].timestamp as u64), 1).unwrap();
        }
        store.inner.settle();
        let segs = files_of(dir.path(), "seg").len();
        if segment_bytes < 1 << 20 {
            assert!(segs >= 2, "{segs} sealed segments");
        } else {
            let wal = std::fs::metadata(wal_of(dir.path())).unwrap().len() as usize;
            assert!(segs == 0 && wal < raw / 2, "{segs} sealed segments, {wal} bytes written ahead of {raw}");
        }
        let check = |store: &LogStore| {
            let p = read(store, "s", None, true, true, 100_000);
            assert_eq!(p.events.len(), events.len());
            for (got, want) in p.events.iter().zip(&events) {
                let got = (got.seq, got.timestamp, got.message.as_str());
                assert_eq!(got, (want.timestamp as u64, want.timestamp, want.message.as_str()));
            }
            for needle in ["user-96 ", "event 039999", "zz-absent"] {
                let want = events.iter().filter(|e| e.message.contains(needle)).count();
                let page = store
                    .scan(G, &Scan { required: vec![needle.into()], limit: 100_000, ..Scan::default() }, &|_| true)
                    .unwrap();
                assert_eq!(page.events.len(), want, "{needle}");
            }
        };
        check(&store);
        drop(store);
        check(&LogStore::open(dir.path(), Options { disk_budget: None, segment_bytes }).unwrap());
    }
}
