//! The event journal: what happened to containers, images, networks and volumes, in Docker's
//! event shape, one JSON object per line in `$XDG_RUNTIME_DIR/berth/events.jsonl`. Every
//! berth process appends to it — the CLI, the API service's helpers, a container's monitor
//! when the container ends — so `GET /events` (and `docker events`) sees all of them, as it
//! would see a single Docker daemon's. A line is written with one `write(2)` on an `O_APPEND`
//! file, so lines from processes writing at once never interleave. The journal lives with the
//! runtime state (gone at reboot, like Docker's in-memory event buffer) and is bounded: past
//! [`MAX_BYTES`] it is renamed to `events.jsonl.1` (replacing the one before).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The journal's size at which it is rotated.
pub const MAX_BYTES: u64 = 1 << 20;

/// Who an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

/// One event, as Docker's `/events` streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// container, image, network, volume.
    #[serde(rename = "Type")]
    pub kind: String,
    /// create, start, die, destroy, kill, stop, rename, pull, tag, ...
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    /// The fields of Docker's first event format, still read by older clients (Compose v1):
    /// for containers the action, the id and the image.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<String>,
}

impl Event {
    /// An event of `kind` (container, image, ...) now.
    pub fn new(kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) -> Event {
        let nanos = crate::clock::now_nanos() as i64;
        let container = kind == "container";
        Event {
            kind: kind.to_string(),
            action: action.to_string(),
            status: container.then(|| action.to_string()),
            id: container.then(|| id.to_string()),
            from: container
                .then(|| attributes.get("image").cloned())
                .flatten(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local".into(),
            time: nanos / 1_000_000_000,
            time_nano: nanos,
        }
    }
}

/// The journal of one user's berth.
#[derive(Debug, Clone)]
pub struct EventLog {
    path: PathBuf,
}

impl EventLog {
    /// The journal under the runtime directory `runtime`.
    pub fn new(runtime: &Path) -> EventLog {
        EventLog {
            path: runtime.join("events.jsonl"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("jsonl.1")
    }

    /// Appends `event`. Best effort: an event that cannot be written is lost, and the
    /// operation it describes goes on.
    pub fn record(&self, event: &Event) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if meta.len() > MAX_BYTES {
                // Two writers may both rotate; the second renames a short journal, which
                // loses no more than the first's few lines.
                let _ = std::fs::rename(&self.path, self.rotated());
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path);
        if let Ok(mut f) = file {
            // One write: O_APPEND puts the whole line at the end, whoever else writes.
            let _ = f.write_all(&line);
        }
    }

    /// The events recorded at or after `since` (nanoseconds since the epoch), oldest first,
    /// and where the live journal ends (to [`Self::follow`] from).
    pub fn since(&self, since: i64) -> (Vec<Event>, u64) {
        let mut out = Vec::new();
        let _ = read_lines(&self.rotated(), 0, &mut |e| {
            if e.time_nano >= since {
                out.push(e)
            }
        });
        let end = read_lines(&self.path, 0, &mut |e| {
            if e.time_nano >= since {
                out.push(e)
            }
        })
        .unwrap_or(0);
        (out, end)
    }

    /// The events written after `offset` of the live journal, and the new offset. After a
    /// rotation the journal is shorter than `offset`: it is read from its start.
    pub fn follow(&self, offset: u64) -> (Vec<Event>, u64) {
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let from = if len < offset { 0 } else { offset };
        let mut out = Vec::new();
        let end = read_lines(&self.path, from, &mut |e| out.push(e)).unwrap_or(from);
        (out, end)
    }
}

/// Feeds the whole lines of `path` from `offset` to `each`; returns the offset after the
/// last whole line (a line being written is left for the next read).
fn read_lines(path: &Path, offset: u64, each: &mut dyn FnMut(Event)) -> Option<u64> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(std::io::SeekFrom::Start(offset)).ok()?;
    let mut reader = std::io::BufReader::new(f);
    let mut pos = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).ok()?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Some(pos);
        }
        pos += n as u64;
        // A line that is not an event (a damaged journal) is skipped.
        if let Ok(e) = serde_json::from_slice::<Event>(&line) {
            each(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_replayed_since_a_time_and_followed() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let first = Event::new("container", "create", "abc", BTreeMap::new());
        log.record(&first);
        let (seen, end) = log.since(0);
        assert_eq!(seen, vec![first.clone()]);
        assert!(log.since(first.time_nano + 1).0.is_empty());
        let second = Event::new("image", "tag", "sha256:1", BTreeMap::new());
        log.record(&second);
        let (new, _) = log.follow(end);
        assert_eq!(new, vec![second]);
        assert_eq!(first.status.as_deref(), Some("create"));
        assert_eq!(first.id.as_deref(), Some("abc"));
    }

    #[test]
    fn a_full_journal_is_rotated_and_both_halves_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let mut attrs = BTreeMap::new();
        attrs.insert("pad".to_string(), "x".repeat(4000));
        let n = (MAX_BYTES / 4000 + 10) as usize;
        for _ in 0..n {
            log.record(&Event::new("container", "start", "a", attrs.clone()));
        }
        assert!(log.rotated().exists());
        assert!(std::fs::metadata(log.path()).unwrap().len() <= MAX_BYTES + 8192);
        assert_eq!(log.since(0).0.len(), n);
    }

    #[test]
    fn a_partial_line_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        std::fs::write(log.path(), b"{\"Type\":\"contai").unwrap();
        let (seen, end) = log.follow(0);
        assert!(seen.is_empty());
        assert_eq!(end, 0);
    }
}
