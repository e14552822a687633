//! The store's state and its operations.
//!
//! Layout under the store's directory:
//! - `groups/g<n>/group`: the group's id and its retention cutoff;
//! - `groups/g<n>/s<m>/meta`: a stream's name, creation time and the numbers that must outlive
//!   its segments (next seq, last timestamps); beside it the stream's segments,
//!   `<first seq>.seg` (sealed) and at most one `<first seq>.wal` (open, see `format`);
//! - `trash/`: directories being deleted (emptied on open).
//!
//! Directories are numbered, never named after a group or stream (names live in the metadata
//! files), so any name is safe. Locks: the group map, then a group's stream map, then a stream.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};

use memchr::memmem;
use tokio::sync::broadcast;

use crate::format::{self, BlockBuilder, BlockMeta, MetaReader, MetaWriter};
use crate::{
    Appended, Cursor, Error, Options, Read, ReadPage, Result, Scan, ScanCursor, ScanPage, StoredEvent, StreamInfo,
    Streams, Tail,
};

/// An appending thread's buffers, kept between its appends: a batch of a megabyte is encoded
/// without allocating (and, once the allocator has given the pages back, faulting in) a
/// megabyte again.
#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    builder: BlockBuilder,
    /// A full block before it is compressed into `buf`, and LZ4's output.
    raw: Vec<u8>,
    lz4: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::default();
}

/// A thread keeps its scratch only up to this size (one odd huge batch is not kept; appends
/// run on the async runtime's blocking threads, which end when idle).
const SCRATCH_KEEP: usize = 2 << 20;

/// Raw bytes of events per block (WAL records are split at this size; sealed blocks cut there).
const BLOCK_TARGET: usize = 128 << 10;
/// A read or scan with `limit: 0` returns at most this many events (AWS's default).
const DEFAULT_LIMIT: usize = 10_000;
const TAIL_CAPACITY: usize = 1024;
const NO_CUTOFF: i64 = i64::MIN;
const STREAM_MAGIC: &[u8; 4] = b"ESLS";
const GROUP_MAGIC: &[u8; 4] = b"ESLG";

pub(crate) struct Inner {
    dir: PathBuf,
    options: Options,
    groups: RwLock<BTreeMap<String, Arc<Group>>>,
    next_dir: AtomicU64,
    pub(crate) disk: AtomicU64,
    pub(crate) tail: broadcast::Sender<Tail>,
    budget: Mutex<()>,
    sealer: Sealer,
}

enum Job {
    Seal(Arc<Stream>),
    #[cfg_attr(not(test), allow(dead_code))]
    Barrier(mpsc::Sender<()>),
}

/// Sealing is background work: the sealer thread runs at the lowest priority (nice 19), so it
/// yields to the server's appenders (open segments are readable and durable meanwhile). Not to
/// containers: with autogroup scheduling (on by default in Debian's kernels) a session is one
/// scheduling group, so a nice value orders threads only within the server's own session,
/// which is weighed against each container's cgroup as a whole. Linux sets a nice value per
/// thread; std has no call for it and nix does not wrap setpriority(2), hence libc.
fn lower_priority() {
    // SAFETY: plain system calls on the calling thread's own id, no pointers.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "log store: could not lower the sealer's priority");
    }
}

/// The thread that seals full open segments, off the appenders' path (and core).
#[derive(Default)]
struct Sealer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Sealer {
    fn start(store: Arc<Inner>) {
        let (tx, rx) = mpsc::channel::<Job>();
        let sealer = &store.sealer;
        let thread = std::thread::Builder::new().name("logstore-sealer".into()).spawn({
            let store = store.clone();
            move || {
                lower_priority();
                // The sealer's buffers, kept from one segment to the next (a few MiB each,
                // which would otherwise be faulted in afresh for every segment).
                let mut buffers = SealBuffers::default();
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Seal(s) => store.seal_frozen(&s, &mut buffers),
                        Job::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            }
        });
        match thread {
            Ok(thread) => {
                *lock(&sealer.tx) = Some(tx);
                *lock(&sealer.thread) = Some(thread);
            }
            // Full segments then stay open (readable, durable) and are sealed on the next start.
            Err(e) => tracing::warn!(error = %e, "log store: could not start the sealer thread"),
        }
    }

    fn seal(&self, s: &Arc<Stream>) {
        if let Some(tx) = &*lock(&self.tx) {
            let _ = tx.send(Job::Seal(s.clone()));
        }
    }

