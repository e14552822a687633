//! The awslogs driver on the node: one shipper per container whose definition asks for it.
//!
//! The container's supervisor keeps writing its output to `container.log` (CRI records, rotated
//! by size), as for every container; the shipper tails those files and ships events to the
//! control plane ([`ControlPlane::ship_logs`]), so the container never waits for CloudWatch
//! and `estiba logs` keeps working.
//!
//! - **Position.** The shipper reads from a saved position (`container.log.shipped`: the file
//!   by inode and the offset in it, and the number of the next event) and saves it only after
//!   an append returned (at most every [`SAVE_EVERY`] while lines keep coming, after every
//!   append of multi-line events), so a crash of the server or agent resends at most what it
//!   had not saved. Events are numbered in the order they are formed from the file, the same
//!   numbers every time it is read (one event per line; for multi-line events, which timing
//!   also ends, only a crash between an append and its save reads a batch again), and the
//!   store skips numbers it holds: no line is lost or duplicated across a restart.
//! - **Rotation.** A rotated file is still read to its end through the open descriptor, then
//!   the next newer file. In blocking mode the supervisor deletes only files the shipper is
//!   done with (`Rotation::keep_unshipped`): the disk is the buffer. In non-blocking mode at
//!   most `max-buffer-size` bytes of formed events wait; the oldest are dropped and counted.
//! - **Events.** A record's time is the event's timestamp; partial (`P`) records are joined;
//!   empty lines make no event (as Docker's driver); with a multi-line pattern a matching line
//!   starts an event and the others are appended, each line ending in `\n` (Docker's form), a
//!   pending event going out after [`IDLE_FLUSH`] without a new line.
//! - **End.** When the container has exited the runner calls [`Shipper::finish`]: the shipper
//!   reads to the end, ships everything and ends; the runner waits for it (bounded) before the
//!   task reports STOPPED.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estiba_core::awslogs::Mode;
use estiba_core::telemetry::{LogDestination, LogEvents, LogIngestError};
use estiba_runtime::logs::{self, Shipped};
use tokio::sync::watch;

use crate::control::ControlPlane;

/// A pending multi-line event goes out after this long without a new line.
pub const IDLE_FLUSH: Duration = Duration::from_millis(500);
/// CloudWatch's limits on one PutLogEvents batch.
const BATCH_EVENTS: usize = 10_000;
const BATCH_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
/// CloudWatch's largest event (bytes of message).
const MAX_EVENT: usize = 262_144 - EVENT_OVERHEAD;
/// Blocking mode: how much is read ahead of what is shipped.
const READ_AHEAD: usize = 4 << 20;

/// What a shipper needs.
#[derive(Clone, Debug)]
pub struct ShipperConfig {
    pub dest: LogDestination,
    /// The container's `container.log`.
    pub log: PathBuf,
    pub mode: Mode,
    pub max_buffer: u64,
    /// Starts an event when found in a line.
    pub multiline: Option<regex::Regex>,
}

/// What a shipper did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShipStats {
    pub events: u64,
    pub dropped_lines: u64,
}

/// A running shipper.
pub struct Shipper {
    finish: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<ShipStats>,
}

impl Shipper {
    pub fn start(cp: Arc<dyn ControlPlane>, cfg: ShipperConfig) -> Shipper {
        let (finish, rx) = watch::channel(false);
        let handle = tokio::spawn(run(cp, cfg, rx));
        Shipper { finish, handle }
    }

    /// The container has exited (its supervisor wrote everything): ship the rest and end.
    pub fn finish(&self) {
        self.finish.send_replace(true);
    }

    /// Waits for the shipper to end, at most until `deadline`; `None` when it did not.
    pub async fn drained(self, deadline: tokio::time::Instant) -> Option<ShipStats> {
        self.finish();
        let mut handle = self.handle;
        match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(r) => r.ok(),
            Err(_) => {
                handle.abort();
                None
            }
        }
    }
}

/// A place in the log: the file (by inode) and the offset just after a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pos {
    inode: u64,
    offset: u64,
}

/// Reads complete records from a log's files in order, following rotation.
struct Tailer {
    log: PathBuf,
    file: Option<(File, u64)>,
    /// Offset in `file` of the first byte of `carry`.
    offset: u64,
    /// The start of a record whose end has not been written yet.
    carry: Vec<u8>,
    /// How much of `carry` holds data (the rest is room for the next read).
    filled: usize,
    /// The file was found rotated: read it to its end once more, then go on to the next.
    rotated: bool,
    /// The last read found nothing more in the newest file.
    at_end: bool,
}

/// A complete record as read: text when it is UTF-8 (as nearly always), bytes otherwise.
#[derive(Clone, Copy)]
enum Rec<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Rec<'a> {
    fn bytes(self) -> &'a [u8] {
        match self {
            Rec::Text(t) => t.as_bytes(),
            Rec::Bytes(b) => b,
        }
    }
}

/// A CRI record's fields.
struct Fields<'a> {
    time: &'a [u8],
    stream: &'a [u8],
    tag: &'a [u8],
    /// Where the line starts.
    line: usize,
}

fn fields(rec: &[u8]) -> Option<Fields<'_>> {
    let a = memchr::memchr(b' ', rec)?;
    let b = a + 1 + memchr::memchr(b' ', &rec[a + 1..])?;
    let (tag, line) = match memchr::memchr(b' ', &rec[b + 1..]) {
        Some(c) => (&rec[b + 1..b + 1 + c], b + 2 + c),
        None => (&rec[b + 1..], rec.len()),
    };
    Some(Fields { time: &rec[..a], stream: &rec[a + 1..b], tag, line })
}

/// How much one read of a log file asks for.
const READ_CHUNK: usize = 256 << 10;

