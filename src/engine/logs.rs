//! `berth logs`: a container's log read back (rotated files first), filtered by time, cut to
//! the last lines, and followed while the container runs.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::EngineError;
use crate::monitor::log::{parse_line, rotated, Assembler, Entry};
use crate::state::{ContainerStore, Status};

/// What `berth logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub follow: bool,
    /// Only the last N lines of what is there when the command starts.
    pub tail: Option<usize>,
    /// Nanoseconds since the epoch.
    pub since: Option<i128>,
    pub until: Option<i128>,
}

/// How often `-f` looks for new output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// Reads a log file from an offset, keeping the unfinished last line for the next read.
struct Reader {
    path: PathBuf,
    file: File,
    inode: u64,
    carry: Vec<u8>,
}

impl Reader {
    fn open(path: &Path) -> Option<Reader> {
        let file = File::open(path).ok()?;
        let inode = file.metadata().ok()?.ino();
        Some(Reader {
            path: path.to_path_buf(),
            file,
            inode,
            carry: Vec::new(),
        })
    }

    /// Feeds the complete lines read so far to `asm`, then `emit`.
    fn pump(
        &mut self,
        asm: &mut Assembler,
        emit: &mut dyn FnMut(Entry) -> std::io::Result<()>,
    ) -> Result<bool, EngineError> {
        let mut chunk = Vec::new();
        self.file
            .read_to_end(&mut chunk)
            .map_err(super::io("reading", &self.path))?;
        if chunk.is_empty() {
            return Ok(false);
        }
        self.carry.extend_from_slice(&chunk);
        let Some(last) = self.carry.iter().rposition(|b| *b == b'\n') else {
            return Ok(true);
        };
        let complete: Vec<u8> = self.carry.drain(..=last).collect();
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(seg) = parse_line(line) {
                if let Some(e) = asm.push(&seg) {
                    emit(e).map_err(super::io("writing the log to", Path::new("stdout")))?;
                }
            }
        }
        Ok(true)
    }

    /// Whether the path now names another file (the log was rotated).
    fn rotated_away(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| m.ino() != self.inode)
    }
}

impl super::Engine {
    /// Streams container `key`'s log to `out`, oldest line first.
    pub fn logs(
        &self,
        key: &str,
        opts: &LogsOptions,
        out: &mut dyn FnMut(&Entry) -> std::io::Result<()>,
    ) -> Result<(), EngineError> {
        let rec = self.container(key)?;
        let Some(log) = rec.log else {
            return Err(EngineError::Usage(format!(
                "container {} ran in the foreground: its output went to the terminal and berth keeps no log of it; run with -d (or create and start) to keep one",
                rec.name
            )));
        };
        let path = self.containers.dir(&rec.id).join("container.log");
        let keep = |e: &Entry| {
            opts.since.is_none_or(|s| e.time >= s) && opts.until.is_none_or(|u| e.time <= u)
        };
        // What is there now, oldest file first; the live file's reader stays for -f.
        let mut asm = Assembler::default();
        let mut backlog: Vec<Entry> = Vec::new();
        let mut live = None;
        for n in (0..log.max_files.max(1)).rev() {
            let p = rotated(&path, n);
            let Some(mut r) = Reader::open(&p) else {
                continue;
            };
            r.pump(&mut asm, &mut |e| {
                if keep(&e) {
                    backlog.push(e);
                }
                Ok(())
            })?;
            if n == 0 {
                live = Some(r);
            }
        }
        let running = |engine: &Self| {
            engine.containers.load(&rec.id).is_ok_and(|r| {
                matches!(r.status, Status::Running | Status::Restarting)
                    && ContainerStore::monitor_alive(&r)
            })
        };
        if !opts.follow || !running(self) {
            backlog.extend(asm.flush().into_iter().filter(|e| keep(e)));
        }
        let skip = opts.tail.map_or(0, |n| backlog.len().saturating_sub(n));
        for e in &backlog[skip..] {
            out(e).map_err(super::io("writing the log to", Path::new("stdout")))?;
        }
        if !opts.follow {
            return Ok(());
        }
        let mut emit = |e: Entry| {
            if opts.until.is_some_and(|u| e.time > u) {
                return Ok(());
            }
            out(&e)
        };
        loop {
            let alive = running(self);
            let mut got = false;
            match &mut live {
                Some(r) => {
                    got = r.pump(&mut asm, &mut emit)?;
                    if !got && r.rotated_away() {
                        // Rotated: the old file is read to its end; go on with the new one.
                        live = Reader::open(&path);
                        continue;
                    }
                }
                None => live = Reader::open(&path),
            }
            if !alive && !got {
                for e in asm.flush() {
                    emit(e).map_err(super::io("writing the log to", Path::new("stdout")))?;
                }
                return Ok(());
            }
            if !got {
                std::thread::sleep(FOLLOW_INTERVAL);
            }
        }
    }
}
