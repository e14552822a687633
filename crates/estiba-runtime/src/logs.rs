//! Container logs: what a container writes to stdout and stderr, kept with timestamps in the
//! CRI log format (`2026-11-25T10:00:00.123456789Z stdout F the line`), in one file per
//! container, rotated by size (`container.log`, `container.log.1`, ...).
//!
//! A container whose lines are shipped elsewhere (the awslogs driver) has a shipper that
//! records how far it got in `container.log.shipped` ([`Shipped`]: the file, by inode, and the
//! offset in it). With [`Rotation::keep_unshipped`] (awslogs' blocking mode) rotation deletes
//! only files the shipper is done with: the disk is the buffer, and no line is lost.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How much log a container keeps: `max_files` files of at most `max_bytes` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    pub max_bytes: u64,
    pub max_files: u32,
    /// Keep files beyond `max_files` until the shipper has read them ([`Shipped`]).
    #[serde(default)]
    pub keep_unshipped: bool,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 10 << 20, max_files: 3, keep_unshipped: false }
    }
}

/// How far a shipper got: every record before `offset` in the file whose inode is `inode`,
/// and in every older file, is shipped; the next event it ships is numbered `seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shipped {
    pub inode: u64,
    pub offset: u64,
    pub seq: u64,
    /// Lines dropped so far (non-blocking mode, a shipper that fell behind).
    #[serde(default)]
    pub dropped: u64,
}

/// `container.log.shipped`, beside the log.
pub fn shipped_path(log: &Path) -> PathBuf {
    PathBuf::from(format!("{}.shipped", log.display()))
}

pub fn read_shipped(log: &Path) -> Option<Shipped> {
    serde_json::from_slice(&std::fs::read(shipped_path(log)).ok()?).ok()
}

/// Records the shipper's position (replaced atomically: a crash leaves the old or the new).
pub fn write_shipped(log: &Path, s: &Shipped) -> io::Result<()> {
    let path = shipped_path(log);
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, serde_json::to_vec(s).map_err(io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

/// `container.log`, `container.log.1`, ...: the path of the `i`th file, newest first.
pub fn nth(log: &Path, i: u32) -> PathBuf {
    if i == 0 {
        log.to_path_buf()
    } else {
        PathBuf::from(format!("{}.{i}", log.display()))
    }
}

/// The files of a log with their inodes, newest first (rotation leaves no gaps).
pub fn files_with_inodes(log: &Path) -> Vec<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for i in 0.. {
        let p = nth(log, i);
        match std::fs::metadata(&p) {
            Ok(m) => out.push((p, m.ino())),
            Err(_) if i == 0 => continue,
            Err(_) => break,
        }
    }
    out
}

/// `2026-11-25T10:00:00.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = String::with_capacity(30);
    write_rfc3339(&mut out, t);
    out
}

fn write_rfc3339(out: &mut String, t: SystemTime) {
    use std::fmt::Write as _;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    );
}

/// Milliseconds since the epoch of a CRI record's time (`2026-11-25T10:00:00.123456789Z`, or
/// with an offset instead of `Z`).
pub fn parse_time_ms(t: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let b = t.get(r)?;
        let mut n = 0i64;
        for &c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + (c - b'0') as i64;
        }
        Some(n)
    };
    if t.len() < 20 || t[4] != b'-' || t[7] != b'-' || t[10] != b'T' || t[13] != b':' || t[16] != b':' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut ms = 0i64;
    if t.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < t.len() && t[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + (t[i] - b'0') as i64;
            }
            i += 1;
        }
        for _ in (i - start)..3 {
            ms *= 10;
        }
    }
    let offset_s = match t.get(i) {
        Some(b'Z') => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)?;
    let days = date.signed_duration_since(chrono::DateTime::UNIX_EPOCH.date_naive()).num_days();
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss - offset_s) * 1000 + ms)
}

/// Appends lines to a container's log file, rotating it by size.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// A partial line per stream, completed by the next write.
    partial: [Vec<u8>; 2],
    /// Records of the current write, written out with one syscall.
    out: Vec<u8>,
    /// The time of the current write's records (formatted once per write).
    stamp: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Lines longer than this are split into partial (`P`) records.