impl Tailer {
    fn new(log: &Path, from: Option<Shipped>) -> Tailer {
        let mut t = Tailer {
            log: log.to_path_buf(),
            file: None,
            offset: 0,
            carry: Vec::new(),
            filled: 0,
            rotated: false,
            at_end: false,
        };
        let files = logs::files_with_inodes(log);
        let start = from.and_then(|s| {
            let (p, ino) = files.iter().find(|(_, ino)| *ino == s.inode)?;
            Some((p.clone(), *ino, s.offset))
        });
        match (start, from) {
            (Some((p, ino, off)), _) => t.open(&p, ino, off),
            (None, Some(s)) if s.inode != 0 => {
                tracing::warn!(log = %log.display(), "awslogs: the file being shipped is gone; lines were lost");
            }
            _ => {}
        }
        t
    }

    fn open(&mut self, path: &Path, inode: u64, offset: u64) {
        match File::open(path) {
            Ok(mut f) => {
                if offset > 0 && f.seek(SeekFrom::Start(offset)).is_err() {
                    return;
                }
                self.file = Some((f, inode));
                self.offset = offset;
                self.filled = 0;
                self.rotated = false;
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "awslogs: opening a log file"),
        }
    }

    /// Opens the file after the current one (the oldest when none is open yet). False when
    /// there is none yet.
    fn next_file(&mut self) -> bool {
        let files = logs::files_with_inodes(&self.log);
        let next = match &self.file {
            None => files.last().cloned(),
            Some((_, ino)) => match files.iter().position(|(_, i)| i == ino) {
                Some(0) => None,
                Some(k) => Some(files[k - 1].clone()),
                None => {
                    tracing::warn!(log = %self.log.display(), "awslogs: log files rotated away unread; lines were lost");
                    files.last().cloned()
                }
            },
        };
        match next {
            Some((p, ino)) => {
                self.open(&p, ino, 0);
                self.file.is_some()
            }
            None => false,
        }
    }

    /// Reads at most about `budget` bytes, handing each complete record with the position just
    /// after it to `sink`. Returns the bytes read.
    fn fill(&mut self, budget: usize, sink: &mut impl FnMut(Rec<'_>, Pos)) -> io::Result<usize> {
        let mut total = 0;
        self.at_end = false;
        while total < budget {
            if self.file.is_none() && !self.next_file() {
                self.at_end = true;
                return Ok(total);
            }
            let Some((f, ino)) = self.file.as_mut() else { return Ok(total) };
            let ino = *ino;
            // Read straight after the carried start of a record: no copy of what is read.
            let have = self.filled;
            if self.carry.len() < have + READ_CHUNK {
                // Zeroed once as it grows; then reads land in place.
                self.carry.resize(have + READ_CHUNK, 0);
            }
            let n = f.read(&mut self.carry[have..have + READ_CHUNK])?;
            self.filled = have + n;
            if n == 0 {
                if self.rotated {
                    // Read to its end after it was rotated: the supervisor is done with it.
                    if self.filled > 0 {
                        tracing::warn!(log = %self.log.display(), "awslogs: a log file ends inside a record");
                    }
                    if !self.next_file() {
                        self.at_end = true;
                        return Ok(total);
                    }
                    continue;
                }
                use std::os::unix::fs::MetadataExt;
                match std::fs::metadata(&self.log) {
                    Ok(m) if m.ino() != ino => self.rotated = true,
                    _ => {
                        self.at_end = true;
                        return Ok(total);
                    }
                }
                continue;
            }
            total += n;
            let mut start = 0;
            // Only the new bytes can hold a record's end. The complete records are checked
            // for UTF-8 once, together (containers print text: one vectorised pass instead of
            // one call per line).
            let Some(last) = memchr::memrchr(b'\n', &self.carry[have..self.filled]) else {
                // No record ends in what was read (a long one, or one being written).
                continue;
            };
            let complete = have + last + 1;
            let text = std::str::from_utf8(&self.carry[..complete]).ok();
            for i in memchr::memchr_iter(b'\n', &self.carry[have..complete]) {
                let end = have + i;
                let rec = match text {
                    // A newline is a character boundary: the slice is safe and checked.
                    Some(t) => Rec::Text(&t[start..end]),
                    None => Rec::Bytes(&self.carry[start..end]),
                };
                sink(rec, Pos { inode: ino, offset: self.offset + end as u64 + 1 });
                start = end + 1;
            }
            // Keep the start of an unfinished record at the front.
            self.carry.copy_within(start..self.filled, 0);
            self.filled -= start;
            self.offset += start as u64;
        }
        Ok(total)
    }
}

/// An event dropped from the front of a [`Queue`].
#[derive(Clone, Copy, Debug)]
struct Dropped {
    seq: u64,
    lines: u64,
}

/// Events formed and waiting to be shipped, already cut into the batches they will be shipped
/// in (CloudWatch's limits; consecutive numbers), each packed in one [`LogEvents`]: a whole
/// UTF-8 line is copied once on its way from the log file to the control plane (joined partial
/// records, bytes that are not UTF-8 and multi-line events take one more).
#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    /// Bytes of the waiting messages.
    bytes: u64,
}

/// A batch in a [`Queue`].
struct Batch {
    events: LogEvents,
    /// The first event's number.
    first: u64,
    /// Events dropped from the front (non-blocking mode), not to be shipped.
    dropped: usize,
    /// The batch's size as CloudWatch counts it.
    size: usize,
    /// Just after the last event's last record.
    end: Pos,
    /// Lines per event, when an event is not one line (multi-line events); empty otherwise.
    lines: Vec<u64>,
}

impl Batch {
    fn lines_of(&self, i: usize) -> u64 {
        self.lines.get(i).copied().unwrap_or(1)
    }
}