    /// Waits for the seals asked for so far.
    #[cfg(test)]
    fn settle(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(tx) = &*lock(&self.tx) {
            if tx.send(Job::Barrier(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    /// Ends the thread once its current seal is done (pending ones wait for the next start).
    fn stop(&self) {
        lock(&self.tx).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

/// What `LogStore` holds: the store, and the sealer thread to stop when the last clone goes
/// (the thread holds the store too, so the store alone would never go).
pub(crate) struct Handle(Arc<Inner>);

impl std::ops::Deref for Handle {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.sealer.stop();
    }
}

struct Group {
    id: Arc<str>,
    dir: PathBuf,
    /// Events older than this are hidden (retention); `NO_CUTOFF`: none.
    cutoff: AtomicI64,
    deleted: AtomicBool,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
}

struct Stream {
    name: Arc<str>,
    dir: PathBuf,
    state: Mutex<State>,
}

struct Seg {
    first_seq: u64,
    path: Arc<PathBuf>,
    blocks: Arc<[BlockMeta]>,
    bytes: u64,
    max_ts: i64,
}

/// An open segment's file and its group commit: appenders write under the stream's lock and
/// sync outside it, and one sync covers every write made before it started.
struct WalFile {
    file: File,
    written: AtomicU64,
    synced: Mutex<u64>,
}

impl WalFile {
    fn new(file: File, len: u64) -> Arc<WalFile> {
        Arc::new(WalFile { file, written: AtomicU64::new(len), synced: Mutex::new(len) })
    }

    /// Returns once every byte before `end` is on disk.
    fn sync_to(&self, end: u64) -> std::io::Result<()> {
        let mut synced = lock(&self.synced);
        if *synced >= end {
            return Ok(());
        }
        let target = self.written.load(Ordering::Acquire);
        self.file.sync_data()?;
        *synced = target.max(*synced);
        Ok(())
    }
}

struct Wal {
    first_seq: u64,
    path: PathBuf,
    file: Arc<WalFile>,
    len: u64,
    blocks: Vec<BlockMeta>,
}

struct State {
    creation_time: i64,
    /// What the metadata file says (what survives when every segment is gone).
    floor_seq: u64,
    floor_last_ts: Option<i64>,
    floor_last_ingest: Option<i64>,
    segs: Vec<Seg>,
    /// Full open segments waiting for the sealer (readable meanwhile), oldest first.
    frozen: Vec<Wal>,
    wal: Option<Wal>,
    next_seq: u64,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    last_ingest: Option<i64>,
    /// Bytes on disk: segments, the open segment and the metadata file.
    bytes: u64,
    meta_bytes: u64,
    deleted: bool,
}

#[derive(Clone)]
enum Src {
    Wal(Arc<WalFile>),
    Seg(Arc<PathBuf>),
}

#[derive(Clone, Copy)]
enum SrcRef<'a> {
    Wal(&'a Arc<WalFile>),
    Seg(&'a Arc<PathBuf>),
}

impl SrcRef<'_> {
    fn get(self) -> Src {
        match self {
            SrcRef::Wal(f) => Src::Wal(f.clone()),
            SrcRef::Seg(p) => Src::Seg(p.clone()),
        }
    }
}

#[derive(Clone)]
struct Cand {
    stream: Arc<str>,
    src: Src,
    meta: BlockMeta,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn rlock<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn wlock<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Writes `bytes` to `dir/name` atomically (temporary file, sync, rename, sync the directory).
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn no_stream(group: &str, stream: &str) -> Error {
    Error::NoSuchStream { group: group.to_owned(), stream: stream.to_owned() }
}

fn numbered(name: &str, prefix: char) -> Option<u64> {
    name.strip_prefix(prefix)?.parse().ok()
}

impl State {
    /// An empty stream's state.
    fn new(creation_time: i64) -> State {
        State {
            creation_time,
            floor_seq: 0,
            floor_last_ts: None,
            floor_last_ingest: None,
            segs: Vec::new(),
            frozen: Vec::new(),
            wal: None,
            next_seq: 0,
            first_ts: None,
            last_ts: None,
            last_ingest: None,
            bytes: 0,
            meta_bytes: 0,
            deleted: false,
        }
    }

    fn meta_file(&self, name: &str) -> Vec<u8> {
        let mut w = MetaWriter::new(STREAM_MAGIC);
        w.i64(self.creation_time)
            .i64(self.next_seq as i64)
            .opt(self.last_ts)
            .opt(self.last_ingest)
            .bytes(name.as_bytes());
        w.finish()
    }

    /// Persists the numbers that must outlive the segments about to go.
    fn persist_floor(&mut self, dir: &Path, name: &str) -> Result<()> {
        let meta = self.meta_file(name);
        write_atomic(dir, "meta", &meta)?;
        self.floor_seq = self.next_seq;
        self.floor_last_ts = self.last_ts;
        self.floor_last_ingest = self.last_ingest;
        self.bytes = self.bytes - self.meta_bytes + meta.len() as u64;
        self.meta_bytes = meta.len() as u64;
        Ok(())
    }

    fn blocks(&self) -> impl Iterator<Item = &BlockMeta> {
        self.segs.iter().flat_map(|s| s.blocks.iter()).chain(self.open_wals().flat_map(|w| w.blocks.iter()))
    }

    /// The unsealed segments, oldest first.
    fn open_wals(&self) -> impl DoubleEndedIterator<Item = &Wal> {
        self.frozen.iter().chain(self.wal.iter())
    }

    fn recompute(&mut self) {
        let (mut first, mut last, mut ingest, mut next) =
            (None::<i64>, self.floor_last_ts, self.floor_last_ingest, self.floor_seq);
        for b in self.blocks() {
            first = Some(first.map_or(b.min_ts, |f| f.min(b.min_ts)));
            last = Some(last.map_or(b.max_ts, |l| l.max(b.max_ts)));
            ingest = Some(ingest.map_or(b.max_ingest, |l| l.max(b.max_ingest)));
            next = next.max(b.end_seq());
        }
        self.first_ts = first;
        self.last_ts = last;
        self.last_ingest = ingest;
        self.next_seq = next;
        self.bytes = self.meta_bytes
            + self.segs.iter().map(|s| s.bytes).sum::<u64>()
            + self.open_wals().map(|w| w.len).sum::<u64>();
    }

    fn info(&self, name: &str) -> StreamInfo {
        StreamInfo {
            name: name.to_owned(),
            creation_time: self.creation_time,
            first_event_timestamp: self.first_ts,
            last_event_timestamp: self.last_ts,
            last_ingestion_time: self.last_ingest,
            stored_bytes: self.bytes,
            next_seq: self.next_seq,
        }
    }

    /// The stream's blocks by segment, in stream order, with where to read them.
    fn block_groups(&self) -> impl DoubleEndedIterator<Item = (&[BlockMeta], SrcRef<'_>)> + '_ {
        let segs = self.segs.iter().map(|s| (&s.blocks[..], SrcRef::Seg(&s.path)));
        segs.chain(self.open_wals().map(|w| (&w.blocks[..], SrcRef::Wal(&w.file))))
    }

    /// Every block that may hold events with timestamps in `lo..=hi`.
    fn candidates(&self, stream: &Arc<str>, lo: i64, hi: i64, out: &mut Vec<Cand>) {
        for (blocks, src) in self.block_groups() {
            let keep = blocks.iter().filter(|b| b.max_ts >= lo && b.min_ts <= hi);
            out.extend(keep.map(|b| Cand { stream: stream.clone(), src: src.get(), meta: *b }));
        }
    }

    /// The blocks from `pos` on (`forward`) or before it that may hold events with timestamps
    /// in `lo..=hi`, in that direction, until they hold `want` events; returns where to go on
    /// from if more may be needed (`None`: the stream's end was reached).
    #[allow(clippy::too_many_arguments)]
    fn candidates_from(
        &self,
        stream: &Arc<str>,
        lo: i64,
        hi: i64,
        pos: u64,
        forward: bool,
        want: u64,
        out: &mut Vec<Cand>,
    ) -> Option<u64> {
        let mut held = 0u64;
        let mut visit = |src: &SrcRef<'_>, b: &BlockMeta| {
            if b.max_ts >= lo && b.min_ts <= hi {
                out.push(Cand { stream: stream.clone(), src: src.get(), meta: *b });
                held += u64::from(b.count);
            }
            held >= want
        };
        if forward {
            for (blocks, src) in self.block_groups() {
                if blocks.last().is_none_or(|b| b.end_seq() <= pos) {
                    continue;
                }
                let start = blocks.partition_point(|b| b.end_seq() <= pos);
                for b in &blocks[start..] {
                    if visit(&src, b) {
                        return Some(b.end_seq());
                    }
                }
            }
        } else {
            for (blocks, src) in self.block_groups().rev() {
                if blocks.first().is_none_or(|b| b.first_seq >= pos) {
                    continue;
                }
                let end = blocks.partition_point(|b| b.first_seq < pos);
                for b in blocks[..end].iter().rev() {
                    if visit(&src, b) {
                        return Some(b.first_seq);
                    }
                }
            }
        }
        None
    }
}

/// The sealed segment at `p`, from `cur` when it is the one open there; `None` when it is gone.
fn open_cached<'a>(cur: &'a mut Option<(Arc<PathBuf>, File)>, p: &Arc<PathBuf>) -> Result<Option<&'a File>> {
    if cur.as_ref().is_none_or(|(q, _)| !Arc::ptr_eq(q, p)) {
        match File::open(&**p) {
            Ok(f) => *cur = Some((p.clone(), f)),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(cur.as_ref().map(|(_, f)| f))
}

/// Reads blocks, keeping the last sealed segment open and its buffers.
#[derive(Default)]
struct BlockReader {
    cur: Option<(Arc<PathBuf>, File)>,
    scratch: Vec<u8>,
    buf: Vec<u8>,
}

impl BlockReader {
    /// Whether the block may hold the needles whose filter `bits` are given (raw blocks of an
    /// open segment have no filter); `None` when its segment is gone.
    fn admits(&mut self, c: &Cand, bits: &[u32]) -> Result<Option<bool>> {
        if bits.is_empty() {
            return Ok(Some(true));
        }
        let f = match &c.src {
            Src::Seg(p) => match open_cached(&mut self.cur, p)? {
                Some(f) => f,
                None => return Ok(None),
            },
            Src::Wal(f) if c.meta.compressed_in_wal() => &f.file,
            Src::Wal(_) => return Ok(Some(true)),
        };
        format::filter_admits(f, &c.meta, bits, &mut self.scratch).map(Some)
    }

    /// The block's raw bytes; `None` when its segment is gone (expired or over the budget).
    fn load(&mut self, c: &Cand) -> Result<Option<&[u8]>> {
        match &c.src {
            Src::Wal(f) => {
                format::read_block(&f.file, &c.meta, c.meta.compressed_in_wal(), &mut self.scratch, &mut self.buf)?
            }
            Src::Seg(p) => {
                let Some(f) = open_cached(&mut self.cur, p)? else { return Ok(None) };
                format::read_block(f, &c.meta, true, &mut self.scratch, &mut self.buf)?;
            }
        }
        Ok(Some(&self.buf))
    }
}

/// Builds a sealed segment from an open segment's bytes and records into `out`. A record that
/// is a full block already (appends cut their events at [`BLOCK_TARGET`]) is copied when it was
/// written compressed, sealed as written otherwise, its CRC checked either way; smaller ones
/// are decoded and joined into blocks of that size, up to the next full one (so the tail of
/// each large append makes a smaller block of its own: about one block in eight with the
/// agent's 1 MiB batches, for not decoding the other seven).
fn build_segment(wal: &[u8], records: &[BlockMeta], out: &mut Vec<u8>, lz4: &mut Vec<u8>) -> Result<Vec<BlockMeta>> {
    out.clear();
    out.extend_from_slice(format::SEG_MAGIC);
    let mut metas = Vec::new();
    let mut builder = BlockBuilder::default();
    let mut raw = Vec::with_capacity(BLOCK_TARGET + 4096);
    let (mut block_first, mut expect) = (0u64, u64::MAX);
    let mut flush =
        |builder: &mut BlockBuilder, first: u64, out: &mut Vec<u8>, lz4: &mut Vec<u8>, metas: &mut Vec<BlockMeta>| {
            if builder.count() > 0 {
                raw.clear();
                let meta = builder.finish(first, &mut raw);
                metas.push(format::seal_block(meta, &raw, out, lz4)?);
            }
            Ok::<(), Error>(())
        };
    for r in records {
        if r.compressed_in_wal() {
            // Compressed as it is sealed, its filter after it: copied.
            let sealed = wal.get(r.offset as usize..r.offset as usize + r.len as usize + format::FILTER_LEN);
            let Some(sealed) = sealed.filter(|b| crc32fast::hash(&b[..r.len as usize]) == r.crc) else {
                return Err(Error::Corrupt(format!("open segment block at {} fails its checksum", r.offset)));
            };
            flush(&mut builder, block_first, out, lz4, &mut metas)?;
            let at = out.len();
            out.extend_from_slice(sealed);
            metas.push(BlockMeta { offset: at as u64, ..*r });
            expect = u64::MAX;
            continue;
        }
        let block = &wal[r.offset as usize..r.offset as usize + r.len as usize];
        if r.len as usize >= BLOCK_TARGET {
            if !format::wal_record_intact(wal, r) {
                return Err(Error::Corrupt(format!(
                    "open segment record at {} changed since it was written",
                    r.offset
                )));
            }
            flush(&mut builder, block_first, out, lz4, &mut metas)?;
            metas.push(format::seal_block(*r, block, out, lz4)?);
            // The next record starts a block of its own.
            expect = u64::MAX;
            continue;
        }
        let d = format::decode_block(block, r.count as usize)?;
        if r.first_seq != expect {
            flush(&mut builder, block_first, out, lz4, &mut metas)?;
            block_first = r.first_seq;
        }
        for i in 0..r.count as usize {
            if builder.raw_len() >= BLOCK_TARGET {
                flush(&mut builder, block_first, out, lz4, &mut metas)?;
                block_first = r.first_seq + i as u64;
            }
            builder.push(d.ts[i], d.ingest[i], d.message(i).as_bytes());
        }
        expect = r.end_seq();
    }
    flush(&mut builder, block_first, out, lz4, &mut metas)?;
    format::finish_segment(&metas, out);
    Ok(metas)
}

impl Inner {
    pub(crate) fn open(dir: &Path, options: Options) -> Result<Handle> {
        let groups_dir = dir.join("groups");
        fs::create_dir_all(&groups_dir)?;
        let trash = dir.join("trash");
        if trash.exists() {
            fs::remove_dir_all(&trash)?;
        }
        fs::create_dir_all(&trash)?;
        let mut max_dir = 0u64;
        let mut disk = 0u64;
        let mut groups = BTreeMap::new();
        for entry in fs::read_dir(&groups_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(".tmp") {
                fs::remove_dir_all(&path)?;
                continue;
            }
            let Some(n) = numbered(&name, 'g') else { continue };
            max_dir = max_dir.max(n);
            let (id, cutoff) = match fs::read(path.join("group")).map_err(Error::from).and_then(|b| {
                let mut r = MetaReader::new(&b, GROUP_MAGIC)?;
                let cutoff = r.i64()?;
                Ok((String::from_utf8_lossy(r.bytes()?).into_owned(), cutoff))
            }) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "log store: skipping a group directory without readable metadata");
                    continue;
                }
            };
            let mut streams = BTreeMap::new();
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                let sname = entry.file_name().to_string_lossy().into_owned();
                let spath = entry.path();
                if sname.ends_with(".tmp") && spath.is_dir() {
                    fs::remove_dir_all(&spath)?;
                    continue;
                }
                let Some(n) = numbered(&sname, 's') else { continue };
                max_dir = max_dir.max(n);
                match load_stream(&spath) {
                    Ok((name, state)) => {
                        disk += state.bytes;
                        let name: Arc<str> = name.into();
                        streams
                            .insert(name.to_string(), Arc::new(Stream { name, dir: spath, state: Mutex::new(state) }));
                    }
                    Err(e) => {
                        tracing::warn!(dir = %spath.display(), error = %e, "log store: skipping an unreadable stream")
                    }
                }
            }
            let group = Group {
                id: id.as_str().into(),
                dir: path,
                cutoff: AtomicI64::new(cutoff),
                deleted: AtomicBool::new(false),
                streams: RwLock::new(streams),
            };
            groups.insert(id, Arc::new(group));
        }
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            options,
            groups: RwLock::new(groups),
            next_dir: AtomicU64::new(max_dir + 1),
            disk: AtomicU64::new(disk),
            tail: broadcast::channel(TAIL_CAPACITY).0,
            budget: Mutex::new(()),
            sealer: Sealer::default(),
        });
        Sealer::start(inner.clone());
        inner.enforce_budget();
        Ok(Handle(inner))
    }

