//! What a pull or push shows while it works: a bar per blob on a terminal
//! (indicatif), one plain line per finished blob otherwise, nothing with `-q`.
//! Everything goes to stderr, so stdout carries only the result.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much a pull or push reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    #[default]
    Auto,
    /// Nothing.
    Quiet,
}

/// The reporter of one pull or push.
pub(crate) struct Progress {
    bars: Option<MultiProgress>,
    quiet: bool,
}

/// The progress of one blob.
#[derive(Clone)]
pub(crate) struct BlobProgress {
    bar: Option<ProgressBar>,
    label: String,
    quiet: bool,
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode) -> Progress {
        let quiet = mode == ProgressMode::Quiet;
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { bars, quiet }
    }

    /// A line of its own (above the bars on a terminal).
    pub(crate) fn line(&self, msg: &str) {
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
        BlobProgress {
            bar,
            label,
            quiet: self.quiet,
        }
    }
}

impl BlobProgress {
    pub(crate) fn inc(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// Ends the blob's bar (or prints its line) with `msg`, e.g. "Pull complete".
    pub(crate) fn finish(&self, msg: &str) {
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