impl Queue {
    fn push(&mut self, seq: u64, timestamp: i64, message: &str, end: Pos, lines: u64) {
        let size = message.len() + EVENT_OVERHEAD;
        let fits = self.batches.back().is_some_and(|b| {
            b.events.len() < BATCH_EVENTS && b.size + size <= BATCH_BYTES && b.first + b.events.len() as u64 == seq
        });
        if !fits {
            self.batches.push_back(Batch {
                events: LogEvents::recycled(),
                first: seq,
                dropped: 0,
                size: 0,
                end,
                lines: Vec::new(),
            });
        }
        let b = self.batches.back_mut().expect("pushed above");
        if lines != 1 && b.lines.is_empty() {
            b.lines.resize(b.events.len(), 1);
        }
        if !b.lines.is_empty() {
            b.lines.push(lines);
        }
        b.events.push(timestamp, message);
        b.size += size;
        b.end = end;
        self.bytes += message.len() as u64;
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Bytes of the waiting messages.
    fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Drops the oldest event.
    fn pop_front(&mut self) -> Option<Dropped> {
        let b = self.batches.front_mut()?;
        let (_, message) = b.events.get(b.dropped).expect("a batch in the queue has an event left");
        let gone = Dropped { seq: b.first + b.dropped as u64, lines: b.lines_of(b.dropped) };
        self.bytes -= message.len() as u64;
        b.dropped += 1;
        if b.dropped == b.events.len() {
            let b = self.batches.pop_front().expect("looked at above");
            b.events.recycle();
        }
        Some(gone)
    }

    fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Takes the next batch off the front.
    fn take_batch(&mut self) -> Option<(LogEvents, InFlight)> {
        let b = self.batches.pop_front()?;
        let count = b.events.len() - b.dropped;
        let meta = InFlight {
            first: b.first + b.dropped as u64,
            last: b.first + b.events.len() as u64 - 1,
            end: b.end,
            lines: if b.lines.is_empty() { count as u64 } else { b.lines[b.dropped..].iter().sum() },
            count,
        };
        self.bytes -=
            (b.events.text_len() - b.events.iter().take(b.dropped).map(|(_, m)| m.len()).sum::<usize>()) as u64;
        let events = if b.dropped == 0 {
            b.events
        } else {
            // Non-blocking mode fell behind: the rest of a batch whose front was dropped.
            let rest = b.events.iter().skip(b.dropped).collect();
            b.events.recycle();
            rest
        };
        Some((events, meta))
    }
}

/// A multi-line event being built.
struct Pending {
    timestamp: i64,
    message: String,
    /// Just after its last record.
    end: Pos,
    lines: u64,
    /// When a line last joined it.
    at: Instant,
}

/// Turns records into events.
struct Assembler {
    multiline: Option<regex::Regex>,
    /// Partial (`P`) records of a line per stream, with the first one's time.
    partial: [(Vec<u8>, i64); 2],
    pending: Option<Pending>,
    next_seq: u64,
    /// The last record's time, as written and parsed: the supervisor stamps all the records
    /// of one read of the pipe with one time, so most records repeat the one before.
    last_time: (Vec<u8>, i64),
    /// The last record's prefix, `<time> <stream> <tag> `, and what it says: most records repeat
    /// it whole (one stream, one stamp per read of the pipe), and one that starts with it splits
    /// the same way (its fields hold no space), so it is compared, not split again.
    last_prefix: Prefix,
}

#[derive(Default)]
struct Prefix {
    bytes: Vec<u8>,
    ts: i64,
    stderr: bool,
    partial: bool,
}

impl Assembler {
    fn new(multiline: Option<regex::Regex>, next_seq: u64) -> Self {
        Assembler {
            multiline,
            partial: [(Vec::new(), 0), (Vec::new(), 0)],
            pending: None,
            next_seq,
            last_time: (Vec::new(), 0),
            last_prefix: Prefix::default(),
        }
    }

    /// Forms what a record completes into `out`.
    fn push(&mut self, rec: Rec<'_>, end: Pos, out: &mut Queue) {
        let p = &self.last_prefix;
        let (at, ts, stderr, partial) = if !p.bytes.is_empty() && rec.bytes().starts_with(&p.bytes) {
            (p.bytes.len(), p.ts, p.stderr, p.partial)
        } else {
            let Some(Fields { time, stream, tag, line: at }) = fields(rec.bytes()) else { return };
            let ts = if self.last_time.0 == time {
                self.last_time.1
            } else {
                let ts = logs::parse_time_ms(time).unwrap_or_else(now_ms);
                self.last_time.0.clear();
                self.last_time.0.extend_from_slice(time);
                self.last_time.1 = ts;
                ts
            };
            let (stderr, partial) = (stream == b"stderr", tag == b"P");
            let p = &mut self.last_prefix;
            p.bytes.clear();
            // Only a prefix that ends with the space after the tag: a record of an empty line
            // may end at its tag, and a longer tag could start with it.
            if rec.bytes()[..at].ends_with(b" ") {
                p.bytes.extend_from_slice(&rec.bytes()[..at]);
                (p.ts, p.stderr, p.partial) = (ts, stderr, partial);
            }
            (at, ts, stderr, partial)
        };
        let rest = &rec.bytes()[at..];
        let s = usize::from(stderr);
        let (buf, first) = &mut self.partial[s];
        if partial {
            if buf.is_empty() {
                *first = ts;
            }
            buf.extend_from_slice(rest);
            return;
        }
        if buf.is_empty() {
            if let Rec::Text(t) = rec {
                // The usual case: a whole line, checked as text with its neighbours.
                self.form(&t[at..], ts, end, out);
                return;
            }
        }
        let mut joined = Vec::new();
        let (bytes, ts) = if buf.is_empty() {
            (rest, ts)
        } else {
            joined = std::mem::take(buf);
            joined.extend_from_slice(rest);
            (&joined[..], *first)
        };
        // Bytes that are not UTF-8 become U+FFFD (a copy only then). `from_utf8` first: its
        // validation is vectorised, the lossy one's walk is not.
        let line = match std::str::from_utf8(bytes) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(bytes),
        };
        self.form(&line, ts, end, out);
        if !joined.is_empty() {
            // The partial buffer keeps its room for the next long line.
            joined.clear();
            self.partial[s].0 = joined;
        }
    }