    #[cfg(test)]
    pub(crate) fn settle(&self) {
        self.sealer.settle();
    }

    fn group(&self, group: &str) -> Option<Arc<Group>> {
        rlock(&self.groups).get(group).cloned()
    }

    fn find(&self, group: &str, stream: &str) -> Result<(Arc<Group>, Arc<Stream>)> {
        let g = self.group(group).ok_or_else(|| no_stream(group, stream))?;
        let s = rlock(&g.streams).get(stream).cloned().ok_or_else(|| no_stream(group, stream))?;
        Ok((g, s))
    }

    fn write_group_meta(dir: &Path, id: &str, cutoff: i64) -> Result<()> {
        let mut w = MetaWriter::new(GROUP_MAGIC);
        w.i64(cutoff).bytes(id.as_bytes());
        write_atomic(dir, "group", &w.finish())
    }

    fn group_or_create(&self, group: &str) -> Result<Arc<Group>> {
        if let Some(g) = self.group(group) {
            return Ok(g);
        }
        let mut groups = wlock(&self.groups);
        if let Some(g) = groups.get(group) {
            return Ok(g.clone());
        }
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let parent = self.dir.join("groups");
        let tmp = parent.join(format!("g{n}.tmp"));
        fs::create_dir(&tmp)?;
        Self::write_group_meta(&tmp, group, NO_CUTOFF)?;
        let dir = parent.join(format!("g{n}"));
        fs::rename(&tmp, &dir)?;
        sync_dir(&parent)?;
        let g = Arc::new(Group {
            id: group.into(),
            dir,
            cutoff: AtomicI64::new(NO_CUTOFF),
            deleted: AtomicBool::new(false),
            streams: RwLock::default(),
        });
        groups.insert(group.to_owned(), g.clone());
        Ok(g)
    }

