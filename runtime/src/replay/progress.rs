//! Progress while replaying: on a terminal an `indicatif` bar over the bytes of the objects to
//! replay, with entries pushed per second and an ETA; otherwise (a log file, CI) a line at most
//! every 10 seconds. An object's bytes count as replayed in step with its partition's pushes
//! (pushing, not reading, takes the time), so the ETA follows what Loki confirmed. Log events and notes go through [`Progress::note`] and [`LogWriter`], which
//! hide the bar while they print so it is redrawn below them rather than torn.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Longest silence between progress lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    terminal: bool,
    started: Instant,
    last_line: Instant,
    total: u64,
    replayed: u64,
    pushed: usize,
}

impl Progress {
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        // Hidden until `start`: notes before it print as plain lines.
        let bar = ProgressBar::hidden();
        let now = Instant::now();
        Self { bar, terminal, started: now, last_line: now, total: 0, replayed: 0, pushed: 0 }
    }

    /// Starts the bar over `total` bytes to replay.
    pub fn start(&mut self, total: u64) {
        self.total = total;
        self.started = Instant::now();
        self.last_line = self.started;
        if self.terminal {
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes}, ETA {eta} · {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            self.bar.set_style(style.progress_chars("=> "));
            self.bar.set_length(total);
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.set_message("0 entries pushed");
            self.bar.enable_steady_tick(Duration::from_millis(200));
        }
    }

    /// `bytes` more of the objects were replayed.
    pub fn replayed(&mut self, bytes: u64) {
        self.replayed += bytes;
        self.bar.inc(bytes);
        self.maybe_line();
    }

    /// `entries` more were pushed.
    pub fn pushed(&mut self, entries: usize) {
        self.pushed += entries;
        if self.terminal {
            self.bar.set_message(format!("{} entries pushed ({:.0}/s)", self.pushed, self.rate()));
        }
        self.maybe_line();
    }

    /// Prints a line to stderr without tearing the bar.
    pub fn note(&self, text: &str) {
        self.bar.suspend(|| eprintln!("{text}"));
    }

    /// Removes the bar, before the summary.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// A writer for the log subscriber that prints around the bar.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter(self.bar.clone())
    }

    fn rate(&self) -> f64 {
        self.pushed as f64 / self.started.elapsed().as_secs_f64().max(0.001)
    }

    fn maybe_line(&mut self) {
        if self.terminal || self.last_line.elapsed() < LINE_EVERY {
            return;
        }
        self.last_line = Instant::now();
        eprintln!(
            "replay: {} of {} replayed, {} entries pushed ({:.0}/s)",
            bytesize::ByteSize(self.replayed),
            bytesize::ByteSize(self.total),
            self.pushed,
            self.rate()
        );
    }
}

/// Writes log events to stderr, suspending the bar around each.
#[derive(Debug, Clone)]
pub struct LogWriter(ProgressBar);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.suspend(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
