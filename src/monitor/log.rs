//! The sandbox log: what the monitor writes and `berth logs` reads.
//!
//! One line per line of output (the CRI/podman "k8s-file" format):
//!
//! ```text
//! 2024-05-01T10:00:00.123456789Z stdout F a complete line
//! 2024-05-01T10:00:00.200000000Z stderr P the start of a line still being writ
//! 2024-05-01T10:00:00.300000000Z stderr F ten
//! ```
//!
//! `F` ends a line, `P` is a piece of a line that continues in the next entry of the same
//! stream. The file is bounded: past `max_size` bytes it is renamed `NAME.1` (older ones
//! shift to `NAME.2` ... up to `max_files` files in all) and a new one starts. The writer
//! allocates nothing per line: the monitor calls it for every chunk a sandbox prints.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::clock;

/// Which output stream a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b" stdout ",
            Stream::Stderr => b" stderr ",
        }
    }
}

/// Default size bound of one log file (Docker's json-file has none; unbounded logs fill
/// disks, so berth bounds them).
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
/// Default number of files, the live one included.
pub const DEFAULT_MAX_FILES: u32 = 2;

/// The rotated file `n` of `path` (`n == 0` is the live file).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Appends log entries to a size-bounded, rotated file.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl LogWriter {
    /// Opens (creating) the live log file at `path`.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.max(1),
            max_files: max_files.max(1),
        })
    }

    /// Logs `data` from `stream`: a complete line per newline, the rest as a partial line.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let mut stamp = [0u8; clock::STAMP_LEN];
        clock::format_rfc3339_nanos(clock::now_nanos(), &mut stamp);
        let mut rest = data;
        while !rest.is_empty() {
            let (line, partial, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], false, &rest[i + 1..]),
                None => (rest, true, &rest[rest.len()..]),
            };
            self.entry(&stamp, stream, partial, line);
            rest = next;
        }
    }

    fn entry(&mut self, stamp: &[u8], stream: Stream, partial: bool, line: &[u8]) {
        let kind: &[u8] = if partial { b"P " } else { b"F " };
        let len = (stamp.len() + 8 + 2 + line.len() + 1) as u64;
        if self.size > 0 && self.size + len > self.max_size {
            // A failed rotation keeps writing to the live file: losing the output is worse.
            let _ = self.rotate();
        }
        let parts = [
            IoSlice::new(stamp),
            IoSlice::new(stream.tag()),
            IoSlice::new(kind),
            IoSlice::new(line),
            IoSlice::new(b"\n"),
        ];
        if write_all_vectored(&mut self.file, &parts).is_ok() {
            self.size += len;
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files > 1 {
            for n in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn write_all_vectored(file: &mut File, parts: &[IoSlice]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let n = loop {
        match file.write_vectored(parts) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n == total {
        return Ok(());
    }
    // A short write (disk nearly full): finish piece by piece.
    let mut skip = n;
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        file.write_all(&p[skip..])?;
        skip = 0;
    }
    Ok(())
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub time: i128,
    pub stream: Stream,
    pub partial: bool,
    pub data: &'a [u8],
}

/// Parses one log line (without its newline); `None` for a damaged line.
pub fn parse_line(line: &[u8]) -> Option<Segment<'_>> {
    let stamp = std::str::from_utf8(line.get(..clock::STAMP_LEN)?).ok()?;
    let time = clock::parse_rfc3339(stamp)?;
    let rest = &line[clock::STAMP_LEN..];
    let stream = match rest.get(..8)? {
        b" stdout " => Stream::Stdout,
        b" stderr " => Stream::Stderr,
        _ => return None,
    };
    let partial = match rest.get(8..10)? {
        b"P " => true,
        b"F " => false,
        _ => return None,
    };
    Some(Segment {
        time,
        stream,
        partial,
        data: &rest[10..],
    })
}

/// A whole line of output, reassembled from its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When its first piece was written.
    pub time: i128,
    pub stream: Stream,
    /// The bytes, with the newline when the line was complete.
    pub data: Vec<u8>,
}

/// Joins partial segments into whole lines, per stream.
#[derive(Default)]
pub struct Assembler {
    pending: [Option<(i128, Vec<u8>)>; 2],
}

impl Assembler {
    /// Feeds one segment; returns a line when it completes one.
    pub fn push(&mut self, seg: &Segment) -> Option<Entry> {
        let slot = &mut self.pending[seg.stream as usize];
        let (time, mut data) = slot.take().unwrap_or((seg.time, Vec::new()));
        data.extend_from_slice(seg.data);
        if seg.partial {
            *slot = Some((time, data));
            return None;
        }
        data.push(b'\n');
        Some(Entry {
            time,
            stream: seg.stream,
            data,
        })
    }

    /// The unfinished lines (output that ended without a newline), oldest first.
    pub fn flush(&mut self) -> Vec<Entry> {
        let mut out: Vec<Entry> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|stream| {
                self.pending[stream as usize]
                    .take()
                    .map(|(time, data)| Entry { time, stream, data })
            })
            .collect();
        out.sort_by_key(|e| e.time);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path, files: u32) -> Vec<Entry> {
        let mut asm = Assembler::default();
        let mut out = Vec::new();
        for n in (0..files).rev() {
            let Ok(text) = std::fs::read(rotated(path, n)) else {
                continue;
            };
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let seg = parse_line(line).expect("a well-formed line");
                out.extend(asm.push(&seg));
            }
        }
        out.extend(asm.flush());
        out
    }

    #[test]
    fn lines_and_partial_lines_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        w.write(Stream::Stdout, b"one\ntw");
        w.write(Stream::Stderr, b"err\n");
        w.write(Stream::Stdout, b"o\nthree");
        let got = entries(&path, 2);
        let texts: Vec<(Stream, &[u8])> = got.iter().map(|e| (e.stream, &e.data[..])).collect();
        assert_eq!(
            texts,
            vec![
                (Stream::Stdout, &b"one\n"[..]),
                (Stream::Stderr, b"err\n"),
                (Stream::Stdout, b"two\n"),
                (Stream::Stdout, b"three"),
            ]
        );
    }

    #[test]
    fn rotation_bounds_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path, 400, 3).unwrap();
        for i in 0..100 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        for n in 0..3 {
            let len = std::fs::metadata(rotated(&path, n)).unwrap().len();
            assert!(len <= 400, "file {n} has {len} bytes");
        }
        assert!(!rotated(&path, 3).exists(), "at most 3 files");
        let got = entries(&path, 3);
        assert_eq!(got.last().unwrap().data, b"line 99\n");
        let first: usize = String::from_utf8_lossy(&got[0].data)
            .trim()
            .trim_start_matches("line ")
            .parse()
            .unwrap();
        let expected: Vec<String> = (first..100).map(|i| format!("line {i}\n")).collect();
        let lines: Vec<String> = got
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect();
        assert_eq!(lines, expected, "the newest lines, none lost in between");
    }

    #[test]
    fn damaged_lines_are_refused() {
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"2024-05-01T10:00:00.000000000Z stdin F x").is_none());
        let seg = parse_line(b"2024-05-01T10:00:00.000000000Z stderr P x").unwrap();
        assert!(seg.partial);
        assert_eq!(seg.stream, Stream::Stderr);
    }
}