    /// Creates the stream; false when it existed.
    pub(crate) fn create_stream(&self, group: &str, stream: &str, now: i64) -> Result<bool> {
        loop {
            if self.find(group, stream).is_ok() {
                return Ok(false);
            }
            let g = self.group_or_create(group)?;
            let mut streams = wlock(&g.streams);
            if g.deleted.load(Ordering::Relaxed) {
                continue; // deleted meanwhile: make it again
            }
            if streams.contains_key(stream) {
                return Ok(false);
            }
            let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
            let tmp = g.dir.join(format!("s{n}.tmp"));
            fs::create_dir(&tmp)?;
            let mut state = State::new(now);
            state.persist_floor(&tmp, stream)?;
            let dir = g.dir.join(format!("s{n}"));
            fs::rename(&tmp, &dir)?;
            sync_dir(&g.dir)?;
            self.disk.fetch_add(state.bytes, Ordering::Relaxed);
            streams.insert(stream.to_owned(), Arc::new(Stream { name: stream.into(), dir, state: Mutex::new(state) }));
            return Ok(true);
        }
    }

    /// Moves a directory to the trash (atomically gone) and removes it.
    fn remove_dir(&self, dir: &Path) -> Result<()> {
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let to = self.dir.join("trash").join(n.to_string());
        fs::rename(dir, &to)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        // Gone already; what is left in the trash goes on the next start.
        if let Err(e) = fs::remove_dir_all(&to) {
            tracing::warn!(dir = %to.display(), error = %e, "log store: could not empty a deleted directory");
        }
        Ok(())
    }

    /// Marks a stream deleted (whoever holds it finds it gone) and drops its bytes.
    fn forget(&self, s: &Stream) {
        let mut st = lock(&s.state);
        st.deleted = true;
        self.disk.fetch_sub(st.bytes, Ordering::Relaxed);
        st.wal = None;
        st.frozen.clear();
        st.segs.clear();
    }

    pub(crate) fn delete_stream(&self, group: &str, stream: &str) -> Result<()> {
        let g = self.group(group).ok_or_else(|| no_stream(group, stream))?;
        let s = wlock(&g.streams).remove(stream).ok_or_else(|| no_stream(group, stream))?;
        self.forget(&s);
        self.remove_dir(&s.dir)
    }