    fn form(&mut self, line: &str, ts: i64, end: Pos, out: &mut Queue) {
        let Some(re) = &self.multiline else {
            // A line longer than CloudWatch's largest event becomes several events.
            let mut rest = line;
            while !rest.is_empty() {
                let cut = match floor_char_boundary(rest, MAX_EVENT.min(rest.len())) {
                    0 => rest.len(),
                    cut => cut,
                };
                let seq = self.take_seq();
                out.push(seq, ts, &rest[..cut], end, 1);
                rest = &rest[cut..];
            }
            return;
        };
        let starts = re.is_match(line);
        let too_big = self.pending.as_ref().is_some_and(|p| p.message.len() + line.len() + 1 > MAX_EVENT);
        if starts || too_big {
            self.flush(out);
        }
        match &mut self.pending {
            Some(p) => {
                p.message.push_str(line);
                p.message.push('\n');
                p.end = end;
                p.lines += 1;
                p.at = Instant::now();
            }
            None => {
                let mut message = String::with_capacity(line.len() + 1);
                message.push_str(line);
                message.push('\n');
                self.pending = Some(Pending { timestamp: ts, message, end, lines: 1, at: Instant::now() });
            }
        }
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Sends out the pending multi-line event.
    fn flush(&mut self, out: &mut Queue) {
        if let Some(mut p) = self.pending.take() {
            if p.message.len() > MAX_EVENT {
                p.message.truncate(floor_char_boundary(&p.message, MAX_EVENT));
            }
            let seq = self.take_seq();
            out.push(seq, p.timestamp, &p.message, p.end, p.lines);
        }
    }

    fn idle(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.at.elapsed() >= IDLE_FLUSH)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A batch being appended: what its success moves the saved position to.
#[derive(Clone, Copy)]
struct InFlight {
    first: u64,
    last: u64,
    end: Pos,
    lines: u64,
    count: usize,
}

/// The append of a batch, running while the next one is read and formed.
type Append<'a> = crate::control::BoxFuture<'a, Result<u64, LogIngestError>>;

async fn run(cp: Arc<dyn ControlPlane>, cfg: ShipperConfig, mut finish: watch::Receiver<bool>) -> ShipStats {
    let from = logs::read_shipped(&cfg.log);
    let mut shipped = from.unwrap_or_default();
    let mut stats = ShipStats { events: 0, dropped_lines: shipped.dropped };
    let mut tailer = Tailer::new(&cfg.log, from);
    let mut asm = Assembler::new(cfg.multiline.clone(), shipped.seq);
    let mut queue = Queue::default();
    let mut backoff = Duration::from_millis(100);

    // The stream exists before anything is shipped (created at container start; again here
    // after an adoption, and for a group created since).
    loop {
        match cp.open_log_stream(&cfg.dest).await {
            Ok(_) => break,
            Err(LogIngestError::Unavailable(e)) => {
                tracing::warn!(group = %cfg.dest.group, error = %e, "awslogs: opening the stream; retrying");
                if wait_or_finish(&mut finish, backoff).await {
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                if *finish.borrow() && backoff >= Duration::from_secs(5) {
                    tracing::error!(group = %cfg.dest.group, "awslogs: the log store is out of reach; the container's lines stay in its log file");
                    return stats;
                }
            }
            Err(e) => {
                tracing::warn!(group = %cfg.dest.group, stream = %cfg.dest.stream, error = %e, "awslogs: cannot open the stream");
                break;
            }
        }
    }
    backoff = Duration::from_millis(100);
    let mut poll = Duration::from_millis(10);
    let mut failures = 0u32;
    // One append at a time (the store numbers events in arrival order), overlapping the
    // reading and forming of what comes next.
    let mut inflight: Option<(Append<'_>, InFlight)> = None;
    // A multi-line batch that failed, to be sent again as it was (see below). It waits outside
    // the queue: READ_AHEAD and `max-buffer-size` may be exceeded by that one batch, and
    // non-blocking mode drops newer events before it (it is the oldest and already formed).
    let mut kept: Option<LogEvents> = None;
    let mut again: Option<(LogEvents, InFlight)> = None;
    // Events dropped in non-blocking mode (sequence number, lines) past the saved position:
    // final once a later batch is stored; undone by a rewind, which reads them again.
    let mut pending_drops: VecDeque<(u64, u64)> = VecDeque::new();
    // The saved position lags the stored one by the appends of at most SAVE_EVERY (more
    // while appends fail and the shipper retries; see `Position`).
    let mut position = Position { unsaved: false, saved_at: Instant::now() };
    loop {
        let finishing = *finish.borrow();
        let budget = match cfg.mode {
            Mode::Blocking => READ_AHEAD.saturating_sub(queue.bytes() as usize),
            Mode::NonBlocking => (cfg.max_buffer as usize).max(1 << 20),
        };
        let mut read = 0;
        if budget > 0 {
            read = match tailer.fill(budget, &mut |rec, end| asm.push(rec, end, &mut queue)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(log = %cfg.log.display(), error = %e, "awslogs: reading the container's log");
                    0
                }
            };
        }
        if asm.idle() || (finishing && tailer.at_end) {
            asm.flush(&mut queue);
        }
        if cfg.mode == Mode::NonBlocking {
            while queue.bytes() > cfg.max_buffer {
                let Some(f) = queue.pop_front() else { break };
                stats.dropped_lines += f.lines;
                pending_drops.push_back((f.seq, f.lines));
                if stats.dropped_lines.is_power_of_two() {
                    tracing::warn!(stream = %cfg.dest.stream, dropped = stats.dropped_lines, "awslogs: the shipper fell behind (non-blocking mode); dropping the oldest lines");
                }
            }
        }
        if inflight.is_none() {
            if let Some((events, meta)) = again.take().or_else(|| queue.take_batch()) {
                // Multi-line events are joined by timing too (IDLE_FLUSH): read again, they may
                // form differently, so their batch is kept to be sent again as it was.
                kept = cfg.multiline.is_some().then(|| events.clone());
                inflight = Some((cp.ship_logs(&cfg.dest, meta.first, events), meta));
            }
        }
        if let Some((append, meta)) = &mut inflight {
            // While there is more to read, only look whether the append is done.
            let more = read > 0 && queue.bytes() < READ_AHEAD as u64;
            let done = if more {
                match std::future::poll_fn(|cx| std::task::Poll::Ready(append.as_mut().poll(cx))).await {
                    std::task::Poll::Ready(r) => Some(r),
                    std::task::Poll::Pending => None,
                }
            } else {
                Some(append.await)
            };
            let Some(result) = done else { continue };
            let sent = *meta;
            let InFlight { first, last, end, lines, count } = sent;
            inflight = None;
            match result {
                Ok(_) => {
                    failures = 0;
                    backoff = Duration::from_millis(100);
                    stats.events += count as u64;
                    let mut dropped = shipped.dropped;
                    while let Some(&(_, lines)) = pending_drops.front().filter(|(seq, _)| *seq <= last) {
                        dropped += lines;
                        pending_drops.pop_front();
                    }
                    shipped = Shipped { inode: end.inode, offset: end.offset, seq: last + 1, dropped };
                    position.unsaved = true;
                    // Multi-line events are also ended by timing (IDLE_FLUSH): read again from an
                    // older position they may form differently, and numbers the store already
                    // holds would then skip other text. Their position is saved every time.
                    if cfg.multiline.is_some() || position.saved_at.elapsed() >= SAVE_EVERY {
                        position.save(&cfg, &shipped);
                    }
                }
                Err(e) => {
                    let retry = match &e {
                        LogIngestError::Unavailable(_) => true,
                        // A group deleted meanwhile: create it again when the driver may.
                        LogIngestError::NoSuchGroup if cfg.dest.create_group => {
                            cp.open_log_stream(&cfg.dest).await.is_ok()
                        }
                        _ => false,
                    };
                    failures += 1;
                    if retry && !(finishing && failures > 20) {
                        tracing::warn!(stream = %cfg.dest.stream, error = %e, "awslogs: shipping failed; retrying");
                        match kept.take() {
                            Some(events) => again = Some((events, sent)),
                            None => {
                                // Read again from the saved position: one event per line, so
                                // the same events with the same numbers (what was formed past
                                // it is formed again).
                                tailer = Tailer::new(&cfg.log, Some(shipped));
                                // What was dropped past the saved position is judged again.
                                stats.dropped_lines -= pending_drops.drain(..).map(|(_, lines)| lines).sum::<u64>();
                                asm = Assembler::new(cfg.multiline.clone(), shipped.seq);
                                queue.clear();
                            }
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    } else {
                        stats.dropped_lines += lines;
                        // Past the dropped batch: neither a later rewind nor a restart sends it.
                        shipped = Shipped {
                            inode: end.inode,
                            offset: end.offset,
                            seq: last + 1,
                            dropped: shipped.dropped + lines,
                        };
                        position.save(&cfg, &shipped);
                        tracing::error!(stream = %cfg.dest.stream, group = %cfg.dest.group, error = %e, lines, first, "awslogs: lines dropped");
                    }
                }
            }
            continue;
        }
        if finishing && tailer.at_end && asm.pending.is_none() && queue.is_empty() && again.is_none() {
            if !pending_drops.is_empty() {
                // The newest events were dropped: nothing later will be stored to settle them.
                shipped.dropped += pending_drops.drain(..).map(|(_, lines)| lines).sum::<u64>();
                position.unsaved = true;
            }
            if position.unsaved {
                position.save(&cfg, &shipped);
            }
            if stats.dropped_lines > 0 {
                tracing::warn!(stream = %cfg.dest.stream, dropped = stats.dropped_lines, "awslogs: lines were dropped");
            }
            return stats;
        }
        if read > 0 {
            poll = Duration::from_millis(10);
            continue;
        }
        if position.unsaved {
            // Caught up: the position is saved before the shipper waits for more.
            position.save(&cfg, &shipped);
        }
        let wait = if asm.pending.is_some() { poll.min(IDLE_FLUSH / 4) } else { poll };
        wait_or_finish(&mut finish, wait).await;
        poll = (poll * 2).min(Duration::from_millis(200));
    }
}

/// How often, at most, the shipper saves its position while it ships without pause. Each save
/// creates a file and renames it over the last (a new inode each time, ext4's inode search
/// included): after every append that was a hundred files per million lines. With one event
/// per line a position saved late only means a restarted shipper resends more, which the log
/// store skips by number (the same lines form the same numbered events), and that rotation
/// keeps a file a little longer. It is saved at once when the shipper has caught up, when it
/// drops a batch, before it returns, and after every append of multi-line events (which read
/// again need not form the same events).
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// Where the shipper's saved position stands against the stored one.
struct Position {
    /// Something was stored (or dropped) past the saved position.
    unsaved: bool,
    /// When the position was last saved.
    saved_at: Instant,
}

impl Position {
    fn save(&mut self, cfg: &ShipperConfig, shipped: &Shipped) {
        if let Err(e) = logs::write_shipped(&cfg.log, shipped) {
            tracing::warn!(log = %cfg.log.display(), error = %e, "awslogs: saving the shipper's position");
        }
        self.unsaved = false;
        self.saved_at = Instant::now();
    }
}

/// Sleeps for `d` unless told to finish first; true when it slept the whole time.
async fn wait_or_finish(finish: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *finish.borrow() {
        tokio::time::sleep(d.min(Duration::from_millis(20))).await;
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = finish.changed() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{BoxFuture, ControlError};
    use estiba_core::node::{TaskStateAck, TaskStateChange};
    use estiba_core::telemetry::LogEvent;
    use estiba_runtime::logs::{LogWriter, Rotation, Stream};
    use std::sync::Mutex;

    /// A control plane that keeps shipped events by number, failing the first `fail` appends.
    #[derive(Default)]
    struct Sink {
        events: Mutex<std::collections::BTreeMap<u64, LogEvent>>,
        fail: std::sync::atomic::AtomicU32,
        no_group: bool,
    }

    impl ControlPlane for Sink {
        crate::control::idle_control_plane!();
        fn submit_task_state<'a>(
            &'a self,
            _: &'a str,
            _: TaskStateChange,
        ) -> BoxFuture<'a, Result<TaskStateAck, ControlError>> {
            Box::pin(async { Err(ControlError::Gone) })
        }
        fn open_log_stream<'a>(&'a self, _: &'a LogDestination) -> BoxFuture<'a, Result<u64, LogIngestError>> {
            let r = if self.no_group { Err(LogIngestError::NoSuchGroup) } else { Ok(0) };
            Box::pin(async move { r })
        }
        fn ship_logs<'a>(
            &'a self,
            _: &'a LogDestination,
            seq: u64,
            events: LogEvents,
        ) -> BoxFuture<'a, Result<u64, LogIngestError>> {
            let r = if self.fail.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Err(LogIngestError::Unavailable("down".into()))
            } else {
                let mut m = self.events.lock().unwrap();
                let n = events.len() as u64;
                for (i, (timestamp, message)) in events.iter().enumerate() {
                    m.entry(seq + i as u64).or_insert(LogEvent { timestamp, message: message.to_owned() });
                }
                Ok(seq + n)
            };
            Box::pin(async move { r })
        }
    }