const MAX_LINE: usize = 16 << 10;

impl LogWriter {
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> io::Result<Self> {
        let path = path.into();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path,
            file,
            size,
            rotation,
            partial: [Vec::new(), Vec::new()],
            out: Vec::with_capacity(64 << 10),
            stamp: String::new(),
        })
    }

    /// Writes what a stream produced; complete lines become records, the rest waits. The
    /// records of one call share one timestamp (the time it was read) and one write(2).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        self.stamp.clear();
        write_rfc3339(&mut self.stamp, SystemTime::now());
        let r = self.write_records(stream, data);
        let f = self.flush_out();
        r.and(f)
    }

    fn flush_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.out);
        self.out.clear();
        r
    }

    fn write_records(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let s = stream as usize;
        while let Some(i) = memchr::memchr(b'\n', data) {
            let line = &data[..i];
            data = &data[i + 1..];
            if self.partial[s].is_empty() {
                // The usual case: a whole line in this read, recorded from where it lies.
                self.record(stream, b'F', line)?;
            } else {
                let mut buf = std::mem::take(&mut self.partial[s]);
                buf.extend_from_slice(line);
                let r = self.record(stream, b'F', &buf);
                buf.clear();
                self.partial[s] = buf;
                r?;
            }
        }
        if !data.is_empty() {
            self.partial[s].extend_from_slice(data);
            while self.partial[s].len() >= MAX_LINE {
                let rest = self.partial[s].split_off(MAX_LINE);
                let chunk = std::mem::replace(&mut self.partial[s], rest);
                self.record(stream, b'P', &chunk)?;
            }
        }
        Ok(())
    }

    /// Writes out partial lines (at exit).
    pub fn flush(&mut self) -> io::Result<()> {
        self.stamp.clear();
        write_rfc3339(&mut self.stamp, SystemTime::now());
        for s in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[s as usize]);
            if !line.is_empty() {
                self.record(s, b'F', &line)?;
            }
        }
        self.flush_out()?;
        self.file.flush()
    }

    fn record(&mut self, stream: Stream, tag: u8, line: &[u8]) -> io::Result<()> {
        let len = (self.stamp.len() + stream.name().len() + line.len() + 5) as u64;
        if self.size > 0 && self.size + len > self.rotation.max_bytes {
            self.flush_out()?;
            self.rotate()?;
        }
        let rec = &mut self.out;
        rec.extend_from_slice(self.stamp.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.name().as_bytes());
        rec.push(b' ');
        rec.push(tag);
        rec.push(b' ');
        rec.extend_from_slice(line);
        rec.push(b'\n');
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let n = self.rotation.max_files.max(1);
        if self.rotation.keep_unshipped {
            self.rotate_keeping_unshipped(n);
        } else {
            let _ = std::fs::remove_file(nth(&self.path, n - 1));
            for i in (0..n - 1).rev() {
                let _ = std::fs::rename(nth(&self.path, i), nth(&self.path, i + 1));
            }
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Shifts every file one place older and deletes, beyond `max_files`, only files older
    /// than the one the shipper is in (none when it has shipped nothing yet).
    fn rotate_keeping_unshipped(&mut self, n: u32) {
        let files = files_with_inodes(&self.path);
        let shipped = read_shipped(&self.path);
        // Index (newest first) of the shipper's file; files after it are done with.
        let at = shipped.and_then(|s| files.iter().position(|(_, ino)| *ino == s.inode));
        for i in (0..files.len() as u32).rev() {
            let _ = std::fs::rename(nth(&self.path, i), nth(&self.path, i + 1));
        }
        if let Some(at) = at {
            // After the shift the shipper's file is at `at + 1`.
            for i in (n as usize).max(at + 2)..=files.len() {
                let _ = std::fs::remove_file(nth(&self.path, i as u32));
            }
        }
    }
}

/// One parsed log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub time: String,
    pub stream: String,
    pub partial: bool,
    pub line: String,
}