    pub(crate) fn delete_group(&self, group: &str) -> Result<()> {
        let Some(g) = wlock(&self.groups).remove(group) else { return Ok(()) };
        let mut streams = wlock(&g.streams);
        g.deleted.store(true, Ordering::Relaxed);
        for s in std::mem::take(&mut *streams).into_values() {
            self.forget(&s);
        }
        drop(streams);
        self.remove_dir(&g.dir)
    }

    pub(crate) fn groups(&self) -> Vec<String> {
        rlock(&self.groups).iter().filter(|(_, g)| !rlock(&g.streams).is_empty()).map(|(id, _)| id.clone()).collect()
    }

    pub(crate) fn stream_info(&self, group: &str, stream: &str) -> Option<StreamInfo> {
        let (_, s) = self.find(group, stream).ok()?;
        let st = lock(&s.state);
        (!st.deleted).then(|| st.info(&s.name))
    }

    pub(crate) fn streams(&self, group: &str, prefix: &str) -> Vec<StreamInfo> {
        let Some(g) = self.group(group) else { return Vec::new() };
        let streams: Vec<Arc<Stream>> = rlock(&g.streams)
            .range(prefix.to_owned()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .map(|(_, s)| s.clone())
            .collect();
        streams
            .iter()
            .filter_map(|s| {
                let st = lock(&s.state);
                (!st.deleted).then(|| st.info(&s.name))
            })
            .collect()
    }

    pub(crate) fn stored_bytes(&self, group: &str) -> u64 {
        let Some(g) = self.group(group) else { return 0 };
        let streams: Vec<Arc<Stream>> = rlock(&g.streams).values().cloned().collect();
        streams.iter().map(|s| lock(&s.state).bytes).sum()
    }

    pub(crate) fn append<'a, I>(
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
        let (g, s) = self.find(group, stream)?;
        let mut st = lock(&s.state);
        if st.deleted {
            return Err(no_stream(group, stream));
        }
        let (first_seq, skip) = match seq {
            Some(q) if q < st.next_seq => {
                (st.next_seq, usize::try_from(st.next_seq - q).unwrap_or(usize::MAX).min(events.len()))
            }
            Some(q) => (q, 0),
            None => (st.next_seq, 0),
        };
        let mut events = events;
        if skip > 0 {
            events.nth(skip - 1);
        }
        let count = events.len();
        if count == 0 {
            // Nothing new; still, what was written must be on disk before saying so (a retry
            // after a failed sync lands here).
            let sync = st.open_wals().last().map(|w| (w.file.clone(), w.len));
            let next_seq = st.next_seq;
            drop(st);
            if let Some((file, end)) = sync {
                file.sync_to(end)?;
            }
            return Ok(Appended { stored: 0, duplicates: skip, next_seq });
        }
        // Encode: one record per ~block of events.
        let wal_len = st.wal.as_ref().map_or(0, |w| w.len);
        let mut scratch = SCRATCH.take();
        let Scratch { buf, builder, raw, lz4 } = &mut scratch;
        buf.clear();
        buf.reserve(events.clone().map(|(_, m)| m.len() + 8).sum::<usize>() + 128);
        let mut metas = Vec::new();
        let mut block_first = first_seq;
        // Columns first, then each message copied once, straight into the record (a full
        // block into `raw`, compressed from there while it is in the cache: what the open
        // segment then writes, syncs and the sealer reads back is the compressed block).
        let mut messages = events.clone().map(|(_, m)| m.as_bytes());
        for (i, (ts, message)) in events.clone().enumerate() {
            builder.column(ts, now, message.len());
            let full = builder.raw_len() >= BLOCK_TARGET;
            if full || i + 1 == count {
                let n = (first_seq + i as u64 + 1 - block_first) as usize;
                let msgs = messages.by_ref().take(n);
                metas.push(if full {
                    raw.clear();
                    let meta = builder.finish_raw(block_first, msgs, raw);
                    format::wal_record(meta, raw, buf, wal_len, lz4)?
                } else {
                    builder.finish_record(block_first, msgs, buf, wal_len)
                });
                block_first = first_seq + i as u64 + 1;
            }
        }
        if st.wal.is_none() {
            let path = s.dir.join(format!("{first_seq:016x}.wal"));
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
            sync_dir(&s.dir)?;
            st.wal = Some(Wal { first_seq, path, file: WalFile::new(file, 0), len: 0, blocks: Vec::new() });
        }
        let wal = st.wal.as_mut().expect("made above");
        if let Err(e) = wal.file.file.write_all_at(buf, wal.len) {
            let _ = wal.file.file.set_len(wal.len);
            return Err(e.into());
        }
        wal.len += buf.len() as u64;
        wal.file.written.store(wal.len, Ordering::Release);
        wal.blocks.extend_from_slice(&metas);
        let sync = (wal.file.clone(), wal.len);
        let wal_full = wal.len >= self.options.segment_bytes;
        st.bytes += buf.len() as u64;
        self.disk.fetch_add(buf.len() as u64, Ordering::Relaxed);
        st.next_seq = first_seq + count as u64;
        for m in &metas {
            st.first_ts = Some(st.first_ts.map_or(m.min_ts, |f| f.min(m.min_ts)));
            st.last_ts = Some(st.last_ts.map_or(m.max_ts, |l| l.max(m.max_ts)));
        }
        st.last_ingest = Some(st.last_ingest.map_or(now, |l| l.max(now)));
        let appended = Appended { stored: count, duplicates: skip, next_seq: st.next_seq };
        // (`raw` holds one block: over the limit only when the store is handed an event larger
        // than the Logs API and the shipper allow.)
        if buf.capacity() <= SCRATCH_KEEP && raw.capacity() <= SCRATCH_KEEP {
            SCRATCH.set(scratch);
        }
        if wal_full {
            let full = st.wal.take().expect("written above");
            st.frozen.push(full);
            self.sealer.seal(&s);
        }
        // Live tail in append order (before the sync: a tail may show what a crash then loses).
        if self.tail.receiver_count() > 0 {
            let events: Arc<[StoredEvent]> = events
                .enumerate()
                .map(|(i, (timestamp, message))| StoredEvent {
                    stream: s.name.clone(),
                    seq: first_seq + i as u64,
                    timestamp,
                    ingestion_time: now,
                    message: message.to_owned(),
                })
                .collect();
            let _ = self.tail.send(Tail { group: g.id.clone(), events });
        }
        drop(st);
        sync.0.sync_to(sync.1)?;
        Ok(appended)
    }