    fn cfg(log: &Path, mode: Mode, multiline: Option<&str>) -> ShipperConfig {
        ShipperConfig {
            dest: LogDestination {
                account: "1".into(),
                region: "r".into(),
                group: "g".into(),
                stream: "s".into(),
                create_group: false,
            },
            log: log.to_path_buf(),
            mode,
            max_buffer: 10 << 20,
            multiline: multiline.map(|m| regex::Regex::new(m).unwrap()),
        }
    }

    fn messages(sink: &Sink) -> Vec<String> {
        sink.events.lock().unwrap().values().map(|e| e.message.clone()).collect()
    }

    #[tokio::test]
    async fn every_line_in_order_across_rotations_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let rot = Rotation { max_bytes: 4096, max_files: 2, keep_unshipped: true };
        let mut w = LogWriter::open(&log, rot).unwrap();
        let sink = Arc::new(Sink::default());
        let first = Shipper::start(sink.clone(), cfg(&log, Mode::Blocking, None));
        for i in 0..2000 {
            let s = if i % 10 == 0 { Stream::Stderr } else { Stream::Stdout };
            w.write(s, format!("line {i}\n").as_bytes()).unwrap();
            if i == 300 {
                // A position the first shipper saved early on, kept to be put back below.
                let deadline = Instant::now() + Duration::from_secs(5);
                while logs::read_shipped(&log).is_none_or(|s| s.seq < 100) {
                    assert!(Instant::now() < deadline, "no position saved");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                std::fs::copy(logs::shipped_path(&log), dir.path().join("older")).unwrap();
            }
            if i == 700 {
                // The agent dies mid-way, its saved position behind what it stored (as when it
                // dies within SAVE_EVERY of its last save): the second resends, the sink skips
                // the numbers it holds.
                tokio::time::sleep(Duration::from_millis(50)).await;
                first.handle.abort();
                std::fs::copy(dir.path().join("older"), logs::shipped_path(&log)).unwrap();
                assert!(logs::read_shipped(&log).unwrap().seq <= 301);
            }
        }
        w.write(Stream::Stdout, b"\n").unwrap();
        w.flush().unwrap();
        let second = Shipper::start(sink.clone(), cfg(&log, Mode::Blocking, None));
        let stats = second.drained(tokio::time::Instant::now() + Duration::from_secs(10)).await.unwrap();
        let got = messages(&sink);
        let want: Vec<String> = (0..2000).map(|i| format!("line {i}")).collect();
        assert_eq!(got, want, "no gap, no duplicate, no empty event");
        assert_eq!(stats.dropped_lines, 0);
        let numbers: Vec<u64> = sink.events.lock().unwrap().keys().copied().collect();
        assert_eq!(numbers, (0..2000).collect::<Vec<_>>());
        assert_eq!(logs::read_shipped(&log).map(|s| s.seq), Some(2000), "saved before the shipper returned");
    }