pub fn parse(line: &str) -> Option<Record> {
    let mut it = line.splitn(4, ' ');
    let (time, stream, tag) = (it.next()?, it.next()?, it.next()?);
    Some(Record { time: time.into(), stream: stream.into(), partial: tag == "P", line: it.next().unwrap_or("").into() })
}

/// The log files of a container, oldest first.
pub fn files(path: &Path) -> Vec<PathBuf> {
    files_with_inodes(path).into_iter().rev().map(|(p, _)| p).collect()
}

/// Reads every record of a container's log, oldest first.
pub fn read_all(path: &Path) -> io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for f in files(path) {
        for line in BufReader::new(File::open(f)?).lines() {
            if let Some(r) = parse(&line?) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(parse_time_ms(rfc3339(t).as_bytes()), Some(1_700_000_000_123));
        assert_eq!(parse_time_ms(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time_ms(b"2024-02-29T12:00:00.5+01:00"), Some(1_709_204_400_500));
        assert_eq!(parse_time_ms(b"not a time at all!!!"), None);
        for secs in [0u64, 951_782_400, 4_102_444_800, 1_234_567_890] {
            let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            assert_eq!(parse_time_ms(rfc3339(t).as_bytes()), Some(secs as i64 * 1000));
        }
    }

    #[test]
    fn rotation_keeps_what_the_shipper_has_not_read() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let rot = Rotation { max_bytes: 100, max_files: 2, keep_unshipped: true };
        let mut w = LogWriter::open(&path, rot).unwrap();
        for i in 0..10 {
            w.write(Stream::Stdout, format!("line {i:02} .......................\n").as_bytes()).unwrap();
        }
        // Nothing shipped yet: every line is still there.
        let lines: Vec<String> = read_all(&path).unwrap().into_iter().map(|r| r.line).collect();
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert!(files(&path).len() > 2);
        // The shipper is done with all but the newest file: the next rotation trims to two.
        let ino = std::fs::metadata(&path).unwrap().ino();
        write_shipped(&path, &Shipped { inode: ino, offset: 0, seq: 9, dropped: 0 }).unwrap();
        for i in 10..13 {
            w.write(Stream::Stdout, format!("line {i:02} .......................\n").as_bytes()).unwrap();
        }
        let files_now = files_with_inodes(&path);
        assert!(files_now.iter().any(|(_, i)| *i == ino), "the shipper's file stays");
        // The shipper's file and the three written since (none of them shipped yet).
        assert_eq!(files_now.len(), 4, "{files_now:?}");
        assert_eq!(read_all(&path).unwrap().last().unwrap().line, "line 12 .......................");
    }

    #[test]
    fn long_lines_become_partial_records_and_the_rest_completes_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, Rotation::default()).unwrap();
        w.write(Stream::Stdout, &vec![b'x'; 40 << 10]).unwrap();
        w.write(Stream::Stdout, b"yy\nz\n\nlast").unwrap();
        w.flush().unwrap();
        let recs = read_all(&path).unwrap();
        let got: Vec<(bool, usize)> = recs.iter().map(|r| (r.partial, r.line.len())).collect();
        assert_eq!(
            got,
            [(true, MAX_LINE), (true, MAX_LINE), (false, (8 << 10) + 2), (false, 1), (false, 0), (false, 4)]
        );
        assert!(recs[2].line.ends_with("xyy"));
        assert_eq!((recs[3].line.as_str(), recs[5].line.as_str()), ("z", "last"));
    }

    #[test]
    fn lines_partials_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, Rotation { max_bytes: 300, max_files: 2, keep_unshipped: false }).unwrap();
        w.write(Stream::Stdout, b"hello\nwor").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"ld\n").unwrap();
        w.flush().unwrap();
        let recs = read_all(&path).unwrap();
        let lines: Vec<(&str, &str)> = recs.iter().map(|r| (r.stream.as_str(), r.line.as_str())).collect();
        assert_eq!(lines, [("stdout", "hello"), ("stderr", "oops"), ("stdout", "world")]);
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(files(&path).len(), 2, "rotated, keeping two files");
        let recs = read_all(&path).unwrap();
        assert_eq!(recs.last().unwrap().line, "line 19");
        assert!(recs.len() < 23, "the oldest records were rotated away");
    }
}