    /// Seals a stream's full open segments (on the sealer thread): compresses each into a
    /// sealed segment without holding the stream's lock, then swaps it in.
    fn seal_frozen(&self, s: &Stream, buffers: &mut SealBuffers) {
        loop {
            let (first_seq, file, blocks, len, path) = {
                let st = lock(&s.state);
                let Some(w) = st.frozen.first().filter(|_| !st.deleted) else { break };
                (w.first_seq, w.file.clone(), w.blocks.clone(), w.len, w.path.clone())
            };
            let seg = match write_sealed(&s.dir, first_seq, &file.file, len, &blocks, buffers) {
                Ok(seg) => seg,
                Err(e) => {
                    tracing::warn!(stream = %s.name, error = %e, "log store: sealing a segment failed; it stays open until the next start");
                    break;
                }
            };
            let mut st = lock(&s.state);
            if st.deleted || st.frozen.first().is_none_or(|w| w.first_seq != first_seq) {
                let _ = fs::remove_file(&*seg.path);
                break;
            }
            // The sealed segment is synced: the open one is redundant (open() drops it too).
            *lock(&file.synced) = len;
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "log store: could not remove a sealed open segment");
            }
            st.frozen.remove(0);
            let seg_len = seg.bytes;
            st.segs.push(seg);
            st.segs.sort_by_key(|s| s.first_seq);
            st.bytes = st.bytes - len + seg_len;
            self.disk.fetch_add(seg_len, Ordering::Relaxed);
            self.disk.fetch_sub(len, Ordering::Relaxed);
            tracing::debug!(stream = %s.name, written = len, sealed = seg_len, "log store: sealed a segment");
        }
        self.enforce_budget();
    }

    pub(crate) fn read(&self, group: &str, stream: &str, r: &Read) -> Result<ReadPage> {
        let (g, s) = self.find(group, stream)?;
        let lo = r.start.unwrap_or(i64::MIN).max(g.cutoff.load(Ordering::Relaxed));
        let hi = r.end.map_or(i64::MAX, |e| e.saturating_sub(1));
        let limit = if r.limit == 0 { DEFAULT_LIMIT } else { r.limit };
        let (forward, pos) = match r.cursor {
            Some(c) => (r.forward, c.0),
            None if r.from_head => (true, 0),
            None => (false, lock(&s.state).next_seq),
        };
        let mut reader = BlockReader::default();
        let mut events = Vec::new();
        let take_block = |c: &Cand, events: &mut Vec<StoredEvent>, reader: &mut BlockReader| -> Result<()> {
            let Some(raw) = reader.load(c)? else { return Ok(()) };
            let d = format::decode_block(raw, c.meta.count as usize)?;
            let mut add = |i: usize| {
                let seq = c.meta.first_seq + i as u64;
                let ts = d.ts[i];
                if ts >= lo && ts <= hi && (if forward { seq >= pos } else { seq < pos }) {
                    events.push(StoredEvent {
                        stream: s.name.clone(),
                        seq,
                        timestamp: ts,
                        ingestion_time: d.ingest[i],
                        message: d.message(i).to_owned(),
                    });
                }
            };
            if forward {
                (0..c.meta.count as usize).for_each(&mut add);
            } else {
                (0..c.meta.count as usize).rev().for_each(&mut add);
            }
            Ok(())
        };
        // Only the blocks the page needs, a few at a time (cheap at either end of a stream).
        let mut at = pos;
        let mut cands = Vec::new();
        loop {
            cands.clear();
            let next = {
                let st = lock(&s.state);
                if st.deleted {
                    return Err(no_stream(group, stream));
                }
                st.candidates_from(&s.name, lo, hi, at, forward, (limit - events.len()) as u64, &mut cands)
            };
            for c in &cands {
                take_block(c, &mut events, &mut reader)?;
                if events.len() >= limit {
                    break;
                }
            }
            match next {
                Some(next) if events.len() < limit => at = next,
                _ => break,
            }
        }
        events.truncate(limit);
        if !forward {
            events.reverse();
        }
        let backward = events.first().map_or(Cursor(pos), |e| Cursor(e.seq));
        let forward = events.last().map_or(Cursor(pos), |e| Cursor(e.seq + 1));
        Ok(ReadPage { events, backward, forward })
    }

    pub(crate) fn scan(&self, group: &str, scan: &Scan, matches: &(dyn Fn(&str) -> bool + Sync)) -> Result<ScanPage> {
        let Some(g) = self.group(group) else { return Ok(ScanPage::default()) };
        let lo = scan
            .start
            .unwrap_or(i64::MIN)
            .max(g.cutoff.load(Ordering::Relaxed))
            .max(scan.after.as_ref().map_or(i64::MIN, |a| a.timestamp));
        let hi = scan.end.unwrap_or(i64::MAX);
        let limit = if scan.limit == 0 { DEFAULT_LIMIT } else { scan.limit };
        let streams: Vec<Arc<Stream>> = {
            let map = rlock(&g.streams);
            match &scan.streams {
                Streams::All => map.values().cloned().collect(),
                Streams::Named(names) => {
                    let mut v: Vec<Arc<Stream>> = names.iter().filter_map(|n| map.get(n).cloned()).collect();
                    v.sort_by(|a, b| a.name.cmp(&b.name));
                    v.dedup_by(|a, b| a.name == b.name);
                    v
                }
                Streams::Prefix(p) => map
                    .range(p.clone()..)
                    .take_while(|(n, _)| n.starts_with(p.as_str()))
                    .map(|(_, s)| s.clone())
                    .collect(),
            }
        };
        let mut cands = Vec::new();
        for s in &streams {
            let st = lock(&s.state);
            if !st.deleted {
                st.candidates(&s.name, lo, hi, &mut cands);
            }
        }
        cands.sort_by(|a, b| {
            (a.meta.min_ts, &a.stream, a.meta.first_seq).cmp(&(b.meta.min_ts, &b.stream, b.meta.first_seq))
        });
        let ctx = ScanCtx {
            lo,
            hi,
            after: scan.after.as_ref(),
            finders: scan
                .required
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| memmem::Finder::new(r.as_bytes()))
                .collect(),
            filter_bits: format::filter_bits(scan.required.iter().map(|r| r.as_bytes())),
            matches,
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let key = |e: &StoredEvent| (e.timestamp, e.stream.clone(), e.seq);
        let mut found: Vec<StoredEvent> = Vec::new();
        // Whether matches beyond the first `limit` were dropped.
        let mut more = false;
        let mut page = ScanPage::default();
        let mut i = 0;
        let mut wave = threads * 2;
        loop {
            let end = (i + wave).min(cands.len());
            let results = scan_wave(&cands[i..end], &ctx, threads)?;
            for (events, bytes, n) in results {
                found.extend(events);
                page.scanned_bytes += bytes;
                page.scanned_events += n;
            }
            i = end;
            wave = (wave * 2).min(256);
            found.sort_by_key(key);
            // Later blocks can only push these out of the first `limit`, never bring them back.
            if found.len() > limit {
                found.truncate(limit);
                more = true;
            }
            // Events below the boundary are final: no unread block holds an earlier one.
            let boundary = cands.get(i).map(|c| c.meta.min_ts);
            let done = found.iter().take_while(|e| boundary.is_none_or(|b| e.timestamp < b)).count();
            if done >= limit || (boundary.is_none() && more) {
                let exhausted = boundary.is_none() && !more;
                page.next = found.last().filter(|_| !exhausted).map(|e| ScanCursor {
                    timestamp: e.timestamp,
                    stream: e.stream.to_string(),
                    seq: e.seq,
                });
                break;
            }
            let Some(boundary) = boundary else {
                page.next = None;
                break;
            };
            let over = scan.max_scanned_bytes.is_some_and(|m| page.scanned_bytes >= m);
            // Stop only where the cursor moves on (so paging always progresses).
            if over && boundary.saturating_sub(1) > scan.after.as_ref().map_or(i64::MIN, |a| a.timestamp) {
                found.truncate(done);
                // After every event before the boundary (no stream name sorts after U+10FFFF).
                page.next = Some(ScanCursor { timestamp: boundary - 1, stream: char::MAX.to_string(), seq: u64::MAX });
                break;
            }
        }
        page.events = found;
        Ok(page)
    }

    pub(crate) fn expire(&self, group: &str, before: i64) -> Result<u64> {
        let Some(g) = self.group(group) else { return Ok(0) };
        let streams: Vec<Arc<Stream>> = {
            let streams = rlock(&g.streams);
            if g.deleted.load(Ordering::Relaxed) {
                return Ok(0);
            }
            if g.cutoff.load(Ordering::Relaxed) != before {
                Self::write_group_meta(&g.dir, &g.id, before)?;
                g.cutoff.store(before, Ordering::Relaxed);
            }
            streams.values().cloned().collect()
        };
        let mut reclaimed = 0;
        for s in streams {
            let mut st = lock(&s.state);
            if st.deleted {
                continue;
            }
            let dead_segs = st.segs.iter().filter(|seg| seg.max_ts < before).count();
            let dead = |w: &Wal| w.blocks.iter().all(|b| b.max_ts < before);
            let dead_wal = st.open_wals().any(dead);
            if dead_segs == 0 && !dead_wal {
                continue;
            }
            st.persist_floor(&s.dir, &s.name)?;
            let before_bytes = st.bytes;
            let mut kept = Vec::new();
            for seg in std::mem::take(&mut st.segs) {
                if seg.max_ts < before {
                    fs::remove_file(&*seg.path)?;
                } else {
                    kept.push(seg);
                }
            }
            st.segs = kept;
            if st.wal.as_ref().is_some_and(dead) {
                if let Some(w) = st.wal.take() {
                    fs::remove_file(&w.path)?;
                }
            }
            for w in std::mem::take(&mut st.frozen) {
                if dead(&w) {
                    fs::remove_file(&w.path)?;
                } else {
                    st.frozen.push(w);
                }
            }
            st.recompute();
            let freed = before_bytes - st.bytes;
            self.disk.fetch_sub(freed, Ordering::Relaxed);
            reclaimed += freed;
        }
        if reclaimed > 0 {
            tracing::info!(group, reclaimed, "log store: retention reclaimed segments");
        }
        Ok(reclaimed)
    }

    /// Drops the oldest sealed segments of the whole store while it is over its budget.
    fn enforce_budget(&self) {
        let Some(budget) = self.options.disk_budget else { return };
        if self.disk.load(Ordering::Relaxed) <= budget {
            return;
        }
        let _one = lock(&self.budget);
        let mut all = Vec::new();
        for g in rlock(&self.groups).values() {
            for s in rlock(&g.streams).values() {
                let st = lock(&s.state);
                all.extend(st.segs.iter().map(|seg| (seg.max_ts, g.id.clone(), s.clone(), seg.first_seq)));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.3.cmp(&b.3)));
        let (mut dropped, mut freed) = (0usize, 0u64);
        for (_, group, s, first_seq) in all {
            if self.disk.load(Ordering::Relaxed) <= budget {
                break;
            }
            let mut st = lock(&s.state);
            if st.deleted {
                continue;
            }
            let Some(i) = st.segs.iter().position(|seg| seg.first_seq == first_seq) else { continue };
            let result = st.persist_floor(&s.dir, &s.name).and_then(|()| Ok(fs::remove_file(&*st.segs[i].path)?));
            if let Err(e) = result {
                tracing::warn!(group = %group, stream = %s.name, error = %e, "log store: could not drop a segment over the disk budget");
                continue;
            }
            let before_bytes = st.bytes;
            st.segs.remove(i);
            st.recompute();
            self.disk.fetch_sub(before_bytes - st.bytes, Ordering::Relaxed);
            freed += before_bytes - st.bytes;
            dropped += 1;
        }
        let now = self.disk.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                budget,
                dropped,
                freed,
                disk = now,
                "log store: over its disk budget, dropped the oldest log segments"
            );
        }
        if now > budget {
            tracing::warn!(
                budget,
                disk = now,
                "log store: still over its disk budget (open segments are never dropped)"
            );
        }
    }
}

