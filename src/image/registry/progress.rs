//! What a pull or push shows while it works: a bar per blob on a terminal
//! (indicatif), one plain line per finished blob otherwise, nothing with `-q`,
//! or typed [`ProgressEvent`]s to a sink (the API's JSON progress stream).
//! The terminal forms go to stderr, so stdout carries only the result.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much a pull or push reports.
#[derive(Debug, Clone, Default)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    #[default]
    Auto,
    /// Nothing.
    Quiet,
    /// Every step as an event to the sink, nothing on the terminal.
    Events(ProgressSink),
}

/// One step of a pull or push, as a sink receives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProgressEvent {
    /// A line of its own (`Digest: ...`, `Status: ...`).
    Line(String),
    /// Where one blob stands: its short digest, what is happening to it
    /// (`Downloading`, `Pushing`, `Pull complete`, `Already exists`, ...), and
    /// the bytes moved of all of them.
    Blob {
        id: String,
        action: String,
        current: u64,
        total: u64,
    },
}

/// Where [`ProgressMode::Events`] sends its events; called from the pull's or push's
/// threads.
#[derive(Clone)]
pub struct ProgressSink(pub Arc<dyn Fn(ProgressEvent) + Send + Sync>);

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// The reporter of one pull or push.
pub(crate) struct Progress {
    bars: Option<MultiProgress>,
    quiet: bool,
    sink: Option<ProgressSink>,
}

/// The progress of one blob.
#[derive(Clone)]
pub(crate) struct BlobProgress {
    bar: Option<ProgressBar>,
    label: String,
    quiet: bool,
    sink: Option<(ProgressSink, Arc<BlobBytes>)>,
    action: String,
}

/// Bytes of a blob moved so far, and at what count the sink last heard of it.
#[derive(Default)]
pub(crate) struct BlobBytes {
    total: u64,
    current: AtomicU64,
    reported: AtomicU64,
}

impl Progress {
    pub(crate) fn new(mode: &ProgressMode) -> Progress {
        let quiet = !matches!(mode, ProgressMode::Auto);
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let sink = match mode {
            ProgressMode::Events(sink) => Some(sink.clone()),
            _ => None,
        };
        Progress { bars, quiet, sink }
    }

    /// A line of its own (above the bars on a terminal).
    pub(crate) fn line(&self, msg: &str) {
        if let Some(sink) = &self.sink {
            (sink.0)(ProgressEvent::Line(msg.to_string()));
        }
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    /// Starts reporting a blob of `size` bytes, labelled by its short digest.
    pub(crate) fn blob(&self, digest: &str, size: u64, action: &str) -> BlobProgress {
        let label = short_digest(digest).to_string();
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new(size));
            let style = ProgressStyle::with_template(
                "{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.clone());
            bar.set_message(action.to_string());
            bar
        });
        let sink = self.sink.clone().map(|s| {
            let bytes = BlobBytes {
                total: size,
                ..BlobBytes::default()
            };
            (s, Arc::new(bytes))
        });
        BlobProgress {
            bar,
            label,
            quiet: self.quiet,
            sink,
            action: action.to_string(),
        }
    }
}

impl BlobProgress {
    pub(crate) fn inc(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
        if let Some((_, b)) = &self.sink {
            let now = b.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
            // About fifty events a blob, not one per network read.
            let step = (b.total / 50).max(64 * 1024);
            if now.saturating_sub(b.reported.load(Ordering::Relaxed)) >= step || now >= b.total {
                b.reported.store(now, Ordering::Relaxed);
                self.emit(&self.action, now);
            }
        }
    }

    fn emit(&self, action: &str, current: u64) {
        if let Some((sink, b)) = &self.sink {
            (sink.0)(ProgressEvent::Blob {
                id: self.label.clone(),
                action: action.to_string(),
                current,
                total: b.total,
            });
        }
    }

    /// Ends the blob's bar (or prints its line) with `msg`, e.g. "Pull complete".
    pub(crate) fn finish(&self, msg: &str) {
        if let Some((_, b)) = &self.sink {
            self.emit(msg, b.total);
        }
        match &self.bar {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix}: {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.finish_with_message(msg.to_string());
            }
            None if !self.quiet => eprintln!("{}: {msg}", self.label),
            None => {}
        }
    }

    /// Ends the blob's bar without a message of success.
    pub(crate) fn abandon(&self, msg: &str) {
        if let Some((_, b)) = &self.sink {
            self.emit(msg, b.current.load(Ordering::Relaxed));
        }
        if let Some(bar) = &self.bar {
            bar.abandon_with_message(msg.to_string());
        }
    }
}

/// The first 12 hex characters of a digest, as Docker labels layers.
pub(crate) fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn events_go_to_the_sink_a_few_per_blob_and_nothing_to_the_terminal() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            ProgressSink(Arc::new(move |e| seen.lock().unwrap().push(e)))
        };
        let progress = Progress::new(&ProgressMode::Events(sink));
        assert!(progress.bars.is_none() && progress.quiet);
        progress.line("Digest: sha256:0");
        let blob = progress.blob("sha256:0123456789abcdef", 10 << 20, "Downloading");
        for _ in 0..(10 << 10) {
            blob.inc(1024);
        }
        blob.finish("Pull complete");
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], ProgressEvent::Line("Digest: sha256:0".into()));
        let moving = seen
            .iter()
            .filter(|e| matches!(e, ProgressEvent::Blob { action, .. } if action == "Downloading"))
            .count();
        assert!((40..=60).contains(&moving), "about fifty events: {moving}");
        assert_eq!(
            seen.last(),
            Some(&ProgressEvent::Blob {
                id: "0123456789ab".into(),
                action: "Pull complete".into(),
                current: 10 << 20,
                total: 10 << 20,
            })
        );
    }
}