    #[tokio::test]
    async fn a_shipper_that_caught_up_has_saved_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut w = LogWriter::open(&log, Rotation::default()).unwrap();
        let sink = Arc::new(Sink::default());
        let shipper = Shipper::start(sink.clone(), cfg(&log, Mode::Blocking, None));
        for round in 1..=3u64 {
            for i in 0..100 {
                w.write(Stream::Stdout, format!("line {round} {i}\n").as_bytes()).unwrap();
            }
            // Still running, nothing more to read: the position of the last line is on disk
            // (not only after a later append, nor only at the end).
            let deadline = Instant::now() + Duration::from_secs(5);
            while logs::read_shipped(&log).map(|s| s.seq) != Some(round * 100) {
                assert!(
                    Instant::now() < deadline,
                    "saved {:?}, stored {}",
                    logs::read_shipped(&log),
                    messages(&sink).len()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        shipper.handle.abort();
    }

    #[tokio::test]
    async fn multiline_events_and_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut w = LogWriter::open(&log, Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"INFO start\n  at one\n  at two\nINFO next\n").unwrap();
        w.write(Stream::Stdout, &vec![b'x'; 40 << 10]).unwrap();
        w.write(Stream::Stdout, b"\nINFO last\n").unwrap();
        w.flush().unwrap();
        let sink = Arc::new(Sink::default());
        let s = Shipper::start(sink.clone(), cfg(&log, Mode::NonBlocking, Some("^INFO")));
        s.drained(tokio::time::Instant::now() + Duration::from_secs(5)).await.unwrap();
        let got = messages(&sink);
        assert_eq!(got.len(), 3, "{:?}", got.iter().map(|m| m.len()).collect::<Vec<_>>());
        assert_eq!(got[0], "INFO start\n  at one\n  at two\n");
        assert_eq!(got[1], format!("INFO next\n{}\n", "x".repeat(40 << 10)));
        assert_eq!(got[2], "INFO last\n");
    }

    /// Records that repeat the one before's prefix and records that only look alike (an empty
    /// line with and without the space after its tag, a longer tag): each splits into its
    /// time, stream, partial or not, and line.
    #[tokio::test]
    async fn records_repeating_a_prefix_split_as_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let records = [
            "2026-01-01T00:00:00.000000001Z stdout F a",
            "2026-01-01T00:00:00.000000001Z stdout F b",
            // An empty line without the space after its tag, then one with it.
            "2026-01-01T00:00:00.000000001Z stdout F",
            "2026-01-01T00:00:00.000000001Z stdout F ",
            "2026-01-01T00:00:00.000000001Z stdout F c d",
            "2026-01-01T00:00:00.000000001Z stdout P par",
            "2026-01-01T00:00:00.000000001Z stderr F e",
            "2026-01-01T00:00:00.000000001Z stdout F tial",
            "2026-01-01T00:00:02.000000001Z stdout F later",
            "2026-01-01T00:00:02.000000001Z stdout FF longer tag",
            "2026-01-01T00:00:02.000000001Z stdout F last",
        ];
        std::fs::write(&log, records.map(|r| format!("{r}\n")).concat()).unwrap();
        let sink = Arc::new(Sink::default());
        let s = Shipper::start(sink.clone(), cfg(&log, Mode::Blocking, None));
        s.finish();
        s.drained(tokio::time::Instant::now() + Duration::from_secs(5)).await.unwrap();
        let got: Vec<(i64, String)> =
            sink.events.lock().unwrap().values().map(|e| (e.timestamp, e.message.clone())).collect();
        let t0 = 1_767_225_600_000;
        let want = [
            (t0, "a"),
            (t0, "b"),
            // Empty lines are not events (as Docker's awslogs driver skips them).
            (t0, "c d"),
            (t0, "e"),
            (t0, "partial"),
            (t0 + 2000, "later"),
            (t0 + 2000, "longer tag"),
            (t0 + 2000, "last"),
        ];
        assert_eq!(got, want.map(|(t, m)| (t, m.to_owned())));
    }