struct ScanCtx<'a> {
    lo: i64,
    hi: i64,
    after: Option<&'a ScanCursor>,
    finders: Vec<memmem::Finder<'a>>,
    filter_bits: Vec<u32>,
    matches: &'a (dyn Fn(&str) -> bool + Sync),
}

type BlockHits = (Vec<StoredEvent>, u64, u64);

/// Scans blocks on up to `threads` threads; results in the blocks' order.
fn scan_wave(cands: &[Cand], ctx: &ScanCtx<'_>, threads: usize) -> Result<Vec<BlockHits>> {
    let work = |part: &[Cand]| -> Result<Vec<BlockHits>> {
        let mut reader = BlockReader::default();
        part.iter().map(|c| scan_block(c, ctx, &mut reader)).collect()
    };
    if threads <= 1 || cands.len() <= 1 {
        return work(cands);
    }
    let chunk = cands.len().div_ceil(threads);
    let parts: Vec<Result<Vec<BlockHits>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = cands.chunks(chunk).skip(1).map(|part| scope.spawn(move || work(part))).collect();
        let mut parts = vec![work(&cands[..chunk.min(cands.len())])];
        parts.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))));
        parts
    });
    let mut out = Vec::with_capacity(cands.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

fn scan_block(c: &Cand, ctx: &ScanCtx<'_>, reader: &mut BlockReader) -> Result<BlockHits> {
    match reader.admits(c, &ctx.filter_bits)? {
        None => return Ok((Vec::new(), 0, 0)),
        Some(false) => return Ok((Vec::new(), u64::from(c.meta.raw_len), u64::from(c.meta.count))),
        Some(true) => {}
    }
    let Some(raw) = reader.load(c)? else { return Ok((Vec::new(), 0, 0)) };
    let msgs = format::block_messages(raw)?;
    let scanned = (msgs.len() as u64, u64::from(c.meta.count));
    if ctx.finders.iter().any(|f| f.find(msgs).is_none()) {
        return Ok((Vec::new(), scanned.0, scanned.1));
    }
    let d = format::decode_block(raw, c.meta.count as usize)?;
    let mut hits = Vec::new();
    for i in 0..c.meta.count as usize {
        let ts = d.ts[i];
        if ts < ctx.lo || ts > ctx.hi {
            continue;
        }
        let seq = c.meta.first_seq + i as u64;
        if let Some(a) = ctx.after {
            if (ts, &*c.stream, seq) <= (a.timestamp, a.stream.as_str(), a.seq) {
                continue;
            }
        }
        let msg = d.message(i);
        if ctx.finders.iter().all(|f| f.find(msg.as_bytes()).is_some()) && (ctx.matches)(msg) {
            hits.push(StoredEvent {
                stream: c.stream.clone(),
                seq,
                timestamp: ts,
                ingestion_time: d.ingest[i],
                message: msg.to_owned(),
            });
        }
    }
    Ok((hits, scanned.0, scanned.1))
}

/// Loads a stream's directory: its metadata, sealed segments and open segment (cutting a torn
/// tail, dropping one that a finished seal left behind).
fn load_stream(dir: &Path) -> Result<(String, State)> {
    let meta = fs::read(dir.join("meta"))?;
    let mut r = MetaReader::new(&meta, STREAM_MAGIC)?;
    let creation_time = r.i64()?;
    let floor_seq = r.i64()? as u64;
    let floor_last_ts = r.opt()?;
    let floor_last_ingest = r.opt()?;
    let name = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Error::Corrupt("stream name is not UTF-8".into()))?;
    let mut segs = Vec::new();
    let mut wals = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let fname = entry.file_name().to_string_lossy().into_owned();
        if fname.ends_with(".tmp") {
            fs::remove_file(entry.path())?;
        } else if let Some(hex) = fname.strip_suffix(".seg") {
            let Ok(first_seq) = u64::from_str_radix(hex, 16) else { continue };
            let path = entry.path();
            let file = File::open(&path)?;
            match format::read_segment_index(&file) {
                Ok(blocks) => {
                    let max_ts = blocks.iter().map(|b| b.max_ts).max().unwrap_or(i64::MIN);
                    let bytes = file.metadata()?.len();
                    segs.push(Seg { first_seq, path: Arc::new(path), blocks: blocks.into(), bytes, max_ts });
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "log store: setting aside a corrupt sealed segment");
                    fs::rename(&path, path.with_extension("corrupt"))?;
                }
            }
        } else if let Some(hex) = fname.strip_suffix(".wal") {
            if let Ok(first_seq) = u64::from_str_radix(hex, 16) {
                wals.push((first_seq, entry.path()));
            }
        }
    }
    segs.sort_by_key(|s| s.first_seq);
    wals.sort();
    let mut state = State {
        floor_seq,
        floor_last_ts,
        floor_last_ingest,
        segs,
        meta_bytes: meta.len() as u64,
        ..State::new(creation_time)
    };
    let wal_count = wals.len();
    for (k, (first_seq, path)) in wals.into_iter().enumerate() {
        if state.segs.iter().any(|s| s.first_seq == first_seq) {
            fs::remove_file(&path)?; // sealed before the crash
            continue;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let bytes = fs::read(&path)?;
        let (blocks, valid) = format::parse_wal(&bytes);
        if valid < bytes.len() {
            tracing::warn!(file = %path.display(), valid, len = bytes.len(), "log store: cutting a torn tail off an open segment");
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        if blocks.is_empty() {
            fs::remove_file(&path)?;
            continue;
        }
        if k + 1 < wal_count {
            // Not the newest: full, its seal was cut short; seal it now.
            state.segs.push(write_sealed(dir, first_seq, &file, valid as u64, &blocks, &mut SealBuffers::default())?);
            state.segs.sort_by_key(|s| s.first_seq);
            fs::remove_file(&path)?;
        } else {
            let file = WalFile::new(file, valid as u64);
            state.wal = Some(Wal { first_seq, path, file, len: valid as u64, blocks });
        }
    }
    state.recompute();
    Ok((name, state))
}

/// What sealing builds in, kept from one segment to the next (a few MiB, which would otherwise
/// be faulted in afresh for every segment).
#[derive(Default)]
struct SealBuffers {
    /// The open segment, read back.
    wal: Vec<u8>,
    /// The sealed segment being built.
    seg: Vec<u8>,
    /// LZ4's output for one block.
    lz4: Vec<u8>,
}

/// Compresses an open segment into a sealed one, written whole, synced and renamed into place
/// (the caller then removes the open segment: a crash leaves one or the other, or both).
fn write_sealed(
    dir: &Path,
    first_seq: u64,
    file: &File,
    len: u64,
    blocks: &[BlockMeta],
    buffers: &mut SealBuffers,
) -> Result<Seg> {
    let SealBuffers { wal, seg, lz4 } = buffers;
    wal.clear();
    wal.resize(len as usize, 0);
    file.read_exact_at(wal, 0)?;
    let metas = build_segment(wal, blocks, seg, lz4)?;
    let name = format!("{first_seq:016x}.seg");
    write_atomic(dir, &name, seg)?;
    let max_ts = metas.iter().map(|b| b.max_ts).max().unwrap_or(i64::MIN);
    Ok(Seg { first_seq, path: Arc::new(dir.join(name)), blocks: metas.into(), bytes: seg.len() as u64, max_ts })
}
