//! Container logs: what a container writes to stdout and stderr, kept with timestamps in the
//! CRI log format (`2026-11-25T10:00:00.123456789Z stdout F the line`), in one file per
//! container, rotated by size (`container.log`, `container.log.1`, ...).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How much log a container keeps: `max_files` files of at most `max_bytes` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    pub max_bytes: u64,
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 10 << 20, max_files: 3 }
    }
}

/// `2026-11-25T10:00:00.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Appends lines to a container's log file, rotating it by size.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// A partial line per stream, completed by the next write.
    partial: [Vec<u8>; 2],
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
        Ok(LogWriter { path, file, size, rotation, partial: [Vec::new(), Vec::new()] })
    }

    /// Writes what a stream produced; complete lines become records, the rest waits.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let buf = &mut self.partial[stream as usize];
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    buf.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(buf);
                    self.record(stream, b'F', &line)?;
                }
                None => {
                    buf.extend_from_slice(data);
                    data = &[];
                    while self.partial[stream as usize].len() >= MAX_LINE {
                        let rest = self.partial[stream as usize].split_off(MAX_LINE);
                        let chunk = std::mem::replace(&mut self.partial[stream as usize], rest);
                        self.record(stream, b'P', &chunk)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes out partial lines (at exit).
    pub fn flush(&mut self) -> io::Result<()> {
        for s in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[s as usize]);
            if !line.is_empty() {
                self.record(s, b'F', &line)?;
            }
        }
        self.file.flush()
    }

    fn record(&mut self, stream: Stream, tag: u8, line: &[u8]) -> io::Result<()> {
        let mut rec = Vec::with_capacity(line.len() + 48);
        rec.extend_from_slice(rfc3339(SystemTime::now()).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.name().as_bytes());
        rec.push(b' ');
        rec.push(tag);
        rec.push(b' ');
        rec.extend_from_slice(line);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let n = self.rotation.max_files.max(1);
        let name =
            |i: u32| if i == 0 { self.path.clone() } else { PathBuf::from(format!("{}.{i}", self.path.display())) };
        let _ = std::fs::remove_file(name(n - 1));
        for i in (0..n - 1).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
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
    let mut out = Vec::new();
    for i in (1..100).rev() {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if p.exists() {
            out.push(p);
        }
    }
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
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
    }

    #[test]
    fn lines_partials_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, Rotation { max_bytes: 300, max_files: 2 }).unwrap();
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