    #[test]
    fn a_record_read_in_pieces_is_handed_over_once_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut f = std::fs::File::create(&log).unwrap();
        let mut t = Tailer::new(&log, None);
        let mut got: Vec<(String, u64)> = Vec::new();
        let mut sink = |r: Rec<'_>, p: Pos| got.push((String::from_utf8_lossy(r.bytes()).into_owned(), p.offset));
        // A record written in three pieces, read after each (the later reads find no newline).
        for piece in ["2026-01-01T00:00:00Z stdout F ab", "cd", "ef\n2026-01-01T00:00:00Z stdout F é"] {
            f.write_all(piece.as_bytes()).unwrap();
            t.fill(1 << 20, &mut sink).unwrap();
        }
        f.write_all(b"\n").unwrap();
        t.fill(1 << 20, &mut sink).unwrap();
        assert_eq!(
            got,
            [
                ("2026-01-01T00:00:00Z stdout F abcdef".to_owned(), 37),
                ("2026-01-01T00:00:00Z stdout F é".to_owned(), 70)
            ]
        );
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_become_replacement_characters() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut w = LogWriter::open(&log, Rotation::default()).unwrap();
        w.write(Stream::Stdout, &["ok ✓\n".as_bytes(), b"bad \xff\xfe end\n"].concat()).unwrap();
        w.write(Stream::Stdout, b"bad \xff\xfe end\n").unwrap();
        w.write(Stream::Stderr, "après\n\n".as_bytes()).unwrap();
        // A long line (partial records) whose bytes are cut inside a character.
        let mut long = "é".repeat(10 << 10).into_bytes();
        long.extend_from_slice(b"\xc3\n");
        w.write(Stream::Stdout, &long).unwrap();
        w.flush().unwrap();
        let sink = Arc::new(Sink::default());
        let s = Shipper::start(sink.clone(), cfg(&log, Mode::Blocking, None));
        s.drained(tokio::time::Instant::now() + Duration::from_secs(5)).await.unwrap();
        let got = messages(&sink);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[..4], ["ok ✓", "bad \u{fffd}\u{fffd} end", "bad \u{fffd}\u{fffd} end", "après"]);
        assert_eq!(got[4], format!("{}\u{fffd}", "é".repeat(10 << 10)));
    }

    #[tokio::test]
    async fn a_pending_multiline_event_goes_out_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut w = LogWriter::open(&log, Rotation::default()).unwrap();
        let sink = Arc::new(Sink::default());
        let s = Shipper::start(sink.clone(), cfg(&log, Mode::Blocking, Some("^#")));
        w.write(Stream::Stdout, b"# one\nmore\n").unwrap();
        let t0 = Instant::now();
        while messages(&sink).is_empty() && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(messages(&sink), ["# one\nmore\n"]);
        assert!(t0.elapsed() >= IDLE_FLUSH - Duration::from_millis(100));
        s.drained(tokio::time::Instant::now() + Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut w = LogWriter::open(&log, Rotation::default()).unwrap();
        for i in 0..100 {
            w.write(Stream::Stdout, format!("{i}\n").as_bytes()).unwrap();
        }
        w.flush().unwrap();
        let sink = Arc::new(Sink { fail: 3.into(), ..Default::default() });
        let s = Shipper::start(sink.clone(), cfg(&log, Mode::Blocking, None));
        let stats = s.drained(tokio::time::Instant::now() + Duration::from_secs(10)).await.unwrap();
        assert_eq!(messages(&sink).len(), 100);
        assert_eq!(stats, ShipStats { events: 100, dropped_lines: 0 });
    }

    #[tokio::test]
    async fn multiline_batches_are_sent_again_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut w = LogWriter::open(&log, Rotation::default()).unwrap();
        for i in 0..50 {
            w.write(Stream::Stdout, format!("INFO {i}\n  at {i}\n").as_bytes()).unwrap();
        }
        w.flush().unwrap();
        let sink = Arc::new(Sink { fail: 3.into(), ..Default::default() });
        let s = Shipper::start(sink.clone(), cfg(&log, Mode::Blocking, Some("^INFO")));
        let stats = s.drained(tokio::time::Instant::now() + Duration::from_secs(10)).await.unwrap();
        let got = messages(&sink);
        assert_eq!(got.len(), 50);
        assert!(got.iter().enumerate().all(|(i, m)| *m == format!("INFO {i}\n  at {i}\n")), "{got:?}");
        assert_eq!(stats, ShipStats { events: 50, dropped_lines: 0 });
    }

    #[tokio::test]
    async fn non_blocking_drops_the_oldest_beyond_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut w = LogWriter::open(&log, Rotation::default()).unwrap();
        for i in 0..1000 {
            w.write(Stream::Stdout, format!("{i:099}\n").as_bytes()).unwrap();
        }
        w.flush().unwrap();
        let sink = Arc::new(Sink::default());
        let mut c = cfg(&log, Mode::NonBlocking, None);
        c.max_buffer = 10_000;
        let stats = Shipper::start(sink.clone(), c)
            .drained(tokio::time::Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        let got = messages(&sink);
        assert_eq!(got.len() as u64 + stats.dropped_lines, 1000);
        assert!(stats.dropped_lines >= 890, "{stats:?}");
        assert_eq!(got.last().unwrap(), &format!("{:099}", 999), "the newest lines are kept");
        assert_eq!(logs::read_shipped(&log).unwrap().dropped, stats.dropped_lines);
    }

    #[tokio::test]
    async fn drops_are_counted_once_across_retries() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut w = LogWriter::open(&log, Rotation::default()).unwrap();
        for i in 0..1000 {
            w.write(Stream::Stdout, format!("{i:099}\n").as_bytes()).unwrap();
        }
        w.flush().unwrap();
        // Failed appends rewind to the saved position: what was dropped past it is read and
        // judged again, not counted twice.
        let sink = Arc::new(Sink { fail: 4.into(), ..Default::default() });
        let mut c = cfg(&log, Mode::NonBlocking, None);
        c.max_buffer = 10_000;
        let stats = Shipper::start(sink.clone(), c)
            .drained(tokio::time::Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        let got = messages(&sink);
        assert!(stats.dropped_lines > 0, "{stats:?}");
        assert_eq!(got.len() as u64 + stats.dropped_lines, 1000, "{stats:?}");
        assert_eq!(logs::read_shipped(&log).unwrap().dropped, stats.dropped_lines);
    }

    #[test]
    fn the_queue_cuts_batches_at_the_limits_and_drops_from_the_front() {
        let pos = |offset| Pos { inode: 7, offset };
        let mut q = Queue::default();
        // 10,000 events: one batch; the next starts another; a gap in the numbers too.
        for seq in 0..10_001 {
            q.push(seq, seq as i64, "ab", pos(seq + 1), 1);
        }
        q.push(20_000, 5, "gap", pos(30_000), 1);
        assert_eq!(q.bytes(), 10_001 * 2 + 3);
        let (events, meta) = q.take_batch().unwrap();
        assert_eq!((events.len(), meta.first, meta.last, meta.count, meta.lines), (10_000, 0, 9_999, 10_000, 10_000));
        assert_eq!(meta.end, pos(10_000));
        assert_eq!(events.get(9_999), Some((9_999, "ab")));
        let (events, meta) = q.take_batch().unwrap();
        assert_eq!((events.len(), meta.first, meta.last, meta.end), (1, 10_000, 10_000, pos(10_001)));
        let (events, meta) = q.take_batch().unwrap();
        assert_eq!((events.get(0), meta.first, meta.last), (Some((5, "gap")), 20_000, 20_000));
        assert!(q.take_batch().is_none() && q.is_empty() && q.bytes() == 0);
        // By bytes: CloudWatch's megabyte, counting 26 bytes per event.
        let big = "x".repeat(100_000 - EVENT_OVERHEAD);
        for seq in 0..11 {
            q.push(seq, 0, &big, pos(seq), 1);
        }
        assert_eq!(q.take_batch().unwrap().1.count, 10);
        assert_eq!(q.take_batch().unwrap().1.count, 1);
        // Multi-line events count their lines; dropping from the front keeps the rest's.
        q.push(0, 1, "one", pos(1), 1);
        q.push(1, 2, "two\nlines", pos(3), 2);
        q.push(2, 3, "three\nmore\nlines", pos(6), 3);
        let d = q.pop_front().unwrap();
        assert_eq!((d.seq, d.lines), (0, 1));
        let d = q.pop_front().unwrap();
        assert_eq!((d.seq, d.lines), (1, 2));
        assert_eq!(q.bytes(), "three\nmore\nlines".len() as u64);
        let (events, meta) = q.take_batch().unwrap();
        assert_eq!(events.iter().collect::<Vec<_>>(), [(3, "three\nmore\nlines")]);
        assert_eq!((meta.first, meta.last, meta.count, meta.lines, meta.end), (2, 2, 1, 3, pos(6)));
        assert!(q.is_empty() && q.bytes() == 0);
        // A batch dropped whole leaves the queue.
        q.push(9, 1, "only", pos(1), 1);
        assert_eq!(q.pop_front().map(|d| d.seq), Some(9));
        assert!(q.is_empty() && q.pop_front().is_none() && q.take_batch().is_none());
    }
}
